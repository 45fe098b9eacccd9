//! TLS pass-through: the encrypted bytes of a connection go to one pod endpoint untouched.
//!
//! Phases, in order:
//! 1. **pick and connect**: `balance::pick` an endpoint, connect within `timeouts.connect`; a
//!    failed connect marks the endpoint failed and tries another (nothing was sent yet);
//! 2. **replay**: the optional PROXY header, then the ClientHello bytes already read;
//! 3. **splice**: copy both directions until both are done. When one side ends its stream we
//!    shut down writing towards the other and keep the other direction open (half-close); an
//!    error on either side, or `timeouts.idle` without a byte either way, ends both;
//! 4. **log**: one `access_log::tcp` line and `metrics.tcp_connection` per connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::prefixed_io::PrefixedIo;
use super::proxy_protocol;
use super::{ConnInfo, ProxyContext, balance};
use crate::access_log::{self, TcpLog};
use crate::model::upstream::Upstream;
use crate::table::RouteTable;

/// Connect attempts per connection: with many dead endpoints a client should not wait for
/// every one of them to time out.
const MAX_CONNECT_ATTEMPTS: usize = 3;
/// Copy buffer per direction.
const BUFFER: usize = 16 * 1024;

/// How a pass-through connection ended (the access log's `termination`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// Both sides ended their streams.
    Closed,
    /// Reading from or writing to the client failed.
    ClientReset,
    /// Reading from or writing to the upstream failed.
    UpstreamReset,
    /// No byte moved either way for `timeouts.idle`.
    IdleTimeout,
    /// Every connect attempt failed.
    ConnectFailed,
    /// The upstream has no endpoint to try.
    NoEndpoint,
}

impl Termination {
    /// The access-log label.
    pub fn as_str(self) -> &'static str {
        match self {
            Termination::Closed => "closed",
            Termination::ClientReset => "client-reset",
            Termination::UpstreamReset => "upstream-reset",
            Termination::IdleTimeout => "idle-timeout",
            Termination::ConnectFailed => "connect-failed",
            Termination::NoEndpoint => "no-endpoint",
        }
    }
}

/// What one pass-through connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub upstream: Option<SocketAddr>,
    /// Bytes from the client, the replayed ClientHello included (the PROXY header is ours).
    pub bytes_from_client: u64,
    pub bytes_to_client: u64,
    pub termination: Termination,
}

/// Serves one pass-through connection. `client` carries, as its prefix, every byte read from it
/// so far (the ClientHello whose SNI `sni` routed it to `upstream`); they are replayed first.
pub async fn serve(
    client: PrefixedIo<TcpStream>,
    sni: Option<&str>,
    conn: &ConnInfo,
    upstream: &Upstream,
    table: &RouteTable,
    ctx: &ProxyContext,
    started: Instant,
) -> Summary {
    let (hello, client) = client.into_parts();
    let summary = run(client, &hello, conn, upstream, table, ctx).await;
    access_log::tcp(&TcpLog {
        client: conn.client,
        sni,
        upstream: summary.upstream,
        bytes_from_client: summary.bytes_from_client,
        bytes_to_client: summary.bytes_to_client,
        duration: started.elapsed(),
        termination: summary.termination.as_str(),
    });
    ctx.metrics.tcp_connection(
        sni.unwrap_or_default(),
        summary.bytes_from_client,
        summary.bytes_to_client,
    );
    summary
}

async fn run(
    mut client: TcpStream,
    hello: &[u8],
    conn: &ConnInfo,
    upstream: &Upstream,
    table: &RouteTable,
    ctx: &ProxyContext,
) -> Summary {
    let mut summary = Summary {
        upstream: None,
        bytes_from_client: 0,
        bytes_to_client: 0,
        termination: Termination::NoEndpoint,
    };
    let Some((addr, mut server)) = connect(upstream, table, ctx, &mut summary).await else {
        return summary;
    };
    summary.upstream = Some(addr);

    let mut first = match upstream.proxy_protocol {
        Some(version) => proxy_protocol::encode(version, conn.client, conn.local),
        None => Vec::new(),
    };
    first.extend_from_slice(hello);
    if let Err(error) = server.write_all(&first).await {
        tracing::debug!(%addr, %error, "pass-through: writing the ClientHello to the upstream");
        summary.termination = Termination::UpstreamReset;
        return summary;
    }
    let from_client = AtomicU64::new(hello.len() as u64);
    let to_client = AtomicU64::new(0);
    summary.termination = splice(
        &mut client,
        &mut server,
        table.class.timeouts.idle,
        &from_client,
        &to_client,
    )
    .await;
    summary.bytes_from_client = from_client.load(Ordering::Relaxed);
    summary.bytes_to_client = to_client.load(Ordering::Relaxed);
    summary
}

/// Picks and connects an endpoint, retrying others when a connect fails.
async fn connect(
    upstream: &Upstream,
    table: &RouteTable,
    ctx: &ProxyContext,
    summary: &mut Summary,
) -> Option<(SocketAddr, TcpStream)> {
    let mut tried: Vec<SocketAddr> = Vec::new();
    while tried.len() < MAX_CONNECT_ATTEMPTS {
        let addr = balance::pick(upstream, &ctx.health, &tried)?;
        tried.push(addr);
        summary.termination = Termination::ConnectFailed;
        summary.upstream = Some(addr);
        let attempt = tokio::time::timeout(table.class.timeouts.connect, TcpStream::connect(addr));
        match attempt.await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some((addr, stream));
            }
            Ok(Err(error)) => {
                tracing::debug!(%addr, %error, upstream = %upstream.service, "pass-through connect failed");
            }
            Err(_) => {
                tracing::debug!(%addr, upstream = %upstream.service, "pass-through connect timed out");
            }
        }
        ctx.health.mark_failed(addr);
    }
    None
}

/// Which side of a spliced pair failed.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Client,
    Upstream,
}

/// Copies both directions until both streams ended, one side failed, or nothing moved for
/// `idle`. Byte counts land in the counters as they move, so they are right however it ends.
async fn splice(
    client: &mut TcpStream,
    server: &mut TcpStream,
    idle: Duration,
    from_client: &AtomicU64,
    to_client: &AtomicU64,
) -> Termination {
    let activity = Activity::new();
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let upstream_bound = copy_half(
        &mut client_read,
        &mut server_write,
        (Fault::Client, Fault::Upstream),
        from_client,
        &activity,
    );
    let downstream = copy_half(
        &mut server_read,
        &mut client_write,
        (Fault::Upstream, Fault::Client),
        to_client,
        &activity,
    );
    tokio::select! {
        done = async { tokio::try_join!(upstream_bound, downstream) } => match done {
            Ok(_) => Termination::Closed,
            Err(Fault::Client) => Termination::ClientReset,
            Err(Fault::Upstream) => Termination::UpstreamReset,
        },
        () = activity.idle_for(idle) => Termination::IdleTimeout,
    }
}

/// Copies `reader` to `writer` until end of stream, then shuts `writer` down (half-close).
/// `sides` names who is at fault when reading or writing fails.
async fn copy_half<R, W>(
    reader: &mut R,
    writer: &mut W,
    sides: (Fault, Fault),
    counter: &AtomicU64,
    activity: &Activity,
) -> Result<(), Fault>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (reader_fault, writer_fault) = sides;
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = reader.read(&mut buf).await.map_err(|_| reader_fault)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            // The peer may already be gone entirely; that is not a failure of this direction.
            let _ = writer.shutdown().await;
            return Ok(());
        };
        writer.write_all(chunk).await.map_err(|_| writer_fault)?;
        counter.fetch_add(n as u64, Ordering::Relaxed);
        activity.touch();
    }
}

// === impl Activity ===

/// When a byte last moved, in milliseconds since the splice started.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}
