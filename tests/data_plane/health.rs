//! Active and passive health checks against real backends on 127.0.0.1:0: HTTP (`httpchk`),
//! HTTP inside TLS (re-encrypt), TLS hello (`ssl-hello-chk`), TCP, none; state carried across
//! table swaps; probe tasks of removed endpoints stop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::backends::{self, TlsOptions};
use crate::support::fixture::terminate_vhost;
use crate::support::pki::{Ca, Leaf};
use crate::support::wait::wait_until;
use arc_swap::ArcSwap;
use portcullis::health::Health;
use portcullis::table::diagnostic::ObjectRef;
use portcullis::table::route::{PathMatch, Route};
use portcullis::table::upstream::{
    BackendTls, Cursor, Endpoints, HealthCheck, HealthProbe, LoadBalance, ProxyProtocol,
    ServicePortRef, ServiceRef, Upstream, UpstreamProtocol,
};
use portcullis::table::{CertificateChoice, ClassSettings, RouteTable, TableHandle};
use portcullis::telemetry::metrics::Metrics;
use tokio::net::TcpListener;
use tokio::sync::watch;

const DEADLINE: Duration = Duration::from_secs(5);
const FAST: Duration = Duration::from_millis(100);

// === building tables ===

fn http_probe(path: &str, host: &str) -> HealthProbe {
    HealthProbe::Http {
        method: "HEAD".into(),
        path: path.into(),
        host: host.into(),
    }
}

struct Spec {
    name: &'static str,
    endpoints: Vec<SocketAddr>,
    probe: HealthProbe,
    interval: Duration,
    protocol: UpstreamProtocol,
    proxy: Option<ProxyProtocol>,
}

impl Spec {
    fn new(name: &'static str, endpoints: &[SocketAddr], probe: HealthProbe) -> Spec {
        Spec {
            name,
            endpoints: endpoints.to_vec(),
            probe,
            interval: FAST,
            protocol: UpstreamProtocol::Http,
            proxy: None,
        }
    }

    fn interval(mut self, interval: Duration) -> Spec {
        self.interval = interval;
        self
    }

    fn protocol(mut self, protocol: UpstreamProtocol) -> Spec {
        self.protocol = protocol;
        self
    }

    fn proxy(mut self, proxy: ProxyProtocol) -> Spec {
        self.proxy = Some(proxy);
        self
    }
}

/// One virtual host per spec (`NAME.example.com`), its `/` route served by the spec's upstream.
fn table(specs: Vec<Spec>) -> Arc<RouteTable> {
    let vhosts = specs
        .into_iter()
        .map(|s| {
            let owner = ObjectRef::namespaced("Ingress", "default", s.name);
            let mut endpoints = s.endpoints;
            endpoints.sort();
            let upstream = Arc::new(Upstream {
                service: ServiceRef {
                    namespace: "default".into(),
                    name: s.name.into(),
                    port: ServicePortRef::Number(80),
                },
                endpoints: Endpoints::ready(endpoints).into(),
                protocol: s.protocol,
                balance: LoadBalance::RoundRobin,
                health: HealthCheck {
                    probe: s.probe,
                    interval: s.interval,
                },
                proxy_protocol: s.proxy,
                cursor: Cursor::default(),
            });
            let mut vhost = terminate_vhost(
                &format!("{}.example.com", s.name),
                CertificateChoice::Default,
            );
            vhost.routes.push(Route {
                path: PathMatch::prefix("/"),
                upstream,
                action: Default::default(),
                max_body: None,
                policy: Default::default(),
                source: owner.clone(),
                canary: None,
                conditions: None,
                split: None,
                port: None,
            });
            vhost.owner = owner;
            vhost
        })
        .collect();
    Arc::new(RouteTable::new(
        vhosts,
        None,
        Vec::new(),
        ClassSettings::default(),
    ))
}

/// Health checking running against a table handle; stops when dropped.
struct Running {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    handle: TableHandle,
    _stop: watch::Sender<bool>,
}

fn start(table: Arc<RouteTable>) -> Running {
    let metrics = Arc::new(Metrics::new());
    let health = Health::with_metrics(metrics.clone());
    let handle: TableHandle = Arc::new(ArcSwap::new(table));
    let (stop, rx) = watch::channel(false);
    tokio::spawn(health.clone().run(handle.clone(), rx));
    Running {
        health,
        metrics,
        handle,
        _stop: stop,
    }
}

impl Running {
    async fn until(&self, what: &str, condition: impl Fn(&Health) -> bool) {
        let h = self.health.clone();
        assert!(
            wait_until(DEADLINE, || {
                let ok = condition(&h);
                async move { ok }
            })
            .await,
            "timed out waiting until {what}"
        );
    }

    fn gauge(&self, addr: SocketAddr) -> Option<String> {
        let needle = format!("portcullis_upstream_healthy{{endpoint=\"{addr}\"}} ");
        self.metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(&needle).map(str::to_string))
    }
}

async fn wait_count(backend: &backends::Backend, n: usize) {
    assert!(
        wait_until(DEADLINE, || async { backend.count() >= n }).await,
        "backend {} saw {} requests, wanted {n}",
        backend.name,
        backend.count()
    );
}

/// An address nothing listens on (bound, then closed).
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A TLS server that completes handshakes and records the SNI of each.
async fn tls_handshake_recorder(leaf: &Leaf) -> (SocketAddr, Arc<Mutex<Vec<Option<String>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(leaf.server_config(&[]));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, s) = (acceptor.clone(), s.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    let sni = tls.get_ref().1.server_name().map(str::to_string);
                    s.lock().unwrap().push(sni);
                }
            });
        }
    });
    (addr, seen)
}

// === tests ===

#[tokio::test]
async fn http_check_takes_a_stopped_backend_down_and_back_up() {
    let backend = backends::http("a").await;
    let addr = backend.addr;
    let run = start(table(vec![Spec::new(
        "a",
        &[addr],
        http_probe("/healthz", "probe.example.com"),
    )]));

    wait_count(&backend, 1).await;
    let probe = &backend.requests()[0];
    assert_eq!(probe.method, "HEAD");
    assert_eq!(probe.uri, "/healthz");
    assert_eq!(probe.headers["host"], "probe.example.com");
    assert_eq!(probe.headers["connection"], "close");
    assert!(run.health.is_healthy(addr));
    assert_eq!(run.gauge(addr).as_deref(), Some("1"));

    backend.stop().await;
    let stopped = Instant::now();
    run.until("the stopped backend is down", |h| !h.is_healthy(addr))
        .await;
    let took = stopped.elapsed();
    // fall 3 at 100 ms: ~300 ms; generous for a loaded 2-core machine.
    assert!(took < Duration::from_millis(1500), "down after {took:?}");
    assert_eq!(run.gauge(addr).as_deref(), Some("0"));

    // Restart on the same port (retrying while the old listener is being torn down).
    let mut listener = None;
    assert!(
        wait_until(DEADLINE, || {
            let got = std::net::TcpListener::bind(addr).ok();
            let ok = got.is_some();
            if let Some(l) = got {
                listener = Some(l);
            }
            async move { ok }
        })
        .await,
        "could not rebind {addr}"
    );
    let std_listener = listener.unwrap();
    std_listener.set_nonblocking(true).unwrap();
    let restarted = backends::http_on("a", TcpListener::from_std(std_listener).unwrap());
    run.until("the restarted backend is up", |h| h.is_healthy(addr))
        .await;
    assert!(restarted.count() >= 2, "rise 2 needs two good probes");
    assert_eq!(run.gauge(addr).as_deref(), Some("1"));
}

#[tokio::test]
async fn http_check_runs_inside_tls_for_reencrypt_upstreams() {
    let ca = Ca::new("backend ca");
    let leaf = ca.leaf(&["pod.internal"]);
    let backend = backends::tls("pod", &leaf, TlsOptions::default()).await;
    let _run = start(table(vec![
        Spec::new(
            "re",
            &[backend.addr],
            http_probe("/ready", "re.example.com"),
        )
        .protocol(UpstreamProtocol::Https(BackendTls {
            sni: "pod.internal".into(),
            verify: true,
            ca: None,
            ca_secret: None,
        })),
    ]));
    wait_count(&backend, 1).await;
    let probe = &backend.requests()[0];
    assert_eq!(probe.method, "HEAD");
    assert_eq!(probe.uri, "/ready");
    assert_eq!(probe.headers["host"], "re.example.com");
    assert_eq!(probe.sni.as_deref(), Some("pod.internal"));
}

#[tokio::test]
async fn tls_hello_check() {
    let ca = Ca::new("pod ca");
    let leaf = ca.leaf(&["secure.example.com"]);
    let (tls_addr, snis) = tls_handshake_recorder(&leaf).await;
    let plain = backends::http("plain").await;
    let closed = closed_port().await;
    let proxied = backends::tls(
        "proxied",
        &leaf,
        TlsOptions {
            expect_proxy_protocol: true,
        },
    )
    .await;
    let tls = HealthProbe::Tls {
        sni: "secure.example.com".into(),
    };
    let run = start(table(vec![
        Spec::new("tls", &[tls_addr, plain.addr, closed], tls.clone())
            .protocol(UpstreamProtocol::Tcp),
        Spec::new("proxied", &[proxied.addr], tls)
            .protocol(UpstreamProtocol::Tcp)
            .proxy(ProxyProtocol::V2),
    ]));

    run.until("plain HTTP and the closed port are down", |h| {
        !h.is_healthy(plain.addr) && !h.is_healthy(closed)
    })
    .await;
    // The TLS endpoint is probed as often (fall 3) and is still up.
    assert!(wait_until(DEADLINE, || async { snis.lock().unwrap().len() >= 3 }).await);
    let handshakes = snis.lock().unwrap().clone();
    assert!(
        handshakes
            .iter()
            .all(|s| s.as_deref() == Some("secure.example.com")),
        "{handshakes:?}"
    );
    assert!(run.health.is_healthy(tls_addr));
    // The backend that requires a PROXY header gets one with the probe, so it is up.
    assert!(run.health.is_healthy(proxied.addr));
}

#[tokio::test]
async fn tls_hello_check_without_the_proxy_header_fails() {
    let ca = Ca::new("pod ca");
    let leaf = ca.leaf(&["secure.example.com"]);
    let proxied = backends::tls(
        "proxied",
        &leaf,
        TlsOptions {
            expect_proxy_protocol: true,
        },
    )
    .await;
    let run = start(table(vec![
        Spec::new(
            "tls",
            &[proxied.addr],
            HealthProbe::Tls {
                sni: "secure.example.com".into(),
            },
        )
        .protocol(UpstreamProtocol::Tcp),
    ]));
    run.until("the backend expecting PROXY is down", |h| {
        !h.is_healthy(proxied.addr)
    })
    .await;
}

#[tokio::test]
async fn tcp_check() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap();
    let accepted = Arc::new(Mutex::new(0usize));
    let a = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            *a.lock().unwrap() += 1;
            drop(stream);
        }
    });
    let closed = closed_port().await;
    let run = start(table(vec![Spec::new(
        "tcp",
        &[open, closed],
        HealthProbe::Tcp,
    )]));
    run.until("the closed port is down", |h| !h.is_healthy(closed))
        .await;
    // The open port is probed as often; its accept loop may lag a little behind the probes.
    assert!(wait_until(DEADLINE, || async { *accepted.lock().unwrap() >= 3 }).await);
    assert!(run.health.is_healthy(open));
}

#[tokio::test]
async fn none_never_probes() {
    let quiet = backends::http("quiet").await;
    let busy = backends::http("busy").await;
    let run = start(table(vec![
        Spec::new("quiet", &[quiet.addr], HealthProbe::None),
        Spec::new("busy", &[busy.addr], http_probe("/", "busy.example.com"))
            .interval(Duration::from_millis(50)),
    ]));
    // Five probe rounds of the other upstream prove the checker has been running.
    wait_count(&busy, 5).await;
    assert_eq!(quiet.count(), 0);
    assert!(run.health.is_healthy(quiet.addr));
    assert_eq!(run.gauge(quiet.addr).as_deref(), Some("1"));
}

#[tokio::test]
async fn state_is_carried_across_a_swap_and_removed_probes_stop() {
    let dead = closed_port().await;
    let removed = backends::http("removed").await;
    let added = backends::http("added").await;
    let run = start(table(vec![Spec::new(
        "one",
        &[dead, removed.addr],
        http_probe("/", "one.example.com"),
    )]));
    run.until("the dead endpoint is down", |h| !h.is_healthy(dead))
        .await;
    assert!(run.gauge(removed.addr).is_some());

    // Table 2: `dead` again, under a different upstream with a different check (its probe task
    // restarts; a fresh state would be healthy until three probes failed); `removed` is gone;
    // `added` is new.
    run.handle.store(table(vec![
        Spec::new("two", &[dead], HealthProbe::Tcp),
        Spec::new("three", &[added.addr], http_probe("/", "three.example.com")),
    ]));
    let h = run.health.clone();
    let mut observations = 0;
    assert!(
        wait_until(DEADLINE, || {
            assert!(!h.is_healthy(dead), "state of {dead} was not carried over");
            observations += 1;
            let reconciled = added.count() >= 1;
            async move { reconciled }
        })
        .await
    );
    assert!(observations >= 1);
    assert!(!run.health.is_healthy(dead));

    // The removed endpoint's probe task has stopped: `added` keeps being probed, it does not.
    let before = removed.count();
    wait_count(&added, 6).await;
    assert!(
        removed.count() <= before + 1,
        "removed endpoint still probed: {before} -> {}",
        removed.count()
    );
    assert!(run.gauge(removed.addr).is_none(), "series not removed");
    assert_eq!(run.gauge(dead).as_deref(), Some("0"));
}

#[tokio::test]
async fn mark_failed_takes_an_endpoint_out_until_the_next_good_probe() {
    let backend = backends::http("b").await;
    let addr = backend.addr;
    let run = start(table(vec![
        Spec::new("b", &[addr], http_probe("/", "b.example.com"))
            .interval(Duration::from_millis(300)),
    ]));
    wait_count(&backend, 1).await;
    assert!(run.health.is_healthy(addr));

    let before = backend.count();
    run.health.mark_failed(addr);
    assert!(
        !run.health.is_healthy(addr),
        "passive failure must act at once"
    );
    run.until("a good probe brings it back", |h| h.is_healthy(addr))
        .await;
    // One good probe is enough after a passive failure (not rise 2).
    assert!(
        backend.count() <= before + 1,
        "took {} probes",
        backend.count() - before
    );
}
