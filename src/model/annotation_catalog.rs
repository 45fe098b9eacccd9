//! The one table of every annotation key under the prefixes Portcullis answers for, and what
//! Portcullis does with each: **implemented** (our own `portcullis.io/` keys), **alias** (an
//! ingress-nginx or HAProxy key read as one of ours, by [`crate::model::annotations`]), or
//! **unsupported**, with the action and a one-line why.
//!
//! "No silent drop, ever": an annotation the user wrote is either honoured or reported.
//!
//! ## The rule for unsupported annotations
//!
//! **Refuse** (the Ingress is not served at all) when ignoring the annotation would change
//! - who may reach the service: authentication of any kind (`auth-*`, OAuth), client
//!   certificates (`auth-tls-*`), source-range allow/deny lists, `satisfy`, rate and
//!   connection limits (`limit-*`, `rate-limit-*`), request body limits;
//! - what the client receives: redirects, status codes and custom error pages, response
//!   headers (CORS, HSTS, custom headers), cookies;
//! - which backend or path gets the request: rewrites, regular-expression or other path
//!   matching, canary and blue-green splits, session affinity and consistent hashing,
//!   default backends, mirroring, server aliases, the protocol spoken to the backend;
//! - anything security-relevant: configuration snippets of any kind, ModSecurity/WAF, TLS
//!   ciphers and protocol versions, backend certificate verification.
//!
//! **Warn** (served, a warning diagnostic) when the annotation only tunes buffering, logging,
//! tracing, timeouts, keep-alive, health checks, connection slots or similar performance
//! knobs, or is a ConfigMap-only (global) key that the original controller ignores on an
//! Ingress too (except snippets, which are always refused).
//!
//! A refused Ingress is not served, and **not** replaced by its last good version: the last
//! good version lacks the annotation just added (an allow-list, say), so serving it would
//! ignore exactly what was asked for. An IngressClassParams may relax refusals with
//! `unsupportedAnnotations: Warn` (served, warning) or `Ignore` (served, no diagnostic).
//!
//! Keys under these prefixes that are in no table: under `portcullis.io/` an **error** (the
//! Ingress is refused, whatever the class says: a typo in our own key would otherwise
//! silently fall back to a default), with "did you mean" when a key is close; under the
//! nginx/HAProxy prefixes a warning ("unknown annotation, ignored").
//!
//! `ingress.kubernetes.io/` is shared: HAProxy Ingress (haproxytech) reads it like
//! `haproxy.org/`, jcmoraisjr's HAProxy Ingress as its legacy prefix, and ingress-nginx before
//! 0.9 used it too. A key there is judged by every table that knows its name; the strictest
//! verdict wins. Aliases are read only under the prefix [`crate::model::annotations`] reads;
//! the same name under another prefix is unsupported (with the key to use instead).
//!
//! `docs/migrating.md` is generated from this table (`render_markdown`, test-only); a unit test fails
//! when the checked-in file differs.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use crate::crd::UnsupportedAnnotations;
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};

// === the vocabulary ===

/// Whose annotations a table lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Family {
    /// Our own keys, `portcullis.io/`.
    Portcullis,
    /// kubernetes/ingress-nginx, `nginx.ingress.kubernetes.io/`.
    Nginx,
    /// haproxytech/kubernetes-ingress, `haproxy.org/` (also `haproxy.com/` and
    /// `ingress.kubernetes.io/`).
    HaproxyTech,
    /// jcmoraisjr/haproxy-ingress, `haproxy-ingress.github.io/` (also `ingress.kubernetes.io/`).
    HaproxyIngress,
}

impl Family {
    /// Every family, in the order docs/migrating.md lists them.
    #[cfg(test)]
    pub(crate) const ALL: [Family; 4] = [
        Family::Portcullis,
        Family::Nginx,
        Family::HaproxyTech,
        Family::HaproxyIngress,
    ];

    /// The prefix whose keys [`crate::model::annotations`] reads (for aliases).
    fn canonical_prefix(self) -> &'static str {
        match self {
            Family::Portcullis => "portcullis.io",
            Family::Nginx => "nginx.ingress.kubernetes.io",
            Family::HaproxyTech => "haproxy.org",
            Family::HaproxyIngress => "haproxy-ingress.github.io",
        }
    }

    /// The full key of `name` under this family's canonical prefix.
    fn key(self, name: &str) -> String {
        format!("{}/{name}", self.canonical_prefix())
    }

    /// Human name, for messages and headings.
    fn title(self) -> &'static str {
        match self {
            Family::Portcullis => "Portcullis",
            Family::Nginx => "ingress-nginx",
            Family::HaproxyTech => "HAProxy Kubernetes Ingress (haproxytech)",
            Family::HaproxyIngress => "HAProxy Ingress (jcmoraisjr)",
        }
    }

    /// Where the original controller documents its annotations.
    #[cfg(test)]
    fn source(self) -> &'static str {
        match self {
            Family::Portcullis => "README.md#annotations",
            Family::Nginx => {
                "https://github.com/kubernetes/ingress-nginx/blob/main/docs/user-guide/nginx-configuration/annotations.md"
            }
            Family::HaproxyTech => {
                "https://github.com/haproxytech/kubernetes-ingress/blob/master/documentation/annotations.md"
            }
            Family::HaproxyIngress => {
                "https://github.com/jcmoraisjr/haproxy-ingress/blob/master/docs/content/en/docs/configuration/keys.md"
            }
        }
    }
}

/// The families that read keys under `prefix` (the part before `/`).
fn families_of(prefix: &str) -> &'static [Family] {
    match prefix {
        "portcullis.io" => &[Family::Portcullis],
        "nginx.ingress.kubernetes.io" => &[Family::Nginx],
        "haproxy.org" | "haproxy.com" => &[Family::HaproxyTech],
        "haproxy-ingress.github.io" => &[Family::HaproxyIngress],
        "ingress.kubernetes.io" => &[Family::HaproxyTech, Family::HaproxyIngress, Family::Nginx],
        _ => &[],
    }
}

/// What Portcullis does about an unsupported annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Action {
    /// Ignoring it is harmless: served, with a warning.
    Warn,
    /// Ignoring it would change who gets in, what they get, or where it goes: not served.
    Refuse,
}

/// The status of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// One of our keys; what it does.
    Implemented(&'static str),
    /// Read as one of ours (under the family's canonical prefix only). `unread`: the action
    /// when the same name appears under a prefix we do not read it from.
    Alias { of: &'static str, unread: Action },
    /// Not supported: what happens to an Ingress carrying it, and why.
    Unsupported { action: Action, why: &'static str },
}

/// One key of one family.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    pub(crate) family: Family,
    /// Without the prefix.
    pub(crate) name: &'static str,
    pub(crate) status: Status,
}

// === the table ===

use Action::{Refuse, Warn};
use Family::{HaproxyIngress as J, HaproxyTech as H, Nginx as N, Portcullis as P};

const fn own(name: &'static str, what: &'static str) -> Entry {
    Entry {
        family: P,
        name,
        status: Status::Implemented(what),
    }
}

const fn alias(family: Family, name: &'static str, of: &'static str, unread: Action) -> Entry {
    Entry {
        family,
        name,
        status: Status::Alias { of, unread },
    }
}

const fn refuse(family: Family, name: &'static str, why: &'static str) -> Entry {
    Entry {
        family,
        name,
        status: Status::Unsupported {
            action: Refuse,
            why,
        },
    }
}

const fn warn(family: Family, name: &'static str, why: &'static str) -> Entry {
    Entry {
        family,
        name,
        status: Status::Unsupported { action: Warn, why },
    }
}

// Reasons shared by several keys.
const AFFINITY: &str =
    "session affinity decides which endpoint gets the request; Portcullis balances every request";
const AUTH_BASIC: &str = "HTTP basic/digest authentication: without it anyone reaches the service";
const AUTH_EXTERNAL: &str =
    "external authentication: without it anyone reaches the service unauthenticated";
const AUTH_TLS: &str = "client-certificate authentication: without it clients need no certificate";
const BACKEND_TLS: &str =
    "TLS towards the backend (certificate, verification, ciphers): security-relevant";
const BLUE_GREEN: &str = "blue-green split decides which backend gets the request";
const BUFFERING: &str = "buffering tuning; Portcullis streams bodies";
const CIPHERS: &str =
    "TLS ciphers/protocols of the listener; set them class-wide in IngressClassParams spec.tls";
const CONFIGMAP_ONLY_HT: &str = "ConfigMap-only (global) key: HAProxy ignores it on an Ingress too";
const CONFIGMAP_ONLY_J: &str =
    "Global-scope key: HAProxy Ingress reads it only from its ConfigMap, never from an Ingress";
const CORS: &str = "CORS response headers the browser relies on";
const DENY: &str = "client source-range allow/deny list: without it everyone reaches the service";
const HEADERS: &str = "sets headers the client or backend receives";
const HEALTH: &str = "health-check tuning; use portcullis.io/health-check*";
const LOGGING: &str = "logging/tracing only";
const MIRROR: &str = "request mirroring sends traffic to another backend";
const MODSECURITY: &str = "web application firewall: without it requests are not inspected";
const RATE_LIMIT: &str = "rate/connection limit on clients: without it clients are not limited";
const REDIRECT: &str = "redirect: the client would get the page instead of the redirect";
const REWRITE: &str = "path rewriting changes which path the backend gets";
const SNIPPET: &str = "raw proxy configuration snippet: its effect cannot be known";
const SLOTS: &str = "backend connection/slot tuning; Portcullis pools connections itself";
const TIMEOUT: &str = "timeout tuning; set class-wide timeouts in IngressClassParams spec.timeouts";

/// Every key. Grouped by family and topic; the order does not matter (lookups go through an
/// index and docs/migrating.md sorts by name).
static ENTRIES: &[Entry] = &[
    // --- portcullis.io (src/model/annotations.rs reads these) ---
    own("tls-mode", "terminate, passthrough or reencrypt"),
    own(
        "backend-protocol",
        "http, https, grpc or grpcs: HTTP/1.1 or HTTP/2 to the pod (grpc: h2c, terminate; grpcs: TLS with ALPN h2, reencrypt)",
    ),
    own("ssl-redirect", "308 from :80 to https"),
    own("hsts", "Strict-Transport-Security header value"),
    own("load-balance", "round-robin, least-request or random"),
    own("health-check", "http, tls, tcp or none"),
    own("health-check-path", "path of HTTP probes"),
    own("health-check-method", "HEAD or GET"),
    own("health-check-host", "Host header of HTTP probes"),
    own("health-check-interval", "probe interval"),
    own(
        "backend-ca",
        "Secret whose ca.crt verifies re-encrypted backends",
    ),
    own(
        "backend-verify",
        "verify re-encrypted backends' certificates",
    ),
    own("backend-sni", "SNI sent to re-encrypted backends"),
    own(
        "proxy-protocol",
        "PROXY v1/v2 header to pass-through backends",
    ),
    own(
        "forwarded-headers",
        "X-Forwarded-*, Forwarded and X-Real-IP headers",
    ),
    own(
        "permanent-redirect",
        "every request of the Ingress's paths redirected to this URL (301 by default)",
    ),
    own(
        "permanent-redirect-code",
        "status of permanent-redirect: 301, 302, 303, 307 or 308",
    ),
    own(
        "temporary-redirect",
        "every request of the Ingress's paths redirected to this URL (302 by default); wins over permanent-redirect",
    ),
    own(
        "temporary-redirect-code",
        "status of temporary-redirect: 301, 302, 303 or 307",
    ),
    own("app-root", "a request for / answered 302 to this path"),
    own(
        "use-regex",
        "every path of the Ingress's hosts (all Ingresses on them) is a case-insensitive regex anchored at the start; longest first",
    ),
    own(
        "rewrite-target",
        "path sent to the pod, with $1..$9 from the path regex (implies use-regex on the host); query kept",
    ),
    own(
        "x-forwarded-prefix",
        "X-Forwarded-Prefix header sent to the pod",
    ),
    own("upstream-vhost", "Host header sent to the pod"),
    own(
        "server-alias",
        "comma-separated extra host names answered like the Ingress's host (not one that is a rule host)",
    ),
    own(
        "proxy-body-size",
        "requests with a larger body answered 413 (1024, 512k, 8m, 1g; 0: no limit)",
    ),
    own(
        "limit-rps",
        "requests per second per client address, burst rate x limit-burst-multiplier; beyond: 503 or the class's limits.rateLimitStatus (0: no limit)",
    ),
    own(
        "limit-rpm",
        "requests per minute per client address, burst rate x limit-burst-multiplier; beyond: 503 or the class's limits.rateLimitStatus (0: no limit)",
    ),
    own(
        "limit-connections",
        "requests in flight at once per client address; beyond: 503 or the class's limits.connectionLimitStatus (0: no limit)",
    ),
    own(
        "limit-burst-multiplier",
        "burst of limit-rps / limit-rpm as a multiple of the rate (default 5)",
    ),
    own(
        "limit-allowlist",
        "comma-separated client CIDRs never rate or connection limited",
    ),
    own(
        "from-to-www-redirect",
        "the other name of each host (www. added or removed) answers 308 to the host",
    ),
    own(
        "affinity",
        "cookie: sticky sessions (a cookie pins a client to an endpoint)",
    ),
    own(
        "affinity-mode",
        "balanced (sessions rebalance when pods are added) or persistent",
    ),
    own(
        "affinity-canary-behavior",
        "sticky (clients served by a canary stay on it) or legacy (canaries ignore affinity)",
    ),
    own(
        "session-cookie-name",
        "name of the session cookie (INGRESSCOOKIE)",
    ),
    own(
        "session-cookie-path",
        "Path of the session cookie (default: the matched path)",
    ),
    own("session-cookie-domain", "Domain of the session cookie"),
    own(
        "session-cookie-max-age",
        "Max-Age of the session cookie, seconds",
    ),
    own(
        "session-cookie-expires",
        "Expires of the session cookie, seconds from the response",
    ),
    own(
        "session-cookie-samesite",
        "SameSite of the session cookie: None, Lax or Strict",
    ),
    own(
        "session-cookie-secure",
        "Secure session cookie on plain HTTP too (HTTPS always is)",
    ),
    own("session-cookie-partitioned", "Partitioned session cookie"),
    own(
        "session-cookie-change-on-failure",
        "move the session when its endpoint failed the request",
    ),
    own(
        "canary",
        "true: an alternative upstream of the main Ingress's same host and path",
    ),
    own(
        "canary-by-header",
        "header whose value always/never sends a request to the canary or not",
    ),
    own(
        "canary-by-header-value",
        "header value that sends a request to the canary",
    ),
    own(
        "canary-by-header-pattern",
        "regular expression on the header value that sends a request to the canary",
    ),
    own(
        "canary-by-cookie",
        "cookie whose value always/never sends a request to the canary or not",
    ),
    own(
        "canary-weight",
        "share of other requests sent to the canary",
    ),
    own("canary-weight-total", "what canary-weight is out of (100)"),
    own(
        "enable-cors",
        "CORS: preflights answered 204, CORS headers added (true, false)",
    ),
    own(
        "cors-allow-origin",
        "allowed origins: *, or a comma-separated list (https://*.example.com: one label)",
    ),
    own(
        "cors-allow-methods",
        "Access-Control-Allow-Methods (default GET, PUT, POST, DELETE, PATCH, OPTIONS)",
    ),
    own(
        "cors-allow-headers",
        "Access-Control-Allow-Headers (default ingress-nginx's list)",
    ),
    own(
        "cors-expose-headers",
        "Access-Control-Expose-Headers (default none)",
    ),
    own(
        "cors-allow-credentials",
        "Access-Control-Allow-Credentials: true (default true)",
    ),
    own(
        "cors-max-age",
        "Access-Control-Max-Age in seconds (default 1728000)",
    ),
    own(
        "request-headers",
        "headers set on the request to the pod, one `Name: value` per line",
    ),
    own(
        "response-headers",
        "headers set on the response to the client, one `Name: value` per line",
    ),
    own(
        "proxy-connect-timeout",
        "upstream connect timeout (30s, 500ms, or seconds)",
    ),
    own(
        "proxy-read-timeout",
        "timeout for the pod's response head (30s, 500ms, or seconds)",
    ),
    own(
        "proxy-send-timeout",
        "timeout between two writes of the request body to the pod (30s, 500ms, or seconds)",
    ),
    own(
        "default-backend",
        "Service (same namespace, first port) serving unmatched paths, routes without endpoints and custom-http-errors",
    ),
    own(
        "custom-http-errors",
        "pod responses with these codes (400-599) replaced by the default-backend's",
    ),
    own(
        "allow-source-range",
        "comma-separated client CIDRs (IPv4/IPv6) allowed, others 403; pass-through: closed",
    ),
    own(
        "deny-source-range",
        "comma-separated client CIDRs (IPv4/IPv6) answered 403, checked before the allow-list; pass-through: closed",
    ),
    own(
        "auth-url",
        "external authentication: a subrequest to this http(s) URL decides (2xx forwarded, 401, 403, else 500)",
    ),
    own("auth-method", "method of the auth subrequest (default GET)"),
    own(
        "auth-signin",
        "a 401 from auth-url becomes a 302 here, with the original URL in rd",
    ),
    own(
        "auth-signin-redirect-param",
        "name of the auth-signin parameter carrying the original URL (default rd)",
    ),
    own(
        "auth-response-headers",
        "headers copied from the auth answer onto the request to the pod",
    ),
    own(
        "auth-request-redirect",
        "X-Auth-Request-Redirect sent to auth-url (default: the request URI)",
    ),
    own(
        "auth-cache-key",
        "caches auth answers by this key of nginx variables ($http_authorization, $cookie_x, ...)",
    ),
    own(
        "auth-cache-duration",
        "auth answers cached per status, like 200 202 401 5m (the default)",
    ),
    own(
        "auth-always-set-cookie",
        "the auth answer's Set-Cookie on every response, not only successful ones",
    ),
    own(
        "auth-type",
        "basic: HTTP basic authentication, 401 with WWW-Authenticate (digest is refused)",
    ),
    own(
        "auth-secret",
        "Secret of basic-auth users, NAME or NAMESPACE/NAME in the Ingress's namespace (another namespace is refused)",
    ),
    own(
        "auth-secret-type",
        "auth-file (key auth, an htpasswd file; default) or auth-map (each key a user, its value the hash); bcrypt, apr1 or {SHA}",
    ),
    own(
        "auth-realm",
        "realm in WWW-Authenticate: Basic realm=\"...\" (default empty, as ingress-nginx)",
    ),
    own(
        "auth-tls-secret",
        "client certificates: Secret with ca.crt (and optional ca.crl), NAME or NAMESPACE/NAME in the Ingress's namespace; terminate and re-encrypt hosts only",
    ),
    own(
        "auth-tls-verify-client",
        "on (default: 400 without a certificate of the CA), optional, optional_no_ca, off",
    ),
    own(
        "auth-tls-verify-depth",
        "longest certificate chain above the client's, the CA included (default 1)",
    ),
    own(
        "auth-tls-error-page",
        "URL refused clients are redirected to (302) instead of 400",
    ),
    own(
        "auth-tls-pass-certificate-to-upstream",
        "the client certificate, URL-encoded PEM, in the ssl-client-cert header (default false)",
    ),
    // --- ingress-nginx: aliases ---
    alias(
        N,
        "ssl-passthrough",
        "portcullis.io/tls-mode: passthrough",
        Refuse,
    ),
    alias(
        N,
        "backend-protocol",
        "portcullis.io/backend-protocol (HTTP, HTTPS, GRPC, GRPCS; AJP and FCGI are errors)",
        Refuse,
    ),
    alias(N, "ssl-redirect", "portcullis.io/ssl-redirect", Refuse),
    alias(
        N,
        "force-ssl-redirect",
        "portcullis.io/ssl-redirect",
        Refuse,
    ),
    alias(N, "hsts", "portcullis.io/hsts", Refuse),
    alias(N, "hsts-max-age", "portcullis.io/hsts (max-age)", Refuse),
    alias(
        N,
        "hsts-include-subdomains",
        "portcullis.io/hsts (includeSubDomains)",
        Refuse,
    ),
    alias(N, "hsts-preload", "portcullis.io/hsts (preload)", Refuse),
    alias(
        N,
        "load-balance",
        "portcullis.io/load-balance (round_robin; ewma: least-request)",
        Warn,
    ),
    alias(N, "proxy-ssl-secret", "portcullis.io/backend-ca", Refuse),
    alias(
        N,
        "proxy-ssl-verify",
        "portcullis.io/backend-verify",
        Refuse,
    ),
    alias(N, "proxy-ssl-name", "portcullis.io/backend-sni", Refuse),
    alias(
        N,
        "permanent-redirect",
        "portcullis.io/permanent-redirect",
        Refuse,
    ),
    alias(
        N,
        "permanent-redirect-code",
        "portcullis.io/permanent-redirect-code",
        Refuse,
    ),
    alias(
        N,
        "temporal-redirect",
        "portcullis.io/temporary-redirect",
        Refuse,
    ),
    alias(
        N,
        "temporal-redirect-code",
        "portcullis.io/temporary-redirect-code",
        Refuse,
    ),
    alias(N, "app-root", "portcullis.io/app-root", Refuse),
    alias(
        N,
        "proxy-body-size",
        "portcullis.io/proxy-body-size",
        Refuse,
    ),
    alias(
        N,
        "from-to-www-redirect",
        "portcullis.io/from-to-www-redirect",
        Refuse,
    ),
    // --- ingress-nginx: who may reach the service ---
    alias(
        N,
        "whitelist-source-range",
        "portcullis.io/allow-source-range",
        Refuse,
    ),
    alias(
        N,
        "allowlist-source-range",
        "portcullis.io/allow-source-range",
        Refuse,
    ),
    alias(
        N,
        "denylist-source-range",
        "portcullis.io/deny-source-range",
        Refuse,
    ),
    refuse(N, "satisfy", "combines access restrictions (any/all)"),
    alias(N, "auth-type", "portcullis.io/auth-type", Refuse),
    alias(N, "auth-secret", "portcullis.io/auth-secret", Refuse),
    alias(
        N,
        "auth-secret-type",
        "portcullis.io/auth-secret-type",
        Refuse,
    ),
    alias(N, "auth-realm", "portcullis.io/auth-realm", Refuse),
    alias(N, "auth-url", "portcullis.io/auth-url", Refuse),
    alias(N, "auth-method", "portcullis.io/auth-method", Refuse),
    alias(N, "auth-signin", "portcullis.io/auth-signin", Refuse),
    alias(
        N,
        "auth-signin-redirect-param",
        "portcullis.io/auth-signin-redirect-param",
        Refuse,
    ),
    alias(
        N,
        "auth-response-headers",
        "portcullis.io/auth-response-headers",
        Refuse,
    ),
    refuse(N, "auth-proxy-set-headers", AUTH_EXTERNAL),
    alias(
        N,
        "auth-request-redirect",
        "portcullis.io/auth-request-redirect",
        Refuse,
    ),
    alias(N, "auth-cache-key", "portcullis.io/auth-cache-key", Refuse),
    alias(
        N,
        "auth-cache-duration",
        "portcullis.io/auth-cache-duration",
        Refuse,
    ),
    alias(
        N,
        "auth-always-set-cookie",
        "portcullis.io/auth-always-set-cookie",
        Refuse,
    ),
    refuse(N, "auth-keepalive", AUTH_EXTERNAL),
    refuse(N, "auth-keepalive-requests", AUTH_EXTERNAL),
    refuse(N, "auth-keepalive-share-vars", AUTH_EXTERNAL),
    refuse(N, "auth-keepalive-timeout", AUTH_EXTERNAL),
    refuse(N, "auth-snippet", SNIPPET),
    refuse(
        N,
        "enable-global-auth",
        "opts in or out of the global external authentication",
    ),
    alias(
        N,
        "auth-tls-secret",
        "portcullis.io/auth-tls-secret",
        Refuse,
    ),
    alias(
        N,
        "auth-tls-verify-client",
        "portcullis.io/auth-tls-verify-client",
        Refuse,
    ),
    alias(
        N,
        "auth-tls-verify-depth",
        "portcullis.io/auth-tls-verify-depth",
        Refuse,
    ),
    alias(
        N,
        "auth-tls-error-page",
        "portcullis.io/auth-tls-error-page",
        Refuse,
    ),
    alias(
        N,
        "auth-tls-pass-certificate-to-upstream",
        "portcullis.io/auth-tls-pass-certificate-to-upstream",
        Refuse,
    ),
    refuse(N, "auth-tls-match-cn", AUTH_TLS),
    alias(
        N,
        "limit-connections",
        "portcullis.io/limit-connections",
        Refuse,
    ),
    alias(N, "limit-rps", "portcullis.io/limit-rps", Refuse),
    alias(N, "limit-rpm", "portcullis.io/limit-rpm", Refuse),
    alias(
        N,
        "limit-burst-multiplier",
        "portcullis.io/limit-burst-multiplier",
        Refuse,
    ),
    refuse(N, "limit-rate", RATE_LIMIT),
    refuse(N, "limit-rate-after", RATE_LIMIT),
    alias(
        N,
        "limit-whitelist",
        "portcullis.io/limit-allowlist",
        Refuse,
    ),
    alias(
        N,
        "limit-allowlist",
        "portcullis.io/limit-allowlist",
        Refuse,
    ),
    refuse(N, "global-rate-limit", RATE_LIMIT),
    refuse(N, "global-rate-limit-window", RATE_LIMIT),
    refuse(N, "global-rate-limit-key", RATE_LIMIT),
    refuse(N, "global-rate-limit-ignored-cidrs", RATE_LIMIT),
    refuse(N, "enable-modsecurity", MODSECURITY),
    refuse(N, "enable-owasp-core-rules", MODSECURITY),
    refuse(N, "modsecurity-transaction-id", MODSECURITY),
    refuse(N, "modsecurity-snippet", SNIPPET),
    // --- ingress-nginx: snippets ---
    refuse(N, "configuration-snippet", SNIPPET),
    refuse(N, "server-snippet", SNIPPET),
    refuse(N, "stream-snippet", SNIPPET),
    // --- ingress-nginx: what the client receives ---
    refuse(N, "preserve-trailing-slash", REDIRECT),
    refuse(N, "use-port-in-redirects", REDIRECT),
    refuse(
        N,
        "proxy-redirect-from",
        "rewrites Location/Refresh headers the client receives",
    ),
    refuse(
        N,
        "proxy-redirect-to",
        "rewrites Location/Refresh headers the client receives",
    ),
    alias(N, "enable-cors", "portcullis.io/enable-cors", Refuse),
    alias(
        N,
        "cors-allow-origin",
        "portcullis.io/cors-allow-origin",
        Refuse,
    ),
    alias(
        N,
        "cors-allow-methods",
        "portcullis.io/cors-allow-methods",
        Refuse,
    ),
    alias(
        N,
        "cors-allow-headers",
        "portcullis.io/cors-allow-headers",
        Refuse,
    ),
    alias(
        N,
        "cors-expose-headers",
        "portcullis.io/cors-expose-headers",
        Refuse,
    ),
    alias(
        N,
        "cors-allow-credentials",
        "portcullis.io/cors-allow-credentials",
        Refuse,
    ),
    alias(N, "cors-max-age", "portcullis.io/cors-max-age", Refuse),
    refuse(
        N,
        "custom-headers",
        "response headers from a ConfigMap; list them in portcullis.io/response-headers",
    ),
    alias(
        N,
        "custom-http-errors",
        "portcullis.io/custom-http-errors",
        Refuse,
    ),
    refuse(
        N,
        "disable-proxy-intercept-errors",
        "custom error pages: the client would get other responses",
    ),
    refuse(
        N,
        "proxy-cookie-domain",
        "rewrites Set-Cookie headers the client receives",
    ),
    refuse(
        N,
        "proxy-cookie-path",
        "rewrites Set-Cookie headers the client receives",
    ),
    refuse(N, "ssl-ciphers", CIPHERS),
    refuse(N, "ssl-prefer-server-ciphers", CIPHERS),
    refuse(
        N,
        "add-base-url",
        "rewrites the response body (removed from ingress-nginx)",
    ),
    refuse(
        N,
        "base-url-scheme",
        "rewrites the response body (removed from ingress-nginx)",
    ),
    // --- ingress-nginx: which backend or path gets the request ---
    alias(N, "rewrite-target", "portcullis.io/rewrite-target", Refuse),
    alias(N, "use-regex", "portcullis.io/use-regex", Refuse),
    alias(
        N,
        "x-forwarded-prefix",
        "portcullis.io/x-forwarded-prefix",
        Refuse,
    ),
    alias(N, "upstream-vhost", "portcullis.io/upstream-vhost", Refuse),
    alias(N, "server-alias", "portcullis.io/server-alias", Refuse),
    alias(
        N,
        "default-backend",
        "portcullis.io/default-backend",
        Refuse,
    ),
    alias(N, "canary", "portcullis.io/canary", Refuse),
    alias(
        N,
        "canary-by-header",
        "portcullis.io/canary-by-header",
        Refuse,
    ),
    alias(
        N,
        "canary-by-header-value",
        "portcullis.io/canary-by-header-value",
        Refuse,
    ),
    alias(
        N,
        "canary-by-header-pattern",
        "portcullis.io/canary-by-header-pattern",
        Refuse,
    ),
    alias(
        N,
        "canary-by-cookie",
        "portcullis.io/canary-by-cookie",
        Refuse,
    ),
    alias(N, "canary-weight", "portcullis.io/canary-weight", Refuse),
    alias(
        N,
        "canary-weight-total",
        "portcullis.io/canary-weight-total",
        Refuse,
    ),
    refuse(N, "mirror-target", MIRROR),
    refuse(N, "mirror-host", MIRROR),
    refuse(N, "mirror-request-body", MIRROR),
    alias(N, "affinity", "portcullis.io/affinity", Refuse),
    alias(N, "affinity-mode", "portcullis.io/affinity-mode", Refuse),
    alias(
        N,
        "affinity-canary-behavior",
        "portcullis.io/affinity-canary-behavior",
        Refuse,
    ),
    alias(
        N,
        "session-cookie-name",
        "portcullis.io/session-cookie-name",
        Refuse,
    ),
    alias(
        N,
        "session-cookie-path",
        "portcullis.io/session-cookie-path",
        Refuse,
    ),
    alias(
        N,
        "session-cookie-domain",
        "portcullis.io/session-cookie-domain",
        Refuse,
    ),
    alias(
        N,
        "session-cookie-expires",
        "portcullis.io/session-cookie-expires",
        Refuse,
    ),
    alias(
        N,
        "session-cookie-max-age",
        "portcullis.io/session-cookie-max-age",
        Refuse,
    ),
    alias(
        N,
        "session-cookie-change-on-failure",
        "portcullis.io/session-cookie-change-on-failure",
        Refuse,
    ),
    alias(
        N,
        "session-cookie-samesite",
        "portcullis.io/session-cookie-samesite",
        Refuse,
    ),
    warn(
        N,
        "session-cookie-conditional-samesite-none",
        "SameSite=None is sent to every browser; the few that mishandle it are not detected",
    ),
    alias(
        N,
        "session-cookie-secure",
        "portcullis.io/session-cookie-secure",
        Refuse,
    ),
    alias(
        N,
        "session-cookie-partitioned",
        "portcullis.io/session-cookie-partitioned",
        Refuse,
    ),
    warn(
        N,
        "session-cookie-hash",
        "removed from ingress-nginx; the session cookie value is always an opaque keyed hash",
    ),
    refuse(N, "upstream-hash-by", AFFINITY),
    refuse(N, "upstream-hash-by-subset", AFFINITY),
    refuse(N, "upstream-hash-by-subset-size", AFFINITY),
    refuse(N, "fastcgi-index", "FastCGI backends are not supported"),
    refuse(
        N,
        "fastcgi-params-configmap",
        "FastCGI backends are not supported",
    ),
    refuse(
        N,
        "grpc-backend",
        "gRPC backends are not supported (removed from ingress-nginx)",
    ),
    refuse(
        N,
        "secure-backends",
        "TLS to the backend (removed from ingress-nginx); use portcullis.io/tls-mode: reencrypt",
    ),
    refuse(
        N,
        "secure-verify-ca-secret",
        "backend certificate verification (removed from ingress-nginx); use portcullis.io/backend-ca",
    ),
    refuse(N, "proxy-ssl-ciphers", BACKEND_TLS),
    refuse(N, "proxy-ssl-protocols", BACKEND_TLS),
    refuse(N, "proxy-ssl-verify-depth", BACKEND_TLS),
    // --- ingress-nginx: tuning (warnings) ---
    warn(
        N,
        "proxy-ssl-server-name",
        "Portcullis always sends SNI to re-encrypted backends (portcullis.io/backend-sni)",
    ),
    warn(N, "proxy-buffering", BUFFERING),
    warn(N, "proxy-buffer-size", BUFFERING),
    warn(N, "proxy-buffers-number", BUFFERING),
    warn(N, "proxy-max-temp-file-size", BUFFERING),
    warn(N, "proxy-request-buffering", BUFFERING),
    warn(N, "client-body-buffer-size", BUFFERING),
    alias(
        N,
        "proxy-connect-timeout",
        "portcullis.io/proxy-connect-timeout",
        Refuse,
    ),
    alias(
        N,
        "proxy-send-timeout",
        "portcullis.io/proxy-send-timeout",
        Refuse,
    ),
    alias(
        N,
        "proxy-read-timeout",
        "portcullis.io/proxy-read-timeout",
        Refuse,
    ),
    warn(
        N,
        "proxy-next-upstream",
        "retry tuning; Portcullis retries idempotent requests itself",
    ),
    warn(
        N,
        "proxy-next-upstream-timeout",
        "retry tuning; Portcullis retries idempotent requests itself",
    ),
    warn(
        N,
        "proxy-next-upstream-tries",
        "retry tuning; Portcullis retries idempotent requests itself",
    ),
    warn(
        N,
        "proxy-http-version",
        "upstream protocol tuning; Portcullis speaks HTTP/1.1 to backends",
    ),
    warn(N, "connection-proxy-header", "upstream keep-alive tuning"),
    warn(
        N,
        "service-upstream",
        "endpoints vs. Service IP; Portcullis balances over ready endpoints",
    ),
    warn(
        N,
        "http2-push-preload",
        "HTTP/2 server push (removed from browsers)",
    ),
    warn(N, "enable-access-log", LOGGING),
    warn(N, "enable-rewrite-log", LOGGING),
    warn(N, "enable-opentracing", LOGGING),
    warn(N, "opentracing-trust-incoming-span", LOGGING),
    warn(N, "enable-opentelemetry", LOGGING),
    warn(N, "opentelemetry-trust-incoming-span", LOGGING),
    warn(N, "opentelemetry-operation-name", LOGGING),
    warn(N, "enable-influxdb", LOGGING),
    warn(N, "influxdb-measurement", LOGGING),
    warn(N, "influxdb-port", LOGGING),
    warn(N, "influxdb-host", LOGGING),
    warn(N, "influxdb-server-name", LOGGING),
    // --- haproxytech: aliases (read under haproxy.org/ only) ---
    alias(
        H,
        "ssl-passthrough",
        "portcullis.io/tls-mode: passthrough",
        Refuse,
    ),
    alias(H, "server-ssl", "portcullis.io/tls-mode: reencrypt", Refuse),
    alias(H, "ssl-redirect", "portcullis.io/ssl-redirect", Refuse),
    alias(
        H,
        "load-balance",
        "portcullis.io/load-balance (roundrobin, leastconn: least-request, random)",
        Warn,
    ),
    alias(H, "server-ca", "portcullis.io/backend-ca", Refuse),
    // --- haproxytech: unsupported ---
    refuse(H, "auth-type", AUTH_BASIC),
    refuse(H, "auth-secret", AUTH_BASIC),
    refuse(H, "auth-realm", AUTH_BASIC),
    refuse(H, "allow-list", DENY),
    refuse(H, "whitelist", DENY),
    refuse(H, "deny-list", DENY),
    refuse(H, "blacklist", DENY),
    refuse(H, "client-ca", AUTH_TLS),
    refuse(H, "client-crt-optional", AUTH_TLS),
    refuse(H, "client-strict-sni", AUTH_TLS),
    refuse(H, "rate-limit-requests", RATE_LIMIT),
    refuse(H, "rate-limit-period", RATE_LIMIT),
    refuse(H, "rate-limit-size", RATE_LIMIT),
    refuse(H, "rate-limit-status-code", RATE_LIMIT),
    refuse(H, "rate-limit-whitelist", RATE_LIMIT),
    refuse(
        H,
        "src-ip-header",
        "which header is trusted as the client address",
    ),
    refuse(H, "backend-config-snippet", SNIPPET),
    refuse(H, "frontend-config-snippet", SNIPPET),
    refuse(H, "global-config-snippet", SNIPPET),
    refuse(H, "stats-config-snippet", SNIPPET),
    refuse(
        H,
        "cr-backend",
        "Backend custom resource: arbitrary backend configuration",
    ),
    refuse(H, "cors-enable", CORS),
    refuse(H, "cors-allow-origin", CORS),
    refuse(H, "cors-allow-methods", CORS),
    refuse(H, "cors-allow-credentials", CORS),
    refuse(H, "cors-allow-headers", CORS),
    refuse(H, "cors-max-age", CORS),
    refuse(H, "request-redirect", REDIRECT),
    refuse(H, "request-redirect-code", REDIRECT),
    refuse(H, "ssl-redirect-code", REDIRECT),
    refuse(H, "ssl-redirect-port", REDIRECT),
    refuse(H, "request-set-header", HEADERS),
    refuse(H, "response-set-header", HEADERS),
    refuse(H, "set-host", "Host header sent to the backend"),
    refuse(H, "path-rewrite", REWRITE),
    refuse(
        H,
        "route-acl",
        "custom routing ACL decides which backend gets the request",
    ),
    refuse(H, "cookie-persistence", AFFINITY),
    refuse(H, "cookie-persistence-no-dynamic", AFFINITY),
    refuse(H, "server-crt", BACKEND_TLS),
    refuse(
        H,
        "server-proto",
        "protocol spoken to the backend (h2); Portcullis speaks HTTP/1.1 to backends",
    ),
    refuse(
        H,
        "send-proxy-protocol",
        "PROXY header to the backend (its client address); portcullis.io/proxy-protocol covers pass-through",
    ),
    warn(
        H,
        "forwarded-for",
        "X-Forwarded-For is on by default; use portcullis.io/forwarded-headers",
    ),
    warn(H, "check", HEALTH),
    warn(H, "check-http", HEALTH),
    warn(H, "check-interval", HEALTH),
    warn(H, "timeout-check", TIMEOUT),
    warn(H, "timeout-server", TIMEOUT),
    warn(H, "pod-maxconn", SLOTS),
    warn(H, "scale-server-slots", SLOTS),
    warn(
        H,
        "standalone-backend",
        "HAProxy backend naming; no equivalent",
    ),
    warn(H, "request-capture", LOGGING),
    warn(H, "request-capture-len", LOGGING),
    warn(H, "clean-certs", CONFIGMAP_ONLY_HT),
    warn(H, "generate-certificates-signer", CONFIGMAP_ONLY_HT),
    warn(H, "dontlognull", CONFIGMAP_ONLY_HT),
    warn(H, "hard-stop-after", CONFIGMAP_ONLY_HT),
    warn(H, "http-connection-mode", CONFIGMAP_ONLY_HT),
    warn(H, "http-keep-alive", CONFIGMAP_ONLY_HT),
    warn(H, "http-server-close", CONFIGMAP_ONLY_HT),
    warn(H, "log-format", CONFIGMAP_ONLY_HT),
    warn(H, "log-format-tcp", CONFIGMAP_ONLY_HT),
    warn(H, "logasap", CONFIGMAP_ONLY_HT),
    warn(H, "maxconn", CONFIGMAP_ONLY_HT),
    warn(H, "nbthread", CONFIGMAP_ONLY_HT),
    warn(H, "proxy-protocol", CONFIGMAP_ONLY_HT),
    warn(H, "quic-alt-svc-max-age", CONFIGMAP_ONLY_HT),
    warn(H, "ssl-certificate", CONFIGMAP_ONLY_HT),
    warn(H, "syslog-server", CONFIGMAP_ONLY_HT),
    warn(H, "timeout-client", CONFIGMAP_ONLY_HT),
    warn(H, "timeout-client-fin", CONFIGMAP_ONLY_HT),
    warn(H, "timeout-connect", CONFIGMAP_ONLY_HT),
    warn(H, "timeout-http-request", CONFIGMAP_ONLY_HT),
    warn(H, "timeout-http-keep-alive", CONFIGMAP_ONLY_HT),
    warn(H, "timeout-queue", CONFIGMAP_ONLY_HT),
    warn(H, "timeout-server-fin", CONFIGMAP_ONLY_HT),
    warn(H, "timeout-tunnel", CONFIGMAP_ONLY_HT),
    warn(H, "tls-alpn", CONFIGMAP_ONLY_HT),
    // --- jcmoraisjr HAProxy Ingress: Host, Backend, Path and TCP scope ---
    refuse(J, "allowlist-source-range", DENY),
    refuse(J, "whitelist-source-range", DENY),
    refuse(J, "denylist-source-range", DENY),
    refuse(J, "auth-realm", AUTH_BASIC),
    refuse(J, "auth-secret", AUTH_BASIC),
    refuse(J, "auth-url", AUTH_EXTERNAL),
    refuse(J, "auth-method", AUTH_EXTERNAL),
    refuse(J, "auth-signin", AUTH_EXTERNAL),
    refuse(J, "auth-headers-fail", AUTH_EXTERNAL),
    refuse(J, "auth-headers-request", AUTH_EXTERNAL),
    refuse(J, "auth-headers-succeed", AUTH_EXTERNAL),
    refuse(J, "oauth", AUTH_EXTERNAL),
    refuse(J, "oauth-headers", AUTH_EXTERNAL),
    refuse(J, "oauth-uri-prefix", AUTH_EXTERNAL),
    refuse(J, "auth-tls-secret", AUTH_TLS),
    refuse(J, "auth-tls-verify-client", AUTH_TLS),
    refuse(J, "auth-tls-strict", AUTH_TLS),
    refuse(J, "auth-tls-error-page", AUTH_TLS),
    refuse(J, "auth-tls-cert-header", AUTH_TLS),
    refuse(J, "ssl-fingerprint-lower", AUTH_TLS),
    refuse(J, "limit-connections", RATE_LIMIT),
    refuse(J, "limit-rps", RATE_LIMIT),
    refuse(J, "limit-whitelist", RATE_LIMIT),
    refuse(
        J,
        "proxy-body-size",
        "request body size limit (413 beyond it); Portcullis has no per-Ingress body limit",
    ),
    refuse(J, "waf", MODSECURITY),
    refuse(J, "waf-mode", MODSECURITY),
    refuse(J, "config-backend", SNIPPET),
    refuse(J, "config-tcp-service", SNIPPET),
    refuse(J, "config-defaults", SNIPPET),
    refuse(J, "config-frontend", SNIPPET),
    refuse(J, "config-global", SNIPPET),
    refuse(J, "config-proxy", SNIPPET),
    refuse(J, "config-sections", SNIPPET),
    refuse(J, "config-tcp", SNIPPET),
    refuse(J, "app-root", REDIRECT),
    refuse(J, "redirect-from", REDIRECT),
    refuse(J, "redirect-from-regex", REDIRECT),
    refuse(J, "redirect-to", REDIRECT),
    refuse(
        J,
        "ssl-redirect",
        "redirect to https; use portcullis.io/ssl-redirect",
    ),
    refuse(
        J,
        "ssl-always-add-https",
        "serves the host on https without a tls entry",
    ),
    refuse(J, "hsts", "HSTS response header; use portcullis.io/hsts"),
    refuse(
        J,
        "hsts-include-subdomains",
        "HSTS response header; use portcullis.io/hsts",
    ),
    refuse(
        J,
        "hsts-max-age",
        "HSTS response header; use portcullis.io/hsts",
    ),
    refuse(
        J,
        "hsts-preload",
        "HSTS response header; use portcullis.io/hsts",
    ),
    refuse(J, "cors-enable", CORS),
    refuse(J, "cors-allow-origin", CORS),
    refuse(J, "cors-allow-methods", CORS),
    refuse(J, "cors-allow-headers", CORS),
    refuse(J, "cors-allow-credentials", CORS),
    refuse(J, "cors-expose-headers", CORS),
    refuse(J, "cors-max-age", CORS),
    refuse(J, "headers", HEADERS),
    refuse(J, "ssl-ciphers", CIPHERS),
    refuse(J, "ssl-cipher-suites", CIPHERS),
    refuse(J, "ssl-options-host", CIPHERS),
    refuse(J, "ssl-ciphers-backend", BACKEND_TLS),
    refuse(J, "ssl-cipher-suites-backend", BACKEND_TLS),
    refuse(J, "ssl-options-backend", BACKEND_TLS),
    refuse(
        J,
        "secure-backends",
        "TLS to the backend; use portcullis.io/tls-mode: reencrypt",
    ),
    refuse(J, "secure-crt-secret", BACKEND_TLS),
    refuse(
        J,
        "secure-sni",
        "SNI sent to the backend; use portcullis.io/backend-sni",
    ),
    refuse(
        J,
        "secure-verify-ca-secret",
        "backend certificate verification; use portcullis.io/backend-ca",
    ),
    refuse(J, "secure-verify-hostname", BACKEND_TLS),
    refuse(
        J,
        "backend-protocol",
        "protocol spoken to the backend; use portcullis.io/tls-mode (h1-ssl: reencrypt)",
    ),
    refuse(
        J,
        "ssl-passthrough",
        "TLS pass-through; use portcullis.io/tls-mode: passthrough",
    ),
    refuse(
        J,
        "ssl-passthrough-http-port",
        "plain-HTTP backend of a pass-through host",
    ),
    refuse(
        J,
        "proxy-protocol",
        "PROXY header to the backend (its client address); portcullis.io/proxy-protocol covers pass-through",
    ),
    refuse(J, "rewrite-target", REWRITE),
    refuse(
        J,
        "path-type",
        "path matching type (begin, regex...) matches other requests",
    ),
    refuse(
        J,
        "server-alias",
        "more host names: requests for them would not be routed",
    ),
    refuse(
        J,
        "server-alias-regex",
        "more host names: requests for them would not be routed",
    ),
    refuse(J, "affinity", AFFINITY),
    refuse(J, "session-cookie-dynamic", AFFINITY),
    refuse(J, "session-cookie-keywords", AFFINITY),
    refuse(J, "session-cookie-name", AFFINITY),
    refuse(J, "session-cookie-preserve", AFFINITY),
    refuse(J, "session-cookie-same-site", AFFINITY),
    refuse(J, "session-cookie-shared", AFFINITY),
    refuse(J, "session-cookie-strategy", AFFINITY),
    refuse(J, "session-cookie-value-strategy", AFFINITY),
    refuse(J, "blue-green-balance", BLUE_GREEN),
    refuse(J, "blue-green-cookie", BLUE_GREEN),
    refuse(J, "blue-green-deploy", BLUE_GREEN),
    refuse(J, "blue-green-header", BLUE_GREEN),
    refuse(J, "blue-green-mode", BLUE_GREEN),
    refuse(
        J,
        "tcp-service-port",
        "a TCP service on its own port; not supported",
    ),
    refuse(
        J,
        "tcp-service-proxy-protocol",
        "a TCP service on its own port; not supported",
    ),
    warn(J, "tcp-service-log-format", LOGGING),
    warn(
        J,
        "balance-algorithm",
        "balancing tuning; use portcullis.io/load-balance",
    ),
    warn(J, "agent-check-addr", HEALTH),
    warn(J, "agent-check-interval", HEALTH),
    warn(J, "agent-check-port", HEALTH),
    warn(J, "agent-check-send", HEALTH),
    warn(J, "backend-check-interval", HEALTH),
    warn(J, "health-check-addr", HEALTH),
    warn(J, "health-check-fall-count", HEALTH),
    warn(J, "health-check-interval", HEALTH),
    warn(J, "health-check-port", HEALTH),
    warn(J, "health-check-rise-count", HEALTH),
    warn(J, "health-check-uri", HEALTH),
    warn(J, "timeout-connect", TIMEOUT),
    warn(J, "timeout-http-request", TIMEOUT),
    warn(J, "timeout-keep-alive", TIMEOUT),
    warn(J, "timeout-queue", TIMEOUT),
    warn(J, "timeout-server", TIMEOUT),
    warn(J, "timeout-server-fin", TIMEOUT),
    warn(J, "timeout-tunnel", TIMEOUT),
    warn(J, "backend-server-naming", SLOTS),
    warn(J, "backend-server-slots-increment", SLOTS),
    warn(J, "dynamic-scaling", SLOTS),
    warn(J, "slots-min-free", SLOTS),
    warn(J, "initial-weight", SLOTS),
    warn(J, "maxconn-server", SLOTS),
    warn(J, "maxqueue-server", SLOTS),
    warn(
        J,
        "service-upstream",
        "endpoints vs. Service IP; Portcullis balances over ready endpoints",
    ),
    warn(
        J,
        "source-address-intf",
        "source address of backend connections",
    ),
    warn(
        J,
        "use-resolver",
        "DNS-based backends; Portcullis reads EndpointSlices",
    ),
    warn(
        J,
        "tls-alpn",
        "ALPN advertisement; Portcullis offers h2 and http/1.1",
    ),
    warn(J, "var-namespace", LOGGING),
    warn(
        J,
        "cert-signer",
        "ACME certificates are not issued by Portcullis (use cert-manager); the default certificate is served",
    ),
    // --- jcmoraisjr HAProxy Ingress: Global scope (ConfigMap only) ---
    warn(J, "acme-emails", CONFIGMAP_ONLY_J),
    warn(J, "acme-endpoint", CONFIGMAP_ONLY_J),
    warn(J, "acme-expiring", CONFIGMAP_ONLY_J),
    warn(J, "acme-shared", CONFIGMAP_ONLY_J),
    warn(J, "acme-terms-agreed", CONFIGMAP_ONLY_J),
    warn(J, "auth-log-format", CONFIGMAP_ONLY_J),
    warn(J, "auth-proxy", CONFIGMAP_ONLY_J),
    warn(J, "bind-fronting-proxy", CONFIGMAP_ONLY_J),
    warn(J, "bind-http", CONFIGMAP_ONLY_J),
    warn(J, "bind-https", CONFIGMAP_ONLY_J),
    warn(J, "bind-ip-addr-healthz", CONFIGMAP_ONLY_J),
    warn(J, "bind-ip-addr-http", CONFIGMAP_ONLY_J),
    warn(J, "bind-ip-addr-prometheus", CONFIGMAP_ONLY_J),
    warn(J, "bind-ip-addr-stats", CONFIGMAP_ONLY_J),
    warn(J, "bind-ip-addr-tcp", CONFIGMAP_ONLY_J),
    warn(J, "cookie-key", CONFIGMAP_ONLY_J),
    warn(J, "cpu-map", CONFIGMAP_ONLY_J),
    warn(J, "cross-namespace-secrets-ca", CONFIGMAP_ONLY_J),
    warn(J, "cross-namespace-secrets-crt", CONFIGMAP_ONLY_J),
    warn(J, "cross-namespace-secrets-passwd", CONFIGMAP_ONLY_J),
    warn(J, "cross-namespace-services", CONFIGMAP_ONLY_J),
    warn(J, "default-backend-redirect", CONFIGMAP_ONLY_J),
    warn(J, "default-backend-redirect-code", CONFIGMAP_ONLY_J),
    warn(J, "dns-accepted-payload-size", CONFIGMAP_ONLY_J),
    warn(J, "dns-cluster-domain", CONFIGMAP_ONLY_J),
    warn(J, "dns-hold-obsolete", CONFIGMAP_ONLY_J),
    warn(J, "dns-hold-valid", CONFIGMAP_ONLY_J),
    warn(J, "dns-resolvers", CONFIGMAP_ONLY_J),
    warn(J, "dns-timeout-retry", CONFIGMAP_ONLY_J),
    warn(J, "drain-support", CONFIGMAP_ONLY_J),
    warn(J, "drain-support-redispatch", CONFIGMAP_ONLY_J),
    warn(J, "external-has-lua", CONFIGMAP_ONLY_J),
    warn(J, "forwardfor", CONFIGMAP_ONLY_J),
    warn(J, "fronting-proxy-port", CONFIGMAP_ONLY_J),
    warn(J, "groupname", CONFIGMAP_ONLY_J),
    warn(J, "healthz-port", CONFIGMAP_ONLY_J),
    warn(J, "http-log-format", CONFIGMAP_ONLY_J),
    warn(J, "http-port", CONFIGMAP_ONLY_J),
    warn(J, "https-log-format", CONFIGMAP_ONLY_J),
    warn(J, "https-port", CONFIGMAP_ONLY_J),
    warn(J, "https-to-http-port", CONFIGMAP_ONLY_J),
    warn(J, "load-server-state", CONFIGMAP_ONLY_J),
    warn(J, "master-exit-on-failure", CONFIGMAP_ONLY_J),
    warn(J, "max-connections", CONFIGMAP_ONLY_J),
    warn(J, "modsecurity-endpoints", CONFIGMAP_ONLY_J),
    warn(J, "modsecurity-timeout-hello", CONFIGMAP_ONLY_J),
    warn(J, "modsecurity-timeout-idle", CONFIGMAP_ONLY_J),
    warn(J, "modsecurity-timeout-processing", CONFIGMAP_ONLY_J),
    warn(J, "nbproc-ssl", CONFIGMAP_ONLY_J),
    warn(J, "nbthread", CONFIGMAP_ONLY_J),
    warn(J, "no-tls-redirect-locations", CONFIGMAP_ONLY_J),
    warn(J, "path-type-order", CONFIGMAP_ONLY_J),
    warn(J, "prometheus-port", CONFIGMAP_ONLY_J),
    warn(J, "redirect-from-code", CONFIGMAP_ONLY_J),
    warn(J, "redirect-to-code", CONFIGMAP_ONLY_J),
    warn(J, "ssl-dh-default-max-size", CONFIGMAP_ONLY_J),
    warn(J, "ssl-dh-param", CONFIGMAP_ONLY_J),
    warn(J, "ssl-engine", CONFIGMAP_ONLY_J),
    warn(J, "ssl-headers-prefix", CONFIGMAP_ONLY_J),
    warn(J, "ssl-mode-async", CONFIGMAP_ONLY_J),
    warn(J, "ssl-options", CONFIGMAP_ONLY_J),
    warn(J, "ssl-redirect-code", CONFIGMAP_ONLY_J),
    warn(J, "stats-auth", CONFIGMAP_ONLY_J),
    warn(J, "stats-port", CONFIGMAP_ONLY_J),
    warn(J, "stats-proxy-protocol", CONFIGMAP_ONLY_J),
    warn(J, "stats-ssl-cert", CONFIGMAP_ONLY_J),
    warn(J, "strict-host", CONFIGMAP_ONLY_J),
    warn(J, "syslog-endpoint", CONFIGMAP_ONLY_J),
    warn(J, "syslog-format", CONFIGMAP_ONLY_J),
    warn(J, "syslog-length", CONFIGMAP_ONLY_J),
    warn(J, "syslog-tag", CONFIGMAP_ONLY_J),
    warn(J, "tcp-log-format", CONFIGMAP_ONLY_J),
    warn(J, "timeout-client", CONFIGMAP_ONLY_J),
    warn(J, "timeout-client-fin", CONFIGMAP_ONLY_J),
    warn(J, "timeout-stop", CONFIGMAP_ONLY_J),
    warn(J, "use-chroot", CONFIGMAP_ONLY_J),
    warn(J, "use-cpu-map", CONFIGMAP_ONLY_J),
    warn(J, "use-forwarded-proto", CONFIGMAP_ONLY_J),
    warn(J, "use-haproxy-user", CONFIGMAP_ONLY_J),
    warn(J, "use-htx", CONFIGMAP_ONLY_J),
    warn(J, "use-proxy-protocol", CONFIGMAP_ONLY_J),
    warn(J, "username", CONFIGMAP_ONLY_J),
    warn(J, "worker-max-reloads", CONFIGMAP_ONLY_J),
];

/// [`ENTRIES`] by family and name, built once. Every Ingress's every key is looked up here on
/// every build; the keyed hash would buy nothing (a map no one can insert into cannot be
/// flooded with collisions).
static INDEX: LazyLock<crate::table::FastMap<(Family, &'static str), &'static Entry>> =
    LazyLock::new(|| ENTRIES.iter().map(|e| ((e.family, e.name), e)).collect());

// === classification ===

/// What the table says about one annotation key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not under a prefix this table answers for (`kubernetes.io/...`, anyone else's).
    NotOurs,
    /// Read by [`crate::model::annotations`]: one of ours, or an alias.
    Read,
    /// Under one of our prefixes, unsupported.
    Unsupported {
        action: Action,
        /// One line, for the diagnostic and the migration table.
        why: String,
    },
    /// Under one of our prefixes, in no table. `suggestion`: the closest known key, when close.
    Unknown {
        family: Family,
        suggestion: Option<String>,
    },
}

/// Looks `key` up in the table.
pub(crate) fn classify(key: &str) -> Verdict {
    let Some((prefix, name)) = key.split_once('/') else {
        return Verdict::NotOurs;
    };
    let families = families_of(prefix);
    let Some(&first) = families.first() else {
        return Verdict::NotOurs;
    };
    // The strictest verdict over every table that knows the name (see the module doc).
    let mut found: Option<(Action, String)> = None;
    for &family in families {
        let Some(entry) = INDEX.get(&(family, name)) else {
            continue;
        };
        let (action, why) = match entry.status {
            Status::Implemented(_) => return Verdict::Read,
            Status::Alias { .. } if prefix == family.canonical_prefix() => return Verdict::Read,
            Status::Alias { of, unread } => (
                unread,
                format!(
                    "read only as {}/{name} (alias of {of}); rename the key",
                    family.canonical_prefix()
                ),
            ),
            Status::Unsupported { action, why } => (action, why.to_string()),
        };
        if found.as_ref().is_none_or(|(a, _)| action > *a) {
            found = Some((action, why));
        }
    }
    match found {
        Some((action, why)) => Verdict::Unsupported { action, why },
        None => Verdict::Unknown {
            family: first,
            suggestion: suggest(families, name).map(|(family, name)| family.key(name)),
        },
    }
}

/// The known name closest to `name` among `families`, when it is close enough to be a typo:
/// at most 2 edits (a swap of two neighbours counts as one), and fewer than half the name.
fn suggest(families: &[Family], name: &str) -> Option<(Family, &'static str)> {
    let limit = 2.min(name.chars().count().saturating_sub(1) / 2);
    ENTRIES
        .iter()
        .filter(|e| families.contains(&e.family))
        .map(|e| (edit_distance(name, e.name), e.family, e.name))
        .filter(|(d, _, _)| *d <= limit)
        .min()
        .map(|(_, family, name)| (family, name))
}

/// Optimal-string-alignment distance: insertions, deletions, substitutions and swaps of
/// adjacent characters each cost one (so `tls-mdoe` is one edit from `tls-mode`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // Three rows: the one two back is needed for swaps.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    let mut current = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        current[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (previous[j] + 1)
                .min(current[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(before[j - 2] + 1);
            }
            current[j] = d;
        }
        std::mem::swap(&mut before, &mut previous);
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

// === review of one Ingress ===

/// The table's verdict on one Ingress's annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Review {
    /// Errors (refusals) and warnings, one per annotation at fault.
    pub(crate) diagnostics: Vec<Diagnostic>,
    /// Some annotation refuses the Ingress: it must not be served, not even its last good
    /// version.
    pub(crate) refused: bool,
}

/// What every refusal says about serving.
const REFUSED: &str = "the Ingress is refused: not served at all, not even its last good version, \
since serving it without this annotation would silently drop what the annotation asks for";

/// Reviews the annotations of one Ingress (`object`) under its class's policy.
pub(crate) fn review(
    object: &ObjectRef,
    annotations: Option<&BTreeMap<String, String>>,
    policy: UnsupportedAnnotations,
) -> Review {
    let mut review = Review::default();
    for key in annotations.into_iter().flat_map(BTreeMap::keys) {
        let field = || format!("metadata.annotations[\"{key}\"]");
        match classify(key) {
            Verdict::NotOurs | Verdict::Read => {}
            Verdict::Unknown {
                family: Family::Portcullis,
                suggestion,
            } => {
                // Our own prefix: always an error, whatever the class says.
                let hint = match suggestion {
                    Some(s) => format!("did you mean {s}?"),
                    None => format!("Portcullis reads: {}", own_keys().join(", ")),
                };
                review.refused = true;
                review.diagnostics.push(Diagnostic::error(
                    object.clone(),
                    field(),
                    Reason::UnknownAnnotation,
                    format!("unknown annotation {key} ({hint}); {REFUSED}"),
                ));
            }
            Verdict::Unknown { suggestion, .. } => {
                if policy == UnsupportedAnnotations::Ignore {
                    continue;
                }
                let hint = suggestion
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                review.diagnostics.push(Diagnostic::warning(
                    object.clone(),
                    field(),
                    Reason::UnknownAnnotation,
                    format!(
                        "unknown annotation {key}, ignored{hint}: no table of {} lists it (docs/migrating.md)",
                        families_of(prefix_of(key))
                            .iter()
                            .map(|f| f.title())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            Verdict::Unsupported { action, why } => match (action, policy) {
                (_, UnsupportedAnnotations::Ignore) => {}
                (Action::Refuse, UnsupportedAnnotations::Reject) => {
                    review.refused = true;
                    review.diagnostics.push(Diagnostic::error(
                        object.clone(),
                        field(),
                        Reason::UnsupportedAnnotation,
                        format!(
                            "annotation {key} is not supported ({why}); {REFUSED} (docs/migrating.md)"
                        ),
                    ));
                }
                (Action::Refuse, UnsupportedAnnotations::Warn) => {
                    review.diagnostics.push(Diagnostic::warning(
                        object.clone(),
                        field(),
                        Reason::UnsupportedAnnotation,
                        format!(
                            "annotation {key} is not supported ({why}); served without it because the class's IngressClassParams sets unsupportedAnnotations: Warn"
                        ),
                    ));
                }
                (Action::Warn, _) => {
                    review.diagnostics.push(Diagnostic::warning(
                        object.clone(),
                        field(),
                        Reason::UnsupportedAnnotation,
                        format!("annotation {key} is not supported and is ignored ({why})"),
                    ));
                }
            },
        }
    }
    review
}

/// The part of `key` before the first `/` (all of it without one).
fn prefix_of(key: &str) -> &str {
    key.split_once('/').map_or(key, |(prefix, _)| prefix)
}

/// Our keys, sorted.
fn own_keys() -> Vec<String> {
    let mut keys: Vec<String> = ENTRIES
        .iter()
        .filter(|e| e.family == Family::Portcullis)
        .map(|e| e.family.key(e.name))
        .collect();
    keys.sort();
    keys
}

/// Every key of the table, each under its family's canonical prefix (what the annotation
/// readers ask for), for their tests.
#[cfg(test)]
pub(crate) fn every_key() -> impl Iterator<Item = String> {
    ENTRIES.iter().map(|e| e.family.key(e.name))
}

// === docs/migrating.md ===
//
// The generator runs as a unit test, which is also the check CI runs: the file is rewritten
// with PORTCULLIS_BLESS=1 and compared otherwise. Nothing else needs it, so it is test-only.

/// The line in docs/migrating.md after which everything is generated by `render_markdown`.
#[cfg(test)]
pub(crate) const GENERATED_MARKER: &str =
    "<!-- Generated from src/model/annotation_catalog.rs below this line; do not edit by hand. -->";

/// The generated part of docs/migrating.md: one table per family, keys sorted by name.
#[cfg(test)]
pub(crate) fn render_markdown() -> String {
    use std::fmt::Write as _;

    let mut out = String::new();
    let _ = writeln!(out, "## Summary\n");
    let _ = writeln!(
        out,
        "| annotations of | keys | implemented or alias | refused | warning |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    for family in Family::ALL {
        let entries: Vec<&Entry> = ENTRIES.iter().filter(|e| e.family == family).collect();
        let read = entries
            .iter()
            .filter(|e| matches!(e.status, Status::Implemented(_) | Status::Alias { .. }))
            .count();
        let count = |want: Action| {
            entries
                .iter()
                .filter(
                    |e| matches!(e.status, Status::Unsupported { action, .. } if action == want),
                )
                .count()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            family.title(),
            entries.len(),
            read,
            count(Action::Refuse),
            count(Action::Warn)
        );
    }
    for family in Family::ALL {
        let prefixes: Vec<String> = match family {
            Family::Portcullis => vec!["portcullis.io/".into()],
            Family::Nginx => vec!["nginx.ingress.kubernetes.io/".into()],
            Family::HaproxyTech => vec![
                "haproxy.org/".into(),
                "haproxy.com/".into(),
                "ingress.kubernetes.io/".into(),
            ],
            Family::HaproxyIngress => vec![
                "haproxy-ingress.github.io/".into(),
                "ingress.kubernetes.io/".into(),
            ],
        };
        let prefixes: Vec<String> = prefixes.iter().map(|p| format!("`{p}`")).collect();
        let _ = writeln!(out, "\n## {}\n", family.title());
        let _ = writeln!(
            out,
            "Prefixes: {}. Source: <{}>.\n",
            prefixes.join(", "),
            family.source()
        );
        let _ = writeln!(out, "| annotation | Portcullis | notes |");
        let _ = writeln!(out, "|---|---|---|");
        let mut entries: Vec<&Entry> = ENTRIES.iter().filter(|e| e.family == family).collect();
        entries.sort_by_key(|e| e.name);
        for e in entries {
            let (status, notes) = match e.status {
                Status::Implemented(what) => ("implemented".to_string(), what.to_string()),
                Status::Alias { of, .. } if family == Family::Portcullis => {
                    ("alias".to_string(), of.to_string())
                }
                Status::Alias { of, unread } => (
                    "alias".to_string(),
                    format!(
                        "read as {of} (only as `{}/{}`; under other prefixes: {})",
                        family.canonical_prefix(),
                        e.name,
                        match unread {
                            Action::Refuse => "refused",
                            Action::Warn => "warning",
                        }
                    ),
                ),
                Status::Unsupported {
                    action: Action::Refuse,
                    why,
                } => ("**refused**".to_string(), why.to_string()),
                Status::Unsupported {
                    action: Action::Warn,
                    why,
                } => ("warning, ignored".to_string(), why.to_string()),
            };
            let _ = writeln!(out, "| `{}` | {status} | {notes} |", e.name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::table::diagnostic::Severity;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn object() -> ObjectRef {
        ObjectRef::namespaced("Ingress", "default", "app")
    }

    fn action(key: &str) -> Option<Action> {
        match classify(key) {
            Verdict::Unsupported { action, .. } => Some(action),
            _ => None,
        }
    }

    #[test]
    fn no_key_is_listed_twice() {
        let mut seen = HashSet::new();
        for e in ENTRIES {
            assert!(
                seen.insert((e.family, e.name)),
                "{:?} {} twice",
                e.family,
                e.name
            );
            assert!(!e.name.is_empty() && !e.name.contains('/'), "{}", e.name);
        }
        assert_eq!(INDEX.len(), ENTRIES.len());
    }

    #[test]
    fn every_key_annotations_rs_reads_is_implemented_or_an_alias() {
        for key in [
            "portcullis.io/tls-mode",
            "portcullis.io/backend-protocol",
            "portcullis.io/ssl-redirect",
            "portcullis.io/hsts",
            "portcullis.io/load-balance",
            "portcullis.io/health-check",
            "portcullis.io/health-check-path",
            "portcullis.io/health-check-method",
            "portcullis.io/health-check-host",
            "portcullis.io/health-check-interval",
            "portcullis.io/backend-ca",
            "portcullis.io/backend-verify",
            "portcullis.io/backend-sni",
            "portcullis.io/proxy-protocol",
            "portcullis.io/forwarded-headers",
            "portcullis.io/permanent-redirect",
            "portcullis.io/permanent-redirect-code",
            "portcullis.io/temporary-redirect",
            "portcullis.io/temporary-redirect-code",
            "portcullis.io/app-root",
            "portcullis.io/from-to-www-redirect",
            "portcullis.io/proxy-body-size",
            "nginx.ingress.kubernetes.io/proxy-body-size",
            "nginx.ingress.kubernetes.io/permanent-redirect",
            "nginx.ingress.kubernetes.io/permanent-redirect-code",
            "nginx.ingress.kubernetes.io/temporal-redirect",
            "nginx.ingress.kubernetes.io/temporal-redirect-code",
            "nginx.ingress.kubernetes.io/app-root",
            "nginx.ingress.kubernetes.io/from-to-www-redirect",
            "nginx.ingress.kubernetes.io/ssl-passthrough",
            "nginx.ingress.kubernetes.io/backend-protocol",
            "nginx.ingress.kubernetes.io/ssl-redirect",
            "nginx.ingress.kubernetes.io/force-ssl-redirect",
            "nginx.ingress.kubernetes.io/hsts",
            "nginx.ingress.kubernetes.io/hsts-max-age",
            "nginx.ingress.kubernetes.io/hsts-include-subdomains",
            "nginx.ingress.kubernetes.io/hsts-preload",
            "nginx.ingress.kubernetes.io/load-balance",
            "nginx.ingress.kubernetes.io/proxy-ssl-secret",
            "nginx.ingress.kubernetes.io/proxy-ssl-verify",
            "nginx.ingress.kubernetes.io/proxy-ssl-name",
            "haproxy.org/ssl-passthrough",
            "haproxy.org/server-ssl",
            "haproxy.org/ssl-redirect",
            "haproxy.org/load-balance",
            "haproxy.org/server-ca",
            "nginx.ingress.kubernetes.io/enable-cors",
            "nginx.ingress.kubernetes.io/cors-allow-origin",
            "nginx.ingress.kubernetes.io/proxy-read-timeout",
            "portcullis.io/default-backend",
            "portcullis.io/custom-http-errors",
            "nginx.ingress.kubernetes.io/default-backend",
            "nginx.ingress.kubernetes.io/custom-http-errors",
            "portcullis.io/affinity",
            "nginx.ingress.kubernetes.io/affinity",
            "nginx.ingress.kubernetes.io/session-cookie-name",
            "nginx.ingress.kubernetes.io/session-cookie-max-age",
            "portcullis.io/canary",
            "nginx.ingress.kubernetes.io/canary",
            "nginx.ingress.kubernetes.io/canary-by-header-pattern",
            "nginx.ingress.kubernetes.io/canary-weight",
            "portcullis.io/allow-source-range",
            "portcullis.io/deny-source-range",
            "nginx.ingress.kubernetes.io/whitelist-source-range",
            "nginx.ingress.kubernetes.io/allowlist-source-range",
            "nginx.ingress.kubernetes.io/denylist-source-range",
            "portcullis.io/auth-type",
            "nginx.ingress.kubernetes.io/auth-type",
            "nginx.ingress.kubernetes.io/auth-secret",
            "nginx.ingress.kubernetes.io/auth-secret-type",
            "nginx.ingress.kubernetes.io/auth-realm",
        ] {
            assert_eq!(classify(key), Verdict::Read, "{key}");
        }
    }

    #[test]
    fn access_control_auth_and_snippets_refuse() {
        for key in [
            "nginx.ingress.kubernetes.io/auth-snippet",
            "nginx.ingress.kubernetes.io/auth-proxy-set-headers",
            // Read only under ingress-nginx's own prefix.
            "ingress.kubernetes.io/auth-type",
            "nginx.ingress.kubernetes.io/auth-tls-match-cn",
            "nginx.ingress.kubernetes.io/server-snippet",
            "nginx.ingress.kubernetes.io/configuration-snippet",
            "haproxy-ingress.github.io/rewrite-target",
            "nginx.ingress.kubernetes.io/mirror-target",
            "haproxy.org/cors-enable",
            "nginx.ingress.kubernetes.io/limit-rate",
            "nginx.ingress.kubernetes.io/ssl-ciphers",
            "haproxy.org/allow-list",
            "haproxy.org/backend-config-snippet",
            "haproxy-ingress.github.io/auth-url",
            "ingress.kubernetes.io/whitelist-source-range",
            // ingress-nginx before 0.9 read its keys under ingress.kubernetes.io/ too.
            "ingress.kubernetes.io/configuration-snippet",
        ] {
            assert_eq!(action(key), Some(Action::Refuse), "{key}");
        }
    }

    #[test]
    fn tuning_warns() {
        for key in [
            "nginx.ingress.kubernetes.io/proxy-buffering",
            "nginx.ingress.kubernetes.io/proxy-buffer-size",
            "nginx.ingress.kubernetes.io/enable-access-log",
            "haproxy.org/timeout-server",
            "haproxy-ingress.github.io/timeout-connect",
        ] {
            assert_eq!(action(key), Some(Action::Warn), "{key}");
        }
    }

    #[test]
    fn aliases_are_read_only_under_their_own_prefix() {
        assert_eq!(classify("haproxy.org/ssl-passthrough"), Verdict::Read);
        for key in [
            "haproxy.com/ssl-passthrough",
            "ingress.kubernetes.io/ssl-passthrough",
        ] {
            let Verdict::Unsupported { action, why } = classify(key) else {
                panic!("{key}: {:?}", classify(key));
            };
            assert_eq!(action, Action::Refuse, "{key}");
            assert!(why.contains("haproxy.org/ssl-passthrough"), "{why}");
        }
        // Balancing is tuning: the unread alias only warns.
        assert_eq!(action("haproxy.com/load-balance"), Some(Action::Warn));
    }

    #[test]
    fn other_prefixes_are_not_ours() {
        for key in [
            "kubernetes.io/ingress.class",
            "kubectl.kubernetes.io/last-applied-configuration",
            "example.com/portcullis.io",
            "no-slash",
            "cert-manager.io/cluster-issuer",
        ] {
            assert_eq!(classify(key), Verdict::NotOurs, "{key}");
        }
    }

    #[test]
    fn unknown_keys_and_did_you_mean() {
        assert_eq!(
            classify("portcullis.io/tls-mdoe"),
            Verdict::Unknown {
                family: Family::Portcullis,
                suggestion: Some("portcullis.io/tls-mode".into())
            }
        );
        assert_eq!(
            classify("portcullis.io/helth-check-path"),
            Verdict::Unknown {
                family: Family::Portcullis,
                suggestion: Some("portcullis.io/health-check-path".into())
            }
        );
        // Far from everything: no suggestion.
        assert_eq!(
            classify("portcullis.io/whitelist-source-range"),
            Verdict::Unknown {
                family: Family::Portcullis,
                suggestion: None
            }
        );
        // Short names do not attract suggestions from everything two letters away.
        assert_eq!(
            classify("portcullis.io/x"),
            Verdict::Unknown {
                family: Family::Portcullis,
                suggestion: None
            }
        );
        assert_eq!(
            classify("nginx.ingress.kubernetes.io/whitelist-source-rnage"),
            Verdict::Unknown {
                family: Family::Nginx,
                suggestion: Some("nginx.ingress.kubernetes.io/whitelist-source-range".into())
            }
        );
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("tls-mode", "tls-mode"), 0);
        assert_eq!(edit_distance("tls-mdoe", "tls-mode"), 1);
        assert_eq!(edit_distance("tls-mod", "tls-mode"), 1);
        assert_eq!(edit_distance("hsts", "hst"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", ""), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn review_refuses_warns_and_names_the_key() {
        let map = annotations(&[
            ("nginx.ingress.kubernetes.io/server-snippet", "deny all;"),
            ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
            ("nginx.ingress.kubernetes.io/no-such-thing", "x"),
            ("portcullis.io/tls-mode", "terminate"),
            ("kubernetes.io/ingress.class", "portcullis"),
        ]);
        let r = review(&object(), Some(&map), UnsupportedAnnotations::Reject);
        assert!(r.refused);
        assert_eq!(r.diagnostics.len(), 3, "{:#?}", r.diagnostics);
        let error = &r.diagnostics[2];
        assert_eq!(error.severity, Severity::Error);
        assert_eq!(error.reason, Reason::UnsupportedAnnotation);
        assert_eq!(
            error.field,
            "metadata.annotations[\"nginx.ingress.kubernetes.io/server-snippet\"]"
        );
        assert!(
            error.message.contains("not even its last good version"),
            "{}",
            error.message
        );
        let unknown = &r.diagnostics[0];
        assert_eq!(unknown.severity, Severity::Warning);
        assert_eq!(unknown.reason, Reason::UnknownAnnotation);
        assert!(
            unknown.message.contains("unknown annotation"),
            "{}",
            unknown.message
        );
        assert_eq!(r.diagnostics[1].severity, Severity::Warning);
    }

    #[test]
    fn class_policy_relaxes_unsupported_but_never_our_own_typos() {
        let map = annotations(&[
            (
                "nginx.ingress.kubernetes.io/auth-proxy-set-headers",
                "default/auth-headers",
            ),
            ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
        ]);
        let warned = review(&object(), Some(&map), UnsupportedAnnotations::Warn);
        assert!(!warned.refused);
        assert_eq!(warned.diagnostics.len(), 2);
        assert!(
            warned
                .diagnostics
                .iter()
                .all(|d| d.severity == Severity::Warning)
        );
        let ignored = review(&object(), Some(&map), UnsupportedAnnotations::Ignore);
        assert_eq!(ignored, Review::default());

        let typo = annotations(&[("portcullis.io/tls-mdoe", "passthrough")]);
        for policy in [
            UnsupportedAnnotations::Reject,
            UnsupportedAnnotations::Warn,
            UnsupportedAnnotations::Ignore,
        ] {
            let r = review(&object(), Some(&typo), policy);
            assert!(r.refused, "{policy:?}");
            assert_eq!(r.diagnostics.len(), 1);
            assert_eq!(r.diagnostics[0].severity, Severity::Error);
            assert!(
                r.diagnostics[0]
                    .message
                    .contains("did you mean portcullis.io/tls-mode?"),
                "{}",
                r.diagnostics[0].message
            );
        }
    }

    #[test]
    fn no_annotations_no_review() {
        assert_eq!(
            review(&object(), None, UnsupportedAnnotations::Reject),
            Review::default()
        );
    }

    /// docs/migrating.md is this table: regenerate with
    /// `PORTCULLIS_BLESS=1 cargo test --lib annotation_catalog`.
    #[test]
    fn migrating_md_is_generated_from_the_table() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/migrating.md");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let Some((intro, _)) = text.split_once(GENERATED_MARKER) else {
            panic!(
                "{} has no marker line {GENERATED_MARKER:?}; write the intro, then the marker, \
                 then run PORTCULLIS_BLESS=1 cargo test --lib annotation_catalog",
                path.display()
            );
        };
        let expected = format!("{intro}{GENERATED_MARKER}\n\n{}", render_markdown());
        if std::env::var_os("PORTCULLIS_BLESS").is_some() {
            std::fs::write(&path, &expected).unwrap();
            return;
        }
        assert!(
            text == expected,
            "{} differs from the table in src/model/annotation_catalog.rs; regenerate it with \
             PORTCULLIS_BLESS=1 cargo test --lib annotation_catalog",
            path.display()
        );
    }
}
