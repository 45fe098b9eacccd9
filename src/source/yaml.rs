//! Standalone source, the pure half: one manifest file's text → typed Kubernetes objects.
//! (Watching the directory lives in `source::directory`.)
//!
//! A file holds one or more YAML documents separated by `---` lines. Each document is read
//! twice: once for its `apiVersion`/`kind` (to skip kinds Portcullis does not read), once as the
//! typed object, so a type error points at the right line of the right document.
//!
//! A document may also be a list, as `kubectl get ... -o yaml` prints one: `kind: List` (each
//! item a full object) or `kind: IngressList`, `ServiceList`... (items may leave out their
//! `apiVersion` and `kind`, which the list's then give). Its items are read like documents.
//!
//! An Ingress (or IngressClass) of an API version removed from Kubernetes
//! (`extensions/v1beta1`, `networking.k8s.io/v1beta1`) is not skipped silently: it becomes an
//! [`Object::Unreadable`], an error diagnostic naming it, the file and the version to use.

use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{Objects, Snapshot};
use crate::crd::IngressClassParams;
use crate::gateway_api::{
    BackendTLSPolicy, GRPCRoute, Gateway, GatewayClass, HTTPRoute, ReferenceGrant, TLSRoute,
};
use crate::table::diagnostic::{Diagnostic, ObjectRef, Reason};

/// One object the model reads, from any source. Shared: a parsed file keeps its objects, and
/// every snapshot taken while the file is unchanged points at the same ones.
#[derive(Debug, Clone)]
pub enum Object {
    Ingress(Arc<Ingress>),
    IngressClass(Arc<IngressClass>),
    Secret(Arc<Secret>),
    Service(Arc<Service>),
    EndpointSlice(Arc<EndpointSlice>),
    IngressClassParams(Arc<IngressClassParams>),
    ConfigMap(Arc<ConfigMap>),
    Namespace(Arc<Namespace>),
    GatewayClass(Arc<GatewayClass>),
    Gateway(Arc<Gateway>),
    HTTPRoute(Arc<HTTPRoute>),
    GRPCRoute(Arc<GRPCRoute>),
    TLSRoute(Arc<TLSRoute>),
    BackendTLSPolicy(Arc<BackendTLSPolicy>),
    ReferenceGrant(Arc<ReferenceGrant>),
    /// An object Portcullis recognises but cannot read (an Ingress of a removed API version),
    /// kept as its error diagnostic: the file's other objects still count, and the problem
    /// is reported with them instead of the object vanishing.
    Unreadable(Arc<Diagnostic>),
}

/// The type header every Kubernetes manifest document starts with.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TypeHeader {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// The part of a list `check` reads: its items, each kept as plain data until its own
/// header says what it is.
#[derive(Deserialize)]
struct ListDocument {
    #[serde(default)]
    items: Option<Vec<serde_json::Value>>,
}

/// The name of an object read only to be named in a diagnostic.
#[derive(Default, Deserialize)]
struct NameOnly {
    #[serde(default)]
    metadata: Option<NameOnlyMeta>,
}

#[derive(Default, Deserialize)]
struct NameOnlyMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// What one document or list item is read from.
enum Input<'a> {
    /// A YAML document's text (errors carry a line within it).
    Text(&'a str),
    /// A list item, already parsed.
    Item(&'a serde_json::Value),
}

/// A failed read: the line within the document (if known) and the reason.
type ReadError = (Option<u64>, String);

impl Input<'_> {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, ReadError> {
        match self {
            Input::Text(text) => serde_saphyr::from_str::<T>(text)
                .map_err(|e| (e.location().map(|l| l.line()), error_text(&e))),
            Input::Item(value) => T::deserialize(*value).map_err(|e| (None, e.to_string())),
        }
    }
}

/// API versions of Ingress and IngressClass that Kubernetes 1.22 removed.
const REMOVED_NETWORKING_APIS: [&str; 2] = ["extensions/v1beta1", "networking.k8s.io/v1beta1"];

/// The Gateway API versions read: v1 (standard channel), and the beta and alpha versions a
/// manifest written for an older release still carries (same fields for what we read).
const GATEWAY_API_VERSIONS: [&str; 4] = [
    "gateway.networking.k8s.io/v1",
    "gateway.networking.k8s.io/v1beta1",
    "gateway.networking.k8s.io/v1alpha3",
    "gateway.networking.k8s.io/v1alpha2",
];

/// Parses one manifest file (possibly several `---` documents, and lists). Kinds Portcullis
/// does not read (Deployments, ConfigMaps...) are skipped. Any document (or list item) that
/// fails to parse makes the whole file an error, a diagnostic naming the file (`ObjectRef` kind
/// `File`) and the line, so the caller keeps the file's last good objects.
pub fn parse_manifest(path: &str, text: &str) -> Result<Vec<Object>, Box<Diagnostic>> {
    let mut objects = Vec::new();
    for (first_line, document) in documents(text) {
        let fail = |line: Option<u64>, reason: String| {
            let line = first_line + line.unwrap_or(1).max(1) as usize - 1;
            Box::new(Diagnostic::error(
                ObjectRef::cluster("File", path),
                format!("line {line}"),
                Reason::InvalidManifest,
                reason,
            ))
        };
        let header: Option<TypeHeader> = serde_saphyr::from_str(document)
            .map_err(|e| fail(e.location().map(|l| l.line()), error_text(&e)))?;
        let Some(TypeHeader { api_version, kind }) = header else {
            continue; // an empty document
        };
        let (Some(api_version), Some(kind)) = (api_version, kind) else {
            return Err(fail(None, "document has no apiVersion or no kind".into()));
        };
        let whereabouts = || format!("{path}, document at line {first_line}");
        let Some(item_kind) = list_item_kind(&kind) else {
            let input = Input::Text(document);
            let object = read_object(&api_version, &kind, &input, &whereabouts)
                .map_err(|(line, reason)| fail(line, reason))?;
            objects.extend(object);
            continue;
        };
        // `List` must be a list (`items: []` or none at all: nothing in it); any other `…List`
        // kind that does not look like one is some kind Portcullis does not read, skipped like
        // the others.
        let strict = kind == "List";
        let items = match Input::Text(document).decode::<ListDocument>() {
            Ok(ListDocument { items: Some(items) }) => items,
            Err((line, reason)) if strict => return Err(fail(line, reason)),
            Ok(ListDocument { items: None }) | Err(_) => continue,
        };
        for (index, item) in items.iter().enumerate() {
            let in_item = |reason: String| fail(None, format!("items[{index}]: {reason}"));
            let header: TypeHeader = match Input::Item(item).decode() {
                Ok(header) => header,
                Err((_, reason)) if strict => return Err(in_item(reason)),
                Err(_) => continue,
            };
            // A typed list (`IngressList`) may leave the items' type out; `List` may not.
            let api_version = header
                .api_version
                .or_else(|| item_kind.map(|_| api_version.clone()));
            let kind = header.kind.or_else(|| item_kind.map(str::to_string));
            let (Some(api_version), Some(kind)) = (api_version, kind) else {
                return Err(in_item("list item has no apiVersion or no kind".into()));
            };
            let whereabouts = || format!("{path}, items[{index}] of the list at line {first_line}");
            let object = read_object(&api_version, &kind, &Input::Item(item), &whereabouts)
                .map_err(|(_, reason)| in_item(format!("{kind} {reason}")))?;
            objects.extend(object);
        }
    }
    Ok(objects)
}

/// For a list kind, the kind of its items: `Some(None)` for `List` (items carry their own),
/// `Some(Some("Ingress"))` for `IngressList`; `None` for a kind that is not a list.
fn list_item_kind(kind: &str) -> Option<Option<&str>> {
    match kind {
        "List" => Some(None),
        _ => kind
            .strip_suffix("List")
            .filter(|k| k.starts_with(|c: char| c.is_ascii_uppercase()))
            .map(Some),
    }
}

/// Reads one object of a kind the model reads; `None` for every other kind. `whereabouts`
/// names the file and document for the diagnostic of an object that cannot be read.
fn read_object(
    api_version: &str,
    kind: &str,
    input: &Input<'_>,
    whereabouts: &dyn Fn() -> String,
) -> Result<Option<Object>, ReadError> {
    let object = match (api_version, kind) {
        ("networking.k8s.io/v1", "Ingress") => Object::Ingress(Arc::new(input.decode()?)),
        ("networking.k8s.io/v1", "IngressClass") => Object::IngressClass(Arc::new(input.decode()?)),
        ("v1", "Secret") => {
            let mut secret: Secret = input.decode()?;
            merge_string_data(&mut secret);
            Object::Secret(Arc::new(secret))
        }
        ("v1", "Service") => Object::Service(Arc::new(input.decode()?)),
        ("v1", "ConfigMap") => Object::ConfigMap(Arc::new(input.decode()?)),
        ("v1", "Namespace") => Object::Namespace(Arc::new(input.decode()?)),
        (version, kind) if GATEWAY_API_VERSIONS.contains(&version) => match kind {
            "GatewayClass" => Object::GatewayClass(Arc::new(input.decode()?)),
            "Gateway" => Object::Gateway(Arc::new(input.decode()?)),
            "HTTPRoute" => Object::HTTPRoute(Arc::new(input.decode()?)),
            "GRPCRoute" => Object::GRPCRoute(Arc::new(input.decode()?)),
            "TLSRoute" => Object::TLSRoute(Arc::new(input.decode()?)),
            "BackendTLSPolicy" => Object::BackendTLSPolicy(Arc::new(input.decode()?)),
            "ReferenceGrant" => Object::ReferenceGrant(Arc::new(input.decode()?)),
            _ => return Ok(None),
        },
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::EndpointSlice(Arc::new(input.decode()?))
        }
        ("portcullis.io/v1alpha1", "IngressClassParams") => {
            Object::IngressClassParams(Arc::new(input.decode()?))
        }
        (version, "Ingress" | "IngressClass") if REMOVED_NETWORKING_APIS.contains(&version) => {
            let named: NameOnly = input.decode().unwrap_or_default();
            let meta = named.metadata.unwrap_or_default();
            let name = meta.name.unwrap_or_else(|| "(unnamed)".to_string());
            let object = if kind == "Ingress" {
                let namespace = meta.namespace.unwrap_or_else(|| "default".to_string());
                ObjectRef::namespaced(kind, &namespace, &name)
            } else {
                ObjectRef::cluster(kind, &name)
            };
            Object::Unreadable(Arc::new(Diagnostic::error(
                object,
                "apiVersion",
                Reason::UnsupportedApiVersion,
                format!(
                    "{version} {kind} (in {}) is not read: that API was removed in Kubernetes \
                     1.22; write it as networking.k8s.io/v1 (for an Ingress: serviceName/servicePort \
                     become service.name/service.port, spec.backend becomes spec.defaultBackend, \
                     and every path needs a pathType)",
                    whereabouts()
                ),
            )))
        }
        _ => return Ok(None),
    };
    Ok(Some(object))
}

/// The first line of the parser's message (its rendering may add a source snippet).
/// The parser's reason without its own `error:` and `line N column M:` prefixes: the diagnostic's
/// field already names the line, counted in the file rather than in the document.
fn error_text(e: &serde_saphyr::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("invalid YAML").trim();
    let reason = first.strip_prefix("error:").map(str::trim).unwrap_or(first);
    let reason = match reason.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map(|(_, r)| r).unwrap_or(reason),
        None => reason,
    };
    if reason.is_empty() {
        "invalid YAML".to_string()
    } else {
        reason.to_string()
    }
}

/// Splits a file into YAML documents at `---` lines, keeping each document's first line number
/// (1-based) so errors point into the file. A `---` line belongs to the document it opens.
fn documents(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let is_marker = trimmed.starts_with("---")
            && trimmed[3..].chars().next().is_none_or(char::is_whitespace);
        if is_marker && offset > start {
            out.push((start_line, &text[start..offset]));
            start = offset;
            start_line = index + 1;
        }
        offset += line.len();
    }
    if start < text.len() {
        out.push((start_line, &text[start..]));
    }
    out
}

/// `stringData` is write-only in the API: the API server merges it over `data`. Do the same.
fn merge_string_data(secret: &mut Secret) {
    if let Some(string_data) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (key, value) in string_data {
            data.insert(key, ByteString(value.into_bytes()));
        }
    }
}

/// The objects of one variant of [`Object`], in their order.
macro_rules! of_kind {
    ($objects:expr, $variant:ident) => {
        $objects
            .iter()
            .filter_map(|o| match o {
                Object::$variant(o) => Some(o.clone()),
                _ => None,
            })
            .collect()
    };
}

impl FromIterator<Object> for Snapshot {
    /// A snapshot of `objects` (shared, not copied), each kind in the order given; an
    /// [`Object::Unreadable`] becomes one of its diagnostics.
    fn from_iter<I: IntoIterator<Item = Object>>(objects: I) -> Snapshot {
        let objects: Vec<Object> = objects.into_iter().collect();
        Snapshot {
            ingresses: of_kind!(objects, Ingress),
            classes: of_kind!(objects, IngressClass),
            secrets: of_kind!(objects, Secret),
            services: of_kind!(objects, Service),
            endpoint_slices: of_kind!(objects, EndpointSlice),
            class_params: of_kind!(objects, IngressClassParams),
            cert_files: Objects::default(),
            gateway_classes: of_kind!(objects, GatewayClass),
            gateways: of_kind!(objects, Gateway),
            http_routes: of_kind!(objects, HTTPRoute),
            grpc_routes: of_kind!(objects, GRPCRoute),
            tls_routes: of_kind!(objects, TLSRoute),
            backend_tls_policies: of_kind!(objects, BackendTLSPolicy),
            reference_grants: of_kind!(objects, ReferenceGrant),
            config_maps: of_kind!(objects, ConfigMap),
            namespaces: of_kind!(objects, Namespace),
            diagnostics: objects
                .iter()
                .filter_map(|o| match o {
                    Object::Unreadable(diagnostic) => Some((**diagnostic).clone()),
                    _ => None,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_several_documents_and_skips_others() {
        let text = "---\n# empty\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: default}\nstringData:\n  tls.crt: abc\ndata:\n  tls.crt: eHl6\n  other: eHl6\n";
        let objects = parse_manifest("a.yaml", text).unwrap();
        assert_eq!(objects.len(), 1);
        let Object::Secret(secret) = &objects[0] else {
            panic!("not a secret")
        };
        let data = secret.data.as_ref().unwrap();
        assert_eq!(data["tls.crt"].0, b"abc");
        assert_eq!(data["other"].0, b"xyz");
        assert!(secret.string_data.is_none());
    }

    #[test]
    fn error_names_file_and_line() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\nspec:\n  ports: 12\n";
        let err = parse_manifest("dir/a.yaml", text).unwrap_err();
        assert_eq!(err.object, ObjectRef::cluster("File", "dir/a.yaml"));
        assert_eq!(err.field, "line 10", "{err}");
        assert_eq!(err.reason, Reason::InvalidManifest);
    }

    #[test]
    fn syntax_error_is_reported() {
        let err = parse_manifest("b.yaml", "apiVersion: v1\nkind: [\n").unwrap_err();
        assert!(err.field.starts_with("line "), "{err}");
    }

    #[test]
    fn lists_are_expanded() {
        let text = "apiVersion: v1\nkind: List\nmetadata: {resourceVersion: \"\"}\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a, namespace: shop}\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n- apiVersion: networking.k8s.io/v1\n  kind: Ingress\n  metadata: {name: i, namespace: shop}\n---\napiVersion: v1\nkind: ServiceList\nitems:\n- metadata: {name: b, namespace: shop}\n";
        let objects = parse_manifest("list.yaml", text).unwrap();
        let kinds: Vec<&str> = objects
            .iter()
            .map(|o| match o {
                Object::Service(_) => "Service",
                Object::Ingress(_) => "Ingress",
                _ => "other",
            })
            .collect();
        assert_eq!(kinds, ["Service", "Ingress", "Service"]);
        let Object::Service(b) = &objects[2] else {
            panic!("not a service")
        };
        assert_eq!(b.metadata.name.as_deref(), Some("b"));
    }

    #[test]
    fn bad_list_item_names_the_item() {
        let text = "# a comment\napiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n  spec: {ports: 12}\n";
        let err = parse_manifest("l.yaml", text).unwrap_err();
        assert_eq!(err.object, ObjectRef::cluster("File", "l.yaml"));
        assert!(err.field.starts_with("line "), "{err}");
        assert!(err.message.starts_with("items[0]: Service "), "{err}");
        assert!(
            parse_manifest("l.yaml", "apiVersion: v1\nkind: List\nitems: []\n")
                .unwrap()
                .is_empty()
        );
        let err = parse_manifest("l.yaml", "apiVersion: v1\nkind: List\nitems: 3\n").unwrap_err();
        assert_eq!(err.field, "line 3", "{err}");
        let err =
            parse_manifest("l.yaml", "apiVersion: v1\nkind: List\nitems:\n- {a: b}\n").unwrap_err();
        assert!(err.message.contains("items[0]"), "{err}");
        // Some other kind whose name ends in List is skipped, like any kind we do not read.
        let other = "apiVersion: example.com/v1\nkind: AllowList\nspec: {items: 3}\n";
        assert!(parse_manifest("o.yaml", other).unwrap().is_empty());
    }

    #[test]
    fn removed_ingress_api_is_a_diagnostic_not_a_skip() {
        let text = "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: shop}\n---\napiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: {name: old, namespace: shop}\nspec:\n  backend: {serviceName: s, servicePort: 80}\n---\napiVersion: v1\nkind: List\nitems:\n- apiVersion: networking.k8s.io/v1beta1\n  kind: Ingress\n  metadata: {name: older}\n";
        let objects = parse_manifest("old.yaml", text).unwrap();
        assert!(matches!(objects[0], Object::Service(_)));
        let diagnostics: Vec<&Diagnostic> = objects
            .iter()
            .filter_map(|o| match o {
                Object::Unreadable(d) => Some(&**d),
                _ => None,
            })
            .collect();
        assert_eq!(diagnostics.len(), 2);
        let first = diagnostics[0];
        assert_eq!(
            first.object,
            ObjectRef::namespaced("Ingress", "shop", "old")
        );
        assert_eq!(first.reason, Reason::UnsupportedApiVersion);
        assert_eq!(first.severity, crate::table::diagnostic::Severity::Error);
        assert!(
            first.message.contains("old.yaml, document at line 4"),
            "{first}"
        );
        assert!(first.message.contains("networking.k8s.io/v1 "), "{first}");
        let second = diagnostics[1];
        assert_eq!(
            second.object,
            ObjectRef::namespaced("Ingress", "default", "older")
        );
        assert!(second.message.contains("items[0]"), "{second}");
        // Into a snapshot, it is a diagnostic.
        let snapshot: Snapshot = objects.into_iter().collect();
        assert_eq!(snapshot.diagnostics.len(), 2);
        assert!(snapshot.ingresses.is_empty());
    }

    #[test]
    fn empty_file_is_empty() {
        assert!(parse_manifest("c.yaml", "").unwrap().is_empty());
        assert!(parse_manifest("c.yaml", "---\n---\n").unwrap().is_empty());
    }
}
