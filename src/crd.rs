//! `IngressClassParams`: class-wide settings that do not belong in per-Ingress annotations.
//!
//! Cluster-scoped, because it is owned by the platform team that owns the IngressClass; a
//! tenant who can edit Ingresses in one namespace must not be able to change it. Referenced
//! from `IngressClass.spec.parameters` (`apiGroup: portcullis.io`, `kind: IngressClassParams`).
//! `portcullis crd` prints the CRD generated from these types; `crds/` holds that output.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Class-wide settings for every Ingress of the IngressClass that references this object.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "portcullis.io",
    version = "v1alpha1",
    kind = "IngressClassParams",
    plural = "ingressclassparams",
    shortname = "icp",
    doc = "Class-wide settings for Portcullis, referenced from IngressClass.spec.parameters"
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = no_null_in_enums)]
pub struct IngressClassParamsSpec {
    /// Defaults for the per-Ingress annotations; an annotation on an Ingress wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) defaults: Option<AnnotationDefaults>,
    /// Certificate served to TLS clients whose SNI matches no terminated host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) default_certificate: Option<SecretReference>,
    /// TLS policy of the :443 listener for terminated and re-encrypted hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls: Option<TlsPolicy>,
    /// Who may switch a host to pass-through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) passthrough: Option<PassthroughPolicy>,
    /// Source CIDRs allowed to send a PROXY protocol header to our listeners.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = CIDR_PATTERN)))]
    pub(crate) trusted_proxy_protocol_cidrs: Vec<String>,
    /// Source CIDRs whose incoming `X-Forwarded-*` / `Forwarded` headers are kept (appended to);
    /// from anyone else they are overwritten.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = CIDR_PATTERN)))]
    pub(crate) trusted_forwarded_cidrs: Vec<String>,
    /// Timeouts, as durations like `5s`, `500ms`, `2m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timeouts: Option<Timeouts>,
    /// Limits on connections and request sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) limits: Option<Limits>,
    /// What happens to an Ingress of this class carrying an ingress-nginx or HAProxy annotation
    /// Portcullis does not support (docs/migrating.md lists them all): `Reject` (default) refuses
    /// the Ingress when ignoring the annotation would change who may reach the service, what
    /// the client receives or where the request goes; `Warn` serves it with a warning; `Ignore`
    /// serves it without a diagnostic. An unknown `portcullis.io/` annotation is always refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) unsupported_annotations: Option<UnsupportedAnnotations>,
}

/// Values of `unsupportedAnnotations`: `Reject` (refuse the Ingress, the default), `Warn`
/// (serve it, warn) or `Ignore` (serve it, say nothing).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub(crate) enum UnsupportedAnnotations {
    // No doc comments on the variants: they would turn the schema's `enum` into a `oneOf`.
    #[default]
    Reject,
    Warn,
    Ignore,
}

/// Class-wide defaults for the `portcullis.io/*` annotations.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AnnotationDefaults {
    /// Default of `portcullis.io/ssl-redirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ssl_redirect: Option<bool>,
    /// Default of `portcullis.io/hsts` (the header value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hsts: Option<String>,
    /// Default of `portcullis.io/load-balance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) load_balance: Option<LoadBalanceName>,
    /// Defaults of `portcullis.io/health-check*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) health_check: Option<HealthCheckDefaults>,
    /// Default of `portcullis.io/forwarded-headers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) forwarded_headers: Option<bool>,
    /// Default of `portcullis.io/proxy-body-size`: the largest request body, e.g. `1m` (what
    /// ingress-nginx's ConfigMap sets by default), `0` for no limit. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) proxy_body_size: Option<String>,
    /// Default of `portcullis.io/allow-source-range` (ingress-nginx's ConfigMap
    /// `whitelist-source-range`): only these client CIDRs reach Ingresses without their own
    /// allow-list; others get 403. Unset: no allow-list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = CIDR_PATTERN)))]
    pub(crate) allow_source_range: Vec<String>,
    /// Default of `portcullis.io/deny-source-range` (ingress-nginx's ConfigMap
    /// `denylist-source-range`): these client CIDRs get 403 from Ingresses without their own
    /// deny-list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = CIDR_PATTERN)))]
    pub(crate) deny_source_range: Vec<String>,
}

/// Values of `portcullis.io/load-balance`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LoadBalanceName {
    RoundRobin,
    LeastRequest,
    Random,
}

/// Values of `portcullis.io/health-check`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum HealthCheckKind {
    Http,
    Tls,
    Tcp,
    None,
}

/// Class-wide health-check defaults.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HealthCheckDefaults {
    /// Probe kind for terminate/reencrypt hosts (pass-through hosts default to `tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kind: Option<HealthCheckKind>,
    /// HTTP probe path, e.g. `/healthz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^/"))]
    pub(crate) path: Option<String>,
    /// HTTP probe method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) method: Option<HealthCheckMethod>,
    /// Probe interval, e.g. `5s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub(crate) interval: Option<String>,
}

/// Methods an HTTP health check may use.
#[allow(
    clippy::upper_case_acronyms,
    reason = "the variant names are the CRD's values (serde and the schema)"
)]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub(crate) enum HealthCheckMethod {
    HEAD,
    GET,
}

/// A Secret by namespace and name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub(crate) struct SecretReference {
    /// Namespace of the Secret (a DNS-1123 label).
    #[schemars(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN))]
    pub(crate) namespace: String,
    /// Name of the Secret (a DNS-1123 subdomain).
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub(crate) name: String,
}

/// Minimum TLS protocol version.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub(crate) enum TlsVersion {
    #[serde(rename = "1.2")]
    Tls12,
    #[serde(rename = "1.3")]
    Tls13,
}

/// TLS policy for the listener.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TlsPolicy {
    /// Lowest TLS version offered (default `1.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) min_version: Option<TlsVersion>,
    /// Cipher suites by IANA name (e.g. `TLS13_AES_128_GCM_SHA256`,
    /// `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`); default: rustls' modern set (AEAD only,
    /// forward-secret only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^TLS(13)?_[A-Z0-9_]+$")))]
    pub(crate) cipher_suites: Vec<String>,
    /// Prefer the post-quantum hybrid key exchange X25519MLKEM768 (default `true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) post_quantum: Option<bool>,
}

/// Who may use pass-through.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PassthroughPolicy {
    /// Whether any Ingress of the class may use pass-through (default `true`).
    #[serde(default = "yes")]
    pub(crate) allowed: bool,
    /// When set, only Ingresses in these namespaces may use pass-through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN)))]
    pub(crate) namespaces: Option<Vec<String>>,
}

/// A namespace name (DNS-1123 label), as the API server checks it.
const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// An object name (DNS-1123 subdomain), as the API server checks it for Secrets.
const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The shape of an IPv4 or IPv6 CIDR (`10.0.0.0/8`, `fd00::/8`), so the API server rejects an
/// address without a prefix length or an out-of-range prefix; the controller still parses it.
const CIDR_PATTERN: &str = r"^(([0-9]{1,3}\.){3}[0-9]{1,3}/([0-9]|[12][0-9]|3[0-2])|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*/([0-9]|[1-9][0-9]|1[01][0-9]|12[0-8]))$";

fn yes() -> bool {
    true
}

/// Removes `null` from every `enum` of the schema (recursively). schemars lists `null` among
/// the values of an optional enum field (`Option<LoadBalanceName>`), which kubectl's
/// client-side validation of the CRD rejects (`kubectl apply -f crds/` failed on a 1.24 API
/// server); `nullable: true`, which the generator adds for the same field, already says that
/// null is allowed, and is what a structural schema uses.
fn no_null_in_enums(schema: &mut schemars::Schema) {
    if let Some(values) = schema
        .get_mut("enum")
        .and_then(serde_json::Value::as_array_mut)
    {
        values.retain(|value| !value.is_null());
    }
    schemars::transform::transform_subschemas(&mut no_null_in_enums, schema);
}

/// Timeouts as durations (`500ms`, `5s`, `2m`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Timeouts {
    /// Deadline to receive a whole ClientHello on :443 (default `10s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub(crate) client_hello: Option<String>,
    /// Deadline to receive a request's headers (slowloris; default `30s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub(crate) header_read: Option<String>,
    /// Idle keep-alive timeout of HTTP client connections (default `60s`); byte tunnels have
    /// `tunnelIdle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub(crate) idle: Option<String>,
    /// Idle timeout of byte tunnels: pass-through TLS streams and upgraded (websocket)
    /// connections, ended after this long without a byte either way (default `60m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub(crate) tunnel_idle: Option<String>,
    /// Upstream connect timeout (default `5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub(crate) connect: Option<String>,
    /// Upstream response-headers timeout (default `60s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m)$"))]
    pub(crate) upstream_response: Option<String>,
}

/// Limits.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Limits {
    /// Concurrent client connections per listener; beyond it, accepted and closed (default 50000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub(crate) max_connections: Option<u32>,
    /// Largest request header section in bytes; beyond it, 431 (default 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024))]
    pub(crate) max_header_bytes: Option<u32>,
    /// Largest ClientHello in bytes (default 16384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 512, max = 65536))]
    pub(crate) max_client_hello_bytes: Option<u32>,
    /// Status of a request refused by `limit-rps` / `limit-rpm`, 400 to 599 (ingress-nginx's
    /// `limit-req-status-code`; default 503, 429 is the usual choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 400, max = 599))]
    pub(crate) rate_limit_status: Option<u16>,
    /// Status of a request refused by `limit-connections`, 400 to 599 (ingress-nginx's
    /// `limit-conn-status-code`; default 503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 400, max = 599))]
    pub(crate) connection_limit_status: Option<u16>,
}
