//! Cluster source: one `kube::runtime` reflector and [`Store`] per kind, assembled into the same
//! [`Snapshot`] the manifest directory produces.
//!
//! - **Kinds**: Ingress, IngressClass (cluster-scoped), Service, EndpointSlice,
//!   IngressClassParams (cluster-scoped, our CRD), Secret, plus the one `--publish-service`
//!   Service (for Ingress status; not part of the snapshot) and, when `--watch-namespace`
//!   excludes its namespace, the one `--default-certificate` Secret. Gateway API
//!   ([`crate::gateway_api`]): GatewayClass (cluster-scoped), Gateway, HTTPRoute, GRPCRoute,
//!   TLSRoute, BackendTLSPolicy, ReferenceGrant, and ConfigMaps (a BackendTLSPolicy's CA bundle; only
//!   their `ca.crt` key is kept). Namespaces (cluster-scoped; only their name and labels are
//!   kept), for a listener's `allowedRoutes.namespaces.selector`, unless `--watch-namespace`
//!   is set (see [`KubeSource::start`]).
//! - **Scope**: with `--watch-namespace` every namespaced kind is watched through a namespaced
//!   `Api`, so objects elsewhere are never even sent to us.
//! - **Secrets, least memory**: three watchers, `type=kubernetes.io/tls` (field selector),
//!   `portcullis.io/backend-ca=true` (label selector, for Opaque `ca.crt` bundles of
//!   `portcullis.io/backend-ca`) and `portcullis.io/basic-auth=true` (label selector, for the
//!   users of `auth-secret`, every key kept). RBAC cannot restrict `list`/`watch` by field or label, so the
//!   privilege is the same as watching every Secret; the memory and exposure are not: Helm
//!   release Secrets (megabytes each), service-account tokens and every other application
//!   Secret are never sent to us, never cached, never dumped with a heap. Of the Secrets we do
//!   keep, only the `tls.crt`, `tls.key` and `ca.crt` keys are stored (all keys of a basic-auth one).
//! - **Memory**: `.modify()` drops `managedFields` and the `kubectl` last-applied annotation
//!   (often larger than the object itself) before anything is stored.
//! - **Initial list**: the default list-then-watch mode (`InitialListStrategy::ListWatch`),
//!   paginated; no streaming lists (`sendInitialEvents`), which API servers before v1.27 reject
//!   and many still have behind a feature gate.
//! - **Errors never end the source**: the watcher restarts with `default_backoff()` (0.8 s
//!   doubling to 30 s, jittered); a 410 Gone re-lists; 403, 5xx and broken streams are logged
//!   and retried while the stores keep serving the last objects they had.
//! - **Ready gate**: [`KubeSource::wait_ready`] resolves once every store has completed its
//!   first list. The kinds whose CRD is optional are the exception when it is not installed
//!   (404): IngressClassParams and the seven Gateway API kinds. Such a kind counts as empty and
//!   ready, and its watcher keeps retrying with back-off, so installing the CRD later is
//!   picked up without a restart. A cluster without the Gateway API CRDs is logged once, in
//!   one line for the seven kinds, not at every retry.
//! - **Change signal**: a [`watch`] channel of [`Change`], bumped on every event applied to a
//!   store (an add, update or delete, or a completed (re-)list).
//! - **No copies per event**: [`KubeSource::snapshot`] takes the stores' `Arc`s as they are;
//!   [`ClusterSource`], what the rebuild loop reads in cluster mode, only forwards the change
//!   signal, and the loop pulls one snapshot per build (after its hold-off), not one per event.
//!   An EndpointSlice event costs the store update and a counter bump, no copy of the stores.

use std::collections::HashSet;
use std::fmt::Debug;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::api::Api;
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Objects, Snapshot, SnapshotSource, Source};
use crate::crd::IngressClassParams;
use crate::gateway_api::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant, TLSRoute,
};
use crate::table::diagnostic::ObjectRef;

/// Field selector of the TLS Secrets watcher.
const TLS_SECRET_FIELD_SELECTOR: &str = "type=kubernetes.io/tls";
/// Label selector of the backend-CA Secrets watcher: the label that opts an Opaque Secret
/// holding a `ca.crt` bundle in to being watched.
const BACKEND_CA_LABEL_SELECTOR: &str = "portcullis.io/backend-ca=true";
/// Label selector of the basic-auth Secrets watcher: the label that opts an Opaque Secret of
/// users (`auth-secret`) in to being watched; every key is kept (an `auth-map` Secret's keys
/// are its users).
pub const BASIC_AUTH_LABEL_SELECTOR: &str = "portcullis.io/basic-auth=true";
/// The annotation `kubectl apply` writes: a full copy of the object, never read by us.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// The Secret keys the model reads; everything else is dropped before storing. `ca.crl`: the
/// revocation lists of an `auth-tls-secret` (dropping it would accept revoked certificates).
const SECRET_KEYS: &[&str] = &["tls.crt", "tls.key", "ca.crt", "ca.crl"];
/// The ConfigMap keys the model reads: the CA bundle a BackendTLSPolicy's `caCertificateRefs`
/// names (the Gateway API spec puts it under `ca.crt`). Every ConfigMap in scope is watched
/// (a reference names it, no label marks it), so the rest of each is dropped before storing.
const CONFIG_MAP_KEYS: &[&str] = &["ca.crt"];

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
    BasicAuthSecret,
    DefaultCertificate,
    PublishService,
    GatewayClass,
    Gateway,
    HttpRoute,
    GrpcRoute,
    TlsRoute,
    BackendTlsPolicy,
    ReferenceGrant,
    ConfigMap,
    Namespace,
}

impl Kind {
    /// How many kinds there are (the last variant's index + 1).
    const COUNT: usize = Kind::Namespace as usize + 1;

    /// Stable label for logs and metrics.
    fn as_str(self) -> &'static str {
        match self {
            Kind::Ingress => "Ingress",
            Kind::IngressClass => "IngressClass",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::IngressClassParams => "IngressClassParams",
            Kind::TlsSecret => "Secret(kubernetes.io/tls)",
            Kind::BackendCaSecret => "Secret(portcullis.io/backend-ca)",
            Kind::BasicAuthSecret => "Secret(portcullis.io/basic-auth)",
            Kind::DefaultCertificate => "Secret(--default-certificate)",
            Kind::PublishService => "Service(--publish-service)",
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::TlsRoute => "TLSRoute",
            Kind::BackendTlsPolicy => "BackendTLSPolicy",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::ConfigMap => "ConfigMap",
            Kind::Namespace => "Namespace",
        }
    }

    /// The Gateway API kinds, whose CRDs the cluster's operator may not have installed.
    pub const GATEWAY_API: [Kind; 7] = [
        Kind::GatewayClass,
        Kind::Gateway,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TlsRoute,
        Kind::BackendTlsPolicy,
        Kind::ReferenceGrant,
    ];

    /// This kind's bit in [`Optional`] when its CRD may be missing (a 404 then means "not
    /// installed", not an error); 0 for the kinds every cluster serves.
    fn optional_bit(self) -> u8 {
        match self {
            Kind::IngressClassParams => 1,
            Kind::GatewayClass => 1 << 1,
            Kind::Gateway => 1 << 2,
            Kind::HttpRoute => 1 << 3,
            Kind::TlsRoute => 1 << 4,
            Kind::BackendTlsPolicy => 1 << 5,
            Kind::ReferenceGrant => 1 << 6,
            Kind::GrpcRoute => 1 << 7,
            _ => 0,
        }
    }
}

/// The bits of [`Kind::GATEWAY_API`] in [`Optional`].
const GATEWAY_API_BITS: u8 = 0b1111_1110;

/// What the kinds whose CRD may be missing last answered, one bit per kind
/// ([`Kind::optional_bit`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Optional {
    /// The list or watch answered 404: the CRD is not installed (the store is empty).
    absent: u8,
    /// Listed since the last 404: the CRD is installed.
    listed: u8,
    /// The Gateway API kinds found absent as last logged, so that the cluster's state is
    /// logged once per change, not once per kind or per retry.
    logged: u8,
}

/// What to log about the Gateway API CRDs, from [`Optional::gateway_api_change`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum GatewayApiCrds {
    /// None of the seven is served.
    Missing,
    /// Some are, the named ones are not; `fewer`: fewer are missing than were logged before
    /// (CRDs being installed: each kind's watcher finds its CRD at its next retry).
    Partial { missing: Vec<Kind>, fewer: bool },
    /// Every one is served (after some were not).
    Installed,
}

impl Optional {
    /// `kind` completed a list: its CRD is installed. Whether anything changed.
    fn listed(&mut self, kind: Kind) -> bool {
        let before = *self;
        self.absent &= !kind.optional_bit();
        self.listed |= kind.optional_bit();
        before != *self
    }

    /// `kind` answered 404: its CRD is not installed. Whether anything changed.
    fn missing(&mut self, kind: Kind) -> bool {
        let before = *self;
        self.absent |= kind.optional_bit();
        self.listed &= !kind.optional_bit();
        before != *self
    }

    /// What to log now about the Gateway API CRDs, if anything: once every Gateway API kind
    /// has answered (listed or 404, so a start-up where the kinds answer one after another is
    /// one line, not seven) and the set of missing kinds differs from the one last logged.
    /// Nothing while every kind is served and nothing was missing before.
    fn gateway_api_change(&mut self) -> Option<GatewayApiCrds> {
        let answered = (self.absent | self.listed) & GATEWAY_API_BITS;
        let missing = self.absent & GATEWAY_API_BITS;
        if answered != GATEWAY_API_BITS || missing == self.logged {
            return None;
        }
        let fewer = missing & !self.logged == 0;
        self.logged = missing;
        Some(match missing {
            GATEWAY_API_BITS => GatewayApiCrds::Missing,
            0 => GatewayApiCrds::Installed,
            _ => GatewayApiCrds::Partial {
                missing: Kind::GATEWAY_API
                    .into_iter()
                    .filter(|k| missing & k.optional_bit() != 0)
                    .collect(),
                fewer,
            },
        })
    }
}

/// Logs what [`Optional::gateway_api_change`] found.
fn log_gateway_api(change: GatewayApiCrds) {
    match change {
        GatewayApiCrds::Missing => {
            tracing::warn!("the Gateway API CRDs are not installed; serving Ingress only")
        }
        GatewayApiCrds::Partial { missing, fewer } => {
            let missing = missing
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            if fewer {
                tracing::info!(%missing, "more Gateway API CRDs are installed; still missing some");
            } else {
                tracing::warn!(
                    %missing,
                    "some Gateway API CRDs are not installed; serving Gateway API without those kinds"
                );
            }
        }
        GatewayApiCrds::Installed => {
            tracing::info!("the Gateway API CRDs are installed; serving Gateway API too")
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

/// [`strip_metadata`] for a basic-auth Secret: every key stays (they are its users).
pub fn strip_auth_secret(secret: &mut Secret) {
    strip_metadata(secret);
    secret.string_data = None;
}

/// [`strip_metadata`], and keep only the ConfigMap keys in [`CONFIG_MAP_KEYS`].
pub fn strip_config_map(config_map: &mut ConfigMap) {
    strip_metadata(config_map);
    config_map.binary_data = None;
    if let Some(data) = config_map.data.as_mut() {
        data.retain(|key, _| CONFIG_MAP_KEYS.contains(&key.as_str()));
    }
}

/// Keep a Namespace's name and labels, nothing else: the labels are all the model reads (a
/// listener's `allowedRoutes.namespaces.selector`), and every Namespace of the cluster is
/// stored, so its spec, status, annotations and the rest of its metadata are dropped.
pub fn strip_namespace(namespace: &mut Namespace) {
    let meta = std::mem::take(&mut namespace.metadata);
    *namespace = Namespace {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: meta.name,
            labels: meta.labels,
            ..Default::default()
        },
        ..Namespace::default()
    };
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
    auth_secrets: Store<Secret>,
    default_certificate: Option<Store<Secret>>,
    publish_service: Option<Store<Service>>,
    gateway_classes: Store<GatewayClass>,
    gateways: Store<Gateway>,
    http_routes: Store<HTTPRoute>,
    grpc_routes: Store<GRPCRoute>,
    tls_routes: Store<TLSRoute>,
    backend_tls_policies: Store<BackendTLSPolicy>,
    reference_grants: Store<ReferenceGrant>,
    config_maps: Store<ConfigMap>,
    /// `None` with `--watch-namespace`: Namespaces are not watched then (see
    /// [`KubeSource::start`]).
    namespaces: Option<Store<Namespace>>,
}

/// The cluster source: reflectors running in the background, read as [`Snapshot`]s.
/// Dropping it stops the reflectors.
pub struct KubeSource {
    stores: Stores,
    changes: Arc<watch::Sender<Change>>,
    /// How many changes each store has taken, so [`KubeSource::snapshot`] re-reads only the
    /// stores that changed since the last snapshot.
    revisions: Arc<Revisions>,
    /// The last snapshot's objects, per kind.
    taken: Mutex<Taken>,
    /// Which optional CRDs (IngressClassParams, Gateway API) answered 404 (not installed).
    optional: watch::Receiver<Optional>,
    tasks: Vec<JoinHandle<()>>,
}

impl KubeSource {
    /// Starts one reflector per kind on the current tokio runtime and returns at once; call
    /// [`KubeSource::wait_ready`] before the first [`KubeSource::snapshot`].
    pub fn start(client: Client, settings: &SourceSettings) -> KubeSource {
        let (changes, _) = watch::channel(Change::default());
        let changes = Arc::new(changes);
        let (optional_tx, optional) = watch::channel(Optional::default());
        let ns = settings.watch_namespace.as_deref();
        let mut tasks = Vec::new();
        let signal = Signal {
            changes: changes.clone(),
            revisions: Arc::default(),
            optional: Arc::new(optional_tx),
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
        let auth_secrets = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg().labels(BASIC_AUTH_LABEL_SELECTOR),
            Kind::BasicAuthSecret,
            &signal,
            strip_auth_secret,
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

        // Gateway API: GatewayClass is cluster-scoped, the rest follow --watch-namespace.
        let gateway_classes = spawn(
            &mut tasks,
            Api::all(client.clone()),
            cfg(),
            Kind::GatewayClass,
            &signal,
            strip_metadata,
        );
        let gateways = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg(),
            Kind::Gateway,
            &signal,
            strip_metadata,
        );
        let http_routes = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg(),
            Kind::HttpRoute,
            &signal,
            strip_metadata,
        );
        let grpc_routes = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg(),
            Kind::GrpcRoute,
            &signal,
            strip_metadata,
        );
        let tls_routes = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg(),
            Kind::TlsRoute,
            &signal,
            strip_metadata,
        );
        let backend_tls_policies = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg(),
            Kind::BackendTlsPolicy,
            &signal,
            strip_metadata,
        );
        let reference_grants = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg(),
            Kind::ReferenceGrant,
            &signal,
            strip_metadata,
        );
        let config_maps = spawn(
            &mut tasks,
            namespaced(&client, ns),
            cfg(),
            Kind::ConfigMap,
            &signal,
            strip_config_map,
        );
        // Namespaces, cluster-scoped, only when every namespace is watched. With
        // --watch-namespace they are not watched at all: reading them needs a ClusterRole (a Role
        // cannot grant a cluster-scoped kind), which a one-namespace installation does not
        // otherwise need for its namespaced kinds, and only that namespace's routes are read, so
        // a selector could only ever be asked about it. The snapshot then holds no Namespace, and
        // a listener's `allowedRoutes.namespaces.selector` sees each namespace's
        // `kubernetes.io/metadata.name` label only (the model always adds it).
        let namespaces = ns.is_none().then(|| {
            spawn(
                &mut tasks,
                Api::all(client.clone()),
                cfg(),
                Kind::Namespace,
                &signal,
                strip_namespace,
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
                auth_secrets,
                default_certificate,
                publish_service,
                gateway_classes,
                gateways,
                http_routes,
                grpc_routes,
                tls_routes,
                backend_tls_policies,
                reference_grants,
                config_maps,
                namespaces,
            },
            changes,
            revisions: signal.revisions.clone(),
            taken: Mutex::default(),
            optional,
            tasks,
        }
    }

    /// Resolves once every store has completed its first list (IngressClassParams and the
    /// Gateway API kinds: or their CRD is known not to be installed). Waits as long as that
    /// takes: a store that cannot list (403, API server down) keeps the controller not ready,
    /// which is what `/readyz` should say. Snapshots taken before this are incomplete.
    pub async fn wait_ready(&self) -> Result<(), SourceError> {
        let s = &self.stores;
        ready(&s.ingresses, Kind::Ingress).await?;
        ready(&s.classes, Kind::IngressClass).await?;
        ready(&s.services, Kind::Service).await?;
        ready(&s.endpoint_slices, Kind::EndpointSlice).await?;
        ready(&s.tls_secrets, Kind::TlsSecret).await?;
        ready(&s.ca_secrets, Kind::BackendCaSecret).await?;
        ready(&s.auth_secrets, Kind::BasicAuthSecret).await?;
        if let Some(store) = &s.default_certificate {
            ready(store, Kind::DefaultCertificate).await?;
        }
        if let Some(store) = &s.publish_service {
            ready(store, Kind::PublishService).await?;
        }
        ready(&s.config_maps, Kind::ConfigMap).await?;
        // Every API server serves Namespaces: required, like the core kinds (not watched, so
        // nothing to wait for, with --watch-namespace).
        if let Some(store) = &s.namespaces {
            ready(store, Kind::Namespace).await?;
        }
        let optional = &self.optional;
        optional_ready(&s.class_params, Kind::IngressClassParams, optional).await?;
        optional_ready(&s.gateway_classes, Kind::GatewayClass, optional).await?;
        optional_ready(&s.gateways, Kind::Gateway, optional).await?;
        optional_ready(&s.http_routes, Kind::HttpRoute, optional).await?;
        optional_ready(&s.grpc_routes, Kind::GrpcRoute, optional).await?;
        optional_ready(&s.tls_routes, Kind::TlsRoute, optional).await?;
        optional_ready(&s.backend_tls_policies, Kind::BackendTlsPolicy, optional).await?;
        optional_ready(&s.reference_grants, Kind::ReferenceGrant, optional).await
    }

    /// Whether [`KubeSource::wait_ready`] would resolve now (for `/readyz`).
    pub fn is_ready(&self) -> bool {
        matches!(self.wait_ready().now_or_never(), Some(Ok(())))
    }

    /// Whether the IngressClassParams CRD answered 404 on the last attempt.
    pub fn class_params_crd_missing(&self) -> bool {
        self.optional.borrow().absent & Kind::IngressClassParams.optional_bit() != 0
    }

    /// The Gateway API kinds whose CRD answered 404 on the last attempt (in
    /// [`Kind::GATEWAY_API`] order): all seven on a cluster without the Gateway API.
    pub fn gateway_api_crds_missing(&self) -> Vec<Kind> {
        let absent = self.optional.borrow().absent;
        Kind::GATEWAY_API
            .into_iter()
            .filter(|k| absent & k.optional_bit() != 0)
            .collect()
    }

    /// The change signal. `changed().await` wakes on every applied event; the value carries
    /// the count and the time of the newest change.
    pub fn changes(&self) -> watch::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Bumps the change signal without a store change, to make the rebuild loop run (and
    /// publish) again, e.g. when this replica has just become leader.
    pub(crate) fn poke(&self) {
        bump(&self.changes);
    }

    /// Every object in the stores, shared with them (the `Arc`s the stores hold, no object
    /// copied), in no particular order (the model's output does not depend on it; sorting
    /// 10 000s of objects by name would cost more than taking them). A Secret both of type
    /// TLS and labelled backend-CA appears once.
    ///
    /// A kind whose store took no change since the last snapshot is the last snapshot's list
    /// again (one reference count): at 10 000 Ingresses, reading every store anew took ~0.9 ms,
    /// most of it cache misses on 32 000 objects' reference counts, on the path of every
    /// EndpointSlice change. A store's revision is read before the store, so a change that
    /// lands in between is read now and again next time, never missed.
    pub fn snapshot(&self) -> Snapshot {
        let s = &self.stores;
        let r = &*self.revisions;
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let t = &mut *taken;
        // The Secret stores make one list. Each revision only grows, so their sum moves
        // whenever one of them does.
        let secrets = [
            Kind::TlsSecret,
            Kind::BackendCaSecret,
            Kind::BasicAuthSecret,
            Kind::DefaultCertificate,
        ]
        .into_iter()
        .map(|kind| r.of(kind))
        .sum();
        Snapshot {
            ingresses: t.ingresses.get(r.of(Kind::Ingress), || s.ingresses.state()),
            classes: t
                .classes
                .get(r.of(Kind::IngressClass), || s.classes.state()),
            secrets: t.secrets.get(secrets, || self.secrets()),
            services: t.services.get(r.of(Kind::Service), || s.services.state()),
            endpoint_slices: t
                .endpoint_slices
                .get(r.of(Kind::EndpointSlice), || s.endpoint_slices.state()),
            class_params: t
                .class_params
                .get(r.of(Kind::IngressClassParams), || s.class_params.state()),
            cert_files: Objects::default(),
            gateway_classes: t
                .gateway_classes
                .get(r.of(Kind::GatewayClass), || s.gateway_classes.state()),
            gateways: t.gateways.get(r.of(Kind::Gateway), || s.gateways.state()),
            http_routes: t
                .http_routes
                .get(r.of(Kind::HttpRoute), || s.http_routes.state()),
            // Not watched with --watch-namespace: none (see `KubeSource::start`).
            namespaces: t.namespaces.get(r.of(Kind::Namespace), || {
                s.namespaces.as_ref().map(Store::state).unwrap_or_default()
            }),
            grpc_routes: t
                .grpc_routes
                .get(r.of(Kind::GrpcRoute), || s.grpc_routes.state()),
            tls_routes: t
                .tls_routes
                .get(r.of(Kind::TlsRoute), || s.tls_routes.state()),
            backend_tls_policies: t
                .backend_tls_policies
                .get(r.of(Kind::BackendTlsPolicy), || {
                    s.backend_tls_policies.state()
                }),
            reference_grants: t
                .reference_grants
                .get(r.of(Kind::ReferenceGrant), || s.reference_grants.state()),
            config_maps: t
                .config_maps
                .get(r.of(Kind::ConfigMap), || s.config_maps.state()),
            diagnostics: Vec::new(),
        }
    }

    /// The Secrets of every Secret store, each once.
    fn secrets(&self) -> Vec<Arc<Secret>> {
        let s = &self.stores;
        let mut secrets = s.tls_secrets.state();
        // The basic-auth copy first: it keeps every key, so it wins over a stripped one.
        let mut more = s.auth_secrets.state();
        more.extend(s.ca_secrets.state());
        if let Some(store) = &s.default_certificate {
            more.extend(store.state());
        }
        if !more.is_empty() {
            // Of a Secret held by two stores, the first store's copy stays.
            let mut seen: HashSet<(Option<&str>, Option<&str>)> =
                secrets.iter().map(|o| key_of(&**o)).collect();
            let extra: Vec<Arc<Secret>> = more
                .iter()
                .filter(|o| seen.insert(key_of(&***o)))
                .cloned()
                .collect();
            drop(seen);
            secrets.extend(extra);
        }
        secrets
    }

    /// The `--publish-service` Service, if configured and it exists.
    pub(crate) fn publish_service(&self) -> Option<Arc<Service>> {
        let store = self.stores.publish_service.as_ref()?;
        store.state().into_iter().next()
    }

    /// The Ingress `namespace/name` as the store has it now (with its current status).
    pub(crate) fn ingress(&self, namespace: &str, name: &str) -> Option<Arc<Ingress>> {
        self.stores
            .ingresses
            .get(&reflector::ObjectRef::new(name).within(namespace))
    }

    /// The `metadata.uid` of a stored object, so Events can name exactly that object.
    pub(crate) fn uid(&self, object: &ObjectRef) -> Option<String> {
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
                .or_else(|| uid_in(&s.auth_secrets, ns, &object.name))
                .or_else(|| {
                    let store = s.default_certificate.as_ref()?;
                    uid_in(store, ns, &object.name)
                }),
            "GatewayClass" => uid_in(&s.gateway_classes, None, &object.name),
            "Gateway" => uid_in(&s.gateways, ns, &object.name),
            "HTTPRoute" => uid_in(&s.http_routes, ns, &object.name),
            "GRPCRoute" => uid_in(&s.grpc_routes, ns, &object.name),
            "TLSRoute" => uid_in(&s.tls_routes, ns, &object.name),
            "BackendTLSPolicy" => uid_in(&s.backend_tls_policies, ns, &object.name),
            "ReferenceGrant" => uid_in(&s.reference_grants, ns, &object.name),
            "ConfigMap" => uid_in(&s.config_maps, ns, &object.name),
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

// === impl StoreFeed ===

/// The write side of [`KubeSource::fed`]: each kind's store [`Writer`], fed by hand with the
/// watcher events a reflector would apply, instead of by a watcher on an API server. For
/// benchmarks and tests that need the cluster path (stores → change signal → snapshot) without
/// an API server.
pub struct StoreFeed {
    pub ingresses: FedStore<Ingress>,
    pub classes: FedStore<IngressClass>,
    pub services: FedStore<Service>,
    pub endpoint_slices: FedStore<EndpointSlice>,
    pub class_params: FedStore<IngressClassParams>,
    pub tls_secrets: FedStore<Secret>,
    pub ca_secrets: FedStore<Secret>,
    pub auth_secrets: FedStore<Secret>,
    pub gateway_classes: FedStore<GatewayClass>,
    pub gateways: FedStore<Gateway>,
    pub http_routes: FedStore<HTTPRoute>,
    pub grpc_routes: FedStore<GRPCRoute>,
    pub tls_routes: FedStore<TLSRoute>,
    pub backend_tls_policies: FedStore<BackendTLSPolicy>,
    pub reference_grants: FedStore<ReferenceGrant>,
    pub config_maps: FedStore<ConfigMap>,
    pub namespaces: FedStore<Namespace>,
}

impl StoreFeed {
    /// Every Gateway API kind answers 404, as on a cluster without the Gateway API CRDs: the
    /// seven stores count as listed and empty for the ready gate.
    pub fn without_gateway_api(&mut self) {
        self.gateway_classes.crd_missing();
        self.gateways.crd_missing();
        self.http_routes.crd_missing();
        self.grpc_routes.crd_missing();
        self.tls_routes.crd_missing();
        self.backend_tls_policies.crd_missing();
        self.reference_grants.crd_missing();
    }
}

/// One store of a [`StoreFeed`].
pub struct FedStore<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    kind: Kind,
    writer: Writer<K>,
    signal: Signal,
}

impl<K> FedStore<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    /// Applies `event` to the store and signals the change, as the reflector task does with
    /// each event of its watcher (objects are expected stripped, as `.modify()` does there).
    pub fn apply(&mut self, event: &watcher::Event<K>) {
        self.writer.apply_watcher_event(event);
        applied(self.kind, event, &self.signal);
    }

    /// A complete (re-)list of `objects`: `Init`, one `InitApply` each, `InitDone`.
    pub fn list(&mut self, objects: impl IntoIterator<Item = K>) {
        self.apply(&watcher::Event::Init);
        for object in objects {
            self.apply(&watcher::Event::InitApply(object));
        }
        self.apply(&watcher::Event::InitDone);
    }

    /// The list answered 404, as the reflector task reports it: for a kind whose CRD is
    /// optional (IngressClassParams, Gateway API), the CRD is not installed.
    pub fn crd_missing(&mut self) {
        crd_missing(self.kind, &self.signal.optional);
    }
}

impl KubeSource {
    /// A source whose stores are fed by hand through the returned [`StoreFeed`] rather than by
    /// watchers: the same stores, ready gate, change signal and snapshot as
    /// [`KubeSource::start`], without a client. No `--publish-service` or separate
    /// `--default-certificate` store.
    pub fn fed() -> (KubeSource, StoreFeed) {
        let (changes, _) = watch::channel(Change::default());
        let (optional_tx, optional) = watch::channel(Optional::default());
        let signal = Signal {
            changes: Arc::new(changes),
            revisions: Arc::default(),
            optional: Arc::new(optional_tx),
        };
        fn store<K>(kind: Kind, signal: &Signal) -> (Store<K>, FedStore<K>)
        where
            K: Resource<DynamicType = ()> + Clone + 'static,
        {
            let (store, writer) = reflector::store();
            let fed = FedStore {
                kind,
                writer,
                signal: signal.clone(),
            };
            (store, fed)
        }
        let (ingresses, fed_ingresses) = store(Kind::Ingress, &signal);
        let (classes, fed_classes) = store(Kind::IngressClass, &signal);
        let (services, fed_services) = store(Kind::Service, &signal);
        let (endpoint_slices, fed_slices) = store(Kind::EndpointSlice, &signal);
        let (class_params, fed_params) = store(Kind::IngressClassParams, &signal);
        let (tls_secrets, fed_tls) = store(Kind::TlsSecret, &signal);
        let (ca_secrets, fed_ca) = store(Kind::BackendCaSecret, &signal);
        let (auth_secrets, fed_auth) = store(Kind::BasicAuthSecret, &signal);
        let (gateway_classes, fed_gateway_classes) = store(Kind::GatewayClass, &signal);
        let (gateways, fed_gateways) = store(Kind::Gateway, &signal);
        let (http_routes, fed_http_routes) = store(Kind::HttpRoute, &signal);
        let (grpc_routes, fed_grpc_routes) = store(Kind::GrpcRoute, &signal);
        let (tls_routes, fed_tls_routes) = store(Kind::TlsRoute, &signal);
        let (backend_tls_policies, fed_policies) = store(Kind::BackendTlsPolicy, &signal);
        let (reference_grants, fed_grants) = store(Kind::ReferenceGrant, &signal);
        let (config_maps, fed_config_maps) = store(Kind::ConfigMap, &signal);
        let (namespaces, fed_namespaces) = store(Kind::Namespace, &signal);
        let source = KubeSource {
            stores: Stores {
                ingresses,
                classes,
                services,
                endpoint_slices,
                class_params,
                tls_secrets,
                ca_secrets,
                auth_secrets,
                default_certificate: None,
                publish_service: None,
                gateway_classes,
                gateways,
                http_routes,
                grpc_routes,
                tls_routes,
                backend_tls_policies,
                reference_grants,
                config_maps,
                namespaces: Some(namespaces),
            },
            changes: signal.changes.clone(),
            revisions: signal.revisions.clone(),
            taken: Mutex::default(),
            optional,
            tasks: Vec::new(),
        };
        let feed = StoreFeed {
            ingresses: fed_ingresses,
            classes: fed_classes,
            services: fed_services,
            endpoint_slices: fed_slices,
            class_params: fed_params,
            tls_secrets: fed_tls,
            ca_secrets: fed_ca,
            auth_secrets: fed_auth,
            gateway_classes: fed_gateway_classes,
            gateways: fed_gateways,
            http_routes: fed_http_routes,
            grpc_routes: fed_grpc_routes,
            tls_routes: fed_tls_routes,
            backend_tls_policies: fed_policies,
            reference_grants: fed_grants,
            config_maps: fed_config_maps,
            namespaces: fed_namespaces,
        };
        (source, feed)
    }
}

// === impl ClusterSource ===

/// Cluster mode's [`Source`]: the reflector stores, plus the `--cert-dir` files when given.
///
/// The change signal stays 0 until every store has listed ([`KubeSource::wait_ready`]: no
/// table before that), then counts store events, `--cert-dir` changes and
/// [`KubeSource::poke`]s; a small task forwards them, touching no object. The objects are read
/// only when the rebuild loop pulls a [`Snapshot`], once per build.
pub struct ClusterSource {
    kube: Arc<KubeSource>,
    certs: Option<SnapshotSource>,
    changes: watch::Receiver<u64>,
    forward: JoinHandle<()>,
}

impl ClusterSource {
    /// Starts forwarding the change signals (on the current tokio runtime).
    pub fn new(kube: Arc<KubeSource>, certs: Option<SnapshotSource>) -> ClusterSource {
        let (tx, changes) = watch::channel(0u64);
        let forward = tokio::spawn(forward_changes(
            kube.clone(),
            certs.as_ref().map(Source::changes),
            tx,
        ));
        ClusterSource {
            kube,
            certs,
            changes,
            forward,
        }
    }
}

impl Source for ClusterSource {
    fn changes(&self) -> watch::Receiver<u64> {
        let mut changes = self.changes.clone();
        changes.mark_unchanged();
        changes
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        let mut snapshot = self.kube.snapshot();
        if let Some(certs) = &self.certs {
            let files = certs.snapshot();
            snapshot.cert_files = files.cert_files.clone();
            snapshot
                .diagnostics
                .extend(files.diagnostics.iter().cloned());
        }
        Arc::new(snapshot)
    }
}

impl Drop for ClusterSource {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

/// Generation 1 once every store has listed, then +1 per change of the stores or of the
/// `--cert-dir` files. Ends when the [`ClusterSource`] and its receivers are gone.
async fn forward_changes(
    kube: Arc<KubeSource>,
    mut certs: Option<watch::Receiver<u64>>,
    tx: watch::Sender<u64>,
) {
    tokio::select! {
        ready = kube.wait_ready() => if let Err(e) = ready {
            tracing::error!(error = %e, "the Kubernetes source stopped before it was ready");
            return;
        },
        () = tx.closed() => return,
    }
    // Subscribed before the first generation is sent: a change after this point is signalled
    // again, one before it is in the first snapshot, pulled after the loop sees generation 1.
    let mut changes = kube.changes();
    tx.send_replace(1);
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            changed = cert_files_changed(&mut certs) => if changed.is_err() {
                // The --cert-dir watcher stopped: its last files stay in every snapshot.
                certs = None;
                continue;
            },
            () = tx.closed() => return,
        }
        tx.send_modify(|generation| *generation += 1);
    }
}

async fn cert_files_changed(
    certs: &mut Option<watch::Receiver<u64>>,
) -> Result<(), watch::error::RecvError> {
    match certs {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
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

/// An object's namespace and name, borrowed.
fn key_of<K: Resource>(object: &K) -> (Option<&str>, Option<&str>) {
    let meta = object.meta();
    (meta.namespace.as_deref(), meta.name.as_deref())
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

/// [`ready`] for a kind whose CRD may be missing: also resolves while its last answer was 404.
async fn optional_ready<K>(
    store: &Store<K>,
    kind: Kind,
    optional: &watch::Receiver<Optional>,
) -> Result<(), SourceError>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let bit = kind.optional_bit();
    let mut optional = optional.clone();
    tokio::select! {
        result = ready(store, kind) => result,
        // The sender lives in the reflector tasks; it only closes if they are gone.
        result = optional.wait_for(|o| o.absent & bit != 0) => result
            .map(|_| ())
            .map_err(|_| SourceError::ReflectorStopped { kind }),
    }
}

/// How many changes each kind's store has taken (indexed by [`Kind`]). Bumped after the store
/// took the change and before the change signal, so a snapshot taken on that signal sees it.
#[derive(Debug, Default)]
struct Revisions([AtomicU64; Kind::COUNT]);

impl Revisions {
    fn bump(&self, kind: Kind) {
        self.0[kind as usize].fetch_add(1, Ordering::Release);
    }

    fn of(&self, kind: Kind) -> u64 {
        self.0[kind as usize].load(Ordering::Acquire)
    }
}

/// One kind's objects as the last snapshot took them, and the revision they were read at.
struct Kept<K> {
    revision: Option<u64>,
    objects: Objects<K>,
}

impl<K> Default for Kept<K> {
    fn default() -> Self {
        Kept {
            revision: None,
            objects: Objects::default(),
        }
    }
}

impl<K> Kept<K> {
    /// The objects at `revision`: those kept if they were read at it, else `read()`'s.
    fn get(&mut self, revision: u64, read: impl FnOnce() -> Vec<Arc<K>>) -> Objects<K> {
        if self.revision != Some(revision) {
            self.objects = read().into();
            self.revision = Some(revision);
        }
        self.objects.clone()
    }
}

/// The objects of [`KubeSource`]'s last snapshot, per kind of [`Snapshot`].
#[derive(Default)]
struct Taken {
    ingresses: Kept<Ingress>,
    classes: Kept<IngressClass>,
    secrets: Kept<Secret>,
    services: Kept<Service>,
    endpoint_slices: Kept<EndpointSlice>,
    class_params: Kept<IngressClassParams>,
    gateway_classes: Kept<GatewayClass>,
    gateways: Kept<Gateway>,
    http_routes: Kept<HTTPRoute>,
    grpc_routes: Kept<GRPCRoute>,
    tls_routes: Kept<TLSRoute>,
    backend_tls_policies: Kept<BackendTLSPolicy>,
    reference_grants: Kept<ReferenceGrant>,
    config_maps: Kept<ConfigMap>,
    namespaces: Kept<Namespace>,
}

fn bump(changes: &watch::Sender<Change>) {
    changes.send_modify(|c| {
        c.generation += 1;
        c.at = Some(Instant::now());
    });
}

// === reflector tasks ===

/// What a reflector task reports to the source.
#[derive(Clone)]
struct Signal {
    changes: Arc<watch::Sender<Change>>,
    revisions: Arc<Revisions>,
    optional: Arc<watch::Sender<Optional>>,
}

/// After `event` was applied to `kind`'s store: signal the change (an add, update or delete,
/// or a completed (re-)list; the events of a list in progress are not visible yet).
fn applied<K>(kind: Kind, event: &watcher::Event<K>, signal: &Signal) {
    match event {
        watcher::Event::Apply(_) | watcher::Event::Delete(_) => {
            signal.revisions.bump(kind);
            bump(&signal.changes);
        }
        watcher::Event::InitDone => {
            tracing::debug!(%kind, "listed");
            if kind.optional_bit() != 0 {
                signal.optional.send_if_modified(|o| {
                    let changed = o.listed(kind);
                    if let Some(change) = o.gateway_api_change() {
                        log_gateway_api(change);
                    }
                    changed
                });
            }
            signal.revisions.bump(kind);
            bump(&signal.changes);
        }
        watcher::Event::Init | watcher::Event::InitApply(_) => {}
    }
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
    let signal = signal.clone();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(strip)
        .reflect(writer);
    tasks.push(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => applied(kind, &event, &signal),
                Err(error) => report(kind, &error, &signal.optional),
            }
        }
        // The watcher stream is infinite and DefaultBackoff never gives up.
        tracing::error!(%kind, "watch stream ended; the store keeps its last objects");
    }));
    store
}

/// A kind whose CRD may be missing answered 404: record it, and log what changed.
fn crd_missing(kind: Kind, optional: &watch::Sender<Optional>) {
    optional.send_if_modified(|o| {
        let changed = o.missing(kind);
        if kind == Kind::IngressClassParams && changed {
            tracing::warn!(
                %kind,
                "the IngressClassParams CRD is not installed; serving without class \
                 parameters and retrying with back-off"
            );
        }
        if let Some(change) = o.gateway_api_change() {
            log_gateway_api(change);
        }
        changed
    });
}

/// Logs a watcher error; the back-off and the retry are the stream's.
fn report(kind: Kind, error: &watcher::Error, optional: &watch::Sender<Optional>) {
    let code = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.code),
        watcher::Error::WatchError(s) => Some(s.code),
        _ => None,
    };
    match code {
        Some(404) if kind.optional_bit() != 0 => crd_missing(kind, optional),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::source::{CertFile, snapshot_channel};

    const LONG: Duration = Duration::from_secs(5);

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some("apps".to_string()),
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        }
    }

    fn cert_files(paths: &[&str]) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            cert_files: paths
                .iter()
                .map(|p| {
                    Arc::new(CertFile {
                        path: p.to_string(),
                        pem: b"PEM".to_vec(),
                    })
                })
                .collect(),
            ..Snapshot::default()
        })
    }

    #[tokio::test]
    async fn cluster_source_is_ready_after_every_store_and_shares_their_objects() {
        let (kube, mut feed) = KubeSource::fed();
        let kube = Arc::new(kube);
        let (certs, cert_source) = snapshot_channel(Some(cert_files(&["/certs/a.pem"])));
        let source = ClusterSource::new(kube.clone(), Some(cert_source));
        let mut changes = source.changes();

        let secret = |name: &str| Secret {
            metadata: meta(name),
            ..Secret::default()
        };
        feed.ingresses.list([Ingress {
            metadata: meta("web"),
            ..Ingress::default()
        }]);
        feed.classes.list([]);
        feed.services.list([]);
        feed.endpoint_slices.list([]);
        feed.tls_secrets.list([secret("both"), secret("tls")]);
        feed.ca_secrets.list([secret("both"), secret("ca")]);
        feed.auth_secrets.list([]);
        feed.config_maps.list([]);
        feed.namespaces.list([]);
        feed.without_gateway_api();
        // Every store but IngressClassParams has listed (or is known absent): still not ready.
        assert!(
            tokio::time::timeout(
                Duration::from_millis(200),
                changes.wait_for(|generation| *generation > 0)
            )
            .await
            .is_err(),
            "ready before every store listed"
        );
        feed.class_params.list([]);
        tokio::time::timeout(LONG, changes.wait_for(|generation| *generation > 0))
            .await
            .expect("ready once every store listed")
            .expect("source alive");

        let first = source.snapshot();
        assert_eq!(first.ingresses.len(), 1);
        assert_eq!(first.cert_files.len(), 1);
        // A Secret in both stores once: the TLS store's.
        let mut names: Vec<_> = first
            .secrets
            .iter()
            .map(|s| s.metadata.name.as_deref().unwrap_or_default())
            .collect();
        names.sort();
        assert_eq!(names, ["both", "ca", "tls"]);
        let tls_both = kube
            .stores
            .tls_secrets
            .get(&reflector::ObjectRef::new("both").within("apps"))
            .expect("in the TLS store");
        let both = first
            .secrets
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some("both"))
            .expect("both");
        assert!(Arc::ptr_eq(both, &tls_both));

        // A store event is signalled; the objects it did not touch are the stores' own `Arc`s.
        changes.mark_unchanged();
        feed.services.apply(&watcher::Event::Apply(Service {
            metadata: meta("web"),
            ..Service::default()
        }));
        tokio::time::timeout(LONG, changes.changed())
            .await
            .expect("store change signalled")
            .expect("source alive");
        let second = source.snapshot();
        assert_eq!(second.services.len(), 1);
        assert!(Arc::ptr_eq(&first.ingresses[0], &second.ingresses[0]));

        // So is a --cert-dir change, whose files land in the next snapshot.
        changes.mark_unchanged();
        certs.send(cert_files(&["/certs/a.pem", "/certs/b.pem"]));
        tokio::time::timeout(LONG, changes.changed())
            .await
            .expect("cert-dir change signalled")
            .expect("source alive");
        assert_eq!(source.snapshot().cert_files.len(), 2);
    }

    #[test]
    fn a_snapshot_reads_again_only_the_stores_that_changed() {
        let (kube, mut feed) = KubeSource::fed();
        let secret = |name: &str| Secret {
            metadata: meta(name),
            ..Secret::default()
        };
        let slice = |name: &str, address: &str| EndpointSlice {
            metadata: meta(name),
            address_type: "IPv4".to_string(),
            endpoints: vec![k8s_openapi::api::discovery::v1::Endpoint {
                addresses: vec![address.to_string()],
                ..Default::default()
            }],
            ports: None,
        };
        feed.ingresses.list([Ingress {
            metadata: meta("web"),
            ..Ingress::default()
        }]);
        feed.classes.list([]);
        feed.services.list([]);
        feed.endpoint_slices.list([slice("web-1", "10.0.0.1")]);
        feed.tls_secrets.list([secret("tls")]);
        feed.ca_secrets.list([secret("ca")]);
        feed.auth_secrets.list([]);
        feed.class_params.list([]);
        feed.config_maps.list([]);
        feed.namespaces.list([]);
        feed.without_gateway_api();
        assert!(kube.is_ready());
        let same = |a: &Snapshot, b: &Snapshot| {
            [
                Arc::ptr_eq(&a.ingresses, &b.ingresses),
                Arc::ptr_eq(&a.classes, &b.classes),
                Arc::ptr_eq(&a.secrets, &b.secrets),
                Arc::ptr_eq(&a.services, &b.services),
                Arc::ptr_eq(&a.endpoint_slices, &b.endpoint_slices),
                Arc::ptr_eq(&a.class_params, &b.class_params),
                Arc::ptr_eq(&a.config_maps, &b.config_maps),
                Arc::ptr_eq(&a.namespaces, &b.namespaces),
                Arc::ptr_eq(&a.http_routes, &b.http_routes),
            ]
        };

        // Nothing changed (a poke is no store change): every kind is the same list.
        let first = kube.snapshot();
        kube.poke();
        let second = kube.snapshot();
        assert_eq!(same(&first, &second), [true; 9]);

        // An EndpointSlice changed: that kind is read again, every other is handed on.
        feed.endpoint_slices
            .apply(&watcher::Event::Apply(slice("web-1", "10.0.0.2")));
        let third = kube.snapshot();
        assert_eq!(
            same(&second, &third),
            [true, true, true, true, false, true, true, true, true]
        );
        let addresses = &third.endpoint_slices[0].endpoints[0].addresses;
        assert_eq!(addresses, &["10.0.0.2"]);

        // Any of the Secret stores changed: the merged Secrets are read again.
        feed.ca_secrets
            .apply(&watcher::Event::Apply(secret("ca-2")));
        let fourth = kube.snapshot();
        assert_eq!(
            same(&third, &fourth),
            [true, true, false, true, true, true, true, true, true]
        );
        assert_eq!(fourth.secrets.len(), 3);

        // A deletion, and a re-list, are changes too.
        feed.ingresses.apply(&watcher::Event::Delete(Ingress {
            metadata: meta("web"),
            ..Ingress::default()
        }));
        assert!(kube.snapshot().ingresses.is_empty());
        feed.ingresses.list([Ingress {
            metadata: meta("api"),
            ..Ingress::default()
        }]);
        assert_eq!(kube.snapshot().ingresses.len(), 1);
    }

    #[tokio::test]
    async fn gateway_api_kinds_gate_readiness_until_listed_or_missing() {
        let (kube, mut feed) = KubeSource::fed();
        feed.ingresses.list([]);
        feed.classes.list([]);
        feed.services.list([]);
        feed.endpoint_slices.list([]);
        feed.tls_secrets.list([]);
        feed.ca_secrets.list([]);
        feed.auth_secrets.list([]);
        feed.class_params.list([]);
        feed.config_maps.list([]);
        feed.namespaces.list([]);
        // Six Gateway API kinds listed, one neither listed nor missing: not ready.
        feed.gateway_classes.list([]);
        feed.gateways.list([]);
        feed.http_routes.list([]);
        feed.grpc_routes.list([]);
        feed.backend_tls_policies.list([]);
        feed.reference_grants.list([]);
        assert!(!kube.is_ready(), "ready before TLSRoute answered");
        // Its CRD is missing: ready without it, and said so.
        feed.tls_routes.crd_missing();
        assert!(kube.is_ready());
        assert_eq!(kube.gateway_api_crds_missing(), [Kind::TlsRoute]);
        // Installed later: listed, no longer missing, and its objects are in the snapshot.
        let mut route = TLSRoute::new("db", Default::default());
        route.metadata.namespace = Some("apps".to_string());
        feed.tls_routes.list([route]);
        assert!(kube.gateway_api_crds_missing().is_empty());
        assert_eq!(kube.snapshot().tls_routes.len(), 1);
    }

    #[test]
    fn the_gateway_api_state_is_logged_once_per_change_not_per_kind_or_retry() {
        let mut o = Optional::default();
        // Start-up without the CRDs: nothing until all seven answered, then one line.
        for kind in &Kind::GATEWAY_API[..6] {
            assert!(o.missing(*kind));
            assert_eq!(o.gateway_api_change(), None, "{kind}");
        }
        // IngressClassParams is not a Gateway API kind.
        o.missing(Kind::IngressClassParams);
        assert_eq!(o.gateway_api_change(), None);
        o.missing(Kind::ReferenceGrant);
        assert_eq!(o.gateway_api_change(), Some(GatewayApiCrds::Missing));
        // Every retry answers 404 again: nothing changes, nothing is logged.
        for kind in Kind::GATEWAY_API {
            assert!(!o.missing(kind));
            assert_eq!(o.gateway_api_change(), None);
        }
        // Installed: each kind found at its next retry; fewer missing, then none.
        o.listed(Kind::Gateway);
        assert!(matches!(
            o.gateway_api_change(),
            Some(GatewayApiCrds::Partial { fewer: true, .. })
        ));
        for kind in Kind::GATEWAY_API {
            o.listed(kind);
        }
        assert_eq!(o.gateway_api_change(), Some(GatewayApiCrds::Installed));
        assert_eq!(o.gateway_api_change(), None);

        // A cluster with every Gateway API CRD: nothing to say at start-up.
        let mut o = Optional::default();
        for kind in Kind::GATEWAY_API {
            o.listed(kind);
        }
        assert_eq!(o.gateway_api_change(), None);
        // Without one: that one named, as a warning (more missing than before).
        o.missing(Kind::TlsRoute);
        assert_eq!(
            o.gateway_api_change(),
            Some(GatewayApiCrds::Partial {
                missing: vec![Kind::TlsRoute],
                fewer: false
            })
        );
    }

    #[test]
    fn namespaces_keep_only_their_name_and_labels() {
        let mut namespace = Namespace {
            metadata: ObjectMeta {
                name: Some("apps".to_string()),
                labels: Some([("team".to_string(), "a".to_string())].into()),
                annotations: Some([(LAST_APPLIED_ANNOTATION.to_string(), "{}".to_string())].into()),
                uid: Some("uid-apps".to_string()),
                resource_version: Some("7".to_string()),
                finalizers: Some(vec!["kubernetes".to_string()]),
                ..ObjectMeta::default()
            },
            spec: Some(Default::default()),
            status: Some(k8s_openapi::api::core::v1::NamespaceStatus {
                phase: Some("Active".to_string()),
                ..Default::default()
            }),
        };
        strip_namespace(&mut namespace);
        assert_eq!(
            namespace,
            Namespace {
                metadata: ObjectMeta {
                    name: Some("apps".to_string()),
                    labels: Some([("team".to_string(), "a".to_string())].into()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            }
        );
    }

    #[tokio::test]
    async fn namespaces_gate_readiness_and_reach_the_snapshot() {
        let (kube, mut feed) = KubeSource::fed();
        feed.ingresses.list([]);
        feed.classes.list([]);
        feed.services.list([]);
        feed.endpoint_slices.list([]);
        feed.tls_secrets.list([]);
        feed.ca_secrets.list([]);
        feed.auth_secrets.list([]);
        feed.class_params.list([]);
        feed.config_maps.list([]);
        feed.without_gateway_api();
        assert!(!kube.is_ready(), "ready before the Namespaces listed");
        let mut apps = Namespace {
            metadata: ObjectMeta {
                name: Some("apps".to_string()),
                labels: Some([("team".to_string(), "a".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        strip_namespace(&mut apps);
        feed.namespaces.list([apps.clone()]);
        assert!(kube.is_ready());
        let snapshot = kube.snapshot();
        assert_eq!(snapshot.namespaces.len(), 1);
        assert_eq!(*snapshot.namespaces[0], apps);
    }

    #[test]
    fn config_maps_keep_only_the_ca_bundle() {
        let mut config_map = ConfigMap {
            metadata: meta("ca"),
            data: Some(
                [
                    ("ca.crt".to_string(), "PEM".to_string()),
                    ("app.properties".to_string(), "x".repeat(4096)),
                ]
                .into(),
            ),
            binary_data: Some(Default::default()),
            ..ConfigMap::default()
        };
        strip_config_map(&mut config_map);
        let keys: Vec<_> = config_map.data.as_ref().unwrap().keys().collect();
        assert_eq!(keys, ["ca.crt"]);
        assert_eq!(config_map.binary_data, None);
    }
}
