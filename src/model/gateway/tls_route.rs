//! TLSRoute → one pass-through plan: its host names (intersected with the TLS
//! listeners') routed by SNI to its backend, the bytes still encrypted.
//!
//! PROXY protocol, health checks and balancing come from the route's own `portcullis.io/`
//! annotations (`proxy-protocol: v1|v2`), as on a pass-through Ingress.

use super::attach::Attachment;
use super::references::References;
use super::{RouteOutcome, route_options};
use crate::gateway_api::TLSRoute;
use crate::model::ingress::{Field, GatewayExtras, HostRules, PathSpec, Plan};
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
    // One SNI host has one backend: the first usable weighted backendRef.
    let mut chosen = None;
    for (i, rule) in route.spec.rules.iter().enumerate() {
        for (k, reference) in rule.backend_refs.iter().enumerate() {
            if reference.weight.unwrap_or(1) <= 0 {
                continue;
            }
            if chosen.is_some() {
                diagnostics.push(Diagnostic::warning(
                    object.clone(),
                    Field::RouteBackend(i, k).to_string(),
                    Reason::UnsupportedValue,
                    "a pass-through host sends every connection to one backend (the first); this one is not used",
                ));
                continue;
            }
            match refs.backend(object, KIND, (i, k), reference) {
                Ok(spec) => chosen = Some(spec),
                Err(diagnostic) => {
                    outcome
                        .unresolved
                        .get_or_insert((diagnostic.reason, diagnostic.message.clone()));
                    diagnostics.push(*diagnostic);
                }
            }
        }
    }
    let Some(backend) = chosen else {
        // Nothing to splice to: the connection is refused (no TLS answer of ours would do).
        diagnostics.push(Diagnostic::error(
            object.clone(),
            "spec.rules",
            Reason::InvalidSpec,
            "no usable backendRef; not served",
        ));
        return outcome;
    };
    let field = backend.field;
    let path = PathSpec {
        path: PathMatch::prefix("/"),
        raw: "/".to_string(),
        backend,
        field,
        conditions: None,
        weighted: Vec::new(),
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
