//! Portcullis, a Kubernetes ingress controller.
//!
//! ```text
//!  sources                      model (pure)                 data plane
//!  kube reflectors ─┐
//!  (cluster mode)   ├─► Snapshot ─► model::build ─► RouteTable ─► ArcSwap ─┬─ :80  redirect / proxy
//!  manifest dir  ───┘   (objects)   (+ Diagnostics)                        └─ :443 peek SNI ─┬─ passthrough: splice
//!  (standalone mode)                      │                                                  ├─ terminate: rustls → hyper → upstream
//!                                         └─► status / Events / `check` output               └─ reencrypt: rustls → hyper → TLS upstream
//! ```
//!
//! Data flows one way, and the folders are its stages: [`source`] → [`rebuild`] →
//! [`model`] (pure) → [`table`] ← [`tls`] / [`health`] / [`proxy`]; [`wire`] holds the byte-level
//! codecs and imports nothing from the crate; [`telemetry`] reports; [`runtime`] wires it all
//! and [`cluster`] adds what only a cluster has (status, Events, leader election). No module
//! cycle (checked in CI). [`model`] knows nothing of sockets; [`proxy`] knows nothing of
//! Kubernetes. Every HTTP request is routed on the live [`table::RouteTable`] (one `ArcSwap`
//! load); a connection keeps only what its TLS handshake fixed. See `docs/architecture.md`.
//!
//! # What is public
//!
//! This library exists for the `portcullis` binary (`src/main.rs`), which links it as a separate
//! crate, and so do the integration tests (`tests/`), the benchmark (`bench/scale.rs`, feature
//! `bench`) and the fuzz targets (`fuzz/`). An item is `pub` only when one of them uses it;
//! everything else is `pub(crate)` or private, and `#![warn(unreachable_pub)]` (an error in CI)
//! keeps it so. Making an item `pub` is a decision to let those crates depend on it.

#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

pub mod cluster;
pub mod crd;
pub mod gateway_api;
pub mod health;
pub mod model;
pub mod proxy;
pub mod rebuild;
pub mod runtime;
pub mod settings;
pub mod source;
pub mod table;
pub mod telemetry;
pub mod tls;
pub mod wire;
