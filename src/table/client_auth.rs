//! Client certificate authentication (mTLS) of a terminated or re-encrypted host, as
//! ingress-nginx's `auth-tls-*` annotations describe it ("Client Certificate Authentication"
//! in its annotations reference).
//!
//! Per host, not per path: the certificate is asked for in the TLS handshake, before any
//! request, so the host's owner (its oldest Ingress) decides, as nginx's `ssl_verify_client`
//! is per `server`. The handshake never fails for a certificate: like nginx, the proxy finishes
//! it, records what it found ([`ClientVerification`]) and judges each request
//! (`proxy::client_auth::check`): `400` (or a redirect to `auth-tls-error-page`) when refused, the
//! `ssl-client-*` headers to the pod when admitted.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use serde::Serialize;

/// `auth-tls-verify-client` (`off` is no [`ClientAuth`] at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyClient {
    /// A certificate signed by the CA is required: anything else is `400`.
    On,
    /// No certificate, or one of the CA's that fails for another reason (expired, revoked,
    /// chain too long), is passed with `ssl-client-verify` saying so; one that the CA did not
    /// sign is `400`.
    Optional,
    /// Every request is passed; `ssl-client-verify` says what was found.
    OptionalNoCa,
}

impl VerifyClient {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            VerifyClient::On => "on",
            VerifyClient::Optional => "optional",
            VerifyClient::OptionalNoCa => "optional_no_ca",
        }
    }
}

/// A host's client certificate authentication.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClientAuth {
    pub(crate) verify: VerifyClient,
    /// `auth-tls-verify-depth`: the longest chain accepted above the client's certificate,
    /// the CA included (1: signed by a CA of `ca.crt` itself).
    pub(crate) depth: u8,
    /// `auth-tls-error-page`: refused requests are redirected here (`302`) instead of `400`.
    pub(crate) error_page: Option<String>,
    /// `auth-tls-pass-certificate-to-upstream`: the PEM, URL-encoded, in `ssl-client-cert`.
    pub(crate) pass_certificate: bool,
    /// `auth-tls-secret` as `namespace/name`.
    pub(crate) secret: String,
    /// The annotation that named it (for diagnostics).
    #[serde(skip)]
    pub(crate) secret_annotation: &'static str,
    /// The Secret's CA (and CRLs), filled in by the model; a host is only served with it.
    #[serde(skip)]
    pub(crate) ca: Option<Arc<ClientCa>>,
}

impl ClientAuth {
    /// One line for `check` and the admin API.
    pub(crate) fn describe(&self) -> String {
        let mut line = format!(
            "client certificates: {} (CA Secret {}, depth {}",
            self.verify.as_str(),
            self.secret,
            self.depth
        );
        if let Some(ca) = &self.ca
            && !ca.crls.is_empty()
        {
            line.push_str(&format!(", {} CRL(s)", ca.crls.len()));
        }
        if self.pass_certificate {
            line.push_str(", certificate passed to the pod");
        }
        if let Some(page) = &self.error_page {
            line.push_str(&format!(", errors redirected to {page}"));
        }
        line.push(')');
        line
    }

    /// Whether a connection verified under `self` may serve a host that asks for `other`: the
    /// same mode, depth and CA bundle and CRLs (compared by pointer first: an unchanged Secret
    /// keeps its parsed value across builds).
    pub(crate) fn same_terms(&self, other: &ClientAuth) -> bool {
        let ca = match (&self.ca, &other.ca) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        };
        ca && self.verify == other.verify && self.depth == other.depth
    }

    /// What a client that presented `chain` (leaf first; `None`: no certificate) gets, judged
    /// at `now`.
    pub(crate) fn verify_chain(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
        now: UnixTime,
    ) -> ClientVerification {
        let Some((leaf, rest)) = chain.and_then(<[_]>::split_first) else {
            return ClientVerification {
                status: ClientStatus::None,
                subject: None,
                issuer: None,
                pem: None,
            };
        };
        let (subject, issuer) = distinguished_names(leaf);
        let status = match &self.ca {
            Some(ca) => ca.verify(leaf, rest, self.depth, now),
            None => ClientStatus::Failed {
                reason: "no CA loaded",
                unknown_ca: true,
            },
        };
        ClientVerification {
            status,
            subject,
            issuer,
            // Made once per connection: whether it is sent is the live host's choice.
            pem: Some(url_encoded_pem(leaf)),
        }
    }

    /// The answer for a request when the connection's certificate is refused: `None` when
    /// admitted; else the nginx message (`400` body) to send.
    pub(crate) fn refusal(&self, verification: &ClientVerification) -> Option<&'static str> {
        const NONE_SENT: &str = "No required SSL certificate was sent";
        const CERT_ERROR: &str = "The SSL certificate error";
        match (&verification.status, self.verify) {
            (ClientStatus::Success, _) | (_, VerifyClient::OptionalNoCa) => None,
            (ClientStatus::None, VerifyClient::On) => Some(NONE_SENT),
            (ClientStatus::None, VerifyClient::Optional) => None,
            (ClientStatus::Failed { .. }, VerifyClient::On) => Some(CERT_ERROR),
            (ClientStatus::Failed { unknown_ca, .. }, VerifyClient::Optional) => {
                unknown_ca.then_some(CERT_ERROR)
            }
        }
    }
}

/// What the handshake found, for the requests of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientVerification {
    pub(crate) status: ClientStatus,
    /// The leaf's subject and issuer, RFC 4514 (`CN=client,O=example`), as nginx's
    /// `$ssl_client_s_dn` / `$ssl_client_i_dn`.
    pub(crate) subject: Option<String>,
    pub(crate) issuer: Option<String>,
    /// The leaf, PEM, URL-encoded (`$ssl_client_escaped_cert`); sent when the host passes it
    /// on.
    pub(crate) pem: Option<String>,
}

/// nginx's `$ssl_client_verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStatus {
    /// `SUCCESS`.
    Success,
    /// `NONE`: no certificate.
    None,
    /// `FAILED:reason`, with OpenSSL's wording for the reason. `unknown_ca`: the CA did not
    /// sign it (what `optional` refuses).
    Failed {
        reason: &'static str,
        unknown_ca: bool,
    },
}

impl ClientStatus {
    /// The `ssl-client-verify` header value.
    pub(crate) fn header_value(&self) -> String {
        match self {
            ClientStatus::Success => "SUCCESS".to_string(),
            ClientStatus::None => "NONE".to_string(),
            ClientStatus::Failed { reason, .. } => format!("FAILED:{reason}"),
        }
    }
}

// === ClientCa ===

/// The trusted CAs and CRLs of an `auth-tls-secret` (`ca.crt`, optional `ca.crl`), with the
/// webpki verifier built from them once per Secret version.
pub struct ClientCa {
    pub(crate) roots: Vec<CertificateDer<'static>>,
    pub(crate) crls: Vec<CertificateRevocationListDer<'static>>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCa")
            .field("roots", &self.roots.len())
            .field("crls", &self.crls.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientCa {
    fn eq(&self, other: &Self) -> bool {
        self.roots == other.roots && self.crls == other.crls
    }
}

/// Most intermediates a client may send that are looked at when telling "chain too long" from
/// "unknown CA": a bound on the work an untrusted client can ask for.
const MAX_INTERMEDIATES: usize = 8;

impl ClientCa {
    /// Parses `ca.crt` (PEM certificates) and `ca.crl` (PEM `X509 CRL` blocks, optional) and
    /// builds their verifier (which checks the CRLs). The error is the message for the
    /// diagnostic.
    pub(crate) fn parse(
        ca_pem: &[u8],
        crl_pem: Option<&[u8]>,
        provider: Arc<CryptoProvider>,
    ) -> Result<ClientCa, String> {
        use rustls::pki_types::pem::PemObject;
        let roots = crate::table::certificates::parse_ca_bundle(ca_pem)
            .map_err(|e| format!("ca.crt: {e}"))?;
        let crls = match crl_pem {
            None => Vec::new(),
            Some(pem) => {
                let crls = CertificateRevocationListDer::pem_slice_iter(pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("ca.crl: {e}"))?;
                if crls.is_empty() {
                    return Err("ca.crl: no X509 CRL PEM block".to_string());
                }
                crls
            }
        };
        let mut store = RootCertStore::empty();
        for root in &roots {
            store
                .add(root.clone())
                .map_err(|e| format!("ca.crt: {e}"))?;
        }
        let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
            .allow_unauthenticated();
        if !crls.is_empty() {
            // The client's own certificate is checked against the CRLs; its issuer must have
            // one there (an unknown status is refused).
            builder = builder
                .with_crls(crls.iter().cloned())
                .only_check_end_entity_revocation();
        }
        let verifier = builder.build().map_err(|e| match e {
            rustls::server::VerifierBuilderError::InvalidCrl(e) => format!("ca.crl: {e:?}"),
            other => format!("ca.crt: {other}"),
        })?;
        Ok(ClientCa {
            roots,
            crls,
            verifier,
        })
    }

    /// The webpki verifier: the handshake uses it for the client's signature (proof that it
    /// holds the certificate's key).
    pub(crate) fn verifier(&self) -> &Arc<dyn ClientCertVerifier> {
        &self.verifier
    }

    /// Checks the chain with at most `depth - 1` of the client's intermediates: a path that
    /// needs more is too long (nginx's `ssl_verify_depth`).
    fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        depth: u8,
        now: UnixTime,
    ) -> ClientStatus {
        let allowed = usize::from(depth.max(1)) - 1;
        let within = &intermediates[..intermediates.len().min(allowed)];
        match self.verifier.verify_client_cert(leaf, within, now) {
            Ok(_) => ClientStatus::Success,
            Err(error) => {
                let unknown = matches!(
                    error,
                    rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
                );
                if unknown && intermediates.len() > within.len() {
                    let more = &intermediates[..intermediates.len().min(MAX_INTERMEDIATES)];
                    if self.verifier.verify_client_cert(leaf, more, now).is_ok() {
                        return ClientStatus::Failed {
                            reason: "certificate chain too long",
                            unknown_ca: false,
                        };
                    }
                }
                ClientStatus::Failed {
                    reason: openssl_reason(&error),
                    unknown_ca: unknown,
                }
            }
        }
    }

    pub(crate) fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.verifier.root_hint_subjects()
    }

    pub(crate) fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier.verify_tls12_signature(message, cert, dss)
    }

    pub(crate) fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.verifier.verify_tls13_signature(message, cert, dss)
    }
}

/// OpenSSL's `X509_verify_cert_error_string` for what webpki reported: what nginx puts after
/// `FAILED:` in `$ssl_client_verify`, so pods written for ingress-nginx read the same text.
fn openssl_reason(error: &rustls::Error) -> &'static str {
    let rustls::Error::InvalidCertificate(error) = error else {
        return "certificate verify failed";
    };
    match error {
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "certificate has expired"
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate is not yet valid"
        }
        CertificateError::UnknownIssuer => "unable to get local issuer certificate",
        CertificateError::Revoked => "certificate revoked",
        CertificateError::UnknownRevocationStatus => "unable to get certificate CRL",
        CertificateError::ExpiredRevocationList
        | CertificateError::ExpiredRevocationListContext { .. } => "CRL has expired",
        CertificateError::BadSignature => "certificate signature failure",
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "unsupported certificate purpose"
        }
        _ => "certificate verify failed",
    }
}

/// The leaf's subject and issuer, RFC 4514; `None` for a certificate that does not parse.
fn distinguished_names(leaf: &CertificateDer<'_>) -> (Option<String>, Option<String>) {
    match x509_parser::parse_x509_certificate(leaf) {
        Ok((_, cert)) => (Some(rfc4514(cert.subject())), Some(rfc4514(cert.issuer()))),
        Err(_) => (None, None),
    }
}

/// A name as RFC 4514 writes it (and nginx since 1.11.6): the last RDN first, `,` between
/// RDNs, `+` within one, short attribute names where known, special characters escaped.
fn rfc4514(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut out = String::new();
    let rdns: Vec<_> = name.iter().collect();
    for (i, rdn) in rdns.into_iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match x509_parser::objects::oid2abbrev(attr.attr_type(), registry) {
                Ok(short) => out.push_str(short),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            match attr.as_str() {
                Ok(value) => escape_value(value, &mut out),
                Err(_) => {
                    out.push('#');
                    for b in attr.attr_value().data.iter() {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    out
}

fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
            out.push(c);
        } else if c.is_control() {
            // Never a raw control character in a header value.
            out.push_str(&format!("\\{:02x}", u32::from(c) & 0xff));
        } else {
            out.push(c);
        }
    }
}

/// The PEM of `leaf`, percent-encoded as nginx's `$ssl_client_escaped_cert` (everything but
/// unreserved characters), so it fits in one header value.
fn url_encoded_pem(leaf: &CertificateDer<'_>) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(leaf.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    let mut out = String::with_capacity(pem.len() * 2);
    for b in pem.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn ca(name: &str) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        (rcgen::Issuer::new(params, key), cert.pem())
    }

    fn client(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client, one");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        let key = rcgen::KeyPair::generate().expect("key");
        params.signed_by(&key, issuer).expect("leaf").der().clone()
    }

    fn auth(verify: VerifyClient, ca_pem: &str) -> ClientAuth {
        ClientAuth {
            verify,
            depth: 1,
            error_page: None,
            pass_certificate: true,
            secret: "ns/ca".into(),
            secret_annotation: "test",
            ca: Some(Arc::new(
                ClientCa::parse(ca_pem.as_bytes(), None, provider()).expect("ca"),
            )),
        }
    }

    #[test]
    fn verifies_and_judges_like_nginx() {
        let (issuer, pem) = ca("Test CA");
        let (other, _) = ca("Other CA");
        let now = UnixTime::now();
        let on = auth(VerifyClient::On, &pem);
        let good = on.verify_chain(Some(&[client(&issuer)]), now);
        assert_eq!(good.status, ClientStatus::Success);
        assert_eq!(good.subject.as_deref(), Some("O=Example,CN=client\\, one"));
        assert_eq!(good.issuer.as_deref(), Some("CN=Test CA"));
        let pem_escaped = good.pem.clone().expect("pem");
        assert!(pem_escaped.starts_with("-----BEGIN%20CERTIFICATE-----%0A"));
        assert_eq!(on.refusal(&good), None);

        let none = on.verify_chain(None, now);
        assert_eq!(none.status.header_value(), "NONE");
        assert_eq!(
            on.refusal(&none),
            Some("No required SSL certificate was sent")
        );
        let foreign = on.verify_chain(Some(&[client(&other)]), now);
        assert_eq!(
            foreign.status.header_value(),
            "FAILED:unable to get local issuer certificate"
        );
        assert_eq!(on.refusal(&foreign), Some("The SSL certificate error"));

        let optional = auth(VerifyClient::Optional, &pem);
        assert_eq!(optional.refusal(&none), None);
        assert!(optional.refusal(&foreign).is_some());
        let no_ca = auth(VerifyClient::OptionalNoCa, &pem);
        assert_eq!(no_ca.refusal(&foreign), None);
        assert!(on.same_terms(&auth(VerifyClient::On, &pem)));
        assert!(!on.same_terms(&optional));
    }

    #[test]
    fn bad_crl_and_empty_ca_are_errors() {
        let (_, pem) = ca("Test CA");
        let bad = "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
        assert!(ClientCa::parse(pem.as_bytes(), Some(bad.as_bytes()), provider()).is_err());
        assert!(ClientCa::parse(b"", None, provider()).is_err());
    }
}
