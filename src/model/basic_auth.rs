//! The users of an Ingress's basic authentication, read from its Secret (`auth-secret`): the
//! key `auth` as an htpasswd file (`auth-secret-type: auth-file`, the default) or every key
//! as a user (`auth-map`), as ingress-nginx reads them (examples/auth/basic).
//!
//! Fail closed: a Secret that is missing, lacks `auth`, or yields no usable user is an error
//! diagnostic on the annotation and the Ingress is not served (never served open, and no last
//! good version either: the users of an old Secret may be the ones being locked out). One
//! unusable line (plaintext, crypt(3) DES, a malformed hash) only locks out its own user, so
//! it is a warning naming the Secret and the line.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;

use super::ingress::Plan;
use super::vhosts::Merge;
use crate::table::basic_auth::{SecretType, parse_htpasswd, parse_map};
use crate::table::diagnostic::{Diagnostic, Reason};
use crate::table::policy::RoutePolicy;

/// The key of an `auth-file` Secret.
const AUTH_KEY: &str = "auth";

impl Merge<'_, '_> {
    /// Fills `policy.basic_auth`'s users from its Secret. `false` when the Ingress asks for
    /// basic auth and no user can be read: it must then not be served (a diagnostic says why).
    pub(super) fn basic_auth_users(&mut self, plan: &Plan, policy: &mut RoutePolicy) -> bool {
        let Some(auth) = policy.basic_auth.as_mut() else {
            return true;
        };
        let field = format!("metadata.annotations[\"{}\"]", auth.secret_annotation);
        let namespace = &plan.namespace;
        let name = &auth.secret;
        let refuse = |diagnostics: &mut Vec<Diagnostic>, reason, why: String| {
            diagnostics.push(Diagnostic::error(
                plan.object.clone(),
                field.clone(),
                reason,
                format!(
                    "Secret {namespace}/{name}: {why}; basic auth cannot be checked, so this Ingress is not served"
                ),
            ));
            false
        };
        let Some(secret) = self.secrets.raw(namespace, name) else {
            return refuse(
                self.diagnostics,
                Reason::MissingSecret,
                "does not exist (in a cluster, Portcullis watches only Secrets labelled portcullis.io/basic-auth: \"true\" for this)".into(),
            );
        };
        let (users, problems) = match auth.secret_type {
            SecretType::AuthFile => {
                let Some(bytes) = value(secret, AUTH_KEY) else {
                    return refuse(
                        self.diagnostics,
                        Reason::InvalidSecret,
                        "has no key auth (the htpasswd file; or set auth-secret-type: auth-map)"
                            .into(),
                    );
                };
                let Ok(text) = std::str::from_utf8(bytes) else {
                    return refuse(
                        self.diagnostics,
                        Reason::InvalidSecret,
                        "auth is not UTF-8 text".into(),
                    );
                };
                parse_htpasswd(text)
            }
            SecretType::AuthMap => {
                let keys = keys(secret);
                let pairs = keys.iter().filter_map(|k| {
                    let v = value(secret, k)?;
                    Some((k.as_str(), std::str::from_utf8(v).unwrap_or("")))
                });
                parse_map(pairs)
            }
        };
        for problem in &problems {
            self.diagnostics.push(Diagnostic::warning(
                plan.object.clone(),
                field.clone(),
                Reason::InvalidSecret,
                format!("Secret {namespace}/{name}, {}: {}", problem.at, problem.why),
            ));
        }
        if users.is_empty() {
            return refuse(
                self.diagnostics,
                Reason::InvalidSecret,
                "has no usable user (bcrypt, apr1 or {SHA} hashes)".into(),
            );
        }
        auth.users = Arc::new(users);
        true
    }
}

/// The value of `key`: `stringData` over `data`, as the API server merges them.
fn value<'s>(secret: &'s Secret, key: &str) -> Option<&'s [u8]> {
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|s| s.as_bytes())
        .or_else(|| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.as_slice())
        })
}

/// Every key of `data` and `stringData`, sorted, once each.
fn keys(secret: &Secret) -> Vec<String> {
    let mut keys: Vec<String> = secret
        .data
        .iter()
        .flat_map(|d| d.keys())
        .chain(secret.string_data.iter().flat_map(|d| d.keys()))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}
