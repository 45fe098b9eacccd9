//! `default-backend` and `custom-http-errors` (ours, and ingress-nginx's of the same names).
//!
//! ingress-nginx (docs/user-guide/nginx-configuration/annotations.md, "Default Backend" and
//! "Custom HTTP Errors"): `default-backend: <svc name>` names a Service in the Ingress's
//! namespace that "will handle the response when the configured service in the Ingress rule
//! does not have any active endpoints" and also the error responses when `custom-http-errors`
//! is set; `custom-http-errors: "404,503"` lists the codes. Without a `default-backend`
//! annotation ingress-nginx sends the errors to its global default backend, which Portcullis
//! does not have: the Ingress is refused rather than served with other responses than it asks
//! for.

use super::{Reader, is_host_name};
use crate::table::error_pages::ErrorPages;
use crate::table::route::TlsMode;

/// What `custom-http-errors` accepts.
const CODES: &str = "a comma-separated list of status codes from 400 to 599, with a default-backend annotation naming the Service that serves them";

impl Reader<'_> {
    /// The Ingress's [`ErrorPages`], unresolved (the model resolves the Service). `None` when
    /// neither annotation is set, or for a pass-through Ingress (warnings: no HTTP there).
    pub(super) fn error_pages(&mut self, tls_mode: TlsMode) -> Option<ErrorPages> {
        let backend_key = self.own_or(own!("default-backend"), nginx!("default-backend"));
        let codes_key = self.own_or(own!("custom-http-errors"), nginx!("custom-http-errors"));
        if tls_mode == TlsMode::Passthrough {
            let why = "pass-through hosts never see an HTTP request or response";
            self.ignore(backend_key, why);
            self.ignore(codes_key, why);
            return None;
        }
        let service = self.value_where(
            backend_key,
            "a Service name in the Ingress's namespace",
            is_host_name,
        );
        let codes = match self.get(codes_key) {
            None => Vec::new(),
            Some(value) => match parse_codes(value) {
                Some(codes) if self.get(backend_key).is_some() => codes,
                _ => {
                    self.invalid(codes_key, value, CODES);
                    Vec::new()
                }
            },
        };
        Some(ErrorPages {
            service: service?,
            codes,
            key: backend_key,
            namespace: String::new(),
            ingress: String::new(),
            backend: None,
        })
    }
}

/// `404,503` (spaces around codes allowed, as ingress-nginx trims them): sorted, de-duplicated,
/// each within 400–599 (codes a proxy may answer instead of the pod's error). `None` when any
/// item is not such a code, or there is none.
fn parse_codes(value: &str) -> Option<Vec<u16>> {
    let mut codes = value
        .split(',')
        .map(|c| {
            c.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (400..=599).contains(c))
        })
        .collect::<Option<Vec<u16>>>()?;
    codes.sort_unstable();
    codes.dedup();
    (!codes.is_empty()).then_some(codes)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{OptionDefaults, parse};
    use super::parse_codes;

    fn parse_pairs(
        pairs: &[(&str, &str)],
    ) -> Result<super::super::Parsed, Vec<super::super::AnnotationError>> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parse(Some(&map), "ns", &OptionDefaults::default())
    }

    #[test]
    fn codes_are_4xx_and_5xx_lists() {
        assert_eq!(parse_codes("404,503"), Some(vec![404, 503]));
        assert_eq!(parse_codes(" 503, 404 ,404"), Some(vec![404, 503]));
        for bad in ["", "404,", "200", "600", "399", "4o4", "404;503"] {
            assert_eq!(parse_codes(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn nginx_aliases_and_our_keys() {
        let p = parse_pairs(&[
            ("nginx.ingress.kubernetes.io/default-backend", "errors"),
            ("nginx.ingress.kubernetes.io/custom-http-errors", "503,404"),
        ])
        .unwrap();
        let pages = p.options.policy.error_pages.clone().expect("error pages");
        assert_eq!(pages.service, "errors");
        assert_eq!(pages.codes, vec![404, 503]);
        let ours = parse_pairs(&[
            ("portcullis.io/default-backend", "mine"),
            ("nginx.ingress.kubernetes.io/default-backend", "theirs"),
        ])
        .unwrap();
        let pages = ours
            .options
            .policy
            .error_pages
            .clone()
            .expect("error pages");
        assert_eq!(pages.service, "mine");
        assert_eq!(pages.key, "portcullis.io/default-backend");
    }

    #[test]
    fn codes_without_a_default_backend_or_out_of_range_are_refused() {
        let errors =
            parse_pairs(&[("nginx.ingress.kubernetes.io/custom-http-errors", "404")]).unwrap_err();
        assert_eq!(
            errors[0].key(),
            "nginx.ingress.kubernetes.io/custom-http-errors"
        );
        assert!(errors[0].to_string().contains("default-backend"));
        let errors = parse_pairs(&[
            ("portcullis.io/default-backend", "errors"),
            ("portcullis.io/custom-http-errors", "302"),
        ])
        .unwrap_err();
        assert_eq!(errors[0].key(), "portcullis.io/custom-http-errors");
        let errors = parse_pairs(&[("portcullis.io/default-backend", "ns/errors")]).unwrap_err();
        assert_eq!(errors[0].key(), "portcullis.io/default-backend");
    }

    #[test]
    fn passthrough_ignores_them_with_warnings() {
        let p = parse_pairs(&[
            ("portcullis.io/tls-mode", "passthrough"),
            ("nginx.ingress.kubernetes.io/default-backend", "errors"),
        ])
        .unwrap();
        assert!(p.options.policy.error_pages.is_none());
        assert_eq!(
            p.warnings[0].key(),
            "nginx.ingress.kubernetes.io/default-backend"
        );
    }
}
