//! Endpoint health: the registry of per-endpoint state, keyed by endpoint address so the state
//! survives table swaps (pingora-load-balancing's lesson), the public [`Health`] API the proxy
//! uses, and the watcher that keeps state and probe tasks in line with the live table.
//!
//! The rise/fall rules live in `state.rs` (pure, no I/O); the probes themselves and the choice
//! of check per endpoint live in `probe.rs`. Their public items are re-exported here, so
//! `crate::health::{RISE, FALL, ProbeError, ...}` keep working.
//!
//! # State
//! One endpoint state per endpoint `SocketAddr` in an `ArcSwap<HashMap<..>>`: the map is
//! rebuilt only when the set of endpoints changes (a table swap, or the first request to an
//! endpoint nobody has seen yet); everything per request ([`Health::is_healthy`],
//! [`HealthView::in_flight`], [`Health::begin_request`]) is an `ArcSwap` load, a hash lookup and
//! an atomic. Unknown endpoints are healthy. An endpoint shared by two upstreams is one state (it
//! is one pod).
//!
//! # Rules (HAProxy's defaults, `rise 2 fall 3`)
//! See `state.rs`: [`FALL`] failed probes take an endpoint down, `RISE` successes bring it
//! back; a passive failure ([`Health::mark_failed`]) takes it down at once, until the next
//! successful probe or, when unprobed, a cooldown (at least `MIN_INTERVAL` of `probe.rs`, or
//! `DEFAULT_PASSIVE_COOLDOWN` for endpoints the table does not name).
//!
//! # Probes
//! See `probe.rs`: one task per endpoint, every `interval`, with a timeout of at most
//! [`MAX_PROBE_TIMEOUT`]; HTTP (optionally inside TLS), TLS handshake, TCP or none, with a
//! PROXY header when the upstream sends one.
//!
//! # Watching the table
//! [`Health::run`] polls the `TableHandle` every [`WATCH_INTERVAL`] and compares the loaded
//! `Arc` and its endpoint revision (bumped by an endpoint update applied in place) with the
//! last ones reconciled: a pointer and a number compared, no lock, no coupling to the rebuild
//! loop. On a new table it reconciles: state kept for endpoints that stay, created
//! for new ones, dropped for removed ones; probe tasks started, restarted (when the check
//! changed) or stopped. An endpoint named by several upstreams gets one check (the
//! shared-endpoint rule in `probe.rs`).

mod probe;
mod report;
mod state;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::probe::{Check, ProbeSpec, ProbeTls, desired_probes, probe};
use self::state::{EndpointState, Transition, millis};
use crate::table::{FastMap, RouteTable, TableHandle};
use crate::telemetry::endpoint_traffic::{EndpointCounters, EndpointTraffic};
use crate::telemetry::metrics::Metrics;

pub(crate) use self::probe::{MAX_PROBE_TIMEOUT, ProbeError};
pub(crate) use self::state::FALL;

/// How often [`Health::run`] looks for a new table (and expires passive cooldowns).
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

// === impl Health ===

/// Looked up several times per request (pick, begin), keyed by the table's endpoints.
type EndpointMap = FastMap<SocketAddr, Arc<EndpointState>>;

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
            endpoints: ArcSwap::from_pointee(EndpointMap::default()),
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
pub(crate) struct InFlight {
    state: Arc<EndpointState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.state.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The endpoint's traffic counters, through the guard the proxy holds anyway: one atomic add
/// each, no map lookup.
impl InFlight {
    /// The endpoint sent a response head with `status`, after being sent a request body of
    /// `request_body` bytes (its `Content-Length`).
    pub(crate) fn answered(&self, status: u16, request_body: u64) {
        self.state.traffic.response(status);
        self.state.traffic.bytes(request_body, 0);
    }

    /// The exchange failed on the endpoint's side (reset, timeout).
    pub(crate) fn failed(&self) {
        self.state.traffic.error();
    }

    /// Ends the request (or tunnel, or pass-through connection), having carried `to_endpoint`
    /// bytes to the endpoint and `from_endpoint` back.
    pub(crate) fn finish(self, to_endpoint: u64, from_endpoint: u64) {
        self.state.traffic.bytes(to_endpoint, from_endpoint);
    }
}

/// A consistent, lock-free view of the health map for several lookups in a row (one pick):
/// one `ArcSwap` load instead of one per endpoint.
pub(crate) struct HealthView<'a> {
    health: &'a Health,
    map: arc_swap::Guard<Arc<EndpointMap>>,
}

impl HealthView<'_> {
    /// Whether `addr` may receive traffic. Unknown endpoints are healthy.
    pub(crate) fn is_healthy(&self, addr: SocketAddr) -> bool {
        self.map
            .get(&addr)
            .is_none_or(|s| s.is_up(|| self.health.now_ms()))
    }

    /// Requests in flight to `addr`.
    pub(crate) fn in_flight(&self, addr: SocketAddr) -> usize {
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
        let health = Arc::new(Health {
            metrics: Some(Arc::clone(&metrics)),
            ..Health::default()
        });
        let weak: Weak<dyn EndpointCounters> = Arc::downgrade(&health) as Weak<Health>;
        metrics.set_endpoint_counters(weak);
        health
    }

    /// A view for several lookups with one map load (used by `balance::pick`).
    pub(crate) fn view(&self) -> HealthView<'_> {
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
        // Every passive failure is a failed connect: one error of the endpoint.
        state.traffic.error();
        if let Some(t) = state.on_passive_failure(self.now_ms()) {
            self.report(
                addr,
                t,
                "passive failure (connection to the endpoint failed)",
            );
        }
    }

    /// Requests in flight to `addr`.
    #[cfg(test)]
    fn in_flight(&self, addr: SocketAddr) -> usize {
        self.view().in_flight(addr)
    }

    /// Counts an exchange with `addr` that failed after its connect (TLS, timeout, reset) as
    /// one error of the endpoint; endpoints the table does not name are not counted.
    pub(crate) fn count_error(&self, addr: SocketAddr) {
        if let Some(state) = self.endpoints.load().get(&addr) {
            state.traffic.error();
        }
    }

    /// Counts a request to `addr` as in flight until the guard drops.
    pub(crate) fn begin_request(self: &Arc<Self>, addr: SocketAddr) -> InFlight {
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
        // The table reconciled last, and how many endpoint updates it had then.
        let mut current: Option<(Arc<RouteTable>, u64)> = None;
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            let latest = table.load_full();
            // Read before reconciling: an update stored meanwhile is seen on the next round.
            let revision = latest.endpoint_revision();
            if !current
                .as_ref()
                .is_some_and(|(c, r)| Arc::ptr_eq(c, &latest) && *r == revision)
            {
                self.reconcile(&latest, &mut tasks, &tls);
                current = Some((latest, revision));
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

    fn record_probe(
        &self,
        state: &EndpointState,
        result: &Result<(), ProbeError>,
        latency: Duration,
    ) {
        report::record_last_probe(state, result, latency);
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
/// The per-endpoint metrics: every endpoint of the live table (and any the proxy met before
/// the health checker reconciled it), so series come and go with the table's endpoints.
impl EndpointCounters for Health {
    fn each_endpoint(&self, f: &mut dyn FnMut(SocketAddr, &EndpointTraffic)) {
        for (addr, state) in self.endpoints.load().iter() {
            f(*addr, &state.traffic());
        }
    }
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
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, probe(state.addr, &spec, &tls)).await {
            Ok(r) => r,
            Err(_) => Err(ProbeError::Timeout(timeout)),
        };
        health.record_probe(&state, &result, started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
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

    /// The per-endpoint families are read from the guards' atomics at scrape time, and only
    /// for endpoints the checker holds.
    #[test]
    fn endpoint_traffic_is_exported_per_endpoint() {
        let metrics = Arc::new(Metrics::new());
        let h = Health::with_metrics(Arc::clone(&metrics));
        let (a, b) = (addr(3), addr(4));
        let first = h.begin_request(a);
        first.answered(200, 10);
        first.finish(0, 300);
        let second = h.begin_request(a);
        second.answered(503, 0);
        h.mark_failed(b);
        h.count_error(b);
        let text = metrics.encode();
        for want in [
            r#"portcullis_upstream_requests_total{endpoint="10.0.0.1:3",class="2xx"} 1"#,
            r#"portcullis_upstream_requests_total{endpoint="10.0.0.1:3",class="5xx"} 1"#,
            r#"portcullis_upstream_requests_total{endpoint="10.0.0.1:4",class="2xx"} 0"#,
            r#"portcullis_upstream_errors_total{endpoint="10.0.0.1:4"} 2"#,
            r#"portcullis_upstream_errors_total{endpoint="10.0.0.1:3"} 0"#,
            r#"portcullis_upstream_bytes_total{endpoint="10.0.0.1:3",direction="to_endpoint"} 10"#,
            r#"portcullis_upstream_bytes_total{endpoint="10.0.0.1:3",direction="from_endpoint"} 300"#,
            r#"portcullis_upstream_active{endpoint="10.0.0.1:3"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == want), "missing {want} in\n{text}");
        }
        drop(second);
        let text = metrics.encode();
        assert!(text.contains(r#"portcullis_upstream_active{endpoint="10.0.0.1:3"} 0"#));
        // Gone from the checker (as when it leaves the table): gone from the exposition.
        h.endpoints.store(Arc::new(EndpointMap::default()));
        metrics.remove_upstream(a);
        metrics.remove_upstream(b);
        let text = metrics.encode();
        assert!(!text.contains("10.0.0.1:3"), "{text}");
        assert!(
            text.contains("# TYPE portcullis_upstream_requests counter"),
            "{text}"
        );
    }
}
