//! A client's stream as the HTTP/1.1 side of `connection` holds it between hyper
//! connections: [`Rewound`] gives back bytes read before hyper took the stream (the first
//! bytes of the next request, or what hyper had read but not parsed when it let go), and
//! [`Lent`] is the loan hyper gets for one stretch of requests — its shutdown is skipped
//! when the gateway, not the client, ends that stretch, so the stream stays open for the
//! next one. An upgraded connection (WebSocket) takes the stream itself, as [`ClientIo`].
//! Owns no buffer beyond the bytes given back.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client's stream, owned and type-erased: what an upgraded connection carries.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The client's side of an upgraded connection.
pub(crate) type ClientIo = Box<dyn Io>;

/// A stream with bytes given back to be read again first.
pub(crate) struct Rewound<T> {
    unread: Bytes,
    inner: T,
}

impl<T> Rewound<T> {
    pub(crate) fn new(inner: T) -> Rewound<T> {
        Rewound {
            unread: Bytes::new(),
            inner,
        }
    }

    /// Gives `bytes` back: they are read before anything given back earlier and not yet
    /// read again, then the stream.
    pub(crate) fn unread(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.unread.is_empty() {
            self.unread = bytes;
        } else {
            let mut joined = BytesMut::with_capacity(bytes.len() + self.unread.len());
            joined.extend_from_slice(&bytes);
            joined.extend_from_slice(&self.unread);
            self.unread = joined.freeze();
        }
    }

    /// Whether bytes given back are still to be read.
    pub(crate) fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewound<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewound<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A stream on loan to one hyper connection. When `keep_open` is set, hyper's shutdown at
/// the end only flushes: the gateway ended the stretch to drop hyper's state, and the
/// client's connection goes on.
pub(crate) struct Lent<'a, T> {
    pub(crate) io: &'a mut T,
    pub(crate) keep_open: &'a AtomicBool,
}

impl<T: AsyncRead + Unpin> AsyncRead for Lent<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Lent<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.keep_open.load(Relaxed) {
            return Pin::new(&mut *self.io).poll_flush(cx);
        }
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_given_back_are_read_first_in_order() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut r = Rewound::new(a);
        b.write_all(b"-stream").await.expect("write");
        r.unread(Bytes::from_static(b"second"));
        // Given back later, read first: hyper's unparsed bytes came after the earlier ones.
        r.unread(Bytes::from_static(b"first-"));
        assert!(r.has_unread());
        let mut got = vec![0u8; 19];
        r.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"first-second-stream");
        assert!(!r.has_unread());
    }

    #[tokio::test]
    async fn a_lent_stream_kept_open_is_not_shut_down() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut r = Rewound::new(a);
        let keep_open = AtomicBool::new(true);
        Lent {
            io: &mut r,
            keep_open: &keep_open,
        }
        .shutdown()
        .await
        .expect("shutdown");
        r.write_all(b"still open")
            .await
            .expect("write after a kept-open shutdown");
        let mut got = [0u8; 10];
        b.read_exact(&mut got).await.expect("read");
        keep_open.store(false, Relaxed);
        Lent {
            io: &mut r,
            keep_open: &keep_open,
        }
        .shutdown()
        .await
        .expect("shutdown");
        assert_eq!(
            b.read(&mut got).await.expect("read"),
            0,
            "shut down: end of stream"
        );
    }
}
