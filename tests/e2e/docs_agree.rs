//! End to end, the built binary: what the README and the quickstart say agrees with what runs
//! (issue 15, "docs that agree").
//!
//! - standalone mode logs its lifecycle lines under `portcullis::standalone` (cluster mode's are
//!   `portcullis::cluster`: tests/cluster/log_target.rs);
//! - an HTTP-only Ingress (no `spec.tls`, neither `ssl-redirect` nor HSTS) gets no
//!   `DefaultCertificate` warning; one that sends clients to HTTPS without a certificate does;
//! - `examples/quickstart/run.sh` (README's first command) stops the demo backends it put in
//!   the background when Portcullis stops on Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::backends;
use crate::support::binary::{Binary, check};
use crate::support::manifests::{ingress, ingress_class, service, write};
use crate::support::wait::wait_until_blocking;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn standalone_logs_under_the_standalone_target() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "class.yaml", &ingress_class());
    let bin = Binary::start(dir.path()).await;
    let text = bin.log_text();
    let listening = text
        .lines()
        .find(|l| l.contains("listening http="))
        .unwrap_or_else(|| panic!("no listening line:\n{text}"));
    assert!(listening.contains("portcullis::standalone:"), "{listening}");
    assert!(!text.contains("portcullis::cluster"), "{text}");
    bin.stop(Duration::from_secs(10)).await;
}

/// Lines of `portcullis check DIR` that carry the `DefaultCertificate` reason.
fn default_certificate_warnings(dir: &Path) -> Vec<String> {
    let out = check(dir);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("DefaultCertificate"))
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn http_only_ingress_gets_no_default_certificate_warning() {
    let web = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "class.yaml", &ingress_class());
    write(dir.path(), "svc.yaml", &service("web", &[web.addr.port()]));
    write(
        dir.path(),
        "plain.yaml",
        &ingress("plain", "plain.example.com", "web", &[], None),
    );
    assert_eq!(
        default_certificate_warnings(dir.path()),
        Vec::<String>::new()
    );

    // Served over HTTP, with no diagnostic at all in the live table either.
    let bin = Binary::start(dir.path()).await;
    let table = bin.table().await;
    let diagnostics = crate::support::binary::diagnostics(&table);
    assert!(
        !diagnostics.iter().any(|d| d.contains("certificate")),
        "{diagnostics:?}"
    );
    bin.stop(Duration::from_secs(10)).await;

    // An Ingress that redirects to HTTPS (or sets HSTS) but has no certificate: warned.
    for (name, annotation) in [
        ("redirects", ("portcullis.io/ssl-redirect", "true")),
        ("hsts", ("portcullis.io/hsts", "max-age=60")),
    ] {
        let host = format!("{name}.example.com");
        write(
            dir.path(),
            &format!("{name}.yaml"),
            &ingress(name, &host, "web", &[annotation], None),
        );
        let warnings = default_certificate_warnings(dir.path());
        assert!(
            warnings.iter().any(|w| w.contains(&host)),
            "{name}: {warnings:?}"
        );
        assert!(
            !warnings.iter().any(|w| w.contains("plain.example.com")),
            "{warnings:?}"
        );
    }
}

/// A stand-in `cargo` for `examples/quickstart/run.sh`: `build` does nothing, `run --example
/// demo_backends` becomes a long sleep that records its pid (it stands for the backends, and
/// like them it is put in the background), and `run -- standalone ...` runs the built binary
/// on `$QUICKSTART_MANIFESTS` with every listener on port 0 (the script's fixed ports may be
/// taken on a test machine), its output in `$PORTCULLIS_LOG` for a failure to show.
const FAKE_CARGO: &str = r#"#!/usr/bin/env bash
case " $* " in
  *" build "*) exit 0 ;;
  *" demo_backends "*) echo $$ >"$BACKENDS_PID"; exec sleep 300 ;;
  *" standalone "*) exec "$PORTCULLIS" standalone --manifests "$QUICKSTART_MANIFESTS" \
      --http-addr 127.0.0.1:0 --https-addr 127.0.0.1:0 --admin-addr 127.0.0.1:0 \
      --shutdown-grace 1s >>"$PORTCULLIS_LOG" 2>&1 ;;
esac
echo "fake cargo: unexpected $*" >&2
exit 3
"#;

/// `/proc/PID/stat` after the command name: state, parent, process group, ...
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Running (a zombie has exited; only its parent has not reaped it yet).
fn alive(pid: &str) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z"))
}

/// Whether a live process named `comm` is in process group `group` (no pgrep: procps may be
/// missing).
fn in_group(group: u32, comm: &str) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let pid = entry.file_name().to_string_lossy().to_string();
        pid.bytes().all(|b| b.is_ascii_digit())
            && std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm)
            && alive(&pid)
            && stat_fields(&pid).is_some_and(|f| f.get(2) == Some(&group.to_string()))
    })
}

/// The processes of group `group` as `ps -o pid,stat,wchan,cmd -g GROUP` shows them, with the
/// signals each blocks, ignores and catches (`/proc/PID/status`), and `log`'s text: what a
/// failure needs to explain itself (who is still running, waiting on what, deaf to what).
fn group_report(group: u32, log: &Path) -> String {
    let mut out = String::from("process group:\n  PID STAT WCHAN CMD | SigBlk SigIgn SigCgt\n");
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    for pid in pids {
        let id = pid.to_string();
        let Some(fields) = stat_fields(&id) else {
            continue;
        };
        if fields.get(2) != Some(&group.to_string()) {
            continue;
        }
        let read = |name: &str| std::fs::read_to_string(format!("/proc/{id}/{name}"));
        let cmd = read("cmdline")
            .map(|c| c.replace('\0', " ").trim().to_string())
            .unwrap_or_default();
        let wchan = read("wchan").unwrap_or_default();
        let masks: Vec<String> = read("status")
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                ["SigBlk:", "SigIgn:", "SigCgt:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
            .collect();
        let state = fields.first().map_or("?", String::as_str);
        out.push_str(&format!(
            "  {pid} {state} {wchan} {cmd} | {}\n",
            masks.join(" ")
        ));
    }
    let log = std::fs::read_to_string(log).unwrap_or_else(|e| format!("({e})"));
    out.push_str(&format!("portcullis output:\n{log}"));
    out
}

#[test]
fn quickstart_script_stops_the_backends_on_ctrl_c() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let tools = tempfile::tempdir().unwrap();
    let cargo = tools.path().join("cargo");
    std::fs::write(&cargo, FAKE_CARGO).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let manifests = tempfile::tempdir().unwrap();
    write(manifests.path(), "class.yaml", &ingress_class());
    let pid_file = tools.path().join("backends.pid");
    let log = tools.path().join("portcullis.log");
    let path = format!(
        "{}:{}",
        tools.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );

    // Its own process group, as a shell gives a foreground job: Ctrl-C is SIGINT to the group.
    let mut script = {
        use std::os::unix::process::CommandExt;
        Command::new("bash")
            .arg(repo.join("examples/quickstart/run.sh"))
            .env("PATH", path)
            .env("PORTCULLIS", env!("CARGO_BIN_EXE_portcullis"))
            .env("QUICKSTART_MANIFESTS", manifests.path())
            .env("BACKENDS_PID", &pid_file)
            .env("PORTCULLIS_LOG", &log)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("run examples/quickstart/run.sh")
    };
    let group = script.id();
    assert!(
        wait_until_blocking(T, || pid_file.exists()
            && std::fs::read_to_string(&pid_file).is_ok_and(|p| !p.trim().is_empty())),
        "the backends never started"
    );
    let backends = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(alive(&backends));
    assert!(
        wait_until_blocking(T, || in_group(group, "portcullis")),
        "portcullis never started\n{}",
        group_report(group, &log)
    );
    // At once, with no wait for Portcullis to be ready: a Ctrl-C in its first milliseconds
    // (while its handlers are being installed) must stop it too.

    let sent = Command::new("bash")
        .arg("-c")
        .arg(format!("kill -INT -- -{group}"))
        .status()
        .unwrap();
    assert!(sent.success());
    if !wait_until_blocking(T, || script.try_wait().unwrap().is_some()) {
        let report = group_report(group, &log);
        // Leave nothing behind for the next test: the whole group, at once.
        let _ = Command::new("bash")
            .arg("-c")
            .arg(format!("kill -KILL -- -{group}"))
            .status();
        let _ = script.wait();
        panic!("run.sh did not exit on SIGINT\n{report}");
    }
    assert!(
        wait_until_blocking(T, || !alive(&backends)),
        "the demo backends (pid {backends}) outlived run.sh\n{}",
        group_report(group, &log)
    );
}
