//! Accept loops for :80 and :443.
//!
//! One loop per listener. Per accepted connection: `TCP_NODELAY`, the connection limit
//! (`limits.max_connections`, counted across both listeners), one `load_full` of the table for
//! what is decided per connection (limits, PROXY header trust, the :443 route by SNI), then a
//! task: :80 → (trusted PROXY header) → `http_front`, :443 → `https_front`, whose terminated
//! connections go on in a second task for their HTTP phase (`https_front::HttpPhase`, holding
//! the connection's slot) once the handshake is done. HTTP requests are
//! routed on the live table, loaded per request. Accept errors (EMFILE...) are logged and the loop backs off briefly; they never
//! end it. On shutdown the loops stop accepting and `serve` returns once every connection task
//! has finished.
//!
//! With several proxy workers (`serve_on_workers`, `--proxy-workers`), each worker thread runs
//! both loops on the same listening sockets in a single-threaded runtime of its own, and a
//! connection lives on the worker that accepted it.

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::time::Instant;

use super::{ConnInfo, Listeners, ProxyContext, http_front, https_front, pool};
use crate::table::{RouteTable, TableHandle};
use crate::telemetry::metrics::ConnectionMode;
use crate::wire::prefixed_io::PrefixedIo;
use crate::wire::proxy_protocol;

/// Pause after an accept error that is about us (out of file descriptors, memory), not about
/// the one connection: retrying at once would spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listener {
    Http,
    Https,
}

/// Serves both listeners until `shutdown` turns true (or its sender is dropped), then stops
/// accepting and returns once open connections have finished (the caller bounds that wait with
/// its grace period). Runs on the caller's runtime: one proxy worker.
pub async fn serve(
    listeners: Listeners,
    table: TableHandle,
    ctx: Arc<ProxyContext>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let tracker = Arc::new(Tracker::default());
    accept_both(listeners, table, ctx, tracker, shutdown).await;
    Ok(())
}

/// [`serve`] on `workers` threads, each with its own single-threaded runtime that accepts on
/// both listeners (the same sockets: the kernel wakes the workers and one of them gets each
/// connection) and runs the connections it accepted, with their upstream connections (see
/// `pool::enter_worker`), to the end. Nothing a request touches moves between threads, so a
/// request wakes no other thread, unlike with one work-stealing runtime; what the workers
/// share (the table, TLS session state, limits, metrics) is behind atomics or uncontended locks.
/// With one worker, [`serve`] itself. Dropping the returned future (the grace period is over)
/// stops the workers and closes their connections.
pub async fn serve_on_workers(
    workers: NonZeroUsize,
    listeners: Listeners,
    table: TableHandle,
    ctx: Arc<ProxyContext>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    if workers.get() == 1 {
        return serve(listeners, table, ctx, shutdown).await;
    }
    let tracker = Arc::new(Tracker::default());
    let http = listeners.http.into_std()?;
    let https = listeners.https.into_std()?;
    let mut running = Vec::with_capacity(workers.get());
    for index in 0..workers.get() {
        let listeners = (http.try_clone()?, https.try_clone()?);
        let (table, ctx, tracker, shutdown) = (
            table.clone(),
            ctx.clone(),
            tracker.clone(),
            shutdown.clone(),
        );
        // Dropped with this future: the worker then stops at once.
        let (stop, stopped) = oneshot::channel::<()>();
        let (done, finished) = oneshot::channel::<io::Result<()>>();
        let index = u16::try_from(index).unwrap_or(u16::MAX);
        std::thread::Builder::new()
            .name(format!("portcullis-proxy-{index}"))
            .spawn(move || {
                let result = run_worker(index, listeners, table, ctx, tracker, shutdown, stopped);
                let _ = done.send(result);
            })?;
        running.push((stop, finished));
    }
    drop((http, https));
    let mut result = Ok(());
    for (stop, finished) in running {
        // A worker that ended without a word (it panicked) failed.
        let outcome = finished
            .await
            .unwrap_or_else(|_| Err(io::Error::other("a proxy worker stopped unexpectedly")));
        result = result.and(outcome);
        drop(stop);
    }
    result
}

/// One proxy worker: its runtime, serving until every connection has finished after shutdown,
/// or until `stopped` (the caller gave up waiting).
fn run_worker(
    index: u16,
    (http, https): (std::net::TcpListener, std::net::TcpListener),
    table: TableHandle,
    ctx: Arc<ProxyContext>,
    tracker: Arc<Tracker>,
    shutdown: watch::Receiver<bool>,
    stopped: oneshot::Receiver<()>,
) -> io::Result<()> {
    pool::enter_worker(index);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listeners = Listeners {
            http: TcpListener::from_std(http)?,
            https: TcpListener::from_std(https)?,
        };
        tokio::select! {
            () = accept_both(listeners, table, ctx, tracker, shutdown) => {}
            _ = stopped => {}
        }
        Ok(())
    })
    // Dropping the runtime drops what is left of its connections.
}

/// Accepts on both listeners until shutdown, then waits until `tracker` counts no open
/// connection (over every worker: each keeps running its own until all are done).
async fn accept_both(
    listeners: Listeners,
    table: TableHandle,
    ctx: Arc<ProxyContext>,
    tracker: Arc<Tracker>,
    shutdown: watch::Receiver<bool>,
) {
    tokio::join!(
        accept_loop(
            Listener::Http,
            listeners.http,
            table.clone(),
            ctx.clone(),
            tracker.clone(),
            shutdown.clone(),
        ),
        accept_loop(
            Listener::Https,
            listeners.https,
            table,
            ctx,
            tracker.clone(),
            shutdown,
        ),
    );
    tracker.wait_idle().await;
}

async fn accept_loop(
    kind: Listener,
    listener: TcpListener,
    live: TableHandle,
    ctx: Arc<ProxyContext>,
    tracker: Arc<Tracker>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) if is_connection_error(&error) => {
                tracing::debug!(%error, listener = ?kind, "accept: connection failed before accept");
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, listener = ?kind, "accept failed; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let table = live.load_full();
        let max = usize::try_from(table.class.limits.max_connections).unwrap_or(usize::MAX);
        let Some(slot) = tracker.try_acquire(max) else {
            ctx.metrics.connection_limited();
            tracing::debug!(%peer, max, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream
            .local_addr()
            .or_else(|_| listener.local_addr())
            .unwrap_or(peer);
        let ctx = ctx.clone();
        let live = live.clone();
        tokio::spawn(async move {
            match kind {
                Listener::Http => {
                    let _slot = slot;
                    serve_http(stream, peer, local, table, live, ctx).await;
                }
                Listener::Https => {
                    let http =
                        https_front::serve_connection(stream, peer, local, table, live, ctx).await;
                    if let Some(http) = http {
                        // A task of its own, holding the slot: this one ends with the
                        // handshake (`https_front::HttpPhase`).
                        tokio::spawn(async move {
                            let _slot = slot;
                            http.await;
                        });
                    }
                }
            }
        });
    }
    tracing::debug!(listener = ?kind, "stopped accepting");
}

/// A :80 connection: the PROXY header from a trusted source (within `timeouts.header_read`),
/// then HTTP: HTTP/2 when the client opens with its connection preface (h2c "with prior
/// knowledge", RFC 9113 §3.3, as gRPC clients without TLS do), HTTP/1.1 otherwise.
async fn serve_http(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    table: Arc<RouteTable>,
    live: TableHandle,
    ctx: Arc<ProxyContext>,
) {
    let deadline = Instant::now() + table.class.timeouts.header_read;
    let trusted = &table.class.trusted_proxy_protocol;
    let mut buf = Vec::new();
    let client = match proxy_protocol::client_address(
        &mut stream,
        peer,
        trusted,
        &mut buf,
        deadline,
    )
    .await
    {
        Ok(client) => client,
        Err(error) => {
            tracing::debug!(%peer, %error, "closing :80 connection from a trusted proxy");
            return;
        }
    };
    let h2c = match h2_preface(&mut stream, &mut buf, deadline).await {
        Ok(h2c) => h2c,
        Err(error) => {
            tracing::debug!(%peer, %error, "closing :80 connection before its first request");
            return;
        }
    };
    let conn = ConnInfo {
        client,
        local,
        tls: None,
    };
    // Host `-`: a plain connection's requests may go to any host (they are counted per host
    // in `portcullis_http_requests_total`).
    let active = ctx.metrics.connection_opened(ConnectionMode::Http, "-");
    let io = PrefixedIo::new(buf, stream);
    http_front::serve_connection(io, conn, h2c, table, live, ctx, active).await;
}

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Does the client open with the HTTP/2 preface? Reads into `buf` (replayed to the HTTP
/// server after) only until the answer is known: an HTTP/1.1 request differs from it within
/// its first two bytes, so this is usually the one read hyper would have made. End of stream
/// is `false` (hyper sees it); no answer by `deadline` is an error.
async fn h2_preface(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> io::Result<bool> {
    use tokio::io::AsyncReadExt;
    loop {
        let known = buf.len().min(H2_PREFACE.len());
        if buf[..known] != H2_PREFACE[..known] {
            return Ok(false);
        }
        if known == H2_PREFACE.len() {
            return Ok(true);
        }
        buf.reserve(4096);
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(0)) => return Ok(false),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error),
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no request within timeouts.header_read",
                ));
            }
        }
    }
}

/// Errors that concern one connection that died in the queue, not the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

// === impl Tracker ===

/// Counts open connections across both listeners, for the limit and for the shutdown wait.
#[derive(Default)]
struct Tracker {
    active: AtomicUsize,
    idle: Notify,
}

/// One open connection; dropping it (even while unwinding from a panic) frees the slot.
struct Slot(Arc<Tracker>);

impl Tracker {
    fn try_acquire(self: &Arc<Self>, max: usize) -> Option<Slot> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(self)))
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.active.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}
