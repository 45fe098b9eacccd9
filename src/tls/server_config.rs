//! The rustls server side of terminated and re-encrypted hosts.
//!
//! One `ServerConfig` per routing table, built the first time a connection needs it and cached
//! by the table's identity: a handshake never builds a config, and a table swap builds one new
//! config, not one per connection. Its certificate resolver answers from that table:
//!
//! 1. the virtual host's own certificate (`CertificateChoice::Own`) for the SNI;
//! 2. a `--cert-dir` certificate whose DNS SANs cover the SNI, exact before wildcard;
//! 3. the table's default certificate;
//! 4. the proxy's self-signed fallback (also for no SNI and unknown SNI).
//!
//! The session cache and ticket key live in [`TlsServerState`], outside any one config, so
//! resumption keeps working across table swaps.
//!
//! A host with client certificate authentication (`auth-tls-*`) gets a config of its own,
//! built with the table's: the same resolver and TLS policy (versions, suites, groups), plus a
//! client verifier with the host's CA ([`super::client_auth`]). One per distinct
//! [`ClientAuth`] of the table (an Ingress's hosts share one).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use super::client_auth::DeferredClientVerifier;
use crate::table::certificates::Certificate;
use crate::table::client_auth::ClientAuth;
use crate::table::host::{normalize_host, wildcard_parent};
use crate::table::{CertificateChoice, ClassSettings, RouteTable};

/// Sessions remembered for stateful resumption (TLS 1.2 session ids, TLS 1.3 without tickets).
const SESSION_CACHE_SIZE: usize = 4096;

/// ALPN protocols offered to clients, in our preference order.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a table's TLS policy could not be turned into a server config.
#[derive(Debug, thiserror::Error)]
pub enum ServerConfigError {
    /// None of `class.cipher_suites` names a suite this build supports.
    #[error("class.cipher_suites {names:?}: no supported cipher suite among them")]
    NoCipherSuites { names: Vec<String> },
    /// rustls refused the combination (e.g. TLS 1.3 only with TLS 1.2 suites only).
    #[error("class TLS policy (tls_min_version_1_3, cipher_suites): {0}")]
    Rustls(#[from] rustls::Error),
    /// A host asks for client certificates and no config was built for it (its CA did not
    /// load): its handshakes are refused rather than served without them.
    #[error("host asks for client certificates but has no CA")]
    NoClientCa,
}

/// TLS server state that outlives routing tables: the session cache, the ticket key, and the
/// config built for the most recent table. One per process, in `ProxyContext::tls`.
pub struct TlsServerState {
    provider: Arc<CryptoProvider>,
    sessions: Arc<ServerSessionMemoryCache>,
    /// `None` if the ticket key could not be made: resumption then uses the session cache only.
    ticketer: Option<Arc<dyn ProducesTickets>>,
    cached: ArcSwapOption<CachedConfig>,
}

/// A config and the table it was built for. The `Weak` keeps the table's allocation (not the
/// table) alive, so its address cannot be reused by a new table while we compare against it.
struct CachedConfig {
    table: Weak<RouteTable>,
    config: Arc<ServerConfig>,
    /// The config's certificate resolver, also asked outside a handshake: which certificate a
    /// new connection would get (see [`TlsServerState::with_certificate`]).
    resolver: Arc<CertificateResolver>,
    /// The configs of hosts with client certificate authentication, by the address of their
    /// [`ClientAuth`] (held alive by the table, which `resolver` holds).
    client_auth: HashMap<usize, Arc<ServerConfig>>,
}

impl Default for TlsServerState {
    fn default() -> Self {
        TlsServerState::new()
    }
}

impl std::fmt::Debug for TlsServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServerState")
            .field("tickets", &self.ticketer.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsServerState {
    /// A fresh session cache and ticket key (aws-lc-rs provider).
    pub fn new() -> Self {
        let ticketer = match aws_lc_rs::Ticketer::new() {
            Ok(t) => Some(t),
            Err(error) => {
                tracing::warn!(%error, "no TLS session tickets: ticket key creation failed");
                None
            }
        };
        TlsServerState {
            provider: Arc::new(aws_lc_rs::default_provider()),
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            ticketer,
            cached: ArcSwapOption::empty(),
        }
    }

    /// The server config for connections routed by `table`: cached per table, built on first
    /// use. A TLS policy rustls refuses is logged and replaced by the provider's defaults (all
    /// AEAD, forward-secret suites, keeping the minimum version) rather than failing every
    /// handshake. An error is returned only if even rustls' defaults are refused.
    pub(crate) fn config_for(
        &self,
        table: &Arc<RouteTable>,
        fallback: &Certificate,
    ) -> Result<Arc<ServerConfig>, ServerConfigError> {
        Ok(Arc::clone(&self.cached_for(table, fallback)?.config))
    }

    /// The server config for a host of `table` (`None`: no host, or one without client
    /// certificates): the table's, or the host's own with its client verifier.
    pub(crate) fn config_for_host(
        &self,
        table: &Arc<RouteTable>,
        fallback: &Certificate,
        client_auth: Option<&Arc<ClientAuth>>,
    ) -> Result<Arc<ServerConfig>, ServerConfigError> {
        let Some(auth) = client_auth else {
            return self.config_for(table, fallback);
        };
        self.cached_for(table, fallback)?
            .client_auth
            .get(&key_of(auth))
            .cloned()
            .ok_or(ServerConfigError::NoClientCa)
    }

    /// Looks at the certificate a new handshake with `sni` (normalized; `None`: no SNI) gets
    /// from `table` (what the resolver of `table`'s config answers) and returns what `look`
    /// makes of it: borrowed, so a handshake copies none of its metadata. A connection compares
    /// it with the certificate it negotiated to learn whether the live table still serves it
    /// on the same terms.
    pub(crate) fn with_certificate<R>(
        &self,
        table: &Arc<RouteTable>,
        fallback: &Certificate,
        sni: Option<&str>,
        look: impl FnOnce(&Certificate) -> R,
    ) -> Result<R, ServerConfigError> {
        Ok(look(self.cached_for(table, fallback)?.resolver.choose(sni)))
    }

    fn cached_for(
        &self,
        table: &Arc<RouteTable>,
        fallback: &Certificate,
    ) -> Result<Arc<CachedConfig>, ServerConfigError> {
        if let Some(cached) = self.cached.load_full()
            && std::ptr::eq(cached.table.as_ptr(), Arc::as_ptr(table))
        {
            return Ok(cached);
        }
        let resolver = Arc::new(CertificateResolver::new(Arc::clone(table), fallback));
        let mut class = &table.class;
        let defaults;
        let config = match self.build_with(Arc::clone(&resolver), class, None) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(%error, "TLS policy unusable; serving rustls' default suites");
                defaults = ClassSettings {
                    cipher_suites: Vec::new(),
                    ..table.class.clone()
                };
                class = &defaults;
                self.build_with(Arc::clone(&resolver), class, None)?
            }
        };
        let mut client_auth = HashMap::new();
        for vhost in table.vhosts() {
            let Some(auth) = &vhost.client_auth else {
                continue;
            };
            let Some(ca) = &auth.ca else {
                continue;
            };
            if client_auth.contains_key(&key_of(auth)) {
                continue;
            }
            let verifier = Arc::new(DeferredClientVerifier::new(Arc::clone(ca)));
            match self.build_with(Arc::clone(&resolver), class, Some(verifier)) {
                Ok(config) => {
                    client_auth.insert(key_of(auth), Arc::new(config));
                }
                Err(error) => {
                    tracing::error!(host = %vhost.host, %error, "no TLS config for a host with client certificates; its handshakes are refused");
                }
            }
        }
        let cached = Arc::new(CachedConfig {
            table: Arc::downgrade(table),
            config: Arc::new(config),
            resolver,
            client_auth,
        });
        self.cached.store(Some(Arc::clone(&cached)));
        Ok(cached)
    }

    /// Builds the config for `table` with the TLS policy of `class`.
    pub fn build(
        &self,
        table: &Arc<RouteTable>,
        fallback: &Certificate,
        class: &ClassSettings,
    ) -> Result<ServerConfig, ServerConfigError> {
        let resolver = Arc::new(CertificateResolver::new(Arc::clone(table), fallback));
        self.build_with(resolver, class, None)
    }

    /// `verifier`: the host's client certificate verifier; `None`: no client certificate
    /// asked for. Everything else is the same for both.
    fn build_with(
        &self,
        resolver: Arc<CertificateResolver>,
        class: &ClassSettings,
        verifier: Option<Arc<DeferredClientVerifier>>,
    ) -> Result<ServerConfig, ServerConfigError> {
        let mut provider = (*self.provider).clone();
        if !class.cipher_suites.is_empty() {
            let suites: Vec<SupportedCipherSuite> = provider
                .cipher_suites
                .iter()
                .copied()
                .filter(|s| class.cipher_suites.iter().any(|n| suite_has_name(*s, n)))
                .collect();
            if suites.is_empty() {
                return Err(ServerConfigError::NoCipherSuites {
                    names: class.cipher_suites.clone(),
                });
            }
            provider.cipher_suites = suites;
        }
        provider.kx_groups = if class.post_quantum {
            vec![
                kx_group::X25519MLKEM768,
                kx_group::X25519,
                kx_group::SECP256R1,
                kx_group::SECP384R1,
            ]
        } else {
            vec![
                kx_group::X25519,
                kx_group::SECP256R1,
                kx_group::SECP384R1,
                kx_group::X25519MLKEM768,
            ]
        };
        let versions: &[&'static SupportedProtocolVersion] = if class.tls_min_version_1_3 {
            &[&rustls::version::TLS13]
        } else {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        };
        let builder = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)?;
        let config = match verifier {
            Some(verifier) => builder
                .with_client_cert_verifier(verifier)
                .with_cert_resolver(resolver),
            None => builder.with_no_client_auth().with_cert_resolver(resolver),
        };
        Ok(self.finish(config))
    }

    fn finish(&self, mut config: ServerConfig) -> ServerConfig {
        config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        config.session_storage = self.sessions.clone();
        if let Some(ticketer) = &self.ticketer {
            config.ticketer = Arc::clone(ticketer);
        }
        config
    }
}

/// The key of a host's client-auth config: the address of its [`ClientAuth`].
fn key_of(auth: &Arc<ClientAuth>) -> usize {
    Arc::as_ptr(auth) as usize
}

/// Whether `suite` is called `name`: rustls' name (`TLS13_AES_128_GCM_SHA256`) or the IANA one
/// (`TLS_AES_128_GCM_SHA256`), case-insensitive.
fn suite_has_name(suite: SupportedCipherSuite, name: &str) -> bool {
    let Some(ours) = suite.suite().as_str() else {
        return false;
    };
    let iana = match ours.strip_prefix("TLS13_") {
        Some(rest) => format!("TLS_{rest}"),
        None => ours.to_string(),
    };
    name.eq_ignore_ascii_case(ours) || name.eq_ignore_ascii_case(&iana)
}

/// Whether `name` (IANA or rustls spelling) is a cipher suite this build supports: for the
/// model, to diagnose a bad `cipherSuites` entry (only the unit tests call it so far).
#[cfg(test)]
fn is_supported_cipher_suite(name: &str) -> bool {
    aws_lc_rs::default_provider()
        .cipher_suites
        .iter()
        .any(|s| suite_has_name(*s, name))
}

// === impl CertificateResolver ===

/// Picks the certificate for a handshake from one routing table (see the module docs).
struct CertificateResolver {
    table: Arc<RouteTable>,
    /// `--cert-dir` certificates by exact DNS SAN.
    dir_exact: HashMap<String, Certificate>,
    /// `--cert-dir` certificates by wildcard SAN, keyed by parent: `*.example.com` → `example.com`.
    dir_wildcard: HashMap<String, Certificate>,
    /// The table's default certificate, else the proxy's fallback.
    default: Certificate,
}

impl std::fmt::Debug for CertificateResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateResolver")
            .field("dir_exact", &self.dir_exact.keys().collect::<Vec<_>>())
            .field(
                "dir_wildcard",
                &self.dir_wildcard.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl CertificateResolver {
    /// Indexes `table`'s certificates; `fallback` is used when the table has no default.
    fn new(table: Arc<RouteTable>, fallback: &Certificate) -> Self {
        let mut dir_exact = HashMap::new();
        let mut dir_wildcard = HashMap::new();
        for cert in &table.cert_dir {
            for name in &cert.info.dns_names {
                let name = name.to_ascii_lowercase();
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut dir_wildcard, parent.to_string()),
                    None => (&mut dir_exact, name),
                };
                // The first file that names a host keeps it (the table's order is deterministic).
                map.entry(key).or_insert_with(|| cert.clone());
            }
        }
        let default = table
            .default_certificate
            .as_ref()
            .unwrap_or(fallback)
            .clone();
        CertificateResolver {
            table,
            dir_exact,
            dir_wildcard,
            default,
        }
    }

    /// The certificate for a normalized SNI (`None`: no SNI).
    fn choose(&self, sni: Option<&str>) -> &Certificate {
        let Some(sni) = sni else {
            return &self.default;
        };
        if let Some(vhost) = self.table.route_sni(sni)
            && let CertificateChoice::Own(cert) = &vhost.certificate
        {
            return cert;
        }
        self.dir_exact
            .get(sni)
            .or_else(|| wildcard_parent(sni).and_then(|p| self.dir_wildcard.get(p)))
            .unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for CertificateResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = client_hello.server_name().and_then(normalize_host);
        Some(Arc::clone(&self.choose(sni.as_deref()).key))
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    use super::*;
    use crate::table::VirtualHost;
    use crate::table::certificates::CertificateInfo;
    use crate::table::diagnostic::ObjectRef;
    use crate::table::host::HostMatch;
    use crate::table::route::TlsMode;

    fn cert(names: &[&str]) -> Certificate {
        let key = rcgen::KeyPair::generate().expect("key");
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let certified = CertifiedKey::from_der(
            vec![CertificateDer::from(cert.der().to_vec())],
            der,
            &aws_lc_rs::default_provider(),
        )
        .expect("certified key");
        Certificate {
            key: Arc::new(certified),
            info: CertificateInfo {
                subject: String::new(),
                dns_names: names.iter().map(|n| n.to_string()).collect(),
                not_after: String::new(),
                source: format!("test {names:?}"),
            },
        }
    }

    fn vhost(host: &str, certificate: CertificateChoice) -> VirtualHost {
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
            owner: ObjectRef::namespaced("Ingress", "ns", "ing"),
            client_auth: None,
        }
    }

    /// The version the server picks for a client's first flight offering only `version`.
    fn negotiated(
        server: &Arc<ServerConfig>,
        version: &'static SupportedProtocolVersion,
    ) -> Result<rustls::ProtocolVersion, rustls::Error> {
        let client =
            rustls::ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
                .with_protocol_versions(&[version])?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("v.example.com").expect("name");
        let mut client = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut bytes = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut bytes).expect("write");
        }
        let mut server = rustls::ServerConnection::new(Arc::clone(server))?;
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            server.read_tls(&mut rest).expect("read");
        }
        server.process_new_packets()?;
        server
            .protocol_version()
            .ok_or(rustls::Error::General("no version".into()))
    }

    fn same(a: &Certificate, b: &Certificate) -> bool {
        Arc::ptr_eq(&a.key, &b.key)
    }

    #[test]
    fn resolver_precedence() {
        let own = cert(&["own.example.com"]);
        let own_wild = cert(&["*.wild.example.com"]);
        let dir_exact = cert(&["dir.example.com", "x.dir.example.com"]);
        let dir_wild = cert(&["*.dir.example.com"]);
        let default = cert(&[]);
        let fallback = cert(&[]);
        let table = Arc::new(RouteTable::new(
            vec![
                vhost("own.example.com", CertificateChoice::Own(own.clone())),
                vhost(
                    "*.wild.example.com",
                    CertificateChoice::Own(own_wild.clone()),
                ),
                vhost("nocert.example.com", CertificateChoice::Default),
            ],
            Some(default.clone()),
            vec![dir_wild.clone(), dir_exact.clone()],
            ClassSettings::default(),
        ));
        let r = CertificateResolver::new(Arc::clone(&table), &fallback);
        assert!(same(r.choose(Some("own.example.com")), &own));
        assert!(same(r.choose(Some("a.wild.example.com")), &own_wild));
        assert!(same(r.choose(Some("dir.example.com")), &dir_exact));
        // Exact SAN beats wildcard SAN, whatever the file order.
        assert!(same(r.choose(Some("x.dir.example.com")), &dir_exact));
        assert!(same(r.choose(Some("y.dir.example.com")), &dir_wild));
        // One label only.
        assert!(same(r.choose(Some("z.y.dir.example.com")), &default));
        assert!(same(r.choose(Some("nocert.example.com")), &default));
        assert!(same(r.choose(Some("unknown.test")), &default));
        assert!(same(r.choose(None), &default));

        let bare = Arc::new(RouteTable::default());
        let r = CertificateResolver::new(bare, &fallback);
        assert!(same(r.choose(Some("unknown.test")), &fallback));
        assert!(same(r.choose(None), &fallback));
    }

    #[test]
    fn config_is_built_once_per_table_and_shares_resumption_state() {
        let state = TlsServerState::new();
        let fallback = cert(&[]);
        let first = Arc::new(RouteTable::default());
        let a = state.config_for(&first, &fallback).expect("config");
        let b = state.config_for(&first, &fallback).expect("config");
        assert!(Arc::ptr_eq(&a, &b));
        let second = Arc::new(RouteTable::default());
        let c = state.config_for(&second, &fallback).expect("config");
        assert!(!Arc::ptr_eq(&a, &c));
        let thin = |s: &Arc<dyn rustls::server::StoresServerSessions>| Arc::as_ptr(s).cast::<()>();
        assert_eq!(thin(&a.session_storage), thin(&c.session_storage));
        let thin = |t: &Arc<dyn ProducesTickets>| Arc::as_ptr(t).cast::<()>();
        assert_eq!(thin(&a.ticketer), thin(&c.ticketer));
        assert!(a.ticketer.enabled());
        assert_eq!(a.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn policy_versions_suites_and_groups() {
        use rustls::NamedGroup;
        let state = TlsServerState::new();
        let fallback = cert(&[]);
        let table = Arc::new(RouteTable::default());

        let config = state
            .build(&table, &fallback, &ClassSettings::default())
            .expect("defaults");
        let config = Arc::new(config);
        assert_eq!(
            negotiated(&config, &rustls::version::TLS12).expect("TLS 1.2 allowed"),
            rustls::ProtocolVersion::TLSv1_2
        );
        assert_eq!(
            negotiated(&config, &rustls::version::TLS13).expect("TLS 1.3"),
            rustls::ProtocolVersion::TLSv1_3
        );
        let groups: Vec<NamedGroup> = config
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(groups[0], NamedGroup::X25519MLKEM768);

        let classic = ClassSettings {
            post_quantum: false,
            tls_min_version_1_3: true,
            ..ClassSettings::default()
        };
        let config = state.build(&table, &fallback, &classic).expect("classic");
        let config = Arc::new(config);
        assert!(negotiated(&config, &rustls::version::TLS12).is_err());
        assert!(negotiated(&config, &rustls::version::TLS13).is_ok());
        let groups: Vec<NamedGroup> = config
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert_eq!(&groups[..2], &[NamedGroup::X25519, NamedGroup::secp256r1]);

        let named = ClassSettings {
            cipher_suites: vec![
                "TLS_AES_256_GCM_SHA384".into(),
                "tls_ecdhe_ecdsa_with_aes_128_gcm_sha256".into(),
                "NOT_A_SUITE".into(),
            ],
            ..ClassSettings::default()
        };
        let config = state.build(&table, &fallback, &named).expect("named");
        let suites: Vec<_> = config
            .crypto_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(
            suites,
            vec![
                rustls::CipherSuite::TLS13_AES_256_GCM_SHA384,
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            ]
        );
        assert!(is_supported_cipher_suite("TLS13_CHACHA20_POLY1305_SHA256"));
        assert!(!is_supported_cipher_suite("TLS_RSA_WITH_AES_128_CBC_SHA"));

        // Nothing usable: an error from `build`, rustls' default suites from `config_for`.
        let unusable = Arc::new(RouteTable::new(
            Vec::new(),
            None,
            Vec::new(),
            ClassSettings {
                cipher_suites: vec!["NOT_A_SUITE".into()],
                ..ClassSettings::default()
            },
        ));
        assert!(state.build(&unusable, &fallback, &unusable.class).is_err());
        let config = state.config_for(&unusable, &fallback).expect("defaults");
        assert!(config.crypto_provider().cipher_suites.len() > 2);
    }
}
