//! Prometheus metrics (`portcullis_*`), labels from enums.
//!
//! INTERFACE STUB — owned by the health/balance/metrics work; replace the body.

use std::time::Duration;

/// Which listener / mode a data-plane event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Plain HTTP on :80.
    Http,
    Terminate,
    Passthrough,
    Reencrypt,
}

/// Why a :443 connection was closed before a route was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HelloRejection {
    Timeout,
    Malformed,
    TooLarge,
    NotTls,
}

/// All metrics of the process.
#[derive(Default)]
pub struct Metrics {}

impl Metrics {
    /// A fresh registry.
    pub fn new() -> Self {
        Metrics {}
    }

    /// One HTTP request answered.
    pub fn http_request(&self, host: &str, mode: Mode, status: u16, duration: Duration) {
        let _ = (host, mode, status, duration);
    }

    /// One TCP (pass-through) connection ended.
    pub fn tcp_connection(&self, host: &str, bytes_from_client: u64, bytes_to_client: u64) {
        let _ = (host, bytes_from_client, bytes_to_client);
    }

    /// A TLS handshake finished (ok or not) for a terminated/re-encrypted host.
    pub fn handshake(&self, mode: Mode, ok: bool) {
        let _ = (mode, ok);
    }

    /// A :443 connection closed before routing.
    pub fn hello_rejected(&self, why: HelloRejection) {
        let _ = why;
    }

    /// A connection refused because the connection limit was reached.
    pub fn connection_limited(&self) {}

    /// Text exposition for `/metrics`.
    pub fn encode(&self) -> String {
        String::new()
    }
}
