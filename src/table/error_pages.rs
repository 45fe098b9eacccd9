//! ingress-nginx's `default-backend` and `custom-http-errors` annotations, as table data.
//!
//! One [`ErrorPages`] per Ingress that has a `default-backend` annotation: the Service it names
//! (in the Ingress's namespace, its first port, as ingress-nginx takes
//! `DefaultBackend.Spec.Ports[0]`), resolved by the model into an [`Upstream`], and the status
//! codes (`custom-http-errors`) that Service answers in place of the pod. The proxy's side is
//! `proxy::error_pages`.

use std::sync::Arc;

use serde::Serialize;

use super::upstream::Upstream;

/// What `default-backend` and `custom-http-errors` ask of an Ingress's routes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorPages {
    /// The `default-backend` Service's name (same namespace as the Ingress).
    pub(crate) service: String,
    /// `custom-http-errors`: pod responses with one of these codes are replaced by the default
    /// backend's answer. Sorted, no duplicates; empty when only `default-backend` is set.
    pub(crate) codes: Vec<u16>,
    /// The annotation key that named the Service, for diagnostics (our key or the alias).
    #[serde(skip)]
    pub(crate) key: &'static str,
    /// Namespace and name of the Ingress (`X-Namespace`, `X-Ingress-Name`); set by the model.
    pub(crate) namespace: String,
    pub(crate) ingress: String,
    /// The Service's first port with its endpoints; `None` until the model resolved it, or when
    /// it could not (a diagnostic says why): then nothing changes for the routes.
    #[serde(skip)]
    pub(crate) backend: Option<Arc<Upstream>>,
}

impl ErrorPages {
    /// The default backend, when it has an endpoint to send to (ingress-nginx: "custom backend
    /// is valid only if contains at least one endpoint").
    pub(crate) fn usable_backend(&self) -> Option<&Arc<Upstream>> {
        self.backend.as_ref().filter(|u| has_endpoints(u))
    }

    /// Whether a pod's response with `status` is replaced by the default backend's.
    pub(crate) fn intercepts(&self, status: u16) -> bool {
        self.codes.binary_search(&status).is_ok()
    }

    /// The line `check` prints.
    pub(crate) fn describe(&self) -> String {
        let service = match &self.backend {
            Some(upstream) => upstream.service.to_string(),
            None => format!("{}/{} (unresolved)", self.namespace, self.service),
        };
        if self.codes.is_empty() {
            format!("default-backend: {service}")
        } else {
            let codes: Vec<String> = self.codes.iter().map(u16::to_string).collect();
            format!(
                "default-backend: {service}; custom-http-errors: {}",
                codes.join(", ")
            )
        }
    }
}

/// Whether `upstream` has an endpoint that may be picked (ready, or serving while terminating).
pub(crate) fn has_endpoints(upstream: &Upstream) -> bool {
    !upstream.endpoints.load().is_empty()
}
