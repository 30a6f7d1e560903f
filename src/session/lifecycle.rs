//! How a session ends: graceful close, failure, and what a tunnel's end means for the
//! session (see the lifecycle diagram in the module doc of `session`).

use super::{Entry, Inner, Lifecycle, CLOSED, CLOSING, OPEN};
use crate::error::CloseReason;
use crate::proto::frame::Control;
use std::sync::atomic::Ordering::Relaxed;
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
        let (entries, reason) = {
            let mut st = self.state.lock();
            if !matches!(st.lifecycle, Lifecycle::Open) {
                return;
            }
            let linger = self.cfg.keepalive_timeout.min(Duration::from_secs(5));
            // A reason already given out (the peer's GOAWAY) stays.
            let reason = st.close_reason().unwrap_or(CloseReason::Local);
            st.lifecycle = Lifecycle::Closing { deadline: Instant::now() + linger, reason: reason.clone() };
            self.phase.store(CLOSING, Relaxed);
            st.accept_tx = None;
            // Streams held for order are dropped with those queued (below).
            drop(st.order.flush());
            (st.streams.drain().map(|(_, e)| e).collect::<Vec<_>>(), reason)
        };
        // No more threads (re-dials) from now on.
        self.exited_tx.lock().take();
        self.fail_streams(entries, reason);
        for t in &self.tunnels {
            t.wake.notify_one();
        }
        // Streams queued for accept but never accepted are dropped now.
        while self.accept_rx.try_recv().is_ok() {}
        if self.live_tunnels() == 0 {
            // Nothing to flush or to wait for (an outage).
            self.fail(CloseReason::Local);
        }
    }

    /// Close at once: every stream and blocked call fails with `SessionClosed(reason)`, or
    /// with the reason already given out if the session was closing (see `State::close_reason`).
    pub(crate) fn fail(&self, reason: CloseReason) {
        let (entries, reason) = {
            let mut st = self.state.lock();
            if let Lifecycle::Closed(_) = st.lifecycle {
                return;
            }
            let reason = st.close_reason().unwrap_or(reason);
            st.lifecycle = Lifecycle::Closed(reason.clone());
            self.phase.store(CLOSED, Relaxed);
            if reason == CloseReason::Peer {
                // Every frame of the peer has arrived: streams held for a lower id that never
                // came are queued after the others (see below).
                self.release_held(&mut st);
            }
            st.accept_tx = None;
            // Otherwise streams held for order are dropped with those queued (below).
            drop(st.order.flush());
            st.closed_tx = None;
            (st.streams.drain().map(|(_, e)| e).collect::<Vec<_>>(), reason)
        };
        self.exited_tx.lock().take();
        self.fail_streams(entries, reason.clone());
        for t in &self.tunnels {
            t.conn().kill(&format!("session closed: {reason}"));
        }
        self.outage.lock().take();
        self.wake_supervisor();
        {
            let _s = self.sched.lock();
            for t in &self.tunnels {
                t.wake.notify_all();
            }
            self.room.notify_all();
        }
        // Streams the peer opened before it closed gracefully are still handed out by
        // `accept_stream` (their data is in their channels; reads end at their FIN, or fail
        // with SessionClosed(Peer) where it never came). Otherwise they are dropped.
        if reason != CloseReason::Peer {
            while self.accept_rx.try_recv().is_ok() {}
        }
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
}
