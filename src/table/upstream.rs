//! Upstreams: the pod endpoints behind one Service port, and how to talk to them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use rustls_pki_types::CertificateDer;
use serde::Serialize;

/// The Service port a backend names: `spec.rules[].http.paths[].backend.service.port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum ServicePortRef {
    Number(i32),
    Name(String),
}

/// `namespace/name:port` of a backend Service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub port: ServicePortRef,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.port {
            ServicePortRef::Number(n) => write!(f, "{}/{}:{}", self.namespace, self.name, n),
            ServicePortRef::Name(n) => write!(f, "{}/{}:{}", self.namespace, self.name, n),
        }
    }
}

/// Annotation `portcullis.io/load-balance`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalance {
    #[default]
    RoundRobin,
    LeastRequest,
    Random,
}

/// Annotation `portcullis.io/health-check`: how endpoints are actively probed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthProbe {
    /// `METHOD path` with `Host: host`; 2xx/3xx is healthy (the article's `httpchk`).
    Http {
        method: String,
        path: String,
        host: String,
    },
    /// A TLS handshake with a real ClientHello (the article's `ssl-hello-chk`).
    Tls { sni: String },
    /// A TCP connect.
    Tcp,
    /// No active check: every endpoint is considered up (passive failures still count).
    None,
}

/// Active health-check settings of one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct HealthCheck {
    pub probe: HealthProbe,
    #[serde(with = "duration_secs")]
    pub interval: Duration,
}

/// Annotation `portcullis.io/proxy-protocol`: header sent to pass-through/TCP backends.
pub use crate::wire::proxy_protocol::ProxyProtocol;

/// TLS towards the pod (re-encrypt mode).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct BackendTls {
    /// Server name sent in the ClientHello and verified (`backend-sni`, default: rule host).
    pub sni: String,
    /// Verify the pod's certificate (`backend-verify`). With no `ca`, the system/webpki roots.
    pub verify: bool,
    /// Trust anchors from the `backend-ca` Secret's `ca.crt`, DER.
    #[serde(skip)]
    pub ca: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// Where `ca` came from, for display.
    pub ca_secret: Option<String>,
}

/// How requests reach an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum UpstreamProtocol {
    /// Plain HTTP/1.1 (terminate mode, and :80).
    Http,
    /// HTTP/1.1 over a new TLS connection (re-encrypt mode).
    Https(BackendTls),
    /// Raw bytes (pass-through): the ClientHello is replayed, then both directions spliced.
    Tcp,
    /// HTTP/2 over cleartext with prior knowledge (`backend-protocol: grpc`): gRPC servers
    /// speak only HTTP/2, and one connection carries many requests at once.
    H2c,
    /// HTTP/2 over TLS, ALPN `h2` (`backend-protocol: grpcs`, re-encrypt mode).
    H2(BackendTls),
}

impl UpstreamProtocol {
    /// Whether requests reach the pod over HTTP/2.
    pub fn is_http2(&self) -> bool {
        matches!(self, UpstreamProtocol::H2c | UpstreamProtocol::H2(_))
    }

    /// The TLS settings towards the pod, for either HTTP version.
    pub fn backend_tls(&self) -> Option<&BackendTls> {
        match self {
            UpstreamProtocol::Https(tls) | UpstreamProtocol::H2(tls) => Some(tls),
            UpstreamProtocol::Http | UpstreamProtocol::Tcp | UpstreamProtocol::H2c => None,
        }
    }
}

/// The pod endpoints behind one Service port and the policy to use them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upstream {
    pub service: ServiceRef,
    /// The Service port's addresses: the one part of a live table that changes without a
    /// build (see [`EndpointCell`]).
    #[serde(flatten)]
    pub endpoints: EndpointCell,
    pub protocol: UpstreamProtocol,
    pub balance: LoadBalance,
    pub health: HealthCheck,
    pub proxy_protocol: Option<ProxyProtocol>,
    /// Round-robin position; runtime state that lives as long as this table.
    #[serde(skip)]
    pub cursor: Cursor,
}

/// The addresses of one Service port, split by what their EndpointSlice conditions allow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Endpoints {
    /// Ready endpoint addresses, sorted (the model's output is deterministic).
    #[serde(rename = "endpoints")]
    pub ready: Vec<SocketAddr>,
    /// Serving but terminating, not ready: sorted, none of them in `ready`. Used only when
    /// no ready endpoint is eligible, as kube-proxy falls back to them, so that a rollout that
    /// leaves only draining pods still answers rather than 503. Skipped when empty: tables
    /// without such endpoints serialize as they always did.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub terminating: Vec<SocketAddr>,
}

impl Endpoints {
    /// Ready endpoints only.
    pub fn ready(ready: Vec<SocketAddr>) -> Endpoints {
        Endpoints {
            ready,
            terminating: Vec::new(),
        }
    }

    /// Whether an endpoint may be picked (ready, or serving while terminating).
    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.terminating.is_empty()
    }

    /// Ready then terminating.
    pub fn all(&self) -> impl Iterator<Item = &SocketAddr> {
        self.ready.iter().chain(&self.terminating)
    }
}

/// An upstream's endpoint set. A change of EndpointSlices alone (a pod rolled, scaled, became
/// ready) is applied by storing the Service port's new set here, computed by the same model
/// code a build uses (`model::endpoints`), instead of rebuilding the table: at 10 000
/// Ingresses a build takes ~120 ms, a store microseconds. Everything else in a table stays
/// immutable. A request loads the set once per pick, so it balances over one consistent set.
pub struct EndpointCell(ArcSwap<Endpoints>);

impl EndpointCell {
    pub fn new(endpoints: Endpoints) -> EndpointCell {
        EndpointCell(ArcSwap::from_pointee(endpoints))
    }

    /// A cell holding `endpoints`, which others may hold too (a build's upstreams of one
    /// Service port start from one set).
    pub(crate) fn shared(endpoints: Arc<Endpoints>) -> EndpointCell {
        EndpointCell(ArcSwap::new(endpoints))
    }

    /// The current set (a cheap guard: hold it for a pick, not across an `.await`).
    pub fn load(&self) -> Guard<Arc<Endpoints>> {
        self.0.load()
    }

    /// The current set, as an `Arc` to keep.
    pub fn load_full(&self) -> Arc<Endpoints> {
        self.0.load_full()
    }

    /// Replaces the set: the next pick of every request sees it.
    pub(crate) fn store(&self, endpoints: Arc<Endpoints>) {
        self.0.store(endpoints);
    }
}

/// No endpoints.
impl Default for EndpointCell {
    fn default() -> Self {
        EndpointCell::new(Endpoints::default())
    }
}

impl From<Endpoints> for EndpointCell {
    fn from(endpoints: Endpoints) -> EndpointCell {
        EndpointCell::new(endpoints)
    }
}

/// A copy holds the same set now and changes on its own afterwards.
impl Clone for EndpointCell {
    fn clone(&self) -> Self {
        EndpointCell(ArcSwap::new(self.0.load_full()))
    }
}

/// Equal when the sets held now are equal.
impl PartialEq for EndpointCell {
    fn eq(&self, other: &Self) -> bool {
        *self.0.load() == *other.0.load()
    }
}

impl std::fmt::Debug for EndpointCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.load().fmt(f)
    }
}

impl Serialize for EndpointCell {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.load().serialize(s)
    }
}

/// A round-robin cursor. Not part of an upstream's identity: compares equal, clones fresh.
#[derive(Debug, Default)]
pub struct Cursor(AtomicUsize);

impl Cursor {
    /// Returns the current position and advances it.
    pub(crate) fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

impl Clone for Cursor {
    fn clone(&self) -> Self {
        Cursor::default()
    }
}

impl PartialEq for Cursor {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

mod duration_secs {
    use std::time::Duration;

    pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }
}
