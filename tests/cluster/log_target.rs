//! Log targets name the mode that runs (issue 15): a controller's lifecycle lines (listening,
//! shutting down, stopped) are logged under `portcullis::cluster`, never under
//! `portcullis::standalone` (standalone's: tests/e2e/docs_agree.rs).

use crate::support::log_capture::Captured;
use crate::support::mock_api::{MockApi, T, controller_settings, loopback};
use crate::support::wait::wait_until;

/// Whether a log line is the one looked for.
type LineTest = fn(&str) -> bool;

/// A current-thread runtime (tokio::test's default): every task logs to this thread's
/// subscriber.
#[tokio::test]
async fn controller_lifecycle_lines_are_under_the_cluster_target() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = MockApi::default().with_leases().start();
    let controller = mock.controller(loopback(), controller_settings()).await;
    assert!(wait_until(T, || async { controller.status().is_live() }).await);
    controller.until_stopped(async {}).await.unwrap();

    let text = captured.text();
    let lifecycle: [(&str, LineTest); 3] = [
        ("listening", |l| l.contains(": listening http=")),
        ("shutting down", |l| l.contains(": shutting down grace_s=")),
        ("stopped", |l| l.trim_end().ends_with(": stopped")),
    ];
    for (message, is_it) in lifecycle {
        let line = text
            .lines()
            .find(|l| is_it(l))
            .unwrap_or_else(|| panic!("no {message:?} line:\n{text}"));
        assert!(line.contains("portcullis::cluster:"), "{line}");
    }
    assert!(!text.contains("portcullis::standalone"), "{text}");
}
