//! Cluster mode against a mocked Kubernetes API server (watches, status, Events, leases,
//! the RBAC the code uses), and the packaged CRD and chart checked against the code.

#[path = "../support/mod.rs"]
mod support;

mod chart_rbac;
mod cluster_api;
mod crd_drift;
