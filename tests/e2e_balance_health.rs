//! End to end, the built binary: round-robin over two endpoints of one Service, then one
//! endpoint stops: passive failure and retry keep every request succeeding, the active check
//! (`health-check-interval: 200ms`) reports it down in `/metrics`, and all traffic goes to the
//! live one; when it comes back on the same port, the check brings it up and it gets its share
//! again.

mod support;

use std::time::Duration;

use support::backends::{self, Backend};
use support::binary::Binary;
use support::clients::{get_backend, http_client};
use support::manifests::{self, ingress, ingress_class, service};
use support::wait::wait_until;

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
    b.stop();
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
    let mut elsewhere = 0;
    for i in 0..100 {
        match get_backend(&client, proxy.http, HOST, &format!("/after/{i}")).await {
            Ok((200, backend)) if backend == "a" => {}
            Ok((200, _)) => elsewhere += 1,
            other => failures.push(format!("/after/{i}: {other:?}")),
        }
    }
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    assert_eq!(elsewhere, 0);
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
