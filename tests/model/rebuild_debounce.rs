//! The rebuild loop: no build before the source is ready, the first build at once, an isolated
//! change built at once, bursts coalesced by the hold-off into a trailing build, a steady
//! trickle still built within the maximum delay, and each diagnostic published once.
//!
//! The source is a [`SnapshotSource`]: each `send` replaces its objects and bumps its change
//! signal; the loop pulls the objects when it builds. Snapshots are told apart by a marker
//! diagnostic (source diagnostics reach the observers even with the model stubbed), so tests
//! wait for "the last snapshot is live" instead of sleeping.
//! The hold-off timing tests run on tokio's paused clock: time moves only when every task
//! waits on a timer (a build in `spawn_blocking` holds it still), so "built without waiting"
//! is "built before the clock moved", with no wall-clock threshold.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use portcullis::rebuild::{BuildReport, Observer, Rebuilder, Status};
use portcullis::settings::Settings;
use portcullis::source::{Snapshot, SnapshotSender, SnapshotSource, Source, snapshot_channel};
use portcullis::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use portcullis::table::{RouteTable, TableHandle};
use tokio::sync::watch;

use crate::support::wait::wait_until;

/// Records every build and every published diagnostic.
#[derive(Default)]
struct Recorder {
    builds: Mutex<Vec<(Instant, BuildReport)>>,
    added: Mutex<Vec<Diagnostic>>,
    resolved: Mutex<Vec<Diagnostic>>,
    live_markers: Mutex<Vec<String>>,
}

impl Observer for Recorder {
    fn built(&self, report: &BuildReport) {
        self.builds
            .lock()
            .unwrap()
            .push((Instant::now(), report.clone()));
    }

    fn diagnostics_changed(&self, added: &[Diagnostic], resolved: &[Diagnostic]) {
        self.added.lock().unwrap().extend_from_slice(added);
        self.resolved.lock().unwrap().extend_from_slice(resolved);
        let mut live = self.live_markers.lock().unwrap();
        live.retain(|m| !resolved.iter().any(|d| &d.message == m));
        live.extend(added.iter().map(|d| d.message.clone()));
    }
}

impl Recorder {
    fn build_count(&self) -> usize {
        self.builds.lock().unwrap().len()
    }

    fn is_live(&self, marker: &str) -> bool {
        self.live_markers
            .lock()
            .unwrap()
            .iter()
            .any(|m| m == marker)
    }
}

fn marker(n: usize) -> Diagnostic {
    Diagnostic::warning(
        ObjectRef::cluster("File", "marker.yaml"),
        "line 1",
        Reason::InvalidManifest,
        format!("snapshot {n}"),
    )
}

fn snapshot(n: usize) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        diagnostics: vec![marker(n)],
        ..Snapshot::default()
    })
}

/// The test's source, counting how often the loop pulls a snapshot from it.
struct Counted {
    inner: SnapshotSource,
    pulls: Arc<AtomicUsize>,
}

impl Source for Counted {
    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.pulls.fetch_add(1, Ordering::SeqCst);
        self.inner.snapshot()
    }
}

struct Loop {
    snapshots: SnapshotSender,
    shutdown: watch::Sender<bool>,
    status: Arc<Status>,
    recorder: Arc<Recorder>,
    pulls: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

/// A loop on a source that is ready with `initial`, or not ready until the first send.
fn start(hold_off: Duration, max_delay: Duration, initial: Option<Arc<Snapshot>>) -> Loop {
    let settings = Settings {
        hold_off,
        max_delay,
        ..Settings::default()
    };
    let table: TableHandle = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
    let status = Status::new();
    let recorder = Arc::new(Recorder::default());
    let (snapshots, source) = snapshot_channel(initial);
    let pulls = Arc::new(AtomicUsize::new(0));
    let source = Counted {
        inner: source,
        pulls: pulls.clone(),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);
    let rebuilder =
        Rebuilder::new(&settings, table, status.clone()).with_observer(recorder.clone());
    let task = tokio::spawn(rebuilder.run(source, shutdown_rx));
    Loop {
        snapshots,
        shutdown,
        status,
        recorder,
        pulls,
        task,
    }
}

#[tokio::test]
async fn no_build_before_ready_then_first_build_at_once() {
    let l = start(Duration::from_millis(500), Duration::from_secs(1), None);
    tokio::task::yield_now().await;
    assert_eq!(l.status.generation(), 0);
    assert!(!l.status.is_live());
    assert_eq!(
        l.pulls.load(Ordering::SeqCst),
        0,
        "no snapshot taken before ready"
    );

    let sent = Instant::now();
    l.snapshots.send(snapshot(0));
    let mut generation = l.status.subscribe();
    tokio::time::timeout(Duration::from_secs(1), generation.wait_for(|g| *g == 1))
        .await
        .expect("first build")
        .unwrap();
    assert!(
        sent.elapsed() < Duration::from_millis(400),
        "the first build does not wait for the hold-off: {:?}",
        sent.elapsed()
    );
    assert!(l.status.is_live());
    assert!(l.status.current().is_some());

    l.shutdown.send_replace(true);
    tokio::time::timeout(Duration::from_secs(1), l.task)
        .await
        .expect("loop stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn a_burst_of_changes_costs_a_few_builds() {
    let l = start(
        Duration::from_millis(100),
        Duration::from_secs(1),
        Some(snapshot(0)),
    );
    assert!(
        wait_until(Duration::from_secs(1), || async {
            l.recorder.is_live("snapshot 0")
        })
        .await
    );
    assert_eq!(l.recorder.build_count(), 1);

    // 100 changes in about 50 ms.
    let burst_start = Instant::now();
    for n in 1..=100 {
        l.snapshots.send(snapshot(n));
        if n % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let burst = burst_start.elapsed();

    assert!(
        wait_until(Duration::from_secs(2), || async {
            l.recorder.is_live("snapshot 100")
        })
        .await,
        "the last snapshot goes live"
    );
    let builds = l.recorder.build_count() - 1;
    // A burst shorter than the hold-off is one build (a few if a build lands mid-burst); on an
    // overloaded machine the burst may stretch, and a stretched burst may build once per
    // hold-off.
    let allowed = if burst < Duration::from_millis(90) {
        3
    } else {
        2 + (burst.as_millis() / 100) as usize
    };
    assert!(
        (1..=allowed).contains(&builds),
        "{builds} builds for one burst of {burst:?}"
    );
    // Each marker was published once, and only those that were built.
    let added = l.recorder.added.lock().unwrap().len();
    assert_eq!(added, builds + 1);
    // One snapshot pulled per build, not one per change.
    assert_eq!(l.pulls.load(Ordering::SeqCst), builds + 1);
}

#[tokio::test]
async fn a_steady_trickle_still_builds_within_max_delay() {
    let max_delay = Duration::from_millis(300);
    let l = start(Duration::from_millis(100), max_delay, Some(snapshot(0)));
    assert!(
        wait_until(Duration::from_secs(1), || async {
            l.recorder.is_live("snapshot 0")
        })
        .await
    );

    // A change every 20 ms for 1.5 s: never 100 ms of quiet.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_millis(1500) {
        n += 1;
        l.snapshots.send(snapshot(n));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let during: Vec<BuildReport> = l
        .recorder
        .builds
        .lock()
        .unwrap()
        .iter()
        .skip(1)
        .map(|(_, r)| r.clone())
        .collect();
    assert!(
        during.len() >= 3,
        "only {} builds during 1.5 s of changes",
        during.len()
    );
    for report in &during {
        assert!(
            report.change_to_live <= max_delay + Duration::from_millis(300),
            "generation {} went live {:?} after the change",
            report.generation,
            report.change_to_live
        );
    }
    let last = format!("snapshot {n}");
    assert!(
        wait_until(Duration::from_secs(1), || async {
            l.recorder.is_live(&last)
        })
        .await
    );
}

#[tokio::test]
async fn diagnostics_are_published_once_and_resolved_once() {
    let shared = Diagnostic::error(
        ObjectRef::namespaced("Ingress", "default", "web"),
        "spec.rules[0].host",
        Reason::InvalidSpec,
        "bad host",
    );
    let with = |n: usize| {
        Arc::new(Snapshot {
            diagnostics: vec![shared.clone(), marker(n)],
            ..Snapshot::default()
        })
    };
    let l = start(
        Duration::from_millis(20),
        Duration::from_millis(200),
        Some(with(0)),
    );
    assert!(
        wait_until(Duration::from_secs(1), || async {
            l.recorder.is_live("snapshot 0")
        })
        .await
    );
    l.snapshots.send(with(1));
    assert!(
        wait_until(Duration::from_secs(1), || async {
            l.recorder.is_live("snapshot 1")
        })
        .await
    );
    l.snapshots.send(snapshot(2));
    assert!(
        wait_until(Duration::from_secs(1), || async {
            l.recorder.is_live("snapshot 2")
        })
        .await
    );

    let added = l.recorder.added.lock().unwrap().clone();
    assert_eq!(added.iter().filter(|d| **d == shared).count(), 1);
    let resolved = l.recorder.resolved.lock().unwrap().clone();
    assert_eq!(resolved.iter().filter(|d| **d == shared).count(), 1);
    assert_eq!(l.status.generation(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_isolated_change_is_built_without_waiting_for_the_hold_off() {
    let hold_off = Duration::from_millis(100);
    let l = start(hold_off, Duration::from_secs(1), Some(snapshot(0)));
    let mut generation = l.status.subscribe();
    generation.wait_for(|g| *g == 1).await.unwrap();

    // Quiet for longer than the hold-off, then one change.
    tokio::time::advance(hold_off * 2).await;
    let sent = tokio::time::Instant::now();
    l.snapshots.send(snapshot(1));
    generation.wait_for(|g| *g == 2).await.unwrap();

    // Had the loop waited on any timer, the paused clock would have jumped to it.
    assert_eq!(
        sent.elapsed(),
        Duration::ZERO,
        "the change waited for a timer"
    );
    assert!(l.recorder.is_live("snapshot 1"));
}

#[tokio::test(start_paused = true)]
async fn changes_just_after_a_build_ride_one_trailing_build() {
    let hold_off = Duration::from_millis(100);
    let max_delay = Duration::from_secs(1);
    let l = start(hold_off, max_delay, Some(snapshot(0)));
    let mut generation = l.status.subscribe();
    generation.wait_for(|g| *g == 1).await.unwrap();
    tokio::time::advance(hold_off * 2).await;

    // The leading change is built at once...
    let leading = tokio::time::Instant::now();
    l.snapshots.send(snapshot(1));
    generation.wait_for(|g| *g == 2).await.unwrap();
    assert_eq!(leading.elapsed(), Duration::ZERO);

    // ...and the nine that follow within the hold-off wait for one build, `hold_off` after it.
    for n in 2..=10 {
        l.snapshots.send(snapshot(n));
        tokio::time::advance(Duration::from_millis(5)).await;
    }
    assert_eq!(l.status.generation(), 2, "built inside the hold-off");
    generation.wait_for(|g| *g == 3).await.unwrap();
    let waited = leading.elapsed();
    assert!(
        (hold_off..hold_off + Duration::from_millis(2)).contains(&waited),
        "trailing build {waited:?} after the leading one"
    );
    assert!(l.recorder.is_live("snapshot 10"));

    // Nothing else was pending.
    tokio::time::advance(max_delay * 2).await;
    assert_eq!(l.status.generation(), 3);
    assert_eq!(l.recorder.added.lock().unwrap().len(), 3);
    // The ten changes were pulled twice: at the leading build and after the hold-off.
    assert_eq!(l.pulls.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_trailing_build_never_waits_past_max_delay() {
    // A hold-off longer than the maximum delay: the cap decides.
    let hold_off = Duration::from_millis(500);
    let max_delay = Duration::from_millis(200);
    let l = start(hold_off, max_delay, Some(snapshot(0)));
    let mut generation = l.status.subscribe();
    generation.wait_for(|g| *g == 1).await.unwrap();

    let sent = tokio::time::Instant::now();
    l.snapshots.send(snapshot(1));
    generation.wait_for(|g| *g == 2).await.unwrap();
    let waited = sent.elapsed();
    assert!(
        (max_delay..max_delay + Duration::from_millis(2)).contains(&waited),
        "built {waited:?} after the change"
    );
}
