//! End to end, the built binary: external authentication (`auth-url`, the oauth2-proxy
//! pattern) as ingress-nginx documents it (docs/user-guide/nginx-configuration/annotations.md,
//! "External Authentication"; docs/examples/auth/oauth-external-auth) and as its nginx.tmpl
//! builds it (nginx's `auth_request` to an internal auth location, `error_page 401 =` the
//! sign-in location). A real HTTP auth service, programmable by the client's `Authorization`,
//! records every subrequest; the pod is a real echo backend. What a client and the pod observe:
//! 2xx → forwarded with the listed headers; 401 → 401, or 302 to `auth-signin` with `rd`;
//! 403 → 403; anything else or no answer → 500 with nothing sent to the pod.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::support::backends::{self, Backend};
use crate::support::binary::{Binary, check};
use crate::support::clients::curl;
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::pki::Ca;

const HOST: &str = "app.extauth.e2e.test";
const URL: &str = "nginx.ingress.kubernetes.io/auth-url";
const SIGNIN: &str = "nginx.ingress.kubernetes.io/auth-signin";
const RESPONSE_HEADERS: &str = "nginx.ingress.kubernetes.io/auth-response-headers";
const CACHE_KEY: &str = "nginx.ingress.kubernetes.io/auth-cache-key";
const CACHE_DURATION: &str = "nginx.ingress.kubernetes.io/auth-cache-duration";

/// One subrequest the auth service saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A small auth service in the shape of oauth2-proxy's `/oauth2/auth`: it answers by the
/// client's `Authorization` (passed through by the proxy):
/// - `Bearer good`: 200 with `X-Auth-Request-User: alice`, `X-Auth-Request-Email` and a
///   refreshed session cookie;
/// - `Bearer forbidden`: 403;
/// - `Bearer odd`: 302 (a status `auth_request` does not accept);
/// - anything else: 401 with a `WWW-Authenticate` challenge and a CSRF cookie.
struct AuthService {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AuthService {
    async fn start() -> AuthService {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind auth");
        let addr = listener.local_addr().expect("auth addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let record = record.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let record = record.clone();
                        async move { Ok::<_, Infallible>(answer(req, &record).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        AuthService { addr, seen, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("auth seen").clone()
    }
}

async fn answer(req: Request<Incoming>, record: &Mutex<Vec<Seen>>) -> Response<Full<Bytes>> {
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.insert(
            k.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        );
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let authorization = headers.get("authorization").cloned().unwrap_or_default();
    record.lock().expect("auth seen").push(Seen {
        method,
        uri,
        headers,
        body,
    });
    let builder = Response::builder();
    let builder = match authorization.as_str() {
        "Bearer good" => builder
            .status(200)
            .header("x-auth-request-user", "alice")
            .header("x-auth-request-email", "alice@example.com")
            .header("set-cookie", "_oauth2_proxy=refreshed; Path=/; HttpOnly"),
        "Bearer forbidden" => builder.status(403),
        "Bearer odd" => builder.status(302).header("location", "/elsewhere"),
        _ => builder
            .status(401)
            .header("www-authenticate", "Bearer realm=\"extauth\"")
            .header("set-cookie", "_oauth2_proxy_csrf=c; Path=/"),
    };
    builder
        .body(Full::new(Bytes::from_static(b"auth body")))
        .expect("auth response")
}

/// An Ingress of a test: name, host, annotations.
type TestIngress<'a> = (&'a str, &'a str, Vec<(&'a str, String)>);

/// A manifest directory under `dir`: Service `web` → `backend`, the class, and one Ingress
/// per `(name, host, annotations)`.
fn manifest_dir(dir: &Path, backend: &Backend, ingresses: &[TestIngress<'_>]) -> PathBuf {
    let m = dir.join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "svc.yaml", &service("web", &[backend.addr.port()]));
    manifests::write(&m, "class.yaml", &ingress_class());
    for (name, host, annotations) in ingresses {
        let annotations: Vec<(&str, &str)> =
            annotations.iter().map(|(k, v)| (*k, v.as_str())).collect();
        manifests::write(
            &m,
            &format!("{name}.yaml"),
            &ingress(name, host, "web", &annotations, None),
        );
    }
    m
}

/// A 2xx from the auth service forwards the request, with the `auth-response-headers` of the
/// auth answer set on it (nginx.tmpl: `auth_request_set $authHeaderN $upstream_http_<name>`
/// and `proxy_set_header <name> $authHeaderN`); a listed header the auth answer lacks reaches
/// the pod from nobody, so a client cannot forge it. The subrequest is the auth location of
/// nginx.tmpl: the client's headers (Authorization, Cookie) without its body, the configured
/// method (GET), `Host` of the auth URL, `X-Original-URL` (`$scheme://$http_host$request_uri`),
/// `X-Original-Method`, `X-Sent-From`, `X-Real-IP` / `X-Forwarded-For` of the real client (a
/// spoofed `X-Forwarded-For` from an untrusted peer is not believed), `X-Auth-Request-Redirect`
/// (`$request_uri`). The auth answer's `Set-Cookie` reaches the client (`add_header Set-Cookie
/// $auth_cookie`).
#[tokio::test]
async fn auth_200_forwards_with_the_auth_headers_and_the_auth_service_sees_the_original_request() {
    let auth = AuthService::start().await;
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(
        dir.path(),
        &backend,
        &[(
            "app",
            HOST,
            vec![
                (URL, auth.url("/oauth2/auth")),
                (
                    RESPONSE_HEADERS,
                    "X-Auth-Request-User, X-Auth-Request-Email, X-Auth-Request-Groups".into(),
                ),
            ],
        )],
    );
    let proxy = Binary::start(&m).await;

    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/app/page?x=1",
        &[
            "-X",
            "POST",
            "--data",
            "payload",
            "-H",
            "Authorization: Bearer good",
            "-H",
            "Cookie: _oauth2_proxy=old",
            "-H",
            "X-Auth-Request-User: mallory",
            "-H",
            "X-Auth-Request-Groups: admins",
            "-H",
            "X-Forwarded-For: 6.6.6.6",
            "-H",
            "X-Original-URL: http://forged/",
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let cookies: Vec<&str> = r
        .headers
        .iter()
        .filter(|(n, _)| n == "set-cookie")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        cookies,
        ["_oauth2_proxy=refreshed; Path=/; HttpOnly"],
        "{r:?}"
    );

    // The pod: the request as sent, with the auth service's identity, not the client's.
    let pod = backend.proxied();
    assert_eq!(pod.len(), 1, "{pod:?}");
    let pod = &pod[0];
    assert_eq!(
        (pod.method.as_str(), pod.uri.as_str()),
        ("POST", "/app/page?x=1")
    );
    assert_eq!(pod.body, b"payload");
    let h = |name: &str| pod.headers.get(name).map(String::as_str);
    assert_eq!(h("x-auth-request-user"), Some("alice"));
    assert_eq!(h("x-auth-request-email"), Some("alice@example.com"));
    assert_eq!(h("x-auth-request-groups"), None, "forged by the client");

    // The auth service: one GET without body describing the original request.
    let seen = auth.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let s = &seen[0];
    assert_eq!((s.method.as_str(), s.uri.as_str()), ("GET", "/oauth2/auth"));
    assert!(s.body.is_empty(), "{s:?}");
    let a = |name: &str| s.headers.get(name).map(String::as_str);
    let original = format!("http://{HOST}:{}/app/page?x=1", proxy.http.port());
    assert_eq!(a("x-original-url"), Some(original.as_str()));
    assert_eq!(a("x-original-method"), Some("POST"));
    assert_eq!(a("x-sent-from"), Some("nginx-ingress-controller"));
    assert_eq!(a("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(a("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(a("x-auth-request-redirect"), Some("/app/page?x=1"));
    assert_eq!(a("authorization"), Some("Bearer good"));
    assert_eq!(a("cookie"), Some("_oauth2_proxy=old"));
    let auth_host = auth.addr.to_string();
    assert_eq!(a("host"), Some(auth_host.as_str()));
    assert_eq!(a("content-length"), None);
    assert!(a("x-request-id").is_some_and(|id| !id.is_empty()));
}

/// A 401 from the auth service is the client's answer, with the auth service's challenge
/// (nginx's `auth_request` passes `WWW-Authenticate` on a 401) and without its cookie (nginx's
/// `add_header` without `always` skips a 401); a 403 is a 403. The pod sees neither request.
#[tokio::test]
async fn auth_401_and_403_are_returned_and_the_pod_sees_nothing() {
    let auth = AuthService::start().await;
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(
        dir.path(),
        &backend,
        &[("app", HOST, vec![(URL, auth.url("/oauth2/auth"))])],
    );
    let proxy = Binary::start(&m).await;

    let r = curl("http", HOST, proxy.http, "/", &[]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"extauth\"")
    );
    assert_eq!(r.header("set-cookie"), None, "{r:?}");
    assert!(!r.body.contains("auth body"), "{r:?}");
    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/",
        &["-H", "Authorization: Bearer wrong"],
    )
    .await;
    assert_eq!(r.status, 401, "{r:?}");
    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/",
        &["-H", "Authorization: Bearer forbidden"],
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(auth.requests().len(), 3);
    assert!(backend.proxied().is_empty());
}

/// With `auth-signin`, a 401 becomes a 302 to the sign-in URL (nginx.tmpl: `error_page 401 =`
/// the sign-in location, `return 302` to `buildAuthSignURL`): the original URL is appended as
/// `rd=$pass_access_scheme://$http_host$escaped_request_uri` when the URL has no `rd` yet; the
/// documented oauth2-proxy form `https://$host/oauth2/start?rd=$escaped_request_uri` is used
/// as written, its variables filled in. The auth answer's cookie goes with the redirect (the
/// sign-in location's `add_header Set-Cookie $auth_cookie`). A 403 is not redirected.
#[tokio::test]
async fn auth_401_with_signin_redirects_with_the_original_url() {
    const DOC_HOST: &str = "doc.extauth.e2e.test";
    let auth = AuthService::start().await;
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(
        dir.path(),
        &backend,
        &[
            (
                "app",
                HOST,
                vec![
                    (URL, auth.url("/oauth2/auth")),
                    (SIGNIN, "https://login.example.com/oauth2/start".into()),
                ],
            ),
            (
                "doc",
                DOC_HOST,
                vec![
                    (URL, auth.url("/oauth2/auth")),
                    (
                        SIGNIN,
                        "https://$host/oauth2/start?rd=$escaped_request_uri".into(),
                    ),
                ],
            ),
        ],
    );
    let proxy = Binary::start(&m).await;

    let r = curl("http", HOST, proxy.http, "/a/b?x=1&y=2", &[]).await;
    assert_eq!(r.status, 302, "{r:?}");
    let want = format!(
        "https://login.example.com/oauth2/start?rd=http://{HOST}:{}%2Fa%2Fb%3Fx%3D1%26y%3D2",
        proxy.http.port()
    );
    assert_eq!(r.header("location"), Some(want.as_str()), "{r:?}");
    assert_eq!(r.header("set-cookie"), Some("_oauth2_proxy_csrf=c; Path=/"));

    let r = curl("http", DOC_HOST, proxy.http, "/a/b?x=1", &[]).await;
    assert_eq!(r.status, 302, "{r:?}");
    let want = format!("https://{DOC_HOST}/oauth2/start?rd=%2Fa%2Fb%3Fx%3D1");
    assert_eq!(r.header("location"), Some(want.as_str()), "{r:?}");

    let r = curl(
        "http",
        HOST,
        proxy.http,
        "/",
        &["-H", "Authorization: Bearer forbidden"],
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert!(backend.proxied().is_empty());
}

/// Fail closed: an auth service that is down, that never answers, or that answers a status
/// other than 2xx, 401 and 403 gets the client a 500 (nginx's `auth_request`: "If the
/// subrequest returns ... any other response code is considered an error"), and the pod
/// never sees the request.
#[tokio::test]
async fn auth_down_silent_or_odd_is_500_and_the_pod_never_sees_the_request() {
    const SILENT_HOST: &str = "silent.extauth.e2e.test";
    const ODD_HOST: &str = "odd.extauth.e2e.test";
    const TLS_HOST: &str = "tls.extauth.e2e.test";
    let auth = AuthService::start().await;
    // An https auth service whose certificate no public root vouches for.
    let untrusted = Ca::new("e2e extauth untrusted ca");
    let tls_auth = backends::tls(
        "tls-auth",
        &untrusted.leaf(&["127.0.0.1"]),
        backends::TlsOptions::default(),
    )
    .await;
    let silent = backends::silent("silent-auth").await;
    let down = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(
        dir.path(),
        &backend,
        &[
            ("down", HOST, vec![(URL, format!("http://{down}/auth"))]),
            (
                "silent",
                SILENT_HOST,
                vec![
                    (URL, format!("http://{}/auth", silent.addr)),
                    // The auth location inherits the location's read timeout.
                    ("nginx.ingress.kubernetes.io/proxy-read-timeout", "1".into()),
                ],
            ),
            ("odd", ODD_HOST, vec![(URL, auth.url("/oauth2/auth"))]),
            (
                "tls",
                TLS_HOST,
                vec![(
                    URL,
                    format!("https://127.0.0.1:{}/auth", tls_auth.addr.port()),
                )],
            ),
        ],
    );
    let proxy = Binary::start(&m).await;

    let good = ["-H", "Authorization: Bearer good"];
    let r = curl("http", HOST, proxy.http, "/", &good).await;
    assert_eq!(r.status, 500, "{r:?}");
    let started = std::time::Instant::now();
    let r = curl("http", SILENT_HOST, proxy.http, "/", &good).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(silent.connections() >= 1);
    let r = curl(
        "http",
        ODD_HOST,
        proxy.http,
        "/",
        &["-H", "Authorization: Bearer odd"],
    )
    .await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.header("location").is_none(), "{r:?}");
    let r = curl("http", TLS_HOST, proxy.http, "/", &good).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(tls_auth.connections() >= 1);
    assert!(
        tls_auth.requests().is_empty(),
        "no request over an unverified TLS"
    );
    assert!(backend.proxied().is_empty());
}

/// `auth-method` (the subrequest's method), `auth-request-redirect` (the
/// `X-Auth-Request-Redirect` value instead of `$request_uri`) and `auth-always-set-cookie`
/// (annotations.md: "By default, the cookie will be set only if an upstream reports with the
/// code 200, 201, 204, 206, 301, 302, 303, 304, 307, or 308"; with it, on the 401 too).
/// Our own `portcullis.io/` names are read like the nginx ones, and win over them.
#[tokio::test]
async fn auth_method_request_redirect_and_always_set_cookie() {
    let auth = AuthService::start().await;
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(
        dir.path(),
        &backend,
        &[(
            "app",
            HOST,
            vec![
                ("portcullis.io/auth-url", auth.url("/verify")),
                (URL, "http://127.0.0.1:1/never-asked".into()),
                ("nginx.ingress.kubernetes.io/auth-method", "POST".into()),
                (
                    "nginx.ingress.kubernetes.io/auth-request-redirect",
                    "https://app.example.com/landing".into(),
                ),
                (
                    "nginx.ingress.kubernetes.io/auth-always-set-cookie",
                    "true".into(),
                ),
            ],
        )],
    );
    let proxy = Binary::start(&m).await;

    let r = curl("http", HOST, proxy.http, "/x", &[]).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("set-cookie"), Some("_oauth2_proxy_csrf=c; Path=/"));
    let seen = auth.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("POST", "/verify")
    );
    assert!(seen[0].body.is_empty());
    assert_eq!(
        seen[0]
            .headers
            .get("x-auth-request-redirect")
            .map(String::as_str),
        Some("https://app.example.com/landing")
    );
    assert!(backend.proxied().is_empty());
}

/// `auth-cache-key` / `auth-cache-duration` (annotations.md: "this enables caching for auth
/// requests"; durations as nginx's `proxy_cache_valid`): within the duration, a second request
/// with the same key is decided without asking the auth service; another key asks; a status
/// the duration does not list (403 here) is never cached.
#[tokio::test]
async fn cached_answers_spare_the_auth_service_per_key() {
    let auth = AuthService::start().await;
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(
        dir.path(),
        &backend,
        &[(
            "app",
            HOST,
            vec![
                (URL, auth.url("/oauth2/auth")),
                (RESPONSE_HEADERS, "X-Auth-Request-User".into()),
                (CACHE_KEY, "$remote_user$http_authorization".into()),
                (CACHE_DURATION, "200 202 401 5m".into()),
            ],
        )],
    );
    let proxy = Binary::start(&m).await;

    let get = |auth_header: &'static str| {
        let port = proxy.http;
        async move {
            let header = format!("Authorization: {auth_header}");
            curl("http", HOST, port, "/", &["-H", &header]).await.status
        }
    };
    assert_eq!(get("Bearer good").await, 200);
    assert_eq!(get("Bearer good").await, 200);
    assert_eq!(
        auth.requests().len(),
        1,
        "the second answer came from the cache"
    );
    // The cached answer still sets the identity header on the forwarded request.
    let pod = backend.proxied();
    assert_eq!(pod.len(), 2);
    assert!(
        pod.iter()
            .all(|s| s.headers.get("x-auth-request-user").map(String::as_str) == Some("alice")),
        "{pod:?}"
    );
    // A rebuilt table (any cluster change; here another Ingress) keeps the cache.
    let before = proxy.generation().await;
    manifests::write(
        &m,
        "other.yaml",
        &ingress("other", "other.extauth.e2e.test", "web", &[], None),
    );
    proxy
        .wait_generation_above(before, Duration::from_secs(10))
        .await;
    assert_eq!(get("Bearer good").await, 200);
    assert_eq!(auth.requests().len(), 1, "the cache survived the rebuild");
    assert_eq!(get("Bearer wrong").await, 401);
    assert_eq!(get("Bearer wrong").await, 401);
    assert_eq!(auth.requests().len(), 2, "401 is cached by its own key");
    assert_eq!(get("Bearer forbidden").await, 403);
    assert_eq!(get("Bearer forbidden").await, 403);
    assert_eq!(auth.requests().len(), 4, "403 is not in the duration list");
}

/// `portcullis check`: an `auth-url` Portcullis cannot honour (variables other than the
/// request's host and scheme, or not an http(s) URL) refuses the Ingress with the key named, as do `auth-snippet` (raw nginx
/// configuration) and `auth-proxy-set-headers` (a ConfigMap of headers for the auth service):
/// served without them, the auth service would decide on other input, or not at all.
#[test]
fn unusable_external_auth_refuses_the_ingress() {
    for (key, value, why) in [
        (URL, "https://$host/auth?u=$request_uri", "invalid value"),
        (URL, "auth.example.com/verify", "invalid value"),
        (CACHE_KEY, "$arg_token", "invalid value"),
        (
            "nginx.ingress.kubernetes.io/auth-snippet",
            "proxy_set_header Foo 42;",
            "refused",
        ),
        (
            "nginx.ingress.kubernetes.io/auth-proxy-set-headers",
            "default/auth-headers",
            "refused",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        manifests::write(dir.path(), "class.yaml", &ingress_class());
        manifests::write(dir.path(), "svc.yaml", &service("web", &[8080]));
        let mut annotations = vec![(key, value)];
        if key != URL {
            annotations.push((URL, "http://auth.example.com/verify"));
        }
        manifests::write(
            dir.path(),
            "app.yaml",
            &ingress("app", HOST, "web", &annotations, None),
        );
        let out = check(dir.path());
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{key}={value}\n{stdout}");
        assert!(stdout.contains(key), "{key}={value}: {why}\n{stdout}");
    }
}

/// On a terminated HTTPS host, over HTTP/2 as over HTTP/1.1, the auth service is told the
/// original URL with its `https` scheme (`X-Original-URL: $scheme://$http_host$request_uri`)
/// and the sign-in redirect carries it in `rd`.
#[tokio::test]
async fn terminated_https_over_http2_and_http1() {
    let ca = Ca::new("e2e extauth ca");
    let auth = AuthService::start().await;
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "ca.pem", &ca.cert_pem);
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "svc.yaml", &service("web", &[backend.addr.port()]));
    manifests::write(&m, "class.yaml", &ingress_class());
    manifests::write(
        &m,
        "secret.yaml",
        &ca.leaf(&[HOST]).secret_yaml(manifests::NS, "app-tls"),
    );
    let url = auth.url("/oauth2/auth");
    manifests::write(
        &m,
        "app.yaml",
        &ingress(
            "app",
            HOST,
            "web",
            &[
                (URL, url.as_str()),
                (SIGNIN, "https://login.example.com/start"),
                (RESPONSE_HEADERS, "X-Auth-Request-User"),
            ],
            Some("app-tls"),
        ),
    );
    let proxy = Binary::start(&m).await;

    let port = proxy.https.port();
    for version in ["--http2", "--http1.1"] {
        let r = crate::support::clients::curl_https(
            HOST,
            proxy.https,
            "/p?q=1",
            &ca_file,
            &[version, "-H", "Authorization: Bearer good"],
        )
        .await;
        assert_eq!(r.status, 200, "{version} {r:?}");
        let seen = auth.requests();
        let last = seen.last().expect("a subrequest");
        let want = format!("https://{HOST}:{port}/p?q=1");
        assert_eq!(
            last.headers.get("x-original-url").map(String::as_str),
            Some(want.as_str()),
            "{version}"
        );
        let r =
            crate::support::clients::curl_https(HOST, proxy.https, "/p?q=1", &ca_file, &[version])
                .await;
        assert_eq!(r.status, 302, "{version} {r:?}");
        let want = format!("https://login.example.com/start?rd=https://{HOST}:{port}%2Fp%3Fq%3D1");
        assert_eq!(r.header("location"), Some(want.as_str()), "{version}");
    }
    let pod = backend.proxied();
    assert_eq!(pod.len(), 2, "{pod:?}");
    assert!(
        pod.iter()
            .all(|s| s.headers.get("x-auth-request-user").map(String::as_str) == Some("alice"))
    );
}

/// An `auth-url` that leads back into an Ingress protected by external auth (here its own
/// host) would have each subrequest ask for another, without end: the proxy marks its
/// subrequests, and a marked request that needs external auth is answered 500 at once. The
/// client gets a 500, the pod sees nothing, and the proxy keeps serving.
#[tokio::test]
async fn an_auth_url_looping_back_through_the_proxy_is_500_not_a_storm() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(dir.path(), &backend, &[]);
    let proxy = Binary::start(&m).await;
    let before = proxy.generation().await;
    let url = format!("http://localhost:{}/auth", proxy.http.port());
    manifests::write(
        &m,
        "loop.yaml",
        &ingress(
            "loop",
            "localhost",
            "web",
            &[(URL, url.as_str()), (SIGNIN, "https://login.example.com/")],
            None,
        ),
    );
    proxy
        .wait_generation_above(before, Duration::from_secs(10))
        .await;
    let r = curl("http", "localhost", proxy.http, "/", &[]).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(backend.proxied().is_empty());
    let r = curl("http", "localhost", proxy.http, "/", &[]).await;
    assert_eq!(r.status, 500, "{r:?}");
}

/// The documented oauth2-proxy form (docs/examples/auth/oauth-external-auth: `auth-url:
/// "https://$host/oauth2/auth"`, with oauth2-proxy served by another Ingress of the same host
/// under `/oauth2`): the subrequest goes to the request's own host, through the proxy, to the
/// auth service's Ingress. Under a rule without a host the client picks `$host`, so such an
/// `auth-url` is not followed there: 500.
#[tokio::test]
async fn auth_url_naming_the_request_host_reaches_the_auth_ingress_of_that_host() {
    let auth = AuthService::start().await;
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(dir.path(), &backend, &[]);
    manifests::write(&m, "auth-svc.yaml", &service("auth", &[auth.addr.port()]));
    let proxy = Binary::start(&m).await;
    let before = proxy.generation().await;
    let url = format!("http://$host:{}/oauth2/auth", proxy.http.port());
    let oauth =
        ingress("oauth", "localhost", "auth", &[], None).replace("path: /\n", "path: /oauth2\n");
    let app = ingress(
        "app",
        "localhost",
        "web",
        &[
            (URL, url.as_str()),
            (RESPONSE_HEADERS, "X-Auth-Request-User"),
        ],
        None,
    );
    let catch_all = ingress("anyhost", "x", "web", &[(URL, url.as_str())], None)
        .replace("  - host: x\n    http:", "  - http:");
    // One file, so the next table has all three.
    manifests::write(
        &m,
        "ingresses.yaml",
        &format!("{oauth}---\n{app}---\n{catch_all}"),
    );
    proxy
        .wait_generation_above(before, Duration::from_secs(10))
        .await;

    let good = ["-H", "Authorization: Bearer good"];
    let r = curl("http", "localhost", proxy.http, "/page", &good).await;
    assert_eq!(r.status, 200, "{r:?}");
    let seen = auth.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri, "/oauth2/auth");
    let original = format!("http://localhost:{}/page", proxy.http.port());
    assert_eq!(
        seen[0].headers.get("x-original-url").map(String::as_str),
        Some(original.as_str())
    );
    let pod = backend.proxied();
    assert_eq!(pod.len(), 1, "{pod:?}");
    assert_eq!(
        pod[0]
            .headers
            .get("x-auth-request-user")
            .map(String::as_str),
        Some("alice")
    );
    let r = curl("http", "localhost", proxy.http, "/page", &[]).await;
    assert_eq!(r.status, 401, "{r:?}");

    // A host no rule names falls to the host-less rule: its `$host` is the client's choice.
    let r = curl("http", "elsewhere.test", proxy.http, "/", &good).await;
    assert_eq!(r.status, 500, "{r:?}");
    assert_eq!(auth.requests().len(), 2);
    assert_eq!(backend.proxied().len(), 1);
}
