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
//! Data flows one way. [`model`] knows nothing of sockets; [`proxy`] knows nothing of
//! Kubernetes. The proxy loads the current [`table::RouteTable`] once per connection and keeps
//! that `Arc`: a new table never breaks an open connection.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod annotations;
pub mod check;
pub mod controller;
pub mod crd;
pub mod health;
pub mod metrics;
pub mod model;
pub mod proxy;
pub mod rbac;
pub mod rebuild;
pub mod settings;
pub mod source;
pub mod standalone;
pub mod status;
pub mod table;
pub mod tls;
