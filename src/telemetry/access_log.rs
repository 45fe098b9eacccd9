//! Access logs: one line per HTTP request (like HAProxy's httplog, with what ingress-nginx's
//! `log-format-upstream` carries) and one per TCP connection (tcplog), as named fields so
//! text and JSON output carry the same data.
//!
//! Lines go to tracing target `access` at INFO; select them with `RUST_LOG=access=info`.
//! Every line has every field of its kind, in a fixed order: a value that does not exist for
//! this request (no upstream for a 404, no TLS on :80) is `null` in JSON and `-` in text
//! ([`super::log_format`] writes them; here a missing value is simply not recorded). Timers
//! are milliseconds.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};

use crate::table::diagnostic::ObjectRef;
use crate::table::upstream::ServiceRef;

/// The tracing target of access lines.
pub(crate) const TARGET: &str = "access";

/// One HTTP request.
#[derive(Debug)]
pub(crate) struct HttpLog<'a> {
    pub(crate) client: SocketAddr,
    /// The request's host, normalized (`None` when it had none).
    pub(crate) host: Option<&'a str>,
    pub(crate) method: &'a str,
    /// The path without the query (queries often carry secrets).
    pub(crate) path: &'a str,
    /// The status the client got.
    pub(crate) status: u16,
    /// Request bytes received: the head (approximate for HTTP/2, whose head is compressed)
    /// plus the declared `Content-Length`.
    pub(crate) bytes_in: u64,
    /// Response body bytes sent to the client.
    pub(crate) bytes_out: u64,
    /// `http` (:80), `terminate`, `reencrypt`.
    pub(crate) mode: &'static str,
    /// `HTTP/1.1`, `HTTP/2`...
    pub(crate) protocol: &'static str,
    pub(crate) tls: Option<TlsFields<'a>>,
    /// The Ingress whose rule served the request (for a canary, the canary Ingress).
    pub(crate) ingress: Option<&'a ObjectRef>,
    /// The Service whose endpoint was asked.
    pub(crate) service: Option<&'a ServiceRef>,
    pub(crate) upstream: Option<SocketAddr>,
    /// The status the pod answered, before `custom-http-errors` replaced it; `None` when no
    /// pod answered (the proxy answered itself).
    pub(crate) upstream_status: Option<u16>,
    /// From sending the request upstream to the response head.
    pub(crate) upstream_time: Option<Duration>,
    /// From the request head to the end of the response body.
    pub(crate) total_time: Duration,
    /// Why the proxy answered itself (`ProxyError::label`), if it did.
    pub(crate) error: Option<&'static str>,
    /// The `X-Request-ID` sent to the pod (the client's, else generated).
    pub(crate) request_id: Option<&'a str>,
    pub(crate) user_agent: Option<&'a str>,
    pub(crate) referer: Option<&'a str>,
}

/// What a terminated TLS connection negotiated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlsFields<'a> {
    pub(crate) sni: Option<&'a str>,
    /// `TLSv1.2`, `TLSv1.3` (nginx's `$ssl_protocol` spelling).
    pub(crate) version: Option<&'static str>,
    /// The cipher suite's IANA name.
    pub(crate) cipher: Option<&'static str>,
}

/// One TCP connection: pass-through, or a WebSocket/upgrade tunnel.
#[derive(Debug)]
pub(crate) struct TcpLog<'a> {
    pub(crate) client: SocketAddr,
    pub(crate) sni: Option<&'a str>,
    /// The Service spliced to (pass-through).
    pub(crate) service: Option<&'a ServiceRef>,
    pub(crate) upstream: Option<SocketAddr>,
    /// Bytes from the client (for pass-through, the replayed ClientHello included).
    pub(crate) bytes_in: u64,
    /// Bytes to the client.
    pub(crate) bytes_out: u64,
    pub(crate) duration: Duration,
    /// How it ended: `closed`, `client-reset`, `upstream-reset`, `connect-failed`, `no-endpoint`...
    pub(crate) termination: &'static str,
}

/// What the access log keeps of a request's head beyond what the proxy itself keeps: taken
/// only while the log is on (two reference-counted header handles, no copy).
#[derive(Debug, Default)]
pub(crate) struct RequestHead {
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    /// The declared `Content-Length`.
    body_length: Option<u64>,
}

impl RequestHead {
    /// `None` when the access log is off.
    pub(crate) fn of(headers: &HeaderMap) -> Option<RequestHead> {
        http_enabled().then(|| RequestHead {
            user_agent: headers.get(header::USER_AGENT).cloned(),
            referer: headers.get(header::REFERER).cloned(),
            body_length: headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
        })
    }

    /// The `User-Agent`, when it is visible ASCII.
    pub(crate) fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_ref().and_then(|v| v.to_str().ok())
    }

    /// The `Referer`, when it is visible ASCII.
    pub(crate) fn referer(&self) -> Option<&str> {
        self.referer.as_ref().and_then(|v| v.to_str().ok())
    }

    pub(crate) fn body_length(&self) -> u64 {
        self.body_length.unwrap_or(0)
    }
}

/// nginx's `$server_protocol` spelling of an HTTP version.
pub(crate) fn protocol_name(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_09 => "HTTP/0.9",
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        http::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}

/// `namespace/name` of an object, written without a copy.
struct NamespacedName<'a>(&'a ObjectRef);

impl fmt::Display for NamespacedName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.0.name),
            None => f.write_str(&self.0.name),
        }
    }
}

/// Whether HTTP access lines are logged at all (target `access` at INFO enabled), so callers can
/// skip gathering the fields when they are not.
pub(crate) fn http_enabled() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// Logs one HTTP request at target `access`.
pub(crate) fn http(line: &HttpLog<'_>) {
    let tls = line.tls.as_ref();
    tracing::info!(
        target: TARGET,
        kind = "http",
        client = %line.client,
        host = line.host,
        method = line.method,
        path = line.path,
        protocol = line.protocol,
        status = line.status,
        bytes_in = line.bytes_in,
        bytes_out = line.bytes_out,
        mode = line.mode,
        sni = tls.and_then(|t| t.sni),
        tls_version = tls.and_then(|t| t.version),
        tls_cipher = tls.and_then(|t| t.cipher),
        ingress = line.ingress.map(|i| tracing::field::display(NamespacedName(i))),
        service = line.service.map(tracing::field::display),
        upstream = line.upstream.map(tracing::field::display),
        upstream_status = line.upstream_status,
        upstream_ms = line.upstream_time.map(millis),
        total_ms = millis(line.total_time),
        error = line.error,
        request_id = line.request_id,
        user_agent = line.user_agent,
        referer = line.referer,
    );
}

/// Logs one TCP connection at target `access`.
pub(crate) fn tcp(line: &TcpLog<'_>) {
    tracing::info!(
        target: TARGET,
        kind = "tcp",
        client = %line.client,
        sni = line.sni,
        service = line.service.map(tracing::field::display),
        upstream = line.upstream.map(tracing::field::display),
        bytes_in = line.bytes_in,
        bytes_out = line.bytes_out,
        duration_ms = millis(line.duration),
        termination = line.termination,
    );
}

/// nginx's `$ssl_protocol` spelling of a TLS version.
pub(crate) fn tls_version_name(version: rustls::ProtocolVersion) -> Option<&'static str> {
    match version {
        rustls::ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
        rustls::ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
        _ => None,
    }
}

/// The IANA name of a cipher suite (rustls spells TLS 1.3 suites `TLS13_…`; IANA `TLS_…`).
pub(crate) fn cipher_name(suite: rustls::CipherSuite) -> Option<&'static str> {
    use rustls::CipherSuite as C;
    match suite {
        C::TLS13_AES_128_GCM_SHA256 => Some("TLS_AES_128_GCM_SHA256"),
        C::TLS13_AES_256_GCM_SHA384 => Some("TLS_AES_256_GCM_SHA384"),
        C::TLS13_CHACHA20_POLY1305_SHA256 => Some("TLS_CHACHA20_POLY1305_SHA256"),
        other => other.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_names_are_the_ones_operators_know() {
        assert_eq!(
            tls_version_name(rustls::ProtocolVersion::TLSv1_3),
            Some("TLSv1.3")
        );
        assert_eq!(
            cipher_name(rustls::CipherSuite::TLS13_AES_256_GCM_SHA384),
            Some("TLS_AES_256_GCM_SHA384")
        );
        assert_eq!(
            cipher_name(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256),
            Some("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256")
        );
    }

    #[test]
    fn namespaced_names() {
        let ingress = ObjectRef::namespaced("Ingress", "shop", "web");
        assert_eq!(NamespacedName(&ingress).to_string(), "shop/web");
    }
}
