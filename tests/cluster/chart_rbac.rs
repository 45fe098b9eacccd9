//! The Helm chart's RBAC grants exactly what `portcullis::cluster::rbac::grants` derives from
//! `API_ACCESS`: nothing missing, nothing extra, and at the right scope. (That the code makes
//! only those calls, and all of them, is held by the mocked API server of tests/support/mock_api.rs
//! and the whole-life tests of tests/cluster/rbac.rs.)
//!
//! The chart is rendered with the helm binary at `$HELM`, or `helm` on PATH (.ci/packaging.sh
//! installs one and exports `HELM`). Without helm, the default-values case reads
//! `manifests/portcullis.yaml`, which is the chart rendered with default values (kept in sync by
//! `packaging/render-manifests.sh --check`), and the cases with other values are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use portcullis::cluster::rbac::{self, Grant, RoleScope};
use serde_json::Value;

pub(crate) const RELEASE_NAMESPACE: &str = "portcullis";

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The helm binary, if one runs (tests/cluster/chart_values.rs uses it too).
pub(crate) fn helm() -> Option<PathBuf> {
    let candidate = std::env::var_os("HELM")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("helm"));
    let runs = Command::new(&candidate)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !runs {
        eprintln!("no helm at $HELM or on PATH: skipping");
    }
    runs.then_some(candidate)
}

/// `helm template` of the chart with extra `--set`/`-f` arguments, succeeded or not.
pub(crate) fn render(helm: &Path, args: &[&str]) -> Output {
    Command::new(helm)
        .current_dir(repo())
        .args(["template", "portcullis", "charts/portcullis"])
        .args(["--namespace", RELEASE_NAMESPACE])
        .args(args)
        .output()
        .expect("helm runs")
}

/// `helm template` of the chart with extra `--set`/`-f` arguments, which must succeed.
pub(crate) fn helm_template(helm: &Path, args: &[&str]) -> String {
    let out = render(helm, args);
    assert!(
        out.status.success(),
        "helm template {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

pub(crate) fn objects(yaml: &str) -> Vec<Value> {
    let docs: Vec<Option<Value>> = serde_saphyr::from_multiple(yaml).expect("rendered YAML parses");
    docs.into_iter()
        .flatten()
        .filter(|d| !d.is_null())
        .collect()
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// Every permission the rendered objects grant to the controller's ServiceAccount: the rules of
/// each (Cluster)Role that a (Cluster)RoleBinding binds to that account.
fn granted(objects: &[Value]) -> BTreeSet<Grant> {
    let service_accounts: BTreeSet<(String, String)> = objects
        .iter()
        .filter(|o| o["kind"] == "ServiceAccount")
        .map(|o| {
            let ns = o["metadata"]["namespace"]
                .as_str()
                .unwrap_or(RELEASE_NAMESPACE);
            (
                ns.to_string(),
                o["metadata"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        service_accounts.len(),
        1,
        "one ServiceAccount: {service_accounts:?}"
    );

    // (kind, namespace or "", name) → rules
    let mut roles: BTreeMap<(String, String, String), &Value> = BTreeMap::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or_default();
        if kind == "ClusterRole" || kind == "Role" {
            let ns = o["metadata"]["namespace"].as_str().unwrap_or_default();
            let name = o["metadata"]["name"].as_str().unwrap();
            let key = (kind.to_string(), ns.to_string(), name.to_string());
            assert!(
                roles.insert(key, &o["rules"]).is_none(),
                "duplicate {kind} {ns}/{name}"
            );
        }
    }

    let mut grants = BTreeSet::new();
    let mut bound = BTreeSet::new();
    for binding in objects {
        let kind = binding["kind"].as_str().unwrap_or_default();
        let (role_kind, scope) = match kind {
            "ClusterRoleBinding" => ("ClusterRole", RoleScope::Cluster),
            "RoleBinding" => {
                let ns = binding["metadata"]["namespace"]
                    .as_str()
                    .expect("RoleBinding namespace");
                let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
                (role_kind, RoleScope::Namespace(ns.to_string()))
            }
            _ => continue,
        };
        let subjects = binding["subjects"].as_array().expect("binding subjects");
        for s in subjects {
            assert_eq!(
                s["kind"], "ServiceAccount",
                "only our ServiceAccount is bound: {s}"
            );
            let sa = (
                s["namespace"].as_str().unwrap().to_string(),
                s["name"].as_str().unwrap().to_string(),
            );
            assert!(
                service_accounts.contains(&sa),
                "binding to a foreign account: {s}"
            );
        }
        let role_ns = match (&scope, role_kind) {
            (RoleScope::Namespace(ns), "Role") => ns.clone(),
            _ => String::new(),
        };
        let role_name = binding["roleRef"]["name"].as_str().unwrap();
        let key = (role_kind.to_string(), role_ns, role_name.to_string());
        let rules = roles
            .get(&key)
            .unwrap_or_else(|| panic!("{kind} refers to a missing role {key:?}"));
        bound.insert(key);
        for rule in rules.as_array().expect("rules is a list") {
            assert!(
                rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(),
                "unexpected rule shape: {rule}"
            );
            for group in str_list(&rule["apiGroups"]) {
                for resource in str_list(&rule["resources"]) {
                    for verb in str_list(&rule["verbs"]) {
                        grants.insert(Grant {
                            scope: scope.clone(),
                            group: group.clone(),
                            resource: resource.clone(),
                            verb,
                        });
                    }
                }
            }
        }
    }
    let unbound: Vec<_> = roles.keys().filter(|k| !bound.contains(*k)).collect();
    assert!(unbound.is_empty(), "roles bound to nobody: {unbound:?}");
    grants
}

/// What the chart must grant to a release in [`RELEASE_NAMESPACE`] watching `watch_namespace`.
fn needed(watch_namespace: Option<&str>) -> BTreeSet<Grant> {
    rbac::grants(RELEASE_NAMESPACE, watch_namespace)
}

/// What `needed` has and `granted` lacks, and what `granted` has beyond `needed`.
fn differences<'a>(
    granted: &'a BTreeSet<Grant>,
    needed: &'a BTreeSet<Grant>,
) -> (Vec<&'a Grant>, Vec<&'a Grant>) {
    (
        needed.difference(granted).collect(),
        granted.difference(needed).collect(),
    )
}

fn assert_same(granted: &BTreeSet<Grant>, needed: &BTreeSet<Grant>, case: &str) {
    let (missing, extra) = differences(granted, needed);
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{case}: chart RBAC differs from src/rbac.rs grants(API_ACCESS)\n\
         missing (the code calls it, the chart does not grant it): {missing:#?}\n\
         extra (granted, but src/rbac.rs API_ACCESS does not list it): {extra:#?}"
    );
}

#[test]
fn default_values_grant_exactly_api_access() {
    let yaml = match helm() {
        Some(helm) => helm_template(&helm, &[]),
        None => {
            eprintln!("no helm at $HELM or on PATH: checking manifests/portcullis.yaml instead");
            std::fs::read_to_string(repo().join("manifests/portcullis.yaml")).unwrap()
        }
    };
    assert_same(&granted(&objects(&yaml)), &needed(None), "default values");
}

#[test]
fn committed_manifests_grant_exactly_api_access() {
    let yaml = std::fs::read_to_string(repo().join("manifests/portcullis.yaml")).unwrap();
    assert_same(
        &granted(&objects(&yaml)),
        &needed(None),
        "manifests/portcullis.yaml",
    );
}

#[test]
fn watch_namespace_uses_roles_for_namespaced_kinds() {
    let Some(helm) = helm() else {
        eprintln!("no helm at $HELM or on PATH: skipping the watchNamespace renders");
        return;
    };
    // Another namespace: a Role there, and Services and Secrets in the release namespace.
    let yaml = helm_template(&helm, &["--set", "controller.watchNamespace=apps"]);
    let want = needed(Some("apps"));
    assert_same(&granted(&objects(&yaml)), &want, "watchNamespace=apps");
    // The release namespace itself.
    let yaml = helm_template(&helm, &["--set", "controller.watchNamespace=portcullis"]);
    let want = needed(Some(RELEASE_NAMESPACE));
    assert_same(
        &granted(&objects(&yaml)),
        &want,
        "watchNamespace=portcullis",
    );
}

#[test]
fn ci_values_files_grant_exactly_api_access() {
    let Some(helm) = helm() else {
        eprintln!("no helm at $HELM or on PATH: skipping the CI values renders");
        return;
    };
    let cases: &[(&str, Option<&str>)] = &[
        ("charts/portcullis/ci/all-on-values.yaml", Some("apps")),
        (
            "charts/portcullis/ci/daemonset-values.yaml",
            Some(RELEASE_NAMESPACE),
        ),
    ];
    for (file, watch) in cases {
        let yaml = helm_template(&helm, &["-f", file]);
        assert_same(&granted(&objects(&yaml)), &needed(*watch), file);
    }
}

#[test]
fn rbac_create_false_grants_nothing() {
    let Some(helm) = helm() else {
        eprintln!("no helm at $HELM or on PATH: skipping the rbac.create=false render");
        return;
    };
    let yaml = helm_template(&helm, &["--set", "rbac.create=false"]);
    assert!(granted(&objects(&yaml)).is_empty());
}

/// The comparison can fail: a rendered chart with one verb more on the Lease and the Event
/// rule gone is reported both ways.
#[test]
fn a_chart_that_differs_is_reported_both_ways() {
    let yaml = std::fs::read_to_string(repo().join("manifests/portcullis.yaml")).unwrap();
    let mut objects = objects(&yaml);
    let mut edited = 0;
    for o in &mut objects {
        let Some(rules) = o.get_mut("rules").and_then(Value::as_array_mut) else {
            continue;
        };
        for rule in rules.iter_mut() {
            if str_list(&rule["resources"]) == ["leases"] {
                rule["verbs"].as_array_mut().unwrap().push("delete".into());
                edited += 1;
            }
        }
        let before = rules.len();
        rules.retain(|rule| str_list(&rule["resources"]) != ["events"]);
        edited += before - rules.len();
    }
    assert_eq!(
        edited, 2,
        "the manifests have one Lease rule and one Event rule"
    );
    let granted = granted(&objects);
    let needed = needed(None);
    let (missing, extra) = differences(&granted, &needed);
    let create_events = Grant {
        scope: RoleScope::Cluster,
        group: "events.k8s.io".into(),
        resource: "events".into(),
        verb: "create".into(),
    };
    let delete_leases = Grant {
        scope: RoleScope::Namespace(RELEASE_NAMESPACE.into()),
        group: "coordination.k8s.io".into(),
        resource: "leases".into(),
        verb: "delete".into(),
    };
    assert_eq!(missing, [&create_events]);
    assert_eq!(extra, [&delete_leases]);
}
