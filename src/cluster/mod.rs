//! `portcullis controller`: cluster mode assembled. A kube [`Client`] (kubeconfig or
//! in-cluster), the [`KubeSource`] (reflectors → [`Snapshot`](crate::source::Snapshot) +
//! change signal), the [`LeaderElector`], and the [`Publisher`] the rebuild loop calls after
//! every build.
//!
//! The seam with the rebuild loop is [`Cluster`]: `wait_ready()`, `changes()` and `snapshot()`
//! on the way in (wrapped, with the `--cert-dir` files, in a [`ClusterSource`] that the loop
//! pulls snapshots from), `publish(&Built, our_ingresses)` on the way out, `shutdown()` at the
//! end.

mod events;
mod gateway_status;
mod lease;
pub mod rbac;
pub mod status;

use std::sync::Arc;

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::lease::{LeaderElector, Leadership, LeaseSettings};
use crate::cluster::status::{
    ClusterView, PublishOutcome, Publisher, PublisherSettings, StatusAddresses,
    parse_status_addresses,
};
use crate::model::Built;
use crate::rebuild::Status;
use crate::rebuild::{BuildReport, Observer};
use crate::runtime::{self, Addresses, Feed, RunError, Running};
use crate::settings::{BuildSettings, Settings};
use crate::source::directory::{self as source_watch, DirectoryLoader, WatchError};
use crate::source::kubernetes::{Change, ClusterSource, KubeSource, SourceError, SourceSettings};
use crate::table::diagnostic::ObjectRef;

/// Default name of the leader-election Lease.
pub const DEFAULT_LEASE_NAME: &str = "portcullis-leader";

/// Why cluster mode could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// No kubeconfig and not in a cluster, or the config is invalid.
    #[error("connecting to the Kubernetes API: {0}")]
    Client(#[from] kube::Error),
    /// A flag has a value we cannot use.
    #[error("--{flag} {value:?}: {why}")]
    InvalidFlag {
        flag: &'static str,
        value: String,
        why: &'static str,
    },
    /// The source stopped before it was ready.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Waiting for a shutdown signal failed.
    #[error("installing the signal handler: {0}")]
    Signal(std::io::Error),
    /// The `--cert-dir` watcher could not start.
    #[error(transparent)]
    CertDir(#[from] WatchError),
    /// The listeners or the runtime failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Everything `portcullis controller` is told, besides the common listener flags.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerSettings {
    /// `--ingress-class`.
    pub ingress_class: String,
    /// `--controller-class`: the `spec.controller` our IngressClass must name.
    pub controller_class: String,
    /// `--watch-namespace`.
    pub watch_namespace: Option<String>,
    /// `--publish-service NS/NAME`.
    pub publish_service: Option<(String, String)>,
    /// `--publish-status-address ADDR[,ADDR]`, split on commas.
    pub publish_status_address: Vec<String>,
    /// `--default-certificate NS/NAME`.
    pub default_certificate: Option<(String, String)>,
    /// Namespace of the Lease: `POD_NAMESPACE`, else the service account's namespace.
    pub lease_namespace: String,
    /// Name of the Lease.
    pub lease_name: String,
    /// Our identity in the Lease and in Events: `POD_NAME`, else the host name.
    pub identity: String,
    /// Clear our Ingresses' status on shutdown (default: keep).
    pub update_status_on_shutdown: bool,
}

impl ControllerSettings {
    /// Defaults: class `portcullis`, lease namespace and identity from the environment.
    pub fn from_env() -> Self {
        ControllerSettings {
            ingress_class: BuildSettings::default().ingress_class,
            controller_class: BuildSettings::default().controller_class,
            watch_namespace: None,
            publish_service: None,
            publish_status_address: Vec::new(),
            default_certificate: None,
            lease_namespace: default_lease_namespace(),
            lease_name: DEFAULT_LEASE_NAME.to_string(),
            identity: default_identity(),
            update_status_on_shutdown: false,
        }
    }

    /// Rejects combinations that cannot work.
    pub fn validate(&self) -> Result<(), ControllerError> {
        if self.publish_service.is_some() && !self.publish_status_address.is_empty() {
            return Err(ControllerError::InvalidFlag {
                flag: "publish-status-address",
                value: self.publish_status_address.join(","),
                why: "give either --publish-service or --publish-status-address, not both",
            });
        }
        if self.identity.is_empty() {
            return Err(ControllerError::InvalidFlag {
                flag: "identity",
                value: String::new(),
                why: "set POD_NAME (downward API) or a host name",
            });
        }
        Ok(())
    }

    /// The settings of the pure model.
    pub fn build_settings(&self) -> BuildSettings {
        BuildSettings {
            ingress_class: self.ingress_class.clone(),
            controller_class: self.controller_class.clone(),
            default_certificate: self.default_certificate.clone(),
            watch_namespace: self.watch_namespace.clone(),
        }
    }

    /// The settings of the cluster source.
    fn source_settings(&self) -> SourceSettings {
        SourceSettings {
            watch_namespace: self.watch_namespace.clone(),
            publish_service: self.publish_service.clone(),
            default_certificate: self.default_certificate.clone(),
        }
    }

    /// The settings of the status and Event publisher.
    fn publisher_settings(&self) -> PublisherSettings {
        let addresses = if self.publish_service.is_some() {
            StatusAddresses::Service
        } else if self.publish_status_address.is_empty() {
            StatusAddresses::None
        } else {
            StatusAddresses::Static(parse_status_addresses(
                &self.publish_status_address.join(","),
            ))
        };
        PublisherSettings {
            addresses,
            watch_namespace: self.watch_namespace.clone(),
            update_status_on_shutdown: self.update_status_on_shutdown,
            identity: self.identity.clone(),
        }
    }

    /// The Lease, with the default timings.
    fn lease_settings(&self) -> LeaseSettings {
        LeaseSettings::new(&self.lease_namespace, &self.lease_name, &self.identity)
    }
}

/// `POD_NAMESPACE`, else the mounted service account's namespace, else `default`.
fn default_lease_namespace() -> String {
    non_empty_env("POD_NAMESPACE")
        .or_else(|| read_trimmed("/var/run/secrets/kubernetes.io/serviceaccount/namespace"))
        .unwrap_or_else(|| "default".to_string())
}

/// `POD_NAME`, else the host name (a pod's host name is its name), else a random one.
fn default_identity() -> String {
    non_empty_env("POD_NAME")
        .or_else(|| non_empty_env("HOSTNAME"))
        .or_else(|| read_trimmed("/proc/sys/kernel/hostname"))
        .or_else(|| read_trimmed("/etc/hostname"))
        .unwrap_or_else(|| format!("portcullis-{:08x}", fastrand::u32(..)))
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn read_trimmed(path: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

// === impl Cluster ===

/// What only a cluster has, running: the API source (reflectors), leader election, and the
/// publisher of Ingress status and Events. [`Controller`] runs it beside the shared runtime.
pub struct Cluster {
    source: Arc<KubeSource>,
    publisher: Publisher,
    leadership: Leadership,
    stop_elector: watch::Sender<bool>,
    elector: JoinHandle<()>,
    poke_on_leadership: JoinHandle<()>,
}

impl Cluster {
    /// Starts the reflectors and the leader election on the current runtime; returns at once.
    pub fn start(
        client: Client,
        settings: &ControllerSettings,
    ) -> Result<Cluster, ControllerError> {
        settings.validate()?;
        let source = Arc::new(KubeSource::start(
            client.clone(),
            &settings.source_settings(),
        ));
        let elector = LeaderElector::new(client.clone(), settings.lease_settings());
        let leadership = elector.leadership();
        let view: Arc<dyn ClusterView> = source.clone();
        let publisher = Publisher::new(
            client,
            settings.publisher_settings(),
            leadership.clone(),
            view,
        );

        let (stop_elector, mut stop) = watch::channel(false);
        let elector = tokio::spawn(elector.run(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }));
        // A new leader publishes at once: bump the change signal so the rebuild loop runs.
        let mut changes = leadership.changes();
        let poked = source.clone();
        let poke_on_leadership = tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                if *changes.borrow_and_update() {
                    poked.poke();
                }
            }
        });
        Ok(Cluster {
            source,
            publisher,
            leadership,
            stop_elector,
            elector,
            poke_on_leadership,
        })
    }

    /// Resolves when every store has its first list: build nothing before this.
    pub async fn wait_ready(&self) -> Result<(), ControllerError> {
        Ok(self.source.wait_ready().await?)
    }

    /// For `/readyz`.
    pub fn is_ready(&self) -> bool {
        self.source.is_ready()
    }

    /// The change signal (generation + time of the newest change).
    pub fn changes(&self) -> watch::Receiver<Change> {
        self.source.changes()
    }

    /// Whether this replica writes status and Events now.
    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// The source itself (for metrics or diagnostics of the watch).
    fn source(&self) -> &Arc<KubeSource> {
        &self.source
    }

    /// Called by the rebuild loop after every build and swap.
    async fn publish(&self, built: &Built, our_ingresses: &[ObjectRef]) -> PublishOutcome {
        let outcome = self.publisher.publish(built, our_ingresses).await;
        if outcome.status_patched + outcome.events_posted + outcome.failed > 0 {
            tracing::debug!(?outcome, "published");
        }
        outcome
    }

    /// Clears status if asked to (while still leader), then releases the lease and stops.
    pub async fn shutdown(self, our_ingresses: &[ObjectRef]) {
        self.publisher.shutdown(our_ingresses).await;
        let _ = self.stop_elector.send(true);
        let _ = self.elector.await;
        self.poke_on_leadership.abort();
    }
}

// === run ===

/// `portcullis controller`: connects (kubeconfig or in-cluster) and serves until SIGTERM or
/// SIGINT, then drains.
pub async fn run(
    settings: Settings,
    controller: ControllerSettings,
) -> Result<(), ControllerError> {
    let mut signals = runtime::watch_signals().map_err(ControllerError::Signal)?;
    let client = Client::try_default().await?;
    run_until(client, settings, controller, async move {
        let _ = signals.wait_for(|n| *n >= 1).await;
    })
    .await
}

/// Cluster mode with a given client, until `stop` completes.
async fn run_until(
    client: Client,
    settings: Settings,
    controller: ControllerSettings,
    stop: impl Future<Output = ()>,
) -> Result<(), ControllerError> {
    start(client, settings, controller)
        .await?
        .until_stopped(stop)
        .await
}

/// A running `portcullis controller`: the runtime both modes share (listeners, rebuild loop,
/// proxy, health, admin) fed by a [`Cluster`]'s source.
pub struct Controller {
    running: Running,
    cluster: Arc<Cluster>,
    publisher: JoinHandle<()>,
    latest: watch::Receiver<Option<Arc<Built>>>,
}

/// Starts cluster mode: the shared runtime (listeners, rebuild loop, health, admin) fed from
/// the API instead of a directory, and a task that publishes status and Events after every
/// build (off the rebuild loop: API calls may be slow). Returns once the listeners are bound;
/// the first table goes live when every store has synced.
pub async fn start(
    client: Client,
    settings: Settings,
    controller: ControllerSettings,
) -> Result<Controller, ControllerError> {
    let cluster = Arc::new(Cluster::start(client, &controller)?);
    let (certs, cert_watcher) = match settings.cert_dir.as_deref() {
        Some(dir) => {
            let (certs, handle) = source_watch::watch(DirectoryLoader::certificates_only(dir)?)?;
            (Some(certs), Some(handle))
        }
        None => (None, None),
    };
    let (builds, mut built) = watch::channel(None::<Arc<Built>>);
    let latest = built.clone();
    // Nothing until every store has synced, then a change signal per API object or
    // `--cert-dir` change; the rebuild loop pulls one snapshot per build.
    let objects = ClusterSource::new(cluster.source().clone(), certs);
    let feed = Feed {
        source: Box::new(objects),
        watcher: cert_watcher,
        observers: vec![Arc::new(ForwardBuilds(builds))],
        describe: "cluster".to_string(),
        mode: runtime::Mode::Cluster,
    };
    let running = runtime::start(settings, feed).await?;

    let publishing = cluster.clone();
    let publisher = tokio::spawn(async move {
        while built.changed().await.is_ok() {
            let Some(build) = built.borrow_and_update().clone() else {
                continue;
            };
            publishing.publish(&build, &build.ours).await;
        }
    });
    Ok(Controller {
        running,
        cluster,
        publisher,
        latest,
    })
}

impl Controller {
    /// The bound listener addresses.
    pub fn addresses(&self) -> Addresses {
        self.running.addresses()
    }

    /// Readiness, generation and the live build.
    pub fn status(&self) -> &Arc<Status> {
        self.running.status()
    }

    /// Serves until `stop` completes, then drains, clears status if asked to, and releases the
    /// lease.
    pub async fn until_stopped(
        self,
        stop: impl Future<Output = ()>,
    ) -> Result<(), ControllerError> {
        let Controller {
            running,
            cluster,
            publisher,
            mut latest,
        } = self;
        // Stops the rebuild loop too, which drops the `ClusterSource` (and its forwarding task).
        let result = running.until_stopped(stop).await;
        publisher.abort();
        let _ = publisher.await;
        let ours = latest
            .borrow_and_update()
            .as_ref()
            .map(|b| b.ours.clone())
            .unwrap_or_default();
        match Arc::try_unwrap(cluster) {
            Ok(cluster) => cluster.shutdown(&ours).await,
            Err(_) => tracing::warn!("cluster source still in use at shutdown; lease not released"),
        }
        Ok(result?)
    }
}

/// Hands each build to the publisher task.
struct ForwardBuilds(watch::Sender<Option<Arc<Built>>>);

impl Observer for ForwardBuilds {
    fn built(&self, report: &BuildReport) {
        let _ = self.0.send(Some(report.built.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_flags_are_exclusive_and_map_to_address_sources() {
        let mut s = ControllerSettings::from_env();
        s.identity = "pod-a".into();
        assert_eq!(s.publisher_settings().addresses, StatusAddresses::None);
        s.publish_status_address = vec!["10.0.0.1".into(), "lb.example.com".into()];
        let StatusAddresses::Static(a) = s.publisher_settings().addresses else {
            panic!("static addresses expected");
        };
        assert_eq!(a.len(), 2);
        s.publish_service = Some(("ingress".into(), "portcullis".into()));
        assert!(s.validate().is_err());
        s.publish_status_address.clear();
        assert!(s.validate().is_ok());
        assert_eq!(s.publisher_settings().addresses, StatusAddresses::Service);
        assert_eq!(s.lease_settings().name, DEFAULT_LEASE_NAME);
    }
}
