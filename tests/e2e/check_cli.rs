//! `portcullis check`, `crd` and `controller` as a user runs them: the built binary, exit codes
//! and output.

use std::process::Command;

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

#[test]
fn check_a_file_instead_of_a_directory_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("x.yaml");
    std::fs::write(&file, "").unwrap();
    let (code, _, stderr) = run(&["check", file.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not a directory"), "{stderr}");
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
