//! HTTP basic authentication of a route, as ingress-nginx's `auth-type: basic` asks for it
//! (annotations.md, "Authentication"; examples/auth/basic): the realm, the Secret the users come
//! from, and the users with their password hashes. The annotations give the first two; the
//! model fills the users from the Secret (`model::basic_auth`); the proxy side is
//! `crate::proxy::basic_auth`.
//!
//! Hashes kept: bcrypt (`$2y$`, `$2a$`, `$2b$`), apr1 (`$apr1$`, Apache's MD5-based crypt) and
//! `{SHA}` (base64 SHA-1), the kinds `htpasswd` writes. Plaintext and crypt(3) DES entries are
//! not kept: nginx would accept them only where the system `crypt()` does, and a plaintext
//! password in a Secret is a mistake to point out, not to honour.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use serde::{Serialize, Serializer};

/// Where the Secret keeps the users (`auth-secret-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum SecretType {
    /// The key `auth` holds an htpasswd file (`user:hash` lines), ingress-nginx's default.
    #[default]
    AuthFile,
    /// Each key is a user, its value the hash.
    AuthMap,
}

impl SecretType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SecretType::AuthFile => "auth-file",
            SecretType::AuthMap => "auth-map",
        }
    }
}

/// The basic authentication of an Ingress's routes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct BasicAuth {
    /// `auth-realm`, sent in `WWW-Authenticate: Basic realm="..."` (visible ASCII, no `"`
    /// or `\`, checked when read).
    pub(crate) realm: String,
    /// The Secret's name, in the Ingress's namespace.
    pub(crate) secret: String,
    pub(crate) secret_type: SecretType,
    /// The annotation that named the Secret, for diagnostics.
    #[serde(skip)]
    pub(crate) secret_annotation: &'static str,
    /// The users, read from the Secret by the model; empty until then (and an Ingress whose
    /// Secret yields none is not served).
    pub(crate) users: Arc<Users>,
}

impl BasicAuth {
    /// The line `check` and the admin API print (never a hash).
    pub(crate) fn describe(&self) -> String {
        format!(
            "basic auth: realm {:?}, Secret {} ({}), {} user(s)",
            self.realm,
            self.secret,
            self.secret_type.as_str(),
            self.users.len()
        )
    }
}

/// User name → password hash. `Debug` and `Serialize` show the names only: hashes stay in the
/// proxy's memory, out of logs, `check` output and the admin API.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Users(BTreeMap<String, PasswordHash>);

impl Users {
    pub(crate) fn get(&self, user: &str) -> Option<&PasswordHash> {
        self.0.get(user)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds `user`; a user listed twice keeps its first line, as nginx reads the file top down
    /// and stops at the first match.
    fn add(&mut self, user: &str, hash: PasswordHash) -> bool {
        if self.0.contains_key(user) {
            return false;
        }
        self.0.insert(user.to_string(), hash);
        true
    }
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Serialize for Users {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.keys())
    }
}

/// One stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum PasswordHash {
    /// The whole `$2y$NN$<salt+hash>` string, as the bcrypt crate verifies it.
    Bcrypt(String),
    /// `$apr1$<salt>$<22 characters>`: the salt and the encoded digest.
    Apr1 { salt: String, digest: String },
    /// `{SHA}<base64>`: the 20-byte SHA-1 of the password (no salt).
    Sha1([u8; 20]),
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())
    }
}

/// Characters of crypt's base64 alphabet (apr1 salts and digests, bcrypt).
fn is_crypt64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'/'
}

impl PasswordHash {
    /// Parses the hash part of an htpasswd line; `Err` says why it cannot be used.
    pub(crate) fn parse(text: &str) -> Result<PasswordHash, &'static str> {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("$apr1$") {
            let (salt, digest) = rest.split_once('$').ok_or("malformed apr1 hash")?;
            let ok = (1..=8).contains(&salt.len())
                && salt.bytes().all(is_crypt64)
                && digest.len() == 22
                && digest.bytes().all(is_crypt64);
            return if ok {
                Ok(PasswordHash::Apr1 {
                    salt: salt.to_string(),
                    digest: digest.to_string(),
                })
            } else {
                Err("malformed apr1 hash")
            };
        }
        if let Some(b64) = text.strip_prefix("{SHA}") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| "malformed {SHA} hash (not base64)")?;
            return <[u8; 20]>::try_from(bytes.as_slice())
                .map(PasswordHash::Sha1)
                .map_err(|_| "malformed {SHA} hash (not 20 bytes)");
        }
        if ["$2y$", "$2a$", "$2b$"].iter().any(|p| text.starts_with(p)) {
            // `$2y$NN$` then 53 characters (22 of salt, 31 of hash).
            let cost = &text[4..];
            let ok = text.len() == 60
                && cost.as_bytes()[..2].iter().all(u8::is_ascii_digit)
                && cost.as_bytes()[2] == b'$'
                && text[7..].bytes().all(is_crypt64)
                && (4..=31).contains(&cost[..2].parse::<u32>().unwrap_or(0));
            return if ok {
                Ok(PasswordHash::Bcrypt(text.to_string()))
            } else {
                Err("malformed bcrypt hash")
            };
        }
        if text.starts_with("$2") {
            return Err("unsupported bcrypt variant (use $2y$, $2a$ or $2b$)");
        }
        if text.starts_with('$') {
            return Err("unsupported hash scheme (use bcrypt, apr1 or {SHA})");
        }
        Err("plaintext or crypt(3) DES password (not accepted: use htpasswd -B for bcrypt)")
    }

    /// The scheme, for messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            PasswordHash::Bcrypt(_) => "bcrypt",
            PasswordHash::Apr1 { .. } => "apr1",
            PasswordHash::Sha1(_) => "sha1",
        }
    }

    /// Bytes that identify this hash (for the verified-credentials cache key: a changed hash
    /// never matches an entry made with the old one).
    pub(crate) fn fingerprint(&self) -> &[u8] {
        match self {
            PasswordHash::Bcrypt(s) => s.as_bytes(),
            PasswordHash::Apr1 { digest, .. } => digest.as_bytes(),
            PasswordHash::Sha1(d) => d,
        }
    }
}

/// An unusable line of the Secret (the user it names, if any, cannot sign in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineProblem {
    /// `auth` line number (1-based), or the auth-map key.
    pub(crate) at: String,
    pub(crate) why: String,
}

/// Reads an htpasswd file: `user:hash` lines; blank lines and `#` comments are skipped.
pub(crate) fn parse_htpasswd(text: &str) -> (Users, Vec<LineProblem>) {
    let mut users = Users::default();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let at = format!("auth line {}", i + 1);
        let Some((user, hash)) = line.split_once(':') else {
            problems.push(LineProblem {
                at,
                why: "not user:hash".to_string(),
            });
            continue;
        };
        add_user(&mut users, &mut problems, at, user, hash);
    }
    (users, problems)
}

/// Reads an auth-map Secret: each `(key, value)` is a user and its hash.
pub(crate) fn parse_map<'k>(
    entries: impl IntoIterator<Item = (&'k str, &'k str)>,
) -> (Users, Vec<LineProblem>) {
    let mut users = Users::default();
    let mut problems = Vec::new();
    for (user, hash) in entries {
        add_user(
            &mut users,
            &mut problems,
            format!("key {user:?}"),
            user,
            hash,
        );
    }
    (users, problems)
}

fn add_user(
    users: &mut Users,
    problems: &mut Vec<LineProblem>,
    at: String,
    user: &str,
    hash: &str,
) {
    if user.is_empty() || user.chars().any(char::is_control) {
        problems.push(LineProblem {
            at,
            why: "empty user name or control characters in it".to_string(),
        });
        return;
    }
    match PasswordHash::parse(hash) {
        Ok(h) => {
            if !users.add(user, h) {
                problems.push(LineProblem {
                    at,
                    why: format!("user {user:?} is listed again; its first entry is used"),
                });
            }
        }
        Err(why) => problems.push(LineProblem {
            at,
            why: format!("user {user:?}: {why}; this user cannot sign in"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_htpasswd_kind_and_the_refused_ones() {
        let file = "\
# comment
alice:$apr1$Xy7pQ2ab$Mh2dUTrmPgAewjJWVctVD1
bob:$2b$04$xiz/LQeeRi/6EBK1dYNXyuB4IBAvRff/0XGI8S8AmW.8vdisEIFom
carol:{SHA}YWXIkDPDfrJ6I4yV+0kqTJdT5SE=

dave:plaintext
erin:abJnggxhB/yWI
frank:$1$abc$xyz
alice:{SHA}YWXIkDPDfrJ6I4yV+0kqTJdT5SE=
nocolon
";
        let (users, problems) = parse_htpasswd(file);
        assert_eq!(users.len(), 3);
        assert_eq!(users.get("alice").map(PasswordHash::kind), Some("apr1"));
        assert_eq!(users.get("bob").map(PasswordHash::kind), Some("bcrypt"));
        assert_eq!(users.get("carol").map(PasswordHash::kind), Some("sha1"));
        let at: Vec<&str> = problems.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(
            at,
            [
                "auth line 6",
                "auth line 7",
                "auth line 8",
                "auth line 9",
                "auth line 10"
            ]
        );
        assert!(problems[0].why.contains("plaintext"), "{:?}", problems[0]);
        // Hashes never show in Debug or Serialize output.
        let shown = format!("{users:?} {}", serde_json::to_string(&users).unwrap());
        assert!(
            !shown.contains("apr1$") && !shown.contains("$2b$"),
            "{shown}"
        );
    }

    #[test]
    fn malformed_hashes() {
        for bad in [
            "$apr1$toolongsalt$Mh2dUTrmPgAewjJWVctVD1",
            "$apr1$Xy7pQ2ab$short",
            "$2b$04$short",
            "$2x$04$xiz/LQeeRi/6EBK1dYNXyuB4IBAvRff/0XGI8S8AmW.8vdisEIFom",
            "$2b$99$xiz/LQeeRi/6EBK1dYNXyuB4IBAvRff/0XGI8S8AmW.8vdisEIFom",
            "{SHA}not-base64!",
            "{SHA}YWJj",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn auth_map() {
        let (users, problems) = parse_map([
            ("alice", "$apr1$Xy7pQ2ab$Mh2dUTrmPgAewjJWVctVD1"),
            ("bob", "hunter2"),
        ]);
        assert_eq!(users.len(), 1);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].at, "key \"bob\"");
    }
}
