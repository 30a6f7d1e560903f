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

use super::{Handle, Inner};
use crate::core::reorder::ReorderBuffer;
use crate::core::window::{RecvWindow, SendWindow};
use crate::error::{CloseReason, Error, ResetCode, Result};
use crate::proto::frame::{data_charge, Header, FLAG_FIN, FLAG_OPEN, FRAME_CHARGE, HEADER_LEN};
use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    pub(crate) rx: Receiver<Inbound>,
}

/// Send-side lifecycle (see the module doc).
enum SendPhase {
    Open,
    Finished,
    Reset { code: ResetCode, remote: bool },
    Closed(CloseReason),
}

struct SendState {
    /// Credit granted by the peer.
    window: SendWindow,
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
}

impl StreamShared {
    pub(crate) fn new(id: u32, local: bool, window: u64) -> StreamShared {
        StreamShared {
            id,
            local,
            send: Mutex::new(SendState {
                window: SendWindow::new(window),
                next_seq: 0,
                phase: SendPhase::Open,
            }),
            send_cv: Condvar::new(),
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

/// Receive-side lifecycle (see the module doc).
enum RecvPhase {
    Open,
    Closed,
    Failed(Error),
}

struct RecvState {
    rx: Receiver<Inbound>,
    reorder: ReorderBuffer,
    window: RecvWindow,
    phase: RecvPhase,
    /// The session dropped the stream's channel (after all its frames were sent into it).
    gone: bool,
    /// Longest reorder hold since the last window update (see `ReorderBuffer::take_max_hold`).
    interval_hold: Duration,
    /// The longest holds of the last window-update intervals.
    holds: [Duration; HOLD_INTERVALS],
}

/// Window-update intervals over which the tunnels' delay skew is judged.
const HOLD_INTERVALS: usize = 4;

/// A bidirectional byte stream of a [`Session`](crate::Session).
///
/// `Stream` implements [`Read`] and [`Write`], and so does `&Stream`, so one thread may read
/// while another writes (share it with `Arc` or scoped threads). Dropping a stream closes it
/// ([`close`](Stream::close)).
pub struct Stream {
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
        f.debug_struct("Stream").field("id", &self.shared.id).finish()
    }
}

fn load_timeout(a: &AtomicU64) -> Option<Duration> {
    match a.load(Relaxed) {
        0 => None,
        ns => Some(Duration::from_nanos(ns)),
    }
}

fn store_timeout(a: &AtomicU64, t: Option<Duration>) -> Result<()> {
    match t {
        Some(d) if d.is_zero() => {
            Err(Error::InvalidConfig("a zero timeout is not allowed; use None for no timeout".into()))
        }
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

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Stream {
    pub(crate) fn new(session: Arc<Handle>, a: Accepted) -> Stream {
        let cfg = session.inner.cfg();
        let window = RecvWindow::new(cfg.stream_window as u64, cfg.max_stream_window as u64);
        Stream {
            shared: a.shared,
            recv: Mutex::new(RecvState {
                rx: a.rx,
                reorder: ReorderBuffer::new(),
                window,
                phase: RecvPhase::Open,
                gone: false,
                interval_hold: Duration::ZERO,
                holds: [Duration::ZERO; HOLD_INTERVALS],
            }),
            session,
            read_timeout: AtomicU64::new(0),
            write_timeout: AtomicU64::new(0),
        }
    }

    fn inner(&self) -> &Inner {
        &self.session.inner
    }

    /// The stream id (odd: opened by the client, even: by the server).
    pub fn id(&self) -> u32 {
        self.shared.id
    }

    /// The session this stream belongs to.
    pub fn session(&self) -> crate::Session {
        crate::Session { h: self.session.clone() }
    }

    /// Set the read timeout (`None`: block indefinitely). A read that times out fails with
    /// [`Error::TimedOut`] (`io::ErrorKind::TimedOut`). Zero is refused.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        store_timeout(&self.read_timeout, timeout)
    }

    /// Set the write timeout (`None`: block indefinitely). Zero is refused.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        store_timeout(&self.write_timeout, timeout)
    }

    /// The read timeout.
    pub fn read_timeout(&self) -> Option<Duration> {
        load_timeout(&self.read_timeout)
    }

    /// The write timeout.
    pub fn write_timeout(&self) -> Option<Duration> {
        load_timeout(&self.write_timeout)
    }

    /// Half-close: send FIN after all data written so far; the peer reads end-of-stream after
    /// it. Later writes fail with [`Error::WriteClosed`]. Reading continues. Idempotent.
    pub fn close_write(&self) -> Result<()> {
        let seq = {
            let mut s = self.shared.send.lock();
            match &s.phase {
                SendPhase::Open => {}
                SendPhase::Finished => return Ok(()),
                SendPhase::Reset { code, remote } => {
                    return Err(Error::StreamReset { code: *code, remote: *remote })
                }
                SendPhase::Closed(r) => return Err(Error::SessionClosed(r.clone())),
            }
            let seq = s.next_seq;
            s.next_seq = seq.wrapping_add(1);
            s.phase = SendPhase::Finished;
            seq
        };
        self.wake_writers();
        let flags = FLAG_FIN | if seq == 0 { FLAG_OPEN } else { 0 };
        let id = self.id();
        // Control-like frames never wait for room in the queue.
        let _ = self.inner().send_data(id, Header::data(id, seq, flags, 0).encode().to_vec());
        self.inner().send_finished(id);
        Ok(())
    }

    /// Shut down the reading side, the writing side, or both, like `TcpStream::shutdown`.
    /// After `Shutdown::Read`, reads return 0 and arriving data is discarded.
    pub fn shutdown(&self, how: Shutdown) -> Result<()> {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            self.close_write()?;
        }
        if matches!(how, Shutdown::Read | Shutdown::Both) {
            self.close_read();
        }
        Ok(())
    }

    /// Close both directions: FIN to the peer (after the data written so far), and no more
    /// reading. Data that arrives afterwards makes the peer's writes fail with a reset, as TCP
    /// does; so does closing with received data still unread while the peer is still
    /// sending (then the stream is reset at once, with
    /// [`ResetCode::StreamClosed`], dropping what this side had queued, as TCP's RST does:
    /// a peer blocked on flow control learns at once instead of waiting for credit that never
    /// comes). Never blocks. Dropping the stream does the same.
    pub fn close(&self) -> Result<()> {
        match self.close_write() {
            Ok(()) | Err(Error::StreamReset { .. }) | Err(Error::SessionClosed(_)) => {}
            Err(e) => return Err(e),
        }
        let (discarded, peer_done) = self.close_read();
        if discarded > 0 && !peer_done {
            self.abort(ResetCode::StreamClosed);
        }
        Ok(())
    }

    /// Abort the stream: queued data is dropped, and the peer's reads and writes fail with
    /// [`Error::StreamReset`]. Local reads and writes fail the same way.
    pub fn reset(&self) -> Result<()> {
        self.abort(ResetCode::Cancelled);
        Ok(())
    }

    /// [`reset`](Stream::reset) with a reason for the peer, e.g. [`ResetCode::TooManyStreams`]
    /// for a stream an application turns away at its own limit.
    pub fn reset_with(&self, code: ResetCode) -> Result<()> {
        self.abort(code);
        Ok(())
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

    /// Shut the receive side; returns the charge of the unread data dropped and whether the
    /// peer had finished sending.
    fn close_read(&self) -> (u64, bool) {
        self.inner().close_read(self.id());
        self.discard_receive(|p| {
            if matches!(p, RecvPhase::Open) {
                *p = RecvPhase::Closed;
            }
        })
    }

    /// Drop everything received and not read, returning its charge to the session, and to the
    /// stream's window if the stream lives on shut for reading only (a peer still writing to
    /// it keeps going). A stream closed both ways or aborted grants nothing more: late data
    /// gets a RESET instead.
    fn discard_receive(&self, set_phase: impl FnOnce(&mut RecvPhase)) -> (u64, bool) {
        let mut r = self.recv.lock();
        set_phase(&mut r.phase);
        let mut released = r.reorder.discard();
        while let Ok(m) = r.rx.try_recv() {
            released += self.apply(&mut r, m);
        }
        let writing = matches!(self.shared.send.lock().phase, SendPhase::Open);
        let stream_limit = match r.phase {
            RecvPhase::Closed if writing => r.window.consume(released, Instant::now(), None),
            _ => None,
        };
        let peer_done = r.reorder.fin_received();
        drop(r);
        self.inner().release(self.id(), released, stream_limit);
        (released, peer_done)
    }

    /// Send the bare OPEN of a local stream that has sent nothing yet (before it blocks in a
    /// read, the peer must know the stream exists).
    fn ensure_open(&self) {
        {
            let mut s = self.shared.send.lock();
            if s.next_seq != 0 || !matches!(s.phase, SendPhase::Open) {
                return;
            }
            s.next_seq = 1;
        }
        let id = self.id();
        let _ = self.inner().send_data(id, Header::data(id, 0, FLAG_OPEN, 0).encode().to_vec());
    }

    /// Apply one inbound message; returns the flow-control charge it released.
    fn apply(&self, r: &mut RecvState, m: Inbound) -> u64 {
        match m {
            Inbound::Data { seq, flags, payload } => {
                let charge = data_charge(payload.len());
                if !matches!(r.phase, RecvPhase::Open) {
                    return charge;
                }
                match r.reorder.insert(seq, flags, payload, Instant::now()) {
                    Ok(_) => 0,
                    Err(e) => {
                        let released = r.reorder.discard() + charge;
                        r.phase = RecvPhase::Failed(Error::Protocol(format!("stream {}: {e}", self.id())));
                        self.reset_locally(ResetCode::Protocol);
                        released
                    }
                }
            }
            Inbound::Reset { code, remote } => {
                if matches!(r.phase, RecvPhase::Open) {
                    r.phase = RecvPhase::Failed(Error::StreamReset { code, remote });
                }
                r.reorder.discard()
            }
            Inbound::Close => {
                if matches!(r.phase, RecvPhase::Open) {
                    r.phase = RecvPhase::Closed;
                }
                r.reorder.discard()
            }
        }
    }

    fn read_impl(&self, buf: &mut [u8]) -> Result<usize> {
        if self.shared.local {
            self.ensure_open();
        }
        let deadline = self.read_timeout().and_then(crate::config::deadline_after);
        let mut r: MutexGuard<'_, RecvState> = match deadline {
            Some(d) => self.recv.try_lock_until(d).ok_or(Error::TimedOut)?,
            None => self.recv.lock(),
        };
        let reorder_timeout = self.inner().cfg().reorder_timeout;
        let mut released = 0;
        let result = loop {
            loop {
                match r.rx.try_recv() {
                    Ok(m) => released += self.apply(&mut r, m),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        r.gone = true;
                        break;
                    }
                }
            }
            match &r.phase {
                RecvPhase::Failed(e) => break Err(e.clone()),
                RecvPhase::Closed => break Ok(0),
                RecvPhase::Open => {}
            }
            if r.reorder.readable() > 0 || buf.is_empty() {
                let pool = &self.inner().pool;
                let (n, rel) = r.reorder.read_recycling(buf, |v| pool.give(v));
                released += rel;
                break Ok(n);
            }
            if r.reorder.at_eof() {
                break Ok(0);
            }
            if r.gone {
                let e = self.inner().close_error();
                r.phase = RecvPhase::Failed(e.clone());
                break Err(e);
            }
            let gap = r.reorder.gap_deadline(reorder_timeout).map(|d| self.inner().reorder_deadline(d));
            let got = match earliest(deadline, gap) {
                Some(w) => r.rx.recv_deadline(w),
                None => r.rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match got {
                Ok(m) => released += self.apply(&mut r, m),
                Err(RecvTimeoutError::Disconnected) => r.gone = true,
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    // An outage that began meanwhile does not count against the gap.
                    let gap =
                        r.reorder.gap_deadline(reorder_timeout).map(|d| self.inner().reorder_deadline(d));
                    if gap.is_some_and(|g| now >= g) {
                        let e = Error::ReorderTimeout { stream: self.id(), missing: r.reorder.waiting_for() };
                        released += r.reorder.discard();
                        r.phase = RecvPhase::Failed(e.clone());
                        drop(r);
                        self.reset_locally(ResetCode::ReorderTimeout);
                        self.inner().release(self.id(), released, None);
                        return Err(e);
                    }
                    if deadline.is_some_and(|d| now >= d) {
                        break Err(Error::TimedOut);
                    }
                }
            }
        };
        let stream_limit = self.account(&mut r, released);
        drop(r);
        self.inner().release(self.id(), released, stream_limit);
        result
    }

    /// Record `released` charge read from an open stream in its receive window; returns the
    /// new limit to announce, if one is due.
    ///
    /// The window covers the round trip (smoothed, with the queueing of loaded paths) or the
    /// path's minimum round trip plus the delay skew between tunnels, whichever is larger. The
    /// skew is how long data waited for frames of slower tunnels, taken as the smallest of the
    /// longest holds of the last few window updates: a persistent skew shows in every one; a
    /// reader thread that was merely scheduled late shows in one, and growing the window for
    /// it would only queue more data in the kernel ahead of other streams.
    fn account(&self, r: &mut RecvState, released: u64) -> Option<u64> {
        let hold = r.reorder.take_max_hold();
        r.interval_hold = r.interval_hold.max(hold);
        if released == 0 || !matches!(r.phase, RecvPhase::Open) {
            return None;
        }
        let skew = r.holds.iter().copied().min().unwrap_or_default();
        let (min_rtt, srtt) = self.inner().rtt();
        let delay = srtt.unwrap_or_default().max(min_rtt.unwrap_or_default() + skew);
        let update = r.window.consume(released, Instant::now(), (!delay.is_zero()).then_some(delay));
        if update.is_some() {
            r.holds.rotate_left(1);
            r.holds[HOLD_INTERVALS - 1] = std::mem::take(&mut r.interval_hold);
        }
        update
    }

    /// Reserve credit and a sequence number for the next frame of up to `want` bytes.
    fn reserve(&self, want: usize, deadline: Option<Instant>) -> Result<(u32, usize)> {
        let inner = self.inner();
        let max_frame = inner.peer.max_frame as usize;
        let mut s = self.shared.send.lock();
        loop {
            match &s.phase {
                SendPhase::Open => {}
                SendPhase::Finished => return Err(Error::WriteClosed),
                SendPhase::Reset { code, remote } => {
                    return Err(Error::StreamReset { code: *code, remote: *remote })
                }
                SendPhase::Closed(r) => return Err(Error::SessionClosed(r.clone())),
            }
            let avail = s.window.available();
            if avail > FRAME_CHARGE {
                let max = data_charge(want.min(max_frame).min((avail - FRAME_CHARGE) as usize));
                if let Some(charge) = inner.credit.try_reserve(FRAME_CHARGE, max) {
                    s.window.spend(charge);
                    let seq = s.next_seq;
                    s.next_seq = seq.wrapping_add(1);
                    return Ok((seq, (charge - FRAME_CHARGE) as usize));
                }
                // Wait for session credit without holding the stream (tunnel readers take the
                // stream lock to deliver its window updates), then look at everything again.
                let waited = MutexGuard::unlocked(&mut s, || {
                    let mut closed = inner.credit_closed.lock();
                    if let Some(r) = &*closed {
                        return Err(Error::SessionClosed(r.clone()));
                    }
                    if inner.credit.available() > FRAME_CHARGE {
                        return Ok(());
                    }
                    match deadline {
                        Some(d) if inner.credit_cv.wait_until(&mut closed, d).timed_out() => {
                            Err(Error::TimedOut)
                        }
                        Some(_) => Ok(()),
                        None => {
                            inner.credit_cv.wait(&mut closed);
                            Ok(())
                        }
                    }
                });
                waited?;
                continue;
            }
            match deadline {
                Some(d) => {
                    if self.shared.send_cv.wait_until(&mut s, d).timed_out()
                        && s.window.available() <= FRAME_CHARGE
                    {
                        return Err(Error::TimedOut);
                    }
                }
                None => self.shared.send_cv.wait(&mut s),
            }
        }
    }

    fn write_impl(&self, buf: &[u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = self.write_timeout().and_then(crate::config::deadline_after);
        let id = self.id();
        let _writing = WriterCount::enter(&self.inner().writers);
        let mut written = 0;
        while written < buf.len() {
            let (seq, n) = match self.reserve(buf.len() - written, deadline) {
                Ok(r) => r,
                Err(_) if written > 0 => break,
                Err(e) => return Err(e),
            };
            let flags = if seq == 0 { FLAG_OPEN } else { 0 };
            // The frame is built once: it is kept until the peer acknowledges it.
            let mut frame = self.inner().pool.take(HEADER_LEN + n);
            frame.extend_from_slice(&Header::data(id, seq, flags, n as u32).encode());
            frame.extend_from_slice(&buf[written..written + n]);
            let queued = self.inner().send_data(id, frame);
            written += n;
            if queued && !self.inner().wait_room(deadline) {
                break;
            }
        }
        Ok(written)
    }
}

/// Counts the application threads inside `write` (see `Inner::send_data`).
struct WriterCount<'a>(&'a AtomicUsize);

impl<'a> WriterCount<'a> {
    fn enter(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Relaxed);
        WriterCount(c)
    }
}

impl Drop for WriterCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_impl(buf).map_err(io::Error::from)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_impl(buf).map_err(io::Error::from)
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
