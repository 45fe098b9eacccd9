//! `ssl-redirect` on :80: 308 to https with the exact path and query; the port is appended
//! unless it is 443; no redirect when off; pass-through hosts redirect too.

use crate::support::backends;
use crate::support::fixture::{Tables, upstream};
use crate::support::http::get;
use crate::support::in_process::Proxy;
use portcullis::table::route::TlsMode;
use portcullis::table::upstream::UpstreamProtocol;

#[tokio::test]
async fn redirects_with_path_query_and_port() {
    let backend = backends::http("a").await;
    let table = Tables::one("a.example", &[backend.addr])
        .edit(|vhost| vhost.ssl_redirect = true)
        .build();
    let proxy = Proxy::start_redirecting_to(table, 8443).await;

    let answer = get(proxy.http, "A.Example:80", "/a/b?x=1&y=%20z", &[]).await;
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
    let table = Tables::one("a.example", &[backend.addr])
        .edit(|vhost| vhost.ssl_redirect = true)
        .build();
    let proxy = Proxy::start_redirecting_to(table, 443).await;

    let answer = get(proxy.http, "a.example", "/login?next=/home", &[]).await;
    assert_eq!(answer.status, 308);
    assert_eq!(
        answer.header("location"),
        "https://a.example/login?next=/home"
    );
    // A path with no route still redirects (redirect comes before path routing).
    let table = Tables::new()
        .http("b.example")
        .edit(|vhost| vhost.ssl_redirect = true)
        .build();
    let proxy = Proxy::start_redirecting_to(table, 443).await;
    let answer = get(proxy.http, "b.example", "/", &[]).await;
    assert_eq!(answer.status, 308);
    assert_eq!(answer.header("location"), "https://b.example/");
}

#[tokio::test]
async fn no_redirect_when_off() {
    let backend = backends::http("a").await;
    let table = Tables::one("a.example", &[backend.addr]).build();
    let proxy = Proxy::start_redirecting_to(table, 8443).await;
    let answer = get(proxy.http, "a.example", "/x?y=1", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("location"), "");
    assert_eq!(backend.requests()[0].uri, "/x?y=1");
}

#[tokio::test]
async fn passthrough_hosts_redirect_or_serve_their_rule_backend_on_port_80() {
    let backend = backends::http("pt").await;
    let table = Tables::new()
        .http("pt.example")
        .route(upstream(&[backend.addr], UpstreamProtocol::Tcp))
        .edit(|vhost| {
            vhost.tls_mode = TlsMode::Passthrough;
            vhost.ssl_redirect = true;
        })
        .http("pt2.example")
        .route(upstream(&[backend.addr], UpstreamProtocol::Tcp))
        .edit(|vhost| vhost.tls_mode = TlsMode::Passthrough)
        .build();
    let proxy = Proxy::start_redirecting_to(table, 443).await;

    let answer = get(proxy.http, "pt.example", "/p", &[]).await;
    assert_eq!(answer.status, 308);
    assert_eq!(answer.header("location"), "https://pt.example/p");
    let answer = get(proxy.http, "pt2.example", "/p", &[]).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-backend"), "pt");
}
