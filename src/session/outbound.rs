//! Sending: how application threads and the session put frames on the tunnels. Small frames
//! go straight to a free tunnel from the calling thread; large ones too while enough
//! application threads write to keep every tunnel busy; otherwise, and whenever no tunnel takes
//! a frame at once, it waits in the scheduler for the first tunnel writer with room.
//!
//! Whoever writes a frame that counts in ACKs keeps it in that tunnel's replay buffer, under
//! the tunnel's write lock, so the buffer's order is the order on the wire.

use super::tunnel::TunnelTx;
use super::Inner;
use crate::core::replay::Pushed;
use crate::proto::frame::Control;
use std::io::IoSlice;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Largest DATA payload an application thread always tries to write to a tunnel itself.
/// Small frames go out without a thread hand-off (latency). Larger ones go direct only while
/// at least as many application threads are writing as there are tunnels; otherwise they are
/// queued so that the tunnel writers send them in parallel (a send also costs the kernel's TCP
/// work, so one thread sending everything over N tunnels would move no more than one TCP
/// connection does).
pub(super) const DIRECT_MAX: usize = 16 * 1024;

/// How long a large frame may wait for a busy tunnel before it is queued instead.
pub(super) const DIRECT_PATIENCE: Duration = Duration::from_micros(200);

/// Which tunnels a direct write may use, and where it starts looking.
#[derive(Clone, Copy, Debug)]
pub(super) enum Pick {
    /// Only this tunnel (even a stale one).
    Only(usize),
    /// Any usable tunnel, starting with the one the last small frame went to. Consecutive
    /// small frames share a tunnel: the peer's reader, woken by the first, often finds the
    /// next one already there (a close followed by the next stream's first write, a reply
    /// after a window update), so a frame costs the peer less than a thread wake-up each.
    Sticky,
    /// Any usable tunnel, each write starting at the next one (large frames: the load goes
    /// over all tunnels, whose kernel work runs in parallel).
    Spread,
    /// Any usable tunnel but this one (the second copy of a control frame).
    Besides(usize),
}

impl Inner {
    /// Write one encoded frame straight to a tunnel that `pick` allows, without blocking on a
    /// socket: only to a tunnel whose writer is not busy, only if the socket takes at least
    /// part of it (a partly written frame is finished by that tunnel's writer). `counted`: the
    /// frame counts in ACKs and is kept for replay. With `patience`, when every tunnel is busy
    /// (usually other application threads in short non-blocking sends), wait that long for
    /// one of them rather than give up. Returns the tunnel, or hands the frame back if none
    /// took it.
    pub(super) fn try_direct(
        &self,
        frame: Vec<u8>,
        counted: bool,
        pick: Pick,
        patience: Option<Duration>,
    ) -> Result<usize, Vec<u8>> {
        let n = self.tunnels.len();
        let (start, count) = match pick {
            Pick::Only(t) => (t, 1),
            Pick::Sticky => (self.next_tunnel.load(Relaxed) % n, n),
            Pick::Spread => (self.next_tunnel.fetch_add(1, Relaxed) % n, n),
            Pick::Besides(t) => ((t + 1) % n, n - 1),
        };
        let eligible = |t: usize| {
            let tun = &self.tunnels[t];
            if let Pick::Only(_) = pick {
                !tun.is_dead()
            } else {
                // A tunnel much slower than the others gets only what the scheduler gives it.
                tun.is_usable() && !tun.slow.load(Relaxed)
            }
        };
        for k in 0..count {
            let t = (start + k) % n;
            if !eligible(t) {
                continue;
            }
            if let Some(mut tx) = self.tunnels[t].tx.try_lock() {
                if self.send_locked(t, &mut tx, &frame, counted) {
                    self.committed(t, &tx, frame, counted);
                    if k > 0 && matches!(pick, Pick::Sticky) {
                        self.next_tunnel.store(t, Relaxed);
                    }
                    return Ok(t);
                }
            }
        }
        if let Some(p) = patience.filter(|_| eligible(start)) {
            if let Some(mut tx) = self.tunnels[start].tx.try_lock_for(p) {
                if self.send_locked(start, &mut tx, &frame, counted) {
                    self.committed(start, &tx, frame, counted);
                    return Ok(start);
                }
            }
        }
        Err(frame)
    }

    /// `frame` went to tunnel `t` (whose write lock the caller holds): keep it for replay if
    /// it counts in ACKs, recycle it otherwise.
    fn committed(&self, t: usize, tx: &TunnelTx, frame: Vec<u8>, counted: bool) {
        match (counted, &tx.conn) {
            (true, Some(c)) => self.keep_for_replay(t, c.generation, [frame]),
            _ => self.pool.give(frame),
        }
    }

    /// Frames that count in ACKs are about to be written to generation `generation` of
    /// tunnel `t` (whose write lock the caller holds): an ACK may overtake their record.
    pub(super) fn announce(&self, t: usize, generation: u32, n: usize) {
        let mut r = self.tunnels[t].replay.lock();
        if r.generation == generation {
            r.queue.announce(n);
        }
    }

    /// Keep `frames`, just written to generation `generation` of tunnel `t` (announced
    /// before, under the write lock the caller still holds), until the peer acknowledges them.
    /// Frames already acknowledged are released; those the generation can no longer take (it
    /// died meanwhile) are re-sent elsewhere.
    pub(super) fn keep_for_replay(
        &self,
        t: usize,
        generation: u32,
        frames: impl IntoIterator<Item = Vec<u8>>,
    ) {
        let (mut back, mut done, mut charge) = (Vec::new(), Vec::new(), 0);
        let started = {
            let mut r = self.tunnels[t].replay.lock();
            let current = r.generation == generation;
            let was_empty = r.queue.is_empty();
            // The time matters only when frames start waiting (stall detection).
            let now = if was_empty { Instant::now() } else { self.epoch };
            for f in frames {
                if !current {
                    back.push(f);
                    continue;
                }
                match r.queue.push(f, now) {
                    Pushed::Kept => {}
                    Pushed::Acknowledged(f, c) => {
                        charge += c;
                        done.push(f);
                    }
                    Pushed::Refused(f) => back.push(f),
                }
            }
            was_empty && !r.queue.is_empty()
        };
        self.credit_acknowledged(charge);
        for f in done {
            self.pool.give(f);
        }
        if started {
            // Frames now wait for an ACK: the supervisor watches for a stall.
            self.nudge_supervisor();
        }
        self.resend(t, generation, back, None);
    }

    /// The peer acknowledged `charge`: writers waiting for session credit may go on.
    pub(super) fn credit_acknowledged(&self, charge: u64) {
        if charge > 0 {
            self.credit.acknowledge(charge);
            let _closed = self.credit_closed.lock();
            self.credit_cv.notify_all();
        }
    }

    /// The non-blocking send of [`try_direct`](Self::try_direct) on tunnel `t`, whose write
    /// lock the caller holds. Returns whether the frame is committed to the tunnel (whole, or
    /// its rest left for the writer).
    fn send_locked(&self, t: usize, tx: &mut TunnelTx, frame: &[u8], counted: bool) -> bool {
        let tun = &self.tunnels[t];
        let Some(conn) = tx.conn.clone() else { return false };
        if !tx.pending.is_empty() || conn.wire.has_unsent() {
            return false;
        }
        if counted {
            self.announce(t, conn.generation, 1);
        }
        let taken = match conn.wire.send_vectored(&[IoSlice::new(frame)], true) {
            Ok(sent) if sent == frame.len() => {
                tun.count_sent(sent, 1);
                // TLS keeps the ciphertext the socket did not take: the writer sends it.
                if conn.wire.has_unsent() && self.sched.lock().push_flush(t) {
                    tun.wake.notify_one();
                }
                true
            }
            Ok(sent) => {
                tx.pending.extend_from_slice(&frame[sent..]);
                tun.count_sent(sent, 1);
                if self.sched.lock().push_flush(t) {
                    tun.wake.notify_one();
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => {
                // The reader notices and does the bookkeeping.
                conn.kill(&format!("write failed: {e}"));
                false
            }
        };
        if counted && !taken {
            let mut r = tun.replay.lock();
            if r.generation == conn.generation {
                r.queue.withdraw(1);
            }
        }
        taken
    }

    /// Send an encoded DATA frame of stream `id`: small ones straight to a free tunnel, large
    /// ones (and any a tunnel would not take at once) queued for the tunnel writers.
    /// Returns whether the frame was queued (the caller then respects the queue's limit).
    pub(super) fn send_data(&self, id: u32, frame: Vec<u8>) -> bool {
        let large = frame.len() > DIRECT_MAX;
        let direct = !large || self.writers.load(Relaxed) >= self.tunnels.len();
        // A large frame waits a little for a busy tunnel: queueing it costs a thread hand-off.
        let (pick, patience) =
            if large { (Pick::Spread, Some(DIRECT_PATIENCE)) } else { (Pick::Sticky, None) };
        let frame = if direct {
            match self.try_direct(frame, true, pick, patience) {
                Ok(_) => return false,
                Err(f) => f,
            }
        } else {
            frame
        };
        let wake = self.sched.lock().push_data(id, frame);
        if let Some(t) = wake {
            self.tunnels[t].wake.notify_one();
        }
        true
    }

    /// Wait until the scheduler has room for more DATA (or `deadline` passes, or the session
    /// closes). Returns false on timeout.
    pub(super) fn wait_room(&self, deadline: Option<Instant>) -> bool {
        let mut s = self.sched.lock();
        while !s.has_room() && !self.is_closed() {
            match deadline {
                Some(d) => {
                    if self.room.wait_until(&mut s, d).timed_out() {
                        return s.has_room();
                    }
                }
                None => self.room.wait(&mut s),
            }
        }
        true
    }

    /// Send a session-level control frame promptly (any usable tunnel).
    pub(super) fn send_control(&self, c: Control) {
        self.send_control_via(c, Pick::Sticky);
    }

    /// Send a session-level control frame promptly: directly to a usable tunnel that `pick`
    /// allows, or else to the first tunnel writer with room.
    fn send_control_via(&self, c: Control, pick: Pick) {
        if self.try_direct(c.encode(), c.counts_in_acks(), pick, None).is_ok() {
            return;
        }
        let wake = self.sched.lock().push_control(c);
        if let Some(t) = wake {
            self.tunnels[t].wake.notify_one();
        }
    }

    /// Send an idempotent control frame (WINDOW, ACK) twice: first on the tunnel that
    /// delivered to us most recently (it surely moves), then on another. A copy written into
    /// a tunnel that silently stopped moving would otherwise hold back the peer's credit or
    /// acknowledgements until that tunnel is found stale.
    pub(super) fn send_control_twice(&self, c: Control) {
        let counted = c.counts_in_acks();
        let first = self
            .freshest_tunnel()
            .and_then(|t| self.try_direct(c.encode(), counted, Pick::Only(t), None).ok());
        if first.is_none() {
            self.send_control(c);
        }
        if self.tunnels.len() > 1 {
            self.send_control_via(c, first.map_or(Pick::Spread, Pick::Besides));
        }
    }

    /// The usable tunnel on which a frame arrived last.
    fn freshest_tunnel(&self) -> Option<usize> {
        let usable = self.tunnels.iter().filter(|t| t.is_usable() && !t.slow.load(Relaxed));
        usable.max_by_key(|t| t.counters.last_rx_ns.load(Relaxed)).map(|t| t.index)
    }

    /// Send a control frame on tunnel `t` (ping answers must use the ping's tunnel).
    pub(super) fn send_tunnel_control(&self, t: usize, c: Control) {
        if self.try_direct(c.encode(), c.counts_in_acks(), Pick::Only(t), None).is_ok() {
            return;
        }
        if self.sched.lock().push_tunnel_control(t, c) {
            self.tunnels[t].wake.notify_one();
        }
    }

    /// Re-send `frames`, which generation `generation` of tunnel `t` failed to deliver (or
    /// could not take), on the other tunnels. `first`: the position of the first among the
    /// frames written to that generation, if known (an ACK of the generation may then show
    /// that some arrived after all).
    pub(super) fn resend(&self, t: usize, generation: u32, frames: Vec<Vec<u8>>, first: Option<u64>) {
        if frames.is_empty() {
            return;
        }
        let wake = self.sched.lock().push_resend(frames, t, generation, first);
        for w in wake {
            self.tunnels[w].wake.notify_one();
        }
    }
}
