//! IngressClass selection (which Ingresses are ours) and IngressClassParams → typed class-wide
//! settings ([`ClassSettings`], annotation defaults, pass-through policy, default certificate).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};

use crate::crd::{
    AnnotationDefaults, HealthCheckMethod, IngressClassParams, IngressClassParamsSpec,
    LoadBalanceName, TlsVersion, UnsupportedAnnotations,
};
use crate::model::annotations::{
    BODY_SIZE_SYNTAX, DurationSyntax, MIN_HEALTH_INTERVAL, OptionDefaults, parse_body_size,
    parse_duration,
};
use crate::settings::BuildSettings;
use crate::table::ClassSettings;
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use crate::table::source_ranges;
use crate::table::upstream::LoadBalance;

/// Annotation that marks the cluster's default IngressClass.
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// The pre-IngressClass way to pick a controller.
const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";

/// Who may switch a host to pass-through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PassthroughPolicy {
    allowed: bool,
    /// `None`: every namespace.
    namespaces: Option<Vec<String>>,
}

impl PassthroughPolicy {
    pub(crate) fn permits(&self, namespace: &str) -> bool {
        self.allowed
            && self
                .namespaces
                .as_ref()
                .is_none_or(|list| list.iter().any(|ns| ns == namespace))
    }
}

/// What an IngressClass's parameters mean for its Ingresses and for the table.
#[derive(Debug, Clone)]
pub(super) struct ClassPolicy {
    pub(crate) defaults: OptionDefaults,
    pub(crate) passthrough: PassthroughPolicy,
    pub(crate) settings: ClassSettings,
    pub(crate) default_certificate: Option<(String, String)>,
    /// What an unsupported annotation does to an Ingress of the class (`Reject` by default).
    pub(crate) unsupported_annotations: UnsupportedAnnotations,
}

impl Default for ClassPolicy {
    fn default() -> Self {
        ClassPolicy {
            defaults: OptionDefaults::default(),
            passthrough: PassthroughPolicy {
                allowed: true,
                namespaces: None,
            },
            settings: ClassSettings::default(),
            default_certificate: None,
            unsupported_annotations: UnsupportedAnnotations::default(),
        }
    }
}

/// Our IngressClass, resolved once per build.
///
/// An instance serves one class: `--ingress-class` names it and `--controller-class` is the
/// `spec.controller` it must carry, as ingress-nginx pairs its `--ingress-class` and
/// `--controller-class`. Every other IngressClass, even one naming our controller value, is
/// another installation's: its Ingresses, its parameters and their diagnostics are not ours.
/// So an internal and an external installation in one cluster never serve, report on or
/// write status for each other's Ingresses.
pub(super) struct Classes {
    class_name: String,
    /// The policy of the IngressClass `--ingress-class` when it names our controller;
    /// `None` when there is no such object (see [`Classes::fallback`]) or it is not ours.
    ours: Option<ClassPolicy>,
    /// An IngressClass named like our `--ingress-class` belongs to another controller.
    name_taken: bool,
    /// Our IngressClass is marked the cluster's default: class-less Ingresses are ours.
    is_default: bool,
    /// Policy for Ingresses of our class name when no IngressClass object of that name exists
    /// (a manifest directory without one; a class name alone cannot collide with another
    /// installation's, whose class name differs).
    fallback: ClassPolicy,
}

impl Classes {
    /// Reads our IngressClass and the params it references. Diagnostics for bad params, of
    /// our class only.
    pub(crate) fn new(
        classes: &[Arc<IngressClass>],
        params: &[Arc<IngressClassParams>],
        settings: &BuildSettings,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Classes {
        let params_by_name: HashMap<&str, &IngressClassParams> = params
            .iter()
            .filter_map(|p| Some((p.metadata.name.as_deref()?, &**p)))
            .collect();
        let mut ours = None;
        let mut name_taken = false;
        let mut is_default = false;
        // A cluster holds one IngressClass of a name.
        let named = classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(settings.ingress_class.as_str()));
        if let Some(class) = named {
            let controller = class.spec.as_ref().and_then(|s| s.controller.as_deref());
            if controller == Some(settings.controller_class.as_str()) {
                is_default = class
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION))
                    .is_some_and(|v| v == "true");
                let policy =
                    policy_of(class, &settings.ingress_class, &params_by_name, diagnostics);
                ours = Some(policy);
            } else {
                name_taken = true;
            }
        }
        Classes {
            class_name: settings.ingress_class.clone(),
            ours,
            name_taken,
            is_default,
            fallback: ClassPolicy::default(),
        }
    }

    /// The policy for `ingress` if it is ours, `None` if it belongs to someone else.
    pub(crate) fn select(&self, ingress: &Ingress) -> Option<&ClassPolicy> {
        let class_name = ingress
            .spec
            .as_ref()
            .and_then(|s| s.ingress_class_name.as_deref());
        match class_name {
            Some(name) => self.by_name(name),
            None => {
                let legacy = ingress
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(LEGACY_CLASS_ANNOTATION));
                match legacy {
                    Some(name) => self.by_name(name),
                    None => self.ours.as_ref().filter(|_| self.is_default),
                }
            }
        }
    }

    fn by_name(&self, name: &str) -> Option<&ClassPolicy> {
        if name != self.class_name || self.name_taken {
            return None;
        }
        Some(self.ours.as_ref().unwrap_or(&self.fallback))
    }

    /// The policy whose params set the table-wide settings: our class's.
    pub(crate) fn primary(&self) -> &ClassPolicy {
        self.ours.as_ref().unwrap_or(&self.fallback)
    }
}

fn policy_of(
    class: &IngressClass,
    name: &str,
    params: &HashMap<&str, &IngressClassParams>,
    diagnostics: &mut Vec<Diagnostic>,
) -> ClassPolicy {
    let Some(reference) = class.spec.as_ref().and_then(|s| s.parameters.as_ref()) else {
        return ClassPolicy::default();
    };
    let object = ObjectRef::cluster("IngressClass", name);
    let field = "spec.parameters";
    if reference.api_group.as_deref() != Some("portcullis.io")
        || reference.kind != "IngressClassParams"
    {
        diagnostics.push(Diagnostic::error(
            object,
            field,
            Reason::InvalidParams,
            format!(
                "parameters must reference apiGroup portcullis.io, kind IngressClassParams (got {}/{}); using defaults",
                reference.api_group.as_deref().unwrap_or(""),
                reference.kind
            ),
        ));
        return ClassPolicy::default();
    }
    if reference.scope.as_deref() == Some("Namespace") {
        diagnostics.push(Diagnostic::error(
            object,
            field,
            Reason::InvalidParams,
            "IngressClassParams is cluster-scoped: scope must be Cluster; using defaults",
        ));
        return ClassPolicy::default();
    }
    let Some(found) = params.get(reference.name.as_str()) else {
        diagnostics.push(Diagnostic::error(
            object,
            field,
            Reason::InvalidParams,
            format!(
                "IngressClassParams {} does not exist; using defaults",
                reference.name
            ),
        ));
        return ClassPolicy::default();
    };
    read_params(&reference.name, &found.spec, diagnostics)
}

// === impl params → ClassPolicy ===

/// Collects `InvalidParams` diagnostics about one IngressClassParams object.
struct ParamsReader<'a> {
    object: ObjectRef,
    diagnostics: &'a mut Vec<Diagnostic>,
}

impl ParamsReader<'_> {
    fn bad(&mut self, field: &str, value: &str, accepted: &str) {
        self.diagnostics.push(Diagnostic::error(
            self.object.clone(),
            field,
            Reason::InvalidParams,
            format!("{value:?} is not accepted (accepted: {accepted}); the default is used"),
        ));
    }

    fn duration(&mut self, field: &str, value: Option<&String>, min: Duration) -> Option<Duration> {
        let value = value?;
        match parse_duration(value, DurationSyntax::Manifest) {
            Ok(d) if d >= min && !d.is_zero() => Some(d),
            _ => {
                let accepted = format!(
                    "a duration of at least {}ms like 500ms, 5s or 2m",
                    min.as_millis().max(1)
                );
                self.bad(field, value, &accepted);
                None
            }
        }
    }

    fn cidrs(&mut self, field: &str, values: &[String]) -> Option<Vec<IpNet>> {
        let mut out = Vec::new();
        for (i, value) in values.iter().enumerate() {
            match IpNet::from_str(value) {
                Ok(net) => out.push(net),
                Err(_) => {
                    self.bad(
                        &format!("{field}[{i}]"),
                        value,
                        "a CIDR like 10.0.0.0/8 or fd00::/8",
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    /// `defaults.allowSourceRange` / `defaults.denySourceRange`. They guard access, so a bad
    /// entry (in either list) fails closed, never open: every client is denied by the class's
    /// deny-list until it is fixed.
    fn source_range_defaults(&mut self, d: &AnnotationDefaults, defaults: &mut OptionDefaults) {
        let mut fail_closed = false;
        for (field, values, slot) in [
            (
                "spec.defaults.allowSourceRange",
                &d.allow_source_range,
                &mut defaults.allow_source_range,
            ),
            (
                "spec.defaults.denySourceRange",
                &d.deny_source_range,
                &mut defaults.deny_source_range,
            ),
        ] {
            for (i, value) in values.iter().enumerate() {
                match source_ranges::parse_list(value).as_deref() {
                    Some([net]) => slot.push(*net),
                    _ => {
                        fail_closed = true;
                        self.diagnostics.push(Diagnostic::error(
                            self.object.clone(),
                            format!("{field}[{i}]"),
                            Reason::InvalidParams,
                            format!(
                                "{value:?} is not accepted (accepted: a CIDR like 10.0.0.0/8 or fd00::/8); every client is denied until it is fixed"
                            ),
                        ));
                    }
                }
            }
        }
        if fail_closed {
            defaults.deny_source_range = vec![
                IpNet::V4(ipnet::Ipv4Net::default()),
                IpNet::V6(ipnet::Ipv6Net::default()),
            ];
        }
    }

    fn limit(&mut self, field: &str, value: Option<u32>, min: u32, max: u32) -> Option<u32> {
        let value = value?;
        if (min..=max).contains(&value) {
            Some(value)
        } else {
            self.bad(field, &value.to_string(), &format!("{min} to {max}"));
            None
        }
    }
}

fn read_params(
    name: &str,
    spec: &IngressClassParamsSpec,
    diagnostics: &mut Vec<Diagnostic>,
) -> ClassPolicy {
    let object = ObjectRef::cluster("IngressClassParams", name);
    let mut r = ParamsReader {
        object,
        diagnostics,
    };
    let mut policy = ClassPolicy::default();

    if let Some(d) = &spec.defaults {
        let defaults = &mut policy.defaults;
        if let Some(v) = d.ssl_redirect {
            defaults.ssl_redirect = v;
        }
        if let Some(v) = &d.hsts {
            if v.trim().is_empty() || v.chars().any(char::is_control) {
                r.bad(
                    "spec.defaults.hsts",
                    v,
                    "a non-empty header value without CR/LF",
                );
            } else {
                defaults.hsts = Some(v.clone());
            }
        }
        if let Some(v) = d.load_balance {
            defaults.load_balance = match v {
                LoadBalanceName::RoundRobin => LoadBalance::RoundRobin,
                LoadBalanceName::LeastRequest => LoadBalance::LeastRequest,
                LoadBalanceName::Random => LoadBalance::Random,
            };
        }
        if let Some(h) = &d.health_check {
            defaults.health_check = h.kind.or(defaults.health_check);
            if let Some(path) = &h.path {
                if path.starts_with('/') && !path.chars().any(char::is_control) {
                    defaults.health_check_path = path.clone();
                } else {
                    r.bad(
                        "spec.defaults.healthCheck.path",
                        path,
                        "a path starting with /",
                    );
                }
            }
            if let Some(method) = h.method {
                defaults.health_check_method = match method {
                    HealthCheckMethod::HEAD => "HEAD",
                    HealthCheckMethod::GET => "GET",
                }
                .to_string();
            }
            if let Some(d) = r.duration(
                "spec.defaults.healthCheck.interval",
                h.interval.as_ref(),
                MIN_HEALTH_INTERVAL,
            ) {
                defaults.health_check_interval = d;
            }
        }
        if let Some(v) = d.forwarded_headers {
            defaults.forwarded_headers = v;
        }
        if let Some(v) = &d.proxy_body_size {
            match parse_body_size(v) {
                Some(limit) => defaults.max_body = limit,
                None => r.bad("spec.defaults.proxyBodySize", v, BODY_SIZE_SYNTAX),
            }
        }
        r.source_range_defaults(d, defaults);
    }

    if let Some(v) = spec.unsupported_annotations {
        policy.unsupported_annotations = v;
    }

    if let Some(cert) = &spec.default_certificate {
        policy.default_certificate = Some((cert.namespace.clone(), cert.name.clone()));
    }

    let settings = &mut policy.settings;
    if let Some(tls) = &spec.tls {
        settings.tls_min_version_1_3 = tls.min_version == Some(TlsVersion::Tls13);
        if let Some(pq) = tls.post_quantum {
            settings.post_quantum = pq;
        }
        let known: Vec<String> = rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        let unknown = tls
            .cipher_suites
            .iter()
            .enumerate()
            .find(|(_, name)| !known.contains(name));
        match unknown {
            Some((i, name)) => {
                let accepted = known.join(", ");
                r.bad(&format!("spec.tls.cipherSuites[{i}]"), name, &accepted);
            }
            None => settings.cipher_suites = tls.cipher_suites.clone(),
        }
    }
    if let Some(p) = &spec.passthrough {
        policy.passthrough = PassthroughPolicy {
            allowed: p.allowed,
            namespaces: p.namespaces.clone(),
        };
    }
    if let Some(nets) = r.cidrs(
        "spec.trustedProxyProtocolCidrs",
        &spec.trusted_proxy_protocol_cidrs,
    ) {
        settings.trusted_proxy_protocol = nets;
    }
    if let Some(nets) = r.cidrs("spec.trustedForwardedCidrs", &spec.trusted_forwarded_cidrs) {
        settings.trusted_forwarded = nets;
    }
    if let Some(t) = &spec.timeouts {
        let ms = Duration::from_millis(1);
        let timeouts = &mut settings.timeouts;
        for (field, value, slot) in [
            ("clientHello", &t.client_hello, &mut timeouts.client_hello),
            ("headerRead", &t.header_read, &mut timeouts.header_read),
            ("idle", &t.idle, &mut timeouts.idle),
            ("tunnelIdle", &t.tunnel_idle, &mut timeouts.tunnel_idle),
            ("connect", &t.connect, &mut timeouts.connect),
            (
                "upstreamResponse",
                &t.upstream_response,
                &mut timeouts.upstream_response,
            ),
        ] {
            if let Some(d) = r.duration(&format!("spec.timeouts.{field}"), value.as_ref(), ms) {
                *slot = d;
            }
        }
    }
    if let Some(l) = &spec.limits {
        let limits = &mut settings.limits;
        if let Some(v) = r.limit("spec.limits.maxConnections", l.max_connections, 1, u32::MAX) {
            limits.max_connections = v;
        }
        if let Some(v) = r.limit(
            "spec.limits.maxHeaderBytes",
            l.max_header_bytes,
            1024,
            u32::MAX,
        ) {
            limits.max_header_bytes = v;
        }
        if let Some(v) = r.limit(
            "spec.limits.maxClientHelloBytes",
            l.max_client_hello_bytes,
            512,
            65_536,
        ) {
            limits.max_client_hello_bytes = v;
        }
        for (field, value, slot) in [
            (
                "spec.limits.rateLimitStatus",
                l.rate_limit_status,
                &mut limits.rate_limit_status,
            ),
            (
                "spec.limits.connectionLimitStatus",
                l.connection_limit_status,
                &mut limits.connection_limit_status,
            ),
        ] {
            let status = r.limit(field, value.map(u32::from), 400, 599);
            if let Some(v) = status.and_then(|v| u16::try_from(v).ok()) {
                *slot = v;
            }
        }
    }
    policy
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::networking::v1::{
        IngressClassParametersReference, IngressClassSpec, IngressSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::settings::CONTROLLER_NAME;

    fn class(name: &str, controller: &str, default: bool) -> Arc<IngressClass> {
        Arc::new(IngressClass {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                annotations: default.then(|| {
                    BTreeMap::from([(DEFAULT_CLASS_ANNOTATION.to_string(), "true".to_string())])
                }),
                ..ObjectMeta::default()
            },
            spec: Some(IngressClassSpec {
                controller: Some(controller.to_string()),
                parameters: None,
            }),
        })
    }

    fn ingress(class: Option<&str>, legacy: Option<&str>) -> Ingress {
        Ingress {
            metadata: ObjectMeta {
                name: Some("web".to_string()),
                annotations: legacy.map(|l| {
                    BTreeMap::from([(LEGACY_CLASS_ANNOTATION.to_string(), l.to_string())])
                }),
                ..ObjectMeta::default()
            },
            spec: Some(IngressSpec {
                ingress_class_name: class.map(str::to_string),
                ..IngressSpec::default()
            }),
            ..Ingress::default()
        }
    }

    fn settings(class: &str, controller: &str) -> BuildSettings {
        BuildSettings {
            ingress_class: class.to_string(),
            controller_class: controller.to_string(),
            ..BuildSettings::default()
        }
    }

    /// The internal + external pair of ingress-nginx's "Multiple Ingress controllers" guide
    /// (https://kubernetes.github.io/ingress-nginx/user-guide/multiple-ingress/): each
    /// instance has its own `--ingress-class` and `--controller-class`, and each class's
    /// Ingresses (by name, by the legacy annotation, class-less under the default) are served
    /// by exactly one of them.
    #[test]
    fn two_installations_select_disjoint_ingresses() {
        let classes = [
            class("internal", "portcullis.io/internal", true),
            class("external", "portcullis.io/external", false),
            class("nginx", "k8s.io/ingress-nginx", false),
        ];
        let build = |s: &BuildSettings| Classes::new(&classes, &[], s, &mut Vec::new());
        let internal = build(&settings("internal", "portcullis.io/internal"));
        let external = build(&settings("external", "portcullis.io/external"));
        let cases = [
            (ingress(Some("internal"), None), true, false),
            (ingress(Some("external"), None), false, true),
            (ingress(None, Some("internal")), true, false),
            (ingress(None, Some("external")), false, true),
            (ingress(None, None), true, false),
            (ingress(Some("nginx"), None), false, false),
            (ingress(None, Some("nginx")), false, false),
        ];
        for (i, (ingress, by_internal, by_external)) in cases.iter().enumerate() {
            assert_eq!(internal.select(ingress).is_some(), *by_internal, "case {i}");
            assert_eq!(external.select(ingress).is_some(), *by_external, "case {i}");
        }
    }

    /// A class with our name but another controller value is another installation's, and a
    /// second class naming our controller value is not ours either: the pair must match.
    #[test]
    fn name_and_controller_must_both_match() {
        let classes = [
            class("portcullis", "portcullis.io/other", true),
            class("second", CONTROLLER_NAME, true),
        ];
        let ours = Classes::new(&classes, &[], &BuildSettings::default(), &mut Vec::new());
        assert!(ours.select(&ingress(Some("portcullis"), None)).is_none());
        assert!(ours.select(&ingress(None, Some("portcullis"))).is_none());
        assert!(ours.select(&ingress(Some("second"), None)).is_none());
        assert!(ours.select(&ingress(None, None)).is_none());
        // Without an IngressClass object of our name, the name alone is ours.
        let none = Classes::new(&[], &[], &BuildSettings::default(), &mut Vec::new());
        assert!(none.select(&ingress(Some("portcullis"), None)).is_some());
        assert!(none.select(&ingress(None, None)).is_none());
    }

    /// Bad parameters are reported for our class only: another installation's class is its
    /// own controller's business.
    #[test]
    fn params_of_other_classes_are_not_reported() {
        let with_params = |name: &str, params: &str| {
            let mut c = IngressClass::clone(&class(name, CONTROLLER_NAME, false));
            if let Some(spec) = c.spec.as_mut() {
                spec.parameters = Some(IngressClassParametersReference {
                    api_group: Some("portcullis.io".to_string()),
                    kind: "IngressClassParams".to_string(),
                    name: params.to_string(),
                    ..IngressClassParametersReference::default()
                });
            }
            Arc::new(c)
        };
        let classes = [
            with_params("portcullis", "missing"),
            with_params("other", "missing-too"),
        ];
        let mut diagnostics = Vec::new();
        Classes::new(&classes, &[], &BuildSettings::default(), &mut diagnostics);
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert_eq!(
            diagnostics[0].object,
            ObjectRef::cluster("IngressClass", "portcullis")
        );
    }
}
