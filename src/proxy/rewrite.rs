//! The **rewrite** phase's per-route edits of the request sent to the pod: `rewrite-target`
//! (the path), `upstream-vhost` (the `Host` header) and `x-forwarded-prefix` (a header), as
//! ingress-nginx's annotations of those names do.
//!
//! Runs in `forward` after the forwarded headers are set (so `X-Forwarded-Host` keeps the
//! client's host while `Host` says `upstream-vhost`). Costs nothing for a route whose
//! [`UpstreamRequest`] is empty.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;

use crate::table::rewrite::{RewriteTarget, TargetPiece, UpstreamRequest};
use crate::table::route::PathMatch;

/// Edits `headers` and returns the request target to send, as `request` asks. `matched` is the
/// path of the route routing chose (its regex supplies the captures); a request served by the
/// host's default backend (`None`) is not rewritten.
pub(crate) fn apply(
    request: &UpstreamRequest,
    matched: Option<&PathMatch>,
    headers: &mut HeaderMap,
    path_and_query: PathAndQuery,
) -> PathAndQuery {
    if let Some(value) = request
        .upstream_vhost
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(header::HOST, value);
    }
    if let Some(value) = request
        .x_forwarded_prefix
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert(HeaderName::from_static("x-forwarded-prefix"), value);
    }
    if let Some(replace) = &request.path_replace {
        let prefix = matched.and_then(PathMatch::prefix_text);
        let mut target = replace.apply(prefix, path_and_query.path());
        if let Some(query) = path_and_query.query() {
            target.push('?');
            target.push_str(query);
        }
        return PathAndQuery::try_from(target).unwrap_or(path_and_query);
    }
    let Some(target) = &request.rewrite_target else {
        return path_and_query;
    };
    let Some(matched) = matched else {
        return path_and_query;
    };
    // ingress-nginx's `needsRewrite`: a target equal to the location's path rewrites nothing.
    if matched.path() == target.source {
        return path_and_query;
    }
    let path = path_and_query.path();
    let regex = match matched {
        PathMatch::Regex(r) => Some(r.regex()),
        PathMatch::Exact(_) | PathMatch::Prefix(_) => None,
    };
    let rewritten = rewrite(target, regex, path, path_and_query.query());
    // Captures come from a valid path and the target was checked when parsed; should the
    // result still not be a request target, the pod gets the client's.
    PathAndQuery::try_from(rewritten).unwrap_or(path_and_query)
}

/// nginx's `rewrite <regex> <target> break;`: the whole path becomes `target` with `$n`
/// replaced by capture `n` of `regex` on `path` (empty when the group did not take part or
/// there is no regex); the client's query string is appended (after `&` when the target has
/// its own), unless the target ends with `?`.
pub(crate) fn rewrite(
    target: &RewriteTarget,
    regex: Option<&regex::Regex>,
    path: &str,
    query: Option<&str>,
) -> String {
    let captures = regex.and_then(|r| r.captures(path));
    let mut out = String::with_capacity(path.len() + target.source.len());
    for piece in &target.pieces {
        match piece {
            TargetPiece::Literal(text) => out.push_str(text),
            TargetPiece::Capture(n) => {
                if let Some(m) = captures.as_ref().and_then(|c| c.get(*n)) {
                    out.push_str(m.as_str());
                }
            }
        }
    }
    if !out.starts_with('/') {
        out.insert(0, '/');
    }
    if let Some(query) = query.filter(|q| !q.is_empty() && !target.drop_query) {
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::route::PathRegex;

    fn run(path_rule: &str, target: &str, path: &str, query: Option<&str>) -> String {
        let regex = PathRegex::new(path_rule).unwrap();
        let target = RewriteTarget::parse(target).unwrap();
        rewrite(&target, Some(regex.regex()), path, query)
    }

    /// The ingress-nginx rewrite example: `/something(/|$)(.*)` with target `/$2`.
    #[test]
    fn captures_replace_the_references() {
        let rule = "/something(/|$)(.*)";
        assert_eq!(run(rule, "/$2", "/something", None), "/");
        assert_eq!(run(rule, "/$2", "/something/", None), "/");
        assert_eq!(run(rule, "/$2", "/something/new", None), "/new");
        assert_eq!(run(rule, "/$2", "/Something/new/path", None), "/new/path");
    }

    #[test]
    fn the_query_string_is_kept_as_nginx_rewrite_keeps_it() {
        let rule = "/something(/|$)(.*)";
        assert_eq!(
            run(rule, "/$2", "/something/new/path", Some("x=1")),
            "/new/path?x=1"
        );
        assert_eq!(
            run(rule, "/a?b=$2", "/something/c", Some("x=1")),
            "/a?b=c&x=1"
        );
        assert_eq!(run(rule, "/a?", "/something/c", Some("x=1")), "/a");
        assert_eq!(run(rule, "/a", "/something/c", Some("")), "/a");
    }

    #[test]
    fn without_captures_the_target_replaces_the_path() {
        let target = RewriteTarget::parse("/static/$1").unwrap();
        assert_eq!(rewrite(&target, None, "/anything", None), "/static/");
        let plain = RewriteTarget::parse("/").unwrap();
        assert_eq!(run("/app", "/", "/app/page", None), "/");
        assert_eq!(rewrite(&plain, None, "/x", Some("q")), "/?q");
    }

    #[test]
    fn a_capture_first_target_gets_a_leading_slash() {
        assert_eq!(run("/api/(.*)", "$1", "/api/v1/users", None), "/v1/users");
        assert_eq!(run("/api(/.*)", "$1", "/api/v1", None), "/v1");
        assert_eq!(run("/api/(.*)", "$9", "/api/v1", None), "/");
    }
}
