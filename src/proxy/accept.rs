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

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::{ConnInfo, Listeners, ProxyContext, http_front, https_front};
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
/// its grace period).
pub async fn serve(
    listeners: Listeners,
    table: TableHandle,
    ctx: Arc<ProxyContext>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let tracker = Arc::new(Tracker::default());
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
    Ok(())
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
