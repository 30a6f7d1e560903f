//! What a tunnel reader does with each decoded frame. Runs on reader threads; never blocks
//! on anything but short lock sections: stream channels are unbounded (flow control bounds
//! them), and replies go out without waiting.

use super::frames::Frame;
use super::stream::{Accepted, Inbound, StreamShared};
use super::{Entry, Inner, Lifecycle, State};
use crate::core::dedup::Received;
use crate::core::ids::PeerId;
use crate::error::ResetCode;
use crate::proto::frame::{data_charge, Control, Header, FLAG_FIN};
use std::sync::Arc;
use std::time::Instant;

impl Inner {
    /// Handle one frame from tunnel `t`. An `Err` is a protocol violation that ends the
    /// session.
    pub(crate) fn handle_frame(&self, t: usize, frame: Frame) -> Result<(), String> {
        match frame {
            Frame::Data(h, payload) => self.on_data(h, payload),
            Frame::Control(c) => self.on_control(t, c),
        }
    }

    /// Is `id` new (first frame of a peer-opened stream)? Checks that the id is legal.
    fn classify(&self, st: &mut State, id: u32) -> Result<bool, String> {
        if st.ids.is_peer(id) {
            Ok(st.ids.observe_peer(id).map_err(|e| e.to_string())? == PeerId::New)
        } else {
            st.ids.check_local(id).map_err(|e| e.to_string())?;
            Ok(false)
        }
    }

    /// Create the table entry of a new peer-opened stream and queue it for accept (in the
    /// peer's opening order, see `accept`), or say why it is refused. `refused` collects
    /// streams that could not be queued. After the peer's GOAWAY its new streams are still
    /// taken: it opens none after sending GOAWAY, so they were opened before, and their first
    /// frames merely came over other tunnels than the GOAWAY (their data was written before
    /// the peer closed, and a graceful close delivers it).
    fn admit(&self, st: &mut State, id: u32, refused: &mut Vec<u32>) -> Option<ResetCode> {
        let now = Instant::now();
        let code = if !matches!(st.lifecycle, Lifecycle::Open) {
            Some(ResetCode::SessionClosing)
        } else if st.streams.len() >= self.cfg.max_streams {
            Some(ResetCode::TooManyStreams)
        } else if st.accept_tx.as_ref().is_none_or(|a| a.len() + st.order.held() >= self.cfg.accept_backlog) {
            Some(ResetCode::Refused)
        } else {
            None
        };
        if code.is_some() {
            refused.extend(self.arrived(st, id, None, now));
            return code;
        }
        let (tx, rx) = super::handoff::channel(self.spin.clone());
        let shared = Arc::new(StreamShared::new(id, false, self.peer.stream_window as u64));
        st.streams.insert(id, Entry::new(shared.clone(), tx, self.cfg.stream_window as u64));
        refused.extend(self.arrived(st, id, Some(Accepted { shared, rx }), now));
        None
    }

    /// Whether DATA frame `seq` of stream `id` arrived before: a frame re-sent after a tunnel
    /// failure may arrive twice, and the copy is dropped before it is charged (the sender paid
    /// for it once). Records the frame otherwise. `new`: the frame opens the stream.
    fn duplicate(st: &mut State, id: u32, seq: u32, new: bool) -> bool {
        match st.streams.get_mut(&id) {
            Some(e) => !e.received.insert(seq),
            None if new => false,
            None => st.ended.check(id, seq) == Some(true),
        }
    }

    fn on_data(&self, h: Header, payload: Vec<u8>) -> Result<(), String> {
        let id = h.stream;
        let charge = data_charge(payload.len());
        let bare = payload.is_empty();
        let mut refuse = None;
        let mut refused = Vec::new();
        let mut stream_limit = None;
        let mut wake = None;
        let session_limit = {
            let mut st = self.state.lock();
            let new = self.classify(&mut st, id)?;
            if Self::duplicate(&mut st, id, h.seq, new) {
                drop(st);
                self.pool.give(payload);
                return Ok(());
            }
            st.recv_total += charge;
            if !st.recv.allows(st.recv_total) {
                return Err(format!("stream {id}: frame beyond the session receive window"));
            }
            if new {
                refuse = self.admit(&mut st, id, &mut refused);
                let mut received = Received::new();
                received.insert(h.seq);
                match st.streams.get_mut(&id) {
                    Some(e) => e.received = received,
                    None => st.ended.remember(id, received),
                }
            }
            let mut stale = true;
            let mut remove = false;
            if let Some(e) = st.streams.get_mut(&id) {
                e.recv_total += charge;
                if e.recv_total > e.recv_limit {
                    return Err(format!(
                        "stream {id}: frame beyond the advertised window ({} > {})",
                        e.recv_total, e.recv_limit
                    ));
                }
                if h.flags & FLAG_FIN != 0 {
                    e.fin_seq = Some(h.seq);
                }
                if !e.read_closed {
                    match e.tx.send_later(Inbound::Data { seq: h.seq, flags: h.flags, payload }) {
                        Ok(w) => {
                            stale = false;
                            wake = w;
                        }
                        Err(_) => stale = true,
                    }
                }
                if stale && e.send_done {
                    // Closed in both directions here, like a TCP socket that answers late
                    // data with RST. A bare FIN discards nothing: like TCP, no RST for it.
                    if !bare {
                        refuse = Some(ResetCode::StreamClosed);
                    }
                    remove = true;
                } else if stale {
                    // Shut for reading only: the data is discarded and its credit returned,
                    // so the peer's writes keep flowing (a WINDOW per half window).
                    e.recv_limit += charge;
                    e.discarded += charge;
                    if e.discarded >= self.cfg.stream_window as u64 / 2 {
                        e.discarded = 0;
                        stream_limit = Some(e.recv_limit);
                    }
                }
                if e.fin_seq.is_some_and(|f| e.received.complete_through(f)) {
                    e.recv_done = true;
                }
                remove |= e.recv_done && e.send_done;
            }
            if remove {
                st.remove(id);
            }
            if stale {
                st.recv.consume(charge, Instant::now(), None)
            } else {
                None
            }
        };
        if let Some(w) = wake {
            w.wake();
        }
        if let Some(code) = refuse {
            self.send_control(Control::Reset { stream: id, code: code.to_u32() });
        }
        self.refuse_streams(&refused);
        if let Some(limit) = stream_limit {
            self.send_control_twice(Control::Window { stream: id, limit });
        }
        if let Some(limit) = session_limit {
            self.send_control_twice(Control::Window { stream: 0, limit });
        }
        Ok(())
    }

    fn on_control(&self, t: usize, c: Control) -> Result<(), String> {
        match c {
            Control::Window { stream: 0, limit } => {
                if self.credit.raise(limit) {
                    let _closed = self.credit_closed.lock();
                    self.credit_cv.notify_all();
                }
            }
            Control::Window { stream, limit } => {
                if let Some(s) = self.lookup(stream)? {
                    s.raise_window(limit);
                }
            }
            Control::Reset { stream, code } if ResetCode::from_u32(code) == ResetCode::StreamClosed => {
                // The peer stopped reading: only our sending direction ends (writes fail, as
                // with EPIPE); what the peer sent us is still delivered up to its FIN.
                let mut refused = Vec::new();
                let shared = {
                    let mut st = self.state.lock();
                    if self.classify(&mut st, stream)? {
                        refused = self.arrived(&mut st, stream, None, Instant::now());
                    }
                    st.streams.get_mut(&stream).map(|e| {
                        e.send_done = true;
                        (e.shared.clone(), e.recv_done)
                    })
                };
                self.refuse_streams(&refused);
                let Some((shared, recv_done)) = shared else { return Ok(()) };
                if recv_done {
                    self.state.lock().remove(stream);
                }
                shared.reset(ResetCode::StreamClosed, true);
                self.after_send_side_reset(stream);
            }
            Control::Reset { stream, code } => {
                let mut refused = Vec::new();
                let entry = {
                    let mut st = self.state.lock();
                    if self.classify(&mut st, stream)? {
                        refused = self.arrived(&mut st, stream, None, Instant::now());
                    }
                    st.remove(stream)
                };
                self.refuse_streams(&refused);
                if let Some(e) = entry {
                    let code = ResetCode::from_u32(code);
                    // The send side first, so that once a read has reported the reset, writes
                    // report it too.
                    e.shared.reset(code, true);
                    self.after_send_side_reset(stream);
                    let _ = e.tx.send(Inbound::Reset { code, remote: true });
                }
            }
            Control::Ack { tunnel, generation, frames } => self.on_ack(tunnel, generation, frames)?,
            Control::Ping(token) => self.send_tunnel_control(t, Control::Pong(token)),
            Control::Pong(token) => {
                let now = Instant::now();
                let at = self.clock_ns(now);
                let tun = &self.tunnels[t];
                // A stale tunnel's round trip includes however long it stood still: not a
                // sample of the path (it would inflate the stale timeout derived from it).
                if token <= at && tun.state() != crate::TunnelState::Stale {
                    self.record_rtt(t, now, std::time::Duration::from_nanos(at - token));
                }
                // A stale tunnel that answers a probe moves again.
                self.tunnel_moves(t, tun.generation());
            }
            Control::GoAway(_) => {
                // The accept queue stays open for the streams the peer opened before (see
                // `admit`); accepts end when the session does.
                self.state.lock().peer_going_away = true;
            }
        }
        Ok(())
    }

    /// Stream `id`'s sending side was reset by the peer: wake its writers (also those waiting
    /// for session credit) and drop its queued frames.
    fn after_send_side_reset(&self, id: u32) {
        {
            let _closed = self.credit_closed.lock();
            self.credit_cv.notify_all();
        }
        if self.sched.lock().drop_stream(id) > 0 {
            self.room.notify_all();
        }
    }

    /// The shared part of stream `id`, checking that the id is legal. `None` when the stream
    /// has ended (or, for a peer id, has not started).
    fn lookup(&self, id: u32) -> Result<Option<Arc<StreamShared>>, String> {
        let st = self.state.lock();
        if !st.ids.is_peer(id) {
            st.ids.check_local(id).map_err(|e| e.to_string())?;
        }
        Ok(st.streams.get(&id).map(|e| e.shared.clone()))
    }
}
