//! Choosing an endpoint of an upstream: round-robin, least-request or random, over healthy
//! endpoints only.
//!
//! INTERFACE STUB — owned by the health/balance work; replace the body.

use std::net::SocketAddr;

use crate::health::Health;
use crate::model::upstream::Upstream;

/// Picks an endpoint that is healthy and not in `tried` (endpoints that already failed for this
/// request). `None` when no endpoint qualifies: the caller answers 503.
pub fn pick(upstream: &Upstream, health: &Health, tried: &[SocketAddr]) -> Option<SocketAddr> {
    let _ = health;
    upstream
        .endpoints
        .iter()
        .copied()
        .find(|e| !tried.contains(e))
}
