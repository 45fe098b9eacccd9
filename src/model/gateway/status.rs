//! The status Gateway API asks of its implementation, as the build found it: conditions with
//! the spec's types and reasons for every GatewayClass, Gateway (and listener) and route of
//! ours. Pure data; the leader writes it to the cluster (`cluster::gateway_status`), and the
//! admin API and `check` show it.

use serde::Serialize;

use crate::gateway_api::ParentReference;
use crate::table::diagnostic::Reason;

/// The Gateway API features this implementation claims, as GatewayClass `status.supportedFeatures`
/// lists them ("sorted in ascending alphabetical order"): the conformance suite reads them to
/// pick its tests when none are given. Only what is built and tested: the core of Gateway,
/// HTTPRoute and ReferenceGrant, the HTTPRoute extended features of docs/gateway-api.md, and
/// TLSRoute pass-through. Not claimed: GRPCRoute (served, over TLS and h2c, but not every one
/// of its conformance tests was checked), BackendTLSPolicy (its own status is not written),
/// mirrors, CORS, retries, listener ports other than 80 and 443.
pub const SUPPORTED_FEATURES: &[&str] = &[
    "Gateway",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendTimeout",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
    "TLSRoute",
];

/// Every Gateway API object of ours, with its conditions.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GatewayApiStatus {
    pub classes: Vec<ClassStatus>,
    pub gateways: Vec<GatewayStatus>,
    pub routes: Vec<RouteStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassStatus {
    pub name: String,
    /// `metadata.generation`, written back as `observedGeneration`.
    pub generation: Option<i64>,
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayStatus {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    /// `Accepted`, `Programmed`.
    pub conditions: Vec<Condition>,
    pub listeners: Vec<ListenerStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    /// Route kinds (group `gateway.networking.k8s.io`) the listener takes.
    pub supported_kinds: Vec<String>,
    pub attached_routes: i32,
    /// `Accepted`, `ResolvedRefs`, `Programmed`, `Conflicted`.
    pub conditions: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteStatus {
    /// `HTTPRoute` or `TLSRoute`.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    /// One per `parentRefs` entry that names a Gateway of ours.
    pub parents: Vec<ParentStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParentStatus {
    /// The `parentRefs` entry as the route wrote it.
    pub parent_ref: ParentReference,
    /// `Accepted`, `ResolvedRefs`.
    pub conditions: Vec<Condition>,
}

/// One condition: `type`, `status` (`True` / `False`), `reason`, `message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

impl Condition {
    pub(crate) fn yes(kind: &str, reason: &str, message: impl Into<String>) -> Condition {
        Condition {
            kind: kind.to_string(),
            status: true,
            reason: reason.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn no(kind: &str, reason: &str, message: impl Into<String>) -> Condition {
        Condition {
            kind: kind.to_string(),
            status: false,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// The spec's reason for a route's `Accepted: False` or `ResolvedRefs: False`, from the
/// diagnostic reason the model used.
pub(super) fn route_reason(reason: Reason) -> &'static str {
    match reason {
        Reason::NotAllowedByListeners => "NotAllowedByListeners",
        Reason::NoMatchingListenerHostname => "NoMatchingListenerHostname",
        Reason::NoMatchingParent => "NoMatchingParent",
        Reason::RefNotPermitted => "RefNotPermitted",
        Reason::InvalidKind => "InvalidKind",
        Reason::MissingService | Reason::MissingServicePort => "BackendNotFound",
        Reason::UnsupportedValue => "UnsupportedValue",
        Reason::Conflict => "NotAllowedByListeners",
        _ => "UnsupportedValue",
    }
}

impl GatewayApiStatus {
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty() && self.gateways.is_empty() && self.routes.is_empty()
    }

    /// A JSON object (`check --output json`, the admin `/table`) with these conditions added
    /// under `gateway_api`; unchanged when there are none, so Ingress-only output stays as it
    /// was.
    pub fn add_to_json(&self, json: String) -> String {
        if self.is_empty() {
            return json;
        }
        let Ok(mut value) = serde_json::from_str::<serde_json::Value>(&json) else {
            return json;
        };
        if let (Some(object), Ok(status)) = (value.as_object_mut(), serde_json::to_value(self)) {
            object.insert("gateway_api".to_string(), status);
        }
        serde_json::to_string_pretty(&value).unwrap_or(json)
    }

    /// Lines for `portcullis check`: each object of ours and its conditions, a condition that
    /// holds by its type, one that does not with its reason and message.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        if self.is_empty() {
            return out;
        }
        out.push_str("Gateway API:\n");
        for class in &self.classes {
            out.push_str(&format!(
                "  GatewayClass {}: {}\n",
                class.name,
                conditions_text(&class.conditions)
            ));
        }
        for gateway in &self.gateways {
            out.push_str(&format!(
                "  Gateway {}/{}: {}\n",
                gateway.namespace,
                gateway.name,
                conditions_text(&gateway.conditions)
            ));
            for listener in &gateway.listeners {
                out.push_str(&format!(
                    "    listener {} ({} attached): {}\n",
                    listener.name,
                    listener.attached_routes,
                    conditions_text(&listener.conditions)
                ));
            }
        }
        for route in &self.routes {
            for parent in &route.parents {
                let section = parent
                    .parent_ref
                    .section_name
                    .as_deref()
                    .map_or(String::new(), |s| format!(" listener {s}"));
                out.push_str(&format!(
                    "  {} {}/{} on Gateway {}{section}: {}\n",
                    route.kind,
                    route.namespace,
                    route.name,
                    parent.parent_ref.name,
                    conditions_text(&parent.conditions)
                ));
            }
        }
        out
    }
}

fn conditions_text(conditions: &[Condition]) -> String {
    conditions
        .iter()
        // `Conflicted: False` is the good state, not worth a word.
        .filter(|c| c.status && c.kind != "Conflicted")
        .map(|c| c.kind.clone())
        .chain(
            conditions
                .iter()
                .filter(|c| c.status == (c.kind == "Conflicted"))
                .map(|c| format!("{} {} ({}: {})", c.kind, c.status, c.reason, c.message)),
        )
        .collect::<Vec<_>>()
        .join(", ")
}
