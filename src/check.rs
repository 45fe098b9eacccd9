//! `portcullis check`: the routing table and diagnostics as a person (or a machine) reads them.
//!
//! INTERFACE STUB — owned by the model work; replace the body.

use crate::model::Built;

/// The table (host, TLS mode, paths, backends → endpoints, certificate, redirect/HSTS) followed
/// by the diagnostics, for a terminal.
pub fn render_text(built: &Built) -> String {
    let _ = built;
    String::new()
}

/// The same, as JSON.
pub fn render_json(built: &Built) -> String {
    let _ = built;
    String::from("{}")
}

/// Exit status of `check`: 1 when any diagnostic is an error.
pub fn has_errors(built: &Built) -> bool {
    built
        .diagnostics
        .iter()
        .any(|d| d.severity == crate::model::diagnostic::Severity::Error)
}
