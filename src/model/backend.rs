//! Backend resolution: an Ingress backend → Service → Service port → EndpointSlice addresses,
//! split by their conditions into ready ones and terminating fallbacks → an [`Upstream`].
//! Services and slices are indexed once per build; upstreams with the same Service port and
//! options are shared (`Arc`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointSlice};

use super::FastMap;
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use crate::table::upstream::{
    EndpointCell, Endpoints, HealthCheck, LoadBalance, ProxyProtocol, ServicePortRef, ServiceRef,
    Upstream, UpstreamProtocol,
};

/// Label that ties an EndpointSlice to its Service.
pub(super) const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Why a Service port yields no endpoints list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unresolved {
    /// No such Service: served with no endpoints (503) until it appears.
    MissingService,
    /// No such port on the Service: served with no endpoints, like a missing Service.
    MissingPort,
    /// `type: ExternalName` cannot be proxied to pod endpoints: the path is skipped.
    ExternalName,
}

/// Upstream-level options, the part of an upstream's identity that is not the Service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct UpstreamPolicy {
    pub(crate) protocol: UpstreamProtocol,
    pub(crate) balance: LoadBalance,
    pub(crate) health: HealthCheck,
    pub(crate) proxy_protocol: Option<ProxyProtocol>,
}

impl UpstreamPolicy {
    /// Whether `upstream` was built with this policy: its copy of the policy is the key, so
    /// that a build does not keep a second copy per upstream to find it by.
    fn made(&self, upstream: &Upstream) -> bool {
        self.protocol == upstream.protocol
            && self.balance == upstream.balance
            && self.health == upstream.health
            && self.proxy_protocol == upstream.proxy_protocol
    }
}

/// Services and EndpointSlices indexed by namespace and name, plus the upstreams built so far.
pub(super) struct Backends<'a> {
    services: FastMap<(&'a str, &'a str), &'a Arc<Service>>,
    /// By namespace and the `kubernetes.io/service-name` label.
    slices: FastMap<(&'a str, &'a str), Vec<&'a Arc<EndpointSlice>>>,
    /// Each Service port met so far: its endpoints and the upstreams built on it.
    resolved: FastMap<ServiceRef, Resolved>,
}

/// What an endpoint's conditions allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eligibility {
    Ready,
    /// Last resort, as kube-proxy uses terminating endpoints when no ready one is left.
    Terminating,
    Never,
}

/// A Service port some upstream of a build names, with what resolved it.
pub(super) struct ServiceUse {
    pub(super) port: ServiceRef,
    /// The Service, if it exists.
    pub(super) object: Option<Arc<Service>>,
    /// Its slices (label `kubernetes.io/service-name`, same namespace).
    pub(super) slices: Vec<Arc<EndpointSlice>>,
    /// The upstreams built on the port.
    pub(super) upstreams: Vec<Arc<Upstream>>,
}

/// One Service port: resolved once per build, shared by every path that names it.
struct Resolved {
    /// Shared by the port's upstreams as their first set: one copy per port, not per policy.
    endpoints: Result<Arc<Endpoints>, Unresolved>,
    /// One per distinct policy (usually one): paths with equal options share an upstream.
    upstreams: Vec<Arc<Upstream>>,
}

impl<'a> Backends<'a> {
    /// Indexes the objects that pass `in_scope` (the watch-namespace filter).
    pub(crate) fn new(
        services: &'a [Arc<Service>],
        slices: &'a [Arc<EndpointSlice>],
        in_scope: impl Fn(Option<&str>) -> bool,
    ) -> Self {
        Self::of_services(services, slices, services.len(), |namespace, _| {
            in_scope(Some(namespace))
        })
    }

    /// Indexes the Services (and their slices) whose namespace and name pass `wanted`, about
    /// `expected` of them.
    pub(super) fn of_services(
        services: &'a [Arc<Service>],
        slices: &'a [Arc<EndpointSlice>],
        expected: usize,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> Self {
        let mut service_index = FastMap::with_capacity_and_hasher(expected, Default::default());
        for service in services {
            let meta = &service.metadata;
            if let (Some(ns), Some(name)) = (Some(super::namespace_of(meta)), meta.name.as_deref())
                && wanted(ns, name)
            {
                service_index.insert((ns, name), service);
            }
        }
        // About one slice per Service.
        let mut slice_index: FastMap<_, Vec<&Arc<EndpointSlice>>> =
            FastMap::with_capacity_and_hasher(expected, Default::default());
        for slice in slices {
            let meta = &slice.metadata;
            let service = meta.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL));
            if let (Some(ns), Some(service)) = (Some(super::namespace_of(meta)), service)
                && wanted(ns, service)
            {
                slice_index
                    .entry((ns, service.as_str()))
                    .or_default()
                    .push(slice);
            }
        }
        Backends {
            services: service_index,
            slices: slice_index,
            // About one entry per Service: sized up front, not grown by rehashing.
            resolved: FastMap::with_capacity_and_hasher(expected, Default::default()),
        }
    }

    /// The upstream for `service` with `policy`. `None` when the path must be skipped (a
    /// diagnostic says why); a missing Service or port gives an upstream with no endpoints and
    /// an error diagnostic on `object`/`field`.
    pub(crate) fn upstream(
        &mut self,
        service: &ServiceRef,
        policy: &UpstreamPolicy,
        object: &ObjectRef,
        field: &dyn std::fmt::Display,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Arc<Upstream>> {
        // Looked up by reference: the Service key is cloned once per Service, not per path.
        let Resolved {
            endpoints,
            upstreams,
        } = match self.resolved.get_mut(service) {
            Some(resolved) => resolved,
            None => self.resolved.entry(service.clone()).or_insert(Resolved {
                endpoints: resolve(&self.services, &self.slices, service).map(Arc::new),
                upstreams: Vec::new(),
            }),
        };
        let none;
        let endpoints: &Arc<Endpoints> = match endpoints {
            Ok(endpoints) => endpoints,
            Err(Unresolved::ExternalName) => {
                diagnostics.push(Diagnostic::error(
                    object.clone(),
                    format!("{field}.name"),
                    Reason::InvalidSpec,
                    format!(
                        "Service {}/{} is of type ExternalName, which has no pod endpoints; path skipped",
                        service.namespace, service.name
                    ),
                ));
                return None;
            }
            Err(Unresolved::MissingService) => {
                diagnostics.push(Diagnostic::error(
                    object.clone(),
                    format!("{field}.name"),
                    Reason::MissingService,
                    format!(
                        "Service {}/{} does not exist; answering 503 until it does",
                        service.namespace, service.name
                    ),
                ));
                none = Arc::default();
                &none
            }
            Err(Unresolved::MissingPort) => {
                diagnostics.push(Diagnostic::error(
                    object.clone(),
                    format!("{field}.port"),
                    Reason::MissingServicePort,
                    format!(
                        "Service {}/{} has no port {}; answering 503 until it does",
                        service.namespace,
                        service.name,
                        port_text(&service.port)
                    ),
                ));
                none = Arc::default();
                &none
            }
        };
        if let Some(shared) = upstreams.iter().find(|u| policy.made(u)) {
            return Some(shared.clone());
        }
        let upstream = Arc::new(Upstream {
            service: service.clone(),
            endpoints: EndpointCell::shared(Arc::clone(endpoints)),
            protocol: policy.protocol.clone(),
            balance: policy.balance,
            health: policy.health.clone(),
            proxy_protocol: policy.proxy_protocol,
            cursor: Default::default(),
        });
        upstreams.push(upstream.clone());
        Some(upstream)
    }
}

impl<'a> Backends<'a> {
    /// The addresses of `service`, resolved anew (an endpoint update between builds).
    pub(super) fn endpoints(&self, service: &ServiceRef) -> Result<Endpoints, Unresolved> {
        resolve(&self.services, &self.slices, service)
    }

    /// Every Service port some upstream was built on, for endpoint updates between builds.
    pub(super) fn into_services(self) -> impl Iterator<Item = ServiceUse> + 'a {
        let Backends {
            services,
            slices,
            resolved,
        } = self;
        resolved.into_iter().map(move |(service, resolved)| {
            let key = (service.namespace.as_str(), service.name.as_str());
            let object = services.get(&key).map(|s| Arc::clone(s));
            let its_slices = slices
                .get(&key)
                .map(|list| list.iter().map(|s| Arc::clone(s)).collect())
                .unwrap_or_default();
            ServiceUse {
                port: service,
                object,
                slices: its_slices,
                upstreams: resolved.upstreams,
            }
        })
    }

    /// The number of the first port of Service `namespace/name`: the port ingress-nginx uses
    /// for a `default-backend` annotation (`DefaultBackend.Spec.Ports[0]`). The error says why
    /// there is none, for a diagnostic.
    pub(crate) fn first_port(&self, namespace: &str, name: &str) -> Result<i32, String> {
        let service = self
            .services
            .get(&(namespace, name))
            .ok_or_else(|| format!("Service {namespace}/{name} does not exist"))?;
        service
            .spec
            .as_ref()
            .and_then(|s| s.ports.as_deref())
            .and_then(<[_]>::first)
            .map(|p| p.port)
            .ok_or_else(|| format!("Service {namespace}/{name} has no port"))
    }
}

/// A Service port's endpoint addresses by eligibility, each list sorted and de-duplicated; an
/// address ready in any slice is only ready.
fn resolve(
    services: &FastMap<(&str, &str), &Arc<Service>>,
    slices: &FastMap<(&str, &str), Vec<&Arc<EndpointSlice>>>,
    service: &ServiceRef,
) -> Result<Endpoints, Unresolved> {
    let key = (service.namespace.as_str(), service.name.as_str());
    let svc = services.get(&key).ok_or(Unresolved::MissingService)?;
    let spec = svc.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return Err(Unresolved::ExternalName);
    }
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let port = ports
        .iter()
        .find(|p| match &service.port {
            ServicePortRef::Number(n) => p.port == *n,
            ServicePortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
        })
        .ok_or(Unresolved::MissingPort)?;
    let port_name = port.name.as_deref().unwrap_or_default();
    let mut addresses = Endpoints::default();
    for slice in slices.get(&key).into_iter().flatten() {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue; // FQDN slices name hosts, not pods.
        }
        let slice_port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or_default() == port_name);
        let Some(number) = slice_port.and_then(|p| p.port) else {
            continue;
        };
        let Ok(number) = u16::try_from(number) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let list = match eligibility(endpoint.conditions.as_ref()) {
                Eligibility::Ready => &mut addresses.ready,
                Eligibility::Terminating => &mut addresses.terminating,
                Eligibility::Never => continue,
            };
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    list.push(SocketAddr::new(ip, number));
                }
            }
        }
    }
    let Endpoints { ready, terminating } = &mut addresses;
    ready.sort();
    ready.dedup();
    terminating.sort();
    terminating.dedup();
    // Slices can disagree while a pod moves between them; ready wins, so that the address is
    // balanced with its peers and not held back as a fallback.
    terminating.retain(|a| ready.binary_search(a).is_err());
    Ok(addresses)
}

/// Sorts an endpoint by its conditions. The nil rules are those of the field docs of
/// `discovery.k8s.io/v1` `EndpointConditions` (k8s.io/api, as generated into k8s-openapi for
/// the Kubernetes version this crate targets):
/// - ready: "A nil value should be interpreted as \"true\"."
/// - serving: "A nil value should be interpreted as \"true\"."
/// - terminating: "A nil value should be interpreted as \"false\"."
///
/// kube-proxy reads them the same way. (Older docs said a nil `serving` should "defer to the
/// ready condition"; that only differs for `ready: false` with `serving` unset and
/// `terminating: true`, which the current rule makes a fallback.)
fn eligibility(conditions: Option<&EndpointConditions>) -> Eligibility {
    let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
    let serving = conditions.and_then(|c| c.serving).unwrap_or(true);
    let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
    if ready {
        Eligibility::Ready
    } else if serving && terminating {
        Eligibility::Terminating
    } else {
        Eligibility::Never
    }
}

fn port_text(port: &ServicePortRef) -> String {
    match port {
        ServicePortRef::Number(n) => n.to_string(),
        ServicePortRef::Name(name) => format!("named {name:?}"),
    }
}

/// The in-cluster DNS name of a Service, used as SNI / Host when a rule has no single host.
pub(super) fn service_dns_name(service: &ServiceRef) -> String {
    format!("{}.{}.svc", service.name, service.namespace)
}
