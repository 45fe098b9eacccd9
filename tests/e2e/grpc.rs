//! End to end, the built binary: gRPC through Portcullis with a real gRPC client and server
//! (tonic's codec and call machinery over hyper's HTTP/2; messages derived by hand, no protoc).
//!
//! ingress-nginx's `backend-protocol` annotation "indicate[s] how NGINX should communicate
//! with the backend service" (docs/user-guide/nginx-configuration/annotations.md
//! #backend-protocol: `HTTP`, `HTTPS`, `GRPC`, `GRPCS`, `AJP`, `FCGI`); its gRPC example
//! (docs/examples/grpc) terminates TLS at the controller, and `GRPC` sends plain gRPC (HTTP/2
//! without TLS) to the pod, `GRPCS` gRPC over TLS. A call the proxy cannot deliver is answered
//! with a gRPC status: gRPC's "HTTP to gRPC Status Code Mapping" (grpc/grpc
//! doc/http-grpc-status-mapping.md) maps 502, 503 and 504 to `UNAVAILABLE`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::uri::PathAndQuery;
use hyper::body::Incoming;
use hyper::client::conn::http2 as client_h2;
use hyper::server::conn::http2 as server_h2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tonic::codec::Streaming;
use tonic::server::{ServerStreamingService, UnaryService};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

use crate::support::binary::{Binary, check};
use crate::support::manifests::{self, ca_secret, ingress, ingress_class, service};
use crate::support::pki::{Ca, Leaf};

const GRPC_HOST: &str = "grpc.e2e.test";
const GRPCS_HOST: &str = "grpcs.e2e.test";
const DOWN_HOST: &str = "down.e2e.test";

const SAY: &str = "/e2e.Echo/Say";
const COUNT: &str = "/e2e.Echo/Count";

// === messages ===

/// `message Ask { string text = 1; uint32 times = 2; }`
#[derive(Clone, PartialEq, prost::Message)]
struct Ask {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(uint32, tag = "2")]
    times: u32,
}

/// `message Reply { string text = 1; }`
#[derive(Clone, PartialEq, prost::Message)]
struct Reply {
    #[prost(string, tag = "1")]
    text: String,
}

// === the pod: a gRPC server on HTTP/2 only ===

/// What the pod saw of one call.
#[derive(Debug, Clone)]
struct Seen {
    /// Which of the pod's connections carried it (numbered in accept order).
    conn: usize,
    path: String,
    authority: Option<String>,
    te: Option<String>,
    content_type: Option<String>,
    forwarded_proto: Option<String>,
}

/// A gRPC server `name`: `Say` answers `name: text`, or `NOT_FOUND` for the text `missing`;
/// `Count` streams `times` replies (at most three, then `OUT_OF_RANGE`). HTTP/2 only
/// (cleartext with prior knowledge, or TLS with ALPN `h2` when `tls` is given), as gRPC
/// servers are.
struct Pod {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Pod {
    async fn start(name: &'static str, tls: Option<&Leaf>) -> Pod {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let acceptor =
            tls.map(|leaf| tokio_rustls::TlsAcceptor::from(leaf.server_config(&[b"h2"])));
        let record = seen.clone();
        tokio::spawn(async move {
            for conn in 0.. {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let record = record.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| serve(name, conn, record.clone(), req));
                    let builder = server_h2::Builder::new(TokioExecutor::new());
                    // Health probes (a TCP connect, a TLS handshake) end without a request.
                    let _ = match acceptor {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(tls) => builder.serve_connection(TokioIo::new(tls), service).await,
                            Err(_) => return,
                        },
                        None => builder.serve_connection(TokioIo::new(tcp), service).await,
                    };
                });
            }
        });
        Pod { addr, seen }
    }

    fn calls(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

async fn serve(
    name: &'static str,
    conn: usize,
    seen: Arc<Mutex<Vec<Seen>>>,
    req: http::Request<Incoming>,
) -> Result<http::Response<tonic::body::Body>, Infallible> {
    let header = |n: &str| {
        req.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    seen.lock().unwrap().push(Seen {
        conn,
        path: req.uri().path().to_string(),
        authority: req.uri().authority().map(|a| a.to_string()),
        te: header("te"),
        content_type: header("content-type"),
        forwarded_proto: header("x-forwarded-proto"),
    });
    let codec = ProstCodec::<Reply, Ask>::default();
    let mut grpc = tonic::server::Grpc::new(codec);
    let response = match req.uri().path() {
        SAY => grpc.unary(Say(name), req).await,
        COUNT => grpc.server_streaming(Count(name), req).await,
        _ => Status::unimplemented("no such method").into_http(),
    };
    Ok(response)
}

struct Say(&'static str);

impl UnaryService<Ask> for Say {
    type Response = Reply;
    type Future = std::future::Ready<Result<tonic::Response<Reply>, Status>>;

    fn call(&mut self, request: tonic::Request<Ask>) -> Self::Future {
        let ask = request.into_inner();
        std::future::ready(if ask.text == "missing" {
            Err(Status::not_found("no greeting for missing"))
        } else {
            Ok(tonic::Response::new(Reply {
                text: format!("{}: {}", self.0, ask.text),
            }))
        })
    }
}

struct Count(&'static str);

type CountStream = futures_util::stream::Iter<std::vec::IntoIter<Result<Reply, Status>>>;

impl ServerStreamingService<Ask> for Count {
    type Response = Reply;
    type ResponseStream = CountStream;
    type Future = std::future::Ready<Result<tonic::Response<CountStream>, Status>>;

    fn call(&mut self, request: tonic::Request<Ask>) -> Self::Future {
        let ask = request.into_inner();
        // Past three, the stream ends with OUT_OF_RANGE: a status that can only travel in the
        // trailers, after the messages.
        let mut replies: Vec<Result<Reply, Status>> = (1..=ask.times.min(3))
            .map(|i| {
                Ok(Reply {
                    text: format!("{} {i}", self.0),
                })
            })
            .collect();
        if ask.times > 3 {
            replies.push(Err(Status::out_of_range("only three")));
        }
        std::future::ready(Ok(tonic::Response::new(futures_util::stream::iter(
            replies,
        ))))
    }
}

// === the client: tonic over TLS (ALPN h2) to :443 ===

/// hyper's HTTP/2 connection as the tower service tonic's client calls.
#[derive(Clone)]
struct H2(client_h2::SendRequest<tonic::body::Body>);

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Incoming>, hyper::Error>> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> ResponseFuture {
        Box::pin(self.0.send_request(req))
    }
}

/// A gRPC client for `host` on the proxy's TLS port: TLS trusting `ca`, ALPN `h2`.
async fn client(proxy: SocketAddr, host: &'static str, ca: &Ca) -> tonic::client::Grpc<H2> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(ca.client_config(&[b"h2"]));
    let tls = connector
        .connect(ServerName::try_from(host).unwrap(), tcp)
        .await
        .expect("TLS to the proxy");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, connection) = client_h2::handshake(TokioExecutor::new(), TokioIo::new(tls))
        .await
        .expect("HTTP/2 to the proxy");
    tokio::spawn(connection);
    let origin: http::Uri = format!("https://{host}").parse().unwrap();
    tonic::client::Grpc::with_origin(H2(sender), origin)
}

/// A gRPC client for `host` on the proxy's plain port: HTTP/2 without TLS, "with prior
/// knowledge" (RFC 9113 §3.3), as gRPC clients with insecure credentials speak.
async fn client_h2c(proxy: SocketAddr, host: &'static str) -> tonic::client::Grpc<H2> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (sender, connection) = client_h2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2c to the proxy");
    tokio::spawn(connection);
    let origin: http::Uri = format!("http://{host}").parse().unwrap();
    tonic::client::Grpc::with_origin(H2(sender), origin)
}

async fn say(client: &mut tonic::client::Grpc<H2>, text: &str) -> Result<String, Status> {
    client
        .ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let request = tonic::Request::new(Ask {
        text: text.to_string(),
        times: 0,
    });
    let codec = ProstCodec::<Ask, Reply>::default();
    let response = client
        .unary(request, PathAndQuery::from_static(SAY), codec)
        .await?;
    Ok(response.into_inner().text)
}

async fn count(client: &mut tonic::client::Grpc<H2>, times: u32) -> Result<Vec<String>, Status> {
    client
        .ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let request = tonic::Request::new(Ask {
        text: String::new(),
        times,
    });
    let codec = ProstCodec::<Ask, Reply>::default();
    let mut stream: Streaming<Reply> = client
        .server_streaming(request, PathAndQuery::from_static(COUNT), codec)
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(reply) = stream.message().await? {
        out.push(reply.text);
    }
    Ok(out)
}

// === tests ===

/// One host of a test: `(name, host, pod port, annotations)`.
type HostSpec<'a> = (&'a str, &'a str, u16, &'a [(&'a str, &'a str)]);

/// Writes one Service + TLS Secret + Ingress per host.
fn write_hosts(m: &Path, front: &Ca, hosts: &[HostSpec<'_>]) {
    for (name, host, port, annotations) in hosts {
        let secret = format!("{name}-tls");
        manifests::write(
            m,
            &format!("{name}.yaml"),
            &[
                service(name, &[*port]),
                front.leaf(&[host]).secret_yaml(manifests::NS, &secret),
                ingress(name, host, name, annotations, Some(&secret)),
            ]
            .join("---\n"),
        );
    }
}

/// `GRPC`: TLS from the client ends at the proxy, plain HTTP/2 (prior knowledge) to a pod that
/// speaks nothing else. Unary and server-streaming calls work, a status the pod returns
/// (`NOT_FOUND` with its message; `OUT_OF_RANGE` in the trailers after streamed messages)
/// reaches the client intact, and the
/// pod sees the gRPC request as sent: the method path, `content-type: application/grpc`,
/// `te: trailers` (hop-by-hop, but required by gRPC and allowed in HTTP/2), the host as
/// `:authority`, and the forwarded headers. `GRPCS`: HTTP/2 over TLS (ALPN `h2`) to a pod whose
/// certificate the backend CA verifies. The default health checks suit servers that speak only
/// HTTP/2 (TCP connect, TLS handshake): the pods stay in rotation for every call.
#[tokio::test]
async fn grpc_and_grpcs_backends_carry_calls_statuses_and_streams() {
    let front = Ca::new("e2e grpc front ca");
    let backend_ca = Ca::new("e2e grpc backend ca");
    let plain = Pod::start("plain", None).await;
    let secure = Pod::start("secure", Some(&backend_ca.leaf(&[GRPCS_HOST]))).await;

    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &ingress_class());
    manifests::write(
        &m,
        "backend-ca.yaml",
        &ca_secret("backend-ca", &backend_ca.cert_pem),
    );
    write_hosts(
        &m,
        &front,
        &[
            (
                "plain",
                GRPC_HOST,
                plain.addr.port(),
                &[("nginx.ingress.kubernetes.io/backend-protocol", "GRPC")],
            ),
            (
                "secure",
                GRPCS_HOST,
                secure.addr.port(),
                &[
                    ("nginx.ingress.kubernetes.io/backend-protocol", "GRPCS"),
                    ("nginx.ingress.kubernetes.io/proxy-ssl-secret", "backend-ca"),
                ],
            ),
        ],
    );
    let proxy = Binary::start(&m).await;

    let mut c = client(proxy.https, GRPC_HOST, &front).await;
    assert_eq!(
        say(&mut c, "hello")
            .await
            .map_err(|s| format!("{s:?}\n{}", proxy.log_text())),
        Ok("plain: hello".to_string())
    );
    let status = say(&mut c, "missing").await.expect_err("NOT_FOUND");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(status.message(), "no greeting for missing");
    assert_eq!(
        count(&mut c, 3).await.expect("server streaming"),
        ["plain 1", "plain 2", "plain 3"]
    );
    let status = count(&mut c, 5)
        .await
        .expect_err("OUT_OF_RANGE in the trailers");
    assert_eq!(
        (status.code(), status.message()),
        (Code::OutOfRange, "only three"),
        "{status:?}"
    );
    // Many calls on one client connection: multiplexed on the proxy's shared HTTP/2
    // connection to the pod.
    let calls = (0..8).map(|i| {
        let mut c = c.clone();
        async move { say(&mut c, &format!("n{i}")).await }
    });
    for (i, r) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(r.expect("concurrent call"), format!("plain: n{i}"));
    }

    let seen = plain.calls(SAY);
    assert_eq!(seen.len(), 10, "{seen:?}");
    let first = &seen[0];
    assert_eq!(first.content_type.as_deref(), Some("application/grpc"));
    assert_eq!(first.te.as_deref(), Some("trailers"));
    assert_eq!(first.authority.as_deref(), Some(GRPC_HOST));
    assert_eq!(first.forwarded_proto.as_deref(), Some("https"));
    // One HTTP/2 connection from the proxy carried them all, the concurrent ones included.
    assert!(seen.iter().all(|s| s.conn == first.conn), "{seen:?}");

    let mut s = client(proxy.https, GRPCS_HOST, &front).await;
    assert_eq!(
        say(&mut s, "over tls")
            .await
            .map_err(|s| format!("{s:?}\n{}", proxy.log_text())),
        Ok("secure: over tls".to_string())
    );
    assert_eq!(
        count(&mut s, 2).await.expect("server streaming"),
        ["secure 1", "secure 2"]
    );
    assert_eq!(secure.calls(SAY).len(), 1);
    assert_eq!(secure.calls(SAY)[0].authority.as_deref(), Some(GRPCS_HOST));

    // The table says how the pods are reached and probed.
    let table = proxy.table().await.to_string();
    assert!(table.contains("\"h2c\""), "{table}");
    assert!(table.contains("\"h2\""), "{table}");
}

/// A gRPC call to a host whose pod is gone gets a gRPC status, not an HTTP error: HTTP 200,
/// `grpc-status: 14` (`UNAVAILABLE`, what gRPC's HTTP mapping gives 502/503/504) and a
/// `grpc-message`, whether the proxy found the endpoint down (503) or failed to connect (502).
#[tokio::test]
async fn a_call_to_a_pod_that_is_down_is_unavailable() {
    let front = Ca::new("e2e grpc down ca");
    let port = {
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        gone.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &ingress_class());
    write_hosts(
        &m,
        &front,
        &[(
            "down",
            DOWN_HOST,
            port,
            &[("portcullis.io/backend-protocol", "grpc")],
        )],
    );
    let proxy = Binary::start(&m).await;

    let mut c = client(proxy.https, DOWN_HOST, &front).await;
    for _ in 0..2 {
        let status = say(&mut c, "anyone?").await.expect_err("no pod");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        // Our grpc-message, not the client's own mapping of a bare HTTP status.
        assert!(
            ["503 service unavailable", "502 bad gateway"].contains(&status.message()),
            "{status:?}"
        );
    }
    // Still one healthy HTTP/2 connection: the answers were gRPC responses, not resets.
    assert_eq!(
        say(&mut c, "again").await.expect_err("no pod").code(),
        Code::Unavailable
    );
}

/// `AJP` and `FCGI` stay refused; our own key takes lower-case values and must agree with
/// `tls-mode`.
#[test]
fn unsupported_backend_protocols_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    manifests::write(dir.path(), "class.yaml", &ingress_class());
    manifests::write(dir.path(), "svc.yaml", &service("web", &[8080]));
    manifests::write(
        dir.path(),
        "ajp.yaml",
        &ingress(
            "ajp",
            "ajp.e2e.test",
            "web",
            &[("nginx.ingress.kubernetes.io/backend-protocol", "AJP")],
            None,
        ),
    );
    manifests::write(
        dir.path(),
        "mixed.yaml",
        &ingress(
            "mixed",
            "mixed.e2e.test",
            "web",
            &[
                ("portcullis.io/backend-protocol", "grpcs"),
                ("portcullis.io/tls-mode", "terminate"),
            ],
            None,
        ),
    );
    let out = check(dir.path());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("nginx.ingress.kubernetes.io/backend-protocol") && text.contains("AJP"),
        "{text}"
    );
    assert!(text.contains("portcullis.io/backend-protocol"), "{text}");
}

/// Gateway API GRPCRouteExactMethodMatching / GRPCRouteHeaderMatching: a GRPCRoute on an
/// HTTPS listener sends calls by service and method (and header) to gRPC pods over HTTP/2;
/// a method no rule names is not routed (a gRPC UNIMPLEMENTED).
#[tokio::test]
async fn a_grpc_route_routes_calls_by_service_method_and_header() {
    let front = Ca::new("e2e grpcroute front ca");
    let one = Pod::start("one", None).await;
    let two = Pod::start("two", None).await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    let leaf = front.leaf(&[GRPC_HOST]);
    manifests::write(&m, "tls.yaml", &leaf.secret_yaml(manifests::NS, "grpc-tls"));
    for (name, pod) in [("one", &one), ("two", &two)] {
        manifests::write(
            &m,
            &format!("svc-{name}.yaml"),
            &service(name, &[pod.addr.port()]),
        );
    }
    manifests::write(
        &m,
        "gateway.yaml",
        &format!(
            "{}---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{GRPC_HOST}]
  rules:
  - matches:
    - method: {{service: e2e.Echo, method: Say}}
      headers: [{{name: x-pick, value: two}}]
    backendRefs: [{{name: two, port: 80}}]
  - matches:
    - method: {{service: e2e.Echo, method: Say}}
    backendRefs: [{{name: one, port: 80}}]
",
            manifests::gateway_with(
                "  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: grpc-tls}]}}\n"
            )
        ),
    );
    let proxy = Binary::start(&m).await;

    let mut c = client(proxy.https, GRPC_HOST, &front).await;
    assert_eq!(
        say(&mut c, "hi")
            .await
            .map_err(|s| format!("{s:?}\n{}", proxy.log_text())),
        Ok("one: hi".to_string())
    );
    // The header match outranks the method-only rule.
    c.ready().await.unwrap();
    let mut request = tonic::Request::new(Ask {
        text: "hey".into(),
        times: 0,
    });
    request
        .metadata_mut()
        .insert("x-pick", "two".parse().unwrap());
    let picked = c
        .unary(
            request,
            PathAndQuery::from_static(SAY),
            ProstCodec::<Ask, Reply>::default(),
        )
        .await
        .map(|r| r.into_inner().text);
    assert_eq!(
        picked.map_err(|s| format!("{s:?}")),
        Ok("two: hey".to_string())
    );
    // Count is no rule's method: not routed.
    let status = count(&mut c, 1).await.expect_err("no route for Count");
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");
    assert!(one.calls(COUNT).is_empty() && two.calls(COUNT).is_empty());
    assert_eq!(one.calls(SAY).len(), 1);
    assert_eq!(two.calls(SAY).len(), 1);
}

/// Gateway API HTTPRouteBackendProtocolH2C: a Service port with `appProtocol:
/// kubernetes.io/h2c` is spoken to in HTTP/2 without TLS, whatever the client spoke; the pod
/// here serves HTTP/2 only, so an HTTP/1.1 request reaching it proves the protocol.
#[tokio::test]
async fn an_http_route_to_an_h2c_service_port_speaks_http2_to_the_pod() {
    let pod = Pod::start("h2c", None).await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    let svc = service("h2c", &[pod.addr.port()]).replace(
        "    targetPort: web\n",
        "    targetPort: web\n    appProtocol: kubernetes.io/h2c\n",
    );
    assert!(svc.contains("appProtocol"));
    manifests::write(&m, "svc.yaml", &svc);
    manifests::write(
        &m,
        "gateway.yaml",
        &format!(
            "{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: h2c, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [h2c.e2e.test]
  rules: [{{backendRefs: [{{name: h2c, port: 80}}]}}]
",
            manifests::gateway_with("  - {name: http, port: 80, protocol: HTTP}\n")
        ),
    );
    let proxy = Binary::start(&m).await;
    let answer = crate::support::http::get(proxy.http, "h2c.e2e.test", "/over/h2c", &[]).await;
    assert_eq!(answer.status, 200, "{}", proxy.log_text());
    let seen = pod.calls("/over/h2c");
    assert_eq!(seen.len(), 1, "the pod got the request over HTTP/2");

    // As the conformance test sends it: HTTP/2 with prior knowledge to the plain port too.
    let tcp = TcpStream::connect(proxy.http).await.unwrap();
    let (mut sender, connection) = client_h2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2c to the proxy's plain port");
    tokio::spawn(connection);
    let request = http::Request::get("http://h2c.e2e.test/both/h2c")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.expect("an h2c answer");
    assert_eq!(response.status(), 200, "{}", proxy.log_text());
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(pod.calls("/both/h2c").len(), 1);
}

/// GATEWAY-GRPC on an HTTP listener: a gRPC client with insecure credentials speaks HTTP/2
/// without TLS to the plain port (prior knowledge, RFC 9113 §3.3); its calls are routed by the
/// GRPCRoute like those over TLS. An HTTP/1.1 client on the same port is still served.
#[tokio::test]
async fn grpc_without_tls_reaches_a_grpc_route_on_an_http_listener() {
    let one = Pod::start("one", None).await;
    let web = crate::support::backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "svc-one.yaml", &service("one", &[one.addr.port()]));
    manifests::write(&m, "svc-web.yaml", &service("web", &[web.addr.port()]));
    manifests::write(
        &m,
        "gateway.yaml",
        &format!(
            "{}---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [{GRPC_HOST}]
  rules:
  - matches: [{{method: {{service: e2e.Echo}}}}]
    backendRefs: [{{name: one, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [web.e2e.test]
  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]
",
            manifests::gateway_with("  - {name: http, port: 80, protocol: HTTP}\n")
        ),
    );
    let proxy = Binary::start(&m).await;
    let mut c = client_h2c(proxy.http, GRPC_HOST).await;
    assert_eq!(
        say(&mut c, "plain")
            .await
            .map_err(|s| format!("{s:?}\n{}", proxy.log_text())),
        Ok("one: plain".to_string())
    );
    assert_eq!(one.calls(SAY).len(), 1);
    let answer = crate::support::http::get(proxy.http, "web.e2e.test", "/", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.backend(), Some("web"));
}
