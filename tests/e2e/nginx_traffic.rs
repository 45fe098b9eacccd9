//! End to end, the built binary with several real backends: ingress-nginx's sticky sessions
//! (`affinity: cookie`) and canary Ingresses, as a client observes them through Portcullis
//! (which pod answered, which cookies came back). Each test cites the ingress-nginx
//! documentation it follows.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::support::backends::{self, Backend};
use crate::support::binary::{self, Binary};
use crate::support::http::{self, Answer};
use crate::support::manifests::{self, NS, ingress, ingress_class, service};

const HOST: &str = "traffic.nginx.e2e.test";

/// An Ingress `name` for `HOST` with one Prefix path per `(path, service)`, created at
/// `created` (RFC 3339).
fn ingress_paths(
    name: &str,
    paths: &[(&str, &str)],
    annotations: &[(&str, &str)],
    created: &str,
) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: {NS}
  creationTimestamp: \"{created}\"
"
    );
    if !annotations.is_empty() {
        out.push_str("  annotations:\n");
        for (k, v) in annotations {
            out.push_str(&format!("    {k}: \"{v}\"\n"));
        }
    }
    out.push_str(&format!(
        "spec:\n  ingressClassName: portcullis\n  rules:\n  - host: {HOST}\n    http:\n      paths:\n"
    ));
    for (path, svc) in paths {
        out.push_str(&format!(
            "      - path: {path}
        pathType: Prefix
        backend:
          service:
            name: {svc}
            port:
              number: 80
"
        ));
    }
    out
}

/// `GET path` on a new connection, with `headers`.
async fn get(proxy: &Binary, path: &str, headers: &[(&str, &str)]) -> Answer {
    http::get(proxy.http, HOST, path, headers).await
}

/// The `NAME=VALUE` pair of a `Set-Cookie` line, and its attributes (lower-cased names).
fn parse_set_cookie(line: &str) -> (String, String, BTreeMap<String, String>) {
    let mut parts = line.split(';').map(str::trim);
    let (name, value) = parts
        .next()
        .and_then(|p| p.split_once('='))
        .expect("NAME=VALUE");
    let attributes = parts
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), v.to_string()),
            None => (a.to_ascii_lowercase(), String::new()),
        })
        .collect();
    (name.to_string(), value.to_string(), attributes)
}

/// The session cookie set on `answer` (`Set-Cookie` named `name`), if any.
fn session_cookie(answer: &Answer, name: &str) -> Option<(String, BTreeMap<String, String>)> {
    answer
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(parse_set_cookie)
        .find(|(n, _, _)| n == name)
        .map(|(_, v, a)| (v, a))
}

/// Three pods of Service `web` and the proxy over `files`.
async fn three_pods(dir: &Path, files: &[(&str, String)]) -> ([Backend; 3], Binary) {
    let pods = [
        backends::http("pod-a").await,
        backends::http("pod-b").await,
        backends::http("pod-c").await,
    ];
    manifests::write(dir, "class.yaml", &ingress_class());
    let ports: Vec<u16> = pods.iter().map(|p| p.addr.port()).collect();
    manifests::write(dir, "svc.yaml", &service("web", &ports));
    for (name, yaml) in files {
        manifests::write(dir, &format!("{name}.yaml"), yaml);
    }
    let proxy = Binary::start(dir).await;
    (pods, proxy)
}

/// ingress-nginx "Sticky sessions" (docs/examples/affinity/cookie) and the annotations
/// reference's "Session Affinity": `affinity: cookie` sets a cookie (default name
/// `INGRESSCOOKIE`) on the first response, `HttpOnly`, with the `Path` of the matched location
/// ("defaults to the currently matched path"), `Max-Age`/`Expires`/`SameSite` as annotated;
/// requests carrying it keep going to the same pod; requests without it are balanced; the
/// value does not reveal the pod's address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_affinity_pins_a_client_to_one_pod() {
    let dir = tempfile::tempdir().unwrap();
    let sticky = ingress_paths(
        "sticky",
        &[("/app", "web")],
        &[
            ("nginx.ingress.kubernetes.io/affinity", "cookie"),
            (
                "nginx.ingress.kubernetes.io/session-cookie-max-age",
                "172800",
            ),
            ("nginx.ingress.kubernetes.io/session-cookie-expires", "3600"),
            ("nginx.ingress.kubernetes.io/session-cookie-samesite", "Lax"),
        ],
        "2025-01-01T00:00:00Z",
    );
    let (_pods, proxy) = three_pods(dir.path(), &[("sticky", sticky)]).await;

    // Without the cookie: balanced over all pods, each answer starting a session.
    let mut by_pod: BTreeMap<String, usize> = BTreeMap::new();
    let mut first = None;
    for i in 0..60 {
        let a = get(&proxy, &format!("/app/{i}"), &[]).await;
        assert_eq!(a.status, 200, "{a:?}");
        let (value, attrs) = session_cookie(&a, "INGRESSCOOKIE").expect("Set-Cookie");
        assert_eq!(
            attrs.get("path").map(String::as_str),
            Some("/app"),
            "{attrs:?}"
        );
        assert!(attrs.contains_key("httponly"), "{attrs:?}");
        assert_eq!(attrs.get("max-age").map(String::as_str), Some("172800"));
        assert!(
            attrs.get("expires").is_some_and(|e| e.ends_with(" GMT")),
            "{attrs:?}"
        );
        assert_eq!(attrs.get("samesite").map(String::as_str), Some("Lax"));
        assert!(!attrs.contains_key("secure"), "plain HTTP: {attrs:?}");
        // Opaque: hex digits (no address, no port), the same length for every pod.
        assert!(
            value.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.') && !value.contains(':'),
            "{value}"
        );
        *by_pod.entry(a.backend().unwrap().to_string()).or_default() += 1;
        first.get_or_insert((value, a.backend().unwrap().to_string()));
    }
    assert_eq!(by_pod.len(), 3, "spread without a cookie: {by_pod:?}");

    // With it: the same pod every time, and no new cookie.
    let (value, pod) = first.unwrap();
    let cookie = format!("other=1; INGRESSCOOKIE={value}");
    for i in 0..30 {
        let a = get(&proxy, &format!("/app/again/{i}"), &[("cookie", &cookie)]).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.backend(), Some(pod.as_str()), "request {i}");
        assert!(session_cookie(&a, "INGRESSCOOKIE").is_none(), "{a:?}");
    }
    // A forged value is no session: balanced, and a new cookie.
    let a = get(&proxy, "/app/x", &[("cookie", "INGRESSCOOKIE=not-ours")]).await;
    assert!(session_cookie(&a, "INGRESSCOOKIE").is_some(), "{a:?}");
}

/// ingress-nginx "Sticky sessions": "When the backend server is removed, the requests are
/// then re-routed to another upstream server and NGINX creates a new cookie, as the previous
/// hash became invalid" (here with `affinity-mode: persistent`, whose cookie names its pod).
/// The cookie survives configuration changes that keep its pod (a new table, a pod added).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_whose_pod_left_moves_with_a_new_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let sticky = ingress(
        "sticky",
        HOST,
        "web",
        &[
            ("portcullis.io/affinity", "cookie"),
            ("portcullis.io/affinity-mode", "persistent"),
            ("portcullis.io/session-cookie-name", "route"),
        ],
        None,
    );
    let (pods, proxy) = three_pods(dir.path(), &[("sticky", sticky)]).await;
    let a = get(&proxy, "/", &[]).await;
    let (value, attrs) = session_cookie(&a, "route").expect("Set-Cookie route");
    assert_eq!(attrs.get("path").map(String::as_str), Some("/"));
    let pinned = a.backend().unwrap().to_string();
    let cookie = format!("route={value}");

    // A pod added: the session stays.
    let extra = backends::http("pod-d").await;
    let mut ports: Vec<u16> = pods.iter().map(|p| p.addr.port()).collect();
    ports.push(extra.addr.port());
    let generation = proxy.generation().await;
    manifests::write(dir.path(), "svc.yaml", &service("web", &ports));
    proxy
        .wait_generation_above(generation, Duration::from_secs(10))
        .await;
    for i in 0..10 {
        let a = get(&proxy, &format!("/{i}"), &[("cookie", &cookie)]).await;
        assert_eq!(a.backend(), Some(pinned.as_str()));
        assert!(session_cookie(&a, "route").is_none());
    }

    // The pinned pod leaves the Service.
    let remaining: Vec<u16> = pods
        .iter()
        .chain([&extra])
        .filter(|p| p.name != pinned)
        .map(|p| p.addr.port())
        .collect();
    let generation = proxy.generation().await;
    manifests::write(dir.path(), "svc.yaml", &service("web", &remaining));
    proxy
        .wait_generation_above(generation, Duration::from_secs(10))
        .await;
    let a = get(&proxy, "/moved", &[("cookie", &cookie)]).await;
    assert_eq!(a.status, 200);
    let moved_to = a.backend().unwrap().to_string();
    assert_ne!(moved_to, pinned);
    let (new_value, _) = session_cookie(&a, "route").expect("a new cookie");
    assert_ne!(new_value, value);
    let cookie = format!("route={new_value}");
    for i in 0..10 {
        let a = get(&proxy, &format!("/moved/{i}"), &[("cookie", &cookie)]).await;
        assert_eq!(a.backend(), Some(moved_to.as_str()));
    }
}

/// The pods of the canary tests: `main-a`, `main-b` behind Service `main`, `canary-a` behind
/// `canary`, and the proxy over `files`.
async fn main_and_canary(dir: &Path, files: &[(&str, String)]) -> (Vec<Backend>, Binary) {
    let pods = vec![
        backends::http("main-a").await,
        backends::http("main-b").await,
        backends::http("canary-a").await,
    ];
    manifests::write(dir, "class.yaml", &ingress_class());
    let main_ports = [pods[0].addr.port(), pods[1].addr.port()];
    manifests::write(dir, "main-svc.yaml", &service("main", &main_ports));
    manifests::write(
        dir,
        "canary-svc.yaml",
        &service("canary", &[pods[2].addr.port()]),
    );
    for (name, yaml) in files {
        manifests::write(dir, &format!("{name}.yaml"), yaml);
    }
    let proxy = Binary::start(dir).await;
    (pods, proxy)
}

/// The main Ingress of the canary tests: `/` and `/api` → Service `main`, created first.
fn main_ingress() -> String {
    ingress_paths(
        "main",
        &[("/", "main"), ("/api", "main")],
        &[],
        "2025-01-01T00:00:00Z",
    )
}

/// A canary Ingress on `/api` → Service `canary` with `annotations` (and `canary: "true"`),
/// created after the main one.
fn canary_ingress(annotations: &[(&str, &str)]) -> String {
    let mut all = vec![("nginx.ingress.kubernetes.io/canary", "true")];
    all.extend_from_slice(annotations);
    ingress_paths(
        "api-canary",
        &[("/api", "canary")],
        &all,
        "2025-06-01T00:00:00Z",
    )
}

fn is_canary(a: &Answer) -> bool {
    a.backend() == Some("canary-a")
}

/// ingress-nginx annotations reference, "Canary": `canary-by-header`: "When the request
/// header is set to `always`, it will be routed to the canary. When the header is set to
/// `never`, it will never be routed to the canary. For any other value, the header will be
/// ignored and the request compared against the other canary rules by precedence"; then
/// `canary-by-cookie` (`always`/`never`), then `canary-weight`. The canary Ingress on the main
/// Ingress's host and path is no conflict, and the main Ingress's other paths are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_by_header_then_cookie_then_weight() {
    let dir = tempfile::tempdir().unwrap();
    let canary = canary_ingress(&[
        ("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary"),
        ("nginx.ingress.kubernetes.io/canary-by-cookie", "use_canary"),
        ("nginx.ingress.kubernetes.io/canary-weight", "0"),
    ]);
    let (_pods, proxy) =
        main_and_canary(dir.path(), &[("main", main_ingress()), ("canary", canary)]).await;
    let table = proxy.table().await;
    let diagnostics = binary::diagnostics(&table);
    assert!(
        !diagnostics.iter().any(|d| d.starts_with("error")),
        "{diagnostics:#?}"
    );

    for i in 0..10 {
        let path = format!("/api/{i}");
        assert!(is_canary(
            &get(&proxy, &path, &[("x-canary", "always")]).await
        ));
        assert!(!is_canary(
            &get(&proxy, &path, &[("x-canary", "never")]).await
        ));
        // Weight 0: anything else stays on main.
        assert!(!is_canary(
            &get(&proxy, &path, &[("x-canary", "maybe")]).await
        ));
        assert!(!is_canary(&get(&proxy, &path, &[]).await));
        // The cookie, below the header in precedence.
        let cookie = [("cookie", "a=b; use_canary=always")];
        assert!(is_canary(&get(&proxy, &path, &cookie).await));
        let both = [("x-canary", "never"), ("cookie", "use_canary=always")];
        assert!(!is_canary(&get(&proxy, &path, &both).await));
        let never = [("x-canary", "x"), ("cookie", "use_canary=never")];
        assert!(!is_canary(&get(&proxy, &path, &never).await));
        // The main Ingress's other path never sees the canary.
        let other = get(&proxy, &format!("/web/{i}"), &[("x-canary", "always")]).await;
        assert_eq!(other.status, 200);
        assert!(!is_canary(&other));
    }
}

/// "Canary": `canary-by-header-value`: "When the request header is set to this value, it will
/// be routed to the canary. For any other header value, the header will be ignored";
/// `canary-by-header-pattern` matches a regular expression instead ("Note that when
/// `canary-by-header-value` is set this annotation will be ignored").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_by_header_value_and_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let canary = canary_ingress(&[
        ("nginx.ingress.kubernetes.io/canary-by-header", "X-Version"),
        ("nginx.ingress.kubernetes.io/canary-by-header-value", "v2"),
    ]);
    let (_pods, proxy) =
        main_and_canary(dir.path(), &[("main", main_ingress()), ("canary", canary)]).await;
    assert!(is_canary(
        &get(&proxy, "/api", &[("x-version", "v2")]).await
    ));
    assert!(!is_canary(
        &get(&proxy, "/api", &[("x-version", "always")]).await
    ));
    assert!(!is_canary(
        &get(&proxy, "/api", &[("x-version", "v3")]).await
    ));

    // Now a pattern instead of the value.
    let generation = proxy.generation().await;
    let canary = canary_ingress(&[
        ("nginx.ingress.kubernetes.io/canary-by-header", "X-Version"),
        (
            "nginx.ingress.kubernetes.io/canary-by-header-pattern",
            "^v[2-9]$",
        ),
    ]);
    manifests::write(dir.path(), "canary.yaml", &canary);
    proxy
        .wait_generation_above(generation, Duration::from_secs(10))
        .await;
    assert!(is_canary(
        &get(&proxy, "/api", &[("x-version", "v3")]).await
    ));
    assert!(!is_canary(
        &get(&proxy, "/api", &[("x-version", "v1")]).await
    ));
    assert!(!is_canary(&get(&proxy, "/api", &[]).await));
}

/// ingress-nginx "Session Affinity": `affinity-canary-behavior` "sticky (default) will
/// ensure that users that were served by canaries, will continue to be served by canaries";
/// and a session of the main Ingress's pods stays there. With a 50% weight, every client
/// keeps the side (and the pod) its first answer came from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_sessions_keep_their_side_of_a_canary() {
    let dir = tempfile::tempdir().unwrap();
    let cookie = [("nginx.ingress.kubernetes.io/affinity", "cookie")];
    let main = ingress_paths(
        "main",
        &[("/", "main"), ("/api", "main")],
        &cookie,
        "2025-01-01T00:00:00Z",
    );
    let canary = canary_ingress(&[
        ("nginx.ingress.kubernetes.io/affinity", "cookie"),
        ("nginx.ingress.kubernetes.io/canary-weight", "50"),
    ]);
    let (_pods, proxy) = main_and_canary(dir.path(), &[("main", main), ("canary", canary)]).await;
    let mut sides = BTreeMap::new();
    for client in 0..20 {
        let first = get(&proxy, "/api/first", &[]).await;
        let (value, attrs) = session_cookie(&first, "INGRESSCOOKIE").expect("Set-Cookie");
        assert_eq!(attrs.get("path").map(String::as_str), Some("/api"));
        let pod = first.backend().unwrap().to_string();
        let cookie = format!("INGRESSCOOKIE={value}");
        for i in 0..15 {
            let a = get(
                &proxy,
                &format!("/api/{client}/{i}"),
                &[("cookie", &cookie)],
            )
            .await;
            assert_eq!(
                a.backend(),
                Some(pod.as_str()),
                "client {client} request {i}"
            );
        }
        *sides.entry(pod == "canary-a").or_insert(0) += 1;
    }
    // 20 clients at 50%: both sides got some (all on one side: 1 in 500 000).
    assert_eq!(sides.len(), 2, "{sides:?}");
}

/// "Canary": `canary-weight`: "A weight of 0 implies that no requests will be sent to the
/// service in the Canary ingress by this canary rule. A weight of `<weight-total>` means
/// implies all requests will be sent"; `canary-weight-total` "defaults to 100".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_weight_splits_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let weighted = |w: &str| {
        canary_ingress(&[
            ("nginx.ingress.kubernetes.io/canary-weight", w),
            ("nginx.ingress.kubernetes.io/canary-weight-total", "100"),
        ])
    };
    let (_pods, proxy) = main_and_canary(
        dir.path(),
        &[("main", main_ingress()), ("canary", weighted("100"))],
    )
    .await;
    let share = |proxy: &Binary, n: usize| {
        let proxy = proxy.http;
        async move {
            let mut canary = 0;
            for i in 0..n {
                let a = http::get(proxy, HOST, &format!("/api/w{i}"), &[]).await;
                assert_eq!(a.status, 200);
                canary += usize::from(is_canary(&a));
            }
            canary
        }
    };
    assert_eq!(share(&proxy, 50).await, 50, "weight 100 of 100");

    for (weight, range) in [("0", 0..=0), ("30", 20..=100)] {
        let generation = proxy.generation().await;
        manifests::write(dir.path(), "canary.yaml", &weighted(weight));
        proxy
            .wait_generation_above(generation, Duration::from_secs(10))
            .await;
        let n = share(&proxy, 200).await;
        assert!(
            range.contains(&n),
            "weight {weight}: {n} of 200 on the canary"
        );
    }
}

/// "Canary": a canary Ingress is an alternative to a main one ("Canary deployments require
/// that you create two ingresses"); without one it serves nothing, and only one canary per
/// path applies ("Known Limitations: Currently a maximum of one canary ingress can be applied
/// per Ingress rule"). Its other annotations are inherited from the main Ingress, so they
/// are reported as ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_without_a_main_ingress_is_reported_and_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let lonely = ingress_paths(
        "lonely",
        &[("/alone", "canary")],
        &[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-weight", "100"),
            ("nginx.ingress.kubernetes.io/proxy-body-size", "1m"),
        ],
        "2025-06-01T00:00:00Z",
    );
    let second = ingress_paths(
        "second-canary",
        &[("/api", "canary")],
        &[("nginx.ingress.kubernetes.io/canary", "true")],
        "2025-07-01T00:00:00Z",
    );
    let (_pods, proxy) = main_and_canary(
        dir.path(),
        &[
            ("main", main_ingress()),
            (
                "canary",
                canary_ingress(&[("nginx.ingress.kubernetes.io/canary-weight", "100")]),
            ),
            ("lonely", lonely),
            ("second", second),
        ],
    )
    .await;
    let a = get(&proxy, "/alone", &[]).await;
    assert!(!is_canary(&a), "{a:?}");
    assert!(is_canary(&get(&proxy, "/api", &[]).await));
    let diagnostics = binary::diagnostics(&proxy.table().await).join("\n");
    assert!(
        diagnostics.contains("lonely") && diagnostics.contains("no main Ingress serves"),
        "{diagnostics}"
    );
    assert!(diagnostics.contains("proxy-body-size"), "{diagnostics}");
    assert!(
        diagnostics.contains("second-canary") && diagnostics.contains("already has the canary"),
        "{diagnostics}"
    );

    // `check` shows the canary on the main route.
    let out = binary::check(dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("canary: weight 100/100 → default/canary:80"),
        "{text}"
    );
}

/// Bad values refuse the Ingress with a diagnostic naming the key and the accepted values.
#[test]
fn bad_affinity_and_canary_values_are_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    manifests::write(dir.path(), "class.yaml", &ingress_class());
    manifests::write(dir.path(), "svc.yaml", &service("web", &[8080]));
    manifests::write(
        dir.path(),
        "a.yaml",
        &ingress(
            "bad-affinity",
            HOST,
            "web",
            &[
                ("nginx.ingress.kubernetes.io/affinity", "cookie"),
                (
                    "nginx.ingress.kubernetes.io/session-cookie-samesite",
                    "Sometimes",
                ),
            ],
            None,
        ),
    );
    manifests::write(
        dir.path(),
        "b.yaml",
        &ingress(
            "bad-canary",
            "other.e2e.test",
            "web",
            &[
                ("nginx.ingress.kubernetes.io/canary", "true"),
                ("nginx.ingress.kubernetes.io/canary-weight", "150"),
            ],
            None,
        ),
    );
    let out = binary::check(dir.path());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("nginx.ingress.kubernetes.io/session-cookie-samesite")
            && text.contains("None, Lax, Strict"),
        "{text}"
    );
    assert!(
        text.contains("nginx.ingress.kubernetes.io/canary-weight") && text.contains("0 to 100"),
        "{text}"
    );
}
