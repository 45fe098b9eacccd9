//! Every Kubernetes API call the controller makes, as data ([`API_ACCESS`]), and the RBAC grants
//! that follow from it for one deployment ([`grants`]).
//!
//! Nobody keeps this in sync by hand: two tests hold it to the code on one side and to the
//! chart on the other.
//! - `tests/support/mock_api.rs`, the mocked API server of `tests/cluster/`, derives every
//!   request's RBAC attributes ([`Request`]: verb, API group, resource/subresource, namespace)
//!   the way the API server's authorizer does, and fails the test for any request that
//!   [`grants`] does not permit. A test in `tests/cluster/rbac.rs` drives the controller through its whole life
//!   (sync, status patch, Events, Lease acquire/renew/release) and also fails when a grant goes
//!   unused, so a stale entry here fails too.
//! - `tests/cluster/chart_rbac.rs` renders the Helm chart (and reads `manifests/`) and fails unless its
//!   ClusterRoles and Roles grant exactly [`grants`]: nothing missing, nothing extra.

use std::collections::BTreeSet;

/// Where the controller needs an [`ApiAccess`], which decides the kind of role the chart grants
/// it with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// A cluster-scoped kind (IngressClass, IngressClassParams, GatewayClass): only a
    /// ClusterRole can grant it, even when the controller watches one namespace.
    ClusterScoped,
    /// A cluster-scoped kind read only while the controller watches every namespace (a
    /// ClusterRole then), and not at all with `--watch-namespace`: Namespaces, whose labels a
    /// Gateway listener's namespace selector reads, are then not watched (see
    /// `source::kubernetes`), so a one-namespace installation is granted nothing for them.
    EveryNamespaceOnly,
    /// A namespaced kind in the namespaces the controller watches: every namespace (a
    /// ClusterRole), or with `--watch-namespace` that one (a Role there).
    Watched,
    /// [`Scope::Watched`], and also in the controller's own namespace, where it reads the
    /// `--publish-service` Service and the `--default-certificate` Secret by name.
    WatchedAndOwn,
    /// Only in the controller's own namespace (a Role there): the leader-election Lease.
    Own,
}

/// One RBAC rule: API group (`""` for core), resource (`resource/subresource` for a
/// subresource), verbs, and where the controller needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ApiAccess {
    group: &'static str,
    resource: &'static str,
    verbs: &'static [&'static str],
    scope: Scope,
}

/// The API access the controller needs: the calls of `source::kubernetes` (list + watch per
/// kind), of `status` (Ingress status patch, Events, Lease) and of `gateway_status` (Gateway API
/// status). Enforced by tests, not by hand (see the
/// module docs): a call the code makes that is not listed here fails the test that made it
/// (`tests/support/mock_api.rs`), an entry the code no longer uses fails `tests/cluster/rbac.rs`, and a chart that grants anything else fails
/// `tests/cluster/chart_rbac.rs`.
///
/// Services need no `get`: the `--publish-service` Service is watched (field selector on its
/// name). Events need no `patch`: each diagnostic is one `create` (no Event series). Events
/// follow the object they are about, so with `--watch-namespace` only that namespace is granted:
/// Events about the cluster-scoped IngressClass and IngressClassParams (they belong in `default`)
/// would then be refused, so the Event poster skips them and those diagnostics are in the log
/// only (the chart says so).
///
/// Gateway API status (`cluster::gateway_status`): GatewayClass and Gateway status are ours
/// alone, written with a `patch` on `/status`; a route's `status.parents` is shared with other
/// controllers, so the route's `/status` is read (`get`) first and patched with the
/// resourceVersion it was read at. No `get` on the objects themselves (they are watched), and
/// no `update`.
const API_ACCESS: &[ApiAccess] = &[
    ApiAccess {
        group: "networking.k8s.io",
        resource: "ingresses",
        verbs: &["list", "watch"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "networking.k8s.io",
        resource: "ingresses/status",
        verbs: &["patch"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "networking.k8s.io",
        resource: "ingressclasses",
        verbs: &["list", "watch"],
        scope: Scope::ClusterScoped,
    },
    ApiAccess {
        group: "",
        resource: "services",
        verbs: &["list", "watch"],
        scope: Scope::WatchedAndOwn,
    },
    ApiAccess {
        group: "",
        resource: "secrets",
        verbs: &["list", "watch"],
        scope: Scope::WatchedAndOwn,
    },
    ApiAccess {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "portcullis.io",
        resource: "ingressclassparams",
        verbs: &["list", "watch"],
        scope: Scope::ClusterScoped,
    },
    // Gateway API: read whether or not its CRDs are installed (RBAC rules may name resources
    // that do not exist; the source treats their 404 as "not installed").
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "gatewayclasses",
        verbs: &["list", "watch"],
        scope: Scope::ClusterScoped,
    },
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "gateways",
        verbs: &["list", "watch"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "httproutes",
        verbs: &["list", "watch"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "grpcroutes",
        verbs: &["list", "watch"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "tlsroutes",
        verbs: &["list", "watch"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "backendtlspolicies",
        verbs: &["list", "watch"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "referencegrants",
        verbs: &["list", "watch"],
        scope: Scope::Watched,
    },
    // Gateway API status, written by the leader (see above).
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "gatewayclasses/status",
        verbs: &["patch"],
        scope: Scope::ClusterScoped,
    },
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "gateways/status",
        verbs: &["patch"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "httproutes/status",
        verbs: &["get", "patch"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "grpcroutes/status",
        verbs: &["get", "patch"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "gateway.networking.k8s.io",
        resource: "tlsroutes/status",
        verbs: &["get", "patch"],
        scope: Scope::Watched,
    },
    // Namespaces' labels, for a Gateway listener's `allowedRoutes.namespaces.selector`; not read
    // with --watch-namespace.
    ApiAccess {
        group: "",
        resource: "namespaces",
        verbs: &["list", "watch"],
        scope: Scope::EveryNamespaceOnly,
    },
    // The CA bundles (`ca.crt`) that BackendTLSPolicies name.
    ApiAccess {
        group: "",
        resource: "configmaps",
        verbs: &["list", "watch"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create"],
        scope: Scope::Watched,
    },
    ApiAccess {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        scope: Scope::Own,
    },
];

/// Where a granted rule applies: everywhere (a ClusterRole bound by a ClusterRoleBinding) or
/// in one namespace (a Role and its RoleBinding).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RoleScope {
    Cluster,
    Namespace(String),
}

/// One permission, as RBAC grants it: where, API group, resource, verb.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Grant {
    pub scope: RoleScope,
    pub group: String,
    pub resource: String,
    pub verb: String,
}

/// One API request as RBAC sees it: verb (`get`, `list`, `watch`, `create`, `update`, `patch`,
/// `delete`, `deletecollection`), API group, resource (`resource/subresource` for a
/// subresource) and namespace (`None`: a cluster-scoped kind, or every namespace).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Request {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
}

impl Grant {
    /// Whether this grant lets `request` through: the same group, resource and verb, and a
    /// cluster-wide grant or one in the request's namespace.
    pub fn permits(&self, request: &Request) -> bool {
        self.group == request.group
            && self.resource == request.resource
            && self.verb == request.verb
            && match &self.scope {
                RoleScope::Cluster => true,
                RoleScope::Namespace(ns) => request.namespace.as_deref() == Some(ns.as_str()),
            }
    }
}

/// What the chart must grant, exactly, to a controller in `own_namespace` (the release
/// namespace: the Lease's, the publish Service's, the default certificate's) that watches
/// `watch_namespace` (`None`: every namespace): [`API_ACCESS`] placed by its [`Scope`].
pub fn grants(own_namespace: &str, watch_namespace: Option<&str>) -> BTreeSet<Grant> {
    let own = || RoleScope::Namespace(own_namespace.to_string());
    let watched =
        || watch_namespace.map_or(RoleScope::Cluster, |ns| RoleScope::Namespace(ns.into()));
    let mut grants = BTreeSet::new();
    for access in API_ACCESS {
        let scopes = match access.scope {
            Scope::ClusterScoped => vec![RoleScope::Cluster],
            Scope::EveryNamespaceOnly if watch_namespace.is_none() => vec![RoleScope::Cluster],
            Scope::EveryNamespaceOnly => Vec::new(),
            Scope::Watched => vec![watched()],
            // Every namespace covers the own one; a watched namespace may be it (deduplicated).
            Scope::WatchedAndOwn if watch_namespace.is_none() => vec![RoleScope::Cluster],
            Scope::WatchedAndOwn => vec![watched(), own()],
            Scope::Own => vec![own()],
        };
        for scope in scopes {
            for verb in access.verbs {
                grants.insert(Grant {
                    scope: scope.clone(),
                    group: access.group.to_string(),
                    resource: access.resource.to_string(),
                    verb: verb.to_string(),
                });
            }
        }
    }
    grants
}

/// Whether any of `grants` lets `request` through.
pub fn permitted(grants: &BTreeSet<Grant>, request: &Request) -> bool {
    grants.iter().any(|g| g.permits(request))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> Request {
        Request {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
        }
    }

    #[test]
    fn every_entry_is_one_kind_with_known_verbs() {
        let mut seen = BTreeSet::new();
        for a in API_ACCESS {
            assert!(seen.insert((a.group, a.resource)), "{a:?} listed twice");
            assert!(!a.verbs.is_empty(), "{a:?} has no verbs");
            for verb in a.verbs {
                assert!(
                    [
                        "get",
                        "list",
                        "watch",
                        "create",
                        "update",
                        "patch",
                        "delete",
                        "deletecollection"
                    ]
                    .contains(verb),
                    "{a:?}: unknown verb {verb}"
                );
            }
        }
    }

    #[test]
    fn scopes_place_grants_like_rbac() {
        let everywhere = grants("ingress", None);
        let lease = |ns| request("update", "coordination.k8s.io", "leases", Some(ns));
        assert!(permitted(&everywhere, &lease("ingress")));
        assert!(
            !permitted(&everywhere, &lease("apps")),
            "the Lease only in our namespace"
        );
        let all_ingresses = request("list", "networking.k8s.io", "ingresses", None);
        assert!(permitted(&everywhere, &all_ingresses));

        let one = grants("ingress", Some("apps"));
        assert!(
            !permitted(&one, &all_ingresses),
            "a Role cannot list every namespace"
        );
        let ingresses = |ns| request("watch", "networking.k8s.io", "ingresses", Some(ns));
        assert!(permitted(&one, &ingresses("apps")));
        assert!(!permitted(&one, &ingresses("ingress")));
        let services = |ns| request("list", "", "services", Some(ns));
        assert!(permitted(&one, &services("apps")) && permitted(&one, &services("ingress")));
        assert!(!permitted(&one, &services("other")));
        let classes = request("list", "networking.k8s.io", "ingressclasses", None);
        assert!(
            permitted(&one, &classes),
            "cluster-scoped kinds stay cluster-wide"
        );
        // Namespaces: read cluster-wide, but only when every namespace is watched.
        let namespaces = request("watch", "", "namespaces", None);
        assert!(permitted(&everywhere, &namespaces));
        assert!(
            !permitted(&one, &namespaces),
            "no Namespaces with --watch-namespace"
        );
        // The verb, the subresource and the group all count.
        let get_secret = request("get", "", "secrets", Some("apps"));
        assert!(!permitted(&everywhere, &get_secret));
        let patch_ingress = request("patch", "networking.k8s.io", "ingresses", Some("apps"));
        assert!(!permitted(&everywhere, &patch_ingress));
        let core_events = request("create", "", "events", Some("apps"));
        assert!(!permitted(&everywhere, &core_events));
    }
}
