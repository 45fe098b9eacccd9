//! Headers a route sets: `portcullis.io/request-headers` on the request sent to the pod,
//! `portcullis.io/response-headers` on the response sent to the client. Each entry replaces
//! any header of its name. Validated when the annotations are read (names and values as
//! `http` takes them; no hop-by-hop names, no `Host`).

use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Serialize, Serializer};

/// Headers set on a message, in the order written; empty when the Ingress sets none.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HeaderSet(pub(crate) Vec<(HeaderName, HeaderValue)>);

impl HeaderSet {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets every entry on `headers`, replacing what was there under that name.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// `Name: value` lines (values that are not visible ASCII shown escaped).
    pub(crate) fn lines(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|(name, value)| format!("{name}: {}", String::from_utf8_lossy(value.as_bytes())))
            .collect()
    }
}

impl Serialize for HeaderSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.lines())
    }
}

/// Gateway API header modifiers' `add` and `remove` (their `set` is a [`HeaderSet`]): on the
/// request sent to the pod and on the response sent to the client.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HeaderEdits {
    /// Appended: a header of that name already there stays, with this value added after it.
    pub(crate) request_add: Vec<(HeaderName, HeaderValue)>,
    pub(crate) request_remove: Vec<HeaderName>,
    pub(crate) response_add: Vec<(HeaderName, HeaderValue)>,
    pub(crate) response_remove: Vec<HeaderName>,
}

impl HeaderEdits {
    pub(crate) fn is_empty(&self) -> bool {
        self.request_add.is_empty()
            && self.request_remove.is_empty()
            && self.response_add.is_empty()
            && self.response_remove.is_empty()
    }

    pub(crate) fn apply_to_request(&self, headers: &mut HeaderMap) {
        edit(headers, &self.request_add, &self.request_remove);
    }

    pub(crate) fn apply_to_response(&self, headers: &mut HeaderMap) {
        edit(headers, &self.response_add, &self.response_remove);
    }

    /// Lines for `check` and the admin API.
    pub(crate) fn lines(&self) -> Vec<String> {
        let show = |(name, value): &(HeaderName, HeaderValue)| {
            format!("{name}: {}", String::from_utf8_lossy(value.as_bytes()))
        };
        let mut lines = Vec::new();
        lines.extend(
            self.request_add
                .iter()
                .map(|h| format!("request add {}", show(h))),
        );
        lines.extend(
            self.request_remove
                .iter()
                .map(|n| format!("request remove {n}")),
        );
        lines.extend(
            self.response_add
                .iter()
                .map(|h| format!("response add {}", show(h))),
        );
        lines.extend(
            self.response_remove
                .iter()
                .map(|n| format!("response remove {n}")),
        );
        lines
    }
}

/// Gateway API's `add` appends to a header of that name as one comma-separated value
/// (`my-header: foo` plus `add: bar` gives `my-header: foo,bar`).
fn edit(headers: &mut HeaderMap, add: &[(HeaderName, HeaderValue)], remove: &[HeaderName]) {
    for (name, value) in add {
        let joined = match headers.get(name) {
            Some(old) => {
                let mut bytes = old.as_bytes().to_vec();
                bytes.push(b',');
                bytes.extend_from_slice(value.as_bytes());
                HeaderValue::from_bytes(&bytes).ok()
            }
            None => None,
        };
        headers.insert(name.clone(), joined.unwrap_or_else(|| value.clone()));
    }
    for name in remove {
        headers.remove(name);
    }
}

impl Serialize for HeaderEdits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.lines())
    }
}
