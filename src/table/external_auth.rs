//! External authentication as ingress-nginx's `auth-url` family of annotations asks for it
//! (annotations.md, "External Authentication"; the oauth2-proxy pattern): where the
//! subrequest goes and how, what its answer does, and the small nginx-variable templates of
//! `auth-signin` and `auth-cache-key`. Validated when the annotations are read; the proxy side
//! (the subrequest, the verdict, the cache) is `crate::proxy::external_auth`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use serde::Serialize;

/// ingress-nginx's default `auth-signin-redirect-param`.
pub(crate) const DEFAULT_REDIRECT_PARAM: &str = "rd";
/// ingress-nginx's default `auth-cache-duration` (`DefaultCacheDuration`, "200 202 401 5m").
pub(crate) const DEFAULT_CACHE_STATUSES: [u16; 3] = [200, 202, 401];
/// The time of [`DEFAULT_CACHE_STATUSES`].
pub(crate) const DEFAULT_CACHE_TIME: Duration = Duration::from_secs(300);
/// Most cached verdicts of one Ingress: a flood of distinct keys cannot grow the cache past it.
pub(crate) const CACHE_MAX_ENTRIES: usize = 10_000;
/// Most bytes of cache keys and kept answer headers of one Ingress (keys come from client
/// headers, up to the header limit each): the other bound of the cache's memory.
pub(crate) const CACHE_MAX_BYTES: usize = 8 << 20;

/// The external authentication of a route.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ExternalAuth {
    /// `auth-url`: where the subrequest goes.
    pub(crate) url: AuthUrl,
    /// `auth-method` (default GET).
    #[serde(serialize_with = "serialize_method")]
    pub(crate) method: Method,
    /// `auth-signin`: a 401 becomes a 302 here (with the original URL in `rd`).
    pub(crate) signin: Option<Signin>,
    /// `auth-response-headers`: copied from a 2xx auth answer onto the request to the pod
    /// (lower-cased; a listed header the auth answer lacks is removed from the request, as
    /// nginx's `proxy_set_header` of an empty value does, so a client cannot supply it).
    #[serde(serialize_with = "serialize_names")]
    pub(crate) response_headers: Vec<HeaderName>,
    /// `auth-request-redirect`: the `X-Auth-Request-Redirect` value (default: the request URI).
    #[serde(skip)]
    pub(crate) request_redirect: Option<HeaderValue>,
    /// `auth-always-set-cookie`: the auth answer's `Set-Cookie` on every response, not only
    /// on successful ones.
    pub(crate) always_set_cookie: bool,
    /// `auth-cache-key` and `auth-cache-duration`.
    pub(crate) cache: Option<CacheSpec>,
}

fn serialize_method<S: serde::Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

fn serialize_names<S: serde::Serializer>(names: &[HeaderName], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(names.iter().map(HeaderName::as_str))
}

/// A parsed `auth-url`: an absolute `http://` or `https://` URL, with at most the request's
/// host and scheme as variables (`https://$host/oauth2/auth`, the documented oauth2-proxy
/// form); then its fields describe a sample expansion and [`AuthUrl::for_request`] gives the
/// URL of each request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct AuthUrl {
    /// As written, for display.
    pub(crate) text: String,
    /// The URL's variables, when it has some.
    #[serde(skip)]
    template: Option<Template>,
    pub(crate) tls: bool,
    /// Host name or IP address (IPv6 without brackets): what is resolved, and the TLS name.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `host[:port]` as written: the subrequest's `Host`.
    pub(crate) authority: String,
    /// Path and query of the subrequest.
    pub(crate) path_and_query: String,
}

impl AuthUrl {
    /// `None` unless `text` is an absolute http(s) URL with a host, no userinfo or fragment,
    /// and no variables but [`URL_VARIABLES`].
    pub(crate) fn parse(text: &str) -> Option<AuthUrl> {
        if !text.contains('$') {
            return AuthUrl::parse_fixed(text);
        }
        let template = Template::parse(text)?;
        let only_host_and_scheme = template
            .parts
            .iter()
            .all(|part| matches!(part, Part::Literal(_) | Part::Var(Var::Host | Var::Scheme)));
        if !only_host_and_scheme {
            return None;
        }
        let headers = HeaderMap::new();
        let sample = RequestVars {
            scheme: "https",
            http_host: "host.example:8443",
            host: "host.example",
            request_uri: "/",
            remote_addr: IpAddr::from([127, 0, 0, 1]),
            headers: &headers,
        };
        let mut url = AuthUrl::parse_fixed(&template.expand(&sample))?;
        url.text = text.to_string();
        url.template = Some(template);
        Some(url)
    }

    /// The URL of the subrequest of a request with `vars`: this one when it has no variables,
    /// else its expansion (`None` when that is no URL, e.g. a `Host` with userinfo).
    pub(crate) fn for_request(
        &self,
        vars: &RequestVars<'_>,
    ) -> Option<std::borrow::Cow<'_, AuthUrl>> {
        match &self.template {
            None => Some(std::borrow::Cow::Borrowed(self)),
            Some(t) => AuthUrl::parse_fixed(&t.expand(vars)).map(std::borrow::Cow::Owned),
        }
    }

    /// Whether the URL names the request's host (then a host-less rule must not use it: any
    /// client could name any host).
    pub(crate) fn names_request_host(&self) -> bool {
        self.template.is_some()
    }

    fn parse_fixed(text: &str) -> Option<AuthUrl> {
        if text.contains('$') || text.contains('#') || text.chars().any(char::is_whitespace) {
            return None;
        }
        let uri: http::Uri = text.parse().ok()?;
        let tls = match uri.scheme_str()? {
            s if s.eq_ignore_ascii_case("http") => false,
            s if s.eq_ignore_ascii_case("https") => true,
            _ => return None,
        };
        let authority = uri.authority()?;
        if authority.as_str().contains('@') {
            return None;
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return None;
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path_and_query = uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
        let path_and_query = if path_and_query.is_empty() {
            "/".to_string()
        } else {
            path_and_query
        };
        Some(AuthUrl {
            text: text.to_string(),
            template: None,
            tls,
            host: host.to_ascii_lowercase(),
            port,
            authority: authority.as_str().to_string(),
            path_and_query,
        })
    }
}

/// `auth-signin` and where the original URL goes in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Signin {
    pub(crate) url: Template,
    /// `Some("?rd=")` or `Some("&rd=")`: appended with the escaped original URL, as
    /// ingress-nginx's `buildAuthSignURL` does; `None` when the URL already carries a
    /// non-empty redirect parameter (then it is used as written, variables expanded).
    pub(crate) append: Option<String>,
}

impl Signin {
    /// `url` must be an absolute http(s) URL, or a path; `param` is the redirect parameter.
    pub(crate) fn parse(text: &str, param: &str) -> Option<Signin> {
        let lower = text.to_ascii_lowercase();
        let absolute = lower.starts_with("http://") || lower.starts_with("https://");
        if !(absolute || text.starts_with('/')) || text.chars().any(char::is_control) {
            return None;
        }
        let url = Template::parse(text)?;
        let query = text.split_once('?').map(|(_, q)| q);
        let append = match query {
            None => Some(format!("?{param}=")),
            Some(q) => {
                let has = q.split('&').any(|pair| match pair.split_once('=') {
                    Some((k, v)) => k == param && !v.is_empty(),
                    None => false,
                });
                if has {
                    None
                } else if q.is_empty() {
                    Some(format!("{param}="))
                } else {
                    Some(format!("&{param}="))
                }
            }
        };
        Some(Signin { url, append })
    }
}

/// One nginx variable of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Var {
    /// `$host`: the request's host, lower-cased, without port.
    Host,
    /// `$http_host`, `$best_http_host`: the `Host` as sent.
    HttpHost,
    /// `$scheme`, `$pass_access_scheme`: `http` or `https`.
    Scheme,
    /// `$request_uri`: path and query as sent.
    RequestUri,
    /// `$escaped_request_uri`: the same, URI-component escaped.
    EscapedRequestUri,
    /// `$remote_addr`: the real client address.
    RemoteAddr,
    /// `$remote_user`: the user name of a `Basic` `Authorization`.
    RemoteUser,
    /// `$http_<name>`: a request header (underscores for dashes).
    Header(String),
    /// `$cookie_<name>`: a request cookie.
    Cookie(String),
}

/// A string with nginx variables (`$name` or `${name}`), those of [`Var`] only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Template {
    pub(crate) text: String,
    #[serde(skip)]
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(Var),
}

/// The variables an `auth-url` may have, for error messages (not `$http_host`: its port is
/// the client's choice).
pub(crate) const URL_VARIABLES: &str = "$host, $scheme, $pass_access_scheme";

/// What [`Template::parse`] accepts, for error messages.
pub(crate) const TEMPLATE_VARIABLES: &str = "$host, $http_host, $best_http_host, $scheme, \
     $pass_access_scheme, $request_uri, $escaped_request_uri, $remote_addr, $remote_user, \
     $http_<header>, $cookie_<name>";

impl Template {
    /// `None` when a `$` does not start a supported variable.
    pub(crate) fn parse(text: &str) -> Option<Template> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            literal.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced.find('}')?;
                (&braced[..end], &braced[end + 1..])
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            let var = Var::parse(name)?;
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(Part::Var(var));
            rest = tail;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Some(Template {
            text: text.to_string(),
            parts,
        })
    }

    /// The template with `vars` filled in (a missing header or cookie is empty, as in nginx).
    pub(crate) fn expand(&self, vars: &RequestVars<'_>) -> String {
        let mut out = String::with_capacity(self.text.len() + 32);
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Var(v) => vars.push(v, &mut out),
            }
        }
        out
    }
}

impl Var {
    fn parse(name: &str) -> Option<Var> {
        let lower = name.to_ascii_lowercase();
        let named = |prefix: &str| {
            lower
                .strip_prefix(prefix)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
        };
        Some(match lower.as_str() {
            "host" => Var::Host,
            "http_host" | "best_http_host" => Var::HttpHost,
            "scheme" | "pass_access_scheme" => Var::Scheme,
            "request_uri" => Var::RequestUri,
            "escaped_request_uri" => Var::EscapedRequestUri,
            "remote_addr" => Var::RemoteAddr,
            "remote_user" => Var::RemoteUser,
            _ => {
                if let Some(h) = named("http_") {
                    Var::Header(h.replace('_', "-"))
                } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                    Var::Cookie(c.to_string())
                } else {
                    return None;
                }
            }
        })
    }
}

/// What a template's variables are filled with, for one request.
pub(crate) struct RequestVars<'a> {
    /// `http` or `https`.
    pub(crate) scheme: &'static str,
    /// The `Host` as sent (empty when none).
    pub(crate) http_host: &'a str,
    /// The request's host, normalized (lower-cased, no port).
    pub(crate) host: &'a str,
    /// Path and query as sent.
    pub(crate) request_uri: &'a str,
    pub(crate) remote_addr: IpAddr,
    pub(crate) headers: &'a HeaderMap,
}

impl RequestVars<'_> {
    fn push(&self, var: &Var, out: &mut String) {
        use std::fmt::Write as _;
        match var {
            Var::Host => out.push_str(self.host),
            Var::HttpHost => out.push_str(self.http_host),
            Var::Scheme => out.push_str(self.scheme),
            Var::RequestUri => out.push_str(self.request_uri),
            Var::EscapedRequestUri => escape_component(self.request_uri, out),
            Var::RemoteAddr => {
                let _ = write!(out, "{}", self.remote_addr);
            }
            Var::RemoteUser => out.push_str(&remote_user(self.headers).unwrap_or_default()),
            Var::Header(name) => {
                // nginx joins repeated headers for `$http_*` of most names; the first is
                // enough for a cache key and a redirect.
                if let Some(v) = self.headers.get(name.as_str()) {
                    out.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
            }
            Var::Cookie(name) => {
                if let Some(v) = cookie(self.headers, name) {
                    out.push_str(&v);
                }
            }
        }
    }
}

/// URI-component escaping as nginx's `set_escape_uri` does it: every byte but ASCII letters,
/// digits and `-._~` becomes `%XX`.
pub(crate) fn escape_component(text: &str, out: &mut String) {
    use std::fmt::Write as _;
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then(|| v.to_string())
        })
}

/// `$remote_user`: the user of a `Basic` `Authorization` header.
fn remote_user(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, creds) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(creds.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, _) = text.split_once(':')?;
    Some(user.to_string())
}

/// Standard base64 (padding optional); `None` on any other byte.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in text.trim_end_matches('=').bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `auth-cache-key` and `auth-cache-duration`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct CacheSpec {
    pub(crate) key: Template,
    /// `(statuses, time)`; an empty status list is `any`.
    pub(crate) durations: Vec<(Vec<u16>, Duration)>,
    /// The verdicts cached for this Ingress (runtime state, not configuration).
    #[serde(skip)]
    pub(crate) store: CacheStore,
}

impl CacheSpec {
    /// How long an auth answer with `status` is cached (`None`: not cached), the first
    /// matching entry winning as nginx's `proxy_cache_valid` does.
    pub(crate) fn time_for(&self, status: u16) -> Option<Duration> {
        self.durations
            .iter()
            .find(|(codes, _)| codes.is_empty() || codes.contains(&status))
            .map(|(_, t)| *t)
            .filter(|t| !t.is_zero())
    }

    /// Parses `auth-cache-duration`: comma-separated `[code ...|any] time` entries, as
    /// nginx's `proxy_cache_valid` (a time alone caches 200, 301 and 302).
    pub(crate) fn parse_durations(text: &str) -> Option<Vec<(Vec<u16>, Duration)>> {
        let mut out = Vec::new();
        for entry in text.split(',') {
            let mut statuses = Vec::new();
            let mut any = false;
            let mut time: Option<Duration> = None;
            for word in entry.split_whitespace() {
                let is_code = word.len() == 3 && word.bytes().all(|b| b.is_ascii_digit());
                if time.is_none() && word.eq_ignore_ascii_case("any") {
                    any = true;
                } else if time.is_none() && is_code {
                    statuses.push(word.parse().ok()?);
                } else {
                    // `1h 30m`: several times add up, as ingress-nginx's validation allows.
                    time = Some(
                        time.unwrap_or_default()
                            .checked_add(parse_nginx_time(word)?)?,
                    );
                }
            }
            let time = time?;
            if any {
                statuses.clear();
            } else if statuses.is_empty() {
                statuses = vec![200, 301, 302];
            }
            out.push((statuses, time));
        }
        Some(out)
    }
}

/// An nginx time: one or more `<digits><unit>` (`ms`, `s`, `m`, `h`, `d`, `w`, `M`, `y`;
/// a unit is required, as ingress-nginx validates it), like `5m` or `1h30m`.
fn parse_nginx_time(text: &str) -> Option<Duration> {
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !c.is_ascii_digit())?;
        if split == 0 {
            return None;
        }
        let n: u64 = rest[..split].parse().ok()?;
        let unit_end = rest[split..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |e| split + e);
        let part = match &rest[split..unit_end] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            "d" => Duration::from_secs(n.checked_mul(86_400)?),
            "w" => Duration::from_secs(n.checked_mul(604_800)?),
            "M" => Duration::from_secs(n.checked_mul(2_592_000)?),
            "y" => Duration::from_secs(n.checked_mul(31_536_000)?),
            _ => return None,
        };
        total = total.checked_add(part)?;
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// One cached auth answer: what the proxy needs to act on it again.
#[derive(Debug, Clone)]
pub(crate) struct CachedAnswer {
    pub(crate) status: u16,
    /// The auth answer's headers that matter: `auth-response-headers`, `Set-Cookie`,
    /// `WWW-Authenticate`.
    pub(crate) headers: HeaderMap,
}

impl CachedAnswer {
    /// Bytes an entry holds besides its fixed size: its key and its headers.
    fn size(&self, key: &str) -> usize {
        key.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 32)
                .sum::<usize>()
    }
}

/// The cache of one Ingress's auth answers, bounded by entries and bytes. Equal to every
/// other store, so a rebuilt table with the same annotations compares equal.
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheStore(Arc<Mutex<Store>>);

#[derive(Debug, Default)]
struct Store {
    entries: HashMap<String, (Instant, CachedAnswer)>,
    bytes: usize,
}

impl PartialEq for CacheStore {
    fn eq(&self, _: &CacheStore) -> bool {
        true
    }
}

/// The stores of every Ingress's auth cache, by Ingress and settings, so a rebuilt table
/// keeps the answers its predecessor cached (tables are rebuilt on every cluster change). Weak:
/// a store lives as long as a table uses it.
static STORES: Mutex<Option<HashMap<String, std::sync::Weak<Mutex<Store>>>>> = Mutex::new(None);

impl ExternalAuth {
    /// Gives the cache of Ingress `namespace/name` the store of the same Ingress's cache in
    /// the live table, when its auth settings are unchanged (called while the table is built).
    pub(crate) fn bind(&mut self, namespace: &str, name: &str) {
        let Some(cache) = self.cache.as_ref() else {
            return;
        };
        // Everything the answers depend on; the store itself is not serialized.
        let settings = serde_json::to_string(&(self.url.clone(), self.method.as_str(), cache))
            .unwrap_or_default();
        let key = format!("{namespace}/{name}\n{settings}");
        let mut stores = STORES.lock().unwrap_or_else(|e| e.into_inner());
        let stores = stores.get_or_insert_with(HashMap::new);
        let store = match stores.get(&key).and_then(std::sync::Weak::upgrade) {
            Some(live) => CacheStore(live),
            None => {
                // Forget the stores no table uses any more.
                stores.retain(|_, weak| weak.strong_count() > 0);
                let fresh = CacheStore::default();
                stores.insert(key, Arc::downgrade(&fresh.0));
                fresh
            }
        };
        if let Some(cache) = self.cache.as_mut() {
            cache.store = store;
        }
    }
}

impl CacheStore {
    /// The unexpired answer cached under `key`.
    pub(crate) fn get(&self, key: &str, now: Instant) -> Option<CachedAnswer> {
        let mut store = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match store.entries.get(key) {
            Some((until, answer)) if *until > now => Some(answer.clone()),
            Some(_) => {
                store.remove(key);
                None
            }
            None => None,
        }
    }

    /// Caches `answer` under `key` until `until`. When full, expired entries go first; if
    /// it is still full the answer is not cached (the next request asks the auth service).
    pub(crate) fn put(&self, key: String, until: Instant, answer: CachedAnswer, now: Instant) {
        let mut store = self.0.lock().unwrap_or_else(|e| e.into_inner());
        store.remove(&key);
        let size = answer.size(&key);
        let full =
            |s: &Store| s.entries.len() >= CACHE_MAX_ENTRIES || s.bytes + size > CACHE_MAX_BYTES;
        if full(&store) {
            store.entries.retain(|_, (t, _)| *t > now);
            store.bytes = store.entries.iter().map(|(k, (_, a))| a.size(k)).sum();
            if full(&store) {
                return;
            }
        }
        store.bytes += size;
        store.entries.insert(key, (until, answer));
    }

    /// Entries held (for tests).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len()
    }
}

impl Store {
    fn remove(&mut self, key: &str) {
        if let Some((_, answer)) = self.entries.remove(key) {
            self.bytes -= answer.size(key);
        }
    }
}

impl ExternalAuth {
    /// The line for `check` and the admin API.
    pub(crate) fn describe(&self) -> String {
        let mut line = format!("external auth: {} {}", self.method, self.url.text);
        if let Some(s) = &self.signin {
            line.push_str(&format!(", sign-in {}", s.url.text));
        }
        if !self.response_headers.is_empty() {
            let names: Vec<&str> = self.response_headers.iter().map(|h| h.as_str()).collect();
            line.push_str(&format!(", headers to the pod: {}", names.join(", ")));
        }
        if let Some(c) = &self.cache {
            line.push_str(&format!(", cached by {:?}", c.key.text));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(headers: &'a HeaderMap) -> RequestVars<'a> {
        RequestVars {
            scheme: "https",
            http_host: "App.example:8443",
            host: "app.example",
            request_uri: "/a b?x=1&y=2",
            remote_addr: "192.0.2.7".parse().unwrap(),
            headers,
        }
    }

    #[test]
    fn urls() {
        let u = AuthUrl::parse("https://auth.svc.cluster.local/oauth2/auth?x=1").unwrap();
        assert!(u.tls);
        assert_eq!((u.host.as_str(), u.port), ("auth.svc.cluster.local", 443));
        assert_eq!(u.path_and_query, "/oauth2/auth?x=1");
        let u = AuthUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("::1", 8080, "/")
        );
        for bad in [
            "",
            "auth",
            "/auth",
            "ftp://x/",
            "https://$request_uri/oauth2/auth",
            "https://$host$http_authorization/",
            "http://user:pw@x/",
            "http://x/ y",
        ] {
            assert!(AuthUrl::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn urls_with_the_request_host() {
        let u = AuthUrl::parse("https://$host/oauth2/auth").unwrap();
        assert!(u.names_request_host());
        let headers = HeaderMap::new();
        let v = vars(&headers);
        let expanded = u.for_request(&v).unwrap();
        assert_eq!(
            (
                expanded.host.as_str(),
                expanded.port,
                expanded.authority.as_str()
            ),
            ("app.example", 443, "app.example")
        );
        assert_eq!(expanded.path_and_query, "/oauth2/auth");
        let u = AuthUrl::parse("$scheme://$host:8443/auth").unwrap();
        assert!(AuthUrl::parse("http://$http_host/auth").is_none());
        assert_eq!(u.for_request(&v).unwrap().port, 8443);
        assert!(!AuthUrl::parse("http://x/").unwrap().names_request_host());
    }

    #[test]
    fn templates_expand_the_supported_variables() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Basic YWxpY2U6c2VjcmV0".parse().unwrap());
        headers.insert("cookie", "a=1; _oauth2_proxy=tok; b=2".parse().unwrap());
        headers.insert("x-user", "u1".parse().unwrap());
        let t = Template::parse(
            "$remote_user|$http_x_user|$cookie__oauth2_proxy|$remote_addr|$host|${request_uri}",
        )
        .unwrap();
        assert_eq!(
            t.expand(&vars(&headers)),
            "alice|u1|tok|192.0.2.7|app.example|/a b?x=1&y=2"
        );
        let t = Template::parse("$scheme://$http_host$escaped_request_uri").unwrap();
        assert_eq!(
            t.expand(&vars(&headers)),
            "https://App.example:8443%2Fa%20b%3Fx%3D1%26y%3D2"
        );
        assert!(Template::parse("$arg_x").is_none());
        assert!(Template::parse("$").is_none());
        assert!(Template::parse("${host").is_none());
    }

    #[test]
    fn signin_redirect_parameter() {
        let s = Signin::parse("https://auth.example/start", "rd").unwrap();
        assert_eq!(s.append.as_deref(), Some("?rd="));
        let s = Signin::parse("https://auth.example/start?x=1", "rd").unwrap();
        assert_eq!(s.append.as_deref(), Some("&rd="));
        let s = Signin::parse("https://$host/start?rd=$escaped_request_uri", "rd").unwrap();
        assert_eq!(s.append, None);
        assert!(Signin::parse("javascript:alert(1)", "rd").is_none());
    }

    #[test]
    fn cache_durations_as_proxy_cache_valid() {
        let d = CacheSpec::parse_durations("200 202 10m, 401 5m").unwrap();
        assert_eq!(
            d,
            vec![
                (vec![200, 202], Duration::from_secs(600)),
                (vec![401], Duration::from_secs(300))
            ]
        );
        assert_eq!(
            CacheSpec::parse_durations("1h 30m").unwrap(),
            vec![(vec![200, 301, 302], Duration::from_secs(5400))]
        );
        assert_eq!(
            CacheSpec::parse_durations("any 30s").unwrap(),
            vec![(vec![], Duration::from_secs(30))]
        );
        for bad in ["", "200", "20 5m", "200 5x", "200 5m,"] {
            assert!(CacheSpec::parse_durations(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn a_rebuilt_ingress_keeps_its_cache_unless_its_settings_change() {
        let spec = |key: &str| CacheSpec {
            key: Template::parse(key).unwrap(),
            durations: vec![(vec![200], Duration::from_secs(60))],
            store: CacheStore::default(),
        };
        let auth = |key: &str| ExternalAuth {
            url: AuthUrl::parse("http://auth.test/").unwrap(),
            method: Method::GET,
            signin: None,
            response_headers: Vec::new(),
            request_redirect: None,
            always_set_cookie: false,
            cache: Some(spec(key)),
        };
        let now = Instant::now();
        let answer = CachedAnswer {
            status: 200,
            headers: HeaderMap::new(),
        };
        let mut first = auth("$http_authorization");
        first.bind("ns", "bind-test");
        let store = |a: &ExternalAuth| a.cache.as_ref().unwrap().store.clone();
        store(&first).put("k".into(), now + Duration::from_secs(60), answer, now);
        let mut rebuilt = auth("$http_authorization");
        rebuilt.bind("ns", "bind-test");
        assert!(store(&rebuilt).get("k", now).is_some());
        let mut other = auth("$http_authorization");
        other.bind("ns", "another-ingress");
        assert!(store(&other).get("k", now).is_none());
        let mut changed = auth("$cookie_session");
        changed.bind("ns", "bind-test");
        assert!(store(&changed).get("k", now).is_none());
    }

    #[test]
    fn the_cache_is_bounded() {
        let store = CacheStore::default();
        let now = Instant::now();
        let answer = CachedAnswer {
            status: 200,
            headers: HeaderMap::new(),
        };
        for i in 0..CACHE_MAX_ENTRIES + 100 {
            store.put(
                format!("k{i}"),
                now + Duration::from_secs(60),
                answer.clone(),
                now,
            );
        }
        assert_eq!(store.len(), CACHE_MAX_ENTRIES);
        // Once they expire, new keys replace them.
        let later = now + Duration::from_secs(61);
        store.put(
            "new".into(),
            later + Duration::from_secs(60),
            answer.clone(),
            later,
        );
        assert_eq!(store.len(), 1);
        assert!(store.get("new", later).is_some());
        assert!(store.get("k1", later).is_none());
        // A key past the byte bound is never held.
        let huge = "k".repeat(CACHE_MAX_BYTES + 1);
        store.put(huge.clone(), later + Duration::from_secs(60), answer, later);
        assert!(store.get(&huge, later).is_none());
    }
}
