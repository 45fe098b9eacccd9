//! Diagnostics are data: the model produces them, whoever runs the model publishes them
//! (Kubernetes Events and status in a cluster, log lines and `check` output standalone).

use std::fmt;

use serde::Serialize;

/// How bad a diagnostic is. An `Error` means something the user asked for is not served as asked
/// (and makes `portcullis check` exit 1); a `Warning` means it is served, with a fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// The Kubernetes object (or manifest file) a diagnostic is about, so it can be shown to the
/// user who owns it: as an Event on that object in a cluster, or by name in `check` output.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    /// `Ingress`, `Secret`, `Service`, `IngressClass`, `IngressClassParams`, `EndpointSlice`, or
    /// `File` for a manifest or certificate file that could not be read.
    pub kind: String,
    pub(crate) namespace: Option<String>,
    pub name: String,
}

impl ObjectRef {
    /// A reference to a namespaced object.
    pub fn namespaced(kind: &str, namespace: &str, name: &str) -> Self {
        ObjectRef {
            kind: kind.to_string(),
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
        }
    }

    /// A reference to a cluster-scoped object (or a file, whose `name` is its path).
    pub fn cluster(kind: &str, name: &str) -> Self {
        ObjectRef {
            kind: kind.to_string(),
            namespace: None,
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{} {}/{}", self.kind, ns, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

/// Why a diagnostic was raised: a closed set, so it can label a metric and name an Event reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Reason {
    /// A manifest file could not be read or parsed.
    InvalidManifest,
    /// An annotation has a value outside its accepted set.
    InvalidAnnotation,
    /// A field of the Ingress spec is invalid (bad host, bad path, missing backend...).
    InvalidSpec,
    /// A referenced Secret does not exist.
    MissingSecret,
    /// A referenced Secret exists but is not usable (wrong type, bad PEM, key does not match).
    InvalidSecret,
    /// A backend Service does not exist.
    MissingService,
    /// A backend Service exists but has no such port.
    MissingServicePort,
    /// A host or host+path is claimed by an older Ingress.
    Conflict,
    /// A terminated host has no certificate of its own and is served the default certificate.
    DefaultCertificate,
    /// The class-wide policy (IngressClassParams) forbids what the Ingress asks for.
    NotAllowed,
    /// An IngressClassParams object is invalid.
    InvalidParams,
    /// A previously good version of the object is still being served.
    LastGoodKept,
    /// An annotation Portcullis knows but does not support (docs/migrating.md): as an error,
    /// the Ingress is refused (not served at all); as a warning, it is served without it.
    UnsupportedAnnotation,
    /// An annotation under one of the prefixes Portcullis answers for that is in none of its
    /// tables: under `portcullis.io/` an error that refuses the Ingress (a typo), elsewhere a
    /// warning.
    UnknownAnnotation,
    /// An object of an API version Kubernetes removed (an `extensions/v1beta1` or
    /// `networking.k8s.io/v1beta1` Ingress in a manifest): not read, so not served.
    UnsupportedApiVersion,
    // Gateway API: the reasons of the spec's conditions, so that a diagnostic reads like the
    // status a cluster shows.
    /// A cross-namespace reference no ReferenceGrant permits.
    RefNotPermitted,
    /// No listener of the parent Gateway lets this route in (kind or namespace).
    NotAllowedByListeners,
    /// The route's hostnames and its listeners' have nothing in common.
    NoMatchingListenerHostname,
    /// A `parentRef` names no listener (section name or port) of a Gateway of ours.
    NoMatchingParent,
    /// A listener's certificate reference is not a usable Secret.
    InvalidCertificateRef,
    /// A reference to a kind Portcullis does not route to (a backend that is not a Service,
    /// a listener's route kind that is not HTTPRoute or TLSRoute).
    InvalidKind,
    /// A listener protocol or TLS mode Portcullis does not serve.
    UnsupportedProtocol,
    /// A field value Portcullis does not implement (a filter type, a match type).
    UnsupportedValue,
}

impl Reason {
    /// Stable label for metrics and the Event `reason` field.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::InvalidManifest => "InvalidManifest",
            Reason::InvalidAnnotation => "InvalidAnnotation",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::MissingSecret => "MissingSecret",
            Reason::InvalidSecret => "InvalidSecret",
            Reason::MissingService => "MissingService",
            Reason::MissingServicePort => "MissingServicePort",
            Reason::Conflict => "Conflict",
            Reason::DefaultCertificate => "DefaultCertificate",
            Reason::NotAllowed => "NotAllowed",
            Reason::InvalidParams => "InvalidParams",
            Reason::LastGoodKept => "LastGoodKept",
            Reason::UnsupportedAnnotation => "UnsupportedAnnotation",
            Reason::UnknownAnnotation => "UnknownAnnotation",
            Reason::UnsupportedApiVersion => "UnsupportedApiVersion",
            Reason::RefNotPermitted => "RefNotPermitted",
            Reason::NotAllowedByListeners => "NotAllowedByListeners",
            Reason::NoMatchingListenerHostname => "NoMatchingListenerHostname",
            Reason::NoMatchingParent => "NoMatchingParent",
            Reason::InvalidCertificateRef => "InvalidCertificateRef",
            Reason::InvalidKind => "InvalidKind",
            Reason::UnsupportedProtocol => "UnsupportedProtocol",
            Reason::UnsupportedValue => "UnsupportedValue",
        }
    }
}

/// One problem found while building the routing table, naming the object and field at fault.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Diagnostic {
    pub object: ObjectRef,
    /// Path of the offending field, e.g. `metadata.annotations["portcullis.io/tls-mode"]` or
    /// `spec.rules[0].http.paths[1].backend.service.port`; for a file, `line 12`.
    pub field: String,
    pub message: String,
    pub severity: Severity,
    pub reason: Reason,
}

impl Diagnostic {
    /// An error: something asked for is not served as asked.
    pub fn error(
        object: ObjectRef,
        field: impl Into<String>,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            object,
            field: field.into(),
            message: message.into(),
            severity: Severity::Error,
            reason,
        }
    }

    /// A warning: served, with a fallback.
    pub fn warning(
        object: ObjectRef,
        field: impl Into<String>,
        reason: Reason,
        message: impl Into<String>,
    ) -> Self {
        Diagnostic {
            object,
            field: field.into(),
            message: message.into(),
            severity: Severity::Warning,
            reason,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(
            f,
            "{level}: {} {}: {} ({})",
            self.object,
            self.field,
            self.message,
            self.reason.as_str()
        )
    }
}
