//! TLS termination: forwarded headers (untrusted overwritten, trusted appended), hop-by-hop
//! headers stripped both ways, HSTS on TLS responses only, h2 over ALPN end to end (hyper
//! client and the real curl binary).

use std::net::SocketAddr;

use crate::support::backends;
use crate::support::fixture::Tables;
use crate::support::http::{Answer, Conn, Via, get, tls_get};
use crate::support::in_process::Proxy;
use crate::support::pki::Ca;
use portcullis::table::ClassSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HSTS: &str = "max-age=31536000; includeSubDomains";

/// A proxy serving `app.example` (HSTS, `/` routed to `upstream`) terminated with a leaf of a
/// new front CA, its table changed by `change` first; the CA and the proxy.
async fn app(upstream: SocketAddr, change: impl FnOnce(Tables) -> Tables) -> (Ca, Proxy) {
    let ca = Ca::new("front ca");
    let leaf = ca.leaf(&["app.example"]);
    let table = Tables::new()
        .terminate("app.example", &leaf)
        .to(&[upstream])
        .edit(|vhost| vhost.hsts = Some(http::HeaderValue::from_static(HSTS)));
    (ca, Proxy::start(change(table).build()).await)
}

async fn app_get(front: &Proxy, ca: &Ca, path: &str, headers: &[(&str, &str)]) -> Answer {
    tls_get(front.https, ca, "app.example", path, headers).await
}

#[tokio::test]
async fn backend_sees_forwarded_headers_and_untrusted_ones_are_overwritten() {
    let backend = backends::http("app").await;
    let (ca, front) = app(backend.addr, |t| t).await;

    let answer = app_get(
        &front,
        &ca,
        "/hello?q=1",
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-proto", "http"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("strict-transport-security"), HSTS);
    let seen = &backend.requests()[0];
    assert_eq!(seen.uri, "/hello?q=1");
    assert_eq!(seen.headers["host"], "app.example");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(
        seen.headers["x-forwarded-port"],
        front.https.port().to_string()
    );
    assert_eq!(seen.headers["x-forwarded-host"], "app.example");
    assert_eq!(
        seen.headers["forwarded"],
        "for=127.0.0.1;proto=https;host=app.example"
    );
}

/// A client that sends none of the forwarded fields nor an `X-Request-ID` (the usual one): the
/// pod gets each of the six and a request ID of its own exactly once (the backend joins
/// repeated fields, so a second copy would show).
#[tokio::test]
async fn each_added_field_reaches_the_pod_once() {
    let backend = backends::http("app").await;
    let (ca, front) = app(backend.addr, |t| t).await;

    for path in ["/one", "/two"] {
        let answer = app_get(&front, &ca, path, &[]).await;
        assert_eq!(answer.status, 200);
    }
    let mut ids = Vec::new();
    for seen in backend.requests() {
        let field = |name: &str| seen.headers.get(name).map(String::as_str);
        let id = field("x-request-id").unwrap_or_default();
        assert!(
            id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{seen:?}"
        );
        ids.push(id.to_string());
        assert_eq!(field("x-forwarded-for"), Some("127.0.0.1"), "{seen:?}");
        assert_eq!(field("x-real-ip"), Some("127.0.0.1"), "{seen:?}");
        assert_eq!(field("x-forwarded-proto"), Some("https"), "{seen:?}");
        let port = front.https.port().to_string();
        assert_eq!(field("x-forwarded-port"), Some(port.as_str()), "{seen:?}");
        assert_eq!(field("x-forwarded-host"), Some("app.example"), "{seen:?}");
        assert_eq!(
            field("forwarded"),
            Some("for=127.0.0.1;proto=https;host=app.example"),
            "{seen:?}"
        );
    }
    assert_eq!(ids.len(), 2, "both requests reached the pod");
    assert_ne!(ids[0], ids[1], "each request has an ID of its own");
}

#[tokio::test]
async fn trusted_forwarded_headers_are_appended() {
    let backend = backends::http("app").await;
    let class = ClassSettings {
        trusted_forwarded: vec!["127.0.0.0/8".parse().unwrap()],
        ..ClassSettings::default()
    };
    let (ca, front) = app(backend.addr, |t| t.class(class)).await;

    let answer = app_get(
        &front,
        &ca,
        "/",
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("forwarded", "for=203.0.113.7"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = &backend.requests()[0];
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(
        seen.headers["forwarded"],
        "for=203.0.113.7, for=127.0.0.1;proto=https;host=app.example"
    );
}

/// A backend answering every request with hop-by-hop headers of its own.
async fn chatty_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read_u8().await {
                        Ok(b) => head.push(b),
                        Err(_) => return,
                    }
                }
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nConnection: x-upstream-secret\r\nX-Upstream-Secret: 1\r\n\
Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\nContent-Length: 2\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn hop_by_hop_headers_are_stripped_both_ways() {
    let backend = backends::http("app").await;
    let (ca, front) = app(backend.addr, |t| t).await;
    let answer = app_get(
        &front,
        &ca,
        "/",
        &[
            ("connection", "x-client-secret"),
            ("x-client-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic dTpw"),
        ],
    )
    .await;
    assert_eq!(answer.status, 200);
    let seen = &backend.requests()[0];
    for stripped in ["x-client-secret", "keep-alive", "proxy-connection", "te"] {
        assert!(
            !seen.headers.contains_key(stripped),
            "{stripped} reached the backend"
        );
    }
    assert_eq!(seen.headers["proxy-authorization"], "Basic dTpw");

    let (chatty, _task) = chatty_backend().await;
    let (ca, front) = app(chatty, |t| t).await;
    let answer = app_get(&front, &ca, "/", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.text(), "ok");
    assert_eq!(answer.header("x-kept"), "yes");
    for stripped in ["x-upstream-secret", "keep-alive", "proxy-connection"] {
        assert_eq!(answer.header(stripped), "", "{stripped} reached the client");
    }
}

#[tokio::test]
async fn hsts_only_on_tls() {
    let backend = backends::http("app").await;
    let (_, front) = app(backend.addr, |t| t).await;
    let answer = get(front.http, "app.example", "/", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("strict-transport-security"), "");
    assert_eq!(backend.requests()[0].headers["x-forwarded-proto"], "http");

    // On TLS, the proxy's own answers carry it too.
    let no_routes = |t: Tables| t.edit(|vhost| vhost.routes.clear());
    let (ca, front) = app(backend.addr, no_routes).await;
    let answer = app_get(&front, &ca, "/", &[]).await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.header("strict-transport-security"), HSTS);
}

#[tokio::test]
async fn h2_over_alpn_end_to_end() {
    let backend = backends::http("app").await;
    let (ca, front) = app(backend.addr, |t| t).await;
    // Asserts that ALPN chose h2.
    let mut conn = Conn::connect(front.https, &ca, Via::H2, "app.example").await;
    for i in 0..3 {
        let cookies = [("cookie", "a=1"), ("cookie", "b=2")];
        let path = format!("/h2/{i}?x=y");
        let answer = conn.get_with("app.example", &path, &cookies).await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("strict-transport-security"), HSTS);
        assert!(
            answer
                .text()
                .starts_with(&format!("backend=app path=/h2/{i}?x=y"))
        );
    }
    let seen = &backend.requests()[0];
    assert_eq!(seen.headers["host"], "app.example");
    assert_eq!(seen.headers["cookie"], "a=1; b=2");
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn curl_gets_h2_and_hsts() {
    let backend = backends::http("app").await;
    let (ca, front) = app(backend.addr, |t| t).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = dir.path().join("ca.pem");
    std::fs::write(&ca_pem, &ca.cert_pem).unwrap();
    let port = front.https.port();
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--resolve"])
        .arg(format!("app.example:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(&ca_pem)
        .arg(format!("https://app.example:{port}/curl?z=1"))
        .arg("-D")
        .arg("-")
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.starts_with("HTTP/2 200"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains(&format!(
            "strict-transport-security: {}",
            HSTS.to_ascii_lowercase()
        )),
        "{text}"
    );
    assert!(text.contains("backend=app path=/curl?z=1"), "{text}");
    assert_eq!(
        backend.requests()[0].headers["x-forwarded-host"],
        format!("app.example:{port}")
    );
}
