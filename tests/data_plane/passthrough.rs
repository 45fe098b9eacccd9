//! SNI pass-through on :443: the client talks TLS with the pod itself, through the proxy.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use crate::support::backends::{self, Backend, ProxyHeader, TlsOptions};
use crate::support::fixture::{Tables, tcp_upstream};
use crate::support::http::{Conn, client_hello_bytes, peer_leaf, tls_connect};
use crate::support::in_process::Proxy;
use crate::support::pki::{Ca, Leaf};
use crate::support::wait::wait_until;
use hyper_util::rt::TokioIo;
use portcullis::table::ClassSettings;
use portcullis::table::upstream::ProxyProtocol;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const HOST: &str = "pod.example.com";
const LONG: Duration = Duration::from_secs(10);

struct Setup {
    ca: Ca,
    leaf: Leaf,
    backend: Backend,
    proxy: Proxy,
}

/// A TLS backend for HOST behind a pass-through vhost.
async fn setup(proxy_protocol: Option<ProxyProtocol>) -> Setup {
    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&[HOST]);
    let options = TlsOptions {
        expect_proxy_protocol: proxy_protocol.is_some(),
    };
    let backend = backends::tls("pod", &leaf, options).await;
    let upstream = tcp_upstream(&[backend.addr], proxy_protocol);
    let proxy = Proxy::start(Tables::new().passthrough(HOST, upstream).build()).await;
    Setup {
        ca,
        leaf,
        backend,
        proxy,
    }
}

/// Sends GET `path` on a new HTTP/1.1 connection over `io`; returns the body.
async fn get<IO>(io: IO, path: &str) -> String
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    body_of(&mut Conn::h1(TokioIo::new(io)).await, path).await
}

/// Sends GET `path` on `conn`; returns the body.
async fn body_of(conn: &mut Conn, path: &str) -> String {
    conn.get(HOST, path).await.expect("response").text()
}

#[tokio::test]
async fn client_sees_the_backend_certificate_and_answer() {
    let s = setup(None).await;
    let tls = tls_connect(s.proxy.https, s.ca.client_config(&[b"http/1.1"]), HOST)
        .await
        .expect("handshake through the proxy");
    assert_eq!(peer_leaf(&tls), s.leaf.cert_der);
    let body = get(tls, "/hello").await;
    assert_eq!(body, format!("backend=pod path=/hello sni={HOST}"));
    assert_eq!(s.backend.requests()[0].sni.as_deref(), Some(HOST));
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_carry_the_client_address() {
    for (version, number) in [(ProxyProtocol::V1, 1), (ProxyProtocol::V2, 2)] {
        let s = setup(Some(version)).await;
        let tls = tls_connect(s.proxy.https, s.ca.client_config(&[b"http/1.1"]), HOST)
            .await
            .expect("handshake");
        let client_addr = tls.get_ref().0.local_addr().expect("local addr");
        let body = get(tls, "/pp").await;
        assert!(body.starts_with("backend=pod"), "{body}");
        let seen = s.backend.requests();
        assert_eq!(
            seen[0].proxy,
            Some(ProxyHeader {
                version: number,
                source: client_addr,
                destination: s.proxy.https,
            })
        );
    }
}

#[tokio::test]
async fn trusted_incoming_proxy_header_becomes_the_client_address() {
    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&[HOST]);
    let backend = backends::tls(
        "pod",
        &leaf,
        TlsOptions {
            expect_proxy_protocol: true,
        },
    )
    .await;
    let class = ClassSettings {
        trusted_proxy_protocol: vec!["127.0.0.0/8".parse().unwrap()],
        ..ClassSettings::default()
    };
    let upstream = tcp_upstream(&[backend.addr], Some(ProxyProtocol::V2));
    let proxy = Proxy::start(
        Tables::new()
            .passthrough(HOST, upstream)
            .class(class)
            .build(),
    )
    .await;

    // A load balancer in front of us says the client is 203.0.113.9:40000.
    let mut tcp = TcpStream::connect(proxy.https).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.9 192.0.2.1 40000 443\r\n")
        .await
        .unwrap();
    let name = ServerName::try_from(HOST).unwrap();
    let tls = tokio_rustls::TlsConnector::from(ca.client_config(&[b"http/1.1"]))
        .connect(name, tcp)
        .await
        .expect("handshake after the PROXY header");
    let body = get(tls, "/lb").await;
    assert!(body.starts_with("backend=pod"), "{body}");
    let seen = backend.requests()[0].proxy.clone().expect("header");
    assert_eq!(
        seen.source,
        "203.0.113.9:40000".parse::<SocketAddr>().unwrap()
    );

    // A trusted source that sends no header is closed.
    let err = tls_connect(proxy.https, ca.client_config(&[b"http/1.1"]), HOST).await;
    assert!(
        err.is_err(),
        "no PROXY header from a trusted source must be refused"
    );
    assert_eq!(backend.count(), 1);
}

/// Writes the first writes in the given sizes, pausing after each so they leave as separate
/// TCP segments and arrive in separate reads.
struct Segmented {
    inner: TcpStream,
    cuts: VecDeque<usize>,
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Segmented {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Segmented {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(pause) = self.pause.as_mut() {
            ready!(pause.as_mut().poll(cx));
            self.pause = None;
        }
        let limit = self
            .cuts
            .front()
            .copied()
            .unwrap_or(buf.len())
            .min(buf.len());
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..limit]))?;
        if let Some(cut) = self.cuts.front_mut() {
            *cut -= written;
            if *cut == 0 {
                self.cuts.pop_front();
                self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(30))));
            }
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn hello_in_three_tcp_segments_still_routes() {
    let s = setup(None).await;
    let tcp = TcpStream::connect(s.proxy.https).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let io = Segmented {
        inner: tcp,
        cuts: VecDeque::from([3, 200]),
        pause: None,
    };
    let name = ServerName::try_from(HOST).unwrap();
    let tls = tokio_rustls::TlsConnector::from(s.ca.client_config(&[b"http/1.1"]))
        .connect(name, io)
        .await
        .expect("handshake with a segmented hello");
    let body = get(tls, "/segments").await;
    assert_eq!(body, format!("backend=pod path=/segments sni={HOST}"));
}

#[tokio::test]
async fn hello_in_several_tls_records_still_routes() {
    let s = setup(None).await;
    let mut config = (*s.ca.client_config(&[b"http/1.1"])).clone();
    config.max_fragment_size = Some(100);
    let config = Arc::new(config);
    let hello = client_hello_bytes(config.clone(), HOST);
    assert_eq!(hello[0], 0x16);
    assert!(
        u16::from_be_bytes([hello[3], hello[4]]) < 100,
        "rustls fragmented its hello"
    );
    let tls = tls_connect(s.proxy.https, config, HOST)
        .await
        .expect("handshake with a fragmented hello");
    let body = get(tls, "/records").await;
    assert_eq!(body, format!("backend=pod path=/records sni={HOST}"));
}

#[tokio::test]
async fn open_stream_survives_table_swaps() {
    let s = setup(None).await;
    let tls = tls_connect(s.proxy.https, s.ca.client_config(&[b"http/1.1"]), HOST)
        .await
        .unwrap();
    let mut conn = Conn::h1(TokioIo::new(tls)).await;
    assert!(
        body_of(&mut conn, "/before")
            .await
            .starts_with("backend=pod")
    );
    for i in 0..50 {
        // Half the new tables no longer have the host at all.
        let table = if i % 2 == 0 {
            Tables::new()
        } else {
            Tables::new().passthrough(HOST, tcp_upstream(&[s.backend.addr], None))
        };
        s.proxy.swap(table.build());
        assert!(
            body_of(&mut conn, &format!("/during/{i}"))
                .await
                .starts_with("backend=pod")
        );
    }
    assert_eq!(s.backend.count(), 51);
}

#[tokio::test]
async fn half_close_keeps_the_other_direction() {
    // A raw backend: reads until the client's end of stream, then answers 1 MiB and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = listener.local_addr().unwrap();
    let (seen_tx, seen_rx) = oneshot::channel::<Vec<u8>>();
    let reply: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let expected = reply.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        let _ = seen_tx.send(got);
        stream.write_all(&reply).await.unwrap();
        stream.shutdown().await.unwrap();
    });
    let upstream = tcp_upstream(&[backend_addr], None);
    let proxy = Proxy::start(
        Tables::new()
            .passthrough("raw.example.com", upstream)
            .build(),
    )
    .await;

    let ca = Ca::new("unused");
    let mut sent = client_hello_bytes(ca.client_config(&[]), "raw.example.com");
    sent.extend_from_slice(b"after the hello");
    let mut client = TcpStream::connect(proxy.https).await.unwrap();
    client.write_all(&sent).await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(LONG, client.read_to_end(&mut answer))
        .await
        .expect("reply in time")
        .expect("read");
    assert_eq!(seen_rx.await.unwrap(), sent);
    assert_eq!(answer.len(), expected.len());
    assert!(answer == expected);
}

#[tokio::test]
async fn unreachable_endpoint_is_retried_on_the_next() {
    let ca = Ca::new("test ca");
    let leaf = ca.leaf(&[HOST]);
    let backend = backends::tls("pod", &leaf, TlsOptions::default()).await;
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let upstream = tcp_upstream(&[dead, backend.addr], None);
    let proxy = Proxy::start(Tables::new().passthrough(HOST, upstream).build()).await;
    let tls = tls_connect(proxy.https, ca.client_config(&[b"http/1.1"]), HOST)
        .await
        .expect("handshake via the second endpoint");
    assert!(get(tls, "/retry").await.starts_with("backend=pod"));
}

#[tokio::test]
async fn garbage_is_closed_and_nothing_else_is_affected() {
    let s = setup(None).await;
    let mut junk = TcpStream::connect(s.proxy.https).await.unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\nHost: pod.example.com\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(LONG, junk.read(&mut buf))
        .await
        .expect("closed promptly");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    let tls = tls_connect(s.proxy.https, s.ca.client_config(&[b"http/1.1"]), HOST)
        .await
        .expect("the next client is fine");
    assert!(get(tls, "/after").await.starts_with("backend=pod"));
}

#[tokio::test]
async fn shutdown_waits_for_open_streams() {
    let s = setup(None).await;
    let tls = tls_connect(s.proxy.https, s.ca.client_config(&[b"http/1.1"]), HOST)
        .await
        .unwrap();
    let mut conn = Conn::h1(TokioIo::new(tls)).await;
    assert!(body_of(&mut conn, "/open").await.starts_with("backend=pod"));

    s.proxy.begin_shutdown();
    let https = s.proxy.https;
    assert!(
        wait_until(
            LONG,
            || async move { TcpStream::connect(https).await.is_err() }
        )
        .await,
        "stops accepting"
    );
    assert!(
        !s.proxy.task.is_finished(),
        "an open stream keeps serve() waiting"
    );
    // The open stream still works during the drain.
    assert!(
        body_of(&mut conn, "/draining")
            .await
            .starts_with("backend=pod")
    );
    conn.close().await;
    let task = &s.proxy.task;
    assert!(
        wait_until(LONG, || async { task.is_finished() }).await,
        "serve() returns once the last connection ended"
    );
}
