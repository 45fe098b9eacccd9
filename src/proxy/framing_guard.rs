//! A guard against request smuggling on HTTP/1.1 client connections.
//!
//! hyper resolves a request with both `Content-Length` and `Transfer-Encoding` the way RFC 9112
//! allows (chunked wins, the length is dropped, the connection is closed afterwards), but it
//! removes the `Content-Length` before our service sees the request, so the service cannot
//! refuse it. We refuse it with 400: such a request is either an attack or a client nobody
//! should trust to frame the next one. So this wrapper watches the bytes hyper reads, follows
//! HTTP/1.1 message framing (heads, `Content-Length` bodies, chunked bodies and trailers) just
//! far enough to find every request head, and records the index of the first head with
//! conflicting framing in a [`FramingVerdict`] that the service checks for its request of the
//! same index. hyper calls the service once per parsed head, in order, after the bytes passed
//! through here, so the indices line up.
//!
//! The scanner is permissive: when it is unsure (an upgrade or `CONNECT`, a malformed chunk
//! line, an oversized head that hyper will reject with 431) it stops watching, and hyper's own
//! parsing stays in charge.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Which request (0-based, per connection) had conflicting framing, if any.
#[derive(Debug)]
pub struct FramingVerdict {
    rejected: AtomicU64,
}

impl Default for FramingVerdict {
    fn default() -> Self {
        FramingVerdict {
            rejected: AtomicU64::new(u64::MAX),
        }
    }
}

impl FramingVerdict {
    /// Whether the `index`-th request of the connection (or one before it) must be refused.
    pub fn rejected(&self, index: u64) -> bool {
        self.rejected.load(Ordering::Acquire) <= index
    }

    fn reject(&self, index: u64) {
        self.rejected.fetch_min(index, Ordering::AcqRel);
    }
}

/// Where the scanner is in the byte stream.
#[derive(Debug)]
enum Scan {
    /// Accumulating a request head.
    Head(Vec<u8>),
    /// Skipping a `Content-Length` body.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Skipping chunk data.
    ChunkData(u64),
    /// Skipping the CRLF after chunk data.
    ChunkDataEnd,
    /// Skipping trailer lines until an empty one; `line` counts bytes of the current line.
    Trailers { line: usize },
    /// Not watching any more.
    Off,
}

/// Wraps a client connection's I/O and scans what is read (see the module docs).
pub struct FramingGuard<IO> {
    io: IO,
    scan: Scan,
    heads: u64,
    max_head: usize,
    verdict: Arc<FramingVerdict>,
}

impl<IO> FramingGuard<IO> {
    /// Watches `io` when `enabled` (HTTP/1.x); `max_head` bounds the bytes buffered for one head.
    pub fn new(io: IO, enabled: bool, max_head: usize, verdict: Arc<FramingVerdict>) -> Self {
        FramingGuard {
            io,
            scan: if enabled {
                Scan::Head(Vec::new())
            } else {
                Scan::Off
            },
            heads: 0,
            max_head,
            verdict,
        }
    }

    /// The number of request heads read, when everything read so far ends exactly where a
    /// message ends (no partial head, no body bytes still to come); `None` otherwise, and
    /// always once the guard stopped watching.
    pub(super) fn heads_at_boundary(&self) -> Option<u64> {
        match &self.scan {
            Scan::Head(partial) if partial.is_empty() => Some(self.heads),
            _ => None,
        }
    }

    fn scan(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let state = std::mem::replace(&mut self.scan, Scan::Off);
            self.scan = match state {
                Scan::Off => return,
                Scan::Head(mut buf) => {
                    if buf.is_empty() {
                        // Empty lines before a request line are ignored (RFC 9112 §2.2).
                        let skip = data
                            .iter()
                            .take_while(|b| **b == b'\r' || **b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            self.scan = Scan::Head(buf);
                            return;
                        }
                    }
                    if buf.is_empty()
                        && let Some(end) = head_end(data, 0)
                    {
                        // The whole head arrived in this read (the usual case): look at it
                        // where it is, without copying.
                        let head = &data[..end];
                        data = &data[end..];
                        self.analyze(head)
                    } else {
                        let old = buf.len();
                        buf.extend_from_slice(data);
                        match head_end(&buf, old.saturating_sub(3)) {
                            None if buf.len() > self.max_head => return,
                            None => {
                                self.scan = Scan::Head(buf);
                                return;
                            }
                            Some(end) => {
                                data = &data[end - old..];
                                self.analyze(&buf[..end])
                            }
                        }
                    }
                }
                Scan::Body(n) | Scan::ChunkData(n) => {
                    let was_chunk = matches!(state, Scan::ChunkData(_));
                    let k = n.min(data.len() as u64);
                    data = &data[k as usize..];
                    match (n - k, was_chunk) {
                        (0, false) => Scan::Head(Vec::new()),
                        (0, true) => Scan::ChunkDataEnd,
                        (rest, false) => Scan::Body(rest),
                        (rest, true) => Scan::ChunkData(rest),
                    }
                }
                Scan::ChunkDataEnd => match data.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        data = &data[i + 1..];
                        Scan::ChunkSize(Vec::new())
                    }
                    None => {
                        data = &[];
                        Scan::ChunkDataEnd
                    }
                },
                Scan::ChunkSize(mut line) => match data.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        line.extend_from_slice(&data[..i]);
                        data = &data[i + 1..];
                        match chunk_size(&line) {
                            Some(0) => Scan::Trailers { line: 0 },
                            Some(n) => Scan::ChunkData(n),
                            None => return,
                        }
                    }
                    None if line.len() + data.len() > 1024 => return,
                    None => {
                        line.extend_from_slice(data);
                        data = &[];
                        Scan::ChunkSize(line)
                    }
                },
                Scan::Trailers { mut line } => {
                    let mut next = None;
                    for (i, b) in data.iter().enumerate() {
                        match b {
                            b'\n' if line == 0 => {
                                next = Some(i + 1);
                                break;
                            }
                            b'\n' => line = 0,
                            b'\r' => {}
                            _ => line += 1,
                        }
                    }
                    match next {
                        Some(i) => {
                            data = &data[i..];
                            Scan::Head(Vec::new())
                        }
                        None => {
                            data = &[];
                            Scan::Trailers { line }
                        }
                    }
                }
            };
        }
    }

    /// Reads one complete head and decides how its body is framed.
    fn analyze(&mut self, head: &[u8]) -> Scan {
        let index = self.heads;
        self.heads += 1;
        let mut lines = lines(head);
        let request_line = lines.next().unwrap_or_default();
        let method = request_line
            .split(|b| *b == b' ')
            .next()
            .unwrap_or_default();
        let (mut lengths, mut codings, mut upgrade) = (Vec::new(), Vec::new(), false);
        for line in lines {
            // Only three names matter here; every other field is passed over on its first
            // byte, without looking for its colon.
            if !matches!(
                line.first().map(u8::to_ascii_lowercase),
                Some(b'c' | b't' | b'u')
            ) {
                continue;
            }
            let Some(colon) = memchr::memchr(b':', line) else {
                continue;
            };
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                lengths.extend(value.split(|b| *b == b',').map(<[u8]>::trim_ascii));
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                codings.extend(value.split(|b| *b == b',').map(<[u8]>::trim_ascii));
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                upgrade = true;
            }
        }
        if !codings.is_empty() && !lengths.is_empty() {
            self.verdict.reject(index);
            return Scan::Off;
        }
        if lengths.windows(2).any(|w| w[0] != w[1]) {
            self.verdict.reject(index);
            return Scan::Off;
        }
        if method == b"CONNECT" || upgrade {
            // Raw bytes may follow if the upstream accepts: stop watching.
            return Scan::Off;
        }
        if let Some(last) = codings.last() {
            return if last.eq_ignore_ascii_case(b"chunked") {
                Scan::ChunkSize(Vec::new())
            } else {
                Scan::Off
            };
        }
        match lengths.first() {
            None => Scan::Head(Vec::new()),
            Some(len) => match std::str::from_utf8(len)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                Some(0) => Scan::Head(Vec::new()),
                Some(n) => Scan::Body(n),
                None => Scan::Off,
            },
        }
    }
}

/// The lines of a head (which ends with a line end), without their `\r\n` or `\n`.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', head).map(move |nl| {
        let line = &head[start..nl];
        start = nl + 1;
        line.strip_suffix(b"\r").unwrap_or(line)
    })
}

/// The end (exclusive) of a head in `buf`, searching from `from`: just after the first empty
/// line (`\n\n` or `\n\r\n`, as httparse accepts bare `\n` line ends).
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let rest = buf.get(from..)?;
    memchr::memchr_iter(b'\n', rest).find_map(|p| {
        let nl = from + p;
        match buf.get(nl + 1) {
            Some(b'\n') => Some(nl + 2),
            Some(b'\r') if buf.get(nl + 2) == Some(&b'\n') => Some(nl + 3),
            _ => None,
        }
    })
}

/// The size of a chunk-size line (`1a;ext=1`), `None` if malformed.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let size = line.split(|b| *b == b';').next()?.trim_ascii();
    u64::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

// === impl AsyncRead / AsyncWrite ===

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && !matches!(this.scan, Scan::Off) {
            this.scan(&buf.filled()[before..]);
        }
        polled
    }
}

// Reads are scanned; writes go straight through.
crate::wire::write_through!(FramingGuard, io);

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(chunks: &[&[u8]]) -> (Arc<FramingVerdict>, u64) {
        let verdict = Arc::new(FramingVerdict::default());
        let mut guard = FramingGuard::new((), true, 8192, verdict.clone());
        for c in chunks {
            guard.scan(c);
        }
        (verdict, guard.heads)
    }

    #[test]
    fn follows_lengths_and_chunks_across_segments() {
        let stream: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;x=1\r\nGET /\r\n0\r\nT: 1\r\n\r\n\
GET /c HTTP/1.1\r\nHost: x\r\n\r\n";
        // Byte by byte and all at once must agree.
        let (v, heads) = scan_all(&[stream]);
        assert_eq!(heads, 3);
        assert!(!v.rejected(2));
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let (v, heads) = scan_all(&bytes);
        assert_eq!(heads, 3);
        assert!(!v.rejected(2));
        for split in 0..stream.len() {
            let (v, heads) = scan_all(&[&stream[..split], &stream[split..]]);
            assert_eq!(heads, 3, "split at {split}");
            assert!(!v.rejected(2));
        }
    }

    #[test]
    fn knows_when_what_was_read_ends_at_a_message_boundary() {
        let verdict = Arc::new(FramingVerdict::default());
        let mut guard = FramingGuard::new((), true, 8192, verdict);
        assert_eq!(guard.heads_at_boundary(), Some(0), "nothing read yet");
        let steps: [(&[u8], Option<u64>); 8] = [
            (b"\r\n", Some(0)),
            (b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n", None),
            (b"\r\nab", None),
            (b"c", Some(1)),
            (
                b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n",
                None,
            ),
            (b"0\r\n\r\n", Some(2)),
            (b"GET /c HTTP/1.1\r\n\r\nGET /d", None),
            (b" HTTP/1.1\r\n\r\n", Some(4)),
        ];
        for (bytes, expected) in steps {
            guard.scan(bytes);
            assert_eq!(guard.heads_at_boundary(), expected, "after {bytes:?}");
        }
        guard.scan(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        assert_eq!(guard.heads_at_boundary(), None, "no longer watching");
    }

    #[test]
    fn flags_the_smuggling_head_by_index() {
        let (v, _) = scan_all(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\n\
POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]);
        assert!(!v.rejected(0));
        assert!(v.rejected(1));
        let (v, _) =
            scan_all(&[b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n"]);
        assert!(v.rejected(0));
    }

    #[test]
    fn bare_newline_heads_end_where_httparse_ends_them() {
        for head in [
            &b"GET / HTTP/1.1\nHost: x\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            let mut stream = head.to_vec();
            stream.extend_from_slice(
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            for split in 0..stream.len() {
                let (v, heads) = scan_all(&[&stream[..split], &stream[split..]]);
                assert_eq!(heads, 2, "{head:?} split at {split}");
                assert!(!v.rejected(0) && v.rejected(1), "{head:?} split at {split}");
            }
        }
    }
}
