//! End to end, the built binary: `/metrics` as a Prometheus server reads it. The exposition is
//! parsed strictly in both formats (the Prometheus text format 0.0.4 without `Accept`,
//! OpenMetrics 1.0.0 when asked, each under its own `Content-Type`), then the series are
//! checked after real requests: status codes (a 200 and a 502 told apart), route labels
//! (Ingress namespace/name, Service), latency histograms by host, active connections, the
//! served certificate's `notAfter`, build info and the `process_*` metrics.
//!
//! Formats: <https://prometheus.io/docs/instrumenting/exposition_formats/> (0.0.4: `# HELP`,
//! `# TYPE` named as the samples, no `# UNIT`/`# EOF`) and the OpenMetrics 1.0 specification
//! (a counter family `x` has samples `x_total`; `# UNIT` is the name's suffix; `# EOF` ends
//! the text). ingress-nginx labels its request metrics the same way (`namespace`, `ingress`,
//! `service`, `status`), see its monitoring docs.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::support::backends;
use crate::support::binary::Binary;
use crate::support::http::{get, tls_get};
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::pki::Ca;
use crate::support::wait::wait_until;

const APP: &str = "app.metrics.test";
const BROKEN: &str = "broken.metrics.test";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

#[tokio::test]
async fn metrics_operators_expect_after_real_requests() {
    let ca = Ca::new("e2e metrics ca");
    let leaf = ca.leaf(&[APP]);
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf.cert_der).unwrap();
    let not_after = cert.validity().not_after.timestamp();
    let backend = backends::http("app").await;
    // A port nothing listens on: the broken Service's endpoint refuses, so the proxy answers 502.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);

    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "app-svc.yaml", &service("app", &[backend.addr.port()]));
    manifests::write(m, "gone-svc.yaml", &service("gone", &[dead_port]));
    manifests::write(
        m,
        "secret.yaml",
        &leaf.secret_yaml(manifests::NS, "app-tls"),
    );
    manifests::write(
        m,
        "app.yaml",
        &ingress("app-ing", APP, "app", &[], Some("app-tls")),
    );
    manifests::write(
        m,
        "broken.yaml",
        &ingress("broken-ing", BROKEN, "gone", &[], None),
    );
    let proxy = Binary::start(m).await;

    for _ in 0..3 {
        let ok = tls_get(proxy.https, &ca, APP, "/", &[]).await;
        assert_eq!(ok.status, 200);
    }
    let bad = get(proxy.http, BROKEN, "/", &[]).await;
    assert_eq!(bad.status, 502, "{}", bad.text());
    // Hosts no Ingress names share one series (`host="-"`), whatever clients send.
    for name in ["nobody.metrics.test", "random-1234.example"] {
        let unknown = get(proxy.http, name, "/", &[]).await;
        assert_eq!(unknown.status, 404);
    }

    // Each request is recorded when its response has ended: wait for the last one.
    let app_route = [
        ("host", APP),
        ("namespace", "default"),
        ("ingress", "app-ing"),
        ("service", "app"),
        ("mode", "terminate"),
    ];
    let ok_series = with(&app_route, &[("code", "200")]);
    let recorded = wait_until(Duration::from_secs(5), || async {
        let text = proxy.metrics().await;
        let samples = parse(&text, Format::Prometheus).unwrap_or_default();
        value(&samples, "portcullis_http_requests_total", &ok_series) == Some(3.0)
            && value(
                &samples,
                "portcullis_http_requests_total",
                &[("host", "-"), ("code", "404")],
            ) == Some(2.0)
    })
    .await;
    assert!(recorded, "{}", proxy.metrics().await);

    // Prometheus text 0.0.4 without `Accept`, and as a browser asks.
    let plain = get(proxy.admin, "admin", "/metrics", &[]).await;
    assert_eq!(plain.header("content-type"), PROMETHEUS);
    let text = plain.text();
    let samples = parse(&text, Format::Prometheus).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let browser = get(
        proxy.admin,
        "admin",
        "/metrics",
        &[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")],
    )
    .await;
    assert_eq!(browser.header("content-type"), PROMETHEUS);

    // OpenMetrics as Prometheus asks by default.
    let om = get(
        proxy.admin,
        "admin",
        "/metrics",
        &[(
            "accept",
            "application/openmetrics-text;version=1.0.0;q=0.5,\
             application/openmetrics-text;version=0.0.1;q=0.4,\
             text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        )],
    )
    .await;
    assert_eq!(om.header("content-type"), OPENMETRICS);
    let om_text = om.text();
    let om_samples =
        parse(&om_text, Format::OpenMetrics).unwrap_or_else(|e| panic!("{e}\n{om_text}"));
    assert!(
        om_samples
            .iter()
            .any(|s| s.name == "portcullis_http_requests_total"),
        "{om_text}"
    );

    // Status codes, not classes: the 502 is told apart, with its route.
    let broken_route = [
        ("host", BROKEN),
        ("namespace", "default"),
        ("ingress", "broken-ing"),
        ("service", "gone"),
        ("mode", "http"),
    ];
    let requests = "portcullis_http_requests_total";
    assert_eq!(value(&samples, requests, &ok_series), Some(3.0), "{text}");
    assert_eq!(
        value(&samples, requests, &with(&broken_route, &[("code", "502")])),
        Some(1.0),
        "{text}"
    );
    assert!(
        !samples
            .iter()
            .any(|s| s.name == requests && s.label("code").is_some_and(|c| c.ends_with("xx"))),
        "no status classes: {text}"
    );
    assert!(
        !text.contains("nobody.metrics.test") && !text.contains("random-1234"),
        "{text}"
    );

    // Latency histograms by host and route: buckets, count; upstream time only where an
    // upstream answered.
    let duration = "portcullis_http_request_duration_seconds";
    assert_eq!(
        value(&samples, &format!("{duration}_count"), &app_route),
        Some(3.0)
    );
    assert_eq!(
        value(
            &samples,
            &format!("{duration}_bucket"),
            &with(&app_route, &[("le", "+Inf")])
        ),
        Some(3.0)
    );
    let buckets = samples
        .iter()
        .filter(|s| s.name == format!("{duration}_bucket") && matches(s, &app_route))
        .count();
    assert!(buckets >= 10, "{buckets} buckets\n{text}");
    let upstream = "portcullis_http_upstream_duration_seconds";
    assert_eq!(
        value(&samples, &format!("{upstream}_count"), &app_route),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(&samples, &format!("{duration}_count"), &broken_route),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, &format!("{upstream}_count"), &broken_route).unwrap_or(0.0),
        0.0
    );

    // Connections by mode (the scrapes' own connections are the admin listener's, not counted).
    for mode in ["http", "terminate"] {
        let open = value(&samples, "portcullis_connections_active", &[("mode", mode)]);
        assert!(open.is_some_and(|n| n >= 0.0), "{mode}: {text}");
    }

    // The served certificate's notAfter, by host and Secret.
    assert_eq!(
        value(
            &samples,
            "portcullis_certificate_expiry_timestamp_seconds",
            &[("host", APP), ("secret", "default/app-tls")],
        ),
        Some(not_after as f64),
        "{text}"
    );

    // Build info.
    assert_eq!(
        value(
            &samples,
            "portcullis_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{text}"
    );

    // Process metrics, plausible for a process that just started.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let one = |name: &str| value(&samples, name, &[]).unwrap_or_else(|| panic!("{name}\n{text}"));
    let start = one("process_start_time_seconds");
    assert!(
        start > now - 600.0 && start <= now + 1.0,
        "{start} vs {now}"
    );
    let cpu = one("process_cpu_seconds_total");
    assert!((0.0..600.0).contains(&cpu), "{cpu}");
    let rss = one("process_resident_memory_bytes");
    assert!(rss > 1e6 && rss < 4e9, "{rss}");
    let fds = one("process_open_fds");
    assert!(fds >= 5.0, "{fds}");
    assert!(fds <= one("process_max_fds"), "{fds}");
}

// === a strict exposition parser ===

/// Which text format a parse expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// The Prometheus text format 0.0.4.
    Prometheus,
    /// OpenMetrics text 1.0.0.
    OpenMetrics,
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// `base` plus `more` labels.
fn with<'a>(base: &[(&'a str, &'a str)], more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    base.iter().chain(more).copied().collect()
}

/// Whether `sample` has every label of `labels`.
fn matches(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels.iter().all(|(k, v)| sample.label(k) == Some(*v))
}

/// The value of the one sample named `name` with `labels` (and maybe more).
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<_> = samples
        .iter()
        .filter(|s| s.name == name && matches(s, labels))
        .collect();
    assert!(
        found.len() <= 1,
        "{name} {labels:?} is ambiguous: {found:?}"
    );
    found.first().map(|s| s.value)
}

/// A metric family as its metadata lines declared it.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    help: bool,
    unit: Option<String>,
}

/// Parses `text` as `format` says, refusing anything a strict parser would: unknown or
/// misplaced metadata, a sample outside its declared family or with a suffix its type does
/// not have, a family split in two, bad names, bad escapes, values that are not numbers,
/// histogram buckets that are not cumulative or disagree with `_count`.
fn parse(text: &str, format: Format) -> Result<Vec<Sample>, String> {
    let om = format == Format::OpenMetrics;
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let at = |why: String| format!("line {}: {why}: {line:?}", n + 1);
        if eof {
            return Err(at("text after # EOF".into()));
        }
        if line == "# EOF" {
            if !om {
                return Err(at("# EOF in the Prometheus text format".into()));
            }
            eof = true;
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (keyword, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let rest = parts.next().unwrap_or("");
            if !valid_name(name) {
                return Err(at(format!("bad metric name {name:?}")));
            }
            if current.as_deref() != Some(name) {
                if families.contains_key(name) {
                    return Err(at(format!("family {name} declared twice")));
                }
                families.insert(name.to_string(), Family::default());
                current = Some(name.to_string());
            }
            let family = families.get_mut(name).expect("just inserted");
            match keyword {
                "HELP" if !family.help => family.help = true,
                "TYPE" if family.kind.is_empty() => {
                    let known: &[&str] = if om {
                        &[
                            "counter",
                            "gauge",
                            "histogram",
                            "gaugehistogram",
                            "summary",
                            "info",
                            "stateset",
                            "unknown",
                        ]
                    } else {
                        &["counter", "gauge", "histogram", "summary", "untyped"]
                    };
                    if !known.contains(&rest) {
                        return Err(at(format!("unknown type {rest:?}")));
                    }
                    if !om && rest == "counter" && !name.ends_with("_total") {
                        return Err(at("0.0.4 counter not named as its samples".into()));
                    }
                    if om && rest == "counter" && name.ends_with("_total") {
                        return Err(at("OpenMetrics counter family named with _total".into()));
                    }
                    family.kind = rest.to_string();
                }
                "UNIT" if om && family.unit.is_none() => {
                    if !name.ends_with(&format!("_{rest}")) {
                        return Err(at("unit is not the name's suffix".into()));
                    }
                    family.unit = Some(rest.to_string());
                }
                _ => return Err(at(format!("unexpected metadata {keyword}"))),
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(at("stray comment or blank line".into()));
        }
        let sample = parse_sample(line).map_err(at)?;
        let family = current
            .clone()
            .ok_or_else(|| at("sample before any # TYPE".into()))?;
        let kind = families[&family].kind.clone();
        let suffix = sample
            .name
            .strip_prefix(family.as_str())
            .ok_or_else(|| at(format!("sample outside family {family}")))?;
        let allowed: &[&str] = match (kind.as_str(), om) {
            ("counter", true) => &["_total", "_created"],
            ("counter", false) | ("gauge", _) | ("untyped", _) | ("unknown", _) => &[""],
            ("histogram", _) => &["_bucket", "_sum", "_count", "_created"],
            ("info", _) => &["_info"],
            _ => return Err(at(format!("samples of type {kind:?} not checked"))),
        };
        if !allowed.contains(&suffix) || (!om && suffix == "_created") {
            return Err(at(format!("suffix {suffix:?} not allowed for a {kind}")));
        }
        if suffix == "_bucket" && sample.label("le").is_none() {
            return Err(at("bucket without le".into()));
        }
        samples.push(sample);
    }
    if om && !eof {
        return Err("OpenMetrics text without # EOF".into());
    }
    if om && !text.ends_with("# EOF\n") {
        return Err("OpenMetrics text does not end with # EOF and a newline".into());
    }
    check_histograms(&samples)?;
    Ok(samples)
}

/// One `name{labels} value` line (no timestamps are written).
fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| "no value".to_string())?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("bad sample name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = body.find('=').ok_or("label without =")?;
            let key = &body[..eq];
            if !valid_label(key) {
                return Err(format!("bad label name {key:?}"));
            }
            let quoted = body[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut iter = quoted.char_indices();
            let end = loop {
                match iter.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match iter.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            if labels.insert(key.to_string(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            let after = &quoted[end + 1..];
            body = match after.strip_prefix(',') {
                Some(next) if !next.starts_with('}') => next,
                _ if after.starts_with('}') => after,
                _ => return Err("expected , or } after a label".into()),
            };
        }
    }
    let value_text = rest.strip_prefix(' ').ok_or("no space before the value")?;
    if value_text.contains(' ') {
        return Err("a timestamp or trailing text".into());
    }
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse()
            .map_err(|_| format!("value {v:?} is not a number"))?,
    };
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// A histogram series: its base name and its labels but `le`.
type SeriesKey = (String, Vec<(String, String)>);

/// Buckets of each histogram series: cumulative, ending in `+Inf` equal to `_count`.
fn check_histograms(samples: &[Sample]) -> Result<(), String> {
    let mut series: BTreeMap<SeriesKey, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples {
        if let Some(base) = s.name.strip_suffix("_bucket") {
            let le = s.label("le").unwrap_or_default();
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("le {le:?}"))?
            };
            let rest = s.labels.iter().filter(|(k, _)| *k != "le");
            let key = (
                base.to_string(),
                rest.map(|(k, v)| (k.clone(), v.clone())).collect(),
            );
            series.entry(key).or_default().push((le, s.value));
        }
    }
    for ((base, labels), buckets) in series {
        let mut last = (f64::NEG_INFINITY, 0.0);
        for &(le, count) in &buckets {
            if le <= last.0 || count < last.1 {
                return Err(format!("{base} {labels:?}: buckets not cumulative"));
            }
            last = (le, count);
        }
        if last.0 != f64::INFINITY {
            return Err(format!("{base} {labels:?}: no +Inf bucket"));
        }
        let count = samples
            .iter()
            .find(|s| {
                s.name == format!("{base}_count")
                    && s.labels
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .eq(labels.iter().cloned())
            })
            .ok_or_else(|| format!("{base} {labels:?}: no _count"))?;
        if count.value != last.1 {
            return Err(format!("{base} {labels:?}: +Inf bucket is not _count"));
        }
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[test]
fn the_parser_refuses_what_prometheus_would_misread() {
    let om_counter = "# HELP x_total h\n# TYPE x counter\nx_total 1\n# EOF\n";
    assert!(parse(om_counter, Format::Prometheus).is_err());
    assert!(parse(om_counter, Format::OpenMetrics).is_ok());
    let prom_counter = "# HELP x_total h\n# TYPE x_total counter\nx_total 1\n";
    assert!(parse(prom_counter, Format::Prometheus).is_ok());
    assert!(parse(prom_counter, Format::OpenMetrics).is_err());
    assert!(
        parse(
            "# TYPE x gauge\n# UNIT x seconds\nx 1\n",
            Format::Prometheus
        )
        .is_err()
    );
    assert!(
        parse(
            "# TYPE g gauge\ng{a=\"1\",b=\"q\\\"\"} 2\n",
            Format::Prometheus
        )
        .is_ok()
    );
    assert!(parse("# TYPE g gauge\ng{a=1} 2\n", Format::Prometheus).is_err());
    assert!(parse("# TYPE g gauge\ng{a=\"\\x\"} 2\n", Format::Prometheus).is_err());
    assert!(parse("# TYPE g gauge\ng 2\n# TYPE g gauge\n", Format::Prometheus).is_err());
    let hist =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n";
    assert!(parse(hist, Format::Prometheus).is_err());
    let hist =
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\n";
    let parsed = parse(hist, Format::Prometheus).unwrap();
    assert_eq!(parsed.len(), 4);
    assert_eq!(parsed[0].label("le"), Some("1"));
}
