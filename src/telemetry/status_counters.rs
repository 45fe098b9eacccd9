//! The counters the status API shows per host and per endpoint, read back from the metrics'
//! own text exposition.
//!
//! Why parse text instead of reading the families: `prometheus_client` gives no way to walk a
//! family's series, and reading the exposition keeps the status page in step with whatever
//! `metrics.rs` exports (names, labels) without a second set of counters on the hot path. The
//! admin page polls about once a second, so one encode per poll is cheap.
//!
//! What is read (missing families read as zero / absent, so a renamed metric degrades the page,
//! never breaks it):
//! - `portcullis_http_requests_total{host, code}`: `code` is a class (`2xx`) or a status
//!   (`503`); both are summed by class.
//! - `portcullis_tcp_connections_total{host}` and `portcullis_tcp_bytes_total{host, direction}`.
//! - any `*_bytes_total{host, direction}` other than the TCP one (HTTP body bytes, when kept).
//! - open connections: `portcullis_connections_active{mode, host}`, per host and summed by
//!   mode for the process (`host="-"`: plain :80 connections and unknown SNIs).
//! - TLS handshakes `portcullis_tls_handshakes_total{mode, result, host}`: per host by result,
//!   and summed for the process.
//! - per endpoint: every series with an `endpoint` label, by metric name.
//! - process-wide: ClientHellos rejected, connections limited.

use std::collections::BTreeMap;

use serde::Serialize;

/// One sample line: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Counters of one virtual host (the metrics' `host` label: the table's host name).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct HostCounters {
    /// HTTP requests answered, by status class (`1xx` .. `5xx`, `other`).
    pub(crate) requests: BTreeMap<String, u64>,
    /// Requests answered with a 5xx status (the proxy's or the upstream's).
    pub(crate) errors: u64,
    /// Pass-through connections ended.
    pub(crate) tcp_connections: u64,
    /// Bytes received from clients (pass-through, plus HTTP bodies when the metrics keep them).
    pub(crate) bytes_from_client: u64,
    /// Bytes sent to clients.
    pub(crate) bytes_to_client: u64,
    /// Connections open now, when the metrics keep a per-host gauge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) active_connections: Option<u64>,
    /// TLS handshakes of connections whose SNI chose this host, by result (`ok`, `error`).
    pub(crate) tls_handshakes: BTreeMap<String, u64>,
}

/// Counters that belong to no host.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct ProcessCounters {
    /// TLS handshakes with clients, by result (`ok`, `error`).
    pub(crate) tls_handshakes: BTreeMap<String, u64>,
    /// :443 connections closed before routing, by reason.
    pub(crate) client_hello_rejected: BTreeMap<String, u64>,
    /// Connections refused at the connection limit.
    pub(crate) connections_limited: u64,
    /// Client connections open now, by mode (when the metrics keep the gauge).
    pub(crate) active_connections: BTreeMap<String, u64>,
}

/// Everything read from one exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Counters {
    pub(crate) hosts: BTreeMap<String, HostCounters>,
    /// Per endpoint address: metric name (without `portcullis_`) → value, summed over other labels.
    pub(crate) endpoints: BTreeMap<String, BTreeMap<String, f64>>,
    pub(crate) process: ProcessCounters,
}

impl Counters {
    /// Reads the counters out of a Prometheus / OpenMetrics text exposition.
    pub(crate) fn parse(text: &str) -> Counters {
        let mut out = Counters::default();
        for sample in text.lines().filter_map(sample) {
            out.add(&sample);
        }
        out
    }

    fn add(&mut self, s: &Sample<'_>) {
        let n = count(s.value);
        if let Some(host) = s.label("host") {
            let h = self.hosts.entry(host.to_string()).or_default();
            match s.name {
                "portcullis_http_requests_total" => {
                    let class = s
                        .label("code")
                        .or_else(|| s.label("class"))
                        .map_or("other", class_of);
                    *h.requests.entry(class.to_string()).or_default() += n;
                    if class == "5xx" {
                        h.errors += n;
                    }
                }
                "portcullis_tcp_connections_total" => h.tcp_connections += n,
                name if name.ends_with("_bytes_total") => match s.label("direction") {
                    Some("from_client" | "in" | "received") => h.bytes_from_client += n,
                    Some("to_client" | "out" | "sent") => h.bytes_to_client += n,
                    _ => {}
                },
                name if is_active_connections(name) => {
                    *h.active_connections.get_or_insert(0) += n;
                }
                "portcullis_tls_handshakes_total" => {
                    let result = s.label("result").unwrap_or("other");
                    *h.tls_handshakes.entry(result.to_string()).or_default() += n;
                }
                _ => {}
            }
        }
        if let Some(endpoint) = s.label("endpoint") {
            let name = s.name.strip_prefix("portcullis_").unwrap_or(s.name);
            *self
                .endpoints
                .entry(endpoint.to_string())
                .or_default()
                .entry(name.to_string())
                .or_default() += s.value;
        }
        let p = &mut self.process;
        match s.name {
            "portcullis_tls_handshakes_total" => {
                let result = s.label("result").unwrap_or("other");
                *p.tls_handshakes.entry(result.to_string()).or_default() += n;
            }
            "portcullis_client_hello_rejected_total" => {
                let reason = s.label("reason").unwrap_or("other");
                *p.client_hello_rejected
                    .entry(reason.to_string())
                    .or_default() += n;
            }
            "portcullis_connections_limited_total" => p.connections_limited += n,
            // The gauge carries a `host` label too: the process's count is the sum.
            name if name == "portcullis_connections_active"
                || (is_active_connections(name) && s.label("host").is_none()) =>
            {
                let mode = s.label("mode").unwrap_or("all");
                *p.active_connections.entry(mode.to_string()).or_default() += n;
            }
            _ => {}
        }
    }
}

/// A gauge of open connections (`portcullis_connections_active`, or an `active_connections`
/// spelling).
fn is_active_connections(name: &str) -> bool {
    name.contains("connections_active") || name.contains("active_connections")
}

/// `2xx` for `2xx` or `204`; `other` for anything else.
fn class_of(code: &str) -> &'static str {
    match code.as_bytes() {
        [b'1', ..] => "1xx",
        [b'2', ..] => "2xx",
        [b'3', ..] => "3xx",
        [b'4', ..] => "4xx",
        [b'5', ..] => "5xx",
        _ => "other",
    }
}

/// A counter value as a whole number (negative and NaN read as 0).
fn count(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        // Counters are whole numbers; the cast saturates.
        value as u64
    } else {
        0
    }
}

/// One sample line, or `None` for comments, blank lines and lines it cannot read.
fn sample(line: &str) -> Option<Sample<'_>> {
    if line.starts_with('#') || line.trim().is_empty() {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = open + line[open..].rfind('}')?;
            (
                &line[..open],
                labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(' ')?;
            (name, Vec::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `a="x",b="y\"z"` → pairs, with `\"`, `\\` and `\n` unescaped.
fn labels(text: &str) -> Option<Vec<(&str, String)>> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        if rest.is_empty() {
            return Some(out);
        }
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        out.push((key.trim(), value));
        rest = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP portcullis_http_requests HTTP requests
# TYPE portcullis_http_requests counter
portcullis_http_requests_total{host="a.example.com",mode="terminate",code="2xx"} 7
portcullis_http_requests_total{host="a.example.com",mode="http",code="503"} 2
portcullis_http_requests_total{host="a.example.com",mode="http",code="502"} 1
portcullis_tcp_connections_total{host="p.example.com"} 3
portcullis_tcp_bytes_total{host="p.example.com",direction="from_client"} 10
portcullis_tcp_bytes_total{host="p.example.com",direction="to_client"} 20
portcullis_active_connections{host="a.example.com",mode="http"} 4
portcullis_upstream_healthy{endpoint="10.0.0.1:80"} 1
portcullis_tls_handshakes_total{mode="terminate",result="ok"} 5
portcullis_tls_handshakes_total{mode="terminate",result="ok",host="a.example.com"} 3
portcullis_tls_handshakes_total{mode="terminate",result="error",host="a.example.com"} 1
portcullis_connections_limited_total 1
portcullis_connections_active{mode="http"} 2
portcullis_connections_active{mode="terminate",host="a.example.com"} 6
portcullis_connections_active{mode="terminate",host="-"} 1
weird{host="x\"y"} 1 1700000000
# EOF
"#;

    #[test]
    fn reads_hosts_endpoints_and_process_counters() {
        let c = Counters::parse(TEXT);
        let a = &c.hosts["a.example.com"];
        assert_eq!(a.requests["2xx"], 7);
        assert_eq!(a.requests["5xx"], 3);
        assert_eq!(a.errors, 3);
        assert_eq!(a.active_connections, Some(4 + 6));
        assert_eq!(a.tls_handshakes["ok"], 3);
        assert_eq!(a.tls_handshakes["error"], 1);
        assert_eq!(c.hosts["-"].active_connections, Some(1));
        let p = &c.hosts["p.example.com"];
        assert_eq!(
            (p.tcp_connections, p.bytes_from_client, p.bytes_to_client),
            (3, 10, 20)
        );
        assert_eq!(c.endpoints["10.0.0.1:80"]["upstream_healthy"], 1.0);
        assert_eq!(c.process.tls_handshakes["ok"], 5 + 3);
        assert_eq!(c.process.tls_handshakes["error"], 1);
        assert_eq!(c.process.connections_limited, 1);
        assert_eq!(c.process.active_connections["http"], 2);
        assert_eq!(c.process.active_connections["terminate"], 6 + 1);
        assert!(c.hosts.contains_key("x\"y"));
    }

    #[test]
    fn unreadable_lines_are_skipped() {
        let c = Counters::parse("garbage\nportcullis_x{host=\"a\" 1\n{}\n");
        assert!(c.hosts.is_empty());
    }
}
