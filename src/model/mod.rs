//! The pure heart of Portcullis: `build(&Snapshot, &BuildSettings, &LastGood)` → `Built`.
//!
//! No I/O, no clock, no sockets: the same objects in any order give the same table and the
//! same diagnostics. A bad object yields diagnostics and drops only itself; an object that was
//! good before and is bad now keeps its last good version (carried in [`LastGood`]), except
//! an Ingress refused for an annotation (step 2), which is not served at all.
//!
//! The steps, each in its own module:
//! 1. [`class`]: which Ingresses are ours, and the IngressClassParams that shape them;
//! 2. annotations: first checked against [`annotation_catalog`] (one table of every
//!    ingress-nginx / HAProxy / `portcullis.io` key: implemented, alias or unsupported); an
//!    Ingress refused there is not served at all, not even its last good version (that would
//!    ignore the annotation that refused it). Then [`crate::model::annotations`] → options, or
//!    the Ingress's last good version when a value is bad;
//! 3. [`ingress`]: each Ingress validated into a plan (hosts, paths, backends, TLS entries);
//! 4. [`vhosts`]: plans merged oldest first into virtual hosts (conflicts, pass-through),
//!    with [`backend`] resolving Services to endpoints and [`certs`] Secrets to certificates.
//!
//! Between builds, a change of EndpointSlices alone is applied by [`EndpointIndex::update`]
//! (module `endpoints`; [`build_indexed`] gives the index): the changed Services' endpoints
//! resolved by the same [`backend`] code and stored into the live table's upstreams, with the
//! same result as a build.

pub mod annotations;

mod annotation_catalog;
mod backend;
mod basic_auth;
mod canary;
mod certs;
mod class;
mod client_auth;
mod endpoints;
mod gateway;

pub use endpoints::{EndpointIndex, EndpointUpdate};

pub use self::gateway::status::{
    ClassStatus, Condition, GatewayApiStatus, GatewayStatus, ListenerStatus, ParentStatus,
    RouteStatus, SUPPORTED_FEATURES,
};
mod ingress;
mod vhosts;

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use self::annotations::AnnotationError;
use crate::settings::BuildSettings;
use crate::source::Snapshot;
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason, Severity};
// The map behind the model's indexes (Services, Secrets, upstreams, hosts by name).
use crate::table::{self, FastMap, RouteTable};

/// The last good version of each object that was valid once, so that a later bad edit does
/// not take it out of service. Opaque to callers: pass the previous build's value back in.
#[derive(Debug, Clone, Default)]
pub struct LastGood {
    /// Ingresses whose annotations were valid, by namespace/name: the snapshot's own `Arc`s,
    /// shared, not copied. An Ingress that is no longer ours (deleted, or moved to another
    /// class) is dropped.
    ingresses: FastMap<(String, String), Arc<Ingress>>,
    /// Secrets that parsed, by namespace/name and use; kept while something references them.
    secrets: FastMap<certs::SecretKey, certs::GoodSecret>,
    /// Gateway API routes that were served whole, by kind/namespace/name.
    routes: gateway::LastGoodRoutes,
}

impl LastGood {
    /// How many Ingresses and Secrets have a last good version (for metrics and tests).
    pub fn len(&self) -> (usize, usize) {
        (self.ingresses.len(), self.secrets.len())
    }
}

/// The output of one build.
#[derive(Debug, Clone)]
pub struct Built {
    /// Shared with the proxy once live: swapping it in is a pointer copy, not a table copy.
    pub table: Arc<RouteTable>,
    /// Sorted, de-duplicated.
    pub diagnostics: Vec<Diagnostic>,
    pub last_good: LastGood,
    /// Every Ingress of our class in scope, valid or not, sorted: the objects whose status we
    /// own (and the only Ingresses a publisher may write to).
    pub ours: Vec<ObjectRef>,
    /// The status of every Gateway API object of ours (the leader writes it).
    pub gateway_api: GatewayApiStatus,
}

impl Built {
    /// The Ingresses of [`Built::ours`] refused for an annotation (docs/migrating.md):
    /// not served at all, so a publisher gives them no status address. They are exactly the
    /// objects of the error diagnostics with reason `UnsupportedAnnotation` or
    /// `UnknownAnnotation` (as warnings those reasons mean "served anyway").
    pub(crate) fn refused(&self) -> BTreeSet<&ObjectRef> {
        self.diagnostics
            .iter()
            .filter(|d| {
                d.severity == Severity::Error
                    && matches!(
                        d.reason,
                        Reason::UnsupportedAnnotation | Reason::UnknownAnnotation
                    )
            })
            .map(|d| &d.object)
            .collect()
    }
}

/// The namespace of an object; manifests without one mean `default`, as with kubectl.
fn namespace_of(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// Builds the routing table from a snapshot of objects. Reads the objects through their
/// `Arc`s; what it keeps of them (last good Ingresses) shares those `Arc`s.
pub fn build(snapshot: &Snapshot, settings: &BuildSettings, last_good: &LastGood) -> Built {
    build_indexed(snapshot, settings, last_good).0
}

/// [`build`], with the [`EndpointIndex`] that applies later EndpointSlice changes to the
/// built table without building again (the rebuild loop's way).
pub fn build_indexed(
    snapshot: &Snapshot,
    settings: &BuildSettings,
    last_good: &LastGood,
) -> (Built, EndpointIndex) {
    // Gateway API routes answer to their Gateway, not to an IngressClass: no class defaults,
    // pass-through allowed (the Gateway's owner opened a TLS listener for it).
    let gateway_policy = class::ClassPolicy::default();
    let mut diagnostics = snapshot.diagnostics.clone();
    let in_scope = |namespace: Option<&str>| {
        settings
            .watch_namespace
            .as_deref()
            .is_none_or(|watched| namespace.unwrap_or("default") == watched)
    };

    let classes = class::Classes::new(
        &snapshot.classes,
        &snapshot.class_params,
        settings,
        &mut diagnostics,
    );
    let mut backends =
        backend::Backends::new(&snapshot.services, &snapshot.endpoint_slices, in_scope);
    let mut secrets = certs::Secrets::new(&snapshot.secrets, &last_good.secrets, in_scope);
    let cert_dir = certs::cert_dir(&snapshot.cert_files, &mut diagnostics);

    // Ours, oldest first: creationTimestamp (missing ones last), then namespace/name.
    let mut ours: Vec<(&Arc<Ingress>, &class::ClassPolicy)> = snapshot
        .ingresses
        .iter()
        .filter(|i| i.metadata.name.is_some() && in_scope(Some(namespace_of(&i.metadata))))
        .filter_map(|i| Some((i, classes.select(i)?)))
        .collect();
    ours.sort_by(|(a, _), (b, _)| age_key(a).cmp(&age_key(b)));
    ours.dedup_by(|(a, _), (b, _)| {
        namespace_of(&a.metadata) == namespace_of(&b.metadata) && a.metadata.name == b.metadata.name
    });

    let mut our_refs: Vec<ObjectRef> = ours
        .iter()
        .map(|(i, _)| {
            ObjectRef::namespaced(
                "Ingress",
                namespace_of(&i.metadata),
                i.metadata.name.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    our_refs.sort();

    let mut next_ingresses = FastMap::with_capacity_and_hasher(ours.len(), Default::default());
    let mut plans = Vec::with_capacity(ours.len());
    for (ingress, policy) in ours {
        let namespace = namespace_of(&ingress.metadata);
        let name = ingress.metadata.name.as_deref().unwrap_or_default();
        let object = ObjectRef::namespaced("Ingress", namespace, name);
        let key = (namespace.to_string(), name.to_string());
        let previous = last_good.ingresses.get(&key);
        let review = annotation_catalog::review(
            &object,
            ingress.metadata.annotations.as_ref(),
            policy.unsupported_annotations,
        );
        let refused = review.refused;
        diagnostics.extend(review.diagnostics);
        let parsed = annotations::parse(
            ingress.metadata.annotations.as_ref(),
            namespace,
            &policy.defaults,
        );
        if refused {
            // Bad values are reported too, so that one round of fixes is enough.
            for error in parsed.err().into_iter().flatten() {
                diagnostics.push(annotation_diagnostic(
                    &object,
                    &error,
                    Reason::InvalidAnnotation,
                ));
            }
            // Not served, and its last good version is let go: that version lacks the
            // annotation that refused this one (an allow-list, say), so serving it would
            // ignore exactly what was asked for.
            continue;
        }
        let (serving, parsed) = match parsed {
            Ok(parsed) => {
                // The snapshot's `Arc`: the previous version, equal or not, is let go.
                next_ingresses.insert(key, Arc::clone(ingress));
                (&**ingress, parsed)
            }
            Err(errors) => {
                for error in &errors {
                    diagnostics.push(annotation_diagnostic(
                        &object,
                        error,
                        Reason::InvalidAnnotation,
                    ));
                }
                let Some(previous) = previous else {
                    continue; // never good: not served
                };
                // The last good version must pass the table under today's class policy too.
                let previous_review = annotation_catalog::review(
                    &object,
                    previous.metadata.annotations.as_ref(),
                    policy.unsupported_annotations,
                );
                if previous_review.refused {
                    continue;
                }
                let Ok(parsed) = annotations::parse(
                    previous.metadata.annotations.as_ref(),
                    namespace,
                    &policy.defaults,
                ) else {
                    continue; // the class defaults changed under it; nothing good to serve
                };
                diagnostics.push(Diagnostic::warning(
                    object.clone(),
                    "metadata.annotations",
                    Reason::LastGoodKept,
                    "serving the last good version of this Ingress until its annotations are fixed",
                ));
                next_ingresses.insert(key, previous.clone());
                (&**previous, parsed)
            }
        };
        for warning in &parsed.warnings {
            diagnostics.push(annotation_diagnostic(
                &object,
                warning,
                Reason::InvalidAnnotation,
            ));
        }
        let plan = ingress::plan(serving, object, parsed.options, &mut diagnostics);
        plans.push((plan, policy));
    }

    // Gateway API beside Ingress: a host an Ingress serves stays the Ingress's (Ingresses are
    // what a cluster ran first; a route takes a host over once its Ingress is gone).
    let mut route_plans = Vec::new();
    let gateway_api = gateway::translate(
        snapshot,
        &in_scope,
        &last_good.routes,
        &mut secrets,
        &mut diagnostics,
    );
    let gateway_last_good = gateway_api.last_good;
    // Indexed only when some route needs it: most clusters have Ingresses and no routes.
    let mut ingress_hosts: FastMap<&table::host::HostMatch, ()> = FastMap::default();
    if !gateway_api.plans.is_empty() {
        ingress_hosts.reserve(plans.len());
        ingress_hosts.extend(
            plans
                .iter()
                .flat_map(|(plan, _)| plan.hosts.iter().map(|rules| (&rules.host, ()))),
        );
    }
    for mut plan in gateway_api.plans {
        plan.hosts.retain(|rules| {
            let taken = ingress_hosts.contains_key(&rules.host);
            if taken {
                diagnostics.push(Diagnostic::error(
                    plan.object.clone(),
                    "spec.hostnames",
                    Reason::Conflict,
                    format!(
                        "host {} is served by an Ingress, which wins over Gateway API routes; this route is not served for it",
                        rules.host
                    ),
                ));
            }
            !taken
        });
        if !plan.hosts.is_empty() {
            route_plans.push((plan, &gateway_policy));
        }
    }
    // Gateway API wildcards match one or more labels of a `Host`.
    let deep_wildcards = route_plans
        .iter()
        .flat_map(|(plan, _)| &plan.hosts)
        .filter_map(|rules| match &rules.host {
            table::host::HostMatch::Wildcard(parent) => Some(parent.clone()),
            _ => None,
        })
        .collect();
    // An HTTPS listener without a hostname whose route has none either serves every name:
    // its certificate is the one a client with any other SNI gets, unless a default
    // certificate is configured.
    let listener_default = route_plans.iter().find_map(|(plan, _)| {
        let any = table::host::HostMatch::Any;
        plan.hosts
            .iter()
            .any(|rules| rules.host == any)
            .then_some(())?;
        let tls = plan.tls_for(&any)?;
        let namespace = tls
            .namespace
            .clone()
            .unwrap_or_else(|| plan.namespace.clone());
        Some((namespace, tls.secret_name.clone()))
    });
    plans.extend(route_plans);

    let vhosts = vhosts::Merge {
        backends: &mut backends,
        secrets: &mut secrets,
        cert_dir: &cert_dir,
        diagnostics: &mut diagnostics,
    }
    .run(&plans);
    // The largest of a build's transient memory (~1.7 KB per Ingress): gone before the
    // table's maps and the endpoint index are made. A build peaks inside the merge, so
    // this lowers the peak little (~1 MB at 10 000 Ingresses) but costs nothing.
    drop(plans);

    let primary = classes.primary();
    let default_certificate = settings
        .default_certificate
        .clone()
        .or_else(|| primary.default_certificate.clone())
        .or(listener_default)
        .and_then(|(namespace, name)| {
            let secret = ObjectRef::namespaced("Secret", &namespace, &name);
            secrets.certificate(&namespace, &name, &secret, "data", &mut diagnostics)
        });

    let mut table = RouteTable::new(
        vhosts,
        default_certificate,
        cert_dir,
        primary.settings.clone(),
    );
    table.set_deep_wildcards(deep_wildcards);
    diagnostics.sort();
    diagnostics.dedup();
    // Kept as long as the build is current: without the growth headroom.
    diagnostics.shrink_to_fit();
    let built = Built {
        table: Arc::new(table),
        diagnostics,
        last_good: LastGood {
            ingresses: next_ingresses,
            secrets: secrets.next,
            routes: gateway_last_good,
        },
        ours: our_refs,
        gateway_api: gateway_api.status,
    };
    (built, EndpointIndex::new(backends))
}

/// Precedence among Ingresses: the oldest wins; a missing timestamp counts as newest.
fn age_key(ingress: &Ingress) -> impl Ord + '_ {
    let created = ingress.metadata.creation_timestamp.as_ref();
    (
        created.is_none(),
        created,
        namespace_of(&ingress.metadata),
        ingress.metadata.name.as_deref(),
    )
}

fn annotation_diagnostic(
    object: &ObjectRef,
    error: &AnnotationError,
    reason: Reason,
) -> Diagnostic {
    let field = format!("metadata.annotations[\"{}\"]", error.key());
    match error {
        AnnotationError::InvalidValue { .. } => {
            Diagnostic::error(object.clone(), field, reason, error.to_string())
        }
        AnnotationError::Ignored { .. } => {
            Diagnostic::warning(object.clone(), field, reason, error.to_string())
        }
    }
}
