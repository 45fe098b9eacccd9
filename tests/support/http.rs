//! The test HTTP client, in-process (hyper and rustls): one-shot requests on a fresh connection
//! (plain or TLS), keep-alive connections ([`Conn`]: HTTP/1.1 or HTTP/2, every request on the
//! same connection), raw bytes, the admin endpoint, and the TLS client pieces the front-door
//! tests need (an any-certificate config, the peer's leaf, a real ClientHello). Every response
//! comes back as one [`Answer`]. Real external clients (curl, openssl) are in `clients`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{HeaderMap, Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use super::pki::{Ca, provider};
use super::wait::wait_until;

/// How long a request on a [`Conn`] may take, by default, before it counts as unanswered.
const ANSWER_DEADLINE: Duration = Duration::from_secs(5);

// === impl Answer ===

/// A response as a test sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
            .unwrap_or("")
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    /// The test backend that served it (`x-backend`), if one did.
    pub fn backend(&self) -> Option<&str> {
        self.headers.get("x-backend").and_then(|v| v.to_str().ok())
    }

    /// Whether the proxy said it closes the connection (`Connection: close`).
    pub fn closes(&self) -> bool {
        self.headers
            .get(http::header::CONNECTION)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
    }
}

// === one-shot requests ===

/// `GET path` with `Host: host` and `headers`, HTTP/1.1 on a new plain connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut conn = Conn::plain(addr).await;
    conn.get_with(host, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

/// `method path` with `body`, HTTP/1.1 on a new plain connection.
pub async fn send(
    addr: SocketAddr,
    method: Method,
    host: &str,
    path: &str,
    body: &'static [u8],
) -> Answer {
    let mut conn = Conn::plain(addr).await;
    let req = request(method.clone(), host, path, &[], Bytes::from_static(body));
    conn.send(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `GET path` HTTP/1.1 over a new TLS connection to `addr` with SNI `host`, verified by `ca`.
pub async fn tls_get(
    addr: SocketAddr,
    ca: &Ca,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut conn = Conn::connect(addr, ca, Via::Tls, host).await;
    conn.get_with(host, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET https://{host}{path}: {e}"))
}

/// Writes raw bytes and reads until the server closes (bounded by 10 s).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

/// `GET path` on the admin endpoint (a new connection; the error as text when it fails).
pub async fn admin_get(addr: SocketAddr, path: &str) -> Result<Answer, String> {
    let mut conn = Conn::try_plain(addr).await?;
    conn.get(&addr.to_string(), path).await
}

/// The status of `GET path` on the admin endpoint, or 0 when the request failed.
pub async fn status_of(addr: SocketAddr, path: &str) -> u16 {
    admin_get(addr, path)
        .await
        .map(|a| a.status.as_u16())
        .unwrap_or(0)
}

/// An HTTP/1.1-style request (origin-form target, `Host` header).
pub fn request(
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(body)).expect("request")
}

// === impl Conn ===

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

/// One client connection: a hyper sender bound to exactly one connection, so every request on
/// it proves what an already-open connection gets.
pub struct Conn {
    /// `None` only once [`Conn::close`] has let go of it.
    sender: Option<Sender>,
    /// The hyper connection task: it ends when the connection closes.
    driver: JoinHandle<()>,
    /// How long one request may take before it counts as unanswered.
    deadline: Duration,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    /// Opens a connection to the proxy's `http` or `https` address, as `via` says; TLS is
    /// verified against `ca` for `host`.
    pub async fn open(http: SocketAddr, https: SocketAddr, ca: &Ca, via: Via, host: &str) -> Conn {
        let at = if via == Via::Plain { http } else { https };
        Conn::connect(at, ca, via, host).await
    }

    /// Opens a connection to `at` as `via` says (TLS verified against `ca`, SNI `host`).
    pub async fn connect(at: SocketAddr, ca: &Ca, via: Via, host: &str) -> Conn {
        Conn::try_connect(at, ca, via, host)
            .await
            .unwrap_or_else(|e| panic!("{via:?} to {host}: {e}"))
    }

    /// Like [`Conn::connect`], the failure as text (for tests that count failures).
    pub async fn try_connect(
        at: SocketAddr,
        ca: &Ca,
        via: Via,
        host: &str,
    ) -> Result<Conn, String> {
        let tls = |alpn: &'static [u8]| async move {
            tls_connect(at, ca.client_config(&[alpn]), host)
                .await
                .map_err(|e| format!("TLS: {e}"))
        };
        match via {
            Via::Plain => Conn::try_plain(at).await,
            Via::Tls => Conn::try_h1(TokioIo::new(tls(b"http/1.1").await?)).await,
            Via::H2 => {
                let tls = tls(b"h2").await?;
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
                Ok(Conn::driven(Sender::H2(sender), async move {
                    let _ = conn.await;
                }))
            }
        }
    }

    /// An HTTP/1.1 connection over plain TCP to `at`.
    pub async fn plain(at: SocketAddr) -> Conn {
        let tcp = tcp(at).await.unwrap_or_else(|e| panic!("{e}"));
        Conn::h1(TokioIo::new(tcp)).await
    }

    /// Like [`Conn::plain`], the failure as text.
    pub async fn try_plain(at: SocketAddr) -> Result<Conn, String> {
        Conn::try_h1(TokioIo::new(tcp(at).await?)).await
    }

    /// An HTTP/1.1 client connection over `io`.
    pub async fn h1<IO>(io: TokioIo<IO>) -> Conn
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        Conn::try_h1(io).await.unwrap_or_else(|e| panic!("{e}"))
    }

    async fn try_h1<IO>(io: TokioIo<IO>) -> Result<Conn, String>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(io)
            .await
            .map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        Ok(Conn::driven(Sender::H1(sender), async move {
            let _ = conn.await;
        }))
    }

    fn driven(sender: Sender, driver: impl Future<Output = ()> + Send + 'static) -> Conn {
        Conn {
            sender: Some(sender),
            driver: tokio::spawn(driver),
            deadline: ANSWER_DEADLINE,
        }
    }

    /// How long each request may take before it counts as unanswered (5 s unless set).
    pub fn answer_deadline(mut self, deadline: Duration) -> Conn {
        self.deadline = deadline;
        self
    }

    /// GET `path` from `host` on this connection (never another one), within the deadline.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Answer, String> {
        self.get_with(host, path, &[]).await
    }

    /// Like [`Conn::get`], with extra request headers.
    pub async fn get_with(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Answer, String> {
        let mut req = request(Method::GET, host, path, headers, Bytes::new());
        if let Some(Sender::H2(_)) = self.sender {
            // HTTP/2 carries the host in `:authority`.
            *req.uri_mut() = format!("https://{host}{path}").parse().expect("uri");
            req.headers_mut().remove(http::header::HOST);
        }
        self.send(req).await
    }

    /// Sends `req` on this connection; the whole answer within the deadline.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Answer, String> {
        let answer = async {
            let response = match self.sender.as_mut().expect("open") {
                Sender::H1(sender) => {
                    sender
                        .ready()
                        .await
                        .map_err(|e| format!("not ready: {e}"))?;
                    sender.send_request(req).await
                }
                Sender::H2(sender) => {
                    sender
                        .ready()
                        .await
                        .map_err(|e| format!("not ready: {e}"))?;
                    sender.send_request(req).await
                }
            }
            .map_err(|e| format!("send: {e}"))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok(Answer {
                status,
                headers,
                body,
            })
        };
        let deadline = self.deadline;
        tokio::time::timeout(deadline, answer)
            .await
            .map_err(|_| format!("no answer within {deadline:?}"))?
    }

    /// Whether the proxy has closed this connection (between two requests).
    pub fn is_closed(&self) -> bool {
        match self.sender.as_ref().expect("open") {
            Sender::H1(sender) => sender.is_closed(),
            Sender::H2(sender) => sender.is_closed(),
        }
    }

    /// Whether the proxy has closed this connection (or, for HTTP/2, sent GOAWAY), within 5 s.
    pub async fn closed_by_proxy(&mut self) -> bool {
        wait_until(ANSWER_DEADLINE, || {
            let closed = match self.sender.as_ref().expect("open") {
                Sender::H1(sender) => sender.is_closed(),
                Sender::H2(sender) => sender.is_closed() || !sender.is_ready(),
            };
            async move { closed }
        })
        .await
    }

    /// Resolves when the connection has ended (hyper's connection task finished), while this
    /// side still holds it open.
    pub async fn ended(&mut self) {
        let _ = (&mut self.driver).await;
    }

    /// Closes the connection from this side as a client does when done (hyper ends it once
    /// its sender is gone) and waits until it has ended.
    pub async fn close(mut self) {
        self.sender = None;
        self.ended().await;
    }

    /// Whether the connection has ended within `timeout` (see [`Conn::ended`]).
    pub async fn ended_within(&mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.ended()).await.is_ok()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A plain TCP connection to `at`, `TCP_NODELAY` as the proxy's own sockets.
async fn tcp(at: SocketAddr) -> Result<TcpStream, String> {
    let tcp = TcpStream::connect(at)
        .await
        .map_err(|e| format!("connect {at}: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    Ok(tcp)
}

// === pooled client ===

/// Upper bound on one request of the pooled client.
const POOL_DEADLINE: Duration = Duration::from_secs(15);

/// A pooled keep-alive HTTP/1.1 client (hyper), for tests that need many requests.
pub type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Empty<bytes::Bytes>,
>;

/// A new [`HttpClient`].
pub fn http_client() -> HttpClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// `GET http://AT/PATH` with `Host: host`: the status and the `x-backend` header, or the error
/// as text.
pub async fn get_backend(
    client: &HttpClient,
    at: SocketAddr,
    host: &str,
    path: &str,
) -> Result<(u16, String), String> {
    let request = http::Request::get(format!("http://{at}{path}"))
        .header(http::header::HOST, host)
        .body(http_body_util::Empty::new())
        .expect("request");
    let response = tokio::time::timeout(POOL_DEADLINE, client.request(request))
        .await
        .map_err(|_| format!("GET {path}: no answer within {POOL_DEADLINE:?}"))?
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = response.status().as_u16();
    let backend = response
        .headers()
        .get("x-backend")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("GET {path}: body: {e}"))?;
    Ok((status, backend))
}

// === upgraded connections ===

/// Sends a websocket upgrade, `GET path` for `host`, over `stream` (plain or TLS) and reads the
/// `101` head (within 5 s): the stream is then a byte tunnel to the backend. The head comes
/// back as an [`Answer`] (no body).
pub async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    host: &str,
    path: &str,
) -> Answer {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write upgrade");
    let mut head = Vec::new();
    let read_head = async {
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.expect("read 101 head"));
            assert!(head.len() < 4096, "head too long");
        }
    };
    tokio::time::timeout(ANSWER_DEADLINE, read_head)
        .await
        .expect("101 in time");
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut headers = HeaderMap::new();
    for (name, value) in head.lines().skip(1).filter_map(|l| l.split_once(':')) {
        let name = http::HeaderName::from_bytes(name.trim().as_bytes()).expect("header name");
        let value = http::HeaderValue::from_str(value.trim()).expect("header value");
        headers.append(name, value);
    }
    Answer {
        status: StatusCode::SWITCHING_PROTOCOLS,
        headers,
        body: Bytes::new(),
    }
}

/// Writes `bytes` on an upgraded connection to an echo backend and reads them back (within
/// 5 s).
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) {
    stream
        .write_all(bytes)
        .await
        .expect("write on the upgraded connection");
    stream.flush().await.expect("flush");
    let mut back = vec![0u8; bytes.len()];
    tokio::time::timeout(ANSWER_DEADLINE, stream.read_exact(&mut back))
        .await
        .expect("echo in time")
        .expect("read the echo");
    assert_eq!(back, bytes);
}

// === TLS clients ===

/// TLS-connects to `addr` with `config`, sending SNI `name` (when the config enables SNI).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(name.to_string()).expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// A client config that accepts any certificate (to look at the fallback, which no CA signed).
pub fn insecure_client_config(alpn: &[&[u8]], sni: bool) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = sni;
    Arc::new(config)
}

/// The leaf certificate the server presented.
pub fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("peer certificate")
        .clone()
        .into_owned()
}

/// The first flight a rustls client with `config` sends to `name`: a real ClientHello.
pub fn client_hello_bytes(config: Arc<rustls::ClientConfig>, name: &str) -> Vec<u8> {
    let name = ServerName::try_from(name.to_string()).expect("server name");
    let mut conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}

/// Accepts any server certificate, still checking handshake signatures.
#[derive(Debug)]
struct AcceptAnything;

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
