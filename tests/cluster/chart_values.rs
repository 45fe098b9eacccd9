//! The Helm chart's values reach the binary as intended: every rendered variant's container
//! arguments are accepted by the real `portcullis` command line (no unknown flag, no repeated
//! flag, every value parses); `controller.extraArgs` replaces a flag the chart sets instead of
//! repeating it; `terminationGracePeriodSeconds` follows the shutdown grace; and
//! `values.schema.json` refuses unknown keys and wrong types (issue 15: "the chart accepts any
//! value silently").
//!
//! Like tests/cluster/chart_rbac.rs, the chart is rendered with `$HELM` or `helm` on PATH; without
//! helm these tests are skipped (.ci/packaging.sh installs one).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::chart_rbac::{helm, helm_template, render, repo};

/// The rendered objects of `helm template` with `args`, which must succeed.
fn objects(helm: &Path, args: &[&str]) -> Vec<Value> {
    crate::chart_rbac::objects(&helm_template(helm, args))
}

/// The error of `helm template` with `args`, which must fail.
fn refusal(helm: &Path, args: &[&str]) -> String {
    let out = render(helm, args);
    assert!(!out.status.success(), "helm template {args:?} rendered");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The controller's pod spec (Deployment or DaemonSet).
fn pod_spec(objects: &[Value]) -> &Value {
    objects
        .iter()
        .find(|o| matches!(o["kind"].as_str(), Some("Deployment" | "DaemonSet")))
        .map(|o| &o["spec"]["template"]["spec"])
        .expect("a controller workload")
}

fn container_args(objects: &[Value]) -> Vec<String> {
    pod_spec(objects)["containers"][0]["args"]
        .as_array()
        .expect("container args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect()
}

fn grace(objects: &[Value]) -> u64 {
    pod_spec(objects)["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds")
}

/// The binary parses `args` (`controller ...`): clap parses every argument before acting on
/// the trailing `--help`, so an unknown flag, a repeated one or a bad value fails here.
fn assert_binary_accepts(args: &[String], variant: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .arg("--help")
        .output()
        .expect("portcullis runs");
    assert!(
        out.status.success(),
        "{variant}: portcullis refuses the chart's args {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_variant_renders_args_the_binary_accepts() {
    let Some(helm) = helm() else { return };
    let mut variants: Vec<(String, Vec<String>)> = vec![("default values".into(), vec![])];
    let ci = repo().join("charts/portcullis/ci");
    let mut files: Vec<_> = std::fs::read_dir(&ci)
        .expect("charts/portcullis/ci")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with("-values.yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "ci/ values files: {files:?}");
    for file in files {
        let file = file.to_string_lossy().into_owned();
        variants.push((file.clone(), vec!["-f".into(), file]));
    }
    variants.push((
        "every extraArgs form".into(),
        vec![
            "--set".into(),
            "controller.extraArgs={--shutdown-grace=60s,--log-format,text,--update-status-on-shutdown,--log-level=debug}".into(),
        ],
    ));
    for (variant, set) in &variants {
        let set: Vec<&str> = set.iter().map(String::as_str).collect();
        let args = container_args(&objects(&helm, &set));
        assert_eq!(args[0], "controller", "{variant}");
        assert_binary_accepts(&args, variant);
    }
}

#[test]
fn extra_args_replace_the_flags_the_chart_sets() {
    let Some(helm) = helm() else { return };
    let rendered = objects(
        &helm,
        &[
            "--set",
            "controller.extraArgs={--shutdown-grace=60s,--log-format,text,--log-level=debug}",
        ],
    );
    let args = container_args(&rendered);
    let named = |flag: &str| {
        args.iter()
            .filter(|a| a.starts_with(&format!("--{flag}=")))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        named("shutdown-grace"),
        ["--shutdown-grace=60s"],
        "{args:?}"
    );
    assert_eq!(named("log-format"), ["--log-format=text"], "{args:?}");
    assert_eq!(named("log-level"), ["--log-level=debug"], "{args:?}");
    // The chart's other flags stay.
    assert_eq!(
        named("ingress-class"),
        ["--ingress-class=portcullis"],
        "{args:?}"
    );
    // preStop 5 s + 60 s drain + 10 s margin: the pod outlives the drain (issue 15: 60s left 45).
    assert_eq!(grace(&rendered), 75);

    // --publish-status-address in extraArgs replaces the chart's alternative --publish-service.
    let args = container_args(&objects(
        &helm,
        &[
            "--set",
            "controller.extraArgs={--publish-status-address=192.0.2.1}",
        ],
    ));
    assert!(
        args.contains(&"--publish-status-address=192.0.2.1".to_string()),
        "{args:?}"
    );
    assert!(
        !args.iter().any(|a| a.starts_with("--publish-service")),
        "{args:?}"
    );
}

#[test]
fn termination_grace_follows_the_shutdown_grace() {
    let Some(helm) = helm() else { return };
    assert_eq!(grace(&objects(&helm, &[])), 5 + 30 + 10);
    assert_eq!(
        grace(&objects(&helm, &["--set", "controller.shutdownGrace=2m"])),
        5 + 120 + 10
    );
    let rounded_up = objects(
        &helm,
        &[
            "--set",
            "controller.shutdownGrace=1500ms",
            "--set",
            "preStopSleepSeconds=0",
            "--set",
            "terminationGraceMarginSeconds=3",
        ],
    );
    assert_eq!(grace(&rounded_up), 2 + 3);
    // An explicit value wins when it covers the drain, and fails the render when it does not.
    assert_eq!(
        grace(&objects(
            &helm,
            &["--set", "terminationGracePeriodSeconds=120"]
        )),
        120
    );
    let err = refusal(
        &helm,
        &[
            "--set",
            "terminationGracePeriodSeconds=45",
            "--set",
            "controller.extraArgs={--shutdown-grace,60s}",
        ],
    );
    assert!(err.contains("killed mid-drain"), "{err}");
}

/// The pause between "not ready" and the drain: the kubelet's preStop `sleep` action where the
/// API server has it (1.30+), else the controller's own `--shutdown-delay` of the same length, so
/// the chart installs on 1.25–1.29 without a preStop hook the API server would refuse.
#[test]
fn the_prestop_pause_fits_the_kubernetes_version() {
    let Some(helm) = helm() else { return };
    let lifecycle = |objects: &[Value]| pod_spec(objects)["containers"][0]["lifecycle"].clone();
    for version in ["1.30.0", "1.31.4-eks-1234", "1.35.0"] {
        let rendered = objects(&helm, &["--kube-version", version]);
        assert_eq!(
            lifecycle(&rendered)["preStop"]["sleep"]["seconds"],
            5,
            "{version}"
        );
        let args = container_args(&rendered);
        assert!(
            !args.iter().any(|a| a.starts_with("--shutdown-delay")),
            "{version}: {args:?}"
        );
    }
    for version in ["1.25.0", "1.29.9"] {
        let rendered = objects(&helm, &["--kube-version", version]);
        assert!(lifecycle(&rendered).is_null(), "{version}");
        let args = container_args(&rendered);
        assert!(
            args.contains(&"--shutdown-delay=5s".to_string()),
            "{version}: {args:?}"
        );
        assert_binary_accepts(&args, version);
        assert_eq!(grace(&rendered), 5 + 30 + 10, "{version}");
    }
    // No pause asked for: neither.
    let none = objects(
        &helm,
        &["--kube-version", "1.29.0", "--set", "preStopSleepSeconds=0"],
    );
    assert!(lifecycle(&none).is_null());
    assert!(
        !container_args(&none)
            .iter()
            .any(|a| a.starts_with("--shutdown-delay"))
    );
}

#[test]
fn schema_refuses_unknown_keys_and_wrong_types() {
    let Some(helm) = helm() else { return };
    for (set, expected) in [
        ("hostNetwrok=true", "'hostNetwrok' not allowed"),
        ("metrics.serviceMonitor.enabled=yes", "want boolean"),
        (
            "metrics.serviceMonitr.enabled=true",
            "'serviceMonitr' not allowed",
        ),
        ("containerPorts.http=eighty", "want integer"),
        ("kind=Daemonset", "value must be one of"),
        ("controller.shutdownGrace=5d", "does not match pattern"),
    ] {
        let err = refusal(&helm, &["--set", set]);
        assert!(err.contains(expected), "--set {set}: {err}");
    }
}

#[test]
fn bare_metal_and_monitoring_values_render() {
    let Some(helm) = helm() else { return };
    let host_network = objects(&helm, &["-f", "charts/portcullis/ci/baremetal-values.yaml"]);
    let pod = pod_spec(&host_network);
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["containers"][0]["ports"][0]["hostPort"], 80);
    let err = refusal(
        &helm,
        &[
            "--set",
            "hostNetwork=true",
            "--set",
            "hostPort.enabled=true",
        ],
    );
    assert!(err.contains("must equal containerPorts"), "{err}");

    // A ServiceMonitor brings the metrics Service it scrapes, even with that one off.
    let monitored = objects(&helm, &["--set", "metrics.serviceMonitor.enabled=true"]);
    let kinds: Vec<(&str, &str)> = monitored
        .iter()
        .map(|o| {
            (
                o["kind"].as_str().unwrap_or_default(),
                o["metadata"]["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        kinds.contains(&("ServiceMonitor", "portcullis")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("Service", "portcullis-metrics")),
        "{kinds:?}"
    );
}

/// The GatewayClass is off by default (it needs the Gateway API CRDs, which the chart does not
/// install); enabled, it names the controller the binary implements, under the chosen name.
#[test]
fn the_gateway_class_is_optional_and_names_our_controller() {
    let Some(helm) = helm() else { return };
    let gateway_classes = |objects: &[Value]| -> Vec<Value> {
        objects
            .iter()
            .filter(|o| o["kind"] == "GatewayClass")
            .cloned()
            .collect()
    };
    assert!(gateway_classes(&objects(&helm, &[])).is_empty());
    let enabled = objects(
        &helm,
        &[
            "--set",
            "gatewayClass.enabled=true",
            "--set",
            "gatewayClass.name=edge",
        ],
    );
    let classes = gateway_classes(&enabled);
    assert_eq!(classes.len(), 1, "{classes:?}");
    assert_eq!(classes[0]["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(classes[0]["metadata"]["name"], "edge");
    assert_eq!(
        classes[0]["spec"]["controllerName"],
        portcullis::gateway_api::CONTROLLER_NAME
    );
    let err = refusal(&helm, &["--set", "gatewayClass.name=Edge_1"]);
    assert!(err.contains("does not match pattern"), "{err}");
}
