//! Cluster source: one `kube::runtime` reflector and [`Store`] per kind, assembled into the same
//! [`Snapshot`] the manifest directory produces.
//!
//! - **Kinds**: Ingress, IngressClass (cluster-scoped), Service, EndpointSlice,
//!   IngressClassParams (cluster-scoped, our CRD), Secret, plus the one `--publish-service`
//!   Service (for Ingress status; not part of the snapshot) and, when `--watch-namespace`
//!   excludes its namespace, the one `--default-certificate` Secret.
//! - **Scope**: with `--watch-namespace` every namespaced kind is watched through a namespaced
//!   `Api`, so objects elsewhere are never even sent to us.
//! - **Secrets, least memory**: two watchers, `type=kubernetes.io/tls` (field selector) and
//!   `portcullis.io/backend-ca=true` (label selector, for Opaque `ca.crt` bundles of
//!   `portcullis.io/backend-ca`). RBAC cannot restrict `list`/`watch` by field or label, so the
//!   privilege is the same as watching every Secret; the memory and exposure are not: Helm
//!   release Secrets (megabytes each), service-account tokens and every other application
//!   Secret are never sent to us, never cached, never dumped with a heap. Of the Secrets we do
//!   keep, only the `tls.crt`, `tls.key` and `ca.crt` keys are stored.
//! - **Memory**: `.modify()` drops `managedFields` and the `kubectl` last-applied annotation
//!   (often larger than the object itself) before anything is stored.
//! - **Initial list**: the default list-then-watch mode (`InitialListStrategy::ListWatch`),
//!   paginated; no streaming lists (`sendInitialEvents`), which API servers before v1.27 reject
//!   and many still have behind a feature gate.
//! - **Errors never end the source**: the watcher restarts with `default_backoff()` (0.8 s
//!   doubling to 30 s, jittered); a 410 Gone re-lists; 403, 5xx and broken streams are logged
//!   and retried while the stores keep serving the last objects they had.
//! - **Ready gate**: [`KubeSource::wait_ready`] resolves once every store has completed its
//!   first list. IngressClassParams is the exception when the CRD is not installed (404): the
//!   kind counts as empty and ready, and the watcher keeps retrying with back-off, so
//!   installing the CRD later is picked up without a restart.
//! - **Change signal**: a [`watch`] channel of [`Change`], bumped on every event applied to a
//!   store (an add, update or delete, or a completed (re-)list).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Snapshot;
use crate::crd::IngressClassParams;
use crate::model::diagnostic::ObjectRef;

/// Field selector of the TLS Secrets watcher.
pub const TLS_SECRET_FIELD_SELECTOR: &str = "type=kubernetes.io/tls";
/// Label that opts an Opaque Secret holding a `ca.crt` bundle in to being watched.
pub const BACKEND_CA_LABEL: &str = "portcullis.io/backend-ca";
/// Label selector of the backend-CA Secrets watcher.
pub const BACKEND_CA_LABEL_SELECTOR: &str = "portcullis.io/backend-ca=true";
/// The annotation `kubectl apply` writes: a full copy of the object, never read by us.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The Secret keys the model reads; everything else is dropped before storing.
pub const SECRET_KEYS: &[&str] = &["tls.crt", "tls.key", "ca.crt"];

/// Why the source cannot produce a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A reflector task ended before its store was ever filled (it only ends on a panic or
    /// when the source is dropped).
    #[error("the {kind} reflector stopped before its first list completed")]
    ReflectorStopped { kind: Kind },
}

/// The kinds the source watches; labels log lines and errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Ingress,
    IngressClass,
    Service,
    EndpointSlice,
    IngressClassParams,
    TlsSecret,
    BackendCaSecret,
    DefaultCertificate,
    PublishService,
}

impl Kind {
    /// Stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::IngressClassParams => "IngressClassParams",
            Kind::TlsSecret => "Secret(kubernetes.io/tls)",
            Kind::BackendCaSecret => "Secret(portcullis.io/backend-ca)",
            Kind::DefaultCertificate => "Secret(--default-certificate)",
            Kind::PublishService => "Service(--publish-service)",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The change signal: how many store changes have been applied, and when the newest was (for
/// the change→live latency metric). Compare `generation`s; `at` is `None` until the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Change {
    /// Bumped once per applied event (and per [`KubeSource::poke`]).
    pub generation: u64,
    /// When the newest change was applied to a store.
    pub at: Option<Instant>,
}

/// What the cluster source is told by the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceSettings {
    /// `--watch-namespace`: watch namespaced kinds only there.
    pub watch_namespace: Option<String>,
    /// `--publish-service NS/NAME`: watched on its own (it may live outside the watched
    /// namespace), for the addresses written to Ingress status.
    pub publish_service: Option<(String, String)>,
    /// `--default-certificate NS/NAME`: watched on its own when `--watch-namespace` excludes
    /// its namespace (it usually lives with the controller, not with the applications).
    pub default_certificate: Option<(String, String)>,
}

/// Drops what we never read before an object is stored: `managedFields` and the last-applied
/// annotation. Public so a test can prepare directly given objects the same way.
pub fn strip_metadata<K: Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// [`strip_metadata`], and keep only the Secret keys in [`SECRET_KEYS`].
pub fn strip_secret(secret: &mut Secret) {
    strip_metadata(secret);
    secret.string_data = None;
    if let Some(data) = secret.data.as_mut() {
        data.retain(|key, _| SECRET_KEYS.contains(&key.as_str()));
    }
}

// === impl KubeSource ===

/// The stores, one per kind, that [`KubeSource::snapshot`] reads.
#[derive(Clone)]
struct Stores {
    ingresses: Store<Ingress>,
    classes: Store<IngressClass>,
    services: Store<Service>,
    endpoint_slices: Store<EndpointSlice>,
    class_params: Store<IngressClassParams>,
    tls_secrets: Store<Secret>,
    ca_secrets: Store<Secret>,
    default_certificate: Option<Store<Secret>>,
    publish_service: Option<Store<Service>>,
}

/// The cluster source: reflectors running in the background, read as [`Snapshot`]s.
/// Dropping it stops the reflectors.
pub struct KubeSource {
    stores: Stores,
    changes: Arc<watch::Sender<Change>>,
    /// True while the IngressClassParams CRD answered 404 (not installed).
    params_absent: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSource {
    /// Starts one reflector per kind on the current tokio runtime and returns at once; call
    /// [`KubeSource::wait_ready`] before the first [`KubeSource::snapshot`].
    pub fn start(client: Client, settings: &SourceSettings) -> KubeSource {
        let (changes, _) = watch::channel(Change::default());
        let changes = Arc::new(changes);
        let (absent_tx, params_absent) = watch::channel(false);
        let absent_tx = Arc::new(absent_tx);
        let ns = settings.watch_namespace.as_deref();
        let mut tasks = Vec::new();
        let signal = Signal {
            changes: changes.clone(),
            absent: absent_tx,
        };

        let cfg = watcher::Config::default;
        let ingresses = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg(),
            Kind::Ingress,
            &signal,
            strip_metadata,
        );
        let classes = spawn(
            &mut tasks,
            Api::all(client.clone()),
            cfg(),
            Kind::IngressClass,
            &signal,
            strip_metadata,
        );
        let services = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg(),
            Kind::Service,
            &signal,
            strip_metadata,
        );
        let endpoint_slices = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg(),
            Kind::EndpointSlice,
            &signal,
            strip_metadata,
        );
        let class_params = spawn(
            &mut tasks,
            Api::all(client.clone()),
            cfg(),
            Kind::IngressClassParams,
            &signal,
            strip_metadata,
        );
        let tls_secrets = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg().fields(TLS_SECRET_FIELD_SELECTOR),
            Kind::TlsSecret,
            &signal,
            strip_secret,
        );
        let ca_secrets = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg().labels(BACKEND_CA_LABEL_SELECTOR),
            Kind::BackendCaSecret,
            &signal,
            strip_secret,
        );
        let publish_service = settings.publish_service.as_ref().map(|(sns, name)| {
            spawn(
                &mut tasks,
                Api::namespaced(client.clone(), sns),
                cfg().fields(&format!("metadata.name={name}")),
                Kind::PublishService,
                &signal,
                strip_metadata,
            )
        });

        let default_certificate = settings
            .default_certificate
            .as_ref()
            .filter(|(cns, _)| ns.is_some_and(|watched| watched != cns))
            .map(|(cns, name)| {
                spawn(
                    &mut tasks,
                    Api::namespaced(client.clone(), cns),
                    cfg().fields(&format!("metadata.name={name}")),
                    Kind::DefaultCertificate,
                    &signal,
                    strip_secret,
                )
            });

        KubeSource {
            stores: Stores {
                ingresses,
                classes,
                services,
                endpoint_slices,
                class_params,
                tls_secrets,
                ca_secrets,
                default_certificate,
                publish_service,
            },
            changes,
            params_absent,
            tasks,
        }
    }

    /// Resolves once every store has completed its first list (IngressClassParams: or its
    /// CRD is known not to be installed). Waits as long as that takes: a store that cannot
    /// list (403, API server down) keeps the controller not ready, which is what `/readyz`
    /// should say. Snapshots taken before this are incomplete.
    pub async fn wait_ready(&self) -> Result<(), SourceError> {
        let s = &self.stores;
        ready(&s.ingresses, Kind::Ingress).await?;
        ready(&s.classes, Kind::IngressClass).await?;
        ready(&s.services, Kind::Service).await?;
        ready(&s.endpoint_slices, Kind::EndpointSlice).await?;
        ready(&s.tls_secrets, Kind::TlsSecret).await?;
        ready(&s.ca_secrets, Kind::BackendCaSecret).await?;
        if let Some(store) = &s.default_certificate {
            ready(store, Kind::DefaultCertificate).await?;
        }
        if let Some(store) = &s.publish_service {
            ready(store, Kind::PublishService).await?;
        }
        let mut absent = self.params_absent.clone();
        tokio::select! {
            result = ready(&s.class_params, Kind::IngressClassParams) => result,
            // The sender lives in the reflector task; it only closes if that task is gone.
            result = absent.wait_for(|absent| *absent) => result.map(|_| ()).map_err(|_| {
                SourceError::ReflectorStopped { kind: Kind::IngressClassParams }
            }),
        }
    }

    /// Whether [`KubeSource::wait_ready`] would resolve now (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        matches!(self.wait_ready().now_or_never(), Some(Ok(())))
    }

    /// Whether the IngressClassParams CRD answered 404 on the last attempt.
    pub fn class_params_crd_missing(&self) -> bool {
        *self.params_absent.borrow()
    }

    /// The change signal. `changed().await` wakes on every applied event; the value carries
    /// the count and the time of the newest change.
    pub fn changes(&self) -> watch::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Bumps the change signal without a store change, to make the rebuild loop run (and
    /// publish) again, e.g. when this replica has just become leader.
    pub fn poke(&self) {
        bump(&self.changes);
    }

    /// Every object in the stores, cloned out of their `Arc`s, sorted by namespace and name.
    /// A Secret both of type TLS and labelled backend-CA appears once.
    pub fn snapshot(&self) -> Snapshot {
        let s = &self.stores;
        let mut secrets: BTreeMap<(Option<String>, String), Secret> = BTreeMap::new();
        let extra = s.default_certificate.iter().flat_map(Store::state);
        for secret in s
            .tls_secrets
            .state()
            .into_iter()
            .chain(s.ca_secrets.state())
            .chain(extra)
        {
            secrets
                .entry((secret.namespace(), secret.name_any()))
                .or_insert_with(|| (*secret).clone());
        }
        Snapshot {
            ingresses: objects(&s.ingresses),
            classes: objects(&s.classes),
            secrets: secrets.into_values().collect(),
            services: objects(&s.services),
            endpoint_slices: objects(&s.endpoint_slices),
            class_params: objects(&s.class_params),
            cert_files: Vec::new(),
            diagnostics: Vec::new(),
        }
    }

    /// The `--publish-service` Service, if configured and it exists.
    pub fn publish_service(&self) -> Option<Arc<Service>> {
        let store = self.stores.publish_service.as_ref()?;
        store.state().into_iter().next()
    }

    /// The Ingress `namespace/name` as the store has it now (with its current status).
    pub fn ingress(&self, namespace: &str, name: &str) -> Option<Arc<Ingress>> {
        self.stores
            .ingresses
            .get(&reflector::ObjectRef::new(name).within(namespace))
    }

    /// The `metadata.uid` of a stored object, so Events can name exactly that object.
    pub fn uid(&self, object: &ObjectRef) -> Option<String> {
        let s = &self.stores;
        let ns = object.namespace.as_deref();
        match object.kind.as_str() {
            "Ingress" => uid_in(&s.ingresses, ns, &object.name),
            "IngressClass" => uid_in(&s.classes, None, &object.name),
            "Service" => uid_in(&s.services, ns, &object.name),
            "EndpointSlice" => uid_in(&s.endpoint_slices, ns, &object.name),
            "IngressClassParams" => uid_in(&s.class_params, None, &object.name),
            "Secret" => uid_in(&s.tls_secrets, ns, &object.name)
                .or_else(|| uid_in(&s.ca_secrets, ns, &object.name))
                .or_else(|| {
                    let store = s.default_certificate.as_ref()?;
                    uid_in(store, ns, &object.name)
                }),
            _ => None,
        }
    }
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn namespaced<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn objects<K>(store: &Store<K>) -> Vec<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut objects: Vec<K> = store.state().iter().map(|o| (**o).clone()).collect();
    objects.sort_by_cached_key(|o| (ResourceExt::namespace(o), o.name_any()));
    objects
}

fn uid_in<K>(store: &Store<K>, namespace: Option<&str>, name: &str) -> Option<String>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let mut key = reflector::ObjectRef::new(name);
    if let Some(ns) = namespace {
        key = key.within(ns);
    }
    store.get(&key)?.meta().uid.clone()
}

fn ready<K>(store: &Store<K>, kind: Kind) -> impl Future<Output = Result<(), SourceError>> + '_
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    store
        .wait_until_ready()
        .map(move |r| r.map_err(|_| SourceError::ReflectorStopped { kind }))
}

fn bump(changes: &watch::Sender<Change>) {
    changes.send_modify(|c| {
        c.generation += 1;
        c.at = Some(Instant::now());
    });
}

// === reflector tasks ===

/// What a reflector task reports to the source.
struct Signal {
    changes: Arc<watch::Sender<Change>>,
    absent: Arc<watch::Sender<bool>>,
}

/// Spawns the reflector of one kind: watcher (list+watch, back-off) → strip → store. The task
/// runs until the source is dropped; no error ends it.
fn spawn<K>(
    tasks: &mut Vec<JoinHandle<()>>,
    api: Api<K>,
    config: watcher::Config,
    kind: Kind,
    signal: &Signal,
    strip: fn(&mut K),
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let changes = signal.changes.clone();
    let absent = signal.absent.clone();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => bump(&changes),
                Ok(watcher::Event::InitDone) => {
                    tracing::debug!(%kind, "listed");
                    if kind == Kind::IngressClassParams {
                        absent.send_if_modified(|a| std::mem::replace(a, false));
                    }
                    bump(&changes);
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(error) => report(kind, &error, &absent),
            }
        }
        // The watcher stream is infinite and DefaultBackoff never gives up.
        tracing::error!(%kind, "watch stream ended; the store keeps its last objects");
    }));
    store
}

/// Logs a watcher error; the back-off and the retry are the stream's.
fn report(kind: Kind, error: &watcher::Error, absent: &watch::Sender<bool>) {
    let code = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    };
    match code {
        Some(404) if kind == Kind::IngressClassParams => {
            if !absent.send_replace(true) {
                tracing::warn!(
                    %kind,
                    "the IngressClassParams CRD is not installed; serving without class \
                     parameters and retrying with back-off"
                );
            }
        }
        Some(410) => {
            tracing::info!(%kind, "watch resource version expired (410 Gone); re-listing")
        }
        Some(403) => tracing::warn!(
            %kind,
            %error,
            "forbidden: check the RBAC rules; keeping the last objects and retrying"
        ),
        _ => tracing::warn!(%kind, %error, "watch failed; keeping the last objects and retrying"),
    }
}
