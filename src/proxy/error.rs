//! Errors of the HTTP proxy, as data: each records WHO failed (the client or the upstream) and
//! what, and [`ProxyError::status`] / [`ProxyError::label`] are the ONE place that maps a failure
//! to the status code the client sees and to the label that metrics and access logs carry.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Who is at fault for a request that did not get an upstream response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Who {
    /// The client sent something we refuse, or asked for something that does not exist.
    Client,
    /// The upstream (pod) could not be reached, failed, or was too slow.
    Upstream,
}

impl Who {
    /// Stable name for logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Who::Client => "client",
            Who::Upstream => "upstream",
        }
    }
}

/// A request the proxy answered itself instead of relaying an upstream response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    /// The client is at fault.
    #[error("client: {0}")]
    Client(#[from] ClientFault),
    /// The upstream `service` is at fault; `endpoint` is the pod address last tried, if any.
    #[error("upstream {service} ({}): {fault}", endpoint.map(|a| a.to_string()).unwrap_or_else(|| "no endpoint".into()))]
    Upstream {
        service: String,
        endpoint: Option<SocketAddr>,
        #[source]
        fault: UpstreamFault,
    },
}

/// What the client did wrong.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientFault {
    /// No virtual host, or no path of it, matches (and there is no default backend).
    #[error("no route for host {host:?} path {path:?}")]
    NoRoute { host: Option<String>, path: String },
    /// The request head is larger than `limits.max_header_bytes`.
    #[error("request headers are {size} bytes, over the limit of {limit}")]
    HeadersTooLarge { size: usize, limit: usize },
    /// Conflicting message framing (`Content-Length` with `Transfer-Encoding`, or differing
    /// `Content-Length`s): a request smuggling attempt or a broken client.
    #[error("conflicting message framing: {0}")]
    Smuggling(&'static str),
    /// A redirect to the request's own host (`ssl-redirect`, `app-root`) was due, and the
    /// request has no usable `Host`.
    #[error("request has no Host to redirect to")]
    MissingHost,
    /// The `Host` names a pass-through host on a connection we terminated (SNI and Host differ).
    #[error("host {0:?} is pass-through; it cannot be served on this TLS connection")]
    Misdirected(String),
    /// The request body is larger than the route's `proxy-body-size`.
    #[error("request body over the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The client address is denied, or outside the allow-list, of the route
    /// (`denylist-source-range`, `whitelist-source-range`).
    #[error("client address {0} is not allowed")]
    SourceDenied(std::net::IpAddr),
}

/// What went wrong with the upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamFault {
    /// The upstream has no endpoints, or none healthy and untried.
    #[error("no healthy endpoint")]
    NoEndpoint,
    /// TCP connect failed or timed out (nothing was sent).
    #[error("connect failed")]
    Connect(#[source] BoxError),
    /// The TLS handshake with the pod failed (re-encrypt): bad certificate, wrong SNI...
    #[error("TLS handshake failed")]
    Tls(#[source] BoxError),
    /// The connection failed after the request was (partly) sent, or the response was invalid.
    #[error("connection failed during the exchange")]
    Reset(#[source] BoxError),
    /// No response head within `timeouts.upstream_response`.
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

impl ProxyError {
    /// An upstream fault of `service`, last tried at `endpoint`.
    pub(crate) fn upstream(
        service: impl ToString,
        endpoint: Option<SocketAddr>,
        fault: UpstreamFault,
    ) -> Self {
        ProxyError::Upstream {
            service: service.to_string(),
            endpoint,
            fault,
        }
    }

    /// Who failed.
    pub(crate) fn who(&self) -> Who {
        match self {
            ProxyError::Client(_) => Who::Client,
            ProxyError::Upstream { .. } => Who::Upstream,
        }
    }

    /// The status code the client gets.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ProxyError::Client(ClientFault::NoRoute { .. }) => StatusCode::NOT_FOUND,
            ProxyError::Client(ClientFault::HeadersTooLarge { .. }) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ProxyError::Client(ClientFault::Smuggling(_) | ClientFault::MissingHost) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::Client(ClientFault::Misdirected(_)) => StatusCode::MISDIRECTED_REQUEST,
            ProxyError::Client(ClientFault::BodyTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Client(ClientFault::SourceDenied(_)) => StatusCode::FORBIDDEN,
            ProxyError::Upstream { fault, .. } => match fault {
                UpstreamFault::NoEndpoint => StatusCode::SERVICE_UNAVAILABLE,
                UpstreamFault::Connect(_) | UpstreamFault::Tls(_) | UpstreamFault::Reset(_) => {
                    StatusCode::BAD_GATEWAY
                }
                UpstreamFault::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            },
        }
    }

    /// Stable, bounded label for metrics and the access log's `error` field.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            ProxyError::Client(c) => match c {
                ClientFault::NoRoute { .. } => "no_route",
                ClientFault::HeadersTooLarge { .. } => "headers_too_large",
                ClientFault::Smuggling(_) => "smuggling",
                ClientFault::MissingHost => "missing_host",
                ClientFault::Misdirected(_) => "misdirected",
                ClientFault::BodyTooLarge { .. } => "body_too_large",
                ClientFault::SourceDenied(_) => "source_denied",
            },
            ProxyError::Upstream { fault, .. } => match fault {
                UpstreamFault::NoEndpoint => "no_endpoint",
                UpstreamFault::Connect(_) => "connect_failed",
                UpstreamFault::Tls(_) => "tls_failed",
                UpstreamFault::Reset(_) => "upstream_reset",
                UpstreamFault::Timeout(_) => "upstream_timeout",
            },
        }
    }

    /// The fixed body sent to the client: the status line only, so nothing about routes,
    /// services or pods leaks.
    pub(crate) fn body(&self) -> &'static str {
        match self.status().as_u16() {
            400 => "400 bad request\n",
            403 => "403 forbidden\n",
            404 => "404 page not found\n",
            413 => "413 content too large\n",
            421 => "421 misdirected request\n",
            431 => "431 request header fields too large\n",
            502 => "502 bad gateway\n",
            503 => "503 service unavailable\n",
            504 => "504 gateway timeout\n",
            _ => "500 internal server error\n",
        }
    }

    /// Whether the client connection must be closed after the answer: its framing is not to
    /// be trusted any more, or (421) it cannot serve the host, and the client's retry must
    /// open a new connection, or (413) the rest of a body too large to read is still coming.
    pub(crate) fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::Client(
                ClientFault::Smuggling(_)
                    | ClientFault::HeadersTooLarge { .. }
                    | ClientFault::Misdirected(_)
                    | ClientFault::BodyTooLarge { .. }
            )
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_place_maps_faults_to_status_and_label() {
        let cases: Vec<(ProxyError, u16, &str, Who)> = vec![
            (
                ClientFault::NoRoute {
                    host: None,
                    path: "/".into(),
                }
                .into(),
                404,
                "no_route",
                Who::Client,
            ),
            (
                ProxyError::upstream("ns/svc:80", None, UpstreamFault::NoEndpoint),
                503,
                "no_endpoint",
                Who::Upstream,
            ),
            (
                ProxyError::upstream(
                    "ns/svc:80",
                    None,
                    UpstreamFault::Timeout(Duration::from_secs(1)),
                ),
                504,
                "upstream_timeout",
                Who::Upstream,
            ),
            (
                ClientFault::Smuggling("x").into(),
                400,
                "smuggling",
                Who::Client,
            ),
            (
                ClientFault::BodyTooLarge { limit: 1 }.into(),
                413,
                "body_too_large",
                Who::Client,
            ),
            (
                ClientFault::SourceDenied([10, 0, 0, 1].into()).into(),
                403,
                "source_denied",
                Who::Client,
            ),
        ];
        for (err, status, label, who) in cases {
            assert_eq!(err.status().as_u16(), status, "{err}");
            assert_eq!(err.label(), label);
            assert_eq!(err.who(), who);
            assert!(err.body().starts_with(&status.to_string()));
        }
    }
}
