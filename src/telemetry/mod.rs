//! What operators see: the admin endpoint (health, readiness, metrics, the live table), the
//! Prometheus metrics, and the access log. Read by every stage; it reads none of them but the
//! table's vocabulary (hosts, diagnostics) it reports on.

pub(crate) mod access_log;
pub mod admin;
pub mod metrics;
