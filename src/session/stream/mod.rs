//! A stream: one reliable, ordered byte stream of a session, used like `TcpStream`.
//!
//! ```text
//! send side:   Open ──close_write/shutdown(Write)/close──▶ Finished (FIN sent)
//!                │ └─reset (local, by the peer, or a reorder timeout)─▶ Reset
//!                └───session ends────────────────────────────────────▶ Closed
//! receive side: Open ──FIN read──▶ end of stream (reads return 0)
//!                │ ├─shutdown(Read)/close──▶ Closed (reads return 0, data is dropped)
//!                │ └─reset, reorder timeout, protocol violation─▶ Failed(error)
//!                └───session ends before FIN────────────────────▶ Failed(SessionClosed)
//! ```
//!
//! Files: this one holds the state shared with the session's table, the handle and the calls
//! that change a stream's state (close, shutdown, reset); `read` the receive side (reordering,
//! flow-control credit, reads), `write` the send side (credit reservation, writes).

mod read;
mod write;

use super::{Handle, Inner};
use crate::error::{CloseReason, Error, ResetCode, Result};
use crate::proto::frame::{Header, FLAG_FIN, FLAG_OPEN};
use parking_lot::{Condvar, Mutex};
use read::{RecvPhase, RecvState};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// What a tunnel reader (or the session) tells a stream.
pub(crate) enum Inbound {
    /// A DATA frame.
    Data { seq: u32, flags: u16, payload: Vec<u8> },
    /// The stream was reset.
    Reset { code: ResetCode, remote: bool },
    /// The application closed the reading side (wakes a blocked reader).
    Close,
}

/// A peer-opened stream waiting in the accept queue, or the parts of a new local stream.
pub(crate) struct Accepted {
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) rx: super::handoff::Rx<Inbound>,
}

/// Send-side lifecycle (see the module doc).
enum SendPhase {
    Open,
    Finished,
    Reset { code: ResetCode, remote: bool },
    Closed(CloseReason),
}

impl SendPhase {
    /// The error of a write in this phase; `None` while open.
    fn error(&self) -> Option<Error> {
        match self {
            SendPhase::Open => None,
            SendPhase::Finished => Some(Error::WriteClosed),
            SendPhase::Reset { code, remote } => Some(reset_error(*code, *remote)),
            SendPhase::Closed(r) => Some(Error::SessionClosed(r.clone())),
        }
    }
}

/// The error a reset stream reports. A stream the peer turned away at its stream limit
/// (RESET code TooManyStreams) reports [`Error::TooManyStreams`], as opening one beyond the
/// local limit does.
fn reset_error(code: ResetCode, remote: bool) -> Error {
    match (code, remote) {
        (ResetCode::TooManyStreams, true) => Error::TooManyStreams,
        _ => Error::StreamReset { code, remote },
    }
}

struct SendState {
    /// Credit granted by the peer.
    window: crate::core::window::SendWindow,
    /// Sequence number of the next frame.
    next_seq: u32,
    phase: SendPhase,
}

/// The part of a stream the session's table shares with the application's handle.
pub(crate) struct StreamShared {
    pub(crate) id: u32,
    /// Opened by this side.
    local: bool,
    send: Mutex<SendState>,
    /// Writers wait here for credit; notified by window updates, resets and session end.
    send_cv: Condvar,
    /// Writes so far: a read that follows a write waits for an answer, and may spin for it
    /// (see `handoff`).
    writes: AtomicU32,
}

impl StreamShared {
    pub(crate) fn new(id: u32, local: bool, window: u64) -> StreamShared {
        StreamShared {
            id,
            local,
            send: Mutex::new(SendState {
                window: crate::core::window::SendWindow::new(window),
                next_seq: 0,
                phase: SendPhase::Open,
            }),
            send_cv: Condvar::new(),
            writes: AtomicU32::new(0),
        }
    }

    pub(crate) fn raise_window(&self, limit: u64) {
        if self.send.lock().window.raise(limit) {
            self.send_cv.notify_all();
        }
    }

    pub(crate) fn reset(&self, code: ResetCode, remote: bool) {
        let mut s = self.send.lock();
        if matches!(s.phase, SendPhase::Open | SendPhase::Finished) {
            s.phase = SendPhase::Reset { code, remote };
        }
        drop(s);
        self.send_cv.notify_all();
    }

    pub(crate) fn session_closed(&self, reason: &CloseReason) {
        let mut s = self.send.lock();
        if matches!(s.phase, SendPhase::Open) {
            s.phase = SendPhase::Closed(reason.clone());
        }
        drop(s);
        self.send_cv.notify_all();
    }
}

/// A bidirectional byte stream of a [`Session`](crate::Session), used like
/// [`TcpStream`](std::net::TcpStream).
///
/// # Handles
/// `Stream` implements [`Read`] and [`Write`], and so does `&Stream`, so one thread may read
/// while another writes. [`try_clone`](Stream::try_clone) gives another handle to the same
/// stream (as `TcpStream::try_clone` does), which can be moved to another thread: a proxy
/// copies each direction on its own thread with its own handle, no `Arc` needed. Calls act on
/// the stream, not on the handle: [`close`](Stream::close), [`shutdown`](Stream::shutdown) and
/// [`reset`](Stream::reset) through any handle affect every handle, and the timeouts are shared
/// (as a socket's are by `TcpStream` clones).
///
/// # Dropping
/// Dropping a handle while another handle of the stream lives does nothing. Dropping the last
/// one closes the stream as [`close`](Stream::close) does, without blocking: the peer reads
/// everything written so far, then end of stream; if data the peer sent was left unread here
/// while the peer is still sending, the stream is reset instead (code
/// [`StreamClosed`](ResetCode::StreamClosed): the peer's writes fail with `BrokenPipe`), as
/// TCP's close with unread data does. When the last `Stream` and [`Session`](crate::Session)
/// handles of a session are gone, the session closes gracefully too.
///
/// # When the session ends
/// When the peer closes its session (or its streams' handles are all dropped there), the
/// peer's side of every open stream ends without a FIN: reads here first return the data that
/// had arrived, then fail with [`Error::SessionClosed`]`(`[`CloseReason::Peer`]`)`
/// (`io::ErrorKind::ConnectionAborted`), so a stream cut short is never mistaken for a
/// complete one; a stream whose FIN had arrived reads end of stream (0) as usual. Writes fail
/// with the same error once the session has ended here, which is as soon as the peer's tunnels
/// have closed; until then they may still be accepted, and are dropped by the peer (as writes to
/// a TCP socket whose peer has closed succeed until its RST comes back). The same holds for
/// the other ends of a session ([`CloseReason`]): a local [`Session::close`](crate::Session::close)
/// fails blocked and later calls at once. [`Session::close_reason`](crate::Session::close_reason)
/// gives the reason from the moment the first call fails.
pub struct Stream {
    core: Arc<Core>,
}

/// One stream, shared by all its handles; dropping it (with the last handle) closes it.
struct Core {
    shared: Arc<StreamShared>,
    recv: Mutex<RecvState>,
    session: Arc<Handle>,
    /// Read timeout in nanoseconds, 0 for none.
    read_timeout: AtomicU64,
    /// Write timeout in nanoseconds, 0 for none.
    write_timeout: AtomicU64,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.core.shared.id).finish()
    }
}

fn load_timeout(a: &AtomicU64) -> Option<Duration> {
    match a.load(Relaxed) {
        0 => None,
        ns => Some(Duration::from_nanos(ns)),
    }
}

/// Store a timeout; `Some(ZERO)` is refused as `TcpStream::set_read_timeout` refuses it.
fn store_timeout(a: &AtomicU64, t: Option<Duration>) -> io::Result<()> {
    match t {
        Some(d) if d.is_zero() => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a zero timeout is not allowed; use None for no timeout",
        )),
        Some(d) => {
            a.store(d.as_nanos().min(u64::MAX as u128).max(1) as u64, Relaxed);
            Ok(())
        }
        None => {
            a.store(0, Relaxed);
            Ok(())
        }
    }
}

impl Stream {
    pub(crate) fn new(session: Arc<Handle>, a: Accepted) -> Stream {
        let cfg = session.inner.cfg();
        let recv = RecvState::new(a.rx, cfg.stream_window as u64, cfg.max_stream_window as u64);
        Stream {
            core: Arc::new(Core {
                shared: a.shared,
                recv: Mutex::new(recv),
                session,
                read_timeout: AtomicU64::new(0),
                write_timeout: AtomicU64::new(0),
            }),
        }
    }

    /// The stream id (odd: opened by the client, even: by the server).
    pub fn id(&self) -> u32 {
        self.core.shared.id
    }

    /// The session this stream belongs to.
    pub fn session(&self) -> crate::Session {
        crate::Session { h: self.core.session.clone() }
    }

    /// Another handle to the same stream, like `TcpStream::try_clone`: reads and writes
    /// through either handle go to the same stream, closing or shutting down through either
    /// affects both, and the stream is closed when the last handle is dropped (see
    /// [Dropping](Stream#dropping)). Never fails today; the `io::Result` keeps the signature
    /// of `TcpStream`'s.
    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(Stream { core: self.core.clone() })
    }

    /// Set the read timeout of every handle of the stream (`None`: block indefinitely, the
    /// default). A read that times out fails with [`Error::TimedOut`]
    /// (`io::ErrorKind::TimedOut`; a `TcpStream` says `WouldBlock` on Unix) and leaves the
    /// stream usable. `Some(Duration::ZERO)` is refused with `io::ErrorKind::InvalidInput`, as
    /// `TcpStream` refuses it.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        store_timeout(&self.core.read_timeout, timeout)
    }

    /// Set the write timeout of every handle of the stream (`None`: block indefinitely, the
    /// default). A write that times out before accepting anything fails with
    /// [`Error::TimedOut`]; one that accepted part of its buffer returns that count. Zero is
    /// refused as by [`set_read_timeout`](Stream::set_read_timeout).
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        store_timeout(&self.core.write_timeout, timeout)
    }

    /// The read timeout (`None`: none).
    pub fn read_timeout(&self) -> Option<Duration> {
        load_timeout(&self.core.read_timeout)
    }

    /// The write timeout (`None`: none).
    pub fn write_timeout(&self) -> Option<Duration> {
        load_timeout(&self.core.write_timeout)
    }

    /// Half-close: send FIN after all data written so far; the peer reads end-of-stream after
    /// it. Later writes fail with [`Error::WriteClosed`]; a write blocked in another thread
    /// returns the count it had accepted, or fails with it if it had accepted nothing. Reading
    /// continues. Idempotent.
    pub fn close_write(&self) -> Result<()> {
        self.core.close_write()
    }

    /// Shut down the reading side, the writing side, or both, like `TcpStream::shutdown`.
    /// `Shutdown::Write` is [`close_write`](Stream::close_write); after `Shutdown::Read`, reads
    /// return 0 (a read blocked in another thread too) and arriving data is discarded (its
    /// credit still returned, so the peer's writes keep flowing). `Shutdown::Both` is
    /// [`close`](Stream::close), except that it reports an error `close_write` would report
    /// (a reset stream, a closed session).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match how {
            Shutdown::Write => self.core.close_write()?,
            Shutdown::Read => drop(self.core.close_read()),
            Shutdown::Both => {
                let wrote = self.core.close_write();
                self.core.close_read_or_reset();
                wrote?;
            }
        }
        Ok(())
    }

    /// Close both directions: FIN to the peer (after the data written so far), and no more
    /// reading (a read blocked in another thread returns 0, a blocked write returns the count
    /// it had accepted or fails with [`Error::WriteClosed`]). Data that arrives afterwards
    /// makes the peer's writes fail with a reset, as TCP does; so does closing with received
    /// data still unread while the peer is still sending (then the stream is reset at once,
    /// with [`ResetCode::StreamClosed`], dropping what this side had queued, as TCP's RST does:
    /// a peer blocked on flow control learns at once instead of waiting for credit that never
    /// comes). Acts on every handle of the stream. Never blocks. Dropping the last handle does
    /// the same.
    pub fn close(&self) -> Result<()> {
        self.core.close()
    }

    /// Abort the stream: queued data is dropped, and the peer's reads and writes fail with
    /// [`Error::StreamReset`] (code [`Cancelled`](ResetCode::Cancelled)). Local reads and
    /// writes fail the same way (a write blocked in another thread returns the count it had
    /// accepted, if any, and the next one fails).
    pub fn reset(&self) -> Result<()> {
        self.core.abort(ResetCode::Cancelled);
        Ok(())
    }

    /// [`reset`](Stream::reset) with a reason for the peer, e.g. [`ResetCode::TooManyStreams`]
    /// for a stream an application turns away at its own limit (the peer's reads and writes
    /// of it then fail with [`Error::TooManyStreams`]).
    pub fn reset_with(&self, code: ResetCode) -> Result<()> {
        self.core.abort(code);
        Ok(())
    }
}

impl Core {
    fn inner(&self) -> &Inner {
        &self.session.inner
    }

    fn id(&self) -> u32 {
        self.shared.id
    }

    fn close_write(&self) -> Result<()> {
        let seq = {
            let mut s = self.shared.send.lock();
            match s.phase.error() {
                None => {}
                Some(Error::WriteClosed) => return Ok(()),
                Some(e) => return Err(e),
            }
            s.phase = SendPhase::Finished;
            // A write whose last frame still waits in the queue carries the FIN.
            let last = s.next_seq.wrapping_sub(1);
            if s.next_seq != 0 && self.inner().sched.lock().fin_on_queued(self.id(), last) {
                None
            } else {
                let seq = s.next_seq;
                s.next_seq = seq.wrapping_add(1);
                Some(seq)
            }
        };
        self.wake_writers();
        let Some(seq) = seq else {
            self.inner().send_finished(self.id());
            return Ok(());
        };
        let flags = FLAG_FIN | if seq == 0 { FLAG_OPEN } else { 0 };
        let id = self.id();
        // Control-like frames never wait for room in the queue.
        let _ = self.inner().send_data(id, Header::data(id, seq, flags, 0).encode().to_vec());
        self.inner().send_finished(id);
        Ok(())
    }

    fn close(&self) -> Result<()> {
        match self.close_write() {
            Ok(()) | Err(Error::StreamReset { .. } | Error::TooManyStreams | Error::SessionClosed(_)) => {}
            Err(e) => return Err(e),
        }
        self.close_read_or_reset();
        Ok(())
    }

    /// Shut the receive side; with data left unread while the peer still sends, reset the
    /// stream (see `Stream::close`).
    fn close_read_or_reset(&self) {
        let (discarded, peer_done) = self.close_read();
        if discarded > 0 && !peer_done {
            self.abort(ResetCode::StreamClosed);
        }
    }

    /// Wake writers of this stream blocked on flow control (the stream's own credit or the
    /// session's), after its send side changed state.
    fn wake_writers(&self) {
        self.shared.send_cv.notify_all();
        let _closed = self.inner().credit_closed.lock();
        self.inner().credit_cv.notify_all();
    }

    /// Reset the stream from this side: writers fail (and wake), the peer is told, queued
    /// frames are dropped. The receive side is the caller's business.
    fn reset_locally(&self, code: ResetCode) {
        self.shared.reset(code, false);
        self.wake_writers();
        self.inner().reset_stream(self.id(), code);
    }

    fn abort(&self, code: ResetCode) {
        self.reset_locally(code);
        self.discard_receive(|p| {
            if matches!(p, RecvPhase::Open) {
                *p = RecvPhase::Failed(Error::StreamReset { code, remote: false });
            }
        });
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.core.read_impl(buf, self.read_timeout()).map_err(io::Error::from)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for &Stream {
    /// Write up to `buf.len()` bytes; returns how many were accepted (queued for the tunnels;
    /// acceptance is not delivery). A write blocked on flow control that is woken by
    /// [`close_write`](Stream::close_write), [`close`](Stream::close),
    /// [`reset`](Stream::reset), the session's end or its write timeout after accepting part of
    /// `buf` returns that part's length, as `send(2)` does; the next write fails with the
    /// error. `Err` means nothing was accepted.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.core.write_impl(buf, self.write_timeout()).map_err(io::Error::from)
    }

    /// Frames are handed to the tunnels as they are written; there is nothing to flush.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
