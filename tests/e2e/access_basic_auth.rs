//! End to end, the built binary: HTTP basic authentication as ingress-nginx documents it
//! (docs/user-guide/nginx-configuration/annotations.md, "Authentication": `auth-type: basic`,
//! `auth-secret`, `auth-secret-type: auth-file | auth-map`, `auth-realm`; docs/examples/auth/basic:
//! the Secret's key `auth` holds an htpasswd file), seen by curl `-u` and by the pod.
//!
//! Abuse cases: no credentials, a wrong password, an unknown user → 401 with the realm, and
//! the pod never sees them; a rotated Secret locks the old password out (even one verified a
//! moment ago, bcrypt's cache included); a Secret gone → the host is not served (never open);
//! a missing Secret, a cross-namespace one, `digest`, or a Secret without one usable user →
//! refused by `portcullis check`.

use std::time::Duration;

use crate::support::backends::{self, Backend};
use crate::support::binary::{Binary, check};
use crate::support::clients::{curl, curl_https};
use crate::support::manifests::{self, NS, ingress, ingress_class, service};
use crate::support::pki::Ca;
use crate::support::wait::wait_until;

const HOST: &str = "app.basic-auth.e2e.test";

// Test vectors: `openssl passwd -apr1 -salt Xy7pQ2ab 's3cret!'`; python `bcrypt.hashpw` (cost 4
// and 5, as `$2b$`/`$2a$`; `$2y$` is what `htpasswd -B` writes, the same algorithm); `{SHA}` is
// base64(SHA-1(password)), what `htpasswd -s` writes.
const APR1_S3CRET: &str = "$apr1$Xy7pQ2ab$Mh2dUTrmPgAewjJWVctVD1";
const BCRYPT_2Y_S3CRET: &str = "$2y$04$xiz/LQeeRi/6EBK1dYNXyuB4IBAvRff/0XGI8S8AmW.8vdisEIFom";
const BCRYPT_2A_PASSWORD: &str = "$2a$05$gzmhoYVVjQx6QMlQeujTk.v37qaPva5LEzQUtoQfVWu/fgu7CiOBa";
const SHA_S3CRET: &str = "{SHA}YWXIkDPDfrJ6I4yV+0kqTJdT5SE=";

/// An Opaque Secret `name` with `entries` (key, value) as `stringData`, labelled as a cluster
/// install needs (its basic-auth Secrets watcher selects `portcullis.io/basic-auth=true`).
fn secret(name: &str, entries: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {NS}\n  labels:\n    portcullis.io/basic-auth: \"true\"\ntype: Opaque\nstringData:\n"
    );
    for (key, value) in entries {
        out.push_str(&format!("  {key}: |\n"));
        for line in value.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out
}

/// The basic-auth annotations (ingress-nginx's names) for Secret `name`, plus `more`.
fn auth<'a>(name: &'a str, more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![
        ("nginx.ingress.kubernetes.io/auth-type", "basic"),
        ("nginx.ingress.kubernetes.io/auth-secret", name),
    ];
    v.extend_from_slice(more);
    v
}

/// The request paths `backend` saw from clients (health probes left out).
fn proxied_paths(backend: &Backend) -> Vec<String> {
    backend
        .requests()
        .into_iter()
        .filter(|s| {
            s.headers.get("user-agent").map(String::as_str) != Some("portcullis-health-check")
        })
        .map(|s| s.uri)
        .collect()
}

/// `GET path` as `user:password` (`None`: no credentials); the status and `WWW-Authenticate`.
async fn get(proxy: &Binary, path: &str, user: Option<&str>) -> (u16, Option<String>) {
    let args: Vec<&str> = match user {
        Some(u) => vec!["-u", u],
        None => vec![],
    };
    let r = curl("http", HOST, proxy.http, path, &args).await;
    (r.status, r.header("www-authenticate").map(str::to_string))
}

/// Each hash kind `htpasswd` writes (bcrypt, apr1, SHA1) is accepted with its password; no
/// credentials, a wrong password, an unknown user or another scheme → `401` with
/// `WWW-Authenticate: Basic realm="<auth-realm>"`, and the pod never sees those requests.
/// The `Authorization` header goes on to the pod, as nginx forwards it.
#[tokio::test]
async fn htpasswd_each_hash_kind_and_401_with_the_realm() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let file = format!(
        "# staff\nalice:{APR1_S3CRET}\nbob:{BCRYPT_2Y_S3CRET}\ncarol:{SHA_S3CRET}\ndave:{BCRYPT_2A_PASSWORD}\nmallory:plaintext\n"
    );
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("users", secret("users", &[("auth", &file)])),
            (
                "app",
                ingress(
                    "app",
                    HOST,
                    "web",
                    &auth(
                        "users",
                        &[("nginx.ingress.kubernetes.io/auth-realm", "Staff only")],
                    ),
                    None,
                ),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;
    let challenge = Some("Basic realm=\"Staff only\"".to_string());

    for (path, user) in [
        ("/denied-none", None),
        ("/denied-wrong", Some("alice:wrong")),
        ("/denied-case", Some("alice:S3cret!")),
        ("/denied-bcrypt", Some("bob:s3cret")),
        ("/denied-sha", Some("carol:")),
        ("/denied-unknown", Some("eve:s3cret!")),
        ("/denied-plaintext", Some("mallory:plaintext")),
    ] {
        assert_eq!(
            get(&proxy, path, user).await,
            (401, challenge.clone()),
            "{path}"
        );
    }
    // Another scheme (a bearer token) is no basic credential.
    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/denied-bearer",
        &["-H", "Authorization: Bearer YWxpY2U6czNjcmV0IQ=="],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");

    for (path, user) in [
        ("/apr1", "alice:s3cret!"),
        ("/bcrypt-2y", "bob:s3cret!"),
        ("/sha1", "carol:s3cret!"),
        ("/bcrypt-2a", "dave:password"),
        // Again: the verified bcrypt password is remembered, and still right.
        ("/bcrypt-2y-again", "bob:s3cret!"),
    ] {
        assert_eq!(get(&proxy, path, Some(user)).await.0, 200, "{path}");
    }
    // A wrong password right after the right one (the cache holds only what was verified).
    assert_eq!(
        get(&proxy, "/denied-after", Some("bob:s3cret!!")).await.0,
        401
    );

    let paths = proxied_paths(&backend);
    assert!(
        paths.iter().all(|p| !p.starts_with("/denied")),
        "the pod saw a rejected request: {paths:?}"
    );
    // The access log says why.
    let logged = proxy
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains(" access: ")
                && l.contains("/denied-wrong")
                && l.contains("basic_auth_denied")
        })
        .await;
    assert!(logged, "{}", proxy.log_text());
    assert_eq!(paths.len(), 5, "{paths:?}");
    let seen = backend.requests();
    let apr1 = seen.iter().find(|s| s.uri == "/apr1").expect("/apr1");
    assert_eq!(
        apr1.headers.get("authorization").map(String::as_str),
        Some("Basic YWxpY2U6czNjcmV0IQ==")
    );
}

/// `auth-secret-type: auth-map`: each key of the Secret is a user, its value the hash. With no
/// `auth-realm`, the realm is ingress-nginx's: its template writes `auth_basic ""`. Our own
/// `portcullis.io/` keys work the same, and `namespace/name` in the Ingress's namespace is
/// accepted.
#[tokio::test]
async fn auth_map_with_the_default_realm() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let name = format!("{NS}/team");
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            (
                "team",
                secret(
                    "team",
                    &[("alice", APR1_S3CRET), ("bob", BCRYPT_2A_PASSWORD)],
                ),
            ),
            (
                "app",
                ingress(
                    "app",
                    HOST,
                    "web",
                    &[
                        ("portcullis.io/auth-type", "basic"),
                        ("portcullis.io/auth-secret", &name),
                        ("portcullis.io/auth-secret-type", "auth-map"),
                    ],
                    None,
                ),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;
    assert_eq!(
        get(&proxy, "/denied", None).await,
        (401, Some("Basic realm=\"\"".to_string()))
    );
    assert_eq!(get(&proxy, "/denied-2", Some("bob:s3cret!")).await.0, 401);
    assert_eq!(get(&proxy, "/a", Some("alice:s3cret!")).await.0, 200);
    assert_eq!(get(&proxy, "/b", Some("bob:password")).await.0, 200);
    assert_eq!(proxied_paths(&backend), ["/a", "/b"]);
}

/// A rewritten Secret takes effect without a restart: the new password works, the old one
/// (verified moments before, so in bcrypt's cache) is refused. A Secret that goes away leaves
/// the host unserved (404), never open.
#[tokio::test]
async fn secret_rotation_and_removal() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            (
                "users",
                secret("users", &[("auth", &format!("alice:{BCRYPT_2Y_S3CRET}"))]),
            ),
            (
                "app",
                ingress("app", HOST, "web", &auth("users", &[]), None),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;
    assert_eq!(get(&proxy, "/old", Some("alice:s3cret!")).await.0, 200);
    assert_eq!(get(&proxy, "/new", Some("alice:password")).await.0, 401);

    manifests::write(
        &m,
        "users.yaml",
        &secret("users", &[("auth", &format!("alice:{BCRYPT_2A_PASSWORD}"))]),
    );
    let rotated = wait_until(Duration::from_secs(10), || async {
        get(&proxy, "/new", Some("alice:password")).await.0 == 200
    })
    .await;
    assert!(rotated, "the new password never worked");
    assert_eq!(
        get(&proxy, "/old-after", Some("alice:s3cret!")).await.0,
        401
    );

    std::fs::remove_file(m.join("users.yaml")).unwrap();
    let closed = wait_until(Duration::from_secs(10), || async {
        get(&proxy, "/gone", Some("alice:password")).await.0 == 404
    })
    .await;
    assert!(closed, "the host stayed served without its Secret");
    assert_eq!(
        get(&proxy, "/gone-after", Some("alice:password")).await.0,
        404
    );
    // (`/gone` reached the pod, with the right password, until the new table was live.)
    let paths = proxied_paths(&backend);
    assert!(
        !paths
            .iter()
            .any(|p| p == "/old-after" || p == "/gone-after"),
        "{paths:?}"
    );
}

/// An Ingress name, its annotations, and the key its error names.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str);

/// `portcullis check` refuses (exit 1, an error naming the annotation) an Ingress whose basic
/// auth cannot be enforced: its Secret missing, without `auth`, or without one usable user;
/// a Secret in another namespace (ingress-nginx's default `allow-cross-namespace-resources:
/// false`); `auth-type: digest`; `auth-secret` without `auth-type`. A plaintext line among good
/// ones is a warning naming the Secret and the line.
#[test]
fn unusable_basic_auth_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("web", &[8080]));
    manifests::write(
        m,
        "no-auth-key.yaml",
        &secret("no-auth-key", &[("users", &format!("alice:{APR1_S3CRET}"))]),
    );
    manifests::write(
        m,
        "plain.yaml",
        &secret("plain", &[("auth", "alice:s3cret!\nbob:abJnggxhB/yWI\n")]),
    );
    manifests::write(
        m,
        "mixed.yaml",
        &secret(
            "mixed",
            &[("auth", &format!("alice:{APR1_S3CRET}\nbob:hunter2\n"))],
        ),
    );
    let secret_key = "nginx.ingress.kubernetes.io/auth-secret";
    let type_key = "nginx.ingress.kubernetes.io/auth-type";
    let cases: &[Case] = &[
        ("missing", auth("nowhere", &[]), secret_key),
        ("no-auth-key", auth("no-auth-key", &[]), secret_key),
        ("plaintext-only", auth("plain", &[]), secret_key),
        ("cross-namespace", auth("other/mixed", &[]), secret_key),
        (
            "digest",
            vec![(type_key, "digest"), (secret_key, "mixed")],
            type_key,
        ),
        ("no-type", vec![(secret_key, "mixed")], secret_key),
        ("no-secret", vec![(type_key, "basic")], type_key),
    ];
    for (i, (name, annotations, _)) in cases.iter().enumerate() {
        let host = format!("h{i}.basic-auth.e2e.test");
        manifests::write(
            m,
            &format!("ing-{name}.yaml"),
            &ingress(name, &host, "web", annotations, None),
        );
    }
    manifests::write(
        m,
        "ing-mixed.yaml",
        &ingress(
            "mixed",
            "ok.basic-auth.e2e.test",
            "web",
            &auth("mixed", &[]),
            None,
        ),
    );
    let out = check(m);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (name, _, key) in cases {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("Ingress default/{name} ")) && l.contains("error"))
            .unwrap_or_else(|| panic!("no error for {name}:\n{text}"));
        assert!(line.contains(key), "{line}");
    }
    let mixed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Ingress default/mixed "))
        .collect();
    assert!(
        mixed.iter().all(|l| !l.trim_start().starts_with("error")),
        "{mixed:?}"
    );
    assert!(
        mixed
            .iter()
            .any(|l| l.contains("warning") && l.contains("auth line 2")),
        "{text}"
    );
}

/// A canary Ingress takes everything but its canary rules from its main Ingress
/// (annotations.md, "Canary": "canary annotations ... other annotations are inherited"), and
/// the client picks it by header: picking the canary must not skip the main Ingress's basic
/// auth.
#[tokio::test]
async fn a_canary_picked_by_header_is_behind_the_same_basic_auth() {
    let backend = backends::http("web").await;
    let canary = backends::http("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("svc-canary", service("web-canary", &[canary.addr.port()])),
            (
                "users",
                secret("users", &[("auth", &format!("alice:{APR1_S3CRET}"))]),
            ),
            (
                "app",
                ingress("app", HOST, "web", &auth("users", &[]), None),
            ),
            (
                "app-canary",
                ingress(
                    "app-canary",
                    HOST,
                    "web-canary",
                    &[
                        ("nginx.ingress.kubernetes.io/canary", "true"),
                        ("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary"),
                    ],
                    None,
                ),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;
    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/denied",
        &["-H", "X-Canary: always"],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/allowed",
        &["-H", "X-Canary: always", "-u", "alice:s3cret!"],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(proxied_paths(&canary), ["/allowed"]);
    assert!(proxied_paths(&backend).is_empty());
}

/// The same check on a terminated HTTPS host over HTTP/2 (each stream is judged: a 401 stream
/// and a 200 stream on the connection curl reuses).
#[tokio::test]
async fn https_over_http2_is_checked_per_request() {
    let ca = Ca::new("e2e basic auth ca");
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "ca.pem", &ca.cert_pem);
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("tls", ca.leaf(&[HOST]).secret_yaml(NS, "app-tls")),
            (
                "users",
                secret("users", &[("auth", &format!("carol:{SHA_S3CRET}"))]),
            ),
            (
                "app",
                ingress("app", HOST, "web", &auth("users", &[]), Some("app-tls")),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;
    let r = curl_https(HOST, proxy.https, "/denied", &ca_file, &["--http2"]).await;
    assert_eq!((r.version.as_str(), r.status), ("HTTP/2", 401), "{r:?}");
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"\""));
    let r = curl_https(
        HOST,
        proxy.https,
        "/ok",
        &ca_file,
        &["--http2", "-u", "carol:s3cret!"],
    )
    .await;
    assert_eq!((r.version.as_str(), r.status), ("HTTP/2", 200), "{r:?}");
    assert_eq!(proxied_paths(&backend), ["/ok"]);
}
