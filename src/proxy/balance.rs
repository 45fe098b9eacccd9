//! Choosing an endpoint of an upstream: round-robin, least-request or random, over healthy
//! endpoints only.
//!
//! Runs once per request attempt, so it allocates nothing: one `Health` view (a single
//! `ArcSwap` load), then one or two passes over the upstream's endpoint slice. The eligible
//! endpoints are those healthy and not yet tried; the policy picks the `j`-th of them:
//! - **round-robin**: `j = cursor % eligible`, so the spread stays even when some endpoints are
//!   skipped (skipping to "the next healthy one" would double the load of an unhealthy
//!   endpoint's neighbour);
//! - **least-request**: the eligible endpoints with the fewest requests in flight, ties broken
//!   round-robin with the same cursor;
//! - **random**: `j` uniform.
//!
//! Terminating endpoints (serving but draining) are a second tier: the same policy runs over
//! them only when no ready endpoint is eligible, as kube-proxy does, so a Service whose pods are
//! all being replaced keeps answering instead of failing with 503.

use std::net::SocketAddr;

use crate::health::{Health, HealthView};
use crate::table::upstream::{LoadBalance, Upstream};

/// Picks an endpoint that is healthy and not in `tried` (endpoints that already failed for this
/// request): a ready one if any qualifies, else a terminating one. `None` when no endpoint
/// qualifies: the caller answers 503.
pub(crate) fn pick(
    upstream: &Upstream,
    health: &Health,
    tried: &[SocketAddr],
) -> Option<SocketAddr> {
    let view = health.view();
    let eligible = |a: SocketAddr| !tried.contains(&a) && view.is_healthy(a);
    let endpoints = upstream.endpoints.load();
    pick_among(upstream, &endpoints.ready, &view, eligible)
        .or_else(|| pick_among(upstream, &endpoints.terminating, &view, eligible))
}

/// Session affinity's hook (`proxy::affinity`): the endpoint the session cookie names
/// (`wanted` says which) if it is ready, healthy and not in `tried`; `None` otherwise, and the
/// request is balanced anew. A terminating endpoint is not kept: a draining pod loses its
/// sessions.
pub(crate) fn pick_if(
    upstream: &Upstream,
    health: &Health,
    tried: &[SocketAddr],
    wanted: impl Fn(SocketAddr) -> bool,
) -> Option<SocketAddr> {
    let view = health.view();
    upstream
        .endpoints
        .load()
        .ready
        .iter()
        .copied()
        .find(|a| wanted(*a) && !tried.contains(a) && view.is_healthy(*a))
}

/// Session affinity's hook for rendezvous hashing: of the healthy endpoints not in `tried`,
/// the one with the highest `score` (a ready one if any qualifies, else a terminating one).
pub(crate) fn pick_highest(
    upstream: &Upstream,
    health: &Health,
    tried: &[SocketAddr],
    score: impl Fn(SocketAddr) -> u64,
) -> Option<SocketAddr> {
    let view = health.view();
    let eligible = |a: &SocketAddr| !tried.contains(a) && view.is_healthy(*a);
    let best = |tier: &[SocketAddr]| {
        tier.iter()
            .copied()
            .filter(eligible)
            .max_by_key(|a| (score(*a), *a))
    };
    let endpoints = upstream.endpoints.load();
    best(&endpoints.ready).or_else(|| best(&endpoints.terminating))
}

/// The upstream's policy over one tier of its endpoints.
fn pick_among(
    upstream: &Upstream,
    endpoints: &[SocketAddr],
    view: &HealthView<'_>,
    eligible: impl Fn(SocketAddr) -> bool + Copy,
) -> Option<SocketAddr> {
    match upstream.balance {
        LoadBalance::RoundRobin => {
            let k = endpoints.iter().filter(|a| eligible(**a)).count();
            if k == 0 {
                return None;
            }
            nth(endpoints, eligible, k, upstream.cursor.next() % k)
        }
        LoadBalance::Random => {
            let k = endpoints.iter().filter(|a| eligible(**a)).count();
            if k == 0 {
                return None;
            }
            nth(endpoints, eligible, k, fastrand::usize(..k))
        }
        LoadBalance::LeastRequest => least_request(upstream, endpoints, view, eligible),
    }
}

fn least_request(
    upstream: &Upstream,
    endpoints: &[SocketAddr],
    view: &HealthView<'_>,
    eligible: impl Fn(SocketAddr) -> bool + Copy,
) -> Option<SocketAddr> {
    let (mut min, mut ties) = (usize::MAX, 0usize);
    for a in endpoints.iter().copied().filter(|a| eligible(*a)) {
        let n = view.in_flight(a);
        if n < min {
            (min, ties) = (n, 1);
        } else if n == min {
            ties += 1;
        }
    }
    if ties == 0 {
        return None;
    }
    let j = if ties == 1 {
        0
    } else {
        upstream.cursor.next() % ties
    };
    // Counts move under us; if no endpoint is at `min` any more, take the first eligible.
    nth(
        endpoints,
        |a| eligible(a) && view.in_flight(a) == min,
        ties,
        j,
    )
    .or_else(|| endpoints.iter().copied().find(|a| eligible(*a)))
}

/// The `j`-th endpoint satisfying `pred`, of which the counting pass found `eligible`; the
/// last one that does when health changed between the counting pass and this one.
fn nth(
    endpoints: &[SocketAddr],
    pred: impl Fn(SocketAddr) -> bool,
    eligible: usize,
    j: usize,
) -> Option<SocketAddr> {
    // All eligible (the usual case: every endpoint healthy, none tried yet): the `j`th is at
    // `j`, without asking the health map about each endpoint again.
    if eligible == endpoints.len() {
        return endpoints.get(j).copied();
    }
    let mut last = None;
    for (i, a) in endpoints.iter().copied().filter(|a| pred(*a)).enumerate() {
        if i == j {
            return Some(a);
        }
        last = Some(a);
    }
    last
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use super::*;
    use crate::table::upstream::{
        Cursor, Endpoints, HealthCheck, HealthProbe, ServicePortRef, ServiceRef, UpstreamProtocol,
    };

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i as u8], 8080)))
            .collect()
    }

    fn upstream(endpoints: Vec<SocketAddr>, balance: LoadBalance) -> Upstream {
        Upstream {
            service: ServiceRef {
                namespace: "default".into(),
                name: "web".into(),
                port: ServicePortRef::Number(80),
            },
            endpoints: Endpoints::ready(endpoints).into(),
            protocol: UpstreamProtocol::Http,
            balance,
            health: HealthCheck {
                probe: HealthProbe::None,
                interval: Duration::from_secs(5),
            },
            proxy_protocol: None,
            cursor: Cursor::default(),
        }
    }

    fn spread(u: &Upstream, h: &Health, n: usize) -> HashMap<SocketAddr, usize> {
        let mut counts = HashMap::new();
        for _ in 0..n {
            *counts.entry(pick(u, h, &[]).expect("a pick")).or_default() += 1;
        }
        counts
    }

    #[test]
    fn round_robin_spreads_evenly() {
        let eps = addrs(3);
        let u = upstream(eps.clone(), LoadBalance::RoundRobin);
        let h = Health::new();
        let counts = spread(&u, &h, 300);
        for e in &eps {
            assert_eq!(counts[e], 100, "{counts:?}");
        }
    }

    #[test]
    fn round_robin_skips_unhealthy_without_skew() {
        let eps = addrs(4);
        let u = upstream(eps.clone(), LoadBalance::RoundRobin);
        let h = Health::new();
        h.mark_failed(eps[1]);
        let counts = spread(&u, &h, 300);
        assert!(!counts.contains_key(&eps[1]));
        for e in [eps[0], eps[2], eps[3]] {
            assert_eq!(counts[&e], 100, "{counts:?}");
        }
    }

    #[test]
    fn tried_endpoints_are_excluded() {
        let eps = addrs(3);
        for policy in [
            LoadBalance::RoundRobin,
            LoadBalance::LeastRequest,
            LoadBalance::Random,
        ] {
            let u = upstream(eps.clone(), policy);
            let h = Health::new();
            for _ in 0..50 {
                assert_eq!(pick(&u, &h, &[eps[0], eps[2]]), Some(eps[1]), "{policy:?}");
            }
            assert_eq!(pick(&u, &h, &eps), None, "{policy:?}");
        }
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let eps = addrs(3);
        let u = upstream(eps.clone(), LoadBalance::LeastRequest);
        let h = Health::new();
        let _a = [h.begin_request(eps[0]), h.begin_request(eps[0])];
        let _b = h.begin_request(eps[1]);
        for _ in 0..20 {
            assert_eq!(pick(&u, &h, &[]), Some(eps[2]));
        }
        // Ties among the least loaded are broken round-robin.
        let _c = h.begin_request(eps[2]);
        let _d = h.begin_request(eps[2]);
        let counts = spread(&u, &h, 10);
        assert_eq!(counts.get(&eps[1]), Some(&10), "{counts:?}");
        let _e = h.begin_request(eps[1]); // now all three at 2 in flight
        let counts = spread(&u, &h, 300);
        for e in &eps {
            assert_eq!(counts[e], 100, "{counts:?}");
        }
    }

    #[test]
    fn least_request_skips_unhealthy() {
        let eps = addrs(2);
        let u = upstream(eps.clone(), LoadBalance::LeastRequest);
        let h = Health::new();
        let _busy = h.begin_request(eps[0]);
        h.mark_failed(eps[1]);
        assert_eq!(pick(&u, &h, &[]), Some(eps[0]));
    }

    #[test]
    fn random_covers_all_endpoints() {
        let eps = addrs(4);
        let u = upstream(eps.clone(), LoadBalance::Random);
        let h = Health::new();
        h.mark_failed(eps[3]);
        let counts = spread(&u, &h, 600);
        assert!(!counts.contains_key(&eps[3]));
        for e in &eps[..3] {
            // Expected 200 each; far outside this would mean a broken draw.
            assert!(counts[e] > 100, "{counts:?}");
        }
    }

    /// `n` terminating endpoints, on addresses apart from [`addrs`]'.
    fn draining(n: u16) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 1, i as u8], 8080)))
            .collect()
    }

    fn with_terminating(
        ready: Vec<SocketAddr>,
        terminating: Vec<SocketAddr>,
        balance: LoadBalance,
    ) -> Upstream {
        Upstream {
            endpoints: Endpoints { ready, terminating }.into(),
            ..upstream(Vec::new(), balance)
        }
    }

    const POLICIES: [LoadBalance; 3] = [
        LoadBalance::RoundRobin,
        LoadBalance::LeastRequest,
        LoadBalance::Random,
    ];

    #[test]
    fn ready_endpoints_are_preferred_to_terminating_ones() {
        let (ready, term) = (addrs(2), draining(2));
        for policy in POLICIES {
            let u = with_terminating(ready.clone(), term.clone(), policy);
            let h = Health::new();
            // Even with the terminating ones idle and the ready ones busy.
            let _busy = [h.begin_request(ready[0]), h.begin_request(ready[1])];
            let counts = spread(&u, &h, 100);
            assert!(
                counts.keys().all(|a| ready.contains(a)),
                "{policy:?}: {counts:?}"
            );
            // One ready endpoint left is still preferred.
            h.mark_failed(ready[0]);
            for _ in 0..20 {
                assert_eq!(pick(&u, &h, &[]), Some(ready[1]), "{policy:?}");
            }
        }
    }

    #[test]
    fn terminating_endpoints_serve_when_no_ready_one_is_eligible() {
        let (ready, term) = (addrs(2), draining(2));
        for policy in POLICIES {
            // No ready endpoint at all.
            let u = with_terminating(vec![], term.clone(), policy);
            let h = Health::new();
            let counts = spread(&u, &h, 100);
            assert_eq!(counts.values().sum::<usize>(), 100, "{policy:?}");
            assert!(
                counts.keys().all(|a| term.contains(a)),
                "{policy:?}: {counts:?}"
            );

            // Every ready endpoint tried already (a retry): a terminating one, untried.
            let u = with_terminating(ready.clone(), term.clone(), policy);
            for _ in 0..20 {
                assert_eq!(
                    pick(&u, &h, &[ready[0], ready[1], term[0]]),
                    Some(term[1]),
                    "{policy:?}"
                );
            }
            let all: Vec<SocketAddr> = ready.iter().chain(&term).copied().collect();
            assert_eq!(pick(&u, &h, &all), None, "{policy:?}");

            // Every ready endpoint unhealthy; unhealthy terminating ones are skipped too.
            let h = Health::new();
            h.mark_failed(ready[0]);
            h.mark_failed(ready[1]);
            h.mark_failed(term[0]);
            for _ in 0..20 {
                assert_eq!(pick(&u, &h, &[]), Some(term[1]), "{policy:?}");
            }
            h.mark_failed(term[1]);
            assert_eq!(pick(&u, &h, &[]), None, "{policy:?}");
        }
    }

    #[test]
    fn round_robin_spreads_over_terminating_endpoints() {
        let (ready, term) = (addrs(1), draining(3));
        let u = with_terminating(ready.clone(), term.clone(), LoadBalance::RoundRobin);
        let h = Health::new();
        h.mark_failed(ready[0]);
        let counts = spread(&u, &h, 300);
        for e in &term {
            assert_eq!(counts[e], 100, "{counts:?}");
        }
    }

    #[test]
    fn nothing_to_pick() {
        let h = Health::new();
        for policy in [
            LoadBalance::RoundRobin,
            LoadBalance::LeastRequest,
            LoadBalance::Random,
        ] {
            assert_eq!(pick(&upstream(vec![], policy), &h, &[]), None);
            let eps = addrs(2);
            let u = upstream(eps.clone(), policy);
            let h = Health::new();
            h.mark_failed(eps[0]);
            h.mark_failed(eps[1]);
            assert_eq!(pick(&u, &h, &[]), None, "{policy:?}");
        }
    }
}
