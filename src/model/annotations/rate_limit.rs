//! Rate and connection limits per client address (`limit-rps`, `limit-rpm`,
//! `limit-connections`, `limit-burst-multiplier`, `limit-whitelist`), with ingress-nginx's
//! documented meaning (annotations.md, "Rate Limiting"): `0` or absent is no limit, the burst
//! multiplier defaults to 5, the allow-list is a comma-separated list of CIDRs.
//! `limit-rate` / `limit-rate-after` (bandwidth) are not read: the catalog refuses them.

use ipnet::IpNet;

use super::Reader;
use crate::table::rate_limit::{DEFAULT_BURST_MULTIPLIER, RateLimit};
use crate::table::route::TlsMode;

const COUNT: &str = "a whole number (0: no limit)";
const MULTIPLIER: &str = "a whole number of at least 1";
const CIDRS: &str = "a comma-separated list of IPv4/IPv6 addresses or CIDRs, like 10.0.0.0/8, ::1";

/// Every key of the family, ours and ingress-nginx's (for warnings when they do not apply;
/// made at compile time: every Ingress without limits is checked for all of them).
const KEYS: [[&str; 2]; 6] = [
    both!("limit-rps"),
    both!("limit-rpm"),
    both!("limit-connections"),
    both!("limit-burst-multiplier"),
    both!("limit-allowlist"),
    both!("limit-whitelist"),
];

impl Reader<'_> {
    /// The route's limits; `None` when no limit is set. On pass-through hosts (no HTTP
    /// request is ever seen) each key present is a warning.
    pub(super) fn rate_limit(&mut self, tls_mode: TlsMode) -> Option<RateLimit> {
        let rps_key = self.own_or(own!("limit-rps"), nginx!("limit-rps"));
        let rpm_key = self.own_or(own!("limit-rpm"), nginx!("limit-rpm"));
        let conn_key = self.own_or(own!("limit-connections"), nginx!("limit-connections"));
        let burst_key = self.own_or(
            own!("limit-burst-multiplier"),
            nginx!("limit-burst-multiplier"),
        );
        // ingress-nginx reads `limit-allowlist`, and `limit-whitelist` as its older name.
        let allow_key = if self.has_own(own!("limit-allowlist")) {
            own!("limit-allowlist")
        } else if self.has_own(nginx!("limit-allowlist")) {
            nginx!("limit-allowlist")
        } else {
            nginx!("limit-whitelist")
        };
        let rps = self.count(rps_key);
        let rpm = self.count(rpm_key);
        let connections = self.count(conn_key);
        let burst_multiplier = match self.get(burst_key) {
            None => Some(DEFAULT_BURST_MULTIPLIER),
            Some(value) => {
                let parsed = parse_count(value).filter(|n| *n >= 1);
                if parsed.is_none() {
                    self.invalid(burst_key, value, MULTIPLIER);
                }
                parsed
            }
        };
        let exempt = match self.get(allow_key) {
            None => Some(Vec::new()),
            Some(value) => {
                let parsed = parse_cidrs(value);
                if parsed.is_none() {
                    self.invalid(allow_key, value, CIDRS);
                }
                parsed
            }
        };
        let why = if tls_mode == TlsMode::Passthrough {
            Some("pass-through hosts never see an HTTP request")
        } else if [rps, rpm, connections].iter().all(|n| *n == Some(None)) {
            Some("no limit-rps, limit-rpm or limit-connections is set")
        } else {
            None
        };
        if let Some(why) = why {
            for key in KEYS.iter().flatten() {
                // A `0` limit is ingress-nginx's "off", said explicitly: no warning.
                if self.get(key) != Some("0") {
                    self.ignore(key, why);
                }
            }
            return None;
        }
        Some(RateLimit {
            rps: rps?,
            rpm: rpm?,
            burst_multiplier: burst_multiplier?,
            connections: connections?,
            exempt: exempt?,
            zone: 0,
        })
    }

    /// `Some(None)`: absent or `0` (no limit); `None`: invalid (an error was recorded).
    fn count(&mut self, key: &str) -> Option<Option<u32>> {
        let Some(value) = self.get(key) else {
            return Some(None);
        };
        match parse_count(value) {
            Some(n) => Some((n != 0).then_some(n)),
            None => {
                self.invalid(key, value, COUNT);
                None
            }
        }
    }
}

/// Digits only (as ingress-nginx's integer annotations), within `u32`.
fn parse_count(value: &str) -> Option<u32> {
    let value = value.trim();
    (!value.is_empty() && value.len() <= 10 && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse().ok())
        .flatten()
}

/// Comma-separated CIDRs or bare addresses (a host route); `None` if any is malformed or
/// there is none.
pub(super) fn parse_cidrs(value: &str) -> Option<Vec<IpNet>> {
    let items: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return None;
    }
    items
        .into_iter()
        .map(|item| {
            item.parse::<IpNet>()
                .ok()
                .or_else(|| item.parse::<std::net::IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{AnnotationError, OptionDefaults};
    use super::*;

    fn parsed(pairs: &[(&str, &str)]) -> Result<super::super::Parsed, Vec<AnnotationError>> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        super::super::parse(Some(&map), "ns", &OptionDefaults::default())
    }

    #[test]
    fn nginx_defaults_and_own_keys() {
        let p = parsed(&[("nginx.ingress.kubernetes.io/limit-rps", "10")]).unwrap();
        let limit = p.options.policy.rate_limit.clone().expect("limited");
        assert_eq!(limit.rps, Some(10));
        assert_eq!(limit.burst_multiplier, DEFAULT_BURST_MULTIPLIER);
        assert!(limit.exempt.is_empty());
        let own = parsed(&[
            ("portcullis.io/limit-connections", "2"),
            ("nginx.ingress.kubernetes.io/limit-connections", "junk"),
            (
                "nginx.ingress.kubernetes.io/limit-whitelist",
                "10.0.0.0/8, 192.0.2.1",
            ),
        ])
        .unwrap();
        let limit = own.options.policy.rate_limit.clone().expect("limited");
        assert_eq!(limit.connections, Some(2));
        assert_eq!(limit.exempt.len(), 2);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, bad) in [
            ("nginx.ingress.kubernetes.io/limit-rps", "-1"),
            ("nginx.ingress.kubernetes.io/limit-rpm", "1.5"),
            ("portcullis.io/limit-connections", "many"),
            ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "0"),
            ("nginx.ingress.kubernetes.io/limit-whitelist", "10.0.0.0/33"),
            ("nginx.ingress.kubernetes.io/limit-allowlist", " , "),
        ] {
            let errors =
                parsed(&[("nginx.ingress.kubernetes.io/limit-rps", "5"), (key, bad)]).unwrap_err();
            assert_eq!(errors[0].key(), key, "{bad}");
        }
    }

    #[test]
    fn no_limit_makes_the_rest_warnings() {
        let p = parsed(&[
            ("nginx.ingress.kubernetes.io/limit-rps", "0"),
            ("nginx.ingress.kubernetes.io/limit-burst-multiplier", "3"),
        ])
        .unwrap();
        assert_eq!(p.options.policy.rate_limit, None);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        let pass = parsed(&[
            ("portcullis.io/tls-mode", "passthrough"),
            ("nginx.ingress.kubernetes.io/limit-rps", "5"),
        ])
        .unwrap();
        assert_eq!(pass.options.policy.rate_limit, None);
        assert_eq!(pass.warnings.len(), 1);
    }
}
