//! External authentication (`auth-url` and its settings), as ingress-nginx documents it
//! (annotations.md, "External Authentication"; its validation in
//! internal/ingress/annotations/authreq). A value that cannot be honoured refuses the
//! Ingress: served without its authentication it would be open to anyone.

use std::sync::Arc;

use http::Method;
use http::header::{HeaderName, HeaderValue};

use super::Reader;
use crate::table::external_auth::{
    AuthUrl, CacheSpec, CacheStore, DEFAULT_CACHE_STATUSES, DEFAULT_CACHE_TIME,
    DEFAULT_REDIRECT_PARAM, ExternalAuth, Signin, TEMPLATE_VARIABLES, Template, URL_VARIABLES,
};
use crate::table::route::TlsMode;

/// ingress-nginx's `methodsRegex`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE",
];
const URL: &str = "an absolute http:// or https:// URL, like \
                   http://oauth2-proxy.auth.svc.cluster.local:4180/oauth2/auth or \
                   https://$host/oauth2/auth";
const HEADER_NAMES: &str = "a comma-separated list of header names (letters, digits, - and _)";
const PARAM: &str = "a URL parameter name (letters, digits, - and _)";
const DURATIONS: &str = "comma-separated `[code ...|any] time` entries, like `200 202 401 5m` \
                         or `200 10m, 401 30s`";

/// The settings read only with `auth-url`: our key and ingress-nginx's (made at compile time:
/// every Ingress without `auth-url` is checked for all of them).
const SETTINGS: [[&str; 2]; 8] = [
    both!("auth-method"),
    both!("auth-signin"),
    both!("auth-signin-redirect-param"),
    both!("auth-response-headers"),
    both!("auth-request-redirect"),
    both!("auth-cache-key"),
    both!("auth-cache-duration"),
    both!("auth-always-set-cookie"),
];

impl Reader<'_> {
    /// `auth-url` and its settings; `None` without `auth-url` (then each setting present is
    /// a warning: ingress-nginx reads them only with it). On a pass-through host `auth-url`
    /// is an error: no HTTP request is seen there, and the host would be served open.
    pub(super) fn external_auth(&mut self, tls_mode: TlsMode) -> Option<Arc<ExternalAuth>> {
        let url_key = self.own_or(own!("auth-url"), nginx!("auth-url"));
        let Some(url_text) = self.get(url_key) else {
            for key in SETTINGS.iter().flatten() {
                self.ignore(key, "read only with auth-url");
            }
            return None;
        };
        if tls_mode == TlsMode::Passthrough {
            self.invalid(
                url_key,
                url_text,
                "no auth-url on a pass-through host (it never sees an HTTP request)",
            );
            return None;
        }
        let url = AuthUrl::parse(url_text.trim());
        if url.is_none() {
            self.invalid(
                url_key,
                url_text,
                &format!("{URL} (variables: {URL_VARIABLES})"),
            );
        }

        let method_key = self.own_or(own!("auth-method"), nginx!("auth-method"));
        let method = match self.get(method_key) {
            None => Some(Method::GET),
            Some(m) if METHODS.contains(&m) => Method::from_bytes(m.as_bytes()).ok(),
            Some(m) => {
                self.invalid(method_key, m, &METHODS.join(", "));
                None
            }
        };

        let param_key = self.own_or(
            own!("auth-signin-redirect-param"),
            nginx!("auth-signin-redirect-param"),
        );
        let signin_key = self.own_or(own!("auth-signin"), nginx!("auth-signin"));
        let param = self
            .value_where(param_key, PARAM, |v| {
                !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            })
            .unwrap_or_else(|| DEFAULT_REDIRECT_PARAM.to_string());
        if self.get(signin_key).is_none() {
            self.ignore(param_key, "read only with auth-signin");
        }
        let signin = self.get(signin_key).and_then(|text| {
            let parsed = Signin::parse(text.trim(), &param);
            if parsed.is_none() {
                self.invalid(
                    signin_key,
                    text,
                    &format!(
                        "an http(s) URL or a path, with only these variables: {TEMPLATE_VARIABLES}"
                    ),
                );
            }
            parsed
        });

        let headers_key = self.own_or(
            own!("auth-response-headers"),
            nginx!("auth-response-headers"),
        );
        let response_headers = match self.get(headers_key) {
            None => Some(Vec::new()),
            Some(text) => {
                let names: Option<Vec<HeaderName>> = text
                    .split(',')
                    .map(str::trim)
                    .map(|n| {
                        let ok = !n.is_empty()
                            && n.bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                        if ok {
                            HeaderName::from_bytes(n.as_bytes()).ok()
                        } else {
                            None
                        }
                    })
                    .collect();
                if names.is_none() {
                    self.invalid(headers_key, text, HEADER_NAMES);
                }
                names
            }
        };

        let redirect_key = self.own_or(
            own!("auth-request-redirect"),
            nginx!("auth-request-redirect"),
        );
        let request_redirect = self.get(redirect_key).and_then(|text| {
            let value = HeaderValue::from_str(text.trim())
                .ok()
                .filter(|_| !text.trim().is_empty());
            if value.is_none() {
                self.invalid(redirect_key, text, "a URL or path (visible ASCII)");
            }
            value
        });

        let cookie_key = self.own_or(
            own!("auth-always-set-cookie"),
            nginx!("auth-always-set-cookie"),
        );
        let always_set_cookie = self.boolean(cookie_key).unwrap_or(false);

        let cache = self.auth_cache();

        Some(Arc::new(ExternalAuth {
            url: url?,
            method: method?,
            signin,
            response_headers: response_headers?,
            request_redirect,
            always_set_cookie,
            cache: cache?,
        }))
    }

    /// `auth-cache-key` and `auth-cache-duration`: `Some(None)` without a key (the
    /// duration alone is a warning), `None` on a bad value.
    fn auth_cache(&mut self) -> Option<Option<CacheSpec>> {
        let key_key = self.own_or(own!("auth-cache-key"), nginx!("auth-cache-key"));
        let duration_key = self.own_or(own!("auth-cache-duration"), nginx!("auth-cache-duration"));
        let Some(key_text) = self.get(key_key) else {
            self.ignore(duration_key, "read only with auth-cache-key");
            return Some(None);
        };
        let key = Template::parse(key_text).filter(|_| !key_text.trim().is_empty());
        if key.is_none() {
            self.invalid(
                key_key,
                key_text,
                &format!("nginx variables from {TEMPLATE_VARIABLES}, like $remote_user$http_authorization"),
            );
        }
        let durations = match self.get(duration_key) {
            None => Some(vec![(DEFAULT_CACHE_STATUSES.to_vec(), DEFAULT_CACHE_TIME)]),
            Some(text) => {
                let parsed = CacheSpec::parse_durations(text);
                if parsed.is_none() {
                    self.invalid(duration_key, text, DURATIONS);
                }
                parsed
            }
        };
        Some(Some(CacheSpec {
            key: key?,
            durations: durations?,
            store: CacheStore::default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::model::annotations::{AnnotationError, OptionDefaults, parse};

    fn parsed(pairs: &[(&str, &str)]) -> Result<super::super::Parsed, Vec<AnnotationError>> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(Some(&map), "default", &OptionDefaults::default())
    }

    fn error_keys(pairs: &[(&str, &str)]) -> Vec<String> {
        parsed(pairs)
            .err()
            .unwrap_or_default()
            .iter()
            .map(|e| e.key().to_string())
            .collect()
    }

    const URL: &str = "nginx.ingress.kubernetes.io/auth-url";

    #[test]
    fn nginx_keys_are_read() {
        let p = parsed(&[
            (URL, "http://auth.auth.svc:4180/oauth2/auth"),
            ("nginx.ingress.kubernetes.io/auth-method", "POST"),
            (
                "nginx.ingress.kubernetes.io/auth-signin",
                "https://$host/oauth2/start?rd=$escaped_request_uri",
            ),
            (
                "nginx.ingress.kubernetes.io/auth-response-headers",
                "X-Auth-Request-User, X-Auth-Request-Email",
            ),
            (
                "nginx.ingress.kubernetes.io/auth-cache-key",
                "$remote_user$http_authorization",
            ),
            (
                "nginx.ingress.kubernetes.io/auth-cache-duration",
                "200 202 10m, 401 1m",
            ),
        ])
        .unwrap();
        let auth = p.options.policy.external_auth.clone().unwrap();
        assert_eq!(auth.method, http::Method::POST);
        assert_eq!(auth.url.port, 4180);
        assert_eq!(auth.response_headers.len(), 2);
        assert!(auth.signin.as_ref().unwrap().append.is_none());
        assert_eq!(auth.cache.as_ref().unwrap().durations.len(), 2);
    }

    #[test]
    fn bad_values_refuse_the_ingress() {
        assert_eq!(
            error_keys(&[(URL, "https://$host/auth?u=$request_uri")]),
            [URL]
        );
        assert_eq!(error_keys(&[(URL, "not a url")]), [URL]);
        let k = "nginx.ingress.kubernetes.io/auth-method";
        assert_eq!(error_keys(&[(URL, "http://a/"), (k, "FETCH")]), [k]);
        let k = "nginx.ingress.kubernetes.io/auth-response-headers";
        assert_eq!(error_keys(&[(URL, "http://a/"), (k, "X-Ok, X Bad")]), [k]);
        let k = "nginx.ingress.kubernetes.io/auth-cache-key";
        assert_eq!(error_keys(&[(URL, "http://a/"), (k, "$arg_token")]), [k]);
        let k = "nginx.ingress.kubernetes.io/auth-cache-duration";
        assert_eq!(
            error_keys(&[
                (URL, "http://a/"),
                (
                    "nginx.ingress.kubernetes.io/auth-cache-key",
                    "$http_authorization"
                ),
                (k, "200 forever")
            ]),
            [k]
        );
        let k = "nginx.ingress.kubernetes.io/auth-signin";
        assert_eq!(
            error_keys(&[(URL, "http://a/"), (k, "https://x/?u=$args")]),
            [k]
        );
        assert_eq!(
            error_keys(&[
                (URL, "http://a/"),
                ("nginx.ingress.kubernetes.io/ssl-passthrough", "true")
            ]),
            [URL]
        );
    }

    #[test]
    fn settings_without_auth_url_are_warnings() {
        let p = parsed(&[("nginx.ingress.kubernetes.io/auth-signin", "https://x/")]).unwrap();
        assert!(p.options.policy.external_auth.is_none());
        assert_eq!(p.warnings.len(), 1);
    }
}
