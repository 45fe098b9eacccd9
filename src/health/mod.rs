//! Endpoint health: active checks (HTTP, TLS hello, TCP) and passive failures, keyed by endpoint
//! address so the state survives table swaps (pingora-load-balancing's lesson).
//!
//! # State
//! One [`EndpointState`] per endpoint `SocketAddr` in an `ArcSwap<HashMap<..>>`: the map is
//! rebuilt only when the set of endpoints changes (a table swap, or the first request to an
//! endpoint nobody has seen yet); everything per request ([`Health::is_healthy`],
//! [`Health::in_flight`], [`Health::begin_request`]) is an `ArcSwap` load, a hash lookup and an
//! atomic. Unknown endpoints are healthy. An endpoint shared by two upstreams is one state (it is
//! one pod).
//!
//! # Rules (HAProxy's defaults, `rise 2 fall 3`)
//! - New endpoints start healthy.
//! - **Active down**: [`FALL`] consecutive failed probes take a healthy endpoint down.
//! - **Active up**: [`RISE`] consecutive successful probes bring it back.
//! - **Passive down** ([`Health::mark_failed`], e.g. connection refused while proxying): takes a
//!   healthy endpoint down at once and resets its run of successes.
//!   - If the endpoint is actively checked, it stays down until the **next successful probe**
//!     (one success is enough; a failed probe in between turns it into an active down, which then
//!     needs [`RISE`] successes).
//!   - If it is not actively checked (probe `None`, or not reconciled yet), it comes back by
//!     itself after a cooldown: the upstream's check interval (at least [`MIN_INTERVAL`]), or
//!     [`DEFAULT_PASSIVE_COOLDOWN`] for endpoints the table does not (yet) name. Further failures
//!     during the cooldown extend it.
//!
//! # Probes
//! One task per endpoint, probing every `interval` with a timeout of `min(interval, 2 s)`
//! ([`MAX_PROBE_TIMEOUT`]):
//! - **HTTP**: raw `METHOD path HTTP/1.1` with `Host` and `Connection: close`; a 2xx or 3xx
//!   status line is healthy (HAProxy's `option httpchk`). For re-encrypt upstreams it runs inside
//!   TLS (SNI = the upstream's backend SNI, any certificate accepted).
//! - **TLS**: a real TLS 1.2/1.3 handshake with SNI; healthy when it completes (what
//!   `ssl-hello-chk` approximates with an SSLv3 hello). The certificate is not verified
//!   (pass-through backends hold their own certificates), but the handshake signature is.
//! - **TCP**: a connect.
//! - **None**: no task; the endpoint is up unless passively failed.
//!
//! When the upstream sends a PROXY protocol header, probes send one too (HAProxy's
//! `check-send-proxy`), or a backend that requires it would look dead.
//!
//! # Watching the table
//! [`Health::run`] polls the `TableHandle` every [`WATCH_INTERVAL`] and compares the loaded
//! `Arc` with the last one reconciled (`Arc::ptr_eq`): a pointer compare, no lock, no coupling to
//! the rebuild loop. On a new table it reconciles: state kept for endpoints that stay, created
//! for new ones, dropped for removed ones; probe tasks started, restarted (when the check
//! changed) or stopped.
//!
//! **Shared endpoints**: when several upstreams name the same endpoint with different checks,
//! the check of the upstream whose Service (`namespace`, `name`, `port`) sorts first wins; ties
//! (the same Service port with different annotations on different Ingresses) go to the smallest
//! check by (kind: HTTP < TLS < TCP < none, then its fields, then interval).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::table::upstream::{HealthProbe, ProxyProtocol, ServiceRef, UpstreamProtocol};
use crate::table::{RouteTable, TableHandle};
use crate::telemetry::metrics::Metrics;
use crate::tls::upstream::AcceptAnyServerCert;

/// Consecutive successful probes that bring an actively-failed endpoint back (`rise 2`).
pub const RISE: u32 = 2;
/// Consecutive failed probes that take a healthy endpoint down (`fall 3`).
pub const FALL: u32 = 3;
/// Upper bound of a probe's timeout; the timeout is `min(interval, MAX_PROBE_TIMEOUT)`.
pub const MAX_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest probe interval honoured (a zero interval would spin).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
/// How often [`Health::run`] looks for a new table (and expires passive cooldowns).
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);
/// Passive cooldown of an endpoint the current table does not name (not reconciled yet).
pub const DEFAULT_PASSIVE_COOLDOWN: Duration = Duration::from_secs(5);

/// `down_until` value of a healthy endpoint.
const UP: u64 = 0;
/// `down_until` value of an endpoint that stays down until probes bring it back.
const UNTIL_PROBE: u64 = u64::MAX;

/// Why an active probe failed (logged; the first failure that takes an endpoint down is logged
/// at info level with the transition).
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("TLS client configuration: {0}")]
    TlsConfig(String),
    #[error("sending the PROXY header: {0}")]
    Proxy(std::io::Error),
    #[error("HTTP exchange: {0}")]
    Io(std::io::Error),
    #[error("HTTP status {0} (want 2xx or 3xx)")]
    Status(u16),
    #[error("no HTTP status line in the response")]
    BadResponse,
    #[error("probe {field} {value:?} contains characters not allowed in a request line/header")]
    InvalidRequest { field: &'static str, value: String },
}

// === impl EndpointState ===

/// What is known about one endpoint. Hot-path fields are atomics; transitions take the small
/// mutex (probes and passive failures only).
#[derive(Debug)]
struct EndpointState {
    addr: SocketAddr,
    /// [`UP`], [`UNTIL_PROBE`], or a passive cooldown's end in ms since [`Health::epoch`].
    down_until: AtomicU64,
    in_flight: AtomicUsize,
    /// An active probe task runs for this endpoint.
    probed: AtomicBool,
    /// Passive cooldown (ms) when not probed.
    cooldown_ms: AtomicU64,
    counters: Mutex<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    successes: u32,
    failures: u32,
    /// Down because of a passive failure (one successful probe brings it back).
    passive: bool,
}

/// A health transition to log and export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transition {
    Up,
    Down,
}

impl EndpointState {
    fn new(addr: SocketAddr) -> Self {
        EndpointState {
            addr,
            down_until: AtomicU64::new(UP),
            in_flight: AtomicUsize::new(0),
            probed: AtomicBool::new(false),
            cooldown_ms: AtomicU64::new(millis(DEFAULT_PASSIVE_COOLDOWN)),
            counters: Mutex::new(Counters::default()),
        }
    }

    fn is_up(&self, now_ms: impl FnOnce() -> u64) -> bool {
        match self.down_until.load(Ordering::Acquire) {
            UP => true,
            UNTIL_PROBE => false,
            until => now_ms() >= until,
        }
    }

    fn counters(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies one active probe outcome.
    fn on_probe(&self, ok: bool) -> Option<Transition> {
        let mut c = self.counters();
        let down = self.down_until.load(Ordering::Acquire) != UP;
        if ok {
            c.failures = 0;
            c.successes = c.successes.saturating_add(1);
            if down && (c.passive || c.successes >= RISE) {
                c.passive = false;
                self.down_until.store(UP, Ordering::Release);
                return Some(Transition::Up);
            }
        } else {
            c.successes = 0;
            c.failures = c.failures.saturating_add(1);
            if down {
                // Failing actively too: only RISE successes bring it back now.
                c.passive = false;
                self.down_until.store(UNTIL_PROBE, Ordering::Release);
            } else if c.failures >= FALL {
                self.down_until.store(UNTIL_PROBE, Ordering::Release);
                return Some(Transition::Down);
            }
        }
        None
    }

    /// Applies one passive failure at `now_ms`.
    fn on_passive_failure(&self, now_ms: u64) -> Option<Transition> {
        let mut c = self.counters();
        c.successes = 0;
        let until = if self.probed.load(Ordering::Acquire) {
            UNTIL_PROBE
        } else {
            now_ms.saturating_add(self.cooldown_ms.load(Ordering::Relaxed).max(1))
        };
        match self.down_until.load(Ordering::Acquire) {
            UP => {
                c.passive = true;
                self.down_until.store(until, Ordering::Release);
                Some(Transition::Down)
            }
            UNTIL_PROBE => None,
            // In a cooldown: extend it.
            _ => {
                self.down_until.store(until, Ordering::Release);
                None
            }
        }
    }

    /// Ends an expired passive cooldown.
    fn expire_cooldown(&self, now_ms: u64) -> Option<Transition> {
        let mut c = self.counters();
        match self.down_until.load(Ordering::Acquire) {
            UP | UNTIL_PROBE => None,
            until if now_ms >= until => {
                c.passive = false;
                self.down_until.store(UP, Ordering::Release);
                Some(Transition::Up)
            }
            _ => None,
        }
    }

    /// The endpoint lost its active check: nothing would bring it back, so it is up.
    fn unprobe(&self, cooldown: Duration) -> Option<Transition> {
        let mut c = self.counters();
        self.probed.store(false, Ordering::Release);
        self.cooldown_ms.store(millis(cooldown), Ordering::Relaxed);
        c.successes = 0;
        c.failures = 0;
        if self.down_until.load(Ordering::Acquire) == UNTIL_PROBE {
            c.passive = false;
            self.down_until.store(UP, Ordering::Release);
            return Some(Transition::Up);
        }
        None
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX - 1)
}

// === impl Health ===

type EndpointMap = HashMap<SocketAddr, Arc<EndpointState>>;

/// Health state of every endpoint the current table references.
pub struct Health {
    endpoints: ArcSwap<EndpointMap>,
    metrics: Option<Arc<Metrics>>,
    /// Origin of the millisecond clock used for passive cooldowns.
    epoch: Instant,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            endpoints: ArcSwap::from_pointee(HashMap::new()),
            metrics: None,
            epoch: Instant::now(),
        }
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("endpoints", &self.endpoints.load().len())
            .finish_non_exhaustive()
    }
}

/// Held while a request is in flight to an endpoint (for least-request balancing).
#[derive(Debug)]
pub struct InFlight {
    state: Arc<EndpointState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A consistent, lock-free view of the health map for several lookups in a row (one pick):
/// one `ArcSwap` load instead of one per endpoint.
pub struct HealthView<'a> {
    health: &'a Health,
    map: arc_swap::Guard<Arc<EndpointMap>>,
}

impl HealthView<'_> {
    /// Whether `addr` may receive traffic. Unknown endpoints are healthy.
    pub fn is_healthy(&self, addr: SocketAddr) -> bool {
        self.map
            .get(&addr)
            .is_none_or(|s| s.is_up(|| self.health.now_ms()))
    }

    /// Requests in flight to `addr`.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        self.map
            .get(&addr)
            .map_or(0, |s| s.in_flight.load(Ordering::Relaxed))
    }
}

impl Health {
    /// Empty state: every endpoint is presumed healthy until a check says otherwise.
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// Like [`Health::new`], exporting `portcullis_upstream_healthy` through `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Arc<Health> {
        Arc::new(Health {
            metrics: Some(metrics),
            ..Health::default()
        })
    }

    /// A view for several lookups with one map load (used by `balance::pick`).
    pub fn view(&self) -> HealthView<'_> {
        HealthView {
            health: self,
            map: self.endpoints.load(),
        }
    }

    /// Whether `addr` may receive traffic. Unknown endpoints are healthy.
    pub fn is_healthy(&self, addr: SocketAddr) -> bool {
        self.view().is_healthy(addr)
    }

    /// Passive check: a connect to `addr` failed; take it out until a check passes (see the
    /// module docs for the exact rule).
    pub fn mark_failed(&self, addr: SocketAddr) {
        let state = self.state(addr);
        if let Some(t) = state.on_passive_failure(self.now_ms()) {
            self.report(
                addr,
                t,
                "passive failure (connection to the endpoint failed)",
            );
        }
    }

    /// Requests in flight to `addr`.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        self.view().in_flight(addr)
    }

    /// Counts a request to `addr` as in flight until the guard drops.
    pub fn begin_request(self: &Arc<Self>, addr: SocketAddr) -> InFlight {
        let state = self.state(addr);
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { state }
    }

    /// Runs active checks for the endpoints of whatever table is current, until `shutdown`
    /// turns true (or its sender is dropped). Probe tasks stop with it.
    pub async fn run(self: Arc<Self>, table: TableHandle, mut shutdown: watch::Receiver<bool>) {
        let tls = ProbeTls::new().map(Arc::new).map_err(|e| e.to_string());
        if let Err(e) = &tls {
            tracing::error!(error = %e, "TLS client for health checks unavailable; TLS probes will fail");
        }
        let mut tasks = ProbeTasks::default();
        let mut current: Option<Arc<RouteTable>> = None;
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let latest = table.load_full();
            if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, &latest)) {
                self.reconcile(&latest, &mut tasks, &tls);
                current = Some(latest);
            }
            self.expire_cooldowns();
            tokio::select! {
                _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
        }
        drop(tasks);
    }

    // --- internals ---

    fn now_ms(&self) -> u64 {
        millis(self.epoch.elapsed())
    }

    /// The state of `addr`, created (healthy) when unknown.
    fn state(&self, addr: SocketAddr) -> Arc<EndpointState> {
        if let Some(s) = self.endpoints.load().get(&addr) {
            return Arc::clone(s);
        }
        let fresh = Arc::new(EndpointState::new(addr));
        let mut winner = None;
        self.endpoints.rcu(|current| {
            let mut next = EndpointMap::clone(current);
            winner = Some(Arc::clone(
                next.entry(addr).or_insert_with(|| Arc::clone(&fresh)),
            ));
            next
        });
        let state = winner.unwrap_or_else(|| Arc::clone(&fresh));
        if Arc::ptr_eq(&state, &fresh)
            && let Some(m) = &self.metrics
        {
            m.upstream_health(addr, true);
        }
        state
    }

    fn record_probe(&self, state: &EndpointState, result: &Result<(), ProbeError>) {
        if let Err(e) = result {
            tracing::debug!(endpoint = %state.addr, error = %e, "health probe failed");
        }
        if let Some(t) = state.on_probe(result.is_ok()) {
            let why = match result {
                Ok(()) => "active check passed".to_string(),
                Err(e) => format!("{FALL} active checks failed, last: {e}"),
            };
            self.report(state.addr, t, &why);
        }
    }

    fn report(&self, addr: SocketAddr, t: Transition, why: &str) {
        let healthy = t == Transition::Up;
        if healthy {
            tracing::info!(endpoint = %addr, reason = why, "endpoint is up");
        } else {
            tracing::info!(endpoint = %addr, reason = why, "endpoint is down");
        }
        if let Some(m) = &self.metrics {
            m.upstream_health(addr, healthy);
        }
    }

    fn expire_cooldowns(&self) {
        let map = self.endpoints.load();
        let now = self.now_ms();
        for state in map.values() {
            if let Some(t) = state.expire_cooldown(now) {
                self.report(state.addr, t, "passive cooldown over");
            }
        }
    }

    /// Brings state and probe tasks in line with `table`.
    fn reconcile(
        self: &Arc<Self>,
        table: &RouteTable,
        tasks: &mut ProbeTasks,
        tls: &Result<Arc<ProbeTls>, String>,
    ) {
        let desired = desired_probes(table);
        let previous = self.endpoints.rcu(|current| {
            desired
                .keys()
                .map(|addr| {
                    let state = current
                        .get(addr)
                        .cloned()
                        .unwrap_or_else(|| Arc::new(EndpointState::new(*addr)));
                    (*addr, state)
                })
                .collect::<EndpointMap>()
        });
        let map = self.endpoints.load_full();
        for addr in previous.keys().filter(|a| !map.contains_key(a)) {
            tracing::debug!(endpoint = %addr, "endpoint left the table; health state dropped");
            if let Some(m) = &self.metrics {
                m.remove_upstream(*addr);
            }
        }
        tasks.retain(|addr| map.contains_key(addr));

        let (mut started, mut kept) = (0usize, 0usize);
        for (addr, spec) in &desired {
            let Some(state) = map.get(addr) else { continue };
            if !previous.contains_key(addr)
                && let Some(m) = &self.metrics
            {
                m.upstream_health(*addr, state.is_up(|| self.now_ms()));
            }
            if spec.check == Check::None {
                tasks.stop(addr);
                if let Some(t) = state.unprobe(spec.interval) {
                    self.report(*addr, t, "active check removed");
                }
                continue;
            }
            if tasks.runs(addr, spec) {
                kept += 1;
                continue;
            }
            state.probed.store(true, Ordering::Release);
            let task = tokio::spawn(probe_loop(
                Arc::clone(self),
                Arc::clone(state),
                spec.clone(),
                tls.clone(),
            ));
            tasks.insert(*addr, spec.clone(), task);
            started += 1;
        }
        tracing::debug!(
            endpoints = map.len(),
            probes_started = started,
            probes_kept = kept,
            "health checks reconciled with a new routing table"
        );
    }
}

// === probe specs ===

/// The check of one endpoint, in a form with a total order (for the shared-endpoint rule).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Check {
    Http {
        method: String,
        path: String,
        host: String,
        /// `Some(sni)` for re-encrypt upstreams: HTTP inside TLS.
        tls_sni: Option<String>,
    },
    Tls {
        sni: String,
    },
    Tcp,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ProbeSpec {
    check: Check,
    interval: Duration,
    proxy: Option<ProxyProtocol>,
}

/// The check of every endpoint of `table`, one per endpoint (see the shared-endpoint rule).
fn desired_probes(table: &RouteTable) -> BTreeMap<SocketAddr, ProbeSpec> {
    let mut chosen: BTreeMap<SocketAddr, (&ServiceRef, ProbeSpec)> = BTreeMap::new();
    for upstream in table.upstreams() {
        let check = match &upstream.health.probe {
            HealthProbe::Http { method, path, host } => Check::Http {
                method: method.clone(),
                path: path.clone(),
                host: host.clone(),
                tls_sni: match &upstream.protocol {
                    UpstreamProtocol::Https(tls) => Some(tls.sni.clone()),
                    UpstreamProtocol::Http | UpstreamProtocol::Tcp => None,
                },
            },
            HealthProbe::Tls { sni } => Check::Tls { sni: sni.clone() },
            HealthProbe::Tcp => Check::Tcp,
            HealthProbe::None => Check::None,
        };
        let spec = ProbeSpec {
            check,
            interval: upstream.health.interval.max(MIN_INTERVAL),
            proxy: upstream.proxy_protocol,
        };
        // Terminating endpoints are probed too: they are the fallback when no ready one is
        // healthy, and a dead fallback must not be picked.
        for addr in upstream.endpoints.iter().chain(&upstream.terminating) {
            match chosen.get(addr) {
                Some((service, current)) if (*service, current) <= (&upstream.service, &spec) => {}
                _ => {
                    chosen.insert(*addr, (&upstream.service, spec.clone()));
                }
            }
        }
    }
    chosen
        .into_iter()
        .map(|(addr, (_, spec))| (addr, spec))
        .collect()
}

// === probe tasks ===

struct ProbeTask {
    spec: ProbeSpec,
    handle: JoinHandle<()>,
}

/// The running probe tasks; aborts them all when dropped (shutdown, or `run` cancelled).
#[derive(Default)]
struct ProbeTasks(HashMap<SocketAddr, ProbeTask>);

impl ProbeTasks {
    fn runs(&self, addr: &SocketAddr, spec: &ProbeSpec) -> bool {
        self.0.get(addr).is_some_and(|t| t.spec == *spec)
    }

    fn insert(&mut self, addr: SocketAddr, spec: ProbeSpec, handle: JoinHandle<()>) {
        if let Some(old) = self.0.insert(addr, ProbeTask { spec, handle }) {
            old.handle.abort();
        }
    }

    fn stop(&mut self, addr: &SocketAddr) {
        if let Some(old) = self.0.remove(addr) {
            old.handle.abort();
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&SocketAddr) -> bool) {
        self.0.retain(|addr, task| {
            let k = keep(addr);
            if !k {
                task.handle.abort();
            }
            k
        });
    }
}

impl Drop for ProbeTasks {
    fn drop(&mut self) {
        for task in self.0.values() {
            task.handle.abort();
        }
    }
}

async fn probe_loop(
    health: Arc<Health>,
    state: Arc<EndpointState>,
    spec: ProbeSpec,
    tls: Result<Arc<ProbeTls>, String>,
) {
    let timeout = spec.interval.min(MAX_PROBE_TIMEOUT);
    // Spread probes of many endpoints a little (up to a tenth of the interval).
    let jitter = millis(spec.interval) / 10;
    if jitter > 0 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..jitter))).await;
    }
    let mut ticker = tokio::time::interval(spec.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let result = match tokio::time::timeout(timeout, probe(state.addr, &spec, &tls)).await {
            Ok(r) => r,
            Err(_) => Err(ProbeError::Timeout(timeout)),
        };
        health.record_probe(&state, &result);
    }
}

/// One probe of `addr`, without its timeout.
async fn probe(
    addr: SocketAddr,
    spec: &ProbeSpec,
    tls: &Result<Arc<ProbeTls>, String>,
) -> Result<(), ProbeError> {
    let mut tcp = TcpStream::connect(addr)
        .await
        .map_err(ProbeError::Connect)?;
    let _ = tcp.set_nodelay(true);
    if let Some(version) = spec.proxy {
        send_proxy_header(&mut tcp, version, addr).await?;
    }
    let tls_config = |alpn_http: bool| -> Result<Arc<rustls::ClientConfig>, ProbeError> {
        match tls {
            Ok(t) if alpn_http => Ok(Arc::clone(&t.https)),
            Ok(t) => Ok(Arc::clone(&t.hello)),
            Err(e) => Err(ProbeError::TlsConfig(e.clone())),
        }
    };
    match &spec.check {
        Check::Tcp | Check::None => Ok(()),
        Check::Tls { sni } => {
            let mut stream = tls_connect(tcp, sni, addr, tls_config(false)?).await?;
            // Polite close (close_notify); the handshake already proved the point.
            let _ = stream.shutdown().await;
            Ok(())
        }
        Check::Http {
            method,
            path,
            host,
            tls_sni,
        } => {
            let request = http_request(method, path, host)?;
            match tls_sni {
                None => http_exchange(tcp, &request).await,
                Some(sni) => {
                    let stream = tls_connect(tcp, sni, addr, tls_config(true)?).await?;
                    http_exchange(stream, &request).await
                }
            }
        }
    }
}

/// The probe request: `METHOD path HTTP/1.1`, `Host`, `Connection: close`.
fn http_request(method: &str, path: &str, host: &str) -> Result<String, ProbeError> {
    let invalid = |field: &'static str, value: &str| ProbeError::InvalidRequest {
        field,
        value: value.to_string(),
    };
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(invalid("method", method));
    }
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("path", path));
    }
    if !host.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("host", host));
    }
    Ok(format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: portcullis-health-check\r\nAccept: */*\r\n\r\n"
    ))
}

/// Sends `request` and reads the status line; 2xx/3xx is healthy.
async fn http_exchange<S>(mut stream: S, request: &str) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(ProbeError::Io)?;
    stream.flush().await.map_err(ProbeError::Io)?;
    let mut buf = [0u8; 256];
    let mut len = 0;
    while len < buf.len() && !buf[..len].contains(&b'\n') {
        let n = stream.read(&mut buf[len..]).await.map_err(ProbeError::Io)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    let status = parse_status(&buf[..len]).ok_or(ProbeError::BadResponse)?;
    if (200..400).contains(&status) {
        Ok(())
    } else {
        Err(ProbeError::Status(status))
    }
}

/// The status code of an `HTTP/1.x NNN ...` status line.
fn parse_status(head: &[u8]) -> Option<u16> {
    let rest = head.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

/// Writes a PROXY protocol header for this probe connection (source = our socket).
async fn send_proxy_header(
    tcp: &mut TcpStream,
    version: ProxyProtocol,
    dst: SocketAddr,
) -> Result<(), ProbeError> {
    let src = tcp.local_addr().map_err(ProbeError::Proxy)?;
    let header = crate::wire::proxy_protocol::encode(version, src, dst);
    tcp.write_all(&header).await.map_err(ProbeError::Proxy)
}

// === TLS for probes ===

/// Client configurations for TLS probes: certificates are not verified (see the module docs).
struct ProbeTls {
    /// TLS hello check: no ALPN.
    hello: Arc<rustls::ClientConfig>,
    /// HTTP inside TLS (re-encrypt upstreams): ALPN `http/1.1`.
    https: Arc<rustls::ClientConfig>,
}

impl ProbeTls {
    fn new() -> Result<ProbeTls, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let build = |alpn: Option<&[u8]>| -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(Arc::clone(
                    &provider,
                ))))
                .with_no_client_auth();
            // Every probe does a full handshake: resumption would prove less.
            config.resumption = rustls::client::Resumption::disabled();
            config.alpn_protocols = alpn.into_iter().map(<[u8]>::to_vec).collect();
            Ok(Arc::new(config))
        };
        Ok(ProbeTls {
            hello: build(None)?,
            https: build(Some(b"http/1.1"))?,
        })
    }
}

/// Connects TLS over `tcp` with `sni` (an IP address or an invalid name sends no SNI).
async fn tls_connect(
    tcp: TcpStream,
    sni: &str,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeError> {
    let name = ServerName::try_from(sni.to_string())
        .unwrap_or_else(|_| ServerName::IpAddress(addr.ip().into()));
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(ProbeError::Tls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::diagnostic::ObjectRef;
    use crate::table::host::HostMatch;
    use crate::table::route::{PathMatch, Route, TlsMode};
    use crate::table::upstream::{Cursor, HealthCheck, LoadBalance, ServicePortRef, Upstream};
    use crate::table::{CertificateChoice, ClassSettings, VirtualHost};

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn fall_three_rise_two() {
        let s = EndpointState::new(addr(1));
        s.probed.store(true, Ordering::Release);
        assert_eq!(s.on_probe(false), None);
        assert_eq!(s.on_probe(false), None);
        assert!(s.is_up(|| 0));
        assert_eq!(s.on_probe(false), Some(Transition::Down));
        assert!(!s.is_up(|| 0));
        assert_eq!(s.on_probe(true), None);
        assert!(!s.is_up(|| 0));
        assert_eq!(s.on_probe(true), Some(Transition::Up));
        assert!(s.is_up(|| 0));
    }

    #[test]
    fn a_success_resets_the_failure_run() {
        let s = EndpointState::new(addr(1));
        s.on_probe(false);
        s.on_probe(false);
        s.on_probe(true);
        s.on_probe(false);
        s.on_probe(false);
        assert!(s.is_up(|| 0));
    }

    #[test]
    fn passive_failure_of_a_probed_endpoint_needs_one_probe() {
        let s = EndpointState::new(addr(1));
        s.probed.store(true, Ordering::Release);
        assert_eq!(s.on_passive_failure(0), Some(Transition::Down));
        assert!(!s.is_up(|| u64::MAX - 1), "no cooldown when probed");
        assert_eq!(s.on_probe(true), Some(Transition::Up));
    }

    #[test]
    fn passive_then_active_failure_needs_rise() {
        let s = EndpointState::new(addr(1));
        s.probed.store(true, Ordering::Release);
        s.on_passive_failure(0);
        assert_eq!(s.on_probe(false), None);
        assert_eq!(s.on_probe(true), None);
        assert_eq!(s.on_probe(true), Some(Transition::Up));
    }

    #[test]
    fn passive_failure_of_an_unprobed_endpoint_cools_down() {
        let s = EndpointState::new(addr(1));
        s.cooldown_ms.store(1000, Ordering::Relaxed);
        assert_eq!(s.on_passive_failure(500), Some(Transition::Down));
        assert!(!s.is_up(|| 1499));
        assert!(s.is_up(|| 1500));
        // A failure during the cooldown extends it.
        assert_eq!(s.on_passive_failure(1200), None);
        assert!(!s.is_up(|| 1500));
        assert_eq!(s.expire_cooldown(1500), None);
        assert_eq!(s.expire_cooldown(2200), Some(Transition::Up));
    }

    #[test]
    fn unknown_endpoints_are_healthy_and_counted() {
        let h = Health::new();
        let a = addr(2);
        assert!(h.is_healthy(a));
        assert_eq!(h.in_flight(a), 0);
        let g1 = h.begin_request(a);
        let g2 = h.begin_request(a);
        assert_eq!(h.in_flight(a), 2);
        drop(g1);
        assert_eq!(h.in_flight(a), 1);
        drop(g2);
        assert_eq!(h.in_flight(a), 0);
        h.mark_failed(a);
        assert!(!h.is_healthy(a));
    }

    fn upstream(name: &str, endpoints: &[SocketAddr], probe: HealthProbe) -> Arc<Upstream> {
        Arc::new(Upstream {
            service: ServiceRef {
                namespace: "default".into(),
                name: name.into(),
                port: ServicePortRef::Number(80),
            },
            endpoints: endpoints.to_vec(),
            terminating: Vec::new(),
            protocol: UpstreamProtocol::Http,
            balance: LoadBalance::RoundRobin,
            health: HealthCheck {
                probe,
                interval: Duration::from_secs(5),
            },
            proxy_protocol: None,
            cursor: Cursor::default(),
        })
    }

    fn table_of(upstreams: Vec<(&str, Arc<Upstream>)>) -> RouteTable {
        let vhosts = upstreams
            .into_iter()
            .map(|(host, upstream)| {
                let owner = ObjectRef::namespaced("Ingress", "default", host);
                VirtualHost {
                    host: HostMatch::Exact(host.into()),
                    tls_mode: TlsMode::Terminate,
                    certificate: CertificateChoice::Default,
                    ssl_redirect: false,
                    hsts: None,
                    forwarded_headers: true,
                    routes: vec![Route {
                        path: PathMatch::prefix("/"),
                        upstream,
                        source: owner.clone(),
                    }],
                    default_backend: None,
                    passthrough: None,
                    owner,
                }
            })
            .collect();
        RouteTable::new(vhosts, None, Vec::new(), ClassSettings::default())
    }

    #[test]
    fn shared_endpoint_takes_the_check_of_the_first_service() {
        let shared = addr(80);
        let z = upstream("zeta", &[shared, addr(81)], HealthProbe::Tcp);
        let a = upstream("alpha", &[shared], HealthProbe::None);
        // Host order puts zeta's host first; the Service name decides, not the host.
        let t = table_of(vec![("a.example.com", z), ("b.example.com", a)]);
        let probes = desired_probes(&t);
        assert_eq!(probes[&shared].check, Check::None);
        assert_eq!(probes[&addr(81)].check, Check::Tcp);
        // Same Service port, two checks: the smaller check wins (HTTP < TLS < TCP < none).
        let t = table_of(vec![
            (
                "a.example.com",
                upstream("web", &[shared], HealthProbe::Tcp),
            ),
            (
                "b.example.com",
                upstream("web", &[shared], HealthProbe::Tls { sni: "x".into() }),
            ),
        ]);
        assert_eq!(
            desired_probes(&t)[&shared].check,
            Check::Tls { sni: "x".into() }
        );
    }

    #[test]
    fn terminating_endpoints_are_probed() {
        let (ready, draining) = (addr(90), addr(91));
        let mut u = Upstream::clone(&upstream("web", &[ready], HealthProbe::Tcp));
        u.terminating = vec![draining];
        let t = table_of(vec![("a.example.com", Arc::new(u))]);
        let probes = desired_probes(&t);
        assert_eq!(probes[&ready].check, Check::Tcp);
        assert_eq!(probes[&draining].check, Check::Tcp);
        assert_eq!(t.endpoints(), vec![ready, draining]);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 302 Found\r\n"), Some(302));
        assert_eq!(parse_status(b"HTTP/1.1 2"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    #[test]
    fn probe_requests_reject_injection() {
        assert!(http_request("HEAD", "/healthz", "a.example.com").is_ok());
        assert!(http_request("HEAD", "/x\r\nEvil: 1", "a").is_err());
        assert!(http_request("HEAD", "/", "a\r\nEvil: 1").is_err());
        assert!(http_request("GE T", "/", "a").is_err());
        assert!(http_request("GET", "x", "a").is_err());
    }
}
