//! The live status page on the admin listener, in the spirit of HAProxy's stats page.
//!
//! | path | answer |
//! |---|---|
//! | `/` | the page (HTML, no inline script or style) |
//! | `/status.js` | its script: polls [`API_PATH`] every second, renders with DOM calls only |
//! | `/status.css` | its style sheet |
//! | `/api/v1/status` | the versioned JSON document (`status_api.rs`) |
//!
//! Every answer carries a strict `Content-Security-Policy` (scripts, styles and fetches from the
//! admin origin only; images from it or `data:`; no frames, forms or `<base>`): the page works
//! offline and, even if a value in the table (a host, a diagnostic message) carried markup, the
//! browser would run nothing but `status.js`, which writes values with `textContent` only.
//! Read-only: the admin endpoint answers 405 to anything but GET and HEAD.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::rebuild::Status;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::status_api::{self, API_PATH, LiveSources};

/// The page's policy: nothing from anywhere but the admin origin (and `data:` images, for the
/// empty favicon).
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

const PAGE: &str = include_str!("status_page/index.html");
const SCRIPT: &str = include_str!("status_page/status.js");
const STYLE: &str = include_str!("status_page/status.css");

/// The answer for `path`, when it is one of the status page's; `None` otherwise. Takes the
/// admin endpoint's state piecewise, so this file does not name `admin.rs` (which calls it).
pub(crate) fn respond(
    path: &str,
    status: &Status,
    metrics: &Metrics,
    live: &LiveSources,
) -> Option<Response<Full<Bytes>>> {
    let (content_type, body): (&'static str, Bytes) = match path {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            Bytes::from_static(PAGE.as_bytes()),
        ),
        "/status.js" => (
            "text/javascript; charset=utf-8",
            Bytes::from_static(SCRIPT.as_bytes()),
        ),
        "/status.css" => (
            "text/css; charset=utf-8",
            Bytes::from_static(STYLE.as_bytes()),
        ),
        API_PATH => (
            "application/json",
            Bytes::from(status_api::render(status, metrics, live)),
        ),
        _ => return None,
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, content_type),
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        // Live data: never from a cache; the assets are tiny.
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        // The policy forbids them: the page must reference its assets only.
        assert!(PAGE.contains(r#"<script src="/status.js""#));
        assert!(PAGE.contains(r#"href="/status.css""#));
        assert!(!PAGE.contains("<style"));
        assert!(!PAGE.contains(" style="));
        assert!(!PAGE.contains("<script>"));
        assert!(!SCRIPT.contains("innerHTML"), "values are written as text");
    }
}
