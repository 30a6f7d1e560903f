//! Peer-opened streams on their way to `accept_stream`, in the order the peer opened them
//! (see `core::accept_order`): a stream whose first frame arrives before that of a lower id
//! is held until the lower id arrives, or at most [`Inner::accept_hold`]: the stale timeout
//! (by default max(4 × smoothed RTT, 250 ms)), capped at `reorder_timeout`. A lower id whose
//! first frame is that late is on a stalled tunnel (it is re-sent elsewhere) or was opened and
//! left silent by the peer's application: later streams must not wait on it longer.

use super::stream::Accepted;
use super::{Inner, State};
use crate::error::ResetCode;
use crate::proto::frame::Control;
use std::time::Instant;

impl Inner {
    /// Peer id `id` arrived at `now` with `item` to accept (`None`: reset or refused). Returns
    /// the ids of streams that could not be queued (to reset with code Refused; not expected:
    /// admission keeps room in the queue for every held stream).
    pub(super) fn arrived(&self, st: &mut State, id: u32, item: Option<Accepted>, now: Instant) -> Vec<u32> {
        let was_held = st.order.held();
        let out = st.order.arrive(id, item, now);
        if st.order.held() > was_held {
            // An acceptor may be waiting with no deadline: let it take the new one.
            let _ = self.order_wake_tx.try_send(());
        }
        self.queue(st, out)
    }

    /// How long a stream may wait for a lower id to arrive before it is accepted anyway.
    pub(super) fn accept_hold(&self) -> std::time::Duration {
        self.stale_timeout().min(self.cfg.reorder_timeout)
    }

    /// Release the streams held for [`Inner::accept_hold`] at `now`; returns when the next held
    /// stream is due, and the ids of streams that could not be queued.
    pub(super) fn release_overdue(&self, st: &mut State, now: Instant) -> (Option<Instant>, Vec<u32>) {
        let hold = self.accept_hold();
        let out = st.order.expire(now, hold);
        let failed = self.queue(st, out);
        (st.order.deadline(hold), failed)
    }

    /// The peer closed the session gracefully and all its frames have arrived: the streams
    /// still held for order are queued, in order (those that do not fit are dropped: the
    /// session is closed, nobody is told).
    pub(super) fn release_held(&self, st: &mut State) {
        let out = st.order.flush();
        drop(self.queue(st, out));
    }

    /// Queue `out` for accept; the ids of those that did not fit are removed from the table.
    fn queue(&self, st: &mut State, out: Vec<Accepted>) -> Vec<u32> {
        let mut failed = Vec::new();
        for a in out {
            let id = a.shared.id;
            let queued = st.accept_tx.as_ref().is_some_and(|tx| tx.try_send(a).is_ok());
            if !queued {
                failed.push(id);
            }
        }
        for &id in &failed {
            st.remove(id);
        }
        failed
    }
}

impl Inner {
    /// Tell the peer that streams `ids` (removed from the table) were refused.
    pub(super) fn refuse_streams(&self, ids: &[u32]) {
        for &id in ids {
            self.send_control(Control::Reset { stream: id, code: ResetCode::Refused.to_u32() });
        }
    }
}
