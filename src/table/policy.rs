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
pub struct RoutePolicy {
    /// `enable-cors`: CORS preflights answered, CORS headers added (see `proxy::cors`).
    pub(crate) cors: Option<crate::table::cors::Cors>,
    /// `request-headers`: set on the request sent to the pod.
    pub(crate) request_headers: crate::table::headers::HeaderSet,
    /// `response-headers`: set on the response sent to the client.
    pub(crate) response_headers: crate::table::headers::HeaderSet,
    /// `proxy-connect-timeout`, `proxy-read-timeout`, `proxy-send-timeout`.
    pub(crate) timeouts: crate::table::proxy_timeouts::ProxyTimeouts,
    /// `default-backend` and `custom-http-errors` (see `proxy::error_pages`).
    pub(crate) error_pages: Option<crate::table::error_pages::ErrorPages>,
    /// `rewrite-target`, `x-forwarded-prefix`, `upstream-vhost` (see `proxy::rewrite`).
    pub(crate) upstream_request: crate::table::rewrite::UpstreamRequest,
    /// `affinity: cookie` and `session-cookie-*` (see `proxy::affinity`).
    pub(crate) affinity: Option<crate::table::affinity::Affinity>,
}

impl RoutePolicy {
    /// Lines for `check` and the admin API; empty when the policy is the default.
    pub(crate) fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        lines.extend(self.cors.as_ref().map(crate::table::cors::Cors::describe));
        for (what, set) in [
            ("request", &self.request_headers),
            ("response", &self.response_headers),
        ] {
            lines.extend(
                set.lines()
                    .into_iter()
                    .map(|l| format!("{what} header: {l}")),
            );
        }
        lines.extend(self.timeouts.describe());
        lines.extend(
            self.error_pages
                .as_ref()
                .map(crate::table::error_pages::ErrorPages::describe),
        );
        lines.extend(self.upstream_request.describe());
        lines.extend(
            self.affinity
                .as_ref()
                .map(crate::table::affinity::Affinity::describe),
        );
        lines
    }
}
