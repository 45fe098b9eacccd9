//! HTTPRoute → one plan per rule: its matches become paths with conditions, its filters the
//! plan's policy or redirect, its backend the paths' upstream.

use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::attach::Attachment;
use super::listeners::Protocol;
use super::references::References;
use super::{RouteOutcome, route_options};
use crate::crd::HealthCheckKind;
use crate::gateway_api::{
    HTTPRoute, HeaderModifier, HttpRouteFilter, HttpRouteMatch, HttpRouteRule, PathModifier,
};
use crate::model::annotations::{BackendProtocol, PREFIX};
use crate::model::ingress::{BackendSpec, Field, GatewayExtras, HostRules, PathSpec, Plan};
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};
use crate::table::headers::{HeaderEdits, HeaderSet};
use crate::table::host::HostMatch;
use crate::table::request_match::{RequestConditions, ValueMatch};
use crate::table::rewrite::PathReplace;
use crate::table::route::{PathMatch, PathRegex, Port, RedirectTemplate, RouteAction, TlsMode};

/// An HTTPRoute's or a GRPCRoute's rules, as HTTPRoute rules (a GRPCRoute's method matches
/// are paths: `/service/method`, see `grpc_route`).
pub(super) struct HttpLike<'r> {
    pub(super) kind: &'static str,
    pub(super) meta: &'r ObjectMeta,
    pub(super) rules: std::borrow::Cow<'r, [HttpRouteRule]>,
    /// Backends speak gRPC (HTTP/2).
    pub(super) grpc: bool,
}

impl<'r> HttpLike<'r> {
    pub(super) fn http(route: &'r HTTPRoute) -> HttpLike<'r> {
        HttpLike {
            kind: "HTTPRoute",
            meta: &route.metadata,
            rules: match &route.spec.rules {
                Some(rules) => std::borrow::Cow::Borrowed(&rules[..]),
                // The spec's default: one rule matching every request, no backend.
                None => std::borrow::Cow::Owned(vec![HttpRouteRule::default()]),
            },
            grpc: false,
        }
    }
}

/// The plans of `route` on the listeners that took it (`attached`, not empty), and what its
/// status says beyond attachment.
pub(super) fn plans(
    route: &HttpLike<'_>,
    object: &ObjectRef,
    attached: &[&Attachment],
    refs: &References<'_>,
    diagnostics: &mut Vec<Diagnostic>,
) -> RouteOutcome {
    let mut outcome = RouteOutcome::default();
    let options = match route_options(
        route.meta,
        object,
        TlsMode::Terminate,
        route.grpc,
        diagnostics,
    ) {
        Ok(options) => options,
        Err(refused) => return refused,
    };
    // Every host of every listener that took the route; the first HTTPS listener's
    // certificate for the hosts of every HTTPS listener (the table has one per host).
    let mut hosts: Vec<HostMatch> = Vec::new();
    let mut tls_hosts: Vec<HostMatch> = Vec::new();
    let mut plain_hosts: Vec<HostMatch> = Vec::new();
    let mut tls_listener = None;
    for attachment in attached {
        for host in &attachment.hosts {
            if !hosts.contains(host) {
                hosts.push(host.clone());
            }
            let list = match attachment.listener.protocol {
                Protocol::Https => &mut tls_hosts,
                Protocol::Http | Protocol::TlsPassthrough => &mut plain_hosts,
            };
            if !list.contains(host) {
                list.push(host.clone());
            }
        }
        if attachment.listener.protocol == Protocol::Https && tls_listener.is_none() {
            tls_listener = Some(&attachment.listener);
        }
    }
    let tls = tls_listener.and_then(|l| l.tls_spec(tls_hosts.clone()));
    for (i, rule) in route.rules.iter().enumerate() {
        let Some(rule_plan) =
            rule_plan(object, route.kind, i, rule, refs, &mut outcome, diagnostics)
        else {
            continue;
        };
        let mut options = options.clone();
        // The rule's filters after the route's own `request-headers` / `response-headers`
        // annotations (a filter's `set` wins for its names), like its rewrites over
        // `upstream-vhost`.
        let policy = Arc::make_mut(&mut options.policy);
        policy.request_headers.0.extend(rule_plan.request_set.0);
        policy.response_headers.0.extend(rule_plan.response_set.0);
        policy.header_edits = (!rule_plan.edits.is_empty()).then(|| Arc::new(rule_plan.edits));
        if rule_plan.rewrite_host.is_some() {
            policy.upstream_request.upstream_vhost = rule_plan.rewrite_host;
        }
        policy.upstream_request.path_replace = rule_plan.rewrite_path;
        if let Some(timeout) = rule_plan.read_timeout {
            policy.timeouts.read = Some(timeout);
        }
        if rule_plan.h2c && !options.backend_protocol.http2() {
            // HTTP/2 without TLS to the pod; an HTTP/1 probe would fail against it, so unless
            // the route chose a probe, a TCP connect.
            options.backend_protocol = BackendProtocol::Grpc;
            let chose = route
                .meta
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(&format!("{PREFIX}health-check")));
            if !chose && options.health_check == HealthCheckKind::Http {
                options.health_check = HealthCheckKind::Tcp;
            }
        }
        // A host the route has on listeners of one protocol only is routed on that port
        // only: an HTTP listener's redirect and an HTTPS listener's backend share a host.
        let host_rules = hosts
            .iter()
            .map(|host| {
                let port = match (plain_hosts.contains(host), tls_hosts.contains(host)) {
                    (true, false) => Some(Port::Plain),
                    (false, true) => Some(Port::Tls),
                    _ => None,
                };
                let mut paths = rule_plan.paths.clone();
                for path in &mut paths {
                    path.port = port;
                }
                HostRules {
                    host: host.clone(),
                    field: Field::RouteHostnames,
                    paths,
                }
            })
            .collect();
        outcome.plans.push(Plan::from_route(
            object.clone(),
            options,
            host_rules,
            tls.clone(),
            GatewayExtras {
                action: rule_plan.action,
                backend_tls: rule_plan.backend_tls,
            },
        ));
    }
    outcome
}

/// What one rule says, translated.
struct RulePlan {
    paths: Vec<PathSpec>,
    request_set: HeaderSet,
    response_set: HeaderSet,
    edits: HeaderEdits,
    rewrite_host: Option<String>,
    rewrite_path: Option<PathReplace>,
    action: Option<RouteAction>,
    backend_tls: Option<crate::table::upstream::BackendTls>,
    /// `timeouts`: the longest the pod may take to answer.
    read_timeout: Option<std::time::Duration>,
    /// The backend's Service port says `appProtocol: kubernetes.io/h2c`.
    h2c: bool,
}

/// Rule `i` → its plan, or `None` (with diagnostics) when it cannot be served as written. A
/// backend that cannot be used is reported (`ResolvedRefs: False` on the route) and gets no
/// requests; a rule left with none answers `500`, as the spec asks.
fn rule_plan(
    object: &ObjectRef,
    kind: &str,
    i: usize,
    rule: &HttpRouteRule,
    refs: &References<'_>,
    outcome: &mut RouteOutcome,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<RulePlan> {
    let mut plan = RulePlan {
        paths: Vec::new(),
        request_set: HeaderSet::default(),
        response_set: HeaderSet::default(),
        edits: HeaderEdits::default(),
        rewrite_host: None,
        rewrite_path: None,
        action: None,
        backend_tls: None,
        read_timeout: None,
        h2c: false,
    };

    // Filters: every one of them is applied, or the rule is not served (ignoring one would
    // change what the request or the client gets).
    for (f, filter) in rule.filters.iter().flatten().enumerate() {
        if let Err(message) = apply_filter(filter, &mut plan) {
            diagnostics.push(Diagnostic::error(
                object.clone(),
                format!("spec.rules[{i}].filters[{f}]"),
                Reason::UnsupportedValue,
                format!("{message}; rule not served"),
            ));
            outcome.refused.get_or_insert((
                Reason::UnsupportedValue,
                format!("spec.rules[{i}].filters[{f}]: {message}"),
            ));
            return None;
        }
    }

    // Timeouts (GEP-1742): the pod must answer (its response head) within the shorter of
    // `request` and `backendRequest`, else the client gets 504; `0s` turns one off.
    if let Some(timeouts) = &rule.timeouts {
        let mut shortest: Option<std::time::Duration> = None;
        for (name, value) in [
            ("request", &timeouts.request),
            ("backendRequest", &timeouts.backend_request),
        ] {
            let Some(value) = value else { continue };
            match gateway_duration(value) {
                Ok(d) if d.is_zero() => {}
                Ok(d) => shortest = Some(shortest.map_or(d, |s| s.min(d))),
                Err(message) => {
                    diagnostics.push(Diagnostic::error(
                        object.clone(),
                        format!("spec.rules[{i}].timeouts.{name}"),
                        Reason::InvalidSpec,
                        format!("{message}; rule not served"),
                    ));
                    outcome.refused.get_or_insert((
                        Reason::UnsupportedValue,
                        format!("spec.rules[{i}].timeouts.{name}: {message}"),
                    ));
                    return None;
                }
            }
        }
        plan.read_timeout = shortest;
    }

    // Backends with their weights; an invalid one keeps its share as a placeholder, answered
    // 500 ("the proportion of requests that would otherwise have been routed to an invalid
    // backend MUST receive a 500 status code", `HTTPRouteRule.backendRefs`).
    let mut weighted: Vec<(BackendSpec, u32)> = Vec::new();
    let references = rule.backend_refs.as_deref().unwrap_or_default();
    for (k, reference) in references.iter().enumerate() {
        let weight = u32::try_from(reference.weight.unwrap_or(1)).unwrap_or(0);
        if weight == 0 {
            continue;
        }
        if reference.filters.as_ref().is_some_and(|f| !f.is_empty()) {
            let message = "filters on a backendRef are not supported; rule not served";
            diagnostics.push(Diagnostic::error(
                object.clone(),
                format!("spec.rules[{i}].backendRefs[{k}].filters"),
                Reason::UnsupportedValue,
                message,
            ));
            outcome.refused.get_or_insert((
                Reason::UnsupportedValue,
                format!("spec.rules[{i}].backendRefs[{k}].filters: {message}"),
            ));
            return None;
        }
        let unresolved = &mut outcome.unresolved;
        let share = refs.share(object, kind, (i, k), reference, unresolved, diagnostics);
        weighted.push((share, weight));
    }
    // Every backend invalid: the rule answers 500 as a whole (below).
    if weighted.iter().all(|(b, _)| b.is_placeholder()) {
        weighted.clear();
    }
    // One BackendTLSPolicy per rule: the first backend's (a rule mixing re-encrypted and
    // plain backends keeps the first's, with a warning).
    let policy_of = |b: &BackendSpec| {
        let port = match b.service.port {
            crate::table::upstream::ServicePortRef::Number(n) => n,
            crate::table::upstream::ServicePortRef::Name(_) => 0,
        };
        let port_name = refs.port_name(&b.service.namespace, &b.service.name, port);
        refs.backend_tls
            .for_service(&b.service.namespace, &b.service.name, port_name)
    };
    let first_valid = |weighted: &[(BackendSpec, u32)]| {
        weighted
            .iter()
            .find(|(b, _)| !b.is_placeholder())
            .map(|(b, _)| b.clone())
    };
    if let Some(first) = first_valid(&weighted) {
        match policy_of(&first) {
            Ok(tls) => {
                let others_differ = weighted
                    .iter()
                    .filter(|(b, _)| !b.is_placeholder())
                    .skip(1)
                    .any(|(b, _)| policy_of(b).ok().flatten() != tls);
                if others_differ {
                    diagnostics.push(Diagnostic::warning(
                        object.clone(),
                        format!("spec.rules[{i}].backendRefs"),
                        Reason::UnsupportedValue,
                        "the backends of this rule have different BackendTLSPolicies; all are reached as the first one is",
                    ));
                }
                plan.backend_tls = tls;
            }
            Err(e) => {
                diagnostics.push(Diagnostic::error(
                    ObjectRef::namespaced("BackendTLSPolicy", &first.service.namespace, &e.policy),
                    e.field,
                    Reason::InvalidSpec,
                    format!("{}; {object} rule {i} answers 500", e.message),
                ));
                outcome
                    .unresolved
                    .get_or_insert((Reason::InvalidSpec, e.message.clone()));
                weighted.clear();
            }
        }
    }
    let placeholder = || {
        BackendSpec::placeholder(
            object.namespace.as_deref().unwrap_or("default"),
            Field::RouteBackend(i, 0),
        )
    };
    let backend = match first_valid(&weighted) {
        Some(spec) => {
            if let crate::table::upstream::ServicePortRef::Number(port) = spec.service.port {
                plan.h2c = refs.speaks_h2c(&spec.service.namespace, &spec.service.name, port);
            }
            spec
        }
        // A redirecting rule needs no backend: its paths get an upstream that is never
        // contacted (the redirect answers first).
        None if plan.action.is_some() => placeholder(),
        None => {
            if references.is_empty() {
                diagnostics.push(Diagnostic::warning(
                    object.clone(),
                    format!("spec.rules[{i}].backendRefs"),
                    Reason::InvalidSpec,
                    "rule has no backendRefs and no redirect: its requests are answered 500",
                ));
            }
            plan.action = Some(RouteAction::Answer(500));
            placeholder()
        }
    };
    if weighted.len() < 2 {
        weighted.clear();
    }

    let default_matches = [HttpRouteMatch::default()];
    let matches = rule
        .matches
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or(&default_matches);
    for (j, m) in matches.iter().enumerate() {
        match path_spec(
            m,
            Field::RouteMatch(i, j),
            backend.clone(),
            weighted.clone(),
        ) {
            Ok(path) => plan.paths.push(path),
            Err((at, message)) => diagnostics.push(Diagnostic::error(
                object.clone(),
                format!("{}{at}", Field::RouteMatch(i, j)),
                Reason::InvalidSpec,
                format!("{message}; match skipped"),
            )),
        }
    }
    (!plan.paths.is_empty()).then_some(plan)
}

fn apply_filter(filter: &HttpRouteFilter, plan: &mut RulePlan) -> Result<(), String> {
    match filter.kind.as_str() {
        "RequestHeaderModifier" => {
            let m = filter
                .request_header_modifier
                .as_ref()
                .ok_or("RequestHeaderModifier without requestHeaderModifier")?;
            let (set, add, remove) = header_modifier(m)?;
            plan.request_set = set;
            plan.edits.request_add = add;
            plan.edits.request_remove = remove;
        }
        "ResponseHeaderModifier" => {
            let m = filter
                .response_header_modifier
                .as_ref()
                .ok_or("ResponseHeaderModifier without responseHeaderModifier")?;
            let (set, add, remove) = header_modifier(m)?;
            plan.response_set = set;
            plan.edits.response_add = add;
            plan.edits.response_remove = remove;
        }
        "RequestRedirect" => {
            let r = filter
                .request_redirect
                .as_ref()
                .ok_or("RequestRedirect without requestRedirect")?;
            let status = match r.status_code.unwrap_or(302) {
                code @ (301 | 302 | 303 | 307 | 308) => code as u16,
                other => return Err(format!("redirect statusCode {other} is not a redirect")),
            };
            let scheme = match r.scheme.as_deref() {
                None => None,
                Some(s @ ("http" | "https")) => Some(s.to_string()),
                Some(other) => {
                    return Err(format!("redirect scheme {other:?} is not http or https"));
                }
            };
            let port = match r.port {
                None => None,
                Some(p) => Some(
                    u16::try_from(p)
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or(format!("redirect port {p} is not a port"))?,
                ),
            };
            plan.action = Some(RouteAction::RedirectFrom(Arc::new(RedirectTemplate {
                status,
                scheme,
                hostname: r.hostname.clone(),
                port,
                path: r.path.as_ref().map(path_modifier).transpose()?,
            })));
        }
        "URLRewrite" => {
            let r = filter
                .url_rewrite
                .as_ref()
                .ok_or("URLRewrite without urlRewrite")?;
            plan.rewrite_host = r.hostname.clone();
            plan.rewrite_path = r.path.as_ref().map(path_modifier).transpose()?;
        }
        other => return Err(format!("filter type {other} is not supported")),
    }
    Ok(())
}

fn path_modifier(m: &PathModifier) -> Result<PathReplace, String> {
    match (
        m.kind.as_str(),
        &m.replace_full_path,
        &m.replace_prefix_match,
    ) {
        ("ReplaceFullPath", Some(path), _) if path.starts_with('/') => {
            Ok(PathReplace::Full(path.clone()))
        }
        ("ReplacePrefixMatch", _, Some(prefix)) if prefix.is_empty() || prefix.starts_with('/') => {
            Ok(PathReplace::Prefix(prefix.clone()))
        }
        (kind, _, _) => Err(format!(
            "path modifier {kind:?} needs its path, starting with /"
        )),
    }
}

type Headers = Vec<(HeaderName, HeaderValue)>;

fn header_modifier(m: &HeaderModifier) -> Result<(HeaderSet, Headers, Vec<HeaderName>), String> {
    let pairs = |list: &Option<Vec<crate::gateway_api::HeaderValue>>| -> Result<Headers, String> {
        list.iter()
            .flatten()
            .map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| format!("{:?} is not a header name", h.name))?;
                let value = HeaderValue::from_str(&h.value)
                    .map_err(|_| format!("the value of header {} is not a header value", h.name))?;
                Ok((name, value))
            })
            .collect()
    };
    let set = pairs(&m.set)?;
    let add = pairs(&m.add)?;
    let remove = m
        .remove
        .iter()
        .flatten()
        .map(|n| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("{n:?} is not a header name"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((HeaderSet(set), add, remove))
}

/// One `HTTPRouteMatch` → a path with its conditions.
fn path_spec(
    m: &HttpRouteMatch,
    field: Field,
    backend: BackendSpec,
    weighted: Vec<(BackendSpec, u32)>,
) -> Result<PathSpec, (String, String)> {
    let value = m
        .path
        .as_ref()
        .and_then(|p| p.value.as_deref())
        .unwrap_or("/");
    let kind = m
        .path
        .as_ref()
        .and_then(|p| p.kind.as_deref())
        .unwrap_or("PathPrefix");
    if !value.starts_with('/') {
        return Err((
            ".path.value".into(),
            format!("path {value:?} must start with /"),
        ));
    }
    let path = match kind {
        "Exact" => PathMatch::Exact(value.to_string()),
        "PathPrefix" => PathMatch::prefix(value),
        "RegularExpression" => PathMatch::Regex(PathRegex::whole(value).map_err(|e| {
            (
                ".path.value".to_string(),
                format!("regular expression {value:?}: {e}"),
            )
        })?),
        other => {
            return Err((
                ".path.type".into(),
                format!("path match type {other:?} is not supported"),
            ));
        }
    };
    let mut conditions = RequestConditions::default();
    if let Some(method) = &m.method {
        conditions.method = Some(
            http::Method::from_bytes(method.as_bytes())
                .map_err(|_| (".method".to_string(), format!("{method:?} is not a method")))?,
        );
    }
    for (h, header) in m.headers.iter().flatten().enumerate() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
            (
                format!(".headers[{h}].name"),
                format!("{:?} is not a header name", header.name),
            )
        })?;
        // "If multiple entries specify equivalent header names, only the first entry with an
        // equivalent name MUST be considered for a match" (`HTTPHeaderMatch`; names compare
        // case-insensitively, as `HeaderName` holds them lower-case).
        if conditions.headers.iter().any(|(seen, _)| *seen == name) {
            continue;
        }
        conditions.headers.push((
            name,
            value_match(header.kind.as_deref(), &header.value)
                .map_err(|e| (format!(".headers[{h}]"), e))?,
        ));
    }
    for (q, query) in m.query_params.iter().flatten().enumerate() {
        // The same for query parameters, whose names compare exactly
        // (`HTTPQueryParamMatch`).
        if conditions.query.iter().any(|(seen, _)| *seen == query.name) {
            continue;
        }
        conditions.query.push((
            query.name.clone(),
            value_match(query.kind.as_deref(), &query.value)
                .map_err(|e| (format!(".queryParams[{q}]"), e))?,
        ));
    }
    Ok(PathSpec {
        raw: value.to_string(),
        path,
        backend,
        field,
        conditions: (!conditions.is_empty()).then(|| Arc::new(conditions)),
        weighted,
        port: None,
    })
}

fn value_match(kind: Option<&str>, value: &str) -> Result<ValueMatch, String> {
    match kind.unwrap_or("Exact") {
        "Exact" => Ok(ValueMatch::Exact(value.to_string())),
        "RegularExpression" => {
            ValueMatch::regex(value).map_err(|e| format!("regular expression {value:?}: {e}"))
        }
        other => Err(format!("match type {other:?} is not supported")),
    }
}

/// A Gateway API duration (GEP-2257): one to four `<1-5 digits><h|m|s|ms>` parts, e.g. `10s`,
/// `1h30m`, `500ms`.
fn gateway_duration(value: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{value:?} is not a Gateway API duration (like 10s, 1m30s, 500ms)");
    let mut rest = value;
    let mut total = std::time::Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, per) = if let Some(r) = rest.strip_prefix("ms") {
            (r, std::time::Duration::from_millis(1))
        } else if let Some(r) = rest.strip_prefix('h') {
            (r, std::time::Duration::from_secs(3600))
        } else if let Some(r) = rest.strip_prefix('m') {
            (r, std::time::Duration::from_secs(60))
        } else if let Some(r) = rest.strip_prefix('s') {
            (r, std::time::Duration::from_secs(1))
        } else {
            return Err(bad());
        };
        rest = unit;
        total += per * u32::try_from(n).map_err(|_| bad())?;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// GEP-2257's examples.
    #[test]
    fn gateway_durations_parse_as_gep_2257_says() {
        assert_eq!(gateway_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(gateway_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(gateway_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(gateway_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(
            gateway_duration("1h1m1s1ms"),
            Ok(Duration::from_millis(3_661_001))
        );
        for bad in ["", "10", "1.5s", "-1s", "1d", "123456s", "1h1m1s1ms1s", "s"] {
            assert!(gateway_duration(bad).is_err(), "{bad:?}");
        }
    }
}
