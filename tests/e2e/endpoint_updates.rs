//! End to end, the built binary: a change of EndpointSlices alone is applied to the live table
//! as an endpoint update, without a build (issue 16, item 5):
//! - the new pod gets the next request, also on a keep-alive connection opened before; the log
//!   says `endpoints updated`, `portcullis_endpoint_updates_total` counts it and
//!   `portcullis_rebuild_duration_seconds_count` does not move;
//! - any other change (here the Ingress) is still a build;
//! - a Service left with no endpoints, and one coming back from none, are builds (a build
//!   decides on a host's fallback by whether a Service has endpoints), and answer as before:
//!   503 with none, the pod again after;
//! - an endpoint an update adds is health-checked like one a build adds: a dead one is reported
//!   down in `/metrics` and never gets a request.

use std::path::Path;
use std::time::Duration;

use crate::support::backends;
use crate::support::binary::Binary;
use crate::support::http::{Conn, Via};
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::pki::Ca;
use crate::support::wait::wait_until;

const HOST: &str = "eps.e2e.test";
const BUILDS: &str = "portcullis_rebuild_duration_seconds_count";
const UPDATES: &str = "portcullis_endpoint_updates_total";
const WAIT: Duration = Duration::from_secs(5);

/// How many builds and endpoint updates the binary has done.
async fn counts(proxy: &Binary) -> (f64, f64) {
    let metrics = proxy.metrics().await;
    let get = |series| crate::support::binary::metric_value(&metrics, series).unwrap_or(-1.0);
    (get(BUILDS), get(UPDATES))
}

/// Writes Ingress `web` (`HOST` → Service `web`) with these annotations.
fn web_ingress(m: &Path, annotations: &[(&str, &str)]) {
    manifests::write(
        m,
        "web.yaml",
        &ingress("web", HOST, "web", annotations, None),
    );
}

/// Starts the binary on Ingress `web` and Service `web` with endpoints on these ports.
async fn serve_web(m: &Path, ports: &[u16], annotations: &[(&str, &str)]) -> Binary {
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("web", ports));
    web_ingress(m, annotations);
    Binary::start(m).await
}

/// No health checks in the first test: what it checks must hold on routing alone.
const UNCHECKED: &[(&str, &str)] = &[("portcullis.io/health-check", "none")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_change_is_applied_without_a_build() {
    let a = backends::http("A").await;
    let b = backends::http("B").await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    let proxy = serve_web(m, &[a.addr.port()], UNCHECKED).await;
    let ca = Ca::new("unused");
    let mut conn = Conn::open(proxy.http, proxy.https, &ca, Via::Plain, HOST).await;
    let answer = conn.get(HOST, "/").await.expect("to A");
    assert_eq!(answer.backend(), Some("A"));
    let (builds, updates) = counts(&proxy).await;
    assert_eq!((builds, updates), (1.0, 0.0), "{}", proxy.metrics().await);

    // The pod is replaced: the file is read again (a new Service object, equal to the old
    // one, and a changed slice), which is a change of endpoints only.
    let generation = proxy.generation().await;
    manifests::write(m, "svc.yaml", &service("web", &[b.addr.port()]));
    let generation = proxy.wait_generation_above(generation, WAIT).await;
    let answer = conn.get(HOST, "/").await.expect("to B");
    assert_eq!(answer.backend(), Some("B"), "the open connection");
    assert_eq!(counts(&proxy).await, (1.0, 1.0), "{}", proxy.log_text());
    assert!(
        proxy
            .wait_for_log(WAIT, |l| l.contains("endpoints updated")
                && l.contains("services=1")
                && l.contains("upstreams=1"))
            .await,
        "{}",
        proxy.log_text()
    );
    let table = proxy.table().await.to_string();
    assert!(table.contains(&b.addr.to_string()), "{table}");
    assert!(!table.contains(&a.addr.to_string()), "{table}");

    // A second pod added (a new slice): an update too, and both pods get requests.
    manifests::write(
        m,
        "svc.yaml",
        &service("web", &[b.addr.port(), a.addr.port()]),
    );
    let generation = proxy.wait_generation_above(generation, WAIT).await;
    assert_eq!(counts(&proxy).await, (1.0, 2.0), "{}", proxy.log_text());
    let mut seen = Vec::new();
    for _ in 0..4 {
        let answer = conn.get(HOST, "/").await.expect("to A or B");
        seen.push(answer.backend().map(str::to_string));
    }
    assert!(seen.contains(&Some("A".into())) && seen.contains(&Some("B".into())));

    // Anything else is a build.
    web_ingress(
        m,
        &[
            UNCHECKED[0],
            ("portcullis.io/load-balance", "least-request"),
        ],
    );
    let generation = proxy.wait_generation_above(generation, WAIT).await;
    assert_eq!(counts(&proxy).await, (2.0, 2.0), "{}", proxy.log_text());

    // No endpoints left: a build, and 503.
    manifests::write(m, "svc.yaml", &service("web", &[]));
    let generation = proxy.wait_generation_above(generation, WAIT).await;
    assert_eq!(counts(&proxy).await, (3.0, 2.0), "{}", proxy.log_text());
    let answer = conn.get(HOST, "/").await.expect("an answer");
    assert_eq!(answer.status, 503);

    // Back from none: a build, and the pod answers.
    manifests::write(m, "svc.yaml", &service("web", &[a.addr.port()]));
    proxy.wait_generation_above(generation, WAIT).await;
    assert_eq!(counts(&proxy).await, (4.0, 2.0), "{}", proxy.log_text());
    let mut conn = Conn::open(proxy.http, proxy.https, &ca, Via::Plain, HOST).await;
    let answer = conn.get(HOST, "/").await.expect("to A");
    assert_eq!(answer.backend(), Some("A"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_added_by_an_update_is_health_checked() {
    let a = backends::http("A").await;
    // A port nobody listens on: the pod that never came up.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    let checked = [("portcullis.io/health-check-interval", "100ms")];
    let proxy = serve_web(m, &[a.addr.port()], &checked).await;
    let healthy =
        |addr: std::net::SocketAddr| format!("portcullis_upstream_healthy{{endpoint=\"{addr}\"}}");
    assert!(
        wait_until(WAIT, || async {
            proxy.metric(&healthy(a.addr)).await == Some(1.0)
        })
        .await,
        "{}",
        proxy.metrics().await
    );

    let generation = proxy.generation().await;
    manifests::write(
        m,
        "svc.yaml",
        &service("web", &[a.addr.port(), dead.port()]),
    );
    proxy.wait_generation_above(generation, WAIT).await;
    assert_eq!(counts(&proxy).await, (1.0, 1.0), "{}", proxy.log_text());
    assert!(
        wait_until(WAIT, || async {
            proxy.metric(&healthy(dead)).await == Some(0.0)
        })
        .await,
        "the endpoint the update added is not checked:\n{}",
        proxy.metrics().await
    );
    // Down: every request goes to A, none fails.
    let ca = Ca::new("unused");
    let mut conn = Conn::open(proxy.http, proxy.https, &ca, Via::Plain, HOST).await;
    for i in 0..10 {
        let answer = conn.get(HOST, &format!("/{i}")).await.expect("to A");
        assert_eq!(answer.backend(), Some("A"));
    }
}
