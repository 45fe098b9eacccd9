//! The byte tunnel of upgraded (websocket) connections: once one is set up, the proxy only
//! moves bytes. Pass-through's tunnel between two TCP sockets (`proxy::tcp_tunnel`) ends by the
//! same rules, and shares `End`, `Spliced`, `Activity` and the per-thread scratch buffer with
//! it: neither holds a buffer while its connection waits.
//!
//! Both directions are copied until both are done. When one side ends its stream we shut down
//! writing towards the other and keep the other direction open (half-close); an error on
//! either side, or `idle` without a byte either way, ends both. Streams come as read and write
//! halves so a `TcpStream` can be split without a lock (`TcpStream::split`) while any other
//! stream goes through `tokio::io::split`.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

/// The scratch buffer's size: one read's worth.
const SCRATCH: usize = 16 * 1024;

/// How a splice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Both sides ended their streams.
    Closed,
    /// Reading from or writing to the client failed.
    ClientReset,
    /// Reading from or writing to the upstream failed.
    UpstreamReset,
    /// No byte moved either way for the idle timeout.
    IdleTimeout,
}

/// What one splice did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spliced {
    pub(crate) end: End,
    pub(crate) from_client: u64,
    pub(crate) to_client: u64,
    /// Of those, bytes moved with `splice(2)`, never copied into the process (pass-through
    /// only: `proxy::tcp_tunnel`).
    pub(crate) zero_copy: u64,
}

/// Which side of a spliced pair failed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Fault {
    Client,
    Upstream,
}

impl Fault {
    /// How a tunnel ended, from what its two directions did: both done, or one side failed.
    pub(super) fn end_of<T>(directions: Result<T, Fault>) -> End {
        match directions {
            Ok(_) => End::Closed,
            Err(Fault::Client) => End::ClientReset,
            Err(Fault::Upstream) => End::UpstreamReset,
        }
    }
}

/// Copies both directions until both streams ended, one side failed, or nothing moved for
/// `idle`.
pub(crate) async fn splice<CR, CW, UR, UW>(
    client: (CR, CW),
    upstream: (UR, UW),
    idle: Duration,
) -> Spliced
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = client;
    let (mut upstream_read, mut upstream_write) = upstream;
    // Counted as bytes move rather than returned by the copies: an idle timeout drops the
    // copies mid-way, and the access log still wants what they moved.
    let from_client = AtomicU64::new(0);
    let to_client = AtomicU64::new(0);
    let activity = Activity::new();
    let upstream_bound = copy_half(
        &mut client_read,
        &mut upstream_write,
        (Fault::Client, Fault::Upstream),
        &from_client,
        &activity,
    );
    let downstream = copy_half(
        &mut upstream_read,
        &mut client_write,
        (Fault::Upstream, Fault::Client),
        &to_client,
        &activity,
    );
    let end = tokio::select! {
        done = async { tokio::try_join!(upstream_bound, downstream) } => Fault::end_of(done),
        () = activity.idle_for(idle) => End::IdleTimeout,
    };
    Spliced {
        end,
        from_client: from_client.load(Ordering::Relaxed),
        to_client: to_client.load(Ordering::Relaxed),
        zero_copy: 0,
    }
}

/// Copies `reader` to `writer` until end of stream, then shuts `writer` down (half-close).
/// `sides` names who is at fault when reading or writing fails. Holds no buffer while it waits
/// for bytes: a read goes into the thread's scratch buffer and is written on in the same poll;
/// only what the writer will not take yet is copied out, until it does (a websocket may idle
/// for hours).
async fn copy_half<R, W>(
    reader: &mut R,
    writer: &mut W,
    sides: (Fault, Fault),
    counter: &AtomicU64,
    activity: &Activity,
) -> Result<(), Fault>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (reader_fault, writer_fault) = sides;
    loop {
        let step = std::future::poll_fn(|cx| poll_copy(reader, writer, cx)).await;
        let (written, left) = match step {
            Step::End => {
                // The peer may already be gone entirely; that is not a failure of this direction.
                let _ = writer.shutdown().await;
                return Ok(());
            }
            Step::ReadFailed => return Err(reader_fault),
            Step::WriteFailed => return Err(writer_fault),
            Step::Moved { written, left, .. } => (written, left),
        };
        let mut moved = written;
        if let Some(left) = left {
            writer.write_all(&left).await.map_err(|_| writer_fault)?;
            moved += left.len();
        }
        // A TLS writer (a terminated client, a re-encrypted upstream) may hold the records
        // until flushed; a websocket message must not wait for the next one.
        writer.flush().await.map_err(|_| writer_fault)?;
        counter.fetch_add(moved as u64, Ordering::Relaxed);
        activity.touch();
    }
}

/// What one read into the scratch buffer did.
pub(super) enum Step {
    End,
    ReadFailed,
    WriteFailed,
    /// `written` bytes went on at once; `left` waits for the writer. `filled`: the read
    /// filled the scratch buffer, so more is likely waiting (a bulk transfer).
    Moved {
        filled: bool,
        written: usize,
        left: Option<Vec<u8>>,
    },
}

/// Waits for `reader` to have bytes, reads them into the thread's scratch buffer and writes
/// what `writer` takes now, all in one poll: the buffer is never held across an await, so a
/// tunnel holds none while it waits. Shared by both tunnels (`proxy::tcp_tunnel`).
pub(super) fn poll_copy<R, W>(reader: &mut R, writer: &mut W, cx: &mut Context<'_>) -> Poll<Step>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    with_scratch(|scratch| {
        let mut buf = ReadBuf::new(scratch);
        match Pin::new(&mut *reader).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(_)) => return Poll::Ready(Step::ReadFailed),
            Poll::Ready(Ok(())) => {}
        }
        let read = buf.filled();
        if read.is_empty() {
            return Poll::Ready(Step::End);
        }
        let mut written = 0;
        while let Some(rest) = read.get(written..).filter(|rest| !rest.is_empty()) {
            match Pin::new(&mut *writer).poll_write(cx, rest) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Step::WriteFailed),
                Poll::Ready(Ok(n)) => written += n,
                Poll::Pending => break,
            }
        }
        let left = read.get(written..).filter(|left| !left.is_empty());
        Poll::Ready(Step::Moved {
            filled: read.len() == SCRATCH,
            written,
            left: left.map(<[u8]>::to_vec),
        })
    })
}

thread_local! {
    /// One read's buffer per thread, for both tunnels (both copy through `poll_copy`): a read
    /// is written on before the thread does anything else.
    static SCRATCH_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH].into_boxed_slice());
}

/// Runs `f` on this thread's scratch buffer ([`SCRATCH`] bytes). `f` must not await: it runs
/// within one poll.
fn with_scratch<T>(f: impl FnOnce(&mut [u8]) -> T) -> T {
    SCRATCH_BUFFER.with(|scratch| f(&mut scratch.borrow_mut()[..]))
}

// === impl Activity ===

/// When a byte last moved, in milliseconds since the splice started.
pub(super) struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    pub(super) async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, duplex};

    #[tokio::test]
    async fn half_close_keeps_the_other_direction_and_counts_bytes() {
        let (mut client, proxy_client) = duplex(64);
        let (proxy_upstream, mut upstream) = duplex(64);
        let spliced = tokio::spawn(splice(
            tokio::io::split(proxy_client),
            tokio::io::split(proxy_upstream),
            Duration::from_secs(60),
        ));
        client.write_all(b"hello").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        // The client stopped writing; the upstream may still answer.
        upstream.write_all(b"answer").await.unwrap();
        upstream.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"answer");
        let spliced = spliced.await.unwrap();
        assert_eq!(
            spliced,
            Spliced {
                end: End::Closed,
                from_client: 5,
                to_client: 6,
                zero_copy: 0,
            }
        );
    }

    #[tokio::test]
    async fn bulk_through_small_pipes_arrives_intact_both_ways() {
        // 4 KiB duplex pipes: the tunnel's writes are taken a little at a time, so most reads
        // leave bytes over for the writer (the left-over path), in both directions at once.
        let (client, proxy_client) = duplex(4096);
        let (proxy_upstream, upstream) = duplex(4096);
        let spliced = tokio::spawn(splice(
            tokio::io::split(proxy_client),
            tokio::io::split(proxy_upstream),
            Duration::from_secs(60),
        ));
        let up: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let down: Vec<u8> = (0..(1u32 << 20) + 7).map(|i| (i % 241) as u8).collect();
        let client_side = tokio::spawn(send_and_receive(client, up.clone()));
        let got_up = send_and_receive(upstream, down.clone()).await;
        assert!(
            got_up == up,
            "upstream got {} of {} bytes, or changed",
            got_up.len(),
            up.len()
        );
        let got_down = client_side.await.unwrap();
        assert!(
            got_down == down,
            "client got {} of {} bytes, or changed",
            got_down.len(),
            down.len()
        );
        let spliced = spliced.await.unwrap();
        assert_eq!(spliced.end, End::Closed);
        assert_eq!(
            (spliced.from_client, spliced.to_client),
            (up.len() as u64, down.len() as u64)
        );
    }

    /// Writes `bytes` into `stream` and half-closes it while reading everything that comes
    /// back, at once.
    async fn send_and_receive(stream: tokio::io::DuplexStream, bytes: Vec<u8>) -> Vec<u8> {
        let (mut read, mut write) = tokio::io::split(stream);
        let writer = async move {
            write.write_all(&bytes).await.unwrap();
            write.shutdown().await.unwrap();
        };
        let reader = async move {
            let mut got = Vec::new();
            read.read_to_end(&mut got).await.unwrap();
            got
        };
        tokio::join!(writer, reader).1
    }

    #[tokio::test(start_paused = true)]
    async fn idle_ends_both_sides_but_traffic_keeps_it_open() {
        let (mut client, proxy_client) = duplex(64);
        let (proxy_upstream, mut upstream) = duplex(64);
        let idle = Duration::from_secs(10);
        let started = Instant::now();
        let spliced = tokio::spawn(splice(
            tokio::io::split(proxy_client),
            tokio::io::split(proxy_upstream),
            idle,
        ));
        // Traffic every 6 s for 30 s: longer than `idle` in all, never `idle` apart.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            upstream.read_exact(&mut one).await.unwrap();
        }
        assert!(!spliced.is_finished());
        let spliced = spliced.await.unwrap();
        assert_eq!(spliced.end, End::IdleTimeout);
        assert_eq!(spliced.from_client, 5);
        // The last byte moved at 30 s.
        let ended = started.elapsed();
        assert!(
            ended >= Duration::from_secs(40) && ended < Duration::from_secs(41),
            "{ended:?}"
        );
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(upstream.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
