//! The Helm chart's RBAC grants exactly the API calls the controller makes
//! (`portcullis::rbac::API_ACCESS`): nothing missing, nothing extra, and at the right scope.
//!
//! The chart is rendered with the helm binary at `$HELM`, or `helm` on PATH (.ci/packaging.sh
//! installs one and exports `HELM`). Without helm, the default-values case reads
//! `manifests/portcullis.yaml`, which is the chart rendered with default values (kept in sync by
//! `packaging/render-manifests.sh --check`), and the cases with other values are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis::rbac::API_ACCESS;
use serde_json::Value;

const RELEASE_NAMESPACE: &str = "portcullis";

/// Kinds in API_ACCESS that are cluster-scoped: only a ClusterRole can grant them, even when
/// the controller watches a single namespace.
const CLUSTER_SCOPED: &[&str] = &["ingressclasses", "ingressclassparams"];

/// Where a rule applies: everywhere (ClusterRole) or in one namespace (Role).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    Cluster,
    Namespace(String),
}

/// One granted (or needed) permission: scope, API group, resource, verb.
type Grant = (Scope, String, String, String);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The helm binary, if one runs.
fn helm() -> Option<PathBuf> {
    let candidate = std::env::var_os("HELM")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("helm"));
    let runs = Command::new(&candidate)
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    runs.then_some(candidate)
}

/// `helm template` of the chart with extra `--set`/`-f` arguments.
fn helm_template(helm: &Path, args: &[&str]) -> String {
    let out = Command::new(helm)
        .current_dir(repo())
        .args(["template", "portcullis", "charts/portcullis"])
        .args(["--namespace", RELEASE_NAMESPACE])
        .args(args)
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn objects(yaml: &str) -> Vec<Value> {
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
            "ClusterRoleBinding" => ("ClusterRole", Scope::Cluster),
            "RoleBinding" => {
                let ns = binding["metadata"]["namespace"]
                    .as_str()
                    .expect("RoleBinding namespace");
                let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
                (role_kind, Scope::Namespace(ns.to_string()))
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
            (Scope::Namespace(ns), "Role") => ns.clone(),
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
                        grants.insert((scope.clone(), group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    let unbound: Vec<_> = roles.keys().filter(|k| !bound.contains(*k)).collect();
    assert!(unbound.is_empty(), "roles bound to nobody: {unbound:?}");
    grants
}

/// Namespaced kinds the controller also watches in the release namespace when it watches
/// another one: its own `--publish-service` Service and `--default-certificate` Secret.
const OWN_NAMESPACE: &[&str] = &["services", "secrets"];

/// What API_ACCESS needs, placed the way the chart must place it: cluster-scoped kinds in the
/// ClusterRole; the other cluster-wide entries in the ClusterRole, or with watchNamespace in a
/// Role there (plus Services and Secrets in the release namespace); the rest (Leases) in the
/// release namespace.
fn needed(watch_namespace: Option<&str>) -> BTreeSet<Grant> {
    let release = || Scope::Namespace(RELEASE_NAMESPACE.to_string());
    let mut grants = BTreeSet::new();
    for access in API_ACCESS {
        let scopes = if !access.cluster_wide {
            vec![release()]
        } else if CLUSTER_SCOPED.contains(&access.resource) {
            vec![Scope::Cluster]
        } else {
            match watch_namespace {
                None => vec![Scope::Cluster],
                Some(ns) if ns != RELEASE_NAMESPACE && OWN_NAMESPACE.contains(&access.resource) => {
                    vec![Scope::Namespace(ns.to_string()), release()]
                }
                Some(ns) => vec![Scope::Namespace(ns.to_string())],
            }
        };
        for scope in scopes {
            for verb in access.verbs {
                grants.insert((
                    scope.clone(),
                    access.group.to_string(),
                    access.resource.to_string(),
                    verb.to_string(),
                ));
            }
        }
    }
    grants
}

fn assert_same(granted: &BTreeSet<Grant>, needed: &BTreeSet<Grant>, case: &str) {
    let missing: Vec<_> = needed.difference(granted).collect();
    let extra: Vec<_> = granted.difference(needed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{case}: chart RBAC differs from src/rbac.rs API_ACCESS\n\
         missing (the code calls it, the chart does not grant it): {missing:#?}\n\
         extra (granted, but API_ACCESS does not list it): {extra:#?}"
    );
}

#[test]
fn cluster_scoped_kinds_are_in_api_access() {
    for resource in CLUSTER_SCOPED.iter().chain(OWN_NAMESPACE) {
        let access = API_ACCESS.iter().find(|a| a.resource == *resource);
        assert!(
            access.is_some_and(|a| a.cluster_wide),
            "{resource} must be a cluster-wide entry of API_ACCESS (the chart places it by name)"
        );
    }
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
