//! End to end, the built binary: a stderr nobody reads (a stalled log shipper, a suspended
//! terminal, a full pipe) never holds a request up. Access lines the pipe cannot take are
//! dropped and counted in `portcullis_log_lines_dropped_total{kind="access"}`; every line that
//! is written is whole; logging resumes once stderr drains; the last lines are written before
//! the process exits.
//!
//! HAProxy behaves the same way with a full syslog socket (lines dropped, counted in its
//! `DroppedLogs` statistic): the request path never waits for the log.

use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::support::backends::{self, Backend};
use crate::support::binary::Binary;
use crate::support::http::Conn;
use crate::support::manifests::{self, ingress, ingress_class, web_dir};
use crate::support::wait::wait_until;

const HOST: &str = "app.backpressure.e2e.test";
const DROPPED: &str = r#"portcullis_log_lines_dropped_total{kind="access"}"#;

/// How long any one request may take while stderr is stalled: far above a request's cost
/// here (well under a millisecond), far below "blocked on a pipe".
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);

/// A stderr pipe that stops being read: requests keep being answered (and fast), the lines
/// that do not fit are counted as dropped, the lines written are whole JSON objects, and lines
/// flow again once the pipe is read.
#[tokio::test]
async fn a_stalled_stderr_drops_access_lines_and_never_blocks_requests() {
    let (_web, _dir, proxy) = json_logging_proxy().await;
    assert_eq!(
        proxy.metric(DROPPED).await,
        Some(0.0),
        "{}",
        proxy.metrics().await
    );

    let paused = proxy.pause_log_reader();
    let mut conn = Conn::plain(proxy.http)
        .await
        .answer_deadline(REQUEST_DEADLINE);
    let sent = stall_until_lines_drop(&proxy, &mut conn).await;
    // Still answering once lines are being dropped.
    for i in 0..200 {
        let answer = conn.get(HOST, "/still-stalled").await;
        assert_eq!(
            answer.map(|a| a.status.as_u16()),
            Ok(200),
            "request {i} after the overflow"
        );
    }

    drop(paused);
    // The buffers the stall filled drain first; lines logged meanwhile may still be dropped.
    // A request a while later is logged again.
    let mut after = 0u32;
    let deadline = Instant::now() + Duration::from_secs(20);
    let resumed = loop {
        after += 1;
        let path = format!("/after-the-stall/{after}");
        let answer = conn
            .get(HOST, &path)
            .await
            .expect("request after the stall");
        assert_eq!(answer.status, 200);
        if proxy
            .wait_for_log(Duration::from_millis(500), |l| l.contains(&path))
            .await
        {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
    };
    assert!(resumed, "no access line once stderr was read again");

    // Every request is accounted for: its line written, or counted as dropped. Lines of other
    // proxy threads in the same batch may still be on their way: waited for.
    let answered = sent as usize + 200 + after as usize;
    let dropped = proxy.metric(DROPPED).await.unwrap_or(0.0) as usize;
    let all_in = wait_until(Duration::from_secs(10), || {
        let written = access_lines(&proxy).len();
        async move { written + dropped == answered }
    })
    .await;
    let access = access_lines(&proxy);
    assert!(
        all_in && access.len() < answered,
        "{answered} requests: {} lines written, {dropped} dropped",
        access.len()
    );
    assert!(
        access
            .iter()
            .all(|v| v["status"] == 200 && v["host"] == HOST)
    );
}

/// The access lines the binary wrote so far; every line it wrote is whole (a JSON object).
fn access_lines(proxy: &Binary) -> Vec<Value> {
    proxy
        .log_lines()
        .iter()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("a torn line ({e}): {l}"))
        })
        .filter(|v| v["target"] == "access")
        .collect()
}

/// The binary with JSON logs, serving `HOST` from a real backend (returned with the manifest
/// directory: both must live as long as the binary).
async fn json_logging_proxy() -> (Backend, TempDir, Binary) {
    let web = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = web_dir(
        dir.path(),
        &web,
        &[("app", ingress("app", HOST, "web", &[], None))],
    );
    let proxy = Binary::start_with(&m, &["--log-format", "json"]).await;
    (web, dir, proxy)
}

/// Sends requests on `conn` until the proxy counts a dropped access line (its stderr must be
/// paused), each answered 200 within [`REQUEST_DEADLINE`]. Returns how many it sent.
async fn stall_until_lines_drop(proxy: &Binary, conn: &mut Conn) -> u32 {
    let dropped_before = proxy.metric(DROPPED).await.unwrap_or(0.0);
    // A pipe holds 64 KiB and the proxy's buffers a few hundred more: a few thousand lines of
    // ~500 bytes overflow them. Checked every 500 requests, up to a generous bound.
    let mut sent = 0u32;
    loop {
        for _ in 0..500 {
            let started = Instant::now();
            let answer = conn
                .get(HOST, "/while-stalled")
                .await
                .unwrap_or_else(|e| panic!("request {sent} with stderr stalled: {e}"));
            assert_eq!(answer.status, 200, "request {sent}");
            assert!(
                started.elapsed() < REQUEST_DEADLINE,
                "request {sent} waited"
            );
            sent += 1;
        }
        if proxy.metric(DROPPED).await.unwrap_or(0.0) > dropped_before {
            return sent;
        }
        assert!(
            sent < 100_000,
            "{sent} requests with stderr stalled and no access line dropped:\n{}",
            proxy.metrics().await
        );
    }
}

/// A process asked to stop while its stderr takes nothing stops anyway: the last lines wait
/// for stderr a bounded time, not forever.
#[tokio::test]
async fn a_stalled_stderr_does_not_keep_a_stopping_process_alive() {
    let (_web, _dir, mut proxy) = json_logging_proxy().await;
    let _paused = proxy.pause_log_reader();
    let mut conn = Conn::plain(proxy.http)
        .await
        .answer_deadline(REQUEST_DEADLINE);
    stall_until_lines_drop(&proxy, &mut conn).await;
    drop(conn);
    proxy.terminate();
    // The drain (`--shutdown-grace 1s`) and the bounded wait for stderr (2 s), with room.
    let status = proxy.wait_exited(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
}

/// The last lines reach stderr before the process exits, though they are written by a
/// thread of their own in batches: here the warning a second SIGTERM logs just before the
/// process ends.
#[tokio::test]
async fn the_last_line_is_written_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    let mut proxy = Binary::start_with(m, &["--shutdown-delay", "60s"]).await;
    proxy.terminate();
    let first = proxy
        .wait_for_log(Duration::from_secs(10), |l| l.contains("SIGTERM received"))
        .await;
    assert!(
        first,
        "the first SIGTERM was not seen:\n{}",
        proxy.log_text()
    );
    proxy.terminate();
    let status = proxy.wait_exited(Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    let last = proxy
        .wait_for_log(Duration::from_secs(5), |l| l.contains("second signal"))
        .await;
    assert!(
        last,
        "the line logged just before exit is missing:\n{}",
        proxy.log_text()
    );
}
