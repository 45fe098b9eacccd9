//! End to end, the built binary: every HTTP request is routed on the live table, also on
//! connections that were open before the change (issue 11).
//!
//! - a rolling update A → B → C of a Service (each step: add the new pod to the EndpointSlice,
//!   remove the old one, kill it at once, without waiting for the table) while keep-alive
//!   clients on plain HTTP, TLS terminate, re-encrypt and HTTP/2 send requests back to back:
//!   no request fails, and every client's last answer comes from C;
//! - an Ingress deleted or a path removed: the next request on an open connection gets 404;
//! - a host switched from terminate to pass-through: the open terminated connection gets 421
//!   (RFC 9110 §15.5.20), and a new connection is passed through;
//! - a host that had no certificate of its own (default certificate) gets one: a connection
//!   that was shown the default certificate gets 421 and is closed; one that got a renewed
//!   certificate for its own name keeps working (tests/e2e/cert_rotation.rs);
//! - a pooled upstream connection to an endpoint that left the table is never reused, even when
//!   the same address comes back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;

use crate::support::backends::{self, Backend, TlsOptions};
use crate::support::binary::Binary;
use crate::support::http::{Conn, Via, insecure_client_config, tls_connect};
use crate::support::manifests::{self, ca_secret, ingress, ingress_class, service};
use crate::support::pki::Ca;

const ROLL: &str = "roll.live.test";
const ROLL_RE: &str = "rollre.live.test";

// === clients ===

// === the rolling update ===

/// What one client saw during the rollout.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failures: Vec<String>,
    last_backend: Option<String>,
}

/// Sends GETs back to back on one connection until `stop`; a connection the proxy closes is
/// reopened (as every real client does), but a failed request is a failure.
async fn client_loop(
    name: String,
    proxy: Arc<Binary>,
    ca: Arc<Ca>,
    via: Via,
    host: &'static str,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn = Conn::open(proxy.http, proxy.https, &ca, via, host).await;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        n += 1;
        match conn.get(host, &format!("/{name}/{n}")).await {
            Ok(answer) if answer.status == 200 => {
                tally.ok += 1;
                tally.last_backend = answer.backend().map(str::to_string);
                if answer.closes() {
                    conn = Conn::open(proxy.http, proxy.https, &ca, via, host).await;
                }
            }
            Ok(answer) => tally.failures.push(format!("{name} #{n}: {answer:?}")),
            Err(error) => {
                tally.failures.push(format!("{name} #{n}: {error}"));
                conn = Conn::open(proxy.http, proxy.https, &ca, via, host).await;
            }
        }
    }
    tally
}

/// The rollout's pods: HTTP ones for terminate / plain HTTP, TLS ones for re-encrypt.
struct Pods {
    http: Backend,
    tls: Backend,
}

async fn pods(name: &str, backend_leaf: &crate::support::pki::Leaf) -> Pods {
    Pods {
        http: backends::http(name).await,
        tls: backends::tls(&format!("{name}-tls"), backend_leaf, TlsOptions::default()).await,
    }
}

/// The two Services of the rollout, with these pods as their endpoints.
fn services(m: &std::path::Path, pods: &[&Pods]) {
    let http: Vec<u16> = pods.iter().map(|p| p.http.addr.port()).collect();
    let tls: Vec<u16> = pods.iter().map(|p| p.tls.addr.port()).collect();
    manifests::write(
        m,
        "services.yaml",
        &[service("roll", &http), service("roll-tls", &tls)].join("---\n"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_fails_no_request_on_open_connections() {
    let ca = Arc::new(Ca::new("live routing front ca"));
    let backend_ca = Ca::new("live routing backend ca");
    let backend_leaf = backend_ca.leaf(&[ROLL_RE]);
    let a = pods("A", &backend_leaf).await;
    let b = pods("B", &backend_leaf).await;
    let c = pods("C", &backend_leaf).await;

    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(
        m,
        "ingresses.yaml",
        &[
            ca.leaf(&[ROLL]).secret_yaml(manifests::NS, "roll-tls"),
            ca.leaf(&[ROLL_RE]).secret_yaml(manifests::NS, "rollre-tls"),
            ca_secret("backend-ca", &backend_ca.cert_pem),
            // Health checks off: the rollout must hold on routing alone, not on probes.
            ingress(
                "roll",
                ROLL,
                "roll",
                &[("portcullis.io/health-check", "none")],
                Some("roll-tls"),
            ),
            ingress(
                "rollre",
                ROLL_RE,
                "roll-tls",
                &[
                    ("portcullis.io/tls-mode", "reencrypt"),
                    ("portcullis.io/backend-ca", "backend-ca"),
                    ("portcullis.io/health-check", "none"),
                ],
                Some("rollre-tls"),
            ),
        ]
        .join("---\n"),
    );
    services(m, &[&a]);
    let proxy = Arc::new(Binary::start(m).await);

    // Five keep-alive clients, all connected before the first change.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: [(&str, Via, &'static str); 5] = [
        ("plain-1", Via::Plain, ROLL),
        ("plain-2", Via::Plain, ROLL),
        ("terminate", Via::Tls, ROLL),
        ("reencrypt", Via::Tls, ROLL_RE),
        ("h2", Via::H2, ROLL),
    ];
    let mut tasks = Vec::new();
    for (name, via, host) in clients {
        tasks.push(tokio::spawn(client_loop(
            name.to_string(),
            proxy.clone(),
            ca.clone(),
            via,
            host,
            stop.clone(),
        )));
    }
    let started = Instant::now();
    let traffic = || tokio::time::sleep(Duration::from_millis(1_200));
    traffic().await;

    // A → B, then B → C: add the new pod, wait until it is live, remove the old pod and kill
    // it at once (its EndpointSlice change may not be live yet: requests that meet the dead
    // pod must be retried on the live one).
    let mut generation = proxy.generation().await;
    let mut old = a;
    for new in [b, c] {
        services(m, &[&old, &new]);
        generation = proxy
            .wait_generation_above(generation, Duration::from_secs(5))
            .await;
        traffic().await;
        services(m, &[&new]);
        drop(old);
        generation = proxy
            .wait_generation_above(generation, Duration::from_secs(5))
            .await;
        traffic().await;
        old = new;
    }
    let c = old;
    // At least 6 s of traffic in all.
    while started.elapsed() < Duration::from_secs(6) {
        traffic().await;
    }
    let served_by_c_before_stop = c.http.count() + c.tls.count();
    stop.store(true, Ordering::SeqCst);

    let mut report = String::new();
    let mut failures = Vec::new();
    for (task, (name, _, _)) in tasks.into_iter().zip(clients) {
        let tally = task.await.expect("client task");
        report.push_str(&format!(
            "{name}: {} ok, {} failed, last from {:?}\n",
            tally.ok,
            tally.failures.len(),
            tally.last_backend
        ));
        failures.extend(tally.failures);
        assert!(tally.ok > 10, "{report}");
        let expected = if name == "reencrypt" { "C-tls" } else { "C" };
        assert_eq!(
            tally.last_backend.as_deref(),
            Some(expected),
            "{name}'s last answer is not from C\n{report}"
        );
    }
    assert!(
        failures.is_empty(),
        "failed requests during the rollout:\n{report}{failures:#?}\n{}",
        proxy.log_text()
    );
    assert!(served_by_c_before_stop > 0, "{report}");
}

// === what an open connection meets after a change ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_ingress_or_path_is_404_on_open_connections() {
    let ca = Ca::new("live routing 404 ca");
    let web = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("web", &[web.addr.port()]));
    manifests::write(
        m,
        "gone-tls.yaml",
        &ca.leaf(&["gone.live.test"])
            .secret_yaml(manifests::NS, "gone-tls"),
    );
    manifests::write(
        m,
        "gone.yaml",
        &ingress("gone", "gone.live.test", "web", &[], Some("gone-tls")),
    );
    manifests::write(m, "paths.yaml", &two_paths(true));
    let proxy = Binary::start(m).await;

    let mut conns = Vec::new();
    for via in [Via::Plain, Via::Tls, Via::H2] {
        let mut conn = Conn::open(proxy.http, proxy.https, &ca, via, "gone.live.test").await;
        let answer = conn
            .get("gone.live.test", "/")
            .await
            .expect("first request");
        assert_eq!(answer.status, 200, "{via:?}");
        let answer = conn.get("paths.live.test", "/old/x").await.expect("path");
        assert_eq!(answer.status, 200, "{via:?}");
        conns.push((via, conn));
    }

    // The Ingress deleted and a path removed from another one.
    let generation = proxy.generation().await;
    std::fs::remove_file(m.join("gone.yaml")).unwrap();
    manifests::write(m, "paths.yaml", &two_paths(false));
    proxy
        .wait_for_table(Duration::from_secs(5), "both changes", |t| {
            let text = t.to_string();
            !text.contains("gone.live.test") && !text.contains("/old")
        })
        .await;
    assert!(proxy.generation().await > generation);

    for (via, conn) in &mut conns {
        let answer = conn.get("gone.live.test", "/").await.expect("after delete");
        assert_eq!(
            answer.status, 404,
            "{via:?}: the deleted Ingress still answers"
        );
        let answer = conn.get("paths.live.test", "/old/x").await.expect("path");
        assert_eq!(
            answer.status, 404,
            "{via:?}: the removed path still answers"
        );
        let answer = conn.get("paths.live.test", "/kept").await.expect("kept");
        assert_eq!(answer.status, 200, "{via:?}: the path that stays");
    }
}

/// An Ingress for `paths.live.test` with `/kept` and, when `with_old`, `/old`.
fn two_paths(with_old: bool) -> String {
    let old = if with_old {
        "      - path: /old
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
"
    } else {
        ""
    };
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: paths
  namespace: default
spec:
  ingressClassName: portcullis
  rules:
  - host: paths.live.test
    http:
      paths:
      - path: /kept
        pathType: Prefix
        backend: {{service: {{name: web, port: {{number: 80}}}}}}
{old}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_switched_to_pass_through_is_421_on_open_terminated_connections() {
    const HOST: &str = "switch.live.test";
    let ca = Ca::new("live routing switch ca");
    let backend_ca = Ca::new("live routing switch backend ca");
    let web = backends::http("web").await;
    let pod = backends::tls("pod", &backend_ca.leaf(&[HOST]), TlsOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(
        m,
        "svc.yaml",
        &[
            service("web", &[web.addr.port()]),
            service("pod", &[pod.addr.port()]),
        ]
        .join("---\n"),
    );
    manifests::write(
        m,
        "switch.yaml",
        &[
            ca.leaf(&[HOST]).secret_yaml(manifests::NS, "switch-tls"),
            ingress("switch", HOST, "web", &[], Some("switch-tls")),
        ]
        .join("---\n"),
    );
    let proxy = Binary::start(m).await;
    let mut h1 = Conn::open(proxy.http, proxy.https, &ca, Via::Tls, HOST).await;
    let mut h2 = Conn::open(proxy.http, proxy.https, &ca, Via::H2, HOST).await;
    for conn in [&mut h1, &mut h2] {
        let answer = conn.get(HOST, "/").await.expect("terminated");
        assert_eq!(answer.backend(), Some("web"));
    }

    let generation = proxy.generation().await;
    manifests::write(
        m,
        "switch.yaml",
        &ingress(
            "switch",
            HOST,
            "pod",
            &[("portcullis.io/tls-mode", "passthrough")],
            None,
        ),
    );
    proxy
        .wait_generation_above(generation, Duration::from_secs(5))
        .await;

    // RFC 9110 §15.5.20: the connection cannot serve this host any more; the client retries
    // on a new connection. HTTP/1.1 is told to close; HTTP/2 gets GOAWAY.
    let answer = h1.get(HOST, "/").await.expect("an answer");
    assert_eq!(answer.status, 421, "{answer:?}");
    assert!(answer.closes(), "{answer:?}");
    assert!(h1.closed_by_proxy().await, "HTTP/1.1 connection left open");
    let answer = h2.get(HOST, "/").await.expect("an answer");
    assert_eq!(answer.status, 421, "{answer:?}");
    assert!(
        h2.closed_by_proxy().await,
        "no GOAWAY on the HTTP/2 connection"
    );
    let gets = web.requests().iter().filter(|r| r.method == "GET").count();
    assert_eq!(gets, 2, "the old backend got a request after the switch");

    // A new connection is passed through: the pod's own certificate, the pod answers.
    let mut fresh = Conn::connect(proxy.https, &backend_ca, Via::Tls, HOST).await;
    let answer = fresh.get(HOST, "/").await.expect("passed through");
    assert_eq!(answer.backend(), Some("pod"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_shown_the_default_certificate_is_421_once_the_host_has_its_own() {
    const HOST: &str = "later.live.test";
    let ca = Ca::new("live routing later ca");
    let web = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("web", &[web.addr.port()]));
    manifests::write(m, "later.yaml", &ingress("later", HOST, "web", &[], None));
    let proxy = Binary::start(m).await;

    // No certificate of its own yet: the client accepts the default one (as `curl -k` would).
    let insecure = insecure_client_config(&[b"http/1.1"], true);
    let tls = tls_connect(proxy.https, insecure, HOST)
        .await
        .unwrap_or_else(|e| panic!("TLS to {HOST}: {e}"));
    let shown = tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
    let mut conn = Conn::h1(TokioIo::new(tls)).await;
    assert_eq!(conn.get(HOST, "/").await.expect("first").status, 200);

    let own = ca.leaf(&[HOST]);
    assert_ne!(shown, own.cert_der);
    let generation = proxy.generation().await;
    manifests::write(
        m,
        "later.yaml",
        &[
            own.secret_yaml(manifests::NS, "later-tls"),
            ingress("later", HOST, "web", &[], Some("later-tls")),
        ]
        .join("---\n"),
    );
    proxy
        .wait_generation_above(generation, Duration::from_secs(5))
        .await;
    let answer = conn.get(HOST, "/").await.expect("an answer");
    assert_eq!(answer.status, 421, "{answer:?}");
    assert!(answer.closes());

    // The client's retry, on a new connection, verifies the host's own certificate.
    let mut fresh = Conn::open(proxy.http, proxy.https, &ca, Via::Tls, HOST).await;
    assert_eq!(fresh.get(HOST, "/").await.expect("retry").status, 200);
}

// === the upstream pool ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_to_a_removed_endpoint_is_never_reused() {
    let pod = backends::http("pod").await;
    let other = backends::http("other").await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("web", &[pod.addr.port()]));
    manifests::write(
        m,
        "web.yaml",
        &ingress(
            "web",
            "pool.live.test",
            "web",
            &[("portcullis.io/health-check", "none")],
            None,
        ),
    );
    let proxy = Binary::start(m).await;
    let ca = Ca::new("unused");
    let mut conn = Conn::open(proxy.http, proxy.https, &ca, Via::Plain, "pool.live.test").await;
    for _ in 0..5 {
        let answer = conn.get("pool.live.test", "/").await.expect("to the pod");
        assert_eq!(answer.backend(), Some("pod"));
    }
    assert_eq!(pod.connections(), 1, "one pooled upstream connection");

    // The pod leaves the EndpointSlice (its process keeps running, as in a graceful drain)...
    let generation = proxy.generation().await;
    manifests::write(m, "svc.yaml", &service("web", &[other.addr.port()]));
    let generation = proxy
        .wait_generation_above(generation, Duration::from_secs(5))
        .await;
    for _ in 0..5 {
        let answer = conn.get("pool.live.test", "/").await.expect("to the other");
        assert_eq!(answer.backend(), Some("other"));
    }
    let count = pod.count();
    // ...and its address comes back (a new pod on the same IP and port). The connection pooled
    // for the old one was closed when it left, so the proxy connects anew.
    manifests::write(m, "svc.yaml", &service("web", &[pod.addr.port()]));
    proxy
        .wait_generation_above(generation, Duration::from_secs(5))
        .await;
    let answer = conn.get("pool.live.test", "/").await.expect("to the pod");
    assert_eq!(answer.backend(), Some("pod"));
    assert_eq!(pod.count(), count + 1);
    assert_eq!(
        pod.connections(),
        2,
        "the pooled connection to the endpoint that left was reused"
    );
}
