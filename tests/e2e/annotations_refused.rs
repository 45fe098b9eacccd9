//! End to end, the built binary: "no silent drop, ever". An Ingress carrying an ingress-nginx
//! annotation Portcullis does not support, whose absence would change who may reach the
//! service or what the client gets, is **refused**: not served at all (its host answers like
//! an unknown host and its backend sees no request), reported in the log and by
//! `portcullis check` (exit 1) with the annotation's name. The annotations are ingress-nginx's
//! own, as its documentation lists them
//! (<https://github.com/kubernetes/ingress-nginx/blob/main/docs/user-guide/nginx-configuration/annotations.md>):
//! `auth-tls-match-cn` (which client-certificate subjects may pass), `auth-proxy-set-headers` (headers for the
//! external authentication service) and `server-snippet` (raw nginx configuration, here `return 403;`). A harmless one
//! (`proxy-buffering: "off"`) is served with a warning; a typo in our own prefix
//! (`portcullis.io/tls-mdoe`) is refused with "did you mean portcullis.io/tls-mode". Other
//! Ingresses in the same directory keep serving, and an Ingress that was served and then gains
//! a client-certificate restriction is not kept at its last good version: it stops being served.

use std::time::Duration;

use crate::support::backends;
use crate::support::binary::{Binary, check, diagnostics, hosts};
use crate::support::clients::curl;
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::wait::wait_until;

const GOOD: &str = "good.refused.test";
const BUFFERED: &str = "buffered.refused.test";
const UNKNOWN: &str = "nobody.refused.test";
const LATER: &str = "later.refused.test";

const MATCH_CN: &str = "nginx.ingress.kubernetes.io/auth-tls-match-cn";
const AUTH_HEADERS: &str = "nginx.ingress.kubernetes.io/auth-proxy-set-headers";
const SERVER_SNIPPET: &str = "nginx.ingress.kubernetes.io/server-snippet";
const BUFFERING: &str = "nginx.ingress.kubernetes.io/proxy-buffering";
const TYPO: &str = "portcullis.io/tls-mdoe";
const DID_YOU_MEAN: &str = "did you mean portcullis.io/tls-mode";

/// The refused Ingresses: (name, host, annotation, value).
const REFUSED: [(&str, &str, &str, &str); 4] = [
    (
        "cn-matched",
        "cn-matched.refused.test",
        MATCH_CN,
        "CN=admin",
    ),
    (
        "authenticated",
        "authenticated.refused.test",
        AUTH_HEADERS,
        "default/auth-headers",
    ),
    (
        "snippet",
        "snippet.refused.test",
        SERVER_SNIPPET,
        "return 403;",
    ),
    ("typo", "typo.refused.test", TYPO, "terminate"),
];

#[tokio::test]
async fn unsupported_annotations_refuse_the_ingress_and_nothing_else() {
    // Two backends: the refused Ingresses point at `guarded`, which must never see a request.
    let open = backends::http("open").await;
    let guarded = backends::http("guarded").await;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "open.yaml", &service("open", &[open.addr.port()]));
    manifests::write(
        m,
        "guarded.yaml",
        &service("guarded", &[guarded.addr.port()]),
    );
    manifests::write(m, "good.yaml", &ingress("good", GOOD, "open", &[], None));
    manifests::write(
        m,
        "later.yaml",
        &ingress("later", LATER, "guarded", &[], None),
    );
    manifests::write(
        m,
        "buffered.yaml",
        &ingress("buffered", BUFFERED, "open", &[(BUFFERING, "off")], None),
    );
    for (name, host, key, value) in REFUSED {
        manifests::write(
            m,
            &format!("{name}.yaml"),
            &ingress(name, host, "guarded", &[(key, value)], None),
        );
    }

    let proxy = Binary::start(m).await;
    let table = proxy
        .wait_for_table(
            Duration::from_secs(5),
            "an error naming each refused annotation",
            |t| {
                let d = diagnostics(t);
                REFUSED.iter().all(|(_, _, key, _)| {
                    d.iter().any(|d| d.starts_with("error ") && d.contains(key))
                })
            },
        )
        .await;

    // Refused: the client gets what an unknown host gets; the backend sees nothing.
    let unknown = curl("http", UNKNOWN, proxy.http, "/", &[]).await;
    assert_eq!(unknown.status, 404, "{unknown:?}");
    for (name, host, key, _) in REFUSED {
        let got = curl("http", host, proxy.http, "/", &[]).await;
        assert_eq!(
            (got.status, &got.body),
            (unknown.status, &unknown.body),
            "{host} ({key}) is served"
        );
        assert!(
            !hosts(&table).contains(&host.to_string()),
            "{host} is in the table: {table:#}"
        );
        let line = diagnostics(&table)
            .into_iter()
            .find(|d| d.contains(&format!("Ingress default/{name} ")))
            .unwrap_or_else(|| panic!("no diagnostic for {name}: {table:#}"));
        assert!(line.starts_with("error "), "{line}");
        assert!(
            line.contains(&format!("metadata.annotations[\"{key}\"]")),
            "{line}"
        );
        assert!(line.contains("not even its last good version"), "{line}");
    }
    assert_eq!(
        client_requests(&guarded),
        0,
        "a refused Ingress's backend got a request"
    );
    let typo = diagnostics(&table)
        .into_iter()
        .find(|d| d.contains(TYPO))
        .unwrap_or_default();
    assert!(typo.contains(DID_YOU_MEAN), "{typo}");

    // The binary's log names every refused annotation.
    for (_, _, key, _) in REFUSED {
        assert!(
            proxy
                .wait_for_log(Duration::from_secs(2), |l| l.contains(key))
                .await,
            "the log does not name {key}:\n{}",
            proxy.log_text()
        );
    }
    assert!(
        proxy.log_text().contains(DID_YOU_MEAN),
        "{}",
        proxy.log_text()
    );

    // The others keep serving; the harmless annotation is a warning, and served.
    assert_eq!(curl("http", GOOD, proxy.http, "/", &[]).await.status, 200);
    assert_eq!(
        curl("http", BUFFERED, proxy.http, "/", &[]).await.status,
        200
    );
    assert_eq!(curl("http", LATER, proxy.http, "/", &[]).await.status, 200);
    let buffering = diagnostics(&table)
        .into_iter()
        .find(|d| d.contains(BUFFERING))
        .unwrap_or_else(|| panic!("no diagnostic for {BUFFERING}: {table:#}"));
    assert!(
        buffering.starts_with("warning Ingress default/buffered "),
        "{buffering}"
    );
    assert!(client_requests(&open) >= 2);
    let served_by_guarded = client_requests(&guarded);
    assert_eq!(
        served_by_guarded, 1,
        "only {LATER} reaches the guarded backend"
    );

    // An Ingress that was served gains a restriction: it is refused, not kept at its last good
    // version (that would serve it to everyone, ignoring the restriction just added).
    manifests::write(
        m,
        "later.yaml",
        &ingress("later", LATER, "guarded", &[(MATCH_CN, "CN=admin")], None),
    );
    assert!(
        wait_until(Duration::from_secs(5), || async {
            curl("http", LATER, proxy.http, "/", &[]).await.status == 404
        })
        .await,
        "{LATER} is still served after gaining {MATCH_CN}"
    );
    let table = proxy.table().await;
    assert!(
        !diagnostics(&table)
            .iter()
            .any(|d| d.contains("Ingress default/later ")
                && d.contains("last good")
                && d.starts_with("warning ")),
        "a last good version was kept: {table:#}"
    );
    // Requests sent while the rebuild was under way reached it; none after.
    let after_refusal = client_requests(&guarded);
    assert!(after_refusal >= served_by_guarded);
    for _ in 0..3 {
        assert_eq!(curl("http", LATER, proxy.http, "/", &[]).await.status, 404);
    }
    assert_eq!(client_requests(&guarded), after_refusal);
    assert_eq!(curl("http", GOOD, proxy.http, "/", &[]).await.status, 200);

    // `portcullis check` on the same directory names every annotation and exits 1.
    let out = check(m);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (name, _, key, _) in REFUSED {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("Ingress default/{name} ")))
            .unwrap_or_else(|| panic!("no diagnostic for {name}:\n{text}"));
        assert!(line.trim_start().starts_with("error"), "{line}");
        assert!(line.contains(key), "{line}");
    }
    assert!(text.contains(DID_YOU_MEAN), "{text}");
    assert!(text.contains(BUFFERING), "{text}");
    assert!(
        text.contains(&format!("{GOOD}  (terminate, owner default/good)")),
        "{text}"
    );
    assert!(!text.contains(&format!("{LATER}  (")), "{text}");
}

/// Requests a client (curl) sent through the proxy; health probes do not count.
fn client_requests(backend: &backends::Backend) -> usize {
    backend
        .requests()
        .iter()
        .filter(|r| {
            r.headers.iter().any(|(name, value)| {
                name.eq_ignore_ascii_case("user-agent") && value.starts_with("curl/")
            })
        })
        .count()
}
