//! Hop-by-hop hygiene (RFC 9110 §7.6.1): which fields of a message belong to one connection
//! and go before it is forwarded — the seven hop-by-hop names and every field a `Connection`
//! value names (never `Host`) — read in one pass over the fields ([`HopFields`]), which also
//! answers what the request must know before they go: whether it is a websocket upgrade, and
//! whether `TE` lists `trailers` (gRPC).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The hop-by-hop fields (RFC 9110 §7.6.1), counting `Proxy-Connection`. `Proxy-Authorization`
/// is end-to-end for us (a pod may use it) and is kept. Bit `i` of [`HopFields::present`] is
/// `HOP_BY_HOP[i]`. A `static`, not a `const`: names hold `Bytes`, which has a destructor, so
/// a `const` array would be built and dropped on every use.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];
const CONNECTION: usize = 0;
const TE: usize = 1;
const UPGRADE: usize = 4;

/// Which of [`HOP_BY_HOP`] a field name is. Every name is asked, so the answer comes from its
/// length first: most names are passed over on it, the others take one comparison.
fn hop_index(name: &HeaderName) -> Option<usize> {
    let name = name.as_str().as_bytes();
    let (index, spelled): (usize, &[u8]) = match (name.len(), name.first()) {
        (2, _) => (TE, b"te"),
        (7, Some(b't')) => (2, b"trailer"),
        (7, _) => (UPGRADE, b"upgrade"),
        (10, Some(b'c')) => (CONNECTION, b"connection"),
        (10, _) => (5, b"keep-alive"),
        (16, _) => (6, b"proxy-connection"),
        (17, _) => (3, b"transfer-encoding"),
        _ => return None,
    };
    (name == spelled).then_some(index)
}

/// Whether `name` is one of the hop-by-hop fields (for a response read field by field, as
/// `upstream_h1` reads one, which drops them as it goes).
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_index(name).is_some()
}

/// What one pass over a message's fields finds of the hop-by-hop ones: which are present, the
/// `Connection` values that name other fields, and what the websocket upgrade and gRPC must
/// read before those fields go. The one pass replaces a lookup per question (each a hash of
/// the name): a request usually carries no hop-by-hop field, a pod's response one
/// `Connection: keep-alive`, and then nothing is looked up or parsed.
#[derive(Default)]
pub(super) struct HopFields {
    /// Bit `i`: `HOP_BY_HOP[i]` is present.
    present: u8,
    /// The `Connection` values naming a field that is neither hop-by-hop nor `Host`.
    named: Vec<HeaderValue>,
    /// A `Connection` token is `upgrade`.
    connection_upgrade: bool,
    /// The first `Upgrade` value.
    upgrade: Option<HeaderValue>,
    /// `TE` lists `trailers`.
    te_trailers: bool,
}

impl HopFields {
    /// Reads each field of `headers` once (each value of a repeated one).
    pub(super) fn scan(headers: &HeaderMap) -> Self {
        let mut found = HopFields::default();
        for (name, value) in headers {
            let Some(i) = hop_index(name) else {
                continue;
            };
            found.present |= 1 << i;
            match i {
                CONNECTION => found.connection(value),
                TE => found.te_trailers |= lists_trailers(value),
                UPGRADE if found.upgrade.is_none() => found.upgrade = Some(value.clone()),
                _ => {}
            }
        }
        found
    }

    /// Notes what one `Connection` value asks for. A value that is not visible ASCII names
    /// nothing (as before this pass: such a value was never parsed).
    fn connection(&mut self, value: &HeaderValue) {
        // The usual value, spelled out: it names no other field.
        if value.as_bytes().eq_ignore_ascii_case(b"keep-alive") {
            return;
        }
        let Ok(tokens) = value.to_str() else {
            return;
        };
        let mut names_others = false;
        for token in tokens.split(',').map(str::trim) {
            if token.eq_ignore_ascii_case("upgrade") {
                self.connection_upgrade = true;
            } else if names_a_field_to_remove(token) {
                names_others = true;
            }
        }
        if names_others {
            self.named.push(value.clone());
        }
    }

    /// The `Upgrade` value of a websocket upgrade request (`Connection: upgrade` and
    /// `Upgrade: websocket`), if it is one.
    pub(super) fn websocket_upgrade(&self) -> Option<HeaderValue> {
        let upgrade = self.upgrade.as_ref().filter(|_| self.connection_upgrade)?;
        let websocket = upgrade
            .to_str()
            .ok()?
            .split(',')
            .any(|p| p.trim().to_ascii_lowercase().starts_with("websocket"));
        websocket.then(|| upgrade.clone())
    }

    /// Whether `TE` lists `trailers` (gRPC needs it at an HTTP/2 upstream).
    pub(super) fn te_trailers(&self) -> bool {
        self.te_trailers
    }

    /// Removes the hop-by-hop fields found and every field a `Connection` value names (never
    /// `Host`).
    pub(super) fn strip(&self, headers: &mut HeaderMap) {
        if self.present == 0 {
            return;
        }
        for value in &self.named {
            remove_named(headers, value);
        }
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            if self.present & (1 << i) != 0 {
                headers.remove(name);
            }
        }
    }
}

/// Whether one of the client's `TE` values lists `trailers` (gRPC needs it said again to an
/// HTTP/2 upstream, `grpc::to_http2`).
fn lists_trailers(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',').any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
    })
}

/// Whether a `Connection` token names a field that goes because it is named: not a
/// hop-by-hop one (removed anyway) and never `Host`.
fn names_a_field_to_remove(token: &str) -> bool {
    let hop_by_hop = HOP_BY_HOP
        .iter()
        .any(|h| h.as_str().eq_ignore_ascii_case(token));
    !hop_by_hop && !token.eq_ignore_ascii_case(header::HOST.as_str())
}

/// Removes the hop-by-hop headers and every header the `Connection` header names (never
/// `Host`): for responses and error-page requests. A forwarded request goes through
/// [`HopFields`] itself, which also answers its other questions (`forward`).
pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    HopFields::scan(headers).strip(headers);
}

/// Removes the headers a `Connection` value names, except `Host`. A `&str` key is parsed on
/// the stack: no `HeaderName` is built (and allocated, for a non-standard name) per token.
pub(super) fn remove_named(headers: &mut HeaderMap, connection: &HeaderValue) {
    let Ok(tokens) = connection.to_str() else {
        return;
    };
    for token in tokens.split(',').map(str::trim) {
        if names_a_field_to_remove(token) {
            headers.remove(token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn te_trailers_is_found_among_others() {
        assert!(lists_trailers(&HeaderValue::from_static(
            "gzip, trailers;q=1"
        )));
        assert!(lists_trailers(&HeaderValue::from_static("TRAILERS")));
        assert!(!lists_trailers(&HeaderValue::from_static("gzip")));
        assert!(!lists_trailers(&HeaderValue::from_static("gzip;trailers")));
    }

    #[test]
    fn connection_named_headers_are_stripped_but_never_host() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("x-secret, host, keep-alive"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        strip_hop_by_hop(&mut h);
        assert!(h.contains_key(header::HOST));
        assert!(h.contains_key("proxy-authorization"));
        assert!(!h.contains_key("x-secret") && !h.contains_key("keep-alive"));
        assert!(!h.contains_key(header::CONNECTION));
    }

    #[test]
    fn every_connection_field_is_honoured_whatever_the_case() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("a"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("X-One , HOST, Keep-Alive"),
        );
        h.append(
            header::CONNECTION,
            HeaderValue::from_static("x-two,,bad name"),
        );
        for name in [
            "x-one",
            "x-two",
            "x-kept",
            "te",
            "trailer",
            "transfer-encoding",
            "keep-alive",
            "proxy-connection",
        ] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["host", "x-kept"]);

        // One field, the usual shape of a pod's response.
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["content-length"]);
    }

    #[test]
    fn each_hop_by_hop_name_is_known_by_its_length_and_spelling() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(name), Some(i), "{name}");
        }
        // Names of the same lengths and first letters that are end to end.
        for name in [
            "tk",
            "trailed",
            "upgrads",
            "connectioz",
            "set-cookie",
            "content-language",
            "transfer-encodinx",
            "host",
        ] {
            assert_eq!(hop_index(&HeaderName::from_static(name)), None, "{name}");
        }
    }

    /// RFC 9110 §7.6.1 read plainly, one question at a time, as the code read it before
    /// [`HopFields`]: the oracle the one pass is held to.
    mod plain {
        use super::*;

        /// The hop-by-hop names, spelled out (the test's own list, not the code's).
        const HOP: &[&str] = NAMES.split_at(7).0;

        fn tokens(headers: &HeaderMap, name: HeaderName) -> Vec<String> {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(|t| t.trim().to_string())
                .collect()
        }

        pub(super) fn strip(headers: &mut HeaderMap) {
            for token in tokens(headers, header::CONNECTION) {
                let hop = HOP.iter().any(|h| h.eq_ignore_ascii_case(&token));
                if !hop && !token.eq_ignore_ascii_case("host") {
                    headers.remove(token.as_str());
                }
            }
            for name in HOP {
                headers.remove(*name);
            }
        }

        pub(super) fn websocket_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
            let asked = tokens(headers, header::CONNECTION)
                .iter()
                .any(|t| t.eq_ignore_ascii_case("upgrade"));
            let upgrade = headers.get(header::UPGRADE)?;
            let websocket = upgrade
                .to_str()
                .ok()?
                .split(',')
                .any(|p| p.trim().to_ascii_lowercase().starts_with("websocket"));
            (asked && websocket).then(|| upgrade.clone())
        }

        pub(super) fn te_trailers(headers: &HeaderMap) -> bool {
            tokens(headers, header::TE).iter().any(|t| {
                t.split(';')
                    .next()
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
            })
        }
    }

    /// Field names a message may carry: the seven hop-by-hop ones first, then `Host`, fields a
    /// `Connection` value may name, and others.
    const NAMES: [&str; 12] = [
        "connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "keep-alive",
        "proxy-connection",
        "host",
        "x-secret",
        "close",
        "content-length",
        "x-kept",
    ];
    /// Values, among them `Connection` and `Upgrade` and `TE` spellings and a non-ASCII one.
    const VALUES: [&str; 12] = [
        "keep-alive",
        "Keep-Alive",
        "close",
        "Upgrade",
        "upgrade, keep-alive",
        "x-secret, HOST",
        "X-Kept,,bad name",
        "websocket",
        "WebSocket/13, h2c",
        "trailers;q=1, gzip",
        "close, x-secret",
        "caf\u{e9}",
    ];

    proptest::proptest! {
        #[test]
        fn the_one_pass_answers_as_the_plain_rule(
            fields in proptest::collection::vec((0..NAMES.len(), 0..VALUES.len()), 0..9),
        ) {
            let mut headers = HeaderMap::new();
            for (n, v) in fields {
                let value = HeaderValue::from_bytes(VALUES[v].as_bytes())
                    .unwrap_or_else(|_| HeaderValue::from_static("x"));
                headers.append(NAMES[n], value);
            }
            let found = HopFields::scan(&headers);
            proptest::prop_assert_eq!(found.websocket_upgrade(), plain::websocket_upgrade(&headers));
            proptest::prop_assert_eq!(found.te_trailers, plain::te_trailers(&headers));
            let (mut ours, mut oracle) = (headers.clone(), headers);
            found.strip(&mut ours);
            plain::strip(&mut oracle);
            proptest::prop_assert_eq!(ours, oracle);
        }
    }
}
