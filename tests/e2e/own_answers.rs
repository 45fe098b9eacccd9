//! End to end, the built binary: an answer the proxy makes itself (here a redirect) to a
//! request whose body is still on its way. Over HTTP/2 the proxy answers at once and reads the
//! rest of a small declared body, as nginx discards a body it does not want, instead of
//! resetting the stream (`RST_STREAM(NO_ERROR)`, which RFC 9113 §8.1 allows) under a client
//! that is still sending. curl 7.88 (Debian 12's) fails the whole transfer on that reset with
//! "(92) Stream error in the HTTP/2 framing layer" and shows no response: on a loaded machine
//! `nginx_annotations::permanent_and_temporary_redirects_answer_instead_of_forwarding` saw it
//! for its POST, when the 308 reached curl before curl had sent the form.
//!
//! The client here is h2 itself, so the order is fixed rather than left to a race: the body is
//! sent only once the answer is in, and a PING round trip afterwards proves that every frame
//! the proxy sent about the stream has been read.

use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};

use crate::support::backends;
use crate::support::binary::Binary;
use crate::support::http::tls_connect;
use crate::support::manifests::{self, ingress, ingress_class};
use crate::support::pki::Ca;

const MOVED: &str = "moved.answers.e2e.test";
const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn an_own_answer_over_http2_reads_the_rest_of_the_body_instead_of_resetting() {
    let ca = Ca::new("e2e own answers ca");
    let backend = backends::http("web").await;
    let dir = tempfile::tempdir().unwrap();
    let m = manifests::web_dir(
        dir.path(),
        &backend,
        &[
            ("class", ingress_class()),
            (
                "secret",
                ca.leaf(&[MOVED]).secret_yaml(manifests::NS, "moved-tls"),
            ),
            (
                "moved",
                ingress(
                    "moved",
                    MOVED,
                    "web",
                    &[
                        (
                            "nginx.ingress.kubernetes.io/permanent-redirect",
                            "https://new.example.com/landing",
                        ),
                        ("nginx.ingress.kubernetes.io/permanent-redirect-code", "308"),
                    ],
                    Some("moved-tls"),
                ),
            ),
        ],
    );
    let proxy = Binary::start(&m).await;

    let tls = tls_connect(proxy.https, ca.client_config(&[b"h2"]), MOVED)
        .await
        .expect("TLS to the proxy");
    let (client, mut connection) = h2::client::handshake(tls).await.expect("h2 handshake");
    let mut ping = connection
        .ping_pong()
        .expect("the connection's ping-pong handle");
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.expect("h2 client ready");

    // A form post whose body is not sent yet: its head declares 3 bytes.
    let req = Request::post(format!("https://{MOVED}/form"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", "3")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(req, false).expect("send the head");
    let response = tokio::time::timeout(T, response)
        .await
        .expect("the proxy answers before the body")
        .expect("a response");
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        response.headers().get("location").map(|v| v.as_bytes()),
        Some(&b"https://new.example.com/landing"[..])
    );

    // Now the body, as a client that had it queued sends it.
    body.send_data(Bytes::from_static(b"a=1"), true)
        .expect("the stream is still open for the body the head announced");
    // The proxy answers a PING after everything sent before it: once the PONG is in, a reset
    // of the stream would have been read too.
    tokio::time::timeout(T, ping.ping(h2::Ping::opaque()))
        .await
        .expect("PONG in time")
        .expect("PONG");
    let reset = poll_fn(|cx| Poll::Ready(body.poll_reset(cx))).await;
    assert!(
        reset.is_pending(),
        "the proxy reset the stream while the client was sending its body: {reset:?}"
    );
    assert!(backend.proxied().is_empty(), "{:?}", backend.proxied());

    // The connection serves the next request as usual.
    let req = Request::get(format!("https://{MOVED}/next"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(req, true).expect("send");
    let response = tokio::time::timeout(T, response)
        .await
        .expect("answer in time")
        .expect("a response");
    assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
    driver.abort();
    proxy.stop(T).await;
}
