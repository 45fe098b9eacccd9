//! Leader election on a `coordination.k8s.io/v1` Lease: only the leader writes Ingress status
//! and Events (every replica computes the same diagnostics; N replicas posting them would post
//! every Event N times).
//!
//! The decision is pure: [`decide`] looks at the Lease as observed (holder, duration, when we
//! saw it change, on our clock) and at our identity and returns an [`Action`]; the async
//! [`LeaderElector`] only reads the Lease, calls [`decide`], and writes what it says.
//!
//! Timings (client-go's defaults, with a longer retry): lease 15 s, renew every 5 s, and a
//! leader that has not renewed for 10 s (the renew deadline) stops writing, 5 s before another
//! replica may take the lease over. [`Leadership::is_leader`] checks that deadline itself on
//! every call, so a stuck renew loop cannot leave a stale leader writing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

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

// === decide ===

/// The Lease as this replica observed it, reduced to what the decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LeaseState {
    /// `holderIdentity`; `None` (or empty) when nobody holds it.
    holder: Option<String>,
    /// `leaseDurationSeconds`, or our own lease duration when the Lease does not say.
    duration: Duration,
    /// When we first saw the current holder record (holder, renew time, resourceVersion), on
    /// our clock: the holder's clock is not trusted, as in client-go.
    observed_at: Instant,
}

/// What one election round does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// There is no Lease: create it with us as holder.
    Create,
    /// The Lease is free (no holder): take it (acquire time and transitions bumped).
    Acquire,
    /// We hold the Lease: renew it.
    Renew,
    /// Another replica holds a live Lease and we are not leader: wait.
    StandBy,
    /// Another replica's Lease expired (not renewed within its duration): take it over.
    TakeOver,
    /// Another replica holds a live Lease while we still believed we were leader: stop
    /// writing at once.
    Lost,
}

/// The pure election decision: `lease` as observed (`None` = no Lease object), our identity
/// `me`, whether we currently believe we are leader (`leading`, i.e. within our renew
/// deadline), and the time `now` on the same clock as [`LeaseState::observed_at`].
fn decide(lease: Option<&LeaseState>, me: &str, leading: bool, now: Instant) -> Action {
    let Some(lease) = lease else {
        return Action::Create;
    };
    match lease.holder.as_deref().filter(|h| !h.is_empty()) {
        None => Action::Acquire,
        Some(holder) if holder == me => Action::Renew,
        Some(_) if now >= lease.observed_at + lease.duration => Action::TakeOver,
        Some(_) if leading => Action::Lost,
        Some(_) => Action::StandBy,
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
    pub(crate) fn changes(&self) -> watch::Receiver<bool> {
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
    namespace: String,
    pub(crate) name: String,
    /// Our `holderIdentity`: the pod name (unique among replicas).
    identity: String,
    /// How long a holder's lease is good without renewal (`leaseDurationSeconds`).
    lease_duration: Duration,
    /// How often the leader renews (and a follower retries).
    renew_period: Duration,
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
    pub(crate) async fn run(mut self, shutdown: impl std::future::Future<Output = ()>) {
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
    async fn release(&mut self) {
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
                // `decide(None, ..)` is always `Action::Create`.
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
        let state = LeaseState {
            holder: holder.clone(),
            duration: spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(self.settings.lease_duration),
            observed_at: self.observed.as_ref().map_or(now, |o| o.at),
        };
        let me = &self.settings.identity;
        let mut next = lease.clone();
        let next_spec = next.spec.get_or_insert_with(LeaseSpec::default);
        let stamp = MicroTime(Timestamp::now());
        match decide(Some(&state), me, self.leadership.is_leader(), now) {
            Action::Renew => {}
            Action::StandBy | Action::Lost => return Ok(false),
            Action::TakeOver | Action::Acquire => {
                if holder.is_some() {
                    tracing::info!(holder = ?holder, "the lease expired; taking it over");
                }
                next_spec.acquire_time = Some(stamp.clone());
                next_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            // Not reached: a Lease was read.
            Action::Create => return self.create().await,
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

    const D: Duration = Duration::from_secs(15);

    fn held_by(holder: Option<&str>, observed_at: Instant) -> LeaseState {
        LeaseState {
            holder: holder.map(str::to_string),
            duration: D,
            observed_at,
        }
    }

    #[test]
    fn no_lease_is_created() {
        let now = Instant::now();
        assert_eq!(decide(None, "me", false, now), Action::Create);
        assert_eq!(decide(None, "me", true, now), Action::Create);
    }

    #[test]
    fn free_lease_is_acquired() {
        let t0 = Instant::now();
        assert_eq!(
            decide(Some(&held_by(None, t0)), "me", false, t0),
            Action::Acquire
        );
        assert_eq!(
            decide(Some(&held_by(Some(""), t0)), "me", false, t0),
            Action::Acquire
        );
    }

    #[test]
    fn own_lease_is_renewed() {
        let t0 = Instant::now();
        let mine = held_by(Some("me"), t0);
        assert_eq!(decide(Some(&mine), "me", true, t0), Action::Renew);
        // Even long after it was observed, and after our own deadline passed: it is ours.
        assert_eq!(decide(Some(&mine), "me", false, t0 + 2 * D), Action::Renew);
    }

    #[test]
    fn another_holders_live_lease_is_respected() {
        let t0 = Instant::now();
        let theirs = held_by(Some("other"), t0);
        assert_eq!(decide(Some(&theirs), "me", false, t0), Action::StandBy);
        let almost = t0 + D - Duration::from_millis(1);
        assert_eq!(decide(Some(&theirs), "me", false, almost), Action::StandBy);
    }

    #[test]
    fn expired_lease_is_taken_over() {
        let t0 = Instant::now();
        let theirs = held_by(Some("other"), t0);
        assert_eq!(decide(Some(&theirs), "me", false, t0 + D), Action::TakeOver);
        assert_eq!(
            decide(Some(&theirs), "me", true, t0 + 3 * D),
            Action::TakeOver
        );
    }

    #[test]
    fn live_lease_of_another_while_leading_is_lost() {
        let t0 = Instant::now();
        let theirs = held_by(Some("other"), t0);
        assert_eq!(decide(Some(&theirs), "me", true, t0), Action::Lost);
    }

    #[tokio::test(start_paused = true)]
    async fn renew_deadline_missed_stops_writing() {
        let l = Leadership::new();
        assert!(!l.is_leader());
        l.renewed(Duration::from_secs(10));
        assert!(l.is_leader());
        assert!(*l.changes().borrow());
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(l.is_leader(), "within the renew deadline: still leader");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!l.is_leader(), "no renewal within the deadline: not leader");
        // The flag expires by itself; an elector round that sees no renewal reports it lost.
        l.renewed(Duration::from_secs(10));
        assert!(l.is_leader());
        l.lost();
        assert!(!l.is_leader());
        assert!(!*l.changes().borrow());
    }
}
