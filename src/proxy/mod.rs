//! The data plane: listeners on :80 and :443 that serve from the current routing table.
//!
//! Every HTTP request is routed on the live table (one `TableHandle` load when its head
//! arrives); a connection keeps only what its TLS handshake fixed (certificate, SNI, ALPN).
//! What is decided once per connection is decided on the table loaded at accept: the :443
//! route by SNI (pass-through or terminate), the certificate, and connection-level limits.
//! Byte tunnels (pass-through streams, upgraded websockets) keep running across swaps until a
//! side closes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::health::Health;
use crate::settings::PublicPorts;
use crate::table::certificates::Certificate;
use crate::telemetry::metrics::Metrics;
use crate::tls::server_config::TlsServerState;

/// What the proxy knows about a client connection, for routing, headers and logs.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address (from a trusted PROXY protocol header when one was accepted).
    client: SocketAddr,
    /// Our listening address the client connected to (its port goes into `X-Forwarded-Port`).
    local: SocketAddr,
    /// Present when the connection arrived over TLS that we terminated.
    tls: Option<TlsInfo>,
}

/// Facts about a terminated TLS connection.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The SNI the client sent, normalized.
    sni: Option<String>,
    /// The ALPN protocol negotiated (`h2` or `http/1.1`).
    alpn: Option<Vec<u8>>,
    /// The certificate the handshake presented (what the accept-time table's resolver chose
    /// for `sni`): requests are served on this connection only while the live table keeps its
    /// terms (see `http_front`).
    certificate: Option<Negotiated>,
    /// The client certificate, when the host the handshake was for asks for one
    /// (`auth-tls-*`, see `client_auth`).
    client_cert: Option<Arc<client_auth::ClientCertificate>>,
    /// The TLS version and cipher suite negotiated (access log), as `access_log` names them.
    version: Option<&'static str>,
    cipher: Option<&'static str>,
}

/// What a connection keeps of the certificate its handshake presented: the leaf, and whether it
/// names the connection's SNI (then a renewal for the same name does not change its terms).
#[derive(Debug, Clone)]
struct Negotiated {
    key: Arc<rustls::sign::CertifiedKey>,
    names_sni: bool,
}

impl Negotiated {
    /// What the handshake with `sni` was shown of `certificate`.
    fn of(certificate: &Certificate, sni: Option<&str>) -> Negotiated {
        Negotiated {
            key: Arc::clone(&certificate.key),
            names_sni: sni.is_some_and(|sni| certificate.names(sni)),
        }
    }
}

/// Long-lived state of the data plane that outlives any one routing table.
pub struct ProxyContext {
    /// Endpoint health, keyed by address, carried across table swaps.
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// Served when a terminated host has no certificate and the table has no default one.
    /// Self-signed at start-up; names no host.
    fallback_certificate: Certificate,
    /// Pooled upstream HTTP/HTTPS clients, reused across table swaps.
    pub clients: pool::Clients,
    /// The port clients use for HTTPS, for redirect `Location`s (omitted when 443).
    https_port: u16,
    /// Turns true on SIGTERM: connections finish their current request and close.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// TLS server state that outlives tables: session cache, ticket key, and the rustls config
    /// built once per table.
    tls: TlsServerState,
    /// Client-facing ports for `X-Forwarded-Port`, when a Service maps them onto our listeners.
    pub(crate) public_ports: PublicPorts,
    /// Rate and connection limiter state, carried across table swaps (`rate_limit`).
    rate_limits: Arc<rate_limit::Limiter>,
    /// Pass-through bulk transfers go through `splice(2)` (`--passthrough-splice`).
    pub(crate) passthrough_splice: bool,
}

impl ProxyContext {
    /// A context with fresh upstream pools and TLS state, sharing `health` and `metrics` with
    /// the rest of the process.
    pub fn new(
        health: Arc<Health>,
        metrics: Arc<Metrics>,
        fallback_certificate: Certificate,
        https_port: u16,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> ProxyContext {
        let (entries, capacity) = metrics.rate_limit_gauges();
        capacity.set(rate_limit::CAPACITY as i64);
        let rate_limits = Arc::new(rate_limit::Limiter::new(entries));
        ProxyContext {
            rate_limits,
            health,
            metrics,
            fallback_certificate,
            clients: pool::Clients::new(),
            https_port,
            shutdown,
            tls: TlsServerState::new(),
            public_ports: PublicPorts::default(),
            passthrough_splice: false,
        }
    }

    /// The port the client connected to, as the client saw it: the configured public port of
    /// the listener, else our own local port.
    fn client_facing_port(&self, conn: &ConnInfo) -> u16 {
        let public = if conn.tls.is_some() {
            self.public_ports.https
        } else {
            self.public_ports.http
        };
        public.unwrap_or(conn.local.port())
    }
}

/// The bound listeners.
pub struct Listeners {
    pub http: TcpListener,
    pub https: TcpListener,
}

impl Listeners {
    /// The addresses actually bound (useful with port 0 in tests).
    pub fn local_addrs(&self) -> std::io::Result<(SocketAddr, SocketAddr)> {
        Ok((self.http.local_addr()?, self.https.local_addr()?))
    }
}

mod accept;
mod affinity;
mod balance;
mod basic_auth;
mod body;
mod body_timeouts;
mod canary;
mod client_auth;
mod cors;
mod discard;
mod error;
mod error_pages;
mod external_auth;
mod forward;
pub mod framing_guard;
mod grpc;
mod hop_by_hop;
pub mod http_front;
mod https_front;
mod idle_release;
mod passthrough;
pub(crate) mod pool;
pub(crate) mod rate_limit;
mod request_id;
mod rewrite;
mod source_ranges;
mod splice;
mod tcp_tunnel;
mod upstream_h1;
mod wake_gate;

pub use accept::{serve, serve_on_workers};
