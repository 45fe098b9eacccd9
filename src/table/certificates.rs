//! Certificates: PEM (a Secret's `tls.crt`/`tls.key`, or a bundle file) → a rustls
//! `CertifiedKey`, with the key checked against the certificate and metadata kept for display.

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

/// A usable certificate chain and key, plus what `check` and logs may show about it.
/// The private key is inside `key` and is never printed: `Debug` shows metadata only.
#[derive(Clone)]
pub struct Certificate {
    pub key: Arc<CertifiedKey>,
    pub info: CertificateInfo,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Certificate {
    /// Whether the leaf's DNS SANs name `host` (normalized): exactly, or by a wildcard for
    /// exactly one label, as a TLS client verifies it (RFC 6125 §6.4.3).
    pub(crate) fn names(&self, host: &str) -> bool {
        let parent = crate::table::host::wildcard_parent(host);
        self.info
            .dns_names
            .iter()
            .any(|name| match name.strip_prefix("*.") {
                Some(wild) => parent.is_some_and(|p| p.eq_ignore_ascii_case(wild)),
                None => name.eq_ignore_ascii_case(host),
            })
    }

    /// Whether `key` has this certificate's leaf (the same key object, or an equal leaf
    /// certificate loaded again).
    pub(crate) fn has_leaf(&self, key: &Arc<CertifiedKey>) -> bool {
        Arc::ptr_eq(&self.key, key) || self.key.cert.first() == key.cert.first()
    }
}

impl PartialEq for Certificate {
    fn eq(&self, other: &Self) -> bool {
        self.info == other.info && self.key.cert == other.key.cert
    }
}

/// Public metadata of a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertificateInfo {
    /// Subject distinguished name, e.g. `CN=foo.example.com`.
    pub subject: String,
    /// DNS subject alternative names, lower-cased (wildcards kept as `*.example.com`).
    pub dns_names: Vec<String>,
    /// `notAfter`, RFC 3339.
    pub not_after: String,
    /// Where it came from: `Secret ns/name`, a file path, or `self-signed`.
    pub source: String,
}

/// Why PEM text could not become a [`Certificate`]. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CertificateError {
    #[error("no PEM CERTIFICATE block found")]
    NoCertificate,
    #[error("a PEM CERTIFICATE block is malformed: {0}")]
    BadCertificatePem(String),
    #[error("no usable PEM private key found (PKCS#8, PKCS#1 or SEC1)")]
    NoPrivateKey,
    #[error("the private key is not supported: {0}")]
    UnsupportedKey(String),
    #[error("the private key does not match the first (leaf) certificate: {0}")]
    KeyMismatch(String),
    #[error("the leaf certificate is not valid X.509: {0}")]
    BadX509(String),
}

impl Certificate {
    /// Parses a certificate chain (leaf first) and its private key, from one PEM bundle or
    /// from separate `tls.crt` / `tls.key` texts (pass the same bundle twice for a bundle file).
    /// `source` says where it came from, for display.
    pub(crate) fn from_pem(
        chain_pem: &[u8],
        key_pem: &[u8],
        source: &str,
    ) -> Result<Certificate, CertificateError> {
        let chain = parse_chain(chain_pem)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => CertificateError::NoPrivateKey,
            // The PEM error text names the section, never its bytes.
            other => CertificateError::UnsupportedKey(pem_error_text(&other)),
        })?;
        let signing_key = rustls::crypto::aws_lc_rs::default_provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertificateError::UnsupportedKey(e.to_string()))?;
        let info = certificate_info(&chain[0], source)?;
        let certified = CertifiedKey::new(chain, signing_key);
        certified
            .keys_match()
            .map_err(|e| CertificateError::KeyMismatch(e.to_string()))?;
        Ok(Certificate {
            key: Arc::new(certified),
            info,
        })
    }

    /// Does one of this certificate's DNS names cover `host` exactly (`exact`) or by a
    /// one-label wildcard SAN (`!exact`)? `host` may itself be a wildcard `*.example.com`, which
    /// only a SAN `*.example.com` covers.
    pub(crate) fn covers(&self, host: &str, exact: bool) -> bool {
        self.info.dns_names.iter().any(|san| {
            if exact {
                san == host
            } else {
                match (san.strip_prefix("*."), host.strip_prefix("*.")) {
                    (Some(_), Some(_)) => false, // equal wildcards are an exact match
                    (Some(parent), None) => {
                        crate::table::host::wildcard_parent(host) == Some(parent)
                    }
                    _ => false,
                }
            }
        })
    }
}

/// Parses a PEM bundle of CA certificates (e.g. a Secret's `ca.crt`) into DER, in order.
pub(crate) fn parse_ca_bundle(
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let certs = parse_chain(pem)?;
    for cert in &certs {
        x509_parser::parse_x509_certificate(cert)
            .map_err(|e| CertificateError::BadX509(e.to_string()))?;
    }
    Ok(certs)
}

fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CertificateError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertificateError::BadCertificatePem(pem_error_text(&e)))?;
    if chain.is_empty() {
        return Err(CertificateError::NoCertificate);
    }
    Ok(chain)
}

/// A PEM error as text. `rustls_pki_types::pem::Error` carries no key bytes, only section
/// names and base64 decoding errors.
fn pem_error_text(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::MissingSectionEnd { .. } => {
            "a PEM section has no END line".into()
        }
        rustls_pki_types::pem::Error::IllegalSectionStart { .. } => {
            "a PEM BEGIN line is malformed".into()
        }
        rustls_pki_types::pem::Error::Base64Decode(_) => "bad base64 inside a PEM section".into(),
        rustls_pki_types::pem::Error::NoItemsFound => "no PEM section found".into(),
        _ => "malformed PEM".into(),
    }
}

fn certificate_info(
    leaf: &CertificateDer<'_>,
    source: &str,
) -> Result<CertificateInfo, CertificateError> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| CertificateError::BadX509(e.to_string()))?;
    let mut dns_names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(CertificateError::BadX509(e.to_string())),
    };
    dns_names.sort();
    dns_names.dedup();
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        dns_names,
        not_after: rfc3339_utc(cert.validity().not_after.timestamp()),
        source: source.to_string(),
    })
}

/// Formats a Unix timestamp as RFC 3339 in UTC (`2125-01-31T12:00:00Z`), without a clock or a
/// date-time dependency (days → civil date, Howard Hinnant's algorithm).
fn rfc3339_utc(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn rejects_empty_pem() {
        assert_eq!(
            Certificate::from_pem(b"", b"", "x").unwrap_err(),
            CertificateError::NoCertificate
        );
    }
}
