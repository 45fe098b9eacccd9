//! What operators see: the admin endpoint (health, readiness, metrics, the live table, the
//! status page and its `/api/v1/status`), the Prometheus metrics, and the access log. Read by
//! every stage; it reads none of them but the table's vocabulary (hosts, diagnostics) it
//! reports on.

pub(crate) mod access_log;
pub mod admin;
pub(crate) mod endpoint_traffic;
pub mod exposition;
pub mod log_format;
pub mod log_sink;
pub mod metrics;
pub(crate) mod process;
pub mod status_api;
mod status_counters;
pub(crate) mod status_page;

pub use access_log::settle_enabled as settle_access_log;
