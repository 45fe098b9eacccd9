//! HTTP after the transport: :80 connections and terminated TLS connections.
//!
//! One client connection is served by hyper's HTTP/2 server when TLS negotiated `h2` by ALPN
//! or a :80 client opened with the HTTP/2 preface (h2c with prior knowledge; the `Upgrade: h2c`
//! dance is not offered), by its HTTP/1.1 server otherwise, with upgrades enabled. Protections:
//! - header read timeout (`timeouts.header_read`, slowloris): an HTTP/1.1 connection with no
//!   request in flight for that long — a head that does not arrive, or arrives too slowly —
//!   is closed, as hyper's own h1 timer would (which we leave off: it is made, armed and
//!   dropped for every request, ~600 instructions; ours is armed once per connection and
//!   re-reads the connection's state when it wakes). It counts while a keep-alive connection
//!   waits for its next request too, so the effective h1 keep-alive idle time is
//!   `min(idle, header_read)`;
//! - idle timeout (`timeouts.idle`): no request in flight for that long → graceful close
//!   (HTTP/1.1 and HTTP/2);
//! - an HTTP/1.1 connection without a request for [`RELEASE_AFTER`] gives hyper's state
//!   (buffers, the service's future slot) back and waits for its next request holding only its
//!   socket and TLS session ([`super::idle_release`]); the timeouts above still apply;
//! - `limits.max_header_bytes`: hyper's h1 read buffer is capped (431 from hyper) and every
//!   request head is measured here (431 from us, both protocols);
//! - request smuggling: see [`super::framing_guard`] (400, connection closed);
//! - graceful shutdown when `ctx.shutdown` turns true: the request in flight finishes, then the
//!   connection closes (HTTP/2: GOAWAY).
//!
//! Routing: **every request is routed on the live table** when its head arrives (one
//! `ArcSwap` load per request): each HTTP/1.1 keep-alive request and each HTTP/2 stream meets
//! the configuration that is current, as a new connection would. The connection keeps only what
//! its TLS handshake fixed (certificate, SNI, ALPN) and what hyper was configured with at
//! accept (header buffer size, timeouts). When the live table no longer serves the connection
//! on those terms (its SNI now gets another certificate, or the request's host is now
//! pass-through) the request gets `421 Misdirected Request` and the connection is closed
//! gracefully (HTTP/1.1 `Connection: close`, HTTP/2 GOAWAY), so the client's retry opens a new
//! connection that handshakes with the live table. A host or path that is gone is a 404.
//!
//! Per-request phases of [`handle`]: check (framing, header size) → route (host and path) →
//! redirect (:80 `ssl-redirect` → 308; a `from-to-www-redirect` host → 308; the route's
//! `app-root`, `permanent-redirect`, `temporary-redirect`) → forward ([`super::forward`]) →
//! respond (HSTS on TLS) → log (access line and metrics when the response body ends).

use std::borrow::Cow;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::basic_auth;
use super::body::{self, BodyObserver, ProxyBody, ResponseBody, own_response};
use super::canary;
use super::client_auth;
use super::cors;
use super::discard::Pending;
use super::error::{ClientFault, ProxyError, UpstreamFault};
use super::error_pages;
use super::external_auth;
use super::forward::{self, ConnForwarded, Forward};
use super::framing_guard::{FramingGuard, FramingVerdict};
use super::idle_release::{Idle, RELEASE_AFTER, ReleasableIo};
use super::pool::UpstreamConn;
use super::rate_limit;
use super::request_id;
use super::source_ranges;
use super::wake_gate::WakeGate;
use super::{ConnInfo, ProxyContext};
use crate::health::InFlight;
use crate::table::host::normalize_host;
use crate::table::route::{RouteAction, TlsMode};
use crate::table::upstream::UpstreamProtocol;
use crate::table::{HttpRoute, RouteTable, TableHandle, TimeoutSettings, VirtualHost};
use crate::telemetry::metrics::{ActiveConnection, HttpRequestSeries, Mode, RouteId};
use crate::telemetry::{access_log, log_format};

/// hyper's smallest allowed h1 read buffer.
const MIN_H1_BUFFER: usize = 8192;

/// Serves HTTP/1.1 (and h2 when `conn.tls` negotiated it, or `h2c`: a cleartext client opened
/// with the HTTP/2 preface) on one client connection, routing every request on the live table
/// in `live`. `table` is the table the connection was accepted with: its class settings fix
/// the connection-level limits and timeouts hyper runs with. `active` counts the connection
/// (`portcullis_connections_active`) until the future ends.
///
/// The set-up runs before the returned future exists, so that future keeps only what it uses:
/// an `async fn` would keep every argument for the connection's whole life, moved-from or not
/// (the connection facts moved into its state among them), and a parked connection's task is
/// this future.
pub(crate) fn serve_connection<IO>(
    io: IO,
    conn: ConnInfo,
    h2c: bool,
    table: Arc<RouteTable>,
    live: TableHandle,
    ctx: Arc<ProxyContext>,
    active: ActiveConnection,
) -> impl Future<Output = ()>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let timeouts = table.class.timeouts;
    let max_header_bytes = table.class.limits.max_header_bytes as usize;
    let h2 = conn
        .tls
        .as_ref()
        .and_then(|t| t.alpn.as_deref())
        .is_some_and(|alpn| alpn == b"h2")
        || h2c;

    // Over TLS, hyper flattens a response head and body into its own buffer (one record, no
    // allocation); the TLS stream's vectored write would gather them into a new one.
    let writev = conn.tls.is_none();
    let verdict = Arc::new(FramingVerdict::default());
    let h1_buffer = max_header_bytes.max(MIN_H1_BUFFER);
    let io = FramingGuard::new(io, !h2, h1_buffer + 1024, verdict.clone());
    let idle = Arc::new(Idle::new());
    let state = Arc::new(ClientConnection {
        terms_checked: Mutex::new(Arc::downgrade(&table)),
        conn,
        live,
        retire: Notify::new(),
        ctx: ctx.clone(),
        verdict,
        requests: AtomicU64::new(0),
        idle: idle.clone(),
        series: Mutex::new(None),
        forwarded: OnceLock::new(),
        client_spelled: OnceLock::new(),
    });

    let service = {
        let state = state.clone();
        service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(handle(state, req).await) }
        })
    };
    async move {
        let _active = active;
        // hyper's own h1 and h2 connections, not hyper-util's `auto` one: ALPN already
        // decided the protocol, so there is nothing to sniff, and the version-detecting
        // wrapper around the I/O is a cost on every read.
        if h2 {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
            let connection = builder.serve_connection(TokioIo::new(io), service);
            // Boxed: the HTTP/2 connection's state is larger than HTTP/1's, and this task's
            // future is sized for the larger branch, so every HTTP/1 connection would carry it.
            let mut connection = Box::pin(connection);
            Box::pin(drive(
                connection.as_mut(),
                |c| c.graceful_shutdown(),
                &state,
                timeouts.idle,
                None,
            ))
            .await;
        } else {
            let mut builder = http1::Builder::new();
            builder
                // Ours instead (`drive`): hyper's would be a new timer per request.
                .header_read_timeout(None)
                .max_buf_size(h1_buffer)
                .writev(writev)
                .keep_alive(true);
            let mut io = ReleasableIo::new(io, idle);
            let mut service = service;
            loop {
                // Boxed, so that while the connection is parked its task holds none of it.
                let mut connection = Box::new(
                    builder
                        .serve_connection(TokioIo::new(io), service)
                        .with_upgrades(),
                );
                // Boxed as well: its timers and select are larger than the parked state, and
                // a future is as large as its largest state for its whole life.
                let released = Box::pin(drive(
                    Pin::new(&mut *connection),
                    |c| c.graceful_shutdown(),
                    &state,
                    timeouts.idle,
                    Some(timeouts.header_read),
                ))
                .await;
                // Not released, or upgraded (the tunnel has the I/O): the connection is over.
                if !released {
                    return;
                }
                let Some(http1::Parts {
                    io: released_io,
                    read_buf,
                    service: released_service,
                    ..
                }) = connection.into_parts()
                else {
                    return;
                };
                (io, service) = (released_io.into_inner(), released_service);
                if !park(&mut io, read_buf, &state, timeouts).await {
                    return;
                }
            }
        }
    }
}

/// Runs a client connection until it ends, closing it gracefully (the request in flight
/// finishes) on shutdown or after `idle` without a request. With `header_read` (HTTP/1.1):
/// - a connection without a request in flight for `header_read` is closed at once (its head
///   did not come in time: nothing to finish), draining or not;
/// - a connection without a request for [`RELEASE_AFTER`] is ended by a release instead
///   ([`idle_release`](super::idle_release)): returns whether it was.
async fn drive<C, E>(
    mut connection: Pin<&mut C>,
    graceful_shutdown: impl Fn(Pin<&mut C>),
    state: &ClientConnection,
    idle: Duration,
    header_read: Option<Duration>,
) -> bool
where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    // What ends the connection (gracefully, at once, or by a release). Polled behind a gate:
    // only when one of them woke, not on every wake of the connection (`wake_gate`). While
    // draining only the header-read timeout is left: a graceful close waits for a head that
    // has started to arrive, a slow one included.
    let side = |not_before: Option<tokio::time::Instant>, draining: bool| async move {
        let mut shutdown = state.ctx.shutdown.clone();
        let release = async {
            if let Some(at) = not_before {
                tokio::time::sleep_until(at).await;
            }
            state.idle.expired(RELEASE_AFTER).await;
        };
        let head_late = async {
            match header_read {
                Some(limit) => state.idle.expired(limit).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = head_late => Side::Close,
            _ = shutdown_requested(&mut shutdown), if !draining => Side::Stop,
            _ = state.idle.expired(idle), if !draining => Side::Stop,
            () = state.retire.notified(), if !draining => Side::Stop,
            () = release, if header_read.is_some() && !draining => Side::Release,
        }
    };
    let mut stop = std::pin::pin!(side(None, false));
    let mut gate = WakeGate::new();
    std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = connection.as_mut().poll(cx) {
            return Poll::Ready(state.ended(result));
        }
        match gate.poll(stop.as_mut(), cx) {
            Poll::Pending => {}
            Poll::Ready(Side::Close) => {
                // As hyper closed on its own header-read timer: no response, the socket shut.
                tracing::debug!(client = %state.conn.client, "no request head within timeouts.headerRead");
                return Poll::Ready(false);
            }
            Poll::Ready(Side::Stop) => {
                graceful_shutdown(connection.as_mut());
                stop.set(side(None, true));
                gate = WakeGate::new();
                // The connection acts on it when polled, and the new side future registers.
                cx.waker().wake_by_ref();
            }
            Poll::Ready(Side::Release) => {
                // hyper reads during this poll if it is waiting for a head; the I/O answers
                // end-of-stream if releasing is safe.
                state.idle.request_release();
                let polled = connection.as_mut().poll(cx);
                state.idle.withdraw_release();
                if let Poll::Ready(result) = polled {
                    return Poll::Ready(state.ended(result));
                }
                if !state.idle.released() {
                    // Not now (a request, a partial head or a write under way): try again
                    // after another quiet period.
                    stop.set(side(Some(tokio::time::Instant::now() + RELEASE_AFTER), false));
                    gate = WakeGate::new();
                }
                // Registers the new side future, or lets hyper finish the released connection.
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    })
    .await
}

/// What the side of [`drive`] asks for.
enum Side {
    /// Close now: no request head came within `timeouts.header_read`.
    Close,
    /// Close gracefully.
    Stop,
    /// Release the connection's HTTP state (`idle_release`).
    Release,
}

/// Holds a released connection until its client sends the next request (`true`: serve it) or
/// it is over (`false`): the client closed, the keep-alive timeout passed, or shutdown began.
/// The keep-alive timeout counts from the last request's end, as the header-read timeout
/// does, so it is `min(idle, header_read)` as for a connection that was not released.
async fn park<IO>(
    io: &mut ReleasableIo<IO>,
    unread: Bytes,
    state: &ClientConnection,
    timeouts: TimeoutSettings,
) -> bool
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let _parked = state.ctx.metrics.connection_parked();
    let deadline = state.idle.last_done() + timeouts.idle.min(timeouts.header_read);
    let mut shutdown = state.ctx.shutdown.clone();
    tokio::select! {
        next = io.wait_for_request(unread) => match next {
            Ok(true) => return true,
            // The client closed or the connection broke: nothing to say goodbye to.
            Ok(false) | Err(_) => return false,
        },
        () = tokio::time::sleep_until(deadline) => {}
        () = shutdown_requested(&mut shutdown) => {}
    }
    // An idle connection closed by us, as hyper closes one: TLS close_notify, then FIN.
    let _ = tokio::time::timeout(CLOSE_GRACE, io.shutdown()).await;
    false
}

/// How long closing a parked connection may take (its send buffer is empty: no time at all,
/// unless the client's receive window is shut).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Resolves when shutdown is requested; never if the sender is gone without asking.
async fn shutdown_requested(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Per-connection state shared by the requests of one client connection.
struct ClientConnection {
    conn: ConnInfo,
    /// The live table, loaded once per request.
    live: TableHandle,
    /// The last table under which this connection's TLS terms were found unchanged (at first
    /// the accept-time table): while the live table is the same, the check is one pointer
    /// comparison. A `Weak`, so an old table is not kept alive by an idle connection, and its
    /// address cannot be reused while compared against.
    terms_checked: Mutex<Weak<RouteTable>>,
    /// Asks the connection to close gracefully: after a 421 its terms are gone for good.
    retire: Notify,
    ctx: Arc<ProxyContext>,
    verdict: Arc<FramingVerdict>,
    /// Requests seen so far (the next request's index).
    requests: AtomicU64,
    /// Requests in flight and since when none (keep-alive timeout, release).
    idle: Arc<Idle>,
    /// The metric series of the connection's latest request: a keep-alive connection usually
    /// sends every request to one host, so this saves a label lookup per request.
    series: Mutex<Option<(SeriesKey, HttpRequestSeries)>>,
    /// Forwarded-header values, made at the first request that needs them.
    forwarded: OnceLock<ConnForwarded>,
    /// The client's address as the access log spells it, at the first line that needs it
    /// (spelling it took ~300 instructions per request).
    client_spelled: OnceLock<Box<str>>,
}

/// What selects a request's metric series: the virtual host (compared by identity; the key
/// holds it, so its address cannot be reused by another host of a later table), the route on
/// it (by identity, [`RouteId`]), mode, status code.
type SeriesKey = (Option<Arc<VirtualHost>>, RouteId, Mode, u16);

impl ClientConnection {
    /// The client's address as access lines spell it: spelled at the first line, then reused.
    fn client_spelled(&self) -> &str {
        self.client_spelled.get_or_init(|| {
            let mut spelled = String::new();
            log_format::write_addr(&mut spelled, self.conn.client);
            spelled.into_boxed_str()
        })
    }

    /// Whether `table` still serves this connection on the terms its TLS handshake fixed: a
    /// new handshake with the same SNI would get the certificate this connection negotiated,
    /// or one that replaces it for the same name (a renewal: the certificate the client
    /// verified still names the host it asked for, so it stays good for this connection).
    /// A connection that was shown a certificate which does not name its SNI (the default
    /// one, before the host had its own) has lost its terms once the host has another.
    /// Plain connections have no terms. Checked once per table, not once per request.
    fn terms_hold(&self, table: &Arc<RouteTable>) -> bool {
        let Some(tls) = self.conn.tls.as_ref() else {
            return true;
        };
        let Some(negotiated) = tls.certificate.as_ref() else {
            return true;
        };
        if negotiated.names_sni {
            return true;
        }
        let mut checked = self
            .terms_checked
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if std::ptr::eq(checked.as_ptr(), Arc::as_ptr(table)) {
            return true;
        }
        let fallback = &self.ctx.fallback_certificate;
        let same = self
            .ctx
            .tls
            .with_certificate(table, fallback, tls.sni.as_deref(), |now| {
                now.has_leaf(&negotiated.key)
            })
            .unwrap_or_else(|error| {
                // New handshakes fail the same way; this one already succeeded, so it keeps
                // its terms rather than failing every request too.
                tracing::error!(%error, "no TLS server config for the live table");
                true
            });
        if same {
            *checked = Arc::downgrade(table);
        }
        same
    }

    /// The hyper connection ended with `result`: whether by a release (`idle_release`) rather
    /// than for good.
    fn ended<E: std::fmt::Display>(&self, result: Result<(), E>) -> bool {
        if let Err(error) = result {
            tracing::debug!(client = %self.conn.client, %error, "client connection ended with an error");
        }
        self.idle.released()
    }

    /// Closes the connection once its in-flight requests are answered.
    fn retire(&self) {
        self.retire.notify_one();
    }

    /// Records one answered request in the metrics, through the cached series when it is the
    /// same as the previous request's.
    fn record_request(&self, record: &Record, total: Duration) {
        let (vhost, route, mode, status) = (
            record.vhost.as_ref(),
            &record.route,
            record.mode,
            record.status,
        );
        let mut cached = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        let same = |(v, r, m, c): &SeriesKey| {
            *m == mode
                && *c == status
                && r == route
                && match (v, vhost) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                }
        };
        match cached.as_ref() {
            Some((k, series)) if same(k) => {
                series.record_with_upstream(total, record.upstream_time)
            }
            _ => {
                let label = vhost.map_or_else(|| "-".to_string(), |v| v.host.to_string());
                let labels = route.labels(vhost.map(|v| &**v));
                let series = self
                    .ctx
                    .metrics
                    .http_request_series(&label, &labels, mode, status);
                series.record_with_upstream(total, record.upstream_time);
                *cached = Some(((vhost.cloned(), route.clone(), mode, status), series));
            }
        }
    }
}

// === handle ===

/// Answers one request; never fails (errors become small fixed responses).
async fn handle(
    state: Arc<ClientConnection>,
    req: Request<Incoming>,
) -> Response<ProxyBody<Record>> {
    let index = state.requests.fetch_add(1, Ordering::Relaxed);
    // Boxed from the start: it ends in the response body (see `ProxyBody`).
    let mut record = Box::new(Record::new(&state, &req));
    let h1 = req.version() <= http::Version::HTTP_11;
    let grpc = super::grpc::is_grpc(req.headers());
    let pending = Pending::new(req);
    let mut response = match route_and_forward(&state, pending, index, &mut record).await {
        Ok(response) => response,
        Err(error) => {
            tracing::debug!(client = %state.conn.client, who = error.who().as_str(), %error, "request answered by the proxy");
            record.error = Some(error.label());
            if let ProxyError::Upstream {
                endpoint, fault, ..
            } = &error
            {
                record.upstream = *endpoint;
                // A failed connect was counted when the endpoint was marked failed.
                if let Some(endpoint) = endpoint
                    && !matches!(fault, UpstreamFault::Connect(_))
                {
                    state.ctx.health.count_error(*endpoint);
                }
            }
            // A gRPC client gets a gRPC status it can act on rather than an HTTP error.
            grpc.then(|| super::grpc::error_response(&error))
                .flatten()
                .unwrap_or_else(|| error_response(&error, h1))
        }
    };
    if let Some(hsts) = record.hsts.take() {
        response
            .headers_mut()
            .insert(header::STRICT_TRANSPORT_SECURITY, hsts);
    }
    if let Some(extra) = record.extra_headers.take() {
        cors::apply(extra, response.headers_mut());
    }
    if let Some(edits) = record.header_edits.take() {
        edits.apply_to_response(response.headers_mut());
    }
    if let Some(cookies) = record.auth_cookies.take() {
        cookies.apply(response.status(), response.headers_mut());
    }
    record.status = response.status().as_u16();
    response.map(|inner| ProxyBody::new(inner, record))
}

/// Routes `req` and forwards it, or answers it here; a request answered here has the rest of
/// its body read and discarded when `req` drops ([`Pending`]).
async fn route_and_forward(
    state: &ClientConnection,
    mut req: Pending,
    index: u64,
    record: &mut Record,
) -> Result<Response<ResponseBody>, ProxyError> {
    // check
    if state.verdict.rejected(index) {
        return Err(ClientFault::Smuggling(
            "Content-Length with Transfer-Encoding, or differing Content-Lengths",
        )
        .into());
    }
    // One load of the live table: everything below routes on it.
    let live = state.live.load_full();
    let table = &*live;
    let limit = table.class.limits.max_header_bytes as usize;
    let size = head_size(&req);
    record.head_bytes = size;
    if size > limit {
        return Err(ClientFault::HeadersTooLarge { size, limit }.into());
    }

    // route
    let raw_host = record.raw_host.clone();
    let raw_host = raw_host.as_ref().and_then(RawHost::as_str);
    let host = raw_host.and_then(normalized_host);
    if let Some(Cow::Borrowed(routed)) = &host {
        record.host_len = Some(routed.len());
    }
    let path = req.uri().path();
    let tls = state.conn.tls.is_some();
    if !state.terms_hold(&live) {
        // The live table would now hand this connection's SNI another certificate (or none of
        // ours): answer as the RFC 9110 §15.5.20 status says, and close, so the client's retry
        // handshakes anew.
        state.retire();
        return Err(ClientFault::Misdirected(host.as_deref().unwrap_or("-").to_string()).into());
    }
    let vhost = table.vhost_for(host.as_deref());
    if let Some(vhost) = vhost {
        record.vhost = Some(Arc::clone(vhost));
        record.mode = mode(tls, vhost, None);
        if tls {
            record.hsts = vhost.hsts.clone();
        }
    }

    // post-read: nginx judges the client certificate as it reads the request, before any
    // phase; a connection made for other terms is misdirected (`client_auth`). :80 requests
    // that the host redirects to HTTPS are left to the redirect.
    let client_cert = match vhost {
        Some(vhost) if tls || !vhost.ssl_redirect => client_auth::check(vhost, &state.conn),
        _ => client_auth::Access::NotAsked,
    };
    let client_cert = match client_cert {
        client_auth::Access::NotAsked => None,
        client_auth::Access::Admitted(auth, verification) => Some((auth, verification)),
        client_auth::Access::Misdirected => {
            state.retire();
            let name = vhost.map_or_else(|| "-".to_string(), |v| v.host.to_string());
            return Err(ClientFault::Misdirected(name).into());
        }
        client_auth::Access::Refused(answer) => {
            record.error = Some("client_certificate");
            return Ok(answer);
        }
    };

    // redirect
    if let Some(vhost) = vhost {
        if !tls && vhost.ssl_redirect {
            let host = host.as_deref().ok_or(ClientFault::MissingHost)?;
            return Ok(redirect(host, state.ctx.https_port, &req));
        }
        if tls && vhost.tls_mode == TlsMode::Passthrough {
            // A new connection for this host would be spliced to the pod, never terminated.
            state.retire();
            return Err(ClientFault::Misdirected(vhost.host.to_string()).into());
        }
        if let Some(to) = &vhost.www_redirect {
            let port = state.ctx.client_facing_port(&state.conn);
            return Ok(www_redirect(to, tls, port, &req));
        }
    }
    let (vhost, upstream, action, max_body, policy, route) = match table.route_request(
        host.as_deref(),
        path,
        &crate::table::request_match::RequestView {
            tls,
            method: req.method(),
            headers: req.headers(),
            query: req.uri().query(),
        },
    ) {
        HttpRoute::Upstream {
            vhost,
            upstream,
            action,
            max_body,
            policy,
            route,
        } => (vhost, upstream, action, max_body, policy, route),
        HttpRoute::NoPath { .. } | HttpRoute::NoHost => {
            return Err(ClientFault::NoRoute {
                host: host.map(Cow::into_owned),
                path: path.to_string(),
            }
            .into());
        }
    };
    // Access control is the main Ingress's, whichever upstream serves: a canary Ingress's own
    // policy carries none (nginx: one location), and a client picks the canary by header.
    let access_policy = policy;
    // Gateway API weights: the route's share of upstreams; an invalid backendRef's share is
    // answered 500 below, once the route's own answers (redirects) had their turn.
    let (upstream, invalid_share) = match route.and_then(|r| r.split.as_deref()).map(|s| s.pick()) {
        Some(Some(picked)) => (picked, false),
        Some(None) => (upstream, true),
        None => (upstream, false),
    };
    // canary: the route's alternative upstream when its rules pick it (`proxy::canary`).
    let (upstream, policy) = match route.and_then(|r| r.canary.as_deref()) {
        Some(c) if canary::wants(c, upstream, policy, req.headers()) => (&c.upstream, &c.policy),
        _ => (upstream, policy),
    };
    // `default-backend`: a route without endpoints is served by it (`error_pages`).
    let route_upstream = upstream;
    let upstream = error_pages::serving_upstream(policy, upstream);
    let canary_chosen = route
        .and_then(|r| r.canary.as_deref())
        .is_some_and(|c| std::ptr::eq(route_upstream, &c.upstream));
    // The route is named by address: only while the record holds the host it lives in.
    let held = route.filter(|_| {
        record
            .vhost
            .as_deref()
            .is_some_and(|v| std::ptr::eq(v, vhost))
    });
    record.route = RouteId::new(held, canary_chosen, upstream);
    record.mode = mode(tls, vhost, Some(&upstream.protocol));

    // redirect, by the route: ingress-nginx answers `app-root` for `/` first, then the
    // location's redirect; one `match` on the usual `Forward`.
    let app_root = match action {
        RouteAction::Forward | RouteAction::RedirectFrom(_) | RouteAction::Answer(_) => None,
        RouteAction::AppRoot(root) => Some(root),
        RouteAction::Redirect { app_root, .. } => app_root.as_ref(),
    };
    if let Some(root) = app_root.filter(|_| path == "/") {
        let host = raw_host.ok_or(ClientFault::MissingHost)?;
        let scheme = if tls { "https" } else { "http" };
        return Ok(redirect_response(
            StatusCode::FOUND,
            &format!("{scheme}://{host}{root}"),
        ));
    }
    if let RouteAction::Redirect { redirect, .. } = action {
        // The model accepts only redirect codes (301, 302, 303, 307, 308).
        let status = StatusCode::from_u16(redirect.status).unwrap_or(StatusCode::FOUND);
        return Ok(redirect_response(status, &redirect.location));
    }
    let answer = match action {
        RouteAction::Answer(status) => Some(*status),
        RouteAction::Forward if invalid_share => {
            record.error = Some("invalid_backend");
            Some(500)
        }
        _ => None,
    };
    if let Some(status) = answer {
        let mut response = Response::new(own_response(Bytes::new()));
        *response.status_mut() =
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        return Ok(response);
    }
    if let RouteAction::RedirectFrom(template) = action {
        let host = host.as_deref().ok_or(ClientFault::MissingHost)?;
        let scheme = if tls { "https" } else { "http" };
        let location = template.location(
            scheme,
            host,
            path,
            req.uri().query(),
            route.map(|r| &r.path),
        );
        // The model accepts only redirect codes (301, 302, 303, 307, 308).
        let status = StatusCode::from_u16(template.status).unwrap_or(StatusCode::FOUND);
        return Ok(redirect_response(status, &location));
    }

    // CORS: a preflight is answered here; CORS and `response-headers` go on whatever answer
    // the request gets from now on (the pod's, or the proxy's 502/504).
    record.extra_headers = cors::extra_headers(policy, req.headers());
    record.header_edits.clone_from(&policy.header_edits);
    if let Some(answer) = cors::preflight(policy, req.method(), req.headers()) {
        return Ok(answer);
    }

    // preaccess (nginx's preaccess phase): `limit-rps`, `limit-rpm`, `limit-connections` per
    // real client address (`rate_limit`); the in-flight permit lives until the response ends.
    if let Some(limit) = &access_policy.rate_limit {
        let client = forward::request_client_ip(table, &state.conn, req.headers());
        match state.ctx.rate_limits.admit(limit, client) {
            Ok(permit) => record.limit_permit = permit,
            Err(refusal) => {
                record.error = Some(refusal.label());
                return Ok(rate_limit::refused_response(
                    refusal.status(&table.class.limits),
                ));
            }
        }
    }

    // access (nginx's access phase, after the limits): the route's allow and deny lists, 403
    // on the real client address (`source_ranges`).
    source_ranges::check(access_policy, table, &state.conn, req.headers())?;

    // access, then: basic auth (`auth-type: basic`); a 401 with the realm, the pod never sees
    // the request (`basic_auth`).
    if let Some(challenge) = basic_auth::check(access_policy, req.headers()).await {
        record.error = Some("basic_auth_denied");
        return Ok(challenge);
    }

    // access, last: external auth (`auth-url`, nginx's `auth_request`): a subrequest decides;
    // 401/403/500 or the sign-in redirect come back here (`external_auth`).
    if let Some(auth) = access_policy.external_auth.as_deref() {
        let facts = external_auth::RequestFacts {
            table,
            conn: &state.conn,
            policy: access_policy,
            tls,
            raw_host,
            host: host.as_deref(),
            request_id: &record.request_id,
            catch_all: vhost.host == crate::table::host::HostMatch::Any,
        };
        // Boxed, like the error-page exchange below: a rare path whose future (an HTTP
        // client's) would otherwise set the size of every request's future, and hyper keeps
        // one slot of that size per client connection for as long as it is open.
        match Box::pin(external_auth::authorize(auth, &facts, &mut req)).await {
            Ok(cookies) => record.auth_cookies = cookies,
            Err(answer) => {
                record.error = Some(external_auth::label(answer.status()));
                return Ok(answer);
            }
        }
    }

    // limit: a declared length over the route's `proxy-body-size` is refused before anything
    // is sent upstream (nginx's `client_max_body_size` checks it the same way); a body without
    // one is cut off as it streams (`forward`).
    if let Some(limit) = max_body
        && declared_length(&req).is_some_and(|length| length > limit)
    {
        return Err(ClientFault::BodyTooLarge { limit }.into());
    }

    // Forwarded from here on: the body is the pod's to read, no longer discarded (`discard`).
    // The pod learns what the client certificate check found (`ssl-client-*`).
    let mut req = req.into_inner();
    if let Some((auth, verification)) = client_cert {
        client_auth::set_headers(auth, verification, req.headers_mut());
    }

    // forward
    let f = Forward {
        ctx: &state.ctx,
        table,
        vhost,
        upstream,
        conn: &state.conn,
        raw_host,
        forwarded: state
            .forwarded
            .get_or_init(|| ConnForwarded::new(&state.ctx, &state.conn)),
        request_id: &record.request_id,
        max_body,
        policy,
        route,
    };
    let intercept = error_pages::Intercept::prepare(policy, route_upstream, &req);
    let mut answer = forward::forward(&f, req).await?;
    // The pod's status, for the access log, before `custom-http-errors` may replace it.
    record.upstream_status = Some(answer.response.status().as_u16());
    if let Some(intercept) = intercept.filter(|i| i.wants(answer.response.status())) {
        // `custom-http-errors`: the default backend answers instead of the pod.
        answer = Box::pin(intercept.replace(&f, answer)).await?;
    }
    record.upstream = Some(answer.endpoint);
    record.upstream_time = Some(answer.upstream_time);
    record.in_flight = answer.in_flight;
    record.conn = answer.conn;
    let read_timeout = policy.timeouts.read;
    Ok(answer
        .response
        .map(|body| body::upstream_response_within(body, read_timeout)))
}

/// The host the client asked for, as sent: the URI authority (HTTP/2, absolute-form), else the
/// `Host` header. Holds a reference-counted slice of the request head, not a copy.
#[derive(Debug, Clone)]
enum RawHost {
    Authority(Authority),
    Header(HeaderValue),
}

impl RawHost {
    fn of(req: &Request<Incoming>) -> Option<RawHost> {
        if let Some(authority) = req.uri().authority() {
            return Some(RawHost::Authority(authority.clone()));
        }
        req.headers()
            .get(header::HOST)
            .map(|h| RawHost::Header(h.clone()))
    }

    /// The host as text; `None` for a `Host` header that is not visible ASCII.
    fn as_str(&self) -> Option<&str> {
        match self {
            RawHost::Authority(a) => Some(a.as_str()),
            RawHost::Header(h) => h.to_str().ok(),
        }
    }
}

/// [`normalize_host`] without a copy when the host is already normalized but for a port
/// (what clients send): same result, borrowed when possible.
/// It runs once per request, to route it (the access line reuses its result while it is
/// borrowed): the colon is found by bytes, not `char`s (str's `rsplit_once` took ~3× the
/// instructions), and by a plain backwards scan: a host name is short, where `memrchr`'s
/// vector set-up cost more than the scan (~240 instructions against ~60).
fn normalized_host(raw: &str) -> Option<Cow<'_, str>> {
    let bytes = raw.as_bytes();
    if bytes.first() == Some(&b'[') {
        return normalize_host(raw).map(Cow::Owned);
    }
    let end = match bytes.iter().rposition(|&b| b == b':') {
        Some(colon) if bytes[colon + 1..].iter().all(u8::is_ascii_digit) => colon,
        _ => bytes.len(),
    };
    // A colon is ASCII, so `end` is a character boundary.
    let host = raw.get(..end).unwrap_or(raw);
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    if trimmed.is_empty() {
        None
    } else if trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(Cow::Owned(trimmed.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(trimmed))
    }
}

/// Counts the bytes written through `fmt::Write`, to measure a `Display` without a `String`.
struct CountingWriter(usize);

impl std::fmt::Write for CountingWriter {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 += s.len();
        Ok(())
    }
}

/// Length of `uri` as displayed (what `uri.to_string().len()` is), without allocating.
fn displayed_len(uri: &Uri) -> usize {
    use std::fmt::Write as _;
    let mut count = CountingWriter(0);
    let _ = write!(count, "{uri}");
    count.0
}

/// Approximate bytes of the request head: request line and every header line.
fn head_size(req: &Request<Incoming>) -> usize {
    let line = req.method().as_str().len() + displayed_len(req.uri()) + 12;
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + line
}

/// The metric mode of a request: :80 is `Http`; on TLS, how the request reaches the pod.
fn mode(tls: bool, vhost: &VirtualHost, protocol: Option<&UpstreamProtocol>) -> Mode {
    if !tls {
        return Mode::Http;
    }
    match (protocol, vhost.tls_mode) {
        (Some(UpstreamProtocol::Https(_) | UpstreamProtocol::H2(_)), _)
        | (None, TlsMode::Reencrypt) => Mode::Reencrypt,
        _ => Mode::Terminate,
    }
}

fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::Http => "http",
        Mode::Terminate => "terminate",
        Mode::Reencrypt => "reencrypt",
    }
}

/// `308 Permanent Redirect` to the same host, path and query over HTTPS.
fn redirect(host: &str, https_port: u16, req: &Request<Incoming>) -> Response<ResponseBody> {
    let path_and_query = path_and_query(req);
    let location = if https_port == 443 {
        format!("https://{host}{path_and_query}")
    } else {
        format!("https://{host}:{https_port}{path_and_query}")
    };
    redirect_response(StatusCode::PERMANENT_REDIRECT, &location)
}

/// `from-to-www-redirect`: `308 Permanent Redirect` to the same scheme, path and query on host
/// `to`, at the port the client connected to (omitted when it is the scheme's default), as
/// ingress-nginx's redirect server does (`ngx_srv_redirect.lua`).
fn www_redirect(to: &str, tls: bool, port: u16, req: &Request<Incoming>) -> Response<ResponseBody> {
    let (scheme, default_port) = if tls { ("https", 443) } else { ("http", 80) };
    let path_and_query = path_and_query(req);
    let location = if port == default_port {
        format!("{scheme}://{to}{path_and_query}")
    } else {
        format!("{scheme}://{to}:{port}{path_and_query}")
    };
    redirect_response(StatusCode::PERMANENT_REDIRECT, &location)
}

/// The request's `Content-Length`, when it has one that is a number (hyper has already
/// refused requests whose framing it cannot read).
fn declared_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The request's path and query as received (`/` for a request without one).
fn path_and_query(req: &Request<Incoming>) -> &str {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
}

/// A redirect the proxy answers itself: `status`, `Location`, an empty body. A location that
/// is not a valid header value (made from a `Host` the client sent) is a `400 Bad Request`.
fn redirect_response(status: StatusCode, location: &str) -> Response<ResponseBody> {
    let mut response = Response::new(own_response(Bytes::new()));
    *response.status_mut() = status;
    match HeaderValue::from_str(location) {
        Ok(location) => {
            response.headers_mut().insert(header::LOCATION, location);
        }
        Err(_) => *response.status_mut() = StatusCode::BAD_REQUEST,
    }
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

/// The proxy's own answer to a failed request: fixed status line body, nothing leaked.
fn error_response(error: &ProxyError, h1: bool) -> Response<ResponseBody> {
    let body = error.body();
    let mut response = Response::new(own_response(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    if h1 && error.closes_connection() {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

// === impl Record ===

/// What the access log and metrics need about one request; logged when dropped, i.e. when the
/// response body has been sent (or abandoned). Holds no copies of the request: the host,
/// method and URI are reference-counted handles, turned into log fields only when the access
/// log is on. It is the [`BodyObserver`] of the request's response body, and holds what that
/// body's end settles: least-request accounting and the upstream connection.
struct Record {
    started: Instant,
    raw_host: Option<RawHost>,
    /// The length of the host routing normalized `raw_host` to, when that is a prefix of it
    /// (what clients send: lowercase, perhaps a port), so the access line takes it from there
    /// rather than normalizing again; `None` before routing, or when normalizing made a new
    /// string.
    host_len: Option<usize>,
    /// The virtual host the request was routed to (its name is the metrics `host` label).
    vhost: Option<Arc<VirtualHost>>,
    /// The route on `vhost` that served it (the metrics' Ingress and Service labels).
    route: RouteId,
    method: Method,
    uri: Uri,
    status: u16,
    bytes_sent: u64,
    upstream: Option<std::net::SocketAddr>,
    mode: Mode,
    upstream_time: Option<Duration>,
    error: Option<&'static str>,
    hsts: Option<HeaderValue>,
    /// The route's CORS and `response-headers` for this request (`proxy::cors`).
    extra_headers: Option<cors::ExtraHeaders>,
    /// The route's Gateway API response header `add` and `remove`.
    header_edits: Option<Arc<crate::table::headers::HeaderEdits>>,
    /// `X-Request-ID`: the client's, or generated when the request arrived, so the access
    /// line of a request the proxy answers itself carries one too (as ingress-nginx logs
    /// `$req_id` for every request).
    request_id: HeaderValue,
    request_id_origin: request_id::Origin,
    /// The request's HTTP version (access log).
    version: http::Version,
    /// The request head's size (access log `bytes_in`), once measured.
    head_bytes: usize,
    /// The status the pod answered, before `custom-http-errors` replaced it (access log).
    upstream_status: Option<u16>,
    /// What only the access log reads of the request head; `None` while the log is off.
    logged: Option<access_log::RequestHead>,
    in_flight: Option<InFlight>,
    /// The `auth-url` answer's `Set-Cookie`s, for the response (`external_auth`).
    auth_cookies: Option<external_auth::AuthCookies>,
    /// `limit-connections`: counts the request in flight for its client until the response
    /// ends (`rate_limit`).
    limit_permit: Option<rate_limit::Permit>,
    /// The upstream connection the response arrives on: back to the pool once the response has
    /// been read to its end ([`BodyObserver::complete`]), else closed when the record drops.
    conn: Option<UpstreamConn>,
    /// Counts the request as in flight (idle timeout) until dropped; its connection also
    /// records the metrics.
    state: Arc<ClientConnection>,
}

impl Record {
    fn new(state: &Arc<ClientConnection>, req: &Request<Incoming>) -> Self {
        state.idle.begin();
        let (request_id, request_id_origin) = request_id::of(req.headers());
        Record {
            started: Instant::now(),
            raw_host: RawHost::of(req),
            host_len: None,
            vhost: None,
            route: RouteId::default(),
            method: req.method().clone(),
            uri: req.uri().clone(),
            status: 0,
            bytes_sent: 0,
            upstream: None,
            mode: if state.conn.tls.is_some() {
                Mode::Terminate
            } else {
                Mode::Http
            },
            upstream_time: None,
            error: None,
            hsts: None,
            extra_headers: None,
            header_edits: None,
            request_id,
            request_id_origin,
            version: req.version(),
            head_bytes: 0,
            upstream_status: None,
            logged: access_log::RequestHead::of(req.headers(), req.body().size_hint().exact()),
            in_flight: None,
            auth_cookies: None,
            limit_permit: None,
            conn: None,
            state: Arc::clone(state),
        }
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let total = self.started.elapsed();
        // Least-request accounting ends with the response body, whose bytes came from the
        // endpoint.
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.finish(0, self.bytes_sent);
        }
        // A request taken while the log was on has its head (the log's level does not change
        // while the process runs).
        if let Some(head) = &self.logged {
            let raw_host = self.raw_host.as_ref().and_then(RawHost::as_str);
            let host = match (raw_host, self.host_len) {
                (Some(raw), Some(len)) => raw.get(..len).map(Cow::Borrowed),
                (raw, _) => raw.and_then(normalized_host),
            };
            let tls = self.state.conn.tls.as_ref();
            access_log::http(&access_log::HttpLog {
                client: self.state.client_spelled(),
                host: host.as_deref(),
                method: self.method.as_str(),
                path: self.uri.path(),
                protocol: access_log::protocol_name(self.version),
                status: self.status,
                bytes_in: self.head_bytes as u64 + head.body_length(),
                bytes_out: self.bytes_sent,
                mode: mode_label(self.mode),
                tls: tls.map(|t| access_log::TlsFields {
                    sni: t.sni.as_deref(),
                    version: t.version,
                    cipher: t.cipher,
                }),
                ingress: self.vhost.as_deref().and_then(|v| self.route.ingress(v)),
                service: self.route.upstream().map(|u| &u.service),
                upstream: self.upstream,
                upstream_status: self.upstream_status,
                upstream_time: self.upstream_time,
                total_time: total,
                error: self.error,
                // A client's ID that is not visible ASCII is sent on as is, logged as missing.
                request_id: match self.request_id_origin {
                    request_id::Origin::Client => self.request_id.to_str().ok(),
                    request_id::Origin::Generated => {
                        std::str::from_utf8(self.request_id.as_bytes()).ok()
                    }
                },
                request_id_generated: self.request_id_origin == request_id::Origin::Generated,
                user_agent: head.user_agent(),
                referer: head.referer(),
            });
        }
        self.state.record_request(self, total);
        self.state.idle.end();
    }
}

impl BodyObserver for Record {
    fn sent(&mut self, len: usize) {
        self.bytes_sent += len as u64;
    }

    fn failed(&mut self) {
        self.error = Some("upstream_body_reset");
        if let Some(in_flight) = &self.in_flight {
            in_flight.failed();
        }
    }

    fn complete(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_host_matches_normalize_host() {
        for raw in [
            "app.example.com",
            "app.example.com:8443",
            "App.Example.COM:80",
            "app.example.com.",
            "app.example.com.:443",
            "[::1]:8080",
            "[::1]",
            "",
            ":80",
            "host:port",
            "a:1:2",
        ] {
            assert_eq!(
                normalized_host(raw).map(Cow::into_owned),
                normalize_host(raw),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn displayed_len_is_the_display_length() {
        for uri in [
            "/",
            "/a/b?c=d",
            "http://example.com:8080/x?y",
            "*",
            "example.com:443",
        ] {
            let uri: Uri = uri.parse().unwrap();
            assert_eq!(displayed_len(&uri), uri.to_string().len(), "{uri}");
        }
    }
}
