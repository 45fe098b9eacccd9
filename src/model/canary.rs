//! Attaching canary Ingresses (`canary: "true"`) to the main Ingress's routes, as
//! ingress-nginx's "Canary" annotations describe it: a canary Ingress serves no host or path
//! of its own; each of its paths becomes the alternative upstream of the main Ingress's route
//! on the same host and path, and every other annotation is inherited from the main Ingress,
//! except `load-balance` and the session affinity ones ("Known Limitations: a maximum of one
//! canary ingress can be applied per Ingress rule").

use std::sync::Arc;

use super::backend::UpstreamPolicy;
use super::ingress::{HostRules, PathSpec, Plan};
use super::vhosts::Merge;
use crate::table::canary::Canary;
use crate::table::diagnostic::{Diagnostic, Reason};
use crate::table::policy::RoutePolicy;
use crate::table::route::{PathMatch, Route, TlsMode};

/// Whether `route` is the main route for the canary's `path`: the same path, or on a regex
/// host the path compiled from the same text.
fn same_path(route: &Route, path: &PathSpec) -> bool {
    match &route.path {
        PathMatch::Regex(r) => r.source() == path.raw,
        other => *other == path.path,
    }
}

impl Merge<'_, '_> {
    /// A canary's `spec.defaultBackend` is not used: a canary splits the main Ingress's
    /// paths only (a warning).
    pub(super) fn canary_default_backend(&mut self, plan: &Plan) {
        if let Some(backend) = &plan.default_backend {
            self.diagnostics.push(Diagnostic::warning(
                plan.object.clone(),
                backend.field.to_string(),
                Reason::Conflict,
                "canary: a canary Ingress splits its main Ingress's paths only; its default backend is not used",
            ));
        }
    }

    /// Attaches the canary `plan`'s paths for one host to the routes of that host's main
    /// Ingresses (`main`: the host's TLS mode and routes; `None` when no main Ingress serves
    /// the host). What cannot be attached is reported and not served: ingress-nginx has no
    /// server for a canary without a main Ingress either.
    pub(super) fn attach_canary(
        &mut self,
        plan: &Plan,
        rules: &HostRules,
        main: Option<(TlsMode, &mut Vec<Route>)>,
    ) {
        let Some(canary_rules) = &plan.options.canary else {
            return;
        };
        let routes = match main {
            Some((TlsMode::Passthrough, _)) => {
                self.diagnostics.push(Diagnostic::warning(
                    plan.object.clone(),
                    rules.field.to_string(),
                    Reason::Conflict,
                    format!(
                        "canary: host {} is pass-through, which routes connections, not requests; this canary is not served",
                        rules.host
                    ),
                ));
                return;
            }
            Some((_, routes)) => routes,
            None => {
                self.diagnostics.push(Diagnostic::warning(
                    plan.object.clone(),
                    rules.field.to_string(),
                    Reason::Conflict,
                    format!(
                        "canary: no main (non-canary) Ingress serves host {}; a canary only splits a main Ingress's traffic, so it is not served",
                        rules.host
                    ),
                ));
                return;
            }
        };
        for path in &rules.paths {
            let Some(route) = routes.iter_mut().find(|r| same_path(r, path)) else {
                self.diagnostics.push(Diagnostic::warning(
                    plan.object.clone(),
                    format!("{}.path", path.field),
                    Reason::Conflict,
                    format!(
                        "canary: no main Ingress serves {} path {} of host {}; this canary path is not served",
                        path.path.kind(),
                        path.path.path(),
                        rules.host
                    ),
                ));
                continue;
            };
            if let Some(existing) = &route.canary {
                self.diagnostics.push(Diagnostic::error(
                    plan.object.clone(),
                    format!("{}.path", path.field),
                    Reason::Conflict,
                    format!(
                        "canary: path {} of host {} already has the canary {} (one canary per path, as in ingress-nginx); this one is ignored",
                        path.path.path(),
                        rules.host,
                        existing.source
                    ),
                ));
                continue;
            }
            // The main route's protocol and health checks; the canary's own balancing.
            let policy = UpstreamPolicy {
                protocol: route.upstream.protocol.clone(),
                balance: plan.options.load_balance,
                health: route.upstream.health.clone(),
                proxy_protocol: route.upstream.proxy_protocol,
            };
            let Some(upstream) = self.backends.upstream(
                &path.backend.service,
                &policy,
                &plan.object,
                &path.backend.field,
                self.diagnostics,
            ) else {
                continue;
            };
            // Its own affinity, unless `affinity-canary-behavior: legacy` says canaries
            // ignore it.
            let affinity = plan.options.policy.affinity.clone();
            let policy = RoutePolicy::shared(RoutePolicy {
                affinity: affinity.filter(|a| a.canary_sticky),
                ..(*route.policy).clone()
            });
            route.canary = Some(Arc::new(Canary {
                rules: canary_rules.clone(),
                upstream,
                policy,
                source: plan.object.clone(),
            }));
        }
    }
}
