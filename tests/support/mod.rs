//! Shared test support: an in-memory PKI, real HTTP/TLS backends, and condition waits.
//!
//! Each integration test file compiles this module separately and uses a subset of it.
#![allow(dead_code)]

pub mod backends;
pub mod http_harness;
pub mod in_process;
pub mod pki;
pub mod wait;
