//! `canary: "true"` and `canary-*` → [`CanaryRules`], as ingress-nginx documents them
//! ("Canary" in its annotations reference).

use super::{IngressOptions, PREFIX, Reader};
use crate::table::canary::{CanaryRules, HeaderMatch, HeaderPattern, HeaderRule};
use crate::table::policy::RoutePolicy;
use crate::table::route::TlsMode;

/// ingress-nginx's prefix.
const NGINX: &str = nginx!("");

/// The annotation names a canary Ingress still honours; ingress-nginx: "all the other
/// non-canary annotations will be ignored (inherited from the corresponding main ingress)
/// except `load-balance`, `upstream-hash-by`, and annotations related to session affinity".
fn canary_reads(name: &str) -> bool {
    name.starts_with("canary")
        || name.starts_with("affinity")
        || name.starts_with("session-cookie-")
        || name == "load-balance"
}

/// A header name: an RFC 9110 token.
fn is_token(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A canary Ingress's options that its main Ingress decides are reset, so that nothing in
/// the merge acts on them (a canary's `use-regex` does not make its host's paths regular
/// expressions, its `server-alias` adds no host): it keeps its canary rules, its session
/// affinity and its load balancing. Its ignored keys were already warned about.
pub(super) fn inherit_from_main(options: &mut IngressOptions) {
    if options.canary.is_none() {
        return;
    }
    options.policy = RoutePolicy::shared(RoutePolicy {
        affinity: options.policy.affinity.clone(),
        ..RoutePolicy::default()
    });
    options.paths = Default::default();
    options.redirect = None;
    options.app_root = None;
    options.from_to_www = false;
    options.max_body = None;
}

/// The `canary-*` settings, our key and ingress-nginx's (made at compile time: every Ingress
/// that is not a canary is checked for all of them).
const KEYS: [[&str; 2]; 6] = [
    both!("canary-by-header"),
    both!("canary-by-header-value"),
    both!("canary-by-header-pattern"),
    both!("canary-by-cookie"),
    both!("canary-weight"),
    both!("canary-weight-total"),
];

impl Reader<'_> {
    /// The canary rules of an Ingress marked `canary: "true"`; `None` otherwise (its
    /// `canary-*` keys are then warned about: they do nothing). Also warns about every other
    /// annotation of a canary Ingress that it inherits from its main Ingress instead.
    pub(super) fn canary(&mut self, tls_mode: TlsMode) -> Option<CanaryRules> {
        let key = self.own_or(own!("canary"), nginx!("canary"));
        let enabled = self.boolean(key).unwrap_or(false);
        if !enabled {
            for name in KEYS {
                let k = self.either(name);
                self.ignore(k, "it applies only to an Ingress marked canary: \"true\"");
            }
            return None;
        }
        if tls_mode == TlsMode::Passthrough {
            self.invalid(
                key,
                "true",
                "false: a pass-through host routes connections, not requests, so it has no canary",
            );
            return None;
        }
        let mut rules = CanaryRules::default();

        let header = self.either(both!("canary-by-header"));
        let header = self.value_where(header, "a header name", is_token);
        let value_key = self.either(both!("canary-by-header-value"));
        let value = self.value_where(
            value_key,
            "a header value without control characters",
            |v| !v.chars().any(char::is_control),
        );
        let pattern_key = self.either(both!("canary-by-header-pattern"));
        let pattern = match self.get(pattern_key) {
            Some(_) if value.is_some() => {
                self.ignore(
                    pattern_key,
                    "canary-by-header-value is set, and wins (as in ingress-nginx)",
                );
                None
            }
            Some(p) => match regex::Regex::new(p) {
                Ok(re) => Some(HeaderPattern(re)),
                Err(_) => {
                    self.invalid(pattern_key, p, "a regular expression (RE2 syntax)");
                    None
                }
            },
            None => None,
        };
        match header {
            Some(name) => {
                let matches = match (value, pattern) {
                    (Some(v), _) => HeaderMatch::Value(v),
                    (None, Some(p)) => HeaderMatch::Pattern(p),
                    (None, None) => HeaderMatch::AlwaysNever,
                };
                rules.header = Some(HeaderRule {
                    name: name.to_ascii_lowercase(),
                    matches,
                });
            }
            None => {
                for k in [value_key, pattern_key] {
                    self.ignore(k, "it has no effect without canary-by-header");
                }
            }
        }
        let cookie = self.either(both!("canary-by-cookie"));
        rules.cookie = self.value_where(cookie, "a cookie name", is_token);

        let total_key = self.either(both!("canary-weight-total"));
        rules.weight_total = self
            .value_where(total_key, "a whole number from 1 to 1000000", |v| {
                v.parse::<u32>().is_ok_and(|n| (1..=1_000_000).contains(&n))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(100);
        let weight_key = self.either(both!("canary-weight"));
        let total = rules.weight_total;
        rules.weight = self
            .value_where(
                weight_key,
                &format!("a whole number from 0 to {total} (canary-weight-total)"),
                |v| v.parse::<u32>().is_ok_and(|n| n <= total),
            )
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);

        let inherited: Vec<String> = self
            .map
            .keys()
            .filter(|k| {
                [PREFIX, NGINX]
                    .iter()
                    .any(|p| k.strip_prefix(p).is_some_and(|name| !canary_reads(name)))
            })
            .cloned()
            .collect();
        for k in inherited {
            self.ignore(
                &k,
                "a canary Ingress takes it from its main Ingress (only canary-*, affinity, session-cookie-* and load-balance are its own)",
            );
        }
        Some(rules)
    }

    /// Our key when the Ingress has it, else ingress-nginx's.
    fn either(&self, [own, nginx]: [&'static str; 2]) -> &'static str {
        self.own_or(own, nginx)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{OptionDefaults, Parsed, parse};
    use super::*;

    fn run(pairs: &[(&str, &str)]) -> Result<Parsed, Vec<String>> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(Some(&map), "ns", &OptionDefaults::default())
            .map_err(|e| e.iter().map(|e| e.key().to_string()).collect())
    }

    #[test]
    fn rules_in_ingress_nginx_precedence() {
        let p = run(&[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary"),
            ("nginx.ingress.kubernetes.io/canary-by-header-value", "v2"),
            ("nginx.ingress.kubernetes.io/canary-by-header-pattern", "^v"),
            ("nginx.ingress.kubernetes.io/canary-by-cookie", "canary"),
            ("nginx.ingress.kubernetes.io/canary-weight", "20"),
            ("nginx.ingress.kubernetes.io/ssl-redirect", "true"),
        ])
        .unwrap();
        let rules = p.options.canary.unwrap();
        assert_eq!(
            rules.header,
            Some(HeaderRule {
                name: "x-canary".into(),
                matches: HeaderMatch::Value("v2".into())
            })
        );
        assert_eq!(rules.cookie.as_deref(), Some("canary"));
        assert_eq!((rules.weight, rules.weight_total), (20, 100));
        let warned: Vec<&str> = p.warnings.iter().map(|w| w.key()).collect();
        assert_eq!(
            warned,
            [
                "nginx.ingress.kubernetes.io/canary-by-header-pattern",
                "nginx.ingress.kubernetes.io/ssl-redirect"
            ]
        );
    }

    #[test]
    fn not_a_canary_without_the_flag() {
        let p = run(&[("nginx.ingress.kubernetes.io/canary-weight", "20")]).unwrap();
        assert_eq!(p.options.canary, None);
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (k, v) in [
            ("nginx.ingress.kubernetes.io/canary-weight", "101"),
            ("nginx.ingress.kubernetes.io/canary-weight", "-1"),
            ("nginx.ingress.kubernetes.io/canary-weight-total", "0"),
            ("nginx.ingress.kubernetes.io/canary-by-header", "X Canary"),
            (
                "nginx.ingress.kubernetes.io/canary-by-header-pattern",
                "(unclosed",
            ),
        ] {
            let errors = run(&[
                ("nginx.ingress.kubernetes.io/canary", "true"),
                ("nginx.ingress.kubernetes.io/canary-by-header", "X-Canary"),
                (k, v),
            ]);
            assert_eq!(errors.unwrap_err(), vec![k.to_string()], "{k}={v}");
        }
        let bigger_total = run(&[
            ("nginx.ingress.kubernetes.io/canary", "true"),
            ("nginx.ingress.kubernetes.io/canary-weight", "150"),
            ("nginx.ingress.kubernetes.io/canary-weight-total", "1000"),
        ])
        .unwrap();
        assert_eq!(bigger_total.options.canary.unwrap().weight, 150);
    }
}
