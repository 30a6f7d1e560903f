//! The transport under a tunnel: a plain TCP connection, or (feature `tls`) TLS 1.3 over one.
//!
//! Everything the handshake and the session do with a tunnel's connection goes through
//! [`Wire`]: vectored sends (blocking, or non-blocking from application threads), waiting for
//! room, reads into a buffer's spare capacity with the socket's read timeout as a tick, and
//! shutdown. The plain variant makes exactly the system calls the session made on its
//! `TcpStream` before (no copies, no locks); the TLS variant is in [`tls`].
//!
//! `Read` and `Write` on `&Wire` serve the handshakes (they honour the socket's timeouts).

#[cfg(feature = "tls")]
mod tls;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ffi::sys;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A tunnel's connection.
pub(crate) enum Wire {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS 1.3 over TCP.
    #[cfg(feature = "tls")]
    Tls(Box<tls::TlsWire>),
}

/// Why a TLS server refused a connection before the mtmux handshake.
pub(crate) struct Refused {
    /// What went wrong ([`Error::Auth`] for certificate problems).
    pub(crate) error: Error,
    /// The socket, when the peer spoke plain mtmux: it can read a plain refusal.
    pub(crate) plain: Option<TcpStream>,
}

impl Wire {
    /// The client side of a new connection to `target`: TLS when `cfg.tls` says so (its
    /// handshake done by `deadline`), plain otherwise.
    pub(crate) fn client(
        sock: TcpStream,
        cfg: &Config,
        target: SocketAddr,
        deadline: Instant,
    ) -> Result<Wire> {
        #[cfg(feature = "tls")]
        if let Some(t) = &cfg.tls {
            return tls::connect(sock, t, target, deadline);
        }
        let _ = (cfg, target, deadline);
        Ok(Wire::Plain(sock))
    }

    /// The server side of an accepted connection: TLS when `cfg.tls` says so (its handshake
    /// done by `deadline`), plain otherwise.
    pub(crate) fn server(
        sock: TcpStream,
        cfg: &Config,
        deadline: Instant,
    ) -> std::result::Result<Wire, Refused> {
        #[cfg(feature = "tls")]
        if let Some(t) = &cfg.tls {
            return tls::accept(sock, t, deadline);
        }
        let _ = (cfg, deadline);
        Ok(Wire::Plain(sock))
    }

    /// Refuse a configuration whose TLS settings are for the other side: `server` is the side
    /// that uses `cfg`.
    pub(crate) fn check_side(cfg: &Config, server: bool) -> Result<()> {
        #[cfg(feature = "tls")]
        if let Some(t) = &cfg.tls {
            if t.is_server() != server {
                let (need, have) = if server {
                    ("a listener needs a server's TLS configuration (TlsConfig::server)", "a client's")
                } else {
                    ("dialing needs a client's TLS configuration (TlsConfig::client)", "a server's")
                };
                return Err(Error::InvalidConfig(format!("tls: {need}, got {have}")));
            }
        }
        let _ = (cfg, server);
        Ok(())
    }

    /// The TCP socket (options, addresses).
    #[inline]
    pub(crate) fn sock(&self) -> &TcpStream {
        match self {
            Wire::Plain(s) => s,
            #[cfg(feature = "tls")]
            Wire::Tls(t) => &t.sock,
        }
    }

    /// Send `bufs`, `MSG_NOSIGNAL` always, without blocking when `nonblocking`. Returns how
    /// many bytes of `bufs` were taken: with TLS all of them or none (`WouldBlock`); what the
    /// socket did not take of their ciphertext waits inside, see
    /// [`has_unsent`](Wire::has_unsent).
    #[inline]
    pub(crate) fn send_vectored(&self, bufs: &[IoSlice<'_>], nonblocking: bool) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => sys::send_vectored(s, bufs, nonblocking),
            #[cfg(feature = "tls")]
            Wire::Tls(t) => t.send_vectored(bufs, nonblocking),
        }
    }

    /// Write all of `bufs` (blocking), after anything still unsent.
    pub(crate) fn write_all_vectored(&self, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
        match self {
            Wire::Plain(s) => {
                while !bufs.is_empty() {
                    match sys::send_vectored(s, bufs, false) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => IoSlice::advance_slices(&mut bufs, n),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            #[cfg(feature = "tls")]
            Wire::Tls(t) => t.write_all_vectored(bufs),
        }
    }

    /// Whether bytes of an earlier non-blocking send still wait to be written (TLS only: a
    /// plain send hands its rest back to the caller).
    #[inline]
    pub(crate) fn has_unsent(&self) -> bool {
        match self {
            Wire::Plain(_) => false,
            #[cfg(feature = "tls")]
            Wire::Tls(t) => t.has_unsent(),
        }
    }

    /// Wait until the socket has room (see [`sys::wait_writable`]).
    #[inline]
    pub(crate) fn wait_writable(&self, timeout: Duration) -> io::Result<bool> {
        sys::wait_writable(self.sock(), timeout)
    }

    /// Read up to `max` bytes into the spare capacity of `buf`, blocking at most the socket's
    /// read timeout (then `WouldBlock`/`TimedOut`). 0: the peer closed (with TLS: cleanly,
    /// after `close_notify`; a bare TCP end is `UnexpectedEof`).
    #[inline]
    pub(crate) fn read_into_spare(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        match self {
            Wire::Plain(s) => sys::read_into_spare(s, buf, max),
            #[cfg(feature = "tls")]
            Wire::Tls(t) => t.read_into_spare(buf, max),
        }
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock().set_read_timeout(t)
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.sock().set_write_timeout(t)
    }

    /// Shut the socket down at once (no TLS alert: safe from any thread, never blocks).
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.sock().shutdown(how)
    }

    /// End the sending direction cleanly: with TLS a `close_notify` alert first (written
    /// with the socket's write timeout). Only whoever may write (see the tunnel's `tx` lock)
    /// may call this.
    pub(crate) fn close_write(&self) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Wire::Tls(t) = self {
            let _ = t.send_close_notify();
        }
        self.sock().shutdown(Shutdown::Write)
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock().local_addr()
    }

    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock().peer_addr()
    }
}

/// The handshakes' reads (with the socket's read timeout). With TLS, a read that received
/// ciphertext but no whole record yet returns `Interrupted`, so that a caller that re-arms
/// the timeout from its deadline (`read_by`) does so before the next wait.
impl Read for &Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match *self {
            Wire::Plain(s) => {
                let mut s: &TcpStream = s;
                s.read(buf)
            }
            #[cfg(feature = "tls")]
            Wire::Tls(t) => t.read(buf),
        }
    }
}

/// The handshakes' writes (with the socket's write timeout, `MSG_NOSIGNAL`).
impl Write for &Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_vectored(&[IoSlice::new(buf)], false)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl From<TcpStream> for Wire {
    fn from(s: TcpStream) -> Wire {
        Wire::Plain(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn pair() -> (Wire, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        (Wire::Plain(a), l.accept().unwrap().0)
    }

    /// A non-blocking send into a full socket takes part of a frame or nothing; the rest goes
    /// out with the next blocking write, in order.
    #[test]
    fn plain_nonblocking_partial_write_then_blocking_rest() {
        let (w, peer) = pair();
        sys::set_notsent_lowat(w.sock(), 16 * 1024).unwrap();
        let frame: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 7 + i / 251) as u8).collect();
        let mut off = 0;
        // Fill the socket until it takes nothing more (the peer does not read yet).
        loop {
            match w.send_vectored(&[IoSlice::new(&frame[off..])], true) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
            assert!(off < frame.len(), "4 MiB fit in the socket: the test shows nothing");
        }
        assert!(off > 0);
        assert!(!w.has_unsent(), "plain sends hand their rest back");
        assert!(!w.wait_writable(Duration::from_millis(10)).unwrap());
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            (&peer).read_to_end(&mut got).unwrap();
            got
        });
        let mut rest = [IoSlice::new(&frame[off..])];
        w.write_all_vectored(&mut rest).unwrap();
        w.close_write().unwrap();
        assert!(reader.join().unwrap() == frame, "the bytes arrive whole and in order");
    }
}

#[cfg(all(test, feature = "tls"))]
mod tls_tests;
