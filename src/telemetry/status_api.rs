//! `GET /api/v1/status`: the live state of the proxy as one JSON document, for the status page
//! (`status_page.rs`) and for scripts.
//!
//! # Versioning
//! The document carries `"api_version": "v1"`. Within `v1`, fields are only ever added; a field
//! is never removed, renamed or given another type or meaning. A change that would break a
//! reader ships as `/api/v2/status`, and `/api/v1/status` keeps answering for at least one
//! minor release after that.
//!
//! # Sources
//! - the live table and its diagnostics ([`Status`]);
//! - the last rebuild: a [`BuildLog`] observing the rebuild loop;
//! - endpoint health: anything implementing [`EndpointHealth`] (the health checker does; this
//!   module does not name it, so `telemetry` stays below `health` in the module graph);
//! - counters: the metrics' own exposition (`status_counters.rs`); per-endpoint traffic
//!   (responses by class, errors, bytes, active) straight from the health checker's atomics
//!   ([`EndpointReport::traffic`], the same numbers `endpoint_traffic.rs` exports).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::rebuild::{BuildReport, Observer, Status};
use crate::table::certificates::Certificate;
use crate::table::diagnostic::{Diagnostic, Severity};
use crate::table::host::HostMatch;
use crate::table::upstream::Upstream;
use crate::table::{CertificateChoice, RouteTable, VirtualHost};
use crate::telemetry::endpoint_traffic::{CLASSES, EndpointTraffic};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::status_counters::{Counters, HostCounters, ProcessCounters};

/// The API version this module serves (the path segment and the document's `api_version`).
pub(crate) const API_VERSION: &str = "v1";

/// Where the document is served.
pub(crate) const API_PATH: &str = "/api/v1/status";

// === inputs ===

/// What the health checker knows about one endpoint, as the status API shows it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EndpointReport {
    /// Receives traffic (not taken out by active or passive checks).
    pub(crate) up: bool,
    /// An active check runs for it.
    pub(crate) probed: bool,
    /// Requests in flight to it now.
    pub(crate) in_flight: usize,
    /// The last active probe, once one finished.
    pub(crate) last_probe: Option<ProbeReport>,
    /// What the proxy exchanged with it since it entered the table.
    pub(crate) traffic: EndpointTraffic,
}

/// One finished active probe.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProbeReport {
    /// When it finished (wall clock).
    pub(crate) at: SystemTime,
    /// How long it took (connect + exchange).
    pub(crate) latency: Duration,
    /// Passed or not.
    pub(crate) ok: bool,
    /// Why it failed.
    pub(crate) error: Option<String>,
}

/// Endpoint health, read by address (implemented by `crate::health::Health`).
pub(crate) trait EndpointHealth: Send + Sync {
    /// The endpoint's state; `None` when the checker does not know it (treated as up).
    fn endpoint(&self, addr: SocketAddr) -> Option<EndpointReport>;
}

/// The last table build, kept for the status API (an [`Observer`] of the rebuild loop).
#[derive(Debug, Default)]
pub(crate) struct BuildLog {
    last: Mutex<Option<LastBuild>>,
}

#[derive(Debug, Clone, Copy)]
struct LastBuild {
    generation: u64,
    at: SystemTime,
    build: Duration,
    change_to_live: Duration,
}

impl Observer for BuildLog {
    fn built(&self, report: &BuildReport) {
        let last = LastBuild {
            generation: report.generation,
            at: SystemTime::now(),
            build: report.build_duration,
            change_to_live: report.change_to_live,
        };
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(last);
    }
}

impl BuildLog {
    fn last(&self) -> Option<LastBuild> {
        *self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the status API reads beyond the admin endpoint's table and metrics.
#[derive(Clone, Default)]
pub struct LiveSources {
    /// `None`: every endpoint shows as up, without probe details.
    pub(crate) health: Option<Arc<dyn EndpointHealth>>,
    /// Must be registered as an observer of the rebuild loop to fill `rebuild`.
    pub(crate) builds: Arc<BuildLog>,
}

impl std::fmt::Debug for LiveSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSources")
            .field("health", &self.health.is_some())
            .finish_non_exhaustive()
    }
}

// === the document ===

/// The whole `v1` document.
#[derive(Debug, Serialize)]
struct Document {
    api_version: &'static str,
    /// When this document was made, ms since the Unix epoch.
    generated_at_unix_ms: u64,
    /// A table is live and shutdown has not begun (`/readyz`).
    ready: bool,
    /// `None` before the first build.
    rebuild: Option<RebuildView>,
    /// Most specific first: exact hosts, wildcards, the catch-all `*`.
    hosts: Vec<HostView>,
    /// `--default-certificate` / IngressClassParams; `None`: the built-in self-signed one.
    default_certificate: Option<CertificateView>,
    diagnostics: Vec<DiagnosticView>,
    /// Counters of no single host.
    process: ProcessCounters,
}

#[derive(Debug, Serialize)]
struct RebuildView {
    generation: u64,
    at_unix_ms: u64,
    build_ms: f64,
    change_to_live_ms: f64,
}

#[derive(Debug, Serialize)]
struct HostView {
    host: String,
    /// `terminate`, `reencrypt` or `passthrough`.
    tls_mode: &'static str,
    /// The host's own certificate; `None`: the default one (always for pass-through).
    certificate: Option<CertificateView>,
    ssl_redirect: bool,
    /// The Ingress owning the host's TLS mode, `namespace/name`.
    owner: String,
    counters: HostCounters,
    routes: Vec<RouteView>,
    default_backend: Option<UpstreamView>,
    passthrough: Option<UpstreamView>,
}

#[derive(Debug, Serialize)]
struct CertificateView {
    subject: String,
    dns_names: Vec<String>,
    /// `None` when the leaf cannot be read back.
    issuer: Option<String>,
    /// RFC 3339.
    not_after: String,
    /// Whole days left (negative: expired).
    days_to_expiry: Option<i64>,
    /// `Secret ns/name`, a file path, or `self-signed`.
    source: String,
}

#[derive(Debug, Serialize)]
struct RouteView {
    path: String,
    path_type: &'static str,
    /// The Ingress it came from, `namespace/name`.
    ingress: String,
    upstream: UpstreamView,
    /// A canary Ingress's upstream for the same path.
    canary: Option<UpstreamView>,
}

#[derive(Debug, Serialize)]
struct UpstreamView {
    /// `namespace/name:port`.
    service: String,
    endpoints: Vec<EndpointView>,
}

#[derive(Debug, Serialize)]
struct EndpointView {
    address: String,
    /// `up`, `down`, or `draining` (terminating: used only when no ready endpoint is left).
    state: &'static str,
    probed: bool,
    in_flight: usize,
    last_probe: Option<ProbeView>,
    /// Series of the metrics labelled with this endpoint, by name (without `portcullis_`).
    metrics: BTreeMap<String, f64>,
    /// Response heads the endpoint sent, by status class (`1xx` .. `5xx`, `other`).
    requests: BTreeMap<&'static str, u64>,
    /// Exchanges that failed on the endpoint's side: connect refused or timed out, TLS with it
    /// failed, no response head in time, reset (HTTP, tunnels, pass-through). A 5xx the pod
    /// sends is counted in `requests`, not here.
    errors: u64,
    /// Request bodies (by `Content-Length`) and tunnel / pass-through bytes sent to it.
    bytes_to_endpoint: u64,
    /// Response bodies and tunnel / pass-through bytes received from it.
    bytes_from_endpoint: u64,
    /// HTTP requests in flight, upgraded tunnels and pass-through connections open now.
    active: u64,
}

#[derive(Debug, Serialize)]
struct ProbeView {
    at_unix_ms: u64,
    latency_ms: f64,
    ok: bool,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct DiagnosticView {
    severity: &'static str,
    reason: &'static str,
    object: String,
    field: String,
    message: String,
}

// === rendering ===

/// The `v1` document as JSON.
pub(crate) fn render(status: &Status, metrics: &Metrics, live: &LiveSources) -> String {
    let now = SystemTime::now();
    let counters = Counters::parse(&metrics.encode());
    let built = status.current();
    let hosts = built
        .as_ref()
        .map(|b| hosts(&b.table, &counters, live.health.as_deref(), now))
        .unwrap_or_default();
    let document = Document {
        api_version: API_VERSION,
        generated_at_unix_ms: unix_ms(now),
        ready: status.is_ready(),
        rebuild: live.builds.last().map(|b| RebuildView {
            generation: b.generation,
            at_unix_ms: unix_ms(b.at),
            build_ms: b.build.as_secs_f64() * 1e3,
            change_to_live_ms: b.change_to_live.as_secs_f64() * 1e3,
        }),
        hosts,
        default_certificate: built
            .as_ref()
            .and_then(|b| b.table.default_certificate.as_ref())
            .map(|c| CertificateView::of(c, now)),
        diagnostics: built
            .as_ref()
            .map(|b| b.diagnostics.iter().map(DiagnosticView::of).collect())
            .unwrap_or_default(),
        process: counters.process.clone(),
    };
    // Plain data: serialising cannot fail; answer an empty object rather than panic.
    serde_json::to_string(&document).unwrap_or_else(|_| "{}".to_string())
}

fn hosts(
    table: &RouteTable,
    counters: &Counters,
    health: Option<&dyn EndpointHealth>,
    now: SystemTime,
) -> Vec<HostView> {
    let mut vhosts = table.vhosts();
    vhosts.sort_by_key(|v| (std::cmp::Reverse(specificity(&v.host)), v.host.to_string()));
    vhosts
        .into_iter()
        .map(|v| HostView::of(v, counters, health, now))
        .collect()
}

fn specificity(host: &HostMatch) -> u8 {
    match host {
        HostMatch::Any => 0,
        HostMatch::Wildcard(_) => 1,
        HostMatch::Exact(_) => 2,
    }
}

impl HostView {
    fn of(
        vhost: &VirtualHost,
        counters: &Counters,
        health: Option<&dyn EndpointHealth>,
        now: SystemTime,
    ) -> HostView {
        let name = vhost.host.to_string();
        let upstream = |u: &Upstream| UpstreamView::of(u, counters, health);
        HostView {
            counters: counters.hosts.get(&name).cloned().unwrap_or_default(),
            host: name,
            tls_mode: vhost.tls_mode.as_str(),
            certificate: match &vhost.certificate {
                CertificateChoice::Own(c) => Some(CertificateView::of(c, now)),
                CertificateChoice::Default => None,
            },
            ssl_redirect: vhost.ssl_redirect,
            owner: namespaced(vhost.owner.namespace.as_deref(), &vhost.owner.name),
            routes: vhost
                .routes
                .iter()
                .map(|r| RouteView {
                    path: r.path.path().to_string(),
                    path_type: r.path.kind(),
                    ingress: namespaced(r.source.namespace.as_deref(), &r.source.name),
                    upstream: upstream(r.upstream.as_ref()),
                    canary: r.canary.as_deref().map(|c| upstream(c.upstream.as_ref())),
                })
                .collect(),
            default_backend: vhost.default_backend.as_deref().map(upstream),
            passthrough: vhost.passthrough.as_deref().map(upstream),
        }
    }
}

fn namespaced(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

impl UpstreamView {
    fn of(
        upstream: &Upstream,
        counters: &Counters,
        health: Option<&dyn EndpointHealth>,
    ) -> UpstreamView {
        let endpoints = upstream.endpoints.load();
        let ready = endpoints.ready.iter().map(|a| (*a, false));
        let terminating = endpoints.terminating.iter().map(|a| (*a, true));
        UpstreamView {
            service: upstream.service.to_string(),
            endpoints: ready
                .chain(terminating)
                .map(|(addr, draining)| EndpointView::of(addr, draining, counters, health))
                .collect(),
        }
    }
}

impl EndpointView {
    fn of(
        addr: SocketAddr,
        draining: bool,
        counters: &Counters,
        health: Option<&dyn EndpointHealth>,
    ) -> EndpointView {
        let report = health.and_then(|h| h.endpoint(addr));
        let up = report.as_ref().is_none_or(|r| r.up);
        let address = addr.to_string();
        let traffic = report.as_ref().map(|r| r.traffic).unwrap_or_default();
        EndpointView {
            state: match (up, draining) {
                (false, _) => "down",
                (true, true) => "draining",
                (true, false) => "up",
            },
            probed: report.as_ref().is_some_and(|r| r.probed),
            in_flight: report.as_ref().map_or(0, |r| r.in_flight),
            last_probe: report.and_then(|r| r.last_probe).map(|p| ProbeView {
                at_unix_ms: unix_ms(p.at),
                latency_ms: p.latency.as_secs_f64() * 1e3,
                ok: p.ok,
                error: p.error,
            }),
            metrics: counters
                .endpoints
                .get(&address)
                .cloned()
                .unwrap_or_default(),
            address,
            requests: CLASSES.into_iter().zip(traffic.responses).collect(),
            errors: traffic.errors,
            bytes_to_endpoint: traffic.bytes_to_endpoint,
            bytes_from_endpoint: traffic.bytes_from_endpoint,
            active: traffic.active,
        }
    }
}

impl CertificateView {
    fn of(cert: &Certificate, now: SystemTime) -> CertificateView {
        let leaf = cert
            .key
            .cert
            .first()
            .and_then(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
            .map(|(_, parsed)| {
                (
                    parsed.issuer().to_string(),
                    parsed.validity().not_after.timestamp(),
                )
            });
        let now_secs = i64::try_from(unix_ms(now) / 1000).unwrap_or(i64::MAX);
        CertificateView {
            subject: cert.info.subject.clone(),
            dns_names: cert.info.dns_names.clone(),
            issuer: leaf.as_ref().map(|(issuer, _)| issuer.clone()),
            not_after: cert.info.not_after.clone(),
            days_to_expiry: leaf.map(|(_, not_after)| (not_after - now_secs).div_euclid(86_400)),
            source: cert.info.source.clone(),
        }
    }
}

impl DiagnosticView {
    fn of(d: &Diagnostic) -> DiagnosticView {
        DiagnosticView {
            severity: match d.severity {
                Severity::Warning => "warning",
                Severity::Error => "error",
            },
            reason: d.reason.as_str(),
            object: d.object.to_string(),
            field: d.field.clone(),
            message: d.message.clone(),
        }
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_status_renders_a_v1_document() {
        let json = render(&Status::new(), &Metrics::new(), &LiveSources::default());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["api_version"], "v1");
        assert_eq!(v["ready"], false);
        assert!(v["rebuild"].is_null());
        assert_eq!(v["hosts"], serde_json::json!([]));
    }

    #[test]
    fn endpoint_states() {
        struct Down;
        impl EndpointHealth for Down {
            fn endpoint(&self, _: SocketAddr) -> Option<EndpointReport> {
                Some(EndpointReport {
                    up: false,
                    probed: true,
                    in_flight: 0,
                    last_probe: Some(ProbeReport {
                        at: UNIX_EPOCH + Duration::from_secs(1),
                        latency: Duration::from_millis(3),
                        ok: false,
                        error: Some("connection refused".into()),
                    }),
                    traffic: EndpointTraffic::default(),
                })
            }
        }
        let addr: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let counters = Counters::default();
        assert_eq!(EndpointView::of(addr, false, &counters, None).state, "up");
        assert_eq!(
            EndpointView::of(addr, true, &counters, None).state,
            "draining"
        );
        let down = EndpointView::of(addr, true, &counters, Some(&Down));
        assert_eq!(down.state, "down");
        let probe = down.last_probe.unwrap();
        assert_eq!((probe.at_unix_ms, probe.ok), (1000, false));
    }
}
