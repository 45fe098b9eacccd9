//! What a route does to a request and its response besides choosing the upstream: the
//! per-Ingress behaviour ingress-nginx's annotations ask for (rewrites, headers, CORS, sticky
//! sessions, canaries, timeouts, error pages).
//!
//! One [`RoutePolicy`] per Ingress, shared (`Arc`) by all of its routes; Ingresses that ask
//! for none of it share one for the process ([`RoutePolicy::none`]). Each field is `None` or
//! empty when the Ingress does not ask for it, so a route without these annotations costs the
//! proxy one pointer and a few `is_none` checks per request.

use std::sync::{Arc, LazyLock};

use serde::Serialize;

/// The policy of every Ingress that asks for none of it: one allocation for the process.
static NONE: LazyLock<Arc<RoutePolicy>> = LazyLock::new(Default::default);

/// The per-Ingress request and response handling of a route.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoutePolicy {
    /// `enable-cors`: CORS preflights answered, CORS headers added (see `proxy::cors`).
    pub(crate) cors: Option<crate::table::cors::Cors>,
    /// `request-headers`: set on the request sent to the pod.
    pub(crate) request_headers: crate::table::headers::HeaderSet,
    /// `response-headers`: set on the response sent to the client.
    pub(crate) response_headers: crate::table::headers::HeaderSet,
    /// Gateway API header modifiers' `add` and `remove` (their `set` is in `request_headers`
    /// and `response_headers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) header_edits: Option<std::sync::Arc<crate::table::headers::HeaderEdits>>,
    /// `proxy-connect-timeout`, `proxy-read-timeout`, `proxy-send-timeout`.
    pub(crate) timeouts: crate::table::proxy_timeouts::ProxyTimeouts,
    /// `default-backend` and `custom-http-errors` (see `proxy::error_pages`).
    pub(crate) error_pages: Option<crate::table::error_pages::ErrorPages>,
    /// `rewrite-target`, `x-forwarded-prefix`, `upstream-vhost` (see `proxy::rewrite`).
    pub(crate) upstream_request: crate::table::rewrite::UpstreamRequest,
    /// `affinity: cookie` and `session-cookie-*` (see `proxy::affinity`).
    pub(crate) affinity: Option<crate::table::affinity::Affinity>,
    /// `auth-tls-*`: client certificates. Per host: the host's owner's is the one enforced
    /// (`VirtualHost::client_auth`, see `proxy::client_auth`); the model fills in the CA.
    pub(crate) client_auth: Option<std::sync::Arc<crate::table::client_auth::ClientAuth>>,
    /// `auth-type: basic`, `auth-secret`, `auth-realm` (see `proxy::basic_auth`).
    pub(crate) basic_auth: Option<crate::table::basic_auth::BasicAuth>,
    /// `limit-rps`, `limit-rpm`, `limit-connections` and their settings (see
    /// `proxy::rate_limit`).
    pub(crate) rate_limit: Option<crate::table::rate_limit::RateLimit>,
    /// `whitelist-source-range` / `allowlist-source-range` and `denylist-source-range`
    /// (see `proxy::source_ranges`). On a pass-through host, its `default_policy` carries them.
    pub(crate) source_ranges: Option<crate::table::source_ranges::SourceRanges>,
    /// `auth-url` and its settings: a subrequest decides (see `proxy::external_auth`).
    pub(crate) external_auth: Option<std::sync::Arc<crate::table::external_auth::ExternalAuth>>,
}

impl RoutePolicy {
    /// The policy that does nothing, shared: a table holds one policy per Ingress and one
    /// per host, most of them this one in a large cluster, and each costs ~830 bytes
    /// (33 MB of a 10 000-Ingress build's peak before they were shared).
    pub(crate) fn none() -> Arc<RoutePolicy> {
        Arc::clone(&NONE)
    }

    /// `policy` in an `Arc`: [`RoutePolicy::none`]'s when it is that policy.
    pub(crate) fn shared(policy: RoutePolicy) -> Arc<RoutePolicy> {
        if policy == **NONE {
            RoutePolicy::none()
        } else {
            Arc::new(policy)
        }
    }

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
        if let Some(edits) = &self.header_edits {
            lines.extend(edits.lines().into_iter().map(|l| format!("header {l}")));
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
        lines.extend(self.client_auth.as_ref().map(|a| a.describe()));
        lines.extend(
            self.source_ranges
                .as_ref()
                .map(crate::table::source_ranges::SourceRanges::describe),
        );
        lines.extend(
            self.rate_limit
                .as_ref()
                .map(crate::table::rate_limit::RateLimit::describe),
        );
        lines.extend(
            self.basic_auth
                .as_ref()
                .map(crate::table::basic_auth::BasicAuth::describe),
        );
        lines.extend(self.external_auth.as_ref().map(|a| a.describe()));
        lines
    }
}
