//! Keep-alive connections to upstream endpoints: opening them (TCP, then TLS for re-encrypt)
//! and keeping them idle between requests.
//!
//! Each upstream connection is a hyper HTTP/1.1 client connection driven by its own task; its
//! [`SendRequest`](http1::SendRequest) half is what the proxy holds. Bodyless requests to
//! HTTP/1.1 endpoints, plain or TLS, use connections of our own exchange instead
//! (`upstream_h1`, checked out by [`Clients::checkout_own`]; no task: the request's task reads
//! and writes them), kept idle beside hyper's under the same rules. HTTP/2 upstreams (gRPC,
//! `backend-protocol: grpc`/`grpcs`) differ: one connection carries many requests at once, so
//! the pool keeps ONE shared connection per endpoint and configuration and hands every request
//! a clone of its sender while it is open (see [`Shared2`]). A request checks a
//! connection out ([`Clients::checkout`]); the response's body, when it has been read to the
//! end, gives it back ([`UpstreamConn::release`]). A connection whose response was not read to
//! the end (client gone mid-body, upgrade, error) is simply dropped, and hyper closes it.
//!
//! Why not hyper-util's pooled client: it keys its pool by scheme and authority strings,
//! spawns a task per request to put the connection back once the response is done, and routes
//! every request through a checkout future; the profiles of the keep-alive benchmark showed
//! that as the largest proxy-side cost after the kernel. Here the checkout is one lock and one
//! hash of `(endpoint, config)`, and the release happens in the task that already polls the
//! response body.
//!
//! Idle connections are kept for [`POOL_IDLE`] and at most [`MAX_IDLE_PER_KEY`] per endpoint
//! and TLS configuration; a reaper task drops expired ones. The pool outlives table swaps, but
//! never keeps a connection to an endpoint the live table no longer lists: at every swap
//! [`Clients::retain_endpoints`] closes the idle ones, and a connection released later (its
//! request was in flight during the swap) or met at checkout is closed instead of kept. A pod
//! that left the table gets no new request on an old connection, even if its address comes
//! back later for another pod.
//!
//! With several proxy workers (`proxy::serve_on_workers`, one single-threaded runtime per
//! thread), each worker reuses only the connections it opened: a connection's task runs on the
//! runtime that opened it, and a request from another worker would wake that thread twice per
//! request (request out, response in). The worker is part of the [`PoolKey`]; the limits are
//! per worker.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
// tokio's clock, as the reaper's: a test that pauses it sees connections expire.
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::body::RequestBody;
use super::upstream_h1;
use crate::table::upstream::{BackendTls, UpstreamProtocol};
use crate::table::{FastMap, FastSet};

/// How long an idle upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(90);

/// Idle connections kept per endpoint and TLS configuration; more are closed on release.
const MAX_IDLE_PER_KEY: usize = 512;

/// How often the reaper looks for expired idle connections.
const REAP_EVERY: Duration = Duration::from_secs(15);

/// The request sender of one upstream connection: its own HTTP/1.1 connection, or a handle
/// on a shared HTTP/2 connection.
pub(crate) enum Sender {
    Http1(http1::SendRequest<RequestBody>),
    Http2(http2::SendRequest<RequestBody>),
}

impl Sender {
    /// Whether requests on it go out as HTTP/2 (they need an absolute URI then).
    pub(crate) fn is_http2(&self) -> bool {
        matches!(self, Sender::Http2(_))
    }

    /// Sends `req`; a request that was not written comes back in the error.
    pub(crate) async fn try_send_request(
        &mut self,
        req: Request<RequestBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<RequestBody>>> {
        match self {
            Sender::Http1(s) => s.try_send_request(req).await,
            Sender::Http2(s) => s.try_send_request(req).await,
        }
    }
}

/// Which connections are interchangeable: same endpoint, same TLS configuration, opened on
/// the same proxy worker.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct PoolKey {
    endpoint: SocketAddr,
    config: ConfigId,
    worker: u16,
}

thread_local! {
    /// The proxy worker this thread runs (0 outside the workers: one worker, tests).
    static WORKER: std::cell::Cell<u16> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as proxy worker `index`: the connections it opens are pooled for it alone.
pub(crate) fn enter_worker(index: u16) {
    WORKER.with(|worker| worker.set(index));
}

/// Names a [`Connector`]: 0 is plain HTTP/1.1, 1 plain HTTP/2, every distinct [`BackendTls`]
/// and HTTP version gets the next number.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct ConfigId(u32);

// === impl Clients ===

/// The connectors (plain, and one per distinct [`BackendTls`]) and the idle pool, shared by
/// all connections and kept across table swaps. Cloning is an `Arc` clone.
#[derive(Clone)]
pub struct Clients {
    inner: Arc<Shared>,
}

struct Shared {
    plain: Arc<Connector>,
    /// Plain HTTP/2 with prior knowledge (h2c).
    plain_h2: Arc<Connector>,
    /// One connector per `BackendTls` ever seen (each with its own rustls config and session
    /// cache). Entries no table uses any more stay: the set is bounded by the distinct
    /// configurations ever seen, and their idle connections expire.
    tls: RwLock<HashMap<BackendTls, Arc<Connector>>>,
    /// The same for HTTP/2 over TLS (ALPN `h2`).
    tls_h2: RwLock<HashMap<BackendTls, Arc<Connector>>>,
    next_config: AtomicU32,
    idle: Mutex<Idle>,
    reaper_started: AtomicBool,
}

impl Shared {
    /// The idle connections (a panic elsewhere while holding them leaves them usable).
    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The idle connections, and the endpoints they may be to (looked up at every checkout and
/// release, keyed by the table's endpoints: [`FastMap`]).
#[derive(Default)]
struct Idle {
    conns: FastMap<PoolKey, Vec<IdleConn>>,
    /// The shared HTTP/2 connection of each HTTP/2 endpoint and configuration.
    h2: FastMap<PoolKey, Shared2>,
    /// Connections of our own HTTP/1.1 exchange (`upstream_h1`), plain or TLS (the key's
    /// `config` says which).
    own: FastMap<PoolKey, Vec<IdleOwn>>,
    /// The live table's endpoints; `None` until the first [`Clients::retain_endpoints`] (a
    /// pool driven without a rebuild loop, as in tests, keeps everything).
    live: Option<FastSet<SocketAddr>>,
}

impl Idle {
    fn is_live(&self, endpoint: SocketAddr) -> bool {
        self.live
            .as_ref()
            .is_none_or(|live| live.contains(&endpoint))
    }
}

/// An idle HTTP/1.1 connection of hyper's client (its task drives it), and when it was given
/// back: it is not taken after [`POOL_IDLE`].
struct IdleConn {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// An idle connection of our own exchange (`upstream_h1`), and when it was given back: it is
/// not taken after [`POOL_IDLE`], nor when it is no longer quiet (`Conn::is_quiet`).
struct IdleOwn {
    conn: Box<upstream_h1::Conn>,
    since: Instant,
}

/// Where a connection of our own exchange goes back to: its pool (held weakly: the pool holds
/// the connection while it is idle), under its key.
struct OwnHome {
    pool: Weak<Shared>,
    key: PoolKey,
}

impl upstream_h1::Home for OwnHome {
    fn give_back(&self, conn: Box<upstream_h1::Conn>) {
        if let Some(inner) = self.pool.upgrade() {
            Clients { inner }.put_own(self.key, conn);
        }
    }
}

/// An HTTP/2 connection every request to its endpoint shares (its sender is cloned per
/// request). Kept while open and used within [`POOL_IDLE`]; requests still holding a clone
/// keep it open after the pool forgot it.
struct Shared2 {
    sender: http2::SendRequest<RequestBody>,
    /// The last checkout.
    used: Instant,
}

impl Default for Clients {
    fn default() -> Self {
        Clients::new()
    }
}

impl Clients {
    /// A new, empty pool.
    pub(crate) fn new() -> Self {
        Clients {
            inner: Arc::new(Shared {
                plain: Arc::new(Connector {
                    config: ConfigId(0),
                    tls: None,
                    http2: false,
                }),
                plain_h2: Arc::new(Connector {
                    config: ConfigId(1),
                    tls: None,
                    http2: true,
                }),
                tls: RwLock::new(HashMap::new()),
                tls_h2: RwLock::new(HashMap::new()),
                next_config: AtomicU32::new(2),
                idle: Mutex::new(Idle::default()),
                reaper_started: AtomicBool::new(false),
            }),
        }
    }

    /// The connector for an upstream protocol. `Tcp` (a pass-through upstream reached by an
    /// HTTP route on :80) is spoken to as plain HTTP.
    pub(crate) fn connector_for(&self, protocol: &UpstreamProtocol) -> Arc<Connector> {
        let http2 = protocol.is_http2();
        let Some(tls) = protocol.backend_tls() else {
            return if http2 {
                self.inner.plain_h2.clone()
            } else {
                self.inner.plain.clone()
            };
        };
        let map = if http2 {
            &self.inner.tls_h2
        } else {
            &self.inner.tls
        };
        if let Some(connector) = map.read().unwrap_or_else(PoisonError::into_inner).get(tls) {
            return connector.clone();
        }
        map.write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(tls.clone())
            .or_insert_with(|| {
                let config = ConfigId(self.inner.next_config.fetch_add(1, Ordering::Relaxed));
                Arc::new(Connector::tls(config, tls, http2))
            })
            .clone()
    }

    /// An idle connection to `endpoint` made by `connector` that can take a request now, else
    /// a new one (opened under `connect_timeout`). `fresh` skips the idle ones: after a pooled
    /// connection failed, its siblings to the same endpoint are likely dying too (a pod
    /// stopped), and a new connect finds out at once whether the endpoint is still there.
    pub(crate) async fn checkout(
        &self,
        connector: &Connector,
        endpoint: SocketAddr,
        connect_timeout: Duration,
        fresh: bool,
    ) -> Result<UpstreamConn, ConnectError> {
        let key = PoolKey {
            endpoint,
            config: connector.config,
            worker: WORKER.with(std::cell::Cell::get),
        };
        let idle = if connector.http2 {
            self.take_shared(key, fresh).map(Sender::Http2)
        } else if fresh {
            None
        } else {
            self.take_idle(key).map(Sender::Http1)
        };
        if let Some(sender) = idle {
            return Ok(UpstreamConn {
                sender,
                key,
                pool: self.clone(),
            });
        }
        // Boxed: the connect and TLS handshake futures are large, and every request's future
        // would otherwise carry (and move) their space although most requests reuse a
        // connection.
        Box::pin(self.open(connector, key, connect_timeout)).await
    }

    /// A connection for our own HTTP/1.1 exchange (`upstream_h1`) with `endpoint`, plain or
    /// TLS as `connector` says (one that speaks HTTP/1.1): an idle one that is still quiet,
    /// else a new one (`fresh`: always a new one).
    pub(crate) async fn checkout_own(
        &self,
        connector: &Connector,
        endpoint: SocketAddr,
        connect_timeout: Duration,
        fresh: bool,
    ) -> Result<Box<upstream_h1::Conn>, ConnectError> {
        let key = PoolKey {
            endpoint,
            config: connector.config,
            worker: WORKER.with(std::cell::Cell::get),
        };
        if !fresh && let Some(conn) = self.take_own(key) {
            return Ok(conn);
        }
        // Boxed, as in `checkout`: most requests reuse a connection.
        let stream = Box::pin(connector.open_stream(endpoint, connect_timeout)).await?;
        let home = Arc::new(OwnHome {
            pool: Arc::downgrade(&self.inner),
            key,
        });
        Ok(upstream_h1::Conn::new(stream, home))
    }

    /// The most recently released idle connection of `key` that is still quiet. Expired and
    /// closed ones met on the way are dropped (after the lock).
    fn take_own(&self, key: PoolKey) -> Option<Box<upstream_h1::Conn>> {
        let mut stale = Vec::new();
        let found = {
            let mut idle = self.inner.idle();
            if !idle.is_live(key.endpoint) {
                if let Some(list) = idle.own.remove(&key) {
                    stale = list;
                }
                None
            } else {
                let list = idle.own.get_mut(&key)?;
                let mut found = None;
                while let Some(mut candidate) = list.pop() {
                    if candidate.since.elapsed() < POOL_IDLE && candidate.conn.is_quiet() {
                        found = Some(candidate.conn);
                        break;
                    }
                    stale.push(candidate);
                }
                found
            }
        };
        drop(stale);
        found
    }

    fn put_own(&self, key: PoolKey, conn: Box<upstream_h1::Conn>) {
        {
            let mut idle = self.inner.idle();
            if !idle.is_live(key.endpoint) {
                // As in `put_idle`: its endpoint left the table while it was in use.
                drop(idle);
                drop(conn);
                return;
            }
            let list = idle.own.entry(key).or_default();
            if list.len() >= MAX_IDLE_PER_KEY {
                drop(idle);
                drop(conn);
                return;
            }
            list.push(IdleOwn {
                conn,
                since: Instant::now(),
            });
        }
        self.start_reaper();
    }

    /// Opens a new connection and starts the task that drives it.
    async fn open(
        &self,
        connector: &Connector,
        key: PoolKey,
        connect_timeout: Duration,
    ) -> Result<UpstreamConn, ConnectError> {
        let sender = connector.connect(key.endpoint, connect_timeout).await?;
        if let Sender::Http2(shared) = &sender {
            self.share(key, shared.clone());
        }
        Ok(UpstreamConn {
            sender,
            key,
            pool: self.clone(),
        })
    }

    /// Makes `endpoints` (the live table's) the only ones the pool keeps connections to:
    /// idle connections to any other endpoint are closed now, and ones released later are not
    /// kept. Called after every table swap.
    pub(crate) fn retain_endpoints(&self, endpoints: impl IntoIterator<Item = SocketAddr>) {
        let live: FastSet<SocketAddr> = endpoints.into_iter().collect();
        let mut closed_own: Vec<IdleOwn> = Vec::new();
        let closed: Vec<IdleConn> = {
            let mut idle = self.inner.idle();
            let mut closed = Vec::new();
            idle.conns.retain(|key, list| {
                let keep = live.contains(&key.endpoint);
                if !keep {
                    closed.append(list);
                }
                keep
            });
            idle.own.retain(|key, list| {
                let keep = live.contains(&key.endpoint);
                if !keep {
                    closed_own.append(list);
                }
                keep
            });
            // Dropping the pool's handle closes a shared HTTP/2 connection once the requests
            // still on it are done.
            idle.h2.retain(|key, _| live.contains(&key.endpoint));
            idle.live = Some(live);
            closed
        };
        if !closed.is_empty() || !closed_own.is_empty() {
            tracing::debug!(
                closed = closed.len() + closed_own.len(),
                "closed idle upstream connections to endpoints that left the table"
            );
        }
        // Dropped outside the lock: dropping a sender lets its connection task close.
        drop(closed);
        drop(closed_own);
    }

    /// The most recently released idle connection of `key` that is ready for a request.
    /// Expired ones met on the way are dropped.
    fn take_idle(&self, key: PoolKey) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self.inner.idle();
        if !idle.is_live(key.endpoint) {
            // Picked from a table that was replaced meanwhile: open a fresh connection rather
            // than reuse one to a pod that left.
            idle.conns.remove(&key);
            return None;
        }
        let list = idle.conns.get_mut(&key)?;
        // Closed ones are never ready; the reaper drops them.
        while let Some(i) = list.iter().rposition(|c| c.sender.is_ready()) {
            let candidate = list.swap_remove(i);
            if candidate.since.elapsed() < POOL_IDLE {
                return Some(candidate.sender);
            }
        }
        None
    }

    /// A handle on the shared HTTP/2 connection of `key`, if it is open and not `fresh` (a
    /// `fresh` checkout replaces it: a request failed on it).
    fn take_shared(&self, key: PoolKey, fresh: bool) -> Option<http2::SendRequest<RequestBody>> {
        let mut idle = self.inner.idle();
        if fresh || !idle.is_live(key.endpoint) {
            idle.h2.remove(&key);
            return None;
        }
        let shared = idle.h2.get_mut(&key)?;
        if !shared.sender.is_ready() || shared.used.elapsed() >= POOL_IDLE {
            idle.h2.remove(&key);
            return None;
        }
        shared.used = Instant::now();
        Some(shared.sender.clone())
    }

    /// Makes a new HTTP/2 connection the one requests to `key` share.
    fn share(&self, key: PoolKey, sender: http2::SendRequest<RequestBody>) {
        {
            let mut idle = self.inner.idle();
            if !idle.is_live(key.endpoint) {
                return;
            }
            idle.h2.insert(
                key,
                Shared2 {
                    sender,
                    used: Instant::now(),
                },
            );
        }
        self.start_reaper();
    }

    fn put_idle(&self, key: PoolKey, sender: Sender) {
        // A shared HTTP/2 connection stays in the pool while requests use it.
        let Sender::Http1(sender) = sender else {
            return;
        };
        if sender.is_closed() {
            return;
        }
        {
            let mut idle = self.inner.idle();
            if !idle.is_live(key.endpoint) {
                // Its request was in flight when the endpoint left the table: it finished,
                // and the connection closes here.
                return;
            }
            let list = idle.conns.entry(key).or_default();
            if list.len() >= MAX_IDLE_PER_KEY {
                return;
            }
            list.push(IdleConn {
                sender,
                since: Instant::now(),
            });
        }
        self.start_reaper();
    }

    /// Starts the reaper on the first connection kept, from inside the runtime (a release
    /// from a drop outside any runtime leaves it for the next one).
    fn start_reaper(&self) {
        if !self.inner.reaper_started.load(Ordering::Relaxed)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
            && !self.inner.reaper_started.swap(true, Ordering::Relaxed)
        {
            runtime.spawn(reap(Arc::downgrade(&self.inner)));
        }
    }

    /// Idle connections ready for a request, over all endpoints (for tests).
    pub fn ready_count(&self) -> usize {
        let own = self.own_idle(|c| c.conn.is_quiet());
        own + self
            .inner
            .idle()
            .conns
            .values()
            .map(|list| list.iter().filter(|c| c.sender.is_ready()).count())
            .sum::<usize>()
    }

    /// Our own exchange's idle connections for which `counted` holds.
    fn own_idle(&self, mut counted: impl FnMut(&mut IdleOwn) -> bool) -> usize {
        self.inner
            .idle()
            .own
            .values_mut()
            .map(|list| {
                list.iter_mut()
                    .map(|c| usize::from(counted(c)))
                    .sum::<usize>()
            })
            .sum()
    }

    /// Idle connections kept, over all endpoints (for tests).
    pub fn idle_count(&self) -> usize {
        let own = self.own_idle(|_| true);
        own + self
            .inner
            .idle()
            .conns
            .values()
            .map(Vec::len)
            .sum::<usize>()
    }
}

/// Drops expired and closed idle connections every [`REAP_EVERY`] until the pool is gone.
async fn reap(pool: Weak<Shared>) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let mut idle = pool.idle();
        idle.conns.retain(|_, list| {
            list.retain(|c| !c.sender.is_closed() && c.since.elapsed() < POOL_IDLE);
            !list.is_empty()
        });
        idle.h2
            .retain(|_, c| !c.sender.is_closed() && c.used.elapsed() < POOL_IDLE);
        // Dropped with the lock held: closing a socket does not wait.
        idle.own.retain(|_, list| {
            list.retain_mut(|c| c.since.elapsed() < POOL_IDLE && c.conn.is_quiet());
            !list.is_empty()
        });
    }
}

// === impl UpstreamConn ===

/// A connection checked out for one request.
pub(crate) struct UpstreamConn {
    pub(crate) sender: Sender,
    key: PoolKey,
    pool: Clients,
}

impl UpstreamConn {
    /// Back to the pool: call once the response has been read to its end, so the connection
    /// is between messages.
    pub(crate) fn release(self) {
        self.pool.put_idle(self.key, self.sender);
    }
}

// === impl Connector ===

/// Opens connections to endpoints: TCP under the connect timeout, then TLS for re-encrypt
/// (same deadline).
pub(crate) struct Connector {
    config: ConfigId,
    tls: Option<UpstreamTls>,
    /// HTTP/2 (prior knowledge in cleartext, ALPN `h2` over TLS) instead of HTTP/1.1.
    http2: bool,
}

struct UpstreamTls {
    connector: TlsConnector,
    /// `None` when `BackendTls::sni` is not a valid server name.
    server_name: Option<ServerName<'static>>,
    sni: Arc<str>,
}

impl Connector {
    /// Whether it speaks HTTP/1.1 (plain or over TLS), as our own exchange (`upstream_h1`)
    /// does.
    pub(crate) fn speaks_http1(&self) -> bool {
        !self.http2
    }

    fn tls(config: ConfigId, tls: &BackendTls, http2: bool) -> Self {
        let mut client_config = crate::tls::upstream::client_config(tls);
        if http2 {
            let mut h2 = Arc::unwrap_or_clone(client_config);
            h2.alpn_protocols = vec![b"h2".to_vec()];
            client_config = Arc::new(h2);
        }
        Connector {
            config,
            http2,
            tls: Some(UpstreamTls {
                connector: TlsConnector::from(client_config),
                server_name: ServerName::try_from(tls.sni.clone()).ok(),
                sni: tls.sni.as_str().into(),
            }),
        }
    }

    /// Opens a connection to `addr` (TCP, then TLS for re-encrypt, both within `after`) and
    /// starts hyper's HTTP/1.1 client on it.
    async fn connect(&self, addr: SocketAddr, after: Duration) -> Result<Sender, ConnectError> {
        match self.open_stream(addr, after).await? {
            upstream_h1::Stream::Plain(tcp) => start_client(tcp, addr, self.http2).await,
            upstream_h1::Stream::Tls(tls) => start_client(*tls, addr, self.http2).await,
        }
    }

    /// Opens a connection to `addr`: TCP, then TLS for re-encrypt, both within `after`.
    async fn open_stream(
        &self,
        addr: SocketAddr,
        after: Duration,
    ) -> Result<upstream_h1::Stream, ConnectError> {
        let deadline = Instant::now() + after;
        let tcp = tcp_connect(addr, after).await?;
        let Some(tls) = &self.tls else {
            return Ok(upstream_h1::Stream::Plain(tcp));
        };
        let sni = tls.sni.to_string();
        let Some(server_name) = tls.server_name.clone() else {
            return Err(ConnectError::BadSni(sni));
        };
        match tokio::time::timeout_at(deadline, tls.connector.connect(server_name, tcp)).await {
            Err(_) => Err(ConnectError::TlsTimeout { addr, sni }),
            Ok(Err(source)) => Err(ConnectError::Tls { addr, sni, source }),
            Ok(Ok(stream)) => Ok(upstream_h1::Stream::Tls(Box::new(stream))),
        }
    }
}

/// A TCP connection to `addr` within `after`, without Nagle's delay.
async fn tcp_connect(addr: SocketAddr, after: Duration) -> Result<TcpStream, ConnectError> {
    let tcp = match tokio::time::timeout(after, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::TcpTimeout { addr, after }),
        Ok(Err(source)) => return Err(ConnectError::Tcp { addr, source }),
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}

/// Starts hyper's HTTP/1.1 (or HTTP/2) client on an open connection to `endpoint`, plain or
/// TLS, and the task that drives it. Generic over the stream, so no wrapper dispatches every
/// read and write between the two kinds: the sender does not name the stream type.
async fn start_client<IO>(io: IO, endpoint: SocketAddr, http2: bool) -> Result<Sender, ConnectError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if http2 {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| ConnectError::Handshake {
                addr: endpoint,
                source,
            })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%endpoint, %error, "upstream HTTP/2 connection ended with an error");
            }
        });
        return Ok(Sender::Http2(sender));
    }
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|source| ConnectError::Handshake {
            addr: endpoint,
            source,
        })?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%endpoint, %error, "upstream connection ended with an error");
        }
    });
    Ok(Sender::Http1(sender))
}

/// Why a connection to an endpoint could not be opened. Nothing was sent in any case.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
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
    #[error("HTTP client setup on the connection to {addr} failed")]
    Handshake {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

impl ConnectError {
    /// The endpoint did not accept a TCP connection: a reason to mark it failed and try another.
    pub(crate) fn is_tcp(&self) -> bool {
        matches!(
            self,
            ConnectError::Tcp { .. } | ConnectError::TcpTimeout { .. }
        )
    }
}
