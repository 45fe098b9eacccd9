//! The runtime both modes run: listeners, the rebuild loop, health checks, the proxy and the
//! admin endpoint, fed by a [`Feed`] (a manifest directory here, the Kubernetes API in
//! `cluster`).
//!
//! [`start`] binds the listeners and spawns the pipeline (source → rebuild → table), health
//! checks, the proxy and the admin endpoint; it returns a [`Running`] with the bound addresses,
//! so tests can run the whole thing in-process on `127.0.0.1:0`. [`start_standalone`] feeds it
//! a manifest directory; [`run_standalone`] is what the binary's `standalone` command does:
//! start, log the addresses, wait for SIGTERM/SIGINT, drain.
//!
//! Shutdown: `/readyz` turns 503 first, new connections are still accepted for
//! `--shutdown-delay` (0 by default), then the listeners stop accepting, open connections get up to
//! `--shutdown-grace` to finish, then the admin endpoint and the watcher stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::health::Health;
use crate::proxy::pool::Clients;
use crate::proxy::{self, Listeners, ProxyContext};
use crate::rebuild::{BuildReport, LogDiagnostics, Observer, Rebuilder, Status, Update};
use crate::settings::Settings;
use crate::source;
use crate::source::directory::{self as manifest_watch, DirectoryLoader, WatchError, WatchHandle};
use crate::table::{RouteTable, TableHandle};
use crate::telemetry::admin::{self, AdminState};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::status_api::{BuildLog, EndpointHealth, LiveSources};
use crate::tls::self_signed::{self, SelfSignedError};

/// Why standalone mode could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("binding the {listener} listener on {addr}: {source}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Watch(#[from] WatchError),
    #[error(transparent)]
    Certificate(#[from] SelfSignedError),
    #[error("the proxy stopped: {0}")]
    Proxy(std::io::Error),
    #[error("the proxy task failed: {0}")]
    ProxyTask(tokio::task::JoinError),
    #[error("waiting for signals: {0}")]
    Signal(std::io::Error),
}

/// The addresses actually bound (with port 0 in settings, the ports the OS chose).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
}

/// A started instance. Drop it only after [`Running::shutdown`]; dropping it early aborts
/// nothing by itself but stops the watcher.
pub struct Running {
    mode: Mode,
    addresses: Addresses,
    status: Arc<Status>,
    table: TableHandle,
    settings: Settings,
    shutdown: watch::Sender<bool>,
    admin_shutdown: watch::Sender<bool>,
    proxy: JoinHandle<std::io::Result<()>>,
    admin: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    watcher: Option<WatchHandle>,
}

/// What a running instance is fed: where its objects come from, and who else hears about each
/// build. The manifest directory ([`Feed::manifests`]) and the Kubernetes API (`cluster`) both
/// produce one.
pub(crate) struct Feed {
    /// The objects and their change signal (no table is built before the source is ready).
    pub(crate) source: Box<dyn source::Source>,
    /// The file watcher feeding `source`, stopped on shutdown.
    pub(crate) watcher: Option<WatchHandle>,
    /// Observers besides the log and metrics ones (cluster mode: status and Events).
    pub(crate) observers: Vec<Arc<dyn Observer>>,
    /// For the start-up log line: the manifest directory, or `cluster`.
    pub(crate) describe: String,
    /// The mode that runs: the target of the lifecycle log lines.
    pub(crate) mode: Mode,
}

/// The mode that runs. The lifecycle log lines (listening, shutting down, stopped) carry it as
/// their target, `portcullis::standalone` or `portcullis::cluster`, so a controller's log does
/// not read as standalone mode's (the runtime's own module is shared by both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Standalone,
    Cluster,
}

/// A log line under the running mode's target (a tracing target must be a constant, hence one
/// call per mode).
macro_rules! lifecycle {
    ($mode:expr, $level:ident, $($rest:tt)+) => {
        match $mode {
            Mode::Standalone => tracing::$level!(target: "portcullis::standalone", $($rest)+),
            Mode::Cluster => tracing::$level!(target: "portcullis::cluster", $($rest)+),
        }
    };
}

impl Feed {
    /// A watched manifest directory (plus `--cert-dir`).
    fn manifests(manifests_dir: &Path, cert_dir: Option<&Path>) -> Result<Feed, RunError> {
        let loader = DirectoryLoader::new(manifests_dir, cert_dir)?;
        let (objects, watcher) = manifest_watch::watch(loader)?;
        Ok(Feed {
            source: Box::new(objects),
            watcher: Some(watcher),
            observers: Vec::new(),
            describe: manifests_dir.display().to_string(),
            mode: Mode::Standalone,
        })
    }
}

/// Standalone mode: binds, loads `manifests_dir`, and starts every task. Returns once the
/// listeners are bound and the first snapshot is loaded; the first table goes live moments
/// later ([`Status::is_live`]).
pub async fn start_standalone(
    settings: Settings,
    manifests_dir: &Path,
) -> Result<Running, RunError> {
    let feed = Feed::manifests(manifests_dir, settings.cert_dir.as_deref())?;
    start(settings, feed).await
}

/// Binds the listeners and starts the pipeline (source → rebuild → table), health checks, the
/// proxy and the admin endpoint, fed by `feed`.
pub(crate) async fn start(settings: Settings, feed: Feed) -> Result<Running, RunError> {
    // aws-lc-rs and ring are both in the tree (kube brings ring): rustls needs one chosen.
    // Already installed (a second in-process start, or main did it) is fine.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let fallback_certificate = self_signed::generate()?;

    let http = bind("http", settings.http_addr).await?;
    let https = bind("https", settings.https_addr).await?;
    let admin_listener = bind("admin", settings.admin_addr).await?;
    let addresses = Addresses {
        http: local_addr("http", &http, settings.http_addr)?,
        https: local_addr("https", &https, settings.https_addr)?,
        admin: local_addr("admin", &admin_listener, settings.admin_addr)?,
    };

    let (shutdown, shutdown_rx) = watch::channel(false);
    let (admin_shutdown, admin_shutdown_rx) = watch::channel(false);
    let table: TableHandle = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
    let status = Status::new();
    let metrics = Arc::new(Metrics::new());
    let health = Health::with_metrics(metrics.clone());
    let live = LiveSources {
        health: Some(health.clone() as Arc<dyn EndpointHealth>),
        builds: Arc::new(BuildLog::default()),
    };

    let Feed {
        source,
        watcher,
        observers,
        describe,
        mode,
    } = feed;
    let clients = Clients::new();
    let mut rebuilder = Rebuilder::new(&settings, table.clone(), status.clone())
        .with_observer(Arc::new(LogDiagnostics))
        .with_observer(metrics.clone())
        .with_observer(live.builds.clone())
        .with_observer(Arc::new(PoolPruner(clients.clone())));
    for observer in observers {
        rebuilder = rebuilder.with_observer(observer);
    }
    let mut background = vec![tokio::spawn(rebuilder.run(source, shutdown_rx.clone()))];
    background.push(tokio::spawn(
        health.clone().run(table.clone(), shutdown_rx.clone()),
    ));

    let mut ctx = ProxyContext::new(
        health,
        metrics.clone(),
        fallback_certificate,
        settings
            .public_ports
            .https
            .unwrap_or(addresses.https.port()),
        shutdown_rx.clone(),
    );
    ctx.public_ports = settings.public_ports;
    ctx.passthrough_splice = settings.passthrough_splice;
    ctx.clients = clients;
    let ctx = Arc::new(ctx);
    let proxy = tokio::spawn(proxy::serve_on_workers(
        settings.proxy_workers,
        Listeners { http, https },
        table.clone(),
        ctx,
        shutdown_rx,
    ));
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            status: status.clone(),
            metrics,
            live,
        },
        admin_shutdown_rx,
    ));

    lifecycle!(
        mode,
        info,
        http = %addresses.http,
        https = %addresses.https,
        admin = %addresses.admin,
        source = %describe,
        "listening"
    );
    Ok(Running {
        mode,
        addresses,
        status,
        table,
        settings,
        shutdown,
        admin_shutdown,
        proxy,
        admin,
        background,
        watcher,
    })
}

/// The binary's standalone mode: start, then serve until SIGTERM or SIGINT, then drain. A
/// second signal during the drain exits at once.
pub async fn run_standalone(settings: Settings, manifests_dir: &Path) -> Result<(), RunError> {
    let signals = watch_signals().map_err(RunError::Signal)?;
    let running = start_standalone(settings, manifests_dir).await?;
    serve_until_signalled(running, signals).await
}

/// Serves until the first SIGTERM/SIGINT counted by `signals`, then drains; a second signal
/// during the drain exits at once.
async fn serve_until_signalled(
    running: Running,
    mut signals: watch::Receiver<u32>,
) -> Result<(), RunError> {
    let mut second = signals.clone();
    tokio::select! {
        result = running.until_stopped(async move {
            let _ = signals.wait_for(|n| *n >= 1).await;
        }) => result,
        _ = second.wait_for(|n| *n >= 2) => {
            tracing::warn!(target: "portcullis::standalone", "second signal: exiting without waiting for open connections");
            Ok(())
        }
    }
}

impl Running {
    /// The bound addresses.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// Readiness, generation and the live build.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    /// The live routing table.
    pub fn table(&self) -> &TableHandle {
        &self.table
    }

    /// Serves until `stop` completes (then shuts down gracefully), or until the proxy fails.
    pub(crate) async fn until_stopped(
        mut self,
        stop: impl Future<Output = ()>,
    ) -> Result<(), RunError> {
        tokio::select! {
            () = stop => self.shutdown().await,
            result = &mut self.proxy => {
                self.stop_rest().await;
                match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(RunError::Proxy(e)),
                    Err(e) => Err(RunError::ProxyTask(e)),
                }
            }
        }
    }

    /// Graceful shutdown: not ready, stop accepting, drain up to the grace period, stop the rest.
    pub async fn shutdown(mut self) -> Result<(), RunError> {
        let grace = self.settings.shutdown_grace;
        let mode = self.mode;
        let delay = self.settings.shutdown_delay;
        lifecycle!(
            mode,
            info,
            grace_s = grace.as_secs_f64(),
            delay_s = delay.as_secs_f64(),
            "shutting down"
        );
        self.status.set_draining();
        if !delay.is_zero() {
            // Not ready, but still serving: the endpoints controller and load balancers take
            // a moment to stop sending, and a connection refused now would be a failed request.
            tokio::time::sleep(delay).await;
            lifecycle!(mode, info, "shutdown delay over; draining");
        }
        let _ = self.shutdown.send(true);
        let result = match tokio::time::timeout(grace, &mut self.proxy).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(RunError::Proxy(e)),
            Ok(Err(e)) => Err(RunError::ProxyTask(e)),
            Err(_) => {
                lifecycle!(
                    mode,
                    warn,
                    grace_s = grace.as_secs_f64(),
                    "shutdown grace period over; closing the remaining connections"
                );
                self.proxy.abort();
                Ok(())
            }
        };
        self.stop_rest().await;
        lifecycle!(mode, info, "stopped");
        result
    }

    async fn stop_rest(&mut self) {
        self.status.set_draining();
        let _ = self.shutdown.send(true);
        let _ = self.admin_shutdown.send(true);
        for task in self.background.drain(..) {
            let _ = task.await;
        }
        let _ = (&mut self.admin).await;
        if let Some(watcher) = self.watcher.take() {
            let _ = tokio::task::spawn_blocking(move || watcher.stop()).await;
        }
    }
}

async fn bind(listener: &'static str, addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Bind {
            listener,
            addr,
            source,
        })
}

fn local_addr(
    listener: &'static str,
    socket: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, RunError> {
    socket.local_addr().map_err(|source| RunError::Bind {
        listener,
        addr,
        source,
    })
}

/// SIGINT (Ctrl-C) and SIGTERM (Kubernetes, `kill`): the signals that stop the process.
#[cfg(unix)]
fn stop_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set
}

/// Holds SIGINT and SIGTERM pending (blocked) on the calling thread, and so on every thread it
/// starts from now on, until [`watch_signals`] has its handlers in place and releases them on
/// its own thread. The binary calls it first, before the async runtime starts its threads.
///
/// Why: installing a handler has windows in which a signal is dropped with no effect at all.
/// signal-hook-registry (under tokio) runs the previous disposition, `SIG_DFL`, as "nothing"
/// between its `sigaction` and publishing its slot; tokio then broadcasts an event that lands
/// before the listener subscribes to no one. A Ctrl-C or SIGTERM in either window was lost and
/// the process served on: a pod deleted as it starts, or
/// `docs_agree::quickstart_script_stops_the_backends_on_ctrl_c` (its Ctrl-C comes right at
/// start-up) waiting in vain on a loaded machine. Blocked, the signal waits, and reaches the
/// installed handler.
pub fn hold_stop_signals() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use nix::sys::signal::{SigmaskHow, pthread_sigmask};
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop_signals()), None)?;
    }
    Ok(())
}

/// Counts SIGTERM and SIGINT signals received. The handlers are installed before this returns,
/// so a signal arriving right after start-up is not lost: one that came while they were being
/// installed was held ([`hold_stop_signals`]) and is delivered when this releases it.
pub(crate) fn watch_signals() -> std::io::Result<watch::Receiver<u32>> {
    let (tx, rx) = watch::channel(0u32);
    #[cfg(unix)]
    {
        use nix::sys::signal::{SigmaskHow, pthread_sigmask};
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // Listened to now: take them on this thread (the runtime's threads, started while they
        // were held, keep them blocked; one thread that takes them is enough).
        pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&stop_signals()), None)?;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received"),
                    _ = int.recv() => tracing::info!("SIGINT received"),
                }
                tx.send_modify(|n| *n += 1);
            }
        });
    }
    #[cfg(not(unix))]
    {
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                tx.send_modify(|n| *n += 1);
            }
        });
    }
    Ok(rx)
}

/// Closes pooled upstream connections to endpoints that left the table, after every swap: a
/// pod removed from its EndpointSlice gets no new request on a kept-alive connection.
struct PoolPruner(Clients);

impl Observer for PoolPruner {
    fn built(&self, report: &BuildReport) {
        self.0.retain_endpoints(report.built.table.endpoints());
    }
}

/// The metrics publisher: generation, build time, change→live latency, diagnostics by reason
/// and objects by kind, once per build.
impl Observer for Metrics {
    fn built(&self, report: &BuildReport) {
        self.config_generation(report.generation);
        self.change_to_live(report.change_to_live);
        self.snapshot_objects(&report.snapshot);
        match report.kind {
            Update::Build => {
                self.rebuild(report.build_duration);
                self.diagnostics(&report.built.diagnostics);
                self.certificates(&report.built.table);
                self.hosts(&report.built.table);
            }
            // Same hosts, certificates and diagnostics: not walked again at every pod change.
            Update::Endpoints { .. } => self.endpoint_update(),
        }
    }
}
