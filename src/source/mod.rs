//! Where objects come from. Both sources (the manifest directory in standalone mode, kube
//! reflectors in cluster mode) implement [`Source`]: a change signal, and a [`Snapshot`] of the
//! objects pulled on demand, so everything after them is one code path.
//!
//! A snapshot shares its objects (`Arc<K>`) with the source: the reflector stores in cluster
//! mode, the last parsed version of each file in standalone mode. Taking one copies pointers,
//! never objects, and the rebuild loop takes one only after its hold-off, not per change.

pub mod directory;
pub mod kubernetes;
pub mod yaml;

use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use tokio::sync::watch as signal;

use crate::crd::IngressClassParams;
use crate::gateway_api::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant, TLSRoute,
};
use crate::table::diagnostic::Diagnostic;

/// A file from `--cert-dir`: a PEM bundle (chain + key), or a `tls.crt`/`tls.key` pair joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFile {
    /// Path shown in diagnostics and `check` (for a pair, the `tls.crt` path).
    pub path: String,
    /// Certificate chain and private key PEM, concatenated.
    pub pem: Vec<u8>,
}

/// One kind's objects in a [`Snapshot`], shared as a whole: a source hands on a kind that did
/// not change since its last snapshot with one reference count, not one per object (at 10 000
/// Ingresses, taking every kind's objects anew cost ~0.9 ms of cache misses per snapshot).
pub type Objects<K> = Arc<[Arc<K>]>;

/// Every object the model reads, shared with the source that holds them. Order carries no
/// meaning: the model's output is the same for any permutation of these vectors.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ingresses: Objects<Ingress>,
    pub classes: Objects<IngressClass>,
    pub secrets: Objects<Secret>,
    pub services: Objects<Service>,
    pub endpoint_slices: Objects<EndpointSlice>,
    pub class_params: Objects<IngressClassParams>,
    pub cert_files: Objects<CertFile>,
    /// Gateway API (`docs/gateway-api.md`).
    pub gateway_classes: Objects<GatewayClass>,
    pub gateways: Objects<Gateway>,
    pub http_routes: Objects<HTTPRoute>,
    pub grpc_routes: Objects<GRPCRoute>,
    pub tls_routes: Objects<TLSRoute>,
    pub backend_tls_policies: Objects<BackendTLSPolicy>,
    pub reference_grants: Objects<ReferenceGrant>,
    /// ConfigMaps holding a BackendTLSPolicy's `ca.crt`.
    pub config_maps: Objects<ConfigMap>,
    /// Namespaces (their labels: a listener's `allowedRoutes.namespaces.selector`).
    pub namespaces: Objects<Namespace>,
    /// Problems the source itself found (a manifest that does not parse, an unreadable file);
    /// passed through to the build's diagnostics.
    pub diagnostics: Vec<Diagnostic>,
}

/// What the rebuild loop reads objects from: a change signal to wait on, and the objects,
/// pulled when the loop is ready to build (after its hold-off), not pushed per change.
pub trait Source: Send + Sync {
    /// The change signal: a generation that stays 0 until the source has a complete view
    /// (cluster mode: every store listed), nothing may be built before that; then bumped after
    /// every change, once [`Source::snapshot`] returns it. Each call is a new receiver that has
    /// seen the current generation. The sender goes away when the source stops.
    fn changes(&self) -> signal::Receiver<u64>;

    /// The objects now. Cheap: shares the objects with the source, copies none of them.
    fn snapshot(&self) -> Arc<Snapshot>;
}

impl<S: Source + ?Sized> Source for Box<S> {
    fn changes(&self) -> signal::Receiver<u64> {
        (**self).changes()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        (**self).snapshot()
    }
}

impl<S: Source + ?Sized> Source for Arc<S> {
    fn changes(&self) -> signal::Receiver<u64> {
        (**self).changes()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        (**self).snapshot()
    }
}

// === impl SnapshotSource ===

/// A [`Source`] fed with whole snapshots by its [`SnapshotSender`]: the manifest directory
/// watcher (whose snapshots share each file's parsed objects, so publishing one copies no
/// object), the `--cert-dir` watcher, tests and benchmarks.
#[derive(Clone)]
pub struct SnapshotSource {
    latest: Arc<ArcSwap<Snapshot>>,
    changes: signal::Receiver<u64>,
}

/// The feeding half of a [`SnapshotSource`].
pub struct SnapshotSender {
    latest: Arc<ArcSwap<Snapshot>>,
    changes: signal::Sender<u64>,
}

/// A source that is ready at once with `initial`, or, with `None`, not ready until the first
/// [`SnapshotSender::send`].
pub fn snapshot_channel(initial: Option<Arc<Snapshot>>) -> (SnapshotSender, SnapshotSource) {
    let generation = u64::from(initial.is_some());
    let latest = Arc::new(ArcSwap::new(initial.unwrap_or_default()));
    let (tx, rx) = signal::channel(generation);
    (
        SnapshotSender {
            latest: latest.clone(),
            changes: tx,
        },
        SnapshotSource {
            latest,
            changes: rx,
        },
    )
}

impl SnapshotSender {
    /// Makes `snapshot` the source's objects, then signals the change.
    pub fn send(&self, snapshot: Arc<Snapshot>) {
        self.latest.store(snapshot);
        self.changes.send_modify(|generation| *generation += 1);
    }

    /// Whether every [`SnapshotSource`] (and every change receiver) is gone.
    fn is_closed(&self) -> bool {
        self.changes.is_closed()
    }
}

impl Source for SnapshotSource {
    fn changes(&self) -> signal::Receiver<u64> {
        let mut changes = self.changes.clone();
        changes.mark_unchanged();
        changes
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.latest.load_full()
    }
}

// === impl Snapshot (as another class) ===

/// The pre-IngressClass way to name an Ingress's class.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks the cluster's default IngressClass: Ingresses without a class belong to it.
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

impl Snapshot {
    /// The snapshot as if the Ingresses of class `from` were of class `to`: what
    /// `portcullis check --as-class` builds, to judge another controller's Ingresses (`nginx`)
    /// before moving them. An Ingress is of class `from` when its `spec.ingressClassName` or,
    /// without one, its `kubernetes.io/ingress.class` annotation names `from`, or when it names
    /// no class at all and the IngressClass `from` is marked the cluster's default. The
    /// IngressClass `from` itself (another controller's, with that controller's parameters) is
    /// left out. Pure: rewritten Ingresses are copies, every other object is shared.
    pub fn with_class_as(&self, from: &str, to: &str) -> Snapshot {
        if from == to {
            return self.clone();
        }
        let from_is_default = self.classes.iter().any(|class| {
            class.metadata.name.as_deref() == Some(from)
                && class
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true")
        });
        let mut snapshot = self.clone();
        snapshot.classes = self
            .classes
            .iter()
            .filter(|class| class.metadata.name.as_deref() != Some(from))
            .cloned()
            .collect();
        let mut ingresses = self.ingresses.to_vec();
        for ingress in &mut ingresses {
            let named = ingress
                .spec
                .as_ref()
                .and_then(|s| s.ingress_class_name.as_deref());
            let legacy = ingress
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION))
                .map(String::as_str);
            let of_from = match (named, legacy) {
                (Some(name), _) => name == from,
                (None, Some(name)) => name == from,
                (None, None) => from_is_default,
            };
            if !of_from {
                continue;
            }
            let mut moved = Ingress::clone(ingress);
            moved
                .spec
                .get_or_insert_with(Default::default)
                .ingress_class_name = Some(to.to_string());
            if let Some(annotations) = moved.metadata.annotations.as_mut()
                && annotations.contains_key(LEGACY_CLASS_ANNOTATION)
            {
                annotations.insert(LEGACY_CLASS_ANNOTATION.to_string(), to.to_string());
            }
            *ingress = Arc::new(moved);
        }
        snapshot.ingresses = ingresses.into();
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::networking::v1::{IngressClassSpec, IngressSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn ingress(name: &str, class: Option<&str>, legacy: Option<&str>) -> Arc<Ingress> {
        Arc::new(Ingress {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some("shop".to_string()),
                annotations: legacy.map(|l| {
                    BTreeMap::from([(LEGACY_CLASS_ANNOTATION.to_string(), l.to_string())])
                }),
                ..ObjectMeta::default()
            },
            spec: Some(IngressSpec {
                ingress_class_name: class.map(str::to_string),
                ..IngressSpec::default()
            }),
            ..Ingress::default()
        })
    }

    fn class_of(snapshot: &Snapshot, name: &str) -> Option<String> {
        let ingress = snapshot
            .ingresses
            .iter()
            .find(|i| i.metadata.name.as_deref() == Some(name))?;
        ingress.spec.as_ref()?.ingress_class_name.clone()
    }

    #[test]
    fn as_class_moves_that_class_only() {
        let nginx = Arc::new(IngressClass {
            metadata: ObjectMeta {
                name: Some("nginx".to_string()),
                annotations: Some(BTreeMap::from([(
                    DEFAULT_CLASS_ANNOTATION.to_string(),
                    "true".to_string(),
                )])),
                ..ObjectMeta::default()
            },
            spec: Some(IngressClassSpec {
                controller: Some("k8s.io/ingress-nginx".to_string()),
                ..IngressClassSpec::default()
            }),
        });
        let snapshot = Snapshot {
            ingresses: vec![
                ingress("named", Some("nginx"), None),
                ingress("legacy", None, Some("nginx")),
                ingress("classless", None, None),
                ingress("other", Some("traefik"), None),
                ingress("legacy-other", None, Some("traefik")),
            ]
            .into(),
            classes: vec![nginx].into(),
            ..Snapshot::default()
        };
        let moved = snapshot.with_class_as("nginx", "portcullis");
        assert!(moved.classes.is_empty());
        for name in ["named", "legacy", "classless"] {
            assert_eq!(
                class_of(&moved, name).as_deref(),
                Some("portcullis"),
                "{name}"
            );
        }
        assert_eq!(class_of(&moved, "other").as_deref(), Some("traefik"));
        assert_eq!(class_of(&moved, "legacy-other"), None);
        // Untouched objects are shared, not copied.
        assert!(Arc::ptr_eq(&moved.ingresses[3], &snapshot.ingresses[3]));
        // The original is unchanged.
        assert_eq!(class_of(&snapshot, "named").as_deref(), Some("nginx"));
    }
}
