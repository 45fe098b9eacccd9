//! TLS pass-through: the encrypted bytes of a connection go to one pod endpoint untouched.
//!
//! Phases, in order:
//! 0. **access**: a client address the host's allow/deny lists refuse is closed on, before
//!    any connect (`proxy::source_ranges`): not a byte reaches the pod;
//! 1. **pick and connect**: `balance::pick` an endpoint, connect within `timeouts.connect`; a
//!    failed connect marks the endpoint failed and tries another (nothing was sent yet);
//! 2. **replay**: the optional PROXY header, then the ClientHello bytes already read;
//! 3. **tunnel** (`proxy::tcp_tunnel`, by the rules of websocket tunnels): move both directions
//!    until both are done, with half-close; an error on either side, or `timeouts.tunnel_idle`
//!    without a byte either way, ends both. No buffer is held while the connection is idle;
//!    with `--passthrough-splice`, bulk transfers go through `splice(2)`;
//! 4. **log**: one `access_log::tcp` line and `metrics.tcp_connection` per connection.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::splice::End;
use super::{ConnInfo, ProxyContext, balance, source_ranges, tcp_tunnel};
use crate::table::RouteTable;
use crate::table::source_ranges::SourceRanges;
use crate::table::upstream::Upstream;
use crate::telemetry::access_log::{self, TcpLog};
use crate::telemetry::metrics::TcpBytes;
use crate::wire::prefixed_io::PrefixedIo;
use crate::wire::proxy_protocol;

/// Connect attempts per connection: with many dead endpoints a client should not wait for
/// every one of them to time out.
const MAX_CONNECT_ATTEMPTS: usize = 3;

/// How a pass-through connection ended (the access log's `termination`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Termination {
    /// Both sides ended their streams.
    Closed,
    /// Reading from or writing to the client failed.
    ClientReset,
    /// Reading from or writing to the upstream failed.
    UpstreamReset,
    /// No byte moved either way for `timeouts.tunnel_idle`.
    IdleTimeout,
    /// Every connect attempt failed.
    ConnectFailed,
    /// The upstream has no endpoint to try.
    NoEndpoint,
    /// The client address is refused by the host's allow/deny lists; nothing was connected.
    Denied,
}

impl Termination {
    /// The access-log label.
    fn as_str(self) -> &'static str {
        match self {
            Termination::Closed => "closed",
            Termination::ClientReset => "client-reset",
            Termination::UpstreamReset => "upstream-reset",
            Termination::IdleTimeout => "idle-timeout",
            Termination::ConnectFailed => "connect-failed",
            Termination::NoEndpoint => "no-endpoint",
            Termination::Denied => "denied",
        }
    }
}

/// What one pass-through connection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Summary {
    upstream: Option<SocketAddr>,
    /// Bytes from the client count the replayed ClientHello (the PROXY header is ours).
    bytes: TcpBytes,
    termination: Termination,
}

/// Serves one pass-through connection. `client` carries, as its prefix, every byte read from it
/// so far (the ClientHello whose SNI `sni` routed it to `upstream`); they are replayed first.
/// `sources`: the host's allow/deny lists, judged on the connection's client address.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve(
    client: PrefixedIo<TcpStream>,
    sni: Option<&str>,
    conn: &ConnInfo,
    upstream: &Upstream,
    sources: Option<&SourceRanges>,
    table: &RouteTable,
    ctx: &ProxyContext,
    started: Instant,
) -> Summary {
    let (hello, client) = client.into_parts();
    let summary = if source_ranges::admits_connection(sources, conn.client.ip()) {
        run(client, hello, conn, upstream, table, ctx).await
    } else {
        // Closed at once; the ClientHello goes nowhere.
        drop(client);
        Summary {
            upstream: None,
            bytes: TcpBytes::default(),
            termination: Termination::Denied,
        }
    };
    access_log::tcp(&TcpLog {
        client: conn.client,
        sni,
        service: Some(&upstream.service),
        upstream: summary.upstream,
        bytes_in: summary.bytes.from_client,
        bytes_out: summary.bytes.to_client,
        duration: started.elapsed(),
        termination: summary.termination.as_str(),
    });
    ctx.metrics
        .tcp_connection(sni.unwrap_or_default(), summary.bytes);
    summary
}

async fn run(
    mut client: TcpStream,
    hello: Bytes,
    conn: &ConnInfo,
    upstream: &Upstream,
    table: &RouteTable,
    ctx: &ProxyContext,
) -> Summary {
    let mut summary = Summary {
        upstream: None,
        bytes: TcpBytes::default(),
        termination: Termination::NoEndpoint,
    };
    let Some((addr, mut server)) = connect(upstream, table, ctx, &mut summary).await else {
        return summary;
    };
    summary.upstream = Some(addr);
    // Counted as active on the endpoint (and by least-request) while it is spliced.
    let in_flight = ctx.health.begin_request(addr);

    let mut first = match upstream.proxy_protocol {
        Some(version) => proxy_protocol::encode(version, conn.client, conn.local),
        None => Vec::new(),
    };
    first.extend_from_slice(&hello);
    let replayed = hello.len() as u64;
    // Neither is needed again: a connection that then idles for hours holds no copy of them.
    drop(hello);
    let written = server.write_all(&first).await;
    drop(first);
    if let Err(error) = written {
        tracing::debug!(%addr, %error, "pass-through: writing the ClientHello to the upstream");
        summary.termination = Termination::UpstreamReset;
        in_flight.failed();
        return summary;
    }
    let spliced = tcp_tunnel::run(
        &mut client,
        &mut server,
        table.class.timeouts.tunnel_idle,
        ctx.passthrough_splice,
    )
    .await;
    summary.termination = match spliced.end {
        End::Closed => Termination::Closed,
        End::ClientReset => Termination::ClientReset,
        End::UpstreamReset => Termination::UpstreamReset,
        End::IdleTimeout => Termination::IdleTimeout,
    };
    summary.bytes = TcpBytes {
        from_client: replayed + spliced.from_client,
        to_client: spliced.to_client,
        zero_copy: spliced.zero_copy,
    };
    if summary.termination == Termination::UpstreamReset {
        in_flight.failed();
    }
    in_flight.finish(summary.bytes.from_client, summary.bytes.to_client);
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
