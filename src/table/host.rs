//! Host matching as the Ingress spec defines it: an exact host, or `*.example.com` matching
//! exactly one DNS label. Exact beats wildcard; the derived `Ord` encodes that precedence.

use std::fmt;

use serde::Serialize;

/// What a rule's `host` matches. Variant order is specificity: `max()` picks the winner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum HostMatch {
    /// Rules without a host: every request whose host matches no other rule.
    Any,
    /// `*.example.com`, stored as the parent domain `example.com`.
    Wildcard(String),
    /// `foo.example.com`, lower-cased.
    Exact(String),
}

/// Why a `host` value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("host {0:?} is not a valid DNS name (RFC 1123 labels, optional leading \"*.\")")]
    Invalid(String),
    #[error("host {0:?} must not be an IP address")]
    IpAddress(String),
}

impl HostMatch {
    /// Parses an Ingress rule `host` (empty string means [`HostMatch::Any`]).
    pub fn parse(host: &str) -> Result<HostMatch, HostError> {
        if host.is_empty() {
            return Ok(HostMatch::Any);
        }
        if host.parse::<std::net::IpAddr>().is_ok() {
            return Err(HostError::IpAddress(host.to_string()));
        }
        let lower = host.to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        if !is_dns_name(name) || (wildcard && !name.contains('.') && name.is_empty()) {
            return Err(HostError::Invalid(host.to_string()));
        }
        Ok(if wildcard {
            HostMatch::Wildcard(name.to_string())
        } else {
            HostMatch::Exact(name.to_string())
        })
    }

    /// Does this match `host` (already normalized with [`normalize_host`])?
    #[cfg(test)]
    fn matches(&self, host: &str) -> bool {
        match self {
            HostMatch::Any => true,
            HostMatch::Exact(h) => h == host,
            HostMatch::Wildcard(parent) => wildcard_parent(host) == Some(parent.as_str()),
        }
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Any => write!(f, "*"),
            HostMatch::Wildcard(parent) => write!(f, "*.{parent}"),
            HostMatch::Exact(h) => write!(f, "{h}"),
        }
    }
}

/// The parent domain a one-label wildcard would need to match `host`: `a.b.c` → `b.c`.
/// `None` when `host` has a single label (a wildcard never matches it).
pub(crate) fn wildcard_parent(host: &str) -> Option<&str> {
    let (first, rest) = host.split_once('.')?;
    if first.is_empty() || rest.is_empty() {
        None
    } else {
        Some(rest)
    }
}

pub use crate::wire::host_name::normalize_host;

fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let w = HostMatch::parse("*.foo.com").unwrap();
        assert!(w.matches("bar.foo.com"));
        assert!(!w.matches("baz.bar.foo.com"));
        assert!(!w.matches("foo.com"));
    }

    #[test]
    fn exact_beats_wildcard_beats_any() {
        let e = HostMatch::parse("a.foo.com").unwrap();
        let w = HostMatch::parse("*.foo.com").unwrap();
        assert!(e > w && w > HostMatch::Any);
    }

    #[test]
    fn normalizes_ports_case_and_dots() {
        assert_eq!(normalize_host("Foo.COM:8443").as_deref(), Some("foo.com"));
        assert_eq!(normalize_host("foo.com.").as_deref(), Some("foo.com"));
        assert_eq!(normalize_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host(""), None);
    }

    #[test]
    fn rejects_bad_hosts() {
        assert!(HostMatch::parse("1.2.3.4").is_err());
        assert!(HostMatch::parse("foo_bar.com").is_err());
        assert!(HostMatch::parse("*.").is_err());
        assert!(HostMatch::parse("a.*.com").is_err());
    }
}
