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

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::server::{ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};

use crate::model::host::{normalize_host, wildcard_parent};
use crate::table::{CertificateChoice, ClassSettings, RouteTable};
use crate::tls::certificates::Certificate;

/// Sessions remembered for stateful resumption (TLS 1.2 session ids, TLS 1.3 without tickets).
const SESSION_CACHE_SIZE: usize = 4096;

/// ALPN protocols offered to clients, in our preference order.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a table's TLS policy could not be turned into a server config.
#[derive(Debug, thiserror::Error)]
pub enum ServerConfigError {
    /// None of `class.cipher_suites` names a suite this build supports.
    #[error("class.cipher_suites {names:?}: no supported cipher suite among them")]
    NoCipherSuites { names: Vec<String> },
    /// rustls refused the combination (e.g. TLS 1.3 only with TLS 1.2 suites only).
    #[error("class TLS policy (tls_min_version_1_3, cipher_suites): {0}")]
    Rustls(#[from] rustls::Error),
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
    pub fn config_for(
        &self,
        table: &Arc<RouteTable>,
        fallback: &Certificate,
    ) -> Result<Arc<ServerConfig>, ServerConfigError> {
        if let Some(cached) = self.cached.load().as_ref()
            && std::ptr::eq(cached.table.as_ptr(), Arc::as_ptr(table))
        {
            return Ok(Arc::clone(&cached.config));
        }
        let config = match self.build(table, fallback, &table.class) {
            Ok(config) => config,
            Err(error) => {
                tracing::error!(%error, "TLS policy unusable; serving rustls' default suites");
                let defaults = ClassSettings {
                    cipher_suites: Vec::new(),
                    ..table.class.clone()
                };
                self.build(table, fallback, &defaults)?
            }
        };
        let config = Arc::new(config);
        self.cached.store(Some(Arc::new(CachedConfig {
            table: Arc::downgrade(table),
            config: Arc::clone(&config),
        })));
        Ok(config)
    }

    /// Builds the config for `table` with the TLS policy of `class`.
    pub fn build(
        &self,
        table: &Arc<RouteTable>,
        fallback: &Certificate,
        class: &ClassSettings,
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
        let resolver = CertificateResolver::new(Arc::clone(table), fallback);
        let config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(resolver));
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
/// model, to diagnose a bad `cipherSuites` entry.
pub fn is_supported_cipher_suite(name: &str) -> bool {
    aws_lc_rs::default_provider()
        .cipher_suites
        .iter()
        .any(|s| suite_has_name(*s, name))
}

// === impl CertificateResolver ===

/// Picks the certificate for a handshake from one routing table (see the module docs).
pub struct CertificateResolver {
    table: Arc<RouteTable>,
    /// `--cert-dir` certificates by exact DNS SAN.
    dir_exact: HashMap<String, Arc<CertifiedKey>>,
    /// `--cert-dir` certificates by wildcard SAN, keyed by parent: `*.example.com` → `example.com`.
    dir_wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// The table's default certificate, else the proxy's fallback.
    default: Arc<CertifiedKey>,
}

impl std::fmt::Debug for CertificateResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateResolver")
            .field("dir_exact", &self.dir_exact.keys().collect::<Vec<_>>())
            .field("dir_wildcard", &self.dir_wildcard.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CertificateResolver {
    /// Indexes `table`'s certificates; `fallback` is used when the table has no default.
    pub fn new(table: Arc<RouteTable>, fallback: &Certificate) -> Self {
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
                map.entry(key).or_insert_with(|| Arc::clone(&cert.key));
            }
        }
        let default = table
            .default_certificate
            .as_ref()
            .unwrap_or(fallback)
            .key
            .clone();
        CertificateResolver {
            table,
            dir_exact,
            dir_wildcard,
            default,
        }
    }

    /// The certificate for a normalized SNI (`None`: no SNI).
    pub fn choose(&self, sni: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(sni) = sni else {
            return &self.default;
        };
        if let Some(vhost) = self.table.route_sni(sni)
            && let CertificateChoice::Own(cert) = &vhost.certificate
        {
            return &cert.key;
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
        Some(Arc::clone(self.choose(sni.as_deref())))
    }
}
