//! Client certificate authentication per request (ingress-nginx annotations.md, "Client
//! Certificate Authentication"): the connection's handshake result
//! ([`ClientCertificate`]) judged against the host the request names.
//!
//! - **No bypass**: a request for a host that asks for client certificates is served only on
//!   a connection whose handshake asked for them on the same terms (mode, depth, CA and CRLs);
//!   any other connection (its SNI named another host, or none, or the host's CA has rotated
//!   since) gets `421 Misdirected Request` and is closed, so the client's retry handshakes
//!   for the host it names. Over HTTP/2 this also covers connection reuse (coalescing).
//! - **Refused** (as nginx): `400` "No required SSL certificate was sent" / "The SSL
//!   certificate error", or `302` to `auth-tls-error-page`.
//! - **Admitted**: the pod gets `ssl-client-verify` (`SUCCESS`, `NONE`, `FAILED:reason`),
//!   `ssl-client-subject-dn` and `ssl-client-issuer-dn` when a certificate was presented, and
//!   `ssl-client-cert` (the URL-encoded PEM) when `auth-tls-pass-certificate-to-upstream`.
//!   The client's own values of these headers never reach the pod of such a host.
//!
//! Plain HTTP (:80) to such a host is judged as a connection without a certificate (unless
//! the host redirects :80 to HTTPS, which answers first).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use rustls::pki_types::{CertificateDer, UnixTime};

use super::ConnInfo;
use super::body::{ResponseBody, own_response};
use crate::table::VirtualHost;
use crate::table::client_auth::{ClientAuth, ClientStatus, ClientVerification};

const VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
const SUBJECT: HeaderName = HeaderName::from_static("ssl-client-subject-dn");
const ISSUER: HeaderName = HeaderName::from_static("ssl-client-issuer-dn");
const CERT: HeaderName = HeaderName::from_static("ssl-client-cert");

/// What a connection's handshake established about its client certificate: the terms it was
/// asked under and what was found.
#[derive(Debug)]
pub(crate) struct ClientCertificate {
    auth: Arc<ClientAuth>,
    verification: ClientVerification,
}

impl ClientCertificate {
    /// Verifies the chain the client presented (`None`: none) under `auth`, now.
    pub(super) fn verify(
        auth: &Arc<ClientAuth>,
        chain: Option<&[CertificateDer<'_>]>,
    ) -> ClientCertificate {
        ClientCertificate {
            auth: Arc::clone(auth),
            verification: auth.verify_chain(chain, UnixTime::now()),
        }
    }
}

/// The verdict for one request.
pub(super) enum Access<'a> {
    /// The host asks for no client certificate.
    NotAsked,
    /// Served; the pod gets these headers ([`set_headers`]).
    Admitted(&'a ClientAuth, Option<&'a ClientVerification>),
    /// The connection was not made for this host's terms: 421, and close it.
    Misdirected,
    /// Refused: the answer to send.
    Refused(Response<ResponseBody>),
}

/// Judges a request for `vhost` on connection `conn`.
pub(super) fn check<'a>(vhost: &'a VirtualHost, conn: &'a ConnInfo) -> Access<'a> {
    let Some(required) = vhost.client_auth.as_deref() else {
        return Access::NotAsked;
    };
    let verification = match &conn.tls {
        // :80: no handshake, so no certificate.
        None => None,
        Some(tls) => match tls.client_cert.as_deref() {
            Some(found) if found.auth.same_terms(required) => Some(&found.verification),
            _ => return Access::Misdirected,
        },
    };
    let refusal = match verification {
        Some(v) => required.refusal(v),
        None => required.refusal(&ClientVerification {
            status: ClientStatus::None,
            subject: None,
            issuer: None,
            pem: None,
        }),
    };
    match refusal {
        None => Access::Admitted(required, verification),
        Some(message) => Access::Refused(refused(required, message)),
    }
}

/// nginx's answer to a refused certificate: `302` to the error page when there is one
/// (ingress-nginx: `error_page 495 496 = URL`), else `400` with nginx's reason.
fn refused(auth: &ClientAuth, message: &'static str) -> Response<ResponseBody> {
    if let Some(page) = &auth.error_page
        && let Ok(location) = HeaderValue::from_str(page)
    {
        let mut response = Response::new(own_response(Bytes::new()));
        *response.status_mut() = StatusCode::FOUND;
        let headers = response.headers_mut();
        headers.insert(header::LOCATION, location);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        return response;
    }
    let body = format!("400 Bad Request: {message}\n");
    let len = body.len();
    let mut response = Response::new(own_response(Bytes::from(body)));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    response
}

/// Sets the `ssl-client-*` headers of an admitted request, replacing the client's.
pub(super) fn set_headers(
    auth: &ClientAuth,
    verification: Option<&ClientVerification>,
    headers: &mut HeaderMap,
) {
    for name in [&VERIFY, &SUBJECT, &ISSUER, &CERT] {
        headers.remove(name);
    }
    let status = verification.map_or(ClientStatus::None, |v| v.status.clone());
    if let Ok(value) = HeaderValue::from_str(&status.header_value()) {
        headers.insert(VERIFY, value);
    }
    let Some(v) = verification else {
        return;
    };
    let values = [
        (SUBJECT, v.subject.as_deref()),
        (ISSUER, v.issuer.as_deref()),
        (CERT, v.pem.as_deref().filter(|_| auth.pass_certificate)),
    ];
    for (name, value) in values {
        if let Some(value) = value.and_then(|s| HeaderValue::from_str(s).ok()) {
            headers.insert(name, value);
        }
    }
}
