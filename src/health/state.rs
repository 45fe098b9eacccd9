//! Rise/fall state of one endpoint: the pure state machine behind `Health`, with no
//! I/O, no clock of its own (callers pass "now" in milliseconds) and no knowledge of probes or
//! tables, so each rule can be tested on its own.
//!
//! # Rules (HAProxy's defaults, `rise 2 fall 3`)
//! - New endpoints start healthy.
//! - **Active down**: [`FALL`] consecutive failed probes take a healthy endpoint down.
//! - **Active up**: [`RISE`] consecutive successful probes bring it back.
//! - **Passive down** (`Health::mark_failed`, e.g. connection refused while proxying): takes a
//!   healthy endpoint down at once and resets its run of successes.
//!   - If the endpoint is actively checked, it stays down until the **next successful probe**
//!     (one success is enough; a failed probe in between turns it into an active down, which then
//!     needs [`RISE`] successes).
//!   - If it is not actively checked (probe `None`, or not reconciled yet), it comes back by
//!     itself after a cooldown: the upstream's check interval (at least `MIN_INTERVAL`), or
//!     [`DEFAULT_PASSIVE_COOLDOWN`] for endpoints the table does not (yet) name. Further failures
//!     during the cooldown extend it.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::telemetry::endpoint_traffic::{EndpointTraffic, class_index};
use crate::telemetry::status_api::ProbeReport;

/// Consecutive successful probes that bring an actively-failed endpoint back (`rise 2`).
const RISE: u32 = 2;
/// Consecutive failed probes that take a healthy endpoint down (`fall 3`).
pub(crate) const FALL: u32 = 3;
/// Passive cooldown of an endpoint the current table does not name (not reconciled yet).
const DEFAULT_PASSIVE_COOLDOWN: Duration = Duration::from_secs(5);

/// `down_until` value of a healthy endpoint.
const UP: u64 = 0;
/// `down_until` value of an endpoint that stays down until probes bring it back.
const UNTIL_PROBE: u64 = u64::MAX;

/// What is known about one endpoint. Hot-path fields are atomics; transitions take the small
/// mutex (probes and passive failures only).
#[derive(Debug)]
pub(super) struct EndpointState {
    pub(super) addr: SocketAddr,
    /// [`UP`], [`UNTIL_PROBE`], or a passive cooldown's end in ms since `Health::epoch`.
    down_until: AtomicU64,
    pub(super) in_flight: AtomicUsize,
    /// An active probe task runs for this endpoint.
    pub(super) probed: AtomicBool,
    /// Passive cooldown (ms) when not probed.
    cooldown_ms: AtomicU64,
    counters: Mutex<Counters>,
    /// The last active probe, for the status API (written by `Health::record_probe`).
    pub(super) last_probe: Mutex<Option<ProbeReport>>,
    /// What the proxy exchanged with the endpoint (the per-endpoint metrics).
    pub(super) traffic: Traffic,
}

/// Per-endpoint traffic counters: plain atomics, added to on the request path through the
/// `InFlight` guard the proxy already holds (no lookup, no lock), read at scrape time.
#[derive(Debug, Default)]
pub(super) struct Traffic {
    responses: [AtomicU64; 6],
    errors: AtomicU64,
    bytes_to: AtomicU64,
    bytes_from: AtomicU64,
}

impl Traffic {
    pub(super) fn response(&self, status: u16) {
        self.responses[class_index(status)].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn bytes(&self, to_endpoint: u64, from_endpoint: u64) {
        if to_endpoint > 0 {
            self.bytes_to.fetch_add(to_endpoint, Ordering::Relaxed);
        }
        if from_endpoint > 0 {
            self.bytes_from.fetch_add(from_endpoint, Ordering::Relaxed);
        }
    }
}

impl EndpointState {
    /// The endpoint's counters now.
    pub(super) fn traffic(&self) -> EndpointTraffic {
        let t = &self.traffic;
        EndpointTraffic {
            responses: std::array::from_fn(|i| t.responses[i].load(Ordering::Relaxed)),
            errors: t.errors.load(Ordering::Relaxed),
            bytes_to_endpoint: t.bytes_to.load(Ordering::Relaxed),
            bytes_from_endpoint: t.bytes_from.load(Ordering::Relaxed),
            active: self.in_flight.load(Ordering::Relaxed) as u64,
        }
    }
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
pub(super) enum Transition {
    Up,
    Down,
}

impl EndpointState {
    pub(super) fn new(addr: SocketAddr) -> Self {
        EndpointState {
            addr,
            down_until: AtomicU64::new(UP),
            in_flight: AtomicUsize::new(0),
            probed: AtomicBool::new(false),
            cooldown_ms: AtomicU64::new(millis(DEFAULT_PASSIVE_COOLDOWN)),
            counters: Mutex::new(Counters::default()),
            last_probe: Mutex::new(None),
            traffic: Traffic::default(),
        }
    }

    pub(super) fn is_up(&self, now_ms: impl FnOnce() -> u64) -> bool {
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
    pub(super) fn on_probe(&self, ok: bool) -> Option<Transition> {
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
    pub(super) fn on_passive_failure(&self, now_ms: u64) -> Option<Transition> {
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
    pub(super) fn expire_cooldown(&self, now_ms: u64) -> Option<Transition> {
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
    pub(super) fn unprobe(&self, cooldown: Duration) -> Option<Transition> {
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

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
