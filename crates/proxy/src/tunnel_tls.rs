//! The server side of TLS for TCP tunnels and HTTP connections (those of a listener with
//! one server block): a stream on rustls' unbuffered connection API that holds **no
//! buffer while its connection is idle**.
//!
//! tokio-rustls keeps rustls' own read buffer (4 KiB) for a connection's whole life, and
//! for a fleet of mostly idle devices that buffer is the largest part of what a tunnel
//! costs. Here the ciphertext read from the socket, the ciphertext waiting to be sent and
//! decrypted bytes not yet taken are each kept in a buffer borrowed from the tunnel's
//! per-thread pool (`Loan`) only while they hold bytes: an idle tunnel keeps the TLS
//! session's keys and state and nothing else.
//!
//! The stream does what `tokio_rustls::server::TlsStream` does for the tunnel's copy loop:
//! `accept` runs the handshake (sending rustls' alert when it fails, so a refused client
//! is told why), reads return decrypted bytes and `Ok(0)` at the peer's close_notify or
//! FIN, writes encrypt, and shutdown sends close_notify and then FIN (half-close).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use rustls::pki_types::CertificateDer;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{ProtocolVersion, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tunnel_buf::{HasSocket, Loan, BUF};
use crate::woken::Gate;

/// The largest amount of ciphertext kept while waiting for the rest of a message: rustls
/// accepts handshake messages (a client's certificate chain) of up to 64 KiB, spread over
/// records.
const MAX_INCOMING: usize = 4 * BUF;

/// What a pass over the received records ended with.
enum Driven {
    /// The handshake needs more bytes from the peer.
    NeedData,
    /// Application data may be sent (and whatever was received is processed).
    Ready,
    /// Both sides have sent close_notify.
    Closed,
}

/// What to do once application data may be sent.
enum Op<'d> {
    Look,
    Encrypt(&'d [u8]),
    CloseNotify,
}

/// A server-side TLS stream over TCP that borrows its buffers only while bytes move.
pub(crate) struct ServerTls {
    tcp: TcpStream,
    /// Reads of `tcp` are tried only once tokio woke the last one that found nothing.
    readable: Gate,
    conn: UnbufferedServerConnection,
    /// Ciphertext read and not yet processed: `incoming[in_start..in_end]`. Processed
    /// records advance `in_start`; the rest moves to the front only before the next read
    /// (moving it after every record made many small records cost quadratic copying).
    incoming: Option<Loan>,
    in_start: usize,
    in_end: usize,
    /// Ciphertext to send: `out[out_pos..out_len]`.
    out: Option<Loan>,
    out_pos: usize,
    out_len: usize,
    /// Decrypted bytes a read could not take yet: `plain[plain_pos..]` (usually empty).
    plain: Vec<u8>,
    plain_pos: usize,
    /// The peer sent close_notify, or its FIN.
    peer_done: bool,
    sent_close: bool,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Runs the server handshake on `tcp` with `config`. A failed handshake has sent rustls'
/// alert (as far as the socket takes it) before the error is returned.
pub(crate) async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<ServerTls> {
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    let mut s = ServerTls {
        tcp,
        readable: Gate::new(),
        conn,
        incoming: None,
        in_start: 0,
        in_end: 0,
        out: None,
        out_pos: 0,
        out_len: 0,
        plain: Vec::new(),
        plain_pos: 0,
        peer_done: false,
        sent_close: false,
    };
    loop {
        let driven = match s.drive(Op::Look, None) {
            Ok(d) => d,
            Err(e) => {
                // rustls queued its alert: one more pass encodes it; send what the socket
                // takes.
                let _ = s.drive(Op::Look, None);
                let _ = poll_fn(|cx| s.poll_send(cx)).await;
                return Err(e);
            }
        };
        poll_fn(|cx| s.poll_send(cx)).await?;
        match driven {
            Driven::Ready if !s.conn.is_handshaking() => return Ok(s),
            Driven::Closed => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection during the handshake",
                ))
            }
            Driven::NeedData | Driven::Ready => {
                if poll_fn(|cx| s.poll_fill(cx)).await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection during the handshake",
                    ));
                }
            }
        }
    }
}

/// Has `write` put bytes at the end of the pending ciphertext `out[..len]` (taking a buffer
/// on loan if there is none), growing the buffer when rustls says how much room it needs.
fn put<E: std::fmt::Display>(
    out: &mut Option<Loan>,
    len: &mut usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    room_needed: impl Fn(&E) -> Option<usize>,
) -> io::Result<()> {
    let o = out.get_or_insert_with(Loan::take);
    loop {
        match write(&mut o.buf()[*len..]) {
            Ok(n) => {
                *len += n;
                return Ok(());
            }
            Err(e) => match room_needed(&e) {
                Some(r) => o.grow(*len + r),
                None => return Err(invalid(e)),
            },
        }
    }
}

fn encrypt_room(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(i) => Some(i.required_size),
        _ => None,
    }
}

impl ServerTls {
    /// The client's certificate chain, leaf first, as verified in the handshake.
    pub(crate) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    pub(crate) fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// What was negotiated (ALPN, cipher suite, resumption) and the peer's certificates.
    pub(crate) fn common(&self) -> &rustls::CommonState {
        &self.conn
    }

    /// Processes every complete record received, encodes what rustls has to send, and
    /// then does `op` once application data may be sent. Decrypted bytes go to `sink`
    /// while it has room, then to `plain`.
    fn drive(&mut self, mut op: Op<'_>, mut sink: Option<&mut ReadBuf<'_>>) -> io::Result<Driven> {
        let Self {
            conn,
            incoming,
            in_start,
            in_end,
            out,
            out_len,
            plain,
            peer_done,
            ..
        } = self;
        loop {
            let received: &mut [u8] = match incoming.as_mut() {
                Some(l) => &mut l.buf()[*in_start..*in_end],
                None => &mut [],
            };
            let UnbufferedStatus { discard, state } = conn.process_tls_records(received);
            let mut result = None;
            match state.map_err(invalid)? {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        let payload = record.map_err(invalid)?.payload;
                        let direct = match sink.as_deref_mut() {
                            Some(rb) if plain.is_empty() => rb.remaining().min(payload.len()),
                            _ => 0,
                        };
                        if let Some(rb) = sink.as_deref_mut() {
                            rb.put_slice(&payload[..direct]);
                        }
                        plain.extend_from_slice(&payload[direct..]);
                    }
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    put(
                        out,
                        out_len,
                        |b| e.encode(b),
                        |e| match e {
                            EncodeError::InsufficientSize(i) => Some(i.required_size),
                            _ => None,
                        },
                    )?;
                }
                // Sent by the caller, in order, from `out`.
                ConnectionState::TransmitTlsData(t) => t.done(),
                ConnectionState::BlockedHandshake => result = Some(Driven::NeedData),
                ConnectionState::PeerClosed => *peer_done = true,
                ConnectionState::Closed => result = Some(Driven::Closed),
                ConnectionState::WriteTraffic(mut w) => {
                    match std::mem::replace(&mut op, Op::Look) {
                        Op::Look => {}
                        Op::Encrypt(data) => {
                            put(out, out_len, |b| w.encrypt(data, b), encrypt_room)?
                        }
                        Op::CloseNotify => {
                            put(out, out_len, |b| w.queue_close_notify(b), encrypt_room)?
                        }
                    }
                    result = Some(Driven::Ready);
                }
                // Early data is never enabled for tunnels.
                _ => return Err(invalid("unexpected TLS early data")),
            }
            *in_start += discard;
            if *in_start == *in_end {
                *incoming = None;
                *in_start = 0;
                *in_end = 0;
            }
            if let Some(r) = result {
                return Ok(r);
            }
        }
    }

    /// Reads what the socket has into `incoming`: `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if !self.readable.open(cx) {
            return Poll::Pending;
        }
        let inc = self.incoming.get_or_insert_with(Loan::take);
        if self.in_start > 0 {
            inc.buf().copy_within(self.in_start..self.in_end, 0);
            self.in_end -= self.in_start;
            self.in_start = 0;
        }
        if self.in_end == inc.buf().len() {
            if self.in_end >= MAX_INCOMING {
                return Poll::Ready(Err(invalid("a TLS message larger than 256 KiB")));
            }
            inc.grow(self.in_end * 2);
        }
        let mut rb = ReadBuf::new(&mut inc.buf()[self.in_end..]);
        let waker = self.readable.waker();
        let r = Pin::new(&mut self.tcp).poll_read(&mut Context::from_waker(&waker), &mut rb);
        if r.is_ready() {
            // tokio wakes nobody for a socket that stays readable: the next try goes through.
            self.readable.rearm();
        }
        let n = rb.filled().len();
        self.in_end += n;
        if self.in_end == 0 {
            self.incoming = None;
        }
        match r {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(n)),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Writes the pending ciphertext to the socket; the buffer goes back once it is sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(o) = self.out.as_mut() {
            if self.out_pos == self.out_len {
                self.out = None;
                self.out_pos = 0;
                self.out_len = 0;
                break;
            }
            let n = ready!(
                Pin::new(&mut self.tcp).poll_write(cx, &o.buf()[self.out_pos..self.out_len])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl HasSocket for ServerTls {
    fn socket(&self) -> &TcpStream {
        &self.tcp
    }
}

impl AsyncRead for ServerTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        rb: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.plain_pos < this.plain.len() {
                let n = rb.remaining().min(this.plain.len() - this.plain_pos);
                rb.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_done {
                return Poll::Ready(Ok(()));
            }
            let before = rb.filled().len();
            let n = ready!(this.poll_fill(cx))?;
            if n == 0 {
                this.peer_done = true;
                continue;
            }
            if let Driven::Closed = this.drive(Op::Look, Some(&mut *rb))? {
                this.peer_done = true;
            }
            // Answers rustls may owe (a key update): sent now if the socket takes them,
            // else with the next write.
            if this.out.is_some() {
                if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                    return Poll::Ready(Err(e));
                }
            }
            if rb.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl AsyncWrite for ServerTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // At most one buffer of ciphertext waits: send it before taking more.
        ready!(this.poll_send(cx))?;
        let n = data.len().min(BUF);
        match this.drive(Op::Encrypt(&data[..n]), None)? {
            Driven::Ready => {}
            Driven::Closed | Driven::NeedData => {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
            }
        }
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.sent_close {
            this.sent_close = true;
            this.drive(Op::CloseNotify, None)?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
