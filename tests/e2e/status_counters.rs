//! End to end, the built binary: per-endpoint and per-host counters (issue 15, item 1) in
//! `/api/v1/status` and `/metrics`.
//!
//! - Per endpoint: responses by class match what each backend saw, and sum to the requests
//!   sent; an endpoint that refuses connections counts errors; body bytes both ways are the
//!   bytes of known bodies; an endpoint removed from the manifests loses its series.
//! - Per TLS host: handshakes by result, and connections open now (1 while a client holds one,
//!   back to 0 once it closes); the series leave with the host.
//! - Pass-through: a spliced connection is active on its endpoint while open, and its bytes
//!   count for the endpoint exactly as for the host.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use crate::status_page::{host, status_doc};
use crate::support::backends::{self, TlsOptions};
use crate::support::binary::Binary;
use crate::support::http::{Conn, Via, get, send};
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::pki::Ca;

const PAIR: &str = "pair.counters.test";
const FLAKY: &str = "flaky.counters.test";
const SECURE: &str = "secure.counters.test";
const PASS: &str = "pass.counters.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_endpoint_requests_errors_bytes_and_removal() {
    let a = backends::http("a").await;
    let b = backends::http("b").await;
    let c = backends::http("c").await;
    // An address nothing listens on: connects to it are refused.
    let refused = backends::http("refused").await;
    let refused_addr = refused.addr;
    refused.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(
        m,
        "pair-svc.yaml",
        &service("pair", &[a.addr.port(), b.addr.port()]),
    );
    manifests::write(
        m,
        "flaky-svc.yaml",
        &service("flaky", &[refused_addr.port(), c.addr.port()]),
    );
    manifests::write(m, "pair.yaml", &ingress("pair", PAIR, "pair", &[], None));
    manifests::write(
        m,
        "flaky.yaml",
        &ingress("flaky", FLAKY, "flaky", &[], None),
    );
    let proxy = Binary::start(m).await;

    // N GETs and one POST with a known body, spread over the pair's two endpoints.
    const N: usize = 10;
    let mut body_bytes = [0u64; 2];
    for i in 0..N {
        let answer = get(proxy.http, PAIR, &format!("/get/{i}"), &[]).await;
        assert_eq!(answer.status, 200);
        let which = usize::from(answer.backend() == Some("b"));
        body_bytes[which] += answer.body.len() as u64;
    }
    let posted: &'static [u8] = &[b'x'; 1234];
    let answer = send(proxy.http, Method::POST, PAIR, "/post", posted).await;
    assert_eq!(answer.status, 200);
    let post_to = usize::from(answer.backend() == Some("b"));
    body_bytes[post_to] += answer.body.len() as u64;

    let doc = status_doc(proxy.admin).await;
    let endpoints = endpoints_of(&doc, PAIR);
    let mut total = 0;
    for (i, backend) in [&a, &b].into_iter().enumerate() {
        let e = endpoint(&endpoints, backend.addr);
        let seen = backend.proxied().len() as u64;
        let answered = e["requests"]["2xx"].as_u64().unwrap();
        assert_eq!(answered, seen, "{}: {e:#}", backend.name);
        assert!(answered > 0, "round robin reaches both: {e:#}");
        total += answered;
        assert_eq!(e["errors"], 0, "{e:#}");
        assert_eq!(e["active"], 0, "{e:#}");
        assert_eq!(e["bytes_from_endpoint"], body_bytes[i], "{e:#}");
        let sent = if i == post_to { posted.len() as u64 } else { 0 };
        assert_eq!(e["bytes_to_endpoint"], sent, "{e:#}");
        for class in ["1xx", "3xx", "4xx", "5xx", "other"] {
            assert_eq!(e["requests"][class], 0, "{class}: {e:#}");
        }
    }
    assert_eq!(total, N as u64 + 1);

    // The same numbers in /metrics.
    let metrics = proxy.metrics().await;
    let a_series = format!(
        "portcullis_upstream_requests_total{{endpoint=\"{}\",class=\"2xx\"}}",
        a.addr
    );
    assert_eq!(
        series(&metrics, &a_series),
        Some(a.proxied().len() as f64),
        "{metrics}"
    );

    // The refusing endpoint: requests still answered (by the other one), errors counted.
    for i in 0..4 {
        let answer = get(proxy.http, FLAKY, &format!("/{i}"), &[]).await;
        assert_eq!(answer.status, 200, "retried on the other endpoint");
    }
    let doc = status_doc(proxy.admin).await;
    let endpoints = endpoints_of(&doc, FLAKY);
    let bad = endpoint(&endpoints, refused_addr);
    assert!(bad["errors"].as_u64().unwrap() >= 1, "{bad:#}");
    assert_eq!(bad["requests"]["2xx"], 0, "{bad:#}");
    let good = endpoint(&endpoints, c.addr);
    assert_eq!(good["requests"]["2xx"], 4, "{good:#}");
    assert_eq!(good["errors"], 0, "{good:#}");
    let metrics = proxy.metrics().await;
    let errors = format!("portcullis_upstream_errors_total{{endpoint=\"{refused_addr}\"}}");
    assert!(
        series(&metrics, &errors).is_some_and(|n| n >= 1.0),
        "{metrics}"
    );

    // `a` leaves the manifests: its series leave /metrics with it.
    let before = proxy.generation().await;
    manifests::write(m, "pair-svc.yaml", &service("pair", &[b.addr.port()]));
    proxy
        .wait_generation_above(before, Duration::from_secs(10))
        .await;
    let gone = format!("endpoint=\"{}\"", a.addr);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = proxy.metrics().await;
        if !metrics.contains(&gone) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} still exported: {metrics}",
            a.addr
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = proxy.metrics().await;
    let b_series = format!(
        "portcullis_upstream_requests_total{{endpoint=\"{}\",class=\"2xx\"}}",
        b.addr
    );
    assert!(series(&metrics, &b_series).is_some(), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_host_handshakes_and_active_connections() {
    let ca = Ca::new("counters ca");
    let leaf = ca.leaf(&[SECURE]);
    let backend = backends::http("web").await;

    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("web", &[backend.addr.port()]));
    manifests::write(
        m,
        "secret.yaml",
        &leaf.secret_yaml(manifests::NS, "secure-tls"),
    );
    manifests::write(
        m,
        "secure.yaml",
        &ingress("secure", SECURE, "web", &[], Some("secure-tls")),
    );
    let proxy = Binary::start(m).await;

    let mut conn = Conn::connect(proxy.https, &ca, Via::Tls, SECURE).await;
    let answer = conn.get(SECURE, "/").await.unwrap();
    assert_eq!(answer.status, 200);

    let doc = status_doc(proxy.admin).await;
    let counters = &host(&doc, SECURE)["counters"];
    assert_eq!(counters["active_connections"], 1, "{counters:#}");
    assert_eq!(counters["tls_handshakes"]["ok"], 1, "{counters:#}");
    let metrics = proxy.metrics().await;
    let active = format!("portcullis_connections_active{{mode=\"terminate\",host=\"{SECURE}\"}}");
    assert_eq!(series(&metrics, &active), Some(1.0), "{metrics}");
    let handshakes = format!(
        "portcullis_tls_handshakes_total{{mode=\"terminate\",result=\"ok\",host=\"{SECURE}\"}}"
    );
    assert_eq!(series(&metrics, &handshakes), Some(1.0), "{metrics}");

    // A handshake the client abandons (it does not trust the certificate) is an error of the
    // host its SNI named.
    let untrusted = Ca::new("another ca");
    assert!(
        Conn::try_connect(proxy.https, &untrusted, Via::Tls, SECURE)
            .await
            .is_err()
    );

    conn.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let doc = status_doc(proxy.admin).await;
        let counters = host(&doc, SECURE)["counters"].clone();
        if counters["active_connections"] == 0 && counters["tls_handshakes"]["error"] == 1 {
            assert_eq!(counters["tls_handshakes"]["ok"], 1, "{counters:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connection never closed or handshake error never counted: {counters:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The process-wide view still sums every host.
    let doc = status_doc(proxy.admin).await;
    assert_eq!(doc["process"]["tls_handshakes"]["ok"], 1, "{doc:#}");
    assert_eq!(doc["process"]["active_connections"]["terminate"], 0);

    // The host leaves the manifests: every series labelled with it leaves too (connections,
    // handshakes, requests and their latencies), so label values stay bounded as Ingresses
    // come and go.
    let metrics = proxy.metrics().await;
    let of_host = |metrics: &str, family: &str| series_of_host(metrics, family, SECURE);
    let requests = of_host(&metrics, "portcullis_http_requests_total");
    assert!(
        requests.iter().any(|l| l.contains("code=\"200\"")),
        "{metrics}"
    );
    assert!(
        !of_host(&metrics, "portcullis_http_request_duration").is_empty(),
        "{metrics}"
    );
    let before = proxy.generation().await;
    std::fs::remove_file(m.join("secure.yaml")).unwrap();
    proxy
        .wait_generation_above(before, Duration::from_secs(10))
        .await;
    let metrics = proxy.metrics().await;
    let left = of_host(&metrics, "portcullis_");
    assert!(left.is_empty(), "{left:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_connections_count_on_their_endpoint() {
    let backend_ca = Ca::new("counters backend ca");
    let leaf = backend_ca.leaf(&[PASS]);
    let backend = backends::tls("pass", &leaf, TlsOptions::default()).await;

    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("pass", &[backend.addr.port()]));
    let annotations = [("portcullis.io/tls-mode", "passthrough")];
    manifests::write(
        m,
        "pass.yaml",
        &ingress("pass", PASS, "pass", &annotations, None),
    );
    let proxy = Binary::start(m).await;

    // The backend's own certificate, through the proxy: a spliced connection.
    let mut conn = Conn::connect(proxy.https, &backend_ca, Via::Tls, PASS).await;
    let answer = conn.get(PASS, "/").await.unwrap();
    assert_eq!(answer.status, 200);
    let doc = status_doc(proxy.admin).await;
    let open = host(&doc, PASS);
    let e = &open["passthrough"]["endpoints"][0];
    assert_eq!(e["address"], backend.addr.to_string(), "{open:#}");
    assert_eq!(e["active"], 1, "{e:#}");
    assert_eq!(open["counters"]["active_connections"], 1, "{open:#}");

    // Closed: the bytes both ways count for the endpoint, the same as for the host.
    conn.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let doc = status_doc(proxy.admin).await;
        let h = host(&doc, PASS);
        let e = h["passthrough"]["endpoints"][0].clone();
        if e["active"] == 0 && h["counters"]["tcp_connections"] == 1 {
            let to = e["bytes_to_endpoint"].as_u64().unwrap();
            let from = e["bytes_from_endpoint"].as_u64().unwrap();
            assert!(to > 0 && from > 0, "{e:#}");
            assert_eq!(to, h["counters"]["bytes_from_client"], "{h:#}");
            assert_eq!(from, h["counters"]["bytes_to_client"], "{h:#}");
            assert_eq!(e["errors"], 0, "{e:#}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pass-through connection never ended: {h:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The host leaves: its pass-through series (connections, bytes) leave with it.
    let of_host = |metrics: &str| series_of_host(metrics, "portcullis_tcp_", PASS);
    let metrics = proxy.metrics().await;
    assert_eq!(of_host(&metrics).len(), 3, "{metrics}");
    let before = proxy.generation().await;
    std::fs::remove_file(m.join("pass.yaml")).unwrap();
    proxy
        .wait_generation_above(before, Duration::from_secs(10))
        .await;
    let left = of_host(&proxy.metrics().await);
    assert!(left.is_empty(), "{left:#?}");
}

/// The lines of the metrics page in `family` (a name prefix) labelled with `host`.
fn series_of_host(metrics: &str, family: &str, host: &str) -> Vec<String> {
    let labelled = format!("host=\"{host}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(family) && l.contains(&labelled))
        .map(str::to_string)
        .collect()
}

/// The endpoints of the first route of host `name`.
fn endpoints_of(doc: &Value, name: &str) -> Vec<Value> {
    host(doc, name)["routes"][0]["upstream"]["endpoints"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn endpoint(endpoints: &[Value], addr: SocketAddr) -> Value {
    endpoints
        .iter()
        .find(|e| e["address"] == addr.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("{addr} not in {endpoints:#?}"))
}

/// The value of the sample whose name and labels are exactly `series`.
fn series(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}
