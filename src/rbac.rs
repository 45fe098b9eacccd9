//! Every Kubernetes API call the controller makes, as data: the Helm chart's RBAC rules are
//! checked against this list by a test, so the chart grants exactly what the code uses.

/// One RBAC rule: API group (`""` for core), resource, verbs, and whether it is cluster-wide
/// (ClusterRole) or only in the controller's own namespace (Role).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiAccess {
    pub group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    pub cluster_wide: bool,
}

/// The API access the controller needs. Keep in sync with `source::kubernetes` and `status`.
///
/// Services need no `get`: the `--publish-service` Service is watched (field selector on its
/// name). Events need no `patch`: each diagnostic is one `create` (no Event series).
pub const API_ACCESS: &[ApiAccess] = &[
    ApiAccess {
        group: "networking.k8s.io",
        resource: "ingresses",
        verbs: &["list", "watch"],
        cluster_wide: true,
    },
    ApiAccess {
        group: "networking.k8s.io",
        resource: "ingresses/status",
        verbs: &["patch"],
        cluster_wide: true,
    },
    ApiAccess {
        group: "networking.k8s.io",
        resource: "ingressclasses",
        verbs: &["list", "watch"],
        cluster_wide: true,
    },
    ApiAccess {
        group: "",
        resource: "services",
        verbs: &["list", "watch"],
        cluster_wide: true,
    },
    ApiAccess {
        group: "",
        resource: "secrets",
        verbs: &["list", "watch"],
        cluster_wide: true,
    },
    ApiAccess {
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch"],
        cluster_wide: true,
    },
    ApiAccess {
        group: "portcullis.io",
        resource: "ingressclassparams",
        verbs: &["list", "watch"],
        cluster_wide: true,
    },
    ApiAccess {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create"],
        cluster_wide: true,
    },
    ApiAccess {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        cluster_wide: false,
    },
];
