//! Replaying bytes we already read: the :443 front door reads the ClientHello (and :80 a PROXY
//! header) before deciding what to do, then hands the connection on as if nothing was read.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, ReadBuf};

/// An I/O stream whose reads first return `prefix`, then read from `io`. Writes go straight to
/// `io`.
#[derive(Debug)]
pub(crate) struct PrefixedIo<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> PrefixedIo<IO> {
    /// Wraps `io` so that reads return `prefix` first.
    pub(crate) fn new(prefix: impl Into<Bytes>, io: IO) -> Self {
        PrefixedIo {
            prefix: prefix.into(),
            io,
        }
    }

    /// The bytes not yet replayed.
    #[cfg(test)]
    fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Returns the unreplayed prefix and the underlying stream.
    pub(crate) fn into_parts(self) -> (Bytes, IO) {
        (self.prefix, self.io)
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for PrefixedIo<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if replay(&mut this.prefix, buf) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

/// Moves as much of `prefix` as fits into `buf`; `false` when there was nothing to replay.
/// An emptied prefix lets go of the buffer it came from (the ClientHello buffer's capacity)
/// now rather than when the connection ends: idle connections hold no buffer.
pub(crate) fn replay(prefix: &mut Bytes, buf: &mut ReadBuf<'_>) -> bool {
    if prefix.is_empty() {
        return false;
    }
    let n = prefix.len().min(buf.remaining());
    if let Some(chunk) = prefix.get(..n) {
        buf.put_slice(chunk);
    }
    prefix.advance(n);
    if prefix.is_empty() {
        *prefix = Bytes::new();
    }
    true
}

// Reads replay the prefix first; writes go straight through.
super::write_through!(PrefixedIo, io);

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn replays_prefix_then_reads_and_writes_through() {
        let (mut far, near) = tokio::io::duplex(64);
        let mut io = PrefixedIo::new(b"hello ".to_vec(), near);
        far.write_all(b"world").await.unwrap();
        drop(far.shutdown().await);

        // A small buffer takes the prefix in pieces.
        let mut small = [0u8; 4];
        io.read_exact(&mut small).await.unwrap();
        assert_eq!(&small, b"hell");
        let mut rest = Vec::new();
        io.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"o world");
        assert!(io.prefix().is_empty());

        io.write_all(b"back").await.unwrap();
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"back");
    }
}
