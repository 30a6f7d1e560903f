//! TLS 1.3 over a tunnel's TCP connection, shared by the tunnel's reader thread and whoever
//! writes (the writer thread, or an application thread's non-blocking send).
//!
//! One `rustls::Connection` behind a mutex that is **never held during a socket call**: if a
//! reader blocked in `recv` (or a writer in `send`) while holding it, both ends writing hard
//! while their readers wait for the lock would stop each other for good. So:
//! - writing encrypts under the lock into `tx` (a ciphertext buffer), releases it, then
//!   writes `tx` to the socket. Writes are serialised by the tunnel's `tx` lock (and the
//!   handshake is single-threaded), so ciphertext leaves in the order it was made. Ciphertext
//!   a non-blocking send leaves behind stays in `tx` and goes out first next time
//!   ([`TlsWire::has_unsent`] tells the caller to wake the tunnel's writer for it);
//! - reading receives ciphertext into `rx` (the reader's) without the lock, then under it
//!   hands it to rustls, decrypts and takes plaintext; what rustls did not take yet stays in
//!   `rx`. A record that fails authentication is an `InvalidData` error carrying an mtmux
//!   error ("TLS: ..."): the tunnel dies and its frames are re-sent on the others. Anything
//!   rustls wants to send because of what it read (alerts, key updates) goes out with the next
//!   write; writers ping at least every keepalive interval.

use super::{Refused, Wire};
use crate::error::{Error, Result};
use crate::ffi::sys;
use crate::proto::handshake::{Reply, COMMON_LEN, EXT_LEN, MAGIC};
use crate::tls::{describe, Peer, TlsConfig};
use parking_lot::Mutex;
use rustls::{ClientConnection, Connection, ServerConnection};
use std::io::{self, BufRead, IoSlice, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Ciphertext received per `recv`, at most.
const RX_CHUNK: usize = 64 * 1024;
/// A `tx` buffer larger than this is given back once empty (a burst's worth is kept).
const TX_KEEP: usize = 1 << 20;

pub(crate) struct TlsWire {
    pub(super) sock: TcpStream,
    /// Never held during a socket call (see the module doc).
    conn: Mutex<Connection>,
    /// Ciphertext received and not yet taken by rustls. Only the reader locks it.
    rx: Mutex<Rx>,
    /// Ciphertext made and not yet written. Only writers lock it (one at a time anyway).
    tx: Mutex<Tx>,
    /// Who is at the other end (for messages).
    peer: Peer,
}

#[derive(Default)]
struct Rx {
    buf: Vec<u8>,
    start: usize,
}

#[derive(Default)]
struct Tx {
    buf: Vec<u8>,
    sent: usize,
}

/// Every TLS byte leaves through here (`MSG_NOSIGNAL`; without blocking when `nonblocking`).
/// Not inlined: `tests/c/valgrind.supp` names it (valgrind cannot follow ring's AES-GCM
/// assembly and takes the ciphertext it computes for uninitialised bytes).
#[inline(never)]
fn send_ciphertext(sock: &TcpStream, buf: &[u8], nonblocking: bool) -> io::Result<usize> {
    sys::send_vectored(sock, &[IoSlice::new(buf)], nonblocking)
}

impl Tx {
    fn unsent(&self) -> bool {
        self.sent < self.buf.len()
    }

    /// Write what is unsent (with `MSG_NOSIGNAL`); `nonblocking`: until the socket is full
    /// (then `WouldBlock`, the rest kept).
    fn flush(&mut self, sock: &TcpStream, nonblocking: bool) -> io::Result<()> {
        while self.unsent() {
            match send_ciphertext(sock, &self.buf[self.sent..], nonblocking) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.sent = 0;
        if self.buf.capacity() > TX_KEEP {
            self.buf.shrink_to(TX_KEEP);
        }
        Ok(())
    }
}

impl TlsWire {
    fn new(sock: TcpStream, mut conn: Connection, peer: Peer) -> TlsWire {
        // Writers encrypt whole batches at once; the ciphertext waits in `tx`, not in rustls.
        conn.set_buffer_limit(None);
        TlsWire { sock, conn: Mutex::new(conn), rx: Mutex::default(), tx: Mutex::default(), peer }
    }

    /// The error for a connection rustls gave up on.
    fn failed(&self, e: &rustls::Error) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, describe(self.peer, e))
    }

    /// Encrypt `bufs` (and anything rustls has to send) into `tx`. Returns the plaintext
    /// bytes taken: all of them.
    fn seal(&self, tx: &mut Tx, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total = bufs.iter().map(|b| b.len()).sum();
        let mut c = self.conn.lock();
        let mut owned: Vec<IoSlice<'_>> = bufs.to_vec();
        let mut rest = &mut owned[..];
        while !rest.is_empty() {
            match c.writer().write_vectored(rest)? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => IoSlice::advance_slices(&mut rest, n),
            }
        }
        while c.wants_write() {
            c.write_tls(&mut tx.buf)?;
        }
        Ok(total)
    }

    pub(super) fn send_vectored(&self, bufs: &[IoSlice<'_>], nonblocking: bool) -> io::Result<usize> {
        let mut tx = self.tx.lock();
        if nonblocking {
            // Take the bytes only when the socket takes something now: like a plain send,
            // a full tunnel is left for another one.
            match tx.flush(&self.sock, true) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                r => r?,
            }
            if !sys::wait_writable(&self.sock, Duration::ZERO)? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        let n = self.seal(&mut tx, bufs)?;
        match tx.flush(&self.sock, nonblocking) {
            Err(e) if nonblocking && e.kind() == io::ErrorKind::WouldBlock => Ok(n),
            r => r.map(|()| n),
        }
    }

    pub(super) fn write_all_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<()> {
        let mut tx = self.tx.lock();
        self.seal(&mut tx, bufs)?;
        tx.flush(&self.sock, false)
    }

    pub(super) fn has_unsent(&self) -> bool {
        self.tx.lock().unsent()
    }

    pub(super) fn send_close_notify(&self) -> io::Result<()> {
        let mut tx = self.tx.lock();
        self.conn.lock().send_close_notify();
        self.seal(&mut tx, &[])?;
        tx.flush(&self.sock, false)
    }

    /// Hand plaintext to `take` (which returns how much of it it used), receiving and
    /// decrypting more when none is ready. `Ok(0)`: the peer closed cleanly. `once`: after a
    /// receive that completed no record, return `Interrupted` instead of waiting again.
    fn read_with(&self, once: bool, mut take: impl FnMut(&[u8]) -> usize) -> io::Result<usize> {
        let mut rx = self.rx.lock();
        let mut received = false;
        loop {
            {
                let mut c = self.conn.lock();
                loop {
                    let mut r = c.reader();
                    match r.fill_buf() {
                        Ok([]) => return Ok(0),
                        Ok(plain) => {
                            let n = take(plain);
                            r.consume(n);
                            return Ok(n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                            let why = "TLS: the connection ended without a close_notify (cut in transit, or \
                                       its other end stopped without closing)";
                            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, why));
                        }
                        Err(e) => return Err(e),
                    }
                    if rx.start == rx.buf.len() {
                        break;
                    }
                    let mut pending = &rx.buf[rx.start..];
                    let n = c.read_tls(&mut pending)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "TLS: the record layer stalled",
                        ));
                    }
                    rx.start += n;
                    if let Err(e) = c.process_new_packets() {
                        return Err(self.failed(&e));
                    }
                }
            }
            if once && received {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let rx = &mut *rx;
            rx.buf.drain(..rx.start);
            rx.start = 0;
            rx.buf.reserve(RX_CHUNK);
            if sys::read_into_spare(&self.sock, &mut rx.buf, RX_CHUNK)? == 0 {
                // The TCP end: rustls says whether a close_notify came before it.
                let mut c = self.conn.lock();
                c.read_tls(&mut io::empty())?;
                if let Err(e) = c.process_new_packets() {
                    return Err(self.failed(&e));
                }
            }
            received = true;
        }
    }

    pub(super) fn read_into_spare(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        let want = max.min(buf.capacity() - buf.len());
        if want == 0 {
            return Ok(0);
        }
        self.read_with(false, |plain| {
            let n = plain.len().min(want);
            buf.extend_from_slice(&plain[..n]);
            n
        })
    }

    pub(super) fn read(&self, dst: &mut [u8]) -> io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        self.read_with(true, |plain| {
            let n = plain.len().min(dst.len());
            dst[..n].copy_from_slice(&plain[..n]);
            n
        })
    }
}

/// Time left until `deadline`, or `TimedOut`.
fn left(deadline: Instant) -> Result<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        return Err(Error::TimedOut);
    }
    Ok(d)
}

/// Writes to a socket with `MSG_NOSIGNAL` (a C program linking us must not die of SIGPIPE).
struct NoSigPipe<'a>(&'a TcpStream);

impl Write for NoSigPipe<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        send_ciphertext(self.0, buf, false)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Write everything rustls has to send, by `deadline`.
fn flush_handshake(sock: &TcpStream, conn: &mut Connection, deadline: Instant) -> Result<()> {
    while conn.wants_write() {
        sock.set_write_timeout(Some(left(deadline)?))?;
        match conn.write_tls(&mut NoSigPipe(sock)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(Error::TimedOut)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Run the TLS handshake on `sock` by `deadline` (every wait re-armed from it, so a peer
/// that sends byte by byte gains nothing).
fn handshake(sock: &TcpStream, conn: &mut Connection, deadline: Instant, peer: Peer) -> Result<()> {
    let mut first = true;
    loop {
        flush_handshake(sock, conn, deadline)?;
        if !conn.is_handshaking() {
            return Ok(());
        }
        sock.set_read_timeout(Some(left(deadline)?))?;
        if std::mem::take(&mut first) && peer == Peer::Server {
            // A plain mtmux server answers our ClientHello with a plain refusal.
            let mut b = [0u8; 1];
            if matches!(sock.peek(&mut b), Ok(1)) && b[0] == MAGIC[0] {
                return Err(plain_refusal(sock, deadline));
            }
        }
        let mut r: &TcpStream = sock;
        match conn.read_tls(&mut r) {
            Ok(0) => {
                return Err(Error::Protocol(format!(
                    "TLS: the {} closed the connection during the TLS handshake",
                    if peer == Peer::Server { "server" } else { "client" }
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(Error::TimedOut)
            }
            Err(e) => return Err(e.into()),
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the peer why (the alert rustls queued), as far as it listens.
            let _ = flush_handshake(sock, conn, deadline);
            return Err(describe(peer, &e));
        }
    }
}

/// The client side: TLS handshake with the server at `target`.
pub(super) fn connect(
    sock: TcpStream,
    cfg: &TlsConfig,
    target: SocketAddr,
    deadline: Instant,
) -> Result<Wire> {
    let (config, name) = cfg.rustls_client(target).ok_or_else(|| {
        Error::InvalidConfig("tls: dialing needs a client's TLS configuration (TlsConfig::client)".into())
    })?;
    let c = ClientConnection::new(config, name).map_err(|e| Error::InvalidConfig(format!("TLS: {e}")))?;
    let mut conn = Connection::Client(c);
    handshake(&sock, &mut conn, deadline, Peer::Server)?;
    Ok(Wire::Tls(Box::new(TlsWire::new(sock, conn, Peer::Server))))
}

/// The server side: TLS handshake with the client that connected on `sock`.
pub(super) fn accept(
    sock: TcpStream,
    cfg: &TlsConfig,
    deadline: Instant,
) -> std::result::Result<Wire, Refused> {
    let refused = |error: Error| Refused { error, plain: None };
    // What the client says first tells a plain mtmux client (it can read a plain refusal)
    // from a TLS one.
    let first = left(deadline).and_then(|t| {
        sock.set_read_timeout(Some(t))?;
        let mut b = [0u8; 1];
        loop {
            match sock.peek(&mut b) {
                Ok(0) => return Ok(None),
                Ok(_) => return Ok(Some(b[0])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(Error::TimedOut)
                }
                Err(e) => return Err(e.into()),
            }
        }
    });
    match first {
        Ok(Some(b)) if b == MAGIC[0] => {
            let why =
                "the client does not use TLS (it sent a plain mtmux handshake), and this server requires it";
            return Err(Refused { error: Error::Protocol(why.into()), plain: Some(sock) });
        }
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(refused(Error::Protocol(
                "the client closed the connection before the TLS handshake".into(),
            )))
        }
        Err(Error::TimedOut) => {
            return Err(refused(Error::Protocol("no TLS handshake within the handshake timeout".into())))
        }
        Err(e) => return Err(refused(e)),
    }
    let config = cfg.rustls_server().ok_or_else(|| {
        refused(Error::InvalidConfig("tls: a listener needs a server's TLS configuration".into()))
    })?;
    let c = ServerConnection::new(config).map_err(|e| refused(Error::Protocol(format!("TLS: {e}"))))?;
    let mut conn = Connection::Server(c);
    match handshake(&sock, &mut conn, deadline, Peer::Client) {
        Ok(()) => Ok(Wire::Tls(Box::new(TlsWire::new(sock, conn, Peer::Client)))),
        Err(Error::TimedOut) => {
            Err(refused(Error::Protocol("TLS handshake not complete within the handshake timeout".into())))
        }
        Err(e) => Err(refused(e)),
    }
}

/// The server answered our ClientHello in plain mtmux: its refusal says why (a plain server
/// says it does not use TLS; a busy one, that it is busy).
fn plain_refusal(sock: &TcpStream, deadline: Instant) -> Error {
    let generic = || {
        Error::Refused(
            "the server does not use TLS (it answered in plain mtmux): enable TLS on the server or \
             remove the client's TLS settings"
                .into(),
        )
    };
    let mut r: &TcpStream = sock;
    let mut read = |buf: &mut [u8]| -> Option<()> {
        sock.set_read_timeout(Some(left(deadline).ok()?)).ok()?;
        io::Read::read_exact(&mut r, buf).ok()
    };
    let mut common = [0u8; COMMON_LEN];
    let Some(()) = read(&mut common) else { return generic() };
    let Ok((mut reply, version, trailer)) = Reply::decode_common(&common) else { return generic() };
    if version == 2 {
        let mut ext = [0u8; EXT_LEN];
        let Some(()) = read(&mut ext) else { return generic() };
        reply.set_ext(&ext);
    }
    reply.trailer = vec![0u8; trailer];
    let Some(()) = read(&mut reply.trailer) else { return generic() };
    Error::Refused(format!("{:?}: {} (the server answered without TLS)", reply.status, reply.reason()))
}
