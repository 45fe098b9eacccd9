//! Real backends for data-plane tests: an HTTP echo server and a TLS server, each reporting
//! what it saw (headers, SNI, PROXY protocol header) so tests can assert on it.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

use super::http::Conn;
use super::pki::Leaf;

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    /// Path and query as received.
    pub uri: String,
    /// Header names lower-cased; repeated headers joined with ", ".
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    /// SNI of the TLS connection the request came on (TLS backends only).
    pub sni: Option<String>,
    /// PROXY protocol header parsed before TLS, if the backend expects one.
    pub proxy: Option<ProxyHeader>,
}

/// A parsed PROXY protocol header (v1 or v2), source and destination addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHeader {
    pub version: u8,
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

/// A running backend. Dropping it stops accepting (open connections are aborted too, each at
/// its task's next poll); [`Backend::stop`] also waits until they have ended.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
    /// TCP connections accepted so far (to prove upstream connection reuse).
    pub accepted: Arc<AtomicUsize>,
    /// Tells the accept loop to close its listener and end every connection.
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Requests seen so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// Requests seen so far from clients through the proxy: health probes left out (they come
    /// whenever the checker runs).
    pub fn proxied(&self) -> Vec<SeenRequest> {
        self.requests()
            .into_iter()
            .filter(|s| {
                s.headers.get("user-agent").map(String::as_str) != Some("portcullis-health-check")
            })
            .collect()
    }

    /// Number of requests seen so far.
    pub fn count(&self) -> usize {
        self.seen.lock().expect("seen lock").len()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Stops the backend: the listener closes (new connections are refused) and every open
    /// connection is closed. Returns once none of them can answer again: an abort alone takes
    /// effect at a task's next poll, so a keep-alive connection busy on another worker thread
    /// could still answer one more request after a plain drop.
    pub async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Starts a backend's accept loop on `listener`: every accepted connection is counted and
/// served by `serve` on a task of its own, until [`Backend::stop`] or drop.
fn start<F, Fut>(
    name: &str,
    listener: TcpListener,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    mut serve: F,
) -> Backend
where
    F: FnMut(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().expect("local addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let (shutdown, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                next = listener.accept() => {
                    let Ok((stream, _)) = next else { break };
                    count.fetch_add(1, Ordering::SeqCst);
                    conns.spawn(serve(stream));
                }
            }
        }
        drop(listener);
        // Aborts every connection task and waits for each to end.
        conns.shutdown().await;
    });
    Backend {
        name: name.to_string(),
        addr,
        seen,
        accepted,
        shutdown: Some(shutdown),
        task,
    }
}

/// Options of a TLS backend.
#[derive(Clone, Copy, Default)]
pub struct TlsOptions {
    /// Expect a PROXY protocol header (v1 or v2) before the ClientHello.
    pub expect_proxy_protocol: bool,
}

/// Starts a plain HTTP/1.1 echo backend on 127.0.0.1:0. It answers every request with 200
/// (`NNN` for a path `/status/NNN`), header `x-backend: NAME`, and a body
/// `backend=NAME path=URI`.
pub async fn http(name: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    http_on(name, listener)
}

/// Like [`http`], on a listener the caller bound (e.g. to restart on the same port).
pub fn http_on(name: &str, listener: TcpListener) -> Backend {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (n, s) = (name.to_string(), seen.clone());
    start(name, listener, seen, move |stream| {
        serve_http(stream, n.clone(), s.clone(), None, None)
    })
}

/// Starts a TLS backend on 127.0.0.1:0 presenting `leaf`, serving the same HTTP echo inside
/// TLS (ALPN http/1.1) and recording the SNI and any PROXY header.
pub async fn tls(name: &str, leaf: &Leaf, options: TlsOptions) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let acceptor = tokio_rustls::TlsAcceptor::from(leaf.server_config(&[b"http/1.1"]));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (n, s) = (name.to_string(), seen.clone());
    start(name, listener, seen, move |mut stream| {
        let (n, s, acceptor) = (n.clone(), s.clone(), acceptor.clone());
        async move {
            let proxy = if options.expect_proxy_protocol {
                match read_proxy_header(&mut stream).await {
                    Some(h) => Some(h),
                    None => return,
                }
            } else {
                None
            };
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let sni = tls.get_ref().1.server_name().map(str::to_string);
            serve_http(tls, n, s, sni, proxy).await;
        }
    })
}

async fn serve_http<IO>(
    io: IO,
    name: String,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    sni: Option<String>,
    proxy: Option<ProxyHeader>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let (name, seen, sni, proxy) = (name.clone(), seen.clone(), sni.clone(), proxy.clone());
        async move {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let mut headers: BTreeMap<String, String> = BTreeMap::new();
            for (k, v) in req.headers() {
                let v = String::from_utf8_lossy(v.as_bytes()).to_string();
                headers
                    .entry(k.as_str().to_string())
                    .and_modify(|e| *e = format!("{e}, {v}"))
                    .or_insert(v);
            }
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            seen.lock().expect("seen lock").push(SeenRequest {
                method,
                uri: uri.clone(),
                headers,
                body,
                sni: sni.clone(),
                proxy,
            });
            let text = match requested_bytes(&uri) {
                Some(len) => bulk_body(len),
                None => format!("backend={name} path={uri} sni={}", sni.unwrap_or_default()),
            };
            let resp = Response::builder()
                .status(chosen_status(&uri))
                .header("x-backend", name)
                .header("content-type", "text/plain")
                .body(Full::new(Bytes::from(text)))
                .expect("response");
            Ok::<_, Infallible>(resp)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// `N` for a path `/bytes/N`: the echo backend then answers [`bulk_body`]`(N)` (up to 64 MiB),
/// so a test can move a large body through the proxy.
fn requested_bytes(uri: &str) -> Option<usize> {
    uri.strip_prefix("/bytes/")
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|&n| n <= 64 << 20)
}

/// `len` printable bytes that are not all the same, so a lost, repeated or reordered chunk
/// shows in a comparison.
pub fn bulk_body(len: usize) -> String {
    (0..len)
        .map(|i| char::from(b'a' + ((i / 7 + i / 4099) % 26) as u8))
        .collect()
}

/// The status an echo backend answers for `uri`: `NNN` for a path `/status/NNN[/...]` (a code
/// from 200 to 599), else 200. Lets a test make a pod answer an error on one path.
fn chosen_status(uri: &str) -> u16 {
    uri.strip_prefix("/status/")
        .and_then(|rest| rest.split(['/', '?']).next())
        .and_then(|code| code.parse::<u16>().ok())
        .filter(|code| (200..=599).contains(code))
        .unwrap_or(200)
}

/// One request/response on `conn`, an open connection to the [`tls`] backend `name` that
/// carries SNI `host` (a pass-through stream): asserts 200 and the echo of `path` and `host`.
pub async fn exchange(conn: &mut Conn, name: &str, host: &str, path: &str) {
    let answer = conn
        .get(host, path)
        .await
        .unwrap_or_else(|e| panic!("no answer on the stream to {name}: {e}"));
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.text(),
        format!("backend={name} path={path} sni={host}")
    );
}

/// Reads a PROXY protocol v1 or v2 header; `None` if it is missing or malformed.
async fn read_proxy_header(stream: &mut TcpStream) -> Option<ProxyHeader> {
    const V2_SIG: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
    let mut first = [0u8; 12];
    stream.read_exact(&mut first[..6]).await.ok()?;
    if &first[..6] == b"PROXY " {
        // v1: text line up to CRLF, at most 107 bytes.
        let mut line = b"PROXY ".to_vec();
        while !line.ends_with(b"\r\n") {
            if line.len() > 107 {
                return None;
            }
            line.push(stream.read_u8().await.ok()?);
        }
        let text = std::str::from_utf8(&line).ok()?.trim_end();
        let parts: Vec<&str> = text.split(' ').collect();
        if parts.len() != 6 {
            return None;
        }
        let src = format!("{}:{}", bracket(parts[2]), parts[4]).parse().ok()?;
        let dst = format!("{}:{}", bracket(parts[3]), parts[5]).parse().ok()?;
        return Some(ProxyHeader {
            version: 1,
            source: src,
            destination: dst,
        });
    }
    stream.read_exact(&mut first[6..]).await.ok()?;
    if first != V2_SIG {
        return None;
    }
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await.ok()?;
    if head[0] >> 4 != 2 {
        return None;
    }
    let len = u16::from_be_bytes([head[2], head[3]]) as usize;
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await.ok()?;
    match head[1] {
        0x11 if len >= 12 => {
            let ip = |b: &[u8]| std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            let src = SocketAddr::from((ip(&body[0..4]), u16::from_be_bytes([body[8], body[9]])));
            let dst = SocketAddr::from((ip(&body[4..8]), u16::from_be_bytes([body[10], body[11]])));
            Some(ProxyHeader {
                version: 2,
                source: src,
                destination: dst,
            })
        }
        0x21 if len >= 36 => {
            let ip =
                |b: &[u8]| std::net::Ipv6Addr::from(<[u8; 16]>::try_from(b).expect("16 bytes"));
            let src =
                SocketAddr::from((ip(&body[0..16]), u16::from_be_bytes([body[32], body[33]])));
            let dst =
                SocketAddr::from((ip(&body[16..32]), u16::from_be_bytes([body[34], body[35]])));
            Some(ProxyHeader {
                version: 2,
                source: src,
                destination: dst,
            })
        }
        _ => None,
    }
}

fn bracket(ip: &str) -> String {
    if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    }
}

/// Starts a websocket-ish backend on 127.0.0.1:0: it reads one request head, records it, answers
/// `101 Switching Protocols` (`Upgrade: websocket`), then echoes raw bytes until EOF. No
/// WebSocket framing: enough to prove the proxy joins both upgraded connections. With `tls`,
/// it first terminates TLS with that leaf (for re-encrypt) and records the SNI.
pub async fn upgrade_echo(name: &str, tls: Option<&Leaf>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let acceptor =
        tls.map(|leaf| tokio_rustls::TlsAcceptor::from(leaf.server_config(&[b"http/1.1"])));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    start(name, listener, seen, move |stream| {
        let (s, acceptor) = (s.clone(), acceptor.clone());
        async move {
            match acceptor {
                None => serve_upgrade_echo(stream, s, None).await,
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let sni = tls.get_ref().1.server_name().map(str::to_string);
                    serve_upgrade_echo(tls, s, sni).await;
                }
            }
        }
    })
}

async fn serve_upgrade_echo<IO>(
    mut stream: IO,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    sni: Option<String>,
) where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read_u8().await {
            Ok(b) => head.push(b),
            Err(_) => return,
        }
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let uri = parts.next().unwrap_or_default().to_string();
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        if let Some((k, v)) = line.split_once(':') {
            let v = v.trim().to_string();
            headers
                .entry(k.trim().to_ascii_lowercase())
                .and_modify(|e| *e = format!("{e}, {v}"))
                .or_insert(v);
        }
    }
    seen.lock().expect("seen lock").push(SeenRequest {
        method,
        uri,
        headers,
        body: Vec::new(),
        sni,
        proxy: None,
    });
    let answer =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    if stream.write_all(answer).await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Starts a backend on 127.0.0.1:0 that accepts connections and reads requests but never
/// answers (for upstream response timeouts). Counts accepted connections.
pub async fn silent(name: &str) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let seen = Arc::new(Mutex::new(Vec::new()));
    start(name, listener, seen, |mut stream| async move {
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
}

/// Starts a backend on 127.0.0.1:0 that answers the first request of every connection (200,
/// `x-backend: NAME`, keep-alive), then reads the next request on that connection and closes
/// it without answering: what a server does when its keep-alive idle timeout fires just as a
/// reused connection's request arrives. Records the requests it answered; counts connections.
pub async fn closes_reused(name: &str) -> Backend {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, n) = (seen.clone(), name.to_string());
    start(name, listener, seen, move |mut stream| {
        let (s, n) = (s.clone(), n.clone());
        async move {
            let Some(head) = read_head(&mut stream).await else {
                return;
            };
            record_head(&s, &head, BTreeMap::new());
            let answer =
                format!("HTTP/1.1 200 OK\r\nx-backend: {n}\r\ncontent-length: 2\r\n\r\nok");
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            // The next request on this connection: read it, then close without a word.
            let _ = read_head(&mut stream).await;
        }
    })
}

/// Reads one request head (up to the blank line); `None` at EOF.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(stream.read_u8().await.ok()?);
        if head.len() > 64 * 1024 {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Records a request read as a bare head: its method and target, and `headers`.
fn record_head(seen: &Mutex<Vec<SeenRequest>>, head: &str, headers: BTreeMap<String, String>) {
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let uri = parts.next().unwrap_or_default().to_string();
    seen.lock().expect("seen lock").push(SeenRequest {
        method,
        uri,
        headers,
        body: Vec::new(),
        sni: None,
        proxy: None,
    });
}

/// Starts a backend on 127.0.0.1:0 that reads each request head, waits `delay`, then answers
/// `200` with `x-backend: NAME` and body `slow NAME` (for upstream read timeouts). Records the
/// requests it read (method, URI, headers); one request per connection.
pub async fn delayed(name: &str, delay: std::time::Duration) -> Backend {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (s, n) = (seen.clone(), name.to_string());
    start(name, listener, seen, move |mut stream| {
        let (s, n) = (s.clone(), n.clone());
        async move {
            let Some(head) = read_head(&mut stream).await else {
                return;
            };
            let headers = head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            record_head(&s, &head, headers);
            tokio::time::sleep(delay).await;
            let body = format!("slow {n}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\nx-backend: {n}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        }
    })
}

/// Starts a backend on 127.0.0.1:0 that reads each request head and then stops reading: with
/// `partial_answer`, it first sends a `200` head announcing 10 body bytes and only 5 of them
/// (for response body read timeouts); without, it sends nothing (for request body send
/// timeouts: a large body fills the connection's buffers). Connections stay open until the
/// backend is dropped. Counts accepted connections.
pub async fn stalling(name: &str, partial_answer: bool) -> Backend {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let seen = Arc::new(Mutex::new(Vec::new()));
    start(name, listener, seen, move |mut stream| async move {
        if read_head(&mut stream).await.is_none() {
            return;
        }
        if partial_answer {
            let head = "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
        }
        // Hold the connection, reading nothing more.
        std::future::pending::<()>().await;
        drop(stream);
    })
}
