//! What the status API reads from the health checker: per endpoint, up or down, whether it is
//! actively checked, requests in flight, and the last probe (when, how long, why it failed).
//!
//! The record is written once per probe (a small mutex per endpoint, never on the request
//! path); reading it is one map load and one lock per endpoint shown.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::state::EndpointState;
use super::{Health, ProbeError};
use crate::telemetry::status_api::{EndpointHealth, EndpointReport, ProbeReport};

/// Keeps the outcome of one finished probe as the endpoint's last.
pub(super) fn record_last_probe(
    state: &EndpointState,
    result: &Result<(), ProbeError>,
    latency: Duration,
) {
    let report = ProbeReport {
        at: SystemTime::now(),
        latency,
        ok: result.is_ok(),
        error: result.as_ref().err().map(ToString::to_string),
    };
    *state
        .last_probe
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(report);
}

impl EndpointHealth for Health {
    fn endpoint(&self, addr: SocketAddr) -> Option<EndpointReport> {
        let map = self.endpoints.load();
        let state = map.get(&addr)?;
        let last_probe = state
            .last_probe
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        Some(EndpointReport {
            up: state.is_up(|| self.now_ms()),
            probed: state.probed.load(Ordering::Acquire),
            in_flight: state.in_flight.load(Ordering::Relaxed),
            last_probe,
            traffic: state.traffic(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_state_and_the_last_probe() {
        let health = Health::new();
        let addr = SocketAddr::from(([10, 0, 0, 9], 80));
        assert_eq!(
            health.endpoint(addr),
            None,
            "unknown endpoints are not reported"
        );
        health.mark_failed(addr);
        let state = health.state(addr);
        record_last_probe(
            &state,
            &Err(ProbeError::Timeout(Duration::from_secs(1))),
            Duration::from_millis(1000),
        );
        let report = health.endpoint(addr).unwrap();
        assert!(!report.up);
        let probe = report.last_probe.unwrap();
        assert!(!probe.ok);
        assert!(probe.error.is_some());
        assert_eq!(probe.latency, Duration::from_millis(1000));
    }
}
