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
    /// Events created.
    pub events_posted: usize,
    /// Writes that failed; retried on the next publish.
    pub(crate) failed: usize,
    /// Nothing written: this replica is not the leader.
    pub not_leader: bool,
}

struct PublisherState {
    /// The Events poster, with its "already posted" set.
    events: EventPoster,
    /// Status patches sent but not yet seen in the store: the Ingress's resourceVersion when
    /// we patched it, and what we wrote. Avoids re-patching before the watch catches up.
    pending: HashMap<ObjectRef, (Option<String>, AddressSet)>,
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
        Publisher {
            client,
            settings,
            leadership,
            view,
            state: Mutex::new(PublisherState {
                events,
                pending: HashMap::new(),
            }),
        }
    }

    /// Publishes one build: status for `our_ingresses`, Events for `built.diagnostics`. Called
    /// by the rebuild loop after every swap. Failed writes are logged and retried next time.
    pub async fn publish(&self, built: &Built, our_ingresses: &[ObjectRef]) -> PublishOutcome {
        let mut state = self.state.lock().await;
        let mut outcome = PublishOutcome::default();
        if !self.leadership.is_leader() {
            // A later leadership starts from scratch.
            state.events.reset();
            state.pending.clear();
            outcome.not_leader = true;
            return outcome;
        }
        self.publish_status(&mut state, our_ingresses, &built.refused(), &mut outcome)
            .await;
        let ours: HashSet<&ObjectRef> = our_ingresses.iter().collect();
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
                }
                Err(error) => {
                    outcome.failed += 1;
                    tracing::warn!(ingress = %object, %error, "writing Ingress status failed; retrying after the next build");
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
