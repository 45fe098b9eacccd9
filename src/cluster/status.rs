//! Cluster mode's writers: Ingress status, Kubernetes Events for diagnostics, and the leader
//! election that decides which replica may write at all.
//!
//! - **Ingress status** (`status.loadBalancer.ingress`): the addresses of `--publish-service`
//!   (its `status.loadBalancer.ingress`, else its `spec.clusterIP`) or the fixed
//!   `--publish-status-address` list, written with a JSON merge patch to the `status`
//!   subresource, only to Ingresses that are ours (the list the model gives), only in the
//!   watched namespace, and only when it differs from what the Ingress shows.
//! - **Events** (`events.k8s.io/v1`), one per diagnostic, on the object it names, type
//!   `Warning`, reason [`Reason::as_str`](crate::table::diagnostic::Reason::as_str), note
//!   `field: message`. A diagnostic already posted and still present is not posted again;
//!   one that went away and came back is. Posted with a direct `create` rather than kube's
//!   `Recorder`, whose series key ignores the note (two different messages with one reason on
//!   one object would collapse into one Event showing the first message).
//! - **Leader election** on a `coordination.k8s.io/v1` Lease: only the leader writes status
//!   **and Events** (every replica computes the same diagnostics; N replicas posting them would
//!   post every Event N times). A new leader starts with an empty "already posted" set, so a
//!   fail-over re-posts the current diagnostics once.
//!
//! Timings (client-go's defaults, with a longer retry): lease 15 s, renew every 5 s, and a
//! leader that has not renewed for 10 s (the renew deadline) stops writing, 5 s before another
//! replica may take the lease over. [`Leadership::is_leader`] checks that deadline itself on
//! every call, so a stuck renew loop cannot leave a stale leader writing.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{ObjectReference, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::{Mutex, watch};
use tokio::time::Instant;

use crate::model::Built;
use crate::settings::CONTROLLER_NAME;
use crate::source::kubernetes::KubeSource;
use crate::table::diagnostic::{Diagnostic, ObjectRef};

/// Field manager of our status patches.
pub const FIELD_MANAGER: &str = "portcullis";
/// The Event `action`: what we were doing when we found the problem.
pub const EVENT_ACTION: &str = "BuildRoutingTable";
/// Largest Event note the API server accepts.
pub const MAX_NOTE_BYTES: usize = 1024;

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("lease {namespace}/{name}: no answer within {timeout:?}")]
    Timeout {
        namespace: String,
        name: String,
        timeout: Duration,
    },
}

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
pub fn service_addresses(service: &Service) -> Vec<IngressLoadBalancerIngress> {
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
    pub failed: usize,
    /// Nothing written: this replica is not the leader.
    pub not_leader: bool,
}

/// A diagnostic's identity for de-duplication.
type EventKey = (ObjectRef, String, &'static str, String);

#[derive(Default)]
struct PublisherState {
    /// Diagnostics posted as Events and present in the last build.
    posted: HashSet<EventKey>,
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
    sequence: AtomicU64,
}

impl Publisher {
    /// A publisher writing through `client` while `leadership` says so.
    pub fn new(
        client: Client,
        settings: PublisherSettings,
        leadership: Leadership,
        view: Arc<dyn ClusterView>,
    ) -> Self {
        Publisher {
            client,
            settings,
            leadership,
            view,
            state: Mutex::new(PublisherState::default()),
            sequence: AtomicU64::new(0),
        }
    }

    /// Publishes one build: status for `our_ingresses`, Events for `built.diagnostics`. Called
    /// by the rebuild loop after every swap. Failed writes are logged and retried next time.
    pub async fn publish(&self, built: &Built, our_ingresses: &[ObjectRef]) -> PublishOutcome {
        let mut state = self.state.lock().await;
        let mut outcome = PublishOutcome::default();
        if !self.leadership.is_leader() {
            // A later leadership starts from scratch.
            state.posted.clear();
            state.pending.clear();
            outcome.not_leader = true;
            return outcome;
        }
        self.publish_status(&mut state, our_ingresses, &mut outcome)
            .await;
        self.publish_events(&mut state, &built.diagnostics, our_ingresses, &mut outcome)
            .await;
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
        outcome: &mut PublishOutcome,
    ) {
        let Some(desired) = self.desired_addresses() else {
            return;
        };
        let want = address_set(&desired);
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
            if address_set(current_addresses(&ingress)) == want {
                state.pending.remove(object);
                continue;
            }
            let version = ingress.metadata.resource_version.clone();
            if state
                .pending
                .get(object)
                .is_some_and(|(v, w)| *v == version && *w == want)
            {
                continue; // our patch is not in the store yet
            }
            if !self.leadership.is_leader() {
                outcome.not_leader = true;
                return;
            }
            let patch = json!({ "status": { "loadBalancer": { "ingress": desired } } });
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

    async fn publish_events(
        &self,
        state: &mut PublisherState,
        diagnostics: &[Diagnostic],
        our_ingresses: &[ObjectRef],
        outcome: &mut PublishOutcome,
    ) {
        let ours: HashSet<&ObjectRef> = our_ingresses.iter().collect();
        let eligible: Vec<&Diagnostic> = diagnostics
            .iter()
            .filter(|d| api_version(&d.object.kind).is_some())
            .filter(|d| self.in_scope(d.object.namespace.as_deref()))
            // Never write about an Ingress of another class.
            .filter(|d| d.object.kind != "Ingress" || ours.contains(&d.object))
            .collect();
        let present: HashSet<EventKey> = eligible.iter().map(|d| event_key(d)).collect();
        state.posted.retain(|k| present.contains(k));
        for diagnostic in eligible {
            let key = event_key(diagnostic);
            if state.posted.contains(&key) {
                continue;
            }
            if !self.leadership.is_leader() {
                outcome.not_leader = true;
                return;
            }
            match self.post_event(diagnostic).await {
                Ok(()) => {
                    outcome.events_posted += 1;
                    state.posted.insert(key);
                }
                Err(error) => {
                    outcome.failed += 1;
                    tracing::warn!(object = %diagnostic.object, %error, "posting an Event failed; retrying after the next build");
                }
            }
        }
    }

    async fn post_event(&self, diagnostic: &Diagnostic) -> Result<(), kube::Error> {
        let event = self.event_for(diagnostic);
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), &event).await?;
        Ok(())
    }

    /// The Event for one diagnostic. Cluster-scoped objects' Events go to `default`, as the
    /// API server requires (and `kubectl describe` looks there).
    fn event_for(&self, diagnostic: &Diagnostic) -> Event {
        let object = &diagnostic.object;
        let now = Timestamp::now();
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let namespace = object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
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
                uid: self.view.uid(object),
                ..ObjectReference::default()
            }),
            reporting_controller: Some(CONTROLLER_NAME.to_string()),
            reporting_instance: Some(self.settings.identity.clone()),
            ..Event::default()
        }
    }
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
fn api_version(kind: &str) -> Option<&'static str> {
    match kind {
        "Ingress" | "IngressClass" => Some("networking.k8s.io/v1"),
        "Secret" | "Service" => Some("v1"),
        "EndpointSlice" => Some("discovery.k8s.io/v1"),
        "IngressClassParams" => Some("portcullis.io/v1alpha1"),
        _ => None,
    }
}

// === impl Leadership ===

/// Whether this replica may write now. Cheap to clone and to check (one atomic load and a
/// clock read): checked before every single write.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<LeadershipInner>,
}

struct LeadershipInner {
    base: Instant,
    /// Milliseconds after `base` until which we may write; 0 = not leader.
    deadline_ms: AtomicU64,
    changes: watch::Sender<bool>,
}

impl Leadership {
    fn new() -> Self {
        let (changes, _) = watch::channel(false);
        Leadership {
            inner: Arc::new(LeadershipInner {
                base: Instant::now(),
                deadline_ms: AtomicU64::new(0),
                changes,
            }),
        }
    }

    /// True while we hold the lease and renewed it within the renew deadline.
    pub fn is_leader(&self) -> bool {
        let deadline = self.inner.deadline_ms.load(Ordering::Acquire);
        deadline != 0 && self.now_ms() < deadline
    }

    /// Wakes when the elector gains or loses the lease (`true` = leader).
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.inner.changes.subscribe()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn renewed(&self, valid_for: Duration) {
        let valid = u64::try_from(valid_for.as_millis()).unwrap_or(u64::MAX);
        let deadline = self.now_ms().saturating_add(valid).max(1);
        self.inner.deadline_ms.store(deadline, Ordering::Release);
        self.inner
            .changes
            .send_if_modified(|l| !std::mem::replace(l, true));
    }

    fn lost(&self) {
        self.inner.deadline_ms.store(0, Ordering::Release);
        self.inner
            .changes
            .send_if_modified(|l| std::mem::replace(l, false));
    }
}

// === impl LeaderElector ===

/// The Lease and the timings of the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    /// Our `holderIdentity`: the pod name (unique among replicas).
    pub identity: String,
    /// How long a holder's lease is good without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How often the leader renews (and a follower retries).
    pub renew_period: Duration,
    /// A leader that has not renewed for this long stops writing; less than `lease_duration`.
    pub renew_deadline: Duration,
}

impl LeaseSettings {
    /// Lease 15 s, renew every 5 s, renew deadline 10 s.
    pub fn new(
        namespace: impl Into<String>,
        name: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        LeaseSettings {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_period: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// The holder record as we last observed it, and when (on our clock: the holder's clock is
/// not trusted, as in client-go).
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    record: (Option<String>, Option<MicroTime>, Option<String>),
    at: Instant,
}

/// Acquires and renews the Lease; [`Leadership`] reflects the result.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    leadership: Leadership,
    observed: Option<Observed>,
    /// The Lease as our last successful write returned it: renewals go straight to a PUT with
    /// its resourceVersion (optimistic concurrency) instead of GET + PUT.
    written: Option<Lease>,
}

impl LeaderElector {
    /// An elector for `settings`' Lease; not leader until a step succeeds.
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            leadership: Leadership::new(),
            observed: None,
            written: None,
        }
    }

    /// The flag the writers check.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// One round: acquire or renew, with a timeout of one renew period. Returns whether we are
    /// leader now. On an error the flag stays until the renew deadline runs out.
    pub async fn step(&mut self) -> Result<bool, LeaseError> {
        let timeout = self.settings.renew_period;
        let result = match tokio::time::timeout(timeout, self.try_acquire_or_renew()).await {
            Ok(result) => result,
            Err(_) => Err(LeaseError::Timeout {
                namespace: self.settings.namespace.clone(),
                name: self.settings.name.clone(),
                timeout,
            }),
        };
        match result {
            Ok(true) => {
                self.leadership.renewed(self.settings.renew_deadline);
                Ok(true)
            }
            Ok(false) => {
                self.leadership.lost();
                Ok(false)
            }
            Err(error) => {
                self.written = None;
                if !self.leadership.is_leader() {
                    self.leadership.lost();
                }
                Err(error)
            }
        }
    }

    /// Steps every renew period until `shutdown` resolves, then releases the lease if held.
    pub async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let was_leader = self.leadership.is_leader();
            match self.step().await {
                Ok(true) if !was_leader => {
                    tracing::info!(identity = %self.settings.identity, "became leader")
                }
                Ok(false) if was_leader => tracing::warn!("lost the lease to another replica"),
                Ok(_) => {}
                Err(error) if self.leadership.is_leader() => {
                    tracing::warn!(%error, "renewing the lease failed; retrying")
                }
                Err(error) => tracing::debug!(%error, "acquiring the lease failed; retrying"),
            }
            if was_leader && !self.leadership.is_leader() {
                tracing::warn!("not leader any more: status and Event writes stopped");
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(self.settings.renew_period) => {}
            }
        }
        self.release().await;
    }

    /// Stops writing at once, then gives the lease up (holder cleared, duration 1 s) so another
    /// replica takes over without waiting for it to expire.
    pub async fn release(&mut self) {
        let was_leader = self.leadership.is_leader();
        self.leadership.lost();
        let Some(mut lease) = self.written.take() else {
            return;
        };
        if !was_leader {
            return;
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        let params = PostParams::default();
        let put = self.api.replace(&self.settings.name, &params, &lease);
        match tokio::time::timeout(self.settings.renew_period, put).await {
            Ok(Ok(_)) => tracing::info!("lease released"),
            Ok(Err(error)) => tracing::warn!(%error, "releasing the lease failed"),
            Err(_) => tracing::warn!("releasing the lease timed out"),
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaseError> {
        let lease = match self.written.take() {
            Some(lease) => lease,
            None => match self
                .api
                .get_opt(&self.settings.name)
                .await
                .map_err(|e| self.error(e))?
            {
                Some(lease) => lease,
                None => return self.create().await,
            },
        };
        let now = Instant::now();
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = (
            holder.clone(),
            spec.renew_time.clone(),
            lease.metadata.resource_version.clone(),
        );
        if self.observed.as_ref().is_none_or(|o| o.record != record) {
            self.observed = Some(Observed { record, at: now });
        }
        let me = &self.settings.identity;
        let mut next = lease.clone();
        let next_spec = next.spec.get_or_insert_with(LeaseSpec::default);
        let stamp = MicroTime(Timestamp::now());
        match holder.as_deref() {
            Some(h) if h == me => {}
            Some(_) => {
                let duration = spec
                    .lease_duration_seconds
                    .and_then(|s| u64::try_from(s).ok())
                    .map(Duration::from_secs)
                    .unwrap_or(self.settings.lease_duration);
                let seen = self.observed.as_ref().map_or(now, |o| o.at);
                if now < seen + duration {
                    return Ok(false);
                }
                tracing::info!(holder = ?holder, "the lease expired; taking it over");
                next_spec.acquire_time = Some(stamp.clone());
                next_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            None => {
                next_spec.acquire_time = Some(stamp.clone());
                next_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        next_spec.holder_identity = Some(me.clone());
        next_spec.renew_time = Some(stamp);
        next_spec.lease_duration_seconds = Some(duration_seconds(self.settings.lease_duration));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                self.written = Some(written);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(self.error(error)),
        }
    }

    async fn create(&mut self) -> Result<bool, LeaseError> {
        let stamp = MicroTime(Timestamp::now());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.settings.identity.clone()),
                lease_duration_seconds: Some(duration_seconds(self.settings.lease_duration)),
                acquire_time: Some(stamp.clone()),
                renew_time: Some(stamp),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(written) => {
                self.written = Some(written);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(self.error(error)),
        }
    }

    fn error(&self, source: kube::Error) -> LeaseError {
        LeaseError::Api {
            namespace: self.settings.namespace.clone(),
            name: self.settings.name.clone(),
            source,
        }
    }
}

fn duration_seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::diagnostic::Reason;

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

    #[tokio::test]
    async fn leadership_expires_at_the_renew_deadline_by_itself() {
        let l = Leadership::new();
        assert!(!l.is_leader());
        l.renewed(Duration::from_millis(300));
        assert!(l.is_leader());
        assert!(*l.changes().borrow());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!l.is_leader(), "no renewal within the deadline: not leader");
        l.renewed(Duration::from_secs(10));
        assert!(l.is_leader());
        l.lost();
        assert!(!l.is_leader());
        assert!(!*l.changes().borrow());
    }
}
