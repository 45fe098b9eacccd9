//! CORS as ingress-nginx's `enable-cors` does it (annotations.md, "Enable CORS"): a preflight
//! (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed origin is
//! answered here with `204` and the CORS headers, and never reaches the pod; every other
//! response to an allowed origin gets the same headers. The allowed origin is echoed back
//! (with `Vary: Origin`), or `*` when every origin is allowed; a request from another origin
//! gets no CORS header at all (and its preflight goes to the pod, as nginx lets it through).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use super::body::{ResponseBody, own_response};
use crate::table::cors::{AllowedOrigins, Cors};
use crate::table::policy::RoutePolicy;

/// Headers the proxy sets on the response to a request (CORS, then `response-headers`), each
/// replacing what the pod sent under that name.
pub(crate) type ExtraHeaders = Vec<(HeaderName, HeaderValue)>;

/// The `Access-Control-Allow-Origin` value for a request with `headers`, and whether it
/// echoes the request's origin (then the answer varies by `Origin`); `None` when the origin
/// is not allowed.
fn allowed_origin(cors: &Cors, headers: &HeaderMap) -> Option<(HeaderValue, bool)> {
    match &cors.origins {
        AllowedOrigins::Any => Some((HeaderValue::from_static("*"), false)),
        AllowedOrigins::List(list) => {
            let origin = headers.get(header::ORIGIN)?;
            let text = origin.to_str().ok()?;
            list.iter()
                .any(|pattern| pattern.matches(text))
                .then(|| (origin.clone(), true))
        }
    }
}

/// The CORS headers of an answer to an allowed origin: the origin, `Vary`, the fixed ones.
fn cors_headers(cors: &Cors, origin: HeaderValue, echoed: bool, out: &mut ExtraHeaders) {
    out.push((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin));
    if echoed {
        out.push((header::VARY, HeaderValue::from_static("Origin")));
    }
    out.extend(cors.fixed.iter().cloned());
}

/// The proxy's answer to a CORS preflight from an allowed origin, if the request is one.
pub(crate) fn preflight(
    policy: &RoutePolicy,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Response<ResponseBody>> {
    let cors = policy.cors.as_ref()?;
    if method != Method::OPTIONS
        || !headers.contains_key(header::ORIGIN)
        || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let (origin, echoed) = allowed_origin(cors, headers)?;
    let mut extra = Vec::new();
    cors_headers(cors, origin, echoed, &mut extra);
    let mut response = Response::new(own_response(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let out = response.headers_mut();
    for (name, value) in extra {
        out.insert(name, value);
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Some(response)
}

/// What the route adds to the response to a request with `headers` (CORS headers for an
/// allowed origin, then `response-headers`); `None` when nothing (the usual case: no cost).
pub(crate) fn extra_headers(policy: &RoutePolicy, headers: &HeaderMap) -> Option<ExtraHeaders> {
    if policy.cors.is_none() && policy.response_headers.is_empty() {
        return None;
    }
    let mut extra = Vec::new();
    if let Some(cors) = &policy.cors
        && let Some((origin, echoed)) = allowed_origin(cors, headers)
    {
        cors_headers(cors, origin, echoed, &mut extra);
    }
    extra.extend(policy.response_headers.0.iter().cloned());
    (!extra.is_empty()).then_some(extra)
}

/// Sets `extra` on a response's headers. `Vary` is added to (the pod's own `Vary` stays);
/// everything else replaces the header of that name.
pub(crate) fn apply(extra: ExtraHeaders, headers: &mut HeaderMap) {
    for (name, value) in extra {
        if name == header::VARY && headers.contains_key(header::VARY) {
            let already = headers
                .get_all(header::VARY)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("origin") || t.trim() == "*");
            if !already {
                headers.append(name, value);
            }
        } else {
            headers.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::cors::{self, OriginPattern};

    fn policy(origins: AllowedOrigins) -> RoutePolicy {
        RoutePolicy {
            cors: Some(Cors::new(
                origins,
                cors::DEFAULT_METHODS.into(),
                cors::DEFAULT_HEADERS.into(),
                String::new(),
                true,
                cors::DEFAULT_MAX_AGE,
            )),
            ..RoutePolicy::default()
        }
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn preflight_from_an_allowed_origin_is_answered() {
        let list = AllowedOrigins::List(vec![
            OriginPattern::parse("https://*.example.com").expect("pattern"),
        ]);
        let p = policy(list);
        let ok = request(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PUT"),
        ]);
        let answer = preflight(&p, &Method::OPTIONS, &ok).expect("answered");
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        let h = answer.headers();
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["vary"], "Origin");
        assert_eq!(h["access-control-max-age"], "1728000");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert!(preflight(&p, &Method::GET, &ok).is_none());
        let other = request(&[
            ("origin", "https://evil.test"),
            ("access-control-request-method", "PUT"),
        ]);
        assert!(preflight(&p, &Method::OPTIONS, &other).is_none());
        assert!(extra_headers(&p, &other).is_none());
        let star = policy(AllowedOrigins::Any);
        let extra = extra_headers(&star, &HeaderMap::new()).expect("headers");
        assert_eq!(extra[0].1, "*");
    }

    #[test]
    fn vary_is_added_to_not_replaced() {
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        apply(
            vec![(header::VARY, HeaderValue::from_static("Origin"))],
            &mut h,
        );
        assert_eq!(h.get_all(header::VARY).iter().count(), 2);
    }
}
