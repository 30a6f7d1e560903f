//! How a session ends: graceful close, failure, and what a tunnel's end means for the
//! session (see the lifecycle diagram in the module doc of `session`).

use super::stream::StreamShared;
use super::tunnel;
use super::{Entry, Inner, Lifecycle, CLOSED, CLOSING, OPEN};
use crate::error::CloseReason;
use crate::proto::frame::Control;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Inner {
    /// Start a graceful close (idempotent, does not wait).
    pub(crate) fn begin_close(&self) {
        if self.phase.load(Relaxed) != OPEN {
            return;
        }
        // GOAWAY is queued before the phase changes, so a writer that sees `Closing` has
        // already been given its tunnel's GOAWAY.
        {
            let mut s = self.sched.lock();
            for t in 0..self.tunnels.len() {
                s.push_tunnel_control(t, Control::GoAway(0));
            }
        }
        let entries = {
            let mut st = self.state.lock();
            if !matches!(st.lifecycle, Lifecycle::Open) {
                return;
            }
            let linger = self.cfg.keepalive_timeout.min(Duration::from_secs(5));
            st.lifecycle = Lifecycle::Closing { deadline: Instant::now() + linger };
            self.phase.store(CLOSING, Relaxed);
            st.accept_tx = None;
            st.streams.drain().map(|(_, e)| e).collect::<Vec<_>>()
        };
        self.fail_streams(entries, CloseReason::Local);
        for t in &self.tunnels {
            t.wake.notify_one();
        }
        // Streams queued for accept but never accepted are dropped now.
        while self.accept_rx.try_recv().is_ok() {}
    }

    /// Close at once: every stream and blocked call fails with `SessionClosed(reason)`.
    pub(crate) fn fail(&self, reason: CloseReason) {
        let entries = {
            let mut st = self.state.lock();
            if let Lifecycle::Closed(_) = st.lifecycle {
                return;
            }
            st.lifecycle = Lifecycle::Closed(reason.clone());
            self.phase.store(CLOSED, Relaxed);
            st.accept_tx = None;
            st.closed_tx = None;
            st.streams.drain().map(|(_, e)| e).collect::<Vec<_>>()
        };
        self.fail_streams(entries, reason);
        for t in &self.tunnels {
            t.kill();
        }
        {
            let _s = self.sched.lock();
            for t in &self.tunnels {
                t.wake.notify_all();
            }
            self.room.notify_all();
        }
        while self.accept_rx.try_recv().is_ok() {}
    }

    /// Fail the send side of `entries` and of the session credit; dropping the entries
    /// disconnects the streams' channels, which ends their reads.
    pub(super) fn fail_streams(&self, entries: Vec<Entry>, reason: CloseReason) {
        {
            let mut closed = self.credit_closed.lock();
            if closed.is_none() {
                *closed = Some(reason.clone());
            }
            self.credit_cv.notify_all();
        }
        for e in entries {
            e.shared.session_closed(&reason);
        }
    }

    /// A tunnel's reader stopped; decide what that means for the session.
    pub(super) fn tunnel_ended(&self, t: usize, end: tunnel::ReadEnd) {
        use tunnel::ReadEnd;
        let tun = &self.tunnels[t];
        tun.kill();
        {
            let mut s = self.sched.lock();
            s.tunnel_dead(t);
            tun.wake.notify_all();
        }
        let (remaining, going_away, phase) = {
            let mut st = self.state.lock();
            st.readers -= 1;
            (st.readers, st.peer_going_away, self.phase.load(Relaxed))
        };
        if let ReadEnd::Protocol(why) = end {
            self.fail(CloseReason::Protocol(why));
            return;
        }
        if phase != OPEN || going_away {
            // An expected end: we or the peer are closing.
            if remaining == 0 {
                self.fail(if phase == OPEN { CloseReason::Peer } else { CloseReason::Local });
            }
            return;
        }
        let why = match end {
            ReadEnd::Eof => format!("tunnel {t} closed by the peer"),
            ReadEnd::Closed => format!("tunnel {t} closed"),
            ReadEnd::Silent(d) => format!("tunnel {t} silent for {d:?} (keepalive timeout)"),
            ReadEnd::Io(e) => format!("tunnel {t}: {e}"),
            ReadEnd::Protocol(_) => unreachable!("handled above"),
        };
        if remaining == 0 {
            self.fail(CloseReason::TunnelsLost(why));
            return;
        }
        // Frames in flight on the dead tunnel are lost. DATA frames: tell the peer how many
        // frames each stream has sent, so that a lost tail shows up as a gap in its reorder
        // buffer. Control frames: WINDOW limits are absolute, so announcing them again is
        // harmless; recent RESETs are sent again (the peer ignores those it already has).
        let (streams, windows, session_limit) = {
            let st = self.state.lock();
            let streams: Vec<Arc<StreamShared>> = st.streams.values().map(|e| e.shared.clone()).collect();
            let windows: Vec<Control> = st
                .streams
                .iter()
                .map(|(&id, e)| Control::Window { stream: id, limit: e.recv_limit })
                .collect();
            (streams, windows, st.recv.limit())
        };
        let marks =
            streams.iter().filter_map(|s| s.frames_sent().map(|count| Control::Sent { stream: s.id, count }));
        let horizon = Instant::now().checked_sub(self.cfg.keepalive_timeout * 2);
        let resets: Vec<Control> = self
            .recent_resets
            .lock()
            .iter()
            .filter(|(_, _, at)| horizon.is_none_or(|h| *at >= h))
            .map(|&(stream, code, _)| Control::Reset { stream, code: code.to_u32() })
            .collect();
        let session = std::iter::once(Control::Window { stream: 0, limit: session_limit });
        self.queue_controls(marks.chain(windows).chain(session).chain(resets));
    }
}
