//! Data-plane tests in-process: the proxy on 127.0.0.1 with real sockets, real TLS (rcgen
//! certificates) and real HTTP/TLS backends; tables built by hand or by standalone mode from
//! manifests on disk.

#[path = "../support/mod.rs"]
mod support;

mod access_log;
mod admin_endpoint;
mod front_door;
mod health;
mod http_connection;
mod http_errors;
mod idle_release;
mod passthrough;
mod proxy_workers;
mod redirect;
mod reencrypt;
mod security;
mod standalone_directory_watch;
mod standalone_run;
mod terminate;
mod upstream_connect_timeout;
mod upstream_pool;
mod upstream_reset_retry;
mod websocket;
