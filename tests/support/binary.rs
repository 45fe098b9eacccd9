//! The built `portcullis` binary as a user runs it: `standalone --manifests DIR` on
//! `127.0.0.1:0`, its addresses read from the `listening http=… https=… admin=…` log line, its
//! stderr kept for the test to read (access-log lines, diagnostics), SIGTERM to stop it.
//!
//! stderr is drained by a plain thread, not a task of the test's runtime: a test that blocks
//! (or a runtime busy with a load loop) must never leave the binary stuck on a full pipe.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::http::{admin_get, status_of};
use super::wait::wait_until;

/// How long the binary may take to log its addresses and become ready.
const START_DEADLINE: Duration = Duration::from_secs(15);

/// A running `portcullis standalone`. Dropping it sends SIGTERM, then kills it if it has not
/// exited within a couple of seconds.
pub struct Binary {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
    /// While `true`, the stderr reader reads nothing more (see [`Binary::pause_log_reader`]).
    reader_paused: Arc<(Mutex<bool>, Condvar)>,
}

/// Holds the binary's stderr unread until dropped ([`Binary::pause_log_reader`]).
pub struct LogReaderPause(Arc<(Mutex<bool>, Condvar)>);

impl Drop for LogReaderPause {
    fn drop(&mut self) {
        let (paused, wake) = &*self.0;
        *paused.lock().expect("pause lock") = false;
        wake.notify_all();
    }
}

impl Binary {
    /// Starts `portcullis standalone --manifests dir` with every listener on `127.0.0.1:0` and
    /// waits until `/readyz` answers 200.
    pub async fn start(dir: &Path) -> Binary {
        Binary::start_with(dir, &[]).await
    }

    /// Like [`Binary::start`], with extra flags appended.
    pub async fn start_with(dir: &Path, extra: &[&str]) -> Binary {
        let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .arg("standalone")
            .arg("--manifests")
            .arg(dir)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--https-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--shutdown-grace",
                "1s",
                "--log-level",
                "info",
            ])
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the portcullis binary");

        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (listening_tx, listening_rx) = mpsc::channel();
        let lines = log.clone();
        let reader_paused = Arc::new((Mutex::new(false), Condvar::new()));
        let pause = reader_paused.clone();
        std::thread::spawn(move || {
            let mut listening_tx = Some(listening_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                {
                    let (paused, wake) = &*pause;
                    let mut paused = paused.lock().expect("pause lock");
                    while *paused {
                        paused = wake.wait(paused).expect("pause lock");
                    }
                }
                if let Some(addrs) = parse_listening(&line)
                    && let Some(tx) = listening_tx.take()
                {
                    let _ = tx.send(addrs);
                }
                lines.lock().expect("log lock").push(line);
            }
        });

        let mut binary = Binary {
            http: ([127, 0, 0, 1], 0).into(),
            https: ([127, 0, 0, 1], 0).into(),
            admin: ([127, 0, 0, 1], 0).into(),
            child: Some(child),
            log,
            reader_paused,
        };
        // Polled rather than a blocking recv, so the test's runtime keeps running.
        let deadline = Instant::now() + START_DEADLINE;
        let (http, https, admin) = loop {
            match listening_rx.try_recv() {
                Ok(addrs) => break addrs,
                Err(mpsc::TryRecvError::Disconnected) => {
                    panic!("the binary exited before listening:\n{}", binary.log_text())
                }
                Err(mpsc::TryRecvError::Empty) if Instant::now() > deadline => {
                    panic!(
                        "no `listening` line within {START_DEADLINE:?}:\n{}",
                        binary.log_text()
                    )
                }
                Err(mpsc::TryRecvError::Empty) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
            }
        };
        binary.http = http;
        binary.https = https;
        binary.admin = admin;
        let ready = wait_until(START_DEADLINE, || async {
            status_of(admin, "/readyz").await == 200
        })
        .await;
        assert!(ready, "/readyz never answered 200:\n{}", binary.log_text());
        binary
    }

    /// Stops reading the binary's stderr until the returned value is dropped: once the pipe's
    /// buffer is full, the binary's writes to stderr block, as they do behind a stalled log
    /// shipper or a suspended terminal.
    pub fn pause_log_reader(&self) -> LogReaderPause {
        *self.reader_paused.0.lock().expect("pause lock") = true;
        LogReaderPause(self.reader_paused.clone())
    }

    /// Every stderr line so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// stderr so far, one string.
    pub fn log_text(&self) -> String {
        self.log_lines().join("\n")
    }

    /// Waits until some stderr line satisfies `pred`.
    pub async fn wait_for_log(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
        wait_until(timeout, || {
            let found = self.log.lock().expect("log lock").iter().any(|l| pred(l));
            async move { found }
        })
        .await
    }

    /// The admin `/metrics` text.
    pub async fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics")
            .await
            .map(|r| r.text())
            .unwrap_or_default()
    }

    /// The value of the series whose line starts with `series` (name and labels exactly as
    /// exposed, e.g. `portcullis_upstream_healthy{endpoint="127.0.0.1:8080"}`).
    pub async fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics().await, series)
    }

    /// `portcullis_config_generation`: how many tables have gone live.
    pub async fn generation(&self) -> u64 {
        self.metric("portcullis_config_generation")
            .await
            .unwrap_or(0.0) as u64
    }

    /// Waits until a table newer than `after` is live; returns the new generation.
    pub async fn wait_generation_above(&self, after: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let now = self.generation().await;
            if now > after {
                return now;
            }
            assert!(
                Instant::now() < deadline,
                "no table newer than generation {after} within {timeout:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The admin `/table` JSON (`check --output json` of the live build).
    pub async fn table(&self) -> serde_json::Value {
        let response = admin_get(self.admin, "/table").await.expect("GET /table");
        assert_eq!(response.status, 200, "/table: {}", response.text());
        serde_json::from_slice(&response.body).expect("/table is JSON")
    }

    /// Waits until `/table` satisfies `pred`; returns it (panics with the last one otherwise).
    pub async fn wait_for_table(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let table = self.table().await;
            if pred(&table) {
                return table;
            }
            if Instant::now() > deadline {
                panic!("/table never showed {what} within {timeout:?}; last: {table:#}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and returns at once (the binary keeps running while it drains).
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            sigterm(child);
        }
    }

    /// Waits (up to `timeout`) for the exit status after a [`Binary::terminate`].
    pub async fn exited(mut self, timeout: Duration) -> ExitStatus {
        self.wait_exited(timeout).await
    }

    /// Like [`Binary::exited`], keeping the binary's stderr lines readable afterwards.
    pub async fn wait_exited(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("no exit within {timeout:?}:\n{}", self.log_text());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends SIGTERM and waits (up to `timeout`) for the exit status.
    pub async fn stop(self, timeout: Duration) -> ExitStatus {
        self.terminate();
        self.exited(timeout).await
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        sigterm(&child);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Parses `listening http=A https=B admin=C` out of a text log line.
pub fn parse_listening(line: &str) -> Option<(SocketAddr, SocketAddr, SocketAddr)> {
    // `--log-format json`: the same line as an object.
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line)
        && json["message"] == "listening"
    {
        let field = |name: &str| json[name].as_str()?.parse().ok();
        return Some((field("http")?, field("https")?, field("admin")?));
    }
    let rest = &line[line.find("listening http=")? + "listening ".len()..];
    let field = |name: &str| -> Option<SocketAddr> {
        rest.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    Some((field("http")?, field("https")?, field("admin")?))
}

/// The value of the first line of Prometheus text `metrics` that starts with `series` followed
/// by a space.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// `portcullis check DIR`, run to completion.
pub fn check(dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .arg(dir)
        .output()
        .expect("run portcullis check")
}

/// Every diagnostic of a `/table` JSON ([`Binary::table`]) as one line:
/// `severity object field message`.
pub fn diagnostics(table: &serde_json::Value) -> Vec<String> {
    table["diagnostics"]
        .as_array()
        .map(|ds| {
            ds.iter()
                .map(|d| {
                    format!(
                        "{} {} {} {}",
                        d["severity"].as_str().unwrap_or_default(),
                        d["object"].as_str().unwrap_or_default(),
                        d["field"].as_str().unwrap_or_default(),
                        d["message"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The host names of a `/table` JSON ([`Binary::table`]).
pub fn hosts(table: &serde_json::Value) -> Vec<String> {
    table["table"]["hosts"]
        .as_array()
        .map(|hs| {
            hs.iter()
                .filter_map(|h| h["host"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
