//! `portcullis.io/backend-protocol` and its ingress-nginx alias `backend-protocol`: how the
//! proxy talks to the pod. ingress-nginx documents `HTTP`, `HTTPS`, `GRPC`, `GRPCS`, `AJP` and
//! `FCGI` ("how NGINX should communicate with the backend service", default `HTTP`); its gRPC
//! example terminates TLS at the ingress and sends plain gRPC (HTTP/2 without TLS) to the pod.
//! We take the first four: `http` and `grpc` imply `tls-mode: terminate`, `https` and `grpcs`
//! imply `tls-mode: reencrypt`, and the two gRPC ones make the connection to the pod HTTP/2
//! (cleartext with prior knowledge, or TLS with ALPN `h2`). `AJP` and `FCGI` are refused.

use super::Reader;
use crate::crd::HealthCheckKind;
use crate::table::route::TlsMode;

/// How requests reach the pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum BackendProtocol {
    /// HTTP/1.1 in cleartext.
    #[default]
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 in cleartext, prior knowledge (h2c).
    Grpc,
    /// HTTP/2 over TLS (ALPN `h2`).
    Grpcs,
}

impl BackendProtocol {
    /// The TLS mode this protocol implies.
    pub(crate) fn tls_mode(self) -> TlsMode {
        match self {
            BackendProtocol::Http | BackendProtocol::Grpc => TlsMode::Terminate,
            BackendProtocol::Https | BackendProtocol::Grpcs => TlsMode::Reencrypt,
        }
    }

    /// Whether the pod is spoken to over HTTP/2.
    pub(crate) fn http2(self) -> bool {
        matches!(self, BackendProtocol::Grpc | BackendProtocol::Grpcs)
    }

    /// The probe when `health-check` does not say: an HTTP/1 probe would fail against a
    /// server that speaks only HTTP/2, so gRPC backends are probed with a TCP connect (`grpc`)
    /// or a TLS handshake (`grpcs`). `class_default` (IngressClassParams) applies when it is
    /// not `http`.
    pub(crate) fn default_health(self, class_default: Option<HealthCheckKind>) -> HealthCheckKind {
        match (self, class_default) {
            (BackendProtocol::Grpc, None | Some(HealthCheckKind::Http)) => HealthCheckKind::Tcp,
            (BackendProtocol::Grpcs, None | Some(HealthCheckKind::Http)) => HealthCheckKind::Tls,
            (_, kind) => kind.unwrap_or(HealthCheckKind::Http),
        }
    }
}

/// What the Ingress asked for and through which key, so that a conflict with `tls-mode` can
/// name it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Requested {
    pub(super) protocol: BackendProtocol,
    pub(super) key: &'static str,
}

impl Reader<'_> {
    /// `portcullis.io/backend-protocol`, else `nginx.ingress.kubernetes.io/backend-protocol`
    /// (values case-insensitive; ingress-nginx spells them in capitals).
    pub(super) fn backend_protocol(&mut self) -> Option<Requested> {
        let own = own!("backend-protocol");
        if self.has_own(own) {
            let protocol = self.choice(
                own,
                &[
                    ("http", BackendProtocol::Http),
                    ("https", BackendProtocol::Https),
                    ("grpc", BackendProtocol::Grpc),
                    ("grpcs", BackendProtocol::Grpcs),
                ],
            )?;
            return Some(Requested { protocol, key: own });
        }
        let key = nginx!("backend-protocol");
        let protocol = self.choice(
            key,
            &[
                ("HTTP", Some(BackendProtocol::Http)),
                ("HTTPS", Some(BackendProtocol::Https)),
                ("GRPC", Some(BackendProtocol::Grpc)),
                ("GRPCS", Some(BackendProtocol::Grpcs)),
                ("AJP", None),
                ("FCGI", None),
            ],
        )?;
        let Some(protocol) = protocol else {
            let value = self.get(key).unwrap_or_default().to_string();
            self.invalid(
                key,
                &value,
                "HTTP, HTTPS, GRPC, GRPCS (AJP and FCGI are not supported)",
            );
            return None;
        };
        Some(Requested { protocol, key })
    }

    /// The backend protocol in force once the TLS mode is known. A protocol that contradicts
    /// `portcullis.io/tls-mode` is refused when both are our keys; the ingress-nginx alias
    /// loses to our `tls-mode` with a warning. Pass-through hosts never speak HTTP to the pod:
    /// any protocol is ignored with a warning.
    pub(super) fn settle_backend_protocol(
        &mut self,
        requested: Option<Requested>,
        tls_mode: TlsMode,
    ) -> BackendProtocol {
        let Some(Requested { protocol, key }) = requested else {
            return BackendProtocol::default();
        };
        if protocol.tls_mode() == tls_mode {
            return protocol;
        }
        if tls_mode == TlsMode::Passthrough {
            self.ignore(
                key,
                "pass-through hosts send the client's TLS stream to the pod as is",
            );
        } else if key == own!("backend-protocol") {
            let value = self.get(key).unwrap_or_default().to_string();
            self.invalid(
                key,
                &value,
                "http or grpc with tls-mode terminate, https or grpcs with tls-mode reencrypt",
            );
        } else {
            self.ignore(key, "portcullis.io/tls-mode decides the TLS mode");
        }
        BackendProtocol::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_backends_are_not_probed_with_http_unless_asked() {
        assert_eq!(
            BackendProtocol::Grpc.default_health(None),
            HealthCheckKind::Tcp
        );
        assert_eq!(
            BackendProtocol::Grpcs.default_health(Some(HealthCheckKind::Http)),
            HealthCheckKind::Tls
        );
        assert_eq!(
            BackendProtocol::Grpc.default_health(Some(HealthCheckKind::None)),
            HealthCheckKind::None
        );
        assert_eq!(
            BackendProtocol::Http.default_health(None),
            HealthCheckKind::Http
        );
    }
}
