//! Access logs: one line per HTTP request (like HAProxy's httplog) and one per TCP connection
//! (tcplog), as named fields so text and JSON output carry the same data.
//!
//! Lines go to tracing target `access` at INFO; select them with `RUST_LOG=access=info`.
//! Timers are milliseconds; a timer that did not run is `-1` (HAProxy's convention), an absent
//! address or name is `-`.

use std::net::SocketAddr;
use std::time::Duration;

/// One HTTP request.
#[derive(Debug)]
pub(crate) struct HttpLog<'a> {
    pub(crate) client: SocketAddr,
    /// The request's host, normalized (`-` when it had none).
    pub(crate) host: &'a str,
    pub(crate) method: &'a str,
    /// The path without the query (queries often carry secrets).
    pub(crate) path: &'a str,
    pub(crate) status: u16,
    /// Response body bytes sent to the client.
    pub(crate) bytes_sent: u64,
    pub(crate) upstream: Option<SocketAddr>,
    /// `http` (:80), `terminate`, `reencrypt`.
    pub(crate) mode: &'static str,
    /// From sending the request upstream to the response head.
    pub(crate) upstream_time: Option<Duration>,
    /// From the request head to the end of the response body.
    pub(crate) total_time: Duration,
    /// Why the proxy answered itself (`ProxyError::label`), if it did.
    pub(crate) error: Option<&'static str>,
    /// The `X-Request-ID` sent to the pod (the client's, else generated).
    pub(crate) request_id: &'a str,
}

/// One TCP (pass-through) connection.
#[derive(Debug)]
pub(crate) struct TcpLog<'a> {
    pub(crate) client: SocketAddr,
    pub(crate) sni: Option<&'a str>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) bytes_from_client: u64,
    pub(crate) bytes_to_client: u64,
    pub(crate) duration: Duration,
    /// How it ended: `closed`, `client-reset`, `upstream-reset`, `connect-failed`, `no-endpoint`...
    pub(crate) termination: &'static str,
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}

fn addr(a: Option<SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "-".to_string())
}

/// Whether HTTP access lines are logged at all (target `access` at INFO enabled), so callers can
/// skip gathering the fields when they are not.
pub(crate) fn http_enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// Logs one HTTP request at target `access`.
pub(crate) fn http(line: &HttpLog<'_>) {
    tracing::info!(
        target: "access",
        kind = "http",
        client = %line.client,
        host = line.host,
        method = line.method,
        path = line.path,
        status = line.status,
        bytes = line.bytes_sent,
        upstream = %addr(line.upstream),
        mode = line.mode,
        upstream_ms = line.upstream_time.map(millis).unwrap_or(-1.0),
        total_ms = millis(line.total_time),
        error = line.error.unwrap_or("-"),
        request_id = line.request_id,
    );
}

/// Logs one TCP connection at target `access`.
pub(crate) fn tcp(line: &TcpLog<'_>) {
    tracing::info!(
        target: "access",
        kind = "tcp",
        client = %line.client,
        sni = line.sni.unwrap_or("-"),
        upstream = %addr(line.upstream),
        bytes_from_client = line.bytes_from_client,
        bytes_to_client = line.bytes_to_client,
        duration_ms = millis(line.duration),
        termination = line.termination,
    );
}
