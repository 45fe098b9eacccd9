//! Per-Ingress upstream timeouts (ingress-nginx's `proxy-connect-timeout`,
//! `proxy-read-timeout`, `proxy-send-timeout`); each `None` falls back to the class value
//! (`IngressClassParams spec.timeouts`).

use std::time::Duration;

use serde::Serialize;

/// The upstream timeouts an Ingress sets for its routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ProxyTimeouts {
    /// Opening a connection to a pod (TCP, and TLS for re-encrypt); class: `timeouts.connect`.
    pub(crate) connect: Option<Duration>,
    /// From sending the request to the pod's response head, and between two reads of the
    /// response body; class: `timeouts.upstreamResponse` (head only).
    pub(crate) read: Option<Duration>,
    /// Between two writes of the request body to the pod (a stalled upload); class: none.
    pub(crate) send: Option<Duration>,
}

impl ProxyTimeouts {
    pub(crate) fn is_default(&self) -> bool {
        *self == ProxyTimeouts::default()
    }

    /// One line for `check`, or `None` when nothing is set.
    pub(crate) fn describe(&self) -> Option<String> {
        if self.is_default() {
            return None;
        }
        let parts: Vec<String> = [
            ("connect", self.connect),
            ("read", self.read),
            ("send", self.send),
        ]
        .into_iter()
        .filter_map(|(name, d)| d.map(|d| format!("{name} {d:?}")))
        .collect();
        Some(format!("timeouts: {}", parts.join(", ")))
    }
}
