//! GRPCRoute → the HTTPRoute rules it amounts to: gRPC is HTTP/2 with the method in the path
//! (`/<service>/<method>`), so a method match is a path match, and its header matches and
//! filters are HTTPRoute's. The backends are spoken to in gRPC (HTTP/2; re-encrypted when a
//! BackendTLSPolicy names them).

use std::borrow::Cow;

use super::http_route::HttpLike;
use crate::gateway_api::{
    GRPCRoute, GrpcMethodMatch, HttpPathMatch, HttpRouteMatch, HttpRouteRule,
};

/// The route's rules as HTTPRoute rules, or the field and reason of a match that cannot be
/// one.
pub(super) fn as_http(route: &GRPCRoute) -> Result<HttpLike<'_>, (String, String)> {
    let mut rules = Vec::with_capacity(route.spec.rules.len());
    for (i, rule) in route.spec.rules.iter().enumerate() {
        let matches = match &rule.matches {
            None => None,
            Some(matches) => Some(
                matches
                    .iter()
                    .enumerate()
                    .map(|(j, m)| {
                        let path = m
                            .method
                            .as_ref()
                            .map(method_path)
                            .transpose()
                            .map_err(|e| (format!("spec.rules[{i}].matches[{j}].method"), e))?;
                        Ok(HttpRouteMatch {
                            path,
                            headers: m.headers.clone(),
                            query_params: None,
                            method: None,
                        })
                    })
                    .collect::<Result<Vec<_>, (String, String)>>()?,
            ),
        };
        rules.push(HttpRouteRule {
            name: rule.name.clone(),
            matches,
            filters: rule.filters.clone(),
            backend_refs: rule.backend_refs.clone(),
            timeouts: None,
        });
    }
    Ok(HttpLike {
        kind: "GRPCRoute",
        meta: &route.metadata,
        rules: Cow::Owned(rules),
        grpc: true,
    })
}

/// A gRPC method match as a path match (GRPCRoute's `GRPCMethodMatch`): service and method
/// → Exact `/service/method`; service only → every method of it; method only → that method
/// of any service. `RegularExpression` matches each part as a whole.
fn method_path(m: &GrpcMethodMatch) -> Result<HttpPathMatch, String> {
    let service = m.service.as_deref().filter(|s| !s.is_empty());
    let method = m.method.as_deref().filter(|s| !s.is_empty());
    let path = |kind: &str, value: String| HttpPathMatch {
        kind: Some(kind.to_string()),
        value: Some(value),
    };
    match (m.kind.as_deref().unwrap_or("Exact"), service, method) {
        (_, None, None) => Err("a method match needs a service or a method".to_string()),
        ("Exact", s, m) if [s, m].iter().flatten().any(|p| p.contains('/')) => {
            Err("a gRPC service or method name has no /".to_string())
        }
        ("Exact", Some(s), Some(m)) => Ok(path("Exact", format!("/{s}/{m}"))),
        ("Exact", Some(s), None) => Ok(path("PathPrefix", format!("/{s}"))),
        ("Exact", None, Some(m)) => Ok(path(
            "RegularExpression",
            format!("/[^/]+/{}", regex::escape(m)),
        )),
        ("RegularExpression", s, m) => Ok(path(
            "RegularExpression",
            format!(
                "/(?:{})/(?:{})$",
                s.unwrap_or("[^/]+"),
                m.unwrap_or("[^/]+")
            ),
        )),
        (other, _, _) => Err(format!("method match type {other:?} is not supported")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_of(kind: &str, service: Option<&str>, method: Option<&str>) -> (String, String) {
        let p = method_path(&GrpcMethodMatch {
            kind: Some(kind.into()),
            service: service.map(Into::into),
            method: method.map(Into::into),
        })
        .unwrap();
        (p.kind.unwrap(), p.value.unwrap())
    }

    #[test]
    fn method_matches_become_paths() {
        assert_eq!(
            path_of("Exact", Some("pkg.Echo"), Some("Say")),
            ("Exact".into(), "/pkg.Echo/Say".into())
        );
        assert_eq!(
            path_of("Exact", Some("pkg.Echo"), None),
            ("PathPrefix".into(), "/pkg.Echo".into())
        );
        assert_eq!(
            path_of("Exact", None, Some("Say")),
            ("RegularExpression".into(), "/[^/]+/Say".into())
        );
        assert!(method_path(&GrpcMethodMatch::default()).is_err());
    }
}
