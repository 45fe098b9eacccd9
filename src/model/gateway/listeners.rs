//! Our Gateways' listeners, validated.
//!
//! Ports: Portcullis has one plain-HTTP listener and one TLS listener (`--http-port`,
//! `--https-port`; 80 and 443 behind the chart's Service). A Gateway listener is served on the
//! one its protocol needs, whatever its `port` says: `HTTP` on the plain one, `HTTPS` and
//! `TLS` on the TLS one. The `port` still selects listeners for a route's `parentRefs`.

use std::rc::Rc;

use super::namespace;
use super::references::Grants;
use super::status::{Condition, GatewayStatus, ListenerStatus};
use crate::gateway_api::{self, Gateway, LabelSelector, Listener as ListenerSpec};
use crate::model::certs::Secrets;
use crate::model::ingress::TlsSpec;
use crate::source::Snapshot;
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use crate::table::host::HostMatch;

/// What a listener does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Http,
    /// TLS terminated with the listener's certificate.
    Https,
    /// TLS passed through by SNI (`protocol: TLS`, `tls.mode: Passthrough`).
    TlsPassthrough,
}

/// Which namespaces' routes a listener lets in.
#[derive(Debug, Clone, PartialEq)]
enum From {
    Same,
    All,
    /// Namespaces whose labels match (`allowedRoutes.namespaces.selector`).
    Selector(LabelSelector),
}

/// One usable listener of one of our Gateways.
#[derive(Debug)]
pub(super) struct Listener {
    pub(super) gateway: ObjectRef,
    pub(super) name: String,
    pub(super) port: i32,
    pub(super) protocol: Protocol,
    /// `None`: every host name.
    pub(super) hostname: Option<HostMatch>,
    /// HTTPS: the certificate's Secret (namespace, name) and the field naming it.
    pub(super) certificate: Option<(String, String, String)>,
    from: From,
    /// Route kinds it lets in.
    kinds: Vec<String>,
    /// Where its status lives: (Gateway, listener) index in [`Listeners`].
    pub(super) slot: (usize, usize),
    /// `false`: its certificate cannot be used, so it serves nothing; routes still attach
    /// to it and are counted in its `attachedRoutes`, as GatewayWithAttachedRoutes expects
    /// of a listener with unresolved references.
    pub(super) serves: bool,
}

impl Listener {
    /// Does this listener let in a `kind` route from `route_namespace`?
    pub(super) fn admits(
        &self,
        kind: &str,
        route_namespace: &str,
        labels: &NamespaceLabels,
    ) -> Result<(), String> {
        if !self.kinds.iter().any(|k| k == kind) {
            return Err(format!(
                "listener {} of {} does not allow {kind} (allowedRoutes.kinds: {})",
                self.name,
                self.gateway,
                self.kinds.join(", ")
            ));
        }
        match &self.from {
            From::Same if self.gateway.namespace.as_deref() != Some(route_namespace) => {
                Err(format!(
                    "listener {} of {} allows routes from its own namespace only (allowedRoutes.namespaces.from: Same)",
                    self.name, self.gateway
                ))
            }
            From::Selector(selector) if !labels.selects(selector, route_namespace) => Err(format!(
                "listener {} of {} allows routes from namespaces its selector matches, and namespace {route_namespace}'s labels do not (allowedRoutes.namespaces.selector)",
                self.name, self.gateway
            )),
            _ => Ok(()),
        }
    }

    /// The listener's certificate as a TLS entry for `hosts` of a plan.
    pub(super) fn tls_spec(&self, hosts: Vec<HostMatch>) -> Option<TlsSpec> {
        let (namespace, name, field) = self.certificate.as_ref()?;
        Some(TlsSpec::listener(namespace, name, hosts, field.clone()))
    }
}

/// Every usable listener of every Gateway of our classes, and the status of every listener.
pub(super) struct Listeners {
    all: Vec<Rc<Listener>>,
    gateways: Vec<GatewayStatus>,
    namespace_labels: NamespaceLabels,
}

impl Listeners {
    pub(super) fn new(
        snapshot: &Snapshot,
        in_scope: &dyn Fn(Option<&str>) -> bool,
        grants: &Grants<'_>,
        secrets: &mut Secrets<'_>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Listeners {
        let classes: Vec<&str> = snapshot
            .gateway_classes
            .iter()
            .filter(|c| c.spec.controller_name == gateway_api::CONTROLLER_NAME)
            .filter_map(|c| c.metadata.name.as_deref())
            .collect();
        let mut ours: Vec<&Gateway> = snapshot
            .gateways
            .iter()
            .map(|g| &**g)
            .filter(|g| g.metadata.name.is_some())
            .filter(|g| in_scope(g.metadata.namespace.as_deref()))
            .filter(|g| classes.contains(&g.spec.gateway_class_name.as_str()))
            .collect();
        ours.sort_by(|a, b| super::age_key(&a.metadata).cmp(&super::age_key(&b.metadata)));
        let mut all = Vec::new();
        let mut gateways = Vec::with_capacity(ours.len());
        for gateway in ours {
            let name = gateway.metadata.name.as_deref().unwrap_or_default();
            let object = ObjectRef::namespaced("Gateway", namespace(&gateway.metadata), name);
            let conflicts = conflicts(&gateway.spec.listeners);
            // What the whole Gateway asks and we cannot do: none of its listeners is served.
            let unsupported = gateway_refusal(gateway);
            if let Some((field, reason, message)) = &unsupported {
                diagnostics.push(Diagnostic::error(
                    object.clone(),
                    *field,
                    *reason,
                    format!("{message}; the Gateway is not served"),
                ));
            }
            let mut statuses = Vec::with_capacity(gateway.spec.listeners.len());
            for (index, spec) in gateway.spec.listeners.iter().enumerate() {
                let field = format!("spec.listeners[{index}]");
                let slot = (gateways.len(), index);
                if let Some((_, _, message)) = &unsupported {
                    let refusal = Refusal {
                        reason: Reason::UnsupportedValue,
                        field,
                        message: message.clone(),
                        condition: ("Accepted", "UnsupportedValue"),
                        kinds: Vec::new(),
                    };
                    statuses.push(listener_status(spec, None, Some(&refusal)));
                    continue;
                }
                let checked = listener(gateway, &object, spec, &field, grants, secrets, slot);
                let (attachable, refusal) = match (checked, &conflicts[index]) {
                    (Err(refusal), _) => (None, Some(refusal)),
                    (Ok((listener, Some(certificate))), _) => (Some(listener), Some(certificate)),
                    (Ok((_, None)), Some((condition, message))) => {
                        let conflict = Refusal {
                            reason: Reason::Conflict,
                            field: field.clone(),
                            message: message.clone(),
                            condition: *condition,
                            kinds: Vec::new(),
                        };
                        (None, Some(conflict))
                    }
                    (Ok((listener, None)), None) => (Some(listener), None),
                };
                statuses.push(listener_status(spec, attachable.as_ref(), refusal.as_ref()));
                if let Some(listener) = attachable {
                    all.push(Rc::new(listener));
                }
                if let Some(refusal) = refusal {
                    diagnostics.push(Diagnostic::error(
                        object.clone(),
                        refusal.field,
                        refusal.reason,
                        format!("{}; listener {} not served", refusal.message, spec.name),
                    ));
                }
            }
            let served = statuses.iter().filter(|s| programmed(s)).count();
            let total = statuses.len();
            let (accepted, programmed) = match (served, total) {
                _ if let Some((_, reason, message)) = &unsupported => {
                    let why = if *reason == Reason::UnsupportedValue {
                        "Invalid"
                    } else {
                        "UnsupportedAddress"
                    };
                    (
                        Condition::no("Accepted", why, message.clone()),
                        Condition::no("Programmed", "Invalid", message.clone()),
                    )
                }
                (n, t) if n == t => (
                    Condition::yes("Accepted", "Accepted", "every listener is valid"),
                    Condition::yes("Programmed", "Programmed", "served by Portcullis"),
                ),
                (0, _) => (
                    Condition::no("Accepted", "ListenersNotValid", "no listener is valid"),
                    Condition::no("Programmed", "Invalid", "no listener is valid"),
                ),
                _ => (
                    Condition::yes(
                        "Accepted",
                        "ListenersNotValid",
                        format!("{} of {total} listeners are not valid", total - served),
                    ),
                    Condition::yes("Programmed", "Programmed", "the valid listeners are served"),
                ),
            };
            gateways.push(GatewayStatus {
                namespace: namespace(&gateway.metadata).to_string(),
                name: name.to_string(),
                generation: gateway.metadata.generation,
                conditions: vec![accepted, programmed],
                listeners: statuses,
            });
        }
        Listeners {
            all,
            gateways,
            namespace_labels: NamespaceLabels::new(snapshot),
        }
    }

    pub(super) fn namespace_labels(&self) -> &NamespaceLabels {
        &self.namespace_labels
    }

    /// Is Gateway `namespace/name` one of ours (whether or not any listener is served)?
    pub(super) fn is_ours(&self, namespace: &str, name: &str) -> bool {
        self.gateways
            .iter()
            .any(|g| g.namespace == namespace && g.name == name)
    }

    /// The Gateways' statuses, each listener with the number of routes attached to it.
    pub(super) fn finish(mut self, attached: &[(usize, usize)]) -> Vec<GatewayStatus> {
        for &(gateway, listener) in attached {
            if let Some(status) = self
                .gateways
                .get_mut(gateway)
                .and_then(|g| g.listeners.get_mut(listener))
            {
                status.attached_routes += 1;
            }
        }
        self.gateways
    }

    /// The listeners of Gateway `namespace/name`; empty when it is not one of ours.
    pub(super) fn of_gateway<'s>(
        &'s self,
        namespace: &'s str,
        name: &'s str,
    ) -> impl Iterator<Item = &'s Rc<Listener>> + 's {
        self.all.iter().filter(move |l| {
            l.gateway.namespace.as_deref() == Some(namespace) && l.gateway.name == name
        })
    }
}

/// What a Gateway asks as a whole that Portcullis cannot do (field, reason, message):
/// requested addresses (it has the address its Service gives it), or client certificate
/// validation (`spec.tls`: serving without it would let in clients it keeps out).
fn gateway_refusal(gateway: &Gateway) -> Option<(&'static str, Reason, String)> {
    if gateway
        .spec
        .addresses
        .as_ref()
        .is_some_and(|a| !a.is_empty())
    {
        return Some((
            "spec.addresses",
            Reason::NotAllowed,
            "requested addresses are not supported (the Gateway has the addresses of Portcullis's Service)".to_string(),
        ));
    }
    if gateway
        .spec
        .tls
        .as_ref()
        .is_some_and(|tls| !tls.is_null() && tls.as_object().is_none_or(|o| !o.is_empty()))
    {
        return Some((
            "spec.tls",
            Reason::UnsupportedValue,
            "Gateway-wide TLS settings (client certificate validation) are not supported"
                .to_string(),
        ));
    }
    None
}

/// Why a listener is not served: the diagnostic's reason, field and message, and the
/// spec's condition (`Accepted`, `ResolvedRefs` or `Conflicted`) and reason it sets.
struct Refusal {
    reason: Reason,
    field: String,
    message: String,
    condition: (&'static str, &'static str),
    /// The route kinds it would take (for `supportedKinds`).
    kinds: Vec<String>,
}

fn programmed(status: &ListenerStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.kind == "Programmed" && c.status)
}

/// The status of a listener that routes can attach to (`attachable`), refused (`refusal`), or
/// both (one whose only fault is its certificate): every condition good, or the one the
/// refusal names set to fail.
fn listener_status(
    spec: &ListenerSpec,
    attachable: Option<&Listener>,
    refusal: Option<&Refusal>,
) -> ListenerStatus {
    let kinds = match (refusal, attachable) {
        (Some(refusal), _) => refusal.kinds.clone(),
        (None, Some(listener)) => listener.kinds.clone(),
        (None, None) => Vec::new(),
    };
    let mut accepted = Condition::yes("Accepted", "Accepted", "listener is valid");
    let mut resolved = Condition::yes("ResolvedRefs", "ResolvedRefs", "every reference resolves");
    let mut conflicted = Condition::no("Conflicted", "NoConflicts", "no conflict");
    let mut programmed = Condition::yes("Programmed", "Programmed", "served by Portcullis");
    if let Some(refusal) = refusal {
        let (kind, reason) = refusal.condition;
        let message = refusal.message.clone();
        match kind {
            "Conflicted" => conflicted = Condition::yes(kind, reason, message.clone()),
            "ResolvedRefs" => resolved = Condition::no(kind, reason, message.clone()),
            _ => accepted = Condition::no("Accepted", reason, message.clone()),
        }
        programmed = Condition::no("Programmed", "Invalid", message);
    }
    ListenerStatus {
        name: spec.name.clone(),
        supported_kinds: kinds,
        attached_routes: 0,
        conditions: vec![accepted, resolved, conflicted, programmed],
    }
}

/// Listeners of one Gateway that cannot all be served: on one port, the plain HTTP listener
/// and a TLS one (`ProtocolConflict`), or two with the same protocol family and hostname
/// (`HostnameConflict`). Every listener of such a group is refused: which one the user meant
/// cannot be told.
fn conflicts(listeners: &[ListenerSpec]) -> Vec<Option<((&'static str, &'static str), String)>> {
    let family = |l: &ListenerSpec| l.protocol == "HTTP";
    let host = |l: &ListenerSpec| l.hostname.clone().unwrap_or_default().to_ascii_lowercase();
    listeners
        .iter()
        .enumerate()
        .map(|(i, a)| {
            listeners.iter().enumerate().find_map(|(j, b)| {
                if i == j || a.port != b.port {
                    return None;
                }
                if family(a) != family(b) {
                    return Some((
                        ("Conflicted", "ProtocolConflict"),
                        format!(
                            "listeners {} and {} share port {} with {} and {}",
                            a.name, b.name, a.port, a.protocol, b.protocol
                        ),
                    ));
                }
                (host(a) == host(b)).then(|| {
                    (
                        ("Conflicted", "HostnameConflict"),
                        format!(
                            "listeners {} and {} share port {} and hostname {:?}",
                            a.name,
                            b.name,
                            a.port,
                            host(a)
                        ),
                    )
                })
            })
        })
        .collect()
}

/// A listener checked: refused (`Err`), usable, or — when only its certificate is unusable —
/// a listener that routes attach to (and are counted by) but that serves nothing, with the
/// certificate's refusal beside it.
#[allow(clippy::too_many_arguments)]
fn listener(
    gateway: &Gateway,
    object: &ObjectRef,
    spec: &ListenerSpec,
    field: &str,
    grants: &Grants<'_>,
    secrets: &mut Secrets<'_>,
    slot: (usize, usize),
) -> Result<(Listener, Option<Refusal>), Refusal> {
    let refuse = |reason, at: &str, message: String, condition| Refusal {
        reason,
        field: format!("{field}{at}"),
        message,
        condition,
        kinds: Vec::new(),
    };
    let mode = spec.tls.as_ref().and_then(|t| t.mode.as_deref());
    let protocol = match (spec.protocol.as_str(), mode) {
        ("HTTP", _) => Protocol::Http,
        ("HTTPS", None | Some("Terminate")) => Protocol::Https,
        ("TLS", Some("Passthrough")) => Protocol::TlsPassthrough,
        ("TLS", _) => {
            return Err(refuse(
                Reason::UnsupportedProtocol,
                ".tls.mode",
                "a TLS listener is served in Passthrough mode only (terminate with an HTTPS listener)".into(),
                ("Accepted", "UnsupportedValue"),
            ));
        }
        ("HTTPS", Some(other)) => {
            return Err(refuse(
                Reason::UnsupportedProtocol,
                ".tls.mode",
                format!("HTTPS needs tls.mode Terminate, not {other:?}"),
                ("Accepted", "UnsupportedValue"),
            ));
        }
        (other, _) => {
            return Err(refuse(
                Reason::UnsupportedProtocol,
                ".protocol",
                format!("protocol {other:?} is not served (HTTP, HTTPS and TLS are)"),
                ("Accepted", "UnsupportedProtocol"),
            ));
        }
    };
    let hostname = match spec.hostname.as_deref() {
        None | Some("") => None,
        Some(host) => match HostMatch::parse(host) {
            Ok(host) => Some(host),
            Err(e) => {
                return Err(refuse(
                    Reason::InvalidSpec,
                    ".hostname",
                    e.to_string(),
                    ("Accepted", "UnsupportedValue"),
                ));
            }
        },
    };
    let allowed = spec.allowed_routes.as_ref();
    let from = match allowed
        .and_then(|a| a.namespaces.as_ref())
        .and_then(|n| n.from.as_deref())
    {
        None | Some("Same") => From::Same,
        Some("All") => From::All,
        Some("Selector") => {
            let namespaces = allowed.and_then(|a| a.namespaces.as_ref());
            match namespaces.and_then(|n| n.selector.clone()) {
                Some(selector) => match check_selector(&selector) {
                    Ok(()) => From::Selector(selector),
                    Err(message) => {
                        return Err(refuse(
                            Reason::InvalidSpec,
                            ".allowedRoutes.namespaces.selector",
                            message,
                            ("Accepted", "UnsupportedValue"),
                        ));
                    }
                },
                None => {
                    return Err(refuse(
                        Reason::InvalidSpec,
                        ".allowedRoutes.namespaces.selector",
                        "from: Selector needs a selector".into(),
                        ("Accepted", "UnsupportedValue"),
                    ));
                }
            }
        }
        Some(other) => {
            return Err(refuse(
                Reason::UnsupportedValue,
                ".allowedRoutes.namespaces.from",
                format!("{other:?} is not Same, All or Selector"),
                ("Accepted", "UnsupportedValue"),
            ));
        }
    };
    let default_kinds = match protocol {
        Protocol::Http | Protocol::Https => vec!["HTTPRoute".to_string(), "GRPCRoute".to_string()],
        Protocol::TlsPassthrough => vec!["TLSRoute".to_string()],
    };
    let kinds = match allowed.and_then(|a| a.kinds.as_ref()) {
        None => default_kinds,
        Some(listed) => {
            let mut kinds = Vec::new();
            let mut invalid = Vec::new();
            for (k, kind) in listed.iter().enumerate() {
                let group = kind.group.as_deref().unwrap_or(gateway_api::GROUP);
                if group == gateway_api::GROUP && default_kinds.contains(&kind.kind) {
                    kinds.push(kind.kind.clone());
                } else {
                    invalid.push((k, format!("{group}/{}", kind.kind)));
                }
            }
            // The spec: any kind it cannot serve makes ResolvedRefs False (InvalidRouteKinds);
            // the kinds it can still serve are listed, and served.
            if let Some((k, first)) = invalid.first() {
                let mut refusal = refuse(
                    Reason::InvalidKind,
                    &format!(".allowedRoutes.kinds[{k}]"),
                    format!(
                        "route kind {first} is not served on a {} listener",
                        spec.protocol
                    ),
                    ("ResolvedRefs", "InvalidRouteKinds"),
                );
                refusal.kinds = kinds;
                return Err(refusal);
            }
            kinds
        }
    };
    let (certificate, unusable) = match protocol {
        Protocol::Https => match certificate(gateway, spec, field, grants, secrets) {
            Ok(found) => (Some(found), None),
            Err(mut refusal) => {
                refusal.kinds = kinds.clone();
                (None, Some(refusal))
            }
        },
        Protocol::Http | Protocol::TlsPassthrough => (None, None),
    };
    let listener = Listener {
        gateway: object.clone(),
        name: spec.name.clone(),
        port: spec.port,
        protocol,
        hostname,
        certificate,
        from,
        kinds,
        slot,
        serves: unusable.is_none(),
    };
    Ok((listener, unusable))
}

/// An HTTPS listener's first `certificateRefs` entry: a Secret in the Gateway's namespace, or
/// in another one that grants it, holding a certificate and key that parse (or whose last good
/// version is still served: a Secret broken by an update does not take a listener down).
fn certificate(
    gateway: &Gateway,
    spec: &ListenerSpec,
    field: &str,
    grants: &Grants<'_>,
    secrets: &mut Secrets<'_>,
) -> Result<(String, String, String), Refusal> {
    let gateway_namespace = namespace(&gateway.metadata);
    let at = format!("{field}.tls.certificateRefs[0]");
    let refuse = |reason, field: String, message: String, condition| Refusal {
        reason,
        field,
        message,
        condition,
        kinds: Vec::new(),
    };
    let Some(reference) = spec.tls.as_ref().and_then(|t| t.certificate_refs.first()) else {
        return Err(refuse(
            Reason::InvalidCertificateRef,
            format!("{field}.tls.certificateRefs"),
            "an HTTPS listener needs a certificate (tls.certificateRefs)".into(),
            ("ResolvedRefs", "InvalidCertificateRef"),
        ));
    };
    let group = reference.group.as_deref().unwrap_or("");
    let kind = reference.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        return Err(refuse(
            Reason::InvalidCertificateRef,
            at,
            format!("{kind} (group {group:?}) is not a Secret"),
            ("ResolvedRefs", "InvalidCertificateRef"),
        ));
    }
    let secret_namespace = reference.namespace.as_deref().unwrap_or(gateway_namespace);
    if !grants.permit(
        gateway_api::GROUP,
        "Gateway",
        gateway_namespace,
        "",
        "Secret",
        secret_namespace,
        &reference.name,
    ) {
        return Err(refuse(
            Reason::RefNotPermitted,
            at,
            format!(
                "Secret {secret_namespace}/{} is in another namespace and no ReferenceGrant there lets Gateways of {gateway_namespace} use it",
                reference.name
            ),
            ("ResolvedRefs", "RefNotPermitted"),
        ));
    }
    if secrets.raw(secret_namespace, &reference.name).is_none() {
        return Err(refuse(
            Reason::InvalidCertificateRef,
            at,
            format!(
                "Secret {secret_namespace}/{} does not exist",
                reference.name
            ),
            ("ResolvedRefs", "InvalidCertificateRef"),
        ));
    }
    // GatewayInvalidTLSConfiguration: a malformed Secret is an InvalidCertificateRef.
    if let Some(problem) = secrets.certificate_problem(secret_namespace, &reference.name) {
        return Err(refuse(
            Reason::InvalidCertificateRef,
            at,
            format!("Secret {secret_namespace}/{}: {problem}", reference.name),
            ("ResolvedRefs", "InvalidCertificateRef"),
        ));
    }
    Ok((secret_namespace.to_string(), reference.name.clone(), at))
}

/// The labels of every namespace the snapshot holds, for `allowedRoutes.namespaces.selector`.
/// Every namespace also has `kubernetes.io/metadata.name: <name>`, as the API server sets it
/// (so a namespace the snapshot lacks, as a manifest directory may, still has that one).
pub(super) struct NamespaceLabels {
    labels: std::collections::HashMap<String, std::collections::BTreeMap<String, String>>,
}

const NAME_LABEL: &str = "kubernetes.io/metadata.name";

impl NamespaceLabels {
    pub(super) fn new(snapshot: &Snapshot) -> NamespaceLabels {
        NamespaceLabels {
            labels: snapshot
                .namespaces
                .iter()
                .filter_map(|n| {
                    Some((
                        n.metadata.name.clone()?,
                        n.metadata.labels.clone().unwrap_or_default(),
                    ))
                })
                .collect(),
        }
    }

    /// Does `selector` match namespace `namespace`'s labels (metav1.LabelSelector: every
    /// `matchLabels` pair and every `matchExpressions` requirement)?
    fn selects(&self, selector: &LabelSelector, namespace: &str) -> bool {
        let own = self.labels.get(namespace);
        let label = |key: &str| -> Option<&str> {
            if key == NAME_LABEL {
                return Some(namespace);
            }
            own.and_then(|l| l.get(key)).map(String::as_str)
        };
        let labels_hold = selector
            .match_labels
            .iter()
            .flatten()
            .all(|(k, v)| label(k) == Some(v.as_str()));
        labels_hold
            && selector.match_expressions.iter().flatten().all(|r| {
                let values = r.values.as_deref().unwrap_or_default();
                match r.operator.as_str() {
                    "In" => label(&r.key).is_some_and(|v| values.iter().any(|x| x == v)),
                    "NotIn" => label(&r.key).is_none_or(|v| !values.iter().any(|x| x == v)),
                    "Exists" => label(&r.key).is_some(),
                    "DoesNotExist" => label(&r.key).is_none(),
                    _ => false,
                }
            })
    }
}

/// A selector the API server would accept: known operators, values only where they belong.
fn check_selector(selector: &LabelSelector) -> Result<(), String> {
    for (e, r) in selector.match_expressions.iter().flatten().enumerate() {
        let has_values = r.values.as_ref().is_some_and(|v| !v.is_empty());
        match (r.operator.as_str(), has_values) {
            ("In" | "NotIn", true) | ("Exists" | "DoesNotExist", false) => {}
            (op @ ("In" | "NotIn"), false) => {
                return Err(format!("matchExpressions[{e}]: {op} needs values"));
            }
            (op @ ("Exists" | "DoesNotExist"), true) => {
                return Err(format!("matchExpressions[{e}]: {op} takes no values"));
            }
            (op, _) => return Err(format!("matchExpressions[{e}]: unknown operator {op:?}")),
        }
    }
    Ok(())
}
