//! The body of a request the proxy answers itself (a redirect, a 404, a refusal): read and
//! thrown away after the answer, as nginx's `ngx_http_discard_request_body` does, instead of
//! dropped unread.
//!
//! Why: over HTTP/2, dropping the body of a stream the client is still sending makes h2 reset
//! it (`RST_STREAM(NO_ERROR)` once the response is out, RFC 9113 §8.1). The RFC allows that,
//! but curl 7.x (Debian 12's) then fails the whole transfer with "(92) Stream error in the
//! HTTP/2 framing layer" and shows the client no response at all: a POST redirected while its
//! body was still on the wire looked like a broken proxy. Reading the rest of the body lets the
//! stream close normally on both sides. HTTP/1.1 is left as it was (hyper reads what it must
//! to find the next request, or closes): the reset this avoids is HTTP/2's.
//!
//! Bounded, so a client cannot make the proxy read an upload it never wanted: only a body that
//! declares a length of at most [`MAX_BYTES`], for at most [`DEADLINE`]; any other body is
//! dropped unread as before (reset / connection closed), which is what a large or open-ended
//! upload to a wrong place should get anyway. Not for `Expect: 100-continue`: that client
//! waits for a word from us before sending, and reading would make hyper invite the very
//! upload the answer just declined.

use std::ops::{Deref, DerefMut};
use std::time::Duration;

use http::{HeaderMap, Request, header};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};

/// The most of an unwanted body read before giving up on it: a form post or a small JSON
/// document, not a file upload.
const MAX_BYTES: u64 = 1024 * 1024;

/// How long an unwanted body may take to arrive, as nginx's `lingering_timeout` (5 s).
const DEADLINE: Duration = Duration::from_secs(5);

/// A request the proxy may still answer itself: dropped, its body is discarded
/// ([`discard_body`]); [`Pending::into_inner`] hands it on to be forwarded. Dereferences to the
/// request, so the routing code reads it as before.
pub(crate) struct Pending(Option<Request<Incoming>>);

impl Pending {
    pub(crate) fn new(req: Request<Incoming>) -> Self {
        Pending(Some(req))
    }

    /// The request, to be forwarded: its body is the pod's to read now.
    pub(crate) fn into_inner(mut self) -> Request<Incoming> {
        self.0.take().expect(EMPTIED)
    }
}

/// `Pending` holds its request from `new` until `into_inner` or `drop`, which consume it.
const EMPTIED: &str = "a pending request is emptied only by into_inner or drop";

impl Deref for Pending {
    type Target = Request<Incoming>;

    fn deref(&self) -> &Request<Incoming> {
        self.0.as_ref().expect(EMPTIED)
    }
}

impl DerefMut for Pending {
    fn deref_mut(&mut self) -> &mut Request<Incoming> {
        self.0.as_mut().expect(EMPTIED)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(req) = self.0.take() {
            discard_body(req);
        }
    }
}

/// Reads the rest of an HTTP/2 `req`'s body in the background, after the proxy has answered
/// it without forwarding. Costs nothing for a request without a body (no task).
fn discard_body(req: Request<Incoming>) {
    let (parts, body) = req.into_parts();
    if parts.version != http::Version::HTTP_2 || !wanted(&parts.headers, &body) {
        return;
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout(DEADLINE, read_to_end(body, MAX_BYTES)).await;
    });
}

/// Whether there is a body to read, and reading it is what the client expects: a declared
/// length of at most [`MAX_BYTES`] (a form or a small document: a client sending one sends it
/// at once), no `Expect: 100-continue`. A body of unknown length (HTTP/1.1 chunked, an HTTP/2
/// stream without `content-length`, gRPC) is a stream the client may keep open at will: it is
/// dropped, as before.
fn wanted(headers: &HeaderMap, body: &Incoming) -> bool {
    if body.is_end_stream() {
        return false;
    }
    if body
        .size_hint()
        .exact()
        .is_none_or(|length| length > MAX_BYTES)
    {
        return false;
    }
    !headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Polls `body` to its end or until more than `limit` bytes came; returns the bytes read.
async fn read_to_end<B>(mut body: B, limit: u64) -> u64
where
    B: Body + Unpin,
{
    let mut read = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            read = read.saturating_add(bytes::Buf::remaining(data) as u64);
            if read > limit {
                break;
            }
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    fn chunks(
        sizes: &[usize],
    ) -> impl Body<Data = Bytes, Error = std::convert::Infallible> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = sizes
            .iter()
            .map(|&n| Ok(Frame::data(Bytes::from(vec![0u8; n]))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn reads_a_small_body_to_its_end() {
        assert_eq!(read_to_end(chunks(&[3, 5, 7]), MAX_BYTES).await, 15);
    }

    #[tokio::test]
    async fn stops_once_past_the_limit() {
        // Four chunks of 4 with a limit of 6: stops after the second, never asks for the rest.
        assert_eq!(read_to_end(chunks(&[4, 4, 4, 4]), 6).await, 8);
    }
}
