//! Our own HTTP/1.1 exchange with a plain-HTTP upstream, for the requests that make most of a
//! proxy's traffic: no body, idempotent method, no upgrade (a `GET` in short).
//!
//! Why not hyper's client for them: hyper drives each upstream connection as a task of its
//! own, and hands the request to it and the response head and body back through channels, so
//! every request wakes two tasks and crosses three queues; and it needs the request by value,
//! so a request that may have to be sent again (its connection closed before answering) was
//! sent as a copy of its header map. Here the request's own task writes the head from the
//! proxy's header map, reads the response head on the socket it checked out, and hands the
//! client a body that reads the socket itself. The body owns the connection until the
//! response is read to its end, then gives it back to the pool ([`Home`]). Requests with a
//! body, upgrades, HTTP/2 and TLS to the pod stay on hyper's client (`pool`).
//!
//! What is read follows RFC 9112 §6.3 as hyper's client does: no body after `HEAD`, 1xx, 204
//! and 304; `Transfer-Encoding` (chunked when it is the final coding, otherwise up to the
//! close) before `Content-Length`; then `Content-Length`; otherwise up to the close.
//! Informational responses other than 101 are skipped. A connection is kept for another
//! request when the response said so (HTTP/1.1 without `Connection: close`, HTTP/1.0 with
//! `Connection: keep-alive`), was delimited by its length or its chunks, and nothing followed
//! it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header};
use hyper::body::{Body, Frame, SizeHint};
use hyper::ext::ReasonPhrase;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// The most bytes a response head may take (hyper's client allows ~400 KiB, nginx's
/// `proxy_buffer_size` 4–8 KiB); past it the response is a bad gateway.
const MAX_HEAD: usize = 64 * 1024;
/// Header fields per response head (or trailer section) at most, as hyper's client.
const MAX_FIELDS: usize = 100;
/// The first read reserves this much; reads that fill the buffer double it up to [`MAX_READ`]
/// (a large body then takes few reads, as with hyper's adaptive buffer, which grows to ~400 KiB).
const FIRST_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;
/// Room made for a request head before it is written (a larger one grows the buffer).
const HEAD_ROOM: usize = 1024;
/// The longest chunk-size line (size and extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;
/// The largest trailer section accepted.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a connection goes back to once its response was read to the end: the pool that
/// opened it.
pub(crate) trait Home: Send + Sync {
    /// Takes back `conn`, which is between messages.
    fn give_back(&self, conn: Box<Conn>);
}

/// One connection to an endpoint, checked out for one exchange at a time.
pub(crate) struct Conn {
    io: TcpStream,
    /// The request head on its way out, then the bytes read and not used yet. Kept while the
    /// connection is idle (at most [`FIRST_READ`] of it; the pool holds few connections, one
    /// per request in flight at the busiest moment).
    buf: BytesMut,
    /// How much the next read reserves.
    read_size: usize,
    home: Arc<dyn Home>,
}

/// Why an exchange failed before a response head.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExchangeError {
    /// Nothing came back: the connection was closed or reset before any byte of a response
    /// (or the request could not be written). A bodyless idempotent request can go again.
    #[error("the connection closed before any response")]
    Unanswered(#[source] io::Error),
    #[error("reading the response head failed")]
    Read(#[source] io::Error),
    #[error("the connection closed in the middle of the response head")]
    ClosedInHead,
    #[error("the response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("invalid response head")]
    Parse(#[source] httparse::Error),
    #[error("invalid response head: {0}")]
    Invalid(&'static str),
}

impl ExchangeError {
    /// Whether no byte of a response arrived, so the request may be sent again elsewhere.
    pub(crate) fn unanswered(&self) -> bool {
        matches!(self, ExchangeError::Unanswered(_))
    }
}

/// Why a response body ended before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    #[error("reading the response body failed")]
    Read(#[source] io::Error),
    #[error("the upstream closed the connection before the end of the response body")]
    Incomplete,
    #[error("invalid chunked response body: {0}")]
    Chunked(&'static str),
}

impl Conn {
    /// Boxed: it moves with every exchange (into the response body, back to the pool), and a
    /// response is moved many times on its way to the client.
    pub(crate) fn new(io: TcpStream, home: Arc<dyn Home>) -> Box<Self> {
        Box::new(Conn {
            io,
            buf: BytesMut::new(),
            read_size: FIRST_READ,
            home,
        })
    }

    /// Whether an idle connection can take a request: nothing arrived on it and it was not
    /// closed since its last response. No system call when the last read emptied the socket
    /// (tokio then knows it is not readable); otherwise one non-blocking read.
    pub(crate) fn is_quiet(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Sends a bodyless request and reads the response head; the body reads the rest.
    pub(crate) async fn send(
        mut self: Box<Self>,
        method: &Method,
        target: &PathAndQuery,
        headers: &HeaderMap,
    ) -> Result<Response<ResponseBody>, ExchangeError> {
        self.buf.clear();
        encode_head(&mut self.buf, method, target, headers);
        if let Err(err) = self.io.write_all(&self.buf).await {
            return Err(ExchangeError::Unanswered(err));
        }
        self.buf.clear();
        let mut received = false;
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, method)? {
                    Head::Partial if self.buf.len() > MAX_HEAD => {
                        return Err(ExchangeError::HeadTooLarge);
                    }
                    Head::Partial => {}
                    // Passed over; what follows it may already be here.
                    Head::Informational => continue,
                    Head::Final(head) => return Ok(self.respond(head)),
                }
            }
            let read = std::future::poll_fn(|cx| self.poll_fill(cx)).await;
            match read {
                Ok(0) if received => return Err(ExchangeError::ClosedInHead),
                Ok(0) => {
                    return Err(ExchangeError::Unanswered(
                        io::ErrorKind::UnexpectedEof.into(),
                    ));
                }
                Ok(_) => received = true,
                Err(err) if received => return Err(ExchangeError::Read(err)),
                Err(err) => return Err(ExchangeError::Unanswered(err)),
            }
        }
    }

    fn respond(self: Box<Self>, head: FinalHead) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody {
            conn: Some(self),
            framing: head.framing,
            reusable: head.reusable,
        });
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        if let Some(reason) = head.reason {
            response.extensions_mut().insert(reason);
        }
        response
    }

    /// Reads what the socket has into `buf`; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 2 {
            self.buf.reserve(self.read_size);
        }
        let room = self.buf.capacity() - self.buf.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.buf
        ))?;
        if n == room && self.read_size < MAX_READ {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }
}

/// Writes the request head: request line, the fields as the map holds them, blank line.
fn encode_head(out: &mut BytesMut, method: &Method, target: &PathAndQuery, headers: &HeaderMap) {
    // Usually within the buffer kept from the last exchange; the writes grow it if not.
    out.reserve(HEAD_ROOM);
    out.extend_from_slice(method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(target.as_str().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

enum Head {
    /// Not all of it yet.
    Partial,
    /// A 1xx other than 101, consumed and passed over.
    Informational,
    Final(FinalHead),
}

struct FinalHead {
    status: StatusCode,
    /// The pod's reason phrase, when it is not the status code's usual one.
    reason: Option<ReasonPhrase>,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    reusable: bool,
}

/// Parses the response head at the start of `buf`, consuming it when complete.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Head, ExchangeError> {
    // Where each field's name and value sit in `buf`, kept so that the values can be slices of
    // the head once it is split off (no copy).
    let mut spans = [(0usize, 0usize, 0usize, 0usize); MAX_FIELDS];
    let (len, status, reason, version, count) = {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut parsed = httparse::Response::new(&mut fields);
        let len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(Head::Partial),
            Err(err) => return Err(ExchangeError::Parse(err)),
        };
        let base = buf.as_ptr() as usize;
        let count = parsed.headers.len();
        for (span, field) in spans.iter_mut().zip(parsed.headers.iter()) {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            *span = (
                name,
                name + field.name.len(),
                value,
                value + field.value.len(),
            );
        }
        let status = StatusCode::from_u16(parsed.code.unwrap_or(0))
            .map_err(|_| ExchangeError::Invalid("status code"))?;
        // Kept, as hyper's client keeps it, when it is not the code's usual one: the client
        // then reads the phrase the pod wrote.
        let reason = parsed
            .reason
            .filter(|reason| status.canonical_reason() != Some(*reason))
            .map(|r| {
                let start = r.as_ptr() as usize - base;
                (start, start + r.len())
            });
        let version = match parsed.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        (len, status, reason, version, count)
    };
    let head = buf.split_to(len).freeze();
    let code = status.as_u16();
    match code {
        101 => {
            return Err(ExchangeError::Invalid(
                "101 to a request that asked for no upgrade",
            ));
        }
        100..=199 => return Ok(Head::Informational),
        _ => {}
    }

    let mut headers = HeaderMap::with_capacity(count);
    let mut length: Option<u64> = None;
    let mut length_invalid = false;
    let mut chunked: Option<bool> = None;
    let (mut close, mut keep_alive) = (false, false);
    for &(name_start, name_end, value_start, value_end) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[name_start..name_end])
            .map_err(|_| ExchangeError::Invalid("field name"))?;
        let raw = &head[value_start..value_end];
        if name == header::CONTENT_LENGTH {
            for item in raw.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                match (parse_length(item), length) {
                    (Some(n), None) => length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => length_invalid = true,
                }
            }
        } else if name == header::TRANSFER_ENCODING {
            // The final coding decides: chunked or not, over every field line.
            chunked = Some(
                raw.rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked")),
            );
        } else if name == header::CONNECTION {
            for token in raw.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
            .map_err(|_| ExchangeError::Invalid("field value"))?;
        headers.append(name, value);
    }

    let mut reusable = match version {
        Version::HTTP_10 => keep_alive && !close,
        _ => !close,
    };
    let framing = if *method == Method::HEAD || code == 204 || code == 304 {
        Framing::Length(0)
    } else if let Some(chunked) = chunked {
        if version == Version::HTTP_10 {
            return Err(ExchangeError::Invalid(
                "Transfer-Encoding in an HTTP/1.0 response",
            ));
        }
        if headers.remove(header::CONTENT_LENGTH).is_some() {
            // Both: the coding wins (RFC 9112 §6.3), the length goes, and so does the
            // connection: such a response is one nobody should trust to frame the next.
            reusable = false;
        }
        if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        }
    } else if length_invalid {
        return Err(ExchangeError::Invalid("Content-Length"));
    } else if let Some(length) = length {
        Framing::Length(length)
    } else {
        Framing::Close
    };
    if framing == Framing::Close {
        reusable = false;
    }
    let reason =
        reason.and_then(|(start, end)| ReasonPhrase::try_from(head.slice(start..end)).ok());
    Ok(Head::Final(FinalHead {
        status,
        reason,
        version,
        headers,
        framing,
        reusable,
    }))
}

/// A `Content-Length` value: decimal digits only.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes to go (0: the body is over).
    Length(u64),
    Chunked(Chunk),
    /// Up to the end of the connection.
    Close,
}

/// Where the chunked decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// This many bytes of chunk data to go.
    Data(u64),
    /// At the line end after a chunk's data.
    DataEnd,
    /// At the trailer section after the last chunk.
    Trailers,
    /// Read to the end.
    Done,
}

// === impl ResponseBody ===

/// The response body, read from the connection as the client takes it. Read to its end, it
/// gives the connection back to the pool; dropped before, it closes it.
pub(crate) struct ResponseBody {
    conn: Option<Box<Conn>>,
    framing: Framing,
    reusable: bool,
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseBody")
            .field("framing", &self.framing)
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

impl ResponseBody {
    fn at_end(&self) -> bool {
        matches!(
            self.framing,
            Framing::Length(0) | Framing::Chunked(Chunk::Done)
        )
    }

    /// At the end of the body: the connection goes home if it may carry another request and
    /// nothing followed the response.
    fn finish(&mut self) {
        if let Some(mut conn) = self.conn.take()
            && self.reusable
            && conn.buf.is_empty()
        {
            // The buffer stays for the next exchange (the response's bytes, handed out as
            // slices of it, are its to reclaim once they are sent): no allocation per request.
            // One grown by a large body goes; the next exchange starts from the first size.
            if conn.read_size > FIRST_READ {
                conn.buf = BytesMut::new();
                conn.read_size = FIRST_READ;
            }
            let home = Arc::clone(&conn.home);
            home.give_back(conn);
        }
    }

    /// The next step of the chunked decoder over what is buffered: a frame to hand out, or
    /// `None` when more bytes are needed (or the state moved on: the caller loops).
    fn decode_chunked(
        buf: &mut BytesMut,
        state: &mut Chunk,
    ) -> Result<Option<Frame<Bytes>>, BodyError> {
        match *state {
            Chunk::Size => {
                let Some(nl) = memchr::memchr(b'\n', buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(BodyError::Chunked("chunk-size line too long"));
                    }
                    return Ok(None);
                };
                let line = buf[..nl]
                    .strip_suffix(b"\r")
                    .ok_or(BodyError::Chunked("chunk-size line without CRLF"))?;
                let size = chunk_size(line).ok_or(BodyError::Chunked("chunk size"))?;
                buf.advance(nl + 1);
                *state = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
                Ok(None)
            }
            Chunk::Data(mut left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let data = take_data(buf, &mut left);
                *state = if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                };
                Ok(Some(Frame::data(data)))
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(BodyError::Chunked("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                *state = Chunk::Size;
                Ok(None)
            }
            Chunk::Trailers => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    *state = Chunk::Done;
                    return Ok(None);
                }
                let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
                    if buf.len() > MAX_TRAILERS {
                        return Err(BodyError::Chunked("trailer section too large"));
                    }
                    return Ok(None);
                };
                let section = buf.split_to(end + 4).freeze();
                *state = Chunk::Done;
                let trailers = parse_trailers(&section)?;
                Ok((!trailers.is_empty()).then(|| Frame::trailers(trailers)))
            }
            Chunk::Done => Ok(None),
        }
    }
}

/// Up to `left` bytes of body from the front of `buf` (a slice of it, not a copy), counted off
/// `left`.
fn take_data(buf: &mut BytesMut, left: &mut u64) -> Bytes {
    let take = (*left).min(buf.len() as u64);
    *left -= take;
    buf.split_to(take as usize).freeze()
}

/// A chunk-size line's size (hexadecimal, then optional extensions after `;`).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let rest = line[digits..].trim_ascii_start();
    if !(rest.is_empty() || rest.starts_with(b";")) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

/// The fields of a trailer section (which ends with its blank line).
fn parse_trailers(section: &Bytes) -> Result<HeaderMap, BodyError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let parsed = match httparse::parse_headers(section, &mut fields) {
        Ok(httparse::Status::Complete((_, parsed))) => parsed,
        _ => return Err(BodyError::Chunked("trailer section")),
    };
    let mut trailers = HeaderMap::with_capacity(parsed.len());
    for field in parsed.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| BodyError::Chunked("trailer field name"))?;
        let value = HeaderValue::from_maybe_shared(section.slice_ref(field.value))
            .map_err(|_| BodyError::Chunked("trailer field value"))?;
        trailers.append(name, value);
    }
    Ok(trailers)
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            if this.at_end() {
                this.finish();
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if !conn.buf.is_empty() {
                match &mut this.framing {
                    Framing::Length(left) => {
                        let data = take_data(&mut conn.buf, left);
                        if *left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Framing::Close => {
                        let data = conn.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Framing::Chunked(state) => {
                        let before = *state;
                        match Self::decode_chunked(&mut conn.buf, state) {
                            Err(err) => {
                                this.conn = None;
                                return Poll::Ready(Some(Err(err)));
                            }
                            Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                            // Moved on: decode what follows.
                            Ok(None) if *state != before => continue,
                            // Needs more bytes.
                            Ok(None) => {}
                        }
                    }
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.framing == Framing::Close => {
                    // The end of a close-delimited body; the connection cannot be reused.
                    this.framing = Framing::Length(0);
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(BodyError::Incomplete)));
                }
                Ok(_) => {}
                Err(err) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(BodyError::Read(err))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.at_end()
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // A body hyper never polled because it was empty (HEAD, 204, 304, length 0) is at its
        // end; one dropped mid-way takes its connection with it.
        if self.at_end() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    //! Against real sockets: a scripted server on 127.0.0.1 answers with the bytes each test
    //! gives, written in pieces where the framing is the point.

    use std::sync::Mutex;
    use std::time::Duration;

    use http_body_util::BodyExt;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A pool stand-in: keeps what comes home.
    #[derive(Default)]
    struct Kept(Mutex<Vec<Conn>>);

    impl Home for Kept {
        fn give_back(&self, conn: Box<Conn>) {
            self.0.lock().unwrap().push(*conn);
        }
    }

    impl Kept {
        fn take(&self) -> Option<Box<Conn>> {
            self.0.lock().unwrap().pop().map(Box::new)
        }
    }

    /// Reads one request head from `socket`.
    async fn read_head(socket: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if socket.read(&mut byte).await.ok()? == 0 {
                return None;
            }
            head.push(byte[0]);
        }
        Some(head)
    }

    /// A server that answers each request head it reads with the next of `answers`, written
    /// `step` bytes at a time, and closes after the last. Returns its address and the heads.
    async fn server(
        answers: Vec<&'static [u8]>,
        step: usize,
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            socket.set_nodelay(true).unwrap();
            let mut heads = Vec::new();
            for answer in answers {
                let Some(head) = read_head(&mut socket).await else {
                    break;
                };
                heads.push(head);
                for piece in answer.chunks(step) {
                    socket.write_all(piece).await.unwrap();
                    socket.flush().await.unwrap();
                    if step < answer.len() {
                        tokio::task::yield_now().await;
                    }
                }
            }
            heads
        });
        (addr, task)
    }

    async fn connect(addr: std::net::SocketAddr, home: &Arc<Kept>) -> Box<Conn> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        Conn::new(tcp, home.clone())
    }

    fn get(host: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static(host));
        headers
    }

    async fn exchange(
        conn: Box<Conn>,
        method: Method,
    ) -> Result<Response<ResponseBody>, ExchangeError> {
        conn.send(&method, &PathAndQuery::from_static("/"), &get("app"))
            .await
    }

    #[tokio::test]
    async fn the_request_head_is_written_as_the_map_holds_it() {
        let (addr, server) = server(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], usize::MAX).await;
        let home = Arc::new(Kept::default());
        let mut headers = get("app.example");
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let conn = connect(addr, &home).await;
        let response = conn
            .send(&Method::GET, &PathAndQuery::from_static("/p?q=1"), &headers)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        drop(response);
        let heads = server.await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&heads[0]),
            "GET /p?q=1 HTTP/1.1\r\nhost: app.example\r\nx-multi: a\r\nx-multi: b\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_length_delimited_response_comes_back_and_its_connection_goes_home() {
        let (addr, server) = server(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\r\nhello",
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nbye",
            ],
            3,
        )
        .await;
        let home = Arc::new(Kept::default());
        let response = exchange(connect(addr, &home).await, Method::GET)
            .await
            .unwrap();
        assert_eq!(response.headers()["x-a"], "1");
        assert_eq!(response.body().size_hint().exact(), Some(5));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
        let again = home.take().expect("the connection came home");
        assert!(again.is_quiet());
        let response = exchange(again, Method::GET).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "bye");
        assert_eq!(
            server.await.unwrap().len(),
            2,
            "both requests on one connection"
        );
    }

    #[tokio::test]
    async fn chunked_bodies_are_decoded_with_their_trailers_whatever_the_reads() {
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n1A \r\n, and the rest of the body\r\n0\r\nGrpc-Status: 0\r\nX-T: 2\r\n\r\n";
        for step in [1, 2, 7, usize::MAX] {
            let (addr, _server) = server(vec![ANSWER], step).await;
            let home = Arc::new(Kept::default());
            let response = exchange(connect(addr, &home).await, Method::GET)
                .await
                .unwrap();
            assert!(response.headers().contains_key(header::TRANSFER_ENCODING));
            let collected = response.into_body().collect().await.unwrap();
            let trailers = collected.trailers().cloned().expect("trailers");
            assert_eq!(trailers["grpc-status"], "0", "step {step}");
            assert_eq!(trailers["x-t"], "2");
            assert_eq!(collected.to_bytes(), "hello, and the rest of the body");
            assert!(home.take().is_some(), "step {step}: read to its end, kept");
        }
    }

    #[tokio::test]
    async fn a_chunked_body_without_trailers_ends_at_its_last_chunk() {
        let (addr, _server) = server(
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
            1,
        )
        .await;
        let home = Arc::new(Kept::default());
        let response = exchange(connect(addr, &home).await, Method::GET)
            .await
            .unwrap();
        let collected = response.into_body().collect().await.unwrap();
        assert!(collected.trailers().is_none());
        assert_eq!(collected.to_bytes(), "ok");
        assert!(home.take().is_some());
    }

    #[tokio::test]
    async fn responses_without_a_body_are_over_at_their_head() {
        // RFC 9112 §6.3: whatever the fields say, no body after HEAD, 204 and 304.
        for (method, answer) in [
            (
                Method::HEAD,
                &b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"[..],
            ),
            (
                Method::GET,
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
            ),
            (Method::GET, b"HTTP/1.1 204 No Content\r\n\r\n"),
            (Method::GET, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        ] {
            let (addr, _server) = server(vec![answer], usize::MAX).await;
            let home = Arc::new(Kept::default());
            let response = exchange(connect(addr, &home).await, method.clone())
                .await
                .unwrap();
            assert!(
                response.body().is_end_stream(),
                "{method} {:?}",
                response.status()
            );
            // hyper does not poll a body at its end: dropped, it still goes home.
            drop(response);
            assert!(home.take().is_some(), "{method}");
        }
    }

    #[tokio::test]
    async fn a_reason_phrase_of_its_own_is_kept_for_the_client() {
        for (answer, kept) in [
            (
                &b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n"[..],
                Some("Fine Thanks"),
            ),
            (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", None),
        ] {
            let (addr, _server) = server(vec![answer], usize::MAX).await;
            let home = Arc::new(Kept::default());
            let response = exchange(connect(addr, &home).await, Method::GET)
                .await
                .unwrap();
            let reason = response.extensions().get::<ReasonPhrase>();
            assert_eq!(reason.map(|r| r.as_bytes()), kept.map(str::as_bytes));
        }
    }

    #[tokio::test]
    async fn informational_responses_are_passed_over() {
        let (addr, _server) = server(
            vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            4,
        )
        .await;
        let home = Arc::new(Kept::default());
        let response = exchange(connect(addr, &home).await, Method::GET)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(!response.headers().contains_key("link"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
    }

    #[tokio::test]
    async fn what_the_response_says_decides_whether_the_connection_is_kept() {
        for (answer, kept) in [
            (
                &b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"[..],
                false,
            ),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: x-a, Keep-Alive\r\nContent-Length: 2\r\n\r\nok",
                true,
            ),
            // More than the response: something is wrong with this connection.
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
                false,
            ),
        ] {
            let (addr, _server) = server(vec![answer], usize::MAX).await;
            let home = Arc::new(Kept::default());
            let response = exchange(connect(addr, &home).await, Method::GET)
                .await
                .unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, "ok");
            assert_eq!(
                home.take().is_some(),
                kept,
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    }

    #[tokio::test]
    async fn a_body_without_length_or_chunks_ends_with_the_connection() {
        let (addr, _server) = server(vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end"], 4).await;
        let home = Arc::new(Kept::default());
        let response = exchange(connect(addr, &home).await, Method::GET)
            .await
            .unwrap();
        assert_eq!(response.body().size_hint().exact(), None);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "until the end");
        assert!(home.take().is_none());
    }

    #[tokio::test]
    async fn with_both_framings_the_coding_wins_and_the_length_goes() {
        let (addr, _server) = server(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"],
            usize::MAX,
        )
        .await;
        let home = Arc::new(Kept::default());
        let response = exchange(connect(addr, &home).await, Method::GET)
            .await
            .unwrap();
        assert!(!response.headers().contains_key(header::CONTENT_LENGTH));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        assert!(home.take().is_none(), "not trusted with another request");
    }

    #[tokio::test]
    async fn a_close_before_any_byte_may_be_sent_again_one_after_may_not() {
        let home = Arc::new(Kept::default());
        let (addr, _server) = server(vec![], usize::MAX).await;
        let err = exchange(connect(addr, &home).await, Method::GET)
            .await
            .unwrap_err();
        assert!(err.unanswered(), "{err}");

        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Len"[..],
            b"HTTP/1.1 100 Continue\r\n\r\n",
        ] {
            let (addr, _server) = server(vec![answer], usize::MAX).await;
            let err = exchange(connect(addr, &home).await, Method::GET)
                .await
                .unwrap_err();
            assert!(!err.unanswered(), "{err}");
        }
    }

    #[tokio::test]
    async fn invalid_heads_are_refused() {
        let home = Arc::new(Kept::default());
        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\nok"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
            b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            b"NOT HTTP\r\n\r\n",
        ] {
            let (addr, _server) = server(vec![answer], usize::MAX).await;
            let err = exchange(connect(addr, &home).await, Method::GET)
                .await
                .unwrap_err();
            assert!(!err.unanswered(), "{err}");
        }
        // Equal values in a list are one length.
        let (addr, _server) = server(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok"],
            usize::MAX,
        )
        .await;
        let response = exchange(connect(addr, &home).await, Method::GET)
            .await
            .unwrap();
        assert_eq!(response.body().size_hint().exact(), Some(2));
    }

    #[tokio::test]
    async fn a_head_past_the_limit_is_refused() {
        let mut answer = b"HTTP/1.1 200 OK\r\n".to_vec();
        while answer.len() <= MAX_HEAD {
            answer.extend_from_slice(b"X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        let answer: &'static [u8] = answer.leak();
        let (addr, _server) = server(vec![answer], usize::MAX).await;
        let home = Arc::new(Kept::default());
        let err = exchange(connect(addr, &home).await, Method::GET)
            .await
            .unwrap_err();
        assert!(
            matches!(err, ExchangeError::HeadTooLarge | ExchangeError::Parse(_)),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_its_connection_is_dropped() {
        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX\r\n",
        ] {
            let (addr, _server) = server(vec![answer], usize::MAX).await;
            let home = Arc::new(Kept::default());
            let response = exchange(connect(addr, &home).await, Method::GET)
                .await
                .unwrap();
            assert!(response.into_body().collect().await.is_err());
            assert!(home.take().is_none());
        }
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_not_quiet() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            read_head(&mut socket).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .await
                .unwrap();
            socket
        });
        let home = Arc::new(Kept::default());
        let response = exchange(connect(addr, &home).await, Method::GET)
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
        let conn = home.take().unwrap();
        assert!(conn.is_quiet(), "open and silent");
        // The upstream's idle close.
        drop(server.await.unwrap());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while conn.is_quiet() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the close was never seen"
            );
            tokio::task::yield_now().await;
        }
    }

    /// One response a pod could send, and how its bytes are cut into writes.
    #[derive(Debug, Clone)]
    struct Case {
        head_request: bool,
        http10: bool,
        status: u16,
        connection: &'static str,
        /// `None`: no `Content-Length`; otherwise the value written (maybe wrong, maybe a list).
        length: Option<String>,
        coding: &'static str,
        body: Vec<u8>,
        chunks: Vec<usize>,
        trailers: bool,
        step: usize,
    }

    impl Case {
        fn bytes(&self) -> Vec<u8> {
            let mut out = format!(
                "HTTP/1.{} {} Whatever\r\nx-field: a\r\n",
                u8::from(!self.http10),
                self.status
            )
            .into_bytes();
            if !self.connection.is_empty() {
                out.extend(format!("Connection: {}\r\n", self.connection).bytes());
            }
            if let Some(length) = &self.length {
                out.extend(format!("Content-Length: {length}\r\n").bytes());
            }
            if !self.coding.is_empty() {
                out.extend(format!("Transfer-Encoding: {}\r\n", self.coding).bytes());
            }
            out.extend_from_slice(b"x-field: b\r\n\r\n");
            if self.coding.ends_with("chunked") {
                let mut rest = &self.body[..];
                for size in self
                    .chunks
                    .iter()
                    .copied()
                    .chain(std::iter::once(usize::MAX))
                {
                    let n = size.min(rest.len());
                    if n == 0 {
                        break;
                    }
                    out.extend(format!("{n:x}\r\n").bytes());
                    out.extend_from_slice(&rest[..n]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                }
                out.extend_from_slice(b"0\r\n");
                if self.trailers {
                    out.extend_from_slice(b"grpc-status: 0\r\n");
                }
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&self.body);
            }
            out
        }
    }

    fn case() -> impl Strategy<Value = Case> {
        let length = prop_oneof![
            3 => Just(None),
            3 => Just(Some(String::from("LEN"))),
            1 => Just(Some(String::from("LEN, LEN"))),
            1 => Just(Some(String::from("LEN, 1"))),
            1 => Just(Some(String::from("x"))),
        ];
        (
            (
                any::<bool>(),
                prop::bool::weighted(0.2),
                prop::sample::select(vec![200u16, 201, 204, 304, 404, 503]),
            ),
            prop::sample::select(vec!["", "close", "keep-alive", "x-a, close", "Keep-Alive"]),
            length,
            prop::sample::select(vec!["", "", "chunked", "gzip, chunked", "gzip"]),
            (
                prop::collection::vec(any::<u8>(), 0..300),
                prop::collection::vec(1usize..40, 0..6),
            ),
            any::<bool>(),
            prop::sample::select(vec![1usize, 3, 17, usize::MAX]),
        )
            .prop_map(
                |(
                    (head_request, http10, status),
                    connection,
                    length,
                    coding,
                    (body, chunks),
                    trailers,
                    step,
                )| {
                    let length = length.map(|l| l.replace("LEN", &body.len().to_string()));
                    Case {
                        head_request,
                        http10,
                        status,
                        connection,
                        length,
                        coding,
                        body,
                        chunks,
                        trailers,
                        step,
                    }
                },
            )
    }

    /// What a client sees of one exchange: the head, then the body's bytes and trailers, or
    /// where it failed (`None`).
    type Seen = Option<(
        u16,
        Vec<(String, Vec<u8>)>,
        Option<(Vec<u8>, Option<HeaderMap>)>,
    )>;

    fn fields(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
        headers
            .iter()
            .filter(|(name, _)| *name != header::CONTENT_LENGTH)
            .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
            .collect()
    }

    async fn ours(case: &Case, method: &Method) -> Seen {
        let answer: &'static [u8] = case.bytes().leak();
        let (addr, _server) = server(vec![answer], case.step).await;
        let home = Arc::new(Kept::default());
        let response = exchange(connect(addr, &home).await, method.clone())
            .await
            .ok()?;
        let head = (response.status().as_u16(), fields(response.headers()));
        let body = response.into_body().collect().await.ok().map(|c| {
            let trailers = c.trailers().cloned();
            (c.to_bytes().to_vec(), trailers)
        });
        Some((head.0, head.1, body))
    }

    async fn hypers(case: &Case, method: &Method) -> Seen {
        let answer: &'static [u8] = case.bytes().leak();
        let (addr, _server) = server(vec![answer], case.step).await;
        let tcp = TcpStream::connect(addr).await.ok()?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .ok()?;
        tokio::spawn(connection);
        let mut request = http::Request::new(http_body_util::Empty::<Bytes>::new());
        *request.method_mut() = method.clone();
        request
            .headers_mut()
            .insert(header::HOST, HeaderValue::from_static("app"));
        let response = sender.send_request(request).await.ok()?;
        let head = (response.status().as_u16(), fields(response.headers()));
        let body = response.into_body().collect().await.ok().map(|c| {
            let trailers = c.trailers().cloned();
            (c.to_bytes().to_vec(), trailers)
        });
        Some((head.0, head.1, body))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever a pod answers (framing by length, chunks or close, wrong or listed
        /// lengths, codings, trailers, HTTP/1.0, bodiless statuses, `HEAD`) and however its
        /// bytes arrive, a client sees from our exchange what hyper's client would have shown
        /// it: the same status, fields, body and trailers, and a failure where it fails.
        /// (`Content-Length` is left out of the comparison: with `Transfer-Encoding` we remove
        /// it, as RFC 9112 §6.1 asks of an intermediary, where hyper leaves it.)
        #[test]
        fn our_exchange_reads_what_hypers_client_reads(case in case()) {
            let method = if case.head_request { Method::HEAD } else { Method::GET };
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let (ours, hypers) = runtime.block_on(async {
                (ours(&case, &method).await, hypers(&case, &method).await)
            });
            prop_assert_eq!(ours, hypers, "{:?}", String::from_utf8_lossy(&case.bytes()));
        }
    }

    #[test]
    fn chunk_sizes_are_hexadecimal_with_optional_extensions() {
        assert_eq!(chunk_size(b"1a"), Some(26));
        assert_eq!(chunk_size(b"1A ; name=value"), Some(26));
        assert_eq!(chunk_size(b"0"), Some(0));
        assert_eq!(chunk_size(b""), None);
        assert_eq!(chunk_size(b"-1"), None);
        assert_eq!(chunk_size(b"1x"), None);
        assert_eq!(chunk_size(b"11111111111111111"), None, "more than 64 bits");
    }
}
