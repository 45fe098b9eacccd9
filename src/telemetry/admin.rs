//! The admin endpoint (`--admin-addr`, loopback by default): probes, metrics and the table.
//!
//! | path | answer |
//! |---|---|
//! | `/healthz` | 200 while the process serves at all (liveness) |
//! | `/readyz` | 200 once the first table is live and until shutdown begins, else 503 |
//! | `/metrics` | OpenMetrics text when `Accept` asks for it, else the Prometheus text format 0.0.4 ([`Format`]) |
//! | `/`, `/status.js`, `/status.css`, `/api/v1/status` | the live status page and its JSON API (`status_page.rs`) |
//! | `/table` | `check --output json` of the live build: hosts, routes, endpoints, certificate metadata and diagnostics (and `gateway_api`: the Gateway API objects' conditions); never keys |

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::rebuild::Status;
use crate::table::describe;
use crate::telemetry::exposition::{Format, PROMETHEUS_CONTENT_TYPE};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::status_api::LiveSources;
use crate::telemetry::status_page;

/// Content type of `/metrics` for a scraper that does not ask for OpenMetrics (the Prometheus
/// text format 0.0.4).
pub const METRICS_CONTENT_TYPE: &str = PROMETHEUS_CONTENT_TYPE;

/// What the admin endpoint reads.
#[derive(Clone)]
pub struct AdminState {
    pub status: Arc<Status>,
    pub metrics: Arc<Metrics>,
    /// Endpoint health and the last rebuild, for the status page (`status_page.rs`).
    pub live: LiveSources,
}

/// Serves the admin endpoint on `listener` until `shutdown` turns true. Requests in progress
/// when it does are dropped: probes and scrapes are retried by their callers.
pub async fn serve(listener: TcpListener, state: AdminState, mut shutdown: watch::Receiver<bool>) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

/// The answer to one admin request.
fn respond(state: &AdminState, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    if let Some(page) =
        status_page::respond(req.uri().path(), &state.status, &state.metrics, &state.live)
    {
        return page;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if state.status.is_ready() {
                text(StatusCode::OK, "ready\n")
            } else if state.status.is_live() {
                text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "no routing table yet\n")
            }
        }
        "/metrics" => {
            let accept = req
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = Format::negotiate(accept);
            let mut response = body(
                StatusCode::OK,
                format.content_type(),
                state.metrics.encode_as(format),
            );
            response
                .headers_mut()
                .insert(header::VARY, header::HeaderValue::from_static("accept"));
            response
        }
        "/table" => match state.status.current() {
            Some(built) => body(
                StatusCode::OK,
                "application/json",
                built
                    .gateway_api
                    .add_to_json(describe::render_json(&built.table, &built.diagnostics)),
            ),
            None => text(StatusCode::SERVICE_UNAVAILABLE, "no routing table yet\n"),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, message: &'static str) -> Response<Full<Bytes>> {
    body(status, "text/plain; charset=utf-8", message)
}

fn body(
    status: StatusCode,
    content_type: &'static str,
    content: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(content.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

/// Completes when `shutdown` turns true (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
