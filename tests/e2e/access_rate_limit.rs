//! End to end, the built binary: rate and connection limits per client address, as
//! ingress-nginx documents them (docs/user-guide/nginx-configuration/annotations.md, "Rate
//! Limiting"): `limit-rps` / `limit-rpm` allow a burst of the rate times
//! `limit-burst-multiplier` (default 5) and answer `limit-req-status-code` beyond it (ConfigMap,
//! configmap.md#limit-req-status-code, default 503); `limit-connections` answers
//! `limit-conn-status-code` (default 503) past that many requests in flight per address;
//! `limit-whitelist` CIDRs are never limited. Here the statuses are the class's
//! `limits.rateLimitStatus` / `limits.connectionLimitStatus`, and the address is the real
//! client address (a spoofed `X-Forwarded-For` from an untrusted peer does not change it).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::backends::{self, Backend};
use crate::support::binary::{self, Binary};
use crate::support::http::{self, Conn};
use crate::support::manifests::{self, ingress, ingress_class, ingress_class_with_params, service};

const HOST: &str = "limits.e2e.test";
const RPS: &str = "nginx.ingress.kubernetes.io/limit-rps";

/// A manifest directory under `dir`: the class (`class` YAML), Service `web` → `backend`, and
/// Ingress `app` for [`HOST`] with `annotations`.
fn manifest_dir(
    dir: &Path,
    class: String,
    backend: &Backend,
    annotations: &[(&str, &str)],
) -> PathBuf {
    let m = dir.join("manifests");
    std::fs::create_dir(&m).unwrap();
    manifests::write(&m, "class.yaml", &class);
    manifests::write(&m, "svc.yaml", &service("web", &[backend.addr.port()]));
    manifests::write(
        &m,
        "app.yaml",
        &ingress("app", HOST, "web", annotations, None),
    );
    m
}

/// The statuses of `n` requests sent back to back on one keep-alive connection, with
/// `headers`.
async fn statuses(proxy: &Binary, n: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    let mut conn = Conn::plain(proxy.http).await;
    let mut out = Vec::new();
    for _ in 0..n {
        let answer = conn.get_with(HOST, "/", headers).await.expect("answered");
        out.push(answer.status.as_u16());
    }
    out
}

/// How many of `statuses` are `code`.
fn count(statuses: &[u16], code: u16) -> usize {
    statuses.iter().filter(|s| **s == code).count()
}

/// `limit-rps: 1` with the default multiplier: a burst of 5 on top of the first request (nginx's
/// `limit_req ... burst=5 nodelay` admits the first request and 5 more at once), then 503 for
/// the rest of the second; a client spoofing `X-Forwarded-For` (from an untrusted peer, so
/// not believed) is the same client and stays limited.
#[tokio::test]
async fn limit_rps_allows_the_burst_then_answers_503() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(dir.path(), ingress_class(), &backend, &[(RPS, "1")]);
    let proxy = Binary::start(&m).await;

    let started = Instant::now();
    let got = statuses(&proxy, 20, &[]).await;
    let quick = started.elapsed() < Duration::from_secs(1);
    assert_eq!(&got[..6], &[200; 6], "the burst passes first: {got:?}");
    assert_eq!(count(&got, 200) + count(&got, 503), 20, "{got:?}");
    if quick {
        // Under a second: nothing drained, every request past the burst is refused.
        assert_eq!(count(&got, 503), 14, "{got:?}");
    } else {
        // One more request drains in per second the loop took.
        let seconds = started.elapsed().as_secs() as usize + 1;
        assert!(count(&got, 200) <= 6 + seconds, "{got:?}");
    }
    // Five more in a row, each claiming to come from elsewhere: at most one drained in.
    let spoofed = statuses(&proxy, 5, &[("X-Forwarded-For", "10.9.9.9")]).await;
    assert!(
        count(&spoofed, 503) >= 4,
        "a spoofed X-Forwarded-For is not another client: {spoofed:?}"
    );
    // The answer is the proxy's, with a body naming the status.
    let refused = http::get(proxy.http, HOST, "/", &[]).await;
    if refused.status == 503 {
        assert_eq!(refused.text(), "503 service unavailable\n");
    }
    assert!(
        proxy
            .wait_for_log(Duration::from_secs(2), |l| l.contains("rate_limited"))
            .await,
        "the access log says why:\n{}",
        proxy.log_text()
    );
}

/// The class's `limits.rateLimitStatus: 429` (ingress-nginx's `limit-req-status-code`) is the
/// answer past the limit; `limit-rpm` with `limit-burst-multiplier: 2` allows 1 + 2.
#[tokio::test]
async fn the_class_status_replaces_503() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let class = ingress_class_with_params("limits", "limits: {rateLimitStatus: 429}");
    let m = manifest_dir(
        dir.path(),
        class,
        &backend,
        &[
            ("nginx.ingress.kubernetes.io/limit-rpm", "1"),
            ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "2"),
        ],
    );
    let proxy = Binary::start(&m).await;
    let got = statuses(&proxy, 6, &[]).await;
    assert_eq!(got, [200, 200, 200, 429, 429, 429]);
}

/// `limit-whitelist`: "client IP source ranges to be excluded from rate-limiting"; the
/// client (127.0.0.1) in it is never limited, however fast it sends.
#[tokio::test]
async fn an_allow_listed_address_is_never_limited() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifest_dir(
        dir.path(),
        ingress_class(),
        &backend,
        &[
            (RPS, "1"),
            ("nginx.ingress.kubernetes.io/limit-connections", "1"),
            (
                "nginx.ingress.kubernetes.io/limit-whitelist",
                "192.0.2.0/24, 127.0.0.1/32",
            ),
        ],
    );
    let proxy = Binary::start(&m).await;
    let got = statuses(&proxy, 30, &[]).await;
    assert_eq!(count(&got, 200), 30, "{got:?}");
}

/// `limit-connections: 1`: "number of concurrent connections allowed from a single IP
/// address"; a second request while the first is still at the (slow) pod gets 503, the
/// class's `connectionLimitStatus` when set; once the first response ended, the count is
/// released.
#[tokio::test]
async fn limit_connections_refuses_a_second_request_in_flight() {
    let backend = backends::delayed("slow", Duration::from_millis(1500)).await;
    let dir = tempfile::tempdir().unwrap();
    let class = ingress_class_with_params("limits", "limits: {connectionLimitStatus: 429}");
    let m = manifest_dir(
        dir.path(),
        class,
        &backend,
        &[
            ("nginx.ingress.kubernetes.io/limit-connections", "1"),
            ("portcullis.io/health-check", "none"),
        ],
    );
    let proxy = Binary::start(&m).await;
    let at = proxy.http;
    let first = tokio::spawn(async move { http::get(at, HOST, "/first", &[]).await });
    // The first request is at the pod before the second is sent.
    let arrived = crate::support::wait::wait_until(Duration::from_secs(5), || async {
        backend.requests().iter().any(|r| r.uri == "/first")
    })
    .await;
    assert!(arrived);
    let second = http::get(at, HOST, "/second", &[]).await;
    assert_eq!(second.status, 429);
    assert_eq!(first.await.unwrap().status, 200);
    let third = http::get(at, HOST, "/third", &[]).await;
    assert_eq!(
        third.status, 200,
        "the first response ended: its count is released"
    );
}

/// One HTTP request on a new connection from `local` to `proxy`, preceded by a PROXY v1
/// header naming `source` as the client; the status, or 0 when the exchange failed.
async fn via_proxy_protocol(local: Ipv4Addr, proxy: SocketAddr, source: Ipv4Addr) -> u16 {
    let Ok(socket) = tokio::net::TcpSocket::new_v4() else {
        return 0;
    };
    if socket.bind(SocketAddr::from((local, 0))).is_err() {
        return 0;
    }
    let Ok(mut stream) = socket.connect(proxy).await else {
        return 0;
    };
    let request = format!(
        "PROXY TCP4 {source} 127.0.0.1 40000 80\r\n\
         GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The abuse case: 100 000 distinct client addresses, each sent as the PROXY protocol
/// source of its own connection from a trusted peer (`trustedProxyProtocolCidrs`), all under a
/// limit. The limiter's state stays within its fixed table (`portcullis_rate_limit_entries`
/// never above `portcullis_rate_limit_capacity`), every address is admitted (each is a new
/// client with a full burst), and a client over its limit is still limited afterwards.
///
/// To keep 100 000 connections within ~30 s on two cores, the Service has no endpoints: an
/// admitted request is answered 503 by the proxy itself (no pod round trip), and the class's
/// `rateLimitStatus: 429` tells a limited one apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_distinct_addresses_keeps_the_limiter_bounded() {
    const ADDRESSES: u32 = 100_000;
    const CONCURRENCY: u32 = 64;
    const ADMITTED: u16 = 503;
    const LIMITED: u16 = 429;
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    let class = ingress_class_with_params(
        "flood",
        "{trustedProxyProtocolCidrs: [127.0.0.0/8], limits: {rateLimitStatus: 429}}",
    );
    manifests::write(&m, "class.yaml", &class);
    manifests::write(&m, "svc.yaml", &service("web", &[]));
    manifests::write(
        &m,
        "app.yaml",
        &ingress("app", HOST, "web", &[(RPS, "1")], None),
    );
    let proxy = Binary::start(&m).await;
    let capacity = proxy
        .metric("portcullis_rate_limit_capacity")
        .await
        .expect("capacity exposed");
    assert!(
        capacity < f64::from(ADDRESSES),
        "the flood is larger than the table"
    );

    let started = Instant::now();
    let at = proxy.http;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CONCURRENCY {
        tasks.spawn(async move {
            // Several local addresses, so 100 000 connections do not run out of ports.
            let local = Ipv4Addr::new(127, 0, 1, 1 + (worker % 16) as u8);
            let mut admitted = 0u32;
            let mut n = worker;
            while n < ADDRESSES {
                let source = Ipv4Addr::from(0x0a00_0000 + n);
                if via_proxy_protocol(local, at, source).await == ADMITTED {
                    admitted += 1;
                }
                n += CONCURRENCY;
            }
            admitted
        });
    }
    let mut admitted = 0;
    while let Some(n) = tasks.join_next().await {
        admitted += n.unwrap();
    }
    let took = started.elapsed();
    let entries = proxy
        .metric("portcullis_rate_limit_entries")
        .await
        .expect("entries exposed");
    eprintln!(
        "{ADDRESSES} addresses in {took:?}; {admitted} admitted; {entries} entries of {capacity}"
    );
    assert!(entries <= capacity, "{entries} > {capacity}");
    assert!(entries >= capacity * 0.9, "the table was used: {entries}");
    assert!(
        admitted >= ADDRESSES * 99 / 100,
        "{admitted} of {ADDRESSES} admitted"
    );

    // A client over its limit is still limited after the flood: 1 + a burst of 5, then 429.
    let local = Ipv4Addr::new(127, 0, 1, 1);
    let one = Ipv4Addr::new(192, 0, 2, 55);
    let mut got = Vec::new();
    for _ in 0..10 {
        got.push(via_proxy_protocol(local, at, one).await);
    }
    assert_eq!(&got[..6], &[ADMITTED; 6], "{got:?}");
    assert!(count(&got, LIMITED) >= 3, "{got:?}");
    let text = proxy.metrics().await;
    assert!(binary::metric_value(&text, "portcullis_rate_limit_entries").is_some());
}

/// An Ingress name, its annotations, and the key its diagnostic must name.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

/// Values ingress-nginx would not read as a limit refuse the Ingress, naming the key (a
/// limit silently dropped would leave the service unprotected): a rate that is not a whole
/// number, a burst multiplier below 1, a malformed allow-list; and `limit-rate` (bandwidth),
/// which Portcullis does not implement, stays refused.
#[test]
fn invalid_limits_are_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path();
    manifests::write(m, "class.yaml", &ingress_class());
    manifests::write(m, "svc.yaml", &service("web", &[8080]));
    let rps = (RPS, "5");
    let cases: &[Case] = &[
        ("rps-word", &[(RPS, "fast")], RPS),
        (
            "rpm-negative",
            &[("portcullis.io/limit-rpm", "-1")],
            "portcullis.io/limit-rpm",
        ),
        (
            "multiplier-zero",
            &[
                rps,
                ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "0"),
            ],
            "nginx.ingress.kubernetes.io/limit-burst-multiplier",
        ),
        (
            "allow-list",
            &[
                rps,
                ("nginx.ingress.kubernetes.io/limit-whitelist", "10.0.0.0/33"),
            ],
            "nginx.ingress.kubernetes.io/limit-whitelist",
        ),
        (
            "bandwidth",
            &[rps, ("nginx.ingress.kubernetes.io/limit-rate", "100")],
            "nginx.ingress.kubernetes.io/limit-rate",
        ),
    ];
    for (i, (name, annotations, _)) in cases.iter().enumerate() {
        let host = format!("h{i}.limits.e2e.test");
        manifests::write(
            m,
            &format!("{name}.yaml"),
            &ingress(name, &host, "web", annotations, None),
        );
    }
    let out = binary::check(m);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (name, _, key) in cases {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("Ingress default/{name} ")) && l.contains(key))
            .unwrap_or_else(|| panic!("no diagnostic for {name}:\n{text}"));
        assert!(line.trim_start().starts_with("error"), "{line}");
    }
}

/// The limiter's state is per Ingress and its limits, carried across table swaps: a rebuild
/// for an unrelated change keeps a limited client limited (a reload of ingress-nginx's would
/// keep its shared-memory zones too), while changing the Ingress's limit starts a fresh zone.
#[tokio::test]
async fn limits_survive_unrelated_table_swaps() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let rpm = |n: &'static str| {
        [
            ("nginx.ingress.kubernetes.io/limit-rpm", n),
            ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "1"),
        ]
    };
    let m = manifest_dir(dir.path(), ingress_class(), &backend, &rpm("1"));
    let proxy = Binary::start(&m).await;
    assert_eq!(statuses(&proxy, 3, &[]).await, [200, 200, 503]);

    let before = proxy.generation().await;
    manifests::write(
        &m,
        "other.yaml",
        &ingress("other", "other.limits.e2e.test", "web", &[], None),
    );
    proxy
        .wait_generation_above(before, Duration::from_secs(10))
        .await;
    assert_eq!(statuses(&proxy, 1, &[]).await, [503], "still limited");

    let before = proxy.generation().await;
    manifests::write(
        &m,
        "app.yaml",
        &ingress("app", HOST, "web", &rpm("2"), None),
    );
    proxy
        .wait_generation_above(before, Duration::from_secs(10))
        .await;
    assert_eq!(
        statuses(&proxy, 4, &[]).await,
        [200, 200, 200, 503],
        "a changed limit is a fresh zone: 1 + a burst of 2"
    );
}

/// Behind a trusted proxy (the class's `trustedForwardedCidrs`, ingress-nginx's
/// `use-forwarded-headers` with `proxy-real-ip-cidr`), the client is the address the proxy
/// reports in `X-Forwarded-For`: each has its own bucket, and an allow-listed one is exempt.
#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let class = ingress_class_with_params("lb", "trustedForwardedCidrs: [127.0.0.1/32]");
    let m = manifest_dir(
        dir.path(),
        class,
        &backend,
        &[
            ("nginx.ingress.kubernetes.io/limit-rpm", "1"),
            ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "1"),
            (
                "nginx.ingress.kubernetes.io/limit-whitelist",
                "198.51.100.0/24",
            ),
        ],
    );
    let proxy = Binary::start(&m).await;
    let from = |ip: &'static str| [("X-Forwarded-For", ip)];
    assert_eq!(
        statuses(&proxy, 3, &from("203.0.113.1")).await,
        [200, 200, 503]
    );
    assert_eq!(
        statuses(&proxy, 3, &from("203.0.113.2")).await,
        [200, 200, 503]
    );
    assert_eq!(
        statuses(&proxy, 5, &from("198.51.100.7")).await,
        [200; 5],
        "allow-listed"
    );
}
