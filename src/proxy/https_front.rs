//! The :443 front door: one port for pass-through, terminate and re-encrypt.
//!
//! Per connection, under ONE deadline (`timeouts.client_hello`) for everything before HTTP:
//! 1. **PROXY header**, only from `trusted_proxy_protocol` sources;
//! 2. **ClientHello** read into a bounded buffer (`limits.max_client_hello_bytes`);
//! 3. **route by SNI** (`RouteTable::route_sni`): a pass-through host goes to
//!    [`passthrough::serve`] with the buffered bytes replayed; everything else (terminate,
//!    re-encrypt, unknown SNI, no SNI) continues the handshake in rustls on the same socket
//!    ([`ServerTls`], the buffered ClientHello its first input): no second hop, no loopback
//!    port;
//! 4. **HTTP** over the TLS stream: `http_front::serve_connection`, which routes every request
//!    on the live table.
//!
//! Steps 1–3 use the table loaded at accept: the SNI route and the certificate are what the
//! handshake fixes for the connection's life.
//!
//! A malformed, truncated, oversized or late ClientHello closes the connection and is counted.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::client_auth::ClientCertificate;
use super::{ConnInfo, Negotiated, ProxyContext, TlsInfo, http_front, passthrough};
use crate::table::route::TlsMode;
use crate::table::{RouteTable, TableHandle};
use crate::telemetry::access_log;
use crate::telemetry::metrics::{ConnectionMode, HelloRejection, Mode};
use crate::wire::client_hello::{self, HelloError};
use crate::wire::prefixed_io::PrefixedIo;
use crate::wire::proxy_protocol;
use crate::wire::tls_server::ServerTls;

/// What is left of a terminated connection once its TLS handshake is done: HTTP until the
/// connection ends. Run as a task of its own ([`super::accept`]), so that the task that read
/// the ClientHello and made the handshake, whose future is sized for every state before HTTP
/// (the pass-through path included), ends with them: a connection waiting between requests
/// holds only this (`idle_release`).
pub(crate) type HttpPhase = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Serves one accepted :443 connection from `peer` to our address `local`: routed by SNI on
/// `table` (loaded at accept); pass-through here, a terminated connection's HTTP (every request
/// on the live table in `live`) returned as its [`HttpPhase`].
pub(crate) async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    table: Arc<RouteTable>,
    live: TableHandle,
    ctx: Arc<ProxyContext>,
) -> Option<HttpPhase> {
    let started = Instant::now();
    let deadline = started + table.class.timeouts.client_hello;
    let max = usize::try_from(table.class.limits.max_client_hello_bytes).unwrap_or(usize::MAX);
    let mut buf = Vec::new();

    let trusted = &table.class.trusted_proxy_protocol;
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
            tracing::debug!(%peer, %error, "closing :443 connection from a trusted proxy");
            return None;
        }
    };

    let hello = match client_hello::read_client_hello(&mut stream, &mut buf, max, deadline).await {
        Ok(hello) => hello,
        Err(error) => {
            if let Some(why) = rejection(&error) {
                ctx.metrics.hello_rejected(why);
            }
            tracing::debug!(%client, %error, "closing :443 connection before routing");
            return None;
        }
    };

    let mut conn = ConnInfo {
        client,
        local,
        tls: None,
    };
    let vhost = hello.sni.as_deref().and_then(|sni| table.route_sni(sni));
    // The metrics' `host`: the table's name for the SNI's virtual host, never the raw SNI,
    // so the label values stay bounded by the table's hosts.
    let host = vhost.map_or_else(|| "-".to_string(), |v| v.host.to_string());
    if let Some(vhost) = vhost
        && vhost.tls_mode == TlsMode::Passthrough
    {
        // A TLSRoute's weighted backends: this connection's share; an invalid backendRef's
        // share is refused ("Request rejections must respect weight", `TLSRouteRule`).
        let upstream = match vhost.passthrough_split.as_deref() {
            Some(split) => split.pick(),
            None => vhost.passthrough.as_ref(),
        };
        match upstream {
            Some(upstream) => {
                let io = PrefixedIo::new(buf, stream);
                let sni = hello.sni.as_deref();
                let sources = vhost.default_policy.source_ranges.as_ref();
                let _active = ctx
                    .metrics
                    .connection_opened(ConnectionMode::Passthrough, &host);
                passthrough::serve(io, sni, &conn, upstream, sources, &table, &ctx, started).await;
            }
            None if vhost.passthrough_split.is_some() => {
                tracing::debug!(sni = ?hello.sni, "connection refused: its share goes to an invalid backendRef");
            }
            None => tracing::warn!(sni = ?hello.sni, "pass-through host without an upstream"),
        }
        return None;
    }
    let mode = match vhost.map(|v| v.tls_mode) {
        Some(TlsMode::Reencrypt) => Mode::Reencrypt,
        _ => Mode::Terminate,
    };
    conn.tls = Some(TlsInfo {
        sni: hello.sni,
        alpn: None,
        certificate: None,
        client_cert: None,
        version: None,
        cipher: None,
    });
    terminate(stream, buf, conn, mode, &host, deadline, table, live, ctx).await
}

/// The metric label of a ClientHello that could not be read, or `None` when the connection is
/// not counted: a client that connects and closes without sending a byte (TCP health probes do
/// this).
fn rejection(error: &HelloError) -> Option<HelloRejection> {
    match error {
        HelloError::Timeout(_) => Some(HelloRejection::Timeout),
        HelloError::TooLarge { .. } => Some(HelloRejection::TooLarge),
        HelloError::NotTls(_) => Some(HelloRejection::NotTls),
        HelloError::Closed { bytes: 0 } => None,
        HelloError::Incomplete
        | HelloError::Malformed(_)
        | HelloError::Closed { .. }
        | HelloError::Io(_) => Some(HelloRejection::Malformed),
    }
}

/// Continues the handshake in rustls (replaying the buffered ClientHello) and returns the
/// connection's HTTP phase. `conn.tls` holds the SNI; the negotiated ALPN and certificate are
/// filled in here.
#[allow(clippy::too_many_arguments)]
async fn terminate(
    stream: TcpStream,
    buf: Vec<u8>,
    mut conn: ConnInfo,
    mode: Mode,
    host: &str,
    deadline: Instant,
    table: Arc<RouteTable>,
    live: TableHandle,
    ctx: Arc<ProxyContext>,
) -> Option<HttpPhase> {
    let sni = conn.tls.as_ref().and_then(|t| t.sni.clone());
    // A host with client certificates (`auth-tls-*`) has a config of its own; no SNI or an
    // unknown one is the catch-all's.
    let client_auth = table
        .vhost_for(sni.as_deref())
        .and_then(|v| v.client_auth.clone());
    let fallback = &ctx.fallback_certificate;
    let config = ctx
        .tls
        .config_for_host(&table, fallback, client_auth.as_ref());
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(%error, "no TLS server config; closing");
            ctx.metrics.handshake(mode, false, host);
            return None;
        }
    };
    // The TLS stream boxed (~1.3 KiB, rustls's connection inline): in the HTTP phase's
    // future, a moved-from argument keeps its room at every `async fn` level, so unboxed it
    // would sit there two or three times for the connection's whole life (`idle_release`).
    // The ClientHello read to route by SNI is the stream's first input.
    let accept = ServerTls::accept(config, buf, stream);
    let tls = match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(tls)) => Box::new(tls),
        Ok(Err(error)) => {
            // The stream has sent rustls's alert if the socket took it.
            ctx.metrics.handshake(mode, false, host);
            tracing::debug!(client = %conn.client, sni = ?sni, %error, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            ctx.metrics.handshake(mode, false, host);
            tracing::debug!(client = %conn.client, sni = ?sni, "TLS handshake timed out");
            return None;
        }
    };
    ctx.metrics.handshake(mode, true, host);
    if let Some(info) = conn.tls.as_mut() {
        let server = tls.connection();
        info.alpn = server.alpn_protocol().map(<[u8]>::to_vec);
        info.version = server
            .protocol_version()
            .and_then(access_log::tls_version_name);
        info.cipher = server
            .negotiated_cipher_suite()
            .and_then(|s| access_log::cipher_name(s.suite()));
        info.client_cert = client_auth
            .as_ref()
            .map(|auth| Arc::new(ClientCertificate::verify(auth, server.peer_certificates())));
        // The same cached config (of `table`) answered the handshake, so this is the
        // certificate the client was shown.
        info.certificate = ctx
            .tls
            .with_certificate(&table, &ctx.fallback_certificate, sni.as_deref(), |c| {
                Negotiated::of(c, sni.as_deref())
            })
            .ok();
    }
    let active = ctx.metrics.connection_opened(mode, host);
    // The future itself, not wrapped in an `async` block: a block would keep the future twice
    // (the captured one, and the one it awaits) for the connection's whole life.
    Some(Box::pin(http_front::serve_connection(
        tls, conn, false, table, live, ctx, active,
    )))
}
