//! The assembled controller against the mocked API server: it becomes leader, rebuilds,
//! serves what the API lists, publishes our Ingress's status and releases the Lease on the
//! way out.

use crate::support::backends;
use crate::support::mock_api::{
    LEASE, MockApi, T, controller_settings, loopback, web_ingress, web_lists,
};
use crate::support::wait::wait_until;

use http::Method;
use portcullis::cluster::{Cluster, ControllerSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn cluster_becomes_leader_pokes_a_rebuild_and_releases_the_lease_on_shutdown() {
    let mock = MockApi::default().with_leases().start();
    let cluster = Cluster::start(mock.client(), &controller_settings()).unwrap();
    tokio::time::timeout(T, cluster.wait_ready())
        .await
        .unwrap()
        .unwrap();
    assert!(cluster.is_ready());
    assert!(wait_until(T, || async { cluster.leadership().is_leader() }).await);
    // Sixteen stores listed once each (16 changes: eight for Ingress, seven for the Gateway
    // API, one for ConfigMaps; no Namespaces store, one namespace being watched); becoming
    // leader bumps the signal once more, so the rebuild loop publishes at once.
    let changes = cluster.changes();
    assert!(wait_until(T, || async { changes.borrow().generation == 17 }).await);

    cluster.shutdown(&[]).await;
    let release = mock
        .seen()
        .into_iter()
        .rfind(|r| r.is(Method::PUT, LEASE))
        .expect("the lease is released");
    assert_eq!(release.body["spec"].get("holderIdentity"), None);
    assert_eq!(release.body["spec"]["leaseDurationSeconds"], 1);
}

/// Watching every namespace adds one store, the Namespaces': seventeen lists, then the leader's
/// bump.
#[tokio::test]
async fn cluster_wide_the_namespaces_store_is_listed_too() {
    let mock = MockApi::default().with_leases().start();
    let settings = ControllerSettings {
        watch_namespace: None,
        ..controller_settings()
    };
    let cluster = Cluster::start(mock.client(), &settings).unwrap();
    tokio::time::timeout(T, cluster.wait_ready())
        .await
        .unwrap()
        .unwrap();
    assert!(wait_until(T, || async { cluster.leadership().is_leader() }).await);
    let changes = cluster.changes();
    assert!(
        wait_until(T, || async { changes.borrow().generation == 18 }).await,
        "generation {}",
        changes.borrow().generation
    );
    assert_eq!(
        mock.count(|r| r.is_list() && r.path == "/api/v1/namespaces"),
        1
    );
    cluster.shutdown(&[]).await;
}

/// Cluster mode end to end: what the API server lists is served by the proxy, our Ingress's
/// status gets the published address, and the lease is released on the way out.
#[tokio::test]
async fn controller_serves_what_the_api_lists_and_publishes_status() {
    let backend = backends::http("web").await;
    let mock = MockApi::new(web_lists(&backend, vec![web_ingress("web")]))
        .with_leases()
        .start();
    let controller = mock.controller(loopback(), controller_settings()).await;
    assert!(wait_until(T, || async { controller.status().is_live() }).await);

    let mut stream = TcpStream::connect(controller.addresses().http)
        .await
        .unwrap();
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nHost: web.example.com\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("backend=web path=/hello"), "{answer}");

    const STATUS: &str = "/apis/networking.k8s.io/v1/namespaces/apps/ingresses/web/status";
    mock.wait_count(1, |r| r.is(Method::PATCH, STATUS)).await;
    let patch = mock
        .seen()
        .into_iter()
        .find(|r| r.is(Method::PATCH, STATUS))
        .unwrap();
    assert_eq!(
        patch.body["status"]["loadBalancer"]["ingress"][0]["ip"],
        "10.0.0.1"
    );

    controller.until_stopped(async {}).await.unwrap();
    assert!(
        mock.count(|r| r.is(Method::PUT, LEASE)) >= 1,
        "released on the way out"
    );
}
