//! The per-Ingress body timeouts, as nginx's `proxy_send_timeout` and `proxy_read_timeout`
//! work ("set only between two successive write/read operations", not for the whole
//! transfer): ingress-nginx's `proxy-send-timeout` and `proxy-read-timeout`.
//!
//! - [`SendWatched`] wraps the request body sent to the pod and records its progress in a
//!   [`SendProgress`]; `forward` watches it ([`SendProgress::stalled`]) while it waits for the
//!   response head. A stall is the pod's doing only when hyper stopped asking for the next
//!   frame (the pod does not read, so the connection's write buffer stays full); a client
//!   that is slow to send its body is not the pod's fault and does not count.
//! - [`ReadIdle`] wraps the pod's response body: no frame for the read timeout ends it with an
//!   error (the client sees the response cut off, as with nginx).
//!
//! Both cost nothing when the route sets no timeout (`None` inside, no timer, no allocation).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

// === send ===

/// How far the request body has got, shared between the body (in hyper's connection task) and
/// the request's `forward`.
#[derive(Debug)]
pub(crate) struct SendProgress {
    base: Instant,
    /// When a frame was last handed to hyper (or the send started), in ms since `base`.
    last_ms: AtomicU64,
    /// The body is waiting for the client's next bytes (hyper asked, the client is slow).
    waiting_on_client: AtomicBool,
    /// The body has been handed over to its end.
    done: AtomicBool,
}

impl SendProgress {
    pub(crate) fn new() -> Arc<SendProgress> {
        Arc::new(SendProgress {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            waiting_on_client: AtomicBool::new(false),
            done: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The request (again) starts being sent now.
    pub(crate) fn restart(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Release);
        self.waiting_on_client.store(false, Ordering::Release);
    }

    /// Resolves when the pod has not taken the next frame of an unfinished body for `timeout`;
    /// never once the body is done.
    pub(crate) async fn stalled(&self, timeout: Duration) {
        loop {
            if self.done.load(Ordering::Acquire) {
                return std::future::pending().await;
            }
            let last = self.base + Duration::from_millis(self.last_ms.load(Ordering::Acquire));
            let due = last + timeout;
            if self.waiting_on_client.load(Ordering::Acquire) {
                // The client's turn: check again a timeout later.
                tokio::time::sleep(timeout).await;
            } else if Instant::now() >= due {
                return;
            } else {
                tokio::time::sleep_until(due).await;
            }
        }
    }
}

/// A request body that reports its progress to a [`SendProgress`] when it has one.
#[derive(Debug)]
pub(crate) struct SendWatched<B> {
    inner: B,
    progress: Option<Arc<SendProgress>>,
}

impl<B: Body> SendWatched<B> {
    /// `inner`, unwatched.
    pub(crate) fn new(inner: B) -> Self {
        SendWatched {
            inner,
            progress: None,
        }
    }

    /// Reports to `progress` from now on (a body already at its end is done at once).
    pub(crate) fn watch(&mut self, progress: Arc<SendProgress>) {
        if self.inner.is_end_stream() {
            progress.done.store(true, Ordering::Release);
        }
        self.progress = Some(progress);
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for SendWatched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(progress) = &this.progress {
            match &polled {
                Poll::Pending => progress.waiting_on_client.store(true, Ordering::Release),
                Poll::Ready(Some(Ok(_))) => {
                    progress.last_ms.store(progress.now_ms(), Ordering::Release);
                    progress.waiting_on_client.store(false, Ordering::Release);
                    if this.inner.is_end_stream() {
                        progress.done.store(true, Ordering::Release);
                    }
                }
                Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                    progress.done.store(true, Ordering::Release);
                }
            }
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

// === read ===

/// The pod sent no part of its response body for the route's `proxy-read-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("no response body data from the upstream for {0:?} (proxy-read-timeout)")]
pub(crate) struct ReadTimedOut(Duration);

/// A response body that fails when no frame comes for `timeout` (when it has one).
#[derive(Debug)]
pub(crate) struct ReadIdle<B> {
    inner: B,
    timeout: Option<Duration>,
    /// Armed while the inner body is pending.
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> ReadIdle<B> {
    pub(crate) fn new(inner: B, timeout: Option<Duration>) -> Self {
        ReadIdle {
            inner,
            timeout,
            timer: None,
        }
    }
}

impl<B> Body for ReadIdle<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let Some(timeout) = this.timeout else {
                    return Poll::Pending;
                };
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timer = None;
                        Poll::Ready(Some(Err(Box::new(ReadTimedOut(timeout)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty};

    /// A body that never sends anything.
    struct Quiet;

    impl Body for Quiet {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Pending
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_response_body_fails_after_the_read_timeout() {
        let mut body = ReadIdle::new(Quiet, Some(Duration::from_secs(1)));
        let started = Instant::now();
        let frame = body.frame().await.expect("an error frame");
        assert!(frame.is_err());
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_body_never_stalls_an_unfinished_one_does() {
        let progress = SendProgress::new();
        let mut body = SendWatched::new(Empty::<Bytes>::new());
        body.watch(progress.clone());
        let stalled = tokio::time::timeout(
            Duration::from_secs(5),
            progress.stalled(Duration::from_millis(10)),
        );
        assert!(stalled.await.is_err());
        let unfinished = SendProgress::new();
        unfinished.restart();
        tokio::time::timeout(
            Duration::from_secs(5),
            unfinished.stalled(Duration::from_millis(10)),
        )
        .await
        .expect("an unfinished body the pod does not take stalls");
    }
}
