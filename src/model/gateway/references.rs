//! References across namespaces (ReferenceGrant) and to backends' TLS (BackendTLSPolicy).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use std::collections::HashMap;

use super::namespace;
use crate::gateway_api::{self, BackendRef, BackendTLSPolicy, ReferenceGrant};
use crate::model::ingress::{BackendSpec, Field};
use crate::source::Snapshot;
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use crate::table::upstream::{BackendTls, ServicePortRef, ServiceRef};

/// Everything a route's references are checked against.
pub(super) struct References<'a> {
    pub(super) grants: Grants<'a>,
    pub(super) backend_tls: BackendTlsPolicies<'a>,
    /// Services by namespace/name, with their ports' numbers and names.
    services: HashMap<(&'a str, &'a str), Vec<ServicePort<'a>>>,
}

/// A Service port's number, name and `appProtocol`.
type ServicePort<'a> = (i32, Option<&'a str>, Option<&'a str>);

impl<'a> References<'a> {
    /// The name of port `port` of Service `namespace/name`, if it has one: what a
    /// BackendTLSPolicy's `sectionName` names.
    pub(super) fn port_name(&self, namespace: &str, name: &str, port: i32) -> Option<&'a str> {
        self.services
            .get(&(namespace, name))?
            .iter()
            .find(|(number, _, _)| *number == port)
            .and_then(|(_, name, _)| *name)
    }

    /// Does port `port` of Service `namespace/name` speak HTTP/2 in cleartext
    /// (`appProtocol: kubernetes.io/h2c`, Gateway API's backend protocol selection)?
    pub(super) fn speaks_h2c(&self, namespace: &str, name: &str, port: i32) -> bool {
        self.services.get(&(namespace, name)).is_some_and(|ports| {
            ports
                .iter()
                .any(|(number, _, app)| *number == port && *app == Some("kubernetes.io/h2c"))
        })
    }

    pub(super) fn new(snapshot: &'a Snapshot) -> References<'a> {
        References {
            grants: Grants::new(&snapshot.reference_grants),
            backend_tls: BackendTlsPolicies::new(snapshot),
            services: snapshot
                .services
                .iter()
                .filter_map(|s| {
                    let ports = s
                        .spec
                        .iter()
                        .flat_map(|spec| spec.ports.iter().flatten())
                        .map(|p| (p.port, p.name.as_deref(), p.app_protocol.as_deref()))
                        .collect();
                    Some(((namespace(&s.metadata), s.metadata.name.as_deref()?), ports))
                })
                .collect(),
        }
    }

    /// A route's weighted share for `backendRefs[k]` of rule `i`: [`Self::backend`], or when
    /// that does not resolve a placeholder that keeps the share (an HTTPRoute answers it 500,
    /// a TLSRoute refuses it: the spec's rules for invalid backends both respect weight). The
    /// problem goes to `diagnostics`, the first one also to `unresolved` (`ResolvedRefs`).
    pub(super) fn share(
        &self,
        object: &ObjectRef,
        kind: &str,
        at: (usize, usize),
        reference: &BackendRef,
        unresolved: &mut Option<(Reason, String)>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> BackendSpec {
        match self.backend(object, kind, at, reference) {
            Ok(spec) => spec,
            Err(diagnostic) => {
                unresolved.get_or_insert((diagnostic.reason, diagnostic.message.clone()));
                diagnostics.push(*diagnostic);
                let namespace = object.namespace.as_deref().unwrap_or("default");
                BackendSpec::placeholder(namespace, Field::RouteBackend(at.0, at.1))
            }
        }
    }

    /// A route's `backendRefs[k]` of rule `i` → the Service port it names, checked: a
    /// Service (core group) that exists, with a port, in the route's namespace or in one
    /// whose ReferenceGrant lets `kind` routes of the route's namespace in. The error is the
    /// diagnostic, its reason the spec's `ResolvedRefs` reason.
    fn backend(
        &self,
        object: &ObjectRef,
        kind: &str,
        (i, k): (usize, usize),
        reference: &BackendRef,
    ) -> Result<BackendSpec, Box<Diagnostic>> {
        let field = Field::RouteBackend(i, k);
        let fail = |at: String, reason: Reason, message: String| {
            Box::new(Diagnostic::error(object.clone(), at, reason, message))
        };
        let route_namespace = object.namespace.as_deref().unwrap_or("default");
        let group = reference.group.as_deref().unwrap_or("");
        let backend_kind = reference.kind.as_deref().unwrap_or("Service");
        if !group.is_empty() || backend_kind != "Service" {
            return Err(fail(
                field.to_string(),
                Reason::InvalidKind,
                format!(
                    "backend {backend_kind} (group {group:?}) is not a Service; its requests are answered 500"
                ),
            ));
        }
        let Some(port) = reference.port.filter(|p| (1..=65_535).contains(p)) else {
            return Err(fail(
                format!("{field}.port"),
                Reason::InvalidSpec,
                "a Service backend needs a port (1-65535); its requests are answered 500".into(),
            ));
        };
        let namespace = reference.namespace.as_deref().unwrap_or(route_namespace);
        if !self.grants.permit(
            gateway_api::GROUP,
            kind,
            route_namespace,
            "",
            "Service",
            namespace,
            &reference.name,
        ) {
            return Err(fail(
                format!("{field}.namespace"),
                Reason::RefNotPermitted,
                format!(
                    "Service {namespace}/{} is in another namespace and no ReferenceGrant there lets {kind}s of {route_namespace} use it; its requests are answered 500",
                    reference.name
                ),
            ));
        }
        if !self
            .services
            .contains_key(&(namespace, reference.name.as_str()))
        {
            return Err(fail(
                field.to_string(),
                Reason::MissingService,
                format!(
                    "Service {namespace}/{} does not exist; its requests are answered 500",
                    reference.name
                ),
            ));
        }
        Ok(BackendSpec {
            service: ServiceRef {
                namespace: namespace.to_string(),
                name: reference.name.clone(),
                port: ServicePortRef::Number(port),
            },
            field,
        })
    }
}

/// The ReferenceGrants of the snapshot.
pub(super) struct Grants<'a> {
    grants: &'a [Arc<ReferenceGrant>],
}

impl<'a> Grants<'a> {
    pub(super) fn new(grants: &'a [Arc<ReferenceGrant>]) -> Grants<'a> {
        Grants { grants }
    }

    /// May an object of `from_kind` (Gateway API group, or `""` for core: `from_group`) in
    /// namespace `from_namespace` refer to the `to_kind` (group `to_group`) object `to_name`
    /// in `to_namespace`? Always within one namespace; across namespaces only when a
    /// ReferenceGrant in `to_namespace` says so (GEP-709).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn permit(
        &self,
        from_group: &str,
        from_kind: &str,
        from_namespace: &str,
        to_group: &str,
        to_kind: &str,
        to_namespace: &str,
        to_name: &str,
    ) -> bool {
        from_namespace == to_namespace
            || self.grants.iter().any(|grant| {
                namespace(&grant.metadata) == to_namespace
                    && grant.spec.from.iter().any(|f| {
                        f.group == from_group
                            && f.kind == from_kind
                            && f.namespace == from_namespace
                    })
                    && grant.spec.to.iter().any(|t| {
                        t.group == to_group
                            && t.kind == to_kind
                            && t.name.as_deref().is_none_or(|n| n == to_name)
                    })
            })
    }
}

/// BackendTLSPolicies, with the ConfigMaps and Secrets their CA references read.
pub(super) struct BackendTlsPolicies<'a> {
    policies: &'a [Arc<BackendTLSPolicy>],
    config_maps: &'a [Arc<ConfigMap>],
    secrets: &'a [Arc<Secret>],
}

/// A BackendTLSPolicy that cannot be used: what is wrong and in which field.
pub(super) struct PolicyError {
    /// The policy's name (in the Service's namespace).
    pub(super) policy: String,
    pub(super) field: String,
    pub(super) message: String,
}

impl<'a> BackendTlsPolicies<'a> {
    pub(super) fn new(snapshot: &'a Snapshot) -> BackendTlsPolicies<'a> {
        BackendTlsPolicies {
            policies: &snapshot.backend_tls_policies,
            config_maps: &snapshot.config_maps,
            secrets: &snapshot.secrets,
        }
    }

    /// The re-encryption Service `namespace/service` asks for, on its port `port_name` (when
    /// the port has a name): `Ok(None)` when no policy targets it. The oldest policy wins when
    /// several do (the spec's conflict rule).
    pub(super) fn for_service(
        &self,
        namespace_of_service: &str,
        service: &str,
        port_name: Option<&str>,
    ) -> Result<Option<BackendTls>, PolicyError> {
        let mut matching: Vec<&Arc<BackendTLSPolicy>> = self
            .policies
            .iter()
            .filter(|p| namespace(&p.metadata) == namespace_of_service)
            .filter(|p| {
                p.spec.target_refs.iter().any(|t| {
                    t.group.is_empty()
                        && t.kind == "Service"
                        && t.name == service
                        && t.section_name
                            .as_deref()
                            .is_none_or(|section| Some(section) == port_name)
                })
            })
            .collect();
        matching.sort_by(|a, b| super::age_key(&a.metadata).cmp(&super::age_key(&b.metadata)));
        let Some(policy) = matching.first() else {
            return Ok(None);
        };
        let policy_name = policy.metadata.name.clone().unwrap_or_default();
        let name = format!("{namespace_of_service}/{policy_name}");
        let fail = |field: &str, message: String| PolicyError {
            policy: policy_name.clone(),
            field: field.to_string(),
            message,
        };
        let validation = &policy.spec.validation;
        if validation
            .subject_alt_names
            .as_ref()
            .is_some_and(|names| !names.is_empty())
        {
            return Err(fail(
                "spec.validation.subjectAltNames",
                "subjectAltNames is not supported (the pod is verified against the hostname only)"
                    .into(),
            ));
        }
        if crate::table::host::HostMatch::parse(&validation.hostname)
            .ok()
            .is_none_or(|h| !matches!(h, crate::table::host::HostMatch::Exact(_)))
        {
            return Err(fail(
                "spec.validation.hostname",
                format!("{:?} is not a host name", validation.hostname),
            ));
        }
        let ca = match (
            validation.ca_certificate_refs.first(),
            validation.well_known_ca_certificates.as_deref(),
        ) {
            (Some(_), Some(_)) => {
                return Err(fail(
                    "spec.validation",
                    "caCertificateRefs and wellKnownCACertificates are mutually exclusive".into(),
                ));
            }
            (None, Some("System")) => None,
            (None, Some(other)) => {
                return Err(fail(
                    "spec.validation.wellKnownCACertificates",
                    format!("{other:?} is not supported (only System)"),
                ));
            }
            (None, None) => {
                return Err(fail(
                    "spec.validation",
                    "names no CA: give caCertificateRefs or wellKnownCACertificates".into(),
                ));
            }
            (Some(reference), None) => {
                let field = "spec.validation.caCertificateRefs[0]";
                let pem = match (reference.group.as_str(), reference.kind.as_str()) {
                    ("", "ConfigMap") => self
                        .config_maps
                        .iter()
                        .find(|c| {
                            namespace(&c.metadata) == namespace_of_service
                                && c.metadata.name.as_deref() == Some(reference.name.as_str())
                        })
                        .and_then(|c| c.data.as_ref()?.get("ca.crt").map(|v| v.as_bytes())),
                    ("", "Secret") => self
                        .secrets
                        .iter()
                        .find(|s| {
                            namespace(&s.metadata) == namespace_of_service
                                && s.metadata.name.as_deref() == Some(reference.name.as_str())
                        })
                        .and_then(|s| s.data.as_ref()?.get("ca.crt").map(|v| &v.0[..])),
                    (group, kind) => {
                        return Err(fail(
                            field,
                            format!("{kind} (group {group:?}) is not a ConfigMap or Secret"),
                        ));
                    }
                };
                let Some(pem) = pem else {
                    return Err(fail(
                        field,
                        format!(
                            "{} {namespace_of_service}/{} with a ca.crt key does not exist",
                            reference.kind, reference.name
                        ),
                    ));
                };
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
                    .filter_map(Result::ok)
                    .collect();
                if certs.is_empty() {
                    return Err(fail(
                        field,
                        format!(
                            "ca.crt of {} {namespace_of_service}/{} holds no PEM certificate",
                            reference.kind, reference.name
                        ),
                    ));
                }
                Some(Arc::new(certs))
            }
        };
        Ok(Some(BackendTls {
            sni: validation.hostname.clone(),
            verify: true,
            ca,
            ca_secret: Some(format!("BackendTLSPolicy {name}")),
        }))
    }
}
