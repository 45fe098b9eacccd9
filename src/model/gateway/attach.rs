//! A route's `parentRefs` → the listeners that take it, and the host names it is served on.

use std::rc::Rc;

use super::listeners::{Listener, Listeners};
use crate::gateway_api::{self, ParentReference};
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use crate::table::host::HostMatch;

/// A listener that took the route, and the route's host names on it.
pub(super) struct Attachment {
    pub(super) listener: Rc<Listener>,
    pub(super) hosts: Vec<HostMatch>,
}

/// What became of one `parentRefs` entry naming a Gateway of ours: the listeners that took
/// the route, or why none did (the diagnostic's reason and message).
pub(super) struct ParentOutcome {
    pub(super) index: usize,
    pub(super) result: Result<Vec<Attachment>, (Reason, String)>,
}

/// Resolves the `parent_refs` of route `object` (of `kind`, with `hostnames`) against our
/// listeners. A parent that is not one of our Gateways is left alone (another controller's);
/// for each one of ours, the listeners that took the route, or the spec's reason why none did
/// (also reported as a diagnostic).
pub(super) fn attach(
    object: &ObjectRef,
    kind: &str,
    parent_refs: &[ParentReference],
    hostnames: &[String],
    listeners: &Listeners,
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<ParentOutcome> {
    let route_namespace = object.namespace.as_deref().unwrap_or("default");
    let mut own_hosts = Vec::new();
    for (h, name) in hostnames.iter().enumerate() {
        match HostMatch::parse(name) {
            Ok(HostMatch::Any) | Err(_) => diagnostics.push(Diagnostic::error(
                object.clone(),
                format!("spec.hostnames[{h}]"),
                Reason::InvalidSpec,
                format!("{name:?} is not a host name; ignored"),
            )),
            Ok(host) => own_hosts.push(host),
        }
    }
    let mut outcomes = Vec::new();
    let mut taken: Vec<Rc<Listener>> = Vec::new();
    for (p, parent) in parent_refs.iter().enumerate() {
        let group = parent.group.as_deref().unwrap_or(gateway_api::GROUP);
        let parent_kind = parent.kind.as_deref().unwrap_or("Gateway");
        if group != gateway_api::GROUP || parent_kind != "Gateway" {
            continue; // a Service (mesh) or another implementation's parent
        }
        let namespace = parent.namespace.as_deref().unwrap_or(route_namespace);
        if !listeners.is_ours(namespace, &parent.name) {
            continue; // another controller's Gateway, or none
        }
        let result = attach_one(
            kind,
            route_namespace,
            namespace,
            parent,
            &own_hosts,
            !hostnames.is_empty(),
            listeners,
        );
        let result = match result {
            Ok(attachments) => {
                let fresh: Vec<Attachment> = attachments
                    .into_iter()
                    .filter(|a| !taken.iter().any(|t| Rc::ptr_eq(t, &a.listener)))
                    .collect();
                taken.extend(fresh.iter().map(|a| Rc::clone(&a.listener)));
                Ok(fresh)
            }
            Err((reason, message)) => {
                diagnostics.push(Diagnostic::error(
                    object.clone(),
                    format!("spec.parentRefs[{p}]"),
                    reason,
                    format!("{message}; not attached"),
                ));
                Err((reason, message))
            }
        };
        outcomes.push(ParentOutcome { index: p, result });
    }
    outcomes
}

/// One parent: the listeners of Gateway `namespace/parent.name` that take the route.
fn attach_one(
    kind: &str,
    route_namespace: &str,
    namespace: &str,
    parent: &ParentReference,
    own_hosts: &[HostMatch],
    has_hostnames: bool,
    listeners: &Listeners,
) -> Result<Vec<Attachment>, (Reason, String)> {
    let named: Vec<&Rc<Listener>> = listeners
        .of_gateway(namespace, &parent.name)
        .filter(|l| parent.section_name.as_deref().is_none_or(|s| s == l.name))
        .filter(|l| parent.port.is_none_or(|port| port == l.port))
        .collect();
    if named.is_empty() {
        return Err((
            Reason::NoMatchingParent,
            format!(
                "Gateway {namespace}/{} has no served listener with this sectionName/port",
                parent.name
            ),
        ));
    }
    let mut refusals = Vec::new();
    let admitting: Vec<&Rc<Listener>> = named
        .into_iter()
        .filter(
            |l| match l.admits(kind, route_namespace, listeners.namespace_labels()) {
                Ok(()) => true,
                Err(why) => {
                    refusals.push(why);
                    false
                }
            },
        )
        .collect();
    if admitting.is_empty() {
        return Err((Reason::NotAllowedByListeners, refusals.join("; ")));
    }
    let attachments: Vec<Attachment> = admitting
        .into_iter()
        .filter_map(|listener| {
            if has_hostnames && own_hosts.is_empty() {
                return None;
            }
            let hosts = intersect(listener.hostname.as_ref(), own_hosts);
            (!hosts.is_empty()).then(|| Attachment {
                listener: Rc::clone(listener),
                hosts,
            })
        })
        .collect();
    if attachments.is_empty() {
        return Err((
            Reason::NoMatchingListenerHostname,
            format!(
                "no hostname of this route matches a listener hostname of Gateway {namespace}/{}",
                parent.name
            ),
        ));
    }
    Ok(attachments)
}

/// The route's host names on a listener (Gateway API "hostname matching"): the listener's
/// when the route has none, the route's when the listener has none, else each pair that
/// overlaps gives the more specific of the two. A wildcard `*.example.com` covers any name
/// ending in `.example.com`.
fn intersect(listener: Option<&HostMatch>, route: &[HostMatch]) -> Vec<HostMatch> {
    let Some(listener) = listener else {
        return if route.is_empty() {
            vec![HostMatch::Any]
        } else {
            route.to_vec()
        };
    };
    if route.is_empty() {
        return vec![listener.clone()];
    }
    let mut out: Vec<HostMatch> = Vec::new();
    for host in route {
        let overlap = match (listener, host) {
            (HostMatch::Any, host) => Some(host.clone()),
            (l, r) if l == r => Some(r.clone()),
            (HostMatch::Wildcard(parent), HostMatch::Exact(name)) => {
                covers(parent, name).then(|| host.clone())
            }
            (HostMatch::Exact(name), HostMatch::Wildcard(parent)) => {
                covers(parent, name).then(|| listener.clone())
            }
            (HostMatch::Wildcard(a), HostMatch::Wildcard(b)) => {
                if covers(a, b) {
                    Some(host.clone())
                } else if covers(b, a) {
                    Some(listener.clone())
                } else {
                    None
                }
            }
            _ => None,
        };
        if let Some(h) = overlap.filter(|h| !out.contains(h)) {
            out.push(h);
        }
    }
    out
}

/// Does `*.parent` cover `name` (any number of labels in front)?
fn covers(parent: &str, name: &str) -> bool {
    name.len() > parent.len() + 1
        && name.ends_with(parent)
        && name.as_bytes()[name.len() - parent.len() - 1] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> Vec<HostMatch> {
        list.iter().map(|h| HostMatch::parse(h).unwrap()).collect()
    }

    /// Gateway API's HTTPRoute `hostnames` doc and the conformance scenario
    /// HTTPRouteListenerHostnameMatching / HTTPRouteHostnameIntersection.
    #[test]
    fn hostnames_intersect_as_the_spec_says() {
        let listener = HostMatch::parse("*.example.com").unwrap();
        assert_eq!(
            intersect(
                Some(&listener),
                &hosts(&["foo.example.com", "foo.other.org", "a.b.example.com"])
            ),
            hosts(&["foo.example.com", "a.b.example.com"])
        );
        assert_eq!(intersect(Some(&listener), &hosts(&["example.com"])), vec![]);
        let exact = HostMatch::parse("very.specific.com").unwrap();
        assert_eq!(
            intersect(Some(&exact), &hosts(&["*.specific.com"])),
            hosts(&["very.specific.com"])
        );
        assert_eq!(intersect(Some(&exact), &[]), hosts(&["very.specific.com"]));
        assert_eq!(intersect(None, &[]), vec![HostMatch::Any]);
        assert_eq!(
            intersect(Some(&listener), &hosts(&["*.foo.example.com"])),
            hosts(&["*.foo.example.com"])
        );
    }
}
