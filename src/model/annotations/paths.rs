//! The path and host annotations: `use-regex`, `rewrite-target`, `x-forwarded-prefix`,
//! `upstream-vhost` and `server-alias` (ingress-nginx's, read as aliases of ours).

use super::{Reader, has_control, is_host_name};
use crate::table::host::HostMatch;
use crate::table::rewrite::{RewriteTarget, UpstreamRequest};
use crate::table::route::TlsMode;

/// What these annotations tell the model (the proxy's part is [`UpstreamRequest`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PathOptions {
    /// `use-regex`: every path of this Ingress's hosts (from every Ingress on them) is a
    /// case-insensitive regex anchored at the start. `rewrite-target` has the same effect,
    /// decided per host in the merge.
    pub(crate) use_regex: bool,
    /// `server-alias`: more names answered as the Ingress's host.
    pub(crate) server_aliases: Vec<HostMatch>,
    /// The key `server_aliases` came from, for diagnostics.
    pub(crate) server_alias_key: &'static str,
}

/// What `upstream-vhost` accepts.
const VHOST_SYNTAX: &str = "a host name, optionally with :port";

/// Whether `value` is a host name with an optional port: what a `Host` header may carry.
fn is_host_and_port(value: &str) -> bool {
    let (host, port) = match value.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    };
    is_host_name(host) && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p != 0))
}

impl Reader<'_> {
    /// Reads the five annotations; on a pass-through Ingress each one present is a warning
    /// and none applies.
    pub(super) fn paths(&mut self, tls_mode: TlsMode) -> (PathOptions, UpstreamRequest) {
        let regex_key = self.own_or(own!("use-regex"), nginx!("use-regex"));
        let use_regex = self.boolean(regex_key).unwrap_or(false);

        let target_key = self.own_or(own!("rewrite-target"), nginx!("rewrite-target"));
        let rewrite_target =
            self.get(target_key)
                .and_then(|value| match RewriteTarget::parse(value) {
                    Ok(target) => Some(target),
                    Err(e) => {
                        self.invalid(target_key, value, &e.to_string());
                        None
                    }
                });

        let prefix_key = self.own_or(own!("x-forwarded-prefix"), nginx!("x-forwarded-prefix"));
        let x_forwarded_prefix =
            self.value_where(prefix_key, "a header value (no control characters)", |v| {
                !v.is_empty() && !has_control(v)
            });

        let vhost_key = self.own_or(own!("upstream-vhost"), nginx!("upstream-vhost"));
        let upstream_vhost = self
            .value_where(vhost_key, VHOST_SYNTAX, is_host_and_port)
            .map(|v| v.to_ascii_lowercase());

        let alias_key = self.own_or(own!("server-alias"), nginx!("server-alias"));
        let server_aliases = self.server_aliases(alias_key);

        if tls_mode == TlsMode::Passthrough {
            for key in [regex_key, target_key, prefix_key, vhost_key, alias_key] {
                self.ignore(
                    key,
                    "pass-through hosts route by SNI and never see an HTTP request",
                );
            }
            return Default::default();
        }
        (
            PathOptions {
                use_regex,
                server_aliases,
                server_alias_key: alias_key,
            },
            UpstreamRequest {
                rewrite_target,
                x_forwarded_prefix,
                upstream_vhost,
                path_replace: None,
            },
        )
    }

    /// `server-alias`: comma-separated host names (exact or `*.` wildcards).
    fn server_aliases(&mut self, key: &str) -> Vec<HostMatch> {
        let Some(value) = self.get(key) else {
            return Vec::new();
        };
        let mut aliases = Vec::new();
        for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match HostMatch::parse(&name.to_ascii_lowercase()) {
                Ok(HostMatch::Any) | Err(_) => {
                    self.invalid(
                        key,
                        value,
                        "comma-separated host names (exact or *.wildcard)",
                    );
                    return Vec::new();
                }
                Ok(host) if !aliases.contains(&host) => aliases.push(host),
                Ok(_) => {}
            }
        }
        aliases
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{OptionDefaults, parse};
    use crate::table::host::HostMatch;

    fn parsed(
        pairs: &[(&str, &str)],
    ) -> Result<super::super::Parsed, Vec<super::super::AnnotationError>> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(Some(&map), "ns", &OptionDefaults::default())
    }

    #[test]
    fn nginx_aliases_and_our_keys() {
        let p = parsed(&[
            ("nginx.ingress.kubernetes.io/use-regex", "true"),
            ("nginx.ingress.kubernetes.io/rewrite-target", "/$2"),
            ("nginx.ingress.kubernetes.io/x-forwarded-prefix", "/api"),
            ("portcullis.io/upstream-vhost", "Internal.Example:8080"),
            ("nginx.ingress.kubernetes.io/upstream-vhost", "not read"),
            (
                "nginx.ingress.kubernetes.io/server-alias",
                "a.example, *.b.example",
            ),
        ])
        .unwrap()
        .options;
        assert!(p.paths.use_regex);
        let request = &p.policy.upstream_request;
        assert_eq!(request.rewrite_target.as_ref().unwrap().source, "/$2");
        assert_eq!(request.x_forwarded_prefix.as_deref(), Some("/api"));
        assert_eq!(
            request.upstream_vhost.as_deref(),
            Some("internal.example:8080")
        );
        assert_eq!(
            p.paths.server_aliases,
            vec![
                HostMatch::parse("a.example").unwrap(),
                HostMatch::parse("*.b.example").unwrap()
            ]
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value) in [
            ("nginx.ingress.kubernetes.io/use-regex", "yes"),
            ("portcullis.io/rewrite-target", "https://x.example/"),
            ("nginx.ingress.kubernetes.io/rewrite-target", "/$host"),
            ("nginx.ingress.kubernetes.io/upstream-vhost", "a b"),
            ("nginx.ingress.kubernetes.io/upstream-vhost", "a.example:0"),
            (
                "nginx.ingress.kubernetes.io/server-alias",
                "a.example,bad_name",
            ),
            ("nginx.ingress.kubernetes.io/x-forwarded-prefix", "a\u{7}b"),
        ] {
            let errors = parsed(&[(key, value)]).unwrap_err();
            assert_eq!(errors.len(), 1, "{key}: {value}");
            assert_eq!(errors[0].key(), key);
        }
    }

    #[test]
    fn passthrough_ignores_them_with_warnings() {
        let p = parsed(&[
            ("portcullis.io/tls-mode", "passthrough"),
            ("nginx.ingress.kubernetes.io/rewrite-target", "/"),
            ("nginx.ingress.kubernetes.io/server-alias", "a.example"),
        ])
        .unwrap();
        assert_eq!(p.warnings.len(), 2);
        assert!(p.options.paths.server_aliases.is_empty());
        assert!(p.options.policy.upstream_request.rewrite_target.is_none());
    }
}
