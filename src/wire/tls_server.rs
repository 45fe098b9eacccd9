//! The server side of a terminated TLS connection, on rustls's unbuffered API: the connection
//! owns its record buffers, so it can give them back while it waits.
//!
//! rustls's buffered connection (what tokio-rustls drives) keeps a 4 KiB record buffer for the
//! next read for its whole life and has no call to release it: at HAProxy's ~9.5 KiB per idle
//! keep-alive TLS connection, that buffer alone is 40 % of the budget. Here the TLS bytes read
//! and not yet decrypted (`incoming`) and the ones encrypted and not yet sent (`outgoing`) are
//! our own vectors: when the socket has nothing to read and nothing is pending, both are freed,
//! and a read allocates only once the socket is readable. An idle connection then holds rustls's
//! state (keys, handshake results) and no buffer; nginx (`ngx_http_set_keepalive` with its
//! `c->buffer` freed) and HAProxy do the same with OpenSSL.
//!
//! The stream behaves as tokio-rustls's did for everything above it: the plaintext in order,
//! end-of-stream after the client's `close_notify`, an `UnexpectedEof` error when the TCP
//! connection ends without one, `close_notify` sent on shutdown, and rustls's fatal alert sent
//! (when the socket takes it) whenever it fails the connection, in the handshake or after it.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Room asked for a read when no record is partly buffered (rustls's own read size).
const READ_SIZE: usize = 4096;

/// The most TLS bytes buffered before they form a message: a handshake message may reach
/// 64 KiB (rustls's limit), plus one record's worth behind it.
const MAX_INCOMING: usize = 0x1_0000 + 0x4805;

/// The most plaintext taken from one `poll_write`, so one call's records stay bounded.
const MAX_WRITE: usize = 64 * 1024;

/// Record overhead allowed per 16 KiB of plaintext on the first try (header, tag, content
/// type, TLS 1.2's explicit nonce); rustls says how much it needs when that is not enough.
const RECORD_OVERHEAD: usize = 64;

/// A server-side TLS stream over a TCP socket (see the module documentation).
pub(crate) struct ServerTls {
    conn: UnbufferedServerConnection,
    socket: TcpStream,
    /// TLS bytes read and not yet consumed by rustls; no allocation while empty and idle.
    incoming: Vec<u8>,
    /// TLS bytes to send; `outgoing[sent..]` is still unsent.
    outgoing: Vec<u8>,
    sent: usize,
    /// Decrypted bytes the reader has not taken yet: `plaintext[taken..]`.
    plaintext: Vec<u8>,
    taken: usize,
    /// The client sent `close_notify`: reads return end-of-stream once `plaintext` is taken.
    peer_closed: bool,
    /// The TCP connection was closed by the client.
    eof: bool,
    /// We queued our `close_notify`.
    close_sent: bool,
}

/// What one call into rustls is asked to do once the connection can carry application data.
enum Action<'a> {
    Nothing,
    Write(&'a [u8]),
    Close,
}

/// Where one call into rustls left the connection.
enum Step {
    /// Something was done (records decrypted, handshake bytes queued): call again.
    Progress,
    /// The handshake needs more bytes from the client.
    NeedRead,
    /// The handshake is done and nothing is pending: more bytes are needed to read anything.
    Open,
    /// The action's plaintext (this many bytes) or `close_notify` was encrypted into `outgoing`.
    Wrote(usize),
    /// Both sides sent `close_notify`: nothing more can be read or written.
    Closed,
}

impl ServerTls {
    /// Makes the server side of a TLS handshake on `socket` with `config`, the client's first
    /// bytes (its ClientHello, already read to route by SNI) in `prefix`. Returns once the
    /// connection can carry application data.
    pub(crate) async fn accept(
        config: Arc<ServerConfig>,
        prefix: Vec<u8>,
        socket: TcpStream,
    ) -> io::Result<ServerTls> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut tls = ServerTls {
            conn,
            socket,
            incoming: prefix,
            outgoing: Vec::new(),
            sent: 0,
            plaintext: Vec::new(),
            taken: 0,
            peer_closed: false,
            eof: false,
            close_sent: false,
        };
        poll_fn(|cx| tls.poll_handshake(cx)).await?;
        Ok(tls)
    }

    /// The negotiated connection: ALPN, version, cipher suite, the client's certificates.
    pub(crate) fn connection(&self) -> &UnbufferedServerConnection {
        &self.conn
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            match self.step_or_alert(cx, &Action::Nothing, None)? {
                Step::Progress => {}
                Step::Open => return self.poll_send(cx),
                Step::NeedRead => {
                    ready!(self.poll_send(cx))?;
                    if ready!(self.poll_fill(cx))? == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "client closed the connection during the TLS handshake",
                        )));
                    }
                }
                Step::Wrote(_) | Step::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "TLS connection closed during the handshake",
                    )));
                }
            }
        }
    }

    /// rustls queues a fatal alert when it fails a connection; sends it if the socket takes it
    /// now (the connection is closed next either way).
    fn send_alert(&mut self, cx: &mut Context<'_>) {
        // One queued message per call (the alert can follow handshake messages queued before
        // the failure); a few calls empty the queue.
        for _ in 0..8 {
            if !matches!(self.step(&Action::Nothing, None), Ok(Step::Progress)) {
                break;
            }
        }
        let _ = self.poll_send(cx);
    }

    /// [`Self::step`], sending rustls's fatal alert when it fails the connection (a bad
    /// record, an unexpected message), so the client learns why rather than seeing a bare close.
    fn step_or_alert(
        &mut self,
        cx: &mut Context<'_>,
        action: &Action<'_>,
        read: Option<&mut ReadBuf<'_>>,
    ) -> io::Result<Step> {
        self.step(action, read).inspect_err(|_| self.send_alert(cx))
    }

    /// One call into rustls with the buffered TLS bytes; decrypted records go to `read` first
    /// and to `plaintext` for what does not fit.
    fn step(
        &mut self,
        action: &Action<'_>,
        mut read: Option<&mut ReadBuf<'_>>,
    ) -> io::Result<Step> {
        let ServerTls {
            conn,
            incoming,
            outgoing,
            plaintext,
            peer_closed,
            ..
        } = self;
        let status = conn.process_tls_records(incoming);
        let mut discard = status.discard;
        let state = match status.state {
            Ok(state) => state,
            Err(error) => {
                // The connection is dead; rustls does not always mark the failing record as
                // consumed, and the calls that send the alert it queued must not read it again.
                incoming.clear();
                return Err(tls_error(error));
            }
        };
        let step = match state {
            ConnectionState::ReadTraffic(mut traffic) => {
                while let Some(record) = traffic.next_record() {
                    let record = record.map_err(tls_error)?;
                    discard += record.discard;
                    deliver(record.payload, read.as_deref_mut(), plaintext);
                }
                Step::Progress
            }
            // Never reached: the server config offers no 0-RTT (`max_early_data_size` is 0).
            ConnectionState::ReadEarlyData(_) => {
                return Err(io::Error::other("TLS early data is not offered"));
            }
            ConnectionState::EncodeTlsData(mut encode) => {
                append(outgoing, 512, |out| match encode.encode(out) {
                    Ok(n) => Ok(Ok(n)),
                    Err(EncodeError::InsufficientSize(too_small)) => {
                        Ok(Err(too_small.required_size))
                    }
                    Err(error) => Err(io::Error::other(error.to_string())),
                })?;
                Step::Progress
            }
            // `outgoing` is sent in order before anything encrypted later, so the records
            // count as transmitted once they are queued there.
            ConnectionState::TransmitTlsData(transmit) => {
                transmit.done();
                Step::Progress
            }
            ConnectionState::BlockedHandshake => Step::NeedRead,
            ConnectionState::PeerClosed => {
                *peer_closed = true;
                Step::Progress
            }
            ConnectionState::Closed => {
                *peer_closed = true;
                Step::Closed
            }
            ConnectionState::WriteTraffic(mut traffic) => match action {
                Action::Nothing => Step::Open,
                Action::Write(data) => {
                    let room = data.len() + RECORD_OVERHEAD * (data.len() / 16_384 + 1);
                    append(outgoing, room, |out| encrypted(traffic.encrypt(data, out)))?;
                    Step::Wrote(data.len())
                }
                Action::Close => {
                    append(outgoing, 64, |out| {
                        encrypted(traffic.queue_close_notify(out))
                    })?;
                    Step::Wrote(0)
                }
            },
            other => {
                return Err(io::Error::other(format!(
                    "unexpected TLS connection state {other:?}"
                )));
            }
        };
        incoming.drain(..discard.min(incoming.len()));
        Ok(step)
    }

    /// Reads what the socket has into `incoming`, allocating room only once the socket is
    /// readable. `Ready(Ok(0))` is the end of the TCP stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.socket.poll_read_ready(cx))?;
            if self.incoming.len() >= MAX_INCOMING {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS message larger than the connection's buffer",
                )));
            }
            let want = record_remaining(&self.incoming).max(READ_SIZE);
            self.incoming.reserve(want);
            match self.socket.try_read_buf(&mut self.incoming) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }

    /// Writes `outgoing` to the socket; `Ready(Ok(()))` once all of it is sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.socket).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// The connection waits for the client: the buffers that hold nothing go back to the
    /// allocator (the point of this type).
    fn release_idle_buffers(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        if self.outgoing.is_empty() {
            self.outgoing = Vec::new();
        }
        if self.taken >= self.plaintext.len() {
            self.plaintext = Vec::new();
            self.taken = 0;
        }
    }

    /// Buffer capacities (incoming, outgoing, plaintext), for tests.
    #[cfg(test)]
    fn capacities(&self) -> (usize, usize, usize) {
        (
            self.incoming.capacity(),
            self.outgoing.capacity(),
            self.plaintext.capacity(),
        )
    }
}

/// Copies `payload` into `read` as far as it has room, the rest into `pending`.
fn deliver(payload: &[u8], read: Option<&mut ReadBuf<'_>>, pending: &mut Vec<u8>) {
    let direct = match read {
        Some(read) if pending.is_empty() => {
            let n = payload.len().min(read.remaining());
            read.put_slice(&payload[..n]);
            n
        }
        _ => 0,
    };
    pending.extend_from_slice(&payload[direct..]);
}

/// Appends what `write` puts into a buffer to `out`: it is first offered `room` bytes, and
/// again the size it asks for (`Ok(Err(required))`) when that was too little.
fn append(
    out: &mut Vec<u8>,
    room: usize,
    mut write: impl FnMut(&mut [u8]) -> io::Result<Result<usize, usize>>,
) -> io::Result<()> {
    let start = out.len();
    let mut room = room;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(Ok(n)) => {
                out.truncate(start + n);
                return Ok(());
            }
            Ok(Err(required)) if required > room => room = required,
            Ok(Err(_)) => {
                out.truncate(start);
                return Err(io::Error::other("rustls asked for less room than it had"));
            }
            Err(error) => {
                out.truncate(start);
                return Err(error);
            }
        }
    }
}

/// An encryption's result as [`append`] takes it: the bytes written, or the room it needs.
fn encrypted(result: Result<usize, EncryptError>) -> io::Result<Result<usize, usize>> {
    match result {
        Ok(n) => Ok(Ok(n)),
        Err(EncryptError::InsufficientSize(too_small)) => Ok(Err(too_small.required_size)),
        Err(error) => Err(io::Error::other(error.to_string())),
    }
}

/// How many more bytes the record at the head of `incoming` needs (0 when none is partial).
fn record_remaining(incoming: &[u8]) -> usize {
    match incoming {
        [_, _, _, hi, lo, ..] => {
            let record = 5 + usize::from(u16::from_be_bytes([*hi, *lo]));
            record.saturating_sub(incoming.len())
        }
        _ => 0,
    }
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl AsyncRead for ServerTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let start = buf.filled().len();
        loop {
            if this.taken < this.plaintext.len() {
                let n = (this.plaintext.len() - this.taken).min(buf.remaining());
                buf.put_slice(&this.plaintext[this.taken..this.taken + n]);
                this.taken += n;
                if this.taken == this.plaintext.len() {
                    this.plaintext.clear();
                    this.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )));
            }
            match this.step_or_alert(cx, &Action::Nothing, Some(buf))? {
                Step::Progress if buf.filled().len() > start => return Poll::Ready(Ok(())),
                Step::Progress | Step::Closed => {}
                Step::NeedRead | Step::Open | Step::Wrote(_) => {
                    // Records rustls queued while reading (a key update's answer) go out with
                    // the next write or flush if the socket cannot take them now.
                    if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                        return Poll::Ready(Err(error));
                    }
                    match this.poll_fill(cx) {
                        Poll::Ready(Ok(0)) => this.eof = true,
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                        Poll::Pending => {
                            this.release_idle_buffers();
                            return Poll::Pending;
                        }
                    }
                }
            }
        }
    }
}

impl AsyncWrite for ServerTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // What an earlier write encrypted goes out first: at most one write's records wait.
        ready!(this.poll_send(cx))?;
        let data = &data[..data.len().min(MAX_WRITE)];
        loop {
            match this.step_or_alert(cx, &Action::Write(data), None)? {
                Step::Wrote(n) => {
                    if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                        return Poll::Ready(Err(error));
                    }
                    return Poll::Ready(Ok(n));
                }
                Step::Progress => {}
                Step::NeedRead | Step::Open | Step::Closed => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "TLS connection cannot carry application data",
                    )));
                }
            }
        }
    }

    /// The slices become one record instead of one each: an HTTP/2 frame's head and its data
    /// (h2 hands them over apart, as hyper's HTTP/1 writer does a response head and its body)
    /// would otherwise cost two records and two `write(2)`s.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum::<usize>().min(MAX_WRITE);
        match bufs.iter().find(|b| !b.is_empty()) {
            None => return Poll::Ready(Ok(0)),
            // Nothing to gather: no copy.
            Some(first) if first.len() >= total => return self.poll_write(cx, first),
            Some(_) => {}
        }
        let mut gathered = Vec::with_capacity(total);
        for buf in bufs {
            let room = total - gathered.len();
            if room == 0 {
                break;
            }
            gathered.extend_from_slice(&buf[..buf.len().min(room)]);
        }
        // Every byte of `gathered` is encrypted or none is (`poll_write` takes at most
        // `MAX_WRITE`), so the count returned is how far into `bufs` the write went.
        self.poll_write(cx, &gathered)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.close_sent {
            // Anything but progress means close_notify is queued or can no longer be.
            if !matches!(this.step(&Action::Close, None)?, Step::Progress) {
                this.close_sent = true;
            }
        }
        ready!(this.poll_send(cx))?;
        match ready!(Pin::new(&mut this.socket).poll_shutdown(cx)) {
            Err(error) if error.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(error)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use rustls::{ClientConfig, RootCertStore, ServerConfig};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;

    use super::*;

    /// A server config for `tls.test` (ALPN `alpn`) and a client config that trusts it.
    fn configs(alpn: &[&[u8]]) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["tls.test".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let der = CertificateDer::from(cert.der().to_vec());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .expect("server config");
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut roots = RootCertStore::empty();
        roots.add(der).expect("root");
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut client = client;
        client.alpn_protocols = server.alpn_protocols.clone();
        (Arc::new(server), Arc::new(client))
    }

    /// A connected pair: the server's socket with the first `prefix` bytes of the client's
    /// ClientHello already read from it (as the front door reads them), and the client's
    /// handshake future.
    async fn pair(
        client: Arc<ClientConfig>,
        prefix: usize,
    ) -> (
        TcpStream,
        Vec<u8>,
        tokio::task::JoinHandle<io::Result<tokio_rustls::client::TlsStream<TcpStream>>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connecting = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("tls.test").expect("name");
            TlsConnector::from(client).connect(name, tcp).await
        });
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut read_ahead = vec![0; prefix];
        socket.read_exact(&mut read_ahead).await.expect("prefix");
        (socket, read_ahead, connecting)
    }

    /// A handshake made: the server's stream and the client's, ALPN `alpn` offered by both.
    async fn connected(
        alpn: &[&[u8]],
        prefix: usize,
    ) -> (ServerTls, tokio_rustls::client::TlsStream<TcpStream>) {
        let (server_config, client_config) = configs(alpn);
        let (socket, prefix, connecting) = pair(client_config, prefix).await;
        let tls = ServerTls::accept(server_config, prefix, socket)
            .await
            .expect("handshake");
        let client = connecting.await.expect("join").expect("client handshake");
        (tls, client)
    }

    /// The client's error is the server's fatal alert `alert` (as rustls names it), not a
    /// bare close.
    fn assert_alert(client_error: &io::Error, alert: &str) {
        assert!(
            client_error.to_string().contains(alert),
            "the client should have seen {alert}: {client_error}"
        );
    }

    /// Polls one read: `None` while it would wait.
    async fn read_now(tls: &mut ServerTls, buf: &mut [u8]) -> Option<io::Result<usize>> {
        poll_fn(|cx| {
            let mut read = ReadBuf::new(buf);
            match Pin::new(&mut *tls).poll_read(cx, &mut read) {
                Poll::Ready(result) => Poll::Ready(Some(result.map(|()| read.filled().len()))),
                Poll::Pending => Poll::Ready(None),
            }
        })
        .await
    }

    #[tokio::test]
    async fn serves_in_both_directions_and_holds_no_buffer_while_it_waits() {
        let (mut tls, mut client) = connected(&[b"http/1.1"], 11).await;
        assert_eq!(tls.connection().alpn_protocol(), Some(&b"http/1.1"[..]));

        // Large in both directions: many records, partial ones, writes beyond MAX_WRITE.
        let upload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expected = upload.clone();
        let sender = tokio::spawn(async move {
            client.write_all(&upload).await.expect("upload");
            client.flush().await.expect("flush");
            client
        });
        let mut got = vec![0; expected.len()];
        tls.read_exact(&mut got)
            .await
            .expect("server reads the upload");
        assert!(got == expected, "the upload arrives intact");
        let mut client = sender.await.expect("join");
        let download: Vec<u8> = expected.iter().rev().copied().collect();
        let writer = async {
            tls.write_all(&download).await.expect("download");
            tls.flush().await.expect("flush");
        };
        let mut back = vec![0; download.len()];
        let (_, read) = tokio::join!(writer, client.read_exact(&mut back));
        read.expect("client reads the download");
        assert!(back == download, "the download arrives intact");

        // A request and its answer, then the connection waits: nothing buffered is kept.
        for round in 0..3u8 {
            client
                .write_all(&[b'a' + round; 100])
                .await
                .expect("request");
            let mut request = [0; 100];
            tls.read_exact(&mut request).await.expect("read request");
            tls.write_all(&request.to_ascii_uppercase())
                .await
                .expect("answer");
            tls.flush().await.expect("flush");
            let mut answer = [0; 100];
            client.read_exact(&mut answer).await.expect("read answer");
            assert_eq!(answer, [b'A' + round; 100]);
            assert!(
                read_now(&mut tls, &mut request).await.is_none(),
                "nothing to read"
            );
            assert_eq!(
                tls.capacities(),
                (0, 0, 0),
                "buffers while waiting, round {round}"
            );
        }

        // The client's close_notify is end-of-stream; ours reaches the client as one.
        client.shutdown().await.expect("client close_notify");
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest)
            .await
            .expect("clean end-of-stream");
        assert!(rest.is_empty());
        tls.shutdown().await.expect("server close_notify");
        let mut rest = Vec::new();
        client
            .read_to_end(&mut rest)
            .await
            .expect("the client sees a clean close");
    }

    #[tokio::test]
    async fn a_connection_ended_without_close_notify_is_an_unexpected_eof() {
        let (mut tls, client) = connected(&[], 0).await;
        // TCP's end (FIN) with no close_notify before it.
        let (mut tcp, _) = client.into_inner();
        tcp.shutdown().await.expect("FIN");
        let mut buf = [0; 16];
        let error = tls
            .read(&mut buf)
            .await
            .expect_err("truncation is an error");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        drop(tcp);
    }

    #[tokio::test]
    async fn a_failed_handshake_sends_rustls_alert() {
        // The server speaks only h2; a client that offers only http/1.1 gets
        // `no_application_protocol` (RFC 7301, section 3.2), not a bare close.
        let (server_config, client_config) = configs(&[b"h2"]);
        let mut client_config = Arc::unwrap_or_clone(client_config);
        client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let (socket, prefix, connecting) = pair(Arc::new(client_config), 5).await;
        let error = match ServerTls::accept(server_config, prefix, socket).await {
            Ok(_) => panic!("the handshake must fail"),
            Err(error) => error,
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        let client_error = connecting
            .await
            .expect("join")
            .expect_err("client fails too");
        assert_alert(&client_error, "NoApplicationProtocol");
    }

    #[tokio::test]
    async fn a_record_that_fails_to_decrypt_gets_rustls_alert() {
        // A record the server cannot authenticate after the handshake: the server must send
        // `bad_record_mac` (RFC 8446, section 5.2) before it closes, so the client learns why.
        let (mut tls, mut client) = connected(&[], 0).await;
        let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x20];
        forged.extend_from_slice(&[0x5a; 0x20]);
        client
            .get_mut()
            .0
            .write_all(&forged)
            .await
            .expect("forged record");
        let mut buf = [0; 16];
        let error = tls.read(&mut buf).await.expect_err("the record is refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        drop(tls);
        let client_error = client
            .read(&mut buf)
            .await
            .expect_err("the client sees the alert, not a clean close");
        assert_alert(&client_error, "BadRecordMac");
    }

    #[tokio::test]
    async fn a_vectored_write_is_one_record() {
        // No session tickets: after the handshake, the only bytes the server sends are ours.
        let (server_config, client_config) = configs(&[b"h2"]);
        let mut server_config = Arc::unwrap_or_clone(server_config);
        server_config.send_tls13_tickets = 0;
        let (socket, prefix, connecting) = pair(client_config, 0).await;
        let mut tls = ServerTls::accept(Arc::new(server_config), prefix, socket)
            .await
            .expect("handshake");
        let mut client = connecting.await.expect("join").expect("client handshake");
        assert!(tls.is_write_vectored());

        // An HTTP/2 DATA frame as h2 hands it over: its 9-byte head, then the payload.
        let head = [0u8, 3, 0xe8, 0, 1, 0, 0, 0, 1];
        let payload: Vec<u8> = (0..1000u32).map(|i| (i % 253) as u8).collect();
        let slices = [
            io::IoSlice::new(&head),
            io::IoSlice::new(&[]),
            io::IoSlice::new(&payload),
        ];
        let written = tls.write_vectored(&slices).await.expect("write");
        assert_eq!(written, head.len() + payload.len(), "all of it taken");
        tls.flush().await.expect("flush");
        let mut got = vec![0; written];
        client.read_exact(&mut got).await.expect("read");
        assert_eq!(&got[..9], &head[..]);
        assert!(got[9..] == payload[..], "the payload arrives intact");

        // The same again, read off the wire: one application-data record holding both
        // slices (TLS 1.3 adds a content-type byte and a 16-byte tag), not one per slice.
        let written = tls.write_vectored(&slices).await.expect("write");
        assert_eq!(written, head.len() + payload.len());
        tls.flush().await.expect("flush");
        let (tcp, _) = client.get_mut();
        let mut header = [0u8; 5];
        tcp.read_exact(&mut header).await.expect("record header");
        assert_eq!(header[0], 0x17, "application data");
        let length = usize::from(u16::from_be_bytes([header[3], header[4]]));
        assert_eq!(length, head.len() + payload.len() + 1 + 16, "one record");
    }

    #[tokio::test]
    async fn a_client_key_update_is_answered_and_traffic_goes_on() {
        // TLS 1.3 KeyUpdate with update_requested (RFC 8446, section 4.6.3): the server must
        // send its own before anything it encrypts with its new keys. rustls queues it while
        // reading; the stream has to get it onto the wire in order.
        let (mut tls, mut client) = connected(&[], 0).await;
        for round in 0..3u8 {
            client
                .get_mut()
                .1
                .refresh_traffic_keys()
                .expect("TLS 1.3 key update");
            client
                .write_all(&[b'a' + round; 10])
                .await
                .expect("request");
            client.flush().await.expect("flush");
            let mut request = [0; 10];
            tls.read_exact(&mut request)
                .await
                .expect("read after key update");
            tls.write_all(&request.to_ascii_uppercase())
                .await
                .expect("answer");
            tls.flush().await.expect("flush");
            let mut answer = [0; 10];
            client
                .read_exact(&mut answer)
                .await
                .expect("the client decrypts the answer under the server's new keys");
            assert_eq!(answer, [b'A' + round; 10]);
        }
    }
}
