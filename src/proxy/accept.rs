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
//! both loops on the same listening sockets in a single-threaded runtime of its own; a
//! connection lives on the worker that accepted it, or on the least loaded one, which it was
//! handed to when the accepting worker ran more than one connection more (`Balance`).

use std::io;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot, watch};
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
    let serving = Serving {
        live: table,
        ctx,
        tracker: Arc::new(Tracker::default()),
        seat: None,
    };
    serving.accept_both(listeners, shutdown).await;
    Ok(())
}

/// [`serve`] on `workers` threads, each with its own single-threaded runtime that accepts on
/// both listeners (the same sockets: the kernel wakes the workers and one of them gets each
/// connection) and runs its connections, with their upstream connections (see
/// `pool::enter_worker`), to the end. Nothing a request touches moves between threads, so a
/// request wakes no other thread, unlike with one work-stealing runtime; what the workers
/// share (the table, TLS session state, limits, metrics) is behind atomics or uncontended locks.
/// A worker that runs more connections than another by more than one hands a connection it
/// accepts to the least loaded one ([`Balance`]). With one worker, [`serve`] itself. Dropping
/// the returned future (the grace period is over) stops the workers and closes their
/// connections.
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
    let count = u16::try_from(workers.get()).unwrap_or(u16::MAX);
    let (inboxes, receivers): (Vec<_>, Vec<_>) =
        (0..count).map(|_| mpsc::unbounded_channel()).unzip();
    let balance = Arc::new(Balance {
        load: (0..count)
            .map(|worker| ctx.metrics.worker_connections(worker))
            .collect(),
        inboxes: inboxes.into(),
    });
    let mut running = Vec::with_capacity(receivers.len());
    for (index, inbox) in (0..count).zip(receivers) {
        let listeners = (http.try_clone()?, https.try_clone()?);
        let serving = Serving {
            live: table.clone(),
            ctx: ctx.clone(),
            tracker: tracker.clone(),
            seat: Some(Seat {
                balance: balance.clone(),
                index,
            }),
        };
        let shutdown = shutdown.clone();
        // Dropped with this future: the worker then stops at once.
        let (stop, stopped) = oneshot::channel::<()>();
        let (done, finished) = oneshot::channel::<io::Result<()>>();
        std::thread::Builder::new()
            .name(format!("portcullis-proxy-{index}"))
            .spawn(move || {
                let result = serving.run_worker(listeners, inbox, shutdown, stopped);
                let _ = done.send(result);
            })?;
        running.push((stop, finished));
    }
    drop((http, https, balance));
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

/// What every accept loop of one worker shares.
#[derive(Clone)]
struct Serving {
    live: TableHandle,
    ctx: Arc<ProxyContext>,
    tracker: Arc<Tracker>,
    /// `None` with one worker.
    seat: Option<Seat>,
}

/// One of several proxy workers.
#[derive(Clone)]
struct Seat {
    balance: Arc<Balance>,
    index: u16,
}

/// How the workers share connections: how many each runs, and an inbox per worker for the
/// connections another one accepted and handed over.
struct Balance {
    /// `portcullis_worker_connections`, per worker.
    load: Box<[Gauge]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

impl Balance {
    /// Where worker `from` should run a connection it accepted: itself, unless another worker
    /// runs fewer connections by more than one. The counts are read without a lock: two
    /// workers deciding at once may both pick the same one, which the next decisions correct.
    fn worker_for(&self, from: u16) -> u16 {
        let mine = self.load.get(usize::from(from)).map_or(0, Gauge::get);
        let least = (0..)
            .zip(self.load.iter().map(Gauge::get))
            .min_by_key(|&(_, load)| load);
        match least {
            Some((worker, load)) if load + 1 < mine => worker,
            _ => from,
        }
    }
}

/// A connection accepted and counted, to be served on a worker. `S` is tokio's `TcpStream`,
/// or the std one while it moves between workers (out of the accepting worker's reactor, to
/// be registered with the other's).
struct Accepted<S> {
    kind: Listener,
    stream: S,
    peer: SocketAddr,
    local: SocketAddr,
    table: Arc<RouteTable>,
    slot: Slot,
}

impl<S> Accepted<S> {
    /// The same connection, its stream converted by `convert`.
    fn convert<T>(self, convert: impl FnOnce(S) -> io::Result<T>) -> io::Result<Accepted<T>> {
        Ok(Accepted {
            kind: self.kind,
            stream: convert(self.stream)?,
            peer: self.peer,
            local: self.local,
            table: self.table,
            slot: self.slot,
        })
    }
}

/// What a worker's inbox carries.
type Handoff = Accepted<std::net::TcpStream>;

impl Serving {
    /// One proxy worker: its runtime, serving until every connection has finished after
    /// shutdown, or until `stopped` (the caller gave up waiting).
    fn run_worker(
        self,
        (http, https): (std::net::TcpListener, std::net::TcpListener),
        inbox: mpsc::UnboundedReceiver<Handoff>,
        shutdown: watch::Receiver<bool>,
        stopped: oneshot::Receiver<()>,
    ) -> io::Result<()> {
        if let Some(seat) = &self.seat {
            pool::enter_worker(seat.index);
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listeners = Listeners {
                http: TcpListener::from_std(http)?,
                https: TcpListener::from_std(https)?,
            };
            // Runs as long as the runtime: a connection handed over during the drain holds a
            // slot, so every worker still waits for it.
            tokio::spawn(self.clone().take_handoffs(inbox));
            tokio::select! {
                () = self.accept_both(listeners, shutdown) => {}
                _ = stopped => {}
            }
            Ok(())
        })
        // Dropping the runtime drops what is left of its connections.
    }

    /// Accepts on both listeners until shutdown, then waits until the tracker counts no open
    /// connection (over every worker: each keeps running its own until all are done).
    async fn accept_both(&self, listeners: Listeners, shutdown: watch::Receiver<bool>) {
        tokio::join!(
            self.accept_loop(Listener::Http, listeners.http, shutdown.clone()),
            self.accept_loop(Listener::Https, listeners.https, shutdown),
        );
        self.tracker.wait_idle().await;
    }

    async fn accept_loop(
        &self,
        kind: Listener,
        listener: TcpListener,
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
            let table = self.live.load_full();
            let max = usize::try_from(table.class.limits.max_connections).unwrap_or(usize::MAX);
            let Some(slot) = self.tracker.try_acquire(max) else {
                self.ctx.metrics.connection_limited();
                tracing::debug!(%peer, max, "connection limit reached; closing");
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let local = stream
                .local_addr()
                .or_else(|_| listener.local_addr())
                .unwrap_or(peer);
            let mut accepted = Accepted {
                kind,
                stream,
                peer,
                local,
                table,
                slot,
            };
            if let Some(seat) = &self.seat {
                let worker = seat.balance.worker_for(seat.index);
                accepted.slot.runs_on(&seat.balance, worker);
                if worker != seat.index {
                    self.hand_over(seat, worker, accepted);
                    continue;
                }
            }
            self.start(accepted);
        }
        tracing::debug!(listener = ?kind, "stopped accepting");
    }

    /// Sends a connection to `worker`'s inbox; it is served here if that worker is gone.
    fn hand_over(&self, seat: &Seat, worker: u16, accepted: Accepted<TcpStream>) {
        let peer = accepted.peer;
        let handoff = match accepted.convert(TcpStream::into_std) {
            Ok(handoff) => handoff,
            Err(error) => {
                tracing::debug!(%peer, %error, "closing a connection that could not be handed over");
                return;
            }
        };
        let sent = match seat.balance.inboxes.get(usize::from(worker)) {
            Some(inbox) => inbox.send(handoff).map_err(|back| back.0),
            None => Err(handoff),
        };
        if let Err(mut back) = sent {
            back.slot.runs_on(&seat.balance, seat.index);
            self.take(back);
        }
    }

    /// Serves the connections other workers hand to this one.
    async fn take_handoffs(self, mut inbox: mpsc::UnboundedReceiver<Handoff>) {
        while let Some(handoff) = inbox.recv().await {
            self.take(handoff);
        }
    }

    /// Registers a handed-over connection with this worker's reactor and serves it.
    fn take(&self, handoff: Handoff) {
        let peer = handoff.peer;
        match handoff.convert(TcpStream::from_std) {
            Ok(accepted) => self.start(accepted),
            Err(error) => {
                tracing::debug!(%peer, %error, "closing a connection handed over by another worker");
            }
        }
    }

    /// Spawns the connection's task on this worker's runtime.
    fn start(&self, accepted: Accepted<TcpStream>) {
        let Accepted {
            kind,
            stream,
            peer,
            local,
            table,
            slot,
        } = accepted;
        let ctx = self.ctx.clone();
        let live = self.live.clone();
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

/// One open connection; dropping it (even while unwinding from a panic) frees the slot, and
/// its place in its worker's count.
struct Slot {
    tracker: Arc<Tracker>,
    worker: Option<Gauge>,
}

impl Slot {
    /// Counts the connection as run by `worker`.
    fn runs_on(&mut self, balance: &Balance, worker: u16) {
        let gauge = balance.load.get(usize::from(worker)).cloned();
        if let Some(gauge) = &gauge {
            gauge.inc();
        }
        if let Some(previous) = std::mem::replace(&mut self.worker, gauge) {
            previous.dec();
        }
    }
}

impl Tracker {
    fn try_acquire(self: &Arc<Self>, max: usize) -> Option<Slot> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot {
                tracker: Arc::clone(self),
                worker: None,
            })
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
        if let Some(worker) = &self.worker {
            worker.dec();
        }
        if self.tracker.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.tracker.idle.notify_waiters();
        }
    }
}
