//! Kubernetes Events (`events.k8s.io/v1`) for diagnostics, with their own de-duplication.
//!
//! One Event per diagnostic, on the object it names, type `Warning`, reason
//! [`Reason::as_str`](crate::table::diagnostic::Reason::as_str), note `field: message`. A
//! diagnostic already posted and still present is not posted again; one that went away and
//! came back is. Posted with a direct `create` rather than kube's `Recorder`, whose series key
//! ignores the note (two different messages with one reason on one object would collapse into
//! one Event showing the first message).
//!
//! Only the leader posts (see [`crate::cluster::lease`]); the [`EventPoster`] checks
//! [`Leadership::is_leader`] before every write, and [`EventPoster::reset`] empties the
//! "already posted" set when leadership is lost, so a fail-over re-posts the current
//! diagnostics once.
//!
//! An Event lives in the namespace of the object it is about (`default` for a cluster-scoped
//! object). With `--watch-namespace` RBAC grants Events only in that namespace
//! ([`crate::cluster::rbac`]), so a diagnostic whose Event would go elsewhere (the IngressClass
//! or IngressClassParams, the default certificate in our own namespace) is not posted: it is
//! in the log already (the rebuild loop logs every new diagnostic), and the poster says once,
//! at debug, why no Event follows, rather than collecting a 403 on every rebuild.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::cluster::lease::Leadership;
use crate::settings::CONTROLLER_NAME;
use crate::table::diagnostic::{Diagnostic, ObjectRef};

/// The Event `action`: what we were doing when we found the problem.
const EVENT_ACTION: &str = "BuildRoutingTable";
/// Largest Event note the API server accepts.
const MAX_NOTE_BYTES: usize = 1024;

/// A diagnostic's identity for de-duplication.
type EventKey = (ObjectRef, String, &'static str, String);

/// What one [`EventPoster::post`] call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EventsOutcome {
    /// Events created.
    pub(crate) posted: usize,
    /// Creates that failed; retried on the next call.
    pub(crate) failed: usize,
    /// Stopped early: this replica is not the leader any more.
    pub(crate) not_leader: bool,
    /// Diagnostics skipped for the first time because their Event would go to a namespace
    /// we may not write to (each is logged then, and not again while it stays present).
    pub(crate) skipped: usize,
}

/// Posts Events for diagnostics, each once while it stays present.
pub(crate) struct EventPoster {
    client: Client,
    /// Event `reportingInstance`: the pod name.
    identity: String,
    /// Diagnostics posted as Events and present in the last build.
    posted: HashSet<EventKey>,
    /// Diagnostics present in the last build whose Event we may not write (outside the watched
    /// namespace): remembered so that the reason is logged once, not on every rebuild.
    skipped: HashSet<EventKey>,
    sequence: AtomicU64,
}

impl EventPoster {
    /// A poster writing through `client` as `identity`.
    pub(crate) fn new(client: Client, identity: String) -> Self {
        EventPoster {
            client,
            identity,
            posted: HashSet::new(),
            skipped: HashSet::new(),
            sequence: AtomicU64::new(0),
        }
    }

    /// Forgets what was posted and skipped (a later leadership starts from scratch).
    pub(crate) fn reset(&mut self) {
        self.posted.clear();
        self.skipped.clear();
    }

    /// Posts Events for `diagnostics` not posted yet. `ours` are the Ingresses of our class and
    /// the Gateway API objects of ours (GatewayClasses, Gateways, routes attached to one of our
    /// Gateways): an object of a kind that another controller may own ([`owned_kind`]) gets an
    /// Event only when it is in `ours` (never write about another class's Ingress, or about a
    /// route that only names other controllers' Gateways). `in_scope` says whether a namespace is
    /// watched (asked of the namespace the Event would go to: RBAC grants Events only there),
    /// `uid` looks an object's uid up for the Event reference.
    pub(crate) async fn post(
        &mut self,
        diagnostics: &[Diagnostic],
        ours: &HashSet<&ObjectRef>,
        in_scope: impl Fn(Option<&str>) -> bool,
        uid: impl Fn(&ObjectRef) -> Option<String>,
        leadership: &Leadership,
    ) -> EventsOutcome {
        let mut outcome = EventsOutcome::default();
        let mut eligible: Vec<&Diagnostic> = Vec::new();
        let mut skipped = HashSet::new();
        for diagnostic in diagnostics {
            let object = &diagnostic.object;
            // Files have no Event; another controller's object is none of our business.
            if api_version(&object.kind).is_none()
                || (owned_kind(&object.kind) && !ours.contains(object))
            {
                continue;
            }
            let namespace = event_namespace(object);
            if in_scope(Some(namespace)) {
                eligible.push(diagnostic);
                continue;
            }
            let key = event_key(diagnostic);
            if !self.skipped.contains(&key) {
                outcome.skipped += 1;
                tracing::debug!(
                    %object,
                    reason = diagnostic.reason.as_str(),
                    event_namespace = namespace,
                    "no Event for this diagnostic: with --watch-namespace, Events may only be \
                     created in the watched namespace; the diagnostic is in the log"
                );
            }
            skipped.insert(key);
        }
        self.skipped = skipped;
        let present: HashSet<EventKey> = eligible.iter().map(|d| event_key(d)).collect();
        self.posted.retain(|k| present.contains(k));
        for diagnostic in eligible {
            let key = event_key(diagnostic);
            if self.posted.contains(&key) {
                continue;
            }
            if !leadership.is_leader() {
                outcome.not_leader = true;
                return outcome;
            }
            match self.post_event(diagnostic, uid(&diagnostic.object)).await {
                Ok(()) => {
                    outcome.posted += 1;
                    self.posted.insert(key);
                }
                Err(error) => {
                    outcome.failed += 1;
                    tracing::warn!(object = %diagnostic.object, %error, "posting an Event failed; retrying after the next build");
                }
            }
        }
        outcome
    }

    async fn post_event(
        &self,
        diagnostic: &Diagnostic,
        uid: Option<String>,
    ) -> Result<(), kube::Error> {
        let event = self.event_for(diagnostic, uid);
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        Ok(())
    }

    /// The Event for one diagnostic, in [`event_namespace`].
    fn event_for(&self, diagnostic: &Diagnostic, uid: Option<String>) -> Event {
        let object = &diagnostic.object;
        let now = Timestamp::now();
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let namespace = event_namespace(object).to_string();
        let prefix: String = object.name.chars().take(200).collect();
        Event {
            metadata: ObjectMeta {
                name: Some(format!("{prefix}.{:x}{sequence:x}", now.as_nanosecond())),
                namespace: Some(namespace),
                ..ObjectMeta::default()
            },
            action: Some(EVENT_ACTION.to_string()),
            reason: Some(diagnostic.reason.as_str().to_string()),
            note: Some(note(diagnostic)),
            type_: Some("Warning".to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(ObjectReference {
                api_version: api_version(&object.kind).map(str::to_string),
                kind: Some(object.kind.clone()),
                name: Some(object.name.clone()),
                namespace: object.namespace.clone(),
                uid,
                ..ObjectReference::default()
            }),
            reporting_controller: Some(CONTROLLER_NAME.to_string()),
            reporting_instance: Some(self.identity.clone()),
            ..Event::default()
        }
    }
}

/// The namespace of an Event about `object`: the object's own; for a cluster-scoped object
/// `default`, as the API server requires (and `kubectl describe` looks there).
fn event_namespace(object: &ObjectRef) -> &str {
    object.namespace.as_deref().unwrap_or("default")
}

fn event_key(d: &Diagnostic) -> EventKey {
    (
        d.object.clone(),
        d.field.clone(),
        d.reason.as_str(),
        d.message.clone(),
    )
}

/// `field: message`, cut to [`MAX_NOTE_BYTES`] at a character boundary.
fn note(d: &Diagnostic) -> String {
    let mut note = format!("{}: {}", d.field, d.message);
    if note.len() > MAX_NOTE_BYTES {
        let mut cut = MAX_NOTE_BYTES - '…'.len_utf8();
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push('…');
    }
    note
}

/// The `apiVersion` of the kinds a diagnostic can name; `None` for files (standalone only).
/// The Gateway API kinds at the versions the source reads them (ReferenceGrant at `v1beta1`,
/// which every Gateway API release of the standard channel serves).
fn api_version(kind: &str) -> Option<&'static str> {
    match kind {
        "Ingress" | "IngressClass" => Some("networking.k8s.io/v1"),
        "Secret" | "Service" | "ConfigMap" => Some("v1"),
        "EndpointSlice" => Some("discovery.k8s.io/v1"),
        "IngressClassParams" => Some("portcullis.io/v1alpha1"),
        "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" | "TLSRoute"
        | "BackendTLSPolicy" => Some("gateway.networking.k8s.io/v1"),
        "ReferenceGrant" => Some("gateway.networking.k8s.io/v1beta1"),
        _ => None,
    }
}

/// Kinds whose objects may belong to another controller (another IngressClass, another
/// GatewayClass): a diagnostic about one gets an Event only if the object is ours. The others
/// (Secrets, Services, policies, ...) are diagnosed only because one of ours refers to them.
fn owned_kind(kind: &str) -> bool {
    matches!(
        kind,
        "Ingress" | "GatewayClass" | "Gateway" | "HTTPRoute" | "GRPCRoute" | "TLSRoute"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::diagnostic::Reason;

    #[test]
    fn gateway_api_objects_are_named_at_the_versions_the_source_reads() {
        for kind in [
            "GatewayClass",
            "Gateway",
            "HTTPRoute",
            "GRPCRoute",
            "TLSRoute",
            "BackendTLSPolicy",
        ] {
            assert_eq!(
                api_version(kind),
                Some("gateway.networking.k8s.io/v1"),
                "{kind}"
            );
        }
        assert_eq!(
            api_version("ReferenceGrant"),
            Some("gateway.networking.k8s.io/v1beta1")
        );
        assert_eq!(api_version("File"), None);
        // Another controller may own these: an Event only when they are ours.
        assert!(owned_kind("HTTPRoute") && owned_kind("Gateway") && owned_kind("Ingress"));
        assert!(!owned_kind("Secret") && !owned_kind("BackendTLSPolicy"));
    }

    #[test]
    fn long_notes_are_cut_at_a_char_boundary() {
        let d = Diagnostic::error(
            ObjectRef::namespaced("Ingress", "ns", "a"),
            "spec",
            Reason::InvalidSpec,
            "é".repeat(2000),
        );
        let n = note(&d);
        assert!(n.len() <= MAX_NOTE_BYTES);
        assert!(n.starts_with("spec: é"));
        assert!(n.ends_with('…'));
    }
}
