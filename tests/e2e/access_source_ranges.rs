//! End to end, the built binary: allow and deny lists of client addresses, as ingress-nginx's
//! `whitelist-source-range` / `allowlist-source-range` and `denylist-source-range` document
//! them (docs/user-guide/nginx-configuration/annotations.md, "Denylist source range" and
//! "Whitelist source range": "a comma separated list of CIDRs, e.g. `10.0.0.0/24,172.10.0.1`";
//! the ConfigMap keys of the same names set them globally, and "adding an annotation to an
//! Ingress rule overrides any global restriction"). ingress-nginx's template writes the deny
//! rules before the allow rules and a final `deny all`, so deny wins, and a refused request
//! gets nginx's 403.
//!
//! The address judged is the real client's: `X-Forwarded-For` only from a trusted proxy
//! (configmap.md `use-forwarded-headers` / `proxy-real-ip-cidr`; here the class's
//! `trustedForwardedCidrs`), the PROXY protocol source only from a trusted load balancer
//! (configmap.md `use-proxy-protocol`; here `trustedProxyProtocolCidrs`), the socket peer
//! otherwise. The test's clients connect from 127.0.0.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::Request;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::backends::{self, Backend, TlsOptions};
use crate::support::binary::{Binary, check};
use crate::support::clients::{curl, curl_https};
use crate::support::http::{self, Conn};
use crate::support::manifests::{self, ingress, ingress_class, ingress_class_with_params, service};
use crate::support::pki::Ca;

const WHITELIST: &str = "nginx.ingress.kubernetes.io/whitelist-source-range";
const ALLOWLIST: &str = "nginx.ingress.kubernetes.io/allowlist-source-range";
const DENYLIST: &str = "nginx.ingress.kubernetes.io/denylist-source-range";
const OWN_ALLOW: &str = "portcullis.io/allow-source-range";
const PASSTHROUGH: (&str, &str) = ("portcullis.io/tls-mode", "passthrough");
/// No probes: a pass-through backend's connection count then counts clients only.
const NO_PROBES: (&str, &str) = ("portcullis.io/health-check", "none");

/// The annotations of one test Ingress.
type Annotations = &'static [(&'static str, &'static str)];

/// A manifest directory under `dir`: `class` (the IngressClass YAML), Service `web` →
/// `backend`, and one Ingress per `(name, annotations)`, host `NAME.src.e2e.test` → `web`.
fn manifest_dir(
    dir: &Path,
    class: String,
    backend: &Backend,
    ingresses: &[(&str, &[(&str, &str)])],
) -> PathBuf {
    let m = dir.join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &class);
    manifests::write(&m, "svc.yaml", &service("web", &[backend.addr.port()]));
    for (name, annotations) in ingresses {
        let yaml = ingress(name, &host(name), "web", annotations, None);
        manifests::write(&m, &format!("{name}.yaml"), &yaml);
    }
    m
}

fn host(name: &str) -> String {
    format!("{name}.src.e2e.test")
}

/// How many requests for `path` the backend saw (health probes have their own path, `/`).
fn seen(backend: &Backend, path: &str) -> usize {
    backend.requests().iter().filter(|s| s.uri == path).count()
}

/// GET `path` on `name`'s host over plain HTTP with extra curl `args`; the status.
async fn status(proxy: &Binary, name: &str, path: &str, args: &[&str]) -> u16 {
    let r = curl("http", &host(name), proxy.http, path, args).await;
    assert_eq!(r.exit_code, 0, "{name}{path}: {r:?}");
    r.status
}

/// Allow-lists admit only their ranges, deny-lists refuse theirs, deny beats allow, our key
/// wins over the ingress-nginx alias, and a refused request never reaches the pod.
#[tokio::test]
async fn allow_and_deny_lists_on_the_client_address() {
    let ca = Ca::new("e2e source ranges ca");
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "ca.pem", &ca.cert_pem);
    let cases: &[(&str, Annotations, u16)] = &[
        ("other-net", &[(WHITELIST, "10.0.0.0/8")], 403),
        ("loopback", &[(ALLOWLIST, "127.0.0.1/32")], 200),
        ("bare-address", &[(WHITELIST, "10.1.2.3, 127.0.0.1")], 200),
        (
            "deny-wins",
            &[(WHITELIST, "127.0.0.0/8"), (DENYLIST, "127.0.0.1")],
            403,
        ),
        (
            "deny-other",
            &[(DENYLIST, "10.0.0.0/8,192.168.0.0/16")],
            200,
        ),
        ("deny-me", &[(DENYLIST, "10.0.0.0/8,127.0.0.0/24")], 403),
        // IPv6 ranges parse; an IPv4 client is not in them.
        ("ipv6-only", &[(OWN_ALLOW, "::1, 2001:db8::/32")], 403),
        (
            "ipv6-and-v4",
            &[(OWN_ALLOW, "2001:db8::/32, 127.0.0.0/8")],
            200,
        ),
        // Our key wins; the alias is not even read.
        (
            "own-wins",
            &[(OWN_ALLOW, "10.0.0.0/8"), (WHITELIST, "127.0.0.1/32")],
            403,
        ),
        ("open", &[], 200),
    ];
    let m = manifest_dir(
        dir.path(),
        ingress_class(),
        &backend,
        &cases
            .iter()
            .map(|(name, annotations, _)| (*name, *annotations))
            .collect::<Vec<_>>(),
    );
    // One of them terminated too, with its own certificate.
    manifests::write(
        &m,
        "secret.yaml",
        &ca.leaf(&[&host("tls-denied")])
            .secret_yaml(manifests::NS, "tls-denied"),
    );
    manifests::write(
        &m,
        "tls-denied.yaml",
        &ingress(
            "tls-denied",
            &host("tls-denied"),
            "web",
            &[(WHITELIST, "10.0.0.0/8")],
            Some("tls-denied"),
        ),
    );
    let proxy = Binary::start(&m).await;

    for (name, _, want) in cases {
        let path = format!("/{name}");
        assert_eq!(status(&proxy, name, &path, &[]).await, *want, "{name}");
        let reached = if *want == 200 { 1 } else { 0 };
        assert_eq!(seen(&backend, &path), reached, "{name}");
    }
    // The 403 is the proxy's own short answer, over HTTP/1.1 and HTTP/2 on a terminated host.
    for args in [&["--http1.1"][..], &["--http2"][..]] {
        let r = curl_https(&host("tls-denied"), proxy.https, "/tls", &ca_file, args).await;
        assert_eq!(r.status, 403, "{args:?}: {r:?}");
        assert_eq!(r.body, "403 forbidden\n");
    }
    assert_eq!(seen(&backend, "/tls"), 0);
    // The access log says why.
    assert!(
        proxy
            .wait_for_log(Duration::from_secs(2), |l| {
                l.contains(" access: ") && l.contains("/other-net") && l.contains("source_denied")
            })
            .await,
        "{}",
        proxy.log_text()
    );
}

/// A client that is not a trusted proxy cannot choose its address: its `X-Forwarded-For` (or
/// `X-Real-IP`) naming an allowed address does not get past an allow-list, nor does one naming
/// another address get it out of a deny-list; and a PROXY protocol header from it is not
/// believed (it is not even PROXY protocol to us: the request is refused, the pod sees
/// nothing).
#[tokio::test]
async fn an_untrusted_peer_cannot_claim_another_address() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(
        dir.path(),
        ingress_class(),
        &backend,
        &[
            ("allowed-net", &[(WHITELIST, "203.0.113.0/24")]),
            ("denied-me", &[(DENYLIST, "127.0.0.1")]),
        ],
    );
    let proxy = Binary::start(&m).await;

    for header in [
        "X-Forwarded-For: 203.0.113.9",
        "X-Real-IP: 203.0.113.9",
        "Forwarded: for=203.0.113.9",
    ] {
        assert_eq!(
            status(&proxy, "allowed-net", "/spoof", &["-H", header]).await,
            403,
            "{header}"
        );
    }
    assert_eq!(
        status(
            &proxy,
            "denied-me",
            "/spoof",
            &["-H", "X-Forwarded-For: 198.51.100.7"]
        )
        .await,
        403
    );

    let request = format!(
        "PROXY TCP4 203.0.113.9 127.0.0.1 40000 80\r\nGET /proxied HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        host("allowed-net")
    );
    let answer = http::raw(proxy.http, request.as_bytes()).await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(seen(&backend, "/spoof"), 0);
    assert_eq!(seen(&backend, "/proxied"), 0);
}

/// Behind a trusted proxy (`trustedForwardedCidrs`), the address its `X-Forwarded-For`
/// reports is what counts, found as nginx's realip module does with `real_ip_recursive`: from
/// the right, the first address that is not a trusted proxy. A client behind it prepending an
/// allowed address gains nothing.
#[tokio::test]
async fn behind_a_trusted_proxy_its_x_forwarded_for_counts() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let class = ingress_class_with_params("trusting", "trustedForwardedCidrs: [127.0.0.0/8]");
    let m = manifest_dir(
        dir.path(),
        class,
        &backend,
        &[
            ("allowed-net", &[(ALLOWLIST, "203.0.113.0/24")]),
            ("denied-net", &[(DENYLIST, "198.51.100.0/24")]),
        ],
    );
    let proxy = Binary::start(&m).await;

    let cases: &[(&str, &str, u16)] = &[
        ("allowed-net", "203.0.113.9", 200),
        ("allowed-net", "203.0.113.9, 127.0.0.5", 200),
        ("allowed-net", "198.51.100.7", 403),
        ("allowed-net", "203.0.113.9, 198.51.100.7", 403),
        ("denied-net", "198.51.100.7", 403),
        ("denied-net", "192.0.2.1", 200),
    ];
    for (i, (name, xff, want)) in cases.iter().enumerate() {
        let path = format!("/xff{i}");
        let header = format!("X-Forwarded-For: {xff}");
        assert_eq!(
            status(&proxy, name, &path, &["-H", &header]).await,
            *want,
            "{name} {xff}"
        );
        assert_eq!(seen(&backend, &path), usize::from(*want == 200), "{name}");
    }
    // Without the header, the proxy itself (127.0.0.1) is the client: not allowed.
    assert_eq!(status(&proxy, "allowed-net", "/none", &[]).await, 403);
}

/// From a trusted load balancer (`trustedProxyProtocolCidrs`) the PROXY header's source is the
/// client, on HTTP hosts and pass-through hosts alike; an X-Forwarded-For from the client
/// behind it (not a trusted proxy) changes nothing. IPv6 sources (`PROXY TCP6`) are judged by
/// IPv6 ranges, and an IPv4-mapped one as the IPv4 address it is.
#[tokio::test]
async fn behind_a_trusted_load_balancer_the_proxy_source_counts() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let class = ingress_class_with_params("lb", "trustedProxyProtocolCidrs: [127.0.0.0/8]");
    let m = manifest_dir(
        dir.path(),
        class,
        &backend,
        &[
            ("allowed-net", &[(WHITELIST, "203.0.113.0/24")]),
            (
                "v6-net",
                &[
                    (OWN_ALLOW, "2001:db8::/32"),
                    (DENYLIST, "2001:db8:bad::/48"),
                ],
            ),
        ],
    );
    let proxy = Binary::start(&m).await;

    let cases: &[(&str, &str, &str, u16)] = &[
        ("allowed-net", "TCP4 203.0.113.9 127.0.0.1", "", 200),
        ("allowed-net", "TCP4 198.51.100.7 127.0.0.1", "", 403),
        (
            "allowed-net",
            "TCP4 198.51.100.7 127.0.0.1",
            "X-Forwarded-For: 203.0.113.9\r\n",
            403,
        ),
        ("allowed-net", "TCP6 ::ffff:203.0.113.9 ::1", "", 200),
        ("allowed-net", "TCP6 2001:db8::9 ::1", "", 403),
        ("v6-net", "TCP6 2001:db8::9 ::1", "", 200),
        ("v6-net", "TCP6 2001:db9::9 ::1", "", 403),
        ("v6-net", "TCP6 2001:db8:bad::9 ::1", "", 403),
        ("v6-net", "TCP4 203.0.113.9 127.0.0.1", "", 403),
    ];
    for (i, (name, source, extra, want)) in cases.iter().enumerate() {
        let request = format!(
            "PROXY {source} 40000 80\r\nGET /lb{i} HTTP/1.1\r\nHost: {}\r\n{extra}Connection: close\r\n\r\n",
            host(name)
        );
        let answer = http::raw(proxy.http, request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {want}")),
            "{source} {extra:?}: {answer}"
        );
        assert_eq!(
            seen(&backend, &format!("/lb{i}")),
            usize::from(*want == 200)
        );
    }
}

/// A pass-through host's lists are judged on the connection's client address before anything
/// is forwarded: a refused client is closed on, and the pod never sees a connection (no byte,
/// not even the ClientHello); an allowed one is spliced as usual. Behind a trusted load
/// balancer, the PROXY header's source is that address.
#[tokio::test]
async fn pass_through_refuses_before_connecting_to_the_pod() {
    let backend_ca = Ca::new("e2e source ranges backend ca");
    let names = ["pt-denied", "pt-allowed", "pt-lb-allowed", "pt-lb-denied"];
    let leaf = backend_ca.leaf(
        &names
            .map(host)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let dir = tempfile::tempdir().unwrap();
    let ca_file = manifests::write_pem(dir.path(), "backend-ca.pem", &backend_ca.cert_pem);

    // Each host its own backend, to count its connections.
    let mut pods = Vec::new();
    for _ in 0..4 {
        pods.push(backends::tls("pod", &leaf, TlsOptions::default()).await);
    }
    let write_dir = |sub: &str, class: String, lists: [(&str, &str); 4]| {
        let m = dir.path().join(sub);
        std::fs::create_dir(&m).unwrap();
        manifests::write(&m, "class.yaml", &class);
        for (i, name) in names.iter().enumerate() {
            manifests::write(
                &m,
                &format!("svc-{name}.yaml"),
                &service(name, &[pods[i].addr.port()]),
            );
            let annotations = [PASSTHROUGH, NO_PROBES, lists[i]];
            manifests::write(
                &m,
                &format!("{name}.yaml"),
                &ingress(name, &host(name), name, &annotations, None),
            );
        }
        m
    };

    // Direct clients (127.0.0.1).
    let direct = write_dir(
        "direct",
        ingress_class(),
        [
            (WHITELIST, "10.0.0.0/8"),
            (ALLOWLIST, "127.0.0.1/32"),
            (DENYLIST, "10.0.0.0/8"),
            (DENYLIST, "127.0.0.0/8"),
        ],
    );
    let proxy = Binary::start(&direct).await;
    for (i, want) in [(0, false), (1, true), (2, true), (3, false)] {
        let name = names[i];
        let r = curl_https(&host(name), proxy.https, "/pt", &ca_file, &["--http1.1"]).await;
        if want {
            assert_eq!(r.status, 200, "{name}: {r:?}");
            assert_eq!(pods[i].connections(), 1, "{name}");
        } else {
            assert_ne!(r.exit_code, 0, "{name}: {r:?}");
            assert_eq!(r.status, 0, "{name}: {r:?}");
            assert_eq!(pods[i].connections(), 0, "{name}: the pod saw a connection");
        }
    }
    assert!(
        proxy
            .wait_for_log(Duration::from_secs(2), |l| {
                l.contains("kind=\"tcp\"")
                    && l.contains(&format!("sni=\"{}\"", host("pt-denied")))
                    && l.contains("termination=\"denied\"")
            })
            .await,
        "{}",
        proxy.log_text()
    );
    drop(proxy);

    // Behind a trusted load balancer: the PROXY source is judged, not the peer.
    let behind_lb = write_dir(
        "lb",
        ingress_class_with_params("lb", "trustedProxyProtocolCidrs: [127.0.0.0/8]"),
        [
            (WHITELIST, "10.0.0.0/8"),
            (ALLOWLIST, "127.0.0.1/32"),
            (ALLOWLIST, "203.0.113.0/24"),
            (DENYLIST, "203.0.113.0/24"),
        ],
    );
    let before: Vec<usize> = pods.iter().map(Backend::connections).collect();
    let proxy = Binary::start(&behind_lb).await;
    let config = backend_ca.client_config(&[b"http/1.1"]);
    for (i, want) in [(2, true), (3, false)] {
        let name = host(names[i]);
        let answer = via_load_balancer(proxy.https, &config, &name, "203.0.113.9").await;
        if want {
            assert_eq!(answer, Ok(200), "{name}");
        } else {
            assert!(answer.is_err(), "{name}: {answer:?}");
        }
        let opened = pods[i].connections() - before[i];
        assert_eq!(opened, usize::from(want), "{name}");
    }
}

/// Connects to `at` as a load balancer would: a PROXY v1 header naming `source`, then TLS for
/// `host` and one GET. The status, or why there was none.
async fn via_load_balancer(
    at: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    host: &str,
    source: &str,
) -> Result<u16, String> {
    let mut tcp = TcpStream::connect(at).await.map_err(|e| e.to_string())?;
    let header = format!("PROXY TCP4 {source} 127.0.0.1 40000 {}\r\n", at.port());
    tcp.write_all(header.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).expect("server name");
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let mut conn = Conn::h1(TokioIo::new(tls)).await;
    let req = Request::get("/lb")
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .expect("request");
    conn.send(req).await.map(|a| a.status.as_u16())
}

/// A value that is not a list of CIDRs refuses the Ingress, naming the key: it is never served
/// open.
#[test]
fn an_invalid_range_refuses_the_ingress() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("web", &[8080]));
    let cases: &[(&str, &str, &str)] = &[
        ("bad-octet", WHITELIST, "10.0.0.300/8"),
        ("bad-prefix", ALLOWLIST, "10.0.0.0/33"),
        ("a-name", DENYLIST, "example.com"),
        ("empty", OWN_ALLOW, ""),
        ("trailing-comma", WHITELIST, "10.0.0.0/8,"),
    ];
    for (name, key, value) in cases {
        manifests::write(
            m,
            &format!("{name}.yaml"),
            &ingress(name, &host(name), "web", &[(key, value)], None),
        );
    }
    let out = check(m);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (name, key, _) in cases {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("Ingress default/{name} ")))
            .unwrap_or_else(|| panic!("no diagnostic for {name}:\n{text}"));
        assert!(line.trim_start().starts_with("error"), "{line}");
        assert!(line.contains(key), "{line}");
    }
}

/// The class's lists (IngressClassParams `defaults.allowSourceRange` / `denySourceRange`,
/// ingress-nginx's ConfigMap `whitelist-source-range` / `denylist-source-range`) apply to
/// Ingresses without their own; an Ingress's annotation replaces the class's list.
#[tokio::test]
async fn the_class_lists_apply_when_the_ingress_has_none() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let class =
        ingress_class_with_params("restricted", "defaults: {allowSourceRange: [10.0.0.0/8]}");
    let m = manifest_dir(
        dir.path(),
        class,
        &backend,
        &[
            ("plain", &[]),
            ("own-list", &[(WHITELIST, "127.0.0.1/32")]),
            ("own-deny", &[(DENYLIST, "192.0.2.0/24")]),
        ],
    );
    let proxy = Binary::start(&m).await;
    assert_eq!(status(&proxy, "plain", "/c", &[]).await, 403);
    assert_eq!(status(&proxy, "own-list", "/c", &[]).await, 200);
    // A deny-list replaces the class's deny-list, not its allow-list.
    assert_eq!(status(&proxy, "own-deny", "/c", &[]).await, 403);
}

/// A class list with an entry that is not a CIDR is reported, and fails closed: every client
/// is denied until it is fixed (the class's other defaults are still served).
#[tokio::test]
async fn a_bad_class_list_fails_closed() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let class = ingress_class_with_params(
        "typo",
        "defaults: {denySourceRange: [192.0.2.0/24, 10.0.0.0/88]}",
    );
    let m = manifest_dir(dir.path(), class, &backend, &[("plain", &[])]);
    let out = check(&m);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("spec.defaults.denySourceRange[1]"))
        .unwrap_or_else(|| panic!("no diagnostic:\n{text}"));
    assert!(line.contains("every client is denied"), "{line}");

    let proxy = Binary::start(&m).await;
    assert_eq!(status(&proxy, "plain", "/typo", &[]).await, 403);
    assert_eq!(seen(&backend, "/typo"), 0);
}

/// A canary Ingress takes its access rules from its main Ingress (annotations.md, "Canary":
/// its other annotations are inherited from the main Ingress): a client that asks for the
/// canary by header is judged by the main Ingress's allow-list, not let through.
#[tokio::test]
async fn a_canary_does_not_open_the_main_ingress_allow_list() {
    let main = backends::http("main").await;
    let canary = backends::http("canary").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(
        dir.path(),
        ingress_class(),
        &main,
        &[("guarded", &[(WHITELIST, "10.0.0.0/8")])],
    );
    manifests::write(
        &m,
        "svc-canary.yaml",
        &service("canary", &[canary.addr.port()]),
    );
    let yaml = ingress(
        "guarded-canary",
        &host("guarded"),
        "canary",
        &[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary"),
            (WHITELIST, "127.0.0.1/32"),
        ],
        None,
    );
    manifests::write(&m, "guarded-canary.yaml", &yaml);
    let proxy = Binary::start(&m).await;

    for args in [&[][..], &["-H", "X-Canary: always"][..]] {
        assert_eq!(status(&proxy, "guarded", "/c", args).await, 403, "{args:?}");
    }
    assert_eq!(seen(&main, "/c") + seen(&canary, "/c"), 0);
}
