//! External authentication as ingress-nginx does it with nginx's `auth_request`
//! (annotations.md, "External Authentication"; the auth location of its nginx.tmpl): before a
//! request is forwarded, a subrequest without body goes to `auth-url` with the client's
//! headers and the `X-Original-*` description of the request, and its status decides:
//! - 2xx: forwarded, with the `auth-response-headers` of the auth answer set on the request;
//! - 401: answered 401 (with the auth answer's `WWW-Authenticate`), or, with `auth-signin`,
//!   302 to the sign-in URL carrying the original URL (nginx's `error_page 401 = <signin>`);
//! - 403: answered 403;
//! - anything else, or no answer (unreachable, timed out): 500, fail closed, as
//!   `auth_request` answers every other subrequest outcome.
//!
//! The auth answer's `Set-Cookie` goes on the client's response as nginx's
//! `add_header Set-Cookie $auth_cookie` does (successful statuses only, unless
//! `auth-always-set-cookie`), and on the sign-in redirect. With `auth-cache-key`, answers are
//! cached per key and status (`auth-cache-duration`), in a bounded per-Ingress store.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::ConnInfo;
use super::body::{ResponseBody, own_response};
use super::forward::request_client_ip;
use crate::table::RouteTable;
use crate::table::external_auth::{AuthUrl, CachedAnswer, ExternalAuth, RequestVars};
use crate::table::policy::RoutePolicy;

/// Statuses whose responses get the auth answer's `Set-Cookie` without
/// `auth-always-set-cookie` (those of nginx's `add_header` without `always`).
const COOKIE_STATUSES: [u16; 10] = [200, 201, 204, 206, 301, 302, 303, 304, 307, 308];

/// Request headers not passed to the auth service: the subrequest has no body, and its
/// connection is its own.
const NOT_PASSED: [HeaderName; 10] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::EXPECT,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Marks the subrequests this proxy sends. A request carrying it that needs external auth
/// itself is an auth service protected by external auth through this proxy (directly, or by
/// way of `auth-url` naming a host served here): a loop, each level opening a connection to
/// the next until something gives way. It is answered 500 at once. A client sending it only
/// gets itself a 500.
const LOOP_MARKER: &str = "portcullis-auth-subrequest";

/// Why the auth service gave no answer (each one is a 500 to the client).
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthFault {
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    #[error("TLS handshake: {0}")]
    Tls(#[source] std::io::Error),
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
    #[error("HTTP exchange: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the subrequest: {0}")]
    Request(#[from] http::Error),
    #[error("no answer within {0:?}")]
    ResponseTimeout(Duration),
}

/// What the auth check needs to know about the request besides its headers.
pub(crate) struct RequestFacts<'a> {
    pub(crate) table: &'a RouteTable,
    pub(crate) conn: &'a ConnInfo,
    pub(crate) policy: &'a RoutePolicy,
    pub(crate) tls: bool,
    /// The `Host` as sent.
    pub(crate) raw_host: Option<&'a str>,
    /// The request's host, normalized.
    pub(crate) host: Option<&'a str>,
    pub(crate) request_id: &'a HeaderValue,
    /// The request was routed by a rule without a host: its `Host` is whatever the client
    /// chose, so an `auth-url` naming `$host` must not be followed.
    pub(crate) catch_all: bool,
}

/// The auth answer's `Set-Cookie`s, for the response the client gets.
#[derive(Debug)]
pub(crate) struct AuthCookies {
    values: Vec<HeaderValue>,
    always: bool,
}

impl AuthCookies {
    /// Appends the cookies to a response with `status` (successful ones only, unless
    /// `auth-always-set-cookie`).
    pub(crate) fn apply(self, status: StatusCode, headers: &mut HeaderMap) {
        if self.always || COOKIE_STATUSES.contains(&status.as_u16()) {
            for value in self.values {
                headers.append(header::SET_COOKIE, value);
            }
        }
    }
}

/// Asks the auth service about `req` (or its cache). `Ok`: forward `req`, now carrying the
/// `auth-response-headers`, and put the cookies on its response; `Err`: the client's answer.
pub(crate) async fn authorize<B>(
    auth: &ExternalAuth,
    facts: &RequestFacts<'_>,
    req: &mut Request<B>,
) -> Result<Option<AuthCookies>, Response<ResponseBody>> {
    if req.headers().contains_key(LOOP_MARKER) {
        tracing::debug!(url = %auth.url.text, "an auth subrequest needs external auth itself: 500");
        return Err(plain(StatusCode::INTERNAL_SERVER_ERROR));
    }
    let request_uri = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let client_ip = request_client_ip(facts.table, facts.conn, req.headers());
    let vars = RequestVars {
        scheme: if facts.tls { "https" } else { "http" },
        http_host: facts.raw_host.unwrap_or_default(),
        host: facts.host.unwrap_or_default(),
        request_uri: &request_uri,
        remote_addr: client_ip,
        headers: req.headers(),
    };
    let url = if auth.url.names_request_host() && facts.catch_all {
        None
    } else {
        auth.url.for_request(&vars)
    };
    let Some(url) = url else {
        tracing::debug!(url = %auth.url.text, host = vars.http_host, "no auth-url for this request's host: 500");
        return Err(plain(StatusCode::INTERNAL_SERVER_ERROR));
    };
    let answer = answer(auth, &url, facts, &vars, req.method(), client_ip).await;
    let Some(answer) = answer else {
        return Err(plain(StatusCode::INTERNAL_SERVER_ERROR));
    };
    let cookies = AuthCookies {
        values: answer
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect(),
        always: auth.always_set_cookie,
    };
    match answer.status {
        200..=299 => {
            // nginx's `proxy_set_header <name> $upstream_http_<name>`: the auth answer's
            // value, or none at all (never the client's own).
            let headers = req.headers_mut();
            for name in &auth.response_headers {
                headers.remove(name);
                if let Some(value) = answer.headers.get(name) {
                    headers.insert(name.clone(), value.clone());
                }
            }
            Ok((!cookies.values.is_empty()).then_some(cookies))
        }
        401 => {
            if let Some(signin) = &auth.signin {
                let mut location = signin.url.expand(&vars);
                if let Some(append) = &signin.append {
                    location.push_str(append);
                    location.push_str(vars.scheme);
                    location.push_str("://");
                    location.push_str(vars.http_host);
                    crate::table::external_auth::escape_component(&request_uri, &mut location);
                }
                let mut response = plain(StatusCode::FOUND);
                match HeaderValue::from_str(&location) {
                    Ok(value) => {
                        response.headers_mut().insert(header::LOCATION, value);
                    }
                    Err(_) => return Err(plain(StatusCode::INTERNAL_SERVER_ERROR)),
                }
                // The sign-in location's `add_header Set-Cookie $auth_cookie` (a 302).
                cookies.apply(StatusCode::FOUND, response.headers_mut());
                return Err(response);
            }
            let mut response = plain(StatusCode::UNAUTHORIZED);
            for value in answer.headers.get_all(header::WWW_AUTHENTICATE) {
                response
                    .headers_mut()
                    .append(header::WWW_AUTHENTICATE, value.clone());
            }
            cookies.apply(StatusCode::UNAUTHORIZED, response.headers_mut());
            Err(response)
        }
        403 => {
            let mut response = plain(StatusCode::FORBIDDEN);
            cookies.apply(StatusCode::FORBIDDEN, response.headers_mut());
            Err(response)
        }
        status => {
            tracing::debug!(url = %auth.url.text, status, "auth-url answered neither 2xx, 401 nor 403: 500");
            Err(plain(StatusCode::INTERNAL_SERVER_ERROR))
        }
    }
}

/// The auth answer for the request: cached, or asked for (and cached when its status is).
/// `None` when the auth service gave none.
async fn answer(
    auth: &ExternalAuth,
    url: &AuthUrl,
    facts: &RequestFacts<'_>,
    vars: &RequestVars<'_>,
    method: &Method,
    client_ip: std::net::IpAddr,
) -> Option<CachedAnswer> {
    // nginx's keyspace is per server and location: the host, then the key.
    let key = auth
        .cache
        .as_ref()
        .map(|c| format!("{}\0{}", vars.host, c.key.expand(vars)));
    if let (Some(cache), Some(key)) = (&auth.cache, &key)
        && let Some(hit) = cache.store.get(key, Instant::now())
    {
        return Some(hit);
    }
    let request = subrequest(auth, url, facts, vars, method, client_ip);
    let timeouts = &facts.table.class.timeouts;
    let connect = facts.policy.timeouts.connect.unwrap_or(timeouts.connect);
    let response = facts
        .policy
        .timeouts
        .read
        .unwrap_or(timeouts.upstream_response);
    let (status, headers) = match ask(url, auth.method.clone(), request, connect, response).await {
        Ok(answer) => answer,
        Err(error) => {
            tracing::debug!(url = %url.text, %error, "auth-url gave no answer: 500");
            return None;
        }
    };
    let mut kept = HeaderMap::new();
    for name in auth
        .response_headers
        .iter()
        .chain([&header::SET_COOKIE, &header::WWW_AUTHENTICATE])
    {
        for value in headers.get_all(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    let answer = CachedAnswer {
        status: status.as_u16(),
        headers: kept,
    };
    if let (Some(cache), Some(key)) = (&auth.cache, key)
        && let Some(time) = cache.time_for(answer.status)
    {
        let now = Instant::now();
        cache.store.put(key, now + time, answer.clone(), now);
    }
    Some(answer)
}

/// The subrequest: the client's headers (but those of its body and connection), and the
/// ones ingress-nginx's auth location sets.
fn subrequest(
    auth: &ExternalAuth,
    url: &AuthUrl,
    facts: &RequestFacts<'_>,
    vars: &RequestVars<'_>,
    method: &Method,
    client_ip: std::net::IpAddr,
) -> HeaderMap {
    let mut headers = vars.headers.clone();
    for name in &NOT_PASSED {
        headers.remove(name);
    }
    // `proxy_set_header X-Forwarded-Proto ""`: not sent.
    headers.remove("x-forwarded-proto");
    let mut set = |name: &'static str, value: Option<HeaderValue>| {
        if let Some(value) = value {
            headers.insert(HeaderName::from_static(name), value);
        } else {
            headers.remove(name);
        }
    };
    let text = |s: String| HeaderValue::from_str(&s).ok();
    set("host", text(url.authority.clone()));
    set(
        "x-original-url",
        text(format!(
            "{}://{}{}",
            vars.scheme, vars.http_host, vars.request_uri
        )),
    );
    set("x-original-uri", text(vars.request_uri.to_string()));
    set("x-original-method", text(method.as_str().to_string()));
    set("x-scheme", text(vars.scheme.to_string()));
    set(
        "x-sent-from",
        Some(HeaderValue::from_static("nginx-ingress-controller")),
    );
    set("x-real-ip", text(client_ip.to_string()));
    set("x-forwarded-for", text(client_ip.to_string()));
    set("x-request-id", Some(facts.request_id.clone()));
    set(LOOP_MARKER, Some(HeaderValue::from_static("1")));
    set(
        "x-auth-request-redirect",
        auth.request_redirect
            .clone()
            .or_else(|| text(vars.request_uri.to_string())),
    );
    headers
}

/// Sends the subrequest (`method`, `headers`, no body) to `url`: connected within `connect`,
/// answered within `response`.
async fn ask(
    url: &AuthUrl,
    method: Method,
    headers: HeaderMap,
    connect: Duration,
    response: Duration,
) -> Result<(StatusCode, HeaderMap), AuthFault> {
    let mut request = Request::builder()
        .method(method)
        .uri(url.path_and_query.as_str())
        .body(Empty::<Bytes>::new())?;
    *request.headers_mut() = headers;
    let stream = tokio::time::timeout(connect, open(url))
        .await
        .map_err(|_| AuthFault::ConnectTimeout(connect))??;
    let exchange = async {
        if url.tls {
            let name = ServerName::try_from(url.host.clone())
                .map_err(|_| AuthFault::ServerName(url.host.clone()))?;
            let tls = tokio::time::timeout(
                connect,
                tokio_rustls::TlsConnector::from(tls_config()).connect(name, stream),
            )
            .await
            .map_err(|_| AuthFault::ConnectTimeout(connect))?
            .map_err(AuthFault::Tls)?;
            send(TokioIo::new(tls), request).await
        } else {
            send(TokioIo::new(stream), request).await
        }
    };
    tokio::time::timeout(response, exchange)
        .await
        .map_err(|_| AuthFault::ResponseTimeout(response))?
}

/// One HTTP/1.1 exchange on a new connection; the answer's body is not read (the connection
/// closes when the answer is dropped).
async fn send<IO>(
    io: IO,
    request: Request<Empty<Bytes>>,
) -> Result<(StatusCode, HeaderMap), AuthFault>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = sender.send_request(request).await;
    drop(sender);
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            driver.abort();
            return Err(error.into());
        }
    };
    let (parts, _body) = response.into_parts();
    driver.abort();
    Ok((parts.status, parts.headers))
}

/// A TCP connection to the auth service: its name resolved (a Service's DNS name in a
/// cluster), each address tried in turn.
async fn open(url: &AuthUrl) -> Result<TcpStream, AuthFault> {
    let addrs = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|source| AuthFault::Resolve {
            host: url.host.clone(),
            source,
        })?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(source) => last = Some(AuthFault::Connect { addr, source }),
        }
    }
    Err(last.unwrap_or_else(|| AuthFault::NoAddress {
        host: url.host.clone(),
    }))
}

/// The TLS client config of `https://` auth URLs: the webpki roots, as a re-encrypted
/// backend without a `backend-ca`. Built once.
fn tls_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            crate::tls::upstream::client_config(&crate::table::upstream::BackendTls {
                sni: String::new(),
                verify: true,
                ca: None,
                ca_secret: None,
            })
        })
        .clone()
}

/// The access-log and metrics label of a request the auth check answered: denied (401, 403,
/// the sign-in redirect) or failed closed (500: no usable answer from the auth service).
pub(crate) fn label(status: StatusCode) -> &'static str {
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        "auth_unavailable"
    } else {
        "auth_denied"
    }
}

/// A small plain-text answer of the proxy's own.
fn plain(status: StatusCode) -> Response<ResponseBody> {
    let body = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let length = body.len();
    let mut response = Response::new(own_response(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}
