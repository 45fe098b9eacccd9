//! The rate and connection limits of a route, as ingress-nginx's `limit-*` annotations ask for
//! them (annotations.md, "Rate Limiting"): requests per second and per minute with a burst of
//! `rate × limit-burst-multiplier` served without delay (nginx's `limit_req ... burst=N
//! nodelay`), concurrent requests (nginx's `limit_conn`), all per client address and per
//! Ingress, with `limit-whitelist` CIDRs exempt. Validated when the annotations are read; the
//! proxy side (the bounded state and the check) is `crate::proxy::rate_limit`.

use std::hash::{Hash, Hasher};

use ipnet::IpNet;
use serde::Serialize;

/// ingress-nginx's default `limit-burst-multiplier`.
pub(crate) const DEFAULT_BURST_MULTIPLIER: u32 = 5;

/// The limits of one Ingress's routes. At least one of `rps`, `rpm` and `connections` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RateLimit {
    /// `limit-rps`: requests per second per client address.
    pub(crate) rps: Option<u32>,
    /// `limit-rpm`: requests per minute per client address.
    pub(crate) rpm: Option<u32>,
    /// `limit-burst-multiplier`: the burst of each rate is the rate times this.
    pub(crate) burst_multiplier: u32,
    /// `limit-connections`: requests in flight at once per client address.
    pub(crate) connections: Option<u32>,
    /// `limit-whitelist`: client addresses never limited.
    pub(crate) exempt: Vec<IpNet>,
    /// The identity of the limiter zone (see [`RateLimit::bind`]); 0 until bound.
    #[serde(skip)]
    pub(crate) zone: u64,
}

/// One request rate: `per` requests each `period_ms`, `burst` more at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rate {
    /// Requests allowed per period.
    pub(crate) per_period: u32,
    /// The period in milliseconds (1000 for `limit-rps`, 60 000 for `limit-rpm`).
    pub(crate) period_ms: u64,
    /// Requests allowed beyond the rate at once (nginx's `burst`).
    pub(crate) burst: u64,
}

impl RateLimit {
    /// The rates to enforce (`limit-rps` first), each with its burst.
    pub(crate) fn rates(&self) -> impl Iterator<Item = Rate> + '_ {
        [(self.rps, 1_000), (self.rpm, 60_000)]
            .into_iter()
            .filter_map(move |(n, period_ms)| {
                n.map(|n| Rate {
                    per_period: n,
                    period_ms,
                    burst: u64::from(n) * u64::from(self.burst_multiplier),
                })
            })
    }

    /// Whether `ip` is in `limit-whitelist`.
    pub(crate) fn exempts(&self, ip: std::net::IpAddr) -> bool {
        self.exempt.iter().any(|net| net.contains(&ip))
    }

    /// Sets the identity of the limiter zone from the Ingress (`namespace/name`, known when
    /// the table is built) and its limits: one zone per Ingress, as ingress-nginx's. Equal
    /// across table swaps while neither changes, so a rebuild does not reset anyone's bucket;
    /// a changed limit starts a fresh zone (as ingress-nginx's reload does). The hash is
    /// SipHash with fixed keys: stable for the life of the process, which is all it needs.
    pub(crate) fn bind(&mut self, namespace: &str, name: &str) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (namespace, name).hash(&mut h);
        (self.rps, self.rpm, self.burst_multiplier, self.connections).hash(&mut h);
        self.zone = h.finish();
    }

    /// A line for `check` and the admin API.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.rps {
            parts.push(format!("{n}/s"));
        }
        if let Some(n) = self.rpm {
            parts.push(format!("{n}/min"));
        }
        if self.rps.is_some() || self.rpm.is_some() {
            parts.push(format!("burst x{}", self.burst_multiplier));
        }
        if let Some(n) = self.connections {
            parts.push(format!("{n} in flight"));
        }
        let mut line = format!("rate limit per client: {}", parts.join(", "));
        if !self.exempt.is_empty() {
            let nets: Vec<String> = self.exempt.iter().map(ToString::to_string).collect();
            line.push_str(&format!(" (exempt: {})", nets.join(", ")));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit() -> RateLimit {
        RateLimit {
            rps: Some(2),
            rpm: Some(30),
            burst_multiplier: 3,
            connections: None,
            exempt: vec!["10.0.0.0/8".parse().unwrap()],
            zone: 0,
        }
    }

    fn bound(mut l: RateLimit, name: &str) -> RateLimit {
        l.bind("ns", name);
        l
    }

    #[test]
    fn rates_and_bursts() {
        let rates: Vec<Rate> = limit().rates().collect();
        assert_eq!(rates[0].burst, 6);
        assert_eq!(rates[1].period_ms, 60_000);
        assert_eq!(rates[1].burst, 90);
        assert!(limit().exempts("10.1.2.3".parse().unwrap()));
        assert!(!limit().exempts("11.1.2.3".parse().unwrap()));
    }

    #[test]
    fn zone_follows_ingress_and_limits() {
        let a = bound(limit(), "web");
        let mut b = limit();
        b.exempt.clear();
        assert_eq!(
            a.zone,
            bound(b.clone(), "web").zone,
            "the allow-list is not state"
        );
        b.rps = Some(3);
        assert_ne!(a.zone, bound(b, "web").zone);
        assert_ne!(a.zone, bound(limit(), "other").zone);
    }
}
