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
        // Only hex digits, dots and colons spell an address: a host with any other character
        // (nearly every one, on every build) is not parsed as one.
        let could_be_ip = host
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':');
        if could_be_ip && host.parse::<std::net::IpAddr>().is_ok() {
            return Err(HostError::IpAddress(host.to_string()));
        }
        let mut name = host.to_ascii_lowercase();
        let wildcard = name.starts_with("*.");
        if wildcard {
            name.drain(..2);
        }
        if !is_dns_name(&name) {
            return Err(HostError::Invalid(host.to_string()));
        }
        Ok(if wildcard {
            HostMatch::Wildcard(name)
        } else {
            HostMatch::Exact(name)
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
    // One pass over the bytes: RFC 1123 labels of 1 to 63 letters, digits and inner hyphens.
    let mut label_len = 0;
    let mut previous = b'.';
    for &b in name.as_bytes() {
        if b == b'.' {
            if label_len == 0 || previous == b'-' {
                return false;
            }
            label_len = 0;
        } else {
            let first = label_len == 0;
            if !(b.is_ascii_alphanumeric() || (b == b'-' && !first)) {
                return false;
            }
            label_len += 1;
            if label_len > 63 {
                return false;
            }
        }
        previous = b;
    }
    label_len != 0 && previous != b'-'
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
        assert_eq!(
            HostMatch::parse("::1"),
            Err(HostError::IpAddress("::1".into()))
        );
        assert_eq!(
            HostMatch::parse("fe80::1"),
            Err(HostError::IpAddress("fe80::1".into()))
        );
        assert_eq!(
            HostMatch::parse("beef.cafe"),
            Ok(HostMatch::Exact("beef.cafe".into()))
        );
    }

    /// The RFC 1123 check as it was written first (label by label), kept as the reference the
    /// one-pass scanner must agree with.
    fn is_dns_name_by_labels(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_name_check_agrees_with_the_labels(
            name in "[a-cA-C0-9.:*_-]{0,12}|[a-c.-]{60,70}",
        ) {
            proptest::prop_assert_eq!(is_dns_name(&name), is_dns_name_by_labels(&name));
            let address = name.parse::<std::net::IpAddr>().is_ok();
            proptest::prop_assert_eq!(
                matches!(HostMatch::parse(&name), Err(HostError::IpAddress(_))),
                address && !name.is_empty()
            );
        }

        #[test]
        fn every_address_is_refused_as_one(address in proptest::prelude::any::<std::net::IpAddr>()) {
            let host = address.to_string();
            proptest::prop_assert_eq!(HostMatch::parse(&host), Err(HostError::IpAddress(host.clone())));
        }
    }
}
