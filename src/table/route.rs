//! A route is one Ingress path: how it matches a request path, and which upstream serves it.

use std::sync::Arc;

use serde::Serialize;

use super::diagnostic::ObjectRef;
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
        }
    }

    /// Precedence among matching rules: longer wins, and at equal length `Exact` wins.
    pub(crate) fn precedence(&self) -> (usize, bool) {
        match self {
            PathMatch::Exact(p) => (p.len(), true),
            PathMatch::Prefix(p) => (p.len(), false),
        }
    }

    /// The spec's `pathType` name.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            PathMatch::Exact(_) => "Exact",
            PathMatch::Prefix(_) => "Prefix",
        }
    }

    /// The path as the user wrote it (a Prefix of `/` shows as `/`).
    pub(crate) fn path(&self) -> &str {
        match self {
            PathMatch::Exact(p) => p,
            PathMatch::Prefix(p) if p.is_empty() => "/",
            PathMatch::Prefix(p) => p,
        }
    }
}

/// One path of one host: the request paths it matches and the upstream that serves them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub path: PathMatch,
    pub upstream: Arc<Upstream>,
    /// The Ingress this path came from.
    pub source: ObjectRef,
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
