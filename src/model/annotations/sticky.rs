//! `affinity: cookie` and `session-cookie-*` → [`Affinity`], as ingress-nginx documents them
//! ("Session Affinity" and "Cookie affinity" in its annotations reference; its "Sticky
//! sessions" example for the defaults).

use super::Reader;
use crate::table::affinity::{Affinity, AffinityMode, DEFAULT_COOKIE, SameSite};
use crate::table::route::TlsMode;

/// The `session-cookie-*` names (ours and ingress-nginx's), for the "does nothing without
/// `affinity`" warning.
const COOKIE_KEYS: &[(&str, &str)] = &[
    (own!("affinity-mode"), nginx!("affinity-mode")),
    (
        own!("affinity-canary-behavior"),
        nginx!("affinity-canary-behavior"),
    ),
    (own!("session-cookie-name"), nginx!("session-cookie-name")),
    (own!("session-cookie-path"), nginx!("session-cookie-path")),
    (
        own!("session-cookie-domain"),
        nginx!("session-cookie-domain"),
    ),
    (
        own!("session-cookie-max-age"),
        nginx!("session-cookie-max-age"),
    ),
    (
        own!("session-cookie-expires"),
        nginx!("session-cookie-expires"),
    ),
    (
        own!("session-cookie-samesite"),
        nginx!("session-cookie-samesite"),
    ),
    (
        own!("session-cookie-secure"),
        nginx!("session-cookie-secure"),
    ),
    (
        own!("session-cookie-partitioned"),
        nginx!("session-cookie-partitioned"),
    ),
    (
        own!("session-cookie-change-on-failure"),
        nginx!("session-cookie-change-on-failure"),
    ),
];

/// A cookie name: an RFC 6265 token.
fn is_cookie_name(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A cookie `Path`: starts with `/`, no `;`, spaces or control characters.
fn is_cookie_path(v: &str) -> bool {
    v.starts_with('/') && !v.bytes().any(|b| b == b';' || b <= b' ' || b == 0x7f)
}

/// A cookie `Domain`: a host name, with an optional leading dot.
fn is_cookie_domain(v: &str) -> bool {
    let host = v.strip_prefix('.').unwrap_or(v);
    !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// A number of seconds (at most 10 digits: about 317 years).
fn is_seconds(v: &str) -> bool {
    !v.is_empty() && v.len() <= 10 && v.bytes().all(|b| b.is_ascii_digit())
}

impl Reader<'_> {
    /// The Ingress's cookie affinity; `None` without `affinity: cookie` (its `session-cookie-*`
    /// keys are then warned about: they do nothing). Pass-through hosts never see a cookie:
    /// a warning, and `None`.
    pub(super) fn affinity(&mut self, tls_mode: TlsMode) -> Option<Affinity> {
        let key = self.own_or(own!("affinity"), nginx!("affinity"));
        let enabled = self.choice(key, &[("cookie", ())]).is_some();
        if !enabled || tls_mode == TlsMode::Passthrough {
            let why = if enabled {
                "pass-through hosts never see an HTTP request or cookie"
            } else {
                "it applies only with affinity: cookie"
            };
            if enabled {
                self.ignore(key, why);
            }
            for (own, alias) in COOKIE_KEYS {
                let k = self.own_or(own, alias);
                self.ignore(k, why);
            }
            return None;
        }
        let mut a = Affinity::default();
        let k = self.own_or(own!("affinity-mode"), nginx!("affinity-mode"));
        a.mode = self
            .choice(
                k,
                &[
                    ("balanced", AffinityMode::Balanced),
                    ("persistent", AffinityMode::Persistent),
                ],
            )
            .unwrap_or_default();
        let k = self.own_or(own!("session-cookie-name"), nginx!("session-cookie-name"));
        a.cookie_name = self
            .value_where(
                k,
                "a cookie name (letters, digits, !#$%&'*+-.^_`|~)",
                is_cookie_name,
            )
            .unwrap_or_else(|| DEFAULT_COOKIE.to_string());
        let k = self.own_or(own!("session-cookie-path"), nginx!("session-cookie-path"));
        a.path = self.value_where(
            k,
            "a path starting with /, without ; or spaces",
            is_cookie_path,
        );
        let k = self.own_or(
            own!("session-cookie-domain"),
            nginx!("session-cookie-domain"),
        );
        a.domain = self.value_where(k, "a domain name", is_cookie_domain);
        for (own, alias, slot) in [
            (
                own!("session-cookie-max-age"),
                nginx!("session-cookie-max-age"),
                &mut a.max_age,
            ),
            (
                own!("session-cookie-expires"),
                nginx!("session-cookie-expires"),
                &mut a.expires,
            ),
        ] {
            let k = self.own_or(own, alias);
            *slot = self
                .value_where(k, "a number of seconds", is_seconds)
                .and_then(|v| v.parse().ok());
        }
        let k = self.own_or(
            own!("session-cookie-samesite"),
            nginx!("session-cookie-samesite"),
        );
        a.same_site = self.choice(
            k,
            &[
                ("None", SameSite::None),
                ("Lax", SameSite::Lax),
                ("Strict", SameSite::Strict),
            ],
        );
        let k = self.own_or(
            own!("session-cookie-secure"),
            nginx!("session-cookie-secure"),
        );
        a.secure = self.boolean(k).unwrap_or(false);
        let k = self.own_or(
            own!("session-cookie-partitioned"),
            nginx!("session-cookie-partitioned"),
        );
        a.partitioned = self.boolean(k).unwrap_or(false);
        let k = self.own_or(
            own!("session-cookie-change-on-failure"),
            nginx!("session-cookie-change-on-failure"),
        );
        a.change_on_failure = self.boolean(k).unwrap_or(false);
        let k = self.own_or(
            own!("affinity-canary-behavior"),
            nginx!("affinity-canary-behavior"),
        );
        a.canary_sticky = self
            .choice(k, &[("sticky", true), ("legacy", false)])
            .unwrap_or(true);
        Some(a)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{OptionDefaults, parse};
    use super::*;

    fn affinity(pairs: &[(&str, &str)]) -> Result<Option<Affinity>, Vec<String>> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(Some(&map), "ns", &OptionDefaults::default())
            .map(|p| p.options.policy.affinity.clone())
            .map_err(|e| e.iter().map(|e| e.key().to_string()).collect())
    }

    #[test]
    fn defaults_follow_ingress_nginx() {
        let a = affinity(&[("nginx.ingress.kubernetes.io/affinity", "cookie")])
            .unwrap()
            .unwrap();
        assert_eq!(a.cookie_name, "INGRESSCOOKIE");
        assert_eq!(a.mode, AffinityMode::Balanced);
        assert_eq!(a.path, None);
        assert!(!a.secure);
        assert_eq!(affinity(&[]).unwrap(), None);
    }

    #[test]
    fn every_attribute_and_our_keys_win() {
        let a = affinity(&[
            ("portcullis.io/affinity", "cookie"),
            ("nginx.ingress.kubernetes.io/affinity", "bogus"),
            ("nginx.ingress.kubernetes.io/affinity-mode", "persistent"),
            ("nginx.ingress.kubernetes.io/session-cookie-name", "route"),
            ("nginx.ingress.kubernetes.io/session-cookie-path", "/app"),
            (
                "nginx.ingress.kubernetes.io/session-cookie-max-age",
                "172800",
            ),
            ("nginx.ingress.kubernetes.io/session-cookie-expires", "3600"),
            (
                "nginx.ingress.kubernetes.io/session-cookie-samesite",
                "Strict",
            ),
            ("portcullis.io/session-cookie-secure", "true"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.mode, AffinityMode::Persistent);
        assert_eq!(a.cookie_name, "route");
        assert_eq!(a.path.as_deref(), Some("/app"));
        assert_eq!((a.max_age, a.expires), (Some(172800), Some(3600)));
        assert_eq!(a.same_site, Some(SameSite::Strict));
        assert!(a.secure);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (k, v) in [
            ("nginx.ingress.kubernetes.io/affinity", "ip"),
            ("nginx.ingress.kubernetes.io/affinity-mode", "sticky"),
            ("nginx.ingress.kubernetes.io/session-cookie-name", "a b"),
            ("nginx.ingress.kubernetes.io/session-cookie-path", "app"),
            ("nginx.ingress.kubernetes.io/session-cookie-max-age", "1h"),
            (
                "nginx.ingress.kubernetes.io/session-cookie-samesite",
                "Maybe",
            ),
        ] {
            let pairs = if k.ends_with("/affinity") {
                vec![(k, v)]
            } else {
                vec![("nginx.ingress.kubernetes.io/affinity", "cookie"), (k, v)]
            };
            assert_eq!(affinity(&pairs).unwrap_err(), vec![k.to_string()], "{k}");
        }
    }
}
