//! `ssl-redirect` on :80: 308 to https with the exact path and query; the port is appended
//! unless it is 443; no redirect when off; pass-through hosts redirect too.

use crate::support::backends;
use crate::support::http_harness::{self as h, get};
use portcullis::table::ClassSettings;
use portcullis::table::route::TlsMode;
use portcullis::table::upstream::UpstreamProtocol;

#[tokio::test]
async fn redirects_with_path_query_and_port() {
    let backend = backends::http("a").await;
    let mut vhost = h::vhost(
        "a.example",
        h::upstream(&[backend.addr], UpstreamProtocol::Http),
    );
    vhost.ssl_redirect = true;
    let front = h::plain(h::table(vec![vhost], ClassSettings::default()), 8443).await;

    let answer = get(front.addr, "A.Example:80", "/a/b?x=1&y=%20z", &[]).await;
    assert_eq!(answer.status, 308);
    assert_eq!(
        answer.header("location"),
        "https://a.example:8443/a/b?x=1&y=%20z"
    );
    assert_eq!(answer.header("strict-transport-security"), "");
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn port_443_is_omitted() {
    let backend = backends::http("a").await;
    let mut vhost = h::vhost(
        "a.example",
        h::upstream(&[backend.addr], UpstreamProtocol::Http),
    );
    vhost.ssl_redirect = true;
    let front = h::plain(h::table(vec![vhost], ClassSettings::default()), 443).await;

    let answer = get(front.addr, "a.example", "/login?next=/home", &[]).await;
    assert_eq!(answer.status, 308);
    assert_eq!(
        answer.header("location"),
        "https://a.example/login?next=/home"
    );
    // A path with no route still redirects (redirect comes before path routing).
    let mut vhost = h::vhost(
        "b.example",
        h::upstream(&[backend.addr], UpstreamProtocol::Http),
    );
    vhost.ssl_redirect = true;
    vhost.routes.clear();
    let front = h::plain(h::table(vec![vhost], ClassSettings::default()), 443).await;
    let answer = get(front.addr, "b.example", "/", &[]).await;
    assert_eq!(answer.status, 308);
    assert_eq!(answer.header("location"), "https://b.example/");
}

#[tokio::test]
async fn no_redirect_when_off() {
    let backend = backends::http("a").await;
    let vhost = h::vhost(
        "a.example",
        h::upstream(&[backend.addr], UpstreamProtocol::Http),
    );
    let front = h::plain(h::table(vec![vhost], ClassSettings::default()), 8443).await;
    let answer = get(front.addr, "a.example", "/x?y=1", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("location"), "");
    assert_eq!(backend.requests()[0].uri, "/x?y=1");
}

#[tokio::test]
async fn passthrough_hosts_redirect_or_serve_their_rule_backend_on_port_80() {
    let backend = backends::http("pt").await;
    let mut redirecting = h::vhost(
        "pt.example",
        h::upstream(&[backend.addr], UpstreamProtocol::Tcp),
    );
    redirecting.tls_mode = TlsMode::Passthrough;
    redirecting.ssl_redirect = true;
    let mut serving = h::vhost(
        "pt2.example",
        h::upstream(&[backend.addr], UpstreamProtocol::Tcp),
    );
    serving.tls_mode = TlsMode::Passthrough;
    let front = h::plain(
        h::table(vec![redirecting, serving], ClassSettings::default()),
        443,
    )
    .await;

    let answer = get(front.addr, "pt.example", "/p", &[]).await;
    assert_eq!(answer.status, 308);
    assert_eq!(answer.header("location"), "https://pt.example/p");
    let answer = get(front.addr, "pt2.example", "/p", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-backend"), "pt");
}
