//! HTTP basic authentication as ingress-nginx's `auth-type: basic` does it (nginx's
//! `auth_basic` with the Secret's htpasswd file): a request without credentials, with an
//! unknown user or a wrong password is answered `401` with `WWW-Authenticate: Basic
//! realm="<auth-realm>"` and never reaches the pod; an authenticated request is forwarded with
//! its `Authorization` header, as nginx forwards it.
//!
//! Hashes: `{SHA}` and apr1 are computed inline (one SHA-1; 1 000 MD5 rounds, microseconds);
//! bcrypt (tens to hundreds of milliseconds at cost 10+) runs on the blocking pool, at most one
//! per CPU at a time, so a flood of wrong passwords cannot starve the proxy's own workers.
//! Derived hashes are compared in constant time. An unknown user is answered at once, as nginx
//! does (user names are not secret from the timing of a reply).
//!
//! **Verified-credentials cache**: a keep-alive client sends the same `Authorization` on every
//! request; paying bcrypt each time would cap it at a few requests per second. A successful
//! bcrypt check is remembered for [`CACHE_TTL`], keyed by a salted SHA-1 of (stored hash, user,
//! password), never the password itself; the salt is random per process. A changed or removed
//! user changes or removes the stored hash, so a rotated Secret is enforced on the next table
//! without flushing anything. Bound: at most [`CACHE_MAX`] entries (20-byte key + expiry each,
//! about 200 KiB with the map's overhead); a full cache first drops its expired entries, then,
//! if still full, everything (the cost is only a bcrypt per client again). Failures are never
//! cached.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};
use md5::{Digest as _, Md5};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use super::body::{ResponseBody, own_response};
use crate::table::basic_auth::{BasicAuth, PasswordHash};
use crate::table::policy::RoutePolicy;

/// How long a verified bcrypt password is remembered.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(30);
/// Most remembered verifications at once.
pub(crate) const CACHE_MAX: usize = 4096;
/// Longest `Authorization` value read (nginx's default header buffer is smaller anyway).
const MAX_AUTHORIZATION: usize = 4096;

/// `None` when the request may go on (no basic auth on the route, or right credentials);
/// otherwise the `401` to answer.
pub(crate) async fn check(
    policy: &RoutePolicy,
    headers: &HeaderMap,
) -> Option<Response<ResponseBody>> {
    let auth = policy.basic_auth.as_ref()?;
    if authenticated(auth, headers).await {
        None
    } else {
        Some(challenge(&auth.realm))
    }
}

async fn authenticated(auth: &BasicAuth, headers: &HeaderMap) -> bool {
    let Some((user, password)) = credentials(headers) else {
        return false;
    };
    let Some(stored) = auth.users.get(&user) else {
        return false;
    };
    verify(stored, &user, &password).await
}

/// The user and password of a single `Authorization: Basic <base64(user:password)>` header.
fn credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() || value.len() > MAX_AUTHORIZATION {
        return None;
    }
    let text = value.to_str().ok()?.trim();
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let decoded = engine.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// The `401` nginx's `auth_basic` answers, with the realm to present.
fn challenge(realm: &str) -> Response<ResponseBody> {
    let mut response = Response::new(own_response(Bytes::from_static(b"401 Unauthorized\n")));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    let headers = response.headers_mut();
    // The realm was checked when read: visible ASCII and spaces, no `"` or `\`.
    if let Ok(value) = HeaderValue::from_str(&format!("Basic realm=\"{realm}\"")) {
        headers.insert(header::WWW_AUTHENTICATE, value);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Whether `password` matches `stored`.
async fn verify(stored: &PasswordHash, user: &str, password: &[u8]) -> bool {
    match stored {
        PasswordHash::Sha1(digest) => {
            let computed: [u8; 20] = Sha1::digest(password).into();
            computed.ct_eq(digest).into()
        }
        PasswordHash::Apr1 { salt, digest } => {
            let computed = apr1(password, salt.as_bytes());
            computed.as_bytes().ct_eq(digest.as_bytes()).into()
        }
        PasswordHash::Bcrypt(hash) => {
            let key = cache_key(stored, user, password);
            if cached(&key) {
                return true;
            }
            let Ok(_slot) = BCRYPT_SLOTS.acquire().await else {
                return false;
            };
            let (hash, password) = (hash.clone(), password.to_vec());
            let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
                .await
                .is_ok_and(|r| r.unwrap_or(false));
            if ok {
                remember(key);
            }
            ok
        }
    }
}

// === apr1 ===

/// crypt's base64 alphabet.
const ITOA64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Apache's `$apr1$` hash of `password` with `salt` (at most 8 bytes are used): the
/// MD5-based crypt of FreeBSD (Poul-Henning Kamp's), with the magic string `$apr1$`. Returns
/// the 22-character encoded digest (what follows `$apr1$<salt>$`).
pub(crate) fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];

    // The "alternate" sum: password, salt, password.
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(MAGIC);
    ctx.update(salt);
    // As many bytes of the alternate sum as the password is long, 16 at a time.
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alternate[..n]);
        left -= n;
    }
    // For each bit of the length, lowest first: a zero byte for a 1 bit, the password's first
    // byte for a 0 bit.
    let mut bits = password.len();
    while bits != 0 {
        if bits & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        bits >>= 1;
    }
    let mut sum: [u8; 16] = ctx.finalize().into();

    // 1 000 rounds, each mixing password, salt and the previous sum in an order set by the
    // round number.
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round % 2 == 1 {
            ctx.update(password);
        } else {
            ctx.update(sum);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round % 2 == 1 {
            ctx.update(sum);
        } else {
            ctx.update(password);
        }
        sum = ctx.finalize().into();
    }

    // Encoding: the bytes in a fixed shuffled order, 24 bits → 4 characters, low bits first.
    let mut out = String::with_capacity(22);
    let mut put = |mut value: u32, chars: usize| {
        for _ in 0..chars {
            out.push(ITOA64[(value & 0x3f) as usize] as char);
            value >>= 6;
        }
    };
    let b = |i: usize| u32::from(sum[i]);
    for (x, y, z) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put((b(x) << 16) | (b(y) << 8) | b(z), 4);
    }
    put(b(11), 2);
    out
}

// === the bcrypt side: slots and cache ===

/// At most one bcrypt verification per CPU at a time.
static BCRYPT_SLOTS: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())));

/// Verified-credential keys and when each expires.
static VERIFIED: LazyLock<Mutex<HashMap<[u8; 20], Instant>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// A per-process random salt for [`cache_key`] (from the standard library's random hasher
/// keys, so no extra dependency).
static CACHE_SALT: LazyLock<[u8; 16]> = LazyLock::new(|| {
    let state = std::collections::hash_map::RandomState::new();
    let mut salt = [0u8; 16];
    for (i, chunk) in salt.chunks_mut(8).enumerate() {
        let mut h = state.build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    salt
});

/// The cache key of a verification: a salted hash of the stored hash, the user and the
/// password, each length-prefixed so that no two different triples share a key input.
fn cache_key(stored: &PasswordHash, user: &str, password: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(*CACHE_SALT);
    for part in [stored.fingerprint(), user.as_bytes(), password] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.finalize().into()
}

fn cached(key: &[u8; 20]) -> bool {
    let Ok(mut map) = VERIFIED.lock() else {
        return false;
    };
    match map.get(key) {
        Some(&expires) if expires > Instant::now() => true,
        Some(_) => {
            map.remove(key);
            false
        }
        None => false,
    }
}

fn remember(key: [u8; 20]) {
    let Ok(mut map) = VERIFIED.lock() else {
        return;
    };
    let now = Instant::now();
    if map.len() >= CACHE_MAX {
        map.retain(|_, expires| *expires > now);
        if map.len() >= CACHE_MAX {
            map.clear();
        }
    }
    map.insert(key, now + CACHE_TTL);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from `openssl passwd -apr1 -salt SALT PASSWORD`.
    #[test]
    fn apr1_matches_openssl() {
        assert_eq!(apr1(b"s3cret!", b"Xy7pQ2ab"), "Mh2dUTrmPgAewjJWVctVD1");
        assert_eq!(apr1(b"password", b"abc"), "mehJE/UcwZsj.w5DYe.b5.");
        assert_eq!(apr1(b"", b"12345678"), "sHuPAw7VA9xjRbJz7zKV7/");
    }

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn credentials_parsing() {
        // "alice:pa:ss" — the password may contain colons.
        let h = headers("Basic YWxpY2U6cGE6c3M=");
        assert_eq!(
            credentials(&h),
            Some(("alice".to_string(), b"pa:ss".to_vec()))
        );
        assert_eq!(
            credentials(&headers("basic YWxpY2U6cGE6c3M")).map(|c| c.0),
            Some("alice".to_string())
        );
        assert_eq!(credentials(&headers("Bearer YWxpY2U6cGE6c3M=")), None);
        assert_eq!(credentials(&headers("Basic !!!")), None);
        assert_eq!(credentials(&headers("Basic YWxpY2U=")), None);
        let mut two = headers("Basic YWxpY2U6cGE6c3M=");
        two.append(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic Ym9iOng="),
        );
        assert_eq!(credentials(&two), None);
    }

    #[tokio::test]
    async fn each_hash_kind() {
        let cases = [
            ("{SHA}YWXIkDPDfrJ6I4yV+0kqTJdT5SE=", "s3cret!"),
            ("$apr1$Xy7pQ2ab$Mh2dUTrmPgAewjJWVctVD1", "s3cret!"),
            // python bcrypt, cost 4; the same hash as $2y$ (what htpasswd -B writes).
            (
                "$2b$04$xiz/LQeeRi/6EBK1dYNXyuB4IBAvRff/0XGI8S8AmW.8vdisEIFom",
                "s3cret!",
            ),
            (
                "$2y$04$xiz/LQeeRi/6EBK1dYNXyuB4IBAvRff/0XGI8S8AmW.8vdisEIFom",
                "s3cret!",
            ),
            (
                "$2a$05$gzmhoYVVjQx6QMlQeujTk.v37qaPva5LEzQUtoQfVWu/fgu7CiOBa",
                "password",
            ),
        ];
        for (hash, password) in cases {
            let stored = PasswordHash::parse(hash).unwrap();
            assert!(verify(&stored, "u", password.as_bytes()).await, "{hash}");
            assert!(!verify(&stored, "u", b"wrong").await, "{hash}");
            // Cached bcrypt successes do not make another password pass.
            assert!(verify(&stored, "u", password.as_bytes()).await, "{hash}");
            assert!(!verify(&stored, "u", b"s3cret").await, "{hash}");
        }
    }

    #[test]
    fn cache_stays_bounded() {
        for i in 0..(CACHE_MAX + 10) as u32 {
            remember(cache_key(
                &PasswordHash::Sha1([0; 20]),
                "u",
                &i.to_le_bytes(),
            ));
        }
        assert!(VERIFIED.lock().unwrap().len() <= CACHE_MAX);
    }
}
