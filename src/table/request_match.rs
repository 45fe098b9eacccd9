//! What a route asks of a request beyond its path: an HTTP method, headers and query
//! parameters (Gateway API `HTTPRouteMatch`). Ingress routes have none; a route with
//! conditions matches only a request that meets every one of them.

use http::Method;
use http::header::{HeaderMap, HeaderName};
use serde::{Serialize, Serializer};

/// How a header or query parameter value is compared.
#[derive(Clone, Debug)]
pub(crate) enum ValueMatch {
    /// Byte for byte (Gateway API `Exact`).
    Exact(String),
    /// A regular expression that must match the whole value (`RegularExpression`, an
    /// implementation-specific feature: ours is RE2 syntax, anchored at both ends).
    Regex(regex::Regex),
}

impl ValueMatch {
    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatch::Exact(want) => want == value,
            ValueMatch::Regex(regex) => regex.is_match(value),
        }
    }

    fn describe(&self) -> String {
        match self {
            ValueMatch::Exact(want) => format!("= {want}"),
            ValueMatch::Regex(regex) => format!("~ {}", regex.as_str()),
        }
    }

    /// A value regex that must match the whole value.
    pub(crate) fn regex(pattern: &str) -> Result<ValueMatch, regex::Error> {
        regex::Regex::new(&format!("^(?:{pattern})$")).map(ValueMatch::Regex)
    }
}

/// Every condition of one match; all must hold.
#[derive(Clone, Debug, Default)]
pub struct RequestConditions {
    pub(crate) method: Option<Method>,
    /// Header names compare case-insensitively (they are lower-cased `HeaderName`s); with
    /// several values of one name, the first is compared (Gateway API leaves repeated headers
    /// to the implementation).
    pub(crate) headers: Vec<(HeaderName, ValueMatch)>,
    /// Query parameter names compare exactly; the first occurrence counts (as the spec
    /// advises).
    pub(crate) query: Vec<(String, ValueMatch)>,
}

/// The parts of a request that conditions read.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// It came in on the TLS port.
    pub tls: bool,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
}

impl RequestConditions {
    pub(crate) fn is_empty(&self) -> bool {
        self.method.is_none() && self.headers.is_empty() && self.query.is_empty()
    }

    pub(crate) fn matches(&self, request: &RequestView<'_>) -> bool {
        if self.method.as_ref().is_some_and(|m| m != request.method) {
            return false;
        }
        let headers_hold = self.headers.iter().all(|(name, want)| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| want.matches(v))
        });
        headers_hold
            && self.query.iter().all(|(name, want)| {
                query_value(request.query, name).is_some_and(|v| want.matches(&v))
            })
    }

    /// Gateway API's precedence after the path: a method match, then more header matches,
    /// then more query parameter matches. Larger is more specific.
    pub(crate) fn precedence(&self) -> (bool, usize, usize) {
        (self.method.is_some(), self.headers.len(), self.query.len())
    }

    /// One line for `check` and the admin API, e.g. `GET, header x-env = canary`.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(method) = &self.method {
            parts.push(method.to_string());
        }
        for (name, want) in &self.headers {
            parts.push(format!("header {name} {}", want.describe()));
        }
        for (name, want) in &self.query {
            parts.push(format!("query {name} {}", want.describe()));
        }
        parts.join(", ")
    }
}

/// The first value of query parameter `name`, percent-decoded (`+` is a space, as in forms).
fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key) == name).then(|| decode(value))
        })
        .next()
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// Compared, hashed and serialized by what they say: two compilations of one rule are one rule.
impl PartialEq for RequestConditions {
    fn eq(&self, other: &Self) -> bool {
        self.describe() == other.describe()
    }
}

impl Eq for RequestConditions {}

impl std::hash::Hash for RequestConditions {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.describe().hash(state);
    }
}

impl Serialize for RequestConditions {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view<'a>(
        method: &'a Method,
        headers: &'a HeaderMap,
        query: Option<&'a str>,
    ) -> RequestView<'a> {
        RequestView {
            tls: false,
            method,
            headers,
            query,
        }
    }

    #[test]
    fn every_condition_must_hold() {
        let conditions = RequestConditions {
            method: Some(Method::POST),
            headers: vec![(
                HeaderName::from_static("version"),
                ValueMatch::Exact("two".into()),
            )],
            query: vec![("animal".into(), ValueMatch::regex("wh.*").unwrap())],
        };
        let mut headers = HeaderMap::new();
        headers.insert("Version", "two".parse().unwrap());
        assert!(conditions.matches(&view(&Method::POST, &headers, Some("animal=whale&x=1"))));
        assert!(!conditions.matches(&view(&Method::GET, &headers, Some("animal=whale"))));
        assert!(!conditions.matches(&view(&Method::POST, &headers, Some("animal=dolphin"))));
        assert!(!conditions.matches(&view(&Method::POST, &headers, None)));
        // A regex matches the whole value, not a part of it.
        assert!(!conditions.matches(&view(&Method::POST, &headers, Some("animal=a-whale"))));
        headers.insert("version", "one".parse().unwrap());
        assert!(!conditions.matches(&view(&Method::POST, &headers, Some("animal=whale"))));
    }

    #[test]
    fn query_values_are_decoded_and_the_first_occurrence_counts() {
        assert_eq!(
            query_value(Some("a=1&b=x%20y&b=z"), "b").as_deref(),
            Some("x y")
        );
        assert_eq!(query_value(Some("a+b=c+d"), "a b").as_deref(), Some("c d"));
        assert_eq!(query_value(Some("flag"), "flag").as_deref(), Some(""));
        assert_eq!(query_value(None, "a"), None);
    }
}
