//! Config-change and scale benchmarks (issue 6, part 2). Not part of `cargo test`; run with
//! `cargo run --release --features bench --bin bench_scale -- <what>` (bench/run.sh does).
//!
//! - `scale`: 10 000 Ingresses (10 000 hosts, 20 000 paths, 10 000 Services with
//!   EndpointSlices, 2 000 TLS Secrets) generated in memory: `model::build` time (cold: every
//!   Secret parsed; warm: with the previous build's `LastGood`, as every rebuild after the
//!   first), RSS, and route lookup time at 100 vs 10 000 hosts.
//! - `scale-heap`: where `scale`'s memory goes, in heap bytes asked for (counted by the
//!   allocator wrapper below): the snapshot, a table with its LastGood, and the peak of a
//!   warm build while the previous table is live.
//! - `change-internal`: a running proxy fed by the real rebuild loop; 200 times, publish a
//!   snapshot with one Ingress changed (a new host) and time until the first request for the
//!   new host is answered by the proxy on a fresh connection. With the default 100 ms hold-off,
//!   changes back to back (each lands just after a build, so it waits for the trailing build)
//!   and isolated (each after the loop rested, so it is built at once); and with no hold-off
//!   (build + swap + first request only).
//! - `change-file`: the same through standalone mode end to end: write the changed manifest
//!   file (atomic rename), wait for the first request served from the new table.
//! - `swap-load`: 100 table swaps (one every 20 ms) while keep-alive clients and
//!   connection-per-request clients send requests: failed requests and latency percentiles.
//! - `cluster-churn`: cluster mode's path under EndpointSlice churn. The 10 000-Ingress objects
//!   of `scale` are listed into kube reflector stores (a `Writer` fed with the watcher events a
//!   reflector applies, `KubeSource::fed`), read by the `ClusterSource` cluster mode runs,
//!   built by the real rebuild loop (default hold-off 100 ms, max delay 1 s); then one
//!   EndpointSlice changes every 10 ms for 10 s (1 000 events), until the last change is
//!   live. Reports the process's CPU seconds (`getrusage`) and heap allocations (a counting
//!   wrapper around the global allocator, this binary only) over that run.
//!
//! Output: one markdown fragment per command on stdout (bench.py collects them).

use std::alloc::{GlobalAlloc, Layout};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use portcullis::health::Health;
use portcullis::model::{self, LastGood};
use portcullis::proxy::{self, Listeners, ProxyContext};
use portcullis::rebuild::{BuildReport, Observer, Rebuilder, Status, Update};
use portcullis::settings::{BuildSettings, Settings};
use portcullis::source::kubernetes::{ClusterSource, KubeSource};
use portcullis::source::{Snapshot, Source, snapshot_channel};
use portcullis::table::{HttpRoute, RouteTable, TableHandle};
use portcullis::telemetry::metrics::Metrics;

// The binary's allocator, so RSS and timings are the shipped ones; counted (two relaxed atomic
// adds per allocation) for `cluster-churn`.
#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap allocations (`alloc`, `alloc_zeroed` and `realloc` calls) and bytes requested.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

/// Heap bytes live (requested, not what mimalloc rounds them to) and the most live since
/// [`heap_reset_peak`]; kept only by `scale-heap` (a fetch_max per allocation would show in
/// the timed builds of `scale`).
static TRACK_HEAP: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static PEAK_BYTES: AtomicI64 = AtomicI64::new(0);

/// mimalloc, counting.
struct Counting;

fn count(bytes: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
}

fn track(delta: i64) {
    if TRACK_HEAP.load(Ordering::Relaxed) {
        let live = LIVE_BYTES.fetch_add(delta, Ordering::Relaxed) + delta;
        PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
    }
}

/// Live heap bytes now, in MB.
fn heap_live_mb() -> f64 {
    LIVE_BYTES.load(Ordering::Relaxed) as f64 / 1e6
}

/// The most heap bytes live since the last call, in MB; starts the next interval.
fn heap_reset_peak() -> f64 {
    let live = LIVE_BYTES.load(Ordering::Relaxed);
    PEAK_BYTES.swap(live, Ordering::Relaxed) as f64 / 1e6
}

// SAFETY: every call is passed on to mimalloc unchanged; counting touches no memory it returns.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        track(layout.size() as i64);
        // SAFETY: the caller's contract is mimalloc's.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        track(layout.size() as i64);
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        track(-(layout.size() as i64));
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        track(new_size as i64 - layout.size() as i64);
        // SAFETY: as above.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// `struct timeval` and `struct rusage` of Linux on 64-bit targets.
#[repr(C)]
#[derive(Default)]
struct Timeval {
    sec: i64,
    usec: i64,
}

#[repr(C)]
#[derive(Default)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    rest: [i64; 14],
}

unsafe extern "C" {
    fn getrusage(who: i32, usage: *mut Rusage) -> i32;
}

/// User and system CPU seconds of the whole process (every thread) so far.
fn cpu_seconds() -> (f64, f64) {
    const RUSAGE_SELF: i32 = 0;
    let mut usage = Rusage::default();
    // SAFETY: `usage` is a valid, writable `struct rusage`.
    let rc = unsafe { getrusage(RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    let secs = |t: &Timeval| t.sec as f64 + t.usec as f64 / 1e6;
    (secs(&usage.utime), secs(&usage.stime))
}

fn main() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let what = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "scale".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match what.as_str() {
        "scale" => scale(),
        "scale-heap" => scale_heap(),
        "change-internal" => runtime.block_on(change_internal()),
        "change-file" => runtime.block_on(change_file()),
        "swap-load" => runtime.block_on(swap_load()),
        "cluster-churn" => runtime.block_on(cluster_churn()),
        other => {
            eprintln!(
                "unknown benchmark {other:?}: scale, scale-heap, change-internal, change-file, swap-load, cluster-churn"
            );
            std::process::exit(2);
        }
    }
}

// === objects ===

fn from_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("valid object")
}

fn class() -> IngressClass {
    from_json(json!({
        "metadata": {"name": "portcullis",
                     "annotations": {"ingressclass.kubernetes.io/is-default-class": "true"}},
        "spec": {"controller": "portcullis.io/ingress-controller"}
    }))
}

fn service(ns: &str, name: &str) -> Service {
    from_json(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
}

fn slice(ns: &str, service: &str, addresses: &[String], port: u16) -> EndpointSlice {
    let endpoints: Vec<_> = addresses
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    from_json(json!({
        "metadata": {"name": format!("{service}-1"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port}],
        "endpoints": endpoints
    }))
}

fn tls_secret(ns: &str, name: &str, host: &str) -> Secret {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![host.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    from_json(json!({
        "metadata": {"name": name, "namespace": ns},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": cert.pem(), "tls.key": key.serialize_pem()}
    }))
}

/// An Ingress for `host` with paths `/` and `/api` to `service`, optionally with TLS.
fn ingress(ns: &str, name: &str, host: &str, service: &str, tls: Option<&str>) -> Ingress {
    let backend = json!({"service": {"name": service, "port": {"name": "http"}}});
    let mut spec = json!({
        "rules": [{"host": host, "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": backend},
            {"path": "/api", "pathType": "Prefix", "backend": backend}
        ]}}]
    });
    if let Some(secret) = tls {
        spec["tls"] = json!([{"hosts": [host], "secretName": secret}]);
    }
    from_json(json!({
        "metadata": {"name": name, "namespace": ns,
                     "annotations": {"portcullis.io/health-check": "none"}},
        "spec": spec
    }))
}

/// `n` Ingresses (one host and two paths each), one Service + EndpointSlice (3 endpoints) per
/// Ingress, TLS Secrets for the first `tls` of them; spread over 100 namespaces.
fn snapshot(n: usize, tls: usize) -> Snapshot {
    let (mut secrets, mut ingresses, mut services, mut slices) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let ns = format!("ns{}", i % 100);
        let host = format!("h{i}.scale.test");
        let svc = format!("svc{i}");
        let secret = (i < tls).then(|| format!("tls{i}"));
        if let Some(secret) = &secret {
            secrets.push(Arc::new(tls_secret(&ns, secret, &host)));
        }
        ingresses.push(Arc::new(ingress(
            &ns,
            &format!("ing{i}"),
            &host,
            &svc,
            secret.as_deref(),
        )));
        services.push(Arc::new(service(&ns, &svc)));
        let base = 10 + (i / 250) as u32;
        let addrs: Vec<String> = (0..3)
            .map(|k| format!("10.{}.{}.{}", base % 250, i % 250, 10 + k))
            .collect();
        slices.push(Arc::new(slice(&ns, &svc, &addrs, 8080)));
    }
    Snapshot {
        classes: vec![Arc::new(class())].into(),
        secrets: secrets.into(),
        ingresses: ingresses.into(),
        services: services.into(),
        endpoint_slices: slices.into(),
        ..Snapshot::default()
    }
}

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    percentile(v, 0.5)
}

// === scale ===

fn scale() {
    let settings = BuildSettings::default();
    let (rss0, _) = rss_kib();
    let t = Instant::now();
    let snap = snapshot(10_000, 2_000);
    let generate = t.elapsed();
    let (rss_snap, _) = rss_kib();

    let t = Instant::now();
    let built = model::build(&snap, &settings, &LastGood::default());
    let cold = t.elapsed();
    let errors: Vec<_> = built
        .diagnostics
        .iter()
        .filter(|d| d.severity == portcullis::table::diagnostic::Severity::Error)
        .collect();
    assert!(
        errors.is_empty(),
        "diagnostics: {:?}",
        &errors[..errors.len().min(3)]
    );
    assert_eq!(built.table.vhosts().len(), 10_000);
    let mut warm: Vec<f64> = Vec::new();
    let mut last = built.last_good.clone();
    let mut table = built.table;
    for _ in 0..5 {
        let t = Instant::now();
        let b = model::build(&snap, &settings, &last);
        warm.push(t.elapsed().as_secs_f64() * 1e3);
        last = b.last_good;
        table = b.table;
    }
    let warm_ms = median(&mut warm);
    let (rss_built, hwm) = rss_kib();

    // Lookups at 100 vs 10 000 hosts.
    let small = model::build(&snapshot(100, 20), &settings, &LastGood::default()).table;
    let lookup_small = lookups(&small, 100);
    let lookup_big = lookups(&table, 10_000);

    println!("### Scale: 10 000 Ingresses\n");
    println!(
        "10 000 Ingresses, 10 000 hosts, 20 000 paths, 10 000 Services + EndpointSlices (3 endpoints each), 2 000 TLS Secrets (distinct ECDSA certificates), generated in memory in {:.1} s.\n",
        generate.as_secs_f64()
    );
    println!("| measure | value | target |\n|---|---|---|");
    println!(
        "| `model::build`, cold (every Secret parsed) | {:.0} ms | — |",
        cold.as_secs_f64() * 1e3
    );
    println!(
        "| `model::build`, warm (with the previous build's LastGood; every rebuild after the first) | {warm_ms:.0} ms (median of 5) | ≤ 100 ms |"
    );
    println!(
        "| RSS before generating | {:.1} MB | — |",
        rss0 as f64 / 1024.0
    );
    println!(
        "| RSS with the snapshot (objects as parsed from the API) | {:.1} MB | — |",
        rss_snap as f64 / 1024.0
    );
    println!(
        "| RSS with snapshot + table + LastGood | {:.1} MB (peak {:.1} MB) | ≤ 150 MB |",
        rss_built as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    println!("| route lookup (`route_http`, host + path), 100 hosts | {lookup_small:.0} ns | — |");
    println!(
        "| route lookup (`route_http`, host + path), 10 000 hosts | {lookup_big:.0} ns | independent of the count |"
    );
    println!();
}

/// Where `scale`'s memory goes, in heap bytes the program asked for (RSS adds what the
/// allocator keeps): the snapshot, a table with its LastGood, and the peak of a warm build
/// while the previous table is still live (as it is in the proxy until the swap).
fn scale_heap() {
    TRACK_HEAP.store(true, Ordering::Relaxed);
    let settings = BuildSettings::default();
    let snap = snapshot(10_000, 2_000);
    let snapshot_mb = heap_live_mb();
    heap_reset_peak();
    let built = model::build(&snap, &settings, &LastGood::default());
    let cold_peak = heap_reset_peak();
    let after_cold = heap_live_mb();
    let warm = model::build(&snap, &settings, &built.last_good);
    let warm_peak = heap_reset_peak();
    let after_warm = heap_live_mb();
    drop(built);
    let one_table = heap_live_mb();
    drop(warm);
    let none = heap_live_mb();
    println!("### Scale: heap\n");
    println!("| heap live (bytes requested) | MB |\n|---|---|");
    println!("| snapshot | {snapshot_mb:.1} |");
    println!("| + table + LastGood (after the cold build) | {after_cold:.1} |");
    println!("| peak during the cold build | {cold_peak:.1} |");
    println!("| peak during a warm build, previous table live | {warm_peak:.1} |");
    println!("| both tables live | {after_warm:.1} |");
    println!("| one table (the previous dropped) | {one_table:.1} |");
    println!("| no table | {none:.1} |");
    println!();
}

/// Mean ns per `route_http` over a million lookups of existing hosts, random order.
fn lookups(table: &RouteTable, hosts: usize) -> f64 {
    let keys: Vec<String> = (0..4096)
        .map(|_| format!("h{}.scale.test", fastrand::usize(..hosts)))
        .collect();
    let paths = ["/", "/api/users", "/static/app.js"];
    let rounds = 1_000_000;
    let mut found = 0usize;
    let t = Instant::now();
    for i in 0..rounds {
        let host = &keys[i % keys.len()];
        if let HttpRoute::Upstream { .. } =
            table.route_http(Some(host.as_str()), paths[i % paths.len()])
        {
            found += 1;
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / rounds as f64;
    assert_eq!(found, rounds);
    ns
}

// === a backend and a tiny HTTP client ===

/// An HTTP/1.1 backend answering `200 ok` to everything.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"ok\n"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// One request on a fresh connection; the status code, or 0 when the connection failed.
async fn fresh_request(addr: SocketAddr, host: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return 0;
    };
    let _ = stream.set_nodelay(true);
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut buf = Vec::with_capacity(512);
    if stream.read_to_end(&mut buf).await.is_err() && buf.len() < 12 {
        return 0;
    }
    std::str::from_utf8(buf.get(9..12).unwrap_or_default())
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Polls with fresh connections until `host` is answered 200; returns when it was.
async fn until_served(addr: SocketAddr, host: &str, limit: Duration) -> Option<Instant> {
    let give_up = Instant::now() + limit;
    while Instant::now() < give_up {
        if fresh_request(addr, host).await == 200 {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    None
}

/// The small configuration the change benchmarks edit: one base Ingress plus the changed one.
fn small_snapshot(backend: SocketAddr, changed_host: &str) -> Snapshot {
    let ip = backend.ip().to_string();
    Snapshot {
        classes: vec![Arc::new(class())].into(),
        services: vec![Arc::new(service("bench", "be"))].into(),
        endpoint_slices: vec![Arc::new(slice("bench", "be", &[ip], backend.port()))].into(),
        ingresses: vec![
            Arc::new(ingress("bench", "base", "base.bench.test", "be", None)),
            Arc::new(ingress("bench", "changed", changed_host, "be", None)),
        ]
        .into(),
        ..Snapshot::default()
    }
}

struct InProcess {
    http: SocketAddr,
    table: TableHandle,
    _shutdown: watch::Sender<bool>,
}

async fn start_proxy(table: Arc<RouteTable>) -> (InProcess, watch::Receiver<bool>) {
    let http = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let https = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = http.local_addr().expect("addr");
    let https_port = https.local_addr().expect("addr").port();
    let (shutdown, rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    let ctx = Arc::new(ProxyContext::new(
        Health::with_metrics(metrics.clone()),
        metrics,
        portcullis::tls::self_signed::generate().expect("fallback certificate"),
        https_port,
        rx.clone(),
    ));
    let handle: TableHandle = Arc::new(ArcSwap::new(table));
    tokio::spawn(proxy::serve(
        Listeners { http, https },
        handle.clone(),
        ctx,
        rx.clone(),
    ));
    (
        InProcess {
            http: addr,
            table: handle,
            _shutdown: shutdown,
        },
        rx,
    )
}

fn summary(name: &str, samples: &mut [f64], target: &str) {
    samples.sort_by(f64::total_cmp);
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {target} |",
        samples.len(),
        percentile(samples, 0.5),
        percentile(samples, 0.99),
        samples.last().copied().unwrap_or(f64::NAN)
    );
}

// === change-internal ===

async fn change_internal() {
    let backend = backend().await;
    println!("### Change → serving\n");
    println!("| path | changes | p50 ms | p99 ms | max ms | target |\n|---|---|---|---|---|---|");
    // Back to back (each change sent as soon as the previous one is served, so each lands
    // just after a build: the trailing hold-off), isolated (each after the loop has rested for
    // the hold-off: the leading-edge build), and with no hold-off at all.
    let hold_off_ms = Duration::from_millis(100);
    for (hold_off, isolated) in [
        (hold_off_ms, false),
        (hold_off_ms, true),
        (Duration::ZERO, false),
    ] {
        let (proxy, shutdown) = start_proxy(Arc::new(RouteTable::default())).await;
        let settings = Settings {
            hold_off,
            ..Settings::default()
        };
        let status = Status::new();
        let (tx, source) =
            snapshot_channel(Some(Arc::new(small_snapshot(backend, "c0.bench.test"))));
        tokio::spawn(
            Rebuilder::new(&settings, proxy.table.clone(), status.clone()).run(source, shutdown),
        );
        until_served(proxy.http, "c0.bench.test", Duration::from_secs(10))
            .await
            .expect("first table live");
        let mut samples = Vec::new();
        for i in 1..=200 {
            let host = format!("c{i}.bench.test");
            let snap = Arc::new(small_snapshot(backend, &host));
            let t0 = Instant::now();
            tx.send(snap);
            let served = until_served(proxy.http, &host, Duration::from_secs(10))
                .await
                .expect("change served");
            samples.push((served - t0).as_secs_f64() * 1e3);
            if isolated {
                // Pacing, not synchronisation: let the loop rest past its hold-off.
                tokio::time::sleep(hold_off + Duration::from_millis(20)).await;
            }
        }
        let name = if hold_off.is_zero() {
            "internal: snapshot → rebuild loop with no hold-off → swap → first request".to_string()
        } else if isolated {
            format!(
                "internal: isolated change ({} ms after the previous build) → rebuild loop (default hold-off {} ms) → swap → first request",
                (hold_off + Duration::from_millis(20)).as_millis(),
                hold_off.as_millis()
            )
        } else {
            format!(
                "internal: snapshot → rebuild loop (default hold-off {} ms) → swap → first request",
                hold_off.as_millis()
            )
        };
        summary(
            &name,
            &mut samples,
            if hold_off.is_zero() {
                "—"
            } else {
                "≤ 100 ms"
            },
        );
    }
    println!();
}

// === change-file ===

fn write_atomic(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join(name)).expect("rename");
}

fn yaml_changed(host: &str) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: changed, namespace: bench, annotations: {{portcullis.io/health-check: "none"}}}}
spec:
  rules:
  - host: {host}
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: be, port: {{name: http}}}}}}}}]
"#
    )
}

async fn change_file() {
    let backend = backend().await;
    let dir = TempDir::new();
    let base = format!(
        r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: portcullis, annotations: {{ingressclass.kubernetes.io/is-default-class: "true"}}}}
spec: {{controller: portcullis.io/ingress-controller}}
---
apiVersion: v1
kind: Service
metadata: {{name: be, namespace: bench}}
spec: {{ports: [{{name: http, port: 80, targetPort: {port}}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: be-1, namespace: bench, labels: {{kubernetes.io/service-name: be}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["{ip}"], conditions: {{ready: true}}}}]
"#,
        port = backend.port(),
        ip = backend.ip()
    );
    write_atomic(dir.path(), "base.yaml", &base);
    write_atomic(dir.path(), "changed.yaml", &yaml_changed("c0.bench.test"));
    let settings = Settings {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        https_addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        ..Settings::default()
    };
    let running = portcullis::runtime::start_standalone(settings, dir.path())
        .await
        .expect("standalone start");
    let http = running.addresses().http;
    until_served(http, "c0.bench.test", Duration::from_secs(10))
        .await
        .expect("first table live");
    let mut samples = Vec::new();
    for i in 1..=200 {
        let host = format!("c{i}.bench.test");
        let t0 = Instant::now();
        write_atomic(dir.path(), "changed.yaml", &yaml_changed(&host));
        let served = until_served(http, &host, Duration::from_secs(10))
            .await
            .expect("change served");
        samples.push((served - t0).as_secs_f64() * 1e3);
    }
    println!("| path | changes | p50 ms | p99 ms | max ms | target |\n|---|---|---|---|---|---|");
    summary(
        "standalone: file written (atomic rename) → watcher → rebuild → first request",
        &mut samples,
        "≤ 1000 ms",
    );
    println!();
    let _ = running.shutdown().await;
}

/// A directory under the system temp dir, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let path = std::env::temp_dir().join(format!("portcullis-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// === swap-load ===

async fn swap_load() {
    let backend = backend().await;
    let table = move |i: usize| {
        model::build(
            &small_snapshot(backend, &format!("c{i}.bench.test")),
            &BuildSettings::default(),
            &LastGood::default(),
        )
        .table
    };
    let (proxy, _shutdown) = start_proxy(table(0)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    // 8 keep-alive clients and 4 that open a connection per request.
    for k in 0..12 {
        let (stop, failed, addr) = (stop.clone(), failed.clone(), proxy.http);
        clients.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            if k < 8 {
                keep_alive_client(addr, &stop, &failed, &mut latencies).await;
            } else {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if fresh_request(addr, "base.bench.test").await == 200 {
                        latencies.push(t.elapsed().as_secs_f64() * 1e3);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let t = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 1..=100 {
        // Build off the async threads, as the rebuild loop does, then swap.
        let next = tokio::task::spawn_blocking(move || table(i))
            .await
            .expect("build");
        proxy.table.store(next);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = t.elapsed();
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.expect("client"));
    }
    all.sort_by(f64::total_cmp);
    println!("### Swaps under load\n");
    println!(
        "| swaps | requests | failed | p50 ms | p99 ms | duration s |\n|---|---|---|---|---|---|"
    );
    println!(
        "| 100 (one per 20 ms) | {} | {} | {:.2} | {:.2} | {:.1} |",
        all.len(),
        failed.load(Ordering::Relaxed),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        elapsed.as_secs_f64()
    );
    println!(
        "\n8 keep-alive clients and 4 connection-per-request clients, in-process, against the base host while every swap changes the other Ingress; target: 0 failed.\n"
    );
}

async fn keep_alive_client(
    addr: SocketAddr,
    stop: &AtomicBool,
    failed: &AtomicU64,
    latencies: &mut Vec<f64>,
) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = TcpStream::connect(addr).await else {
            failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await
        else {
            failed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        tokio::spawn(conn);
        while !stop.load(Ordering::Relaxed) {
            let req = hyper::Request::get("/")
                .header("host", "base.bench.test")
                .body(Empty::new())
                .expect("request");
            let t = Instant::now();
            match sender.send_request(req).await {
                Ok(resp) if resp.status() == 200 => {
                    if resp.into_body().collect().await.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    latencies.push(t.elapsed().as_secs_f64() * 1e3);
                }
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
}

// === cluster-churn ===

/// Counts the snapshots the rebuild loop takes from its source.
struct CountPulls<S> {
    inner: S,
    pulls: Arc<AtomicU64>,
}

impl<S: Source> Source for CountPulls<S> {
    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.pulls.fetch_add(1, Ordering::Relaxed);
        self.inner.snapshot()
    }
}

/// What the rebuild loop reports of each change (build or endpoint update: its duration and
/// change-to-live), and the latest table (observers hear of a change after it is live).
#[derive(Default)]
struct Builds(std::sync::Mutex<(Vec<Reported>, Option<Arc<RouteTable>>)>);

/// How a change went live, how long the build or update took, and its change-to-live.
type Reported = (Update, Duration, Duration);

impl Observer for Builds {
    fn built(&self, report: &BuildReport) {
        if let Ok(mut builds) = self.0.lock() {
            builds
                .0
                .push((report.kind, report.build_duration, report.change_to_live));
            builds.1 = Some(report.built.table.clone());
        }
    }
}

impl Builds {
    /// Whether the latest reported table sends `host` to `endpoint`.
    fn serves(&self, host: &str, endpoint: SocketAddr) -> bool {
        let Ok(builds) = self.0.lock() else {
            return false;
        };
        builds
            .1
            .as_ref()
            .is_some_and(|table| serves(table, host, endpoint))
    }
}

/// The durations, in ms and sorted, of the reported builds (`builds`) or endpoint updates.
fn durations_ms(reports: &[Reported], builds: bool) -> Vec<f64> {
    let mut ms: Vec<f64> = reports
        .iter()
        .filter(|r| (r.0 == Update::Build) == builds)
        .map(|r| r.1.as_secs_f64() * 1e3)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// Whether `table` sends `host` to `endpoint`.
fn serves(table: &RouteTable, host: &str, endpoint: SocketAddr) -> bool {
    match table.route_http(Some(host), "/") {
        HttpRoute::Upstream { upstream, .. } => upstream.endpoints.load().ready.contains(&endpoint),
        _ => false,
    }
}

/// Cluster mode's source over the given stores, counting the snapshots taken: the one part of
/// this benchmark that depends on how the source hands objects to the rebuild loop.
fn cluster_source(kube: Arc<KubeSource>, pulls: Arc<AtomicU64>) -> impl Source {
    CountPulls {
        inner: ClusterSource::new(kube, None),
        pulls,
    }
}

async fn cluster_churn() {
    const CHANGES: usize = 1_000;
    const EVERY: Duration = Duration::from_millis(10);

    let t = Instant::now();
    let objects = snapshot(10_000, 2_000);
    let generate = t.elapsed();
    // The stores, listed as a reflector lists them.
    let (kube, mut feed) = KubeSource::fed();
    feed.classes
        .list(objects.classes.iter().map(|o| IngressClass::clone(o)));
    feed.ingresses
        .list(objects.ingresses.iter().map(|o| Ingress::clone(o)));
    feed.services
        .list(objects.services.iter().map(|o| Service::clone(o)));
    feed.endpoint_slices.list(
        objects
            .endpoint_slices
            .iter()
            .map(|o| EndpointSlice::clone(o)),
    );
    feed.tls_secrets
        .list(objects.secrets.iter().map(|o| Secret::clone(o)));
    feed.ca_secrets.list([]);
    feed.auth_secrets.list([]);
    feed.class_params.list([]);
    feed.config_maps.list([]);
    feed.namespaces.list([]);
    feed.without_gateway_api();
    let mut slices: Vec<EndpointSlice> = objects
        .endpoint_slices
        .iter()
        .map(|o| EndpointSlice::clone(o))
        .collect();
    drop(objects);

    let kube = Arc::new(kube);
    let pulls = Arc::new(AtomicU64::new(0));
    let builds = Arc::new(Builds::default());
    let settings = Settings::default();
    let table: TableHandle = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
    let status = Status::new();
    let (stop, stop_rx) = watch::channel(false);
    let rebuild = tokio::spawn(
        Rebuilder::new(&settings, table.clone(), status.clone())
            .with_observer(builds.clone())
            .run(cluster_source(kube.clone(), pulls.clone()), stop_rx),
    );
    let mut generation = status.subscribe();
    generation.wait_for(|g| *g >= 1).await.expect("first table");
    assert_eq!(table.load().vhosts().len(), 10_000);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // One snapshot of the stores, as the cluster path takes it: time and allocations. No store
    // changed since the loop's snapshot, so each kind's list is handed on (a changed kind is
    // read again: its cost shows in the isolated changes' store → live times below).
    let mut one_ms = Vec::new();
    let mut one_allocations = 0;
    for _ in 0..5 {
        let a = ALLOCATIONS.load(Ordering::Relaxed);
        let t = Instant::now();
        let taken = kube.snapshot();
        one_ms.push(t.elapsed().as_secs_f64() * 1e3);
        one_allocations = ALLOCATIONS.load(Ordering::Relaxed) - a;
        drop(taken);
    }
    let one_ms = median(&mut one_ms);

    let generation0 = status.generation();
    let pulls0 = pulls.load(Ordering::Relaxed);
    if let Ok(mut b) = builds.0.lock() {
        b.0.clear();
    }

    let (user0, sys0) = cpu_seconds();
    let allocations0 = ALLOCATIONS.load(Ordering::Relaxed);
    let bytes0 = ALLOCATED_BYTES.load(Ordering::Relaxed);
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(EVERY);
    let mut last = None;
    for i in 0..CHANGES {
        tick.tick().await;
        // A pod behind Service k replaced: the slice's first endpoint gets a new address.
        let k = (i * 7_919) % slices.len();
        let ip = format!("10.251.{}.{}", i / 250, i % 250);
        let changed = &mut slices[k];
        changed.endpoints[0].addresses = vec![ip.clone()];
        // The watcher yields a freshly decoded object per event; the reflector applies it.
        feed.endpoint_slices
            .apply(&kube::runtime::watcher::Event::Apply(changed.clone()));
        last = Some((k, ip));
    }
    let churn = t0.elapsed();
    let (k, ip) = last.expect("changes made");
    let host = format!("h{k}.scale.test");
    let endpoint: SocketAddr = format!("{ip}:8080").parse().expect("endpoint");
    let give_up = Instant::now() + Duration::from_secs(30);
    while !builds.serves(&host, endpoint) {
        assert!(Instant::now() < give_up, "the last change never went live");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let total = t0.elapsed();
    let (user1, sys1) = cpu_seconds();
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations0;
    let bytes = ALLOCATED_BYTES.load(Ordering::Relaxed) - bytes0;
    let generations = status.generation() - generation0;
    let pulls = pulls.load(Ordering::Relaxed) - pulls0;
    let reports = builds.0.lock().map(|b| b.0.clone()).unwrap_or_default();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let mut build_ms = durations_ms(&reports, true);
    let update_ms = durations_ms(&reports, false);

    // Isolated changes (the loop rested, as between the steps of most rollouts): from the
    // store's update to the live table sending the host to the new address.
    const ISOLATED: usize = 200;
    if let Ok(mut b) = builds.0.lock() {
        b.0.clear();
    }
    let mut live_ms = Vec::with_capacity(ISOLATED);
    for i in 0..ISOLATED {
        tokio::time::sleep(settings.hold_off + Duration::from_millis(20)).await;
        let k = (i * 7_919 + 13) % slices.len();
        let ip = format!("10.252.{}.{}", i / 250, i % 250);
        let changed = &mut slices[k];
        changed.endpoints[0].addresses = vec![ip.clone()];
        let host = format!("h{k}.scale.test");
        let endpoint: SocketAddr = format!("{ip}:8080").parse().expect("endpoint");
        generation.mark_unchanged();
        let t = Instant::now();
        feed.endpoint_slices
            .apply(&kube::runtime::watcher::Event::Apply(changed.clone()));
        // Woken by the generation the loop publishes (no polling: on two cores a spinning
        // poller would take the CPU the loop needs).
        let give_up = t + Duration::from_secs(5);
        while !serves(&table.load(), &host, endpoint) {
            let left = give_up.saturating_duration_since(Instant::now());
            let changed = tokio::time::timeout(left, generation.changed()).await;
            assert!(
                matches!(changed, Ok(Ok(()))),
                "an isolated change never went live"
            );
        }
        live_ms.push(ms(&t.elapsed()));
    }
    live_ms.sort_by(f64::total_cmp);
    // Observers hear of the last change just after it went live.
    let reported = || builds.0.lock().map(|b| b.0.len()).unwrap_or_default();
    let give_up = Instant::now() + Duration::from_secs(5);
    while reported() < ISOLATED && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let isolated = builds.0.lock().map(|b| b.0.clone()).unwrap_or_default();
    let isolated_update_ms = durations_ms(&isolated, false);
    let isolated_updates = isolated_update_ms.len();
    stop.send_replace(true);
    let _ = rebuild.await;

    let cpu = (user1 - user0) + (sys1 - sys0);
    println!("### Cluster mode under EndpointSlice churn\n");
    println!(
        "10 000 Ingresses (objects of `scale`, generated in {:.1} s) in kube reflector stores; {CHANGES} EndpointSlice updates, one every {} ms, through the stores, the cluster source and the rebuild loop (hold-off {} ms, max delay {} ms), until the last one is live.\n",
        generate.as_secs_f64(),
        EVERY.as_millis(),
        settings.hold_off.as_millis(),
        settings.max_delay.as_millis()
    );
    println!(
        "| run s | CPU s (user + sys) | allocations | allocated MB | snapshots taken | tables live | builds | endpoint updates | update p50 / p99 ms |\n|---|---|---|---|---|---|---|---|---|"
    );
    println!(
        "| {:.2} (changes {:.2}) | {cpu:.2} ({:.2} + {:.2}) | {allocations} | {:.0} | {pulls} | {generations} | {} | {} | {:.2} / {:.2} |",
        total.as_secs_f64(),
        churn.as_secs_f64(),
        user1 - user0,
        sys1 - sys0,
        bytes as f64 / 1e6,
        build_ms.len(),
        update_ms.len(),
        percentile(&update_ms, 0.5),
        percentile(&update_ms, 0.99),
    );
    if !build_ms.is_empty() {
        println!(
            "\nBuilds during the churn: p50 {:.0} ms.",
            median(&mut build_ms)
        );
    }
    println!(
        "\n{ISOLATED} isolated EndpointSlice changes (the loop rested): {isolated_updates} applied as endpoint updates (the update itself p50 {:.3} ms, p99 {:.3} ms); store update → live table serving the new address p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms.",
        percentile(&isolated_update_ms, 0.5),
        percentile(&isolated_update_ms, 0.99),
        percentile(&live_ms, 0.5),
        percentile(&live_ms, 0.99),
        live_ms.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "\nOne snapshot of the stores (`KubeSource::snapshot`, 32 001 objects) with no store changed since the last: {one_ms:.3} ms, {one_allocations} allocations.\n"
    );
}
