//! One Ingress → a [`Plan`]: its hosts, paths, backends, default backend and TLS entries,
//! validated against the Ingress spec. Invalid rules and paths are reported and skipped; the
//! rest of the Ingress still counts.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};

use crate::model::annotations::IngressOptions;
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use crate::table::host::HostMatch;
use crate::table::request_match::RequestConditions;
use crate::table::route::{PathMatch, Port, RouteAction};
use crate::table::upstream::{BackendTls, ServicePortRef, ServiceRef};

/// Where in the Ingress a plan entry came from. Spelled out only when a diagnostic needs it:
/// formatting every field path of 10 000 Ingresses on every build cost more than planning them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    /// `spec.defaultBackend`.
    DefaultBackend,
    /// `spec.rules[i].host`.
    RuleHost(usize),
    /// `spec.rules[i].http.paths[j]`.
    Path(usize, usize),
    /// `spec.rules[i].http.paths[j].backend.service`, or `spec.defaultBackend.service`.
    Backend(Option<(usize, usize)>),
    /// A Gateway API route's `spec.hostnames` (or, without any, its listener's hostname).
    RouteHostnames,
    /// A Gateway API route's `spec.rules[i].matches[j]`.
    RouteMatch(usize, usize),
    /// A Gateway API route's `spec.rules[i].backendRefs[j]`.
    RouteBackend(usize, usize),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::DefaultBackend => f.write_str("spec.defaultBackend"),
            Field::RuleHost(i) => write!(f, "spec.rules[{i}].host"),
            Field::Path(i, j) => write!(f, "spec.rules[{i}].http.paths[{j}]"),
            Field::Backend(None) => f.write_str("spec.defaultBackend.service"),
            Field::Backend(Some((i, j))) => {
                write!(f, "spec.rules[{i}].http.paths[{j}].backend.service")
            }
            Field::RouteHostnames => f.write_str("spec.hostnames"),
            Field::RouteMatch(i, j) => write!(f, "spec.rules[{i}].matches[{j}]"),
            Field::RouteBackend(i, j) => write!(f, "spec.rules[{i}].backendRefs[{j}]"),
        }
    }
}

/// A backend Service reference and the field it came from (`...backend.service`).
#[derive(Debug, Clone)]
pub(super) struct BackendSpec {
    pub(crate) service: ServiceRef,
    pub(crate) field: Field,
}

impl BackendSpec {
    /// The backend of a Gateway API rule that only redirects: no Service (empty name), so
    /// the merge gives its paths an upstream without endpoints that is never contacted.
    pub(crate) fn placeholder(namespace: &str, field: Field) -> BackendSpec {
        BackendSpec {
            service: ServiceRef {
                namespace: namespace.to_string(),
                name: String::new(),
                port: ServicePortRef::Number(1),
            },
            field,
        }
    }

    pub(crate) fn is_placeholder(&self) -> bool {
        self.service.name.is_empty()
    }
}

/// One path of a host.
#[derive(Debug, Clone)]
pub(super) struct PathSpec {
    pub(crate) path: PathMatch,
    /// `path` as written: what a regex host (`use-regex`, `rewrite-target`) compiles.
    pub(crate) raw: String,
    pub(crate) backend: BackendSpec,
    /// `spec.rules[i].http.paths[j]`.
    pub(crate) field: Field,
    /// Gateway API matches on method, headers and query; `None` for Ingress paths.
    pub(crate) conditions: Option<Arc<RequestConditions>>,
    /// Gateway API weighted `backendRefs` (`backend` is the first of them); empty: every
    /// request goes to `backend`.
    pub(crate) weighted: Vec<(BackendSpec, u32)>,
    /// Gateway API: served on this port only (the route's listeners for this host are all of
    /// one protocol); `None`: both.
    pub(crate) port: Option<Port>,
}

/// Everything one Ingress says about one host (rules with the same host are merged).
#[derive(Debug, Clone)]
pub(super) struct HostRules {
    pub(crate) host: HostMatch,
    /// `spec.rules[i].host` of the first rule naming it (`spec.defaultBackend` for a catch-all
    /// fed only by the default backend).
    pub(crate) field: Field,
    pub(crate) paths: Vec<PathSpec>,
}

/// A `spec.tls` entry.
#[derive(Debug, Clone)]
pub(super) struct TlsSpec {
    /// `None`: every rule host of the Ingress.
    hosts: Option<Vec<HostMatch>>,
    pub(crate) secret_name: String,
    /// The Secret's namespace when not the plan's (a Gateway's certificate, possibly granted
    /// across namespaces by a ReferenceGrant).
    pub(crate) namespace: Option<String>,
    /// `spec.tls[k]`.
    pub(crate) field: String,
}

/// A validated Ingress, ready to merge into virtual hosts.
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(crate) object: ObjectRef,
    pub(crate) namespace: String,
    pub(crate) options: IngressOptions,
    pub(crate) hosts: Vec<HostRules>,
    pub(crate) default_backend: Option<BackendSpec>,
    tls: Vec<TlsSpec>,
    /// What Gateway API says that annotations cannot (`None` for an Ingress).
    pub(crate) gateway: Option<GatewayExtras>,
}

/// What a plan from a Gateway API route carries beyond an Ingress's.
#[derive(Debug, Clone, Default)]
pub(super) struct GatewayExtras {
    /// A `RequestRedirect` filter: what every request of the plan gets instead of the pod.
    pub(crate) action: Option<RouteAction>,
    /// A BackendTLSPolicy of the backend: re-encrypt to it, verifying this name with this CA.
    pub(crate) backend_tls: Option<BackendTls>,
}

impl Plan {
    /// A plan made by the Gateway API translation (`model::gateway`): one route rule's
    /// hosts and paths, on a listener whose certificate `tls` names.
    pub(crate) fn from_route(
        object: ObjectRef,
        options: IngressOptions,
        hosts: Vec<HostRules>,
        tls: Option<TlsSpec>,
        gateway: GatewayExtras,
    ) -> Plan {
        Plan {
            namespace: object.namespace.clone().unwrap_or_default(),
            object,
            options,
            hosts,
            default_backend: None,
            tls: tls.into_iter().collect(),
            gateway: Some(gateway),
        }
    }
}

impl TlsSpec {
    /// A Gateway listener's certificate for `hosts`: Secret `namespace/name`.
    pub(crate) fn listener(
        namespace: &str,
        name: &str,
        hosts: Vec<HostMatch>,
        field: String,
    ) -> TlsSpec {
        TlsSpec {
            hosts: Some(hosts),
            secret_name: name.to_string(),
            namespace: Some(namespace.to_string()),
            field,
        }
    }
}

impl Plan {
    /// The TLS entry naming the Secret for `host`: an entry listing it exactly first, then one
    /// whose wildcard covers it, then one without hosts.
    pub(crate) fn tls_for(&self, host: &HostMatch) -> Option<&TlsSpec> {
        let listed = |want: &dyn Fn(&HostMatch) -> bool| {
            self.tls
                .iter()
                .find(|t| t.hosts.as_ref().is_some_and(|hosts| hosts.iter().any(want)))
        };
        listed(&|h| h == host)
            .or_else(|| {
                listed(&|h| match (h, host) {
                    (HostMatch::Wildcard(parent), HostMatch::Exact(name)) => {
                        crate::table::host::wildcard_parent(name) == Some(parent.as_str())
                    }
                    _ => false,
                })
            })
            .or_else(|| self.tls.iter().find(|t| t.hosts.is_none()))
    }
}

/// Validates `ingress` (already known to be ours, with valid annotations) into a plan.
pub(super) fn plan(
    ingress: &Ingress,
    object: ObjectRef,
    options: IngressOptions,
    diagnostics: &mut Vec<Diagnostic>,
) -> Plan {
    let namespace = object.namespace.clone().unwrap_or_default();
    let mut plan = Plan {
        object,
        namespace,
        options,
        hosts: Vec::new(),
        default_backend: None,
        tls: Vec::new(),
        gateway: None,
    };
    let Some(spec) = ingress.spec.as_ref() else {
        return plan;
    };
    let mut errors = Vec::new();
    let error = |field: String, message: String| {
        Diagnostic::error(plan.object.clone(), field, Reason::InvalidSpec, message)
    };

    if let Some(backend) = &spec.default_backend {
        match backend_spec(backend, &plan.namespace, None) {
            Ok(b) => plan.default_backend = Some(b),
            Err((field, message)) => errors.push(error(field, message)),
        }
    }

    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match HostMatch::parse(rule.host.as_deref().unwrap_or_default()) {
            Ok(host) => host,
            Err(e) => {
                let field = Field::RuleHost(i).to_string();
                errors.push(error(field, format!("{e}; rule skipped")));
                continue;
            }
        };
        let rule_paths = rule.http.as_ref().map_or(&[][..], |h| &h.paths[..]);
        let mut paths = Vec::with_capacity(rule_paths.len());
        for (j, p) in rule_paths.iter().enumerate() {
            let field = Field::Path(i, j);
            let raw = p.path.as_deref().unwrap_or("/");
            if !raw.starts_with('/') {
                errors.push(error(
                    format!("{field}.path"),
                    format!("path {raw:?} must start with \"/\"; path skipped"),
                ));
                continue;
            }
            let path = match p.path_type.as_str() {
                "Exact" => PathMatch::Exact(raw.to_string()),
                "Prefix" | "ImplementationSpecific" => PathMatch::prefix(raw),
                other => {
                    errors.push(error(
                        format!("{field}.pathType"),
                        format!(
                            "pathType {other:?} is not Exact, Prefix or ImplementationSpecific; path skipped"
                        ),
                    ));
                    continue;
                }
            };
            match backend_spec(&p.backend, &plan.namespace, Some((i, j))) {
                Ok(backend) => paths.push(PathSpec {
                    path,
                    raw: raw.to_string(),
                    backend,
                    field,
                    conditions: None,
                    weighted: Vec::new(),
                    port: None,
                }),
                Err((field, message)) => errors.push(error(field, message)),
            }
        }
        match plan.hosts.iter_mut().find(|h| h.host == host) {
            Some(existing) => existing.paths.extend(paths),
            None => plan.hosts.push(HostRules {
                host,
                field: Field::RuleHost(i),
                paths,
            }),
        }
    }
    // The default backend also feeds the catch-all (it routes every host nobody claims).
    if plan.default_backend.is_some() && !plan.hosts.iter().any(|h| h.host == HostMatch::Any) {
        plan.hosts.push(HostRules {
            host: HostMatch::Any,
            field: Field::DefaultBackend,
            paths: Vec::new(),
        });
    }

    for (k, tls) in spec.tls.iter().flatten().enumerate() {
        let field = format!("spec.tls[{k}]");
        let Some(secret_name) = tls.secret_name.clone().filter(|s| !s.is_empty()) else {
            // The spec allows it (SNI-only); nothing to load.
            continue;
        };
        let hosts = match &tls.hosts {
            None => None,
            Some(list) if list.is_empty() => None,
            Some(list) => {
                let mut hosts = Vec::new();
                for (h, host) in list.iter().enumerate() {
                    match HostMatch::parse(host) {
                        Ok(HostMatch::Any) | Err(_) => errors.push(error(
                            format!("{field}.hosts[{h}]"),
                            format!("TLS host {host:?} is not a valid host name; ignored"),
                        )),
                        Ok(host) => hosts.push(host),
                    }
                }
                Some(hosts)
            }
        };
        plan.tls.push(TlsSpec {
            hosts,
            secret_name,
            namespace: None,
            field,
        });
    }
    diagnostics.extend(errors);
    plan
}

/// `backend.service.{name, port}` of path `(i, j)` (`None`: the default backend) → a
/// [`BackendSpec`], or `(field, message)`.
fn backend_spec(
    backend: &IngressBackend,
    namespace: &str,
    path: Option<(usize, usize)>,
) -> Result<BackendSpec, (String, String)> {
    let service_field = Field::Backend(path);
    let field = || match path {
        None => Field::DefaultBackend.to_string(),
        Some((i, j)) => format!("{}.backend", Field::Path(i, j)),
    };
    if backend.resource.is_some() {
        return Err((
            format!("{}.resource", field()),
            "resource backends are not supported (only Services); path skipped".to_string(),
        ));
    }
    let Some(service) = &backend.service else {
        return Err((field(), "backend has no service; path skipped".to_string()));
    };
    let field = service_field;
    let port = match service.port.as_ref() {
        Some(p) => match (p.number, p.name.as_deref()) {
            (Some(n), _) if (1..=65_535).contains(&n) => Some(ServicePortRef::Number(n)),
            (None, Some(name)) if !name.is_empty() => Some(ServicePortRef::Name(name.to_string())),
            _ => None,
        },
        None => None,
    };
    let Some(port) = port else {
        return Err((
            format!("{field}.port"),
            "service port needs a number (1-65535) or a name; path skipped".to_string(),
        ));
    };
    if service.name.is_empty() {
        return Err((
            format!("{field}.name"),
            "service name is empty; path skipped".to_string(),
        ));
    }
    Ok(BackendSpec {
        service: ServiceRef {
            namespace: namespace.to_string(),
            name: service.name.clone(),
            port,
        },
        field,
    })
}
