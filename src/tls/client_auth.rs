//! The handshake side of client certificate authentication: a rustls `ClientCertVerifier` that
//! asks for a certificate (hinting the host's CAs), checks the client's proof that it holds
//! the certificate's key, and defers the judgement of the certificate itself to the request.
//!
//! nginx finishes the handshake whatever the certificate and answers the request `400` (or
//! passes it, with `optional`); doing the same lets the proxy answer as ingress-nginx does,
//! redirect to `auth-tls-error-page`, and tell the pod why in `ssl-client-verify`. The chain
//! is verified once per connection after the handshake
//! ([`crate::table::client_auth::ClientAuth::verify_chain`]); every request of the
//! connection is judged on that result (`proxy::client_auth`).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::table::client_auth::ClientCa;

/// Asks for a client certificate, never requires one, accepts any chain for now.
#[derive(Debug)]
pub(crate) struct DeferredClientVerifier {
    ca: Arc<ClientCa>,
}

impl DeferredClientVerifier {
    pub(crate) fn new(ca: Arc<ClientCa>) -> Self {
        DeferredClientVerifier { ca }
    }
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.ca.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Judged after the handshake, per connection, before any request is served.
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.ca.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.ca.verifier().supported_verify_schemes()
    }
}
