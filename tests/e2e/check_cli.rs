//! `portcullis check`, `crd` and `controller` as a user runs them: the built binary, exit codes
//! and output.

use std::process::{Command, Stdio};

use crate::support::manifests;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run portcullis");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_missing_directory_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let (code, _, stderr) = run(&["check", missing.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
}

/// Runs the binary with `stdin` as its standard input.
fn run_with_stdin(args: &[&str], stdin: &str) -> (Option<i32>, String, String) {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run portcullis");
    let mut input = child.stdin.take().expect("stdin");
    let text = stdin.to_string();
    // Written from a thread, so a large input cannot deadlock against a full stdout pipe.
    let writer = std::thread::spawn(move || input.write_all(text.as_bytes()));
    let out = child.wait_with_output().expect("wait for portcullis");
    writer.join().expect("writer").expect("write stdin");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What `kubectl get ingressclass,ingress,service,secret,endpointslice -A -o yaml` prints for
/// a cluster leaving ingress-nginx (one `kind: List`).
const LEAVING_NGINX: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/check/leaving-nginx.yaml"
);

/// The `Ingress ns/name: verdict` lines of a text report, sorted.
fn verdict_lines(stdout: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("Ingress ") && l.contains(": "))
        .collect();
    lines.sort();
    lines
}

#[test]
fn check_a_single_file_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.yaml");
    std::fs::write(&file, "").unwrap();
    let (code, stdout, stderr) = run(&["check", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("no problems found"), "{stdout}");
    assert_eq!(run_with_stdin(&["check", "-"], "").0, Some(0));
}

#[test]
fn check_a_single_input_that_does_not_parse_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: Service\nmetadata: [\n").unwrap();
    let (code, _, stderr) = run(&["check", file.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("bad.yaml"), "{stderr}");
    assert!(stderr.contains("line "), "{stderr}");
    let (code, _, stderr) = run_with_stdin(&["check", "-"], "kind: [\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("<stdin>"), "{stderr}");
    // A list item of a kind we read that does not parse: the item is named.
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n  spec: {ports: 12}\n";
    let (code, _, stderr) = run_with_stdin(&["check", "-"], list);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("items[0]"), "{stderr}");
}

#[test]
fn check_a_cluster_leaving_ingress_nginx() {
    let (code, stdout, stderr) = run(&["check", "--as-class", "nginx", LEAVING_NGINX]);
    assert_eq!(code, Some(1), "refused Ingresses exit 1\n{stdout}{stderr}");
    assert_eq!(
        verdict_lines(&stdout),
        [
            "Ingress billing/invoices: serves with warnings",
            "Ingress billing/reports: refused",
            "Ingress billing/webhooks: serves",
            "Ingress shop/admin: refused",
            "Ingress shop/api: serves with warnings",
            "Ingress shop/storefront: serves",
        ],
        "{stdout}"
    );
    for line in [
        // A snippet's effect cannot be known: refused (src/model/annotation_catalog.rs).
        "  annotation nginx.ingress.kubernetes.io/server-snippet: refused",
        // Access control, implemented: read as ours.
        "  annotation nginx.ingress.kubernetes.io/whitelist-source-range: ok",
        // Tuning: served, with a warning.
        "  annotation nginx.ingress.kubernetes.io/proxy-buffering: warning",
        // Read as ours.
        "  annotation nginx.ingress.kubernetes.io/proxy-read-timeout: ok",
        "  annotation nginx.ingress.kubernetes.io/ssl-redirect: ok",
        "  annotation nginx.ingress.kubernetes.io/ssl-passthrough: ok",
        "  annotation nginx.ingress.kubernetes.io/auth-url: ok",
        "  annotation nginx.ingress.kubernetes.io/auth-signin: ok",
        // Another controller's Ingress is listed, not judged.
        "  Ingress billing/internal (class traefik)",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in\n{stdout}");
    }
    // The old API version is named, with the object, the file and what to use instead.
    let v1beta1 = stdout
        .lines()
        .find(|l| l.contains("error: Ingress billing/reports apiVersion: extensions/v1beta1"))
        .unwrap_or_else(|| panic!("no v1beta1 diagnostic in\n{stdout}"));
    assert!(
        v1beta1.contains("leaving-nginx.yaml, items[6]"),
        "{v1beta1}"
    );
    assert!(v1beta1.contains("networking.k8s.io/v1 "), "{v1beta1}");
    assert!(v1beta1.contains("1.22"), "{v1beta1}");
    assert!(v1beta1.contains("(UnsupportedApiVersion)"), "{v1beta1}");
    // What is served is served as before: the TLS Secret from the list, the pass-through.
    assert!(
        stdout.contains("from Secret shop/shop-tls"),
        "certificate from the list's Secret\n{stdout}"
    );
    assert!(
        stdout.contains("hooks.billing.example.com  (passthrough, owner billing/webhooks)"),
        "{stdout}"
    );
    // A refused Ingress routes nothing; the oauth2-proxy one is served behind its auth-url;
    // kubectl's bookkeeping annotations are not listed.
    assert!(
        !stdout
            .lines()
            .any(|l| l.starts_with("admin.shop.example.com  (")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("billing.example.com  (")),
        "{stdout}"
    );
    assert!(!stdout.contains("last-applied-configuration"), "{stdout}");
    assert!(
        stdout.contains("6 Ingresses checked: 2 serve, 2 serve with warnings, 2 refused"),
        "{stdout}"
    );
}

#[test]
fn check_reads_stdin_like_a_file() {
    let text = std::fs::read_to_string(LEAVING_NGINX).unwrap();
    let (file_code, from_file, _) = run(&["check", "--as-class", "nginx", LEAVING_NGINX]);
    let (code, from_stdin, stderr) = run_with_stdin(&["check", "--as-class", "nginx", "-"], &text);
    assert_eq!(code, file_code, "{stderr}");
    assert_eq!(code, Some(1));
    assert_eq!(
        from_stdin.replace("<stdin>", "FILE"),
        from_file.replace(LEAVING_NGINX, "FILE")
    );
    assert!(
        from_stdin.contains("extensions/v1beta1 Ingress (in <stdin>, items[6]"),
        "{from_stdin}"
    );
}

#[test]
fn check_without_as_class_judges_only_our_class() {
    let (code, stdout, _) = run(&["check", LEAVING_NGINX]);
    // The extensions/v1beta1 Ingress is still an error: nothing is skipped silently.
    assert_eq!(code, Some(1), "{stdout}");
    assert_eq!(
        verdict_lines(&stdout),
        ["Ingress billing/reports: refused"],
        "{stdout}"
    );
    assert!(stdout.contains("no hosts"), "{stdout}");
    for line in [
        "  Ingress shop/storefront (class nginx)",
        "  Ingress billing/invoices (class nginx)",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in\n{stdout}");
    }
}

#[test]
fn check_json_carries_the_verdicts() {
    let (code, stdout, stderr) = run(&[
        "check",
        "--as-class",
        "nginx",
        "--output",
        "json",
        LEAVING_NGINX,
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON output");
    // The existing fields are still there.
    assert!(json["table"]["hosts"].is_array(), "{json}");
    assert!(json["diagnostics"].is_array(), "{json}");
    let verdicts: std::collections::BTreeMap<&str, &str> = json["ingresses"]
        .as_array()
        .expect("ingresses")
        .iter()
        .map(|i| {
            (
                i["ingress"].as_str().unwrap(),
                i["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("billing/invoices", "serves with warnings"),
            ("billing/reports", "refused"),
            ("billing/webhooks", "serves"),
            ("shop/admin", "refused"),
            ("shop/api", "serves with warnings"),
            ("shop/storefront", "serves"),
        ]
        .into_iter()
        .collect(),
    );
    let admin = json["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ingress"] == "shop/admin")
        .unwrap();
    assert_eq!(
        admin["annotations"][0]["key"],
        "nginx.ingress.kubernetes.io/server-snippet"
    );
    assert_eq!(admin["annotations"][0]["status"], "refused");
    assert_eq!(
        admin["annotations"][1]["key"],
        "nginx.ingress.kubernetes.io/whitelist-source-range"
    );
    assert_eq!(admin["annotations"][1]["status"], "ok");
    assert_eq!(admin["diagnostics"][0]["severity"], "error");
    let reports = json["ingresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ingress"] == "billing/reports")
        .unwrap();
    assert_eq!(reports["diagnostics"][0]["reason"], "UnsupportedApiVersion");
    assert_eq!(json["not_ours"][0]["ingress"], "billing/internal");
    assert_eq!(json["not_ours"][0]["class"], "traefik");
}

#[test]
fn check_with_only_warnings_exits_0() {
    // A typed list (what the API returns for one kind): items without apiVersion and kind;
    // the legacy class annotation; a tuning annotation (served, warned).
    let list = "\
apiVersion: networking.k8s.io/v1
kind: IngressList
items:
- metadata:
    name: web
    namespace: shop
    annotations:
      kubernetes.io/ingress.class: nginx
      nginx.ingress.kubernetes.io/proxy-buffering: \"off\"
  spec:
    rules:
    - host: web.example.com
      http:
        paths:
        - path: /
          pathType: Prefix
          backend:
            service: {name: web, port: {number: 80}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 80}]
";
    let (code, stdout, stderr) = run_with_stdin(&["check", "--as-class", "nginx", "-"], list);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        verdict_lines(&stdout),
        ["Ingress shop/web: serves with warnings"],
        "{stdout}"
    );
}

#[test]
fn check_without_a_directory_or_with_a_bad_flag_is_a_usage_error() {
    assert_eq!(run(&["check"]).0, Some(2));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert_eq!(run(&["check", d, "--output", "xml"]).0, Some(2));
    assert_eq!(run(&["no-such-mode"]).0, Some(2));
}

#[test]
fn check_an_empty_directory_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    assert_eq!(run(&["check", d]).0, Some(0));
    let (code, stdout, _) = run(&["check", d, "--output", "json"]);
    assert_eq!(code, Some(0));
    serde_json::from_str::<serde_json::Value>(&stdout).expect("JSON output");
}

#[test]
fn check_broken_manifest_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), "kind: Ingress\nmetadata: [\n").unwrap();
    let (code, stdout, _) = run(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(stdout.contains("bad.yaml"), "{stdout}");
}

#[test]
fn check_help_documents_inputs_and_exit_codes() {
    let (code, stdout, _) = run(&["check", "--help"]);
    assert_eq!(code, Some(0));
    for text in [
        "<PATH>",
        "`-` for standard input",
        "--as-class <NAME>",
        "Exit codes:",
    ] {
        assert!(stdout.contains(text), "{text:?} in\n{stdout}");
    }
    for code in ["  0  ", "  1  ", "  2  "] {
        assert!(stdout.contains(code), "{code:?} in\n{stdout}");
    }
}

#[test]
fn crd_prints_the_custom_resource_definition() {
    let (code, stdout, _) = run(&["crd"]);
    assert_eq!(code, Some(0));
    assert!(
        stdout.starts_with("apiVersion: apiextensions.k8s.io/v1\n"),
        "{stdout}"
    );
    assert!(stdout.contains("kind: CustomResourceDefinition"));
    assert!(stdout.contains("name: ingressclassparams.portcullis.io"));
}

#[test]
fn controller_mode_validates_flags_and_names_a_missing_cluster() {
    // Bad flag values are usage errors.
    assert_eq!(
        run(&["controller", "--publish-service", "no-slash"]).0,
        Some(2)
    );
    assert_eq!(
        run(&[
            "controller",
            "--publish-service",
            "ns/svc",
            "--publish-status-address",
            "10.0.0.1"
        ])
        .0,
        Some(2)
    );
    // No kubeconfig and not in a pod: a clear error, exit 1.
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args([
            "controller",
            "--http-addr",
            "127.0.0.1:0",
            "--https-addr",
            "127.0.0.1:0",
        ])
        .args(["--admin-addr", "127.0.0.1:0"])
        .env("HOME", home.path())
        .env("KUBECONFIG", home.path().join("missing"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("connecting to the Kubernetes API"),
        "{stderr}"
    );
}

/// `check` describes Gateway API objects as it does Ingresses: the routes in the table (with
/// their kind), the diagnostics, and each object's conditions with the spec's reasons, in
/// text and under `gateway_api` in JSON; an error condition makes the exit code 1.
#[test]
fn check_describes_gateway_api_objects_and_their_conditions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gw.yaml");
    std::fs::write(
        &file,
        manifests::gateway_with("  - {name: http, port: 80, protocol: HTTP}\n")
            + "---
apiVersion: v1
kind: Service
metadata: {name: app, namespace: default}
spec: {ports: [{name: web, port: 80}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: default}
spec:
  parentRefs: [{name: gw}]
  hostnames: [shop.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /cart}, method: POST}]
    backendRefs: [{name: app, port: 80}, {name: ghost, port: 80}]
",
    )
    .unwrap();
    let (code, stdout, stderr) = run(&["check", file.to_str().unwrap()]);
    assert_eq!(
        code,
        Some(1),
        "a backend that does not exist is an error: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("shop.test  (terminate, owner HTTPRoute default/shop)"),
        "{stdout}"
    );
    assert!(stdout.contains("when POST"), "{stdout}");
    assert!(
        stdout.contains("Gateway default/gw: Accepted, Programmed"),
        "{stdout}"
    );
    assert!(stdout.contains("listener http (1 attached)"), "{stdout}");
    assert!(
        stdout.contains(
            "HTTPRoute default/shop on Gateway gw: Accepted, ResolvedRefs false (BackendNotFound"
        ),
        "{stdout}"
    );
    let (_, json, _) = run(&["check", "--output", "json", file.to_str().unwrap()]);
    let value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let parent = &value["gateway_api"]["routes"][0]["parents"][0];
    assert_eq!(parent["parent_ref"]["name"], "gw");
    assert_eq!(parent["conditions"][1]["type"], "ResolvedRefs");
    assert_eq!(parent["conditions"][1]["reason"], "BackendNotFound");
}
