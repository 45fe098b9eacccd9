//! Cluster mode's writers after each build: Ingress status, and (through [`EventPoster`])
//! Events for diagnostics, both only while this replica is the leader (see
//! [`crate::cluster::lease`]).
//!
//! **Ingress status** (`status.loadBalancer.ingress`): the addresses of `--publish-service`
//! (its `status.loadBalancer.ingress`, else its `spec.clusterIP`) or the fixed
//! `--publish-status-address` list, written with a JSON merge patch to the `status`
//! subresource, only to Ingresses that are ours (the list the model gives), only in the
//! watched namespace, and only when it differs from what the Ingress shows. An Ingress the
//! model refused for an annotation ([`Built::refused`]) is not served, so it gets no address,
//! and one it shows is cleared: its status must not tell clients it is being served.
//!
//! **Departed Ingresses**: one that stops being ours (its `spec.ingressClassName` or
//! `kubernetes.io/ingress.class` now names another class, or its IngressClass stopped being
//! ours) would otherwise keep our address for ever, and external-dns or Argo CD would read it
//! as served here. Every replica notes which Ingresses left [`Built::ours`] between two
//! publishes; the leader clears the status of each, once, if what it shows is "the address we
//! wrote": what this replica last wrote to it (or saw it show while ours), or what we publish
//! now. Anything else is the new controller's and is left alone, and the clear carries the
//! resourceVersion it was decided on, so a status the new controller writes in between makes
//! the API server refuse it (409) instead of being erased. What this does not cover: an
//! Ingress that left while no replica of ours was running (the list of ours lives in memory).
//!
//! A new leader starts with an empty "already posted" set, so a fail-over re-posts the
//! current diagnostics once. The Event and Lease items are re-exported here so their old
//! paths (`cluster::status::LeaderElector`, ...) keep working.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::sync::Mutex;

use crate::cluster::events::EventPoster;
use crate::cluster::gateway_status::GatewayStatusWriter;
pub use crate::cluster::lease::{LeaderElector, Leadership, LeaseError, LeaseSettings};
use crate::model::Built;
use crate::source::kubernetes::KubeSource;
use crate::table::diagnostic::ObjectRef;

/// Field manager of our status patches.
const FIELD_MANAGER: &str = "portcullis";

// === impl ClusterView ===

/// What the publisher reads back from the cluster: the Ingresses' current status (to write
/// only what differs), the publish Service, and uids for Event references.
pub trait ClusterView: Send + Sync {
    /// The Ingress as last seen, with its status.
    fn ingress(&self, namespace: &str, name: &str) -> Option<Arc<Ingress>>;
    /// The `--publish-service` Service as last seen.
    fn publish_service(&self) -> Option<Arc<Service>>;
    /// The object's `metadata.uid`, so `kubectl describe` finds its Events.
    fn uid(&self, object: &ObjectRef) -> Option<String>;
}

impl ClusterView for KubeSource {
    fn ingress(&self, namespace: &str, name: &str) -> Option<Arc<Ingress>> {
        KubeSource::ingress(self, namespace, name)
    }
    fn publish_service(&self) -> Option<Arc<Service>> {
        KubeSource::publish_service(self)
    }
    fn uid(&self, object: &ObjectRef) -> Option<String> {
        KubeSource::uid(self, object)
    }
}

// === status addresses ===

/// Where the addresses written to Ingress status come from.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum StatusAddresses {
    /// Neither flag: Ingress status is not written.
    #[default]
    None,
    /// `--publish-service`: read from that Service (see [`ClusterView::publish_service`]).
    Service,
    /// `--publish-status-address ADDR[,ADDR]`.
    Static(Vec<IngressLoadBalancerIngress>),
}

/// Parses `--publish-status-address`: comma-separated; an IP becomes `ip`, anything else
/// `hostname`. Empty items are skipped.
pub fn parse_status_addresses(value: &str) -> Vec<IngressLoadBalancerIngress> {
    value
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| match a.parse::<IpAddr>() {
            Ok(ip) => IngressLoadBalancerIngress {
                ip: Some(ip.to_string()),
                ..Default::default()
            },
            Err(_) => IngressLoadBalancerIngress {
                hostname: Some(a.to_string()),
                ..Default::default()
            },
        })
        .collect()
}

/// The addresses a Service publishes: its load balancer's, else its cluster IP.
fn service_addresses(service: &Service) -> Vec<IngressLoadBalancerIngress> {
    let lb: Vec<IngressLoadBalancerIngress> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter(|i| i.ip.is_some() || i.hostname.is_some())
        .map(|i| IngressLoadBalancerIngress {
            ip: i.ip.clone(),
            hostname: i.hostname.clone(),
            ports: None,
        })
        .collect();
    if !lb.is_empty() {
        return lb;
    }
    service
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_ref())
        .filter(|ip| !ip.is_empty() && ip.as_str() != "None")
        .map(|ip| {
            vec![IngressLoadBalancerIngress {
                ip: Some(ip.clone()),
                ..Default::default()
            }]
        })
        .unwrap_or_default()
}

/// A comparable form of an address list: (ip, hostname) pairs, sorted, deduplicated.
type AddressSet = BTreeSet<(Option<String>, Option<String>)>;

fn address_set(addresses: &[IngressLoadBalancerIngress]) -> AddressSet {
    addresses
        .iter()
        .map(|a| (a.ip.clone(), a.hostname.clone()))
        .collect()
}

fn current_addresses(ingress: &Ingress) -> &[IngressLoadBalancerIngress] {
    ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_deref())
        .unwrap_or(&[])
}

// === departed Ingresses ===

/// What to do about an Ingress that left ours, from how the store shows it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Departure {
    /// It shows an address we wrote: clear it.
    Clear,
    /// Nothing to compare with yet (no record of what we wrote, publish Service not seen).
    Undecided,
    /// Deleted, showing nothing, or showing someone else's address: never touched again.
    Settled,
}

/// Whether `ingress` (as the store shows it) still carries the address we wrote: `wrote`,
/// what we last wrote to it, or `serving`, what we publish now.
fn departure(
    ingress: Option<&Ingress>,
    wrote: Option<&AddressSet>,
    serving: Option<&AddressSet>,
) -> Departure {
    let Some(ingress) = ingress else {
        return Departure::Settled;
    };
    let shows = address_set(current_addresses(ingress));
    if shows.is_empty() {
        return Departure::Settled; // cleared, by us or by its new controller
    }
    if wrote.is_none() && serving.is_none() {
        return Departure::Undecided;
    }
    if wrote == Some(&shows) || serving == Some(&shows) {
        Departure::Clear
    } else {
        Departure::Settled
    }
}

/// The Gateway API objects of ours in `built`: every GatewayClass, Gateway and route it has a
/// status for (a route only when one of its parents is a Gateway of ours).
fn gateway_api_objects(built: &Built) -> Vec<ObjectRef> {
    let status = &built.gateway_api;
    let classes = status
        .classes
        .iter()
        .map(|c| ObjectRef::cluster("GatewayClass", &c.name));
    let gateways = status
        .gateways
        .iter()
        .map(|g| ObjectRef::namespaced("Gateway", &g.namespace, &g.name));
    let routes = status
        .routes
        .iter()
        .map(|r| ObjectRef::namespaced(&r.kind, &r.namespace, &r.name));
    classes.chain(gateways).chain(routes).collect()
}

// === impl Publisher ===

/// The publisher's settings, from the command line.
#[derive(Debug, Clone, Default)]
pub struct PublisherSettings {
    /// Where the status addresses come from (`--publish-service` / `--publish-status-address`).
    pub addresses: StatusAddresses,
    /// `--watch-namespace`: nothing outside it is written.
    pub watch_namespace: Option<String>,
    /// Clear our Ingresses' status on shutdown (default: keep it, so clients keep resolving
    /// through a rolling update).
    pub update_status_on_shutdown: bool,
    /// Event `reportingInstance`: the pod name.
    pub identity: String,
}

/// What one [`Publisher::publish`] call did (for logs and metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishOutcome {
    /// Ingress status patches sent.
    pub status_patched: usize,
    /// Gateway API status patches sent (GatewayClasses, Gateways, routes).
    pub gateway_status_patched: usize,
    /// Events created.
    pub events_posted: usize,
    /// Writes that failed; retried on the next publish.
    pub failed: usize,
    /// Nothing written: this replica is not the leader.
    pub not_leader: bool,
    /// Diagnostics given no Event because RBAC cannot grant it (the Event would go outside
    /// `--watch-namespace`), counted the first time each is skipped: then it is logged, once.
    pub events_skipped: usize,
}

struct PublisherState {
    /// The Events poster, with its "already posted" set.
    events: EventPoster,
    /// Gateway API status, with what it last wrote.
    gateway_status: GatewayStatusWriter,
    /// Status patches sent but not yet seen in the store: the Ingress's resourceVersion when
    /// we patched it, and what we wrote. Avoids re-patching before the watch catches up.
    pending: HashMap<ObjectRef, (Option<String>, AddressSet)>,
    /// The Ingresses that were ours at the previous publish (leader or not), to see which left.
    previous_ours: Vec<ObjectRef>,
    /// For each of ours, the addresses we wrote to it (or saw it show while we published
    /// them): what a departed Ingress may be cleared of.
    written: HashMap<ObjectRef, AddressSet>,
    /// Ingresses that left ours and may still show an address we wrote (see the module docs),
    /// with what we wrote when we know it. Settled by the leader's clear, or by the store
    /// showing something else.
    departed: HashMap<ObjectRef, Option<AddressSet>>,
}

/// Writes Ingress status and Events after each build, when this replica is the leader.
pub struct Publisher {
    client: Client,
    settings: PublisherSettings,
    leadership: Leadership,
    view: Arc<dyn ClusterView>,
    state: Mutex<PublisherState>,
}

impl Publisher {
    /// A publisher writing through `client` while `leadership` says so.
    pub fn new(
        client: Client,
        settings: PublisherSettings,
        leadership: Leadership,
        view: Arc<dyn ClusterView>,
    ) -> Self {
        let events = EventPoster::new(client.clone(), settings.identity.clone());
        let gateway_status = GatewayStatusWriter::new(client.clone());
        Publisher {
            client,
            settings,
            leadership,
            view,
            state: Mutex::new(PublisherState {
                events,
                gateway_status,
                pending: HashMap::new(),
                previous_ours: Vec::new(),
                written: HashMap::new(),
                departed: HashMap::new(),
            }),
        }
    }

    /// Publishes one build: status for `our_ingresses` (and clears it from those that left
    /// them), Events for `built.diagnostics`. Called by the rebuild loop after every swap.
    /// Failed writes are logged and retried next time.
    pub async fn publish(&self, built: &Built, our_ingresses: &[ObjectRef]) -> PublishOutcome {
        let mut state = self.state.lock().await;
        let mut outcome = PublishOutcome::default();
        // Before the leader check: a replica that becomes leader later must know what left
        // while it was not, to clear it then.
        self.note_departures(&mut state, our_ingresses);
        if !self.leadership.is_leader() {
            // A later leadership starts from scratch.
            state.events.reset();
            state.gateway_status.reset();
            state.pending.clear();
            outcome.not_leader = true;
            return outcome;
        }
        self.publish_status(&mut state, our_ingresses, &built.refused(), &mut outcome)
            .await;
        self.clear_departed(&mut state, &mut outcome).await;
        let addresses = self.desired_addresses().unwrap_or_default();
        let written = state
            .gateway_status
            .publish(&built.gateway_api, &addresses)
            .await;
        outcome.gateway_status_patched += written.patched;
        outcome.failed += written.failed;
        // Events may name our Ingresses and our Gateway API objects (see `EventPoster::post`).
        let gateway_objects = gateway_api_objects(built);
        let ours: HashSet<&ObjectRef> = our_ingresses.iter().chain(&gateway_objects).collect();
        let events = state
            .events
            .post(
                &built.diagnostics,
                &ours,
                |ns| self.in_scope(ns),
                |o| self.view.uid(o),
                &self.leadership,
            )
            .await;
        outcome.events_posted += events.posted;
        outcome.failed += events.failed;
        outcome.not_leader |= events.not_leader;
        outcome.events_skipped += events.skipped;
        outcome
    }

    /// On shutdown: clears our Ingresses' status if `update_status_on_shutdown`, else nothing.
    pub async fn shutdown(&self, our_ingresses: &[ObjectRef]) -> PublishOutcome {
        let mut outcome = PublishOutcome::default();
        if !self.settings.update_status_on_shutdown
            || self.settings.addresses == StatusAddresses::None
        {
            return outcome;
        }
        for object in our_ingresses.iter().filter(|o| self.writable_ingress(o)) {
            let ns = object.namespace.as_deref().unwrap_or_default();
            let shows = self
                .view
                .ingress(ns, &object.name)
                .is_some_and(|i| !current_addresses(&i).is_empty());
            if !shows {
                continue;
            }
            if !self.leadership.is_leader() {
                outcome.not_leader = true;
                break;
            }
            let patch = json!({ "status": { "loadBalancer": { "ingress": null } } });
            match self.patch_status(ns, &object.name, &patch).await {
                Ok(()) => outcome.status_patched += 1,
                Err(error) => {
                    outcome.failed += 1;
                    tracing::warn!(ingress = %object, %error, "clearing Ingress status failed");
                }
            }
        }
        outcome
    }

    /// The addresses to publish now; `None` when there is nothing to publish (no flag, or the
    /// publish Service is not there yet: then existing status is left alone).
    fn desired_addresses(&self) -> Option<Vec<IngressLoadBalancerIngress>> {
        match &self.settings.addresses {
            StatusAddresses::None => None,
            StatusAddresses::Static(addresses) => Some(addresses.clone()),
            StatusAddresses::Service => {
                let service = self.view.publish_service()?;
                let addresses = service_addresses(&service);
                (!addresses.is_empty()).then_some(addresses)
            }
        }
    }

    fn in_scope(&self, namespace: Option<&str>) -> bool {
        match (namespace, &self.settings.watch_namespace) {
            (Some(ns), Some(watched)) => ns == watched,
            _ => true,
        }
    }

    fn writable_ingress(&self, object: &ObjectRef) -> bool {
        object.kind == "Ingress"
            && object.namespace.is_some()
            && self.in_scope(object.namespace.as_deref())
    }

    async fn publish_status(
        &self,
        state: &mut PublisherState,
        our_ingresses: &[ObjectRef],
        refused: &BTreeSet<&ObjectRef>,
        outcome: &mut PublishOutcome,
    ) {
        let Some(desired) = self.desired_addresses() else {
            return;
        };
        let serving = address_set(&desired);
        let none = AddressSet::new();
        let ours: HashSet<&ObjectRef> = our_ingresses.iter().collect();
        state.pending.retain(|o, _| ours.contains(o));
        // Sorted, so writes happen in a stable order.
        let mut targets: Vec<&ObjectRef> = ours
            .into_iter()
            .filter(|o| self.writable_ingress(o))
            .collect();
        targets.sort();
        for object in targets {
            let ns = object.namespace.as_deref().unwrap_or_default();
            let Some(ingress) = self.view.ingress(ns, &object.name) else {
                continue;
            };
            // A refused Ingress is not served: no address, and the one it shows is cleared.
            let is_refused = refused.contains(object);
            let want = if is_refused { &none } else { &serving };
            if address_set(current_addresses(&ingress)) == *want {
                state.pending.remove(object);
                // Shown while ours: ours to clear if it departs (also after a fail-over, when
                // the previous leader wrote it).
                if !is_refused && state.written.get(object) != Some(want) {
                    state.written.insert(object.clone(), want.clone());
                }
                continue;
            }
            let version = ingress.metadata.resource_version.clone();
            if state
                .pending
                .get(object)
                .is_some_and(|(v, w)| *v == version && w == want)
            {
                continue; // our patch is not in the store yet
            }
            if !self.leadership.is_leader() {
                outcome.not_leader = true;
                return;
            }
            let patch = if is_refused {
                json!({ "status": { "loadBalancer": { "ingress": null } } })
            } else {
                json!({ "status": { "loadBalancer": { "ingress": desired } } })
            };
            match self.patch_status(ns, &object.name, &patch).await {
                Ok(()) => {
                    outcome.status_patched += 1;
                    state
                        .pending
                        .insert(object.clone(), (version, want.clone()));
                    if is_refused {
                        state.written.remove(object);
                    } else {
                        state.written.insert(object.clone(), want.clone());
                    }
                }
                Err(error) => {
                    outcome.failed += 1;
                    tracing::warn!(ingress = %object, %error, "writing Ingress status failed; retrying after the next build");
                }
            }
        }
    }

    /// Notes the Ingresses that left `our_ingresses` since the previous publish (moved to
    /// another class, or their class is not ours any more) as departed, forgets those that came
    /// back, and settles departed ones that no longer show an address we wrote. Runs on every
    /// replica, leader or not; writes nothing.
    fn note_departures(&self, state: &mut PublisherState, our_ingresses: &[ObjectRef]) {
        if self.settings.addresses == StatusAddresses::None {
            return; // we never write status, so there is none of ours to clear
        }
        // The usual build changes no membership: compare before allocating anything.
        if state.previous_ours.as_slice() != our_ingresses {
            let ours: HashSet<&ObjectRef> = our_ingresses.iter().collect();
            let previous = std::mem::take(&mut state.previous_ours);
            for object in previous {
                if !ours.contains(&object) {
                    let wrote = state.written.remove(&object);
                    state.departed.insert(object, wrote);
                }
            }
            state.departed.retain(|o, _| !ours.contains(o));
            state.written.retain(|o, _| ours.contains(o));
            state.previous_ours = our_ingresses.to_vec();
        }
        if state.departed.is_empty() {
            return;
        }
        let serving = self.desired_addresses().map(|a| address_set(&a));
        state.departed.retain(|object, wrote| {
            let ns = object.namespace.as_deref().unwrap_or_default();
            let ingress = self.view.ingress(ns, &object.name);
            departure(ingress.as_deref(), wrote.as_ref(), serving.as_ref()) != Departure::Settled
        });
    }

    /// The leader's part for departed Ingresses: each still showing an address we wrote is
    /// cleared, once. The patch carries the resourceVersion this was decided on, so that a
    /// status the new controller wrote since is not erased (the API server answers 409, and
    /// the next build looks again).
    async fn clear_departed(&self, state: &mut PublisherState, outcome: &mut PublishOutcome) {
        let mut departed: Vec<ObjectRef> = state
            .departed
            .keys()
            .filter(|o| self.writable_ingress(o))
            .cloned()
            .collect();
        departed.sort();
        let serving = self.desired_addresses().map(|a| address_set(&a));
        for object in departed {
            let ns = object.namespace.as_deref().unwrap_or_default();
            // Decided again on the version whose resourceVersion the patch carries: the store
            // may have moved on since `note_departures` looked.
            let ingress = self.view.ingress(ns, &object.name);
            let wrote = state.departed.get(&object).and_then(Option::as_ref);
            match departure(ingress.as_deref(), wrote, serving.as_ref()) {
                Departure::Settled => {
                    state.departed.remove(&object);
                    continue;
                }
                Departure::Undecided => continue,
                Departure::Clear => {}
            }
            if !self.leadership.is_leader() {
                outcome.not_leader = true;
                return;
            }
            let mut patch = json!({ "status": { "loadBalancer": { "ingress": null } } });
            if let Some(version) = ingress.and_then(|i| i.metadata.resource_version.clone()) {
                patch["metadata"] = json!({ "resourceVersion": version });
            }
            match self.patch_status(ns, &object.name, &patch).await {
                Ok(()) => {
                    outcome.status_patched += 1;
                    state.departed.remove(&object);
                    tracing::info!(ingress = %object, "cleared the status of an Ingress that is no longer ours");
                }
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    // Changed since we looked (its new controller wrote, say): decided again
                    // on the version that change brings.
                    tracing::debug!(ingress = %object, "Ingress changed before its status was cleared; looking again after the next build");
                }
                Err(error) => {
                    outcome.failed += 1;
                    tracing::warn!(ingress = %object, %error, "clearing the status of an Ingress that is no longer ours failed; retrying after the next build");
                }
            }
        }
    }

    async fn patch_status(
        &self,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<(), kube::Error> {
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), namespace);
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        api.patch_status(name, &params, &Patch::Merge(patch))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_addresses_split_ips_and_names() {
        let a = parse_status_addresses("10.0.0.1, lb.example.com,,2001:db8::1");
        let pairs: Vec<_> = a
            .iter()
            .map(|a| (a.ip.as_deref(), a.hostname.as_deref()))
            .collect();
        assert_eq!(
            pairs,
            [
                (Some("10.0.0.1"), None),
                (None, Some("lb.example.com")),
                (Some("2001:db8::1"), None)
            ]
        );
    }

    #[test]
    fn a_departed_ingress_is_cleared_only_of_an_address_we_wrote() {
        let showing = |lb: serde_json::Value| -> Ingress {
            serde_json::from_value(json!({
                "metadata": {"name": "a", "namespace": "apps", "resourceVersion": "12"},
                "status": {"loadBalancer": {"ingress": lb}},
            }))
            .unwrap()
        };
        let ours = address_set(&parse_status_addresses("10.0.0.1"));
        let old = address_set(&parse_status_addresses("10.0.0.9"));
        let ours_shown = showing(json!([{"ip": "10.0.0.1"}]));
        let theirs = showing(json!([{"ip": "192.0.2.50"}]));
        let empty = showing(json!([]));
        let old_shown = showing(json!([{"ip": "10.0.0.9"}]));
        let cases = [
            // What we publish now, what we last wrote there, or both.
            (Some(&ours_shown), None, Some(&ours), Departure::Clear),
            (Some(&ours_shown), Some(&ours), None, Departure::Clear),
            (Some(&ours_shown), Some(&ours), Some(&old), Departure::Clear),
            // The new controller's address, nothing at all, or a deleted Ingress.
            (Some(&theirs), Some(&ours), Some(&ours), Departure::Settled),
            (Some(&empty), Some(&ours), Some(&ours), Departure::Settled),
            (None, Some(&ours), Some(&ours), Departure::Settled),
            // Our old address, still there after the publish Service moved on.
            (Some(&old_shown), Some(&old), Some(&ours), Departure::Clear),
            // Nothing to compare with (no record, no publish Service yet).
            (Some(&ours_shown), None, None, Departure::Undecided),
        ];
        for (i, (ingress, wrote, serving, want)) in cases.into_iter().enumerate() {
            assert_eq!(departure(ingress, wrote, serving), want, "case {i}");
        }
    }

    #[test]
    fn service_addresses_prefer_load_balancer_then_cluster_ip() {
        let mut svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"clusterIP": "10.96.0.7"},
        }))
        .unwrap();
        assert_eq!(service_addresses(&svc)[0].ip.as_deref(), Some("10.96.0.7"));
        svc.status =
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"hostname": "a.elb"}]}}))
                .unwrap();
        let a = service_addresses(&svc);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].hostname.as_deref(), Some("a.elb"));
        let headless: Service =
            serde_json::from_value(json!({"spec": {"clusterIP": "None"}})).unwrap();
        assert!(service_addresses(&headless).is_empty());
    }
}
