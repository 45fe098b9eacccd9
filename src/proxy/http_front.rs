//! HTTP after the transport: :80 connections and terminated TLS connections.
//!
//! INTERFACE STUB — owned by the HTTP work; replace the body.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::{ConnInfo, ProxyContext};
use crate::table::RouteTable;

/// Serves HTTP/1.1 (and h2 when `conn.tls` negotiated it) on one client connection, routing
/// every request on `table` (the table loaded when the connection was accepted).
pub async fn serve_connection<IO>(
    io: IO,
    conn: ConnInfo,
    table: Arc<RouteTable>,
    ctx: Arc<ProxyContext>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _ = (io, conn, table, ctx);
}
