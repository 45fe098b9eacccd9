//! Drives `proxy::http_front::serve_connection` directly (the accept loops are built
//! elsewhere): a listener on 127.0.0.1:0, plain or TLS-terminating, plus builders for routing
//! tables and small HTTP clients.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use portcullis::health::Health;
use portcullis::proxy::{ConnInfo, ProxyContext, TlsInfo};
use portcullis::table::certificates::{Certificate, CertificateInfo};
use portcullis::table::diagnostic::ObjectRef;
use portcullis::table::host::HostMatch;
use portcullis::table::route::{PathMatch, Route, TlsMode};
use portcullis::table::upstream::{
    HealthCheck, HealthProbe, LoadBalance, ServicePortRef, ServiceRef, Upstream, UpstreamProtocol,
};
use portcullis::table::{CertificateChoice, ClassSettings, RouteTable, TableHandle, VirtualHost};
use portcullis::telemetry::metrics::Metrics;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::pki::{Ca, Leaf, provider};

/// A running proxy front: every accepted connection goes to `serve_connection`.
pub struct Front {
    pub addr: SocketAddr,
    pub ctx: Arc<ProxyContext>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Front {
    /// Asks every connection to finish its request and close.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// A context with fresh health, metrics and pools.
pub fn context(https_port: u16) -> (Arc<ProxyContext>, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    let leaf = Ca::new("fallback ca").leaf(&["fallback.invalid"]);
    let ctx = ProxyContext::new(
        Health::new(),
        Arc::new(Metrics::new()),
        certificate(&leaf),
        https_port,
        rx,
    );
    (Arc::new(ctx), tx)
}

/// A `Certificate` from a test leaf.
pub fn certificate(leaf: &Leaf) -> Certificate {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf.key_der.clone().into());
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .expect("load key");
    Certificate {
        key: Arc::new(rustls::sign::CertifiedKey::new(
            vec![leaf.cert_der.clone()],
            signing,
        )),
        info: CertificateInfo {
            subject: "test".into(),
            dns_names: vec![],
            not_after: String::new(),
            source: "test".into(),
        },
    }
}

/// Serves plain HTTP (as on :80) with `table`; redirects name `https_port`.
pub async fn plain(table: RouteTable, https_port: u16) -> Front {
    plain_handle(Arc::new(ArcSwap::from_pointee(table)), https_port).await
}

/// Like [`plain`], serving from `handle` as the real accept loop does (connection settings from
/// the table current at accept, every request routed on the live one), so tests can swap
/// tables.
pub async fn plain_handle(handle: TableHandle, https_port: u16) -> Front {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ctx, shutdown) = context(https_port);
    let c = ctx.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, client)) = listener.accept().await {
            let conn = ConnInfo {
                client,
                local: stream.local_addr().expect("local"),
                tls: None,
            };
            conns.spawn(portcullis::proxy::http_front::serve_connection(
                stream,
                conn,
                handle.load_full(),
                handle.clone(),
                c.clone(),
            ));
        }
    });
    Front {
        addr,
        ctx,
        shutdown,
        task,
    }
}

/// Serves plain HTTP for one host routed to `endpoints` (plain HTTP upstream, default class
/// settings): the front most data-plane tests need.
pub async fn plain_one(host: &str, endpoints: &[SocketAddr]) -> Front {
    let up = upstream(endpoints, UpstreamProtocol::Http);
    plain(table(vec![vhost(host, up)], ClassSettings::default()), 443).await
}

/// Terminates TLS with `leaf` (offering `alpn`), then serves HTTP with `table`.
pub async fn tls(table: RouteTable, leaf: &Leaf, alpn: &[&[u8]]) -> Front {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ctx, shutdown) = context(addr.port());
    let acceptor = tokio_rustls::TlsAcceptor::from(leaf.server_config(alpn));
    let handle: TableHandle = Arc::new(ArcSwap::from_pointee(table));
    let c = ctx.clone();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((stream, client)) = listener.accept().await {
            let (acceptor, handle, c) = (acceptor.clone(), handle.clone(), c.clone());
            conns.spawn(async move {
                let local = stream.local_addr().expect("local");
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let (_, session) = tls.get_ref();
                let info = TlsInfo {
                    sni: session.server_name().map(str::to_string),
                    alpn: session.alpn_protocol().map(<[u8]>::to_vec),
                    // The leaf is the test's own, not the table's: no terms to compare.
                    certificate: None,
                };
                let conn = ConnInfo {
                    client,
                    local,
                    tls: Some(info),
                };
                let table = handle.load_full();
                portcullis::proxy::http_front::serve_connection(tls, conn, table, handle, c).await;
            });
        }
    });
    Front {
        addr,
        ctx,
        shutdown,
        task,
    }
}

// === tables ===

/// An upstream with these endpoints.
pub fn upstream(endpoints: &[SocketAddr], protocol: UpstreamProtocol) -> Arc<Upstream> {
    Arc::new(Upstream {
        service: ServiceRef {
            namespace: "default".into(),
            name: "svc".into(),
            port: ServicePortRef::Number(80),
        },
        endpoints: endpoints.to_vec(),
        terminating: Vec::new(),
        protocol,
        balance: LoadBalance::RoundRobin,
        health: HealthCheck {
            probe: HealthProbe::None,
            interval: Duration::from_secs(5),
        },
        proxy_protocol: None,
        cursor: Default::default(),
    })
}

/// A terminate-mode host with a `/` prefix route to `upstream` (no redirect, no HSTS,
/// forwarded headers on).
pub fn vhost(host: &str, upstream: Arc<Upstream>) -> VirtualHost {
    VirtualHost {
        host: HostMatch::parse(host).expect("host"),
        tls_mode: TlsMode::Terminate,
        certificate: CertificateChoice::Default,
        ssl_redirect: false,
        hsts: None,
        forwarded_headers: true,
        routes: vec![Route {
            path: PathMatch::prefix("/"),
            upstream,
            source: ObjectRef::namespaced("Ingress", "default", "test"),
        }],
        default_backend: None,
        passthrough: None,
        owner: ObjectRef::namespaced("Ingress", "default", "test"),
    }
}

/// A table of these hosts with class settings `class`.
pub fn table(vhosts: Vec<VirtualHost>, class: ClassSettings) -> RouteTable {
    RouteTable::new(vhosts, None, Vec::new(), class)
}

// === clients ===

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
}

/// Sends one HTTP/1.1 request on a new plain connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    send_on(&mut send, host, path, headers).await
}

/// Sends one HTTP/1.1 request on an existing connection.
pub async fn send_on(
    send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = Request::get(path).header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = send
        .send_request(req.body(Empty::new()).expect("request"))
        .await
        .expect("response");
    collect(resp).await
}

/// Reads a whole response.
pub async fn collect(resp: hyper::Response<hyper::body::Incoming>) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

/// Opens a TLS connection to the front, verifying against `ca` for `host`, offering `alpn`.
pub async fn tls_connect(
    addr: SocketAddr,
    ca: &Ca,
    host: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(alpn));
    let tcp = TcpStream::connect(addr).await.expect("connect");
    connector
        .connect(
            rustls::pki_types::ServerName::try_from(host.to_string()).expect("name"),
            tcp,
        )
        .await
        .expect("tls handshake")
}

/// Writes raw bytes and reads until the server closes (bounded by 10 s).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}
