//! Canary routing: an Ingress marked `canary: "true"` on the same host and path as a main
//! Ingress is an alternative upstream of the main Ingress's route, chosen per request by its
//! rules (ingress-nginx's "Canary" annotations: `canary-by-header` →
//! `canary-by-cookie` → `canary-weight`). The decision is `proxy::canary`.

use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::diagnostic::ObjectRef;
use super::policy::RoutePolicy;
use super::upstream::Upstream;

/// A `canary-by-header-pattern` regular expression. Compares and serializes as its source.
#[derive(Debug, Clone)]
pub struct HeaderPattern(pub regex::Regex);

impl PartialEq for HeaderPattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl Eq for HeaderPattern {}

impl Serialize for HeaderPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// How the value of the `canary-by-header` header is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderMatch {
    /// `always` → canary, `never` → main, anything else → the next rule.
    AlwaysNever,
    /// `canary-by-header-value`: exactly this value → canary; anything else → the next rule.
    Value(String),
    /// `canary-by-header-pattern` (ignored when a value is set): a match → canary.
    Pattern(HeaderPattern),
}

/// `canary-by-header` and how its value is matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderRule {
    /// The header name, lowercase.
    pub name: String,
    pub matches: HeaderMatch,
}

/// The rules of one canary Ingress, in ingress-nginx's precedence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CanaryRules {
    pub header: Option<HeaderRule>,
    /// `canary-by-cookie`: a cookie valued `always` → canary, `never` → main.
    pub cookie: Option<String>,
    /// `canary-weight`, out of `weight_total`.
    pub weight: u32,
    /// `canary-weight-total` (default 100).
    pub weight_total: u32,
}

impl Default for CanaryRules {
    fn default() -> Self {
        CanaryRules {
            header: None,
            cookie: None,
            weight: 0,
            weight_total: 100,
        }
    }
}

impl CanaryRules {
    /// `header X-Canary=v2, cookie c, weight 20/100`.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = &self.header {
            parts.push(match &h.matches {
                HeaderMatch::AlwaysNever => format!("header {}", h.name),
                HeaderMatch::Value(v) => format!("header {}={v}", h.name),
                HeaderMatch::Pattern(p) => format!("header {}~{}", h.name, p.0.as_str()),
            });
        }
        if let Some(c) = &self.cookie {
            parts.push(format!("cookie {c}"));
        }
        parts.push(format!("weight {}/{}", self.weight, self.weight_total));
        parts.join(", ")
    }
}

/// The alternative upstream of a route and when it is used.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Canary {
    pub rules: CanaryRules,
    pub upstream: Arc<Upstream>,
    /// The main route's policy with the canary Ingress's own session affinity: ingress-nginx
    /// inherits every other annotation of a canary from its main Ingress.
    pub policy: Arc<RoutePolicy>,
    /// The canary Ingress.
    pub source: ObjectRef,
}
