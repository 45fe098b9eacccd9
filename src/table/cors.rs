//! The CORS settings of a route, as ingress-nginx's `enable-cors` family of annotations asks
//! for them (annotations.md, "Enable CORS"): which origins are allowed, and the fixed
//! `Access-Control-*` headers their responses carry. Validated when the annotations are read;
//! the proxy side is `crate::proxy::cors`.

use http::header::{HeaderName, HeaderValue};
use serde::Serialize;

/// ingress-nginx's default `cors-allow-methods`.
pub(crate) const DEFAULT_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
/// ingress-nginx's default `cors-allow-headers`.
pub(crate) const DEFAULT_HEADERS: &str = concat!(
    "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,",
    "Cache-Control,Content-Type,Authorization"
);
/// ingress-nginx's default `cors-max-age`, in seconds (20 days).
pub(crate) const DEFAULT_MAX_AGE: u64 = 1_728_000;

/// Which `Origin`s get CORS headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum AllowedOrigins {
    /// `*`: every request, answered `Access-Control-Allow-Origin: *`.
    Any,
    /// Only these; a match is echoed back, with `Vary: Origin`.
    List(Vec<OriginPattern>),
}

/// One allowed origin: `scheme://host[:port]`, where the host may start with `*.` (exactly
/// one label, as ingress-nginx's single-level wildcard). Stored lower-cased: origins are
/// compared case-insensitively, as nginx's `~*` does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct OriginPattern {
    /// `scheme://` for a wildcard (what comes before `*`), the whole origin otherwise.
    prefix: String,
    /// `.rest[:port]` after the `*` of a wildcard; `None` for an exact origin.
    wildcard_suffix: Option<String>,
}

impl OriginPattern {
    /// Parses one origin of `cors-allow-origin`; `None` when it is not `scheme://host[:port]`
    /// (with an optional leading `*.` on the host).
    pub(crate) fn parse(text: &str) -> Option<OriginPattern> {
        let lower = text.trim().to_ascii_lowercase();
        let (scheme, rest) = lower.split_once("://")?;
        let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !scheme_ok {
            return None;
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        if let Some(port) = port
            && (port.is_empty()
                || port.len() > 5
                || !port.bytes().all(|b| b.is_ascii_digit())
                || port.parse::<u32>().map_or(true, |p| p > 65535))
        {
            return None;
        }
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, host),
        };
        let labels_ok = !name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !labels_ok {
            return None;
        }
        Some(if wildcard {
            OriginPattern {
                prefix: format!("{scheme}://"),
                wildcard_suffix: Some(lower[scheme.len() + 4..].to_string()),
            }
        } else {
            OriginPattern {
                prefix: lower,
                wildcard_suffix: None,
            }
        })
    }

    /// Whether the request's `Origin` is this one (ASCII case-insensitive); a wildcard stands
    /// for exactly one DNS label (letters, digits, `-`).
    pub(crate) fn matches(&self, origin: &str) -> bool {
        let Some(suffix) = &self.wildcard_suffix else {
            return origin.eq_ignore_ascii_case(&self.prefix);
        };
        let (Some(head), Some(tail)) = (
            origin.get(..self.prefix.len()),
            origin
                .len()
                .checked_sub(suffix.len())
                .and_then(|at| origin.get(at..)),
        ) else {
            return false;
        };
        if origin.len() <= self.prefix.len() + suffix.len()
            || !head.eq_ignore_ascii_case(&self.prefix)
            || !tail.eq_ignore_ascii_case(suffix)
        {
            return false;
        }
        origin[self.prefix.len()..origin.len() - suffix.len()]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    }

    /// As written in the annotation (lower-cased).
    pub(crate) fn as_text(&self) -> String {
        match &self.wildcard_suffix {
            Some(suffix) => format!("{}*{suffix}", self.prefix),
            None => self.prefix.clone(),
        }
    }
}

/// The CORS settings of a route with `enable-cors: "true"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Cors {
    pub(crate) origins: AllowedOrigins,
    pub(crate) allow_methods: String,
    pub(crate) allow_headers: String,
    /// Empty: no `Access-Control-Expose-Headers`.
    pub(crate) expose_headers: String,
    pub(crate) allow_credentials: bool,
    pub(crate) max_age: u64,
    /// The `Access-Control-*` headers every CORS answer carries besides the origin, made once.
    #[serde(skip)]
    pub(crate) fixed: Vec<(HeaderName, HeaderValue)>,
}

impl Cors {
    /// Settings from validated values (each a valid header value: the annotation reader
    /// checked them).
    pub(crate) fn new(
        origins: AllowedOrigins,
        allow_methods: String,
        allow_headers: String,
        expose_headers: String,
        allow_credentials: bool,
        max_age: u64,
    ) -> Cors {
        let mut fixed = Vec::new();
        let mut add = |name: &'static str, value: &str| {
            if let Ok(value) = HeaderValue::from_str(value) {
                fixed.push((HeaderName::from_static(name), value));
            }
        };
        if allow_credentials {
            add("access-control-allow-credentials", "true");
        }
        add("access-control-allow-methods", &allow_methods);
        add("access-control-allow-headers", &allow_headers);
        if !expose_headers.is_empty() {
            add("access-control-expose-headers", &expose_headers);
        }
        add("access-control-max-age", &max_age.to_string());
        Cors {
            origins,
            allow_methods,
            allow_headers,
            expose_headers,
            allow_credentials,
            max_age,
            fixed,
        }
    }

    /// One line for `check`.
    pub(crate) fn describe(&self) -> String {
        let origins = match &self.origins {
            AllowedOrigins::Any => "*".to_string(),
            AllowedOrigins::List(list) => list
                .iter()
                .map(OriginPattern::as_text)
                .collect::<Vec<_>>()
                .join(", "),
        };
        format!(
            "cors: origins {origins}; methods {}; headers {}; credentials {}; max-age {}{}",
            self.allow_methods,
            self.allow_headers,
            self.allow_credentials,
            self.max_age,
            if self.expose_headers.is_empty() {
                String::new()
            } else {
                format!("; expose {}", self.expose_headers)
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard_origins() {
        let exact = OriginPattern::parse("https://App.example.com:8443").unwrap();
        assert!(exact.matches("https://app.example.com:8443"));
        assert!(!exact.matches("https://app.example.com"));
        let wild = OriginPattern::parse("https://*.example.com").unwrap();
        assert!(wild.matches("https://a.example.com"));
        assert!(wild.matches("https://A-1.Example.COM"));
        assert!(!wild.matches("https://example.com"));
        assert!(!wild.matches("https://a.b.example.com"));
        assert!(!wild.matches("http://a.example.com"));
        assert!(!wild.matches("https://a.example.com.evil.test"));
        assert!(!wild.matches("https://.example.com"));
        assert_eq!(wild.as_text(), "https://*.example.com");
        assert!(OriginPattern::parse("myapp://example.com").is_some());
        for bad in [
            "example.com",
            "https://",
            "https://exa mple.com",
            "https://a.example.com:99999",
            "https://a.example.com/path",
            "https://*.*.example.com",
            "https://a.*.example.com",
            "1http://x",
        ] {
            assert!(OriginPattern::parse(bad).is_none(), "{bad}");
        }
    }
}
