//! Rate and connection limits per client address (`limit-rps`, `limit-rpm`,
//! `limit-connections`; `crate::table::rate_limit`), checked in nginx's preaccess phase: after
//! redirects and the CORS preflight, before the allow/deny lists and authentication.
//!
//! **Semantics**, as ingress-nginx configures nginx (annotations.md, "Rate Limiting"): each
//! rate is nginx's `limit_req` with `burst = rate × limit-burst-multiplier` and `nodelay`. A
//! client's *excess* grows by one request per admitted request and drains at the rate; a
//! request that would take it past the burst is refused (so `burst + 1` requests pass at
//! once from a fresh client, as in nginx). `limit-connections` is nginx's `limit_conn`: the
//! requests in flight per address (each HTTP/2 stream counts), released when the response body
//! ends. Refusals answer the class's `limits.rateLimitStatus` / `limits.connectionLimitStatus`
//! (ingress-nginx's `limit-req-status-code` / `limit-conn-status-code`, 503 by default).
//! Addresses in `limit-whitelist` are never counted. The address is the request's real client
//! address (`forward::request_client_ip`). State is per replica, like nginx's shared-memory
//! zones.
//!
//! **Bounded memory.** One table for the whole process, allocated on the first limited
//! request: [`SETS`] sets of [`WAYS`] entries ([`CAPACITY`] in all, about 4 MiB), each entry
//! one (zone, client address) pair. The set is chosen by a hash keyed randomly at start-up
//! (SipHash via `RandomState`), so clients cannot aim their addresses at one set. A new pair
//! takes a free way of its set, else the least recently seen way not holding requests in
//! flight (else the least recently seen). That is the approximation: under a flood of more
//! distinct addresses than the table holds, an evicted client starts again with a full burst,
//! and an evicted in-flight count is forgotten (its permit then releases nothing). nginx does
//! the same in spirit: a full zone drops its least recently used states. A flood of 100 000
//! addresses therefore costs nothing beyond the fixed table; `portcullis_rate_limit_entries`
//! counts the ways in use (never above `portcullis_rate_limit_capacity`).
//!
//! **Across table swaps.** A zone is one Ingress with its limits (`RateLimit::bind`); a
//! rebuild that keeps both keeps the zone's identity, hence every client's bucket. A removed
//! or changed zone needs no pruning: its entries are never looked up again and are the first
//! evicted once they are the least recently seen of their set.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use prometheus_client::metrics::gauge::Gauge;

use super::body::{ResponseBody, own_response};
use crate::table::LimitSettings;
use crate::table::rate_limit::{Rate, RateLimit};

/// Sets in the table.
pub(crate) const SETS: usize = 16_384;
/// Entries per set.
pub(crate) const WAYS: usize = 4;
/// Entries in the table: the most (zone, client address) pairs tracked at once.
pub(crate) const CAPACITY: usize = SETS * WAYS;

/// The state of one client address in one zone.
#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    /// Whether the way holds a pair (an empty way is free).
    used: bool,
    zone: u64,
    /// The client address, IPv4 mapped into IPv6.
    addr: u128,
    /// When the pair was last looked up, in ms since the table started (for eviction).
    seen_ms: u64,
    /// When a request was last admitted, in ms since the table started (for draining).
    admitted_ms: u64,
    /// Per rate (`limit-rps`, `limit-rpm`): the excess, in requests × the rate's period in ms
    /// (so draining is an exact integer: `per_period` per elapsed ms).
    excess: [u64; 2],
    /// Requests in flight (`limit-connections`).
    in_flight: u32,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over `limit-rps` or `limit-rpm` with its burst.
    Rate,
    /// Over `limit-connections`.
    Connections,
}

impl Refusal {
    /// The access log's `error` field.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Rate => "rate_limited",
            Refusal::Connections => "connection_limited",
        }
    }

    /// The class's status for this refusal.
    pub(crate) fn status(self, limits: &LimitSettings) -> u16 {
        match self {
            Refusal::Rate => limits.rate_limit_status,
            Refusal::Connections => limits.connection_limit_status,
        }
    }
}

/// The process's limiter state: the bounded table and its metric.
#[derive(Debug)]
pub(crate) struct Limiter {
    sets: OnceLock<Box<[Mutex<[Entry; WAYS]>]>>,
    keys: std::collections::hash_map::RandomState,
    start: Instant,
    /// `portcullis_rate_limit_entries`: ways in use.
    entries: Gauge,
}

/// A request counted in flight for `limit-connections`; dropping it (when the response body
/// ends) releases the count.
#[derive(Debug)]
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    set: usize,
    zone: u64,
    addr: u128,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(sets) = self.limiter.sets.get() else {
            return;
        };
        let mut ways = sets[self.set]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Evicted since (the approximation): nothing to release.
        if let Some(e) = ways
            .iter_mut()
            .find(|e| e.used && e.zone == self.zone && e.addr == self.addr)
        {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }
}

impl Limiter {
    /// An empty limiter reporting its size through `entries`.
    pub(crate) fn new(entries: Gauge) -> Limiter {
        Limiter {
            sets: OnceLock::new(),
            keys: std::collections::hash_map::RandomState::new(),
            start: Instant::now(),
            entries,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Admits or refuses one request of `client` under `limit`. `Ok(Some(permit))` when it
    /// counts against `limit-connections` (hold the permit until the response ends).
    pub(crate) fn admit(
        self: &Arc<Self>,
        limit: &RateLimit,
        client: IpAddr,
    ) -> Result<Option<Permit>, Refusal> {
        if limit.exempts(client) {
            return Ok(None);
        }
        self.admit_at(limit, client, self.now_ms())
    }

    fn admit_at(
        self: &Arc<Self>,
        limit: &RateLimit,
        client: IpAddr,
        now: u64,
    ) -> Result<Option<Permit>, Refusal> {
        let addr = key_of(client);
        let zone = limit.zone;
        let sets = self.sets.get_or_init(|| {
            (0..SETS)
                .map(|_| Mutex::new([Entry::default(); WAYS]))
                .collect()
        });
        let set = usize::try_from(self.keys.hash_one((zone, addr)) % SETS as u64).unwrap_or(0);
        let mut ways = sets[set].lock().unwrap_or_else(PoisonError::into_inner);
        let way = match ways
            .iter()
            .position(|e| e.used && e.zone == zone && e.addr == addr)
        {
            Some(way) => way,
            None => {
                let way = victim(&ways);
                if !ways[way].used {
                    self.entries.inc();
                }
                ways[way] = Entry {
                    used: true,
                    zone,
                    addr,
                    ..Entry::default()
                };
                way
            }
        };
        let entry = &mut ways[way];
        entry.seen_ms = now;
        // limit_req: every rate must admit the request before any is charged.
        let elapsed = now.saturating_sub(entry.admitted_ms);
        let fresh = entry.admitted_ms == 0 && entry.excess == [0, 0];
        let mut next = entry.excess;
        for (i, rate) in limit.rates().enumerate().take(2) {
            next[slot(limit, i)] = charged(entry.excess[slot(limit, i)], rate, elapsed, fresh);
            if next[slot(limit, i)] > rate.burst.saturating_mul(rate.period_ms) {
                return Err(Refusal::Rate);
            }
        }
        // limit_conn, after limit_req (nginx runs them in that order).
        if let Some(max) = limit.connections {
            if entry.in_flight >= max {
                return Err(Refusal::Connections);
            }
            entry.in_flight += 1;
        }
        entry.excess = next;
        entry.admitted_ms = now.max(1);
        Ok(limit.connections.map(|_| Permit {
            limiter: Arc::clone(self),
            set,
            zone,
            addr,
        }))
    }
}

/// How an address is keyed: IPv4 mapped into IPv6, as one number.
fn key_of(ip: IpAddr) -> u128 {
    u128::from(match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    })
}

/// Which excess slot the `i`-th rate of `limit` uses: `limit-rps` 0, `limit-rpm` 1.
fn slot(limit: &RateLimit, i: usize) -> usize {
    if i == 0 && limit.rps.is_some() { 0 } else { 1 }
}

/// The excess after one more request: drained for `elapsed` ms, plus one request. A fresh
/// entry starts at zero, as nginx's first request in a new state.
fn charged(excess: u64, rate: Rate, elapsed: u64, fresh: bool) -> u64 {
    if fresh {
        return 0;
    }
    let drained = elapsed.saturating_mul(u64::from(rate.per_period));
    excess
        .saturating_sub(drained)
        .saturating_add(rate.period_ms)
}

/// The way a new pair takes: a free one, else the least recently seen without requests in
/// flight, else the least recently seen.
fn victim(ways: &[Entry; WAYS]) -> usize {
    if let Some(free) = ways.iter().position(|e| !e.used) {
        return free;
    }
    let oldest = |idle_only: bool| {
        ways.iter()
            .enumerate()
            .filter(|(_, e)| !idle_only || e.in_flight == 0)
            .min_by_key(|(_, e)| e.seen_ms)
            .map(|(i, _)| i)
    };
    oldest(true).or_else(|| oldest(false)).unwrap_or(0)
}

/// The answer to a refused request: `status` (the class's, validated 400 to 599) with a
/// one-line body like the proxy's other answers.
pub(crate) fn refused_response(status: u16) -> Response<ResponseBody> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let reason = status
        .canonical_reason()
        .unwrap_or("refused")
        .to_ascii_lowercase();
    let body = format!("{} {reason}\n", status.as_u16());
    let length = body.len();
    let mut response = Response::new(own_response(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn limit(rps: Option<u32>, rpm: Option<u32>, connections: Option<u32>) -> RateLimit {
        let mut l = RateLimit {
            rps,
            rpm,
            burst_multiplier: 5,
            connections,
            exempt: vec!["10.0.0.0/8".parse().unwrap()],
            zone: 0,
        };
        l.bind("ns", "web");
        l
    }

    fn limiter() -> Arc<Limiter> {
        Arc::new(Limiter::new(Gauge::default()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_the_rate() {
        let l = limiter();
        let rps = limit(Some(2), None, None);
        let client = ip("192.0.2.1");
        // nginx: the first request, then `burst` (2 × 5) more at once.
        for n in 0..11 {
            assert!(l.admit_at(&rps, client, 1000).is_ok(), "request {n}");
        }
        assert_eq!(l.admit_at(&rps, client, 1000).err(), Some(Refusal::Rate));
        // Half a second drains one request at 2/s.
        assert!(l.admit_at(&rps, client, 1500).is_ok());
        assert_eq!(l.admit_at(&rps, client, 1500).err(), Some(Refusal::Rate));
        // Another client has its own bucket; an exempt one has none.
        assert!(l.admit_at(&rps, ip("192.0.2.2"), 1500).is_ok());
        for _ in 0..100 {
            assert!(l.admit(&rps, ip("10.1.1.1")).is_ok());
        }
    }

    #[test]
    fn per_minute_rate_with_per_second() {
        let l = limiter();
        let both = limit(Some(100), Some(1), None);
        let client = ip("2001:db8::1");
        // rpm 1, burst 5: six at once, then one a minute, whatever rps allows.
        for _ in 0..6 {
            assert!(l.admit_at(&both, client, 10).is_ok());
        }
        assert_eq!(l.admit_at(&both, client, 10).err(), Some(Refusal::Rate));
        assert_eq!(l.admit_at(&both, client, 30_000).err(), Some(Refusal::Rate));
        assert!(l.admit_at(&both, client, 70_010).is_ok());
    }

    #[test]
    fn connections_are_released_with_the_permit() {
        let l = limiter();
        let conn = limit(None, None, Some(2));
        let client = ip("198.51.100.7");
        let a = l.admit_at(&conn, client, 5).unwrap().expect("permit");
        let b = l.admit_at(&conn, client, 5).unwrap().expect("permit");
        assert_eq!(
            l.admit_at(&conn, client, 5).err(),
            Some(Refusal::Connections)
        );
        drop(a);
        let c = l.admit_at(&conn, client, 6).unwrap();
        assert!(c.is_some());
        drop((b, c));
        assert!(l.admit_at(&conn, client, 7).unwrap().is_some());
    }

    #[test]
    fn a_refused_rate_takes_no_connection() {
        let l = limiter();
        let both = limit(Some(1), None, Some(100));
        let client = ip("198.51.100.8");
        let permits: Vec<_> = (0..6)
            .map(|_| l.admit_at(&both, client, 1).unwrap())
            .collect();
        assert_eq!(l.admit_at(&both, client, 1).err(), Some(Refusal::Rate));
        let set =
            usize::try_from(l.keys.hash_one((both.zone, key_of(client))) % SETS as u64).unwrap();
        let ways = l.sets.get().unwrap()[set].lock().unwrap();
        let entry = ways.iter().find(|e| e.addr == key_of(client)).unwrap();
        assert_eq!(entry.in_flight, 6);
        drop(ways);
        drop(permits);
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_addresses() {
        let entries = Gauge::default();
        let l = Arc::new(Limiter::new(entries.clone()));
        let rps = limit(Some(1), None, None);
        for n in 0u32..(CAPACITY as u32 * 2) {
            let client = IpAddr::V6(Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(n)));
            assert!(l.admit_at(&rps, client, u64::from(n)).is_ok());
        }
        let held = usize::try_from(entries.get()).unwrap();
        assert!(held <= CAPACITY, "{held}");
        assert!(held > CAPACITY * 9 / 10, "the table is used: {held}");
    }

    #[test]
    fn refusal_answers() {
        let r = refused_response(429);
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "22");
        assert_eq!(refused_response(503).status(), 503);
    }
}
