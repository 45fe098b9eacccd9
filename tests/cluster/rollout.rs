//! A rolling update as the API server tells it: Service `roll`'s EndpointSlice goes A → B → C
//! through MODIFIED watch events while keep-alive clients send requests back to back, and no
//! request fails.

use crate::support::backends::{self, Backend};
use crate::support::http::{Conn, Via};
use crate::support::mock_api::{
    Lists, Mock, MockApi, T, controller_settings, ingress_class, loopback, service, tls_secret,
};
use crate::support::pki;
use crate::support::wait::wait_until;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis::cluster::Controller;
use portcullis::runtime::Addresses;
use portcullis::settings::Settings;
use serde_json::{Value, json};

/// The EndpointSlices of namespace `apps`, where the rollout's watch events are pushed.
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices";
const ROLL_HOST: &str = "roll.cluster.test";

/// What one client saw during the rollout.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    failures: Vec<String>,
    /// Connections the proxy closed between two requests, reopened (not failures).
    reopened: usize,
    last_backend: Option<String>,
}

/// A keep-alive client running [`roll_client`], and how many requests it has completed.
struct RollClient {
    name: &'static str,
    done: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Tally>,
}

/// Sends GETs back to back on one connection until `stop`; a connection the proxy closes is
/// reopened (as every real client does), but a failed request is a failure. `done` counts the
/// requests answered or failed; failures name the rollout step they happened in.
async fn roll_client(
    name: &'static str,
    proxy: Addresses,
    ca: Arc<pki::Ca>,
    via: Via,
    done: Arc<AtomicUsize>,
    step: Arc<Mutex<&'static str>>,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut conn = Conn::open(proxy.http, proxy.https, &ca, via, ROLL_HOST).await;
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        if conn.is_closed() {
            tally.reopened += 1;
            conn = Conn::open(proxy.http, proxy.https, &ca, via, ROLL_HOST).await;
        }
        n += 1;
        let result = conn.get(ROLL_HOST, &format!("/{name}/{n}")).await;
        let at = *step.lock().unwrap();
        match result {
            Ok(answer) if answer.status == 200 => {
                tally.ok += 1;
                tally.last_backend = answer.backend().map(str::to_string);
                if answer.closes() {
                    tally.reopened += 1;
                    conn = Conn::open(proxy.http, proxy.https, &ca, via, ROLL_HOST).await;
                }
            }
            Ok(answer) => tally
                .failures
                .push(format!("{name} #{n} ({at}): {answer:?}")),
            Err(error) => {
                tally.failures.push(format!("{name} #{n} ({at}): {error}"));
                conn = Conn::open(proxy.http, proxy.https, &ca, via, ROLL_HOST).await;
            }
        }
        done.fetch_add(1, Ordering::SeqCst);
    }
    tally
}

/// Waits until every client has completed a request since now, so that no request routed on
/// an earlier table is still on its way (each client has one request in flight at a time).
async fn settle(clients: &[RollClient]) {
    let before: Vec<usize> = clients
        .iter()
        .map(|c| c.done.load(Ordering::SeqCst))
        .collect();
    let names: Vec<&str> = clients.iter().map(|c| c.name).collect();
    assert!(
        wait_until(T, || async {
            clients
                .iter()
                .zip(&before)
                .all(|(c, b)| c.done.load(Ordering::SeqCst) > *b)
        })
        .await,
        "a client of {names:?} completed no request in {T:?}"
    );
}

/// Three HTTP pods on one port number and three loopback addresses, so that one EndpointSlice
/// (one port list for all its endpoints, as in a cluster) can name any of them.
async fn three_pods() -> (Backend, Backend, Backend) {
    for _ in 0..20 {
        let a = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind A");
        let port = a.local_addr().expect("A's address").port();
        // The same port may be taken on another address; another draw then.
        let b = tokio::net::TcpListener::bind(("127.0.0.3", port)).await;
        let c = tokio::net::TcpListener::bind(("127.0.0.4", port)).await;
        if let (Ok(b), Ok(c)) = (b, c) {
            return (
                backends::http_on("A", a),
                backends::http_on("B", b),
                backends::http_on("C", c),
            );
        }
    }
    panic!("no port free on 127.0.0.2, 127.0.0.3 and 127.0.0.4");
}

/// GETs a pod has seen (health checks are off, so all of them are the clients').
fn gets(pod: &Backend) -> usize {
    pod.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "GET")
        .count()
}

/// discovery.k8s.io/v1 conditions of a ready pod, and of one draining after SIGTERM.
fn ready_pod() -> Value {
    json!({"ready": true, "serving": true, "terminating": false})
}

fn terminating_pod() -> Value {
    json!({"ready": false, "serving": true, "terminating": true})
}

/// The one EndpointSlice of Service `roll`, listing `endpoints` with their conditions.
fn roll_slice(resource_version: u64, endpoints: &[(&Backend, Value)]) -> Value {
    let port = endpoints[0].0.addr.port();
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(pod, conditions)| {
            assert_eq!(pod.addr.port(), port, "one slice, one port");
            json!({"addresses": [pod.addr.ip().to_string()], "conditions": conditions})
        })
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "roll-x7k2p", "namespace": "apps",
                     "resourceVersion": resource_version.to_string(),
                     "labels": {"kubernetes.io/service-name": "roll"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
    })
}

/// The ready and terminating endpoints of Service `roll` in the live table, if every upstream
/// of it agrees.
fn live_roll_endpoints(controller: &Controller) -> Option<(Vec<SocketAddr>, Vec<SocketAddr>)> {
    let built = controller.status().current()?;
    let all: Vec<(Vec<SocketAddr>, Vec<SocketAddr>)> = built
        .table
        .upstreams()
        .into_iter()
        .filter(|u| u.service.namespace == "apps" && u.service.name == "roll")
        .map(|u| {
            let endpoints = u.endpoints.load_full();
            (endpoints.ready.clone(), endpoints.terminating.clone())
        })
        .collect();
    let first = all.first()?.clone();
    all.iter().all(|u| *u == first).then_some(first)
}

/// The API server's watch pushes this EndpointSlice as MODIFIED.
fn modify_slice(mock: &Mock, slice: Value) {
    mock.push(SLICES, json!({"type": "MODIFIED", "object": slice}));
}

/// Waits until the live table lists exactly these ready and terminating pods for `roll`.
async fn wait_live(controller: &Controller, ready: &[&Backend], terminating: &[&Backend]) {
    let sorted = |pods: &[&Backend]| {
        let mut addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
        addrs.sort();
        addrs
    };
    let want = (sorted(ready), sorted(terminating));
    let before = controller.status().generation();
    assert!(
        wait_until(T, || async {
            live_roll_endpoints(controller).as_ref() == Some(&want)
        })
        .await,
        "the live table never had ready {:?}, terminating {:?} (generation {} → {}): {:?}",
        want.0,
        want.1,
        before,
        controller.status().generation(),
        live_roll_endpoints(controller)
    );
}

/// Cluster mode, the data plane under a rollout as the API server tells it: Service `roll`'s
/// EndpointSlice goes A → B → C through MODIFIED watch events, each step the way the
/// EndpointSlice controller writes it (the new pod ready next to the old one; the old one
/// terminating but still serving; the old one gone, and killed at once without waiting for
/// the table). Keep-alive clients on plain HTTP, TLS terminate and HTTP/2, all connected
/// before the first change, send GETs back to back: no request fails, a terminating pod gets
/// no new request while a ready one is listed but answers when it is the only one left, and
/// every client's last answer comes from C.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_update_through_the_api_fails_no_request() {
    // The proxy's own account of requests it answered itself (debug), shown on failure.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "warn,portcullis::proxy=debug",
        ))
        .with_test_writer()
        .try_init();

    let (a, b, c) = three_pods().await;
    let ca = Arc::new(pki::Ca::new("cluster rollout ca"));
    let ingress = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
        "metadata": {"name": "roll", "namespace": "apps", "uid": "uid-roll",
                     "resourceVersion": "10", "creationTimestamp": "2026-01-01T00:00:00Z",
                     // The rollout must hold on routing alone, not on probes.
                     "annotations": {"portcullis.io/health-check": "none"}},
        "spec": {
            "ingressClassName": "portcullis",
            "tls": [{"hosts": [ROLL_HOST], "secretName": "roll-tls"}],
            "rules": [{"host": ROLL_HOST, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "roll", "port": {"number": 80}}},
            }]}}],
        },
    });
    let lists = Lists::new()
        .of("ingressclasses", vec![ingress_class()])
        .of("ingresses", vec![ingress])
        .of(
            "services",
            vec![service("roll", ("http", 80), json!("http"))],
        )
        .of("endpointslices", vec![roll_slice(7, &[(&a, ready_pod())])])
        .selected(
            "secrets",
            "type=kubernetes.io/tls",
            vec![tls_secret("apps", "roll-tls", &ca.leaf(&[ROLL_HOST]))],
        );
    let mock = MockApi::new(lists).with_leases().start();
    let settings = Settings {
        shutdown_grace: Duration::from_secs(2),
        ..loopback()
    };
    let controller = mock.controller(settings, controller_settings()).await;
    wait_live(&controller, &[&a], &[]).await;
    assert!(
        wait_until(T, || async { mock.open_watches(SLICES) >= 1 }).await,
        "no EndpointSlice watch"
    );
    let proxy = controller.addresses();

    // Four keep-alive clients, all connected before the first change.
    let stop = Arc::new(AtomicBool::new(false));
    let step = Arc::new(Mutex::new("A ready"));
    let clients: Vec<RollClient> = [
        ("plain-1", Via::Plain),
        ("plain-2", Via::Plain),
        ("terminate", Via::Tls),
        ("h2", Via::H2),
    ]
    .into_iter()
    .map(|(name, via)| {
        let done = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(roll_client(
            name,
            proxy,
            ca.clone(),
            via,
            done.clone(),
            step.clone(),
            stop.clone(),
        ));
        RollClient { name, done, task }
    })
    .collect();
    let started = std::time::Instant::now();
    // Not a wait for a condition: lets the clients send requests for a while at each step, to
    // see which pods get them (and which get none).
    let traffic = || tokio::time::sleep(Duration::from_millis(700));
    settle(&clients).await;
    traffic().await;
    assert!(gets(&a) > 0, "A served nothing before the rollout");

    let mut rv = 20;
    let mut next_rv = || {
        rv += 1;
        rv
    };
    let set_step = |name: &'static str| *step.lock().unwrap() = name;
    let mut old = a;
    for (new, steps) in [
        (
            b,
            ["A+B ready", "A terminating, B ready", "B only, A killed"],
        ),
        (
            c,
            ["B+C ready", "B terminating, C ready", "C only, B killed"],
        ),
    ] {
        // (1) The new pod is ready next to the old one.
        set_step(steps[0]);
        modify_slice(
            &mock,
            roll_slice(next_rv(), &[(&old, ready_pod()), (&new, ready_pod())]),
        );
        wait_live(&controller, &[&old, &new], &[]).await;
        settle(&clients).await;
        let (old_gets, new_gets) = (gets(&old), gets(&new));
        traffic().await;
        // Both serve, also on the connections opened before the change.
        assert!(gets(&old) > old_gets, "{} (ready) served nothing", old.name);
        assert!(gets(&new) > new_gets, "{} (ready) served nothing", new.name);

        // (2) The old pod got SIGTERM: not ready, still serving, terminating. From the moment
        // that table is live, it gets no new request while the new pod is ready.
        set_step(steps[1]);
        modify_slice(
            &mock,
            roll_slice(next_rv(), &[(&old, terminating_pod()), (&new, ready_pod())]),
        );
        wait_live(&controller, &[&new], &[&old]).await;
        settle(&clients).await;
        let (old_gets, new_gets) = (gets(&old), gets(&new));
        traffic().await;
        settle(&clients).await;
        assert_eq!(
            gets(&old),
            old_gets,
            "{}, terminating, got new GETs while {} was ready",
            old.name,
            new.name
        );
        assert!(gets(&new) > new_gets, "{} served nothing", new.name);

        // (3) The old pod is gone from the slice and killed at once, without waiting for the
        // table: requests that still meet it must end on the live pod.
        set_step(steps[2]);
        modify_slice(&mock, roll_slice(next_rv(), &[(&new, ready_pod())]));
        drop(old);
        wait_live(&controller, &[&new], &[]).await;
        traffic().await;
        old = new;
    }
    let c = old;

    // The fallback: C, the only pod, is terminating but still serving. It answers.
    set_step("C only, terminating");
    modify_slice(&mock, roll_slice(next_rv(), &[(&c, terminating_pod())]));
    wait_live(&controller, &[], &[&c]).await;
    settle(&clients).await;
    let c_gets = gets(&c);
    traffic().await;
    settle(&clients).await;
    assert!(
        gets(&c) > c_gets,
        "C, terminating and the only pod, served nothing"
    );

    // And back to ready (the pod's SIGTERM was a false alarm: say, a readiness flap).
    set_step("C ready");
    modify_slice(&mock, roll_slice(next_rv(), &[(&c, ready_pod())]));
    wait_live(&controller, &[&c], &[]).await;
    traffic().await;
    // At least 6 s of traffic in all.
    while started.elapsed() < Duration::from_secs(6) {
        traffic().await;
    }
    settle(&clients).await;
    stop.store(true, Ordering::SeqCst);

    let mut report = String::new();
    let mut failures = Vec::new();
    let mut last = Vec::new();
    for client in clients {
        let tally = client.task.await.expect("client task");
        report.push_str(&format!(
            "{}: {} ok, {} failed, {} reopened, last from {:?}\n",
            client.name,
            tally.ok,
            tally.failures.len(),
            tally.reopened,
            tally.last_backend
        ));
        failures.extend(tally.failures);
        assert!(tally.ok > 10, "{report}");
        last.push((client.name, tally.last_backend));
    }
    assert!(
        failures.is_empty(),
        "failed requests during the rollout:\n{report}{failures:#?}"
    );
    for (name, backend) in last {
        assert_eq!(
            backend.as_deref(),
            Some("C"),
            "{name}'s last answer is not from C\n{report}"
        );
    }
    println!("{report}");

    controller.until_stopped(async {}).await.unwrap();
}
