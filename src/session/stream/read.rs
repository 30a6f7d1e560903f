//! The receive side of a stream: frames from the tunnel readers are put in order, read by the
//! application, and their credit returned to the peer.

use super::{reset_error, Core, Inbound, SendPhase};
use crate::core::reorder::ReorderBuffer;
use crate::core::window::RecvWindow;
use crate::error::{Error, ResetCode, Result};
use crate::proto::frame::data_charge;
use crate::session::handoff::Rx;
use crossbeam_channel::{RecvTimeoutError, TryRecvError};
use parking_lot::MutexGuard;
use std::time::{Duration, Instant};

/// Receive-side lifecycle (see the module doc of `stream`).
pub(super) enum RecvPhase {
    Open,
    Closed,
    Failed(Error),
}

pub(super) struct RecvState {
    rx: Rx<Inbound>,
    reorder: ReorderBuffer,
    window: RecvWindow,
    phase: RecvPhase,
    /// The session dropped the stream's channel (after all its frames were sent into it).
    gone: bool,
    /// Longest reorder hold since the last window update (see `ReorderBuffer::take_max_hold`).
    interval_hold: Duration,
    /// The longest holds of the last window-update intervals.
    holds: [Duration; HOLD_INTERVALS],
    /// The stream's write count when a read last waited.
    writes_seen: u32,
}

/// Window-update intervals over which the tunnels' delay skew is judged.
const HOLD_INTERVALS: usize = 4;

impl RecvState {
    pub(super) fn new(rx: Rx<Inbound>, window: u64, max_window: u64) -> RecvState {
        RecvState {
            rx,
            reorder: ReorderBuffer::new(),
            window: RecvWindow::new(window, max_window),
            phase: RecvPhase::Open,
            gone: false,
            interval_hold: Duration::ZERO,
            holds: [Duration::ZERO; HOLD_INTERVALS],
            writes_seen: 0,
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Core {
    /// Shut the receive side; returns the charge of the unread data dropped and whether the
    /// peer had finished sending.
    pub(super) fn close_read(&self) -> (u64, bool) {
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
    pub(super) fn discard_receive(&self, set_phase: impl FnOnce(&mut RecvPhase)) -> (u64, bool) {
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
                    r.phase = RecvPhase::Failed(reset_error(code, remote));
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

    pub(super) fn read_impl(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<usize> {
        if self.shared.local {
            self.ensure_open();
        }
        let deadline = timeout.and_then(crate::config::deadline_after);
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
            // A read right after a write waits for an answer: one that came quickly before
            // may be worth a short spin. A stream that only reads (bulk) never spins.
            let writes = self.shared.writes.load(std::sync::atomic::Ordering::Relaxed);
            let answer = writes != r.writes_seen;
            r.writes_seen = writes;
            let got = r.rx.recv_deadline(earliest(deadline, gap), answer);
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
}
