//! Our own HTTP/1.1 exchange with an HTTP/1.1 upstream, for the requests that make most of a
//! proxy's traffic: no body, idempotent method, no upgrade (a `GET` in short).
//!
//! Why not hyper's client for them: hyper drives each upstream connection as a task of its
//! own, and hands the request to it and the response head and body back through channels, so
//! every request wakes two tasks and crosses three queues; and it needs the request by value,
//! so a request that may have to be sent again (its connection closed before answering) was
//! sent as a copy of its header map. Here the request's own task writes the head from the
//! proxy's header map, reads the response head on the socket it checked out, and hands the
//! client a body that reads the socket itself. The body owns the connection until the
//! response is read to its end, then gives it back to the pool ([`Home`]). The connection is
//! plain TCP or TLS to the pod (re-encrypt), the same exchange over either ([`Stream`]).
//! Requests with a body, upgrades and HTTP/2 stay on hyper's client (`pool`).
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
use http::header::InvalidHeaderName;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header};
use hyper::body::{Body, Frame, SizeHint};
use hyper::ext::ReasonPhrase;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::client::TlsStream;

use super::hop_by_hop::{is_hop_by_hop, remove_named};

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

/// What an exchange is carried over: TCP, or TLS over TCP to a pod that terminates it
/// (re-encrypt). The TLS stream is boxed: its session state is large, and a plain connection
/// should not carry its size.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

/// One connection to an endpoint, checked out for one exchange at a time.
pub(crate) struct Conn {
    io: Stream,
    /// The request head on its way out, then the bytes read and not used yet. Kept while the
    /// connection is idle (at most [`FIRST_READ`] of it; the pool holds few connections, one
    /// per request in flight at the busiest moment).
    buf: BytesMut,
    /// How much the next read reserves.
    read_size: usize,
    /// Reused by every response head read on this connection.
    scratch: Scratch,
    /// The deadline of the exchange under way ([`Conn::send`]'s), made at the first one and
    /// moved on by each: a later deadline is an atomic store in tokio's timer, where a new
    /// timer per request was an insertion into its wheel and a removal (~600 instructions).
    /// While the connection is idle it stays in the wheel at the last deadline; if it fires
    /// there (after the whole response timeout unused) the next exchange puts it back.
    deadline: Option<Pin<Box<Sleep>>>,
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
    /// The deadline passed before the whole response head was in.
    #[error("no response head before the deadline")]
    TimedOut,
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
    pub(crate) fn new(io: Stream, home: Arc<dyn Home>) -> Box<Self> {
        Box::new(Conn {
            io,
            buf: BytesMut::new(),
            read_size: FIRST_READ,
            scratch: Scratch::default(),
            deadline: None,
            home,
        })
    }

    /// Whether an idle connection can take a request: nothing arrived on it and it was not
    /// closed since its last response — a read finds nothing to return yet. No system call
    /// when the last read emptied the socket (tokio then knows it is not readable); otherwise
    /// one non-blocking read. Over TLS, records that carry no data (a TLS 1.3 session ticket)
    /// are taken in by that read and leave the connection quiet; data, `close_notify` or the
    /// end of the TCP stream do not. A byte read here is lost, and so is the connection.
    pub(crate) fn is_quiet(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// Sends a bodyless request (the fields of `headers`, then `extra`'s lines: fields the
    /// caller keeps out of the map) and reads the response head by `deadline`
    /// ([`ExchangeError::TimedOut`] after it); the body reads the rest. Once a final response
    /// head is in, `headers` (no longer needed) is taken to hold its fields (see
    /// [`RECYCLED_MAP_FIELDS`]); until then, and always when the error is
    /// [`ExchangeError::Unanswered`], it is left as it was, to be sent again.
    pub(crate) async fn send(
        mut self: Box<Self>,
        method: &Method,
        target: &PathAndQuery,
        headers: &mut HeaderMap,
        extra: &[(&str, &[u8])],
        deadline: Instant,
    ) -> Result<Response<ResponseBody>, ExchangeError> {
        let mut timer = match self.deadline.take() {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        self.buf.clear();
        encode_head(&mut self.buf, method, target, headers, extra);
        // Over TLS the flush sends the records the write left in the session.
        let Conn { io, buf, .. } = &mut *self;
        let written = by(&mut timer, async {
            io.write_all(buf).await?;
            io.flush().await
        })
        .await?;
        if let Err(err) = written {
            return Err(ExchangeError::Unanswered(err));
        }
        self.buf.clear();
        let mut received = false;
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, method, &mut self.scratch, headers)? {
                    Head::Partial if self.buf.len() > MAX_HEAD => {
                        return Err(ExchangeError::HeadTooLarge);
                    }
                    Head::Partial => {}
                    // Passed over; what follows it may already be here.
                    Head::Informational => continue,
                    Head::Final(head) => {
                        self.deadline = Some(timer);
                        return Ok(self.respond(head));
                    }
                }
            }
            let read = by(&mut timer, std::future::poll_fn(|cx| self.poll_fill(cx))).await?;
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

/// `work`'s output, or [`ExchangeError::TimedOut`] if `timer` fires first. `work` is polled
/// first: what is ready is taken even at the deadline, and the timer is only looked at (its
/// waker registered) when the work waits.
async fn by<F: Future>(timer: &mut Pin<Box<Sleep>>, work: F) -> Result<F::Output, ExchangeError> {
    let mut work = std::pin::pin!(work);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = work.as_mut().poll(cx) {
            return Poll::Ready(Ok(out));
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(ExchangeError::TimedOut))
    })
    .await
}

/// Writes the request head: request line, the fields as the map holds them, then `extra`'s
/// lines, blank line.
fn encode_head(
    out: &mut BytesMut,
    method: &Method,
    target: &PathAndQuery,
    headers: &HeaderMap,
    extra: &[(&str, &[u8])],
) {
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
    for (name, value) in extra {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
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

/// Where one field's name and value sit in the read buffer: `(name start, name end, value
/// start, value end)`.
type FieldSpan = (usize, usize, usize, usize);

/// A request's header map at most this large becomes the response's (cleared): hyper's server
/// keeps a response's map for the next request on the connection, so the map then circulates
/// with no allocation and no growth per request. A larger one (a request with many fields) is
/// not kept that way: it would stay with the idle connection.
const RECYCLED_MAP_FIELDS: usize = 32;

/// What a response head is parsed with, kept by the connection from one exchange to the next
/// so that a parse neither allocates nor zeroes a scratch array.
#[derive(Default)]
struct Scratch {
    spans: Vec<FieldSpan>,
    names: KnownNames,
}

/// The field names of the connection's last response, as the pod wrote them and as parsed. A
/// pod answers every request with the same names in the same order (`Server`, `Date`,
/// `Content-Type`…), so a name written as at its place last time is taken from here (a byte
/// comparison, and a copy or a reference count) instead of parsed again (~115 instructions a
/// name: a search among the standard names, an allocation for any other).
#[derive(Default)]
struct KnownNames {
    /// The names as written, one after another.
    written: Vec<u8>,
    /// Per place in the head: where its name ends in `written`, and the name.
    names: Vec<(usize, HeaderName)>,
}

/// At most this many names, of at most [`KNOWN_NAME_BYTES`] in all, are remembered: a pooled
/// connection keeps them while it waits (~0.5 KiB for a usual head).
const KNOWN_NAMES: usize = 24;
const KNOWN_NAME_BYTES: usize = 512;

impl KnownNames {
    /// The name of the field at `place` in the head, written `raw`: the one remembered when
    /// the last response wrote the same bytes there, else parsed and remembered (in place of
    /// what was remembered from there on).
    fn name(&mut self, place: usize, raw: &[u8]) -> Result<HeaderName, InvalidHeaderName> {
        // Where this place's name starts in `written`: where the one before it ends. `None`
        // when that one is not remembered (past the bounds), and so neither is this one.
        let start = match place.checked_sub(1) {
            None => Some(0),
            Some(before) => self.names.get(before).map(|(end, _)| *end),
        };
        let Some(start) = start else {
            return HeaderName::from_bytes(raw);
        };
        if let Some((end, name)) = self.names.get(place)
            && self.written.get(start..*end) == Some(raw)
        {
            return Ok(name.clone());
        }
        let name = HeaderName::from_bytes(raw)?;
        self.names.truncate(place);
        self.written.truncate(start);
        if place < KNOWN_NAMES && start + raw.len() <= KNOWN_NAME_BYTES {
            self.written.extend_from_slice(raw);
            self.names.push((self.written.len(), name.clone()));
        }
        Ok(name)
    }
}

/// Parses the response head at the start of `buf`, consuming it when complete. The fields go
/// into `map` (cleared; the request's, see [`RECYCLED_MAP_FIELDS`]), less the hop-by-hop ones
/// and those a `Connection` value names: the response as it is forwarded (RFC 9110 §7.6.1).
fn parse_head(
    buf: &mut BytesMut,
    method: &Method,
    scratch: &mut Scratch,
    map: &mut HeaderMap,
) -> Result<Head, ExchangeError> {
    // Where each field's name and value sit in `buf`, kept so that the values can be slices of
    // the head once it is split off (no copy).
    let Scratch {
        spans,
        names: known,
    } = scratch;
    spans.clear();
    let (len, status, reason, version) = {
        // Uninitialised: zeroing this array and the spans' (6.4 KB) took ~3 200 instructions
        // per response, more than the parse.
        let mut fields =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(Head::Partial),
            Err(err) => return Err(ExchangeError::Parse(err)),
        };
        let base = buf.as_ptr() as usize;
        spans.extend(parsed.headers.iter().map(|field| {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            (
                name,
                name + field.name.len(),
                value,
                value + field.value.len(),
            )
        }));
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
        (len, status, reason, version)
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

    let mut headers = std::mem::take(map);
    if headers.capacity() > RECYCLED_MAP_FIELDS {
        headers = HeaderMap::with_capacity(spans.len());
    } else {
        headers.clear();
    }
    let mut length: Option<u64> = None;
    let mut length_invalid = false;
    let mut chunked: Option<bool> = None;
    let (mut close, mut keep_alive) = (false, false);
    // `Connection` values that may name other fields to remove (rare: usually `keep-alive`).
    let mut naming = Vec::new();
    for (place, &(name_start, name_end, value_start, value_end)) in spans.iter().enumerate() {
        let name = known
            .name(place, &head[name_start..name_end])
            .map_err(|_| ExchangeError::Invalid("field name"))?;
        let raw = &head[value_start..value_end];
        let value = HeaderValue::from_maybe_shared(head.slice(value_start..value_end))
            .map_err(|_| ExchangeError::Invalid("field value"))?;
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
            let mut other = false;
            for token in raw.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                let is_close = token.eq_ignore_ascii_case(b"close");
                let is_keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                close |= is_close;
                keep_alive |= is_keep_alive;
                other |= !is_close && !is_keep_alive;
            }
            if other {
                naming.push(value);
            }
            continue;
        }
        if !is_hop_by_hop(&name) {
            headers.append(name, value);
        }
    }
    for value in &naming {
        remove_named(&mut headers, value);
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
    async fn read_head(socket: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
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
        Conn::new(Stream::Plain(tcp), home.clone())
    }

    fn get(host: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static(host));
        headers
    }

    /// `method` for `/` with the fields of `headers` (which then hold the response's).
    async fn send_root(
        conn: Box<Conn>,
        method: &Method,
        headers: &mut HeaderMap,
    ) -> Result<Response<ResponseBody>, ExchangeError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        conn.send(
            method,
            &PathAndQuery::from_static("/"),
            headers,
            &[],
            deadline,
        )
        .await
    }

    async fn exchange(
        conn: Box<Conn>,
        method: Method,
    ) -> Result<Response<ResponseBody>, ExchangeError> {
        send_root(conn, &method, &mut get("app")).await
    }

    /// The response to `method` from a server answering `answer`, `step` bytes at a time, and
    /// where its connection goes home.
    async fn answered(
        answer: &'static [u8],
        step: usize,
        method: Method,
    ) -> (Response<ResponseBody>, Arc<Kept>) {
        let (addr, _server) = server(vec![answer], step).await;
        let home = Arc::new(Kept::default());
        let response = exchange(connect(addr, &home).await, method).await.unwrap();
        (response, home)
    }

    /// Waits, within 10 s, until `conn` is no longer quiet (the close reached it); `what`
    /// says what was never seen otherwise.
    async fn until_not_quiet(conn: &mut Conn, what: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while conn.is_quiet() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::task::yield_now().await;
        }
    }

    /// Why a GET failed that a server answered with `answer`, written at once.
    async fn refused(answer: &'static [u8]) -> ExchangeError {
        let (addr, _server) = server(vec![answer], usize::MAX).await;
        let home = Arc::new(Kept::default());
        exchange(connect(addr, &home).await, Method::GET)
            .await
            .unwrap_err()
    }

    #[tokio::test]
    async fn the_request_head_is_written_as_the_map_holds_it_then_the_extra_lines() {
        let (addr, server) = server(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], usize::MAX).await;
        let home = Arc::new(Kept::default());
        let mut headers = get("app.example");
        headers.append("x-multi", HeaderValue::from_static("a"));
        headers.append("x-multi", HeaderValue::from_static("b"));
        let conn = connect(addr, &home).await;
        let response = conn
            .send(
                &Method::GET,
                &PathAndQuery::from_static("/p?q=1"),
                &mut headers,
                &[
                    ("x-forwarded-for", b"10.0.0.7"),
                    ("x-forwarded-port", b"80"),
                ],
                Instant::now() + Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        drop(response);
        let heads = server.await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&heads[0]),
            "GET /p?q=1 HTTP/1.1\r\nhost: app.example\r\nx-multi: a\r\nx-multi: b\r\n\
             x-forwarded-for: 10.0.0.7\r\nx-forwarded-port: 80\r\n\r\n"
        );
    }

    /// A server that answers its first request head with an empty 200 and then reads the next
    /// head and never answers it.
    async fn answers_once_then_holds() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            read_head(&mut socket).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            read_head(&mut socket).await.unwrap();
            std::future::pending::<()>().await;
        });
        addr
    }

    /// On a kept connection whose first exchange had the deadline `first` and which then sat
    /// idle in the pool for `idle`, asserts that a second exchange the pod never answers times
    /// out at its own deadline, `second` after it was sent (within the second after it, on the
    /// paused clock).
    async fn second_exchange_times_out_at_its_deadline(
        first: Duration,
        idle: Duration,
        second: Duration,
    ) {
        let addr = answers_once_then_holds().await;
        let home = Arc::new(Kept::default());
        let path = PathAndQuery::from_static("/");
        let conn = connect(addr, &home).await;
        let deadline = Instant::now() + first;
        let response = conn
            .send(&Method::GET, &path, &mut get("app"), &[], deadline)
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
        let conn = home.take().expect("the connection came home");
        tokio::time::sleep(idle).await;
        let start = Instant::now();
        let err = conn
            .send(&Method::GET, &path, &mut get("app"), &[], start + second)
            .await
            .unwrap_err();
        let elapsed = start.elapsed();
        assert!(matches!(err, ExchangeError::TimedOut), "{err:?}");
        assert!(
            (second..second + Duration::from_secs(1)).contains(&elapsed),
            "timed out after {elapsed:?}, not at the {second:?} deadline"
        );
    }

    /// The connection's one timer, moved to an earlier deadline than the last exchange's (a
    /// route with a shorter `proxy-read-timeout`), fires at that one: not at the old.
    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_on_a_kept_connection_is_kept() {
        second_exchange_times_out_at_its_deadline(
            Duration::from_secs(60),
            Duration::ZERO,
            Duration::from_secs(2),
        )
        .await;
    }

    /// The timer fired while the connection was idle in the pool (its last deadline passed
    /// unused): the next exchange arms it again, for that exchange's deadline.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_that_passed_while_idle_is_armed_again() {
        second_exchange_times_out_at_its_deadline(
            Duration::from_secs(1),
            Duration::from_secs(5),
            Duration::from_secs(3),
        )
        .await;
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
        let mut again = home.take().expect("the connection came home");
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
            let (response, home) = answered(ANSWER, step, Method::GET).await;
            // Hop-by-hop: read, then dropped (the client's framing is its own).
            assert!(!response.headers().contains_key(header::TRANSFER_ENCODING));
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
        let (response, home) = answered(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            1,
            Method::GET,
        )
        .await;
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
            let (response, home) = answered(answer, usize::MAX, method.clone()).await;
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
            let (response, _home) = answered(answer, usize::MAX, Method::GET).await;
            let reason = response.extensions().get::<ReasonPhrase>();
            assert_eq!(reason.map(|r| r.as_bytes()), kept.map(str::as_bytes));
        }
    }

    #[tokio::test]
    async fn informational_responses_are_passed_over() {
        let (response, _home) = answered(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 4, Method::GET).await;
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
            let (response, home) = answered(answer, usize::MAX, Method::GET).await;
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
        let (response, home) =
            answered(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", 4, Method::GET).await;
        assert_eq!(response.body().size_hint().exact(), None);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "until the end");
        assert!(home.take().is_none());
    }

    #[tokio::test]
    async fn with_both_framings_the_coding_wins_and_the_length_goes() {
        let (response, home) = answered(b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", usize::MAX, Method::GET).await;
        assert!(!response.headers().contains_key(header::CONTENT_LENGTH));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        assert!(home.take().is_none(), "not trusted with another request");
    }

    #[tokio::test]
    async fn hop_by_hop_fields_and_the_ones_connection_names_are_dropped_as_the_head_is_read() {
        // RFC 9110 §7.6.1: what belongs to the pod's connection is not forwarded; a
        // `Connection` value naming `Host` removes nothing.
        let (response, home) = answered(
            b"HTTP/1.1 200 OK\r\nConnection: X-Secret, host\r\nX-Secret: 1\r\nHost: h\r\n\
            Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTrailer: X-T\r\n\
            Upgrade: h2c\r\nX-Kept: 2\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
            usize::MAX,
            Method::GET,
        )
        .await;
        let mut left: Vec<&str> = response.headers().keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "host", "x-kept"]);
        drop(response);
        assert!(home.take().is_some(), "keep-alive was read before it went");
    }

    #[tokio::test]
    async fn the_requests_map_holds_the_response_unless_it_is_large() {
        let answer: &[u8] = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 0\r\n\r\n";
        let (addr, _server) = server(vec![answer, answer], usize::MAX).await;
        let home = Arc::new(Kept::default());
        // As the proxy's request map: room made for the forwarded fields.
        let mut headers = get("app");
        headers.reserve(8);
        let room = headers.capacity();
        let response = send_root(connect(addr, &home).await, &Method::GET, &mut headers)
            .await
            .unwrap();
        assert!(headers.is_empty());
        assert_eq!(response.headers().capacity(), room, "no new map");
        assert_eq!(response.headers().len(), 2);
        drop(response);

        // A request with many fields: its map would stay with the client's idle connection.
        let mut headers = get("app");
        for i in 0..RECYCLED_MAP_FIELDS {
            headers.insert(
                HeaderName::from_bytes(format!("x-{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        let large = headers.capacity();
        let response = send_root(home.take().unwrap(), &Method::GET, &mut headers)
            .await
            .unwrap();
        assert!(response.headers().capacity() < large);
        assert_eq!(response.headers()["x-a"], "1");
    }

    /// Names remembered from the connection's last response are only taken where the pod
    /// wrote the same bytes at the same place: every response's fields are its own, whatever
    /// the one before wrote (same names, other spellings, others in between, fewer, more).
    #[tokio::test]
    async fn each_response_has_its_own_field_names_on_a_kept_connection() {
        let answers: Vec<&'static [u8]> = vec![
            b"HTTP/1.1 200 OK\r\nServer: a\r\nContent-Length: 0\r\nX-Custom: 1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServer: b\r\nContent-Length: 0\r\nX-Custom: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nSERVER: c\r\nX-Other: 3\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServer: d\r\nContent-Length: 0\r\nX-Custom: 4\r\nX-More: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nServer: e\r\nContent-Length: 0\r\nX-Cuztom: 6\r\n\r\n",
        ];
        let expected: [&[(&str, &str)]; 6] = [
            &[("server", "a"), ("content-length", "0"), ("x-custom", "1")],
            &[("server", "b"), ("content-length", "0"), ("x-custom", "2")],
            &[("server", "c"), ("x-other", "3"), ("content-length", "0")],
            &[("content-length", "0")],
            &[
                ("server", "d"),
                ("content-length", "0"),
                ("x-custom", "4"),
                ("x-more", "5"),
            ],
            &[("server", "e"), ("content-length", "0"), ("x-cuztom", "6")],
        ];
        let (addr, server) = server(answers, usize::MAX).await;
        let home = Arc::new(Kept::default());
        let mut conn = connect(addr, &home).await;
        for (i, fields) in expected.iter().enumerate() {
            let response = exchange(conn, Method::GET).await.unwrap();
            let got: Vec<(&str, &str)> = response
                .headers()
                .iter()
                .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
                .collect();
            assert_eq!(&got, fields, "response {i}");
            drop(response);
            conn = home.take().expect("kept for the next request");
        }
        drop(conn);
        assert_eq!(server.await.unwrap().len(), 6, "all on one connection");
    }

    #[tokio::test]
    async fn a_close_before_any_byte_may_be_sent_again_one_after_may_not() {
        let home = Arc::new(Kept::default());
        let (addr, _server) = server(vec![], usize::MAX).await;
        let mut headers = get("app");
        let err = send_root(connect(addr, &home).await, &Method::GET, &mut headers)
            .await
            .unwrap_err();
        assert!(err.unanswered(), "{err}");
        assert_eq!(
            headers.len(),
            1,
            "the request's fields stay, to be sent again"
        );

        for answer in [
            &b"HTTP/1.1 200 OK\r\nContent-Len"[..],
            b"HTTP/1.1 100 Continue\r\n\r\n",
        ] {
            let err = refused(answer).await;
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
            let err = refused(answer).await;
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
            let (response, home) = answered(answer, usize::MAX, Method::GET).await;
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
        let mut conn = home.take().unwrap();
        assert!(conn.is_quiet(), "open and silent");
        // The upstream's idle close.
        drop(server.await.unwrap());
        until_not_quiet(&mut conn, "the close was never seen").await;
    }

    /// A TLS server config for `pod.test` and a client config that trusts it.
    fn tls_configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["pod.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    #[tokio::test]
    async fn over_tls_the_same_exchange_keeps_its_connection_until_close_notify() {
        // Re-encrypt: the pod terminates TLS. A TLS 1.3 server sends its session tickets
        // after the handshake; read with the first response, they leave the connection quiet.
        let (server_config, client_config) = tls_configs();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
        let (closing, close) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut heads = Vec::new();
            for answer in [
                &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbye\r\n0\r\n\r\n",
            ] {
                heads.push(read_head(&mut tls).await.unwrap());
                tls.write_all(answer).await.unwrap();
                tls.flush().await.unwrap();
            }
            // The pod's idle close: `close_notify`, the TCP connection left open.
            close.await.unwrap();
            tls.get_mut().1.send_close_notify();
            tls.flush().await.unwrap();
            (heads, tls)
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("pod.test").unwrap();
        let tls = tokio_rustls::TlsConnector::from(client_config)
            .connect(name, tcp)
            .await
            .unwrap();
        let home = Arc::new(Kept::default());
        let conn = Conn::new(Stream::Tls(Box::new(tls)), home.clone());
        let response = exchange(conn, Method::GET).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "ok");
        let mut again = home.take().expect("the connection came home");
        assert!(again.is_quiet(), "open and silent");
        let response = exchange(again, Method::GET).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "bye");
        let mut conn = home.take().expect("home again");
        assert!(conn.is_quiet());

        closing.send(()).unwrap();
        until_not_quiet(&mut conn, "the close_notify was never seen").await;
        let (heads, _open) = server.await.unwrap();
        assert_eq!(heads.len(), 2, "both requests on one TLS connection");
        assert!(heads[1].starts_with(b"GET / HTTP/1.1\r\n"));
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
        let mut response = sender.send_request(request).await.ok()?;
        // What the proxy forwards of it; ours drops these as it reads.
        crate::proxy::hop_by_hop::strip_hop_by_hop(response.headers_mut());
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
