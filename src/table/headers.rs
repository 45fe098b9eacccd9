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
