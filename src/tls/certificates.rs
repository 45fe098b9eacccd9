//! Certificates: PEM (a Secret's `tls.crt`/`tls.key`, or a bundle file) → a rustls
//! `CertifiedKey`, with the key checked against the certificate and metadata kept for display.

use std::sync::Arc;

use rustls::sign::CertifiedKey;
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
