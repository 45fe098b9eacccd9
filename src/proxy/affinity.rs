//! Sticky sessions: reading the session cookie, choosing its endpoint, writing `Set-Cookie`
//! (the table side is `table::affinity`).
//!
//! The cookie never carries a pod address. Its value is opaque:
//! - **persistent** mode: a keyed hash (SipHash) of the endpoint address. The key is this
//!   process's, so a cookie keeps working across table swaps, configuration changes and
//!   endpoint additions; `PORTCULLIS_AFFINITY_KEY` (any text) gives replicas a shared key, so
//!   a cookie issued by one is honoured by the others and after restarts;
//! - **balanced** mode: a random session key, mapped onto the endpoints by rendezvous
//!   (highest random weight) hashing: when a pod leaves, only its sessions move; when pods
//!   are added, a fair share of sessions moves to them.
//!
//! As in ingress-nginx, the cookie is set only when a session starts or has to move to
//! another endpoint (its own is gone, unhealthy, or, with `session-cookie-change-on-failure`,
//! failed this request); a request whose cookie still holds is answered without `Set-Cookie`.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{self, HeaderValue};

use super::balance;
use crate::health::Health;
use crate::table::affinity::{Affinity, AffinityMode};
use crate::table::route::{PathMatch, Route};
use crate::table::upstream::Upstream;

/// Hex digits of a persistent token (64 bits).
const TOKEN_LEN: usize = 16;
/// Hex digits of a balanced session key (128 bits).
const KEY_LEN: usize = 32;

/// The SipHash keys of this process (or of `PORTCULLIS_AFFINITY_KEY`).
static KEYS: LazyLock<(u64, u64)> =
    LazyLock::new(|| match std::env::var("PORTCULLIS_AFFINITY_KEY") {
        Ok(text) if !text.is_empty() => (
            sip((0, 0), |h| h.write(format!("k0:{text}").as_bytes())),
            sip((0, 0), |h| h.write(format!("k1:{text}").as_bytes())),
        ),
        _ => {
            // Seeded from the operating system's randomness by the standard library.
            let state = std::collections::hash_map::RandomState::new();
            (state.hash_one(0u8), state.hash_one(1u8))
        }
    });

/// SipHash-2-4 under `keys` of what `feed` writes.
#[allow(deprecated)] // std's SipHasher: the keyed PRF we need, with no extra dependency.
fn sip(keys: (u64, u64), feed: impl FnOnce(&mut std::hash::SipHasher)) -> u64 {
    let mut h = std::hash::SipHasher::new_with_keys(keys.0, keys.1);
    feed(&mut h);
    h.finish()
}

fn write_addr(h: &mut impl Hasher, a: SocketAddr) {
    h.write(a.to_string().as_bytes());
}

/// The persistent-mode cookie value naming `endpoint`.
fn token(endpoint: SocketAddr) -> String {
    format!("{:016x}", sip(*KEYS, |h| write_addr(h, endpoint)))
}

/// The rendezvous weight of `endpoint` for session `key`.
fn score(key: &str, endpoint: SocketAddr) -> u64 {
    sip(*KEYS, |h| {
        h.write(key.as_bytes());
        h.write_u8(0xff);
        write_addr(h, endpoint);
    })
}

fn new_key() -> String {
    format!("{:032x}", fastrand::u128(..))
}

fn is_hex(v: &str, len: usize) -> bool {
    v.len() == len && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The value of cookie `name` in the request's `Cookie` headers (the first one).
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

/// The cookie's tag for `upstream`: like ingress-nginx's cookie, which carries its backend's
/// key, a session belongs to one upstream (a canary's cookie is no session of its main
/// upstream, and tells the proxy that the client was served by the canary).
fn tag(upstream: &Upstream) -> String {
    let service = upstream.service.to_string();
    format!(
        "{:08x}",
        sip(*KEYS, |h| h.write(service.as_bytes())) & 0xffff_ffff
    )
}

/// The session part of `value` when it is well-formed for `affinity`'s mode and tagged for
/// `upstream`.
fn session_part<'v>(affinity: &Affinity, value: &'v str, upstream: &Upstream) -> Option<&'v str> {
    let len = match affinity.mode {
        AffinityMode::Persistent => TOKEN_LEN,
        AffinityMode::Balanced => KEY_LEN,
    };
    let (part, tagged) = value.split_once('.')?;
    (is_hex(part, len) && tagged == tag(upstream)).then_some(part)
}

/// Whether the request carries a session cookie of `upstream` (ingress-nginx's
/// `is_affinitized`): it decides between a route's main upstream and its canary before the
/// canary rules do.
pub(crate) fn affinitized(affinity: &Affinity, headers: &HeaderMap, upstream: &Upstream) -> bool {
    cookie(headers, &affinity.cookie_name)
        .and_then(|v| session_part(affinity, v, upstream))
        .is_some()
}

/// One request's session: what its cookie said, and what the response's cookie will say.
#[derive(Debug)]
pub(crate) struct Session<'a> {
    affinity: &'a Affinity,
    /// The upstream's tag, the cookie value's suffix.
    tag: String,
    /// The cookie's value when well-formed for the mode.
    presented: Option<String>,
    /// Balanced mode: the session key in use (presented or new).
    key: Option<String>,
    /// Persistent mode: the endpoint the cookie names, when the upstream lists it.
    target: Option<SocketAddr>,
    /// The cookie must be (re)issued.
    issue: bool,
}

impl<'a> Session<'a> {
    /// Reads the session cookie of a request.
    pub(crate) fn read(
        affinity: &'a Affinity,
        headers: &HeaderMap,
        upstream: &Upstream,
    ) -> Session<'a> {
        let presented = cookie(headers, &affinity.cookie_name)
            .and_then(|v| session_part(affinity, v, upstream))
            .map(str::to_string);
        Session {
            affinity,
            tag: tag(upstream),
            presented,
            key: None,
            target: None,
            issue: false,
        }
    }

    /// Picks the endpoint for one attempt: the session's own while it is eligible, else a
    /// newly balanced one (and then the cookie is reissued).
    pub(crate) fn pick(
        &mut self,
        upstream: &Upstream,
        health: &Health,
        tried: &[SocketAddr],
    ) -> Option<SocketAddr> {
        match self.affinity.mode {
            AffinityMode::Persistent => {
                if let Some(token_value) = &self.presented {
                    if self.target.is_none() {
                        self.target = upstream
                            .endpoints
                            .load()
                            .ready
                            .iter()
                            .copied()
                            .find(|a| token(*a) == *token_value);
                    }
                    if let Some(target) = self.target
                        && let Some(a) = balance::pick_if(upstream, health, tried, |a| a == target)
                    {
                        return Some(a);
                    }
                }
                let picked = balance::pick(upstream, health, tried)?;
                // The cookie's endpoint failed this very request: by default ingress-nginx
                // keeps the cookie, and the next request tries it again.
                let failed_here = self.target.is_some_and(|t| tried.contains(&t));
                self.issue = !failed_here || self.affinity.change_on_failure;
                Some(picked)
            }
            AffinityMode::Balanced => {
                if self.key.is_none() {
                    self.key = self.presented.clone();
                }
                if self.key.is_none() || (!tried.is_empty() && self.affinity.change_on_failure) {
                    self.key = Some(new_key());
                    self.issue = true;
                }
                let key = self.key.as_deref().unwrap_or_default();
                balance::pick_highest(upstream, health, tried, |a| score(key, a))
            }
        }
    }

    /// Adds `Set-Cookie` to a response from `endpoint` when the session is new or moved.
    /// `location`: the matched route's path (the default `Path`); `https`: the request came
    /// over TLS (then the cookie is `Secure`).
    pub(crate) fn set_cookie(
        &self,
        headers: &mut HeaderMap,
        endpoint: SocketAddr,
        location: &str,
        https: bool,
    ) {
        if !self.issue {
            return;
        }
        let session = match self.affinity.mode {
            AffinityMode::Persistent => token(endpoint),
            AffinityMode::Balanced => self.key.clone().unwrap_or_default(),
        };
        let value = format!("{session}.{}", self.tag);
        let line = cookie_line(self.affinity, &value, location, https, SystemTime::now());
        if let Ok(v) = HeaderValue::from_str(&line) {
            headers.append(header::SET_COOKIE, v);
        }
    }
}

/// The session cookie's default `Path`: the matched route's path; `/` for a host's default
/// backend and for regular-expression paths (not a path a cookie can name; ingress-nginx
/// asks for `session-cookie-path` there).
pub(crate) fn location(route: Option<&Route>) -> &str {
    match route.map(|r| &r.path) {
        Some(PathMatch::Regex(_)) | None => "/",
        Some(p) => p.path(),
    }
}

/// Chooses the endpoint of one attempt: through the session when the route is sticky, else
/// by the upstream's balancing policy.
pub(crate) fn pick(
    session: Option<&mut Session<'_>>,
    upstream: &Upstream,
    health: &Health,
    tried: &[SocketAddr],
) -> Option<SocketAddr> {
    match session {
        Some(s) => s.pick(upstream, health, tried),
        None => balance::pick(upstream, health, tried),
    }
}

/// The `Set-Cookie` value: `NAME=VALUE; Path=…[; Domain=…][; Expires=…][; Max-Age=…]
/// [; Secure]; HttpOnly[; SameSite=…][; Partitioned]`.
fn cookie_line(a: &Affinity, value: &str, location: &str, https: bool, now: SystemTime) -> String {
    let path = a
        .path
        .as_deref()
        .unwrap_or(if location.is_empty() { "/" } else { location });
    let mut line = format!("{}={value}; Path={path}", a.cookie_name);
    if let Some(domain) = &a.domain {
        line.push_str("; Domain=");
        line.push_str(domain);
    }
    if let Some(secs) = a.expires {
        line.push_str("; Expires=");
        line.push_str(&http_date(now + Duration::from_secs(secs)));
    }
    if let Some(secs) = a.max_age {
        line.push_str(&format!("; Max-Age={secs}"));
    }
    if https || a.secure {
        line.push_str("; Secure");
    }
    line.push_str("; HttpOnly");
    if let Some(s) = a.same_site {
        line.push_str("; SameSite=");
        line.push_str(s.as_str());
    }
    if a.partitioned {
        line.push_str("; Partitioned");
    }
    line
}

/// An IMF-fixdate (RFC 9110 §5.6.7): `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::affinity::SameSite;

    #[test]
    fn dates_are_imf_fixdates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(http_date(leap), "Tue, 29 Feb 2000 00:00:00 GMT");
    }

    #[test]
    fn cookie_attributes() {
        let a = Affinity::default();
        assert_eq!(
            cookie_line(&a, "ab", "/app", false, UNIX_EPOCH),
            "INGRESSCOOKIE=ab; Path=/app; HttpOnly"
        );
        let a = Affinity {
            cookie_name: "route".into(),
            path: Some("/".into()),
            domain: Some("example.com".into()),
            max_age: Some(60),
            expires: Some(60),
            same_site: Some(SameSite::None),
            ..Affinity::default()
        };
        assert_eq!(
            cookie_line(&a, "ab", "/app", true, UNIX_EPOCH),
            "route=ab; Path=/; Domain=example.com; Expires=Thu, 01 Jan 1970 00:01:00 GMT; Max-Age=60; Secure; HttpOnly; SameSite=None"
        );
    }

    #[test]
    fn tokens_are_opaque_and_stable() {
        let a: SocketAddr = "10.0.0.7:8080".parse().unwrap();
        let t = token(a);
        assert_eq!(t, token(a));
        assert!(is_hex(&t, TOKEN_LEN));
        assert!(!t.contains("10.0.0.7"));
        assert_ne!(t, token("10.0.0.8:8080".parse().unwrap()));
    }

    fn upstream(n: u8) -> Upstream {
        use crate::table::upstream::{
            Cursor, Endpoints, HealthCheck, HealthProbe, LoadBalance, ServicePortRef, ServiceRef,
            UpstreamProtocol,
        };
        Upstream {
            service: ServiceRef {
                namespace: "default".into(),
                name: "web".into(),
                port: ServicePortRef::Number(80),
            },
            endpoints: Endpoints::ready(
                (1..=n)
                    .map(|i| SocketAddr::from(([10, 0, 0, i], 8080)))
                    .collect(),
            )
            .into(),
            protocol: UpstreamProtocol::Http,
            balance: LoadBalance::RoundRobin,
            health: HealthCheck {
                probe: HealthProbe::None,
                interval: Duration::from_secs(5),
            },
            proxy_protocol: None,
            cursor: Cursor::default(),
        }
    }

    /// The `Set-Cookie` value a session would send for `endpoint`, if any.
    fn issued(s: &Session<'_>, endpoint: SocketAddr) -> Option<String> {
        let mut h = HeaderMap::new();
        s.set_cookie(&mut h, endpoint, "/", false);
        let line = h.get(header::SET_COOKIE)?.to_str().ok()?.to_string();
        let (pair, _) = line.split_once(';')?;
        Some(pair.to_string())
    }

    fn with_cookie(pair: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(pair).unwrap());
        h
    }

    #[test]
    fn persistent_sessions_stick_and_move_when_their_endpoint_is_unhealthy() {
        let a = Affinity {
            mode: AffinityMode::Persistent,
            ..Affinity::default()
        };
        let u = upstream(3);
        let health = Health::new();
        let mut first = Session::read(&a, &HeaderMap::new(), &u);
        let e = first.pick(&u, &health, &[]).unwrap();
        let cookie = issued(&first, e).expect("a new session sets the cookie");
        for _ in 0..10 {
            let mut s = Session::read(&a, &with_cookie(&cookie), &u);
            assert_eq!(s.pick(&u, &health, &[]), Some(e));
            assert_eq!(issued(&s, e), None);
        }
        // Its endpoint failed this request: by default the cookie is kept...
        let mut s = Session::read(&a, &with_cookie(&cookie), &u);
        let other = s.pick(&u, &health, &[e]).unwrap();
        assert_ne!(other, e);
        assert_eq!(issued(&s, other), None);
        // ...with change-on-failure it moves.
        let moving = Affinity {
            change_on_failure: true,
            ..a.clone()
        };
        let mut s = Session::read(&moving, &with_cookie(&cookie), &u);
        let other = s.pick(&u, &health, &[e]).unwrap();
        assert!(issued(&s, other).is_some());
        // Unhealthy: moved, with a new cookie.
        health.mark_failed(e);
        let mut s = Session::read(&a, &with_cookie(&cookie), &u);
        let other = s.pick(&u, &health, &[]).unwrap();
        assert_ne!(other, e);
        assert!(issued(&s, other).is_some_and(|c| c != cookie));
    }

    #[test]
    fn balanced_sessions_are_consistent_and_only_move_off_a_removed_endpoint() {
        let a = Affinity::default();
        let (three, four) = (upstream(3), upstream(4));
        let health = Health::new();
        let mut moved = 0;
        for _ in 0..200 {
            let mut s = Session::read(&a, &HeaderMap::new(), &three);
            let e = s.pick(&three, &health, &[]).unwrap();
            let cookie = issued(&s, e).unwrap();
            let mut again = Session::read(&a, &with_cookie(&cookie), &three);
            assert_eq!(again.pick(&three, &health, &[]), Some(e));
            assert_eq!(issued(&again, e), None);
            // A fourth endpoint takes some sessions, and only to itself.
            let mut scaled = Session::read(&a, &with_cookie(&cookie), &four);
            let now = scaled.pick(&four, &health, &[]).unwrap();
            if now != e {
                assert_eq!(now, four.endpoints.load().ready[3]);
                moved += 1;
            }
        }
        assert!(
            (20..=90).contains(&moved),
            "{moved} of 200 moved (about 50 expected)"
        );
    }

    #[test]
    fn a_cookie_of_another_upstream_is_no_session() {
        let a = Affinity::default();
        let u = upstream(2);
        let mut other = upstream(2);
        other.service.name = "canary".into();
        let health = Health::new();
        let mut s = Session::read(&a, &HeaderMap::new(), &u);
        let e = s.pick(&u, &health, &[]).unwrap();
        let cookie = issued(&s, e).unwrap();
        assert!(affinitized(&a, &with_cookie(&cookie), &u));
        assert!(!affinitized(&a, &with_cookie(&cookie), &other));
    }

    #[test]
    fn reads_the_named_cookie() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; INGRESSCOOKIE=xyz"),
        );
        assert_eq!(cookie(&h, "INGRESSCOOKIE"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), None);
    }
}
