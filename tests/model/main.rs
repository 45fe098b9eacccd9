//! Model tests: manifests and objects in, routing table and diagnostics out (`model::build`,
//! pure), and the rebuild loop's hold-off on tokio's paused clock.

#[path = "../support/mod.rs"]
mod support;

mod annotations_refused;
mod gateway_status;
mod installations;
mod model;
mod rebuild_debounce;
mod routing;
