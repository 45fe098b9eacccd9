//! Endpoint health: active checks (HTTP, TLS hello, TCP) and passive failures, keyed by endpoint
//! address so the state survives table swaps.
//!
//! INTERFACE STUB — owned by the health/balance work; replace the body.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::watch;

use crate::table::TableHandle;

/// Health state of every endpoint the current table references.
#[derive(Default)]
pub struct Health {}

/// Held while a request is in flight to an endpoint (for least-request balancing).
pub struct InFlight {}

impl Health {
    /// Empty state: every endpoint is presumed healthy until a check says otherwise.
    pub fn new() -> Arc<Health> {
        Arc::new(Health {})
    }

    /// Whether `addr` may receive traffic. Unknown endpoints are healthy.
    pub fn is_healthy(&self, addr: SocketAddr) -> bool {
        let _ = addr;
        true
    }

    /// Passive check: a connect to `addr` failed; take it out until a check passes.
    pub fn mark_failed(&self, addr: SocketAddr) {
        let _ = addr;
    }

    /// Requests in flight to `addr`.
    pub fn in_flight(&self, addr: SocketAddr) -> usize {
        let _ = addr;
        0
    }

    /// Counts a request to `addr` as in flight until the guard drops.
    pub fn begin_request(self: &Arc<Self>, addr: SocketAddr) -> InFlight {
        let _ = addr;
        InFlight {}
    }

    /// Runs active checks for the endpoints of whatever table is current, until `shutdown`.
    pub async fn run(self: Arc<Self>, table: TableHandle, mut shutdown: watch::Receiver<bool>) {
        let _ = table;
        let _ = shutdown.wait_for(|stop| *stop).await;
    }
}
