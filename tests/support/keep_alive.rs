//! Keep-alive test clients: one hyper sender bound to exactly one connection (HTTP/1.1 on :80,
//! HTTP/1.1 or HTTP/2 over TLS on :443), so every request on it proves what an already-open
//! connection gets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::pki::Ca;
use super::wait::wait_until;

/// How a test client talks to the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// HTTP/1.1 on :80.
    Plain,
    /// HTTP/1.1 over TLS on :443.
    Tls,
    /// HTTP/2 over TLS on :443 (ALPN h2).
    H2,
}

/// One client connection: a hyper sender bound to exactly one connection, so every request
/// on it proves what an already-open connection gets.
pub enum Conn {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// One answer: status, the backend that served it (`x-backend`), and whether the proxy said
/// it closes the connection.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub backend: Option<String>,
    pub closes: bool,
}

/// A TLS connection to `at` with `sni`, verified by `config`.
pub async fn tls_stream(
    at: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(at).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::try_from(sni.to_string()).expect("name"), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS to {sni}: {e}"))
}

impl Conn {
    /// Opens a connection to the proxy's `http` or `https` address, as `via` says; TLS is
    /// verified against `ca` for `host`.
    pub async fn open(http: SocketAddr, https: SocketAddr, ca: &Ca, via: Via, host: &str) -> Conn {
        match via {
            Via::Plain => {
                let tcp = TcpStream::connect(http).await.expect("connect :80");
                tcp.set_nodelay(true).expect("nodelay");
                Conn::h1(TokioIo::new(tcp)).await
            }
            Via::Tls => {
                let tls = tls_stream(https, ca.client_config(&[b"http/1.1"]), host).await;
                Conn::h1(TokioIo::new(tls)).await
            }
            Via::H2 => {
                let tls = tls_stream(https, ca.client_config(&[b"h2"]), host).await;
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .expect("HTTP/2 handshake");
                tokio::spawn(conn);
                Conn::H2(sender)
            }
        }
    }

    /// An HTTP/1.1 client connection over `io`.
    pub async fn h1<IO>(io: TokioIo<IO>) -> Conn
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(io).await.expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        Conn::H1(sender)
    }

    /// GET `path` from `host` on this connection (never another one).
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Answer, String> {
        let answer = async {
            let response = match self {
                Conn::H1(sender) => {
                    sender
                        .ready()
                        .await
                        .map_err(|e| format!("not ready: {e}"))?;
                    let request = http::Request::get(path)
                        .header(http::header::HOST, host)
                        .body(Empty::new())
                        .expect("request");
                    sender.send_request(request).await
                }
                Conn::H2(sender) => {
                    sender
                        .ready()
                        .await
                        .map_err(|e| format!("not ready: {e}"))?;
                    let request = http::Request::get(format!("https://{host}{path}"))
                        .body(Empty::new())
                        .expect("request");
                    sender.send_request(request).await
                }
            }
            .map_err(|e| format!("send: {e}"))?;
            let status = response.status().as_u16();
            let backend = response
                .headers()
                .get("x-backend")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let closes = response
                .headers()
                .get(http::header::CONNECTION)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?;
            Ok(Answer {
                status,
                backend,
                closes,
            })
        };
        tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .map_err(|_| "no answer within 5 s".to_string())?
    }

    /// Whether the proxy has closed this connection (between two requests).
    pub fn is_closed(&self) -> bool {
        match self {
            Conn::H1(sender) => sender.is_closed(),
            Conn::H2(sender) => sender.is_closed(),
        }
    }

    /// Whether the proxy has closed this connection (or, for HTTP/2, sent GOAWAY), within 5 s.
    pub async fn closed_by_proxy(&mut self) -> bool {
        wait_until(Duration::from_secs(5), || {
            let closed = match self {
                Conn::H1(sender) => sender.is_closed(),
                Conn::H2(sender) => sender.is_closed() || !sender.is_ready(),
            };
            async move { closed }
        })
        .await
    }
}
