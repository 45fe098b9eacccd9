//! Forwarding requests to upstreams: `X-Forwarded-*` / `Forwarded`, hop-by-hop hygiene
//! ([`super::hop_by_hop`]), endpoint choice with retry on connect failure, and websocket
//! upgrades. Connections come from [`super::pool`].
//!
//! Phases of [`forward`], in order:
//! 1. **rewrite**: strip hop-by-hop headers (keeping a websocket upgrade), add the forwarded
//!    headers (with `X-Real-IP`) and `X-Request-ID` (for our own exchange, written into the
//!    head rather than the map when neither the client nor the route has a say in them), make
//!    the request HTTP/1.1 in origin form with the client's `Host` (HTTP/2 upstreams,
//!    `backend-protocol: grpc`/`grpcs`: an absolute URI with the `Host` as authority, and
//!    `TE: trailers` kept; see `super::grpc`);
//! 2. **pick**: `balance::pick` over healthy, not-yet-tried endpoints (none → 503), or the
//!    session's endpoint under cookie affinity (`affinity::pick`);
//! 3. **send** on a pooled or new connection to the endpoint (plain, or TLS for re-encrypt):
//!    a request without a body, idempotent and not an upgrade, to an HTTP/1.1 pod (plain or
//!    TLS) by our own exchange ([`super::upstream_h1`]), any other by hyper's client; under one `upstream_response` deadline (the route's `proxy-read-timeout` when set; → 504),
//!    the route's `proxy-connect-timeout` for new connections, and its `proxy-send-timeout`
//!    while the pod takes the request body (`body_timeouts`). A TCP connect failure sent
//!    nothing: the endpoint is marked failed and another one is tried, up to [`MAX_TRIES`]
//!    endpoints. A request hyper hands back unsent (the pooled connection was closing) is sent
//!    again, on a new connection. A connection closed or reset before any response head (a reused
//!    keep-alive connection racing the upstream's idle close, or a pod dying while serving) is
//!    resent once, on a new pick and a new connection, when the method is idempotent and the
//!    request had no body. A pod killed during a rolling update fails all its pooled
//!    connections at once: the new connection's refused connect moves the request on to a
//!    live endpoint instead of trying the dead pod's next pooled connection. Any other failure
//!    is a 502 without retry: a TLS handshake failure is almost always configuration (the
//!    same for every pod), and after bytes were sent a retry could run a non-idempotent
//!    request twice;
//! 4. **respond**: strip hop-by-hop headers from the response; on `101 Switching Protocols`
//!    join the client and upstream connections with [`super::splice`] (ended by either side
//!    or after `timeouts.tunnel_idle` without a byte), a tunnel that outlives table swaps.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;

use super::body::{UpstreamBody, client_request, empty_request};
use super::body_timeouts::SendProgress;
use super::error::{ClientFault, ProxyError, UpstreamFault};
use super::hop_by_hop::{HopFields, strip_hop_by_hop};
use super::pool::{ConnectError, UpstreamConn};
use super::request_id::{X_REQUEST_ID, X_REQUEST_ID_NAME};
use super::upstream_h1::ExchangeError;
use super::{ConnInfo, ProxyContext};
use crate::health::InFlight;
use crate::table::policy::RoutePolicy;
use crate::table::route::Route;
use crate::table::upstream::Upstream;
use crate::table::{RouteTable, VirtualHost};
use crate::telemetry::access_log;

/// How many endpoints one request tries when connects fail.
const MAX_TRIES: usize = 3;

/// How many times one request is sent or resent at most, all causes together: it bounds the
/// resends of requests that were never written (always safe) and the one resend after a
/// connection closed before answering.
const MAX_ATTEMPTS: usize = MAX_TRIES + 3;

/// Whether `err` comes from a request body cut off at its `proxy-body-size` (the client's
/// fault: 413, not the upstream's).
fn body_over_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Whether `err` says the upstream closed or reset the connection before sending a response
/// head (hyper's "connection closed before message completed", or a reset/EOF while waiting).
fn closed_before_response(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(h) = e.downcast_ref::<hyper::Error>()
            && h.is_incomplete_message()
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<io::Error>()
            && matches!(
                io.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
            )
        {
            return true;
        }
        next = e.source();
    }
    false
}

// === headers ===

/// Facts for the forwarded headers of one request.
#[derive(Debug, Clone, Copy)]
struct ForwardedFacts<'a> {
    /// The client address (after any trusted PROXY protocol header).
    client: IpAddr,
    /// Whether the client is a proxy in `trusted_forwarded`: its headers are appended to, not
    /// replaced.
    trusted: bool,
    /// The class's `trusted_forwarded` CIDRs, for the walk that finds `X-Real-IP` behind
    /// trusted proxies.
    trusted_proxies: &'a [IpNet],
    /// `https` when we terminated TLS, `http` on :80.
    proto: &'static str,
    /// Our port the client connected to.
    port: u16,
    /// The host as the client sent it.
    host: Option<&'a str>,
}

/// Sets `X-Forwarded-For/-Proto/-Port/-Host`, RFC 7239 `Forwarded` and `X-Real-IP`.
/// `X-Forwarded-For` and `Forwarded` are appended to when the client is trusted, replaced
/// otherwise; the others are always replaced (they describe our hop). `X-Real-IP` is the
/// client's address, or behind trusted proxies the one they report ([`real_client_ip`]).
fn set_forwarded_headers(headers: &mut HeaderMap, facts: &ForwardedFacts<'_>) {
    // Read before X-Forwarded-For is rewritten: the trusted proxies' own list.
    let real_ip = if facts.trusted {
        real_client_ip(headers, facts.client, facts.trusted_proxies)
    } else {
        facts.client
    };
    let real_ip =
        HeaderValue::from_str(&real_ip.to_string()).expect("an IP address is a valid header value");
    let xff = append_list(
        headers,
        &X_FORWARDED_FOR,
        facts.trusted,
        &facts.client.to_string(),
    );

    let element = forwarded_element(facts.client, facts.proto, facts.host);
    let forwarded = append_list(headers, &header::FORWARDED, facts.trusted, &element);
    ForwardedFields {
        xff,
        real_ip,
        forwarded,
        proto: facts.proto,
        port: HeaderValue::from(facts.port),
        host: facts.host.and_then(|h| HeaderValue::from_str(h).ok()),
    }
    .insert_into(headers);
}

/// The client address behind trusted proxies, as ingress-nginx finds it for `X-Real-IP`
/// (`$remote_addr` after nginx's realip module with `real_ip_recursive on`, which it configures
/// under `use-forwarded-headers`): walking `X-Forwarded-For` from the right (the entry our peer
/// added last), the first address that is not itself a trusted proxy; the leftmost one when
/// every entry is trusted. An entry that is not an IP address ends the walk, keeping the
/// address found so far (nothing left of it can be vouched for). No usable entry: the peer.
fn real_client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let mut real = peer;
    let entries = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .rev()
        .map_while(|v| v.to_str().ok())
        .flat_map(|v| v.rsplit(','));
    for entry in entries {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            break;
        };
        real = ip;
        if !trusted.iter().any(|net| net.contains(&ip)) {
            break;
        }
    }
    real
}

/// The real client address of a request, the one access control judges (allow and deny
/// lists, rate limits): behind a trusted proxy (the class's `trustedForwardedCidrs`) the
/// address its `X-Forwarded-For` reports ([`real_client_ip`], as `X-Real-IP`); else the
/// connection's client (the PROXY protocol source when one was accepted from a trusted peer,
/// the socket peer otherwise). The one implementation: every check calls this. Canonical: an
/// IPv4 client of a dual-stack listener (`::ffff:a.b.c.d`) is `a.b.c.d`, so IPv4 CIDRs match it.
pub(super) fn request_client_ip(
    table: &RouteTable,
    conn: &ConnInfo,
    headers: &HeaderMap,
) -> IpAddr {
    let peer = conn.client.ip().to_canonical();
    let proxies = &table.class.trusted_forwarded;
    if proxies.iter().any(|net| net.contains(&peer)) {
        real_client_ip(headers, peer, proxies).to_canonical()
    } else {
        peer
    }
}

// The names of the forwarded fields, spelled once: as `HeaderName`s for the map, as
// strings for the head our own exchange writes and for matching. The `HeaderName`s are built
// at compile time: `HeaderName::from_static` outside a const context validates the name again
// on every call, and these are written on every request.
const X_FORWARDED_FOR_NAME: &str = "x-forwarded-for";
const X_REAL_IP_NAME: &str = "x-real-ip";
const FORWARDED_NAME: &str = "forwarded";
const X_FORWARDED_PROTO_NAME: &str = "x-forwarded-proto";
const X_FORWARDED_PORT_NAME: &str = "x-forwarded-port";
const X_FORWARDED_HOST_NAME: &str = "x-forwarded-host";
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static(X_FORWARDED_FOR_NAME);
const X_REAL_IP: HeaderName = HeaderName::from_static(X_REAL_IP_NAME);
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static(X_FORWARDED_PROTO_NAME);
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static(X_FORWARDED_PORT_NAME);
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static(X_FORWARDED_HOST_NAME);

/// Whether `name` is one of the six fields [`ForwardedFields`] sets.
fn is_forwarded_name(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        X_FORWARDED_FOR_NAME
            | X_REAL_IP_NAME
            | FORWARDED_NAME
            | X_FORWARDED_PROTO_NAME
            | X_FORWARDED_PORT_NAME
            | X_FORWARDED_HOST_NAME
    )
}

/// The fields a forwarded request gains: the six forwarded headers and `X-Request-ID`.
const ADDED_FIELDS: usize = 7;

/// The final forwarded values of one request: the ones describing our hop replace whatever
/// the client sent; no `X-Forwarded-Host` when there is no usable host.
struct ForwardedFields {
    xff: HeaderValue,
    real_ip: HeaderValue,
    forwarded: HeaderValue,
    proto: &'static str,
    port: HeaderValue,
    host: Option<HeaderValue>,
}

impl ForwardedFields {
    /// Sets them on `headers`, replacing any field of their names.
    fn insert_into(self, headers: &mut HeaderMap) {
        headers.insert(X_FORWARDED_FOR, self.xff);
        headers.insert(X_REAL_IP, self.real_ip);
        headers.insert(header::FORWARDED, self.forwarded);
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(self.proto));
        headers.insert(X_FORWARDED_PORT, self.port);
        match self.host {
            Some(v) => {
                headers.insert(X_FORWARDED_HOST, v);
            }
            None => {
                headers.remove(X_FORWARDED_HOST);
            }
        }
    }

    /// Adds them to a head written without the map (`upstream_h1`), in the order
    /// [`Self::insert_into`] sets them.
    fn add_lines<'a>(&'a self, lines: &mut HeadLines<'a>) {
        lines.add(X_FORWARDED_FOR_NAME, self.xff.as_bytes());
        lines.add(X_REAL_IP_NAME, self.real_ip.as_bytes());
        lines.add(FORWARDED_NAME, self.forwarded.as_bytes());
        lines.add(X_FORWARDED_PROTO_NAME, self.proto.as_bytes());
        lines.add(X_FORWARDED_PORT_NAME, self.port.as_bytes());
        if let Some(host) = &self.host {
            lines.add(X_FORWARDED_HOST_NAME, host.as_bytes());
        }
    }
}

/// The fields our own exchange writes into the upstream head after the map's
/// (`upstream_h1::Conn::send`'s `extra`): some of the [`ADDED_FIELDS`], borrowed from values
/// that live as long as the request.
struct HeadLines<'a> {
    lines: [(&'static str, &'a [u8]); ADDED_FIELDS],
    len: usize,
}

impl<'a> HeadLines<'a> {
    fn new() -> Self {
        HeadLines {
            lines: [("", &[]); ADDED_FIELDS],
            len: 0,
        }
    }

    /// Adds `name: value` (there is room for every added field, each added once).
    fn add(&mut self, name: &'static str, value: &'a [u8]) {
        if let Some(line) = self.lines.get_mut(self.len) {
            *line = (name, value);
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[(&'static str, &'a [u8])] {
        &self.lines[..self.len]
    }
}

/// Our `Forwarded` element: `for=…;proto=…[;host=…]`.
fn forwarded_element(client: IpAddr, proto: &str, host: Option<&str>) -> String {
    let mut element = format!("for={};proto={proto}", forwarded_node(client));
    if let Some(host) = host {
        element.push_str(";host=");
        element.push_str(&forwarded_value(host));
    }
    element
}

/// The forwarded headers of one client connection. Address, scheme and port are the same for
/// every request of a connection, so their header values are made once; the host-dependent
/// ones are kept for the latest host, which a keep-alive client rarely changes. Whether the
/// client is a trusted proxy is the live table's call, made per request.
pub(crate) struct ConnForwarded {
    client: IpAddr,
    proto: &'static str,
    port: u16,
    xff: Option<HeaderValue>,
    port_value: HeaderValue,
    /// The latest host with its `Forwarded` and `X-Forwarded-Host` values.
    by_host: Mutex<Option<HostValues>>,
}

struct HostValues {
    host: Option<Box<str>>,
    forwarded: HeaderValue,
    forwarded_host: Option<HeaderValue>,
}

impl ConnForwarded {
    pub(crate) fn new(ctx: &ProxyContext, conn: &ConnInfo) -> Self {
        let client = conn.client.ip();
        let port = ctx.client_facing_port(conn);
        ConnForwarded {
            client,
            proto: if conn.tls.is_some() { "https" } else { "http" },
            port,
            xff: HeaderValue::from_str(&client.to_string()).ok(),
            port_value: HeaderValue::from(port),
            by_host: Mutex::new(None),
        }
    }

    /// Whether this connection's client is in `table`'s `trusted_forwarded` CIDRs.
    fn trusted_in(&self, table: &RouteTable) -> bool {
        table
            .class
            .trusted_forwarded
            .iter()
            .any(|net| net.contains(&self.client))
    }

    /// Sets the forwarded headers of a request for `host` (as the client sent it), from a
    /// client that is (`trusted`) or is not a trusted proxy (`trusted_proxies`: the class's
    /// CIDRs). The same result as [`set_forwarded_headers`], without formatting anything again
    /// for a repeated host.
    fn apply(
        &self,
        headers: &mut HeaderMap,
        host: Option<&str>,
        trusted: bool,
        trusted_proxies: &[IpNet],
    ) {
        match self.untrusted_fields(host, trusted) {
            Some(fields) => fields.insert_into(headers),
            None => {
                let facts = ForwardedFacts {
                    client: self.client,
                    trusted,
                    trusted_proxies,
                    proto: self.proto,
                    port: self.port,
                    host,
                };
                set_forwarded_headers(headers, &facts);
            }
        }
    }

    /// The forwarded fields of a request for `host` from a client that is not a trusted
    /// proxy, from the connection's values: they do not depend on the request's own fields,
    /// which they replace. `None` for a trusted client (its values are appended to: that
    /// depends on the request) or a host that makes no `Forwarded` value.
    fn untrusted_fields(&self, host: Option<&str>, trusted: bool) -> Option<ForwardedFields> {
        let xff = self.xff.clone().filter(|_| !trusted)?;
        let mut cached = self.by_host.lock().unwrap_or_else(PoisonError::into_inner);
        if cached.as_ref().is_none_or(|c| c.host.as_deref() != host) {
            let element = forwarded_element(self.client, self.proto, host);
            let forwarded = HeaderValue::from_str(&element).ok()?;
            *cached = Some(HostValues {
                host: host.map(Into::into),
                forwarded,
                forwarded_host: host.and_then(|h| HeaderValue::from_str(h).ok()),
            });
        }
        let values = cached.as_ref()?;
        Some(ForwardedFields {
            // An untrusted client is its own real address: the X-Forwarded-For value is it.
            real_ip: xff.clone(),
            xff,
            forwarded: values.forwarded.clone(),
            proto: self.proto,
            port: self.port_value.clone(),
            host: values.forwarded_host.clone(),
        })
    }
}

/// Whether anything after the fields we add could set or remove one of those `named` on this
/// route: its `request-headers`, or a Gateway API request header modifier (`header_edits`).
/// Then they go into the map first, so that those edits win as they always have.
fn route_edits(policy: &RoutePolicy, named: impl Fn(&HeaderName) -> bool) -> bool {
    policy.request_headers.0.iter().any(|(name, _)| named(name))
        || policy.header_edits.as_ref().is_some_and(|edits| {
            edits
                .request_add
                .iter()
                .map(|(name, _)| name)
                .chain(&edits.request_remove)
                .any(&named)
        })
}

/// Which of the fields we add the client sent itself: any forwarded field, `X-Request-ID`.
/// One pass over the names (a keep-alive client sends a handful).
fn client_sent_added(headers: &HeaderMap) -> (bool, bool) {
    headers
        .keys()
        .fold((false, false), |(forwarded, id), name| {
            (
                forwarded || is_forwarded_name(name),
                id || *name == X_REQUEST_ID,
            )
        })
}

/// `existing, ours` when trusted (all existing lines joined), else `ours`.
fn append_list(headers: &HeaderMap, name: &HeaderName, trusted: bool, ours: &str) -> HeaderValue {
    let existing: Vec<&str> = if trusted {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    let joined = if existing.is_empty() {
        ours.to_string()
    } else {
        format!("{}, {ours}", existing.join(", "))
    };
    HeaderValue::from_str(&joined).unwrap_or_else(|_| {
        HeaderValue::from_str(ours).expect("an IP address and a token are valid header values")
    })
}

/// A `Forwarded` node: IPv4 bare, IPv6 quoted and bracketed (RFC 7239 §6).
fn forwarded_node(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("\"[{v6}]\""),
    }
}

/// A `Forwarded` parameter value: a token as is, anything else as a quoted-string.
fn forwarded_value(value: &str) -> String {
    let token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        value.to_string()
    } else {
        let escaped = value.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    }
}

// === forward ===

/// Everything [`forward`] needs about where a request came from and where it goes.
pub(crate) struct Forward<'a> {
    pub(crate) ctx: &'a ProxyContext,
    pub(crate) table: &'a RouteTable,
    pub(crate) vhost: &'a VirtualHost,
    pub(crate) upstream: &'a Upstream,
    pub(crate) conn: &'a ConnInfo,
    /// The host as the client sent it (`Host` header or URI authority).
    pub(crate) raw_host: Option<&'a str>,
    /// The connection's forwarded-header values.
    pub(crate) forwarded: &'a ConnForwarded,
    /// The request's `X-Request-ID` ([`super::request_id::of`]), sent to the pod.
    pub(crate) request_id: &'a HeaderValue,
    /// The route's `proxy-body-size`: the body stream is cut off past it.
    pub(crate) max_body: Option<u64>,
    /// The route's rewrites, headers and the rest of its per-Ingress handling.
    pub(crate) policy: &'a RoutePolicy,
    /// The route routing matched (`None`: the host's default backend): its path is what
    /// `rewrite-target` captures from and the session cookie's default `Path`.
    pub(crate) route: Option<&'a Route>,
}

/// An upstream's answer, ready to stream back to the client.
pub(crate) struct UpstreamResponse {
    /// Hop-by-hop headers already stripped.
    pub(crate) response: Response<UpstreamBody>,
    /// The endpoint that answered.
    pub(crate) endpoint: SocketAddr,
    /// From sending the request to the response head.
    pub(crate) upstream_time: Duration,
    /// Least-request accounting; hold it until the response body is done. `None` after an
    /// upgrade (the tunnel task holds it).
    pub(crate) in_flight: Option<InFlight>,
    /// The upstream connection; release it to the pool once the response body has been read
    /// to its end. `None` after an upgrade.
    pub(crate) conn: Option<UpstreamConn>,
}

/// Sends `req` to an endpoint of `f.upstream` and returns its response head (see the module
/// docs for the phases).
pub(crate) async fn forward(
    f: &Forward<'_>,
    mut req: Request<Incoming>,
) -> Result<UpstreamResponse, ProxyError> {
    let timeouts = f.table.class.timeouts;
    let deadline = tokio::time::Instant::now() + response_timeout(f);
    let connect_timeout = f.policy.timeouts.connect.unwrap_or(timeouts.connect);
    let service = &f.upstream.service;

    // 1. rewrite
    let hop = HopFields::scan(req.headers());
    let upgrade = match req.version() {
        Version::HTTP_11 => hop.websocket_upgrade(),
        _ => None,
    };
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    // Room for the fields added below, made once: the map hyper parsed is sized for the
    // client's fields and would otherwise grow (and rehash) as they are inserted. A map at
    // its size limit is left as it is; the inserts then grow it as far as they can.
    let _ = parts.headers.try_reserve(ADDED_FIELDS);
    let from_h2 = parts.version == Version::HTTP_2;
    // gRPC needs `TE: trailers` at an HTTP/2 upstream: noted before the hop-by-hop strip.
    let te_trailers = hop.te_trailers();
    hop.strip(&mut parts.headers);
    if let Some(upgrade) = &upgrade {
        parts.headers.insert(header::UPGRADE, upgrade.clone());
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if from_h2 {
        join_cookies(&mut parts.headers);
    }
    // Sticky sessions: the cookie is read before the headers move (`proxy::affinity`).
    let mut session = f
        .policy
        .affinity
        .as_ref()
        .map(|a| super::affinity::Session::read(a, &parts.headers, f.upstream));
    if let Some(host) = f.raw_host
        && (parts.uri.authority().is_some() || !parts.headers.contains_key(header::HOST))
        && let Ok(value) = HeaderValue::from_str(host)
    {
        parts.headers.insert(header::HOST, value);
    }
    // A bodyless idempotent request can be sent again when its connection closes before any
    // response head; anything else only when hyper hands the request back unsent.
    let resendable = body.is_end_stream() && parts.method.is_idempotent();
    let connector = f.ctx.clients.connector_for(&f.upstream.protocol);
    // The usual request (no body, idempotent, no upgrade) to an HTTP/1.1 pod, plain or TLS,
    // goes by our own exchange (`upstream_h1`); everything else by hyper's client.
    let own_exchange = resendable && upgrade.is_none() && connector.speaks_http1();
    // Our exchange writes the fields we add into the head itself, not through the map, when
    // nothing else has a say in them: the client sent none of their names (which they
    // replace) and the route edits none (its edits win). Decided apart for the forwarded
    // fields and for `X-Request-ID`.
    let (client_forwarded, client_request_id) = if own_exchange {
        client_sent_added(&parts.headers)
    } else {
        // hyper's client writes the map: everything goes into it.
        (true, true)
    };
    let mut forwarded_in_head = None;
    if f.vhost.forwarded_headers {
        let trusted = f.forwarded.trusted_in(f.table);
        if !client_forwarded && !route_edits(f.policy, is_forwarded_name) {
            forwarded_in_head = f.forwarded.untrusted_fields(f.raw_host, trusted);
        }
        if forwarded_in_head.is_none() {
            let proxies = &f.table.class.trusted_forwarded;
            f.forwarded
                .apply(&mut parts.headers, f.raw_host, trusted, proxies);
        }
    }
    let request_id_in_head =
        !client_request_id && !route_edits(f.policy, |name| *name == X_REQUEST_ID);
    if !request_id_in_head {
        // After the hop-by-hop strip: a client's `Connection: x-request-id` cannot remove it.
        parts.headers.insert(X_REQUEST_ID, f.request_id.clone());
    }
    // The route's `request-headers` last: they replace whatever came before (never `Host`).
    f.policy.request_headers.apply(&mut parts.headers);
    if let Some(edits) = &f.policy.header_edits {
        edits.apply_to_request(&mut parts.headers);
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // `rewrite-target`, `upstream-vhost`, `x-forwarded-prefix` (after the forwarded headers).
    let path_and_query = super::rewrite::apply(
        &f.policy.upstream_request,
        f.route.map(|r| &r.path),
        &mut parts.headers,
        path_and_query,
    );
    let method = parts.method;
    let mut headers = parts.headers;
    // The per-endpoint `bytes_to_endpoint`: the declared body length (a chunked body counts 0).
    let request_body_len = body.size_hint().exact().unwrap_or(0);
    let mut body = Some(client_request(body, f.max_body));
    // `proxy-send-timeout`: the pod must keep taking the request body.
    let send_watch = f.policy.timeouts.send.map(|t| (t, SendProgress::new()));
    if let (Some(body), Some((_, progress))) = (body.as_mut(), &send_watch) {
        body.watch(Arc::clone(progress));
    }
    // The lines borrow the fields' values; both live for the whole request.
    let mut head_lines = HeadLines::new();
    if let Some(fields) = &forwarded_in_head {
        fields.add_lines(&mut head_lines);
    }
    if request_id_in_head {
        head_lines.add(X_REQUEST_ID_NAME, f.request_id.as_bytes());
    }
    let extra_lines = head_lines.as_slice();
    // HTTP/1.1 requires a Host; a client that sent none (HTTP/1.0) gets the endpoint's.
    let host_missing = !headers.contains_key(header::HOST);

    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_error = None;
    let mut resent = false;
    let mut fresh = false;
    let mut attempts = 0;
    while tried.len() < MAX_TRIES && attempts < MAX_ATTEMPTS {
        attempts += 1;
        // 2. pick
        let Some(endpoint) =
            super::affinity::pick(session.as_mut(), f.upstream, &f.ctx.health, &tried)
        else {
            break;
        };
        let in_flight = f.ctx.health.begin_request(endpoint);
        if host_missing && let Ok(value) = HeaderValue::from_str(&endpoint.to_string()) {
            headers.insert(header::HOST, value);
        }

        // 3. send
        let (mut response, conn, upstream_time) = if own_exchange {
            let checkout = f
                .ctx
                .clients
                .checkout_own(&connector, endpoint, connect_timeout, fresh);
            let conn = match checkout.await {
                Ok(conn) => conn,
                Err(err) => {
                    last_error = Some(checkout_failed(f, service, endpoint, err)?);
                    tried.push(endpoint);
                    continue;
                }
            };
            let sent = Instant::now();
            // On a response, the map holds its fields (see `upstream_h1::Conn::send`).
            let exchange = conn.send(
                &method,
                &path_and_query,
                &mut headers,
                extra_lines,
                deadline,
            );
            match exchange.await {
                Err(ExchangeError::TimedOut) => return Err(timed_out(f, endpoint)),
                Ok(response) => (response.map(UpstreamBody::Own), None, sent.elapsed()),
                Err(err) if err.unanswered() && !resent => {
                    // As below: closed before any response, sent again once on a new pick
                    // and a new connection. The headers are still ours: nothing to copy.
                    resent = true;
                    fresh = true;
                    continue;
                }
                Err(err) => {
                    return Err(ProxyError::upstream(
                        service,
                        Some(endpoint),
                        UpstreamFault::Reset(Box::new(err)),
                    ));
                }
            }
        } else {
            let checkout = f
                .ctx
                .clients
                .checkout(&connector, endpoint, connect_timeout, fresh);
            let mut conn = match checkout.await {
                Ok(conn) => conn,
                // Nothing was sent: the body is still ours, another endpoint may take it.
                Err(err) => {
                    last_error = Some(checkout_failed(f, service, endpoint, err)?);
                    tried.push(endpoint);
                    continue;
                }
            };
            let keep_copy = resendable && !resent;
            let mut upstream_req = Request::new(body.take().unwrap_or_else(empty_request));
            *upstream_req.method_mut() = method.clone();
            *upstream_req.uri_mut() = Uri::from(path_and_query.clone());
            *upstream_req.version_mut() = Version::HTTP_11;
            *upstream_req.headers_mut() = if keep_copy {
                headers.clone()
            } else {
                std::mem::take(&mut headers)
            };
            if conn.sender.is_http2() {
                let tls = f.upstream.protocol.backend_tls().is_some();
                super::grpc::to_http2(&mut upstream_req, tls, te_trailers);
            }

            let sent = Instant::now();
            if let Some((_, progress)) = &send_watch {
                progress.restart();
            }
            let request = conn.sender.try_send_request(upstream_req);
            let stalled = async {
                match &send_watch {
                    Some((timeout, progress)) => progress.stalled(*timeout).await,
                    None => std::future::pending().await,
                }
            };
            let answer = tokio::select! {
                answer = tokio::time::timeout_at(deadline, request) => answer,
                () = stalled => return Err(send_timed_out(f, endpoint)),
            };
            match answer {
                Err(_) => return Err(timed_out(f, endpoint)),
                Ok(Ok(response)) => (
                    response.map(UpstreamBody::Hyper),
                    Some(conn),
                    sent.elapsed(),
                ),
                Ok(Err(mut err)) => {
                    if let Some(unsent) = err.take_message() {
                        // hyper had not written it: the connection was closing as we took
                        // it. Nothing reached the upstream, so sending it again is always
                        // safe.
                        fresh = true;
                        let (unsent_parts, unsent_body) = unsent.into_parts();
                        headers = unsent_parts.headers;
                        super::grpc::restore_host(&mut headers, &unsent_parts.uri);
                        body = Some(unsent_body);
                        continue;
                    }
                    let err = err.into_error();
                    if let Some(limit) = f.max_body.filter(|_| body_over_limit(&err)) {
                        return Err(ClientFault::BodyTooLarge { limit }.into());
                    }
                    if keep_copy && closed_before_response(&err) {
                        // Closed before any response head: a reused connection racing the
                        // upstream's idle close, or a pod that died while serving. Send it
                        // again once, on a new pick and a new connection (the body was
                        // empty, so nothing is lost).
                        resent = true;
                        fresh = true;
                        continue;
                    }
                    return Err(ProxyError::upstream(
                        service,
                        Some(endpoint),
                        UpstreamFault::Reset(Box::new(err)),
                    ));
                }
            }
        };
        in_flight.answered(response.status().as_u16(), request_body_len);

        // 4. respond
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let (Some(client_upgrade), Some(requested)) = (client_upgrade, upgrade) else {
                return Err(ProxyError::upstream(
                    service,
                    Some(endpoint),
                    UpstreamFault::Reset(
                        "101 Switching Protocols to a request that asked for no upgrade".into(),
                    ),
                ));
            };
            let agreed = response
                .headers()
                .get(header::UPGRADE)
                .cloned()
                .unwrap_or(requested);
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let headers = response.headers_mut();
            strip_hop_by_hop(headers);
            headers.insert(header::UPGRADE, agreed);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            tokio::spawn(tunnel(
                client_upgrade,
                upstream_upgrade,
                in_flight,
                f.conn.client,
                endpoint,
                timeouts.tunnel_idle,
            ));
            // The connection now belongs to the tunnel; it never goes back to the pool.
            return Ok(UpstreamResponse {
                response,
                endpoint,
                upstream_time,
                in_flight: None,
                conn: None,
            });
        }
        if !own_exchange {
            // Our exchange dropped them as it read the head.
            strip_hop_by_hop(response.headers_mut());
        }
        if let Some(session) = &session {
            let https = f.conn.tls.is_some();
            let location = super::affinity::location(f.route);
            session.set_cookie(response.headers_mut(), endpoint, location, https);
        }
        return Ok(UpstreamResponse {
            response,
            endpoint,
            upstream_time,
            in_flight: Some(in_flight),
            conn,
        });
    }
    Err(last_error
        .unwrap_or_else(|| ProxyError::upstream(service, None, UpstreamFault::NoEndpoint)))
}

/// A connection to `endpoint` of `service` that could not be opened; nothing was sent. A TCP
/// failure marks the endpoint failed and lets the request go to another: `Ok` with the error
/// to answer if none does. A TLS failure (the pod's certificate, its name, the handshake) is
/// the answer at once: `Err`, for the caller's `?`.
pub(super) fn checkout_failed(
    f: &Forward<'_>,
    service: impl ToString,
    endpoint: SocketAddr,
    err: ConnectError,
) -> Result<ProxyError, ProxyError> {
    if !err.is_tcp() {
        return Err(ProxyError::upstream(
            service,
            Some(endpoint),
            UpstreamFault::Tls(Box::new(err)),
        ));
    }
    f.ctx.health.mark_failed(endpoint);
    Ok(ProxyError::upstream(
        service,
        Some(endpoint),
        UpstreamFault::Connect(Box::new(err)),
    ))
}

fn timed_out(f: &Forward<'_>, endpoint: SocketAddr) -> ProxyError {
    ProxyError::upstream(
        &f.upstream.service,
        Some(endpoint),
        UpstreamFault::Timeout(response_timeout(f)),
    )
}

/// The pod stopped taking the request body for the route's `proxy-send-timeout`.
fn send_timed_out(f: &Forward<'_>, endpoint: SocketAddr) -> ProxyError {
    ProxyError::upstream(
        &f.upstream.service,
        Some(endpoint),
        UpstreamFault::Timeout(f.policy.timeouts.send.unwrap_or_default()),
    )
}

/// How long the pod may take to send the response head: the route's `proxy-read-timeout`,
/// else the class's `timeouts.upstreamResponse`.
fn response_timeout(f: &Forward<'_>) -> Duration {
    f.policy
        .timeouts
        .read
        .unwrap_or(f.table.class.timeouts.upstream_response)
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 wants one (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().count() < 2 {
        return;
    }
    let joined: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&joined.join(&b"; "[..])) {
        headers.insert(header::COOKIE, value);
    }
}

/// Joins an upgraded client connection with the upgraded upstream connection, by the same
/// rules as a pass-through stream (half-close; `idle` without a byte either way ends both),
/// then logs it as one TCP line.
async fn tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    in_flight: InFlight,
    client_addr: SocketAddr,
    endpoint: SocketAddr,
    idle: Duration,
) {
    use super::splice::{End, splice};

    let started = Instant::now();
    let (client, upstream) = tokio::join!(client, upstream);
    let (termination, from_client, to_client) = match (client, upstream) {
        (Ok(client), Ok(upstream)) => {
            let spliced = splice(
                tokio::io::split(TokioIo::new(client)),
                tokio::io::split(TokioIo::new(upstream)),
                idle,
            )
            .await;
            let termination = match spliced.end {
                End::Closed => "closed",
                // Upgraded tunnels have always logged one label for a failure on either side.
                End::ClientReset | End::UpstreamReset => "reset",
                End::IdleTimeout => "idle-timeout",
            };
            (termination, spliced.from_client, spliced.to_client)
        }
        (Err(_), _) => ("client-upgrade-failed", 0, 0),
        (_, Err(_)) => ("upstream-upgrade-failed", 0, 0),
    };
    // Least-request accounting ends with the tunnel; its bytes count for the endpoint.
    in_flight.finish(from_client, to_client);
    access_log::tcp(&access_log::TcpLog {
        client: client_addr,
        sni: None,
        service: None,
        upstream: Some(endpoint),
        bytes_in: from_client,
        bytes_out: to_client,
        duration: started.elapsed(),
        termination,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_connection_values_equal_the_per_request_ones() {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let ctx = ProxyContext::new(
            crate::health::Health::new(),
            std::sync::Arc::new(crate::telemetry::metrics::Metrics::new()),
            crate::tls::self_signed::generate().expect("fallback certificate"),
            443,
            rx,
        );
        drop(tx);
        let table = RouteTable::default();
        for client in ["192.0.2.7:5555", "[2001:db8::1]:443"] {
            let conn = ConnInfo {
                client: client.parse().unwrap(),
                local: "127.0.0.1:8080".parse().unwrap(),
                tls: None,
            };
            let cached = ConnForwarded::new(&ctx, &conn);
            for host in [
                Some("a.example"),
                Some("b.example:8080"),
                None,
                Some("a.example"),
            ] {
                let mut expected = HeaderMap::new();
                expected.insert("x-forwarded-for", HeaderValue::from_static("10.9.9.9"));
                let mut got = expected.clone();
                let facts = ForwardedFacts {
                    client: conn.client.ip(),
                    trusted: false,
                    trusted_proxies: &[],
                    proto: "http",
                    port: 8080,
                    host,
                };
                set_forwarded_headers(&mut expected, &facts);
                cached.apply(&mut got, host, cached.trusted_in(&table), &[]);
                assert_eq!(got, expected, "client {client} host {host:?}");

                // The lines our exchange writes instead: the same fields, in the same order,
                // as those set on a map without any, and only names the check knows.
                let mut alone = HeaderMap::new();
                set_forwarded_headers(&mut alone, &facts);
                let from_map: Vec<(&str, &[u8])> = alone
                    .iter()
                    .map(|(name, value)| (name.as_str(), value.as_bytes()))
                    .collect();
                let fields = cached.untrusted_fields(host, false).unwrap();
                let mut lines = HeadLines::new();
                fields.add_lines(&mut lines);
                assert_eq!(
                    lines.as_slice(),
                    &from_map[..],
                    "client {client} host {host:?}"
                );
                assert!(alone.keys().all(is_forwarded_name));
                assert!(cached.untrusted_fields(host, true).is_none());
            }
        }
    }

    #[test]
    fn forwarded_quotes_ipv6_and_hosts_with_ports() {
        let mut h = HeaderMap::new();
        let facts = ForwardedFacts {
            client: "2001:db8::1".parse().unwrap(),
            trusted: false,
            trusted_proxies: &[],
            proto: "https",
            port: 443,
            host: Some("example.com:8443"),
        };
        set_forwarded_headers(&mut h, &facts);
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";proto=https;host=\"example.com:8443\""
        );
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-real-ip"], "2001:db8::1");
    }

    #[test]
    fn x_real_ip_is_the_client_or_what_trusted_proxies_report() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let facts = |client: &str, trusted_flag: bool| ForwardedFacts {
            client: client.parse().unwrap(),
            trusted: trusted_flag,
            trusted_proxies: &trusted,
            proto: "https",
            port: 443,
            host: None,
        };
        // An untrusted client's spoofed X-Real-IP and X-Forwarded-For are replaced.
        let mut h = HeaderMap::new();
        h.insert("x-real-ip", HeaderValue::from_static("1.1.1.1"));
        h.insert("x-forwarded-for", HeaderValue::from_static("1.1.1.1"));
        set_forwarded_headers(&mut h, &facts("192.0.2.7", false));
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        // Behind trusted proxies: the rightmost address that is not one of them.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.1, 203.0.113.9, 10.1.1.1"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("10.2.2.2"));
        set_forwarded_headers(&mut h, &facts("10.0.0.5", true));
        assert_eq!(h["x-real-ip"], "203.0.113.9");
        assert_eq!(
            h["x-forwarded-for"],
            "198.51.100.1, 203.0.113.9, 10.1.1.1, 10.2.2.2, 10.0.0.5"
        );
        // Every entry trusted: the leftmost; garbage stops the walk; none: the peer.
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.3.3.3, 10.4.4.4"),
        );
        assert_eq!(real_client_ip(&h, peer, &trusted).to_string(), "10.3.3.3");
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.9, junk, 10.4.4.4"),
        );
        assert_eq!(real_client_ip(&h, peer, &trusted).to_string(), "10.4.4.4");
        assert_eq!(real_client_ip(&HeaderMap::new(), peer, &trusted), peer);
    }
}
