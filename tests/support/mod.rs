//! Shared test support: an in-memory PKI, real HTTP/TLS backends, the built binary, real
//! clients (curl, openssl), manifest YAML, and condition waits.
//!
//! Each integration test file compiles this module separately and uses a subset of it.
#![allow(dead_code)]

pub mod backends;
pub mod binary;
pub mod clients;
pub mod http_harness;
pub mod in_process;
pub mod keep_alive;
pub mod manifests;
pub mod pki;
pub mod portcullis;
pub mod wait;
