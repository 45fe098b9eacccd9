//! Client certificate authentication: `auth-tls-secret`, `auth-tls-verify-client`,
//! `auth-tls-verify-depth`, `auth-tls-error-page`, `auth-tls-pass-certificate-to-upstream`
//! (ingress-nginx annotations.md, "Client Certificate Authentication").
//!
//! These decide who may reach the service, so nothing here is ever dropped quietly: a bad
//! value, an `auth-tls-*` key without the Secret, or any of them on a pass-through host (where
//! the proxy never sees the handshake's certificate) refuses the Ingress.

use super::{Reader, is_host_name, is_redirect_url};
use crate::table::client_auth::{ClientAuth, VerifyClient};
use crate::table::route::TlsMode;

/// Deepest `auth-tls-verify-depth` accepted.
const MAX_DEPTH: u8 = 10;

impl Reader<'_> {
    /// The Ingress's client certificate authentication, without its CA (the model loads the
    /// Secret). `None` when not asked for, `auth-tls-verify-client: off`, or refused (an
    /// error is then recorded).
    pub(super) fn client_auth(&mut self, namespace: &str, tls_mode: TlsMode) -> Option<ClientAuth> {
        let secret_key = self.own_or(own!("auth-tls-secret"), nginx!("auth-tls-secret"));
        let verify_key = self.own_or(
            own!("auth-tls-verify-client"),
            nginx!("auth-tls-verify-client"),
        );
        let depth_key = self.own_or(
            own!("auth-tls-verify-depth"),
            nginx!("auth-tls-verify-depth"),
        );
        let page_key = self.own_or(own!("auth-tls-error-page"), nginx!("auth-tls-error-page"));
        let pass_key = self.own_or(
            own!("auth-tls-pass-certificate-to-upstream"),
            nginx!("auth-tls-pass-certificate-to-upstream"),
        );
        let present: Vec<&'static str> = [secret_key, verify_key, depth_key, page_key, pass_key]
            .into_iter()
            .filter(|k| self.get(k).is_some())
            .collect();
        if present.is_empty() {
            return None;
        }
        if tls_mode == TlsMode::Passthrough {
            for key in present {
                let value = self.get(key).unwrap_or_default();
                self.invalid(
                    key,
                    value,
                    "nothing on a pass-through host: its TLS ends at the pod, so the proxy never sees a client certificate",
                );
            }
            return None;
        }

        let secret = self.get(secret_key).and_then(|value| {
            let name = match value.split_once('/') {
                Some((ns, name)) if ns == namespace => name,
                Some(_) => "",
                None => value,
            };
            if is_host_name(name) {
                Some(format!("{namespace}/{name}"))
            } else {
                let accepted = format!(
                    "a Secret (with ca.crt) in the Ingress's namespace, as \"{namespace}/NAME\" or \"NAME\""
                );
                self.invalid(secret_key, value, &accepted);
                None
            }
        });
        let verify = self.choice(
            verify_key,
            &[
                ("on", Some(VerifyClient::On)),
                ("off", None),
                ("optional", Some(VerifyClient::Optional)),
                ("optional_no_ca", Some(VerifyClient::OptionalNoCa)),
            ],
        );
        let depth = self
            .get(depth_key)
            .and_then(|value| match value.trim().parse::<u8>() {
                Ok(d) if (1..=MAX_DEPTH).contains(&d) => Some(d),
                _ => {
                    self.invalid(depth_key, value, "a chain depth from 1 to 10");
                    None
                }
            });
        let error_page = self.value_where(
            page_key,
            "an absolute http:// or https:// URL (no nginx $variables)",
            is_redirect_url,
        );
        let pass_certificate = self.boolean(pass_key);

        if verify == Some(None) {
            // `off`: no certificate asked for; the rest does not apply.
            for key in [secret_key, depth_key, page_key, pass_key] {
                self.ignore(key, "auth-tls-verify-client is off");
            }
            return None;
        }
        if self.get(secret_key).is_none() {
            // Someone asked for client certificates without saying whose: never served open.
            for key in [verify_key, depth_key, page_key, pass_key] {
                if let Some(value) = self.get(key) {
                    self.invalid(
                        key,
                        value,
                        "only with auth-tls-secret (the CA to verify with)",
                    );
                }
            }
            return None;
        }
        Some(ClientAuth {
            // ingress-nginx's default is `on`.
            verify: verify.flatten().unwrap_or(VerifyClient::On),
            depth: depth.unwrap_or(1),
            error_page,
            pass_certificate: pass_certificate.unwrap_or(false),
            secret: secret?,
            secret_annotation: secret_key,
            ca: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{OptionDefaults, parse};
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("nginx.ingress.kubernetes.io/{k}"), v.to_string()))
            .collect()
    }

    fn client_auth(map: &BTreeMap<String, String>) -> std::sync::Arc<ClientAuth> {
        let parsed = parse(Some(map), "ns", &OptionDefaults::default()).expect("parsed");
        parsed
            .options
            .policy
            .client_auth
            .clone()
            .expect("client auth")
    }

    #[test]
    fn reads_the_nginx_keys_with_their_defaults() {
        let map = annotations(&[("auth-tls-secret", "ns/ca")]);
        let auth = client_auth(&map);
        assert_eq!(auth.verify, VerifyClient::On);
        assert_eq!(auth.depth, 1);
        assert_eq!(auth.secret, "ns/ca");
        assert!(!auth.pass_certificate);

        let map = annotations(&[
            ("auth-tls-secret", "ca"),
            ("auth-tls-verify-client", "optional_no_ca"),
            ("auth-tls-verify-depth", "3"),
            ("auth-tls-pass-certificate-to-upstream", "true"),
            ("auth-tls-error-page", "https://example.com/cert-error"),
        ]);
        let auth = client_auth(&map);
        assert_eq!(auth.verify, VerifyClient::OptionalNoCa);
        assert_eq!(auth.depth, 3);
        assert!(auth.pass_certificate);
        assert_eq!(auth.secret, "ns/ca");
    }

    #[test]
    fn refuses_what_it_cannot_enforce() {
        for bad in [
            vec![("auth-tls-secret", "other/ca")],
            vec![
                ("auth-tls-secret", "ca"),
                ("auth-tls-verify-client", "maybe"),
            ],
            vec![("auth-tls-secret", "ca"), ("auth-tls-verify-depth", "0")],
            vec![("auth-tls-verify-client", "on")],
            vec![("auth-tls-secret", "ca"), ("ssl-passthrough", "true")],
        ] {
            let map = annotations(&bad);
            assert!(
                parse(Some(&map), "ns", &OptionDefaults::default()).is_err(),
                "{bad:?}"
            );
        }
        let map = annotations(&[("auth-tls-secret", "ca"), ("auth-tls-verify-client", "off")]);
        let parsed = parse(Some(&map), "ns", &OptionDefaults::default()).expect("parsed");
        assert!(parsed.options.policy.client_auth.is_none());
        assert_eq!(parsed.warnings.len(), 1);
    }
}
