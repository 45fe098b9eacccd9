//! The data plane in-process: `proxy::serve` on 127.0.0.1:0 with a programmatic routing table,
//! plus builders for tables, certificates and TLS clients used by the front-door tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use portcullis::health::Health;
use portcullis::proxy::{self, Listeners, ProxyContext};
use portcullis::table::certificates::{Certificate, CertificateInfo};
use portcullis::table::diagnostic::ObjectRef;
use portcullis::table::host::HostMatch;
use portcullis::table::route::TlsMode;
use portcullis::table::upstream::{
    Cursor, HealthCheck, HealthProbe, LoadBalance, ProxyProtocol, ServicePortRef, ServiceRef,
    Upstream, UpstreamProtocol,
};
use portcullis::table::{CertificateChoice, ClassSettings, RouteTable, TableHandle, VirtualHost};
use portcullis::telemetry::metrics::Metrics;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::client::TlsStream;

use super::pki::{Leaf, provider};

/// A running in-process proxy. Dropping it aborts the serve task.
pub struct Proxy {
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub table: TableHandle,
    pub ctx: Arc<ProxyContext>,
    pub fallback: Certificate,
    shutdown: watch::Sender<bool>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    /// Starts `proxy::serve` on two fresh 127.0.0.1:0 listeners, serving `table`.
    pub async fn start(table: RouteTable) -> Proxy {
        let http = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let https = TcpListener::bind("127.0.0.1:0").await.expect("bind https");
        let listeners = Listeners { http, https };
        let (http, https) = listeners.local_addrs().expect("addrs");
        let (shutdown, rx) = watch::channel(false);
        let fallback = self_signed_fallback();
        let ctx = Arc::new(ProxyContext::new(
            Health::new(),
            Arc::new(Metrics::new()),
            fallback.clone(),
            https.port(),
            rx.clone(),
        ));
        let handle: TableHandle = Arc::new(ArcSwap::from_pointee(table));
        let task = tokio::spawn(proxy::serve(listeners, handle.clone(), ctx.clone(), rx));
        Proxy {
            http,
            https,
            table: handle,
            ctx,
            fallback,
            shutdown,
            task,
        }
    }

    /// Replaces the routing table (what a rebuild does).
    pub fn swap(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
    }

    /// Signals shutdown: the proxy stops accepting and `task` ends when connections are done.
    pub fn begin_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// A self-signed certificate that names no host, like the one the binary makes at start-up.
pub fn self_signed_fallback() -> Certificate {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Portcullis default certificate");
    let cert = params.self_signed(&key).expect("self-signed");
    certificate_from_der(cert.der().clone(), key.serialize_der(), &[], "self-signed")
}

/// The proxy's `Certificate` for a test leaf.
pub fn certificate(leaf: &Leaf, names: &[&str]) -> Certificate {
    certificate_from_der(
        leaf.cert_der.clone(),
        leaf.key_der.clone(),
        names,
        "test leaf",
    )
}

fn certificate_from_der(
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    names: &[&str],
    source: &str,
) -> Certificate {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    let certified = CertifiedKey::from_der(vec![cert], key, &provider()).expect("certified key");
    Certificate {
        key: Arc::new(certified),
        info: CertificateInfo {
            subject: names.first().map(|n| format!("CN={n}")).unwrap_or_default(),
            dns_names: names.iter().map(|n| n.to_string()).collect(),
            not_after: String::new(),
            source: source.to_string(),
        },
    }
}

/// A pass-through (TCP) upstream over these endpoints.
pub fn tcp_upstream(
    endpoints: &[SocketAddr],
    proxy_protocol: Option<ProxyProtocol>,
) -> Arc<Upstream> {
    Arc::new(Upstream {
        service: ServiceRef {
            namespace: "default".into(),
            name: "pods".into(),
            port: ServicePortRef::Number(443),
        },
        endpoints: endpoints.to_vec(),
        terminating: Vec::new(),
        protocol: UpstreamProtocol::Tcp,
        balance: LoadBalance::RoundRobin,
        health: HealthCheck {
            probe: HealthProbe::None,
            interval: Duration::from_secs(5),
        },
        proxy_protocol,
        cursor: Cursor::default(),
    })
}

/// A pass-through virtual host.
pub fn passthrough_vhost(host: &str, upstream: Arc<Upstream>) -> VirtualHost {
    VirtualHost {
        tls_mode: TlsMode::Passthrough,
        passthrough: Some(upstream),
        ..terminate_vhost(host, CertificateChoice::Default)
    }
}

/// A terminated virtual host (no routes: the TLS side is what these tests look at).
pub fn terminate_vhost(host: &str, certificate: CertificateChoice) -> VirtualHost {
    VirtualHost {
        host: HostMatch::parse(host).expect("host"),
        tls_mode: TlsMode::Terminate,
        certificate,
        ssl_redirect: false,
        hsts: None,
        forwarded_headers: true,
        routes: Vec::new(),
        default_backend: None,
        passthrough: None,
        owner: ObjectRef::namespaced("Ingress", "default", "test"),
    }
}

/// A table of these hosts with class settings `class`.
pub fn table(vhosts: Vec<VirtualHost>, class: ClassSettings) -> RouteTable {
    RouteTable::new(vhosts, None, Vec::new(), class)
}

/// TLS-connects to `addr` with `config`, sending SNI `name` (when the config enables SNI).
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(name.to_string()).expect("server name");
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// A client config that accepts any certificate (to look at the fallback, which no CA signed).
pub fn insecure_client_config(alpn: &[&[u8]], sni: bool) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnything))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = sni;
    Arc::new(config)
}

/// The leaf certificate the server presented.
pub fn peer_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .expect("peer certificate")
        .clone()
        .into_owned()
}

/// Accepts any server certificate, still checking handshake signatures.
#[derive(Debug)]
struct AcceptAnything;

impl ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The first flight a rustls client with `config` sends to `name`: a real ClientHello.
pub fn client_hello_bytes(config: Arc<rustls::ClientConfig>, name: &str) -> Vec<u8> {
    let name = ServerName::try_from(name.to_string()).expect("server name");
    let mut conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}
