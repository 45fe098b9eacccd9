//! The :443 front door's first step: read a TLS ClientHello into a bounded buffer under one
//! deadline, and parse its SNI without consuming anything we cannot replay.
//!
//! The bytes read stay in the caller's buffer: after routing they are replayed either to the
//! pass-through backend or into the TLS acceptor (see `proxy::prefixed_io`).
//!
//! The parser is our own and is careful by construction: every access is a bounds-checked slice
//! through [`Reader`], so a hostile or truncated input yields an error, never a panic. A prefix of
//! a valid ClientHello always says [`HelloError::Incomplete`]; only a complete handshake message is
//! parsed for its fields, and a structural error inside it is [`HelloError::Malformed`].
//!
//! A ClientHello may span several TLS records (and records several TCP segments): post-quantum
//! key shares push it past 1.5 KB, and nothing forbids a client from fragmenting it further.
//!
//! The ALPN extension is checked for well-formedness but not kept: the offered protocols matter
//! only to the TLS handshake (rustls negotiates them for terminated hosts), and pass-through
//! replays them untouched.
//!
//! Nothing here knows about metrics: [`HelloError`]'s variants are what the caller counts.

use std::io;
use std::time::Duration;

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::host_name::normalize_host;

/// TLS record content type `handshake`.
const CONTENT_HANDSHAKE: u8 = 0x16;
/// Handshake message type `client_hello`.
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
/// A TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// A handshake message header: type, 24-bit length.
const HANDSHAKE_HEADER: usize = 4;
/// RFC 8446 §5.1: a plaintext fragment is at most 2^14 bytes.
const MAX_FRAGMENT: usize = 1 << 14;
/// Extension `server_name` (RFC 6066).
const EXT_SERVER_NAME: u16 = 0;
/// Extension `application_layer_protocol_negotiation` (RFC 7301).
const EXT_ALPN: u16 = 16;
/// Largest read per syscall while waiting for the hello.
const READ_CHUNK: usize = 4096;

/// What the front door needs from a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientHello {
    /// The SNI host name, normalized (`normalize_host`). `None` when absent, empty, or not a
    /// printable ASCII name (such a name can match no host anyway: the default certificate).
    pub sni: Option<String>,
}

/// Why no ClientHello could be read: one `thiserror` enum for the parser and the reader.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// The bytes so far are a valid prefix: read more.
    #[error("ClientHello incomplete: more bytes are needed")]
    Incomplete,
    /// The bytes can never become a valid ClientHello.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    /// The ClientHello does not fit in the buffer limit (`limits.max_client_hello_bytes`).
    #[error("ClientHello larger than the {limit}-byte limit (limits.max_client_hello_bytes)")]
    TooLarge { limit: usize },
    /// The first byte is not a TLS handshake record (plain HTTP, SSLv2, a port scanner...).
    #[error("not a TLS handshake: first byte {0:#04x}")]
    NotTls(u8),
    /// No complete ClientHello before the deadline (`timeouts.client_hello`).
    #[error("no complete ClientHello within the deadline (timeouts.client_hello = {0:?})")]
    Timeout(Duration),
    /// The client closed the connection after `bytes` bytes, before a complete ClientHello.
    #[error("connection closed after {bytes} bytes, before a complete ClientHello")]
    Closed { bytes: usize },
    /// The socket failed while reading.
    #[error("reading the ClientHello: {0}")]
    Io(#[from] io::Error),
}

/// Parses a ClientHello from the start of `buf` (TLS records, possibly several), accepting at
/// most `max` bytes of handshake message. Bytes after the ClientHello are ignored.
pub fn parse(buf: &[u8], max: usize) -> Result<ClientHello, HelloError> {
    match scan(buf, max)? {
        Scan::Done(hello) => Ok(hello),
        Scan::NeedAtLeast(_) => Err(HelloError::Incomplete),
    }
}

/// Reads from `io`, appending to `buf` (which may already hold bytes, e.g. read past a PROXY
/// header), until `buf` starts with a complete ClientHello, under one `deadline` for all reads.
///
/// `buf` never grows beyond `max` bytes. On success it holds every byte read, ready to replay.
pub(crate) async fn read_client_hello<IO>(
    io: &mut IO,
    buf: &mut Vec<u8>,
    max: usize,
    deadline: Instant,
) -> Result<ClientHello, HelloError>
where
    IO: AsyncRead + Unpin,
{
    let budget = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout_at(deadline, read_until_complete(io, buf, max)).await {
        Ok(result) => result,
        Err(_) => Err(HelloError::Timeout(budget)),
    }
}

async fn read_until_complete<IO>(
    io: &mut IO,
    buf: &mut Vec<u8>,
    max: usize,
) -> Result<ClientHello, HelloError>
where
    IO: AsyncRead + Unpin,
{
    // Re-scan only once enough bytes arrived to change the answer: a client trickling one byte
    // per segment costs one comparison per read, not a re-parse.
    let mut needed = 0;
    loop {
        if buf.len() >= needed {
            match scan(buf, max)? {
                Scan::Done(hello) => return Ok(hello),
                Scan::NeedAtLeast(n) => needed = n,
            }
        }
        if buf.len() >= max {
            return Err(HelloError::TooLarge { limit: max });
        }
        let start = buf.len();
        let want = (max - start).min(READ_CHUNK);
        buf.reserve(want);
        // `read_buf` only ever appends what was read: cancel-safe when the deadline fires.
        let n = io.read_buf(&mut (&mut *buf).limit(want)).await?;
        if n == 0 {
            return Err(HelloError::Closed { bytes: start });
        }
    }
}

/// The outcome of scanning a buffer that is a valid prefix so far.
enum Scan {
    Done(ClientHello),
    /// Come back when the buffer holds at least this many bytes.
    NeedAtLeast(usize),
}

/// Reassembles the ClientHello handshake message from the records at the start of `buf`.
fn scan(buf: &[u8], max: usize) -> Result<Scan, HelloError> {
    let mut message: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(header) = buf.get(pos..pos + RECORD_HEADER) else {
            // Check what we have of the very first record header early.
            if pos == 0
                && let Some(&first) = buf.first()
                && first != CONTENT_HANDSHAKE
            {
                return Err(HelloError::NotTls(first));
            }
            return Ok(Scan::NeedAtLeast(pos + RECORD_HEADER));
        };
        let mut r = Reader::new(header);
        let content_type = r.u8()?;
        let major = r.u8()?;
        let _minor = r.u8()?;
        let length = usize::from(r.u16()?);
        if content_type != CONTENT_HANDSHAKE {
            return Err(if pos == 0 {
                HelloError::NotTls(content_type)
            } else {
                HelloError::Malformed("a non-handshake record interrupts the ClientHello")
            });
        }
        if major != 3 {
            return Err(HelloError::Malformed("record version is not TLS (3.x)"));
        }
        if length == 0 {
            return Err(HelloError::Malformed("empty handshake record"));
        }
        if length > MAX_FRAGMENT {
            return Err(HelloError::Malformed("record longer than 2^14 bytes"));
        }
        let body_start = pos + RECORD_HEADER;
        let record_end = body_start + length;
        let available = buf
            .get(body_start..record_end.min(buf.len()))
            .unwrap_or(&[]);
        let before = message.len();
        message.extend_from_slice(available);

        // As soon as the handshake header is visible, check it: fail fast on junk and on a
        // message that could never fit.
        if let Some(hs) = message.get(..HANDSHAKE_HEADER) {
            let mut r = Reader::new(hs);
            if r.u8()? != HANDSHAKE_CLIENT_HELLO {
                return Err(HelloError::Malformed(
                    "first handshake message is not a ClientHello",
                ));
            }
            let body_len = r.u24()?;
            let total = HANDSHAKE_HEADER + body_len;
            if total > max {
                return Err(HelloError::TooLarge { limit: max });
            }
            if let Some(body) = message.get(HANDSHAKE_HEADER..total) {
                return parse_body(body).map(Scan::Done);
            }
            if available.len() < length {
                // The message ends in (or after) this record, which is still arriving.
                let need_here = total.saturating_sub(before).min(length);
                return Ok(Scan::NeedAtLeast(body_start + need_here));
            }
        } else if available.len() < length {
            let need_here = HANDSHAKE_HEADER.saturating_sub(before).min(length);
            return Ok(Scan::NeedAtLeast(body_start + need_here));
        }
        // This record is complete and the message continues in the next one.
        pos = record_end;
    }
}

/// Parses the body of a complete ClientHello handshake message (RFC 8446 §4.1.2; also TLS 1.2
/// and earlier, where extensions are optional).
fn parse_body(body: &[u8]) -> Result<ClientHello, HelloError> {
    let mut r = Reader::new(body);
    let (major, _minor) = (r.u8()?, r.u8()?);
    if major != 3 {
        return Err(HelloError::Malformed("legacy_version is not TLS (3.x)"));
    }
    r.take(32)?; // random
    let session_id = r.vec_u8()?;
    if session_id.len() > 32 {
        return Err(HelloError::Malformed(
            "legacy_session_id longer than 32 bytes",
        ));
    }
    let suites = r.vec_u16()?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed("bad cipher_suites length"));
    }
    if r.vec_u8()?.is_empty() {
        return Err(HelloError::Malformed("no compression methods"));
    }
    let mut hello = ClientHello::default();
    if r.is_empty() {
        return Ok(hello); // An old client without extensions.
    }
    let mut extensions = Reader::new(r.vec_u16()?);
    if !r.is_empty() {
        return Err(HelloError::Malformed("bytes after the extensions"));
    }
    let mut seen: Vec<u16> = Vec::new();
    while !extensions.is_empty() {
        let kind = extensions.u16()?;
        let data = extensions.vec_u16()?;
        seen.push(kind);
        match kind {
            EXT_SERVER_NAME => hello.sni = parse_server_name(data)?,
            EXT_ALPN => check_alpn(data)?,
            _ => {}
        }
    }
    let count = seen.len();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != count {
        return Err(HelloError::Malformed("an extension appears twice"));
    }
    Ok(hello)
}

/// `server_name` extension data: a non-empty list of (type, name); the first `host_name` counts.
fn parse_server_name(data: &[u8]) -> Result<Option<String>, HelloError> {
    let mut outer = Reader::new(data);
    let mut list = Reader::new(outer.vec_u16()?);
    if !outer.is_empty() || list.is_empty() {
        return Err(HelloError::Malformed("bad server_name extension"));
    }
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.vec_u16()?;
        if name_type == 0 && host.is_none() {
            host = Some(name);
        }
    }
    let Some(name) = host else {
        return Ok(None);
    };
    if name.is_empty() {
        return Err(HelloError::Malformed("empty host_name in server_name"));
    }
    // Not a name we could route (or print): treat as no SNI, like rustls ignores invalid names.
    if !name.iter().all(|b| b.is_ascii_graphic()) {
        return Ok(None);
    }
    Ok(std::str::from_utf8(name).ok().and_then(normalize_host))
}

/// Checks ALPN extension data: a non-empty list of non-empty protocol names. The names are not
/// kept (see the module docs).
fn check_alpn(data: &[u8]) -> Result<(), HelloError> {
    let mut outer = Reader::new(data);
    let mut list = Reader::new(outer.vec_u16()?);
    if !outer.is_empty() || list.is_empty() {
        return Err(HelloError::Malformed("bad ALPN extension"));
    }
    while !list.is_empty() {
        if list.vec_u8()?.is_empty() {
            return Err(HelloError::Malformed("empty ALPN protocol name"));
        }
    }
    Ok(())
}

// === impl Reader ===

/// A cursor over a byte slice whose every read is bounds-checked: running out of input inside a
/// complete message means the message is malformed.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], HelloError> {
        match (self.rest.get(..n), self.rest.get(n..)) {
            (Some(head), Some(tail)) => {
                self.rest = tail;
                Ok(head)
            }
            _ => Err(HelloError::Malformed(
                "a length runs past the end of its container",
            )),
        }
    }

    fn u8(&mut self) -> Result<u8, HelloError> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn u16(&mut self) -> Result<u16, HelloError> {
        let b = self.take(2)?;
        Ok(b.iter().fold(0u16, |acc, &x| (acc << 8) | u16::from(x)))
    }

    fn u24(&mut self) -> Result<usize, HelloError> {
        let b = self.take(3)?;
        Ok(b.iter().fold(0usize, |acc, &x| (acc << 8) | usize::from(x)))
    }

    /// A vector with a one-byte length prefix.
    fn vec_u8(&mut self) -> Result<&'a [u8], HelloError> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }

    /// A vector with a two-byte length prefix.
    fn vec_u16(&mut self) -> Result<&'a [u8], HelloError> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::ServerName;

    use super::*;

    const MAX: usize = 16 * 1024;

    fn client_config(
        versions: &[&'static rustls::SupportedProtocolVersion],
        alpn: &[&[u8]],
        sni: bool,
        max_fragment: Option<usize>,
    ) -> Arc<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.enable_sni = sni;
        config.max_fragment_size = max_fragment;
        Arc::new(config)
    }

    /// The bytes a real rustls client sends first.
    fn hello_bytes(config: Arc<rustls::ClientConfig>, name: &str) -> Vec<u8> {
        let name = ServerName::try_from(name.to_string()).expect("server name");
        let mut conn = rustls::ClientConnection::new(config, name).expect("client");
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).expect("write_tls");
        }
        out
    }

    fn default_hello(name: &str) -> Vec<u8> {
        hello_bytes(
            client_config(rustls::DEFAULT_VERSIONS, &[b"h2", b"http/1.1"], true, None),
            name,
        )
    }

    /// Every proper prefix says Incomplete; the whole says `expected`.
    fn check_prefixes(bytes: &[u8], expected: &ClientHello) {
        for cut in 0..bytes.len() {
            match parse(&bytes[..cut], MAX) {
                Err(HelloError::Incomplete) => {}
                other => panic!("prefix of {cut}/{} bytes: {other:?}", bytes.len()),
            }
        }
        assert_eq!(&parse(bytes, MAX).expect("whole hello"), expected);
    }

    #[test]
    fn default_hello_with_post_quantum_share_every_prefix() {
        let bytes = default_hello("Foo.Example.COM");
        // X25519MLKEM768 key share: the hello no longer fits a small packet.
        assert!(bytes.len() > 1400, "hello is {} bytes", bytes.len());
        check_prefixes(
            &bytes,
            &ClientHello {
                sni: Some("foo.example.com".into()),
            },
        );
    }

    #[test]
    fn hello_without_sni() {
        let bytes = hello_bytes(
            client_config(rustls::DEFAULT_VERSIONS, &[], false, None),
            "foo.example.com",
        );
        check_prefixes(&bytes, &ClientHello::default());
    }

    #[test]
    fn tls12_only_and_tls13_only_hellos() {
        for versions in [
            &[&rustls::version::TLS12][..],
            &[&rustls::version::TLS13][..],
        ] {
            let bytes = hello_bytes(
                client_config(versions, &[b"http/1.1"], true, None),
                "a.example.org",
            );
            check_prefixes(
                &bytes,
                &ClientHello {
                    sni: Some("a.example.org".into()),
                },
            );
        }
    }

    #[test]
    fn hello_split_across_records_by_the_client() {
        // rustls fragments its own handshake messages when asked to.
        let bytes = hello_bytes(
            client_config(rustls::DEFAULT_VERSIONS, &[b"h2"], true, Some(64)),
            "split.example.com",
        );
        let records = count_records(&bytes);
        assert!(records > 10, "only {records} records");
        check_prefixes(
            &bytes,
            &ClientHello {
                sni: Some("split.example.com".into()),
            },
        );
    }

    #[test]
    fn hello_resplit_into_odd_records() {
        let bytes = default_hello("odd.example.com");
        let message = bytes.get(RECORD_HEADER..).expect("one record");
        for size in [1, 3, 7, 100, 1000] {
            let mut out = Vec::new();
            for chunk in message.chunks(size) {
                out.extend_from_slice(&[0x16, 0x03, 0x01]);
                out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
                out.extend_from_slice(chunk);
            }
            let hello = parse(&out, MAX).expect("reassembled");
            assert_eq!(hello.sni.as_deref(), Some("odd.example.com"));
        }
        // Every prefix of the most fragmented form is still only Incomplete.
        let mut out = Vec::new();
        for chunk in message.chunks(5) {
            out.extend_from_slice(&[0x16, 0x03, 0x03]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        for cut in 0..out.len() {
            assert!(matches!(
                parse(&out[..cut], MAX),
                Err(HelloError::Incomplete)
            ));
        }
    }

    #[test]
    fn trailing_bytes_after_the_hello_are_ignored() {
        let mut bytes = default_hello("t.example.com");
        bytes.extend_from_slice(b"\x17\x03\x03\x00\x05hello");
        assert_eq!(
            parse(&bytes, MAX).expect("hello").sni.as_deref(),
            Some("t.example.com")
        );
    }

    #[test]
    fn not_tls_too_large_and_malformed() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\n", MAX),
            Err(HelloError::NotTls(b'G'))
        ));
        assert!(matches!(parse(b"G", MAX), Err(HelloError::NotTls(_))));
        let bytes = default_hello("big.example.com");
        assert!(matches!(
            parse(&bytes[..20], 512),
            Err(HelloError::TooLarge { limit: 512 })
        ));
        // An alert record where a hello should be.
        assert!(matches!(
            parse(b"\x15\x03\x03\x00\x02\x02\x28", MAX),
            Err(HelloError::NotTls(0x15))
        ));
        // A handshake record holding a ServerHello.
        assert!(matches!(
            parse(b"\x16\x03\x03\x00\x04\x02\x00\x00\x00", MAX),
            Err(HelloError::Malformed(_))
        ));
        // Empty and oversized records.
        assert!(matches!(
            parse(b"\x16\x03\x01\x00\x00", MAX),
            Err(HelloError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"\x16\x03\x01\x40\x01", MAX),
            Err(HelloError::Malformed(_))
        ));
        // A complete message whose inner lengths lie.
        let mut lying = bytes.clone();
        // Session id length (after 5 + 4 + 2 + 32 bytes) claims 255.
        lying[43] = 0xff;
        assert!(matches!(parse(&lying, MAX), Err(HelloError::Malformed(_))));
    }

    /// A `server_name` extension naming `name`.
    fn sni(name: &[u8]) -> Vec<u8> {
        let mut e = vec![0, 0];
        let list_len = (name.len() + 3) as u16;
        e.extend_from_slice(&(list_len + 2).to_be_bytes());
        e.extend_from_slice(&list_len.to_be_bytes());
        e.push(0);
        e.extend_from_slice(&(name.len() as u16).to_be_bytes());
        e.extend_from_slice(name);
        e
    }

    /// An ALPN extension whose protocol list is `list` (length-prefixed names).
    fn alpn(list: &[u8]) -> Vec<u8> {
        let mut e = vec![0, 16];
        e.extend_from_slice(&((list.len() + 2) as u16).to_be_bytes());
        e.extend_from_slice(&(list.len() as u16).to_be_bytes());
        e.extend_from_slice(list);
        e
    }

    /// Hand-built hello: version, random, no session, one suite, null compression, `exts`.
    fn build(exts: Vec<u8>) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut msg = vec![1, 0];
        msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
        msg.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 1];
        rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
        rec.extend_from_slice(&msg);
        rec
    }

    #[test]
    fn duplicate_extensions_are_malformed() {
        let one = build(sni(b"a.example.com"));
        assert_eq!(
            parse(&one, MAX).expect("one sni").sni.as_deref(),
            Some("a.example.com")
        );
        let mut exts = sni(b"a.example.com");
        exts.extend_from_slice(&sni(b"b.example.com"));
        assert!(matches!(
            parse(&build(exts), MAX),
            Err(HelloError::Malformed(_))
        ));
        // A name with control bytes is not routable: treated as no SNI.
        assert_eq!(
            parse(&build(sni(b"a\x00b")), MAX).expect("odd sni").sni,
            None
        );
    }

    #[test]
    fn alpn_is_checked_but_not_kept() {
        let mut exts = sni(b"a.example.com");
        exts.extend_from_slice(&alpn(b"\x02h2\x08http/1.1"));
        assert_eq!(
            parse(&build(exts), MAX).expect("hello with ALPN"),
            ClientHello {
                sni: Some("a.example.com".into()),
            }
        );
        // An empty list, an empty name, a name running past the list.
        for bad in [&b""[..], b"\x00", b"\x02h2\x00", b"\x05h2"] {
            let mut exts = sni(b"a.example.com");
            exts.extend_from_slice(&alpn(bad));
            assert!(
                matches!(parse(&build(exts), MAX), Err(HelloError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for _ in 0..20_000 {
            let len = rng.usize(0..600);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            // Half the time, look like a handshake record so the parser goes deeper.
            if rng.bool()
                && let Some(head) = bytes.get_mut(..6)
            {
                head[0] = 0x16;
                head[1] = 0x03;
                head[5] = 0x01;
            }
            let _ = parse(&bytes, MAX);
        }
    }

    #[test]
    fn mutated_real_hellos_never_panic() {
        let base = default_hello("fuzz.example.com");
        let mut rng = fastrand::Rng::with_seed(42);
        for _ in 0..5_000 {
            let mut bytes = base.clone();
            for _ in 0..rng.usize(1..8) {
                let i = rng.usize(..bytes.len());
                bytes[i] = rng.u8(..);
            }
            if rng.bool() {
                bytes.truncate(rng.usize(..bytes.len()));
            }
            let _ = parse(&bytes, MAX);
            let _ = parse(&bytes, 256);
        }
    }

    #[tokio::test]
    async fn reads_across_segments_under_one_deadline() {
        let bytes = default_hello("seg.example.com");
        let (mut client, mut server) = tokio::io::duplex(64);
        let sent = bytes.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in sent.chunks(7) {
                client.write_all(chunk).await.expect("write");
            }
            client
        });
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        let hello = read_client_hello(&mut server, &mut buf, MAX, deadline)
            .await
            .expect("hello");
        assert_eq!(hello.sni.as_deref(), Some("seg.example.com"));
        assert_eq!(buf, bytes);
        drop(writer.await);
    }

    #[tokio::test]
    async fn reader_reports_timeout_closed_and_too_large() {
        let bytes = default_hello("slow.example.com");

        let (mut client, mut server) = tokio::io::duplex(4096);
        {
            use tokio::io::AsyncWriteExt;
            client.write_all(&bytes[..100]).await.expect("write");
        }
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_millis(50);
        let err = read_client_hello(&mut server, &mut buf, MAX, deadline)
            .await
            .expect_err("timeout");
        assert!(matches!(err, HelloError::Timeout(_)), "{err:?}");

        drop(client);
        let deadline = Instant::now() + Duration::from_secs(5);
        let err = read_client_hello(&mut server, &mut buf, MAX, deadline)
            .await
            .expect_err("closed");
        assert!(matches!(err, HelloError::Closed { bytes: 100 }), "{err:?}");

        // The limit caps the buffer even when the header's length is plausible.
        let (mut client, mut server) = tokio::io::duplex(8192);
        let resplit: Vec<u8> = bytes
            .get(RECORD_HEADER..)
            .expect("record")
            .chunks(1)
            .flat_map(|c| [&[0x16, 3, 1, 0, 1][..], c].concat())
            .collect();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = client.write_all(&resplit).await;
        });
        let mut buf = Vec::new();
        let err = read_client_hello(&mut server, &mut buf, 4096, deadline)
            .await
            .expect_err("too large");
        assert!(
            matches!(err, HelloError::TooLarge { limit: 4096 }),
            "{err:?}"
        );
        assert_eq!(buf.len(), 4096);
    }

    fn count_records(bytes: &[u8]) -> usize {
        let mut pos = 0;
        let mut n = 0;
        while let Some(h) = bytes.get(pos..pos + RECORD_HEADER) {
            pos += RECORD_HEADER + usize::from(u16::from_be_bytes([h[3], h[4]]));
            n += 1;
        }
        n
    }
}
