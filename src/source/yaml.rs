//! Standalone source, the pure half: one manifest file's text → typed Kubernetes objects.
//! (Watching the directory lives in `source::watch`.)
//!
//! A file holds one or more YAML documents separated by `---` lines. Each document is read
//! twice: once for its `apiVersion`/`kind` (to skip kinds Portcullis does not read), once as the
//! typed object, so a type error points at the right line of the right document.

use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::Snapshot;
use crate::crd::IngressClassParams;
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

/// Parses one manifest file (possibly several `---` documents). Kinds Portcullis does not read
/// (Deployments, ConfigMaps...) are skipped. Any document that fails to parse makes the whole
/// file an error, a diagnostic naming the file (`ObjectRef` kind `File`) and the line, so the
/// caller keeps the file's last good objects.
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
        let doc = document;
        let object = match (api_version.as_str(), kind.as_str()) {
            ("networking.k8s.io/v1", "Ingress") => Object::Ingress(Arc::new(parse(doc, &fail)?)),
            ("networking.k8s.io/v1", "IngressClass") => {
                Object::IngressClass(Arc::new(parse(doc, &fail)?))
            }
            ("v1", "Secret") => {
                let mut secret: Secret = parse(doc, &fail)?;
                merge_string_data(&mut secret);
                Object::Secret(Arc::new(secret))
            }
            ("v1", "Service") => Object::Service(Arc::new(parse(doc, &fail)?)),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                Object::EndpointSlice(Arc::new(parse(doc, &fail)?))
            }
            ("portcullis.io/v1alpha1", "IngressClassParams") => {
                Object::IngressClassParams(Arc::new(parse(doc, &fail)?))
            }
            _ => continue,
        };
        objects.push(object);
    }
    Ok(objects)
}

fn parse<T: DeserializeOwned>(
    document: &str,
    fail: &dyn Fn(Option<u64>, String) -> Box<Diagnostic>,
) -> Result<T, Box<Diagnostic>> {
    serde_saphyr::from_str::<T>(document)
        .map_err(|e| fail(e.location().map(|l| l.line()), error_text(&e)))
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

impl Snapshot {
    /// Adds one object to the snapshot (shared, not copied).
    pub fn push(&mut self, object: Object) {
        match object {
            Object::Ingress(o) => self.ingresses.push(o),
            Object::IngressClass(o) => self.classes.push(o),
            Object::Secret(o) => self.secrets.push(o),
            Object::Service(o) => self.services.push(o),
            Object::EndpointSlice(o) => self.endpoint_slices.push(o),
            Object::IngressClassParams(o) => self.class_params.push(o),
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
    fn empty_file_is_empty() {
        assert!(parse_manifest("c.yaml", "").unwrap().is_empty());
        assert!(parse_manifest("c.yaml", "---\n---\n").unwrap().is_empty());
    }
}
