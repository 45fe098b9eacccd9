//! End to end, the built binary: round-robin over two endpoints of one Service, then one
//! endpoint stops: passive failure and retry keep every request succeeding, the active check
//! (`health-check-interval: 200ms`) reports it down in `/metrics`, and all traffic goes to the
//! live one; when it comes back on the same port, the check brings it up and it gets its share
//! again.

use std::time::Duration;

use crate::support::backends::{self, Backend};
use crate::support::binary::Binary;
use crate::support::clients::curl;
use crate::support::http::{get_backend, http_client};
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::wait::wait_until;

const HOST: &str = "bal.e2e.test";

/// GET requests a backend served (health probes are HEAD).
fn served(backend: &Backend) -> usize {
    backend
        .requests()
        .iter()
        .filter(|r| r.method == "GET")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_then_failover_without_failed_requests() {
    let a = backends::http("a").await;
    let b = backends::http("b").await;
    let (a_addr, b_addr) = (a.addr, b.addr);

    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(
        m,
        "svc.yaml",
        &service("pair", &[a_addr.port(), b_addr.port()]),
    );
    manifests::write(
        m,
        "ingress.yaml",
        &ingress(
            "pair",
            HOST,
            "pair",
            &[
                ("portcullis.io/load-balance", "round-robin"),
                ("portcullis.io/health-check-interval", "200ms"),
            ],
            None,
        ),
    );
    let proxy = Binary::start(m).await;
    let healthy =
        |addr: std::net::SocketAddr| format!("portcullis_upstream_healthy{{endpoint=\"{addr}\"}}");

    let client = http_client();
    let mut failures = Vec::new();
    for i in 0..100 {
        match get_backend(&client, proxy.http, HOST, &format!("/rr/{i}")).await {
            Ok((200, _)) => {}
            other => failures.push(format!("/rr/{i}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let (on_a, on_b) = (served(&a), served(&b));
    assert_eq!(on_a + on_b, 100);
    assert!(
        (40..=60).contains(&on_a) && (40..=60).contains(&on_b),
        "round-robin spread a={on_a} b={on_b}"
    );
    // Both are up according to the active checks.
    assert!(
        wait_until(Duration::from_secs(3), || async {
            proxy.metric(&healthy(a_addr)).await == Some(1.0)
                && proxy.metric(&healthy(b_addr)).await == Some(1.0)
        })
        .await,
        "{}",
        proxy.metrics().await
    );

    // Stop b. The requests right after: connect refused → b marked failed → retried on a.
    b.stop().await;
    for i in 0..20 {
        match get_backend(&client, proxy.http, HOST, &format!("/now/{i}")).await {
            Ok((200, backend)) if backend == "a" => {}
            other => failures.push(format!("/now/{i}: {other:?}")),
        }
    }

    // The active check takes it down (or at most 3 s pass).
    let down = wait_until(Duration::from_secs(3), || async {
        proxy.metric(&healthy(b_addr)).await == Some(0.0)
    })
    .await;
    let before = served(&a);
    let mut elsewhere = Vec::new();
    for i in 0..100 {
        match get_backend(&client, proxy.http, HOST, &format!("/after/{i}")).await {
            Ok((200, backend)) if backend == "a" => {}
            Ok((200, other)) => elsewhere.push(format!("/after/{i}: {other:?}")),
            other => failures.push(format!("/after/{i}: {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "failed requests: {failures:#?}\n{}",
        proxy.log_text()
    );
    assert!(
        elsewhere.is_empty(),
        "answered by another backend: {elsewhere:#?}\ndown={down}\n{}\n{}",
        proxy.metrics().await,
        proxy.log_text()
    );
    assert_eq!(served(&a) - before, 100);
    assert!(
        down,
        "the stopped endpoint's gauge never went to 0:\n{}",
        proxy.metrics().await
    );
    assert_eq!(proxy.metric(&healthy(a_addr)).await, Some(1.0));

    // b comes back on the same port: the active check brings it up again (rise 2) and
    // round-robin uses it again.
    let listener = tokio::net::TcpListener::bind(b_addr)
        .await
        .expect("rebind b's port");
    let b = backends::http_on("b", listener);
    assert!(
        wait_until(Duration::from_secs(3), || async {
            proxy.metric(&healthy(b_addr)).await == Some(1.0)
        })
        .await,
        "the restarted endpoint never came back:\n{}",
        proxy.metrics().await
    );
    let before = served(&a);
    for i in 0..100 {
        match get_backend(&client, proxy.http, HOST, &format!("/back/{i}")).await {
            Ok((200, _)) => {}
            other => failures.push(format!("/back/{i}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    let (on_a, on_b) = (served(&a) - before, served(&b));
    assert!(
        (40..=60).contains(&on_a) && (40..=60).contains(&on_b),
        "round-robin spread after recovery a={on_a} b={on_b}"
    );
}

/// A backend that closes a reused keep-alive connection as the next request arrives (its idle
/// timeout racing the proxy's pool): the proxy resends a GET on a new connection instead of
/// answering 502. Not resent: a POST (not idempotent).
#[tokio::test]
async fn a_reused_connection_closed_by_the_backend_is_resent() {
    let backend = backends::closes_reused("flaky").await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("flaky", &[backend.addr.port()]));
    manifests::write(
        m,
        "ingress.yaml",
        &ingress(
            "flaky",
            HOST,
            "flaky",
            &[("portcullis.io/health-check", "none")],
            None,
        ),
    );
    // One proxy worker: the POSTs below come on connections of their own and the second must
    // meet the connection pooled by the first (each worker pools the upstream connections it
    // opened).
    let proxy = Binary::start_with(m, &["--proxy-workers", "1"]).await;
    let client = http_client();
    for i in 0..5 {
        let answer = get_backend(&client, proxy.http, HOST, &format!("/seq/{i}")).await;
        assert_eq!(
            answer,
            Ok((200, "flaky".to_string())),
            "request {i}\n{}",
            proxy.log_text()
        );
    }
    // Every request after the first found the pooled connection and was resent on a new one.
    assert_eq!(backend.count(), 5);
    assert!(backend.connections() >= 5, "{}", backend.connections());

    // A POST is not idempotent: the same race is a 502, never a second delivery. Requests
    // with a body go by hyper's client, whose connections are pooled apart from the GETs' (our
    // own exchange, `proxy::upstream_h1`): the first POST opens one and leaves it pooled, the
    // second meets it.
    let r = curl("http", HOST, proxy.http, "/post", &["-d", "once=1"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(backend.count(), 6);
    let r = curl("http", HOST, proxy.http, "/post", &["-d", "once=2"]).await;
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(backend.count(), 6);
}
