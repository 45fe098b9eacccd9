//! CORS (`enable-cors`, `cors-*`), headers set on requests and responses
//! (`request-headers`, `response-headers`) and per-Ingress upstream timeouts
//! (`proxy-connect-timeout`, `proxy-read-timeout`, `proxy-send-timeout`), with ingress-nginx's
//! documented defaults (annotations.md, "Enable CORS" and "Custom timeouts").

use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};

use super::{DurationSyntax, Reader, parse_duration};
use crate::table::cors::{self, AllowedOrigins, Cors, OriginPattern};
use crate::table::headers::HeaderSet;
use crate::table::policy::RoutePolicy;
use crate::table::proxy_timeouts::ProxyTimeouts;
use crate::table::route::TlsMode;

/// Every CORS key, without prefix (for warnings when CORS is off or does not apply).
const CORS_KEYS: [&str; 7] = [
    "enable-cors",
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
];

const ORIGINS: &str = "*, or a comma-separated list of origins like https://app.example.com, \
                       http://app.example.com:8080 or https://*.example.com (one wildcard label)";
const METHODS: &str = "a comma-separated list of method names, like GET, PUT, POST";
const HEADER_NAMES: &str = "a comma-separated list of header names, like X-Custom, Content-Type";
const MAX_AGE: &str = "a number of seconds";
const NGINX_SECONDS: &str = "a positive number of seconds, like 60";
const OWN_SECONDS: &str = "a positive duration like 30s, 500ms or 2m, or a number of seconds";

impl Reader<'_> {
    /// Sets the CORS, header and timeout fields of `policy`. On pass-through hosts (no HTTP
    /// request is ever seen) each one present is a warning and none is set.
    pub(super) fn cors_headers_timeouts(&mut self, tls_mode: TlsMode, policy: &mut RoutePolicy) {
        let cors = self.cors();
        let request_headers = self.header_set(own!("request-headers"));
        let response_headers = self.header_set(own!("response-headers"));
        let timeouts = self.proxy_timeouts();
        if tls_mode == TlsMode::Passthrough {
            let why = "pass-through hosts never see an HTTP request";
            for name in CORS_KEYS
                .iter()
                .chain(&["request-headers", "response-headers"])
                .chain(&["proxy-connect-timeout", "proxy-read-timeout"])
                .chain(&["proxy-send-timeout"])
            {
                for key in [
                    format!("portcullis.io/{name}"),
                    format!("nginx.ingress.kubernetes.io/{name}"),
                ] {
                    self.ignore(&key, why);
                }
            }
            return;
        }
        policy.cors = cors;
        policy.request_headers = request_headers;
        policy.response_headers = response_headers;
        policy.timeouts = timeouts;
    }

    /// `enable-cors` and its settings; `None` when CORS is off. Settings without
    /// `enable-cors: "true"` are warnings (ingress-nginx reads them only then).
    fn cors(&mut self) -> Option<Cors> {
        let enable_key = self.own_or(own!("enable-cors"), nginx!("enable-cors"));
        let keys = [
            self.own_or(own!("cors-allow-origin"), nginx!("cors-allow-origin")),
            self.own_or(own!("cors-allow-methods"), nginx!("cors-allow-methods")),
            self.own_or(own!("cors-allow-headers"), nginx!("cors-allow-headers")),
            self.own_or(own!("cors-expose-headers"), nginx!("cors-expose-headers")),
            self.own_or(
                own!("cors-allow-credentials"),
                nginx!("cors-allow-credentials"),
            ),
            self.own_or(own!("cors-max-age"), nginx!("cors-max-age")),
        ];
        let [
            origin_key,
            methods_key,
            headers_key,
            expose_key,
            credentials_key,
            max_age_key,
        ] = keys;
        if self.boolean(enable_key) != Some(true) {
            for key in keys {
                self.ignore(key, "CORS is off: enable-cors is not \"true\"");
            }
            return None;
        }
        let origins = match self.get(origin_key) {
            None => Some(AllowedOrigins::Any),
            Some(value) => {
                let parsed = parse_origins(value);
                if parsed.is_none() {
                    self.invalid(origin_key, value, ORIGINS);
                }
                parsed
            }
        };
        let allow_methods = self.token_list(methods_key, METHODS, is_method, cors::DEFAULT_METHODS);
        let allow_headers = self.token_list(
            headers_key,
            HEADER_NAMES,
            is_header_name_or_star,
            cors::DEFAULT_HEADERS,
        );
        let expose_headers = self.token_list(expose_key, HEADER_NAMES, is_header_name_or_star, "");
        let allow_credentials = self.boolean(credentials_key).unwrap_or(true);
        let max_age = match self.get(max_age_key) {
            None => Some(cors::DEFAULT_MAX_AGE),
            Some(value) => {
                let parsed = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| value.parse::<u64>().ok())
                    .flatten();
                if parsed.is_none() {
                    self.invalid(max_age_key, value, MAX_AGE);
                }
                parsed
            }
        };
        Some(Cors::new(
            origins?,
            allow_methods?,
            allow_headers?,
            expose_headers?,
            allow_credentials,
            max_age?,
        ))
    }

    /// A comma-separated list whose every item passes `ok`, re-joined with `, `; `default`
    /// when absent; `None` (and an error) when invalid.
    fn token_list(
        &mut self,
        key: &str,
        accepted: &str,
        ok: fn(&str) -> bool,
        default: &str,
    ) -> Option<String> {
        let Some(value) = self.get(key) else {
            return Some(default.to_string());
        };
        let items: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if items.is_empty() || !items.iter().all(|item| ok(item)) {
            self.invalid(key, value, accepted);
            return None;
        }
        Some(items.join(", "))
    }

    /// `request-headers` / `response-headers`: one `Name: value` per line.
    fn header_set(&mut self, key: &str) -> HeaderSet {
        let Some(value) = self.get(key) else {
            return HeaderSet::default();
        };
        match parse_header_lines(value) {
            Ok(set) => set,
            Err((line, why)) => {
                self.invalid(
                    key,
                    value,
                    &format!("one `Name: value` header per line (line {line}: {why})"),
                );
                HeaderSet::default()
            }
        }
    }

    fn proxy_timeouts(&mut self) -> ProxyTimeouts {
        ProxyTimeouts {
            connect: self.timeout(
                own!("proxy-connect-timeout"),
                nginx!("proxy-connect-timeout"),
            ),
            read: self.timeout(own!("proxy-read-timeout"), nginx!("proxy-read-timeout")),
            send: self.timeout(own!("proxy-send-timeout"), nginx!("proxy-send-timeout")),
        }
    }

    /// Our key: a duration (`30s`, `500ms`) or bare seconds; the ingress-nginx alias: bare
    /// seconds only, as ingress-nginx reads it (an integer).
    fn timeout(&mut self, own: &'static str, alias: &'static str) -> Option<Duration> {
        let key = self.own_or(own, alias);
        let value = self.get(key)?;
        let seconds = || {
            (!value.is_empty() && value.len() <= 9 && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok().map(Duration::from_secs))
                .flatten()
        };
        let parsed = if key == own {
            seconds().or_else(|| parse_duration(value, DurationSyntax::Manifest).ok())
        } else {
            seconds()
        };
        match parsed.filter(|d| !d.is_zero()) {
            Some(d) => Some(d),
            None => {
                let accepted = if key == own {
                    OWN_SECONDS
                } else {
                    NGINX_SECONDS
                };
                self.invalid(key, value, accepted);
                None
            }
        }
    }
}

/// `*` (anywhere in the list: every origin), or the origins; `None` if any is malformed or
/// there is none.
fn parse_origins(value: &str) -> Option<AllowedOrigins> {
    let items: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    let mut any = false;
    for item in items {
        if item == "*" {
            any = true;
        } else {
            list.push(OriginPattern::parse(item)?);
        }
    }
    Some(if any {
        AllowedOrigins::Any
    } else {
        AllowedOrigins::List(list)
    })
}

/// A method name as ingress-nginx accepts it in `cors-allow-methods`: letters only.
fn is_method(item: &str) -> bool {
    item.bytes().all(|b| b.is_ascii_alphabetic())
}

/// A header name (letters, digits, `-`, `_`, as ingress-nginx accepts), or `*`.
fn is_header_name_or_star(item: &str) -> bool {
    item == "*"
        || item
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Header names a route may not set: hop-by-hop ones (they describe one connection, and the
/// proxy makes its own), the message framing, and `Host` (see `upstream-vhost`).
fn forbidden(name: &HeaderName) -> Option<&'static str> {
    if name == header::HOST {
        return Some("Host is not set this way (use upstream-vhost)");
    }
    let hop = name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::CONTENT_LENGTH
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection";
    hop.then_some("a hop-by-hop or framing header, which the proxy sets itself")
}

/// Parses `Name: value` lines (blank lines skipped). Error: the 1-based line number and why.
fn parse_header_lines(text: &str) -> Result<HeaderSet, (usize, String)> {
    let mut set = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err((number, format!("{:?} has no `:`", line.trim())));
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| (number, format!("{:?} is not a header name", name.trim())))?;
        if let Some(why) = forbidden(&name) {
            return Err((number, format!("{name}: {why}")));
        }
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| (number, format!("the value of {name} is not a header value")))?;
        set.push((name, value));
    }
    if set.is_empty() {
        return Err((1, "no header".to_string()));
    }
    Ok(HeaderSet(set))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{AnnotationError, OptionDefaults};
    use super::*;

    #[test]
    fn header_lines() {
        let set = parse_header_lines("X-A: 1\n\nx-b:  two words \n").unwrap();
        assert_eq!(set.lines(), vec!["x-a: 1", "x-b: two words"]);
        assert_eq!(parse_header_lines("X-A 1").unwrap_err().0, 1);
        assert_eq!(parse_header_lines("X-A: 1\nBad Name: 2").unwrap_err().0, 2);
        assert!(parse_header_lines("Host: x").is_err());
        assert!(parse_header_lines("Connection: close").is_err());
        assert!(parse_header_lines("").is_err());
    }

    fn parsed(pairs: &[(&str, &str)]) -> Result<super::super::Parsed, Vec<AnnotationError>> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        super::super::parse(Some(&map), "ns", &OptionDefaults::default())
    }

    #[test]
    fn timeouts_in_seconds_or_durations() {
        let t = |pairs: &[(&str, &str)]| parsed(pairs).unwrap().options.policy.timeouts;
        let nginx = t(&[
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "5"),
            ("nginx.ingress.kubernetes.io/proxy-connect-timeout", "2"),
        ]);
        assert_eq!(nginx.read, Some(Duration::from_secs(5)));
        assert_eq!(nginx.connect, Some(Duration::from_secs(2)));
        assert_eq!(nginx.send, None);
        let own = t(&[
            ("portcullis.io/proxy-send-timeout", "500ms"),
            ("portcullis.io/proxy-read-timeout", "7"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "not read"),
        ]);
        assert_eq!(own.send, Some(Duration::from_millis(500)));
        assert_eq!(own.read, Some(Duration::from_secs(7)));
        for (key, bad) in [
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "5s"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "0"),
            ("portcullis.io/proxy-read-timeout", "0s"),
            ("portcullis.io/proxy-send-timeout", "-1"),
        ] {
            let errors = parsed(&[(key, bad)]).unwrap_err();
            assert_eq!(errors[0].key(), key, "{bad}");
        }
    }

    #[test]
    fn cors_settings_without_enable_cors_are_warnings() {
        let p = parsed(&[("nginx.ingress.kubernetes.io/cors-allow-origin", "nonsense")]).unwrap();
        assert_eq!(p.options.policy.cors, None);
        assert_eq!(p.warnings.len(), 1);
        let on = parsed(&[("portcullis.io/enable-cors", "TRUE")]).unwrap();
        let cors = on.options.policy.cors.clone().expect("cors on");
        assert_eq!(cors.origins, AllowedOrigins::Any);
        assert_eq!(cors.max_age, cors::DEFAULT_MAX_AGE);
        assert!(cors.allow_credentials);
    }

    #[test]
    fn passthrough_hosts_ignore_them_with_warnings() {
        let p = parsed(&[
            ("portcullis.io/tls-mode", "passthrough"),
            ("nginx.ingress.kubernetes.io/enable-cors", "true"),
            ("portcullis.io/response-headers", "X-A: 1"),
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "3"),
        ])
        .unwrap();
        assert_eq!(*p.options.policy, RoutePolicy::default());
        assert_eq!(p.warnings.len(), 3, "{:?}", p.warnings);
    }

    #[test]
    fn origins() {
        assert_eq!(parse_origins("*"), Some(AllowedOrigins::Any));
        assert!(matches!(
            parse_origins("https://a.example, https://*.b.example:8443"),
            Some(AllowedOrigins::List(l)) if l.len() == 2
        ));
        assert_eq!(parse_origins("https://a.example, nope"), None);
        assert_eq!(parse_origins(" , "), None);
    }
}
