//! Soak: standalone mode in-process under mixed traffic while everything around it churns.
//!
//! For [`SOAK`] (15 s; up to 10 s more on a loaded machine, until 250 tables were built)
//! client tasks drive terminate (HTTPS and plain HTTP), pass-through and
//! re-encrypt requests on fresh connections, a keep-alive pass-through connection, and two
//! upgraded (websocket-style) connections, while a chaos task rewrites manifest files (hundreds
//! of table builds), rotates the certificate Secret, kills and restarts one of the two backends
//! of a Service, writes a broken YAML file and a broken Ingress, and sends garbage to both ports.
//!
//! Asserts:
//! - no failed request: every Service always has a healthy backend (only `web-b` is killed;
//!   `web-a` stays up), so every failure counts;
//! - every long-lived connection (keep-alive pass-through, upgraded) survives the whole run;
//! - no panic anywhere in the process (a panic hook counts them: with `panic = "abort"` a panic
//!   would be an outage);
//! - the tables the proxy served are freed once their last connection ends (`Weak`), and
//!   [`old_tables_are_freed_across_1000_swaps`] swaps 1 000 model-built tables through a
//!   `TableHandle` and checks that every old table is freed and RSS returns near its baseline.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use portcullis::model::{self, LastGood};
use portcullis::settings::BuildSettings;
use portcullis::source::Snapshot;
use portcullis::source::yaml::parse_manifest;
use portcullis::table::{RouteTable, TableHandle};
use support::backends::{self, Backend, TlsOptions};
use support::http::{Conn, Via, tls_connect, upgrade};
use support::in_process::{standalone_with, test_settings};
use support::pki::{Ca, Leaf};
use support::wait::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;

/// How long the traffic and the chaos run.
const SOAK: Duration = Duration::from_secs(15);
/// Per-request bound: a request slower than this is a failure.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The two tests of this file measure process-wide things (panics, RSS): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());
/// Panics anywhere in the process since [`count_panics`] was installed.
static PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

// === manifests ===

const CLASS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: portcullis\nspec:\n  controller: portcullis.io/ingress-controller\n";

/// A Service with one named port and one EndpointSlice per backend address (each backend
/// listens on its own port, as slices with different port sets do in a cluster).
fn service(name: &str, port_name: &str, backends: &[SocketAddr]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ports: [{{name: {port_name}, port: 80}}]\n"
    );
    for (i, addr) in backends.iter().enumerate() {
        out.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-{i}\n  namespace: default\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: {port_name}, port: {}}}]\nendpoints:\n  - addresses: [\"{}\"]\n    conditions: {{ready: true}}\n",
            addr.port(),
            addr.ip()
        ));
    }
    out
}

fn ingress(name: &str, host: &str, service: &str, annotations: &str, tls: bool) -> String {
    let tls = if tls {
        format!("  tls: [{{hosts: [{host}], secretName: front-tls}}]\n")
    } else {
        String::new()
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{{annotations}}}\nspec:\n  ingressClassName: portcullis\n{tls}  rules:\n  - host: {host}\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n"
    )
}

fn secret(leaf: &Leaf) -> String {
    leaf.secret_yaml("default", "front-tls")
}

/// The front's certificate: every terminated and re-encrypted host.
fn front_leaf(ca: &Ca) -> Leaf {
    ca.leaf(&["app.soak.test", "ws.soak.test", "re.soak.test"])
}

fn churn(i: usize) -> String {
    // A different table each time: a new host, and a path that moves.
    ingress(
        "churn",
        &format!("churn-{}.soak.test", i % 50),
        "web",
        &format!("portcullis.io/health-check-path: /churn/{i}"),
        false,
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write manifest");
}

// === clients ===

/// Outcome counters of one kind of traffic.
#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, what: &str, result: Result<(), String>) {
        match result {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut errors = self.errors.lock().expect("errors");
                if errors.len() < 20 {
                    errors.push(format!("{what}: {e}"));
                }
            }
        }
    }
}

/// A TLS connection to `addr` for `host`, verified by `ca` (ALPN http/1.1).
async fn tls_stream(addr: SocketAddr, ca: &Ca, host: &str) -> Result<TlsStream<TcpStream>, String> {
    tls_connect(addr, ca.client_config(&[b"http/1.1"]), host)
        .await
        .map_err(|e| format!("handshake: {e}"))
}

/// One GET on `conn`; the answer must be 200 from a backend whose name starts with `expect`.
async fn get_on(conn: &mut Conn, host: &str, expect: &str) -> Result<(), String> {
    let answer = conn.get(host, "/").await?;
    let body = answer.text();
    if answer.status != 200 || !body.starts_with(&format!("backend={expect}")) {
        return Err(format!("{}: {body}", answer.status));
    }
    Ok(())
}

/// One GET on a new HTTP/1.1-over-TLS connection, within [`REQUEST_TIMEOUT`].
async fn https_get(addr: SocketAddr, ca: &Ca, host: &str, expect: &str) -> Result<(), String> {
    within_request_timeout(async {
        let conn = Conn::try_connect(addr, ca, Via::Tls, host).await?;
        get_on(&mut conn.answer_deadline(REQUEST_TIMEOUT), host, expect).await
    })
    .await
}

/// One GET on a new plain HTTP/1.1 connection, within [`REQUEST_TIMEOUT`].
async fn http_get(addr: SocketAddr, host: &str, expect: &str) -> Result<(), String> {
    within_request_timeout(async {
        let conn = Conn::try_plain(addr).await?;
        get_on(&mut conn.answer_deadline(REQUEST_TIMEOUT), host, expect).await
    })
    .await
}

async fn within_request_timeout(
    work: impl Future<Output = Result<(), String>>,
) -> Result<(), String> {
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// An upgraded connection through the front to the echo backend.
async fn upgraded(addr: SocketAddr, ca: &Ca) -> Result<TlsStream<TcpStream>, String> {
    let mut tls = tls_stream(addr, ca, "ws.soak.test").await?;
    upgrade(&mut tls, "ws.soak.test", "/chat").await;
    Ok(tls)
}

async fn echo(io: &mut TlsStream<TcpStream>, n: usize) -> Result<(), String> {
    let message = format!("ping {n}");
    io.write_all(message.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    io.flush().await.map_err(|e| format!("flush: {e}"))?;
    let mut back = vec![0u8; message.len()];
    tokio::time::timeout(REQUEST_TIMEOUT, io.read_exact(&mut back))
        .await
        .map_err(|_| "echo timed out".to_string())?
        .map_err(|e| format!("read: {e}"))?;
    if back != message.as_bytes() {
        return Err(format!("echo {:?}", String::from_utf8_lossy(&back)));
    }
    Ok(())
}

/// Garbage for either port: random bytes, a truncated or junk-filled ClientHello, bad HTTP.
fn garbage(rng: &mut fastrand::Rng, hello: &[u8]) -> Vec<u8> {
    match rng.u8(0..5) {
        0 => (0..rng.usize(1..4096)).map(|_| rng.u8(..)).collect(),
        1 => hello[..rng.usize(1..hello.len())].to_vec(),
        2 => {
            let mut h = hello.to_vec();
            for _ in 0..8 {
                let i = rng.usize(..h.len());
                h[i] = rng.u8(..);
            }
            h
        }
        3 => b"GET / HTTP/1.1\r\nHost: app.soak.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
        _ => b"\x16\x03\x01\xff\xff".iter().copied().chain(std::iter::repeat_n(b'A', 3000)).collect(),
    }
}

async fn send_garbage(addr: SocketAddr, bytes: Vec<u8>) {
    let work = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let _ = stream.write_all(&bytes).await;
        let mut sink = [0u8; 1024];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        Some(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), work).await;
}

// === the soak ===

struct Backends {
    web_a: Backend,
    web_b: Option<Backend>,
    web_b_addr: SocketAddr,
    pt: Backend,
    re: Backend,
    ws: Backend,
}

async fn restart_on(addr: SocketAddr) -> Backend {
    for _ in 0..50 {
        if let Ok(listener) = TcpListener::bind(addr).await {
            return backends::http_on("web-b", listener);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("could not rebind {addr}");
}

#[test]
fn soak_mixed_traffic_while_everything_churns() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(soak());
}

async fn soak() {
    count_panics();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let started = Instant::now();

    let ca = Arc::new(Ca::new("soak CA"));
    let pt_leaf = ca.leaf(&["pt.soak.test"]);
    let re_leaf = ca.leaf(&["re.internal"]);
    let mut b = Backends {
        web_a: backends::http("web-a").await,
        web_b: Some(backends::http("web-b").await),
        web_b_addr: ([127, 0, 0, 1], 0).into(),
        pt: backends::tls("pt", &pt_leaf, TlsOptions::default()).await,
        re: backends::tls("re", &re_leaf, TlsOptions::default()).await,
        ws: backends::upgrade_echo("ws", None).await,
    };
    b.web_b_addr = b.web_b.as_ref().map(|w| w.addr).expect("web-b");

    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_path_buf();
    write(&d, "00-class.yaml", CLASS);
    write(
        &d,
        "10-services.yaml",
        &[
            service("web", "http", &[b.web_a.addr, b.web_b_addr]),
            service("pt", "https", &[b.pt.addr]),
            service("re", "https", &[b.re.addr]),
            service("ws", "http", &[b.ws.addr]),
        ]
        .join("---\n"),
    );
    write(&d, "20-secret.yaml", &secret(&front_leaf(&ca)));
    write(
        &d,
        "30-ingresses.yaml",
        &[
            ingress("app", "app.soak.test", "web", "", true),
            ingress(
                "ws",
                "ws.soak.test",
                "ws",
                "portcullis.io/health-check: tcp",
                true,
            ),
            ingress(
                "re",
                "re.soak.test",
                "re",
                "portcullis.io/tls-mode: reencrypt",
                true,
            ),
            ingress(
                "pt",
                "pt.soak.test",
                "pt",
                "portcullis.io/tls-mode: passthrough",
                false,
            ),
        ]
        .join("---\n"),
    );
    write(&d, "40-churn.yaml", &churn(0));

    let mut settings = test_settings();
    // Rebuild on nearly every write: hundreds of table swaps.
    settings.hold_off = Duration::from_millis(5);
    settings.max_delay = Duration::from_millis(20);
    let running = standalone_with(settings, &d).await;
    let addrs = running.addresses();
    let status = running.status().clone();

    // Every host answers before the clock starts.
    let ready = wait_until(Duration::from_secs(10), || {
        let ca = ca.clone();
        async move {
            https_get(addrs.https, &ca, "app.soak.test", "web-")
                .await
                .is_ok()
                && https_get(addrs.https, &ca, "pt.soak.test", "pt")
                    .await
                    .is_ok()
                && https_get(addrs.https, &ca, "re.soak.test", "re")
                    .await
                    .is_ok()
                && http_get(addrs.http, "app.soak.test", "web-").await.is_ok()
        }
    })
    .await;
    assert!(ready, "the hosts never all answered");
    let first_table: Weak<RouteTable> = Arc::downgrade(&running.table().load_full());
    let generation_before = status.generation();

    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Arc<[Tally; 5]> = Arc::new(Default::default());
    let names = [
        "terminate",
        "http",
        "passthrough",
        "reencrypt",
        "long-lived",
    ];
    let mut clients = Vec::new();

    // Fresh connections, one task per mode (terminate twice).
    for (slot, host, expect) in [
        (0, "app.soak.test", "web-"),
        (0, "app.soak.test", "web-"),
        (2, "pt.soak.test", "pt"),
        (3, "re.soak.test", "re"),
    ] {
        let (stop, tallies, ca) = (stop.clone(), tallies.clone(), ca.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = https_get(addrs.https, &ca, host, expect).await;
                tallies[slot].record(host, result);
            }
        }));
    }
    {
        let (stop, tallies) = (stop.clone(), tallies.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let result = http_get(addrs.http, "app.soak.test", "web-").await;
                tallies[1].record("http app.soak.test", result);
            }
        }));
    }
    // Long-lived: a keep-alive pass-through connection and two upgraded connections, used
    // every 100 ms for the whole run.
    let mut keep_alive = Conn::try_connect(addrs.https, &ca, Via::Tls, "pt.soak.test")
        .await
        .expect("http on a pass-through connection")
        .answer_deadline(REQUEST_TIMEOUT);
    let mut upgrades = Vec::new();
    for _ in 0..2 {
        upgrades.push(upgraded(addrs.https, &ca).await.expect("upgrade"));
    }
    let long_lived = {
        let (stop, tallies) = (stop.clone(), tallies.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let result = get_on(&mut keep_alive, "pt.soak.test", "pt").await;
                tallies[4].record("keep-alive pass-through", result);
                for io in &mut upgrades {
                    let result = echo(io, n).await;
                    tallies[4].record("upgraded", result);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (keep_alive, upgrades)
        })
    };
    // Garbage on both ports.
    let garbage_task = {
        let stop = stop.clone();
        let hello = support::http::client_hello_bytes(ca.client_config(&[b"h2"]), "app.soak.test");
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(7);
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let port = if rng.bool() { addrs.http } else { addrs.https };
                tokio::spawn(send_garbage(port, garbage(&mut rng, &hello)));
                sent += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };

    // The chaos, from this task.
    let chaos_start = Instant::now();
    let mut writes = 0usize;
    let mut rotations = 0usize;
    let mut restarts = 0usize;
    let mut tick = 0usize;
    // Run for SOAK, and on a loaded machine (slow writes, coalesced builds) a little longer until
    // at least 250 tables were built.
    while chaos_start.elapsed() < SOAK
        || (status.generation() - generation_before < 250
            && chaos_start.elapsed() < SOAK + Duration::from_secs(10))
    {
        tick += 1;
        writes += 1;
        write(&d, "40-churn.yaml", &churn(tick));
        if tick.is_multiple_of(60) {
            // Rotate the certificate Secret (same CA: clients keep verifying).
            write(&d, "20-secret.yaml", &secret(&front_leaf(&ca)));
            rotations += 1;
        }
        if tick % 50 == 25 {
            // Kill web-b; web-a stays up, so web requests must keep succeeding.
            b.web_b = None;
        }
        if tick % 50 == 40 {
            b.web_b = Some(restart_on(b.web_b_addr).await);
            restarts += 1;
        }
        match tick % 120 {
            30 => write(
                &d,
                "50-broken.yaml",
                "apiVersion: v1\nkind: [\n  garbage: {\n",
            ),
            60 => write(
                &d,
                "50-broken.yaml",
                &ingress(
                    "broken",
                    "app.soak.test",
                    "web",
                    "portcullis.io/tls-mode: sideways",
                    false,
                ),
            ),
            90 => {
                let _ = std::fs::remove_file(d.join("50-broken.yaml"));
            }
            _ => {}
        }
        // Longer than the watcher's 30 ms settle time, so (nearly) every write is a build.
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client task");
    }
    let (keep_alive, upgrades) = long_lived.await.expect("long-lived task");
    let garbage_sent = garbage_task.await.expect("garbage task");
    let builds = status.generation() - generation_before;

    let mut report = String::new();
    for (name, tally) in names.iter().zip(tallies.iter()) {
        report.push_str(&format!(
            "{name}: {} ok, {} failed {:?}\n",
            tally.ok.load(Ordering::SeqCst),
            tally.failed.load(Ordering::SeqCst),
            tally.errors.lock().expect("errors")
        ));
    }
    report.push_str(&format!(
        "{builds} builds, {writes} writes, {rotations} rotations, {restarts} restarts of web-b, {garbage_sent} garbage connections, {:?}\n",
        started.elapsed()
    ));
    eprintln!("{report}");

    for tally in tallies.iter() {
        assert_eq!(tally.failed.load(Ordering::SeqCst), 0, "{report}");
        assert!(tally.ok.load(Ordering::SeqCst) > 0, "{report}");
    }
    assert!(builds >= 200, "only {builds} builds: {report}");
    assert!(rotations >= 1 && restarts >= 2, "{report}");
    assert!(
        b.web_a.count() > 0
            && b.pt.connections() > 0
            && b.re.count() > 0
            && b.ws.connections() >= 2
    );

    // The first table lived as long as connections accepted with it (the long-lived ones);
    // once they close, it is freed.
    drop((keep_alive, upgrades));
    let freed = wait_until(Duration::from_secs(5), || {
        let gone = first_table.upgrade().is_none();
        async move { gone }
    })
    .await;
    assert!(
        freed,
        "the first table is still referenced after its connections closed"
    );

    running.shutdown().await.expect("shutdown");
    assert_eq!(
        PANICS.load(Ordering::SeqCst) - panics_before,
        0,
        "a panic happened during the soak"
    );
}

// === table swaps and memory ===

/// Resident set size of this process, from /proc/self/status.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// 50 Ingresses over 10 Services: a table of a realistic shape, a few hundred KiB.
fn swap_snapshot() -> Snapshot {
    let mut text = String::from(CLASS);
    for s in 0..10 {
        text.push_str("---\n");
        text.push_str(&service(
            &format!("svc{s}"),
            "http",
            &[([10, 0, 0, s as u8 + 1], 8080).into()],
        ));
    }
    for i in 0..50 {
        text.push_str("---\n");
        text.push_str(&ingress(
            &format!("ing{i}"),
            &format!("host-{i}.swap.test"),
            &format!("svc{}", i % 10),
            "",
            false,
        ));
    }
    parse_manifest("swap.yaml", &text)
        .expect("swap manifests")
        .into_iter()
        .collect()
}

#[test]
fn old_tables_are_freed_across_1000_swaps() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    count_panics();
    let panics_before = PANICS.load(Ordering::SeqCst);
    let snapshot = swap_snapshot();
    let settings = BuildSettings::default();
    let build = || model::build(&snapshot, &settings, &LastGood::default()).table;
    let handle: TableHandle = Arc::new(ArcSwap::new(build()));
    assert_eq!(handle.load().vhosts().len(), 50);

    // Calibrate: how much RSS do 200 tables kept alive cost? A leak of 1 000 must be far
    // above the bound below, or this test would prove nothing.
    let before_kept = rss_kib().expect("VmRSS");
    let kept: Vec<Arc<RouteTable>> = (0..200).map(|_| build()).collect();
    let kept_kib = rss_kib().expect("VmRSS").saturating_sub(before_kept);
    drop(kept);

    // "Connections": readers that load the current table and hold it a while, as the proxy
    // does per connection.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (handle, stop) = (handle.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut held = std::collections::VecDeque::new();
                while !stop.load(Ordering::Relaxed) {
                    held.push_back(handle.load_full());
                    if held.len() > 8 {
                        held.pop_front();
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        })
        .collect();

    let first = Arc::downgrade(&handle.load_full());
    let mut weaks: Vec<Weak<RouteTable>> = Vec::with_capacity(1000);
    let mut baseline = None;
    for i in 0..1000 {
        let table = build();
        weaks.push(Arc::downgrade(&table));
        handle.store(table);
        if i == 49 {
            // After a warm-up, so allocator pools and the readers' queues are at steady state.
            baseline = rss_kib();
        }
    }
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.join().expect("reader");
    }
    let after = rss_kib().expect("VmRSS");
    let baseline = baseline.expect("VmRSS");

    assert!(first.upgrade().is_none(), "the first table was not freed");
    let alive = weaks.iter().filter(|w| w.upgrade().is_some()).count();
    assert_eq!(alive, 1, "only the current table may be alive, {alive} are");

    // Bound: 20 MiB above the baseline. Glibc keeps freed memory in its arenas and RSS moves by
    // whole pages, so a healthy run drifts by a few MiB at most; leaking the 950 tables swapped
    // out after the baseline would cost 950/200 times the calibrated cost of 200 tables.
    let growth = after.saturating_sub(baseline);
    let leak_estimate = kept_kib * 950 / 200;
    eprintln!(
        "RSS baseline {baseline} KiB, after 1000 swaps {after} KiB (+{growth} KiB); 200 tables kept alive cost {kept_kib} KiB, so a full leak would be ~{leak_estimate} KiB"
    );
    assert!(growth < 20 * 1024, "RSS grew by {growth} KiB");
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        panics_before,
        "a panic happened"
    );
}
