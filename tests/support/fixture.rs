//! Routing tables and certificates built by hand, for tests that skip the model: a fluent
//! [`Tables`] builder (hosts, routes, class settings), the upstreams it routes to, and the
//! proxy's `Certificate` for a [`Leaf`] of the test PKI.
//!
//! ```ignore
//! let table = Tables::new()
//!     .terminate("app.example", &leaf).to(&[backend.addr])
//!     .passthrough("pod.example", tcp_upstream(&[pod.addr], None))
//!     .class(class)
//!     .build();
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis::table::certificates::{Certificate, CertificateInfo};
use portcullis::table::diagnostic::ObjectRef;
use portcullis::table::host::HostMatch;
use portcullis::table::route::{PathMatch, Route, TlsMode};
use portcullis::table::upstream::{
    Cursor, Endpoints, HealthCheck, HealthProbe, LoadBalance, ProxyProtocol, ServicePortRef,
    ServiceRef, Upstream, UpstreamProtocol,
};
use portcullis::table::{CertificateChoice, ClassSettings, RouteTable, VirtualHost};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use super::pki::{Leaf, provider};

/// A routing table under construction: hosts in order, then class settings and certificates.
/// Host-level calls ([`Tables::to`], [`Tables::edit`]...) apply to the host added last.
#[derive(Default)]
pub struct Tables {
    vhosts: Vec<VirtualHost>,
    default_certificate: Option<Certificate>,
    cert_dir: Vec<Certificate>,
    class: ClassSettings,
}

impl Tables {
    /// No hosts, default class settings, no default certificate (the proxy's fallback).
    pub fn new() -> Tables {
        Tables::default()
    }

    /// One host, `/` routed to plain HTTP `endpoints`: the table most HTTP tests need.
    pub fn one(host: &str, endpoints: &[SocketAddr]) -> Tables {
        Tables::new().http(host).to(endpoints)
    }

    /// A terminated host presenting its own certificate: `leaf`, naming `host`.
    pub fn terminate(self, host: &str, leaf: &Leaf) -> Tables {
        let own = CertificateChoice::Own(certificate(leaf, &[host]));
        self.host(terminate_vhost(host, own))
    }

    /// A host with no certificate of its own (the table's default, else the fallback): on
    /// :80 this is any plain HTTP host.
    pub fn http(self, host: &str) -> Tables {
        self.host(terminate_vhost(host, CertificateChoice::Default))
    }

    /// A pass-through host tunnelled to `upstream`.
    pub fn passthrough(self, host: &str, upstream: Arc<Upstream>) -> Tables {
        self.host(VirtualHost {
            tls_mode: TlsMode::Passthrough,
            passthrough: Some(upstream),
            passthrough_split: None,
            ..terminate_vhost(host, CertificateChoice::Default)
        })
    }

    /// Any virtual host, as built.
    pub fn host(mut self, vhost: VirtualHost) -> Tables {
        self.vhosts.push(vhost);
        self
    }

    /// Routes `/` of the last host to plain HTTP `endpoints`.
    pub fn to(self, endpoints: &[SocketAddr]) -> Tables {
        self.route(upstream(endpoints, UpstreamProtocol::Http))
    }

    /// Routes `/` of the last host to `upstream`.
    pub fn route(self, upstream: Arc<Upstream>) -> Tables {
        self.edit(|vhost| {
            vhost.routes.push(Route {
                path: PathMatch::prefix("/"),
                upstream,
                action: Default::default(),
                max_body: None,
                policy: Default::default(),
                source: ObjectRef::namespaced("Ingress", "default", "test"),
                canary: None,
                conditions: None,
                split: None,
                port: None,
            })
        })
    }

    /// Changes the last host (`ssl_redirect`, `hsts`, `tls_mode`...).
    pub fn edit(mut self, change: impl FnOnce(&mut VirtualHost)) -> Tables {
        change(self.vhosts.last_mut().expect("a host to edit"));
        self
    }

    /// These class settings (timeouts, limits, trusted sources).
    pub fn class(mut self, class: ClassSettings) -> Tables {
        self.class = class;
        self
    }

    /// Changes the class settings.
    pub fn with_class(mut self, change: impl FnOnce(&mut ClassSettings)) -> Tables {
        change(&mut self.class);
        self
    }

    /// The table's default certificate (`--default-certificate`).
    pub fn default_certificate(mut self, certificate: Certificate) -> Tables {
        self.default_certificate = Some(certificate);
        self
    }

    /// Certificates chosen by SAN for hosts without their own (`--cert-dir`).
    pub fn cert_dir(mut self, certificates: Vec<Certificate>) -> Tables {
        self.cert_dir = certificates;
        self
    }

    /// The table.
    pub fn build(self) -> RouteTable {
        RouteTable::new(
            self.vhosts,
            self.default_certificate,
            self.cert_dir,
            self.class,
        )
    }
}

/// A terminated virtual host with no routes (no redirect, no HSTS, forwarded headers on).
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
        default_action: Default::default(),
        default_max_body: None,
        default_policy: Default::default(),
        www_redirect: None,
        passthrough: None,
        passthrough_split: None,
        owner: ObjectRef::namespaced("Ingress", "default", "test"),
        client_auth: None,
    }
}

/// An upstream over these endpoints (round robin, no health probe, no PROXY header).
pub fn upstream(endpoints: &[SocketAddr], protocol: UpstreamProtocol) -> Arc<Upstream> {
    upstream_of(("svc", 80), endpoints, protocol, None)
}

/// A pass-through (TCP) upstream over these endpoints, sending `proxy_protocol` if any.
pub fn tcp_upstream(
    endpoints: &[SocketAddr],
    proxy_protocol: Option<ProxyProtocol>,
) -> Arc<Upstream> {
    upstream_of(
        ("pods", 443),
        endpoints,
        UpstreamProtocol::Tcp,
        proxy_protocol,
    )
}

fn upstream_of(
    (name, port): (&str, i32),
    endpoints: &[SocketAddr],
    protocol: UpstreamProtocol,
    proxy_protocol: Option<ProxyProtocol>,
) -> Arc<Upstream> {
    Arc::new(Upstream {
        service: ServiceRef {
            namespace: "default".into(),
            name: name.into(),
            port: ServicePortRef::Number(port),
        },
        endpoints: Endpoints::ready(endpoints.to_vec()).into(),
        protocol,
        balance: LoadBalance::RoundRobin,
        health: HealthCheck {
            probe: HealthProbe::None,
            interval: Duration::from_secs(5),
        },
        proxy_protocol,
        cursor: Cursor::default(),
    })
}

/// The proxy's `Certificate` for a test leaf, with these DNS names as metadata.
pub fn certificate(leaf: &Leaf, names: &[&str]) -> Certificate {
    certificate_from_der(
        leaf.cert_der.clone(),
        leaf.key_der.clone(),
        names,
        "test leaf",
    )
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
