//! Where request heads begin and end on an HTTP connection, seen from the bytes the client
//! sends, for header deadlines (a trickled request head is cut off; bytes that complete no
//! request reset nothing). Shared by the gateway (`mtlsgate serve`) and the CA server
//! (`mtlsgate ca serve`); each keeps its own timers behind [`HeadClock`]. Owns no timer,
//! no socket and no HTTP parsing beyond HTTP/2's 9-byte frame headers.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The timers a watched connection reports to.
pub trait HeadClock {
    /// Bytes of a request head arrived: start the header deadline unless it runs already.
    fn head_started(&self);
    /// A request head is complete (for HTTP/2: its header block ended).
    fn head_done(&self);
    /// Whether requests are in flight (on HTTP/1, bytes arriving then are a body or the
    /// next pipelined request, not a new head to time).
    fn requests_in_flight(&self) -> bool;
}

/// A client's stream, watched: bytes that begin a request head start the header deadline
/// (on HTTP/2 the frames are followed, so only HEADERS and CONTINUATION count).
pub struct Watched<T, C> {
    inner: T,
    clock: Arc<C>,
    h2: Option<H2Frames>,
}

impl<T, C> Watched<T, C> {
    /// Watches `inner`, speaking HTTP/2 when `h2` (from ALPN), else HTTP/1.
    pub fn new(inner: T, clock: Arc<C>, h2: bool) -> Self {
        Watched {
            inner,
            clock,
            h2: h2.then(H2Frames::default),
        }
    }
}

impl<T: AsyncRead + Unpin, C: HeadClock> AsyncRead for Watched<T, C> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let this = &mut *self;
            match &mut this.h2 {
                Some(frames) => frames.feed(&buf.filled()[before..], &*this.clock),
                None => {
                    if !this.clock.requests_in_flight() {
                        this.clock.head_started();
                    }
                }
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin, C: Unpin> AsyncWrite for Watched<T, C> {
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

/// Follows HTTP/2 framing on the bytes a client sends (RFC 9113 §4.1: a 9-byte header —
/// 24-bit length, type, flags, stream — then the payload), to see when a header block
/// begins and ends. Cost: a few comparisons per frame, nothing per payload byte.
struct H2Frames {
    /// Bytes of the client connection preface still to skip.
    preface_left: usize,
    header: [u8; 9],
    have: usize,
    payload_left: usize,
    /// Inside a header block (HEADERS without END_HEADERS, CONTINUATION to follow).
    in_block: bool,
    /// The current frame's payload ends the header block.
    ends_block: bool,
}

impl Default for H2Frames {
    fn default() -> Self {
        H2Frames {
            preface_left: 24,
            header: [0; 9],
            have: 0,
            payload_left: 0,
            in_block: false,
            ends_block: false,
        }
    }
}

const H2_HEADERS: u8 = 0x1;
const H2_CONTINUATION: u8 = 0x9;
const H2_END_HEADERS: u8 = 0x4;

impl H2Frames {
    /// Takes the next bytes the client sent.
    fn feed(&mut self, mut data: &[u8], clock: &impl HeadClock) {
        while !data.is_empty() {
            if self.preface_left > 0 {
                let n = self.preface_left.min(data.len());
                self.preface_left -= n;
                data = &data[n..];
                continue;
            }
            if self.payload_left == 0 {
                // A frame header, perhaps in pieces. Until its type is known it counts
                // as the start of a request head, so a trickled frame header is timed too.
                if self.have == 0 {
                    clock.head_started();
                }
                let n = (9 - self.have).min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have < 9 {
                    continue;
                }
                self.have = 0;
                let h = &self.header;
                self.payload_left =
                    (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
                let (kind, flags) = (h[3], h[4]);
                if kind == H2_HEADERS || kind == H2_CONTINUATION {
                    self.in_block = true;
                    self.ends_block = flags & H2_END_HEADERS != 0;
                } else {
                    self.ends_block = false;
                    if !self.in_block {
                        clock.head_done();
                    }
                }
                if self.payload_left == 0 {
                    self.frame_end(clock);
                }
                continue;
            }
            let n = self.payload_left.min(data.len());
            self.payload_left -= n;
            data = &data[n..];
            if self.payload_left == 0 {
                self.frame_end(clock);
            }
        }
    }

    fn frame_end(&mut self, clock: &impl HeadClock) {
        if self.ends_block {
            self.in_block = false;
            self.ends_block = false;
            clock.head_done();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Records whether a head is being timed.
    #[derive(Default)]
    struct Timing(Cell<bool>);

    impl HeadClock for Timing {
        fn head_started(&self) {
            self.0.set(true);
        }
        fn head_done(&self) {
            self.0.set(false);
        }
        fn requests_in_flight(&self) -> bool {
            false
        }
    }

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let n = payload.len();
        let mut f = vec![
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            kind,
            flags,
            0,
            0,
            0,
            1,
        ];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_trickled_headers_frame_keeps_the_header_deadline_running() {
        let clock = Timing::default();
        let mut f = H2Frames::default();
        f.feed(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &clock);
        assert!(!clock.0.get(), "the preface starts nothing");
        f.feed(&frame(0x4, 0, &[0; 6]), &clock); // SETTINGS
        assert!(!clock.0.get(), "SETTINGS is no request");
        let headers = frame(H2_HEADERS, H2_END_HEADERS, &[0x82; 20]);
        for b in &headers[..headers.len() - 1] {
            f.feed(std::slice::from_ref(b), &clock);
            assert!(clock.0.get());
        }
        f.feed(&headers[headers.len() - 1..], &clock);
        assert!(!clock.0.get(), "END_HEADERS ends it");
    }

    #[test]
    fn continuation_frames_belong_to_the_header_block() {
        let clock = Timing::default();
        let mut f = H2Frames {
            preface_left: 0,
            ..H2Frames::default()
        };
        f.feed(&frame(H2_HEADERS, 0, &[1; 5]), &clock);
        assert!(clock.0.get());
        f.feed(&frame(0x8, 0, &[0; 4]), &clock); // WINDOW_UPDATE in between (a protocol error, but no reset)
        assert!(clock.0.get());
        f.feed(&frame(H2_CONTINUATION, H2_END_HEADERS, &[1; 5]), &clock);
        assert!(!clock.0.get());
    }
}
