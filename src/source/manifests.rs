//! Standalone source, the pure half: one manifest file's text → typed Kubernetes objects.
//! (Watching the directory lives in `source::watch`.)
//!
//! INTERFACE STUB — owned by the model work; replace the body.

use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use super::Snapshot;
use crate::crd::IngressClassParams;
use crate::model::diagnostic::Diagnostic;

/// One object the model reads, from any source.
#[derive(Debug, Clone)]
pub enum Object {
    Ingress(Box<Ingress>),
    IngressClass(Box<IngressClass>),
    Secret(Box<Secret>),
    Service(Box<Service>),
    EndpointSlice(Box<EndpointSlice>),
    IngressClassParams(Box<IngressClassParams>),
}

/// Parses one manifest file (possibly several `---` documents). Kinds Portcullis does not read
/// (Deployments, ConfigMaps...) are skipped. Any document that fails to parse makes the whole
/// file an error, a diagnostic naming the file (`ObjectRef` kind `File`) and the line, so the
/// caller keeps the file's last good objects.
pub fn parse_manifest(path: &str, text: &str) -> Result<Vec<Object>, Box<Diagnostic>> {
    let _ = (path, text);
    Ok(Vec::new())
}

impl Snapshot {
    /// Adds one object to the snapshot.
    pub fn push(&mut self, object: Object) {
        match object {
            Object::Ingress(o) => self.ingresses.push(*o),
            Object::IngressClass(o) => self.classes.push(*o),
            Object::Secret(o) => self.secrets.push(*o),
            Object::Service(o) => self.services.push(*o),
            Object::EndpointSlice(o) => self.endpoint_slices.push(*o),
            Object::IngressClassParams(o) => self.class_params.push(*o),
        }
    }
}
