//! Pass-through's tunnel between two TCP sockets: the rules of `proxy::splice` (half-close,
//! faults, idle timeout), with what only two sockets allow.
//!
//! - **No buffer while idle**, copying as `proxy::splice` does (`splice::poll_copy`): a
//!   direction waits for its socket to become readable holding nothing, then reads into its
//!   worker thread's scratch buffer and writes at once; only bytes the other socket would not
//!   take yet are copied into a buffer of their own, and only until they are written. Here
//!   there is no flush to wait for.
//! - **Zero copy for bulk**, when asked (`--passthrough-splice`). A read that fills the
//!   scratch buffer means more is waiting: the direction then moves bytes with `splice(2)`
//!   through a kernel pipe (socket → pipe → socket, the pages change hands instead of being
//!   copied into and out of the process) until the socket is drained, then puts the pipe back
//!   in the thread's pool. Small messages, the usual TLS record exchange, stay on read/write,
//!   where a pipe would only add its own costs; HAProxy's `option splice-auto` makes the same
//!   choice, and leaves splicing off by default as we do: on loopback it saved the proxy
//!   about 15 % of its CPU per byte, but the machine as a whole spent the same, the receiving
//!   side copying the pages anyway (docs/performance.md, "Issue 16, item 4").

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::splice::{Activity, End, Fault, Spliced, Step, poll_copy};

/// One direction's two ends and who is at fault when each fails.
struct Direction<'a> {
    from: ReadHalf<'a>,
    to: WriteHalf<'a>,
    from_fault: Fault,
    to_fault: Fault,
    moved: &'a AtomicU64,
    zero_copy: &'a AtomicU64,
    activity: &'a Activity,
    /// Bulk transfers go through a pipe.
    splice: bool,
}

/// Copies both directions between `client` and `upstream` until both ended, one side failed,
/// or nothing moved for `idle`; bulk transfers through a pipe when `splice`.
pub(crate) async fn run(
    client: &mut TcpStream,
    upstream: &mut TcpStream,
    idle: Duration,
    splice: bool,
) -> Spliced {
    let from_client = AtomicU64::new(0);
    let to_client = AtomicU64::new(0);
    let zero_copy = AtomicU64::new(0);
    let activity = Activity::new();
    let (client_read, client_write) = client.split();
    let (upstream_read, upstream_write) = upstream.split();
    let upstream_bound = Direction {
        from: client_read,
        to: upstream_write,
        from_fault: Fault::Client,
        to_fault: Fault::Upstream,
        moved: &from_client,
        zero_copy: &zero_copy,
        activity: &activity,
        splice,
    };
    let downstream = Direction {
        from: upstream_read,
        to: client_write,
        from_fault: Fault::Upstream,
        to_fault: Fault::Client,
        moved: &to_client,
        zero_copy: &zero_copy,
        activity: &activity,
        splice,
    };
    let end = tokio::select! {
        done = async { tokio::try_join!(upstream_bound.relay(), downstream.relay()) } => {
            Fault::end_of(done)
        }
        () = activity.idle_for(idle) => End::IdleTimeout,
    };
    Spliced {
        end,
        from_client: from_client.load(Ordering::Relaxed),
        to_client: to_client.load(Ordering::Relaxed),
        zero_copy: zero_copy.load(Ordering::Relaxed),
    }
}

impl Direction<'_> {
    /// Moves bytes until `from` ends, then shuts `to` down for writing (half-close).
    async fn relay(mut self) -> Result<(), Fault> {
        loop {
            // tokio's read on the half marks the socket drained when a read comes back short,
            // which saves the `EAGAIN` read a `try_read` loop would make per message.
            let step = std::future::poll_fn(|cx| poll_copy(&mut self.from, &mut self.to, cx));
            match step.await {
                Step::End => break,
                Step::ReadFailed => return Err(self.from_fault),
                Step::WriteFailed => return Err(self.to_fault),
                Step::Moved {
                    filled,
                    written,
                    left,
                } => {
                    self.moved(written);
                    if let Some(left) = left {
                        self.to.write_all(&left).await.map_err(|_| self.to_fault)?;
                        self.moved(left.len());
                    }
                    if filled && self.splice && self.splice_until_drained().await? {
                        break;
                    }
                }
            }
        }
        // The peer may already be gone entirely; that is not a failure of this direction.
        // (A write half's shutdown is `shutdown(2)` for writing, as in `splice::copy_half`.)
        let _ = self.to.shutdown().await;
        Ok(())
    }

    /// Splices `from` into `to` through a pipe until `from` has nothing more to read. True when
    /// `from` ended its stream. Without a pipe (none could be made) returns at once: the
    /// next read copies.
    async fn splice_until_drained(&self) -> Result<bool, Fault> {
        let Some(pipe) = Pipe::take() else {
            return Ok(false);
        };
        let (from, to) = (self.from.as_ref(), self.to.as_ref());
        loop {
            // The pipe is empty here, so `WouldBlock` can only mean the socket is: `try_io`
            // then marks it drained, and the next read waits for more.
            let mut in_pipe = match from.try_io(Interest::READABLE, || pipe.fill(from)) {
                Ok(0) => {
                    pipe.give_back();
                    return Ok(true);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    pipe.give_back();
                    return Ok(false);
                }
                Err(_) => return Err(self.from_fault),
            };
            while in_pipe > 0 {
                match to.try_io(Interest::WRITABLE, || pipe.drain(to, in_pipe)) {
                    Ok(n) => {
                        self.moved(n);
                        self.zero_copy.fetch_add(n as u64, Ordering::Relaxed);
                        in_pipe = in_pipe.saturating_sub(n);
                    }
                    // The socket's send buffer is full (the pipe is not empty).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        to.writable().await.map_err(|_| self.to_fault)?;
                    }
                    Err(_) => return Err(self.to_fault),
                }
            }
        }
    }

    fn moved(&self, n: usize) {
        if n > 0 {
            self.moved.fetch_add(n as u64, Ordering::Relaxed);
            self.activity.touch();
        }
    }
}

use pipe::Pipe;

#[cfg(target_os = "linux")]
mod pipe {
    use std::cell::RefCell;
    use std::io;
    use std::os::fd::OwnedFd;

    use nix::fcntl::{OFlag, SpliceFFlags, splice};
    use tokio::net::TcpStream;

    /// Empty pipes a thread keeps for its next bulk transfer; more are closed.
    const POOL: usize = 16;

    /// Bytes asked of one splice into the pipe: a pipe holds 16 pages by default.
    const FILL: usize = 64 * 1024;

    thread_local! {
        static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
    }

    /// A kernel pipe both of whose ends are non-blocking. Dropped with bytes in it (the tunnel
    /// failed), it closes and the kernel frees them.
    pub(crate) struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        /// An empty pipe from the thread's pool, or a new one; None when the process is out
        /// of descriptors (the tunnel then copies).
        pub(crate) fn take() -> Option<Pipe> {
            if let Some(pipe) = PIPES.with(|pipes| pipes.borrow_mut().pop()) {
                return Some(pipe);
            }
            let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).ok()?;
            Some(Pipe { read, write })
        }

        /// Returns an empty pipe to the thread's pool.
        pub(crate) fn give_back(self) {
            PIPES.with(|pipes| {
                let mut pipes = pipes.borrow_mut();
                if pipes.len() < POOL {
                    pipes.push(self);
                }
            });
        }

        /// Moves what `from` has (up to a pipe's worth) into the pipe; 0 at end of stream.
        pub(crate) fn fill(&self, from: &TcpStream) -> io::Result<usize> {
            splice(from, None, &self.write, None, FILL, flags()).map_err(io::Error::from)
        }

        /// Moves up to `len` bytes from the pipe to `to`.
        pub(crate) fn drain(&self, to: &TcpStream, len: usize) -> io::Result<usize> {
            splice(&self.read, None, to, None, len, flags()).map_err(io::Error::from)
        }
    }

    fn flags() -> SpliceFFlags {
        SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
    }
}

/// Without `splice(2)` the tunnel always copies.
#[cfg(not(target_os = "linux"))]
mod pipe {
    use std::io;

    use tokio::net::TcpStream;

    pub(crate) struct Pipe;

    impl Pipe {
        pub(crate) fn take() -> Option<Pipe> {
            None
        }

        pub(crate) fn give_back(self) {}

        pub(crate) fn fill(&self, _from: &TcpStream) -> io::Result<usize> {
            Err(io::ErrorKind::Unsupported.into())
        }

        pub(crate) fn drain(&self, _to: &TcpStream, _len: usize) -> io::Result<usize> {
            Err(io::ErrorKind::Unsupported.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Two connected sockets on loopback: (the peer's end, the tunnel's end).
    async fn connected() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (peer, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (peer.unwrap(), accepted.unwrap().0)
    }

    /// Runs a tunnel between the two sockets on a task of its own (60 s idle timeout).
    fn spawn_tunnel(
        mut client_end: TcpStream,
        mut upstream_end: TcpStream,
        splice: bool,
    ) -> tokio::task::JoinHandle<Spliced> {
        tokio::spawn(async move {
            run(
                &mut client_end,
                &mut upstream_end,
                Duration::from_secs(60),
                splice,
            )
            .await
        })
    }

    /// `len` bytes that are not all the same, so a lost or reordered chunk shows.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8)
            .collect()
    }

    /// 2 MiB up, then (after the client's half-close) 3 MiB down, through a tunnel.
    async fn bulk_both_ways(splice: bool) -> Spliced {
        let (mut client, client_end) = connected().await;
        let (mut upstream, upstream_end) = connected().await;
        let tunnel = spawn_tunnel(client_end, upstream_end, splice);
        let request = pattern(2 << 20, 1);
        let response = pattern(3 << 20, 7);
        let sent = request.clone();
        let client_task = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            // Half-close: the client is done sending but still reads the answer.
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).await.unwrap();
        assert!(got == request, "the request changed on its way");
        upstream.write_all(&response).await.unwrap();
        upstream.shutdown().await.unwrap();
        assert!(
            client_task.await.unwrap() == response,
            "the response changed"
        );
        let spliced = tunnel.await.unwrap();
        assert_eq!(spliced.end, End::Closed);
        assert_eq!(spliced.from_client, 2 << 20);
        assert_eq!(spliced.to_client, 3 << 20);
        spliced
    }

    #[tokio::test]
    async fn bulk_both_ways_arrives_intact_through_splice_with_half_close() {
        let spliced = bulk_both_ways(true).await;
        if cfg!(target_os = "linux") {
            // The first read of a burst is copied; what follows it goes through the pipe.
            assert!(
                spliced.zero_copy > 1 << 20,
                "only {} bytes spliced",
                spliced.zero_copy
            );
        }
    }

    #[tokio::test]
    async fn without_splice_bulk_is_copied_and_arrives_intact() {
        assert_eq!(bulk_both_ways(false).await.zero_copy, 0);
    }

    #[tokio::test]
    async fn small_messages_are_copied_and_nothing_is_spliced() {
        let (mut client, client_end) = connected().await;
        let (mut upstream, upstream_end) = connected().await;
        let tunnel = spawn_tunnel(client_end, upstream_end, true);
        for round in 0..50u8 {
            let ping = pattern(300, round);
            client.write_all(&ping).await.unwrap();
            let mut got = vec![0u8; ping.len()];
            upstream.read_exact(&mut got).await.unwrap();
            assert_eq!(got, ping);
            let pong = pattern(200, round.wrapping_add(100));
            upstream.write_all(&pong).await.unwrap();
            let mut back = vec![0u8; pong.len()];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(back, pong);
        }
        drop(client);
        drop(upstream);
        let spliced = tunnel.await.unwrap();
        assert_eq!(spliced.end, End::Closed);
        assert_eq!(
            (spliced.from_client, spliced.to_client),
            (50 * 300, 50 * 200)
        );
        assert_eq!(spliced.zero_copy, 0);
    }

    #[tokio::test]
    async fn a_receiver_slower_than_the_sender_gets_every_byte() {
        for splice in [true, false] {
            slow_receiver(splice).await;
        }
    }

    async fn slow_receiver(splice: bool) {
        let (mut client, client_end) = connected().await;
        let (mut upstream, upstream_end) = connected().await;
        // Small socket buffers on the upstream's side: 2 MiB cannot fit in them, so the
        // tunnel's writes would block and bytes wait, in the pipe or in a buffer, for the
        // reader (which shares this test's one thread with the tunnel).
        socket2::SockRef::from(&upstream_end)
            .set_send_buffer_size(16 * 1024)
            .unwrap();
        socket2::SockRef::from(&upstream)
            .set_recv_buffer_size(16 * 1024)
            .unwrap();
        let tunnel = spawn_tunnel(client_end, upstream_end, splice);
        let request = pattern(2 << 20, 3);
        let sent = request.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::with_capacity(request.len());
        upstream.read_to_end(&mut got).await.unwrap();
        assert!(
            got == request,
            "{} of {} bytes, or changed",
            got.len(),
            request.len()
        );
        drop(upstream);
        drop(writer.await.unwrap());
        let spliced = tunnel.await.unwrap();
        assert_eq!(spliced.end, End::Closed);
        assert_eq!(spliced.from_client, 2 << 20);
    }

    #[tokio::test]
    async fn an_upstream_reset_mid_transfer_ends_the_tunnel_as_the_upstreams_fault() {
        let (mut client, client_end) = connected().await;
        let (mut upstream, upstream_end) = connected().await;
        let tunnel = spawn_tunnel(client_end, upstream_end, true);
        let writer = tokio::spawn(async move {
            // Keeps sending until the tunnel closes the client's connection.
            let chunk = pattern(64 * 1024, 9);
            while client.write_all(&chunk).await.is_ok() {}
        });
        let mut first = vec![0u8; 256 * 1024];
        upstream.read_exact(&mut first).await.unwrap();
        // A reset rather than a close (SO_LINGER 0).
        socket2::SockRef::from(&upstream)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(upstream);
        let spliced = tunnel.await.unwrap();
        assert_eq!(spliced.end, End::UpstreamReset);
        writer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_moving_for_the_idle_timeout_ends_the_tunnel() {
        let (mut client, client_end) = connected().await;
        let (mut upstream, upstream_end) = connected().await;
        let started = tokio::time::Instant::now();
        let (mut client_end, mut upstream_end) = (client_end, upstream_end);
        let spliced = run(
            &mut client_end,
            &mut upstream_end,
            Duration::from_secs(10),
            true,
        )
        .await;
        assert_eq!(spliced.end, End::IdleTimeout);
        assert!(started.elapsed() >= Duration::from_secs(10));
        drop((client_end, upstream_end));
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(upstream.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
