//! "No silent drop, ever", through `model::build`: an Ingress carrying an unsupported
//! annotation whose absence would change access, responses or routing is refused (not in the
//! table, an error naming the annotation), never replaced by its last good version; a harmless
//! one is a warning and served; an IngressClassParams may relax refusals (`Warn`, `Ignore`) but
//! never an unknown `portcullis.io/` key.

use portcullis::model::{self, Built, LastGood};
use portcullis::settings::BuildSettings;
use portcullis::source::Snapshot;
use portcullis::source::yaml::parse_manifest;
use portcullis::table::diagnostic::{Reason, Severity};

const BASE: &str = r#"
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
metadata: {name: open, namespace: default, creationTimestamp: "2025-01-01T00:00:00Z"}
spec:
  ingressClassName: portcullis
  rules:
  - host: open.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#;

/// An allow-list Portcullis does not read (HAProxy's; ingress-nginx's `whitelist-source-range`
/// is implemented).
const WHITELIST: &str = "haproxy.org/allow-list";

/// An Ingress `guarded` for `guarded.example.com` with `annotations` (`key: value` lines).
fn guarded(annotations: &[(&str, &str)]) -> String {
    let mut out = String::from(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: guarded\n  namespace: default\n  creationTimestamp: \"2025-01-02T00:00:00Z\"\n",
    );
    if !annotations.is_empty() {
        out.push_str("  annotations:\n");
        for (k, v) in annotations {
            out.push_str(&format!("    {k}: \"{v}\"\n"));
        }
    }
    out.push_str(
        "spec:\n  ingressClassName: portcullis\n  rules:\n  - host: guarded.example.com\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}\n",
    );
    out
}

fn snapshot_of(text: &str) -> Snapshot {
    parse_manifest("inline.yaml", text)
        .unwrap_or_else(|d| panic!("{d}"))
        .into_iter()
        .collect()
}

fn build_with(text: &str, last_good: &LastGood) -> Built {
    model::build(&snapshot_of(text), &BuildSettings::default(), last_good)
}

fn build(text: &str) -> Built {
    build_with(text, &LastGood::default())
}

fn served(built: &Built, host: &str) -> bool {
    built.table.route_sni(host).is_some()
}

/// The diagnostics of Ingress `guarded` about annotation `key`.
fn about<'a>(built: &'a Built, key: &str) -> Vec<&'a portcullis::table::diagnostic::Diagnostic> {
    let field = format!("metadata.annotations[\"{key}\"]");
    built
        .diagnostics
        .iter()
        .filter(|d| d.object.name == "guarded" && d.field == field)
        .collect()
}

#[test]
fn refused_ingress_is_not_served_and_the_rest_is_unchanged() {
    let reference = build(BASE);
    for (key, value) in [
        // auth-url is implemented; a ConfigMap of headers for the auth service is not.
        (
            "nginx.ingress.kubernetes.io/auth-proxy-set-headers",
            "default/auth-headers",
        ),
        // auth-type: basic is implemented; `satisfy` (combining access rules) is not.
        ("nginx.ingress.kubernetes.io/satisfy", "any"),
        // auth-tls-* client certificates are implemented; matching the CN is not.
        ("nginx.ingress.kubernetes.io/auth-tls-match-cn", "CN=client"),
        ("nginx.ingress.kubernetes.io/server-snippet", "return 403;"),
        ("haproxy.org/allow-list", "10.0.0.0/8"),
        ("portcullis.io/tls-mdoe", "passthrough"),
    ] {
        let built = build(&format!("{BASE}{}", guarded(&[(key, value)])));
        assert!(!served(&built, "guarded.example.com"), "{key}");
        // Exactly what the table is without the refused Ingress.
        assert_eq!(built.table, reference.table, "{key}");
        let found = about(&built, key);
        assert_eq!(found.len(), 1, "{key}: {:#?}", built.diagnostics);
        assert_eq!(found[0].severity, Severity::Error, "{key}");
        assert!(
            matches!(
                found[0].reason,
                Reason::UnsupportedAnnotation | Reason::UnknownAnnotation
            ),
            "{key}: {:?}",
            found[0].reason
        );
        assert!(found[0].message.contains(key), "{}", found[0].message);
        assert!(
            found[0].message.contains("not even its last good version"),
            "{}",
            found[0].message
        );
        // Still one of ours: its status is ours to manage.
        assert!(built.ours.iter().any(|o| o.name == "guarded"));
    }
}

#[test]
fn typo_in_our_prefix_says_did_you_mean() {
    let built = build(&format!(
        "{BASE}{}",
        guarded(&[("portcullis.io/tls-mdoe", "passthrough")])
    ));
    let found = about(&built, "portcullis.io/tls-mdoe");
    assert_eq!(found[0].reason, Reason::UnknownAnnotation);
    assert!(
        found[0]
            .message
            .contains("did you mean portcullis.io/tls-mode?"),
        "{}",
        found[0].message
    );
}

#[test]
fn harmless_unsupported_and_unknown_foreign_annotations_are_warnings() {
    let built = build(&format!(
        "{BASE}{}",
        guarded(&[
            ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
            ("nginx.ingress.kubernetes.io/not-a-real-one", "x"),
            ("kubernetes.io/ingress.class", "portcullis"),
        ])
    ));
    assert!(served(&built, "guarded.example.com"));
    let buffering = about(&built, "nginx.ingress.kubernetes.io/proxy-buffering");
    assert_eq!(buffering.len(), 1);
    assert_eq!(buffering[0].severity, Severity::Warning);
    assert_eq!(buffering[0].reason, Reason::UnsupportedAnnotation);
    let unknown = about(&built, "nginx.ingress.kubernetes.io/not-a-real-one");
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].severity, Severity::Warning);
    assert!(unknown[0].message.contains("unknown annotation"));
    // Keys outside the prefixes we answer for are not ours to judge.
    assert!(about(&built, "kubernetes.io/ingress.class").is_empty());
}

#[test]
fn refusal_does_not_fall_back_to_the_last_good_version() {
    let good = format!("{BASE}{}", guarded(&[]));
    let first = build(&good);
    assert!(served(&first, "guarded.example.com"));
    assert_eq!(first.last_good.len().0, 2);

    // The allow-list added: the old, open version must not be served instead.
    let restricted = format!("{BASE}{}", guarded(&[(WHITELIST, "10.0.0.0/8")]));
    let second = build_with(&restricted, &first.last_good);
    assert!(!served(&second, "guarded.example.com"));
    assert!(served(&second, "open.example.com"));
    assert!(
        !second
            .diagnostics
            .iter()
            .any(|d| d.reason == Reason::LastGoodKept),
        "{:#?}",
        second.diagnostics
    );
    // Forgotten: a later bad value has no last good version to fall back to either.
    assert_eq!(second.last_good.len().0, 1);
    let bad_value = format!(
        "{BASE}{}",
        guarded(&[("portcullis.io/tls-mode", "sideways")])
    );
    let third = build_with(&bad_value, &second.last_good);
    assert!(!served(&third, "guarded.example.com"));

    // Bad values on a refused Ingress are reported too (one round of fixes).
    let both = format!(
        "{BASE}{}",
        guarded(&[
            (WHITELIST, "10.0.0.0/8"),
            ("portcullis.io/tls-mode", "sideways")
        ])
    );
    let fourth = build_with(&both, &first.last_good);
    assert!(!served(&fourth, "guarded.example.com"));
    assert_eq!(about(&fourth, "portcullis.io/tls-mode").len(), 1);
    assert_eq!(about(&fourth, WHITELIST).len(), 1);

    // Fixed: served again.
    let fixed = build_with(&good, &fourth.last_good);
    assert!(served(&fixed, "guarded.example.com"));
}

/// The class named `portcullis`, with IngressClassParams `unsupportedAnnotations: {policy}`.
fn relaxed(policy: &str) -> String {
    BASE.replace(
        "spec: {controller: portcullis.io/ingress-controller}",
        "spec:\n  controller: portcullis.io/ingress-controller\n  parameters: {apiGroup: portcullis.io, kind: IngressClassParams, name: relaxed, scope: Cluster}",
    ) + &format!(
        "---\napiVersion: portcullis.io/v1alpha1\nkind: IngressClassParams\nmetadata: {{name: relaxed}}\nspec: {{unsupportedAnnotations: {policy}}}\n"
    )
}

#[test]
fn class_may_relax_refusals_but_not_our_own_typos() {
    let annotations = [
        (WHITELIST, "10.0.0.0/8"),
        ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
    ];

    let reject = build(&format!("{}{}", relaxed("Reject"), guarded(&annotations)));
    assert!(!served(&reject, "guarded.example.com"));

    let warn = build(&format!("{}{}", relaxed("Warn"), guarded(&annotations)));
    assert!(served(&warn, "guarded.example.com"));
    let found = about(&warn, WHITELIST);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].severity, Severity::Warning);
    assert!(found[0].message.contains("unsupportedAnnotations: Warn"));
    assert_eq!(
        about(&warn, "nginx.ingress.kubernetes.io/proxy-buffering").len(),
        1
    );

    let ignore = build(&format!("{}{}", relaxed("Ignore"), guarded(&annotations)));
    assert!(served(&ignore, "guarded.example.com"));
    assert!(about(&ignore, WHITELIST).is_empty());
    assert!(about(&ignore, "nginx.ingress.kubernetes.io/proxy-buffering").is_empty());

    for policy in ["Warn", "Ignore"] {
        let typo = build(&format!(
            "{}{}",
            relaxed(policy),
            guarded(&[("portcullis.io/tls-mdoe", "passthrough")])
        ));
        assert!(!served(&typo, "guarded.example.com"), "{policy}");
        assert_eq!(
            about(&typo, "portcullis.io/tls-mdoe")[0].severity,
            Severity::Error
        );
    }

    // No IngressClassParams diagnostics: the field is valid.
    assert!(
        !warn
            .diagnostics
            .iter()
            .any(|d| d.reason == Reason::InvalidParams),
        "{:#?}",
        warn.diagnostics
    );
}
