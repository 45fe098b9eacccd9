//! Per-endpoint traffic counters: `portcullis_upstream_requests_total{endpoint,class}`,
//! `portcullis_upstream_errors_total{endpoint}`, `portcullis_upstream_bytes_total{endpoint,
//! direction}` and `portcullis_upstream_active{endpoint}`.
//!
//! Why a collector instead of label families: the counters live as plain atomics next to the
//! health state of each endpoint (`crate::health`), which the proxy already holds for
//! least-request accounting. Counting a request is then one atomic add, with no label hashing,
//! no allocation and no lock; the labels are made only when `/metrics` is scraped. It also
//! bounds cardinality for free: the scrape walks the endpoints the health checker holds, which
//! are the live table's (its state is dropped when an endpoint leaves the table, exactly when
//! `portcullis_upstream_healthy` loses its series), so a removed endpoint's series disappear.
//!
//! This module does not name the health checker (telemetry stays below `health` in the module
//! graph): the checker implements [`EndpointCounters`] and registers itself with
//! [`super::metrics::Metrics::set_endpoint_counters`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The status classes counted per endpoint, in [`EndpointTraffic::responses`] order.
pub(crate) const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

/// The index in [`CLASSES`] of `status`.
pub(crate) fn class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        500..=599 => 4,
        _ => 5,
    }
}

/// One reading of an endpoint's counters (since the endpoint entered the table).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EndpointTraffic {
    /// Response heads the endpoint sent, by class ([`CLASSES`] order).
    pub(crate) responses: [u64; 6],
    /// Exchanges that failed on the endpoint's side: connect refused or timed out, TLS handshake
    /// with it failed, no response head in time, connection reset before or while answering
    /// (HTTP, upgraded tunnels, pass-through). A 5xx the pod sends is a response, not an error.
    pub(crate) errors: u64,
    /// Bytes sent to the endpoint: request bodies (their `Content-Length`), and everything a
    /// pass-through connection or an upgraded tunnel carried towards it.
    pub(crate) bytes_to_endpoint: u64,
    /// Bytes received from it: response bodies, and what pass-through connections and tunnels
    /// carried back.
    pub(crate) bytes_from_endpoint: u64,
    /// HTTP requests in flight, upgraded tunnels and pass-through connections open now.
    pub(crate) active: u64,
}

/// Whatever keeps per-endpoint counters (the health checker).
pub(crate) trait EndpointCounters: Send + Sync {
    /// Calls `f` once for every endpoint of the live table.
    fn each_endpoint(&self, f: &mut dyn FnMut(SocketAddr, &EndpointTraffic));
}

/// Where the collector finds the counters: set once the health checker exists (it is made
/// after the metrics). Weak, so the metrics do not keep the checker alive.
pub(crate) type CountersSlot = Arc<Mutex<Option<Weak<dyn EndpointCounters>>>>;

/// Encodes the per-endpoint families at scrape time.
#[derive(Debug)]
pub(crate) struct EndpointCollector {
    pub(crate) source: CountersSlot,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClassLabels {
    endpoint: String,
    class: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    endpoint: String,
    direction: &'static str,
}

impl Collector for EndpointCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let source = self
            .source
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .and_then(Weak::upgrade);
        let mut rows: Vec<(SocketAddr, EndpointTraffic)> = Vec::new();
        if let Some(source) = source {
            source.each_endpoint(&mut |addr, t| rows.push((addr, *t)));
        }
        rows.sort_by_key(|(addr, _)| *addr);
        let rows: Vec<(String, EndpointTraffic)> = rows
            .into_iter()
            .map(|(addr, t)| (addr.to_string(), t))
            .collect();

        let mut family = encoder.encode_descriptor(
            "upstream_requests",
            "Response heads each endpoint sent, by status class",
            None,
            MetricType::Counter,
        )?;
        for (endpoint, t) in &rows {
            for (class, n) in CLASSES.iter().zip(t.responses) {
                let labels = ClassLabels {
                    endpoint: endpoint.clone(),
                    class,
                };
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "upstream_errors",
            "Exchanges that failed on the endpoint's side: connect, TLS, timeout, reset",
            None,
            MetricType::Counter,
        )?;
        for (endpoint, t) in &rows {
            let labels = EndpointLabels {
                endpoint: endpoint.clone(),
            };
            ConstCounter::new(t.errors).encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "upstream_bytes",
            "Bytes sent to (to_endpoint) and received from (from_endpoint) each endpoint",
            None,
            MetricType::Counter,
        )?;
        for (endpoint, t) in &rows {
            for (direction, n) in [
                ("to_endpoint", t.bytes_to_endpoint),
                ("from_endpoint", t.bytes_from_endpoint),
            ] {
                let labels = DirectionLabels {
                    endpoint: endpoint.clone(),
                    direction,
                };
                ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "upstream_active",
            "HTTP requests in flight, upgraded tunnels and pass-through connections, by endpoint",
            None,
            MetricType::Gauge,
        )?;
        for (endpoint, t) in &rows {
            let labels = EndpointLabels {
                endpoint: endpoint.clone(),
            };
            let active = i64::try_from(t.active).unwrap_or(i64::MAX);
            ConstGauge::new(active).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(CLASSES[class_index(101)], "1xx");
        assert_eq!(CLASSES[class_index(204)], "2xx");
        assert_eq!(CLASSES[class_index(503)], "5xx");
        assert_eq!(CLASSES[class_index(42)], "other");
    }
}
