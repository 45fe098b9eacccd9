//! Leader election against the mocked API server: the Lease is created, then renewed with its
//! resourceVersion; another replica's Lease is respected until it expires on our clock.

use crate::support::mock_api::{LEASE, LEASES, MockApi, Reply, lease_settings};

use std::time::Duration;

use http::Method;
use portcullis::cluster::status::LeaderElector;
use serde_json::{Value, json};

#[tokio::test]
async fn lease_is_created_then_renewed_with_its_resource_version() {
    let mock = MockApi::default().with_leases().start();
    let mut elector = LeaderElector::new(mock.client(), lease_settings());
    let leadership = elector.leadership();
    assert!(!leadership.is_leader());
    assert!(elector.step().await.unwrap());
    assert!(leadership.is_leader());
    assert!(elector.step().await.unwrap());

    let r = mock.seen();
    assert_eq!(r.len(), 3, "{r:#?}");
    assert!(r[0].is(Method::GET, LEASE));
    assert!(r[1].is(Method::POST, LEASES));
    let spec = &r[1].body["spec"];
    assert_eq!(r[1].body["metadata"]["name"], "portcullis-leader");
    assert_eq!(spec["holderIdentity"], "pod-a");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);
    assert!(spec["acquireTime"].is_string() && spec["renewTime"].is_string());
    // Renewal: a PUT straight away, guarded by the resourceVersion the create returned.
    assert!(r[2].is(Method::PUT, LEASE));
    assert_eq!(r[2].body["metadata"]["resourceVersion"], "1");
    assert_eq!(r[2].body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(r[2].body["spec"]["acquireTime"], spec["acquireTime"]);
    assert_eq!(r[2].body["spec"]["leaseTransitions"], 0);
}

/// The Lease as `pod-b` holds it, renewed at `renew_time`, for 1 s.
fn foreign_lease(renew_time: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "portcullis-leader", "namespace": "ingress", "resourceVersion": "7"},
        "spec": {"holderIdentity": "pod-b", "leaseDurationSeconds": 1, "leaseTransitions": 3,
                 "acquireTime": renew_time, "renewTime": renew_time},
    })
}

/// On tokio's paused clock: the elector measures the Lease's age on that clock.
#[tokio::test(start_paused = true)]
async fn a_held_lease_is_respected_until_it_expires_then_taken_over() {
    // GET: pod-b's Lease; the PUT that takes it over is echoed (the default for a write).
    let mock = MockApi::default().serve(|r| {
        r.is(Method::GET, LEASE)
            .then(|| Reply::ok(foreign_lease("2026-01-01T00:00:00.000000Z")))
    });
    let mut elector = LeaderElector::new(mock.client(), lease_settings());
    assert!(!elector.step().await.unwrap(), "pod-b holds it");
    assert!(!elector.leadership().is_leader());
    assert_eq!(mock.count(|r| r.method == Method::PUT), 0);

    // Unchanged for longer than its leaseDurationSeconds (1 s) on our clock: expired.
    tokio::time::advance(Duration::from_millis(1100)).await;
    assert!(elector.step().await.unwrap());
    let put = mock
        .seen()
        .into_iter()
        .find(|r| r.method == Method::PUT)
        .unwrap();
    assert_eq!(put.path, LEASE);
    assert_eq!(put.body["metadata"]["resourceVersion"], "7");
    assert_eq!(put.body["spec"]["holderIdentity"], "pod-a");
    assert_eq!(put.body["spec"]["leaseTransitions"], 4);
    assert_eq!(put.body["spec"]["leaseDurationSeconds"], 15);
}
