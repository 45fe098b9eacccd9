//! Allow and deny lists of client addresses: `portcullis.io/allow-source-range` (aliases
//! ingress-nginx's `allowlist-source-range` and its older name `whitelist-source-range`) and
//! `portcullis.io/deny-source-range` (alias `denylist-source-range`), annotations.md
//! "Denylist source range" / "Whitelist source range". An annotation replaces the class-wide
//! list (IngressClassParams `defaults.allowSourceRange` / `defaults.denySourceRange`, the
//! ConfigMap keys of the same names in ingress-nginx): "adding an annotation to an Ingress
//! rule overrides any global restriction". They apply to pass-through hosts too, judged on
//! the connection's client address.
//!
//! A value that is not a list of CIDRs refuses the Ingress: serving it without the list would
//! open the service to everyone (ingress-nginx denies every request of such a location).

use ipnet::IpNet;

use super::{OptionDefaults, Reader};
use crate::table::source_ranges::{self, SourceRanges};

impl Reader<'_> {
    /// The allow and deny lists of the Ingress, or the class's where it has none; `None` when
    /// neither says anything.
    pub(super) fn source_ranges(&mut self, defaults: &OptionDefaults) -> Option<SourceRanges> {
        let allow_key = self.allow_key();
        let allow = self
            .cidr_list(allow_key)
            .unwrap_or_else(|| defaults.allow_source_range.clone());
        let deny_key = self.own_or(own!("deny-source-range"), nginx!("denylist-source-range"));
        let deny = self
            .cidr_list(deny_key)
            .unwrap_or_else(|| defaults.deny_source_range.clone());
        SourceRanges::new(allow, deny)
    }

    /// Our key, else ingress-nginx's current name, else its older one. When both nginx names
    /// are present the older one is reported as ignored (it is not read).
    fn allow_key(&mut self) -> &'static str {
        let own = own!("allow-source-range");
        let current = nginx!("allowlist-source-range");
        let older = nginx!("whitelist-source-range");
        if self.has_own(own) {
            return own;
        }
        if self.has_own(current) {
            self.ignore(older, "allowlist-source-range is read instead");
            return current;
        }
        older
    }

    /// The CIDRs of `key`; `None` when absent, or (with an error naming the key) when the value
    /// is not a list of CIDRs.
    fn cidr_list(&mut self, key: &str) -> Option<Vec<IpNet>> {
        let value = self.get(key)?;
        let list = source_ranges::parse_list(value);
        if list.is_none() {
            self.invalid(key, value, source_ranges::SYNTAX);
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{AnnotationError, OptionDefaults, parse};
    use crate::table::source_ranges::SourceRanges;

    fn ranges(
        pairs: &[(&str, &str)],
        defaults: &OptionDefaults,
    ) -> Result<Option<SourceRanges>, Vec<AnnotationError>> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(Some(&map), "ns", defaults).map(|p| p.options.policy.source_ranges.clone())
    }

    fn texts(r: &SourceRanges) -> (Vec<String>, Vec<String>) {
        let t = |l: &[ipnet::IpNet]| l.iter().map(ToString::to_string).collect();
        (t(&r.allow), t(&r.deny))
    }

    #[test]
    fn keys_aliases_and_precedence() {
        let none = OptionDefaults::default();
        assert_eq!(ranges(&[], &none), Ok(None));
        let r = ranges(
            &[
                (
                    "nginx.ingress.kubernetes.io/whitelist-source-range",
                    "10.0.0.0/8",
                ),
                (
                    "nginx.ingress.kubernetes.io/denylist-source-range",
                    "10.1.0.0/16",
                ),
            ],
            &none,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            texts(&r),
            (vec!["10.0.0.0/8".into()], vec!["10.1.0.0/16".into()])
        );
        // Our key, then allowlist-, then whitelist-source-range.
        let r = ranges(
            &[
                ("portcullis.io/allow-source-range", "192.0.2.0/24"),
                (
                    "nginx.ingress.kubernetes.io/allowlist-source-range",
                    "10.0.0.0/8",
                ),
            ],
            &none,
        )
        .unwrap()
        .unwrap();
        assert_eq!(texts(&r).0, ["192.0.2.0/24"]);
        let r = ranges(
            &[
                (
                    "nginx.ingress.kubernetes.io/allowlist-source-range",
                    "10.0.0.0/8",
                ),
                (
                    "nginx.ingress.kubernetes.io/whitelist-source-range",
                    "0.0.0.0/0",
                ),
            ],
            &none,
        )
        .unwrap()
        .unwrap();
        assert_eq!(texts(&r).0, ["10.0.0.0/8"]);
    }

    #[test]
    fn a_bad_value_refuses_naming_the_key() {
        let errors = ranges(
            &[(
                "nginx.ingress.kubernetes.io/denylist-source-range",
                "10.0.0.0/8, nope",
            )],
            &OptionDefaults::default(),
        )
        .unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].key(),
            "nginx.ingress.kubernetes.io/denylist-source-range"
        );
    }

    #[test]
    fn an_annotation_replaces_the_class_list_of_its_kind_only() {
        let class = OptionDefaults {
            allow_source_range: vec!["10.0.0.0/8".parse().unwrap()],
            deny_source_range: vec!["10.9.0.0/16".parse().unwrap()],
            ..OptionDefaults::default()
        };
        let r = ranges(&[], &class).unwrap().unwrap();
        assert_eq!(
            texts(&r),
            (vec!["10.0.0.0/8".into()], vec!["10.9.0.0/16".into()])
        );
        let r = ranges(&[("portcullis.io/deny-source-range", "192.0.2.1")], &class)
            .unwrap()
            .unwrap();
        assert_eq!(
            texts(&r),
            (vec!["10.0.0.0/8".into()], vec!["192.0.2.1/32".into()])
        );
    }
}
