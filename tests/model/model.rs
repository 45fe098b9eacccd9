//! Model tables from YAML fixtures, plus the properties the model promises: insensitivity to
//! input order, one bad Ingress removes nothing else, last good versions kept.
//!
//! Each `tests/fixtures/model/<case>/` holds `input.yaml` (manifests, as `standalone` reads
//! them), optionally `settings.yaml` (`ingressClass`, `controllerClass`, `defaultCertificate: ns/name`,
//! `watchNamespace`), and `expected.yaml` (the `check` description: table and diagnostics).
//! Goldens are reviewed by hand. `BLESS=1 cargo test --test model` rewrites them locally; CI
//! never sets it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis::model::{self, Built, LastGood};
use portcullis::settings::BuildSettings;
use portcullis::source::yaml::parse_manifest;
use portcullis::source::{Objects, Snapshot};
use portcullis::table::describe::Description;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model")
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FixtureSettings {
    ingress_class: Option<String>,
    controller_class: Option<String>,
    default_certificate: Option<String>,
    watch_namespace: Option<String>,
}

fn load(case: &Path) -> (Snapshot, BuildSettings) {
    let input = case.join("input.yaml");
    let text = std::fs::read_to_string(&input).unwrap();
    let snapshot: Snapshot = parse_manifest("input.yaml", &text)
        .unwrap_or_else(|d| panic!("{d}"))
        .into_iter()
        .collect();
    let mut settings = BuildSettings::default();
    if let Ok(text) = std::fs::read_to_string(case.join("settings.yaml")) {
        let s: FixtureSettings = serde_saphyr::from_str(&text).unwrap();
        if let Some(class) = s.ingress_class {
            settings.ingress_class = class;
        }
        if let Some(controller) = s.controller_class {
            settings.controller_class = controller;
        }
        settings.default_certificate = s.default_certificate.map(|r| {
            let (ns, name) = r.split_once('/').unwrap();
            (ns.to_string(), name.to_string())
        });
        settings.watch_namespace = s.watch_namespace;
    }
    (snapshot, settings)
}

fn build(snapshot: &Snapshot, settings: &BuildSettings) -> Built {
    model::build(snapshot, settings, &LastGood::default())
}

#[test]
fn golden_tables() {
    let bless = std::env::var_os("BLESS").is_some();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.yaml").exists())
        .collect();
    cases.sort();
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in &cases {
        let (snapshot, settings) = load(case);
        let actual = {
            let built = build(&snapshot, &settings);
            Description::of(&built.table, &built.diagnostics)
        };
        let expected_path = case.join("expected.yaml");
        if bless {
            std::fs::write(&expected_path, serde_saphyr::to_string(&actual).unwrap()).unwrap();
            continue;
        }
        let expected: Description = match std::fs::read_to_string(&expected_path) {
            Ok(text) => serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())),
            Err(_) => {
                failures.push(format!("{}: no expected.yaml", case.display()));
                continue;
            }
        };
        if actual != expected {
            failures.push(format!(
                "{}: table differs; actual:\n{}",
                case.display(),
                serde_saphyr::to_string(&actual).unwrap()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The table and diagnostics do not depend on the order of the snapshot's vectors.
#[test]
fn insensitive_to_ordering() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x706f_7274);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("input.yaml").exists())
        .collect();
    cases.sort();
    for case in cases {
        let (mut snapshot, settings) = load(&case);
        let reference = build(&snapshot, &settings);
        let reference_text =
            portcullis::table::describe::render_json(&reference.table, &reference.diagnostics);
        for _ in 0..20 {
            fn shuffled<K>(objects: &Objects<K>, rng: &mut impl rand::Rng) -> Objects<K> {
                let mut objects = objects.to_vec();
                objects.shuffle(rng);
                objects.into()
            }
            snapshot.ingresses = shuffled(&snapshot.ingresses, &mut rng);
            snapshot.classes = shuffled(&snapshot.classes, &mut rng);
            snapshot.secrets = shuffled(&snapshot.secrets, &mut rng);
            snapshot.services = shuffled(&snapshot.services, &mut rng);
            snapshot.class_params = shuffled(&snapshot.class_params, &mut rng);
            let mut slices = snapshot.endpoint_slices.to_vec();
            slices.shuffle(&mut rng);
            for slice in &mut slices {
                Arc::make_mut(slice).endpoints.shuffle(&mut rng);
            }
            snapshot.endpoint_slices = slices.into();
            let again = build(&snapshot, &settings);
            assert_eq!(again.table, reference.table, "{}", case.display());
            assert_eq!(
                again.diagnostics,
                reference.diagnostics,
                "{}",
                case.display()
            );
            assert_eq!(
                portcullis::table::describe::render_json(&again.table, &again.diagnostics),
                reference_text
            );
        }
    }
}

fn snapshot_of(text: &str) -> Snapshot {
    parse_manifest("inline.yaml", text)
        .unwrap_or_else(|d| panic!("{d}"))
        .into_iter()
        .collect()
}

fn fixture_text(case: &str) -> String {
    std::fs::read_to_string(fixtures().join(case).join("input.yaml")).unwrap()
}

fn host<'a>(built: &'a Built, name: &str) -> &'a std::sync::Arc<portcullis::table::VirtualHost> {
    built
        .table
        .route_sni(name)
        .unwrap_or_else(|| panic!("no host {name}"))
}

fn has(built: &Built, reason: portcullis::table::diagnostic::Reason, name: &str) -> bool {
    built
        .diagnostics
        .iter()
        .any(|d| d.reason == reason && d.object.name == name)
}

/// A bad Ingress (bad annotation, bad host, missing Service, missing Secret) drops only itself
/// or the part of it that is bad: the table for everyone else is unchanged.
#[test]
fn one_bad_ingress_removes_nothing_else() {
    let good = fixture_text("tls-secrets");
    let base_objects = parse_manifest("inline.yaml", &good).unwrap_or_else(|d| panic!("{d}"));
    let base: Snapshot = base_objects.iter().cloned().collect();
    let settings = BuildSettings::default();
    let reference = build(&base, &settings);
    let bad = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: zz-bad
  namespace: default
  annotations:
    portcullis.io/tls-mode: sideways
spec:
  ingressClassName: portcullis
  rules:
  - host: foo.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: zz-worse
  namespace: default
spec:
  ingressClassName: portcullis
  tls: [{hosts: [foo.example.com], secretName: nope}]
  rules:
  - host: "bad host"
  - host: foo.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: gone, port: {number: 80}}}
      - path: nope
        pathType: Prefix
        backend: {service: {name: gone, port: {number: 80}}}
"#;
    let with_bad: Snapshot = base_objects
        .into_iter()
        .chain(parse_manifest("bad.yaml", bad).unwrap())
        .collect();
    let built = build(&with_bad, &settings);
    assert_eq!(built.table, reference.table);
    assert!(has(
        &built,
        portcullis::table::diagnostic::Reason::InvalidAnnotation,
        "zz-bad"
    ));
    assert!(has(
        &built,
        portcullis::table::diagnostic::Reason::Conflict,
        "zz-worse"
    ));
    assert!(has(
        &built,
        portcullis::table::diagnostic::Reason::InvalidSpec,
        "zz-worse"
    ));
    for d in &reference.diagnostics {
        assert!(built.diagnostics.contains(d), "lost diagnostic {d}");
    }
}

const GOOD_INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portcullis}
spec: {controller: portcullis.io/ingress-controller}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {ports: [{port: 80, name: http}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app
  namespace: default
  annotations: {portcullis.io/ssl-redirect: "true"}
spec:
  ingressClassName: portcullis
  tls: [{hosts: [foo.example.com], secretName: foo-tls}]
  rules:
  - host: foo.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;

fn secret_doc(crt: &str, key: &str) -> String {
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: foo-tls, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(crt),
        indent(key)
    )
}

/// The PEM blocks of the tls-secrets fixture's `foo-tls` Secret.
fn foo_pem() -> (String, String) {
    let text = fixture_text("tls-secrets");
    let blocks: Vec<String> = text
        .split("-----BEGIN ")
        .skip(1)
        .map(|b| {
            let end = b.find("-----END ").unwrap();
            let tail = &b[end..];
            let close = tail[9..].find("-----").unwrap() + 9 + 5;
            format!("-----BEGIN {}{}", &b[..end], &tail[..close])
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect();
    (blocks[0].clone(), blocks[1].clone())
}

/// Break the Ingress's annotation, then its Secret, then delete the Secret: what was good
/// keeps being served, with a LastGoodKept warning each time.
#[test]
fn last_good_version_kept() {
    use portcullis::table::CertificateChoice;
    use portcullis::table::diagnostic::Reason;
    let settings = BuildSettings::default();
    let (crt, key) = foo_pem();
    let good = format!("{GOOD_INGRESS}---\n{}", secret_doc(&crt, &key));
    let first = model::build(&snapshot_of(&good), &settings, &LastGood::default());
    let vhost = host(&first, "foo.example.com");
    assert!(vhost.ssl_redirect);
    assert!(matches!(vhost.certificate, CertificateChoice::Own(_)));
    assert_eq!(first.last_good.len(), (1, 1));

    // 1. A bad annotation: the last good Ingress is still served.
    let broken = good.replace(
        "portcullis.io/ssl-redirect: \"true\"",
        "portcullis.io/ssl-redirect: \"sometimes\"",
    );
    let second = model::build(&snapshot_of(&broken), &settings, &first.last_good);
    assert_eq!(second.table, first.table);
    assert!(has(&second, Reason::InvalidAnnotation, "app"));
    assert!(has(&second, Reason::LastGoodKept, "app"));

    // 2. A malformed Secret: the last good certificate is still served.
    let bad_secret = format!("{GOOD_INGRESS}---\n{}", secret_doc(&crt, "garbage"));
    let third = model::build(&snapshot_of(&bad_secret), &settings, &second.last_good);
    assert_eq!(third.table, first.table);
    assert!(has(&third, Reason::InvalidSecret, "app"));
    assert!(has(&third, Reason::LastGoodKept, "app"));

    // 3. The Secret deleted while referenced: still the last good certificate.
    let fourth = model::build(&snapshot_of(GOOD_INGRESS), &settings, &third.last_good);
    assert_eq!(fourth.table, first.table);
    assert!(has(&fourth, Reason::MissingSecret, "app"));
    assert!(has(&fourth, Reason::LastGoodKept, "app"));

    // 4. Without a last good version, the same bad inputs are not served as before.
    let fresh = model::build(&snapshot_of(&broken), &settings, &LastGood::default());
    assert!(fresh.table.route_sni("foo.example.com").is_none());
    let fresh = model::build(&snapshot_of(GOOD_INGRESS), &settings, &LastGood::default());
    assert_eq!(
        host(&fresh, "foo.example.com").certificate,
        CertificateChoice::Default
    );

    // 5. A deleted Ingress is forgotten: re-created broken, it is not served.
    let empty = model::build(&Snapshot::default(), &settings, &fourth.last_good);
    assert_eq!(empty.last_good.len().0, 0);
    let again = model::build(&snapshot_of(&broken), &settings, &empty.last_good);
    assert!(again.table.route_sni("foo.example.com").is_none());
}

/// `--cert-dir` bundles are chosen by SAN for hosts without a certificate of their own.
#[test]
fn cert_dir_chosen_by_san() {
    use portcullis::source::CertFile;
    use portcullis::table::CertificateChoice;
    let (crt, key) = foo_pem();
    let mut snapshot = snapshot_of(GOOD_INGRESS);
    snapshot.cert_files = vec![
        Arc::new(CertFile {
            path: "/certs/foo.pem".into(),
            pem: format!("{crt}\n{key}\n").into_bytes(),
        }),
        Arc::new(CertFile {
            path: "/certs/broken.pem".into(),
            pem: b"nothing".to_vec(),
        }),
    ]
    .into();
    // No Secret: the Ingress's tls entry fails, so the cert-dir is not consulted for it.
    let built = build(&snapshot, &BuildSettings::default());
    assert_eq!(built.table.cert_dir.len(), 1);
    assert!(has(
        &built,
        portcullis::table::diagnostic::Reason::InvalidSecret,
        "/certs/broken.pem"
    ));
    // Without the tls entry, the cert-dir file covers the host.
    let no_tls = GOOD_INGRESS.replace(
        "  tls: [{hosts: [foo.example.com], secretName: foo-tls}]\n",
        "",
    );
    let mut snapshot2 = snapshot_of(&no_tls);
    snapshot2.cert_files = snapshot.cert_files.clone();
    let built = build(&snapshot2, &BuildSettings::default());
    match &host(&built, "foo.example.com").certificate {
        CertificateChoice::Own(cert) => assert_eq!(cert.info.source, "/certs/foo.pem"),
        other => panic!("expected the cert-dir certificate, got {other:?}"),
    }
}

/// `check` renders every host and diagnostic; JSON round-trips into the description.
#[test]
fn check_renders_text_and_json() {
    let (snapshot, settings) = load(&fixtures().join("backends"));
    let built = build(&snapshot, &settings);
    let text = portcullis::table::describe::render_text(&built.table, &built.diagnostics);
    assert!(
        text.contains("foo.example.com  (terminate, owner default/backends)"),
        "{text}"
    );
    assert!(text.contains("no ready endpoints"), "{text}");
    assert!(text.contains("default certificate"), "{text}");
    assert!(text.contains("MissingService"), "{text}");
    let json: Description = serde_json::from_str(&portcullis::table::describe::render_json(
        &built.table,
        &built.diagnostics,
    ))
    .unwrap();
    assert_eq!(json, Description::of(&built.table, &built.diagnostics));
    assert!(portcullis::table::describe::has_errors(&built.diagnostics));
}

/// `check` shows terminating endpoints apart from ready ones; JSON lists them only when there
/// are some.
#[test]
fn check_renders_terminating_endpoints() {
    let (snapshot, settings) = load(&fixtures().join("endpoint-conditions"));
    let built = build(&snapshot, &settings);
    let text = portcullis::table::describe::render_text(&built.table, &built.diagnostics);
    assert!(
        text.contains(
            "default/mixed:http → 10.1.0.1:8080, 10.1.0.2:8080, 10.1.0.3:8080, 10.1.0.9:8080, \
             10.1.0.11:8080, 10.1.0.4:8080 (terminating), 10.1.0.8:8080 (terminating)  ["
        ),
        "{text}"
    );
    assert!(
        text.contains("default/draining:80 → no ready endpoints, 10.2.0.1:8080 (terminating)  ["),
        "{text}"
    );
    assert!(
        text.contains("default/gone:80 → no ready endpoints  ["),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&portcullis::table::describe::render_json(
        &built.table,
        &built.diagnostics,
    ))
    .unwrap();
    let routes = &json["table"]["hosts"][0]["routes"];
    let upstream_of = |path: &str| {
        routes
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("no route {path}"))["upstream"]
            .clone()
    };
    assert_eq!(
        upstream_of("/draining")["terminating"],
        serde_json::json!(["10.2.0.1:8080"])
    );
    assert!(upstream_of("/gone").get("terminating").is_none());
}

/// 10 000 Ingresses build without quadratic blow-up (a loose bound: this runs unoptimized).
#[test]
fn many_ingresses_build_quickly() {
    let mut text = String::from(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portcullis}\nspec: {controller: portcullis.io/ingress-controller}\n",
    );
    for i in 0..100 {
        text.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: default}}\nspec: {{ports: [{{port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc{i}-x, namespace: default, labels: {{kubernetes.io/service-name: svc{i}}}}}\naddressType: IPv4\nports: [{{port: 8080}}]\nendpoints: [{{addresses: [10.1.0.{i}]}}]\n"
        ));
    }
    let template = snapshot_of(&text);
    let ingress_text = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x, namespace: default}\nspec:\n  ingressClassName: portcullis\n  rules:\n  - host: h.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: svc0, port: {number: 80}}}}\n      - {path: /api, pathType: Prefix, backend: {service: {name: svc1, port: {number: 80}}}}\n";
    let Some(portcullis::source::yaml::Object::Ingress(one)) =
        parse_manifest("i.yaml", ingress_text).unwrap().pop()
    else {
        panic!()
    };
    let mut snapshot = template;
    let mut ingresses = snapshot.ingresses.to_vec();
    for i in 0..10_000 {
        let mut ingress = (*one).clone();
        ingress.metadata.name = Some(format!("ing{i}"));
        let spec = ingress.spec.as_mut().unwrap();
        let rule = &mut spec.rules.as_mut().unwrap()[0];
        rule.host = Some(format!("h{i}.example.com"));
        for path in &mut rule.http.as_mut().unwrap().paths {
            path.backend.service.as_mut().unwrap().name = format!("svc{}", i % 100);
        }
        ingresses.push(Arc::new(ingress));
    }
    snapshot.ingresses = ingresses.into();
    let start = std::time::Instant::now();
    let built = build(&snapshot, &BuildSettings::default());
    let first = start.elapsed();
    let again = model::build(&snapshot, &BuildSettings::default(), &built.last_good);
    assert_eq!(again.table.vhosts().len(), 10_000);
    assert!(first < std::time::Duration::from_secs(10), "took {first:?}");
}

/// Ingresses without policy annotations share one `RoutePolicy` allocation (routes and hosts,
/// across builds): a 10 000-Ingress table kept ~830 bytes per Ingress and per host before,
/// 33 MB of a warm build's peak (bench/RESULTS.md, scale). An Ingress with a policy keeps
/// its own, and its behaviour is unchanged.
#[test]
fn ingresses_without_a_policy_share_one() {
    let ingress = |name: &str, annotations: &str| {
        format!(
            "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: default{annotations}}}\nspec:\n  ingressClassName: portcullis\n  rules:\n  - host: {name}.example.com\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: svc, port: {{number: 80}}}}}}}}\n"
        )
    };
    let text = [
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portcullis}\nspec: {controller: portcullis.io/ingress-controller}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: svc, namespace: default}\nspec: {ports: [{port: 80}]}\n".to_string(),
        ingress("plain-a", ""),
        ingress("plain-b", ""),
        ingress(
            "cors",
            ", annotations: {nginx.ingress.kubernetes.io/enable-cors: \"true\"}",
        ),
    ]
    .concat();
    let snapshot = snapshot_of(&text);
    let first = build(&snapshot, &BuildSettings::default());
    let again = model::build(&snapshot, &BuildSettings::default(), &first.last_good);
    let policy = |built: &Built, name: &str| {
        let vhost = host(built, &format!("{name}.example.com"));
        assert_eq!(vhost.routes.len(), 1, "{name}");
        (
            Arc::clone(&vhost.routes[0].policy),
            Arc::clone(&vhost.default_policy),
        )
    };
    let (a, a_default) = policy(&first, "plain-a");
    let (b, b_default) = policy(&again, "plain-b");
    let (cors, cors_default) = policy(&first, "cors");
    for shared in [&b, &a_default, &b_default, &cors_default] {
        assert!(Arc::ptr_eq(&a, shared));
    }
    assert_eq!(*a, portcullis::table::policy::RoutePolicy::default());
    assert!(!Arc::ptr_eq(&a, &cors));
    assert_ne!(*cors, *a, "the CORS Ingress keeps its own policy");
}
