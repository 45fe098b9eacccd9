//! Access logs: one line per HTTP request (like HAProxy's httplog, with what ingress-nginx's
//! `log-format-upstream` carries) and one per TCP connection (tcplog), as named fields so
//! text and JSON output carry the same data.
//!
//! Lines are logged when tracing target `access` is enabled at INFO (select them with
//! `RUST_LOG=access=info`), and written through [`super::log_sink`] (off the request path,
//! never blocking it). Every line has every field of its kind, in a fixed order: a value that
//! does not exist for this request (no upstream for a 404, no TLS on :80) is `null` in JSON
//! and `-` in text ([`super::log_format`] spells them). Timers are milliseconds.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};

use super::log_format::{AccessFormat, AccessLine, Digits, key, prefix};
use super::log_sink;
use crate::table::diagnostic::ObjectRef;
use crate::table::upstream::{ServicePortRef, ServiceRef};

/// The tracing target of access lines (also spelled in their [`prefix!`]es, which need a
/// literal; the tests read it back from a line).
pub(crate) const TARGET: &str = "access";

/// One HTTP request.
#[derive(Debug)]
pub(crate) struct HttpLog<'a> {
    /// The client's address as [`super::log_format::write_addr`] spells it (once per connection).
    pub(crate) client: &'a str,
    /// The request's host, normalized (`None` when it had none).
    pub(crate) host: Option<&'a str>,
    /// An HTTP token (hyper and h2 refuse any other method), so never escaped.
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
    /// Whether `request_id` was generated here: hexadecimal digits, written without an
    /// escaping scan (a client's is scanned like any string).
    pub(crate) request_id_generated: bool,
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
/// only while the log is on (two reference-counted header handles, no copy). A request that
/// has one is logged; one taken while the log was off has none.
#[derive(Debug, Default)]
pub(crate) struct RequestHead {
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    /// The declared `Content-Length`.
    body_length: Option<u64>,
}

impl RequestHead {
    /// `None` when the access log is off. `body_length` is the length the request declares
    /// (its body's exact size hint, which HTTP/1 and HTTP/2 both take from `Content-Length`:
    /// the header is not looked up and parsed again here).
    pub(crate) fn of(headers: &HeaderMap, body_length: Option<u64>) -> Option<RequestHead> {
        enabled().then(|| RequestHead {
            user_agent: headers.get(header::USER_AGENT).cloned(),
            referer: headers.get(header::REFERER).cloned(),
            body_length,
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

/// Whether access lines are logged at all (target `access` at INFO enabled: `--log-level`,
/// `RUST_LOG`), so callers can skip gathering the fields when they are not. The lines
/// themselves do not go through tracing ([`super::log_format`] says why).
pub(crate) fn enabled() -> bool {
    match SETTLED.get() {
        Some(enabled) => *enabled,
        None => asked(),
    }
}

/// The subscriber's answer: is target `access` enabled at INFO?
fn asked() -> bool {
    tracing::enabled!(target: TARGET, tracing::Level::INFO)
}

/// [`enabled`]'s answer once [`settle_enabled`] fixed it.
static SETTLED: OnceLock<bool> = OnceLock::new();

/// Fixes [`enabled`]'s answer for the rest of the process, as the subscriber installed now
/// gives it. The binary calls this right after installing its subscriber, whose filter never
/// changes while it runs, so a request does not ask tracing's dispatcher (~90 instructions a
/// time). Until it is called (the in-process tests install subscribers of their own), every
/// call asks.
pub fn settle_enabled() {
    let _ = SETTLED.set(asked());
}

/// Logs one HTTP request at target `access`.
pub(crate) fn http(line: &HttpLog<'_>) {
    log_sink::access_line(|out, format| write_http(out, format, line));
}

/// Formats one HTTP request's line.
fn write_http(out: &mut String, format: AccessFormat, line: &HttpLog<'_>) {
    format.pick(
        out,
        |out| write_http_as::<true>(out, line),
        |out| write_http_as::<false>(out, line),
    );
}

/// [`write_http`] in one spelling.
fn write_http_as<const JSON: bool>(out: &mut String, line: &HttpLog<'_>) {
    let tls = line.tls.as_ref();
    let mut l = AccessLine::<JSON>::start(out, prefix!("access", "http"));
    l.addr_spelled(key!("client"), line.client);
    l.str(key!("host"), line.host);
    l.token(key!("method"), line.method);
    l.str(key!("path"), Some(line.path));
    l.label(key!("protocol"), Some(line.protocol));
    l.u64(key!("status"), Some(u64::from(line.status)));
    l.u64(key!("bytes_in"), Some(line.bytes_in));
    l.u64(key!("bytes_out"), Some(line.bytes_out));
    l.label(key!("mode"), Some(line.mode));
    l.str(key!("sni"), tls.and_then(|t| t.sni));
    l.label(key!("tls_version"), tls.and_then(|t| t.version));
    l.label(key!("tls_cipher"), tls.and_then(|t| t.cipher));
    match line.ingress {
        Some(ObjectRef {
            namespace: Some(namespace),
            name,
            ..
        }) => l.name(key!("ingress"), Some(&[namespace, "/", name])),
        Some(ingress) => l.name(key!("ingress"), Some(&[&ingress.name])),
        None => l.name(key!("ingress"), None),
    }
    service(&mut l, line.service);
    l.addr(key!("upstream"), line.upstream);
    l.u64(key!("upstream_status"), line.upstream_status.map(u64::from));
    l.millis(key!("upstream_ms"), line.upstream_time);
    l.millis(key!("total_ms"), Some(line.total_time));
    l.label(key!("error"), line.error);
    match line.request_id {
        Some(id) if line.request_id_generated => l.token(key!("request_id"), id),
        id => l.str(key!("request_id"), id),
    }
    l.str(key!("user_agent"), line.user_agent);
    l.str(key!("referer"), line.referer);
    l.end();
}

/// The `service` field: `namespace/name:port`, as [`ServiceRef`]'s `Display` writes it.
fn service<const JSON: bool>(l: &mut AccessLine<'_, JSON>, service: Option<&ServiceRef>) {
    let Some(service) = service else {
        return l.name(key!("service"), None);
    };
    let mut digits = Digits::default();
    let (sign, port) = match &service.port {
        ServicePortRef::Number(n) => (if *n < 0 { "-" } else { "" }, digits.of(n.unsigned_abs())),
        ServicePortRef::Name(name) => ("", name.as_str()),
    };
    l.name(
        key!("service"),
        Some(&[&service.namespace, "/", &service.name, ":", sign, port]),
    );
}

/// Logs one TCP connection at target `access`.
pub(crate) fn tcp(line: &TcpLog<'_>) {
    if !enabled() {
        return;
    }
    log_sink::access_line(|out, format| {
        format.pick(
            out,
            |out| write_tcp::<true>(out, line),
            |out| write_tcp::<false>(out, line),
        )
    });
}

/// Formats one TCP connection's line in one spelling.
fn write_tcp<const JSON: bool>(out: &mut String, line: &TcpLog<'_>) {
    let mut l = AccessLine::<JSON>::start(out, prefix!("access", "tcp"));
    l.addr(key!("client"), Some(line.client));
    l.str(key!("sni"), line.sni);
    service(&mut l, line.service);
    l.addr(key!("upstream"), line.upstream);
    l.u64(key!("bytes_in"), Some(line.bytes_in));
    l.u64(key!("bytes_out"), Some(line.bytes_out));
    l.millis(key!("duration_ms"), Some(line.duration));
    l.label(key!("termination"), Some(line.termination));
    l.end();
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

    /// The line after its timestamp.
    fn spelled(format: AccessFormat, write: impl FnOnce(&mut String, AccessFormat)) -> String {
        let mut line = String::new();
        write(&mut line, format);
        let at = line.find(if format == AccessFormat::Json {
            "\"level\""
        } else {
            "  INFO"
        });
        line[at.expect("a timestamp, then the level")..].to_string()
    }

    #[test]
    fn every_field_is_spelled_as_tracing_spells_it() {
        let ingress = ObjectRef::namespaced("Ingress", "shop", "web");
        let service = ServiceRef {
            namespace: "shop".into(),
            name: "web".into(),
            port: ServicePortRef::Name("http".into()),
        };
        let line = HttpLog {
            client: "[2001:db8::1]:40000",
            host: Some("shop.example"),
            method: "GET",
            path: "/a\"b",
            status: 200,
            bytes_in: 77,
            bytes_out: 0,
            mode: "terminate",
            protocol: "HTTP/1.1",
            tls: Some(TlsFields {
                sni: Some("shop.example"),
                version: Some("TLSv1.3"),
                cipher: None,
            }),
            ingress: Some(&ingress),
            service: Some(&service),
            upstream: Some("10.0.0.7:8080".parse().unwrap()),
            upstream_status: Some(200),
            upstream_time: Some(Duration::from_nanos(1_234_500)),
            total_time: Duration::from_millis(2),
            error: None,
            request_id: Some("r1"),
            request_id_generated: false,
            user_agent: Some("curl/8"),
            referer: None,
        };
        assert_eq!(
            spelled(AccessFormat::Text, |out, f| write_http(out, f, &line)),
            "  INFO access: kind=\"http\" client=[2001:db8::1]:40000 host=\"shop.example\" \
             method=\"GET\" path=\"/a\\\"b\" protocol=\"HTTP/1.1\" status=200 bytes_in=77 \
             bytes_out=0 mode=\"terminate\" sni=\"shop.example\" tls_version=\"TLSv1.3\" \
             tls_cipher=- ingress=shop/web service=shop/web:http upstream=10.0.0.7:8080 \
             upstream_status=200 upstream_ms=1.235 total_ms=2.0 error=- request_id=\"r1\" \
             user_agent=\"curl/8\" referer=-\n"
        );
        let json = spelled(AccessFormat::Json, |out, f| write_http(out, f, &line));
        let value: serde_json::Value =
            serde_json::from_str(&format!("{{{}", &json[..])).expect("JSON");
        assert_eq!(value["target"], TARGET);
        assert_eq!(value["kind"], "http");
        assert_eq!(value["client"], "[2001:db8::1]:40000");
        assert_eq!(value["path"], "/a\"b");
        assert_eq!(value["ingress"], "shop/web");
        assert_eq!(value["service"], "shop/web:http");
        assert_eq!(value["upstream"], "10.0.0.7:8080");
        assert_eq!(value["upstream_ms"], 1.235);
        assert_eq!(value["total_ms"], 2.0);
        assert_eq!(value["tls_cipher"], serde_json::Value::Null);

        // A request ID made here is written unscanned: the same field as a scanned one.
        for format in [AccessFormat::Text, AccessFormat::Json] {
            let id = "0f3c5a9e1b7d2c4e6a8b0d1f3e5c7a9b";
            let scanned = HttpLog {
                request_id: Some(id),
                ..line
            };
            let generated = HttpLog {
                request_id_generated: true,
                ..scanned
            };
            let (a, b) = (
                spelled(format, |out, f| write_http(out, f, &scanned)),
                spelled(format, |out, f| write_http(out, f, &generated)),
            );
            assert_eq!(a, b);
            assert!(a.contains(id), "{a}");
        }

        let cluster_wide = ObjectRef::cluster("GatewayClass", "public");
        let numbered = ServiceRef {
            port: ServicePortRef::Number(8443),
            ..service.clone()
        };
        let line = HttpLog {
            ingress: Some(&cluster_wide),
            service: Some(&numbered),
            tls: None,
            upstream: None,
            ..line
        };
        let text = spelled(AccessFormat::Text, |out, f| write_http(out, f, &line));
        assert!(
            text.contains(
                " sni=- tls_version=- tls_cipher=- ingress=public service=shop/web:8443 upstream=- "
            ),
            "{text}"
        );
        assert_eq!(numbered.to_string(), "shop/web:8443");
    }
}
