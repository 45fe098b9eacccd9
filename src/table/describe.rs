//! `portcullis check`: the routing table and diagnostics as a person (or a machine) reads them.
//!
//! Both renderings come from one plain-data [`Description`], built from the table's public API;
//! the model's golden tests compare that same description, so what `check` shows is what is
//! tested.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::table::certificates::CertificateInfo;
use crate::table::diagnostic::{Diagnostic, Severity};
use crate::table::host::HostMatch;
use crate::table::upstream::{HealthProbe, LoadBalance, ProxyProtocol, Upstream, UpstreamProtocol};
use crate::table::{CertificateChoice, ClassSettings, RouteTable, VirtualHost};

/// Everything `check` reports: the table, then the diagnostics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    pub table: TableDescription,
    pub diagnostics: Vec<DiagnosticDescription>,
}

/// The routing table as plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDescription {
    /// Most specific first: exact hosts, wildcards, then the catch-all `*`.
    pub hosts: Vec<HostDescription>,
    /// `None`: the proxy's self-signed certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_certificate: Option<CertificateDescription>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cert_dir: Vec<CertificateDescription>,
    /// `None`: every class-wide setting has its default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<ClassDescription>,
}

/// One virtual host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostDescription {
    /// `foo.example.com`, `*.example.com`, or `*` for the catch-all.
    pub host: String,
    pub tls_mode: String,
    /// `None`: the default certificate (always for pass-through and the catch-all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateDescription>,
    pub ssl_redirect: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<String>,
    pub forwarded_headers: bool,
    /// The Ingress owning the host's TLS mode, `namespace/name`.
    pub owner: String,
    pub routes: Vec<RouteDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<UpstreamDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passthrough: Option<UpstreamDescription>,
}

/// One path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteDescription {
    pub path: String,
    /// `Exact` or `Prefix`.
    pub path_type: String,
    /// The Ingress it came from, `namespace/name`.
    pub source: String,
    pub upstream: UpstreamDescription,
}

/// One upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpstreamDescription {
    /// `namespace/name:port`.
    pub service: String,
    pub endpoints: Vec<String>,
    /// Serving but terminating: used only when no ready endpoint is eligible. Absent when
    /// empty, so descriptions of tables without any read as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terminating: Vec<String>,
    /// `http`, `https` or `tcp`.
    pub protocol: String,
    /// Re-encrypt only: `sni=… verify=… ca=…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_tls: Option<String>,
    pub balance: String,
    /// E.g. `http HEAD / host=foo.example.com every 5s`.
    pub health: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<String>,
}

/// Certificate metadata (never key material).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CertificateDescription {
    pub subject: String,
    pub dns_names: Vec<String>,
    pub not_after: String,
    pub source: String,
}

/// Class-wide settings with durations as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassDescription {
    pub tls_min_version: String,
    pub cipher_suites: Vec<String>,
    pub post_quantum: bool,
    pub trusted_proxy_protocol: Vec<String>,
    pub trusted_forwarded: Vec<String>,
    pub timeouts: Vec<String>,
    pub limits: Vec<String>,
}

/// One diagnostic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagnosticDescription {
    pub severity: String,
    pub reason: String,
    /// `Kind namespace/name` or `Kind name`.
    pub object: String,
    pub field: String,
    pub message: String,
}

// === impl Description ===

impl Description {
    /// Describes a table and the diagnostics of the build that made it.
    pub fn of(table: &RouteTable, diagnostics: &[Diagnostic]) -> Description {
        Description {
            table: TableDescription::of(table),
            diagnostics: diagnostics.iter().map(DiagnosticDescription::of).collect(),
        }
    }
}

impl TableDescription {
    /// Describes a table through its public API.
    pub fn of(table: &RouteTable) -> TableDescription {
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
            hsts: vhost.hsts.clone(),
            forwarded_headers: vhost.forwarded_headers,
            owner: format!(
                "{}/{}",
                owner.namespace.as_deref().unwrap_or_default(),
                owner.name
            ),
            routes: vhost
                .routes
                .iter()
                .map(|r| RouteDescription {
                    path: r.path.path().to_string(),
                    path_type: r.path.kind().to_string(),
                    source: format!(
                        "{}/{}",
                        r.source.namespace.as_deref().unwrap_or_default(),
                        r.source.name
                    ),
                    upstream: UpstreamDescription::of(&r.upstream),
                })
                .collect(),
            default_backend: vhost
                .default_backend
                .as_deref()
                .map(UpstreamDescription::of),
            passthrough: vhost.passthrough.as_deref().map(UpstreamDescription::of),
        }
    }
}

impl UpstreamDescription {
    fn of(upstream: &Upstream) -> UpstreamDescription {
        let (protocol, backend_tls) = match &upstream.protocol {
            UpstreamProtocol::Http => ("http", None),
            UpstreamProtocol::Tcp => ("tcp", None),
            UpstreamProtocol::Https(tls) => {
                let ca = match (&tls.ca_secret, &tls.ca) {
                    (Some(secret), Some(ca)) => format!("{secret} ({} CA cert(s))", ca.len()),
                    (Some(secret), None) => format!("{secret} (not loaded)"),
                    (None, _) => "system roots".to_string(),
                };
                (
                    "https",
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
        UpstreamDescription {
            service: upstream.service.to_string(),
            endpoints: upstream.endpoints.iter().map(|e| e.to_string()).collect(),
            terminating: upstream.terminating.iter().map(|e| e.to_string()).collect(),
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
        if let Some(u) = &host.passthrough {
            let _ = writeln!(out, "  {:<24} → {}", "(every connection)", upstream_text(u));
        }
        for r in &host.routes {
            let path = format!("{} {}", r.path, r.path_type);
            let _ = writeln!(out, "  {path:<24} → {}", upstream_text(&r.upstream));
        }
        if let Some(u) = &host.default_backend {
            let _ = writeln!(out, "  {:<24} → {}", "(default backend)", upstream_text(u));
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
