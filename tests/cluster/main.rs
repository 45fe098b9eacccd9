//! Cluster mode against a mocked Kubernetes API server (tests/support/mock_api.rs): the source's
//! watches, the publisher's status and Events, leases, the assembled controller, a rollout, and
//! the RBAC the code uses; and the packaged CRD and chart checked against the code.

#[path = "../support/mod.rs"]
mod support;

mod chart_rbac;
mod chart_values;
mod class_move_status;
mod controller;
mod crd_drift;
mod event_scope;
mod gateway_status;
mod installations;
mod lease;
mod log_target;
mod rbac;
mod refused_status;
mod rollout;
mod source;
mod status;
