//! Access log lines carry named fields: the JSON formatter shows each one as its own key, and
//! every declared key is there, `null` when the request has no such value.

use std::time::Duration;

use portcullis::telemetry::log_format::AccessFormat;

use crate::support::backends;
use crate::support::http::get;
use crate::support::in_process::Proxy;
use crate::support::log_capture::Captured;
use crate::support::wait::wait_until;

#[tokio::test]
async fn http_lines_have_named_fields() {
    let captured = Captured::default();
    let writer = captured.clone();
    // What the binary does: access lines through the sink, enabled by the subscriber's filter.
    portcullis::telemetry::log_sink::install_to(Box::new(writer), AccessFormat::Json);
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_writer(std::io::sink)
            .finish(),
    )
    .unwrap();

    let backend = backends::http("a").await;
    let proxy = Proxy::start_one("a.example", &[backend.addr]).await;
    assert_eq!(
        get(proxy.http, "A.example", "/logged?secret=1", &[])
            .await
            .status,
        200
    );
    // The host as routed: without its port (the line takes it from routing's result).
    assert_eq!(
        get(proxy.http, "a.example:8080", "/ported", &[])
            .await
            .status,
        200
    );
    assert_eq!(
        get(proxy.http, "nowhere.example", "/x", &[]).await.status,
        404
    );

    let text = || captured.text();
    assert!(
        wait_until(Duration::from_secs(5), || {
            let t = text();
            async move {
                t.lines()
                    .filter(|l| l.contains("\"kind\":\"http\""))
                    .count()
                    == 3
            }
        })
        .await,
        "{}",
        text()
    );
    let lines: Vec<serde_json::Value> = text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["target"] == "access")
        .collect();
    let ok = lines.iter().find(|l| l["path"] == "/logged").unwrap();
    assert_eq!(ok["host"], "a.example");
    let ported = lines.iter().find(|l| l["path"] == "/ported").unwrap();
    assert_eq!(ported["host"], "a.example", "{ported}");
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["path"], "/logged", "the query is not logged");
    assert_eq!(ok["mode"], "http");
    assert_eq!(ok["upstream"], backend.addr.to_string());
    assert!(ok["bytes_out"].as_u64().unwrap() > 0);
    assert!(ok["upstream_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(ok["upstream_status"], 200);
    assert_eq!(ok["error"], serde_json::Value::Null);
    let missing = lines.iter().find(|l| l["status"] == 404).unwrap();
    assert_eq!(missing["error"], "no_route");
    for key in [
        "upstream",
        "upstream_status",
        "upstream_ms",
        "ingress",
        "service",
        "sni",
    ] {
        assert_eq!(missing[key], serde_json::Value::Null, "{key}: {missing}");
    }
}
