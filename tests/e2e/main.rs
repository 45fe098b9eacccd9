//! End-to-end tests through the built `portcullis` binary, as a user runs it: standalone mode
//! on a manifest directory, real backends, real clients (hyper, curl, openssl s_client).

#[path = "../support/mod.rs"]
mod support;

mod access_basic_auth;
mod access_external_auth;
mod access_log_backpressure;
mod access_log_fields;
mod access_mtls;
mod access_rate_limit;
mod access_source_ranges;
mod annotations_refused;
mod bad_input;
mod balance_health;
mod cert_rotation;
mod check_cli;
mod docs_agree;
mod endpoint_conditions;
mod endpoint_updates;
mod gateway_api;
mod grpc;
mod hot_swap;
mod installations;
mod live_routing;
mod metrics;
mod nginx_annotations;
mod nginx_errors;
mod nginx_headers;
mod nginx_paths;
mod nginx_traffic;
mod own_answers;
mod passthrough;
mod quickstart;
mod redirect;
mod reencrypt;
mod status_counters;
mod status_page;
mod support_selftest;
mod terminate;
mod tunnels;
