//! The byte buffers of TCP tunnels, on loan: a per-thread pool of `BUF`-byte buffers that
//! a transfer (`tunnel`) or a TLS record (`tunnel_tls`) takes only while bytes move and
//! gives back at once, so an idle tunnel holds none; and [`HasSocket`], the socket under a
//! stream, to wait for readability without touching (or buffering for) the stream.

use std::cell::RefCell;

use tokio::net::TcpStream;

/// Size of a copy buffer: four TLS records' worth of plaintext. One record's worth (16 KiB)
/// made a bulk stream cost four reads and four writes where nginx makes one of each:
/// 64 KiB took one iperf3 stream through a tunnel from 0.80× to 1.12–1.15× nginx's rate
/// (bench/run --part tunnels). Idle tunnels hold none (see the module documentation).
pub(crate) const BUF: usize = 64 * 1024;
/// Buffers kept per thread for reuse (at most 2 MiB per thread): enough for the transfers
/// that run at once on a busy thread, so that new connections rarely allocate one.
const POOL_MAX: usize = 32;

thread_local! {
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `BUF` bytes on loan from the thread's pool, returned when dropped (a buffer
/// grown past `BUF` is freed instead).
pub(crate) struct Loan(Option<Vec<u8>>);

impl Loan {
    pub(crate) fn take() -> Loan {
        let b = POOL
            .with(|p| p.borrow_mut().pop())
            .unwrap_or_else(|| vec![0u8; BUF]);
        Loan(Some(b))
    }

    pub(crate) fn buf(&mut self) -> &mut [u8] {
        self.0.as_deref_mut().unwrap_or_default()
    }

    /// Makes the buffer `len` bytes long, keeping its contents.
    pub(crate) fn grow(&mut self, len: usize) {
        if let Some(b) = self.0.as_mut() {
            b.resize(len, 0);
        }
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        if let Some(b) = self.0.take().filter(|b| b.len() == BUF) {
            POOL.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOL_MAX {
                    p.push(b);
                }
            });
        }
    }
}

/// Gives access to the TCP socket under a stream, to wait for readability without
/// touching (or buffering for) the stream itself.
pub(crate) trait HasSocket {
    fn socket(&self) -> &TcpStream;
}

impl HasSocket for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl HasSocket for tokio_rustls::client::TlsStream<TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.get_ref().0
    }
}
