//! The session's stream table: what the tunnel readers need to route and check each
//! stream's frames, and the table's changes when an application reads, closes or aborts.

use super::handoff::Tx;
use super::stream::{Inbound, StreamShared};
use super::{Inner, Lifecycle, State};
use crate::core::dedup::Received;
use crate::error::{CloseReason, Error, ResetCode};
use crate::proto::frame::Control;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// A stream as the session's table knows it: what the tunnel readers need to route and
/// check its frames.
pub(super) struct Entry {
    pub(super) shared: Arc<StreamShared>,
    /// Where decoded frames go; dropping it tells the stream's reader the stream is gone.
    pub(super) tx: Tx<Inbound>,
    /// Receive limit granted to the peer (mirrors the stream's receive window).
    pub(super) recv_limit: u64,
    /// Charge received so far.
    pub(super) recv_total: u64,
    /// Which DATA frames have arrived (duplicates of re-sent frames are dropped).
    pub(super) received: Received,
    /// Sequence number of the peer's FIN, once seen.
    pub(super) fin_seq: Option<u32>,
    /// The application closed the reading side: arriving data is dropped.
    pub(super) read_closed: bool,
    /// Charge of data dropped (reading side closed) since its credit was last announced.
    pub(super) discarded: u64,
    /// We sent FIN or RESET.
    pub(super) send_done: bool,
    /// All the peer's frames up to its FIN have arrived.
    pub(super) recv_done: bool,
}

impl Entry {
    pub(super) fn new(shared: Arc<StreamShared>, tx: Tx<Inbound>, window: u64) -> Entry {
        Entry {
            shared,
            tx,
            recv_limit: window,
            recv_total: 0,
            received: Received::new(),
            fin_seq: None,
            read_closed: false,
            discarded: 0,
            send_done: false,
            recv_done: false,
        }
    }
}

impl State {
    /// Remove stream `id` from the table, remembering what arrived of it.
    pub(super) fn remove(&mut self, id: u32) -> Option<Entry> {
        let e = self.streams.remove(&id)?;
        self.ended.remember(id, e.received.clone());
        Some(e)
    }

    /// Why the session ended or is ending, `None` while it is open (takes new streams).
    pub(super) fn close_reason(&self) -> Option<CloseReason> {
        match &self.lifecycle {
            Lifecycle::Open if self.peer_going_away => Some(CloseReason::Peer),
            Lifecycle::Open => None,
            Lifecycle::Closing { reason, .. } => Some(reason.clone()),
            Lifecycle::Closed(r) => Some(r.clone()),
        }
    }

    /// The error for opening or accepting a stream now, if the session no longer takes them.
    pub(super) fn refuses_new_streams(&self) -> Option<Error> {
        self.close_reason().map(Error::SessionClosed)
    }
}

impl Inner {
    /// Stream `id` sent its FIN (or RESET): forget it once the peer's side is done too.
    pub(super) fn send_finished(&self, id: u32) {
        let mut st = self.state.lock();
        if let Some(e) = st.streams.get_mut(&id) {
            e.send_done = true;
            if e.recv_done {
                st.remove(id);
            }
        }
    }

    /// The application closed stream `id`'s reading side; wakes a blocked reader.
    pub(super) fn close_read(&self, id: u32) {
        let mut st = self.state.lock();
        let remove = match st.streams.get_mut(&id) {
            Some(e) => {
                e.read_closed = true;
                let _ = e.tx.send(Inbound::Close);
                e.recv_done && e.send_done
            }
            None => false,
        };
        if remove {
            st.remove(id);
        }
    }

    /// Abort stream `id` locally: tell the peer, drop its queued frames, forget it.
    pub(super) fn reset_stream(&self, id: u32, code: ResetCode) {
        let existed = {
            let mut st = self.state.lock();
            match st.remove(id) {
                Some(e) => {
                    let _ = e.tx.send(Inbound::Reset { code, remote: false });
                    true
                }
                None => false,
            }
        };
        let dropped = self.sched.lock().drop_stream(id);
        if dropped > 0 {
            self.room.notify_all();
        }
        if existed && !self.is_closed() {
            self.send_control(Control::Reset { stream: id, code: code.to_u32() });
        }
    }

    /// The application consumed (or discarded) `released` charge of stream `id`; `stream_limit`
    /// is the stream's new receive limit to announce, if any.
    ///
    /// Session-level consumption is accumulated without a lock and applied to the session
    /// window in steps of 1/16 of it, so that reads do not all contend for the session lock;
    /// the peer's session credit lags by less than a step.
    pub(super) fn release(&self, id: u32, released: u64, stream_limit: Option<u64>) {
        if released == 0 && stream_limit.is_none() {
            return;
        }
        let pending = self.unreported.fetch_add(released, Relaxed) + released;
        let report = pending >= self.cfg.session_window as u64 / 16;
        if !report && stream_limit.is_none() {
            return;
        }
        let session_limit = {
            let mut st = self.state.lock();
            if let (Some(l), Some(e)) = (stream_limit, st.streams.get_mut(&id)) {
                // The tunnel readers may have raised it for discarded data meanwhile.
                e.recv_limit = e.recv_limit.max(l);
            }
            if report {
                let n = self.unreported.swap(0, Relaxed);
                st.recv.consume(n, Instant::now(), None)
            } else {
                None
            }
        };
        if self.is_closed() {
            return;
        }
        if let Some(limit) = stream_limit {
            self.send_control_twice(Control::Window { stream: id, limit });
        }
        if let Some(limit) = session_limit {
            self.send_control_twice(Control::Window { stream: 0, limit });
        }
    }
}
