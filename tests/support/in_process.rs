//! Portcullis in-process, the one harness that does not go through the built binary:
//! - [`Proxy`]: the data plane alone, `proxy::serve` (the real :80 and :443 accept loops) on
//!   127.0.0.1:0 with a routing table built by hand (see `fixture`), swappable;
//! - [`standalone`]: the whole runtime from a manifest directory (`runtime::start_standalone`),
//!   with [`test_settings`].

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use portcullis::health::Health;
use portcullis::proxy::{self, Listeners, ProxyContext};
use portcullis::runtime::{self, Running};
use portcullis::settings::Settings;
use portcullis::table::certificates::Certificate;
use portcullis::table::{RouteTable, TableHandle};
use portcullis::telemetry::metrics::Metrics;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::fixture::{Tables, self_signed_fallback};

// === impl Proxy ===

/// A running in-process proxy: plain HTTP on `http` (the :80 front), TLS on `https` (the :443
/// front: pass-through, terminate, re-encrypt by SNI). A TLS client sees a host's own
/// certificate only when its SNI names that host (`Tables::terminate`); otherwise the table's
/// default, else `fallback`. Dropping it aborts the serve task.
pub struct Proxy {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub table: TableHandle,
    pub ctx: Arc<ProxyContext>,
    /// The metrics the proxy records into.
    pub metrics: Arc<Metrics>,
    pub fallback: Certificate,
    shutdown: watch::Sender<bool>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts `proxy::serve` on two fresh 127.0.0.1:0 listeners, serving `table`; redirects
    /// name the bound HTTPS port.
    pub async fn start(table: RouteTable) -> Proxy {
        Proxy::start_inner(table, None, 1).await
    }

    /// Like [`Proxy::start`], on `workers` threads of its own (`proxy::serve_on_workers`, what
    /// the binary runs with one worker per CPU).
    pub async fn start_on_workers(table: RouteTable, workers: usize) -> Proxy {
        Proxy::start_inner(table, None, workers).await
    }

    /// Like [`Proxy::start`], with redirects naming `https_port` (the public HTTPS port, as
    /// behind a Service that maps it onto our listener).
    pub async fn start_redirecting_to(table: RouteTable, https_port: u16) -> Proxy {
        Proxy::start_inner(table, Some(https_port), 1).await
    }

    /// Serves one host, `/` routed to plain HTTP `endpoints` (default class settings): the
    /// proxy most HTTP tests need.
    pub async fn start_one(host: &str, endpoints: &[SocketAddr]) -> Proxy {
        Proxy::start(Tables::one(host, endpoints).build()).await
    }

    async fn start_inner(table: RouteTable, https_port: Option<u16>, workers: usize) -> Proxy {
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let https = TcpListener::bind("127.0.0.1:0").await.expect("bind https");
        let listeners = Listeners { http, https };
        let (http, https) = listeners.local_addrs().expect("addrs");
        let (shutdown, rx) = watch::channel(false);
        let fallback = self_signed_fallback();
        let metrics = Arc::new(Metrics::new());
        let ctx = Arc::new(ProxyContext::new(
            Health::new(),
            metrics.clone(),
            fallback.clone(),
            https_port.unwrap_or(https.port()),
            rx.clone(),
        ));
        let handle: TableHandle = Arc::new(ArcSwap::from_pointee(table));
        // One worker is `proxy::serve` on this runtime.
        let workers = NonZeroUsize::new(workers).unwrap_or(NonZeroUsize::MIN);
        let task = tokio::spawn(proxy::serve_on_workers(
            workers,
            listeners,
            handle.clone(),
            ctx.clone(),
            rx,
        ));
        Proxy {
            http,
            https,
            table: handle,
            ctx,
            metrics,
            fallback,
            shutdown,
            task,
        }
    }

    /// Replaces the routing table (what a rebuild does).
    pub fn swap(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
    }

    /// Signals shutdown: the proxy stops accepting, open connections finish their request in
    /// flight and close, and `task` ends when they are done.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

// === standalone runtime ===

/// Settings for tests: every listener on `127.0.0.1:0`, a short grace period.
pub fn test_settings() -> Settings {
    Settings {
        http_addr: ([127, 0, 0, 1], 0).into(),
        https_addr: ([127, 0, 0, 1], 0).into(),
        admin_addr: ([127, 0, 0, 1], 0).into(),
        shutdown_grace: Duration::from_secs(2),
        ..Settings::default()
    }
}

/// Starts standalone mode on `manifests` with [`test_settings`].
pub async fn standalone(manifests: &Path) -> Running {
    standalone_with(test_settings(), manifests).await
}

/// Starts standalone mode on `manifests` with the given settings.
pub async fn standalone_with(settings: Settings, manifests: &Path) -> Running {
    runtime::start_standalone(settings, manifests)
        .await
        .expect("standalone mode starts")
}
