//! Merging Ingress plans (oldest first) into virtual hosts: host TLS-mode and host+path
//! conflicts, pass-through backends, default backends, upstream policies and certificates.

use std::sync::Arc;

use super::FastMap;
use super::backend::{Backends, UpstreamPolicy, service_dns_name};
use super::certs::{Secrets, pick_from_dir};
use super::class::ClassPolicy;
use super::ingress::{BackendSpec, HostRules, PathSpec, Plan};
use crate::crd::HealthCheckKind;
use crate::model::annotations::{IngressOptions, PREFIX};
use crate::table::certificates::Certificate;
use crate::table::client_auth::ClientAuth;
use crate::table::diagnostic::{Diagnostic, Reason};
use crate::table::host::HostMatch;
use crate::table::policy::RoutePolicy;
use crate::table::request_match::RequestConditions;
use crate::table::route::{PathMatch, PathRegex, Port, Route, RouteAction, TlsMode};
use crate::table::split::WeightedSplit;
use crate::table::upstream::{
    BackendTls, HealthCheck, HealthProbe, ServicePortRef, ServiceRef, Upstream, UpstreamProtocol,
};
use crate::table::{CertificateChoice, VirtualHost};

/// A virtual host being assembled from plans that live for `'p`.
struct Draft<'p> {
    host: HostMatch,
    /// Index of the owning (oldest) plan.
    owner: usize,
    mode: TlsMode,
    routes: Vec<Route>,
    /// Which plan claimed each path, for conflict messages.
    claimed: FastMap<(&'p PathMatch, Option<&'p RequestConditions>, Option<Port>), usize>,
    default_backend: Option<Arc<Upstream>>,
    /// The redirect annotations of the Ingress whose default backend it is.
    default_action: RouteAction,
    /// The `proxy-body-size` of the Ingress whose default backend it is.
    default_max_body: Option<u64>,
    /// The policy of the Ingress whose default backend it is.
    default_policy: Arc<RoutePolicy>,
    /// The oldest Ingress of the host with a usable `default-backend` annotation (plan index,
    /// policy): the default backend when no Ingress gives `spec.defaultBackend`.
    annotated_default: Option<(usize, Arc<RoutePolicy>)>,
    passthrough: Option<Arc<Upstream>>,
    passthrough_split: Option<Arc<WeightedSplit>>,
    /// Plans (oldest first) with a `spec.tls` entry for this host.
    cert_plans: Vec<usize>,
    /// Every path is a regex (`use-regex` or `rewrite-target` on some Ingress of the host).
    regex: bool,
    /// The owner's client certificate authentication (`auth-tls-*`), with its CA.
    client_auth: Option<Arc<ClientAuth>>,
}

/// What the merge needs besides the plans.
pub(super) struct Merge<'m, 'a> {
    pub(crate) backends: &'m mut Backends<'a>,
    pub(crate) secrets: &'m mut Secrets<'a>,
    pub(crate) cert_dir: &'m [Certificate],
    pub(crate) diagnostics: &'m mut Vec<Diagnostic>,
}

/// Plan-level values computed once: the CA bundle of a re-encrypting Ingress.
struct PlanContext {
    ca: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
    /// The Ingress's [`RoutePolicy`], shared by all of its routes.
    policy: Arc<RoutePolicy>,
}

impl Merge<'_, '_> {
    /// Merges `plans` (sorted oldest first, each with its class policy) into virtual hosts.
    pub(crate) fn run(mut self, plans: &[(Plan, &ClassPolicy)]) -> Vec<VirtualHost> {
        // Drafts in the order their hosts first appear; found by host without cloning it.
        let hosts = plans.iter().map(|(plan, _)| plan.hosts.len()).sum();
        let mut drafts: Vec<Draft> = Vec::with_capacity(hosts);
        let mut by_host: FastMap<&HostMatch, usize> =
            FastMap::with_capacity_and_hasher(hosts, Default::default());
        let regex_hosts = regex_hosts(plans);
        // Canary Ingresses claim nothing: attached to the main routes once all are known.
        let mut canaries = Vec::new();
        for (index, (plan, policy)) in plans.iter().enumerate() {
            if plan.options.canary.is_some() {
                canaries.push(index);
                continue;
            }
            if plan.options.tls_mode == TlsMode::Passthrough
                && !policy.passthrough.permits(&plan.namespace)
            {
                self.diagnostics.push(Diagnostic::error(
                    plan.object.clone(),
                    format!("metadata.annotations[\"{PREFIX}tls-mode\"]"),
                    Reason::NotAllowed,
                    format!(
                        "pass-through is not allowed for namespace {} by the IngressClassParams of this class; this Ingress's hosts are not served",
                        plan.namespace
                    ),
                ));
                continue;
            }
            let Some(context) = self.plan_context(plan) else {
                continue;
            };
            for rules in &plan.hosts {
                if plan.options.tls_mode == TlsMode::Passthrough && rules.host == HostMatch::Any {
                    self.diagnostics.push(Diagnostic::error(
                        plan.object.clone(),
                        rules.field.to_string(),
                        Reason::InvalidSpec,
                        "pass-through routes by SNI and needs a host; rules without a host (and the default backend) are skipped",
                    ));
                    continue;
                }
                let slot = *by_host.entry(&rules.host).or_insert_with(|| {
                    drafts.push(Draft {
                        host: rules.host.clone(),
                        owner: index,
                        mode: plan.options.tls_mode,
                        // Exact when one Ingress owns the host, as most do: the table keeps
                        // this vector, so no grown-but-unused capacity is kept with it.
                        routes: Vec::with_capacity(rules.paths.len()),
                        claimed: FastMap::default(),
                        default_backend: None,
                        default_action: RouteAction::Forward,
                        default_max_body: None,
                        default_policy: RoutePolicy::none(),
                        annotated_default: None,
                        passthrough: None,
                        passthrough_split: None,
                        cert_plans: Vec::new(),
                        regex: regex_hosts.contains_key(&rules.host),
                        client_auth: context.policy.client_auth.clone(),
                    });
                    drafts.len() - 1
                });
                let draft = &mut drafts[slot];
                let owner = &plans[draft.owner].0;
                if draft.mode != plan.options.tls_mode {
                    self.diagnostics.push(Diagnostic::error(
                        plan.object.clone(),
                        rules.field.to_string(),
                        Reason::Conflict,
                        format!(
                            "host {} is in {} mode, owned by the older {}; this Ingress asks for {} and its rules for the host are ignored",
                            rules.host,
                            draft.mode.as_str(),
                            owner.object,
                            plan.options.tls_mode.as_str()
                        ),
                    ));
                    continue;
                }
                if draft.owner != index && draft.client_auth != context.policy.client_auth {
                    // Client certificates are asked for in the handshake, per host: the owner
                    // decides, and paths that want other terms are not served on other terms.
                    self.diagnostics.push(Diagnostic::error(
                        plan.object.clone(),
                        "metadata.annotations",
                        Reason::Conflict,
                        format!(
                            "host {}'s client certificate authentication (auth-tls-*) is set by the older {}; this Ingress asks for other terms and its rules for the host are ignored",
                            rules.host, owner.object
                        ),
                    ));
                    continue;
                }
                if draft.owner != index {
                    let (mine, theirs) = (&plan.options, &owner.options);
                    if (mine.ssl_redirect, &mine.hsts, mine.forwarded_headers)
                        != (theirs.ssl_redirect, &theirs.hsts, theirs.forwarded_headers)
                    {
                        self.diagnostics.push(Diagnostic::warning(
                            plan.object.clone(),
                            "metadata.annotations",
                            Reason::Conflict,
                            format!(
                                "host {}'s ssl-redirect, hsts and forwarded-headers come from the older {}; this Ingress's values are ignored for it",
                                rules.host, owner.object
                            ),
                        ));
                    }
                }
                match plan.options.tls_mode {
                    TlsMode::Passthrough => {
                        self.passthrough(draft, plan, rules, plans, &context);
                    }
                    TlsMode::Terminate | TlsMode::Reencrypt => {
                        for path in &rules.paths {
                            self.path(draft, index, plan, &rules.host, path, plans, &context);
                        }
                        if draft.default_backend.is_none()
                            && let Some(backend) = &plan.default_backend
                        {
                            draft.default_backend =
                                self.upstream(plan, &rules.host, backend, &context);
                            draft.default_action = route_action(&plan.options);
                            draft.default_max_body = plan.options.max_body;
                            draft.default_policy = Arc::clone(&context.policy);
                        }
                        if draft.annotated_default.is_none()
                            && rules.host != HostMatch::Any
                            && context
                                .policy
                                .error_pages
                                .as_ref()
                                .is_some_and(|p| p.usable_backend().is_some())
                        {
                            draft.annotated_default = Some((index, Arc::clone(&context.policy)));
                        }
                        if rules.host != HostMatch::Any && plan.tls_for(&rules.host).is_some() {
                            draft.cert_plans.push(index);
                        }
                    }
                }
            }
        }
        for index in canaries {
            let plan = &plans[index].0;
            self.canary_default_backend(plan);
            for rules in &plan.hosts {
                let main = by_host.get(&rules.host).map(|&slot| {
                    let draft = &mut drafts[slot];
                    (draft.mode, &mut draft.routes)
                });
                self.attach_canary(plan, rules, main);
            }
        }
        // Sized up front: collecting a filtered iterator regrows (and copies) 10 000 hosts.
        let mut vhosts = Vec::with_capacity(drafts.len());
        let mut www = Vec::new();
        for draft in drafts {
            let owner = draft.owner;
            if let Some(vhost) = self.finish(draft, plans) {
                if plans[owner].0.options.from_to_www {
                    www.push(vhosts.len());
                }
                vhosts.push(vhost);
            }
        }
        let aliases = self.server_aliases(plans, &vhosts, |host| by_host.contains_key(host));
        let added = self.www_redirects(&vhosts, &www, |host| {
            by_host.contains_key(host) || aliases.iter().any(|a| a.host == *host)
        });
        vhosts.extend(aliases);
        vhosts.extend(added);
        vhosts
    }

    /// `from-to-www-redirect`, as ingress-nginx documents it ("Redirect from/to www"): for each
    /// exact host `vhosts[i]` (`i` in `with`) of an Ingress carrying it, a host for its other
    /// name (`www.` added or removed) that answers every request with `308` (ingress-nginx's
    /// `http-redirect-code` default) to the same path on the Ingress's host. None when an
    /// Ingress routes that name itself (ingress-nginx: "the annotation will be omitted") or an
    /// older Ingress's redirect already made it. Its certificate: the target's when it names
    /// the other name too (ingress-nginx requires that for HTTPS), else `--cert-dir`'s, else
    /// the default one.
    fn www_redirects(
        &mut self,
        vhosts: &[VirtualHost],
        with: &[usize],
        routed: impl Fn(&HostMatch) -> bool,
    ) -> Vec<VirtualHost> {
        let mut added: Vec<VirtualHost> = Vec::new();
        for &i in with {
            let target = &vhosts[i];
            // A wildcard or the catch-all has no one other name.
            let HostMatch::Exact(name) = &target.host else {
                continue;
            };
            let other = match name.strip_prefix("www.") {
                Some(bare) => bare.to_string(),
                None => format!("www.{name}"),
            };
            // `www.` may make a name too long, or strip it down to a bare label.
            let Ok(host) = HostMatch::parse(&other) else {
                continue;
            };
            if routed(&host) || added.iter().any(|v| v.host == host) {
                continue;
            }
            let certificate = match &target.certificate {
                CertificateChoice::Own(c) if c.names(&other) => CertificateChoice::Own(c.clone()),
                _ => pick_from_dir(self.cert_dir, &other)
                    .cloned()
                    .map_or(CertificateChoice::Default, CertificateChoice::Own),
            };
            added.push(VirtualHost {
                host,
                tls_mode: TlsMode::Terminate,
                certificate,
                ssl_redirect: false,
                hsts: None,
                forwarded_headers: target.forwarded_headers,
                routes: Vec::new(),
                default_backend: None,
                default_action: RouteAction::Forward,
                default_max_body: None,
                default_policy: RoutePolicy::none(),
                www_redirect: Some(name.clone()),
                passthrough: None,
                passthrough_split: None,
                owner: target.owner.clone(),
                // It only redirects, to the host that asks for the certificate.
                client_auth: None,
            });
        }
        added
    }

    /// `server-alias`, as ingress-nginx documents it: more names for the server of the
    /// Ingress's host (its first rule host), answered with the same routes from every Ingress
    /// on it. "A server-alias name cannot conflict with the hostname of an existing server. If
    /// it does, the server-alias annotation will be ignored": an alias that is a rule host
    /// (`routed`), or an older Ingress's alias, is dropped with a warning. The certificate: the
    /// Ingress's `spec.tls` entry for the alias name, else the host's own when it names the
    /// alias, else `--cert-dir`'s, else the default one.
    fn server_aliases(
        &mut self,
        plans: &[(Plan, &ClassPolicy)],
        vhosts: &[VirtualHost],
        routed: impl Fn(&HostMatch) -> bool,
    ) -> Vec<VirtualHost> {
        let mut added: Vec<VirtualHost> = Vec::new();
        for (plan, _) in plans {
            let options = &plan.options.paths;
            if options.server_aliases.is_empty() {
                continue;
            }
            let field = format!("metadata.annotations[\"{}\"]", options.server_alias_key);
            let target = plan
                .hosts
                .iter()
                .find(|r| r.host != HostMatch::Any)
                .and_then(|r| vhosts.iter().find(|v| v.host == r.host))
                .filter(|v| v.tls_mode != TlsMode::Passthrough);
            let Some(target) = target else {
                self.diagnostics.push(Diagnostic::warning(
                    plan.object.clone(),
                    field,
                    Reason::InvalidSpec,
                    "server-alias needs a rule with a host served by this Ingress; ignored",
                ));
                continue;
            };
            for alias in &options.server_aliases {
                if routed(alias) || added.iter().any(|v| v.host == *alias) {
                    self.diagnostics.push(Diagnostic::warning(
                        plan.object.clone(),
                        field.clone(),
                        Reason::Conflict,
                        format!(
                            "server-alias {alias} is already a host of a rule or an older Ingress's alias; this alias is ignored"
                        ),
                    ));
                    continue;
                }
                let name = alias.to_string();
                let own = plan.tls_for(alias).and_then(|tls| {
                    self.secrets.certificate(
                        &plan.namespace,
                        &tls.secret_name,
                        &plan.object,
                        &format!("{}.secretName", tls.field),
                        self.diagnostics,
                    )
                });
                let certificate = match (own, &target.certificate) {
                    (Some(cert), _) => CertificateChoice::Own(cert),
                    (None, CertificateChoice::Own(c)) if c.names(&name) => {
                        CertificateChoice::Own(c.clone())
                    }
                    _ => pick_from_dir(self.cert_dir, &name)
                        .cloned()
                        .map_or(CertificateChoice::Default, CertificateChoice::Own),
                };
                let https_expected = matches!(target.certificate, CertificateChoice::Own(_))
                    || expects_https(target.ssl_redirect, target.hsts.is_some());
                if certificate == CertificateChoice::Default && https_expected {
                    self.diagnostics.push(Diagnostic::warning(
                        plan.object.clone(),
                        field.clone(),
                        Reason::DefaultCertificate,
                        format!(
                            "server-alias {alias} has no certificate naming it (spec.tls, the host's certificate, --cert-dir); HTTPS clients get the default certificate"
                        ),
                    ));
                }
                added.push(VirtualHost {
                    host: alias.clone(),
                    certificate,
                    ..target.clone()
                });
            }
        }
        added
    }

    /// `None` when the plan is not served: its basic auth users or client CA (from Secrets)
    /// are unusable, and an Ingress asking for authentication is never served open.
    fn plan_context(&mut self, plan: &Plan) -> Option<PlanContext> {
        let ca = match (&plan.options.backend_ca, plan.options.tls_mode) {
            (Some(name), TlsMode::Reencrypt) => self.secrets.ca_bundle(
                &plan.namespace,
                name,
                &plan.object,
                &format!("metadata.annotations[\"{PREFIX}backend-ca\"]"),
                self.diagnostics,
            ),
            _ => None,
        };
        let parsed = &plan.options.policy;
        if parsed.error_pages.is_none()
            && parsed.rate_limit.is_none()
            && parsed.external_auth.is_none()
            && parsed.basic_auth.is_none()
            && parsed.client_auth.is_none()
        {
            // Nothing in it is bound to this build's objects (the usual case): the parsed
            // policy is served as it is, not copied and compared again.
            return Some(PlanContext {
                ca,
                policy: Arc::clone(parsed),
            });
        }
        let mut policy = RoutePolicy::clone(parsed);
        if let Some(pages) = policy.error_pages.as_mut() {
            pages.namespace = plan.namespace.clone();
            pages.ingress = plan.object.name.clone();
            pages.backend = self.error_backend(plan, &pages.service, pages.key, ca.clone());
        }
        if let Some(limit) = policy.rate_limit.as_mut() {
            limit.bind(&plan.namespace, &plan.object.name);
        }
        if let Some(auth) = policy.external_auth.as_mut() {
            // The auth cache outlives table rebuilds (`ExternalAuth::bind`).
            Arc::make_mut(auth).bind(&plan.namespace, &plan.object.name);
        }
        if !self.basic_auth_users(plan, &mut policy) || !self.client_ca(plan, &mut policy) {
            return None;
        }
        Some(PlanContext {
            ca,
            policy: RoutePolicy::shared(policy),
        })
    }

    /// The upstream of a `default-backend` annotation: Service `service` of the plan's
    /// namespace, its first port (ingress-nginx's `DefaultBackend.Spec.Ports[0]`), with the
    /// Ingress's upstream options. `None` with an error diagnostic on the annotation (`key`)
    /// when the Service or its port is missing.
    fn error_backend(
        &mut self,
        plan: &Plan,
        service: &str,
        key: &str,
        ca: Option<Arc<Vec<rustls_pki_types::CertificateDer<'static>>>>,
    ) -> Option<Arc<Upstream>> {
        let field = format!("metadata.annotations[\"{key}\"]");
        let port = match self.backends.first_port(&plan.namespace, service) {
            Ok(port) => port,
            Err(why) => {
                self.diagnostics.push(Diagnostic::error(
                    plan.object.clone(),
                    field,
                    Reason::MissingService,
                    format!("{why}; requests are served without this default backend"),
                ));
                return None;
            }
        };
        let service = ServiceRef {
            namespace: plan.namespace.clone(),
            name: service.to_string(),
            port: ServicePortRef::Number(port),
        };
        let context = PlanContext {
            ca,
            policy: RoutePolicy::none(),
        };
        let policy = upstream_policy(plan, &HostMatch::Any, &service, &context);
        self.backends
            .upstream(&service, &policy, &plan.object, &field, self.diagnostics)
    }

    #[allow(clippy::too_many_arguments)]
    fn path<'p>(
        &mut self,
        draft: &mut Draft<'p>,
        index: usize,
        plan: &Plan,
        host: &HostMatch,
        path: &'p PathSpec,
        plans: &[(Plan, &ClassPolicy)],
        context: &PlanContext,
    ) {
        let key = (&path.path, path.conditions.as_deref(), path.port);
        if let Some(&winner) = draft.claimed.get(&key) {
            let winner = &plans[winner].0.object;
            let message = if plans[index].0.object == *winner {
                format!(
                    "{} path {} of host {} is listed twice in this Ingress; the first one is used",
                    path.path.kind(),
                    path.path.path(),
                    host
                )
            } else {
                format!(
                    "{} path {} of host {} is already routed by the older {}; this path is ignored",
                    path.path.kind(),
                    path.path.path(),
                    host,
                    winner
                )
            };
            self.diagnostics.push(Diagnostic::error(
                plan.object.clone(),
                format!("{}.path", path.field),
                Reason::Conflict,
                message,
            ));
            return;
        }
        let route_path = if draft.regex {
            match PathRegex::new(&path.raw) {
                Ok(regex) => PathMatch::Regex(regex),
                Err(e) => {
                    let why = e.to_string();
                    let why = why.split_whitespace().collect::<Vec<_>>().join(" ");
                    self.diagnostics.push(Diagnostic::error(
                        plan.object.clone(),
                        format!("{}.path", path.field),
                        Reason::InvalidSpec,
                        format!(
                            "path {:?} of host {host} is a regular expression (use-regex or rewrite-target on this host) that does not compile: {why}; path skipped",
                            path.raw
                        ),
                    ));
                    return;
                }
            }
        } else {
            path.path.clone()
        };
        let shares = self.shares(plan, host, path, context);
        let main = match shares.iter().find_map(|(upstream, _)| upstream.as_ref()) {
            Some(upstream) => Some(Arc::clone(upstream)),
            None if path.weighted.is_empty() => self.upstream(plan, host, &path.backend, context),
            None => None,
        };
        if let Some(upstream) = main {
            draft.claimed.insert(key, index);
            draft.routes.push(Route {
                path: route_path,
                upstream,
                action: plan_action(plan),
                max_body: plan.options.max_body,
                policy: Arc::clone(&context.policy),
                source: plan.object.clone(),
                canary: None,
                conditions: path.conditions.clone(),
                split: WeightedSplit::new(shares).map(Arc::new),
                port: path.port,
            });
        }
    }

    fn passthrough(
        &mut self,
        draft: &mut Draft,
        plan: &Plan,
        rules: &HostRules,
        plans: &[(Plan, &ClassPolicy)],
        context: &PlanContext,
    ) {
        let root = rules
            .paths
            .iter()
            .position(|p| p.path == PathMatch::prefix("/"));
        let chosen = match (root, rules.paths.len()) {
            (Some(i), _) => Some(&rules.paths[i]),
            (None, 1) => Some(&rules.paths[0]),
            (None, 0) => None,
            (None, _) => {
                self.diagnostics.push(Diagnostic::error(
                    plan.object.clone(),
                    format!("{}.http.paths", rules.field.to_string().trim_end_matches(".host")),
                    Reason::InvalidSpec,
                    format!(
                        "pass-through host {} has one backend: give it a \"/\" Prefix path or a single path; host not served by this Ingress",
                        rules.host
                    ),
                ));
                return;
            }
        };
        let ignored: Vec<String> = rules
            .paths
            .iter()
            .filter(|p| chosen.is_some_and(|c| !std::ptr::eq(*p, c)))
            .map(|p| format!("{} ({})", p.path.path(), p.field))
            .collect();
        if !ignored.is_empty() {
            self.diagnostics.push(Diagnostic::warning(
                plan.object.clone(),
                format!(
                    "{}.http.paths",
                    rules.field.to_string().trim_end_matches(".host")
                ),
                Reason::InvalidSpec,
                format!(
                    "pass-through host {} sends every connection to one backend; ignored paths: {}",
                    rules.host,
                    ignored.join(", ")
                ),
            ));
        }
        let backend = match (chosen, &plan.default_backend) {
            (Some(path), _) => &path.backend,
            (None, Some(default)) => default,
            (None, None) => {
                self.diagnostics.push(Diagnostic::error(
                    plan.object.clone(),
                    rules.field.to_string(),
                    Reason::InvalidSpec,
                    format!(
                        "pass-through host {} has no backend (no path and no default backend)",
                        rules.host
                    ),
                ));
                return;
            }
        };
        if draft.passthrough.is_some() {
            self.diagnostics.push(Diagnostic::error(
                plan.object.clone(),
                backend.field.to_string(),
                Reason::Conflict,
                format!(
                    "pass-through host {} already has a backend from the older {}; this one is ignored",
                    rules.host, plans[draft.owner].0.object
                ),
            ));
            return;
        }
        match chosen.filter(|path| !path.weighted.is_empty()) {
            Some(path) => {
                let shares = self.shares(plan, &rules.host, path, context);
                draft.passthrough = shares.iter().find_map(|(u, _)| u.clone());
                draft.passthrough_split = WeightedSplit::new(shares).map(Arc::new);
            }
            None => draft.passthrough = self.upstream(plan, &rules.host, backend, context),
        }
        // What gates its connections (the rest of a policy is about HTTP requests).
        draft.default_policy = RoutePolicy::shared(RoutePolicy {
            source_ranges: context.policy.source_ranges.clone(),
            ..Default::default()
        });
    }

    /// Gateway API weighted backends, each resolved. An invalid one (a placeholder from the
    /// route, or one that does not resolve here, which is reported) keeps its share as `None`:
    /// answered 500, or its connections refused.
    fn shares(
        &mut self,
        plan: &Plan,
        host: &HostMatch,
        path: &PathSpec,
        context: &PlanContext,
    ) -> Vec<(Option<Arc<Upstream>>, u32)> {
        let mut shares = Vec::with_capacity(path.weighted.len());
        for (backend, weight) in &path.weighted {
            let upstream = if backend.is_placeholder() {
                None
            } else {
                self.upstream(plan, host, backend, context)
            };
            shares.push((upstream, *weight));
        }
        shares
    }

    fn upstream(
        &mut self,
        plan: &Plan,
        host: &HostMatch,
        backend: &BackendSpec,
        context: &PlanContext,
    ) -> Option<Arc<Upstream>> {
        let policy = upstream_policy(plan, host, &backend.service, context);
        if backend.is_placeholder() {
            return Some(Arc::new(Upstream {
                service: backend.service.clone(),
                endpoints: Default::default(),
                protocol: policy.protocol,
                balance: policy.balance,
                health: HealthCheck {
                    probe: HealthProbe::None,
                    interval: policy.health.interval,
                },
                proxy_protocol: None,
                cursor: Default::default(),
            }));
        }
        self.backends.upstream(
            &backend.service,
            &policy,
            &plan.object,
            &backend.field,
            self.diagnostics,
        )
    }

    fn finish(&mut self, mut draft: Draft, plans: &[(Plan, &ClassPolicy)]) -> Option<VirtualHost> {
        let owner = &plans[draft.owner].0;
        if draft.mode == TlsMode::Passthrough && draft.passthrough.is_none() {
            return None; // reported when its backend was rejected
        }
        // Stable: among routes of equal precedence the older plan's stays first (Gateway API:
        // the oldest route, then the first rule of a route).
        draft.routes.sort_by(|a, b| {
            b.precedence()
                .cmp(&a.precedence())
                .then_with(|| a.path.path().cmp(b.path.path()))
        });
        let certificate = self.certificate(&draft, plans);
        if draft.default_backend.is_none()
            && let Some((index, policy)) = draft.annotated_default
        {
            let options = &plans[index].0.options;
            draft.default_backend = policy
                .error_pages
                .as_ref()
                .and_then(|p| p.usable_backend().cloned());
            draft.default_action = route_action(options);
            draft.default_max_body = options.max_body;
            draft.default_policy = policy;
        }
        Some(VirtualHost {
            host: draft.host,
            tls_mode: draft.mode,
            certificate,
            ssl_redirect: owner.options.ssl_redirect,
            // The annotation's value has no control characters (`annotations::hsts`).
            hsts: owner
                .options
                .hsts
                .as_deref()
                .and_then(|v| http::HeaderValue::from_str(v).ok()),
            forwarded_headers: owner.options.forwarded_headers,
            routes: draft.routes,
            default_backend: draft.default_backend,
            default_action: draft.default_action,
            default_max_body: draft.default_max_body,
            default_policy: draft.default_policy,
            www_redirect: None,
            passthrough: draft.passthrough,
            passthrough_split: draft.passthrough_split,
            owner: owner.object.clone(),
            client_auth: draft.client_auth,
        })
    }

    fn certificate(&mut self, draft: &Draft, plans: &[(Plan, &ClassPolicy)]) -> CertificateChoice {
        if draft.mode == TlsMode::Passthrough || draft.host == HostMatch::Any {
            return CertificateChoice::Default;
        }
        let mut chosen = None;
        for &index in &draft.cert_plans {
            let plan = &plans[index].0;
            let Some(tls) = plan.tls_for(&draft.host) else {
                continue;
            };
            let found = self.secrets.certificate(
                tls.namespace.as_deref().unwrap_or(&plan.namespace),
                &tls.secret_name,
                &plan.object,
                &format!("{}.secretName", tls.field),
                self.diagnostics,
            );
            chosen = chosen.or(found);
        }
        if let Some(cert) = chosen {
            return CertificateChoice::Own(cert);
        }
        if !draft.cert_plans.is_empty() {
            return CertificateChoice::Default; // reported by the Secret lookup
        }
        if !self.cert_dir.is_empty()
            && let Some(cert) = pick_from_dir(self.cert_dir, &draft.host.to_string())
        {
            return CertificateChoice::Own(cert.clone());
        }
        let owner = &plans[draft.owner].0;
        if expects_https(owner.options.ssl_redirect, owner.options.hsts.is_some()) {
            self.diagnostics.push(Diagnostic::warning(
                owner.object.clone(),
                "spec.tls",
                Reason::DefaultCertificate,
                format!(
                    "host {} has no certificate of its own (no spec.tls entry, no --cert-dir match) but sends clients to HTTPS (ssl-redirect or hsts); HTTPS clients get the default certificate",
                    draft.host
                ),
            ));
        }
        CertificateChoice::Default
    }
}

/// Whether a host without a certificate of its own is worth a `DefaultCertificate` warning:
/// only when its Ingress sends clients to HTTPS (`ssl-redirect`, HSTS). An HTTP-only Ingress
/// (no `spec.tls`, neither annotation) needs no certificate, and warning about it on every
/// such Ingress (an Event each, in a cluster) was noise. A `spec.tls` entry for the host whose
/// Secret is unusable is reported by the Secret lookup instead.
fn expects_https(ssl_redirect: bool, hsts: bool) -> bool {
    ssl_redirect || hsts
}

/// The hosts whose paths are all regexes, as ingress-nginx's "Ingress Path Matching" says:
/// "when use-regex is enabled the regex will be applied to ALL paths of a host", and a
/// `rewrite-target` differing from a path of the host enforces it too (its
/// `enforceRegexModifier`), whichever Ingress the other paths come from.
fn regex_hosts<'p>(plans: &'p [(Plan, &ClassPolicy)]) -> FastMap<&'p HostMatch, ()> {
    let mut hosts = FastMap::default();
    for (plan, _) in plans {
        if plan.options.tls_mode == TlsMode::Passthrough {
            continue;
        }
        let target = plan.options.policy.upstream_request.rewrite_target.as_ref();
        for rules in &plan.hosts {
            let rewrites = target.is_some_and(|t| rules.paths.iter().any(|p| p.raw != t.source));
            if plan.options.paths.use_regex || rewrites {
                hosts.insert(&rules.host, ());
            }
        }
    }
    hosts
}

/// What requests to the paths (and default backend) of an Ingress with `options` get.
/// A plan's action: a Gateway API redirect filter, or what its annotations say.
fn plan_action(plan: &Plan) -> RouteAction {
    match plan.gateway.as_ref().and_then(|g| g.action.as_ref()) {
        Some(action) => action.clone(),
        None => route_action(&plan.options),
    }
}

fn route_action(options: &IngressOptions) -> RouteAction {
    match (&options.redirect, &options.app_root) {
        (Some(redirect), app_root) => RouteAction::Redirect {
            redirect: redirect.clone(),
            app_root: app_root.clone(),
        },
        (None, Some(root)) => RouteAction::AppRoot(root.clone()),
        (None, None) => RouteAction::Forward,
    }
}

/// The host name to use for SNI and health-check `Host` of an upstream: the rule host when it is
/// one exact name, else the Service's cluster DNS name.
fn upstream_host_name(host: &HostMatch, service: &ServiceRef) -> String {
    match host {
        HostMatch::Exact(name) => name.clone(),
        HostMatch::Wildcard(_) | HostMatch::Any => service_dns_name(service),
    }
}

fn upstream_policy(
    plan: &Plan,
    host: &HostMatch,
    service: &ServiceRef,
    context: &PlanContext,
) -> UpstreamPolicy {
    let options = &plan.options;
    // Only re-encryption and HTTP/TLS probes need it: not built for every terminated path.
    let host_name = || upstream_host_name(host, service);
    let http2 = options.backend_protocol.http2();
    // A BackendTLSPolicy re-encrypts a Gateway API route's backend, whatever the host's mode.
    let policy_tls = plan.gateway.as_ref().and_then(|g| g.backend_tls.clone());
    let protocol = match (options.tls_mode, policy_tls) {
        (TlsMode::Terminate | TlsMode::Reencrypt, Some(tls)) if http2 => UpstreamProtocol::H2(tls),
        (TlsMode::Terminate | TlsMode::Reencrypt, Some(tls)) => UpstreamProtocol::Https(tls),
        (TlsMode::Terminate, None) if http2 => UpstreamProtocol::H2c,
        (TlsMode::Terminate, None) => UpstreamProtocol::Http,
        (TlsMode::Passthrough, _) => UpstreamProtocol::Tcp,
        (TlsMode::Reencrypt, None) => {
            let tls = BackendTls {
                sni: options.backend_sni.clone().unwrap_or_else(host_name),
                verify: options.verify_backend(),
                ca: context.ca.clone(),
                ca_secret: options
                    .backend_ca
                    .as_ref()
                    .map(|name| format!("{}/{name}", plan.namespace)),
            };
            if http2 {
                UpstreamProtocol::H2(tls)
            } else {
                UpstreamProtocol::Https(tls)
            }
        }
    };
    let probe = match options.health_check {
        HealthCheckKind::Http => HealthProbe::Http {
            method: options.health_check_method.clone(),
            path: options.health_check_path.clone(),
            host: options.health_check_host.clone().unwrap_or_else(host_name),
        },
        HealthCheckKind::Tls => HealthProbe::Tls {
            sni: options.backend_sni.clone().unwrap_or_else(host_name),
        },
        HealthCheckKind::Tcp => HealthProbe::Tcp,
        HealthCheckKind::None => HealthProbe::None,
    };
    UpstreamPolicy {
        protocol,
        balance: options.load_balance,
        health: HealthCheck {
            probe,
            interval: options.health_check_interval,
        },
        proxy_protocol: options.proxy_protocol,
    }
}
