//! The one header name whose spelling some EST clients insist on. HTTP/1 header names are
//! case-insensitive, and hyper writes them in lower case or, with title case on, as
//! `Www-Authenticate`; libest's `estclient` (the EST client in Cisco's libest, found in
//! network gear) looks for the bytes `WWW-Authenticate` and, not finding them, gives up on
//! the Basic challenge. This wrapper spells that one name as RFC 7235 does on the bytes an
//! HTTP/1 connection writes. The replacement has the same length, so counts of written
//! bytes stay true; nothing else is touched.

use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const HYPER: &[u8] = b"\r\nWww-Authenticate:";
const RFC: &[u8] = b"\r\nWWW-Authenticate:";

/// An HTTP/1 connection's byte stream whose responses spell `WWW-Authenticate` as RFC 7235
/// does; with `enabled` false (HTTP/2, whose names are lower case by rule), a pass-through.
pub(crate) struct HeaderCase<T> {
    inner: T,
    enabled: bool,
}

impl<T> HeaderCase<T> {
    pub(crate) fn new(inner: T, enabled: bool) -> Self {
        HeaderCase { inner, enabled }
    }
}

/// `buf` with every [`HYPER`] spelled as [`RFC`], or `None` when it holds none.
fn respelled(buf: &[u8]) -> Option<Vec<u8>> {
    let first = buf.windows(HYPER.len()).position(|w| w == HYPER)?;
    let mut out = buf.to_vec();
    let mut at = first;
    while let Some(p) = out[at..].windows(HYPER.len()).position(|w| w == HYPER) {
        out[at + p..at + p + RFC.len()].copy_from_slice(RFC);
        at += p + RFC.len();
    }
    Some(out)
}

impl<T: AsyncRead + Unpin> AsyncRead for HeaderCase<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeaderCase<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.enabled.then(|| respelled(buf)).flatten() {
            Some(fixed) => Pin::new(&mut self.inner).poll_write(cx, &fixed),
            None => Pin::new(&mut self.inner).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.enabled {
            let fixed: Vec<Option<Vec<u8>>> = bufs.iter().map(|b| respelled(b)).collect();
            if fixed.iter().any(Option::is_some) {
                let slices: Vec<IoSlice<'_>> = bufs
                    .iter()
                    .zip(&fixed)
                    .map(|(b, f)| match f {
                        Some(f) => IoSlice::new(f),
                        None => IoSlice::new(b),
                    })
                    .collect();
                return Pin::new(&mut self.inner).poll_write_vectored(cx, &slices);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_challenge_header_is_respelled() {
        let head = b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\nWww-Authenticate: Basic realm=\"x\"\r\n\r\n";
        let fixed = respelled(head).expect("respelled");
        assert_eq!(fixed.len(), head.len());
        assert!(fixed.windows(RFC.len()).any(|w| w == RFC));
        assert!(!fixed.windows(HYPER.len()).any(|w| w == HYPER));
        assert!(fixed.starts_with(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain\r\n"));
        assert!(respelled(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").is_none());
    }
}
