//! Gateway API → the same [`Plan`]s an Ingress becomes, merged into the same virtual hosts.
//!
//! The steps, each in its own module:
//! 1. [`listeners`]: our GatewayClasses (`controllerName: portcullis.io/gateway-controller`),
//!    their Gateways, and each listener validated: protocol, TLS mode, certificate, hostname,
//!    which routes it lets in;
//! 2. [`attach`]: each route's `parentRefs` resolved to the listeners that accept it, and its
//!    hostnames intersected with theirs;
//! 3. [`http_route`] and [`tls_route`]: one plan per route rule (HTTPRoute: its matches,
//!    filters and backend; TLSRoute: its SNI host names and backend, in pass-through mode);
//!    [`references`] checks every cross-namespace reference against the ReferenceGrants and
//!    reads BackendTLSPolicies.
//!
//! Every object that is not served, and every part of one that is skipped, gets a diagnostic
//! naming the object and the field, as an Ingress does.

mod attach;
mod grpc_route;
mod http_route;
mod listeners;
mod references;
pub(super) mod status;
mod tls_route;

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use self::status::{ClassStatus, Condition, GatewayApiStatus, ParentStatus, RouteStatus};
use super::annotations::{self, IngressOptions, OptionDefaults, PREFIX};
use super::certs::Secrets;
use super::ingress::Plan;
use crate::gateway_api::{self, GRPCRoute, HTTPRoute, ParentReference, TLSRoute};
use crate::source::Snapshot;
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use crate::table::route::TlsMode;

/// The Gateway API objects of a snapshot, translated.
pub(super) struct Translated {
    /// Oldest route first (the spec's tie-break between routes: creation time, then
    /// namespace/name), each route's rules in order.
    pub(super) plans: Vec<Plan>,
    pub(super) status: GatewayApiStatus,
    /// The routes to keep as last good for the next build.
    pub(super) last_good: LastGoodRoutes,
}

/// What a route's translation says beyond its plans, for its status.
#[derive(Default)]
struct RouteOutcome {
    plans: Vec<Plan>,
    /// Why it is not served at all (`Accepted: False` on every parent).
    refused: Option<(Reason, String)>,
    /// A reference that does not resolve (`ResolvedRefs: False`).
    unresolved: Option<(Reason, String)>,
}

pub(super) fn translate(
    snapshot: &Snapshot,
    in_scope: &dyn Fn(Option<&str>) -> bool,
    previous: &LastGoodRoutes,
    secrets: &mut Secrets<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Translated {
    let mut status = GatewayApiStatus {
        classes: snapshot
            .gateway_classes
            .iter()
            .filter(|c| c.spec.controller_name == gateway_api::CONTROLLER_NAME)
            .filter_map(|c| {
                Some(ClassStatus {
                    name: c.metadata.name.clone()?,
                    generation: c.metadata.generation,
                    conditions: vec![Condition::yes(
                        "Accepted",
                        "Accepted",
                        "handled by Portcullis",
                    )],
                })
            })
            .collect(),
        ..GatewayApiStatus::default()
    };
    let mut plans = Vec::new();
    if status.classes.is_empty() || snapshot.gateways.is_empty() {
        return Translated {
            plans,
            status,
            last_good: LastGoodRoutes::default(),
        };
    }
    let refs = references::References::new(snapshot);
    let listeners =
        listeners::Listeners::new(snapshot, in_scope, &refs.grants, secrets, diagnostics);
    let mut run = Run {
        listeners: &listeners,
        refs: &refs,
        previous,
        next: LastGoodRoutes::default(),
        attached_slots: Vec::new(),
        status: &mut status,
        plans: &mut plans,
        diagnostics,
    };
    run.routes(&snapshot.http_routes, in_scope);
    run.routes(&snapshot.grpc_routes, in_scope);
    run.routes(&snapshot.tls_routes, in_scope);
    let (next, attached_slots) = (run.next, run.attached_slots);
    status.gateways = listeners.finish(&attached_slots);
    Translated {
        plans,
        status,
        last_good: next,
    }
}

/// What every route kind has, the same way: its metadata, parents and hostnames, and how its
/// last good version is kept (`route_kind!` below).
trait RouteKind: Sized {
    const KIND: &'static str;
    fn meta(&self) -> &ObjectMeta;
    fn parent_refs(&self) -> &[ParentReference];
    fn hostnames(&self) -> &[String];
    fn keep(route: &Arc<Self>) -> KeptRoute;
    fn kept(kept: &KeptRoute) -> Option<&Arc<Self>>;
}

/// Implements [`RouteKind`] for a route type whose spec has `parent_refs` and `hostnames`.
macro_rules! route_kind {
    ($route:ty, $kind:literal, $kept:ident) => {
        impl RouteKind for $route {
            const KIND: &'static str = $kind;
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn parent_refs(&self) -> &[ParentReference] {
                &self.spec.parent_refs
            }
            fn hostnames(&self) -> &[String] {
                &self.spec.hostnames
            }
            fn keep(route: &Arc<Self>) -> KeptRoute {
                KeptRoute::$kept(Arc::clone(route))
            }
            fn kept(kept: &KeptRoute) -> Option<&Arc<Self>> {
                match kept {
                    KeptRoute::$kept(route) => Some(route),
                    _ => None,
                }
            }
        }
    };
}

route_kind!(HTTPRoute, "HTTPRoute", Http);
route_kind!(GRPCRoute, "GRPCRoute", Grpc);
route_kind!(TLSRoute, "TLSRoute", Tls);

/// A route of any kind, as one translation handles it: its plans on the listeners that took
/// it.
trait Route: RouteKind {
    fn translate(
        &self,
        object: &ObjectRef,
        attached: &[&attach::Attachment],
        refs: &references::References<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> RouteOutcome;
}

impl Route for HTTPRoute {
    fn translate(
        &self,
        object: &ObjectRef,
        attached: &[&attach::Attachment],
        refs: &references::References<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> RouteOutcome {
        let like = http_route::HttpLike::http(self);
        http_route::plans(&like, object, attached, refs, diagnostics)
    }
}

impl Route for GRPCRoute {
    fn translate(
        &self,
        object: &ObjectRef,
        attached: &[&attach::Attachment],
        refs: &references::References<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> RouteOutcome {
        match grpc_route::as_http(self) {
            Ok(like) => http_route::plans(&like, object, attached, refs, diagnostics),
            Err((field, message)) => {
                diagnostics.push(Diagnostic::error(
                    object.clone(),
                    field,
                    Reason::InvalidSpec,
                    format!("{message}; not served"),
                ));
                RouteOutcome {
                    refused: Some((Reason::UnsupportedValue, message)),
                    ..RouteOutcome::default()
                }
            }
        }
    }
}

impl Route for TLSRoute {
    fn translate(
        &self,
        object: &ObjectRef,
        attached: &[&attach::Attachment],
        refs: &references::References<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> RouteOutcome {
        tls_route::plans(self, object, attached, refs, diagnostics)
    }
}

/// The last good version of a route, of its kind.
#[derive(Debug, Clone)]
pub(super) enum KeptRoute {
    Http(Arc<HTTPRoute>),
    Grpc(Arc<GRPCRoute>),
    Tls(Arc<TLSRoute>),
}

/// Routes that were served whole once, by kind/namespace/name: a later version refused for
/// what it asks (a bad annotation value, a filter we do not implement) leaves this one
/// serving, as an Ingress's last good version does.
pub(super) type LastGoodRoutes = super::FastMap<ObjectRef, KeptRoute>;

/// One translation in progress.
struct Run<'r, 'a> {
    listeners: &'r listeners::Listeners,
    refs: &'r references::References<'a>,
    previous: &'r LastGoodRoutes,
    next: LastGoodRoutes,
    attached_slots: Vec<(usize, usize)>,
    status: &'r mut GatewayApiStatus,
    plans: &'r mut Vec<Plan>,
    diagnostics: &'r mut Vec<Diagnostic>,
}

impl Run<'_, '_> {
    /// Every route of one kind, oldest first.
    fn routes<R: Route>(&mut self, routes: &[Arc<R>], in_scope: &dyn Fn(Option<&str>) -> bool) {
        let mut ours: Vec<&Arc<R>> = routes
            .iter()
            .filter(|r| r.meta().name.is_some() && in_scope(r.meta().namespace.as_deref()))
            .collect();
        ours.sort_by(|a, b| age_key(a.meta()).cmp(&age_key(b.meta())));
        for route in ours {
            self.route(route);
        }
    }

    fn route<R: Route>(&mut self, route: &Arc<R>) {
        let object = route_object(R::KIND, route.meta());
        let outcomes = attach::attach(
            &object,
            R::KIND,
            route.parent_refs(),
            route.hostnames(),
            self.listeners,
            self.diagnostics,
        );
        if outcomes.is_empty() {
            return; // none of its parents is ours
        }
        let attached: Vec<&attach::Attachment> = outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().ok())
            .flatten()
            .collect();
        let record = |run: &mut Self, outcome: &RouteOutcome, fell_back: bool| {
            record(
                run.status,
                &mut run.attached_slots,
                &object,
                route.meta(),
                route.parent_refs(),
                &outcomes,
                outcome,
                fell_back,
            );
        };
        if attached.is_empty() {
            record(self, &RouteOutcome::default(), false);
            return;
        }
        let serving: Vec<&attach::Attachment> = attached
            .iter()
            .copied()
            .filter(|a| a.listener.serves)
            .collect();
        if serving.is_empty() {
            // Attached only to listeners that serve nothing (an unusable certificate): counted
            // there, its references checked for its status, nothing served.
            let mut outcome = route.translate(&object, &attached, self.refs, self.diagnostics);
            outcome.plans.clear();
            record(self, &outcome, false);
            return;
        }
        let attached = serving;
        let outcome = route.translate(&object, &attached, self.refs, self.diagnostics);
        let kept = self.previous.get(&object).and_then(R::kept);
        let mut fell_back = false;
        let outcome = match (&outcome.refused, kept) {
            (None, _) => {
                self.next.insert(object.clone(), R::keep(route));
                outcome
            }
            (Some(_), Some(previous)) if !Arc::ptr_eq(previous, route) => {
                // Its last good version, on today's listeners and references; the refusal
                // stays reported (the diagnostics above) and shows in its status.
                let mut quiet = Vec::new();
                let again = previous.translate(&object, &attached, self.refs, &mut quiet);
                if again.refused.is_some() {
                    outcome
                } else {
                    self.diagnostics.push(Diagnostic::warning(
                        object.clone(),
                        "metadata",
                        Reason::LastGoodKept,
                        "serving the last good version of this route until it is fixed",
                    ));
                    self.next.insert(object.clone(), R::keep(previous));
                    fell_back = true;
                    RouteOutcome {
                        refused: outcome.refused,
                        ..again
                    }
                }
            }
            (Some(_), _) => outcome,
        };
        record(self, &outcome, fell_back);
        self.plans.extend(outcome.plans);
    }
}

fn route_object(kind: &str, meta: &ObjectMeta) -> ObjectRef {
    ObjectRef::namespaced(
        kind,
        namespace(meta),
        meta.name.as_deref().unwrap_or_default(),
    )
}

/// A route's status: per parent of ours, `Accepted` (attached, or why not) and `ResolvedRefs`;
/// and each listener that took it counts it in `attachedRoutes`. A route whose refused rules
/// were dropped while its others are served (`fell_back`: its last good version is served
/// instead) is `Accepted` and `PartiallyInvalid`, as the spec's "Drop Rule(s)" approach says.
#[allow(clippy::too_many_arguments)]
fn record(
    status: &mut GatewayApiStatus,
    attached_slots: &mut Vec<(usize, usize)>,
    object: &ObjectRef,
    meta: &ObjectMeta,
    parent_refs: &[ParentReference],
    outcomes: &[attach::ParentOutcome],
    outcome: &RouteOutcome,
    fell_back: bool,
) {
    // Some rules refused, the others served from this version.
    let dropped = match &outcome.refused {
        Some((_, message)) if !fell_back && !outcome.plans.is_empty() => Some(message),
        _ => None,
    };
    let mut parents = Vec::with_capacity(outcomes.len());
    for parent in outcomes {
        let mut partially = None;
        let accepted = match (&parent.result, &outcome.refused) {
            (Ok(attachments), Some(_)) if dropped.is_some() => {
                attached_slots.extend(attachments.iter().map(|a| a.listener.slot));
                partially = dropped.map(|message| {
                    // "The message for this condition MUST start with the prefix
                    // 'Dropped Rule'" (`RouteConditionPartiallyInvalid`).
                    Condition::yes(
                        "PartiallyInvalid",
                        "UnsupportedValue",
                        format!("Dropped Rule: {message}"),
                    )
                });
                Condition::yes("Accepted", "Accepted", "attached; some rules dropped")
            }
            (Err((reason, message)), _) | (Ok(_), Some((reason, message))) => {
                Condition::no("Accepted", status::route_reason(*reason), message.clone())
            }
            (Ok(attachments), None) => {
                attached_slots.extend(attachments.iter().map(|a| a.listener.slot));
                Condition::yes("Accepted", "Accepted", "attached")
            }
        };
        let resolved = match &outcome.unresolved {
            Some((reason, message)) => Condition::no(
                "ResolvedRefs",
                status::route_reason(*reason),
                message.clone(),
            ),
            None => Condition::yes("ResolvedRefs", "ResolvedRefs", "every reference resolves"),
        };
        parents.push(ParentStatus {
            parent_ref: parent_refs[parent.index].clone(),
            conditions: [accepted, resolved].into_iter().chain(partially).collect(),
        });
    }
    status.routes.push(RouteStatus {
        kind: object.kind.to_string(),
        namespace: namespace(meta).to_string(),
        name: meta.name.clone().unwrap_or_default(),
        generation: meta.generation,
        parents,
    });
}

/// The namespace of a Gateway API object (`default` when a manifest leaves it out).
fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or("default")
}

/// Precedence among routes: the oldest wins; a missing timestamp counts as newest.
fn age_key(meta: &ObjectMeta) -> impl Ord + '_ {
    let created = meta.creation_timestamp.as_ref();
    (
        created.is_none(),
        created,
        namespace(meta),
        meta.name.as_deref(),
    )
}

/// A route's options: its `portcullis.io/` annotations (health checks, load balancing,
/// PROXY protocol, access control...) read as on an Ingress, with the TLS mode and backend
/// protocol the route's kind implies (the `tls-mode` and `backend-protocol` annotations have
/// no say: the listener, the route kind and BackendTLSPolicy do).
/// Annotations of other prefixes are not ours on a Gateway API object and are not read.
/// A bad value is reported, and the route is refused (the outcome to return: no plans,
/// `Accepted: False`).
fn route_options(
    meta: &ObjectMeta,
    object: &ObjectRef,
    mode: TlsMode,
    grpc: bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<IngressOptions, RouteOutcome> {
    // What the route's kind decides is not the annotations' to change.
    let decided = [
        format!("{PREFIX}tls-mode"),
        format!("{PREFIX}backend-protocol"),
    ];
    let mut own: BTreeMap<String, String> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(key, _)| key.starts_with(PREFIX) && !decided.contains(key))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    own.insert(decided[0].clone(), mode.as_str().to_string());
    if grpc {
        own.insert(decided[1].clone(), "GRPC".to_string());
    }
    match annotations::parse(Some(&own), namespace(meta), &OptionDefaults::default()) {
        Ok(parsed) => {
            for warning in &parsed.warnings {
                diagnostics.push(super::annotation_diagnostic(
                    object,
                    warning,
                    Reason::InvalidAnnotation,
                ));
            }
            Ok(parsed.options)
        }
        Err(errors) => {
            for error in &errors {
                diagnostics.push(super::annotation_diagnostic(
                    object,
                    error,
                    Reason::InvalidAnnotation,
                ));
            }
            Err(RouteOutcome {
                refused: Some((
                    Reason::UnsupportedValue,
                    "a portcullis.io annotation has a bad value".to_string(),
                )),
                ..RouteOutcome::default()
            })
        }
    }
}
