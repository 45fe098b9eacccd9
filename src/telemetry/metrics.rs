//! Prometheus metrics (`portcullis_*`), labels from enums.
//!
//! One [`Registry`] per process, created by [`Metrics::new`] and encoded by [`Metrics::encode`]
//! for the admin `/metrics` endpoint (OpenMetrics text).
//!
//! Label cardinality is bounded by construction: modes, results, reasons and directions are
//! enums; hosts come from the routing table (callers pass the virtual host's name, never a raw
//! `Host` header); endpoints come from the table and their series are removed when they leave
//! it (see [`Metrics::remove_upstream`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::source::Snapshot;
use crate::table::diagnostic::{Diagnostic, Severity};

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

/// The class of an HTTP status code: the `code` label of `portcullis_http_requests_total`
/// (classes, not codes, keep the series count small).
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

    /// The label value: `"1xx"` .. `"5xx"`, or `"other"`.
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
    HelloRejection,
    StatusClass,
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
    mode: Mode,
    code: StatusClass,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModeLabels {
    mode: Mode,
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

/// Handles on the `portcullis_http_requests` counter of one (host, mode, status class) and on
/// the mode's `portcullis_http_request_duration` histogram.
#[derive(Debug, Clone)]
pub(crate) struct HttpRequestSeries {
    requests: Counter,
    duration: Histogram,
}

impl HttpRequestSeries {
    /// One request answered in `duration`, with this series' labels.
    pub(crate) fn record(&self, duration: Duration) {
        self.requests.inc();
        self.duration.observe(duration.as_secs_f64());
    }
}

/// All metrics of the process.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpRequestLabels, Counter>,
    http_request_duration: HistogramFamily<ModeLabels>,
    tcp_connections: Family<HostLabels, Counter>,
    tcp_bytes: Family<TcpBytesLabels, Counter>,
    tls_handshakes: Family<HandshakeLabels, Counter>,
    client_hello_rejected: Family<RejectionLabels, Counter>,
    connections_limited: Counter,
    upstream_healthy: Family<EndpointLabels, Gauge>,
    config_generation: Gauge,
    rebuild_duration: Histogram,
    change_to_live: Histogram,
    diagnostics: Family<DiagnosticLabels, Gauge>,
    /// Diagnostic series set by the previous build, so the next one can drop stale series.
    diagnostics_seen: Mutex<Vec<DiagnosticLabels>>,
    objects: Family<ObjectLabels, Gauge>,
    /// Ways of the rate limiter's table in use (`proxy::rate_limit`).
    rate_limit_entries: Gauge,
    /// The size of that table, set by the limiter when it is made.
    rate_limit_capacity: Gauge,
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
        let mut registry = Registry::with_prefix("portcullis");
        let http_requests = Family::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by virtual host, mode and status class",
            Clone::clone(&http_requests),
        );
        let http_request_duration: HistogramFamily<ModeLabels> =
            Family::new_with_constructor(request_buckets);
        registry.register_with_unit(
            "http_request_duration",
            "Time from request head to response end",
            Unit::Seconds,
            http_request_duration.clone(),
        );
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
        let upstream_healthy = Family::default();
        registry.register(
            "upstream_healthy",
            "1 when the endpoint receives traffic, 0 when health checks took it out",
            Clone::clone(&upstream_healthy),
        );
        let config_generation = Gauge::default();
        registry.register(
            "config_generation",
            "Number of routing tables built and swapped in since start",
            config_generation.clone(),
        );
        let rebuild_duration = control_plane_buckets();
        registry.register_with_unit(
            "rebuild_duration",
            "Time to build a routing table from a snapshot",
            Unit::Seconds,
            rebuild_duration.clone(),
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
        Metrics {
            registry,
            http_requests,
            http_request_duration,
            tcp_connections,
            tcp_bytes,
            tls_handshakes,
            client_hello_rejected,
            connections_limited,
            upstream_healthy,
            config_generation,
            rebuild_duration,
            change_to_live,
            diagnostics,
            diagnostics_seen: Mutex::new(Vec::new()),
            objects,
            rate_limit_entries,
            rate_limit_capacity,
        }
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
        self.http_requests
            .get_or_create(&HttpRequestLabels {
                host: host.to_string(),
                mode,
                code: StatusClass::of(status),
            })
            .inc();
        self.http_request_duration
            .get_or_create(&ModeLabels { mode })
            .observe(duration.as_secs_f64());
    }

    /// The series one HTTP request is recorded in. `host` is the virtual host's name from the
    /// table (e.g. `HostMatch`'s display, `*` for the catch-all), never a raw `Host` header, so
    /// the label stays bounded; the status is recorded by class. Returned as handles
    /// that a caller keeps while it records many requests to the same series (one keep-alive
    /// connection to one host): recording through [`HttpRequestSeries::record`] costs no label
    /// hashing and no allocation.
    pub(crate) fn http_request_series(
        &self,
        host: &str,
        mode: Mode,
        status: u16,
    ) -> HttpRequestSeries {
        HttpRequestSeries {
            requests: self.http_requests.get_or_create_owned(&HttpRequestLabels {
                host: host.to_string(),
                mode,
                code: StatusClass::of(status),
            }),
            duration: self
                .http_request_duration
                .get_or_create_owned(&ModeLabels { mode }),
        }
    }

    /// One TCP (pass-through) connection ended.
    pub(crate) fn tcp_connection(&self, host: &str, bytes_from_client: u64, bytes_to_client: u64) {
        self.tcp_connections
            .get_or_create(&HostLabels {
                host: host.to_string(),
            })
            .inc();
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
    }

    /// A TLS handshake finished (ok or not) for a terminated/re-encrypted host.
    pub(crate) fn handshake(&self, mode: Mode, ok: bool) {
        let result = if ok {
            HandshakeResult::Ok
        } else {
            HandshakeResult::Error
        };
        self.tls_handshakes
            .get_or_create(&HandshakeLabels { mode, result })
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
    }

    // === exposition ===

    /// Text exposition for `/metrics` (OpenMetrics text; the admin endpoint says which
    /// `Content-Type` it is served with).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; keep the endpoint answering anyway.
            out.clear();
            let _ = writeln!(out, "# EOF");
        }
        out
    }
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
        m.tcp_connection("p.example.com", 10, 20);
        m.handshake(Mode::Reencrypt, false);
        m.hello_rejected(HelloRejection::TooLarge);
        m.connection_limited();
        let text = m.encode();
        for want in [
            r#"portcullis_http_requests_total{host="a.example.com",mode="terminate",code="2xx"} 1"#,
            r#"portcullis_http_requests_total{host="a.example.com",mode="terminate",code="5xx"} 1"#,
            r#"portcullis_http_request_duration_seconds_count{mode="terminate"} 2"#,
            r#"portcullis_http_request_duration_seconds_bucket{le="+Inf",mode="terminate"} 2"#,
            r#"portcullis_tcp_connections_total{host="p.example.com"} 1"#,
            r#"portcullis_tcp_bytes_total{host="p.example.com",direction="from_client"} 10"#,
            r#"portcullis_tcp_bytes_total{host="p.example.com",direction="to_client"} 20"#,
            r#"portcullis_tls_handshakes_total{mode="reencrypt",result="error"} 1"#,
            r#"portcullis_client_hello_rejected_total{reason="too_large"} 1"#,
            "portcullis_connections_limited_total 1",
        ] {
            assert!(has_line(&text, want), "missing {want} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
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
