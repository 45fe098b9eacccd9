//! Whether a request goes to its route's canary: ingress-nginx's rules in its documented
//! precedence, `canary-by-header` → `canary-by-cookie` → `canary-weight` (the table side is
//! `table::canary`).

use http::HeaderMap;

use super::affinity::{affinitized, cookie};
use crate::table::canary::{Canary, CanaryRules, HeaderMatch};
use crate::table::policy::RoutePolicy;
use crate::table::upstream::Upstream;

/// What one rule says about a request.
enum Verdict {
    Canary,
    Main,
    /// The rule does not apply (no header, another value): the next rule decides.
    Next,
}

fn by_header(rules: &CanaryRules, headers: &HeaderMap) -> Verdict {
    let Some(rule) = &rules.header else {
        return Verdict::Next;
    };
    let Some(value) = headers
        .get(rule.name.as_str())
        .and_then(|v| v.to_str().ok())
    else {
        return Verdict::Next;
    };
    match &rule.matches {
        HeaderMatch::AlwaysNever => always_never(value),
        HeaderMatch::Value(v) if v == value => Verdict::Canary,
        HeaderMatch::Pattern(p) if p.0.is_match(value) => Verdict::Canary,
        HeaderMatch::Value(_) | HeaderMatch::Pattern(_) => Verdict::Next,
    }
}

fn always_never(value: &str) -> Verdict {
    match value {
        "always" => Verdict::Canary,
        "never" => Verdict::Main,
        _ => Verdict::Next,
    }
}

/// Whether a request for a route with `canary` goes there rather than to the route's own
/// `upstream` (with `policy`). As ingress-nginx's balancer does before the canary rules: a
/// request with a session cookie of the main upstream stays there, and one with a session
/// cookie of the canary (whose affinity is not `affinity-canary-behavior: legacy`) stays on
/// the canary.
pub(crate) fn wants(
    canary: &Canary,
    upstream: &Upstream,
    policy: &RoutePolicy,
    headers: &HeaderMap,
) -> bool {
    if let Some(a) = &policy.affinity
        && affinitized(a, headers, upstream)
    {
        return false;
    }
    if let Some(a) = &canary.policy.affinity
        && affinitized(a, headers, &canary.upstream)
    {
        return true;
    }
    wants_canary(&canary.rules, headers)
}

/// Whether the canary's rules send this request to the canary.
pub(crate) fn wants_canary(rules: &CanaryRules, headers: &HeaderMap) -> bool {
    let verdict = match by_header(rules, headers) {
        Verdict::Next => match &rules.cookie {
            Some(name) => cookie(headers, name).map_or(Verdict::Next, always_never),
            None => Verdict::Next,
        },
        decided => decided,
    };
    match verdict {
        Verdict::Canary => true,
        Verdict::Main => false,
        Verdict::Next => {
            rules.weight > 0
                && (rules.weight >= rules.weight_total
                    || fastrand::u32(..rules.weight_total) < rules.weight)
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;
    use crate::table::canary::{HeaderPattern, HeaderRule};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn rules(matches: HeaderMatch, weight: u32) -> CanaryRules {
        CanaryRules {
            header: Some(HeaderRule {
                name: "x-canary".into(),
                matches,
            }),
            cookie: Some("canary".into()),
            weight,
            weight_total: 100,
        }
    }

    #[test]
    fn header_then_cookie_then_weight() {
        let r = rules(HeaderMatch::AlwaysNever, 100);
        assert!(!wants_canary(&r, &headers(&[("x-canary", "never")])));
        assert!(!wants_canary(
            &r,
            &headers(&[("x-canary", "never"), ("cookie", "canary=always")])
        ));
        assert!(wants_canary(&r, &headers(&[("x-canary", "other")])));
        let r = rules(HeaderMatch::AlwaysNever, 0);
        assert!(wants_canary(&r, &headers(&[("x-canary", "always")])));
        assert!(wants_canary(
            &r,
            &headers(&[("cookie", "a=b; canary=always")])
        ));
        assert!(!wants_canary(&r, &headers(&[("cookie", "canary=never")])));
        assert!(!wants_canary(&r, &headers(&[])));
    }

    #[test]
    fn value_and_pattern() {
        let r = rules(HeaderMatch::Value("v2".into()), 0);
        assert!(wants_canary(&r, &headers(&[("x-canary", "v2")])));
        assert!(!wants_canary(&r, &headers(&[("x-canary", "always")])));
        let p = HeaderPattern(regex::Regex::new("^v[0-9]+$").unwrap());
        let r = rules(HeaderMatch::Pattern(p), 0);
        assert!(wants_canary(&r, &headers(&[("x-canary", "v7")])));
        assert!(!wants_canary(&r, &headers(&[("x-canary", "w7")])));
    }
}
