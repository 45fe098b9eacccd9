//! The admin endpoint: `/readyz` 503 before the first table and during shutdown, 200 in
//! between; `/healthz` always 200; `/metrics` in the Prometheus text format; `/table` once live.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use portcullis::rebuild::{Rebuilder, Status};
use portcullis::settings::Settings;
use portcullis::source::{Snapshot, snapshot_channel};
use portcullis::table::{RouteTable, TableHandle};
use portcullis::telemetry::admin::{self, AdminState, METRICS_CONTENT_TYPE};
use portcullis::telemetry::metrics::Metrics;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::support::http::{admin_get, status_of};
use crate::support::wait::wait_until;

#[tokio::test]
async fn readyz_follows_the_first_table_and_shutdown() {
    let status = Status::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_admin, stop_admin_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(
        listener,
        AdminState {
            status: status.clone(),
            metrics: Arc::new(Metrics::new()),
            live: Default::default(),
        },
        stop_admin_rx,
    ));

    // The source is not ready: no table yet.
    let table: TableHandle = Arc::new(ArcSwap::from_pointee(RouteTable::default()));
    let (snapshots, source) = snapshot_channel(None);
    let (stop, stop_rx) = watch::channel(false);
    let rebuild = tokio::spawn(
        Rebuilder::new(&Settings::default(), table, status.clone()).run(source, stop_rx),
    );

    assert_eq!(status_of(addr, "/healthz").await, 200);
    let readyz = admin_get(addr, "/readyz").await.unwrap();
    assert_eq!(readyz.status, 503);
    assert_eq!(status_of(addr, "/table").await, 503);

    snapshots.send(Arc::new(Snapshot::default()));
    assert!(
        wait_until(Duration::from_secs(1), || async {
            status_of(addr, "/readyz").await == 200
        })
        .await,
        "/readyz turns 200 once the first table is live"
    );
    let table = admin_get(addr, "/table").await.unwrap();
    assert_eq!(table.status, 200);
    assert_eq!(table.header("content-type"), "application/json");

    let metrics = admin_get(addr, "/metrics").await.unwrap();
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("content-type"), METRICS_CONTENT_TYPE);
    assert_eq!(status_of(addr, "/nope").await, 404);

    status.set_draining();
    assert_eq!(status_of(addr, "/readyz").await, 503);
    assert_eq!(status_of(addr, "/healthz").await, 200);

    stop.send_replace(true);
    stop_admin.send_replace(true);
    rebuild.await.unwrap();
    admin_task.await.unwrap();
}
