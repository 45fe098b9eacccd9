//! Access logs: one line per HTTP request (like HAProxy's httplog) and one per TCP connection
//! (tcplog), as named fields so text and JSON output carry the same data.
//!
//! INTERFACE STUB — owned by the HTTP work; replace the body.

use std::net::SocketAddr;
use std::time::Duration;

/// One HTTP request.
#[derive(Debug)]
pub struct HttpLog<'a> {
    pub client: SocketAddr,
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes_sent: u64,
    pub upstream: Option<SocketAddr>,
    pub mode: &'static str,
    pub upstream_time: Option<Duration>,
    pub total_time: Duration,
}

/// One TCP (pass-through) connection.
#[derive(Debug)]
pub struct TcpLog<'a> {
    pub client: SocketAddr,
    pub sni: Option<&'a str>,
    pub upstream: Option<SocketAddr>,
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub duration: Duration,
    /// How it ended: `closed`, `client-reset`, `upstream-reset`, `connect-failed`, `no-endpoint`...
    pub termination: &'static str,
}

/// Logs one HTTP request at target `access`.
pub fn http(line: &HttpLog<'_>) {
    tracing::info!(target: "access", ?line);
}

/// Logs one TCP connection at target `access`.
pub fn tcp(line: &TcpLog<'_>) {
    tracing::info!(target: "access", ?line);
}
