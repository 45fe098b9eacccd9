//! Prometheus metrics (`portcullis_*`), labels from enums.
//!
//! One [`Registry`] per process, created by [`Metrics::new`] and encoded by
//! [`Metrics::encode_as`] for the admin `/metrics` endpoint, in the format the scraper asks
//! for ([`Format`]). The `portcullis_*` families live in a sub-registry; the standard
//! `process_*` ones ([`super::process`]) at the root.
//!
//! Label cardinality is bounded by construction: modes, results, reasons and directions are
//! enums; status codes are three digits (`other` outside 100..=599); hosts come from the
//! routing table (callers pass the virtual host's name, never a raw `Host` header; a request
//! no host matched is `-`), and so do Ingresses and Services ([`RouteId`]); endpoints and
//! certificates come from the table and their series are removed when they leave it (see
//! [`Metrics::remove_upstream`], [`Metrics::certificates`]).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use super::endpoint_traffic::{CountersSlot, EndpointCollector, EndpointCounters};
use super::exposition::Format;
use super::process::ProcessCollector;
use crate::source::Snapshot;
use crate::table::diagnostic::{Diagnostic, ObjectRef, Severity};
use crate::table::route::{Route, TlsMode};
use crate::table::upstream::Upstream;
use crate::table::{CertificateChoice, RouteTable, VirtualHost};

/// Which listener / mode a data-plane event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    /// Plain HTTP on :80.
    Http,
    Terminate,
    Reencrypt,
}

impl Mode {
    /// The label value.
    fn as_str(self) -> &'static str {
        match self {
            Mode::Http => "http",
            Mode::Terminate => "terminate",
            Mode::Reencrypt => "reencrypt",
        }
    }
}

/// Why a :443 connection was closed before a route was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum HelloRejection {
    Timeout,
    Malformed,
    TooLarge,
    NotTls,
}

impl HelloRejection {
    /// The label value.
    fn as_str(self) -> &'static str {
        match self {
            HelloRejection::Timeout => "timeout",
            HelloRejection::Malformed => "malformed",
            HelloRejection::TooLarge => "too_large",
            HelloRejection::NotTls => "not_tls",
        }
    }
}

/// The class of an HTTP status code (`portcullis_http_requests_total` has the code itself;
/// readers that sum by class use this).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum StatusClass {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
    /// Outside 100..=599 (should not happen).
    Other,
}

impl StatusClass {
    /// The class of `status`.
    pub(crate) fn of(status: u16) -> StatusClass {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            500..=599 => StatusClass::ServerError,
            _ => StatusClass::Other,
        }
    }

    /// The class's name: `"1xx"` .. `"5xx"`, or `"other"`.
    #[cfg(test)]
    fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Success => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
            StatusClass::Other => "other",
        }
    }
}

/// The `code` label: the status code itself, or `other` outside 100..=599 (at most 501
/// values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StatusCodeLabel(u16);

impl EncodeLabelValue for StatusCodeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        if StatusClass::of(self.0) == StatusClass::Other {
            encoder.write_str("other")
        } else {
            encoder.write_fmt(format_args!("{}", self.0))
        }
    }
}

/// What a connection is counted as in `portcullis_connections_active`: its mode once known
/// (after the TLS handshake on :443), pass-through included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ConnectionMode {
    Http,
    Terminate,
    Reencrypt,
    Passthrough,
}

impl ConnectionMode {
    /// The label value.
    fn as_str(self) -> &'static str {
        match self {
            ConnectionMode::Http => "http",
            ConnectionMode::Terminate => "terminate",
            ConnectionMode::Reencrypt => "reencrypt",
            ConnectionMode::Passthrough => "passthrough",
        }
    }
}

impl From<Mode> for ConnectionMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Http => ConnectionMode::Http,
            Mode::Terminate => ConnectionMode::Terminate,
            Mode::Reencrypt => ConnectionMode::Reencrypt,
        }
    }
}

/// Direction of spliced bytes, relative to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    /// Bytes the client sent (towards the upstream).
    FromClient,
    /// Bytes sent to the client (from the upstream).
    ToClient,
}

impl Direction {
    /// The label value.
    fn as_str(self) -> &'static str {
        match self {
            Direction::FromClient => "from_client",
            Direction::ToClient => "to_client",
        }
    }
}

/// Outcome of a TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum HandshakeResult {
    Ok,
    Error,
}

impl HandshakeResult {
    /// The label value.
    fn as_str(self) -> &'static str {
        match self {
            HandshakeResult::Ok => "ok",
            HandshakeResult::Error => "error",
        }
    }
}

/// What one pass-through connection moved (`Metrics::tcp_connection`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TcpBytes {
    pub(crate) from_client: u64,
    pub(crate) to_client: u64,
    /// Of both, the bytes moved with `splice(2)`.
    pub(crate) zero_copy: u64,
}

/// Severity as a label (the model's enum, encoded lower-case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SeverityLabel(Severity);

macro_rules! label_value_from_as_str {
    ($($ty:ty),*) => {$(
        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}

label_value_from_as_str!(
    Mode,
    ConnectionMode,
    HelloRejection,
    Direction,
    HandshakeResult
);

impl EncodeLabelValue for SeverityLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self.0 {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

// === label sets ===

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpRequestLabels {
    host: String,
    namespace: String,
    ingress: String,
    service: String,
    mode: Mode,
    code: StatusCodeLabel,
}

/// The labels of the latency histograms: a request's route, without its status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HttpRouteLabels {
    host: String,
    namespace: String,
    ingress: String,
    service: String,
    mode: Mode,
}

/// `host`: the virtual host the connection's SNI chose (the table's name for it), `-` for a
/// plain :80 connection (its requests may go to any host) and for an unknown or missing SNI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ConnectionLabels {
    mode: ConnectionMode,
    host: String,
}

/// `worker`: the proxy worker's index (`--proxy-workers`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkerLabels {
    worker: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CertificateLabels {
    host: String,
    secret: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    arch: &'static str,
    profile: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TcpBytesLabels {
    host: String,
    direction: Direction,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct HandshakeLabels {
    mode: Mode,
    result: HandshakeResult,
    /// As [`ConnectionLabels::host`].
    host: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectionLabels {
    reason: HelloRejection,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DiagnosticLabels {
    reason: &'static str,
    severity: SeverityLabel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ObjectLabels {
    kind: String,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

/// Request latencies: 1 ms .. ~33 s.
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Control-plane latencies (rebuild, change to live): 1 ms .. ~65 s.
fn control_plane_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Handles on the `portcullis_http_requests` counter of one (host, Ingress, Service, mode,
/// status code) and on that route's `portcullis_http_request_duration` and
/// `portcullis_http_upstream_duration` histograms.
#[derive(Debug, Clone)]
pub(crate) struct HttpRequestSeries {
    requests: Counter,
    duration: Histogram,
    upstream_duration: Histogram,
}

impl HttpRequestSeries {
    /// One request answered in `duration`, with this series' labels.
    pub(crate) fn record(&self, duration: Duration) {
        self.requests.inc();
        self.duration.observe(duration.as_secs_f64());
    }

    /// One request answered in `duration`, of which `upstream` waiting for the upstream's
    /// response head (`None`: no upstream answered, e.g. a redirect or a 502).
    pub(crate) fn record_with_upstream(&self, duration: Duration, upstream: Option<Duration>) {
        self.record(duration);
        if let Some(upstream) = upstream {
            self.upstream_duration.observe(upstream.as_secs_f64());
        }
    }
}

/// The route that served a request, by identity: the address of the table's [`Route`] (none
/// for a host's default backend), whether its canary was chosen, and the upstream that served.
/// The proxy keeps the request's `Arc<VirtualHost>` with it, which keeps all three alive, so
/// comparing two of these is comparing words; the label strings are made only when the
/// connection's cached series does not match ([`RouteId::labels`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct RouteId {
    route: usize,
    canary: bool,
    upstream: Option<Arc<Upstream>>,
}

impl PartialEq for RouteId {
    fn eq(&self, other: &Self) -> bool {
        self.route == other.route
            && self.canary == other.canary
            && match (&self.upstream, &other.upstream) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

impl RouteId {
    /// `route` as the table matched it (`None`: the host's default backend), `canary` when
    /// its canary was picked, and `upstream` the one that serves.
    pub(crate) fn new(route: Option<&Route>, canary: bool, upstream: &Arc<Upstream>) -> Self {
        RouteId {
            route: route.map_or(0, |r| std::ptr::from_ref(r) as usize),
            canary,
            upstream: Some(Arc::clone(upstream)),
        }
    }

    /// The Ingress (`namespace`, `ingress`) and Service of this route on `vhost`: the canary
    /// Ingress when its canary served, the route's Ingress, or for the default backend the
    /// Ingress that owns the host. Empty strings when the request was not routed.
    pub(crate) fn labels(&self, vhost: Option<&VirtualHost>) -> RouteLabels {
        let Some(vhost) = vhost else {
            return RouteLabels::default();
        };
        let route = vhost
            .routes
            .iter()
            .find(|r| std::ptr::from_ref(*r) as usize == self.route);
        let ingress: Option<&ObjectRef> = match route {
            Some(r) if self.canary => r.canary.as_deref().map(|c| &c.source),
            Some(r) => Some(&r.source),
            None if self.upstream.is_some() => Some(&vhost.owner),
            None => None,
        };
        RouteLabels {
            namespace: ingress
                .and_then(|i| i.namespace.clone())
                .unwrap_or_default(),
            ingress: ingress.map(|i| i.name.clone()).unwrap_or_default(),
            service: self
                .upstream
                .as_ref()
                .map(|u| u.service.name.clone())
                .unwrap_or_default(),
        }
    }
}

/// Borrowed views of a [`RouteId`], for the access log (which writes them without a copy).
impl RouteId {
    /// The Ingress [`RouteId::labels`] names, borrowed from `vhost`.
    pub(crate) fn ingress<'a>(&self, vhost: &'a VirtualHost) -> Option<&'a ObjectRef> {
        let route = vhost
            .routes
            .iter()
            .find(|r| std::ptr::from_ref(*r) as usize == self.route);
        match route {
            Some(r) if self.canary => r.canary.as_deref().map(|c| &c.source),
            Some(r) => Some(&r.source),
            None if self.upstream.is_some() => Some(&vhost.owner),
            None => None,
        }
    }

    /// The upstream that serves.
    pub(crate) fn upstream(&self) -> Option<&Arc<Upstream>> {
        self.upstream.as_ref()
    }
}

/// The `namespace`, `ingress` and `service` labels of a request's series.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct RouteLabels {
    pub(crate) namespace: String,
    pub(crate) ingress: String,
    pub(crate) service: String,
}

/// Counts one connection in a connection gauge (`portcullis_connections_active`,
/// `portcullis_connections_parked`) until dropped.
#[derive(Debug)]
pub(crate) struct ActiveConnection(Gauge);

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpRequestLabels, Counter>,
    http_request_duration: HistogramFamily<HttpRouteLabels>,
    http_upstream_duration: HistogramFamily<HttpRouteLabels>,
    connections_active: Family<ConnectionLabels, Gauge>,
    connections_parked: Gauge,
    connections_released: Counter,
    worker_connections: Family<WorkerLabels, Gauge>,
    /// `notAfter` of each served certificate, and the series the last build set.
    certificate_expiry: Family<CertificateLabels, Gauge>,
    certificates_seen: Mutex<Vec<CertificateLabels>>,
    tcp_connections: Family<HostLabels, Counter>,
    tcp_bytes: Family<TcpBytesLabels, Counter>,
    tcp_zero_copy_bytes: Counter,
    tls_handshakes: Family<HandshakeLabels, Counter>,
    client_hello_rejected: Family<RejectionLabels, Counter>,
    connections_limited: Counter,
    upstream_healthy: Family<EndpointLabels, Gauge>,
    config_generation: Gauge,
    rebuild_duration: Histogram,
    endpoint_updates: Counter,
    change_to_live: Histogram,
    diagnostics: Family<DiagnosticLabels, Gauge>,
    /// Diagnostic series set by the previous build, so the next one can drop stale series.
    diagnostics_seen: Mutex<Vec<DiagnosticLabels>>,
    objects: Family<ObjectLabels, Gauge>,
    /// Ways of the rate limiter's table in use (`proxy::rate_limit`).
    rate_limit_entries: Gauge,
    /// The size of that table, set by the limiter when it is made.
    rate_limit_capacity: Gauge,
    /// Where the per-endpoint collector reads its counters (`endpoint_traffic.rs`).
    endpoint_counters: CountersSlot,
    /// The hosts of the last table, whose connection and handshake series exist; a host that
    /// leaves the table loses them ([`Metrics::hosts`]).
    hosts_seen: Mutex<HashSet<String>>,
    /// The request series made so far, by host: a host that leaves the table loses them too.
    /// Their labels (Ingress, Service, status) cannot be listed from the families themselves.
    request_series: Mutex<HashMap<String, HashSet<HttpRequestLabels>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// A fresh registry with every `portcullis_*` family registered.
    pub fn new() -> Self {
        let mut root = Registry::default();
        root.register_collector(Box::new(ProcessCollector));
        let registry = root.sub_registry_with_prefix("portcullis");
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by virtual host, Ingress, Service, mode and status code",
            Clone::clone(&http_requests),
        );
        let http_request_duration: HistogramFamily<HttpRouteLabels> =
            Family::new_with_constructor(request_buckets);
        registry.register_with_unit(
            "http_request_duration",
            "Time from request head to response end, by virtual host, Ingress, Service and mode",
            Unit::Seconds,
            http_request_duration.clone(),
        );
        let http_upstream_duration: HistogramFamily<HttpRouteLabels> =
            Family::new_with_constructor(request_buckets);
        registry.register_with_unit(
            "http_upstream_duration",
            "Time from sending a request upstream to its response head, by virtual host, \
             Ingress, Service and mode",
            Unit::Seconds,
            http_upstream_duration.clone(),
        );
        let connections_active = Family::default();
        registry.register(
            "connections_active",
            "Client connections open, by mode (counted once the mode is known)",
            Clone::clone(&connections_active),
        );
        let connections_parked = Gauge::default();
        registry.register(
            "connections_parked",
            "HTTP/1.1 client connections idle between requests with their HTTP buffers released",
            connections_parked.clone(),
        );
        let connections_released = Counter::default();
        registry.register(
            "connections_released",
            "Times an idle HTTP/1.1 client connection released its HTTP buffers (and was parked)",
            connections_released.clone(),
        );
        let worker_connections = Family::default();
        registry.register(
            "worker_connections",
            "Client connections each proxy worker runs (with more than one worker)",
            Clone::clone(&worker_connections),
        );
        let certificate_expiry = Family::default();
        registry.register_with_unit(
            "certificate_expiry_timestamp",
            "notAfter of each certificate served, by host and source Secret (or file)",
            Unit::Seconds,
            Clone::clone(&certificate_expiry),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                arch: std::env::consts::ARCH,
                profile: if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                },
            })
            .set(1);
        registry.register("build_info", "Always 1: the build that runs", build_info);
        let tcp_connections = Family::default();
        registry.register(
            "tcp_connections",
            "Pass-through TCP connections ended, by virtual host",
            Clone::clone(&tcp_connections),
        );
        let tcp_bytes = Family::default();
        registry.register(
            "tcp_bytes",
            "Bytes spliced on pass-through connections, by virtual host and direction",
            Clone::clone(&tcp_bytes),
        );
        let tcp_zero_copy_bytes = Counter::default();
        registry.register(
            "tcp_zero_copy_bytes",
            "Of the pass-through bytes, those moved with splice(2) through a kernel pipe, never \
             copied into the process (bulk transfers; both directions)",
            Clone::clone(&tcp_zero_copy_bytes),
        );
        let tls_handshakes = Family::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes with clients on :443 (terminate, reencrypt), by result",
            Clone::clone(&tls_handshakes),
        );
        let client_hello_rejected = Family::default();
        registry.register(
            "client_hello_rejected",
            ":443 connections closed before routing, by reason",
            Clone::clone(&client_hello_rejected),
        );
        let connections_limited = Counter::default();
        registry.register(
            "connections_limited",
            "Connections refused because the connection limit was reached",
            connections_limited.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stderr did not take them fast enough, by kind (access, other)",
            super::log_sink::dropped_lines(),
        );
        let upstream_healthy = Family::default();
        registry.register(
            "upstream_healthy",
            "1 when the endpoint receives traffic, 0 when health checks took it out",
            Clone::clone(&upstream_healthy),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Number of routing table changes since start: tables built and swapped in, and endpoint updates applied in place",
            config_generation.clone(),
        );
        let rebuild_duration = control_plane_buckets();
        registry.register_with_unit(
            "rebuild_duration",
            "Time to build a routing table from a snapshot",
            Unit::Seconds,
            rebuild_duration.clone(),
        );
        let endpoint_updates = Counter::default();
        registry.register(
            "endpoint_updates",
            "EndpointSlice changes applied to the live table without a build",
            endpoint_updates.clone(),
        );
        let change_to_live = control_plane_buckets();
        registry.register_with_unit(
            "change_to_live",
            "Time from the newest object change to the table serving it",
            Unit::Seconds,
            change_to_live.clone(),
        );
        let diagnostics = Family::default();
        registry.register(
            "diagnostics",
            "Diagnostics of the last build, by reason and severity",
            Clone::clone(&diagnostics),
        );
        let objects = Family::default();
        registry.register(
            "objects",
            "Objects in the last snapshot, by kind",
            Clone::clone(&objects),
        );
        let rate_limit_entries = Gauge::default();
        registry.register(
            "rate_limit_entries",
            "(Ingress, client address) pairs the rate and connection limiter holds state for",
            rate_limit_entries.clone(),
        );
        let rate_limit_capacity = Gauge::default();
        registry.register(
            "rate_limit_capacity",
            "The most entries the rate and connection limiter holds (a fixed table)",
            rate_limit_capacity.clone(),
        );
        let endpoint_counters = CountersSlot::default();
        registry.register_collector(Box::new(EndpointCollector {
            source: Arc::clone(&endpoint_counters),
        }));
        Metrics {
            registry: root,
            http_requests,
            http_request_duration,
            http_upstream_duration,
            connections_active,
            connections_parked,
            worker_connections,
            connections_released,
            certificate_expiry,
            certificates_seen: Mutex::new(Vec::new()),
            tcp_connections,
            tcp_bytes,
            tcp_zero_copy_bytes,
            tls_handshakes,
            client_hello_rejected,
            connections_limited,
            upstream_healthy,
            config_generation,
            rebuild_duration,
            endpoint_updates,
            change_to_live,
            diagnostics,
            diagnostics_seen: Mutex::new(Vec::new()),
            objects,
            rate_limit_entries,
            rate_limit_capacity,
            endpoint_counters,
            hosts_seen: Mutex::new(HashSet::new()),
            request_series: Mutex::new(HashMap::new()),
        }
    }

    /// Where the per-endpoint families (`portcullis_upstream_requests_total` and the rest)
    /// are read from at scrape time: the health checker, once it exists.
    pub(crate) fn set_endpoint_counters(&self, source: Weak<dyn EndpointCounters>) {
        *self
            .endpoint_counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(source);
    }

    /// The `portcullis_worker_connections` gauge of proxy worker `worker` (the accept loops
    /// balance connections on it).
    pub(crate) fn worker_connections(&self, worker: u16) -> Gauge {
        self.worker_connections
            .get_or_create_owned(&WorkerLabels { worker })
    }

    /// The gauges the rate limiter keeps its entry count and its capacity in (the metrics
    /// do not know the limiter: the proxy sets them).
    pub(crate) fn rate_limit_gauges(&self) -> (Gauge, Gauge) {
        (
            self.rate_limit_entries.clone(),
            self.rate_limit_capacity.clone(),
        )
    }

    // === data plane ===

    /// One HTTP request answered, without keeping the series (the unit tests' shorthand for
    /// [`Metrics::http_request_series`] then [`HttpRequestSeries::record`]).
    #[cfg(test)]
    fn http_request(&self, host: &str, mode: Mode, status: u16, duration: Duration) {
        self.http_request_series(host, &RouteLabels::default(), mode, status)
            .record(duration);
    }

    /// The series one HTTP request is recorded in. `host` is the virtual host's name from the
    /// table (e.g. `HostMatch`'s display, `*` for the catch-all, `-` for none), never a raw
    /// `Host` header, and `route` comes from the table too ([`RouteId::labels`]), so the
    /// labels stay bounded. Returned as handles that a caller keeps while it records many
    /// requests to the same series (one keep-alive connection to one route): recording
    /// through [`HttpRequestSeries::record_with_upstream`] costs no label hashing and no
    /// allocation.
    pub(crate) fn http_request_series(
        &self,
        host: &str,
        route: &RouteLabels,
        mode: Mode,
        status: u16,
    ) -> HttpRequestSeries {
        let labels = HttpRouteLabels {
            host: host.to_string(),
            namespace: route.namespace.clone(),
            ingress: route.ingress.clone(),
            service: route.service.clone(),
            mode,
        };
        let request = HttpRequestLabels {
            host: labels.host.clone(),
            namespace: labels.namespace.clone(),
            ingress: labels.ingress.clone(),
            service: labels.service.clone(),
            mode,
            code: StatusCodeLabel(status),
        };
        let series = HttpRequestSeries {
            requests: self.http_requests.get_or_create_owned(&request),
            duration: self.http_request_duration.get_or_create_owned(&labels),
            upstream_duration: self.http_upstream_duration.get_or_create_owned(&labels),
        };
        // Once per keep-alive connection and series (callers keep the handles), not per request.
        let mut made = self
            .request_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        made.entry(labels.host).or_default().insert(request);
        series
    }

    /// Counts a connection of `mode` to `host` (the table's name of the SNI's virtual host, or
    /// `-`) in `portcullis_connections_active` while the returned guard lives.
    pub(crate) fn connection_opened(
        &self,
        mode: impl Into<ConnectionMode>,
        host: &str,
    ) -> ActiveConnection {
        let gauge = self
            .connections_active
            .get_or_create_owned(&ConnectionLabels {
                mode: mode.into(),
                host: host.to_string(),
            });
        gauge.inc();
        ActiveConnection(gauge)
    }

    /// Counts a release of an idle HTTP/1.1 connection's HTTP state
    /// (`portcullis_connections_released_total`), and the connection in
    /// `portcullis_connections_parked` while the returned guard lives.
    pub(crate) fn connection_parked(&self) -> ActiveConnection {
        self.connections_released.inc();
        self.connections_parked.inc();
        ActiveConnection(self.connections_parked.clone())
    }

    /// One TCP (pass-through) connection ended.
    pub(crate) fn tcp_connection(&self, host: &str, bytes: TcpBytes) {
        let TcpBytes {
            from_client: bytes_from_client,
            to_client: bytes_to_client,
            zero_copy,
        } = bytes;
        self.tcp_zero_copy_bytes.inc_by(zero_copy);
        for (direction, bytes) in [
            (Direction::FromClient, bytes_from_client),
            (Direction::ToClient, bytes_to_client),
        ] {
            self.tcp_bytes
                .get_or_create(&TcpBytesLabels {
                    host: host.to_string(),
                    direction,
                })
                .inc_by(bytes);
        }
        // Counted last: whoever reads the connection as ended (a scrape, the status page)
        // also reads its bytes.
        self.tcp_connections
            .get_or_create(&HostLabels {
                host: host.to_string(),
            })
            .inc();
    }

    /// A TLS handshake finished (ok or not) for a terminated/re-encrypted host: `host` as in
    /// [`Metrics::connection_opened`].
    pub(crate) fn handshake(&self, mode: Mode, ok: bool, host: &str) {
        let result = if ok {
            HandshakeResult::Ok
        } else {
            HandshakeResult::Error
        };
        self.tls_handshakes
            .get_or_create(&HandshakeLabels {
                mode,
                result,
                host: host.to_string(),
            })
            .inc();
    }

    /// A :443 connection closed before routing.
    pub(crate) fn hello_rejected(&self, why: HelloRejection) {
        self.client_hello_rejected
            .get_or_create(&RejectionLabels { reason: why })
            .inc();
    }

    /// A connection refused because the connection limit was reached.
    pub(crate) fn connection_limited(&self) {
        self.connections_limited.inc();
    }

    /// Health of one endpoint changed (or was first seen): `portcullis_upstream_healthy`.
    pub(crate) fn upstream_health(&self, addr: SocketAddr, healthy: bool) {
        self.upstream_healthy
            .get_or_create(&EndpointLabels {
                endpoint: addr.to_string(),
            })
            .set(i64::from(healthy));
    }

    /// The endpoint left the routing table: drop its `portcullis_upstream_healthy` series.
    pub(crate) fn remove_upstream(&self, addr: SocketAddr) {
        self.upstream_healthy.remove(&EndpointLabels {
            endpoint: addr.to_string(),
        });
    }

    // === control plane ===

    /// A new routing table is live; `generation` counts tables swapped in since start.
    pub(crate) fn config_generation(&self, generation: u64) {
        self.config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
    }

    /// One build of the routing table took `duration` (model build only, not the hold-off).
    pub(crate) fn rebuild(&self, duration: Duration) {
        self.rebuild_duration.observe(duration.as_secs_f64());
    }

    /// An endpoint update was applied to the live table in place (no build).
    pub(crate) fn endpoint_update(&self) {
        self.endpoint_updates.inc();
    }

    /// The newest object change reached the live table after `latency` (hold-off + build +
    /// swap).
    pub(crate) fn change_to_live(&self, latency: Duration) {
        self.change_to_live.observe(latency.as_secs_f64());
    }

    /// Replaces the `portcullis_diagnostics` gauges with the counts of this build's
    /// diagnostics; series of reason/severity pairs absent from this build are removed.
    pub(crate) fn diagnostics(&self, diagnostics: &[Diagnostic]) {
        let mut counts: HashMap<DiagnosticLabels, i64> = HashMap::new();
        for d in diagnostics {
            *counts
                .entry(DiagnosticLabels {
                    reason: d.reason.as_str(),
                    severity: SeverityLabel(d.severity),
                })
                .or_default() += 1;
        }
        let mut seen = self
            .diagnostics_seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for old in seen.iter() {
            if !counts.contains_key(old) {
                self.diagnostics.remove(old);
            }
        }
        for (labels, n) in &counts {
            self.diagnostics.get_or_create(labels).set(*n);
        }
        *seen = counts.into_keys().collect();
    }

    /// Replaces the `portcullis_certificate_expiry_timestamp_seconds` gauges with the
    /// certificates `table` serves: each TLS host's own (`host`, `secret` = `namespace/name`
    /// of its Secret, or the file it came from), and the default certificate once as host
    /// `-` when one is configured. Hosts on the default certificate and pass-through hosts (the
    /// pod's certificate) have no series of their own.
    pub(crate) fn certificates(&self, table: &RouteTable) {
        let mut now: Vec<(CertificateLabels, i64)> = Vec::new();
        for vhost in table.vhosts() {
            if vhost.tls_mode == TlsMode::Passthrough {
                continue;
            }
            if let CertificateChoice::Own(cert) = &vhost.certificate {
                let labels = CertificateLabels {
                    host: vhost.host.to_string(),
                    secret: certificate_source(&cert.info.source),
                };
                now.extend(not_after(&cert.key).map(|t| (labels, t)));
            }
        }
        if let Some(cert) = &table.default_certificate {
            let labels = CertificateLabels {
                host: "-".to_string(),
                secret: certificate_source(&cert.info.source),
            };
            now.extend(not_after(&cert.key).map(|t| (labels, t)));
        }
        let mut seen = self
            .certificates_seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for old in seen.iter() {
            if !now.iter().any(|(labels, _)| labels == old) {
                self.certificate_expiry.remove(old);
            }
        }
        for (labels, timestamp) in &now {
            self.certificate_expiry
                .get_or_create(labels)
                .set(*timestamp);
        }
        *seen = now.into_iter().map(|(labels, _)| labels).collect();
    }

    /// Drops every series labelled with a host that left the table (active connections, TLS
    /// handshakes, HTTP requests and their latencies, pass-through connections and bytes), so
    /// their label values stay bounded by the table's hosts, as Ingresses come and go. A
    /// connection still open to a removed host keeps counting in a series no longer exported.
    pub(crate) fn hosts(&self, table: &RouteTable) {
        let now: HashSet<String> = table
            .vhosts()
            .into_iter()
            .map(|v| v.host.to_string())
            .collect();
        let mut seen = self
            .hosts_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for gone in seen.difference(&now) {
            for mode in [
                ConnectionMode::Http,
                ConnectionMode::Terminate,
                ConnectionMode::Reencrypt,
                ConnectionMode::Passthrough,
            ] {
                self.connections_active.remove(&ConnectionLabels {
                    mode,
                    host: gone.clone(),
                });
            }
            for mode in [Mode::Http, Mode::Terminate, Mode::Reencrypt] {
                for result in [HandshakeResult::Ok, HandshakeResult::Error] {
                    self.tls_handshakes.remove(&HandshakeLabels {
                        mode,
                        result,
                        host: gone.clone(),
                    });
                }
            }
            self.tcp_connections
                .remove(&HostLabels { host: gone.clone() });
            for direction in [Direction::FromClient, Direction::ToClient] {
                self.tcp_bytes.remove(&TcpBytesLabels {
                    host: gone.clone(),
                    direction,
                });
            }
            self.forget_request_series(gone);
        }
        *seen = now;
    }

    /// Drops the HTTP request series of `host` ([`Metrics::hosts`]).
    fn forget_request_series(&self, host: &str) {
        let made = self
            .request_series
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(host);
        for request in made.into_iter().flatten() {
            self.http_requests.remove(&request);
            let route = HttpRouteLabels {
                host: request.host,
                namespace: request.namespace,
                ingress: request.ingress,
                service: request.service,
                mode: request.mode,
            };
            self.http_request_duration.remove(&route);
            self.http_upstream_duration.remove(&route);
        }
    }

    /// Sets `portcullis_objects{kind}` for one kind (e.g. `Ingress`).
    fn objects(&self, kind: &str, count: usize) {
        self.objects
            .get_or_create(&ObjectLabels {
                kind: kind.to_string(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// Sets `portcullis_objects` for every kind a [`Snapshot`] holds.
    pub(crate) fn snapshot_objects(&self, snapshot: &Snapshot) {
        self.objects("Ingress", snapshot.ingresses.len());
        self.objects("IngressClass", snapshot.classes.len());
        self.objects("Secret", snapshot.secrets.len());
        self.objects("Service", snapshot.services.len());
        self.objects("EndpointSlice", snapshot.endpoint_slices.len());
        self.objects("IngressClassParams", snapshot.class_params.len());
        self.objects("CertFile", snapshot.cert_files.len());
        self.objects("GatewayClass", snapshot.gateway_classes.len());
        self.objects("Gateway", snapshot.gateways.len());
        self.objects("HTTPRoute", snapshot.http_routes.len());
        self.objects("GRPCRoute", snapshot.grpc_routes.len());
        self.objects("TLSRoute", snapshot.tls_routes.len());
        self.objects("BackendTLSPolicy", snapshot.backend_tls_policies.len());
        self.objects("ReferenceGrant", snapshot.reference_grants.len());
        self.objects("ConfigMap", snapshot.config_maps.len());
        self.objects("Namespace", snapshot.namespaces.len());
    }

    // === exposition ===

    /// OpenMetrics text exposition ([`Metrics::encode_as`]).
    pub fn encode(&self) -> String {
        self.encode_as(Format::OpenMetrics)
    }

    /// Text exposition for `/metrics` in `format` (served with [`Format::content_type`]).
    pub fn encode_as(&self, format: Format) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let written = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        if written.is_err() {
            // Writing to a String cannot fail; keep the endpoint answering anyway.
            out.clear();
            if format == Format::OpenMetrics {
                let _ = writeln!(out, "# EOF");
            }
        }
        out
    }
}

/// The `secret` label of a certificate from its [`CertificateInfo::source`]
/// (`Secret ns/name` → `ns/name`; a file path or `self-signed` as is).
///
/// [`CertificateInfo::source`]: crate::table::certificates::CertificateInfo::source
fn certificate_source(source: &str) -> String {
    source.strip_prefix("Secret ").unwrap_or(source).to_string()
}

/// The leaf's `notAfter` in seconds since the epoch (`None` if it does not parse, which the
/// table's own parse already ruled out).
fn not_after(key: &rustls::sign::CertifiedKey) -> Option<i64> {
    let leaf = key.cert.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).ok()?;
    Some(cert.validity().not_after.timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::diagnostic::{ObjectRef, Reason};

    fn has_line(text: &str, prefix: &str) -> bool {
        text.lines().any(|l| l.starts_with(prefix))
    }

    #[test]
    fn data_plane_families_have_their_labels() {
        let m = Metrics::new();
        m.http_request(
            "a.example.com",
            Mode::Terminate,
            204,
            Duration::from_millis(3),
        );
        m.http_request(
            "a.example.com",
            Mode::Terminate,
            503,
            Duration::from_millis(3),
        );
        m.tcp_connection(
            "p.example.com",
            TcpBytes {
                from_client: 10,
                to_client: 20,
                zero_copy: 16,
            },
        );
        m.handshake(Mode::Reencrypt, false, "r.example.com");
        m.hello_rejected(HelloRejection::TooLarge);
        m.connection_limited();
        let text = m.encode();
        for want in [
            r#"portcullis_http_requests_total{host="a.example.com",namespace="",ingress="",service="",mode="terminate",code="204"} 1"#,
            r#"portcullis_http_requests_total{host="a.example.com",namespace="",ingress="",service="",mode="terminate",code="503"} 1"#,
            r#"portcullis_http_request_duration_seconds_count{host="a.example.com",namespace="",ingress="",service="",mode="terminate"} 2"#,
            r#"portcullis_http_request_duration_seconds_bucket{le="+Inf",host="a.example.com",namespace="",ingress="",service="",mode="terminate"} 2"#,
            r#"portcullis_tcp_connections_total{host="p.example.com"} 1"#,
            r#"portcullis_tcp_bytes_total{host="p.example.com",direction="from_client"} 10"#,
            r#"portcullis_tcp_bytes_total{host="p.example.com",direction="to_client"} 20"#,
            "portcullis_tcp_zero_copy_bytes_total 16",
            r#"portcullis_tls_handshakes_total{mode="reencrypt",result="error",host="r.example.com"} 1"#,
            r#"portcullis_client_hello_rejected_total{reason="too_large"} 1"#,
            "portcullis_connections_limited_total 1",
        ] {
            assert!(has_line(&text, want), "missing {want} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }

    /// The two formats differ where the Prometheus text format 0.0.4 and OpenMetrics 1.0 do:
    /// a counter family's name, `# UNIT`, `# EOF`.
    #[test]
    fn both_formats() {
        let m = Metrics::new();
        m.connection_limited();
        let conn = m.connection_opened(ConnectionMode::Passthrough, "p.example.com");
        let om = m.encode_as(Format::OpenMetrics);
        let text = m.encode_as(Format::Prometheus);
        assert!(has_line(
            &om,
            "# TYPE portcullis_connections_limited counter"
        ));
        assert!(has_line(
            &text,
            "# TYPE portcullis_connections_limited_total counter"
        ));
        assert!(has_line(
            &text,
            "# HELP portcullis_connections_limited_total "
        ));
        assert!(has_line(
            &om,
            "# UNIT portcullis_rebuild_duration_seconds seconds"
        ));
        assert!(
            !text.contains("# UNIT") && !text.contains("# EOF"),
            "{text}"
        );
        for t in [&om, &text] {
            assert!(has_line(t, "portcullis_connections_limited_total 1"));
            assert!(has_line(
                t,
                r#"portcullis_connections_active{mode="passthrough",host="p.example.com"} 1"#
            ));
            assert!(has_line(t, "portcullis_build_info{version=\""));
        }
        if cfg!(target_os = "linux") {
            assert!(
                has_line(&text, "# TYPE process_cpu_seconds_total counter"),
                "{text}"
            );
            assert!(has_line(&text, "process_open_fds "), "{text}");
            assert!(has_line(&text, "process_resident_memory_bytes "), "{text}");
            assert!(has_line(&om, "process_start_time_seconds "), "{om}");
        }
        drop(conn);
        let text = m.encode_as(Format::Prometheus);
        assert!(has_line(
            &text,
            r#"portcullis_connections_active{mode="passthrough",host="p.example.com"} 0"#
        ));
    }

    #[test]
    fn status_codes_and_routes_label_the_series() {
        let m = Metrics::new();
        let route = RouteLabels {
            namespace: "shop".into(),
            ingress: "web".into(),
            service: "api".into(),
        };
        let ok = m.http_request_series("a.example.com", &route, Mode::Http, 200);
        ok.record_with_upstream(Duration::from_millis(5), Some(Duration::from_millis(4)));
        let bad = m.http_request_series("a.example.com", &route, Mode::Http, 502);
        bad.record_with_upstream(Duration::from_millis(5), None);
        m.http_request("-", Mode::Http, 1000, Duration::from_millis(1));
        let text = m.encode_as(Format::Prometheus);
        let labels =
            r#"host="a.example.com",namespace="shop",ingress="web",service="api",mode="http""#;
        for want in [
            format!("portcullis_http_requests_total{{{labels},code=\"200\"}} 1"),
            format!("portcullis_http_requests_total{{{labels},code=\"502\"}} 1"),
            format!("portcullis_http_request_duration_seconds_count{{{labels}}} 2"),
            format!("portcullis_http_upstream_duration_seconds_count{{{labels}}} 1"),
            r#"portcullis_http_requests_total{host="-",namespace="",ingress="",service="",mode="http",code="other"} 1"#.to_string(),
        ] {
            assert!(has_line(&text, &want), "missing {want} in\n{text}");
        }
    }

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(101).as_str(), "1xx");
        assert_eq!(StatusClass::of(308).as_str(), "3xx");
        assert_eq!(StatusClass::of(404).as_str(), "4xx");
        assert_eq!(StatusClass::of(999).as_str(), "other");
    }

    #[test]
    fn upstream_health_series_come_and_go() {
        let m = Metrics::new();
        let a: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        m.upstream_health(a, true);
        m.upstream_health(b, true);
        m.upstream_health(b, false);
        let text = m.encode();
        assert!(has_line(
            &text,
            r#"portcullis_upstream_healthy{endpoint="10.0.0.1:8080"} 1"#
        ));
        assert!(has_line(
            &text,
            r#"portcullis_upstream_healthy{endpoint="10.0.0.2:8080"} 0"#
        ));
        m.remove_upstream(b);
        let text = m.encode();
        assert!(!text.contains("10.0.0.2:8080"), "{text}");
        assert!(text.contains("10.0.0.1:8080"));
    }

    #[test]
    fn control_plane_families() {
        let m = Metrics::new();
        m.config_generation(7);
        m.rebuild(Duration::from_millis(12));
        m.change_to_live(Duration::from_millis(800));
        let ing = ObjectRef::namespaced("Ingress", "default", "web");
        m.diagnostics(&[
            Diagnostic::error(ing.clone(), "spec", Reason::MissingService, "x"),
            Diagnostic::error(ing.clone(), "spec", Reason::MissingService, "y"),
            Diagnostic::warning(ing.clone(), "spec", Reason::DefaultCertificate, "z"),
        ]);
        m.snapshot_objects(&Snapshot::default());
        m.objects("Ingress", 3);
        let text = m.encode();
        for want in [
            "portcullis_config_generation 7",
            "portcullis_rebuild_duration_seconds_count 1",
            "portcullis_change_to_live_seconds_count 1",
            r#"portcullis_diagnostics{reason="MissingService",severity="error"} 2"#,
            r#"portcullis_diagnostics{reason="DefaultCertificate",severity="warning"} 1"#,
            r#"portcullis_objects{kind="Ingress"} 3"#,
            r#"portcullis_objects{kind="EndpointSlice"} 0"#,
            r#"portcullis_objects{kind="HTTPRoute"} 0"#,
            r#"portcullis_objects{kind="GRPCRoute"} 0"#,
            r#"portcullis_objects{kind="ConfigMap"} 0"#,
            r#"portcullis_objects{kind="Namespace"} 0"#,
        ] {
            assert!(has_line(&text, want), "missing {want} in\n{text}");
        }
        // The next build without those diagnostics removes their series.
        m.diagnostics(&[Diagnostic::warning(ing, "spec", Reason::Conflict, "w")]);
        let text = m.encode();
        assert!(!text.contains("MissingService"), "{text}");
        assert!(has_line(
            &text,
            r#"portcullis_diagnostics{reason="Conflict",severity="warning"} 1"#
        ));
    }
}
