//! The CA of an Ingress's client certificate authentication (`auth-tls-secret`): `ca.crt` and
//! the optional `ca.crl` of its Secret, loaded into the Ingress's policy.
//!
//! Fail closed: without a CA (Secret missing, no `ca.crt`, a bad certificate or CRL, and no
//! last good version of it) the Ingress is not served, with an error diagnostic on the
//! annotation; it is never served without the client certificates it asks for. A last good
//! version is served (with a warning) like a backend CA's, so a bad edit of the Secret does not
//! take the host down.

use std::sync::Arc;

use super::ingress::Plan;
use super::vhosts::Merge;
use crate::table::policy::RoutePolicy;

impl Merge<'_, '_> {
    /// Fills `policy.client_auth`'s CA from its Secret. `false` when the Ingress asks for
    /// client certificates and no CA can be loaded: it must then not be served.
    pub(super) fn client_ca(&mut self, plan: &Plan, policy: &mut RoutePolicy) -> bool {
        let Some(auth) = policy.client_auth.as_mut() else {
            return true;
        };
        let auth = Arc::make_mut(auth);
        let field = format!("metadata.annotations[\"{}\"]", auth.secret_annotation);
        let (namespace, name) = auth
            .secret
            .split_once('/')
            .unwrap_or((plan.namespace.as_str(), auth.secret.as_str()));
        auth.ca = self
            .secrets
            .client_ca(namespace, name, &plan.object, &field, self.diagnostics);
        auth.ca.is_some()
    }
}
