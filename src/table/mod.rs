//! The routing table: immutable, built by `model::build`, swapped whole into the proxy.
//!
//! Lookups are hash-map hits (exact host, then the one-label wildcard parent), then a scan of
//! that host's few paths: never a scan over all Ingresses.

pub mod affinity;
pub mod basic_auth;
pub mod canary;
pub mod certificates;
pub mod client_auth;
pub mod cors;
pub mod describe;
pub mod diagnostic;
pub mod error_pages;
pub mod external_auth;
pub mod headers;
pub mod host;
pub mod policy;
pub mod proxy_timeouts;
pub mod rate_limit;
pub mod request_match;
pub mod rewrite;
pub mod route;
pub mod source_ranges;
pub mod split;
pub mod upstream;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use serde::Serialize;

use crate::table::certificates::Certificate;
use crate::table::diagnostic::ObjectRef;
use crate::table::host::{HostMatch, wildcard_parent};
use crate::table::policy::RoutePolicy;
use crate::table::route::{Route, RouteAction, TlsMode};
use crate::table::upstream::Upstream;

/// The table the proxy serves from. One `Arc` per connection; swapping never touches open ones.
pub type TableHandle = Arc<ArcSwap<RouteTable>>;

/// Which certificate a terminated host presents.
#[derive(Debug, Clone, PartialEq)]
pub enum CertificateChoice {
    /// From the Ingress `spec.tls` Secret, or a `--cert-dir` file whose SANs cover the host.
    Own(Certificate),
    /// None of its own: the default certificate (a diagnostic says so).
    Default,
}

/// Everything the proxy needs for one host (or for the catch-all, `HostMatch::Any`).
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualHost {
    pub host: HostMatch,
    pub tls_mode: TlsMode,
    pub certificate: CertificateChoice,
    /// :80 answers 308 to https (`ssl-redirect`).
    pub ssl_redirect: bool,
    /// `Strict-Transport-Security` value added to HTTPS responses: the header value itself,
    /// made once per build (a clone per request is a reference-count increment).
    pub hsts: Option<http::HeaderValue>,
    /// Add `X-Forwarded-*` and `Forwarded` (default on).
    pub forwarded_headers: bool,
    /// Sorted by precedence: the first that matches wins (longest path; Exact before Prefix).
    pub routes: Vec<Route>,
    /// `spec.defaultBackend` of the (oldest) Ingress that defines this host.
    pub default_backend: Option<Arc<Upstream>>,
    /// What a request served by `default_backend` gets (that Ingress's redirect annotations).
    pub default_action: RouteAction,
    /// The body size limit of requests served by `default_backend` (that Ingress's
    /// `proxy-body-size`).
    pub default_max_body: Option<u64>,
    /// The [`RoutePolicy`] of requests served by `default_backend` (that Ingress's). On a
    /// pass-through host, the allow/deny lists of the Ingress that gives its backend.
    pub default_policy: Arc<RoutePolicy>,
    /// `from-to-www-redirect`: this host exists only to redirect. Every request gets `308` to
    /// the same path and query on this host name (the Ingress's own host, `www.` added or
    /// removed), before any route; `routes` is empty.
    pub www_redirect: Option<String>,
    /// Pass-through hosts: where the encrypted bytes go.
    pub passthrough: Option<Arc<Upstream>>,
    /// A TLSRoute's weighted backendRefs: each connection's upstream (`passthrough` is one of
    /// them), or its refusal for an invalid backendRef's share.
    pub passthrough_split: Option<Arc<split::WeightedSplit>>,
    /// The Ingress that owns the host's TLS mode (the oldest).
    pub owner: ObjectRef,
    /// `auth-tls-*` of the owner: client certificates asked for in the handshake and judged
    /// per request (`proxy::client_auth`). `None`: no client certificate asked for.
    pub client_auth: Option<Arc<crate::table::client_auth::ClientAuth>>,
}

/// The answer to an HTTP request's host and path.
#[derive(Debug)]
pub enum HttpRoute<'a> {
    /// Proxy to this upstream, or answer as `action` says.
    Upstream {
        vhost: &'a VirtualHost,
        upstream: &'a Arc<Upstream>,
        action: &'a RouteAction,
        /// Requests with a larger body get `413`.
        max_body: Option<u64>,
        /// The rest of the route's request and response handling.
        policy: &'a Arc<RoutePolicy>,
        /// The matched route (its path, its canary); `None` for the host's default backend.
        route: Option<&'a Route>,
    },
    /// The host exists but no path and no default backend matches: 404 (redirects still apply).
    NoPath { vhost: &'a VirtualHost },
    /// No host matches and there is no catch-all: 404.
    NoHost,
}

/// Class-wide settings from IngressClassParams, typed and defaulted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassSettings {
    pub tls_min_version_1_3: bool,
    /// Cipher suites by IANA name; empty = rustls' defaults.
    pub cipher_suites: Vec<String>,
    pub post_quantum: bool,
    pub trusted_proxy_protocol: Vec<IpNet>,
    pub trusted_forwarded: Vec<IpNet>,
    pub timeouts: TimeoutSettings,
    pub limits: LimitSettings,
}

/// Timeouts with their defaults (see `crd::Timeouts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeoutSettings {
    pub client_hello: Duration,
    pub header_read: Duration,
    /// An HTTP keep-alive connection with no request in flight.
    pub idle: Duration,
    /// A byte tunnel (pass-through stream, upgraded websocket) with no byte either way. Long by
    /// default (HAProxy's `timeout tunnel`): a websocket or a TLS stream may rightly sit
    /// quiet for minutes, and closing it costs the client a reconnect.
    pub tunnel_idle: Duration,
    pub connect: Duration,
    pub upstream_response: Duration,
}

/// Limits with their defaults (see `crd::Limits`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LimitSettings {
    pub max_connections: u32,
    pub max_header_bytes: u32,
    pub max_client_hello_bytes: u32,
    /// Status of a request over `limit-rps` / `limit-rpm` (ingress-nginx's
    /// `limit-req-status-code`).
    pub rate_limit_status: u16,
    /// Status of a request over `limit-connections` (`limit-conn-status-code`).
    pub connection_limit_status: u16,
}

impl Default for TimeoutSettings {
    fn default() -> Self {
        TimeoutSettings {
            client_hello: Duration::from_secs(10),
            header_read: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            tunnel_idle: Duration::from_secs(60 * 60),
            connect: Duration::from_secs(5),
            upstream_response: Duration::from_secs(60),
        }
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_connections: 50_000,
            max_header_bytes: 65_536,
            max_client_hello_bytes: 16_384,
            rate_limit_status: 503,
            connection_limit_status: 503,
        }
    }
}

impl Default for ClassSettings {
    fn default() -> Self {
        ClassSettings {
            tls_min_version_1_3: false,
            cipher_suites: Vec::new(),
            post_quantum: true,
            trusted_proxy_protocol: Vec::new(),
            trusted_forwarded: Vec::new(),
            timeouts: TimeoutSettings::default(),
            limits: LimitSettings::default(),
        }
    }
}

/// The immutable routing table.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteTable {
    /// Looked up on every request ([`FastMap`]: a client's `Host` is only looked up).
    exact: FastMap<String, Arc<VirtualHost>>,
    /// Keyed by the wildcard's parent domain: `*.example.com` → `example.com`.
    wildcard: FastMap<String, Arc<VirtualHost>>,
    /// Rules without a host, and the default backend for hosts nobody claims.
    catch_all: Option<Arc<VirtualHost>>,
    /// Parents of wildcard hosts that match one or more labels in an HTTP `Host` (Gateway
    /// API's wildcards; an Ingress's match exactly one). SNI still matches one label, as
    /// RFC 2818 says of certificates.
    deep_wildcards: std::collections::HashSet<String>,
    /// `--default-certificate` or IngressClassParams `defaultCertificate`; when `None` the proxy
    /// uses its own self-signed certificate.
    pub(crate) default_certificate: Option<Certificate>,
    /// Certificates from `--cert-dir`, chosen by SAN for hosts without their own.
    pub cert_dir: Vec<Certificate>,
    pub(crate) class: ClassSettings,
    /// Counts the endpoint updates applied to this table in place, so that what watches the
    /// table (health checks) notices them without a new table.
    endpoint_revision: Revision,
}

/// A map keyed by what the cluster's objects say (host names, endpoint addresses, object
/// names), hashed with foldhash instead of SipHash. A keyed hash defends a map against keys an
/// attacker picks; these keys come from objects the cluster's users write, never from a
/// request (a client's `Host` is only looked up, in a map whose keys it cannot choose), and the
/// seed is still random per process. The model's indexes are rebuilt from 10 000s of short
/// keys per build (SipHash was a tenth of a build), and the table's host maps, the health map
/// and the upstream pool are read on every request. Anything keyed by a client's values (the
/// rate limiter's table) keeps a keyed hash.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
/// The set kind of [`FastMap`].
pub(crate) type FastSet<K> = HashSet<K, foldhash::fast::RandomState>;

/// A count of in-place changes. Not part of a table's identity: compares equal, clones fresh.
#[derive(Debug, Default)]
struct Revision(AtomicU64);

impl Clone for Revision {
    fn clone(&self) -> Self {
        Revision::default()
    }
}

impl PartialEq for Revision {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl RouteTable {
    /// Assembles a table from virtual hosts. Later duplicates of a host replace earlier ones;
    /// the model resolves conflicts before calling this.
    pub fn new(
        vhosts: Vec<VirtualHost>,
        default_certificate: Option<Certificate>,
        cert_dir: Vec<Certificate>,
        class: ClassSettings,
    ) -> RouteTable {
        let mut table = RouteTable {
            default_certificate,
            cert_dir,
            class,
            ..RouteTable::default()
        };
        // Sized once: growing to 10 000 hosts rehashed every key a dozen times.
        table.exact.reserve(vhosts.len());
        for vhost in vhosts {
            let vhost = Arc::new(vhost);
            match &vhost.host {
                HostMatch::Exact(h) => {
                    table.exact.insert(h.clone(), vhost);
                }
                HostMatch::Wildcard(parent) => {
                    table.wildcard.insert(parent.clone(), vhost);
                }
                HostMatch::Any => table.catch_all = Some(vhost),
            }
        }
        table
    }

    /// The virtual host for a TLS ClientHello's SNI (normalized): exact, then wildcard. `None`
    /// means "no such host": terminate with the default certificate.
    pub fn route_sni(&self, sni: &str) -> Option<&Arc<VirtualHost>> {
        self.exact
            .get(sni)
            .or_else(|| wildcard_parent(sni).and_then(|parent| self.wildcard.get(parent)))
    }

    /// The virtual host for an HTTP request's host (normalized): exact, wildcard, a Gateway
    /// API wildcard further up (most specific first), catch-all.
    pub(crate) fn vhost_for(&self, host: Option<&str>) -> Option<&Arc<VirtualHost>> {
        host.and_then(|h| self.route_sni(h).or_else(|| self.deep_wildcard(h)))
            .or(self.catch_all.as_ref())
    }

    /// Makes the wildcard hosts with these parent domains match one or more labels in an
    /// HTTP `Host` (Gateway API), not exactly one (Ingress).
    pub(crate) fn set_deep_wildcards(&mut self, parents: std::collections::HashSet<String>) {
        self.deep_wildcards = parents;
    }

    fn deep_wildcard(&self, host: &str) -> Option<&Arc<VirtualHost>> {
        if self.deep_wildcards.is_empty() {
            return None;
        }
        // The one-label parent was tried by `route_sni`: walk on from the next one.
        let mut rest = wildcard_parent(host)?;
        while let Some(parent) = wildcard_parent(rest) {
            if self.deep_wildcards.contains(parent) {
                return self.wildcard.get(parent);
            }
            rest = parent;
        }
        None
    }

    /// Routes an HTTP request by host (normalized, without port) and path (without query).
    /// Routes with method, header or query conditions (Gateway API) never match here: see
    /// [`RouteTable::route_request`].
    pub fn route_http(&self, host: Option<&str>, path: &str) -> HttpRoute<'_> {
        self.route(host, path, None)
    }

    /// Routes an HTTP request by host, path and, for routes that have them, its method,
    /// headers and query.
    pub fn route_request(
        &self,
        host: Option<&str>,
        path: &str,
        request: &request_match::RequestView<'_>,
    ) -> HttpRoute<'_> {
        self.route(host, path, Some(request))
    }

    fn route(
        &self,
        host: Option<&str>,
        path: &str,
        request: Option<&request_match::RequestView<'_>>,
    ) -> HttpRoute<'_> {
        let Some(vhost) = self.vhost_for(host) else {
            return HttpRoute::NoHost;
        };
        match vhost
            .routes
            .iter()
            .find(|r| r.path.matches(path) && r.takes(request))
        {
            Some(route) => HttpRoute::Upstream {
                vhost,
                upstream: &route.upstream,
                action: &route.action,
                max_body: route.max_body,
                policy: &route.policy,
                route: Some(route),
            },
            None => match &vhost.default_backend {
                Some(upstream) => HttpRoute::Upstream {
                    vhost,
                    upstream,
                    action: &vhost.default_action,
                    max_body: vhost.default_max_body,
                    policy: &vhost.default_policy,
                    route: None,
                },
                None => HttpRoute::NoPath { vhost },
            },
        }
    }

    /// Every virtual host, most specific first then by name: for `check`, health checks and
    /// comparisons.
    pub fn vhosts(&self) -> Vec<&Arc<VirtualHost>> {
        let mut all: Vec<_> = self
            .exact
            .values()
            .chain(self.wildcard.values())
            .chain(self.catch_all.iter())
            .collect();
        all.sort_by(|a, b| b.host.cmp(&a.host));
        all
    }

    /// How many virtual hosts the table has (without listing them).
    pub fn host_count(&self) -> usize {
        self.exact.len() + self.wildcard.len() + usize::from(self.catch_all.is_some())
    }

    /// Every upstream referenced by the table, de-duplicated by identity of the `Arc`.
    pub fn upstreams(&self) -> Vec<&Arc<Upstream>> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for vhost in self.vhosts() {
            // The `default-backend` annotations' upstreams too: they are health-checked and
            // their pooled connections kept like any other.
            let error_backends = vhost
                .routes
                .iter()
                .map(|r| &r.policy)
                .chain(std::iter::once(&vhost.default_policy))
                .filter_map(|p| p.error_pages.as_ref()?.backend.as_ref());
            // Canary upstreams too: health-checked and pooled like the main ones.
            let canaries = vhost
                .routes
                .iter()
                .filter_map(|r| r.canary.as_ref().map(|c| &c.upstream));
            // And every upstream of a weighted split.
            let splits = vhost
                .routes
                .iter()
                .filter_map(|r| r.split.as_deref())
                .chain(vhost.passthrough_split.as_deref())
                .flat_map(|s| s.upstreams());
            let all = vhost
                .routes
                .iter()
                .map(|r| &r.upstream)
                .chain(canaries)
                .chain(splits)
                .chain(vhost.default_backend.iter())
                .chain(vhost.passthrough.iter())
                .chain(error_backends);
            for upstream in all {
                if seen.insert(Arc::as_ptr(upstream)) {
                    out.push(upstream);
                }
            }
        }
        out
    }

    /// How many endpoint updates were applied to this table in place (see
    /// `model::EndpointIndex::update`).
    pub fn endpoint_revision(&self) -> u64 {
        self.endpoint_revision.0.load(Ordering::Acquire)
    }

    /// Says that an endpoint update was applied (after its stores).
    pub fn endpoints_updated(&self) {
        self.endpoint_revision.0.fetch_add(1, Ordering::AcqRel);
    }

    /// Every endpoint address in the table (for health checking), sorted and de-duplicated.
    /// Terminating ones too: they may be picked when no ready one is left, so their health
    /// must already be known by then.
    pub(crate) fn endpoints(&self) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = self
            .upstreams()
            .iter()
            .flat_map(|u| u.endpoints.load().all().copied().collect::<Vec<_>>())
            .collect();
        all.sort();
        all.dedup();
        all
    }
}
