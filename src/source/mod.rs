//! Where objects come from. Both sources (the manifest directory in standalone mode, kube
//! reflectors in cluster mode) produce the same [`Snapshot`], so everything after them is one
//! code path.

pub mod kubernetes;
pub mod manifests;

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::crd::IngressClassParams;
use crate::model::diagnostic::Diagnostic;

/// A file from `--cert-dir`: a PEM bundle (chain + key), or a `tls.crt`/`tls.key` pair joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFile {
    /// Path shown in diagnostics and `check` (for a pair, the `tls.crt` path).
    pub path: String,
    /// Certificate chain and private key PEM, concatenated.
    pub pem: Vec<u8>,
}

/// Every object the model reads, as plain data. Order carries no meaning: the model's output
/// is the same for any permutation of these vectors.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub ingresses: Vec<Ingress>,
    pub classes: Vec<IngressClass>,
    pub secrets: Vec<Secret>,
    pub services: Vec<Service>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub class_params: Vec<IngressClassParams>,
    pub cert_files: Vec<CertFile>,
    /// Problems the source itself found (a manifest that does not parse, an unreadable file);
    /// passed through to the build's diagnostics.
    pub diagnostics: Vec<Diagnostic>,
}
