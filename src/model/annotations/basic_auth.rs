//! `auth-type: basic`, `auth-secret`, `auth-secret-type` and `auth-realm`, as ingress-nginx
//! documents them (annotations.md, "Authentication"; examples/auth/basic). The users are read
//! from the Secret later, by the model (`model::basic_auth`); here only the names are checked.
//!
//! Whatever would leave the routes open is an error, never a warning: `auth-type: digest`
//! (not supported), `auth-secret` without `auth-type: basic` or the other way round, a Secret
//! in another namespace (ingress-nginx's default, `allow-cross-namespace-resources: false`),
//! and basic auth on a pass-through host (no HTTP request is ever seen there).

use std::sync::Arc;

use super::{Reader, is_host_name};
use crate::table::basic_auth::{BasicAuth, SecretType};
use crate::table::route::TlsMode;

/// ingress-nginx's realm when `auth-realm` is not set: its template writes
/// `auth_basic "<realm>"` with the empty string, so clients see `Basic realm=""`.
pub(crate) const DEFAULT_REALM: &str = "";

/// What `auth-realm` accepts: visible ASCII and spaces, no `"` or `\` (it is sent inside a
/// quoted string).
fn is_realm(v: &str) -> bool {
    v.bytes()
        .all(|b| b == b' ' || (b.is_ascii_graphic() && b != b'"' && b != b'\\'))
}

impl Reader<'_> {
    /// The basic authentication an Ingress in `namespace` asks for; `None` when it asks for
    /// none, or when an error was recorded (the Ingress is then refused).
    pub(super) fn basic_auth(&mut self, namespace: &str, tls_mode: TlsMode) -> Option<BasicAuth> {
        let type_key = self.own_or(own!("auth-type"), nginx!("auth-type"));
        let secret_key = self.own_or(own!("auth-secret"), nginx!("auth-secret"));
        let secret_type_key = self.own_or(own!("auth-secret-type"), nginx!("auth-secret-type"));
        let realm_key = self.own_or(own!("auth-realm"), nginx!("auth-realm"));

        let Some(auth_type) = self.get(type_key) else {
            if let Some(secret) = self.get(secret_key) {
                // ingress-nginx would serve the paths open; a Secret of users says otherwise.
                self.invalid(
                    secret_key,
                    secret,
                    "a Secret of users together with auth-type: basic (auth-type is missing)",
                );
            }
            for key in [secret_type_key, realm_key] {
                self.ignore(key, "it applies only with auth-type: basic");
            }
            return None;
        };
        if !auth_type.eq_ignore_ascii_case("basic") {
            self.invalid(
                type_key,
                auth_type,
                "basic (digest authentication is not supported)",
            );
            return None;
        }
        if tls_mode == TlsMode::Passthrough {
            self.invalid(
                type_key,
                auth_type,
                "none on a pass-through host: it never sees an HTTP request to authenticate",
            );
            return None;
        }
        let secret_type = self
            .choice(
                secret_type_key,
                &[
                    ("auth-file", SecretType::AuthFile),
                    ("auth-map", SecretType::AuthMap),
                ],
            )
            .unwrap_or_default();
        let realm = self
            .value_where(
                realm_key,
                "visible ASCII text and spaces, without \" or \\",
                is_realm,
            )
            .unwrap_or_else(|| DEFAULT_REALM.to_string());
        let Some(value) = self.get(secret_key) else {
            self.invalid(
                type_key,
                auth_type,
                "basic together with auth-secret, the Secret of users (auth-secret is missing)",
            );
            return None;
        };
        let name = match value.split_once('/') {
            Some((ns, name)) if ns == namespace => name,
            Some(_) => "",
            None => value,
        };
        if !is_host_name(name) {
            let accepted = format!(
                "a Secret in the Ingress's namespace, as \"{namespace}/NAME\" or \"NAME\" \
                 (another namespace's Secret is refused, as ingress-nginx does by default)"
            );
            self.invalid(secret_key, value, &accepted);
            return None;
        }
        Some(BasicAuth {
            realm,
            secret: name.to_string(),
            secret_type,
            secret_annotation: secret_key,
            users: Arc::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{OptionDefaults, parse};
    use crate::table::basic_auth::SecretType;

    fn run(
        pairs: &[(&str, &str)],
    ) -> Result<super::super::Parsed, Vec<super::super::AnnotationError>> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(Some(&map), "ns", &OptionDefaults::default())
    }

    #[test]
    fn nginx_aliases_and_defaults() {
        let p = run(&[
            ("nginx.ingress.kubernetes.io/auth-type", "basic"),
            ("nginx.ingress.kubernetes.io/auth-secret", "ns/users"),
        ])
        .unwrap();
        let auth = p.options.policy.basic_auth.clone().unwrap();
        assert_eq!(auth.secret, "users");
        assert_eq!(auth.realm, "");
        assert_eq!(auth.secret_type, SecretType::AuthFile);
        let p = run(&[
            ("portcullis.io/auth-type", "basic"),
            ("portcullis.io/auth-secret", "users"),
            ("portcullis.io/auth-secret-type", "auth-map"),
            ("portcullis.io/auth-realm", "Staff only"),
            ("nginx.ingress.kubernetes.io/auth-realm", "not read"),
        ])
        .unwrap();
        let auth = p.options.policy.basic_auth.clone().unwrap();
        assert_eq!(auth.realm, "Staff only");
        assert_eq!(auth.secret_type, SecretType::AuthMap);
        assert_eq!(auth.secret_annotation, "portcullis.io/auth-secret");
    }

    #[test]
    fn everything_that_would_serve_open_is_an_error() {
        for (pairs, key) in [
            (
                &[
                    ("nginx.ingress.kubernetes.io/auth-type", "digest"),
                    ("nginx.ingress.kubernetes.io/auth-secret", "users"),
                ][..],
                "nginx.ingress.kubernetes.io/auth-type",
            ),
            (
                &[("nginx.ingress.kubernetes.io/auth-secret", "users")][..],
                "nginx.ingress.kubernetes.io/auth-secret",
            ),
            (
                &[("nginx.ingress.kubernetes.io/auth-type", "basic")][..],
                "nginx.ingress.kubernetes.io/auth-type",
            ),
            (
                &[
                    ("nginx.ingress.kubernetes.io/auth-type", "basic"),
                    ("nginx.ingress.kubernetes.io/auth-secret", "other/users"),
                ][..],
                "nginx.ingress.kubernetes.io/auth-secret",
            ),
            (
                &[
                    ("portcullis.io/tls-mode", "passthrough"),
                    ("portcullis.io/auth-type", "basic"),
                    ("portcullis.io/auth-secret", "users"),
                ][..],
                "portcullis.io/auth-type",
            ),
            (
                &[
                    ("portcullis.io/auth-type", "basic"),
                    ("portcullis.io/auth-secret", "users"),
                    ("portcullis.io/auth-realm", "say \"hi\""),
                ][..],
                "portcullis.io/auth-realm",
            ),
            (
                &[
                    ("portcullis.io/auth-type", "basic"),
                    ("portcullis.io/auth-secret", "users"),
                    ("portcullis.io/auth-secret-type", "auth-ldap"),
                ][..],
                "portcullis.io/auth-secret-type",
            ),
        ] {
            let errors = run(pairs).unwrap_err();
            assert_eq!(errors[0].key(), key, "{pairs:?}");
        }
        // A realm alone opens nothing: a warning.
        let p = run(&[("nginx.ingress.kubernetes.io/auth-realm", "x")]).unwrap();
        assert_eq!(p.warnings.len(), 1);
    }
}
