//! End to end, the built binary: the access log carries what operators expect, in JSON and
//! text alike, every field on every line.
//!
//! The field set follows what ingress-nginx's default `log-format-upstream` logs
//! (docs/user-guide/nginx-configuration/log-format.md: `$status`, `$body_bytes_sent`,
//! `$http_referer`, `$http_user_agent`, `$request_length`, `$request_time`,
//! `$proxy_upstream_name` (namespace, Service, port), `$upstream_addr`,
//! `$upstream_response_time`, `$upstream_status`, `$req_id`), plus nginx's `$ssl_protocol`,
//! `$ssl_cipher` and `$ssl_server_name`, and the Ingress as ingress-nginx's `$namespace` and
//! `$ingress_name`. A value that does not exist for a request is JSON `null` (never `"-"` or
//! `-1.0`), `-` in text.

use std::time::Duration;

use serde_json::Value;

use crate::support::backends::{self, TlsOptions};
use crate::support::binary::Binary;
use crate::support::clients::{curl, curl_https};
use crate::support::manifests::{self, ingress, ingress_class, service};
use crate::support::pki::Ca;

const HOST: &str = "app.log.e2e.test";
const ERRORS_HOST: &str = "errors.log.e2e.test";
const PASS: &str = "pass.log.e2e.test";

/// Every key of an HTTP line, in order, besides `timestamp`, `level` and `target`.
const HTTP_KEYS: &[&str] = &[
    "kind",
    "client",
    "host",
    "method",
    "path",
    "protocol",
    "status",
    "bytes_in",
    "bytes_out",
    "mode",
    "sni",
    "tls_version",
    "tls_cipher",
    "ingress",
    "service",
    "upstream",
    "upstream_status",
    "upstream_ms",
    "total_ms",
    "error",
    "request_id",
    "user_agent",
    "referer",
];

/// Every key of a TCP line.
const TCP_KEYS: &[&str] = &[
    "kind",
    "client",
    "sni",
    "service",
    "upstream",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "termination",
];

/// The access line of a JSON log line, if it is one.
fn access(line: &str) -> Option<Value> {
    serde_json::from_str::<Value>(line)
        .ok()
        .filter(|v| v["target"] == "access")
}

/// Waits for the JSON access line that `pred` picks.
async fn json_line(proxy: &Binary, pred: impl Fn(&Value) -> bool) -> Value {
    let found = proxy
        .wait_for_log(Duration::from_secs(5), |l| {
            access(l).is_some_and(|v| pred(&v))
        })
        .await;
    assert!(found, "no such access line:\n{}", proxy.log_text());
    proxy
        .log_lines()
        .iter()
        .filter_map(|l| access(l))
        .find(|v| pred(v))
        .expect("the line just seen")
}

/// The line has exactly `keys` (and the envelope), none of them missing.
fn assert_keys(line: &Value, keys: &[&str]) {
    let object = line.as_object().expect("a JSON object");
    let mut have: Vec<&str> = object
        .keys()
        .map(String::as_str)
        .filter(|k| !["timestamp", "level", "target"].contains(k))
        .collect();
    let mut want = keys.to_vec();
    have.sort_unstable();
    want.sort_unstable();
    assert_eq!(have, want, "{line}");
}

fn path_is(path: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["kind"] == "http" && v["path"] == path
}

/// HTTPS over HTTP/1.1 and HTTP/2, plain HTTP, a 404 the proxy answers itself and a pod's
/// error replaced by `custom-http-errors`: each line has every field, `null` where a value
/// does not exist.
#[tokio::test]
async fn json_lines_carry_every_field_with_null_for_missing() {
    let ca = Ca::new("e2e access log ca");
    let leaf = ca.leaf(&[HOST]);
    let web = backends::http("web").await;
    let errors = backends::http("errors").await;

    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "ca.pem", &ca.cert_pem);
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &ingress_class());
    manifests::write(&m, "svc-web.yaml", &service("web", &[web.addr.port()]));
    manifests::write(
        &m,
        "svc-errors.yaml",
        &service("errors", &[errors.addr.port()]),
    );
    manifests::write(
        &m,
        "secret.yaml",
        &leaf.secret_yaml(manifests::NS, "app-tls"),
    );
    manifests::write(
        &m,
        "app.yaml",
        &ingress("app", HOST, "web", &[], Some("app-tls")),
    );
    manifests::write(
        &m,
        "errors.yaml",
        &ingress(
            "with-errors",
            ERRORS_HOST,
            "web",
            &[
                ("nginx.ingress.kubernetes.io/default-backend", "errors"),
                ("nginx.ingress.kubernetes.io/custom-http-errors", "503"),
            ],
            None,
        ),
    );
    let proxy = Binary::start_with(&m, &["--log-format", "json"]).await;

    // HTTPS, HTTP/1.1, with the headers operators trace by.
    let r = curl_https(
        HOST,
        proxy.https,
        "/h1?secret=1",
        &ca_file,
        &[
            "--http1.1",
            "-A",
            "log-test/1.0 \"quoted\"",
            "-e",
            "https://referrer.example/page",
            "-H",
            "X-Request-ID: req-h1",
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    let h1 = json_line(&proxy, path_is("/h1")).await;
    assert_keys(&h1, HTTP_KEYS);
    assert_eq!(h1["host"], HOST);
    assert_eq!(h1["method"], "GET");
    assert_eq!(h1["protocol"], "HTTP/1.1");
    assert_eq!(h1["status"], 200);
    assert_eq!(h1["mode"], "terminate");
    assert_eq!(h1["sni"], HOST);
    let version = h1["tls_version"].as_str().expect("a TLS version");
    assert!(["TLSv1.2", "TLSv1.3"].contains(&version), "{h1}");
    let cipher = h1["tls_cipher"].as_str().expect("a cipher");
    assert!(cipher.starts_with("TLS_"), "IANA name: {h1}");
    assert_eq!(h1["ingress"], "default/app");
    assert_eq!(h1["service"], "default/web:80");
    assert_eq!(h1["upstream"], web.addr.to_string());
    assert_eq!(h1["upstream_status"], 200);
    assert!(h1["upstream_ms"].as_f64().is_some_and(|t| t >= 0.0), "{h1}");
    assert!(h1["total_ms"].as_f64().is_some_and(|t| t >= 0.0), "{h1}");
    assert_eq!(h1["error"], Value::Null);
    assert_eq!(h1["request_id"], "req-h1");
    assert_eq!(h1["user_agent"], "log-test/1.0 \"quoted\"");
    assert_eq!(h1["referer"], "https://referrer.example/page");
    assert!(h1["bytes_in"].as_u64().is_some_and(|b| b > 0), "{h1}");
    assert_eq!(h1["bytes_out"].as_u64(), Some(r.body.len() as u64), "{h1}");

    // HTTPS, HTTP/2: the same fields; a request body counts in `bytes_in`.
    let r = curl_https(
        HOST,
        proxy.https,
        "/h2",
        &ca_file,
        &["--http2", "-d", "0123456789"],
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.version, "HTTP/2");
    let h2 = json_line(&proxy, path_is("/h2")).await;
    assert_keys(&h2, HTTP_KEYS);
    assert_eq!(h2["protocol"], "HTTP/2.0");
    assert_eq!(h2["method"], "POST");
    assert_eq!(h2["sni"], HOST);
    assert!(
        h2["tls_version"].is_string() && h2["tls_cipher"].is_string(),
        "{h2}"
    );
    assert_eq!(h2["ingress"], "default/app");
    assert_eq!(h2["service"], "default/web:80");
    assert_eq!(h2["upstream_status"], 200);
    assert!(h2["bytes_in"].as_u64().is_some_and(|b| b >= 10), "{h2}");
    // A request ID is generated when the client sent none.
    assert!(
        h2["request_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{h2}"
    );
    assert_eq!(h2["referer"], Value::Null);

    // Plain HTTP: no TLS, so no SNI, version or cipher; no User-Agent sent.
    let r = curl("http", HOST, proxy.http, "/plain", &["-A", ""]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let plain = json_line(&proxy, path_is("/plain")).await;
    assert_keys(&plain, HTTP_KEYS);
    assert_eq!(plain["mode"], "http");
    for key in [
        "sni",
        "tls_version",
        "tls_cipher",
        "user_agent",
        "referer",
        "error",
    ] {
        assert_eq!(plain[key], Value::Null, "{key}: {plain}");
    }
    assert_eq!(plain["ingress"], "default/app");

    // The proxy answers itself: no Ingress, Service, upstream, upstream status or time.
    let r = curl("http", "nowhere.log.e2e.test", proxy.http, "/missing", &[]).await;
    assert_eq!(r.status, 404, "{r:?}");
    let missing = json_line(&proxy, path_is("/missing")).await;
    assert_keys(&missing, HTTP_KEYS);
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["error"], "no_route");
    for key in [
        "ingress",
        "service",
        "upstream",
        "upstream_status",
        "upstream_ms",
    ] {
        assert_eq!(missing[key], Value::Null, "{key}: {missing}");
    }
    let raw = proxy
        .log_lines()
        .into_iter()
        .find(|l| l.contains("\"/missing\""))
        .expect("the raw line");
    assert!(
        !raw.contains("\"-\"") && !raw.contains("-1.0"),
        "no placeholders in JSON: {raw}"
    );

    // `custom-http-errors`: the client gets the default backend's answer; the pod's status
    // is the upstream status.
    let r = curl("http", ERRORS_HOST, proxy.http, "/status/503", &[]).await;
    assert_eq!(r.header("x-backend"), Some("errors"), "{r:?}");
    let replaced = json_line(&proxy, path_is("/status/503")).await;
    assert_eq!(replaced["status"], r.status, "{replaced}");
    assert_eq!(replaced["upstream_status"], 503, "{replaced}");
    assert_eq!(replaced["ingress"], "default/with-errors");
    assert_eq!(replaced["service"], "default/web:80");
}

/// Text lines carry the same fields, `-` for a missing value; a pass-through connection is
/// one TCP line with its SNI, Service and bytes, and no HTTP field.
#[tokio::test]
async fn text_lines_use_dashes_and_tcp_lines_have_no_http_fields() {
    let backend_ca = Ca::new("e2e access log backend ca");
    let pass = backends::tls("pass", &backend_ca.leaf(&[PASS]), TlsOptions::default()).await;
    let web = backends::http("web").await;

    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "backend-ca.pem", &backend_ca.cert_pem);
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &ingress_class());
    manifests::write(&m, "svc-web.yaml", &service("web", &[web.addr.port()]));
    manifests::write(&m, "svc-pass.yaml", &service("pass", &[pass.addr.port()]));
    manifests::write(&m, "app.yaml", &ingress("app", HOST, "web", &[], None));
    manifests::write(
        &m,
        "pass.yaml",
        &ingress(
            "pass",
            PASS,
            "pass",
            &[("portcullis.io/tls-mode", "passthrough")],
            None,
        ),
    );

    // Text first: the default format.
    let proxy = Binary::start(&m).await;
    let r = curl("http", HOST, proxy.http, "/text", &["-A", "text-test/2"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let found = proxy
        .wait_for_log(Duration::from_secs(5), |l| {
            l.contains(" access: ") && l.contains("path=\"/text\"")
        })
        .await;
    assert!(found, "{}", proxy.log_text());
    let line = proxy
        .log_lines()
        .into_iter()
        .find(|l| l.contains("path=\"/text\""))
        .expect("the line just seen");
    for field in [
        "kind=\"http\"",
        "protocol=\"HTTP/1.1\"",
        "status=200",
        "mode=\"http\"",
        " sni=- ",
        " tls_version=- ",
        " tls_cipher=- ",
        "ingress=default/app ",
        "service=default/web:80 ",
        "upstream_status=200 ",
        " error=- ",
        "user_agent=\"text-test/2\"",
        " referer=-",
    ] {
        assert!(line.contains(field), "{field:?} in {line}");
    }
    let order: Vec<usize> = HTTP_KEYS
        .iter()
        .map(|k| {
            line.find(&format!(" {k}="))
                .unwrap_or_else(|| panic!("{k} in {line}"))
        })
        .collect();
    assert!(
        order.is_sorted(),
        "fields in their documented order: {line}"
    );
    drop(proxy);

    // JSON: a pass-through connection.
    let proxy = Binary::start_with(&m, &["--log-format", "json"]).await;
    let r = curl_https(PASS, proxy.https, "/spliced", &ca_file, &["--http1.1"]).await;
    assert_eq!(r.status, 200, "{r:?}");
    let tcp = json_line(&proxy, |v| v["kind"] == "tcp" && v["sni"] == PASS).await;
    assert_keys(&tcp, TCP_KEYS);
    assert_eq!(tcp["service"], "default/pass:80");
    assert_eq!(tcp["upstream"], pass.addr.to_string());
    assert!(tcp["bytes_in"].as_u64().is_some_and(|b| b > 0), "{tcp}");
    assert!(tcp["bytes_out"].as_u64().is_some_and(|b| b > 0), "{tcp}");
    assert!(tcp["termination"].is_string(), "{tcp}");
    for key in ["status", "method", "path", "user_agent", "tls_version"] {
        assert!(tcp.get(key).is_none(), "{key}: {tcp}");
    }
}
