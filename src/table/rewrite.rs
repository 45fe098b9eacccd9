//! What a route changes in the request it sends to the pod: the path (`rewrite-target`), the
//! `Host` header (`upstream-vhost`) and an `X-Forwarded-Prefix` header (`x-forwarded-prefix`),
//! as ingress-nginx's annotations of those names do.
//!
//! The target is split into pieces once, when the table is built, so a request only copies
//! slices and captures (`crate::proxy::rewrite` applies it).

use serde::Serialize;

/// `rewrite-target`: the path the pod sees instead of the client's, with `$1`..`$9` taken from
/// the route's regex captures (nginx `rewrite "(?i)<path>" <target> break;`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RewriteTarget {
    /// The annotation value, for `check` and for ingress-nginx's "target equal to the path:
    /// no rewrite" rule.
    pub source: String,
    /// The target without a trailing `?`, as literal text and capture references.
    #[serde(skip)]
    pub(crate) pieces: Vec<TargetPiece>,
    /// The target ends with `?`: nginx then drops the client's query string instead of
    /// appending it.
    pub(crate) drop_query: bool,
}

/// A piece of a [`RewriteTarget`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TargetPiece {
    /// Copied as written.
    Literal(String),
    /// `$n`: capture group `n` of the route's regex (empty when it did not take part).
    Capture(usize),
}

/// Why a `rewrite-target` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteTargetError {
    /// nginx would answer with a redirect, or send the pod something that is no path.
    #[error("a rewrite target is a path starting with / or with a capture $1..$9")]
    NotAPath,
    /// `$name` or a `$` not followed by a digit: nginx variables are not expanded.
    #[error("only the captures $1..$9 may follow a $ (no nginx variables)")]
    Variable,
    /// Control characters, spaces or a fragment cannot be sent in a request target.
    #[error("a rewrite target has no spaces, control characters or #")]
    BadCharacter,
}

impl RewriteTarget {
    /// Parses a `rewrite-target` value: `/`-rooted text with `$0`..`$9` capture references.
    pub fn parse(value: &str) -> Result<RewriteTarget, RewriteTargetError> {
        if value
            .chars()
            .any(|c| c.is_control() || c == ' ' || c == '#')
        {
            return Err(RewriteTargetError::BadCharacter);
        }
        let (body, drop_query) = match value.strip_suffix('?') {
            Some(body) => (body, true),
            None => (value, false),
        };
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            if c != '$' {
                literal.push(c);
                continue;
            }
            match chars.next().and_then(|d| d.to_digit(10)) {
                Some(n) => {
                    if !literal.is_empty() {
                        pieces.push(TargetPiece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(TargetPiece::Capture(n as usize));
                }
                None => return Err(RewriteTargetError::Variable),
            }
        }
        if !literal.is_empty() {
            pieces.push(TargetPiece::Literal(literal));
        }
        match pieces.first() {
            Some(TargetPiece::Literal(text)) if text.starts_with('/') => {}
            Some(TargetPiece::Capture(_)) => {}
            _ => return Err(RewriteTargetError::NotAPath),
        }
        Ok(RewriteTarget {
            source: value.to_string(),
            pieces,
            drop_query,
        })
    }
}

/// The request edits of one Ingress's routes; all `None` when it asks for none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpstreamRequest {
    /// `rewrite-target`.
    pub rewrite_target: Option<RewriteTarget>,
    /// `x-forwarded-prefix`: sent to the pod as `X-Forwarded-Prefix`.
    pub x_forwarded_prefix: Option<String>,
    /// `upstream-vhost`: the `Host` header sent to the pod (Gateway API `URLRewrite`'s
    /// `hostname` too).
    pub upstream_vhost: Option<String>,
    /// Gateway API `URLRewrite`'s `path`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_replace: Option<PathReplace>,
}

/// Gateway API's path modifier (`ReplaceFullPath`, `ReplacePrefixMatch`), for `URLRewrite` and
/// `RequestRedirect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PathReplace {
    Full(String),
    /// The matched `PathPrefix` is replaced by this.
    Prefix(String),
}

impl PathReplace {
    /// The new path for request path `path` (without query), whose route matched it by the
    /// prefix `matched_prefix` (stored without a trailing slash; `None` when the route did
    /// not match by prefix, and then a prefix replacement leaves the path as it is).
    ///
    /// The spec's table: `/foo/bar` matched by `/foo` becomes `/xyz/bar` with `/xyz` or
    /// `/xyz/`, `/bar` with `` or `/`; `/foo` becomes `/xyz` or `/`; `/foo/` becomes `/xyz/`.
    pub(crate) fn apply(&self, matched_prefix: Option<&str>, path: &str) -> String {
        match self {
            PathReplace::Full(full) => full.clone(),
            PathReplace::Prefix(replacement) => {
                let Some(prefix) = matched_prefix else {
                    return path.to_string();
                };
                let rest = path.get(prefix.len()..).unwrap_or("");
                let joined = format!("{}{rest}", replacement.trim_end_matches('/'));
                if joined.is_empty() {
                    "/".to_string()
                } else {
                    joined
                }
            }
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            PathReplace::Full(full) => format!("replace full path with {full}"),
            PathReplace::Prefix(prefix) => format!("replace prefix with {prefix}"),
        }
    }
}

impl UpstreamRequest {
    /// Lines for `check` and the admin API.
    pub(crate) fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(target) = &self.rewrite_target {
            lines.push(format!("rewrite-target {}", target.source));
        }
        if let Some(prefix) = &self.x_forwarded_prefix {
            lines.push(format!("x-forwarded-prefix {prefix}"));
        }
        if let Some(vhost) = &self.upstream_vhost {
            lines.push(format!("upstream-vhost {vhost}"));
        }
        if let Some(replace) = &self.path_replace {
            lines.push(replace.describe());
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gateway API's `HTTPPathModifier` table for `ReplacePrefixMatch` (httproute_types.go).
    #[test]
    fn prefix_replacement_follows_the_spec_table() {
        for (path, prefix, replacement, want) in [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "", "/bar"),
            ("/foo/", "/foo", "", "/"),
            ("/foo", "/foo", "", "/"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
        ] {
            let matched = prefix.trim_end_matches('/');
            let got = PathReplace::Prefix(replacement.into()).apply(Some(matched), path);
            assert_eq!(got, want, "{path} by {prefix} to {replacement:?}");
        }
        let full = PathReplace::Full("/one".into());
        assert_eq!(full.apply(None, "/any/thing"), "/one");
    }

    #[test]
    fn targets_split_into_literals_and_captures() {
        let t = RewriteTarget::parse("/new/$2?x=$1").unwrap();
        assert_eq!(
            t.pieces,
            vec![
                TargetPiece::Literal("/new/".into()),
                TargetPiece::Capture(2),
                TargetPiece::Literal("?x=".into()),
                TargetPiece::Capture(1),
            ]
        );
        assert!(!t.drop_query);
        assert!(RewriteTarget::parse("/only?").unwrap().drop_query);
        assert!(RewriteTarget::parse("$1").is_ok());
    }

    #[test]
    fn bad_targets_are_refused() {
        for bad in [
            "",
            "new",
            "https://x.example/",
            "/$host",
            "/a$",
            "/a b",
            "/a#b",
        ] {
            assert!(RewriteTarget::parse(bad).is_err(), "{bad:?}");
        }
    }
}
