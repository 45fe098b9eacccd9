//! CRD drift: `crds/ingressclassparams.yaml` (and the chart's copy) must be exactly the YAML
//! generated from `portcullis::crd::IngressClassParams`, so the schema the API server enforces is
//! the one the Rust types deserialize.
//!
//! After changing `src/crd.rs`, regenerate both files with
//! `BLESS=1 cargo test --test crd_drift` and review the diff. CI never sets `BLESS`.

use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use portcullis::crd::IngressClassParams;
use serde_json::Value;

/// The checked-in copies of the CRD: the top-level one for `kubectl apply`, and the chart's
/// `crds/` copy that Helm installs before the templates.
const COPIES: &[&str] = &[
    "crds/ingressclassparams.yaml",
    "charts/portcullis/crds/ingressclassparams.yaml",
];

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The CRD exactly as `portcullis crd` prints it.
fn generated() -> String {
    serde_saphyr::to_string(&IngressClassParams::crd()).expect("CRD serializes to YAML")
}

#[test]
fn checked_in_crds_match_the_generated_crd() {
    let want = generated();
    let bless = std::env::var_os("BLESS").is_some_and(|v| !v.is_empty() && v != "0");
    for copy in COPIES {
        let path = repo_path(copy);
        if bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &want).unwrap();
            continue;
        }
        let have = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{copy}: {e}; run `BLESS=1 cargo test --test crd_drift`"));
        assert!(
            have == want,
            "{copy} differs from the CRD generated from src/crd.rs; \
             run `BLESS=1 cargo test --test crd_drift` and review the diff"
        );
    }
}

// === the schema rejects what it can ===

/// The `openAPIV3Schema` of the generated CRD's only version, as JSON.
fn spec_schema() -> Value {
    let crd = serde_json::to_value(IngressClassParams::crd()).unwrap();
    let versions = crd["spec"]["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 1, "one served version");
    versions[0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// Follows `properties.a.properties.b…` from `schema`.
fn field<'a>(schema: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(schema, |s, name| {
        let next = &s["properties"][*name];
        assert!(!next.is_null(), "schema has no property {name} in {path:?}");
        next
    })
}

/// The string members of a JSON array.
fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .filter_map(Value::as_str)
        .collect()
}

#[test]
fn crd_is_cluster_scoped_in_group_portcullis_io() {
    let crd = serde_json::to_value(IngressClassParams::crd()).unwrap();
    assert_eq!(crd["metadata"]["name"], "ingressclassparams.portcullis.io");
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha1");
    assert_eq!(crd["spec"]["versions"][0]["served"], true);
    assert_eq!(crd["spec"]["versions"][0]["storage"], true);
}

#[test]
fn enums_are_in_the_schema() {
    let spec = spec_schema();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["defaults", "loadBalance"],
            &["round-robin", "least-request", "random"],
        ),
        (
            &["defaults", "healthCheck", "kind"],
            &["http", "tls", "tcp", "none"],
        ),
        (&["defaults", "healthCheck", "method"], &["HEAD", "GET"]),
        (&["tls", "minVersion"], &["1.2", "1.3"]),
    ];
    for (path, want) in cases {
        let f = field(&spec, path);
        assert_eq!(strings(&f["enum"]), *want, "enum of {path:?}: {f}");
    }
}

#[test]
fn patterns_are_in_the_schema() {
    let spec = spec_schema();
    let duration = "^[0-9]+(ms|s|m)$";
    let cases: &[(&[&str], &str)] = &[
        (&["defaults", "healthCheck", "path"], "^/"),
        (&["defaults", "healthCheck", "interval"], duration),
        (&["timeouts", "clientHello"], duration),
        (&["timeouts", "headerRead"], duration),
        (&["timeouts", "idle"], duration),
        (&["timeouts", "tunnelIdle"], duration),
        (&["timeouts", "connect"], duration),
        (&["timeouts", "upstreamResponse"], duration),
    ];
    for (path, want) in cases {
        let f = field(&spec, path);
        assert_eq!(f["pattern"], *want, "pattern of {path:?}: {f}");
    }
}

#[test]
fn minimums_are_in_the_schema() {
    let spec = spec_schema();
    let cases: &[(&[&str], f64, Option<f64>)] = &[
        (&["limits", "maxConnections"], 1.0, None),
        (&["limits", "maxHeaderBytes"], 1024.0, None),
        (&["limits", "maxClientHelloBytes"], 512.0, Some(65536.0)),
    ];
    for (path, min, max) in cases {
        let f = field(&spec, path);
        assert_eq!(
            f["minimum"].as_f64(),
            Some(*min),
            "minimum of {path:?}: {f}"
        );
        if let Some(max) = max {
            assert_eq!(
                f["maximum"].as_f64(),
                Some(*max),
                "maximum of {path:?}: {f}"
            );
        }
    }
}

#[test]
fn secret_reference_requires_valid_namespace_and_name() {
    let spec = spec_schema();
    let f = field(&spec, &["defaultCertificate"]);
    let mut required = strings(&f["required"]);
    required.sort_unstable();
    assert_eq!(required, ["name", "namespace"], "{f}");
    let ns = field(f, &["namespace"]);
    assert_eq!(ns["maxLength"], 63, "{ns}");
    assert_eq!(ns["minLength"], 1, "{ns}");
    assert!(ns["pattern"].is_string(), "{ns}");
    let name = field(f, &["name"]);
    assert_eq!(name["maxLength"], 253, "{name}");
    assert!(name["pattern"].is_string(), "{name}");
}

#[test]
fn list_items_have_patterns() {
    let spec = spec_schema();
    for path in [
        &["trustedProxyProtocolCidrs"][..],
        &["trustedForwardedCidrs"],
        &["passthrough", "namespaces"],
        &["tls", "cipherSuites"],
    ] {
        let f = field(&spec, path);
        assert!(f["items"]["pattern"].is_string(), "items of {path:?}: {f}");
    }
}

// === the schema applies cleanly on every supported Kubernetes version ===

/// The whole `openAPIV3Schema` of the generated CRD's only version, as JSON.
fn root_schema() -> Value {
    let crd = serde_json::to_value(IngressClassParams::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// Every schema node under `schema` (itself included) with its path, e.g.
/// `.properties.defaults.properties.loadBalance`.
fn nodes(schema: &Value, path: String, out: &mut Vec<(String, Value)>) {
    out.push((path.clone(), schema.clone()));
    if let Some(properties) = schema["properties"].as_object() {
        for (name, child) in properties {
            nodes(child, format!("{path}.properties.{name}"), out);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if schema[key].is_object() {
            nodes(&schema[key], format!("{path}.{key}"), out);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        for (i, child) in schema[key].as_array().into_iter().flatten().enumerate() {
            nodes(child, format!("{path}.{key}[{i}]"), out);
        }
    }
}

fn all_nodes() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    nodes(&root_schema(), String::new(), &mut out);
    out
}

/// schemars puts `null` in the `enum` of an optional enum field; kubectl's client-side
/// validation rejected that CRD (`kubectl apply -f crds/` on a 1.24 API server). `nullable`
/// says an optional field may be null; an `enum` lists only values of the node's `type`.
#[test]
fn no_enum_contains_null_and_every_value_has_the_node_type() {
    let mut enums = 0;
    for (path, node) in all_nodes() {
        let Some(values) = node["enum"].as_array() else {
            continue;
        };
        enums += 1;
        assert!(!values.is_empty(), "empty enum at {path}: {node}");
        let ty = node["type"].as_str();
        for value in values {
            let ok = match ty {
                Some("string") => value.is_string(),
                Some("integer") => value.is_i64() || value.is_u64(),
                Some("number") => value.is_number(),
                Some("boolean") => value.is_boolean(),
                _ => false,
            };
            assert!(ok, "enum value {value} at {path} is not a {ty:?}: {node}");
        }
    }
    assert!(enums >= 5, "expected the schema's enums, found {enums}");
    for copy in COPIES {
        let text = std::fs::read_to_string(repo_path(copy)).unwrap();
        assert!(
            !text.lines().any(|l| l.trim() == "- null"),
            "{copy} still lists null in an enum; regenerate it"
        );
    }
}

/// The rules of a structural schema ("Specifying a structural schema", Kubernetes docs on
/// CustomResourceDefinitions), as far as they can be checked without an API server: a `type`
/// on every node; no `$ref` or `definitions`; `properties` and `additionalProperties` not
/// together; no `additionalProperties: false` or `uniqueItems: true`; nothing but constraints
/// inside `allOf`/`anyOf`/`oneOf`/`not` (no `type`, `description`, `default`, `nullable`,
/// `additionalProperties`); `metadata` (if any) only constrains `name` and `generateName`.
#[test]
fn the_schema_is_structural() {
    let nodes = all_nodes();
    for (path, node) in &nodes {
        let object = node.as_object().unwrap_or_else(|| panic!("{path}: {node}"));
        let in_junctor = ["allOf[", "anyOf[", "oneOf[", ".not"]
            .iter()
            .any(|j| path.contains(j));
        for key in ["$ref", "definitions", "$defs"] {
            assert!(!object.contains_key(key), "{key} at {path}: {node}");
        }
        assert!(
            !(object.contains_key("properties") && object.contains_key("additionalProperties")),
            "properties and additionalProperties together at {path}"
        );
        assert_ne!(node["additionalProperties"], false, "at {path}");
        assert_ne!(node["uniqueItems"], true, "at {path}");
        if in_junctor {
            for key in [
                "type",
                "description",
                "default",
                "nullable",
                "additionalProperties",
            ] {
                assert!(
                    !object.contains_key(key),
                    "{key} inside a junctor at {path}"
                );
            }
            continue;
        }
        let exempt = node["x-kubernetes-int-or-string"] == true
            || node["x-kubernetes-preserve-unknown-fields"] == true;
        let ty = node["type"].as_str();
        assert!(
            exempt
                || matches!(
                    ty,
                    Some("object" | "array" | "string" | "integer" | "number" | "boolean")
                ),
            "no (valid) type at {path}: {node}"
        );
        if ty == Some("array") && !exempt {
            assert!(node["items"].is_object(), "array without items at {path}");
        }
        if let Some(required) = node["required"].as_array() {
            for name in required {
                let name = name.as_str().unwrap();
                assert!(
                    node["properties"][name].is_object(),
                    "{path} requires {name}, which it does not specify"
                );
            }
        }
    }
    let root = root_schema();
    if let Some(metadata) = root["properties"]["metadata"].as_object() {
        for name in metadata
            .get("properties")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            assert!(
                ["name", "generateName"].contains(&name.0.as_str()),
                "metadata may only constrain name and generateName: {}",
                name.0
            );
        }
    }
    assert_eq!(root["properties"]["spec"]["type"], "object");
}
