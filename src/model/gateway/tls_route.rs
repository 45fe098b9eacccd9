//! TLSRoute → one pass-through plan: its host names (intersected with the TLS
//! listeners') routed by SNI to its backends (shared by weight, connection by connection),
//! the bytes still encrypted.
//!
//! PROXY protocol, health checks and balancing come from the route's own `portcullis.io/`
//! annotations (`proxy-protocol: v1|v2`), as on a pass-through Ingress.

use super::attach::Attachment;
use super::references::References;
use super::{RouteOutcome, route_options};
use crate::gateway_api::TLSRoute;
use crate::model::ingress::{BackendSpec, Field, GatewayExtras, HostRules, PathSpec, Plan};
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use crate::table::host::HostMatch;
use crate::table::route::{PathMatch, TlsMode};

const KIND: &str = "TLSRoute";

/// The plan of `route` on the TLS listeners that took it (`attached`, not empty).
pub(super) fn plans(
    route: &TLSRoute,
    object: &ObjectRef,
    attached: &[&Attachment],
    refs: &References<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> RouteOutcome {
    let mut outcome = RouteOutcome::default();
    let options = match route_options(
        &route.metadata,
        object,
        TlsMode::Passthrough,
        false,
        diagnostics,
    ) {
        Ok(options) => options,
        Err(refused) => return refused,
    };
    let mut hosts: Vec<HostMatch> = Vec::new();
    for host in attached.iter().flat_map(|a| &a.hosts) {
        if *host == HostMatch::Any {
            let message = "pass-through routes by SNI: the route or its listener needs a hostname";
            diagnostics.push(Diagnostic::error(
                object.clone(),
                "spec.hostnames",
                Reason::InvalidSpec,
                format!("{message}; not served"),
            ));
            outcome.refused = Some((Reason::UnsupportedValue, message.to_string()));
            return outcome;
        }
        if !hosts.contains(host) {
            hosts.push(host.clone());
        }
    }
    // The weighted backendRefs of every rule. An invalid one keeps its share, refused:
    // "Request rejections must respect weight; if an invalid backend is requested to have 80%
    // of requests, then 80% of requests must be rejected instead" (`TLSRouteRule`).
    let mut weighted: Vec<(BackendSpec, u32)> = Vec::new();
    for (i, rule) in route.spec.rules.iter().enumerate() {
        for (k, reference) in rule.backend_refs.iter().enumerate() {
            let weight = u32::try_from(reference.weight.unwrap_or(1)).unwrap_or(0);
            if weight == 0 {
                continue;
            }
            let unresolved = &mut outcome.unresolved;
            let share = refs.share(object, KIND, (i, k), reference, unresolved, diagnostics);
            weighted.push((share, weight));
        }
    }
    let Some(backend) = weighted
        .iter()
        .find(|(b, _)| !b.is_placeholder())
        .map(|(b, _)| b.clone())
    else {
        // Nothing to splice to: the connection is refused (no TLS answer of ours would do).
        diagnostics.push(Diagnostic::error(
            object.clone(),
            "spec.rules",
            Reason::InvalidSpec,
            "no usable backendRef; not served",
        ));
        return outcome;
    };
    if weighted.len() < 2 {
        weighted.clear();
    }
    let field = backend.field;
    let path = PathSpec {
        path: PathMatch::prefix("/"),
        raw: "/".to_string(),
        backend,
        field,
        conditions: None,
        weighted,
        port: None,
    };
    let host_rules = hosts
        .into_iter()
        .map(|host| HostRules {
            host,
            field: Field::RouteHostnames,
            paths: vec![path.clone()],
        })
        .collect();
    outcome.plans.push(Plan::from_route(
        object.clone(),
        options,
        host_rules,
        None,
        GatewayExtras::default(),
    ));
    outcome
}
