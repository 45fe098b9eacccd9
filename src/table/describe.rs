//! `portcullis check`: the routing table and diagnostics as a person (or a machine) reads them.
//!
//! Both renderings come from one plain-data [`Description`], built from the table's public API;
//! the model's golden tests compare that same description, so what `check` shows is what is
//! tested. `check` adds a verdict per Ingress ([`render_check_text`], [`render_check_json`]):
//! `serves`, `serves with warnings` or `refused`, with each annotation's status, read off the
//! table (is it served?) and the diagnostics naming it (the model has judged every annotation
//! against its annotation table).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::networking::v1::Ingress;
use serde::{Deserialize, Serialize};

use crate::table::certificates::CertificateInfo;
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason, Severity};
use crate::table::host::HostMatch;
use crate::table::upstream::{HealthProbe, LoadBalance, ProxyProtocol, Upstream, UpstreamProtocol};
use crate::table::{CertificateChoice, ClassSettings, RouteTable, VirtualHost};

/// Everything `check` reports: the table, then the diagnostics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    table: TableDescription,
    diagnostics: Vec<DiagnosticDescription>,
    /// `check` only: a verdict per Ingress of ours, in namespace/name order. Absent from the
    /// admin API's description and the model's goldens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ingresses: Vec<VerdictDescription>,
    /// `check` only: Ingresses of other classes, not judged (`--as-class` judges them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    not_ours: Vec<NotOursDescription>,
}

/// The routing table as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TableDescription {
    /// Most specific first: exact hosts, wildcards, then the catch-all `*`.
    hosts: Vec<HostDescription>,
    /// `None`: the proxy's self-signed certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_certificate: Option<CertificateDescription>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    cert_dir: Vec<CertificateDescription>,
    /// `None`: every class-wide setting has its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    class: Option<ClassDescription>,
}

/// One virtual host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct HostDescription {
    /// `foo.example.com`, `*.example.com`, or `*` for the catch-all.
    host: String,
    tls_mode: String,
    /// `None`: the default certificate (always for pass-through and the catch-all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<CertificateDescription>,
    ssl_redirect: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hsts: Option<String>,
    forwarded_headers: bool,
    /// The Ingress owning the host's TLS mode, `namespace/name`.
    owner: String,
    routes: Vec<RouteDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_backend: Option<UpstreamDescription>,
    /// What requests served by the default backend get, when not forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_action: Option<String>,
    /// The default backend's `proxy-body-size` in bytes; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    default_max_body: Option<u64>,
    /// The default backend's request and response handling (rewrites, headers, CORS...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    default_policy: Vec<String>,
    /// `from-to-www-redirect`: every request is redirected (308) to this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    www_redirect: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    passthrough: Option<UpstreamDescription>,
}

/// One path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RouteDescription {
    path: String,
    /// `Exact` or `Prefix`.
    path_type: String,
    /// The Ingress it came from, `namespace/name`.
    source: String,
    /// A redirect instead of (or before) forwarding; absent when requests are forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    /// `proxy-body-size` in bytes; absent: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_body: Option<u64>,
    /// The route's request and response handling (rewrites, headers, CORS...), a line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    policy: Vec<String>,
    upstream: UpstreamDescription,
    /// A canary Ingress's alternative upstream for this path, and its rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    canary: Option<CanaryDescription>,
}

/// A route's canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CanaryDescription {
    /// E.g. `header x-canary, weight 20/100`.
    rules: String,
    /// The canary Ingress, `namespace/name`.
    source: String,
    /// The canary's session affinity, when it differs from the route's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    affinity: Option<String>,
    upstream: UpstreamDescription,
}

/// One upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct UpstreamDescription {
    /// `namespace/name:port`.
    service: String,
    endpoints: Vec<String>,
    /// Serving but terminating: used only when no ready endpoint is eligible. Absent when
    /// empty, so descriptions of tables without any read as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    terminating: Vec<String>,
    /// `http`, `https` or `tcp`.
    protocol: String,
    /// Re-encrypt only: `sni=… verify=… ca=…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backend_tls: Option<String>,
    balance: String,
    /// E.g. `http HEAD / host=foo.example.com every 5s`.
    health: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    proxy_protocol: Option<String>,
}

/// Certificate metadata (never key material).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CertificateDescription {
    subject: String,
    dns_names: Vec<String>,
    not_after: String,
    source: String,
}

/// Class-wide settings with durations as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ClassDescription {
    tls_min_version: String,
    cipher_suites: Vec<String>,
    post_quantum: bool,
    trusted_proxy_protocol: Vec<String>,
    trusted_forwarded: Vec<String>,
    timeouts: Vec<String>,
    limits: Vec<String>,
}

/// One diagnostic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct DiagnosticDescription {
    severity: String,
    reason: String,
    /// `Kind namespace/name` or `Kind name`.
    object: String,
    field: String,
    message: String,
}

/// What `check` says about one Ingress of ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct VerdictDescription {
    /// `namespace/name`.
    ingress: String,
    /// `serves`, `serves with warnings` or `refused`.
    verdict: String,
    /// Its annotations under the prefixes Portcullis answers for, by key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    annotations: Vec<AnnotationDescription>,
    /// The diagnostics naming it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    diagnostics: Vec<DiagnosticDescription>,
}

/// One annotation of an Ingress of ours and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AnnotationDescription {
    key: String,
    /// `ok` (read, or not Portcullis' business), `warning` (served, see the diagnostic) or
    /// `refused` (named by an error diagnostic: the Ingress is not served for it).
    status: String,
    /// The reason of the worst diagnostic naming it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// An Ingress `check` read but did not judge: it belongs to another class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct NotOursDescription {
    /// `namespace/name`.
    ingress: String,
    /// `spec.ingressClassName`, else the `kubernetes.io/ingress.class` annotation; `None`:
    /// no class, and ours is not the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    class: Option<String>,
}

/// What `portcullis check` judges beyond the table: the Ingresses read and which are ours.
#[derive(Debug, Clone, Copy)]
pub struct CheckInput<'a> {
    /// The table built.
    pub table: &'a RouteTable,
    /// The build's diagnostics.
    pub diagnostics: &'a [Diagnostic],
    /// Every Ingress read, ours or not (the snapshot's, after any `--as-class` rewrite).
    pub ingresses: &'a [Arc<Ingress>],
    /// The Ingresses of our class (the build's `ours`).
    pub ours: &'a [ObjectRef],
}

// === impl Description ===

impl Description {
    /// Describes a table and the diagnostics of the build that made it.
    pub fn of(table: &RouteTable, diagnostics: &[Diagnostic]) -> Description {
        Description {
            table: TableDescription::of(table),
            diagnostics: diagnostics.iter().map(DiagnosticDescription::of).collect(),
            ingresses: Vec::new(),
            not_ours: Vec::new(),
        }
    }

    /// The same, with `check`'s verdict on each Ingress of ours and on each Ingress that
    /// could not be read (a removed API version: refused). Also returns the object of each
    /// verdict, in the same order.
    fn of_check(input: &CheckInput<'_>) -> (Description, Vec<ObjectRef>) {
        let mut description = Description::of(input.table, input.diagnostics);
        // Served: owns a host (its TLS mode, pass-through, default backend) or one route.
        let served: BTreeSet<&str> = description
            .table
            .hosts
            .iter()
            .flat_map(|h| {
                std::iter::once(h.owner.as_str()).chain(h.routes.iter().map(|r| r.source.as_str()))
            })
            .collect();
        let ours: BTreeSet<&ObjectRef> = input.ours.iter().collect();
        let unreadable = input.diagnostics.iter().filter(|d| {
            d.reason == Reason::UnsupportedApiVersion
                && d.object.kind == "Ingress"
                && !ours.contains(&d.object)
        });
        let mut judged: Vec<ObjectRef> = input
            .ours
            .iter()
            .cloned()
            .chain(unreadable.map(|d| d.object.clone()))
            .collect();
        judged.sort();
        judged.dedup();
        for object in &judged {
            let name = namespaced_name(object);
            let mine: Vec<&Diagnostic> = input
                .diagnostics
                .iter()
                .filter(|d| d.object == *object)
                .collect();
            let verdict = verdict(
                served.contains(name.as_str()),
                mine.iter().map(|d| d.severity).max(),
            );
            let ingress = input.ingresses.iter().find(|i| ingress_ref(i) == *object);
            let annotations = ingress
                .and_then(|i| i.metadata.annotations.as_ref())
                .into_iter()
                .flat_map(|a| a.keys())
                .filter(|key| {
                    is_answered_prefix(key) || mine.iter().any(|d| d.field == annotation_field(key))
                })
                .map(|key| AnnotationDescription::of(key, &mine))
                .collect();
            description.ingresses.push(VerdictDescription {
                ingress: name,
                verdict: verdict.to_string(),
                annotations,
                diagnostics: mine.into_iter().map(DiagnosticDescription::of).collect(),
            });
        }
        let mut not_ours: Vec<NotOursDescription> = input
            .ingresses
            .iter()
            .filter(|i| i.metadata.name.is_some() && !ours.contains(&ingress_ref(i)))
            .map(|i| NotOursDescription {
                ingress: namespaced_name(&ingress_ref(i)),
                class: i
                    .spec
                    .as_ref()
                    .and_then(|s| s.ingress_class_name.clone())
                    .or_else(|| {
                        i.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get("kubernetes.io/ingress.class").cloned())
                    }),
            })
            .collect();
        not_ours.sort_by(|a, b| a.ingress.cmp(&b.ingress));
        not_ours.dedup_by(|a, b| a.ingress == b.ingress);
        description.not_ours = not_ours;
        (description, judged)
    }
}

/// Served and clean; served with diagnostics; not served with an error (offline there is no
/// last good version to fall back to). Not served without an error (an Ingress with nothing
/// to route) counts as serving what it asks for: nothing.
fn verdict(served: bool, worst: Option<Severity>) -> &'static str {
    match (served, worst) {
        (false, Some(Severity::Error)) => "refused",
        (_, None) => "serves",
        (_, Some(_)) => "serves with warnings",
    }
}

/// The annotation prefixes Portcullis answers for (the annotation table in
/// `model::annotation_catalog` lists their keys): `check` lists every annotation under them.
const ANSWERED_PREFIXES: [&str; 6] = [
    "portcullis.io",
    "nginx.ingress.kubernetes.io",
    "haproxy.org",
    "haproxy.com",
    "haproxy-ingress.github.io",
    "ingress.kubernetes.io",
];

fn is_answered_prefix(key: &str) -> bool {
    key.split_once('/')
        .is_some_and(|(prefix, _)| ANSWERED_PREFIXES.contains(&prefix))
}

/// The `field` of a diagnostic about annotation `key`.
fn annotation_field(key: &str) -> String {
    format!("metadata.annotations[\"{key}\"]")
}

/// `Ingress namespace/name` of an Ingress (no namespace means `default`, as with kubectl).
fn ingress_ref(ingress: &Ingress) -> ObjectRef {
    ObjectRef::namespaced(
        "Ingress",
        ingress.metadata.namespace.as_deref().unwrap_or("default"),
        ingress.metadata.name.as_deref().unwrap_or_default(),
    )
}

/// `namespace/name`, or `name` for a cluster-scoped object.
fn namespaced_name(object: &ObjectRef) -> String {
    match &object.namespace {
        Some(ns) => format!("{ns}/{}", object.name),
        None => object.name.clone(),
    }
}

impl AnnotationDescription {
    /// The status of annotation `key` from the diagnostics naming it (the model has judged
    /// it against the annotation table): an error refuses, a warning warns, none is fine.
    fn of(key: &str, diagnostics: &[&Diagnostic]) -> AnnotationDescription {
        let field = annotation_field(key);
        let worst = diagnostics
            .iter()
            .filter(|d| d.field == field)
            .max_by_key(|d| d.severity);
        AnnotationDescription {
            key: key.to_string(),
            status: match worst.map(|d| (d.severity, &d.reason)) {
                None => "ok",
                Some((Severity::Warning, _)) => "warning",
                // One of ours (or an alias) with a value it does not accept.
                Some((Severity::Error, Reason::InvalidAnnotation)) => "invalid value",
                Some((Severity::Error, _)) => "refused",
            }
            .to_string(),
            reason: worst.map(|d| d.reason.as_str().to_string()),
        }
    }
}

impl TableDescription {
    /// Describes a table through its public API.
    fn of(table: &RouteTable) -> TableDescription {
        TableDescription {
            hosts: {
                let mut hosts = table.vhosts();
                // Most specific first (exact, wildcard, catch-all), then alphabetically.
                hosts
                    .sort_by_key(|v| (std::cmp::Reverse(specificity(&v.host)), v.host.to_string()));
                hosts.into_iter().map(|v| HostDescription::of(v)).collect()
            },
            default_certificate: table
                .default_certificate
                .as_ref()
                .map(|c| CertificateDescription::of(&c.info)),
            cert_dir: table
                .cert_dir
                .iter()
                .map(|c| CertificateDescription::of(&c.info))
                .collect(),
            class: (table.class != ClassSettings::default())
                .then(|| ClassDescription::of(&table.class)),
        }
    }
}

impl HostDescription {
    fn of(vhost: &VirtualHost) -> HostDescription {
        let owner = &vhost.owner;
        HostDescription {
            host: vhost.host.to_string(),
            tls_mode: vhost.tls_mode.as_str().to_string(),
            certificate: match &vhost.certificate {
                CertificateChoice::Own(c) => Some(CertificateDescription::of(&c.info)),
                CertificateChoice::Default => None,
            },
            ssl_redirect: vhost.ssl_redirect,
            hsts: vhost
                .hsts
                .as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()),
            forwarded_headers: vhost.forwarded_headers,
            owner: source_label(owner),
            routes: vhost
                .routes
                .iter()
                .map(|r| RouteDescription {
                    path: r.path.path().to_string(),
                    path_type: r.path.kind().to_string(),
                    source: source_label(&r.source),
                    action: r.action.describe(),
                    max_body: r.max_body,
                    // A Gateway API route's matches beyond the path and its weighted
                    // backends first, then the policy.
                    policy: r
                        .conditions
                        .iter()
                        .map(|c| format!("when {}", c.describe()))
                        .chain(
                            r.split
                                .iter()
                                .map(|s| format!("split {}", s.describe().join(", "))),
                        )
                        .chain(r.policy.describe())
                        .collect(),
                    upstream: UpstreamDescription::of(&r.upstream),
                    canary: r.canary.as_deref().map(|c| CanaryDescription {
                        rules: c.rules.describe(),
                        source: format!(
                            "{}/{}",
                            c.source.namespace.as_deref().unwrap_or_default(),
                            c.source.name
                        ),
                        affinity: c
                            .policy
                            .affinity
                            .as_ref()
                            .filter(|a| Some(*a) != r.policy.affinity.as_ref())
                            .map(|a| a.describe()),
                        upstream: UpstreamDescription::of(&c.upstream),
                    }),
                })
                .collect(),
            default_backend: vhost
                .default_backend
                .as_deref()
                .map(UpstreamDescription::of),
            default_action: vhost
                .default_backend
                .as_ref()
                .and_then(|_| vhost.default_action.describe()),
            default_max_body: vhost.default_backend.as_ref().and(vhost.default_max_body),
            // A pass-through host's: its weighted backends and allow/deny lists.
            default_policy: match (&vhost.default_backend, &vhost.passthrough) {
                (None, None) => Vec::new(),
                _ => vhost
                    .passthrough_split
                    .iter()
                    .map(|s| format!("split {}", s.describe().join(", ")))
                    .chain(vhost.default_policy.describe())
                    .collect(),
            },
            www_redirect: vhost.www_redirect.clone(),
            passthrough: vhost.passthrough.as_deref().map(UpstreamDescription::of),
        }
    }
}

impl UpstreamDescription {
    fn of(upstream: &Upstream) -> UpstreamDescription {
        let (protocol, backend_tls) = match &upstream.protocol {
            UpstreamProtocol::Http => ("http", None),
            UpstreamProtocol::Tcp => ("tcp", None),
            UpstreamProtocol::H2c => ("h2c", None),
            UpstreamProtocol::Https(tls) | UpstreamProtocol::H2(tls) => {
                let ca = match (&tls.ca_secret, &tls.ca) {
                    (Some(secret), Some(ca)) => format!("{secret} ({} CA cert(s))", ca.len()),
                    (Some(secret), None) => format!("{secret} (not loaded)"),
                    (None, _) => "system roots".to_string(),
                };
                let name = if upstream.protocol.is_http2() {
                    "h2"
                } else {
                    "https"
                };
                (
                    name,
                    Some(format!("sni={} verify={} ca={ca}", tls.sni, tls.verify)),
                )
            }
        };
        let probe = match &upstream.health.probe {
            HealthProbe::Http { method, path, host } => format!("http {method} {path} host={host}"),
            HealthProbe::Tls { sni } => format!("tls sni={sni}"),
            HealthProbe::Tcp => "tcp".to_string(),
            HealthProbe::None => "none".to_string(),
        };
        let endpoints = upstream.endpoints.load();
        UpstreamDescription {
            service: upstream.service.to_string(),
            endpoints: endpoints.ready.iter().map(|e| e.to_string()).collect(),
            terminating: endpoints
                .terminating
                .iter()
                .map(|e| e.to_string())
                .collect(),
            protocol: protocol.to_string(),
            backend_tls,
            balance: match upstream.balance {
                LoadBalance::RoundRobin => "round-robin",
                LoadBalance::LeastRequest => "least-request",
                LoadBalance::Random => "random",
            }
            .to_string(),
            health: if upstream.health.probe == HealthProbe::None {
                probe
            } else {
                format!("{probe} every {}", duration_text(upstream.health.interval))
            },
            proxy_protocol: upstream.proxy_protocol.map(|p| {
                match p {
                    ProxyProtocol::V1 => "v1",
                    ProxyProtocol::V2 => "v2",
                }
                .to_string()
            }),
        }
    }
}

impl CertificateDescription {
    fn of(info: &CertificateInfo) -> CertificateDescription {
        CertificateDescription {
            subject: info.subject.clone(),
            dns_names: info.dns_names.clone(),
            not_after: info.not_after.clone(),
            source: info.source.clone(),
        }
    }
}

impl ClassDescription {
    fn of(class: &ClassSettings) -> ClassDescription {
        let t = &class.timeouts;
        let l = &class.limits;
        ClassDescription {
            tls_min_version: if class.tls_min_version_1_3 {
                "1.3"
            } else {
                "1.2"
            }
            .to_string(),
            cipher_suites: class.cipher_suites.clone(),
            post_quantum: class.post_quantum,
            trusted_proxy_protocol: class
                .trusted_proxy_protocol
                .iter()
                .map(|n| n.to_string())
                .collect(),
            trusted_forwarded: class
                .trusted_forwarded
                .iter()
                .map(|n| n.to_string())
                .collect(),
            timeouts: vec![
                format!("clientHello={}", duration_text(t.client_hello)),
                format!("headerRead={}", duration_text(t.header_read)),
                format!("idle={}", duration_text(t.idle)),
                format!("tunnelIdle={}", duration_text(t.tunnel_idle)),
                format!("connect={}", duration_text(t.connect)),
                format!("upstreamResponse={}", duration_text(t.upstream_response)),
            ],
            limits: vec![
                format!("maxConnections={}", l.max_connections),
                format!("maxHeaderBytes={}", l.max_header_bytes),
                format!("maxClientHelloBytes={}", l.max_client_hello_bytes),
                format!("rateLimitStatus={}", l.rate_limit_status),
                format!("connectionLimitStatus={}", l.connection_limit_status),
            ],
        }
    }
}

impl DiagnosticDescription {
    fn of(d: &Diagnostic) -> DiagnosticDescription {
        DiagnosticDescription {
            severity: match d.severity {
                Severity::Warning => "warning",
                Severity::Error => "error",
            }
            .to_string(),
            reason: d.reason.as_str().to_string(),
            object: d.object.to_string(),
            field: d.field.clone(),
            message: d.message.clone(),
        }
    }
}

fn specificity(host: &HostMatch) -> u8 {
    match host {
        HostMatch::Any => 0,
        HostMatch::Wildcard(_) => 1,
        HostMatch::Exact(_) => 2,
    }
}

/// `500ms`, `5s`, `2m`: the largest unit that divides the duration.
fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// An Ingress as `namespace/name`; any other kind (a Gateway API route) with its kind first.
fn source_label(object: &ObjectRef) -> String {
    let name = format!(
        "{}/{}",
        object.namespace.as_deref().unwrap_or_default(),
        object.name
    );
    if object.kind == "Ingress" {
        name
    } else {
        format!("{} {name}", object.kind)
    }
}

// === rendering ===

/// The table (host, TLS mode, paths, backends → endpoints, certificate, redirect/HSTS) followed
/// by the diagnostics, for a terminal.
pub fn render_text(table: &RouteTable, diagnostics: &[Diagnostic]) -> String {
    let d = Description::of(table, diagnostics);
    let mut out = String::new();
    if d.table.hosts.is_empty() {
        out.push_str("no hosts\n");
    }
    for host in &d.table.hosts {
        let cert = match (&host.certificate, host.tls_mode.as_str()) {
            (_, "passthrough") => "certificate: the backend's own (pass-through)".to_string(),
            (Some(c), _) => format!(
                "certificate: {} [{}] expires {} from {}",
                c.subject,
                c.dns_names.join(", "),
                c.not_after,
                c.source
            ),
            (None, _) => "certificate: default certificate".to_string(),
        };
        let _ = writeln!(
            out,
            "{}  ({}, owner {})",
            host.host, host.tls_mode, host.owner
        );
        let _ = writeln!(out, "  {cert}");
        let mut http = vec![format!(
            "ssl-redirect: {}",
            if host.ssl_redirect { "on" } else { "off" }
        )];
        http.push(format!("hsts: {}", host.hsts.as_deref().unwrap_or("off")));
        if !host.forwarded_headers {
            http.push("forwarded-headers: off".to_string());
        }
        let _ = writeln!(out, "  {}", http.join("  "));
        if let Some(to) = &host.www_redirect {
            let _ = writeln!(
                out,
                "  {:<24} → 308 to {to} (from-to-www-redirect)",
                "(every request)"
            );
        }
        if let Some(u) = &host.passthrough {
            let _ = writeln!(out, "  {:<24} → {}", "(every connection)", upstream_text(u));
            for line in &host.default_policy {
                let _ = writeln!(out, "  {:<24}   {line}", "");
            }
        }
        for r in &host.routes {
            let path = format!("{} {}", r.path, r.path_type);
            let _ = writeln!(out, "  {path:<24} → {}", upstream_text(&r.upstream));
            if let Some(action) = &r.action {
                let _ = writeln!(out, "  {:<24}   {action}", "");
            }
            if let Some(max) = r.max_body {
                let _ = writeln!(out, "  {:<24}   proxy-body-size {max} bytes", "");
            }
            for line in &r.policy {
                let _ = writeln!(out, "  {:<24}   {line}", "");
            }
            if let Some(c) = &r.canary {
                let _ = writeln!(
                    out,
                    "  {:<24}   canary: {} → {} (from {})",
                    "",
                    c.rules,
                    upstream_text(&c.upstream),
                    c.source
                );
                if let Some(a) = &c.affinity {
                    let _ = writeln!(out, "  {:<24}   canary {a}", "");
                }
            }
        }
        if let Some(u) = &host.default_backend {
            let _ = writeln!(out, "  {:<24} → {}", "(default backend)", upstream_text(u));
            if let Some(action) = &host.default_action {
                let _ = writeln!(out, "  {:<24}   {action}", "");
            }
            if let Some(max) = host.default_max_body {
                let _ = writeln!(out, "  {:<24}   proxy-body-size {max} bytes", "");
            }
            for line in &host.default_policy {
                let _ = writeln!(out, "  {:<24}   {line}", "");
            }
        }
    }
    if let Some(c) = &d.table.default_certificate {
        let _ = writeln!(
            out,
            "default certificate: {} [{}] expires {} from {}",
            c.subject,
            c.dns_names.join(", "),
            c.not_after,
            c.source
        );
    } else {
        out.push_str("default certificate: self-signed at start-up\n");
    }
    for c in &d.table.cert_dir {
        let _ = writeln!(
            out,
            "cert-dir: {} [{}] expires {}",
            c.source,
            c.dns_names.join(", "),
            c.not_after
        );
    }
    if d.diagnostics.is_empty() {
        out.push_str("\nno problems found\n");
    } else {
        let _ = writeln!(out, "\n{} diagnostics:", d.diagnostics.len());
        for diag in diagnostics {
            let _ = writeln!(out, "  {diag}");
        }
    }
    out
}

fn upstream_text(u: &UpstreamDescription) -> String {
    let terminating = u.terminating.iter().map(|e| format!("{e} (terminating)"));
    let endpoints = if u.endpoints.is_empty() {
        // Said even with terminating endpoints: they serve, but only as a last resort.
        std::iter::once("no ready endpoints".to_string())
            .chain(terminating)
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        u.endpoints
            .iter()
            .cloned()
            .chain(terminating)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!("{} → {endpoints}  [{}", u.service, u.protocol);
    if let Some(tls) = &u.backend_tls {
        let _ = write!(text, " {tls}");
    }
    if let Some(p) = &u.proxy_protocol {
        let _ = write!(text, " proxy-protocol {p}");
    }
    let _ = write!(text, ", {}, health {}]", u.balance, u.health);
    text
}

/// `portcullis check`'s report: the table, then a verdict per Ingress of ours (`serves`,
/// `serves with warnings`, `refused`) with its annotations' status and its diagnostics, the
/// Ingresses of other classes, then the remaining diagnostics and a summary. Without any
/// Ingress read, exactly [`render_text`].
pub fn render_check_text(input: &CheckInput<'_>) -> String {
    if input.ingresses.is_empty() {
        return render_text(input.table, input.diagnostics);
    }
    let (d, judged) = Description::of_check(input);
    let full = render_text(input.table, &[]);
    // The table part of the plain rendering, without its "no problems found".
    let mut out = full
        .strip_suffix("\nno problems found\n")
        .unwrap_or(&full)
        .to_string();
    let attached: BTreeSet<&ObjectRef> = judged.iter().collect();
    if !d.ingresses.is_empty() {
        out.push_str("\nverdicts:\n");
    }
    for (verdict, object) in d.ingresses.iter().zip(&judged) {
        let _ = writeln!(out, "Ingress {}: {}", verdict.ingress, verdict.verdict);
        for a in &verdict.annotations {
            let _ = writeln!(out, "  annotation {}: {}", a.key, a.status);
        }
        for diag in input.diagnostics.iter().filter(|d| d.object == *object) {
            let _ = writeln!(out, "  {diag}");
        }
    }
    if !d.not_ours.is_empty() {
        let _ = writeln!(
            out,
            "\nnot checked, another class (`--as-class CLASS` checks a class as ours):"
        );
        for other in &d.not_ours {
            let class = other.class.as_deref().unwrap_or("none");
            let _ = writeln!(out, "  Ingress {} (class {class})", other.ingress);
        }
    }
    let rest: Vec<&Diagnostic> = input
        .diagnostics
        .iter()
        .filter(|diag| !attached.contains(&diag.object))
        .collect();
    if !rest.is_empty() {
        let _ = writeln!(out, "\n{} other diagnostics:", rest.len());
        for diag in rest {
            let _ = writeln!(out, "  {diag}");
        }
    }
    let count = |v: &str| d.ingresses.iter().filter(|i| i.verdict == v).count();
    let errors = d
        .diagnostics
        .iter()
        .filter(|x| x.severity == "error")
        .count();
    let _ = writeln!(
        out,
        "\n{} checked: {} serve, {} serve with warnings, {} refused; {} diagnostics ({errors} errors)",
        match d.ingresses.len() {
            1 => "1 Ingress".to_string(),
            n => format!("{n} Ingresses"),
        },
        count("serves"),
        count("serves with warnings"),
        count("refused"),
        d.diagnostics.len(),
    );
    if d.diagnostics.is_empty() {
        out.push_str("no problems found\n");
    }
    out
}

/// The same, as JSON: [`render_json`]'s fields, plus `ingresses` (verdict, annotations and
/// diagnostics per Ingress of ours) and `not_ours`.
pub fn render_check_json(input: &CheckInput<'_>) -> String {
    serde_json::to_string_pretty(&Description::of_check(input).0)
        .unwrap_or_else(|_| "{}".to_string())
}

/// The same, as JSON.
pub fn render_json(table: &RouteTable, diagnostics: &[Diagnostic]) -> String {
    serde_json::to_string_pretty(&Description::of(table, diagnostics))
        .unwrap_or_else(|_| "{}".to_string())
}

/// Exit status of `check`: 1 when any diagnostic is an error.
pub fn has_errors(diagnostics: &[Diagnostic]) -> bool {
    diagnostics
        .iter()
        .any(|d| d.severity == crate::table::diagnostic::Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(true, None), "serves");
        assert_eq!(
            verdict(true, Some(Severity::Warning)),
            "serves with warnings"
        );
        // Served in part (a path lost to a conflict): serves, with the error to read.
        assert_eq!(verdict(true, Some(Severity::Error)), "serves with warnings");
        assert_eq!(verdict(false, Some(Severity::Error)), "refused");
        assert_eq!(
            verdict(false, Some(Severity::Warning)),
            "serves with warnings"
        );
        assert_eq!(verdict(false, None), "serves");
    }

    #[test]
    fn annotation_status_comes_from_the_diagnostics_naming_it() {
        let object = ObjectRef::namespaced("Ingress", "shop", "web");
        let key = "nginx.ingress.kubernetes.io/auth-url";
        let warning = Diagnostic::warning(
            object.clone(),
            annotation_field(key),
            Reason::UnsupportedAnnotation,
            "w",
        );
        let error = Diagnostic::error(
            object.clone(),
            annotation_field(key),
            Reason::UnsupportedAnnotation,
            "e",
        );
        let other = Diagnostic::error(object, "spec.rules[0]", Reason::InvalidSpec, "x");
        assert_eq!(AnnotationDescription::of(key, &[&other]).status, "ok");
        assert_eq!(
            AnnotationDescription::of(key, &[&warning, &other]).status,
            "warning"
        );
        let worst = AnnotationDescription::of(key, &[&warning, &error]);
        assert_eq!(worst.status, "refused");
        assert_eq!(worst.reason.as_deref(), Some("UnsupportedAnnotation"));
        let invalid = Diagnostic::error(
            ObjectRef::namespaced("Ingress", "shop", "web"),
            annotation_field(key),
            Reason::InvalidAnnotation,
            "bad value",
        );
        assert_eq!(
            AnnotationDescription::of(key, &[&invalid]).status,
            "invalid value"
        );
        assert!(is_answered_prefix("haproxy.org/server-ssl"));
        assert!(!is_answered_prefix(
            "kubectl.kubernetes.io/last-applied-configuration"
        ));
        assert!(!is_answered_prefix("kubernetes.io/ingress.class"));
    }
}
