//! Forwarding requests to upstreams: pooled clients, `X-Forwarded-*` / `Forwarded`, hop-by-hop
//! hygiene, endpoint choice with retry on connect failure, and websocket upgrades.
//!
//! Phases of [`forward`], in order:
//! 1. **rewrite**: strip hop-by-hop headers (keeping a websocket upgrade), add the forwarded
//!    headers, make the request HTTP/1.1 with the client's `Host`;
//! 2. **pick**: `balance::pick` over healthy, not-yet-tried endpoints (none → 503);
//! 3. **send** through the pooled client of the upstream's protocol, URI rewritten to the
//!    endpoint `ip:port`, under one `upstream_response` deadline (→ 504). A TCP connect
//!    failure sent nothing: the endpoint is marked failed and another one is tried, up to
//!    [`MAX_TRIES`] endpoints (the request body is only handed over once a connection exists,
//!    so it is still ours to resend). A connection closed or reset before any response head
//!    (a reused keep-alive connection racing the upstream's idle close) is resent once, on a
//!    new pick, when the method is idempotent and the body was never handed over. Any other
//!    failure is a 502 without retry: a TLS handshake failure is almost always configuration
//!    (the same for every pod), and after bytes were sent a retry could run a non-idempotent
//!    request twice;
//! 4. **respond**: strip hop-by-hop headers from the response; on `101 Switching Protocols`
//!    join the client and upstream connections with `copy_bidirectional`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::error::{ProxyError, ProxyFault, UpstreamFault};
use super::{ConnInfo, ProxyContext, balance};
use crate::access_log;
use crate::health::InFlight;
use crate::model::upstream::{BackendTls, Upstream, UpstreamProtocol};
use crate::table::{RouteTable, VirtualHost};

/// How many endpoints one request tries when connects fail.
pub const MAX_TRIES: usize = 3;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

type UpstreamClient = Client<UpstreamConnector, RetryBody>;

// === impl Clients ===

/// Pooled HTTP and HTTPS (re-encrypt) clients, kept across table swaps.
///
/// One keep-alive pool for plain HTTP and one per distinct [`BackendTls`] (each with its own
/// rustls config and session cache). Cloning is an `Arc` clone. The per-request lookup is a
/// read lock and a hash probe; the lock is never held across an await. Pools of `BackendTls`
/// values that no table uses any more stay until the process ends (their idle connections
/// close after 90 s): the set is bounded by the distinct configurations ever seen.
#[derive(Clone)]
pub struct Clients {
    inner: Arc<ClientsInner>,
}

struct ClientsInner {
    /// `timeouts.connect` of the table the latest request was routed on, read by connectors.
    connect_timeout_ms: Arc<AtomicU64>,
    plain: UpstreamClient,
    tls: RwLock<HashMap<BackendTls, UpstreamClient>>,
}

impl Default for Clients {
    fn default() -> Self {
        Clients::new()
    }
}

impl Clients {
    /// New, empty pools.
    pub fn new() -> Self {
        let connect_timeout_ms = Arc::new(AtomicU64::new(5_000));
        let plain = build_client(UpstreamConnector {
            tls: None,
            connect_timeout_ms: connect_timeout_ms.clone(),
        });
        Clients {
            inner: Arc::new(ClientsInner {
                connect_timeout_ms,
                plain,
                tls: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// The pooled client for an upstream protocol. `Tcp` (a pass-through upstream reached by an
    /// HTTP route on :80) is spoken to as plain HTTP.
    fn client_for(&self, protocol: &UpstreamProtocol) -> UpstreamClient {
        let UpstreamProtocol::Https(tls) = protocol else {
            return self.inner.plain.clone();
        };
        if let Some(client) = self
            .inner
            .tls
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(tls)
        {
            return client.clone();
        }
        self.inner
            .tls
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tls.clone())
            .or_insert_with(|| {
                build_client(UpstreamConnector::tls(
                    tls,
                    self.inner.connect_timeout_ms.clone(),
                ))
            })
            .clone()
    }

    fn set_connect_timeout(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        if self.inner.connect_timeout_ms.load(Ordering::Relaxed) != ms {
            self.inner.connect_timeout_ms.store(ms, Ordering::Relaxed);
        }
    }
}

fn build_client(connector: UpstreamConnector) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE)
        .build(connector)
}

// === impl UpstreamConnector ===

/// Opens connections to endpoints for the pooled client: TCP under `timeouts.connect`, then
/// TLS for re-encrypt (same deadline). The URI's authority is the endpoint `ip:port`.
#[derive(Clone)]
pub struct UpstreamConnector {
    tls: Option<UpstreamTls>,
    connect_timeout_ms: Arc<AtomicU64>,
}

#[derive(Clone)]
struct UpstreamTls {
    connector: TlsConnector,
    /// `None` when `BackendTls::sni` is not a valid server name.
    server_name: Option<ServerName<'static>>,
    sni: Arc<str>,
}

impl UpstreamConnector {
    fn tls(tls: &BackendTls, connect_timeout_ms: Arc<AtomicU64>) -> Self {
        UpstreamConnector {
            tls: Some(UpstreamTls {
                connector: TlsConnector::from(crate::tls::upstream::client_config(tls)),
                server_name: ServerName::try_from(tls.sni.clone()).ok(),
                sni: tls.sni.as_str().into(),
            }),
            connect_timeout_ms,
        }
    }

    async fn connect(self, uri: Uri) -> Result<UpstreamIo, ConnectError> {
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
        let addr: SocketAddr = authority
            .parse()
            .map_err(|_| ConnectError::Address(authority.to_string()))?;
        let after = Duration::from_millis(self.connect_timeout_ms.load(Ordering::Relaxed));
        let deadline = tokio::time::Instant::now() + after;
        let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Err(_) => return Err(ConnectError::TcpTimeout { addr, after }),
            Ok(Err(source)) => return Err(ConnectError::Tcp { addr, source }),
            Ok(Ok(tcp)) => tcp,
        };
        let _ = tcp.set_nodelay(true);
        let Some(tls) = self.tls else {
            return Ok(UpstreamIo::Plain(tcp));
        };
        let sni = tls.sni.to_string();
        let Some(server_name) = tls.server_name else {
            return Err(ConnectError::BadSni(sni));
        };
        match tokio::time::timeout_at(deadline, tls.connector.connect(server_name, tcp)).await {
            Err(_) => Err(ConnectError::TlsTimeout { addr, sni }),
            Ok(Err(source)) => Err(ConnectError::Tls { addr, sni, source }),
            Ok(Ok(stream)) => Ok(UpstreamIo::Tls(Box::new(stream))),
        }
    }
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = TokioIo<UpstreamIo>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await.map(TokioIo::new) })
    }
}

/// Why a connection to an endpoint could not be opened. Nothing was sent in any case.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("upstream address {0:?} is not ip:port")]
    Address(String),
    #[error("TCP connect to {addr} failed")]
    Tcp {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("TCP connect to {addr} timed out after {after:?}")]
    TcpTimeout { addr: SocketAddr, after: Duration },
    #[error("TLS handshake with {addr} (SNI {sni}) failed")]
    Tls {
        addr: SocketAddr,
        sni: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {addr} (SNI {sni}) timed out")]
    TlsTimeout { addr: SocketAddr, sni: String },
    #[error("backend SNI {0:?} is not a valid server name")]
    BadSni(String),
}

impl ConnectError {
    /// The endpoint did not accept a TCP connection: a reason to mark it failed and try another.
    pub fn is_tcp(&self) -> bool {
        matches!(
            self,
            ConnectError::Tcp { .. } | ConnectError::TcpTimeout { .. }
        )
    }
}

/// Finds our [`ConnectError`] in a client error's source chain.
fn connect_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConnectError> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return Some(c);
        }
        next = e.source();
    }
    None
}

/// Whether `err` says the upstream closed or reset the connection before sending a response
/// head (hyper's "connection closed before message completed", or a reset/EOF while waiting).
fn closed_before_response(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// A connection to an endpoint, plain or TLS.
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamIo::Plain(s) => s.is_write_vectored(),
            UpstreamIo::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }
}

// === impl RetryBody ===

/// The client's request body, handed to the upstream client in a way that lets us take it back
/// when the connect fails: the body sits in a shared slot and is only moved out when the
/// upstream connection first polls it (i.e. once a connection exists).
pub struct RetryBody {
    slot: Arc<Mutex<Option<Incoming>>>,
    body: Option<Incoming>,
    end_stream: bool,
    hint: SizeHint,
}

impl RetryBody {
    fn new(slot: &Arc<Mutex<Option<Incoming>>>, end_stream: bool, hint: SizeHint) -> Self {
        RetryBody {
            slot: slot.clone(),
            body: None,
            end_stream,
            hint,
        }
    }
}

impl Body for RetryBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if this.body.is_none() {
            this.body = this
                .slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        match &mut this.body {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Some(body) => body.is_end_stream(),
            None => self.end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.body {
            Some(body) => body.size_hint(),
            None => self.hint,
        }
    }
}

// === headers ===

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus `Proxy-Connection`. `Proxy-Authorization` is
/// end-to-end for us (a pod may use it) and is kept.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes the hop-by-hop headers and every header the `Connection` header names (never
/// `Host`).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| n != header::HOST)
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The `Upgrade` value of a websocket upgrade request (`Connection: upgrade` and
/// `Upgrade: websocket`), if it is one.
pub fn websocket_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let upgrade = headers.get(header::UPGRADE)?;
    let websocket = upgrade
        .to_str()
        .ok()?
        .split(',')
        .any(|p| p.trim().to_ascii_lowercase().starts_with("websocket"));
    (connection_upgrade && websocket).then(|| upgrade.clone())
}

/// Facts for the forwarded headers of one request.
#[derive(Debug, Clone, Copy)]
pub struct ForwardedFacts<'a> {
    /// The client address (after any trusted PROXY protocol header).
    pub client: IpAddr,
    /// Whether the client is a proxy in `trusted_forwarded`: its headers are appended to, not
    /// replaced.
    pub trusted: bool,
    /// `https` when we terminated TLS, `http` on :80.
    pub proto: &'static str,
    /// Our port the client connected to.
    pub port: u16,
    /// The host as the client sent it.
    pub host: Option<&'a str>,
}

/// Sets `X-Forwarded-For/-Proto/-Port/-Host` and RFC 7239 `Forwarded`. `X-Forwarded-For` and
/// `Forwarded` are appended to when the client is trusted, replaced otherwise; the others are
/// always replaced (they describe our hop).
pub fn set_forwarded_headers(headers: &mut HeaderMap, facts: &ForwardedFacts<'_>) {
    let xff_name = HeaderName::from_static("x-forwarded-for");
    let xff = append_list(headers, &xff_name, facts.trusted, &facts.client.to_string());
    headers.insert(xff_name, xff);

    let mut element = format!("for={};proto={}", forwarded_node(facts.client), facts.proto);
    if let Some(host) = facts.host {
        element.push_str(";host=");
        element.push_str(&forwarded_value(host));
    }
    let fwd = append_list(headers, &header::FORWARDED, facts.trusted, &element);
    headers.insert(header::FORWARDED, fwd);

    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(facts.proto),
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-port"),
        HeaderValue::from(facts.port),
    );
    let xfh = HeaderName::from_static("x-forwarded-host");
    match facts.host.and_then(|h| HeaderValue::from_str(h).ok()) {
        Some(v) => {
            headers.insert(xfh, v);
        }
        None => {
            headers.remove(xfh);
        }
    }
}

/// `existing, ours` when trusted (all existing lines joined), else `ours`.
fn append_list(headers: &HeaderMap, name: &HeaderName, trusted: bool, ours: &str) -> HeaderValue {
    let existing: Vec<&str> = if trusted {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let joined = if existing.is_empty() {
        ours.to_string()
    } else {
        format!("{}, {ours}", existing.join(", "))
    };
    HeaderValue::from_str(&joined).unwrap_or_else(|_| {
        HeaderValue::from_str(ours).expect("an IP address and a token are valid header values")
    })
}

/// A `Forwarded` node: IPv4 bare, IPv6 quoted and bracketed (RFC 7239 §6).
fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// A `Forwarded` parameter value: a token as is, anything else as a quoted-string.
fn forwarded_value(value: &str) -> String {
    let token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        value.to_string()
    } else {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    }
}

// === forward ===

/// Everything [`forward`] needs about where a request came from and where it goes.
pub struct Forward<'a> {
    pub ctx: &'a ProxyContext,
    pub table: &'a RouteTable,
    pub vhost: &'a VirtualHost,
    pub upstream: &'a Upstream,
    pub conn: &'a ConnInfo,
    /// The host as the client sent it (`Host` header or URI authority).
    pub raw_host: Option<&'a str>,
}

/// An upstream's answer, ready to stream back to the client.
pub struct UpstreamResponse {
    /// Hop-by-hop headers already stripped.
    pub response: Response<Incoming>,
    /// The endpoint that answered.
    pub endpoint: SocketAddr,
    /// From sending the request to the response head.
    pub upstream_time: Duration,
    /// Least-request accounting; hold it until the response body is done. `None` after an
    /// upgrade (the tunnel task holds it).
    pub in_flight: Option<InFlight>,
}

/// Sends `req` to an endpoint of `f.upstream` and returns its response head (see the module
/// docs for the phases).
pub async fn forward(
    f: &Forward<'_>,
    mut req: Request<Incoming>,
) -> Result<UpstreamResponse, ProxyError> {
    let timeouts = f.table.class.timeouts;
    let deadline = tokio::time::Instant::now() + timeouts.upstream_response;
    let service = &f.upstream.service;

    // 1. rewrite
    let upgrade = match req.version() {
        Version::HTTP_11 => websocket_upgrade(req.headers()),
        _ => None,
    };
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let from_h2 = parts.version == Version::HTTP_2;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(upgrade) = &upgrade {
        parts.headers.insert(header::UPGRADE, upgrade.clone());
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if from_h2 {
        join_cookies(&mut parts.headers);
    }
    if let Some(host) = f.raw_host
        && (parts.uri.authority().is_some() || !parts.headers.contains_key(header::HOST))
        && let Ok(value) = HeaderValue::from_str(host)
    {
        parts.headers.insert(header::HOST, value);
    }
    if f.vhost.forwarded_headers {
        let client = f.conn.client.ip();
        let facts = ForwardedFacts {
            client,
            trusted: f
                .table
                .class
                .trusted_forwarded
                .iter()
                .any(|net| net.contains(&client)),
            proto: if f.conn.tls.is_some() {
                "https"
            } else {
                "http"
            },
            port: f.ctx.client_facing_port(f.conn),
            host: f.raw_host,
        };
        set_forwarded_headers(&mut parts.headers, &facts);
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let (end_stream, hint) = (body.is_end_stream(), body.size_hint());
    let slot = Arc::new(Mutex::new(Some(body)));
    let (client, scheme) = match &f.upstream.protocol {
        UpstreamProtocol::Https(_) => (
            f.ctx.clients.client_for(&f.upstream.protocol),
            Scheme::HTTPS,
        ),
        _ => (f.ctx.clients.client_for(&f.upstream.protocol), Scheme::HTTP),
    };
    f.ctx.clients.set_connect_timeout(timeouts.connect);

    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_error = None;
    let mut resent = false;
    while tried.len() < MAX_TRIES {
        // 2. pick
        let Some(endpoint) = balance::pick(f.upstream, &f.ctx.health, &tried) else {
            break;
        };
        let in_flight = f.ctx.health.begin_request(endpoint);

        // 3. send
        let uri = endpoint_uri(scheme.clone(), endpoint, path_and_query.clone())?;
        let mut upstream_req = Request::new(RetryBody::new(&slot, end_stream, hint));
        *upstream_req.method_mut() = parts.method.clone();
        *upstream_req.uri_mut() = uri;
        *upstream_req.version_mut() = Version::HTTP_11;
        // The headers are only needed again if another endpoint may be tried after this one.
        let may_retry = tried.len() + 1 < MAX_TRIES && f.upstream.endpoints.len() > tried.len() + 1;
        *upstream_req.headers_mut() = if may_retry {
            parts.headers.clone()
        } else {
            std::mem::take(&mut parts.headers)
        };

        let sent = Instant::now();
        let result = match tokio::time::timeout_at(deadline, client.request(upstream_req)).await {
            Err(_) => {
                return Err(ProxyError::upstream(
                    service,
                    Some(endpoint),
                    UpstreamFault::Timeout(timeouts.upstream_response),
                ));
            }
            Ok(result) => result,
        };
        let mut response = match result {
            Ok(response) => response,
            Err(err) => match connect_error(&err) {
                Some(c) if c.is_tcp() => {
                    f.ctx.health.mark_failed(endpoint);
                    tried.push(endpoint);
                    let body_still_ours = slot
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_some()
                        || end_stream;
                    last_error = Some(ProxyError::upstream(
                        service,
                        Some(endpoint),
                        UpstreamFault::Connect(Box::new(err)),
                    ));
                    if body_still_ours {
                        continue;
                    }
                    break;
                }
                Some(_) => {
                    return Err(ProxyError::upstream(
                        service,
                        Some(endpoint),
                        UpstreamFault::Tls(Box::new(err)),
                    ));
                }
                None => {
                    // Closed before any response head: on a reused keep-alive connection, the
                    // upstream's idle close racing our request. Resend once, on a new pick, when
                    // that is safe: an idempotent method whose body was never handed over.
                    let body_still_ours = slot
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_some()
                        || end_stream;
                    if !resent
                        && parts.method.is_idempotent()
                        && body_still_ours
                        && closed_before_response(&err)
                    {
                        resent = true;
                        continue;
                    }
                    return Err(ProxyError::upstream(
                        service,
                        Some(endpoint),
                        UpstreamFault::Reset(Box::new(err)),
                    ));
                }
            },
        };
        let upstream_time = sent.elapsed();

        // 4. respond
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(client_upgrade), Some(requested)) = (client_upgrade, upgrade) else {
                return Err(ProxyError::upstream(
                    service,
                    Some(endpoint),
                    UpstreamFault::Reset(
                        "101 Switching Protocols to a request that asked for no upgrade".into(),
                    ),
                ));
            };
            let agreed = response
                .headers()
                .get(header::UPGRADE)
                .cloned()
                .unwrap_or(requested);
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let headers = response.headers_mut();
            strip_hop_by_hop(headers);
            headers.insert(header::UPGRADE, agreed);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            tokio::spawn(tunnel(
                client_upgrade,
                upstream_upgrade,
                in_flight,
                f.conn.client,
                endpoint,
            ));
            return Ok(UpstreamResponse {
                response,
                endpoint,
                upstream_time,
                in_flight: None,
            });
        }
        strip_hop_by_hop(response.headers_mut());
        return Ok(UpstreamResponse {
            response,
            endpoint,
            upstream_time,
            in_flight: Some(in_flight),
        });
    }
    Err(last_error
        .unwrap_or_else(|| ProxyError::upstream(service, None, UpstreamFault::NoEndpoint)))
}

/// `scheme://endpoint/path?query`, the URI the pooled client connects and keys its pool by.
fn endpoint_uri(
    scheme: Scheme,
    endpoint: SocketAddr,
    path_and_query: PathAndQuery,
) -> Result<Uri, ProxyError> {
    let authority = Authority::from_maybe_shared(Bytes::from(endpoint.to_string()))
        .map_err(|e| ProxyFault::UpstreamRequest(format!("{endpoint}: {e}")))?;
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    parts.path_and_query = Some(path_and_query);
    Uri::from_parts(parts)
        .map_err(|e| ProxyFault::UpstreamRequest(format!("{endpoint}: {e}")).into())
}

/// Ends least-request accounting for an endpoint (the guard's drop does it).
fn drop_in_flight(_in_flight: InFlight) {}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().count() < 2 {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

/// Joins an upgraded client connection with the upgraded upstream connection until either
/// side closes, then logs it as one TCP line.
async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    in_flight: InFlight,
    client_addr: SocketAddr,
    endpoint: SocketAddr,
) {
    let started = Instant::now();
    let (client, upstream) = tokio::join!(client, upstream);
    let (termination, from_client, to_client) = match (client, upstream) {
        (Ok(client), Ok(upstream)) => {
            let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
            match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                Ok((from, to)) => ("closed", from, to),
                Err(_) => ("reset", 0, 0),
            }
        }
        (Err(_), _) => ("client-upgrade-failed", 0, 0),
        (_, Err(_)) => ("upstream-upgrade-failed", 0, 0),
    };
    // Least-request accounting ends with the tunnel.
    drop_in_flight(in_flight);
    access_log::tcp(&access_log::TcpLog {
        client: client_addr,
        sni: None,
        upstream: Some(endpoint),
        bytes_from_client: from_client,
        bytes_to_client: to_client,
        duration: started.elapsed(),
        termination,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_named_headers_are_stripped_but_never_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-secret, host, keep-alive"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key(header::HOST));
        assert!(h.contains_key("proxy-authorization"));
        assert!(!h.contains_key("x-secret") && !h.contains_key("keep-alive"));
        assert!(!h.contains_key(header::CONNECTION));
    }

    #[test]
    fn forwarded_quotes_ipv6_and_hosts_with_ports() {
        let mut h = HeaderMap::new();
        let facts = ForwardedFacts {
            client: "2001:db8::1".parse().unwrap(),
            trusted: false,
            proto: "https",
            port: 443,
            host: Some("example.com:8443"),
        };
        set_forwarded_headers(&mut h, &facts);
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";proto=https;host=\"example.com:8443\""
        );
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
    }
}
