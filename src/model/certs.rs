//! Secrets → certificates and CA bundles, with each Secret's last good version kept when it
//! goes missing or bad; `--cert-dir` files → certificates chosen by SAN.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use rustls_pki_types::CertificateDer;

use super::FastMap;
use crate::source::CertFile;
use crate::table::certificates::{Certificate, parse_ca_bundle};
use crate::table::client_auth::ClientCa;
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};

/// What a Secret is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum SecretUse {
    /// `tls.crt` + `tls.key`.
    Tls,
    /// `ca.crt`.
    Ca,
    /// `ca.crt` and optional `ca.crl`: the CA that verifies client certificates.
    ClientCa,
}

/// A Secret that parsed OK once, with the bytes it was parsed from (to skip re-parsing).
/// The bytes are shared: every build hands the same copy on to the next.
#[derive(Debug, Clone)]
pub(super) struct GoodSecret {
    bytes: Arc<[Vec<u8>]>,
    parsed: Parsed,
}

/// Shared, because each build passes it through three caches (this build's outcomes, the next
/// build's last good versions, the table) and a `Certificate` clone copies its metadata.
#[derive(Debug, Clone)]
enum Parsed {
    Certificate(Arc<Certificate>),
    Ca(Arc<Vec<CertificateDer<'static>>>),
    ClientCa(Arc<ClientCa>),
}

/// `(namespace, name, use)`.
pub(super) type SecretKey = (String, String, SecretUse);

/// The outcome of reading one Secret, cached for the build.
#[derive(Debug, Clone)]
enum Outcome {
    Good(Parsed),
    /// `(reason, message)`; the last good version, if any, is served.
    Bad(Reason, String, Option<Parsed>),
}

/// Secrets indexed by namespace and name, with the previous build's good versions.
pub(super) struct Secrets<'a> {
    secrets: FastMap<(&'a str, &'a str), &'a Secret>,
    previous: &'a FastMap<SecretKey, GoodSecret>,
    /// The last good versions to hand to the next build: every Secret referenced this build.
    pub(crate) next: FastMap<SecretKey, GoodSecret>,
    outcomes: FastMap<SecretKey, Outcome>,
}

impl<'a> Secrets<'a> {
    pub(crate) fn new(
        secrets: &'a [Arc<Secret>],
        previous: &'a FastMap<SecretKey, GoodSecret>,
        in_scope: impl Fn(Option<&str>) -> bool,
    ) -> Self {
        let mut index = FastMap::with_capacity_and_hasher(secrets.len(), Default::default());
        for secret in secrets {
            let meta = &secret.metadata;
            if let (Some(ns), Some(name)) = (Some(super::namespace_of(meta)), meta.name.as_deref())
                && in_scope(Some(ns))
            {
                index.insert((ns, name), &**secret);
            }
        }
        Secrets {
            secrets: index,
            previous,
            next: FastMap::with_capacity_and_hasher(previous.len(), Default::default()),
            outcomes: FastMap::with_capacity_and_hasher(previous.len(), Default::default()),
        }
    }

    /// The certificate in Secret `namespace/name`, or its last good version, or `None` (serve
    /// the default certificate). Problems are reported on `referrer`/`field`.
    pub(crate) fn certificate(
        &mut self,
        namespace: &str,
        name: &str,
        referrer: &ObjectRef,
        field: &str,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Certificate> {
        match self.read(
            namespace,
            name,
            SecretUse::Tls,
            referrer,
            field,
            diagnostics,
        )? {
            Parsed::Certificate(c) => Some(Certificate::clone(&c)),
            Parsed::Ca(_) | Parsed::ClientCa(_) => None,
        }
    }

    /// The CA bundle in Secret `namespace/name` (`ca.crt`), or its last good version.
    pub(crate) fn ca_bundle(
        &mut self,
        namespace: &str,
        name: &str,
        referrer: &ObjectRef,
        field: &str,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Arc<Vec<CertificateDer<'static>>>> {
        match self.read(namespace, name, SecretUse::Ca, referrer, field, diagnostics)? {
            Parsed::Ca(ca) => Some(ca),
            Parsed::Certificate(_) | Parsed::ClientCa(_) => None,
        }
    }

    /// The client-certificate CA in Secret `namespace/name` (`ca.crt`, optional `ca.crl`), or
    /// its last good version; `None` (with an error diagnostic) when there is neither.
    pub(crate) fn client_ca(
        &mut self,
        namespace: &str,
        name: &str,
        referrer: &ObjectRef,
        field: &str,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Arc<ClientCa>> {
        match self.read(
            namespace,
            name,
            SecretUse::ClientCa,
            referrer,
            field,
            diagnostics,
        )? {
            Parsed::ClientCa(ca) => Some(ca),
            Parsed::Certificate(_) | Parsed::Ca(_) => None,
        }
    }

    /// Secret `namespace/name` as the snapshot holds it, for readers with their own format
    /// (`model::basic_auth`), which keep no last good version.
    pub(crate) fn raw(&self, namespace: &str, name: &str) -> Option<&'a Secret> {
        self.secrets.get(&(namespace, name)).copied()
    }

    fn read(
        &mut self,
        namespace: &str,
        name: &str,
        usage: SecretUse,
        referrer: &ObjectRef,
        field: &str,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<Parsed> {
        match self.outcome(namespace, name, usage) {
            Outcome::Good(parsed) => Some(parsed),
            Outcome::Bad(reason, message, kept) => {
                let what = match usage {
                    SecretUse::Tls => "certificate",
                    SecretUse::Ca => "CA bundle",
                    SecretUse::ClientCa => "client CA",
                };
                let fallback = match (&kept, usage) {
                    (Some(_), _) => "",
                    // The default certificate itself: the proxy's self-signed one is served.
                    (None, SecretUse::Tls) if referrer.kind == "Secret" => {
                        "; the proxy's self-signed certificate is served instead"
                    }
                    (None, SecretUse::Tls) => "; serving the default certificate",
                    (None, SecretUse::Ca) => "; no CA bundle loaded",
                    (None, SecretUse::ClientCa) => "; the Ingress is not served",
                };
                let text = format!("Secret {namespace}/{name}: {message}{fallback}");
                diagnostics.push(match reason {
                    // A missing certificate falls back to the default one; a missing CA
                    // leaves the backend unverifiable as asked.
                    Reason::MissingSecret if usage == SecretUse::Tls => {
                        Diagnostic::warning(referrer.clone(), field, reason, text)
                    }
                    _ => Diagnostic::error(referrer.clone(), field, reason, text),
                });
                if kept.is_some() {
                    diagnostics.push(Diagnostic::warning(
                        referrer.clone(),
                        field,
                        Reason::LastGoodKept,
                        format!("serving the last good {what} of Secret {namespace}/{name}"),
                    ));
                }
                kept
            }
        }
    }

    /// Why Secret `namespace/name` cannot serve as a certificate (missing, `tls.crt`/`tls.key`
    /// absent or not parsing), or `None` when it can — or when its last good version is kept,
    /// which [`Self::certificate`] serves and reports. Parsed once per build, as there.
    pub(crate) fn certificate_problem(&mut self, namespace: &str, name: &str) -> Option<String> {
        match self.outcome(namespace, name, SecretUse::Tls) {
            Outcome::Bad(_, message, None) => Some(message),
            Outcome::Good(_) | Outcome::Bad(_, _, Some(_)) => None,
        }
    }

    /// Reading Secret `namespace/name` as `usage`, parsed at its first use in the build.
    fn outcome(&mut self, namespace: &str, name: &str, usage: SecretUse) -> Outcome {
        let key: SecretKey = (namespace.to_string(), name.to_string(), usage);
        if let Some(outcome) = self.outcomes.get(&key) {
            return outcome.clone();
        }
        let outcome = self.parse(&key);
        self.outcomes.insert(key, outcome.clone());
        outcome
    }

    fn parse(&mut self, key: &SecretKey) -> Outcome {
        let (namespace, name, usage) = key;
        let previous = self.previous.get(key);
        let kept = |reason, message: String| {
            Outcome::Bad(reason, message, previous.map(|p| p.parsed.clone()))
        };
        let Some(secret) = self.secrets.get(&(namespace.as_str(), name.as_str())) else {
            if let Some(p) = previous {
                self.next.insert(key.clone(), p.clone());
            }
            let message = match usage {
                SecretUse::Tls => "does not exist",
                // In a cluster only labelled Opaque Secrets are watched: say which label.
                SecretUse::Ca | SecretUse::ClientCa => {
                    "does not exist (in a cluster, an Opaque CA Secret is watched only when \
                     labelled portcullis.io/backend-ca: \"true\")"
                }
            };
            return kept(Reason::MissingSecret, message.to_string());
        };
        let bytes = match secret_bytes(secret, *usage) {
            Ok(bytes) => bytes,
            Err(message) => {
                if let Some(p) = previous {
                    self.next.insert(key.clone(), p.clone());
                }
                return kept(Reason::InvalidSecret, message);
            }
        };
        if let Some(p) = previous
            && p.bytes.len() == bytes.len()
            && p.bytes.iter().zip(&bytes).all(|(a, b)| a.as_slice() == *b)
        {
            self.next.insert(key.clone(), p.clone());
            return Outcome::Good(p.parsed.clone());
        }
        let source = format!("Secret {namespace}/{name}");
        let parsed = match usage {
            SecretUse::Tls => Certificate::from_pem(bytes[0], bytes[1], &source)
                .map(|c| Parsed::Certificate(Arc::new(c))),
            SecretUse::Ca => parse_ca_bundle(bytes[0]).map(|ca| Parsed::Ca(Arc::new(ca))),
            SecretUse::ClientCa => {
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                match ClientCa::parse(bytes[0], bytes.get(1).copied(), provider) {
                    Ok(ca) => Ok(Parsed::ClientCa(Arc::new(ca))),
                    Err(message) => {
                        if let Some(p) = previous {
                            self.next.insert(key.clone(), p.clone());
                        }
                        return kept(Reason::InvalidSecret, message);
                    }
                }
            }
        };
        match parsed {
            Ok(parsed) => {
                self.next.insert(
                    key.clone(),
                    GoodSecret {
                        bytes: bytes.iter().map(|b| b.to_vec()).collect(),
                        parsed: parsed.clone(),
                    },
                );
                Outcome::Good(parsed)
            }
            Err(e) => {
                if let Some(p) = previous {
                    self.next.insert(key.clone(), p.clone());
                }
                let field = match usage {
                    SecretUse::Tls => "tls.crt/tls.key",
                    SecretUse::Ca | SecretUse::ClientCa => "ca.crt",
                };
                kept(Reason::InvalidSecret, format!("{field}: {e}"))
            }
        }
    }
}

/// The bytes of the keys `usage` needs (`tls.crt`, `tls.key` / `ca.crt`). `stringData` is merged
/// over `data`, as the API server does.
fn secret_bytes(secret: &Secret, usage: SecretUse) -> Result<Vec<&[u8]>, String> {
    let type_ = secret.type_.as_deref().unwrap_or("Opaque");
    let keys: &[&str] = match usage {
        SecretUse::Tls => {
            if type_ != "kubernetes.io/tls" && type_ != "Opaque" {
                return Err(format!(
                    "type {type_} cannot hold a certificate (accepted: kubernetes.io/tls, Opaque)"
                ));
            }
            &["tls.crt", "tls.key"]
        }
        SecretUse::Ca => &["ca.crt"],
        SecretUse::ClientCa => &["ca.crt"],
    };
    let mut found = keys
        .iter()
        .map(|key| match secret_value(secret, key) {
            Some(bytes) => Ok(bytes),
            None => Err(format!("has no {key}")),
        })
        .collect::<Result<Vec<&[u8]>, String>>()?;
    // Optional, after the required ones.
    if usage == SecretUse::ClientCa
        && let Some(crl) = secret_value(secret, "ca.crl")
    {
        found.push(crl);
    }
    Ok(found)
}

/// The non-empty value of `key`: `stringData` over `data`.
fn secret_value<'s>(secret: &'s Secret, key: &str) -> Option<&'s [u8]> {
    let from_string = secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes());
    let from_data = || {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.as_slice())
    };
    from_string.or_else(from_data).filter(|b| !b.is_empty())
}

/// Parses the `--cert-dir` files, sorted by path; bad files are reported and skipped.
pub(super) fn cert_dir(
    files: &[Arc<CertFile>],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<Certificate> {
    let mut sorted: Vec<&CertFile> = files.iter().map(|f| &**f).collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Vec::new();
    for file in sorted {
        match Certificate::from_pem(&file.pem, &file.pem, &file.path) {
            Ok(cert) => out.push(cert),
            Err(e) => diagnostics.push(Diagnostic::error(
                ObjectRef::cluster("File", &file.path),
                "pem",
                Reason::InvalidSecret,
                format!("certificate bundle not loaded: {e}"),
            )),
        }
    }
    out
}

/// The `--cert-dir` certificate for `host` (`foo.example.com` or `*.example.com`): an exact SAN
/// first, then a one-label wildcard SAN.
pub(super) fn pick_from_dir<'c>(dir: &'c [Certificate], host: &str) -> Option<&'c Certificate> {
    dir.iter()
        .find(|c| c.covers(host, true))
        .or_else(|| dir.iter().find(|c| c.covers(host, false)))
}
