//! The active probes (HTTP HEAD/GET, HTTP inside TLS, TLS handshake with a real ClientHello,
//! TCP connect, each optionally preceded by a PROXY header) and the per-endpoint probe specs
//! derived from a routing table. Kept apart from the registry so the network code can be read and
//! tested without the state machine or the table watcher; scheduling (one task per endpoint,
//! timeouts, recording results) stays in the registry.
//!
//! # Probes
//! One task per endpoint, probing every `interval` with a timeout of `min(interval, 2 s)`
//! ([`MAX_PROBE_TIMEOUT`]):
//! - **HTTP**: raw `METHOD path HTTP/1.1` with `Host` and `Connection: close`; a 2xx or 3xx
//!   status line is healthy (HAProxy's `option httpchk`). For re-encrypt upstreams it runs inside
//!   TLS (SNI = the upstream's backend SNI, any certificate accepted).
//! - **TLS**: a real TLS 1.2/1.3 handshake with SNI; healthy when it completes (what
//!   `ssl-hello-chk` approximates with an SSLv3 hello). The certificate is not verified
//!   (pass-through backends hold their own certificates), but the handshake signature is.
//! - **TCP**: a connect.
//! - **None**: no task; the endpoint is up unless passively failed.
//!
//! When the upstream sends a PROXY protocol header, probes send one too (HAProxy's
//! `check-send-proxy`), or a backend that requires it would look dead.
//!
//! **Shared endpoints**: when several upstreams name the same endpoint with different checks,
//! the check of the upstream whose Service (`namespace`, `name`, `port`) sorts first wins; ties
//! (the same Service port with different annotations on different Ingresses) go to the smallest
//! check by (kind: HTTP < TLS < TCP < none, then its fields, then interval).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::table::RouteTable;
use crate::table::upstream::{HealthProbe, ProxyProtocol, ServiceRef};
use crate::tls::upstream::AcceptAnyServerCert;

/// Upper bound of a probe's timeout; the timeout is `min(interval, MAX_PROBE_TIMEOUT)`.
pub(crate) const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest probe interval honoured (a zero interval would spin).
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Why an active probe failed (logged; the first failure that takes an endpoint down is logged
/// at info level with the transition).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("TLS client configuration: {0}")]
    TlsConfig(String),
    #[error("sending the PROXY header: {0}")]
    Proxy(std::io::Error),
    #[error("HTTP exchange: {0}")]
    Io(std::io::Error),
    #[error("HTTP status {0} (want 2xx or 3xx)")]
    Status(u16),
    #[error("no HTTP status line in the response")]
    BadResponse,
    #[error("probe {field} {value:?} contains characters not allowed in a request line/header")]
    InvalidRequest { field: &'static str, value: String },
}

// === probe specs ===

/// The check of one endpoint, in a form with a total order (for the shared-endpoint rule).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Check {
    Http {
        method: String,
        path: String,
        host: String,
        /// `Some(sni)` for re-encrypt upstreams: HTTP inside TLS.
        tls_sni: Option<String>,
    },
    Tls {
        sni: String,
    },
    Tcp,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ProbeSpec {
    pub(super) check: Check,
    pub(super) interval: Duration,
    pub(super) proxy: Option<ProxyProtocol>,
}

/// The check of every endpoint of `table`, one per endpoint (see the shared-endpoint rule).
pub(super) fn desired_probes(table: &RouteTable) -> BTreeMap<SocketAddr, ProbeSpec> {
    let mut chosen: BTreeMap<SocketAddr, (&ServiceRef, ProbeSpec)> = BTreeMap::new();
    for upstream in table.upstreams() {
        let check = match &upstream.health.probe {
            HealthProbe::Http { method, path, host } => Check::Http {
                method: method.clone(),
                path: path.clone(),
                host: host.clone(),
                tls_sni: upstream.protocol.backend_tls().map(|tls| tls.sni.clone()),
            },
            HealthProbe::Tls { sni } => Check::Tls { sni: sni.clone() },
            HealthProbe::Tcp => Check::Tcp,
            HealthProbe::None => Check::None,
        };
        let spec = ProbeSpec {
            check,
            interval: upstream.health.interval.max(MIN_INTERVAL),
            proxy: upstream.proxy_protocol,
        };
        // Terminating endpoints are probed too: they are the fallback when no ready one is
        // healthy, and a dead fallback must not be picked.
        for addr in upstream.endpoints.load().all() {
            match chosen.get(addr) {
                Some((service, current)) if (*service, current) <= (&upstream.service, &spec) => {}
                _ => {
                    chosen.insert(*addr, (&upstream.service, spec.clone()));
                }
            }
        }
    }
    chosen
        .into_iter()
        .map(|(addr, (_, spec))| (addr, spec))
        .collect()
}

/// One probe of `addr`, without its timeout.
pub(super) async fn probe(
    addr: SocketAddr,
    spec: &ProbeSpec,
    tls: &Result<Arc<ProbeTls>, String>,
) -> Result<(), ProbeError> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(ProbeError::Connect)?;
    let _ = tcp.set_nodelay(true);
    if let Some(version) = spec.proxy {
        send_proxy_header(&mut tcp, version, addr).await?;
    }
    let tls_config = |alpn_http: bool| -> Result<Arc<rustls::ClientConfig>, ProbeError> {
        match tls {
            Ok(t) if alpn_http => Ok(Arc::clone(&t.https)),
            Ok(t) => Ok(Arc::clone(&t.hello)),
            Err(e) => Err(ProbeError::TlsConfig(e.clone())),
        }
    };
    match &spec.check {
        Check::Tcp | Check::None => Ok(()),
        Check::Tls { sni } => {
            let mut stream = tls_connect(tcp, sni, addr, tls_config(false)?).await?;
            // Polite close (close_notify); the handshake already proved the point.
            let _ = stream.shutdown().await;
            Ok(())
        }
        Check::Http {
            method,
            path,
            host,
            tls_sni,
        } => {
            let request = http_request(method, path, host)?;
            match tls_sni {
                None => http_exchange(tcp, &request).await,
                Some(sni) => {
                    let stream = tls_connect(tcp, sni, addr, tls_config(true)?).await?;
                    http_exchange(stream, &request).await
                }
            }
        }
    }
}

/// The probe request: `METHOD path HTTP/1.1`, `Host`, `Connection: close`.
fn http_request(method: &str, path: &str, host: &str) -> Result<String, ProbeError> {
    let invalid = |field: &'static str, value: &str| ProbeError::InvalidRequest {
        field,
        value: value.to_string(),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid("method", method));
    }
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("path", path));
    }
    if !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("host", host));
    }
    Ok(format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: portcullis-health-check\r\nAccept: */*\r\n\r\n"
    ))
}

/// Sends `request` and reads the status line; 2xx/3xx is healthy.
async fn http_exchange<S>(mut stream: S, request: &str) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(ProbeError::Io)?;
    stream.flush().await.map_err(ProbeError::Io)?;
    let mut buf = [0u8; 256];
    let mut len = 0;
    while len < buf.len() && !buf[..len].contains(&b'\n') {
        let n = stream.read(&mut buf[len..]).await.map_err(ProbeError::Io)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let status = parse_status(&buf[..len]).ok_or(ProbeError::BadResponse)?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}

/// The status code of an `HTTP/1.x NNN ...` status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Writes a PROXY protocol header for this probe connection (source = our socket).
async fn send_proxy_header(
    tcp: &mut TcpStream,
    version: ProxyProtocol,
    dst: SocketAddr,
) -> Result<(), ProbeError> {
    let src = tcp.local_addr().map_err(ProbeError::Proxy)?;
    let header = crate::wire::proxy_protocol::encode(version, src, dst);
    tcp.write_all(&header).await.map_err(ProbeError::Proxy)
}

// === TLS for probes ===

/// Client configurations for TLS probes: certificates are not verified (see the module docs).
pub(super) struct ProbeTls {
    /// TLS hello check: no ALPN.
    hello: Arc<rustls::ClientConfig>,
    /// HTTP inside TLS (re-encrypt upstreams): ALPN `http/1.1`.
    https: Arc<rustls::ClientConfig>,
}

impl ProbeTls {
    pub(super) fn new() -> Result<ProbeTls, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let build = |alpn: Option<&[u8]>| -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(Arc::clone(
                    &provider,
                ))))
                .with_no_client_auth();
            // Every probe does a full handshake: resumption would prove less.
            config.resumption = rustls::client::Resumption::disabled();
            config.alpn_protocols = alpn.into_iter().map(<[u8]>::to_vec).collect();
            Ok(Arc::new(config))
        };
        Ok(ProbeTls {
            hello: build(None)?,
            https: build(Some(b"http/1.1"))?,
        })
    }
}

/// Connects TLS over `tcp` with `sni` (an IP address or an invalid name sends no SNI).
async fn tls_connect(
    tcp: TcpStream,
    sni: &str,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeError> {
    let name = ServerName::try_from(sni.to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(ProbeError::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::diagnostic::ObjectRef;
    use crate::table::host::HostMatch;
    use crate::table::route::{PathMatch, Route, TlsMode};
    use crate::table::upstream::{
        Cursor, Endpoints, HealthCheck, LoadBalance, ServicePortRef, Upstream, UpstreamProtocol,
    };
    use crate::table::{CertificateChoice, ClassSettings, VirtualHost};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    fn upstream(name: &str, endpoints: &[SocketAddr], probe: HealthProbe) -> Arc<Upstream> {
        Arc::new(Upstream {
            service: ServiceRef {
                namespace: "default".into(),
                name: name.into(),
                port: ServicePortRef::Number(80),
            },
            endpoints: Endpoints::ready(endpoints.to_vec()).into(),
            protocol: UpstreamProtocol::Http,
            balance: LoadBalance::RoundRobin,
            health: HealthCheck {
                probe,
                interval: Duration::from_secs(5),
            },
            proxy_protocol: None,
            cursor: Cursor::default(),
        })
    }

    fn table_of(upstreams: Vec<(&str, Arc<Upstream>)>) -> RouteTable {
        let vhosts = upstreams
            .into_iter()
            .map(|(host, upstream)| {
                let owner = ObjectRef::namespaced("Ingress", "default", host);
                VirtualHost {
                    host: HostMatch::Exact(host.into()),
                    tls_mode: TlsMode::Terminate,
                    certificate: CertificateChoice::Default,
                    ssl_redirect: false,
                    hsts: None,
                    forwarded_headers: true,
                    routes: vec![Route {
                        path: PathMatch::prefix("/"),
                        upstream,
                        action: Default::default(),
                        max_body: None,
                        policy: Default::default(),
                        source: owner.clone(),
                        canary: None,
                        conditions: None,
                        split: None,
                        port: None,
                    }],
                    default_backend: None,
                    default_action: Default::default(),
                    default_max_body: None,
                    default_policy: Default::default(),
                    www_redirect: None,
                    passthrough: None,
                    passthrough_split: None,
                    owner,
                    client_auth: None,
                }
            })
            .collect();
        RouteTable::new(vhosts, None, Vec::new(), ClassSettings::default())
    }

    #[test]
    fn shared_endpoint_takes_the_check_of_the_first_service() {
        let shared = addr(80);
        let z = upstream("zeta", &[shared, addr(81)], HealthProbe::Tcp);
        let a = upstream("alpha", &[shared], HealthProbe::None);
        // Host order puts zeta's host first; the Service name decides, not the host.
        let t = table_of(vec![("a.example.com", z), ("b.example.com", a)]);
        let probes = desired_probes(&t);
        assert_eq!(probes[&shared].check, Check::None);
        assert_eq!(probes[&addr(81)].check, Check::Tcp);
        // Same Service port, two checks: the smaller check wins (HTTP < TLS < TCP < none).
        let t = table_of(vec![
            (
                "a.example.com",
                upstream("web", &[shared], HealthProbe::Tcp),
            ),
            (
                "b.example.com",
                upstream("web", &[shared], HealthProbe::Tls { sni: "x".into() }),
            ),
        ]);
        assert_eq!(
            desired_probes(&t)[&shared].check,
            Check::Tls { sni: "x".into() }
        );
    }

    #[test]
    fn terminating_endpoints_are_probed() {
        let (ready, draining) = (addr(90), addr(91));
        let mut u = Upstream::clone(&upstream("web", &[ready], HealthProbe::Tcp));
        u.endpoints = Endpoints {
            ready: vec![ready],
            terminating: vec![draining],
        }
        .into();
        let t = table_of(vec![("a.example.com", Arc::new(u))]);
        let probes = desired_probes(&t);
        assert_eq!(probes[&ready].check, Check::Tcp);
        assert_eq!(probes[&draining].check, Check::Tcp);
        assert_eq!(t.endpoints(), vec![ready, draining]);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 302 Found\r\n"), Some(302));
        assert_eq!(parse_status(b"HTTP/1.1 2"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    #[test]
    fn probe_requests_reject_injection() {
        assert!(http_request("HEAD", "/healthz", "a.example.com").is_ok());
        assert!(http_request("HEAD", "/x\r\nEvil: 1", "a").is_err());
        assert!(http_request("HEAD", "/", "a\r\nEvil: 1").is_err());
        assert!(http_request("GE T", "/", "a").is_err());
        assert!(http_request("GET", "x", "a").is_err());
    }
}
