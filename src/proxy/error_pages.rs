//! ingress-nginx's `default-backend` and `custom-http-errors` annotations, in the proxy.
//!
//! Two things, both only for routes whose [`RoutePolicy`] has [`ErrorPages`]:
//! - **no endpoint**: a route whose upstream has no endpoint at all is served by the
//!   `default-backend` Service instead (the request as it is, path included), as ingress-nginx
//!   swaps the location's upstream for a `custom-default-backend-…` copy holding the default
//!   backend's endpoints ([`serving_upstream`]); not when that Service has no endpoint either
//!   (then the route answers 503 as before);
//! - **error codes**: when the pod answers a code of `custom-http-errors`, its response is
//!   dropped (its connection closed: nothing of it reaches the client) and the request is sent
//!   to the default backend as ingress-nginx's `@custom_…_CODE` location sends it
//!   (rootfs/etc/nginx/template/nginx.tmpl, `CUSTOM_ERRORS`): same method, path `/` (nginx's
//!   `rewrite (.*) / break`, which keeps the query), `Host` as the client sent it, the client's
//!   other headers, and `X-Code`, `X-Format` (the client's `Accept`), `X-Original-URI`,
//!   `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`, `X-Service-Port`, `X-Request-ID`. The
//!   client gets the default backend's response unchanged (the docs: "NGINX does not change the
//!   response from the custom default backend"; it is expected to answer the right status).
//!   The request body already went to the pod as it streamed, so the error request has none.
//!   Forwarded headers the client sent are not passed on (nginx's error location sets none of
//!   its own, and Portcullis never relays a client's unvouched ones). The default backend's
//!   response is final: its own error codes are not intercepted again (nginx's error location
//!   has `proxy_intercept_errors off`). When the default backend cannot answer, the client gets
//!   the proxy's 502/503/504, as from nginx's error location.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, StatusCode, Uri, Version};
use hyper::body::Incoming;

use super::balance;
use super::body::{UpstreamBody, empty_request};
use super::error::{ProxyError, UpstreamFault};
use super::forward::{Forward, UpstreamResponse, checkout_failed};
use super::hop_by_hop::strip_hop_by_hop;
use super::request_id::X_REQUEST_ID;
use crate::table::error_pages::{ErrorPages, has_endpoints};
use crate::table::policy::RoutePolicy;
use crate::table::upstream::{ServicePortRef, ServiceRef, Upstream, UpstreamProtocol};

/// How many endpoints of the default backend one error request tries when connects fail.
const MAX_TRIES: usize = 3;

/// How many sends at most, counting requests a closing pooled connection handed back unsent.
const MAX_ATTEMPTS: usize = MAX_TRIES + 2;

/// Request headers that describe the client's hop or its body, not the error request.
const NOT_PASSED: [&str; 7] = [
    "content-length",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// The upstream that serves a request routed to `upstream`: the route's own, or the
/// `default-backend` annotation's when the route's has no endpoint and that one has.
pub(super) fn serving_upstream<'a>(
    policy: &'a RoutePolicy,
    upstream: &'a Arc<Upstream>,
) -> &'a Arc<Upstream> {
    if has_endpoints(upstream) {
        return upstream;
    }
    policy
        .error_pages
        .as_ref()
        .and_then(ErrorPages::usable_backend)
        .unwrap_or(upstream)
}

/// What is kept of a request whose response may be replaced by the default backend's: made
/// before the request is forwarded (which consumes it), only for routes with
/// `custom-http-errors` and a default backend with endpoints.
pub(super) struct Intercept<'a> {
    pages: &'a ErrorPages,
    backend: &'a Arc<Upstream>,
    /// The route's own Service (`X-Service-Name`, `X-Service-Port`).
    service: &'a ServiceRef,
    method: Method,
    /// The client's path and query, as sent (`X-Original-URI`, nginx's `$request_uri`).
    original: Uri,
    headers: HeaderMap,
}

impl<'a> Intercept<'a> {
    /// `None` when nothing the route's upstream answers is replaced.
    pub(super) fn prepare(
        policy: &'a RoutePolicy,
        route: &'a Upstream,
        req: &Request<Incoming>,
    ) -> Option<Intercept<'a>> {
        let pages = policy.error_pages.as_ref()?;
        if pages.codes.is_empty() {
            return None;
        }
        let backend = pages.usable_backend()?;
        let original = req
            .uri()
            .path_and_query()
            .cloned()
            .map_or_else(|| Uri::from_static("/"), Uri::from);
        Some(Intercept {
            pages,
            backend,
            service: &route.service,
            method: req.method().clone(),
            original,
            headers: req.headers().clone(),
        })
    }

    /// Whether the pod's answer with `status` is replaced.
    pub(super) fn wants(&self, status: StatusCode) -> bool {
        self.pages.intercepts(status.as_u16())
    }

    /// Drops the pod's answer `first` (status `code`) and returns the default backend's answer
    /// to the error request (see the module docs).
    pub(super) async fn replace(
        self,
        f: &Forward<'_>,
        first: UpstreamResponse,
    ) -> Result<UpstreamResponse, ProxyError> {
        let code = first.response.status().as_u16();
        // Its body unread, the pod's connection is not reused: dropping it closes it.
        drop(first);
        let headers = self.error_headers(f, code);
        send(f, self.backend, &self.method, &self.path(), headers).await
    }

    /// `/` with the client's query: nginx's `rewrite (.*) / break` keeps the arguments.
    fn path(&self) -> String {
        match self.original.query() {
            Some(query) => format!("/?{query}"),
            None => "/".to_string(),
        }
    }

    /// The client's headers, minus its hop's and body's, plus ingress-nginx's error headers.
    fn error_headers(&self, f: &Forward<'_>, code: u16) -> HeaderMap {
        let mut headers = self.headers.clone();
        strip_hop_by_hop(&mut headers);
        for name in NOT_PASSED {
            headers.remove(name);
        }
        if let Some(host) = f.raw_host.and_then(|h| HeaderValue::from_str(h).ok()) {
            headers.insert(header::HOST, host);
        }
        let format = headers.get(header::ACCEPT).cloned();
        let port = match &self.service.port {
            ServicePortRef::Number(n) => n.to_string(),
            ServicePortRef::Name(name) => name.clone(),
        };
        let text = [
            ("x-code", code.to_string()),
            ("x-original-uri", self.original.to_string()),
            ("x-namespace", self.pages.namespace.clone()),
            ("x-ingress-name", self.pages.ingress.clone()),
            ("x-service-name", self.service.name.clone()),
            ("x-service-port", port),
        ];
        for (name, value) in text {
            if let Ok(value) = HeaderValue::from_str(&value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
        match format {
            Some(accept) => headers.insert(HeaderName::from_static("x-format"), accept),
            None => headers.remove("x-format"),
        };
        headers.insert(X_REQUEST_ID, f.request_id.clone());
        headers
    }
}

/// Sends a bodyless request to an endpoint of `backend`: another endpoint after a failed
/// connect, a new connection when a pooled one handed the request back unsent.
async fn send(
    f: &Forward<'_>,
    backend: &Upstream,
    method: &Method,
    path: &str,
    mut headers: HeaderMap,
) -> Result<UpstreamResponse, ProxyError> {
    let timeouts = f.table.class.timeouts;
    let deadline = tokio::time::Instant::now() + timeouts.upstream_response;
    let service = &backend.service;
    let connector = f.ctx.clients.connector_for(&backend.protocol);
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_error = None;
    let mut fresh = false;
    let mut attempts = 0;
    while tried.len() < MAX_TRIES && attempts < MAX_ATTEMPTS {
        attempts += 1;
        let Some(endpoint) = balance::pick(backend, &f.ctx.health, &tried) else {
            break;
        };
        let in_flight = f.ctx.health.begin_request(endpoint);
        let checkout = f
            .ctx
            .clients
            .checkout(&connector, endpoint, timeouts.connect, fresh);
        let mut conn = match checkout.await {
            Ok(conn) => conn,
            Err(err) => {
                last_error = Some(checkout_failed(f, service, endpoint, err)?);
                tried.push(endpoint);
                continue;
            }
        };
        let uri = if conn.sender.is_http2() {
            // HTTP/2 carries the scheme and authority as pseudo-headers.
            let scheme = match backend.protocol {
                UpstreamProtocol::Https(_) | UpstreamProtocol::H2(_) => "https",
                _ => "http",
            };
            let authority = f
                .raw_host
                .map_or_else(|| endpoint.to_string(), str::to_string);
            format!("{scheme}://{authority}{path}").parse::<Uri>()
        } else {
            path.parse::<Uri>()
        };
        let uri = uri.unwrap_or_else(|_| Uri::from_static("/"));
        let mut req = Request::new(empty_request());
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers.clone();
        if !req.headers().contains_key(header::HOST)
            && let Ok(value) = HeaderValue::from_str(&endpoint.to_string())
        {
            req.headers_mut().insert(header::HOST, value);
        }
        let sent = Instant::now();
        let request = conn.sender.try_send_request(req);
        match tokio::time::timeout_at(deadline, request).await {
            Err(_) => {
                return Err(ProxyError::upstream(
                    service,
                    Some(endpoint),
                    UpstreamFault::Timeout(timeouts.upstream_response),
                ));
            }
            Ok(Ok(response)) => {
                let mut response = response.map(UpstreamBody::Hyper);
                strip_hop_by_hop(response.headers_mut());
                in_flight.answered(response.status().as_u16(), 0);
                return Ok(UpstreamResponse {
                    response,
                    endpoint,
                    upstream_time: sent.elapsed(),
                    in_flight: Some(in_flight),
                    conn: Some(conn),
                });
            }
            Ok(Err(mut err)) => {
                if let Some(unsent) = err.take_message() {
                    // Not written: the pooled connection was closing. Safe to send anew.
                    fresh = true;
                    headers = unsent.into_parts().0.headers;
                    continue;
                }
                return Err(ProxyError::upstream(
                    service,
                    Some(endpoint),
                    UpstreamFault::Reset(Box::new(err.into_error())),
                ));
            }
        }
    }
    Err(last_error
        .unwrap_or_else(|| ProxyError::upstream(service, None, UpstreamFault::NoEndpoint)))
}
