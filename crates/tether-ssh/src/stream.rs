//! The client's TCP stream as russh sees it, plus a side door for the connection.
//!
//! russh owns the stream it reads from, but the connection needs three things russh
//! does not give it: the client's identification line (`SSH-2.0-OpenSSH_9.2p1`,
//! shown on the Verify page) before authentication ends, the byte counts for the
//! audit log, and a way to notice that the client went away while an authentication
//! callback is waiting (russh does not read the socket while a handler awaits). So
//! the socket lives behind an `Arc`: [`ClientStream`] is russh's reader/writer,
//! [`Probe`] is the connection's view of the same socket. Nothing here parses SSH
//! beyond the first line.

use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Longest identification line RFC 4253 allows (including CR LF).
const MAX_ID_LINE: usize = 255;

/// Read buffer under russh. russh reads every packet with two exact reads (the
/// first block, then the rest), so without a buffer half of the `recvfrom` calls
/// return 16 bytes; with one, a single call brings several packets. The buffer is
/// held only while bytes flow ([`ReadBuffer`]): a quiet connection holds none.
pub(crate) const READ_BUFFER: usize = 64 * 1024;

/// The read buffer a connection starts with: key exchange and authentication
/// packets fit many times over, so a burst of new connections does not cost 64 KiB
/// each. A read that fills the buffer doubles the next one, up to [`READ_BUFFER`].
const FIRST_READ_BUFFER: usize = 8 * 1024;

/// A read buffer that exists only while there is something to read: allocated
/// (without zero-filling) when the socket is readable, dropped as soon as it is
/// drained and the socket has nothing more. Ten thousand idle connections then
/// hold no read buffers at all, while a busy one reads 64 KiB per system call.
#[derive(Debug)]
pub(crate) struct ReadBuffer {
    /// Bytes read and not yet handed on: `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    /// The size of the next buffer allocated.
    next: usize,
}

impl Default for ReadBuffer {
    fn default() -> Self {
        ReadBuffer {
            buf: Vec::new(),
            pos: 0,
            next: FIRST_READ_BUFFER,
        }
    }
}

impl ReadBuffer {
    /// Whether every byte read has been handed on.
    pub(crate) fn is_drained(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// An empty buffer with spare capacity to read into: [`FIRST_READ_BUFFER`] at
    /// first, twice as much after a read that filled it, up to [`READ_BUFFER`].
    pub(crate) fn prepare(&mut self) -> &mut Vec<u8> {
        if !self.buf.is_empty() && self.buf.len() == self.buf.capacity() {
            self.next = (self.next * 2).min(READ_BUFFER);
        }
        self.buf.clear();
        self.pos = 0;
        if self.buf.capacity() < self.next {
            self.buf.reserve_exact(self.next);
        }
        &mut self.buf
    }

    /// Gives the memory back (the connection went quiet).
    pub(crate) fn release(&mut self) {
        if self.is_drained() {
            self.buf = Vec::new();
            self.pos = 0;
        }
    }

    /// The bytes read since the last [`ReadBuffer::prepare`].
    pub(crate) fn filled(&self) -> &[u8] {
        &self.buf
    }

    /// Moves as many buffered bytes as fit into `out`.
    pub(crate) fn copy_to(&mut self, out: &mut ReadBuf<'_>) {
        let avail = self.buf.get(self.pos..).unwrap_or_default();
        let n = avail.len().min(out.remaining());
        out.put_slice(avail.get(..n).unwrap_or_default());
        self.pos += n;
    }

    /// Bytes of memory held (for tests).
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.buf.capacity()
    }
}

/// A stream whose reads go through a [`ReadBuffer`] (the upstream leg; the client
/// leg does the same inside [`ClientStream`]).
#[derive(Debug)]
pub(crate) struct Buffered<S> {
    inner: S,
    rbuf: ReadBuffer,
}

impl<S> Buffered<S> {
    pub(crate) fn new(inner: S) -> Self {
        Buffered {
            inner,
            rbuf: ReadBuffer::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Buffered<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.rbuf.is_drained() {
            let buf = this.rbuf.prepare();
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, buf) {
                Poll::Pending => {
                    this.rbuf.release();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(_)) => {}
            }
        }
        this.rbuf.copy_to(out);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Buffered<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// State shared by the stream and its probe.
#[derive(Debug, Default)]
struct Shared {
    client_id: OnceLock<String>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

/// The stream handed to russh.
#[derive(Debug)]
pub(crate) struct ClientStream {
    tcp: Arc<TcpStream>,
    shared: Arc<Shared>,
    /// Bytes of the first line seen so far; `None` once the line is complete.
    id_line: Option<Vec<u8>>,
    /// Bytes read from the socket and not yet handed to russh.
    rbuf: ReadBuffer,
}

/// The connection's side view of the socket.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    tcp: Arc<TcpStream>,
    shared: Arc<Shared>,
}

impl ClientStream {
    /// Wraps an accepted socket; returns russh's stream and the connection's probe.
    pub(crate) fn new(tcp: TcpStream) -> (ClientStream, Probe) {
        let tcp = Arc::new(tcp);
        let shared = Arc::new(Shared::default());
        let probe = Probe {
            tcp: tcp.clone(),
            shared: shared.clone(),
        };
        (
            ClientStream {
                tcp,
                shared,
                id_line: Some(Vec::new()),
                rbuf: ReadBuffer::default(),
            },
            probe,
        )
    }
}

/// Feeds bytes read from the client into the identification-line capture; sets
/// `line` to `None` once the line is complete.
fn observe(line: &mut Option<Vec<u8>>, shared: &Shared, bytes: &[u8]) {
    let Some(seen) = line.as_mut() else {
        return;
    };
    for &b in bytes {
        if b == b'\n' || seen.len() >= MAX_ID_LINE {
            let text = String::from_utf8_lossy(seen);
            let text = text.trim_end_matches('\r');
            if text.starts_with("SSH-") {
                let _ = shared.client_id.set(sanitize(text));
            }
            *line = None;
            return;
        }
        seen.push(b);
    }
}

/// Keeps printable ASCII only: the line ends up in HTML and logs.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect()
}

impl ClientStream {
    /// Refills the (drained) read buffer with one read from the socket, counting
    /// and observing the bytes. While the socket has nothing, no buffer is held.
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.tcp.poll_read_ready(cx)?.is_pending() {
                self.rbuf.release();
                return Poll::Pending;
            }
            match self.tcp.try_read_buf(self.rbuf.prepare()) {
                Ok(n) => {
                    self.shared.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    observe(&mut self.id_line, &self.shared, self.rbuf.filled());
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.rbuf.is_drained() {
            ready!(this.fill(cx))?;
        }
        this.rbuf.copy_to(buf);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            ready!(this.tcp.poll_write_ready(cx))?;
            match this.tcp.try_write(data) {
                Ok(n) => {
                    this.shared.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket; there is no buffer to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(shutdown(&self.tcp, Shutdown::Write))
    }
}

/// Shuts a socket down; a peer that already went away is not an error.
fn shutdown(tcp: &TcpStream, how: Shutdown) -> io::Result<()> {
    match socket2::SockRef::from(tcp).shutdown(how) {
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
        other => other,
    }
}

impl Probe {
    /// The client's identification line, once russh has read it.
    pub(crate) fn client_version(&self) -> Option<String> {
        self.shared.client_id.get().cloned()
    }

    /// The local port the client connected to (the gateway's SSH port as this
    /// connection reached it).
    pub(crate) fn local_port(&self) -> Option<u16> {
        self.tcp.local_addr().ok().map(|a| a.port())
    }

    /// Bytes read from and written to the client so far.
    pub(crate) fn byte_counts(&self) -> (u64, u64) {
        (
            self.shared.bytes_in.load(Ordering::Relaxed),
            self.shared.bytes_out.load(Ordering::Relaxed),
        )
    }

    /// Closes the socket in both directions, so russh's reader ends even when the
    /// client ignores a DISCONNECT.
    pub(crate) fn force_close(&self) {
        if let Err(e) = shutdown(&self.tcp, Shutdown::Both) {
            tracing::debug!("socket shutdown: {e}");
        }
    }

    /// Resolves once the client has closed (or reset) the connection.
    ///
    /// Only meaningful while russh is not reading (during an authentication
    /// callback): it peeks, so it never takes bytes away from russh.
    pub(crate) async fn peer_closed(&self) {
        let mut byte = [0u8; 1];
        loop {
            match self.tcp.peek(&mut byte).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    // Bytes are waiting for russh; only the FIN/RST flags can tell us
                    // more now. Look at them, then look again a little later.
                    match self.tcp.ready(Interest::READABLE).await {
                        Ok(r) if r.is_read_closed() || r.is_error() => return,
                        Err(_) => return,
                        Ok(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn buffered_reads_deliver_every_byte_in_order_then_eof() {
        let (mut client, server) = pair().await;
        let (mut stream, probe) = ClientStream::new(server);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            // Dropping the client closes the connection.
        });
        // russh's pattern: a 16-byte block, then the rest of a 32 KiB packet.
        let mut got = Vec::new();
        loop {
            let mut head = [0u8; 16];
            let n = stream.read(&mut head).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&head[..n]);
            let mut rest = vec![0u8; 32_768];
            let n = stream.read(&mut rest).await.unwrap();
            got.extend_from_slice(&rest[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got, data);
        assert_eq!(probe.byte_counts().0, data.len() as u64);
    }

    #[tokio::test]
    async fn a_quiet_connection_holds_no_read_buffer() {
        let (mut client, server) = pair().await;
        let (mut stream, _probe) = ClientStream::new(server);
        assert_eq!(stream.rbuf.held(), 0, "nothing read yet, nothing held");
        client.write_all(&[7u8; 1000]).await.unwrap();
        let mut got = vec![0u8; 1000];
        stream.read_exact(&mut got).await.unwrap();
        assert!(got.iter().all(|b| *b == 7));
        // The next read finds the socket empty: the buffer goes before it waits.
        let mut more = [0u8; 16];
        let waited = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut more)).await;
        assert!(waited.is_err(), "nothing more was sent");
        assert_eq!(stream.rbuf.held(), 0);
        // And it comes back when bytes do.
        client.write_all(b"again").await.unwrap();
        let n = stream.read(&mut more).await.unwrap();
        assert_eq!(&more[..n], b"again");
    }

    #[tokio::test]
    async fn the_buffer_starts_small_and_grows_for_bulk_reads() {
        let (mut client, server) = pair().await;
        let (mut stream, _probe) = ClientStream::new(server);
        client.write_all(b"SSH-2.0-x\r\n").await.unwrap();
        let mut line = [0u8; 11];
        stream.read_exact(&mut line).await.unwrap();
        assert!(stream.rbuf.held() <= FIRST_READ_BUFFER);
        let data = vec![9u8; 1 << 20];
        let writer = tokio::spawn(async move {
            client.write_all(&data).await.unwrap();
            client
        });
        let mut got = vec![0u8; 1 << 20];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(
            stream.rbuf.next, READ_BUFFER,
            "bulk reads use the full buffer"
        );
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn buffered_upstream_leg_releases_its_buffer_when_quiet() {
        let (mut client, server) = pair().await;
        let mut stream = Buffered::new(server);
        client.write_all(&[1u8; 70_000]).await.unwrap();
        let mut got = vec![0u8; 70_000];
        stream.read_exact(&mut got).await.unwrap();
        let mut more = [0u8; 16];
        let waited = tokio::time::timeout(Duration::from_millis(50), stream.read(&mut more)).await;
        assert!(waited.is_err());
        assert_eq!(stream.rbuf.held(), 0);
        drop(client);
        assert_eq!(stream.read(&mut more).await.unwrap(), 0, "EOF after close");
    }

    #[tokio::test]
    async fn captures_the_identification_line_and_counts_bytes() {
        let (mut client, server) = pair().await;
        let (mut stream, probe) = ClientStream::new(server);
        client
            .write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\nrest")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 34 {
            got += stream.read(&mut buf[got..]).await.unwrap();
        }
        assert_eq!(
            probe.client_version().as_deref(),
            Some("SSH-2.0-OpenSSH_9.2p1 Debian")
        );
        stream.write_all(b"hello").await.unwrap();
        assert_eq!(probe.byte_counts(), (34, 5));
    }

    #[tokio::test]
    async fn garbage_first_line_captures_nothing() {
        let (mut client, server) = pair().await;
        let (mut stream, probe) = ClientStream::new(server);
        client.write_all(&[0xff; 300]).await.unwrap();
        let mut buf = [0u8; 512];
        let mut got = 0;
        while got < 300 {
            got += stream.read(&mut buf[got..]).await.unwrap();
        }
        assert_eq!(probe.client_version(), None);
    }

    #[tokio::test]
    async fn notices_a_closed_peer_without_consuming_bytes() {
        let (mut client, server) = pair().await;
        let (mut stream, probe) = ClientStream::new(server);
        client.write_all(b"x").await.unwrap();
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), probe.peer_closed())
            .await
            .expect("close noticed");
        let mut buf = [0u8; 4];
        assert_eq!(stream.read(&mut buf).await.unwrap(), 1, "byte still there");
    }
}
