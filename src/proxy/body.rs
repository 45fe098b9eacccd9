//! The bodies the proxy moves: the request body it sends upstream ([`RequestBody`]) and the
//! response body it sends to the client ([`ProxyBody`]).
//!
//! Both are made of `http_body_util`'s bodies and the per-route timeout wrappers of
//! `body_timeouts`; the one hand-written [`Body`] here is [`ProxyBody`], which adds what the
//! proxy needs while a response streams to the client: it tells its [`BodyObserver`] how many
//! bytes went out and how the body ended, without allocating. The
//! observer (the request's record in `http_front`) does the rest: access log, metrics, and
//! giving the upstream connection back to the pool (`pool`) once the response has been read
//! to its end. This module knows neither the pool nor the logs, so both `pool` and `forward`
//! import from it and not from each other.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Empty, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::body_timeouts::{ReadIdle, SendWatched};
use super::upstream_h1;

/// Errors of the bodies built from [`Either`] (the error of either side, boxed; only a failing
/// body pays for the box).
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body sent upstream: the client's (cut off with an error past its route's
/// `proxy-body-size`), or none (a bodyless request sent again after its first connection
/// closed before answering; hyper's `Incoming` cannot be made empty); watched for the route's
/// `proxy-send-timeout` when it has one.
pub(crate) type RequestBody =
    SendWatched<Either<Either<Incoming, Limited<Incoming>>, Empty<Bytes>>>;

/// The client's request body, sent upstream as it arrives; with `limit`, the stream fails with
/// [`http_body_util::LengthLimitError`] once more than `limit` bytes came (a body without a
/// `Content-Length`, or one that lies about it). Unlimited bodies are not wrapped.
pub(crate) fn client_request(body: Incoming, limit: Option<u64>) -> RequestBody {
    match limit {
        None => SendWatched::new(Either::Left(Either::Left(body))),
        Some(limit) => {
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            SendWatched::new(Either::Left(Either::Right(Limited::new(body, limit))))
        }
    }
}

/// No request body.
pub(crate) fn empty_request() -> RequestBody {
    SendWatched::new(Either::Right(Empty::new()))
}

/// What is inside a [`ProxyBody`]: our own small answer (a redirect, an error page), or the
/// upstream's response body streamed through (cut off after the route's `proxy-read-timeout`
/// without data, when it has one).
pub(crate) type ResponseBody = Either<Full<Bytes>, ReadIdle<UpstreamBody>>;

/// An upstream's response body: from hyper's client (requests with a body, upgrades, HTTP/2),
/// or from our own HTTP/1.1 exchange (`upstream_h1`: bodyless requests to HTTP/1.1 pods,
/// plain or TLS).
pub(crate) enum UpstreamBody {
    Hyper(Incoming),
    Own(upstream_h1::ResponseBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(Into::into))),
            UpstreamBody::Own(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(body) => body.is_end_stream(),
            UpstreamBody::Own(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(body) => body.size_hint(),
            UpstreamBody::Own(body) => body.size_hint(),
        }
    }
}

/// Our own answer with the body `bytes` (empty for none).
pub(crate) fn own_response(bytes: Bytes) -> ResponseBody {
    Either::Left(Full::new(bytes))
}

/// The upstream's response body, streamed through; it fails after `read_timeout` (the route's
/// `proxy-read-timeout`) without a frame.
pub(crate) fn upstream_response_within(
    body: UpstreamBody,
    read_timeout: Option<std::time::Duration>,
) -> ResponseBody {
    Either::Right(ReadIdle::new(body, read_timeout))
}

/// Told by a [`ProxyBody`] what happens to it. At most one of `failed` and `complete` is called,
/// once; the observer is dropped right after it (or with the body, when neither happened: a
/// body abandoned mid-way).
pub(crate) trait BodyObserver {
    /// A data frame of `len` bytes went to the client.
    fn sent(&mut self, len: usize);
    /// The body failed before its end (the upstream reset it mid-body).
    fn failed(&mut self);
    /// The body was read to its end, or was at its end when dropped (hyper does not poll a body
    /// that says it is empty: HEAD, 204, 304, length 0). A response read to its end leaves its
    /// upstream connection between messages, ready for the next request.
    fn complete(&mut self);
}

// === impl ProxyBody ===

/// The response body sent to the client: a [`ResponseBody`] that reports to its
/// [`BodyObserver`] as it streams and when it ends or is dropped.
///
/// The observer is boxed: the proxy's (`http_front::Record`) is ~670 bytes, and a response is
/// moved by value about a dozen times between the handler and hyper's writer (returned
/// through each async function, stored in the dispatcher's state); unboxed, those moves
/// copied ~850 bytes each, ~1 000 instructions per request in `memcpy`.
pub(crate) struct ProxyBody<O: BodyObserver> {
    inner: ResponseBody,
    observer: Option<Box<O>>,
}

impl<O: BodyObserver> ProxyBody<O> {
    /// `inner`, reporting to `observer`.
    pub(crate) fn new(inner: ResponseBody, observer: Box<O>) -> Self {
        ProxyBody {
            inner,
            observer: Some(observer),
        }
    }
}

impl<O: BodyObserver + Unpin> Body for ProxyBody<O> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(observer)) = (frame.data_ref(), this.observer.as_mut()) {
                    observer.sent(data.len());
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(mut observer) = this.observer.take() {
                    observer.failed();
                }
            }
            Poll::Ready(None) => {
                if let Some(mut observer) = this.observer.take() {
                    observer.complete();
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<O: BodyObserver> Drop for ProxyBody<O> {
    fn drop(&mut self) {
        // One dropped mid-body is not complete (its upstream connection closes).
        if let Some(mut observer) = self.observer.take()
            && self.inner.is_end_stream()
        {
            observer.complete();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::task::Waker;

    use super::*;

    type Log = Arc<Mutex<Vec<String>>>;

    /// Writes what it is told, and its drop, to a shared log.
    struct Probe(Log);

    fn probe() -> (Probe, Log) {
        let log = Log::default();
        (Probe(log.clone()), log)
    }

    fn take(log: &Log) -> Vec<String> {
        std::mem::take(&mut *log.lock().unwrap())
    }

    impl BodyObserver for Probe {
        fn sent(&mut self, len: usize) {
            self.0.lock().unwrap().push(format!("sent {len}"));
        }
        fn failed(&mut self) {
            self.0.lock().unwrap().push("failed".into());
        }
        fn complete(&mut self) {
            self.0.lock().unwrap().push("complete".into());
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.lock().unwrap().push("dropped".into());
        }
    }

    fn poll<O: BodyObserver + Unpin>(body: &mut ProxyBody<O>) -> Option<usize> {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(body).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => Some(frame.into_data().map_or(0, |d| d.len())),
            Poll::Ready(None) => None,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reports_bytes_then_completion_then_lets_go() {
        let (probe, log) = probe();
        let mut body = ProxyBody::new(own_response(Bytes::from_static(b"hello")), Box::new(probe));
        assert_eq!(body.size_hint().exact(), Some(5));
        assert_eq!(poll(&mut body), Some(5));
        assert_eq!(poll(&mut body), None);
        assert!(body.is_end_stream());
        assert_eq!(take(&log), ["sent 5", "complete", "dropped"]);
        drop(body);
        assert!(take(&log).is_empty());
    }

    #[test]
    fn an_empty_body_dropped_unpolled_is_complete() {
        let (probe, log) = probe();
        let body = ProxyBody::new(own_response(Bytes::new()), Box::new(probe));
        assert!(body.is_end_stream());
        drop(body);
        assert_eq!(take(&log), ["complete", "dropped"]);
    }

    #[test]
    fn a_body_dropped_before_its_end_is_not_complete() {
        let (probe, log) = probe();
        let body = ProxyBody::new(own_response(Bytes::from_static(b"x")), Box::new(probe));
        drop(body);
        assert_eq!(take(&log), ["dropped"]);
    }

    #[test]
    fn an_empty_request_body_is_at_its_end() {
        let body = empty_request();
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
    }
}
