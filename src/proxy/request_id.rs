//! `X-Request-ID`: one identifier per HTTP request, sent to the pod and written in the access
//! log, so a request can be followed from the proxy's log into the application's.
//!
//! As ingress-nginx does by default (`generate-request-id: "true"`, its template's
//! `map $http_x_request_id $req_id`): a non-empty `X-Request-ID` from the client is passed on
//! as sent; otherwise a new one is made, 32 hexadecimal digits of 128 random bits (what
//! nginx's `$request_id` looks like).

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header's name, built at compile time: read on every request and written on every
/// forwarded one, it is never parsed or validated again.
pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static(X_REQUEST_ID_NAME);

/// [`X_REQUEST_ID`]'s spelling, for a head written without a header map.
pub(crate) const X_REQUEST_ID_NAME: &str = "x-request-id";

/// Where a request's ID came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The client's `X-Request-ID`, passed on as sent.
    Client,
    /// Made here by [`generate`]: hexadecimal digits, which the access log writes unscanned.
    Generated,
}

/// The request ID of a request with `headers`: the client's first `X-Request-ID` when it is
/// not empty (a clone of the received value: no copy), else [`generate`]d.
pub(crate) fn of(headers: &HeaderMap) -> (HeaderValue, Origin) {
    match headers.get(X_REQUEST_ID) {
        Some(sent) if !sent.is_empty() => (sent.clone(), Origin::Client),
        _ => (generate(), Origin::Generated),
    }
}

/// A new request ID: 32 lower-case hexadecimal digits from 128 random bits. `fastrand`'s
/// thread-local generator, not a cryptographic one: the ID names a request, it guards nothing,
/// and the hot path should not pay for a CSPRNG. Written digit by digit into a stack buffer:
/// the header value is the only allocation.
pub(crate) fn generate() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bits = fastrand::u128(..);
    let mut digits = [0u8; 32];
    for digit in digits.iter_mut().rev() {
        *digit = HEX[(bits & 0xf) as usize];
        bits >>= 4;
    }
    HeaderValue::from_bytes(&digits).expect("hexadecimal digits are a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let a = generate();
        let b = generate();
        for id in [&a, &b] {
            assert_eq!(id.len(), 32, "{id:?}");
            assert!(
                id.as_bytes()
                    .iter()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)),
                "{id:?}"
            );
        }
        assert_ne!(a, b);
    }

    #[test]
    fn a_client_id_is_kept_and_an_empty_one_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        headers.append(X_REQUEST_ID, HeaderValue::from_static("second"));
        assert_eq!(
            of(&headers),
            (HeaderValue::from_static("abc-123"), Origin::Client)
        );
        headers.insert(X_REQUEST_ID, HeaderValue::from_static(""));
        let (replaced, origin) = of(&headers);
        assert_eq!((replaced.len(), origin), (32, Origin::Generated));
        let (made, origin) = of(&HeaderMap::new());
        assert_eq!((made.len(), origin), (32, Origin::Generated));
    }
}
