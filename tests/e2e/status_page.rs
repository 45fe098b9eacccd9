//! End to end, the built binary: the live status page on the admin listener (issue 15, item 1).
//!
//! - `GET /api/v1/status` is the documented `v1` JSON document: hosts with TLS mode and
//!   certificate (subject, SANs, issuer, days to expiry, source Secret), routes → Services →
//!   endpoints with health and the last probe, per-host counters read from the metrics, the
//!   last rebuild and the diagnostics.
//! - `/`, `/status.js`, `/status.css` carry a strict Content-Security-Policy; everything is
//!   read-only (POST answers 405).
//! - In a real browser (`tests/browser/status_page.mjs`: headless Chromium driven by
//!   playwright-core): no console errors or CSP violations, the hosts are listed, and an endpoint
//!   whose backend stops turns down within a few seconds. Skipped with a notice when Chromium,
//!   Node or `tests/browser/node_modules/playwright-core` is missing, unless `CI` is set: then
//!   it fails (`.ci/run` installs them).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use http::Method;
use serde_json::Value;

use crate::support::backends;
use crate::support::binary::Binary;
use crate::support::http::{admin_get, get, send};
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::pki::Ca;

const PLAIN: &str = "plain.status.test";
const SECURE: &str = "secure.status.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_api_shape_csp_and_read_only() {
    let ca = Ca::new("status page ca");
    let leaf = ca.leaf(&[SECURE]);
    let backend = backends::http("web").await;
    let gone = backends::http("gone").await;
    let gone_addr = gone.addr;
    gone.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("web", &[backend.addr.port()]));
    manifests::write(m, "gone.yaml", &service("gone", &[gone_addr.port()]));
    manifests::write(
        m,
        "secret.yaml",
        &leaf.secret_yaml(manifests::NS, "secure-tls"),
    );
    let fast = [("portcullis.io/health-check-interval", "200ms")];
    manifests::write(
        m,
        "plain.yaml",
        &ingress("plain", PLAIN, "web", &fast, None),
    );
    manifests::write(
        m,
        "secure.yaml",
        &ingress("secure", SECURE, "gone", &fast, Some("secure-tls")),
    );
    // A diagnostic to show: a Service that does not exist.
    manifests::write(
        m,
        "broken.yaml",
        &ingress("broken", "broken.status.test", "missing", &[], None),
    );
    let proxy = Binary::start(m).await;

    for i in 0..3 {
        let answer = get(proxy.http, PLAIN, &format!("/{i}"), &[]).await;
        assert_eq!(answer.status, 200);
    }

    // The endpoint whose backend is gone turns down, with a failed last probe.
    let deadline = Instant::now() + Duration::from_secs(5);
    let doc = loop {
        let doc = status_doc(proxy.admin).await;
        if endpoint_state(&doc, SECURE) == "down" {
            break doc;
        }
        assert!(Instant::now() < deadline, "never shown down: {doc:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    assert_eq!(doc["api_version"], "v1");
    assert_eq!(doc["ready"], true);
    assert!(doc["generated_at_unix_ms"].as_u64().unwrap() > 0);
    assert!(
        doc["rebuild"]["generation"].as_u64().unwrap() >= 1,
        "{doc:#}"
    );
    assert!(doc["rebuild"]["at_unix_ms"].as_u64().unwrap() > 0);
    assert!(doc["rebuild"]["build_ms"].as_f64().is_some());

    let plain = host(&doc, PLAIN);
    assert_eq!(plain["tls_mode"], "terminate");
    assert!(
        plain["certificate"].is_null(),
        "no Secret: default certificate"
    );
    assert_eq!(plain["routes"][0]["path"], "/");
    assert_eq!(plain["routes"][0]["ingress"], "default/plain");
    let upstream = &plain["routes"][0]["upstream"];
    assert_eq!(upstream["service"], "default/web:80");
    let endpoint = &upstream["endpoints"][0];
    assert_eq!(endpoint["address"], backend.addr.to_string());
    assert_eq!(endpoint["state"], "up");
    assert_eq!(endpoint["probed"], true);
    assert_eq!(endpoint["last_probe"]["ok"], true, "{endpoint:#}");
    assert!(endpoint["last_probe"]["latency_ms"].as_f64().is_some());
    assert_eq!(endpoint["metrics"]["upstream_healthy"], 1.0);
    assert_eq!(plain["counters"]["requests"]["2xx"], 3, "{plain:#}");
    assert_eq!(plain["counters"]["errors"], 0);

    let secure = host(&doc, SECURE);
    let cert = &secure["certificate"];
    assert_eq!(cert["subject"], format!("CN={SECURE}"));
    assert_eq!(cert["dns_names"], serde_json::json!([SECURE]));
    assert!(
        cert["issuer"]
            .as_str()
            .is_some_and(|i| i.contains("status page ca")),
        "{cert:#}"
    );
    assert!(cert["days_to_expiry"].as_i64().unwrap() > 0, "{cert:#}");
    assert_eq!(cert["source"], "Secret default/secure-tls");
    let gone = &secure["routes"][0]["upstream"]["endpoints"][0];
    assert_eq!(gone["last_probe"]["ok"], false, "{gone:#}");
    assert!(gone["last_probe"]["error"].is_string());

    let diagnostics = doc["diagnostics"].as_array().unwrap();
    assert!(
        diagnostics
            .iter()
            .any(|d| d["object"] == "Ingress default/broken" && d["severity"].is_string()),
        "{doc:#}"
    );
    assert!(doc["process"]["tls_handshakes"].is_object());

    // The page and its assets, under the strict policy.
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/status.js", "text/javascript; charset=utf-8"),
        ("/status.css", "text/css; charset=utf-8"),
        ("/api/v1/status", "application/json"),
    ] {
        let answer = admin_get(proxy.admin, path).await.unwrap();
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.header("content-type"), content_type, "{path}");
        let csp = answer.header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "img-src 'self' data:",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: {directive} missing in {csp}"
            );
        }
        assert_eq!(answer.header("x-content-type-options"), "nosniff");
    }
    let page = admin_get(proxy.admin, "/").await.unwrap().text();
    assert!(page.contains(r#"<script src="/status.js""#), "{page}");

    // Read-only.
    for path in ["/", "/api/v1/status", "/status.js"] {
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let answer = send(proxy.admin, method.clone(), "admin", path, b"{}").await;
            assert_eq!(answer.status, 405, "{method} {path}");
        }
    }
}

/// `GET /api/v1/status`, parsed (also used by `status_counters.rs`).
pub(crate) async fn status_doc(admin: SocketAddr) -> Value {
    let answer = admin_get(admin, "/api/v1/status")
        .await
        .expect("GET /api/v1/status");
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), "application/json");
    serde_json::from_slice(&answer.body).expect("JSON")
}

/// The host `name` of a status document.
pub(crate) fn host(doc: &Value, name: &str) -> Value {
    doc["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["host"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{name} not listed in {doc:#}"))
}

/// The state of the first endpoint of the first route of host `name`.
fn endpoint_state(doc: &Value, name: &str) -> String {
    host(doc, name)["routes"][0]["upstream"]["endpoints"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// What the browser test needs, or why it cannot run.
fn browser_tools() -> Result<(PathBuf, PathBuf), String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if !chromium.exists() {
        return Err(format!(
            "{} not found (apt-get install chromium)",
            chromium.display()
        ));
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("node not found (apt-get install nodejs npm)".to_string());
    }
    let module = root.join("tests/browser/node_modules/playwright-core");
    if !module.exists() {
        return Err(format!(
            "{} not found (npm ci --prefix tests/browser)",
            module.display()
        ));
    }
    Ok((chromium, root.join("tests/browser/status_page.mjs")))
}

/// The page in headless Chromium: see `tests/browser/status_page.mjs`. Set
/// `PORTCULLIS_STATUS_SCREENSHOT=docs/status-page.png` to refresh the README's screenshot.
#[test]
fn status_page_in_a_real_browser() {
    let (chromium, script) = match browser_tools() {
        Ok(tools) => tools,
        Err(missing) if std::env::var_os("CI").is_some() => {
            panic!("CI is set but the browser test cannot run: {missing}")
        }
        Err(missing) => {
            eprintln!("skipping the browser test of the status page: {missing}");
            return;
        }
    };
    let output = Command::new("node")
        .arg(&script)
        .arg(env!("CARGO_BIN_EXE_portcullis"))
        .env("CHROMIUM", &chromium)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run node");
    assert!(
        output.status.success(),
        "{} failed:\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
