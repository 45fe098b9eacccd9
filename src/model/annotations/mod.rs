//! Ingress annotations → typed [`IngressOptions`].
//!
//! `portcullis.io/*` keys, and the ingress-nginx / HAProxy Ingress equivalents read as aliases.
//! A `portcullis.io/` key wins over an alias (the alias is then not even read). A bad value is
//! an [`AnnotationError`] naming the key, the value and the accepted values; it never silently
//! becomes a default. Options apply to every host of the Ingress.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::crd::HealthCheckKind;
use crate::table::policy::RoutePolicy;
use crate::table::route::{Redirect, TlsMode};
use crate::table::upstream::{LoadBalance, ProxyProtocol};

// Annotation keys are put together at compile time: parsing 10 000 Ingresses used to format
// each key it looked up, a tenth of a build.

/// Our annotation `$name`, as a `&'static str`.
macro_rules! own {
    ($name:literal) => {
        concat!("portcullis.io/", $name)
    };
}

/// The ingress-nginx alias `$name`.
macro_rules! nginx {
    ($name:literal) => {
        concat!("nginx.ingress.kubernetes.io/", $name)
    };
}

/// Our key `$name` and its ingress-nginx alias, as `[&'static str; 2]`.
macro_rules! both {
    ($name:literal) => {
        [own!($name), nginx!($name)]
    };
}

/// The HAProxy Ingress alias `$name`.
macro_rules! haproxy {
    ($name:literal) => {
        concat!("haproxy.org/", $name)
    };
}

// After the key macros, which it uses.
mod backend_protocol;
mod basic_auth;
mod canary;
mod client_auth;
mod cors_headers;
mod error_pages;
mod external_auth;
mod paths;
mod rate_limit;
mod source_ranges;
mod sticky;
pub(crate) use backend_protocol::BackendProtocol;
pub(crate) use paths::PathOptions;

/// Prefix of our own annotations.
pub(crate) const PREFIX: &str = own!("");

/// Shortest accepted `health-check-interval`.
pub(crate) const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);

/// Status codes `permanent-redirect-code` accepts: ingress-nginx's range (300-308) narrowed to
/// the codes its `return CODE URL` sends as a redirect (with other codes nginx sends the URL as
/// the body, and no `Location`).
const PERMANENT_CODES: (&[u16], &str) = (&[301, 302, 303, 307, 308], "301, 302, 303, 307, 308");

/// Status codes `temporary-redirect-code` accepts: ingress-nginx's range (300-307), narrowed the
/// same way.
const TEMPORARY_CODES: (&[u16], &str) = (&[301, 302, 303, 307], "301, 302, 303, 307");

/// A bad annotation: which key, which value, what would have been accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// The value is outside the accepted set; the Ingress is not applied as written.
    #[error("annotation {key}: value {value:?} is not accepted (accepted: {accepted})")]
    InvalidValue {
        key: String,
        value: String,
        accepted: String,
    },
    /// The value is valid but does not apply to this Ingress (a warning; it is ignored).
    #[error("annotation {key}: value {value:?} is ignored: {why}")]
    Ignored {
        key: String,
        value: String,
        why: String,
    },
}

impl AnnotationError {
    /// The annotation key at fault.
    pub fn key(&self) -> &str {
        match self {
            AnnotationError::InvalidValue { key, .. } | AnnotationError::Ignored { key, .. } => key,
        }
    }
}

/// Class-wide defaults of the options (from IngressClassParams `defaults`, already validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionDefaults {
    pub(crate) ssl_redirect: bool,
    pub(crate) hsts: Option<String>,
    pub(crate) load_balance: LoadBalance,
    /// `None`: `http` for terminate/reencrypt, `tls` for pass-through.
    pub(crate) health_check: Option<HealthCheckKind>,
    pub(crate) health_check_path: String,
    pub(crate) health_check_method: String,
    pub(crate) health_check_interval: Duration,
    pub(crate) forwarded_headers: bool,
    /// Largest request body in bytes (`defaults.proxyBodySize`); `None`: no limit.
    pub(crate) max_body: Option<u64>,
    /// `defaults.allowSourceRange`: the allow-list of Ingresses without one; empty: none.
    pub(crate) allow_source_range: Vec<ipnet::IpNet>,
    /// `defaults.denySourceRange`: the deny-list of Ingresses without one; empty: none.
    pub(crate) deny_source_range: Vec<ipnet::IpNet>,
}

impl Default for OptionDefaults {
    fn default() -> Self {
        OptionDefaults {
            ssl_redirect: false,
            hsts: None,
            load_balance: LoadBalance::RoundRobin,
            health_check: None,
            health_check_path: "/".to_string(),
            health_check_method: "HEAD".to_string(),
            health_check_interval: Duration::from_secs(5),
            forwarded_headers: true,
            max_body: None,
            allow_source_range: Vec::new(),
            deny_source_range: Vec::new(),
        }
    }
}

/// Everything the annotations of one Ingress say, typed and defaulted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IngressOptions {
    pub(crate) tls_mode: TlsMode,
    /// HTTP version (and TLS, consistent with `tls_mode`) towards the pod.
    pub(crate) backend_protocol: BackendProtocol,
    pub(crate) ssl_redirect: bool,
    pub(crate) hsts: Option<String>,
    pub(crate) load_balance: LoadBalance,
    /// The probe kind, after the mode's default was applied.
    pub(crate) health_check: HealthCheckKind,
    pub(crate) health_check_path: String,
    /// `HEAD` or `GET`.
    pub(crate) health_check_method: String,
    /// Host header of HTTP probes; `None`: the rule host.
    pub(crate) health_check_host: Option<String>,
    pub(crate) health_check_interval: Duration,
    /// Secret name (same namespace) whose `ca.crt` verifies re-encrypted backends.
    pub(crate) backend_ca: Option<String>,
    /// `None`: true when `backend_ca` is set, else false.
    backend_verify: Option<bool>,
    pub(crate) backend_sni: Option<String>,
    /// Only for pass-through (ignored with a warning otherwise).
    pub(crate) proxy_protocol: Option<ProxyProtocol>,
    pub(crate) forwarded_headers: bool,
    /// `permanent-redirect` / `temporary-redirect`: every request to the Ingress's paths is
    /// answered with this redirect.
    pub(crate) redirect: Option<Redirect>,
    /// `app-root`: a request for `/` is answered `302` to this path.
    pub(crate) app_root: Option<String>,
    /// `from-to-www-redirect`: the other name of each host (`www.` added or removed) redirects
    /// to it.
    pub(crate) from_to_www: bool,
    /// `proxy-body-size`: requests to the Ingress's paths with a larger body get `413`; `None`:
    /// no limit (also what `0` says).
    pub(crate) max_body: Option<u64>,
    /// `use-regex` and `server-alias` (see [`PathOptions`]).
    pub(crate) paths: PathOptions,
    /// Everything else a route does to requests and responses (see [`RoutePolicy`]).
    pub(crate) policy: std::sync::Arc<RoutePolicy>,
    /// `canary: "true"`: this Ingress is an alternative upstream of the main Ingress's routes
    /// on the same hosts and paths, chosen by these rules.
    pub(crate) canary: Option<crate::table::canary::CanaryRules>,
}

impl IngressOptions {
    /// Whether re-encrypted backends' certificates are verified.
    pub(crate) fn verify_backend(&self) -> bool {
        self.backend_verify.unwrap_or(self.backend_ca.is_some())
    }
}

/// Parsed options plus the warnings (annotations ignored because they do not apply).
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub(crate) options: IngressOptions,
    /// Only [`AnnotationError::Ignored`].
    pub warnings: Vec<AnnotationError>,
}

/// Reads the annotations of an Ingress in `namespace`. Every bad value is reported, not just the
/// first.
pub fn parse(
    annotations: Option<&BTreeMap<String, String>>,
    namespace: &str,
    defaults: &OptionDefaults,
) -> Result<Parsed, Vec<AnnotationError>> {
    let empty = BTreeMap::new();
    let mut r = Reader::new(annotations.unwrap_or(&empty));

    let requested_protocol = r.backend_protocol();
    let tls_mode = r
        .tls_mode(requested_protocol.map(|p| p.protocol.tls_mode()))
        .unwrap_or_default();
    let backend_protocol = r.settle_backend_protocol(requested_protocol, tls_mode);
    let ssl_redirect = r.ssl_redirect().unwrap_or(defaults.ssl_redirect);
    let hsts = r.hsts().unwrap_or_else(|| defaults.hsts.clone());
    let load_balance = r.load_balance().unwrap_or(defaults.load_balance);

    let health_key = own!("health-check");
    let explicit_health = r.choice(
        health_key,
        &[
            ("http", HealthCheckKind::Http),
            ("tls", HealthCheckKind::Tls),
            ("tcp", HealthCheckKind::Tcp),
            ("none", HealthCheckKind::None),
        ],
    );
    let health_check = match (tls_mode, explicit_health) {
        (TlsMode::Passthrough, Some(HealthCheckKind::Http)) => {
            r.ignore(
                health_key,
                "pass-through backends speak TLS; probing with tls",
            );
            HealthCheckKind::Tls
        }
        (_, Some(kind)) => kind,
        (TlsMode::Passthrough, None) => match defaults.health_check {
            Some(HealthCheckKind::Http) | None => HealthCheckKind::Tls,
            Some(kind) => kind,
        },
        (_, None) => backend_protocol.default_health(defaults.health_check),
    };
    let health_check_path = r
        .value_where(own!("health-check-path"), "a path starting with /", |v| {
            v.starts_with('/') && !has_control(v)
        })
        .unwrap_or_else(|| defaults.health_check_path.clone());
    let health_check_method = r
        .choice(
            own!("health-check-method"),
            &[("HEAD", "HEAD"), ("GET", "GET")],
        )
        .map(str::to_string)
        .unwrap_or_else(|| defaults.health_check_method.clone());
    let health_check_host = r.value_where(own!("health-check-host"), "a host name", is_host_name);
    let health_check_interval = r
        .duration(own!("health-check-interval"))
        .unwrap_or(defaults.health_check_interval);

    let backend_ca = r.backend_ca(namespace);
    let backend_verify = r.backend_verify();
    let backend_sni = r.backend_sni();
    let proxy_protocol = r.choice(
        own!("proxy-protocol"),
        &[("v1", ProxyProtocol::V1), ("v2", ProxyProtocol::V2)],
    );
    let forwarded_headers = r
        .boolean(own!("forwarded-headers"))
        .unwrap_or(defaults.forwarded_headers);
    let redirect = r.redirect();
    let app_root = r.app_root();
    let www_key = r.own_or(own!("from-to-www-redirect"), nginx!("from-to-www-redirect"));
    let from_to_www = r.boolean(www_key).unwrap_or(false);
    let max_body = r.body_size().unwrap_or(defaults.max_body);
    let mut policy = RoutePolicy {
        error_pages: r.error_pages(tls_mode),
        ..Default::default()
    };
    r.cors_headers_timeouts(tls_mode, &mut policy);
    policy.affinity = r.affinity(tls_mode);
    policy.client_auth = r.client_auth(namespace, tls_mode).map(std::sync::Arc::new);
    policy.source_ranges = r.source_ranges(defaults);
    policy.rate_limit = r.rate_limit(tls_mode);
    let canary = r.canary(tls_mode);
    // A canary takes its access control from its main Ingress (its keys were warned about).
    if canary.is_none() {
        policy.basic_auth = r.basic_auth(namespace, tls_mode);
    }
    let (paths, upstream_request) = r.paths(tls_mode);
    policy.upstream_request = upstream_request;
    if canary.is_none() {
        policy.external_auth = r.external_auth(tls_mode);
    }

    // Options that only make sense in one mode.
    let mut options = IngressOptions {
        tls_mode,
        backend_protocol,
        ssl_redirect,
        hsts,
        load_balance,
        health_check,
        health_check_path,
        health_check_method,
        health_check_host,
        health_check_interval,
        backend_ca,
        backend_verify,
        backend_sni,
        proxy_protocol,
        forwarded_headers,
        redirect,
        app_root,
        from_to_www,
        max_body,
        paths,
        policy: RoutePolicy::shared(policy),
        canary,
    };
    canary::inherit_from_main(&mut options);
    if tls_mode == TlsMode::Passthrough {
        let redirect = options.redirect.take().is_some();
        let app_root = options.app_root.take().is_some();
        let www = std::mem::take(&mut options.from_to_www);
        if options.max_body.take().is_some() {
            r.ignore_any(
                "proxy-body-size",
                "pass-through hosts never see an HTTP request body",
            );
        }
        if redirect || app_root || www {
            for name in [
                "permanent-redirect",
                "temporary-redirect",
                "app-root",
                "from-to-www-redirect",
            ] {
                r.ignore_any(
                    name,
                    "pass-through hosts never see an HTTP request to redirect",
                );
            }
        }
    }
    if tls_mode != TlsMode::Passthrough && options.proxy_protocol.take().is_some() {
        r.ignore(
            own!("proxy-protocol"),
            "only pass-through hosts send a PROXY header",
        );
    }
    if tls_mode != TlsMode::Reencrypt {
        for (name, set) in [
            ("backend-ca", options.backend_ca.take().is_some()),
            ("backend-verify", options.backend_verify.take().is_some()),
            ("backend-sni", options.backend_sni.take().is_some()),
        ] {
            if set {
                r.ignore_any(name, "only re-encrypted hosts open TLS to the backend");
            }
        }
    }

    if r.errors.is_empty() {
        Ok(Parsed {
            options,
            warnings: r.warnings,
        })
    } else {
        Err(r.errors)
    }
}

/// What [`parse_body_size`] accepts, for error messages.
pub(crate) const BODY_SIZE_SYNTAX: &str = "a size like 1048576, 512k, 8m or 1g (0: no limit)";

/// A request body limit in nginx's `client_max_body_size` syntax, as ingress-nginx's
/// `proxy-body-size` takes it: digits with an optional `b`, `k`, `m` or `g` (either case,
/// powers of 1024). `Some(None)` for `0` (no limit), `None` when the value is not a size.
/// The one parser for the annotation and the class default (`defaults.proxyBodySize`).
pub(crate) fn parse_body_size(value: &str) -> Option<Option<u64>> {
    let (digits, unit) = match value.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&value[..i], c.to_ascii_lowercase()),
        _ => (value, 'b'),
    };
    let scale: u64 = match unit {
        'b' => 1,
        'k' => 1 << 10,
        'm' => 1 << 20,
        'g' => 1 << 30,
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bytes = digits.parse::<u64>().ok()?.checked_mul(scale)?;
    Some((bytes != 0).then_some(bytes))
}

// === durations ===

/// How a duration may be spelled where it is read. The one parser, [`parse_duration`], serves
/// both; a duration too large for [`Duration`] is an error in both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationSyntax {
    /// Annotations and IngressClassParams: digits then `ms`, `s` or `m`, nothing else (the
    /// CRD's pattern `^[0-9]+(ms|s|m)$`).
    Manifest,
    /// Command-line flags: also `h`, and a bare number of seconds; surrounding whitespace is
    /// ignored.
    Flag,
}

impl DurationSyntax {
    /// The units accepted, for error messages.
    fn units(self) -> &'static str {
        match self {
            DurationSyntax::Manifest => "ms, s or m",
            DurationSyntax::Flag => "ms, s, m or h",
        }
    }
}

/// Why a value is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// It does not start with a number.
    #[error("expected a duration like 30s, 500ms or 2m, got {value:?}")]
    NotANumber { value: String },
    /// A number without a unit where a unit is required.
    #[error("duration {value:?} has no unit (use {units})")]
    MissingUnit { value: String, units: &'static str },
    /// A unit that is not accepted.
    #[error("unknown duration unit {unit:?} in {value:?} (use {units})")]
    UnknownUnit {
        unit: String,
        value: String,
        units: &'static str,
    },
    /// More than [`Duration`] (or the `u64` count of the unit) can hold.
    #[error("duration {value:?} is too large")]
    Overflow { value: String },
}

/// Parses a duration: digits, then a unit as `syntax` allows (`500ms`, `5s`, `2m`; flags also
/// `1h` and `30`). A value too large to represent is [`DurationError::Overflow`], never a
/// saturated or wrapped duration.
pub fn parse_duration(value: &str, syntax: DurationSyntax) -> Result<Duration, DurationError> {
    let value = match syntax {
        DurationSyntax::Manifest => value,
        DurationSyntax::Flag => value.trim(),
    };
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() {
        return Err(DurationError::NotANumber {
            value: value.to_string(),
        });
    }
    let overflow = || DurationError::Overflow {
        value: value.to_string(),
    };
    // Only ASCII digits: the one way to fail is a number past `u64::MAX`.
    let n: u64 = digits.parse().map_err(|_| overflow())?;
    let secs = |per_unit: u64| n.checked_mul(per_unit).map(Duration::from_secs);
    let duration = match (unit, syntax) {
        ("ms", _) => Some(Duration::from_millis(n)),
        ("s", _) | ("", DurationSyntax::Flag) => Some(Duration::from_secs(n)),
        ("m", _) => secs(60),
        ("h", DurationSyntax::Flag) => secs(3600),
        ("", DurationSyntax::Manifest) => {
            return Err(DurationError::MissingUnit {
                value: value.to_string(),
                units: syntax.units(),
            });
        }
        _ => {
            return Err(DurationError::UnknownUnit {
                unit: unit.to_string(),
                value: value.to_string(),
                units: syntax.units(),
            });
        }
    };
    duration.ok_or_else(overflow)
}

fn has_control(value: &str) -> bool {
    value.chars().any(char::is_control)
}

/// An absolute `http://` or `https://` URL with a host, sendable as a `Location` as written.
/// No `$`: an nginx variable (`https://new.example$request_uri`) would reach clients
/// literally, where ingress-nginx once expanded it.
fn is_redirect_url(value: &str) -> bool {
    if has_control(value) || value.contains([' ', '$']) {
        return false;
    }
    let Ok(uri) = value.parse::<http::Uri>() else {
        return false;
    };
    let web = uri.scheme() == Some(&http::uri::Scheme::HTTP)
        || uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    web && uri.authority().is_some_and(|a| !a.host().is_empty())
}

/// A path (and optional query) on the same host, other than `/` itself (which would redirect
/// to itself forever), without nginx variables.
fn is_app_root(value: &str) -> bool {
    value.starts_with('/')
        && value != "/"
        && !has_control(value)
        && !value.contains([' ', '$'])
        && value.parse::<http::uri::PathAndQuery>().is_ok()
}

fn is_host_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

// === impl Reader ===

/// Reads annotation values, collecting errors instead of stopping at the first.
struct Reader<'a> {
    map: &'a BTreeMap<String, String>,
    /// The keys `map` holds, summarised: every lookup goes through it.
    present: KeyFilter,
    errors: Vec<AnnotationError>,
    warnings: Vec<AnnotationError>,
}

/// A one-word summary of a set of keys: a bit per key, chosen by the key's length and last
/// byte. [`parse`] asks for a few hundred keys (every annotation and alias it knows) of an
/// Ingress that usually carries a handful; an absent key whose bit is clear is answered
/// without the tree search, which compares strings at every level (at 10 000 Ingresses
/// those searches were a third of a warm build). A set bit only means "search".
#[derive(Debug, Clone, Copy, Default)]
struct KeyFilter(u64);

impl KeyFilter {
    fn of<'k>(keys: impl IntoIterator<Item = &'k String>) -> Self {
        KeyFilter(keys.into_iter().fold(0, |bits, k| bits | Self::bit(k)))
    }

    /// Annotation keys of one prefix differ most at the end and in length; a multiplicative
    /// hash of the two spreads them over the 64 bits.
    fn bit(key: &str) -> u64 {
        let last = key.as_bytes().last().copied().unwrap_or(0);
        let mixed = ((key.len() as u64) << 8 | u64::from(last)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        1 << (mixed >> 58)
    }

    fn may_hold(self, key: &str) -> bool {
        self.0 & Self::bit(key) != 0
    }
}

impl<'a> Reader<'a> {
    fn new(map: &'a BTreeMap<String, String>) -> Self {
        Reader {
            map,
            present: KeyFilter::of(map.keys()),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    #[inline]
    fn get(&self, key: &str) -> Option<&'a str> {
        if !self.present.may_hold(key) {
            return None;
        }
        self.search(key)
    }

    /// The tree search, out of line: [`Reader::get`] is inlined at some hundred call sites.
    #[inline(never)]
    fn search(&self, key: &str) -> Option<&'a str> {
        self.map.get(key).map(String::as_str)
    }

    fn has_own(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// `own` when the Ingress has it, else its alias: a `portcullis.io/` key wins, and the
    /// alias is then not read.
    fn own_or(&self, own: &'static str, alias: &'static str) -> &'static str {
        if self.has_own(own) { own } else { alias }
    }

    fn invalid(&mut self, key: &str, value: &str, accepted: &str) {
        self.errors.push(AnnotationError::InvalidValue {
            key: key.to_string(),
            value: value.to_string(),
            accepted: accepted.to_string(),
        });
    }

    /// Records a warning for `key` if it is present. Asked of some fifty keys per Ingress,
    /// nearly always absent: the check is inlined, the warning is not.
    #[inline]
    fn ignore(&mut self, key: &str, why: &str) {
        if let Some(value) = self.get(key) {
            self.warn_ignored(key, value, why);
        }
    }

    #[cold]
    fn warn_ignored(&mut self, key: &str, value: &str, why: &str) {
        self.warnings.push(AnnotationError::Ignored {
            key: key.to_string(),
            value: value.to_string(),
            why: why.to_string(),
        });
    }

    /// Records a warning for our key `name` or, when absent, for whichever alias was used.
    fn ignore_any(&mut self, name: &str, why: &str) {
        let candidates: &[&str] = match name {
            "backend-ca" => &[
                "nginx.ingress.kubernetes.io/proxy-ssl-secret",
                "haproxy.org/server-ca",
            ],
            "backend-verify" => &["nginx.ingress.kubernetes.io/proxy-ssl-verify"],
            "backend-sni" => &["nginx.ingress.kubernetes.io/proxy-ssl-name"],
            "permanent-redirect" => &[nginx!("permanent-redirect")],
            "temporary-redirect" => &[nginx!("temporal-redirect")],
            "app-root" => &[nginx!("app-root")],
            "from-to-www-redirect" => &[nginx!("from-to-www-redirect")],
            "proxy-body-size" => &[nginx!("proxy-body-size")],
            _ => &[],
        };
        let own = format!("{PREFIX}{name}");
        let used = std::iter::once(own.as_str())
            .chain(candidates.iter().copied())
            .find(|k| self.has_own(k))
            .map(str::to_string);
        if let Some(k) = used {
            self.ignore(&k, why);
        }
    }

    /// `true`/`false`, case-insensitive.
    fn boolean(&mut self, key: &str) -> Option<bool> {
        let value = self.get(key)?;
        match value.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.invalid(key, value, "true, false");
                None
            }
        }
    }

    /// One of `choices` (case-insensitive).
    fn choice<T: Copy>(&mut self, key: &str, choices: &[(&str, T)]) -> Option<T> {
        let value = self.get(key)?;
        match choices
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(value))
        {
            Some((_, t)) => Some(*t),
            None => {
                let accepted: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
                self.invalid(key, value, &accepted.join(", "));
                None
            }
        }
    }

    fn value_where(
        &mut self,
        key: &str,
        accepted: &str,
        ok: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let value = self.get(key)?;
        if ok(value) {
            Some(value.to_string())
        } else {
            self.invalid(key, value, accepted);
            None
        }
    }

    fn duration(&mut self, key: &str) -> Option<Duration> {
        let value = self.get(key)?;
        match parse_duration(value, DurationSyntax::Manifest) {
            Ok(d) if d >= MIN_HEALTH_INTERVAL => Some(d),
            _ => {
                self.invalid(
                    key,
                    value,
                    "a duration of at least 100ms, like 500ms, 5s or 2m",
                );
                None
            }
        }
    }

    /// `protocol`: the mode `backend-protocol` implies (read by [`Reader::backend_protocol`]).
    fn tls_mode(&mut self, protocol: Option<TlsMode>) -> Option<TlsMode> {
        if self.has_own(own!("tls-mode")) {
            return self.choice(
                own!("tls-mode"),
                &[
                    ("terminate", TlsMode::Terminate),
                    ("passthrough", TlsMode::Passthrough),
                    ("reencrypt", TlsMode::Reencrypt),
                ],
            );
        }
        // Aliases, most specific first: pass-through overrides a backend protocol, as in
        // ingress-nginx. Every alias present is validated.
        let nginx_passthrough = self.boolean(nginx!("ssl-passthrough"));
        let haproxy_passthrough = self.boolean(haproxy!("ssl-passthrough"));
        let haproxy_server_ssl = self.boolean(haproxy!("server-ssl"));
        if nginx_passthrough == Some(true) || haproxy_passthrough == Some(true) {
            Some(TlsMode::Passthrough)
        } else if let Some(mode) = protocol {
            Some(mode)
        } else if haproxy_server_ssl == Some(true) {
            Some(TlsMode::Reencrypt)
        } else {
            None
        }
    }

    fn ssl_redirect(&mut self) -> Option<bool> {
        if self.has_own(own!("ssl-redirect")) {
            return self.boolean(own!("ssl-redirect"));
        }
        let aliases = [
            self.boolean(nginx!("ssl-redirect")),
            self.boolean(nginx!("force-ssl-redirect")),
            self.boolean(haproxy!("ssl-redirect")),
        ];
        aliases.iter().flatten().copied().reduce(|a, b| a || b)
    }

    /// `Some(None)`: HSTS explicitly off.
    fn hsts(&mut self) -> Option<Option<String>> {
        if self.has_own(own!("hsts")) {
            return self
                .value_where(
                    own!("hsts"),
                    "a non-empty header value without CR/LF",
                    |v| !v.trim().is_empty() && !has_control(v),
                )
                .map(Some);
        }
        let enabled = self.boolean(nginx!("hsts"))?;
        let max_age_key = nginx!("hsts-max-age");
        let max_age = self
            .value_where(max_age_key, "a number of seconds", |v| {
                !v.is_empty() && v.len() <= 12 && v.bytes().all(|b| b.is_ascii_digit())
            })
            .unwrap_or_else(|| "31536000".to_string());
        let subdomains = self
            .boolean(nginx!("hsts-include-subdomains"))
            .unwrap_or(true);
        let preload = self.boolean(nginx!("hsts-preload")).unwrap_or(false);
        if !enabled {
            return Some(None);
        }
        let mut value = format!("max-age={max_age}");
        if subdomains {
            value.push_str("; includeSubDomains");
        }
        if preload {
            value.push_str("; preload");
        }
        Some(Some(value))
    }

    fn load_balance(&mut self) -> Option<LoadBalance> {
        if self.has_own(own!("load-balance")) {
            return self.choice(
                own!("load-balance"),
                &[
                    ("round-robin", LoadBalance::RoundRobin),
                    ("least-request", LoadBalance::LeastRequest),
                    ("random", LoadBalance::Random),
                ],
            );
        }
        let nginx = self.choice(
            nginx!("load-balance"),
            &[
                ("round_robin", LoadBalance::RoundRobin),
                ("ewma", LoadBalance::LeastRequest),
            ],
        );
        let haproxy = self.choice(
            haproxy!("load-balance"),
            &[
                ("roundrobin", LoadBalance::RoundRobin),
                ("leastconn", LoadBalance::LeastRequest),
                ("random", LoadBalance::Random),
            ],
        );
        nginx.or(haproxy)
    }

    fn backend_ca(&mut self, namespace: &str) -> Option<String> {
        let accepted_name = "a Secret name (with ca.crt) in the Ingress's namespace";
        if self.has_own(own!("backend-ca")) {
            return self.value_where(own!("backend-ca"), accepted_name, is_host_name);
        }
        let mut found = None;
        for alias in [nginx!("proxy-ssl-secret"), haproxy!("server-ca")] {
            let Some(value) = self.get(alias) else {
                continue;
            };
            let name = match value.split_once('/') {
                Some((ns, name)) if ns == namespace => name,
                Some(_) => "",
                None => value,
            };
            if is_host_name(name) {
                found = found.or(Some(name.to_string()));
            } else {
                let value = value.to_string();
                let accepted = format!(
                    "a Secret in the Ingress's namespace, as \"{namespace}/NAME\" or \"NAME\""
                );
                self.invalid(alias, &value, &accepted);
            }
        }
        found
    }

    /// `permanent-redirect` / `temporary-redirect` (ingress-nginx `temporal-redirect`) with
    /// their codes (defaults 301 and 302, ingress-nginx's). When both are set the temporary
    /// one wins, as in ingress-nginx (its redirect parser reads `temporal-redirect` first);
    /// the permanent one is reported as ignored, as is a code without its URL. A code outside
    /// the accepted set is an error, never the default (ingress-nginx silently falls back).
    fn redirect(&mut self) -> Option<Redirect> {
        let permanent_key = self.own_or(own!("permanent-redirect"), nginx!("permanent-redirect"));
        let permanent_code_key = self.own_or(
            own!("permanent-redirect-code"),
            nginx!("permanent-redirect-code"),
        );
        let temporary_key = self.own_or(own!("temporary-redirect"), nginx!("temporal-redirect"));
        let temporary_code_key = self.own_or(
            own!("temporary-redirect-code"),
            nginx!("temporal-redirect-code"),
        );
        let url = "an absolute http:// or https:// URL (no nginx $variables)";
        let permanent = self.value_where(permanent_key, url, is_redirect_url);
        let permanent_code = self.redirect_code(permanent_code_key, PERMANENT_CODES);
        let temporary = self.value_where(temporary_key, url, is_redirect_url);
        let temporary_code = self.redirect_code(temporary_code_key, TEMPORARY_CODES);
        if !self.has_own(permanent_key) {
            self.ignore(
                permanent_code_key,
                "there is no permanent-redirect to apply it to",
            );
        }
        if !self.has_own(temporary_key) {
            self.ignore(
                temporary_code_key,
                "there is no temporary-redirect to apply it to",
            );
        }
        if let Some(location) = temporary {
            let why =
                "temporary-redirect takes precedence, as temporal-redirect does in ingress-nginx";
            if permanent.is_some() {
                self.ignore(permanent_key, why);
                self.ignore(permanent_code_key, why);
            }
            return Some(Redirect {
                status: temporary_code.unwrap_or(302),
                location,
            });
        }
        permanent.map(|location| Redirect {
            status: permanent_code.unwrap_or(301),
            location,
        })
    }

    /// A redirect status code among `accepted` (the codes and their text).
    fn redirect_code(&mut self, key: &str, accepted: (&[u16], &str)) -> Option<u16> {
        let value = self.get(key)?;
        match value.parse::<u16>() {
            Ok(code) if accepted.0.contains(&code) => Some(code),
            _ => {
                self.invalid(key, value, accepted.1);
                None
            }
        }
    }

    /// `proxy-body-size` (see [`parse_body_size`]). `None` when absent (the class default
    /// applies) or invalid (an error); `Some(None)`: `0`, no limit, whatever the class says.
    fn body_size(&mut self) -> Option<Option<u64>> {
        let key = self.own_or(own!("proxy-body-size"), nginx!("proxy-body-size"));
        let value = self.get(key)?;
        match parse_body_size(value) {
            Some(limit) => Some(limit),
            None => {
                self.invalid(key, value, BODY_SIZE_SYNTAX);
                None
            }
        }
    }

    /// `app-root` (ingress-nginx `app-root`): a path on the same host.
    fn app_root(&mut self) -> Option<String> {
        let key = self.own_or(own!("app-root"), nginx!("app-root"));
        self.value_where(
            key,
            "a path other than / starting with / (no nginx $variables)",
            is_app_root,
        )
    }

    fn backend_verify(&mut self) -> Option<bool> {
        if self.has_own(own!("backend-verify")) {
            return self.boolean(own!("backend-verify"));
        }
        self.choice(nginx!("proxy-ssl-verify"), &[("on", true), ("off", false)])
    }

    fn backend_sni(&mut self) -> Option<String> {
        let k = if self.has_own(own!("backend-sni")) {
            own!("backend-sni")
        } else {
            nginx!("proxy-ssl-name")
        };
        self.value_where(k, "a host name", is_host_name)
            .map(|v| v.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn ok(pairs: &[(&str, &str)]) -> Parsed {
        parse(Some(&map(pairs)), "ns", &OptionDefaults::default()).unwrap()
    }

    fn err(pairs: &[(&str, &str)]) -> Vec<AnnotationError> {
        parse(Some(&map(pairs)), "ns", &OptionDefaults::default()).unwrap_err()
    }

    /// The key filter only ever saves a search: every key the catalog knows is found in a map
    /// that holds it, alone or among others, exactly as the map answers; and it does save
    /// searches (a map of one key sends few of the others to the tree).
    #[test]
    fn the_key_filter_answers_as_the_map() {
        let keys: Vec<String> = crate::model::annotation_catalog::every_key().collect();
        assert!(keys.len() > 300, "the catalog has {} keys", keys.len());
        for (i, key) in keys.iter().enumerate() {
            let alone = map(&[(key, "v")]);
            let reader = Reader::new(&alone);
            let mut searched = 0;
            for other in &keys {
                assert_eq!(reader.get(other), alone.get(other).map(String::as_str));
                searched += usize::from(reader.present.may_hold(other));
            }
            assert!(
                searched * 10 < keys.len(),
                "a map of {key} sends {searched} of {} keys to the search",
                keys.len()
            );
            // A handful of keys, as an Ingress carries.
            let several: BTreeMap<String, String> = keys
                .iter()
                .skip(i)
                .step_by(37)
                .take(8)
                .map(|k| (k.clone(), format!("value of {k}")))
                .collect();
            let reader = Reader::new(&several);
            for other in &keys {
                assert_eq!(reader.get(other), several.get(other).map(String::as_str));
                assert_eq!(reader.has_own(other), several.contains_key(other));
            }
        }
    }

    #[test]
    fn defaults() {
        let o = ok(&[]).options;
        assert_eq!(o.tls_mode, TlsMode::Terminate);
        assert!(!o.ssl_redirect);
        assert!(o.forwarded_headers);
        assert_eq!(o.health_check, HealthCheckKind::Http);
        assert_eq!(o.health_check_interval, Duration::from_secs(5));
        assert!(!o.verify_backend());
    }

    #[test]
    fn own_key_wins_over_alias() {
        let o = ok(&[
            ("portcullis.io/tls-mode", "terminate"),
            (
                "nginx.ingress.kubernetes.io/ssl-passthrough",
                "not-even-valid",
            ),
        ]);
        assert_eq!(o.options.tls_mode, TlsMode::Terminate);
    }

    #[test]
    fn bad_values_name_key_value_and_accepted() {
        let errors = err(&[
            ("portcullis.io/tls-mode", "pass"),
            ("portcullis.io/ssl-redirect", "yes"),
        ]);
        assert_eq!(errors.len(), 2);
        let text = errors[0].to_string();
        assert!(text.contains("portcullis.io/tls-mode") && text.contains("\"pass\""));
        assert!(text.contains("terminate, passthrough, reencrypt"), "{text}");
    }

    #[test]
    fn nginx_hsts() {
        let o = ok(&[
            ("nginx.ingress.kubernetes.io/hsts", "true"),
            ("nginx.ingress.kubernetes.io/hsts-max-age", "600"),
            ("nginx.ingress.kubernetes.io/hsts-preload", "TRUE"),
        ]);
        assert_eq!(
            o.options.hsts.as_deref(),
            Some("max-age=600; includeSubDomains; preload")
        );
    }

    #[test]
    fn backend_protocol_ajp_is_refused_grpc_is_http2() {
        assert_eq!(
            err(&[("nginx.ingress.kubernetes.io/backend-protocol", "AJP")]).len(),
            1
        );
        let grpcs = ok(&[("nginx.ingress.kubernetes.io/backend-protocol", "GRPCS")]);
        assert_eq!(grpcs.options.backend_protocol, BackendProtocol::Grpcs);
        assert_eq!(grpcs.options.tls_mode, TlsMode::Reencrypt);
        assert_eq!(grpcs.options.health_check, HealthCheckKind::Tls);
        let grpc = ok(&[("portcullis.io/backend-protocol", "grpc")]);
        assert_eq!(grpc.options.tls_mode, TlsMode::Terminate);
        assert_eq!(grpc.options.health_check, HealthCheckKind::Tcp);
        err(&[
            ("portcullis.io/backend-protocol", "grpc"),
            ("portcullis.io/tls-mode", "reencrypt"),
        ]);
        let alias_loses = ok(&[
            ("nginx.ingress.kubernetes.io/backend-protocol", "GRPCS"),
            ("portcullis.io/tls-mode", "terminate"),
        ]);
        assert_eq!(alias_loses.options.backend_protocol, BackendProtocol::Http);
        assert_eq!(alias_loses.warnings.len(), 1);
    }

    #[test]
    fn proxy_ssl_secret_must_be_same_namespace() {
        let ok = ok(&[
            ("nginx.ingress.kubernetes.io/backend-protocol", "HTTPS"),
            ("nginx.ingress.kubernetes.io/proxy-ssl-secret", "ns/ca"),
        ]);
        assert_eq!(ok.options.backend_ca.as_deref(), Some("ca"));
        assert!(ok.options.verify_backend());
        err(&[("nginx.ingress.kubernetes.io/proxy-ssl-secret", "other/ca")]);
    }

    #[test]
    fn proxy_protocol_outside_passthrough_is_a_warning() {
        let p = ok(&[("portcullis.io/proxy-protocol", "v2")]);
        assert_eq!(p.options.proxy_protocol, None);
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn redirects_read_our_keys_and_the_nginx_aliases() {
        let nginx = ok(&[(
            "nginx.ingress.kubernetes.io/permanent-redirect",
            "https://new.example.com/",
        )]);
        assert_eq!(
            nginx.options.redirect,
            Some(Redirect {
                status: 301,
                location: "https://new.example.com/".into()
            })
        );
        let ours = ok(&[
            ("portcullis.io/permanent-redirect", "http://a.example/x?y=1"),
            ("portcullis.io/permanent-redirect-code", "308"),
            ("nginx.ingress.kubernetes.io/permanent-redirect", "not read"),
        ]);
        assert_eq!(ours.options.redirect.as_ref().map(|r| r.status), Some(308));
        // Temporary wins over permanent (ingress-nginx reads temporal-redirect first).
        let both = ok(&[
            (
                "nginx.ingress.kubernetes.io/temporal-redirect",
                "https://t.example",
            ),
            ("nginx.ingress.kubernetes.io/temporal-redirect-code", "307"),
            (
                "nginx.ingress.kubernetes.io/permanent-redirect",
                "https://p.example",
            ),
        ]);
        assert_eq!(
            both.options.redirect,
            Some(Redirect {
                status: 307,
                location: "https://t.example".into()
            })
        );
        assert_eq!(both.warnings.len(), 1);
        assert_eq!(
            both.warnings[0].key(),
            "nginx.ingress.kubernetes.io/permanent-redirect"
        );
        // A code without its URL does nothing: a warning.
        let lonely = ok(&[("portcullis.io/temporary-redirect-code", "303")]);
        assert_eq!(lonely.options.redirect, None);
        assert_eq!(lonely.warnings.len(), 1);
    }

    #[test]
    fn bad_redirects_are_errors_naming_the_key() {
        for (key, value) in [
            ("portcullis.io/permanent-redirect", "ftp://x.example"),
            ("portcullis.io/permanent-redirect", "/relative"),
            (
                "nginx.ingress.kubernetes.io/permanent-redirect",
                "https://x.example$request_uri",
            ),
            ("nginx.ingress.kubernetes.io/temporal-redirect", "https://"),
            ("portcullis.io/app-root", "/"),
            ("nginx.ingress.kubernetes.io/app-root", "app"),
            ("portcullis.io/from-to-www-redirect", "yes"),
        ] {
            let errors = err(&[(key, value)]);
            assert_eq!(errors.len(), 1, "{key}: {value}");
            assert_eq!(errors[0].key(), key);
        }
        let errors = err(&[
            ("portcullis.io/permanent-redirect", "https://x.example"),
            ("portcullis.io/permanent-redirect-code", "200"),
        ]);
        assert!(
            errors[0].to_string().contains("301, 302, 303, 307, 308"),
            "{}",
            errors[0]
        );
        // 308 is a permanent code only, as in ingress-nginx (temporal codes stop at 307).
        err(&[
            (
                "nginx.ingress.kubernetes.io/temporal-redirect",
                "https://x.example",
            ),
            ("nginx.ingress.kubernetes.io/temporal-redirect-code", "308"),
        ]);
    }

    #[test]
    fn app_root_and_www_and_their_passthrough_warnings() {
        let o = ok(&[
            ("nginx.ingress.kubernetes.io/app-root", "/app?from=root"),
            ("nginx.ingress.kubernetes.io/from-to-www-redirect", "true"),
        ])
        .options;
        assert_eq!(o.app_root.as_deref(), Some("/app?from=root"));
        assert!(o.from_to_www);
        let p = ok(&[
            ("portcullis.io/tls-mode", "passthrough"),
            ("portcullis.io/app-root", "/app"),
        ]);
        assert_eq!(p.options.app_root, None);
        assert_eq!(p.warnings.len(), 1);
        assert_eq!(p.warnings[0].key(), "portcullis.io/app-root");
    }

    #[test]
    fn body_sizes_in_nginx_syntax() {
        let size = |v: &str| {
            ok(&[("nginx.ingress.kubernetes.io/proxy-body-size", v)])
                .options
                .max_body
        };
        assert_eq!(size("1000"), Some(1000));
        assert_eq!(size("8m"), Some(8 << 20));
        assert_eq!(size("8M"), Some(8 << 20));
        assert_eq!(size("512k"), Some(512 << 10));
        assert_eq!(size("1g"), Some(1 << 30));
        assert_eq!(size("0"), None);
        assert_eq!(
            ok(&[("portcullis.io/proxy-body-size", "2k")])
                .options
                .max_body,
            Some(2048)
        );
        for bad in [
            "",
            "m",
            "1.5m",
            "-1",
            "8mb",
            "8 m",
            "1t",
            "99999999999999999999g",
        ] {
            let errors = err(&[("portcullis.io/proxy-body-size", bad)]);
            assert_eq!(errors[0].key(), "portcullis.io/proxy-body-size", "{bad:?}");
        }
    }

    /// The class default (`defaults.proxyBodySize`, like ingress-nginx's ConfigMap
    /// `proxy-body-size`) applies when the Ingress says nothing; the annotation wins, and its
    /// `0` lifts the class's limit.
    #[test]
    fn body_size_class_default_and_override() {
        let class = OptionDefaults {
            max_body: Some(1 << 20),
            ..OptionDefaults::default()
        };
        let with = |pairs: &[(&str, &str)]| {
            parse(Some(&map(pairs)), "ns", &class)
                .unwrap()
                .options
                .max_body
        };
        assert_eq!(with(&[]), Some(1 << 20));
        assert_eq!(
            with(&[("nginx.ingress.kubernetes.io/proxy-body-size", "8m")]),
            Some(8 << 20)
        );
        assert_eq!(with(&[("portcullis.io/proxy-body-size", "0")]), None);
        assert_eq!(parse_body_size("1m"), Some(Some(1 << 20)));
        assert_eq!(parse_body_size("0"), Some(None));
        assert_eq!(parse_body_size("1.5m"), None);
    }

    #[test]
    fn durations() {
        let manifest = |v| parse_duration(v, DurationSyntax::Manifest).ok();
        assert_eq!(manifest("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(manifest("2m"), Some(Duration::from_secs(120)));
        assert_eq!(manifest("5"), None);
        assert_eq!(manifest("s"), None);
        assert_eq!(manifest("1h"), None);
        err(&[("portcullis.io/health-check-interval", "50ms")]);
    }

    #[test]
    fn duration_units_in_both_syntaxes() {
        use DurationSyntax::{Flag, Manifest};
        for syntax in [Manifest, Flag] {
            assert_eq!(
                parse_duration("250ms", syntax),
                Ok(Duration::from_millis(250))
            );
            assert_eq!(parse_duration("5s", syntax), Ok(Duration::from_secs(5)));
            assert_eq!(parse_duration("2m", syntax), Ok(Duration::from_secs(120)));
            for zero in ["0ms", "0s", "0m", "000s"] {
                assert_eq!(parse_duration(zero, syntax), Ok(Duration::ZERO), "{zero}");
            }
            for bad in [
                "", "s", "ms", "-1s", "+1s", "1.5s", "1 s", "1S", "1d", "1sec",
            ] {
                assert!(parse_duration(bad, syntax).is_err(), "{bad:?} {syntax:?}");
            }
        }
        // Flags also take hours and bare seconds, and ignore surrounding whitespace.
        assert_eq!(parse_duration("1h", Flag), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7", Flag), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0", Flag), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 30s ", Flag), Ok(Duration::from_secs(30)));
        // Manifests follow the CRD pattern `^[0-9]+(ms|s|m)$` exactly.
        assert!(matches!(
            parse_duration("7", Manifest),
            Err(DurationError::MissingUnit { .. })
        ));
        assert!(matches!(
            parse_duration("0", Manifest),
            Err(DurationError::MissingUnit { .. })
        ));
        assert!(matches!(
            parse_duration("1h", Manifest),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(parse_duration(" 30s", Manifest).is_err());
        assert!(matches!(
            parse_duration("s", Flag),
            Err(DurationError::NotANumber { .. })
        ));
    }

    #[test]
    fn duration_overflow_is_an_error_in_both_syntaxes() {
        use DurationSyntax::{Flag, Manifest};
        let max = u64::MAX;
        for syntax in [Manifest, Flag] {
            // The largest counts that fit still parse.
            assert_eq!(
                parse_duration(&format!("{max}s"), syntax),
                Ok(Duration::from_secs(max))
            );
            assert_eq!(
                parse_duration(&format!("{max}ms"), syntax),
                Ok(Duration::from_millis(max))
            );
            assert_eq!(
                parse_duration(&format!("{}m", max / 60), syntax),
                Ok(Duration::from_secs(max / 60 * 60))
            );
            for over in [
                format!("{}m", max / 60 + 1),
                format!("{max}m"),
                "18446744073709551616s".to_string(),
                "18446744073709551616ms".to_string(),
                "99999999999999999999m".to_string(),
            ] {
                assert!(
                    matches!(
                        parse_duration(&over, syntax),
                        Err(DurationError::Overflow { .. })
                    ),
                    "{over} {syntax:?}"
                );
            }
        }
        assert_eq!(
            parse_duration(&format!("{}h", max / 3600), Flag),
            Ok(Duration::from_secs(max / 3600 * 3600))
        );
        assert!(matches!(
            parse_duration(&format!("{}h", max / 3600 + 1), Flag),
            Err(DurationError::Overflow { .. })
        ));
        assert!(matches!(
            parse_duration("18446744073709551616", Flag),
            Err(DurationError::Overflow { .. })
        ));
    }

    #[test]
    fn duration_errors_keep_the_flag_wording() {
        assert_eq!(
            parse_duration("s", DurationSyntax::Flag)
                .unwrap_err()
                .to_string(),
            "expected a duration like 30s, 500ms or 2m, got \"s\""
        );
        assert_eq!(
            parse_duration("5d", DurationSyntax::Flag)
                .unwrap_err()
                .to_string(),
            "unknown duration unit \"d\" in \"5d\" (use ms, s, m or h)"
        );
    }
}
