//! Byte-level codecs of the :443 front door and the PROXY protocol: the ClientHello reader, PROXY
//! v1/v2 parsing and encoding, the I/O wrapper that replays bytes read ahead, and the server
//! side of a terminated TLS connection (rustls's unbuffered API). A leaf: nothing
//! here imports anything else from the crate, so the parsers can be fuzzed and reasoned about
//! alone.

/// Implements `AsyncWrite` for an I/O wrapper `$wrapper<IO>` whose writes go straight to its
/// inner stream, the field `$io`: the wrappers ([`prefixed_io::PrefixedIo`],
/// `proxy::framing_guard::FramingGuard`) add something to reads only. One definition for all of
/// them, so none forgets a method (vectored writes, flush, shutdown).
macro_rules! write_through {
    ($wrapper:ident, $io:ident) => {
        impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for $wrapper<IO> {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().$io).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
                bufs: &[std::io::IoSlice<'_>],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::pin::Pin::new(&mut self.get_mut().$io).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.$io.is_write_vectored()
            }

            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().$io).poll_flush(cx)
            }

            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::pin::Pin::new(&mut self.get_mut().$io).poll_shutdown(cx)
            }
        }
    };
}
pub(crate) use write_through;

pub mod client_hello;
pub(crate) mod host_name;
pub(crate) mod prefixed_io;
pub mod proxy_protocol;
pub(crate) mod tls_server;
