//! An idle HTTP/1.1 client connection gives its HTTP state back: between requests it holds
//! its socket (and TLS session), not hyper's buffers.
//!
//! Why: hyper keeps an 8 KiB read buffer, an 8 KiB header write buffer and the slot of the
//! service's future for as long as a connection lives, so a keep-alive connection waiting for
//! its next request cost ~31 KiB where HAProxy and nginx, which release their buffers between
//! requests, spend ~9. hyper has no way to shrink them, so after [`RELEASE_AFTER`] without a
//! request the connection's driver takes the I/O back from hyper and drops the rest:
//!
//! 1. the driver asks for a release ([`Idle::request_release`]) and polls the connection;
//! 2. hyper, waiting for the next request head, reads; [`ReleasableIo`] answers end-of-stream
//!    — only when the client has sent nothing, every byte read so far ends exactly at a message
//!    boundary (the request-smuggling guard follows HTTP/1.1 framing, so it knows), every head
//!    read has been dispatched (no request in flight, none buffered) and every byte hyper wrote
//!    was flushed. hyper ends the connection cleanly, and the shutdown it then asks for is not
//!    passed on;
//! 3. the driver takes the parts back (`into_parts`: the I/O, the bytes hyper read but did not
//!    use — none, given the conditions — and the service), waits for the client's next bytes
//!    with a small stack buffer ([`ReleasableIo::wait_for_request`]), and starts a new hyper
//!    connection whose first reads replay them.
//!
//! If any condition fails the release is simply not made, and tried again later. Nothing a
//! client sees changes: the same connection, the same bytes. Timeouts are kept: the keep-alive
//! idle timeout and the header-read timeout (which runs while a connection waits for its next
//! head) both count from the end of the last request, parked or not.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing_guard::FramingGuard;
use crate::wire::prefixed_io::replay;

/// How long a connection waits for its next request before its buffers are released: long
/// next to a busy client's gap between requests (milliseconds), so a connection in steady use
/// keeps its buffers and pays nothing; short next to a keep-alive timeout.
pub(super) const RELEASE_AFTER: Duration = Duration::from_millis(250);

/// The most read from a released connection at once: the start of the next request, which
/// hyper reads first; the rest it reads itself.
const WAKE_READ: usize = 2048;

/// A client connection's activity, shared by its requests, its driver and its I/O (all in
/// the connection's task, or its requests' bodies; atomics because tasks move between
/// threads). Lock- and notification-free on the request path (atomic adds and a store): the
/// timers in [`Idle::expired`] (the keep-alive timeout, and [`RELEASE_AFTER`]) re-read the
/// state when they wake instead of being woken per request.
#[derive(Debug)]
pub(super) struct Idle {
    /// Requests in flight.
    active: AtomicUsize,
    /// Requests begun, ever: compared with the heads the framing guard read.
    begun: AtomicU64,
    /// When the last request ended, in ms since `base`.
    last_done_ms: AtomicU64,
    base: tokio::time::Instant,
    /// A release is wanted: answer hyper's next idle read with end-of-stream if it is safe.
    release_requested: AtomicBool,
    /// End-of-stream was answered: the connection's end is a release, not a close; until the
    /// next hyper connection, reads keep answering it and shutdown is not passed on.
    released: AtomicBool,
}

impl Idle {
    pub(super) fn new() -> Self {
        Idle {
            active: AtomicUsize::new(0),
            begun: AtomicU64::new(0),
            last_done_ms: AtomicU64::new(0),
            base: tokio::time::Instant::now(),
            release_requested: AtomicBool::new(false),
            released: AtomicBool::new(false),
        }
    }

    /// A request began.
    pub(super) fn begin(&self) {
        self.begun.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    /// A request ended (its response body was sent or abandoned).
    pub(super) fn end(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_done_ms.fetch_max(ms, Ordering::AcqRel);
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// When the last request ended (the connection's start before the first).
    pub(super) fn last_done(&self) -> tokio::time::Instant {
        self.base + Duration::from_millis(self.last_done_ms.load(Ordering::Acquire))
    }

    /// Resolves once no request has been in flight for `idle`: sleeps until the last request's
    /// end plus `idle`, and on waking checks; while a request is in flight it checks again
    /// `idle` later (that request's end moves the deadline past that point anyway).
    pub(super) async fn expired(&self, idle: Duration) {
        loop {
            let now = tokio::time::Instant::now();
            let deadline = if self.active.load(Ordering::Acquire) == 0 {
                let deadline = self.last_done() + idle;
                if deadline <= now {
                    return;
                }
                deadline
            } else {
                now + idle
            };
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Asks for a release at hyper's next read (made during the poll that follows).
    pub(super) fn request_release(&self) {
        self.release_requested.store(true, Ordering::Relaxed);
    }

    /// Withdraws a request that the poll did not act on: it must not fire at a later read.
    pub(super) fn withdraw_release(&self) {
        self.release_requested.store(false, Ordering::Relaxed);
    }

    /// Whether hyper was told end-of-stream.
    pub(super) fn released(&self) -> bool {
        self.released.load(Ordering::Relaxed)
    }

    /// Whether every request read has been answered: `heads` (the framing guard's count) were
    /// all dispatched, and none is in flight.
    fn all_answered(&self, heads: u64) -> bool {
        self.active.load(Ordering::Acquire) == 0 && self.begun.load(Ordering::Relaxed) == heads
    }
}

/// A client connection's I/O as hyper sees it: replays the bytes read while the connection
/// was parked, answers end-of-stream on a safe release (see the module docs), and tracks
/// whether everything written was flushed.
pub(super) struct ReleasableIo<IO> {
    io: FramingGuard<IO>,
    /// Bytes for hyper to read before the socket's.
    prefix: Bytes,
    idle: Arc<Idle>,
    /// Bytes were written since the last completed flush.
    unflushed: bool,
}

impl<IO> ReleasableIo<IO> {
    pub(super) fn new(io: FramingGuard<IO>, idle: Arc<Idle>) -> Self {
        ReleasableIo {
            io,
            prefix: Bytes::new(),
            idle,
            unflushed: false,
        }
    }
}

impl<IO: AsyncRead + Unpin> ReleasableIo<IO> {
    /// After a release: keeps `unread` (what hyper read but did not use) for the next hyper
    /// connection and waits for the client's next bytes. `Ok(true)` when there is a request to
    /// serve, `Ok(false)` when the client closed.
    pub(super) async fn wait_for_request(&mut self, unread: Bytes) -> io::Result<bool> {
        self.idle.released.store(false, Ordering::Relaxed);
        if !unread.is_empty() {
            self.prefix = unread;
            return Ok(true);
        }
        std::future::poll_fn(|cx| {
            // On the stack, not in this future: a parked connection holds no read buffer.
            let mut space = [0u8; WAKE_READ];
            let mut buf = ReadBuf::new(&mut space);
            ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
            if buf.filled().is_empty() {
                return Poll::Ready(Ok(false));
            }
            self.prefix = Bytes::copy_from_slice(buf.filled());
            Poll::Ready(Ok(true))
        })
        .await
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ReleasableIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle.released() {
            // Until the next hyper connection: every read of this one is end-of-stream.
            return Poll::Ready(Ok(()));
        }
        if replay(&mut this.prefix, buf) {
            return Poll::Ready(Ok(()));
        }
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if this.idle.release_requested.load(Ordering::Relaxed) {
            this.idle.withdraw_release();
            if polled.is_pending()
                && !this.unflushed
                && let Some(heads) = this.io.heads_at_boundary()
                && this.idle.all_answered(heads)
            {
                this.idle.released.store(true, Ordering::Relaxed);
                return Poll::Ready(Ok(()));
            }
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ReleasableIo<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.unflushed = true;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.unflushed = true;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.io).poll_flush(cx);
        if matches!(flushed, Poll::Ready(Ok(()))) {
            this.unflushed = false;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.idle.released() {
            // hyper ends the connection it was told had ended; the client's has not.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::proxy::framing_guard::FramingVerdict;

    /// One read as hyper makes it: `Some(bytes)` (empty = end-of-stream) or `None` (pending).
    fn read_once<IO: AsyncRead + Unpin>(io: &mut ReleasableIo<IO>) -> Option<Vec<u8>> {
        let mut space = [0u8; 256];
        let mut buf = ReadBuf::new(&mut space);
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(io).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) => Some(buf.filled().to_vec()),
            Poll::Ready(Err(e)) => panic!("read failed: {e}"),
            Poll::Pending => None,
        }
    }

    /// Asks for a release and makes hyper's idle read: whether it was answered end-of-stream.
    fn try_release<IO: AsyncRead + Unpin>(io: &mut ReleasableIo<IO>, idle: &Idle) -> bool {
        idle.request_release();
        let read = read_once(io);
        idle.withdraw_release();
        match read {
            Some(bytes) if bytes.is_empty() => true,
            Some(bytes) => panic!("unexpected bytes {bytes:?}"),
            None => false,
        }
    }

    #[tokio::test]
    async fn end_of_stream_only_between_answered_requests_with_writes_flushed() {
        let (mut client, server) = tokio::io::duplex(4096);
        let idle = Arc::new(Idle::new());
        let guard = FramingGuard::new(server, true, 8192, Arc::new(FramingVerdict::default()));
        let mut io = ReleasableIo::new(guard, idle.clone());

        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        assert_eq!(read_once(&mut io).unwrap().len(), 18);
        assert!(!try_release(&mut io, &idle), "half a head read");

        client.write_all(b"st: x\r\n\r\n").await.unwrap();
        assert_eq!(read_once(&mut io).unwrap().len(), 9);
        assert!(!try_release(&mut io, &idle), "a head read, not dispatched");
        idle.begin();
        assert!(!try_release(&mut io, &idle), "a request in flight");
        idle.end();
        let mut cx = Context::from_waker(Waker::noop());
        let written = Pin::new(&mut io).poll_write(&mut cx, b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(matches!(written, Poll::Ready(Ok(19))));
        assert!(!try_release(&mut io, &idle), "the answer not flushed");
        assert!(Pin::new(&mut io).poll_flush(&mut cx).is_ready());
        assert!(!idle.released());

        assert!(
            try_release(&mut io, &idle),
            "between requests, all answered"
        );
        assert!(idle.released());
        // hyper's shutdown of the released connection does not reach the client.
        assert!(matches!(
            Pin::new(&mut io).poll_shutdown(&mut cx),
            Poll::Ready(Ok(()))
        ));
        let mut answer = [0u8; 19];
        client.read_exact(&mut answer).await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), client.read_u8())
                .await
                .is_err(),
            "the client saw the connection end"
        );

        // Parked: the next request's first bytes wake it and are read again by hyper.
        client.write_all(b"GET /next HTTP/1.1\r\n").await.unwrap();
        assert!(io.wait_for_request(Bytes::new()).await.unwrap());
        assert!(!idle.released());
        assert_eq!(read_once(&mut io).unwrap(), b"GET /next HTTP/1.1\r\n");
        assert!(read_once(&mut io).is_none(), "then the socket, empty");
    }

    #[tokio::test]
    async fn bytes_hyper_did_not_use_come_first_and_a_close_ends_the_wait() {
        let (client, server) = tokio::io::duplex(64);
        let idle = Arc::new(Idle::new());
        let guard = FramingGuard::new(server, true, 8192, Arc::new(FramingVerdict::default()));
        let mut io = ReleasableIo::new(guard, idle);
        assert!(
            io.wait_for_request(Bytes::from_static(b"GET"))
                .await
                .unwrap()
        );
        assert_eq!(read_once(&mut io).unwrap(), b"GET");
        drop(client);
        assert!(!io.wait_for_request(Bytes::new()).await.unwrap());
    }
}
