//! A route is one Ingress path: how it matches a request path, and which upstream serves it.

use std::sync::Arc;

use serde::Serialize;

use super::diagnostic::ObjectRef;
use super::policy::RoutePolicy;
use super::upstream::Upstream;

/// What the proxy does with TLS for a host on :443 (annotation `portcullis.io/tls-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Decrypt with the Ingress's certificate, proxy plain HTTP to the pods.
    #[default]
    Terminate,
    /// Route by the ClientHello's SNI and splice the encrypted bytes to the pod.
    Passthrough,
    /// Decrypt, edit headers, and open a new TLS connection to the pod.
    Reencrypt,
}

impl TlsMode {
    /// The annotation value for this mode.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TlsMode::Terminate => "terminate",
            TlsMode::Passthrough => "passthrough",
            TlsMode::Reencrypt => "reencrypt",
        }
    }
}

/// One of the proxy's two ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Port {
    /// :80.
    Plain,
    /// :443.
    Tls,
}

/// How a path rule matches, per the Ingress spec. `ImplementationSpecific` is read as `Prefix`.
///
/// Paths are case-sensitive. A `Prefix` path matches element-wise on `/`-separated elements and
/// ignores a trailing slash: `/foo` and `/foo/` both match `/foo`, `/foo/` and `/foo/bar` but not
/// `/foobar`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum PathMatch {
    Exact(String),
    /// Stored without its trailing slash (`/` is stored as the empty string).
    Prefix(String),
    /// A path of a host where `use-regex` or `rewrite-target` applies (see [`PathRegex`]).
    Regex(PathRegex),
}

/// A path read as ingress-nginx reads every path of a host on which some Ingress sets
/// `use-regex` or `rewrite-target`: a case-insensitive regular expression anchored at the start
/// of the request path (nginx `location ~* "^<path>"`), whatever its `pathType`.
///
/// Compared, hashed and serialized by its source text: two compilations of one path are the
/// same rule.
#[derive(Clone)]
pub struct PathRegex {
    /// The path as written in the Ingress.
    source: String,
    /// `^<source>`, case-insensitive.
    regex: regex::Regex,
}

impl PathRegex {
    /// Compiles `path` as ingress-nginx's `~* "^<path>"`. Rust's `regex` has RE2's syntax, the
    /// one ingress-nginx documents as accepted ("Kubernetes only accept expressions that comply
    /// with the RE2 engine syntax"): no look-around, no back-references.
    pub fn new(path: &str) -> Result<PathRegex, regex::Error> {
        let regex = regex::RegexBuilder::new(&format!("^{path}"))
            .case_insensitive(true)
            .build()?;
        Ok(PathRegex {
            source: path.to_string(),
            regex,
        })
    }

    /// A Gateway API `RegularExpression` path: the whole request path must match
    /// (`^(?:<path>)$`), case-sensitively, as Envoy-based implementations read it.
    pub fn whole(path: &str) -> Result<PathRegex, regex::Error> {
        let regex = regex::Regex::new(&format!("^(?:{path})$"))?;
        Ok(PathRegex {
            source: path.to_string(),
            regex,
        })
    }

    /// The path as written in the Ingress (without the added `^`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The compiled `^<path>`, for `rewrite-target`'s captures.
    pub(crate) fn regex(&self) -> &regex::Regex {
        &self.regex
    }
}

impl std::fmt::Debug for PathRegex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PathRegex({:?})", self.source)
    }
}

impl PartialEq for PathRegex {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for PathRegex {}

impl std::hash::Hash for PathRegex {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

impl Serialize for PathRegex {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl PathMatch {
    /// A `Prefix` path, normalized (trailing slashes removed).
    pub fn prefix(path: &str) -> PathMatch {
        PathMatch::Prefix(path.trim_end_matches('/').to_string())
    }

    /// Does this rule match the request path (without query)?
    pub(crate) fn matches(&self, request_path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => p == request_path,
            PathMatch::Prefix(p) => {
                request_path.starts_with(p.as_str())
                    && matches!(request_path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatch::Regex(r) => r.regex.is_match(request_path),
        }
    }

    /// Precedence among matching rules: longer wins, and at equal length `Exact` wins. A
    /// regex host holds only regex paths, tried longest source first: ingress-nginx's "Path
    /// Priority" (paths ordered by descending length, and nginx takes the first regex that
    /// matches).
    pub(crate) fn precedence(&self) -> (usize, bool) {
        match self {
            PathMatch::Exact(p) => (p.len(), true),
            PathMatch::Prefix(p) => (p.len(), false),
            PathMatch::Regex(r) => (r.source.len(), false),
        }
    }

    /// A `Prefix` path's prefix (without trailing slash); `None` for the other kinds.
    pub(crate) fn prefix_text(&self) -> Option<&str> {
        match self {
            PathMatch::Prefix(p) => Some(p),
            PathMatch::Exact(_) | PathMatch::Regex(_) => None,
        }
    }

    /// The spec's `pathType` name (`Regex` for a path read as a regular expression).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            PathMatch::Exact(_) => "Exact",
            PathMatch::Prefix(_) => "Prefix",
            PathMatch::Regex(_) => "Regex",
        }
    }

    /// The path as the user wrote it (a Prefix of `/` shows as `/`).
    pub(crate) fn path(&self) -> &str {
        match self {
            PathMatch::Exact(p) => p,
            PathMatch::Prefix(p) if p.is_empty() => "/",
            PathMatch::Prefix(p) => p,
            PathMatch::Regex(r) => &r.source,
        }
    }
}

/// One path of one host: the request paths it matches and the upstream that serves them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub path: PathMatch,
    pub upstream: Arc<Upstream>,
    /// What a matched request gets: forwarded to `upstream`, or a redirect.
    pub action: RouteAction,
    /// `proxy-body-size`: a request with a larger body gets `413 Content Too Large`; `None`:
    /// no limit.
    pub max_body: Option<u64>,
    /// The rest of what the Ingress's annotations ask for (shared by its routes).
    pub policy: Arc<RoutePolicy>,
    /// The Ingress this path came from.
    pub source: ObjectRef,
    /// A canary Ingress on the same host and path: its upstream and when requests go there.
    pub canary: Option<Arc<super::canary::Canary>>,
    /// Gateway API matches on method, headers and query parameters; `None` for Ingress paths.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Arc<super::request_match::RequestConditions>>,
    /// Gateway API weighted `backendRefs`: requests shared among these upstreams (`upstream`
    /// is one of them); `None`: every request goes to `upstream`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Arc<super::split::WeightedSplit>>,
    /// Served on this port only (a Gateway API route attached to the listeners of one
    /// protocol: an HTTP listener's redirect and an HTTPS listener's backend on one host);
    /// `None`: both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
}

impl Route {
    /// Does this route take the request (its path already matched)?
    pub(crate) fn takes(&self, request: Option<&super::request_match::RequestView<'_>>) -> bool {
        if let (Some(port), Some(request)) = (self.port, request)
            && (port == Port::Tls) != request.tls
        {
            return false;
        }
        match (&self.conditions, request) {
            (None, _) => true,
            (Some(conditions), Some(request)) => conditions.matches(request),
            (Some(_), None) => false,
        }
    }

    /// The order routes are tried in: the path's precedence, then Gateway API's method,
    /// header count and query count. Larger first.
    pub(crate) fn precedence(&self) -> ((usize, bool), (bool, usize, usize)) {
        (
            self.path.precedence(),
            self.conditions
                .as_ref()
                .map_or((false, 0, 0), |c| c.precedence()),
        )
    }
}

/// What the proxy does with a request a route (or a host's default backend) matched.
///
/// A value of the route, not of the host: ingress-nginx scopes its redirect annotations
/// (`permanent-redirect`, `temporal-redirect`, `app-root`) to the Ingress's own locations, so
/// on a host shared by two Ingresses only the annotated one's paths redirect. An enum rather
/// than optional fields, so the proxy decides with one `match` per request and a route without
/// these annotations (`Forward`) pays nothing more. A redirecting route keeps its upstream: the
/// Ingress's backend is still resolved and reported as for any route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// Forward to the route's upstream.
    #[default]
    Forward,
    /// `app-root`: a request for exactly `/` gets `302 Found` to this path on the scheme and
    /// host it asked for; any other request is forwarded.
    AppRoot(String),
    /// `permanent-redirect` / `temporary-redirect`: every request gets `redirect` and the
    /// upstream is never contacted. With `app_root`, a request for exactly `/` gets the app
    /// root first (ingress-nginx checks `app-root` before its redirect's `return`).
    Redirect {
        redirect: Redirect,
        app_root: Option<String>,
    },
    /// Gateway API `RequestRedirect`: the `Location` is the request's URL with the parts the
    /// filter names replaced.
    RedirectFrom(Arc<RedirectTemplate>),
    /// Answer with this status and no body, never forwarding: a Gateway API rule whose
    /// backend cannot be used gets `500` (the spec's rule for invalid `backendRefs`).
    Answer(u16),
}

/// A Gateway API `RequestRedirect` filter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedirectTemplate {
    /// 302 (the spec default), 301, 303, 307 or 308.
    pub status: u16,
    /// `http` or `https`; `None`: the request's.
    pub scheme: Option<String>,
    /// `None`: the request's host name.
    pub hostname: Option<String>,
    /// `None`: the well-known port of the redirect's scheme (80 or 443, left out of the
    /// `Location` as the spec asks). Without a scheme of its own that is the request's, whose
    /// listener is on our port for it.
    pub port: Option<u16>,
    /// `None`: the request's path.
    pub path: Option<super::rewrite::PathReplace>,
}

impl RedirectTemplate {
    /// The `Location` for a request to `host` (without port) and `path` (with `query`) that
    /// came in over `request_scheme`, routed by `matched`.
    pub(crate) fn location(
        &self,
        request_scheme: &str,
        host: &str,
        path: &str,
        query: Option<&str>,
        matched: Option<&PathMatch>,
    ) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(request_scheme);
        let port = self.port.unwrap_or_else(|| well_known_port(scheme));
        let host = self.hostname.as_deref().unwrap_or(host);
        let path = match &self.path {
            Some(replace) => replace.apply(matched.and_then(PathMatch::prefix_text), path),
            None => path.to_string(),
        };
        let mut location = format!("{scheme}://{host}");
        if port != well_known_port(scheme) {
            location.push_str(&format!(":{port}"));
        }
        location.push_str(&path);
        if let Some(query) = query.filter(|q| !q.is_empty()) {
            location.push('?');
            location.push_str(query);
        }
        location
    }
}

fn well_known_port(scheme: &str) -> u16 {
    if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    }
}

/// A fixed redirect: the status and the `Location`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// An absolute `http://` or `https://` URL, sent as written: nothing of the request is
    /// appended (ingress-nginx's `return CODE URL`).
    pub location: String,
}

impl RouteAction {
    /// How `check` and the admin API show it; `None` for [`RouteAction::Forward`].
    pub(crate) fn describe(&self) -> Option<String> {
        match self {
            RouteAction::Forward => None,
            RouteAction::AppRoot(root) => Some(format!("app-root {root} (302 for /)")),
            RouteAction::Answer(status) => Some(format!("answer {status}")),
            RouteAction::RedirectFrom(template) => {
                let mut parts = Vec::new();
                parts.extend(template.scheme.as_ref().map(|s| format!("scheme {s}")));
                parts.extend(template.hostname.as_ref().map(|h| format!("host {h}")));
                parts.extend(template.port.map(|p| format!("port {p}")));
                parts.extend(
                    template
                        .path
                        .as_ref()
                        .map(|p| format!("path {}", p.describe())),
                );
                Some(format!("redirect {} {}", template.status, parts.join(", ")))
            }
            RouteAction::Redirect { redirect, app_root } => {
                let to = format!("redirect {} {}", redirect.status, redirect.location);
                Some(match app_root {
                    Some(root) => format!("app-root {root} (302 for /), else {to}"),
                    None => to,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_element_wise_and_ignores_trailing_slash() {
        for rule in ["/foo", "/foo/"] {
            let p = PathMatch::prefix(rule);
            assert!(p.matches("/foo"));
            assert!(p.matches("/foo/"));
            assert!(p.matches("/foo/bar"));
            assert!(!p.matches("/foobar"));
            assert!(!p.matches("/Foo"));
        }
        assert!(PathMatch::prefix("/").matches("/anything"));
        assert!(PathMatch::prefix("/").matches("/"));
    }

    #[test]
    fn exact_is_exact() {
        let p = PathMatch::Exact("/foo".into());
        assert!(p.matches("/foo"));
        assert!(!p.matches("/foo/"));
    }

    /// ingress-nginx's "Ingress Path Matching": with `use-regex`, `/foo/.*` becomes
    /// `location ~* "^/foo/.*"`: anchored at the start, case-insensitive, not at the end.
    #[test]
    fn regex_is_anchored_at_the_start_and_case_insensitive() {
        let p = PathMatch::Regex(PathRegex::new("/foo/[0-9]+").unwrap());
        assert!(p.matches("/foo/12"));
        assert!(p.matches("/FOO/12/more"));
        assert!(!p.matches("/x/foo/12"));
        assert!(!p.matches("/foo/bar"));
        assert_eq!(p.path(), "/foo/[0-9]+");
        assert_eq!(p, PathMatch::Regex(PathRegex::new("/foo/[0-9]+").unwrap()));
        assert!(PathRegex::new("/(?=x)").is_err());
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"Regex":"/foo/[0-9]+"}"#
        );
    }

    #[test]
    fn exact_wins_ties() {
        assert!(
            PathMatch::Exact("/foo".into()).precedence() > PathMatch::prefix("/foo").precedence()
        );
        assert!(
            PathMatch::prefix("/foo/bar").precedence()
                > PathMatch::Exact("/foo".into()).precedence()
        );
    }
}
