//! Sticky sessions (`affinity: cookie`): which cookie pins a client to an endpoint, and how
//! it is written. The proxy side is `proxy::affinity`.
//!
//! Follows ingress-nginx's documented semantics ("Session Affinity" in its annotations
//! reference, and its "Sticky sessions" example): the cookie is `INGRESSCOOKIE` unless named,
//! its path is the matched location's path unless `session-cookie-path` says otherwise, it is
//! always `HttpOnly`, `Secure` on HTTPS requests or when `session-cookie-secure` asks.

use serde::Serialize;

/// `affinity-mode`: how sticky a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AffinityMode {
    /// The cookie holds a random session key mapped onto the endpoints by rendezvous hashing:
    /// when pods are added, a share of the sessions moves to them, rebalancing the load.
    #[default]
    Balanced,
    /// The cookie names its endpoint (a keyed hash of the address): the session stays on it
    /// for as long as it lives and is healthy, whatever scaling happens.
    Persistent,
}

impl AffinityMode {
    /// The annotation value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AffinityMode::Balanced => "balanced",
            AffinityMode::Persistent => "persistent",
        }
    }
}

/// `session-cookie-samesite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

impl SameSite {
    /// The attribute value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SameSite::None => "None",
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

/// Cookie affinity of one Ingress's routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Affinity {
    pub mode: AffinityMode,
    /// `session-cookie-name` (default `INGRESSCOOKIE`).
    pub cookie_name: String,
    /// `session-cookie-path`; `None`: the matched route's path (`/` for a default backend).
    pub path: Option<String>,
    /// `session-cookie-domain`.
    pub domain: Option<String>,
    /// `session-cookie-max-age`, seconds.
    pub max_age: Option<u64>,
    /// `session-cookie-expires`, seconds from the response: sent as an `Expires` date.
    pub expires: Option<u64>,
    /// `session-cookie-samesite`.
    pub same_site: Option<SameSite>,
    /// `session-cookie-secure`: `Secure` on plain-HTTP responses too (HTTPS ones always
    /// get it).
    pub secure: bool,
    /// `session-cookie-partitioned`: the `Partitioned` attribute (CHIPS).
    pub partitioned: bool,
    /// `session-cookie-change-on-failure`: when the cookie's endpoint failed this request and
    /// another one answered, point the cookie at that one; otherwise the cookie is kept and
    /// the next request tries its endpoint again.
    pub change_on_failure: bool,
    /// `affinity-canary-behavior` of a canary Ingress: `sticky` (true, the default) keeps
    /// clients served by the canary on it; `legacy` (false) gives the canary no affinity.
    pub canary_sticky: bool,
}

impl Default for Affinity {
    fn default() -> Self {
        Affinity {
            mode: AffinityMode::Balanced,
            cookie_name: DEFAULT_COOKIE.to_string(),
            path: None,
            domain: None,
            max_age: None,
            expires: None,
            same_site: None,
            secure: false,
            partitioned: false,
            change_on_failure: false,
            canary_sticky: true,
        }
    }
}

/// ingress-nginx's default session cookie name.
pub const DEFAULT_COOKIE: &str = "INGRESSCOOKIE";

impl Affinity {
    /// One line for `check` and the admin API.
    pub(crate) fn describe(&self) -> String {
        let mut line = format!(
            "affinity: cookie {} ({})",
            self.cookie_name,
            self.mode.as_str()
        );
        if let Some(path) = &self.path {
            line.push_str(&format!(" path={path}"));
        }
        if let Some(domain) = &self.domain {
            line.push_str(&format!(" domain={domain}"));
        }
        if let Some(age) = self.max_age {
            line.push_str(&format!(" max-age={age}s"));
        }
        if let Some(expires) = self.expires {
            line.push_str(&format!(" expires={expires}s"));
        }
        if let Some(s) = self.same_site {
            line.push_str(&format!(" samesite={}", s.as_str()));
        }
        if self.secure {
            line.push_str(" secure");
        }
        if self.partitioned {
            line.push_str(" partitioned");
        }
        if self.change_on_failure {
            line.push_str(" change-on-failure");
        }
        line
    }
}
