//! What a route does to a request and its response besides choosing the upstream: the
//! per-Ingress behaviour ingress-nginx's annotations ask for (rewrites, headers, CORS, sticky
//! sessions, canaries, timeouts, error pages).
//!
//! One [`RoutePolicy`] per Ingress, shared (`Arc`) by all of its routes. Each field is `None`
//! or empty when the Ingress does not ask for it, so a route without these annotations costs
//! the proxy one pointer and a few `is_none` checks per request.

use serde::Serialize;

/// The per-Ingress request and response handling of a route.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoutePolicy {}

impl RoutePolicy {
    /// Lines for `check` and the admin API; empty when the policy is the default.
    pub(crate) fn describe(&self) -> Vec<String> {
        Vec::new()
    }
}
