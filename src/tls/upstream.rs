//! The client side of re-encrypt: rustls `ClientConfig`s for TLS towards pods, built from an
//! upstream's [`BackendTls`].
//!
//! - `verify` with a `backend-ca`: only those CA certificates are trusted;
//! - `verify` without one: the webpki (Mozilla) roots;
//! - `verify: false`: [`AcceptAnyServerCert`], which accepts any certificate chain but still
//!   checks that the handshake was signed by the key in the presented certificate.
//!
//! ALPN is `http/1.1` (we speak HTTP/1.1 to pods); SNI is `BackendTls::sni`, set by the caller
//! when it connects. The provider is aws-lc-rs, passed explicitly so no process-wide default is
//! needed.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::table::upstream::BackendTls;

/// The crypto provider of every upstream TLS connection.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn builder(
    provider: &Arc<CryptoProvider>,
) -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports rustls' default protocol versions")
}

/// The client config for re-encrypting to an upstream with these TLS settings. Build it once
/// per distinct `BackendTls` and keep it (it carries the session-resumption cache).
pub(crate) fn client_config(tls: &BackendTls) -> Arc<ClientConfig> {
    let provider = provider();
    let mut config = if tls.verify {
        let roots = match &tls.ca {
            Some(ca) => ca_roots(ca),
            None => RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        };
        builder(&provider)
            .with_root_certificates(roots)
            .with_no_client_auth()
    } else {
        builder(&provider)
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert::new(provider.clone())))
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Trust anchors from a `backend-ca` bundle. Certificates that are not usable as anchors are
/// skipped (the model validated the Secret); an empty store fails every handshake, which is
/// the safe outcome.
fn ca_roots(ca: &[CertificateDer<'static>]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(ca.iter().cloned());
    if ignored > 0 {
        tracing::warn!(
            added,
            ignored,
            "backend-ca: some certificates are not usable trust anchors"
        );
    }
    roots
}

// === impl AcceptAnyServerCert ===

/// Server certificate "verification" for `backend-verify: false`: any chain, any name, any
/// validity period is accepted. What it still does is check the TLS handshake signatures with
/// the provider's algorithms, so the peer must hold the private key of the certificate it sent
/// (this protects nothing against an active attacker, who can present their own certificate;
/// it only keeps the handshake well-formed). Use it only where the user asked for no
/// verification.
#[derive(Debug)]
pub(crate) struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl AcceptAnyServerCert {
    /// Checks handshake signatures with `provider`'s algorithms.
    pub(crate) fn new(provider: Arc<CryptoProvider>) -> Self {
        AcceptAnyServerCert { provider }
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
