//! Standalone mode end to end, without depending on routing content: start-up (in-process and
//! as the binary), the listening log line, readiness, bind errors, graceful shutdown on SIGTERM.

use std::time::Duration;

use portcullis::runtime::{self, RunError};

use crate::support::binary::Binary;
use crate::support::http::{get, status_of};
use crate::support::in_process::{standalone, test_settings};
use crate::support::wait::wait_until;

#[tokio::test]
async fn in_process_start_becomes_ready_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let running = standalone(dir.path()).await;
    let addrs = running.addresses();
    assert_ne!(addrs.http.port(), 0);
    assert_ne!(addrs.https.port(), 0);

    assert!(
        wait_until(Duration::from_secs(2), || async {
            status_of(addrs.admin, "/readyz").await == 200
        })
        .await
    );
    assert!(running.status().generation() >= 1);

    let status = running.status().clone();
    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .expect("shutdown within the grace period")
        .expect("clean shutdown");
    assert!(!status.is_ready());
    // The listeners are closed.
    assert!(tokio::net::TcpStream::connect(addrs.admin).await.is_err());
}

#[tokio::test]
async fn a_new_file_triggers_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let running = standalone(dir.path()).await;
    let mut generation = running.status().subscribe();
    generation.wait_for(|g| *g >= 1).await.unwrap();
    let before = *generation.borrow();

    std::fs::write(dir.path().join("new.yaml"), "# empty\n").unwrap();
    tokio::time::timeout(
        Duration::from_millis(1500),
        generation.wait_for(|g| *g > before),
    )
    .await
    .expect("a rebuild within the watcher's deadline")
    .unwrap();
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn bind_errors_name_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = taken.local_addr().unwrap();
    let mut settings = test_settings();
    settings.https_addr = addr;
    let err = match runtime::start_standalone(settings, dir.path()).await {
        Ok(_) => panic!("binding a taken port must fail"),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            RunError::Bind {
                listener: "https",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}

#[tokio::test]
async fn missing_manifest_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = runtime::start_standalone(test_settings(), &dir.path().join("missing")).await;
    assert!(matches!(err, Err(RunError::Watch(_))));
}

#[tokio::test]
async fn the_binary_logs_its_addresses_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // Starting reads the addresses from the `listening http=… https=… admin=…` line, then
    // waits until `/readyz` on that admin address answers 200.
    let binary = Binary::start(dir.path()).await;
    let exit = binary.stop(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0), "exit status after SIGTERM");
}

/// `--shutdown-delay` (what the chart passes on Kubernetes before 1.30, whose kubelet has no
/// preStop `sleep`): after SIGTERM `/readyz` is 503 at once, but a client that connects during
/// the delay is still served; then the drain runs and the process exits 0.
#[tokio::test]
async fn the_shutdown_delay_keeps_serving_new_connections_while_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let binary = Binary::start_with(dir.path(), &["--shutdown-delay", "3s"]).await;
    binary.terminate();
    assert!(
        wait_until(Duration::from_secs(2), || async {
            status_of(binary.admin, "/readyz").await == 503
        })
        .await,
        "/readyz turns 503 as soon as SIGTERM arrives"
    );
    // A new connection, after readiness went away: answered (no route: 404), not refused.
    let answer = get(binary.http, "new.example", "/", &[]).await;
    assert_eq!(answer.status, 404, "{}", binary.log_text());
    assert!(
        binary
            .wait_for_log(Duration::from_secs(10), |l| l
                .contains("shutdown delay over"))
            .await,
        "{}",
        binary.log_text()
    );
    let exit = binary.exited(Duration::from_secs(10)).await;
    assert_eq!(exit.code(), Some(0));
}
