//! Sending: how application threads and the session put frames on the tunnels. Small frames
//! go straight to a free tunnel from the calling thread; large ones too while enough
//! application threads write to keep every tunnel busy; otherwise, and whenever no tunnel takes
//! a frame at once, it waits in the scheduler for the first tunnel writer with room.

use super::tunnel;
use super::Inner;
use crate::error::ResetCode;
use crate::ffi::sys;
use crate::proto::frame::Control;
use std::io::IoSlice;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

/// Largest DATA payload an application thread always tries to write to a tunnel itself.
/// Small frames go out without a thread hand-off (latency). Larger ones go direct only while
/// at least as many application threads are writing as there are tunnels; otherwise they are
/// copied into the scheduler so that the tunnel writers send them in parallel (a send also
/// costs the kernel's TCP work, so one thread sending everything over N tunnels would move no
/// more than one TCP connection does).
pub(super) const DIRECT_MAX: usize = 16 * 1024;

/// How long a large frame may wait for a busy tunnel before it is queued instead.
pub(super) const DIRECT_PATIENCE: Duration = Duration::from_micros(200);

/// How many recent RESETs are remembered for resending after a tunnel failure.
pub(super) const RECENT_RESETS: usize = 1024;

impl Inner {
    /// Write `bufs` (one frame) straight to a free tunnel without blocking on a socket: only
    /// to a tunnel whose writer is not busy, only if the socket takes at least part of it. A
    /// partly written frame is finished by that tunnel's writer. `only` restricts to one
    /// tunnel. With `patience`, when every tunnel is busy (usually other application threads
    /// in short non-blocking sends), wait that long for one of them rather than give up.
    pub(super) fn try_direct(
        &self,
        bufs: &[IoSlice<'_>],
        only: Option<usize>,
        patience: Option<Duration>,
    ) -> bool {
        let n = self.tunnels.len();
        let (start, count) = match only {
            Some(t) => (t, 1),
            None => (self.next_tunnel.fetch_add(1, Relaxed) % n, n),
        };
        for k in 0..count {
            let t = (start + k) % n;
            if self.tunnels[t].is_dead() {
                continue;
            }
            if let Some(mut tx) = self.tunnels[t].tx.try_lock() {
                if self.send_locked(t, &mut tx, bufs) {
                    return true;
                }
            }
        }
        match patience {
            Some(p) if !self.tunnels[start].is_dead() => match self.tunnels[start].tx.try_lock_for(p) {
                Some(mut tx) => self.send_locked(start, &mut tx, bufs),
                None => false,
            },
            _ => false,
        }
    }

    /// The non-blocking send of [`try_direct`](Self::try_direct) on tunnel `t`, whose write
    /// lock the caller holds. Returns whether the frame is committed to the tunnel.
    pub(super) fn send_locked(&self, t: usize, tx: &mut tunnel::TunnelTx, bufs: &[IoSlice<'_>]) -> bool {
        let tun = &self.tunnels[t];
        if !tx.pending.is_empty() {
            return false;
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        match sys::send_vectored(&tun.sock, bufs, true) {
            Ok(sent) if sent == total => {
                tun.count_sent(total, 1);
                true
            }
            Ok(sent) => {
                let mut skip = sent;
                for b in bufs {
                    if skip >= b.len() {
                        skip -= b.len();
                    } else {
                        tx.pending.extend_from_slice(&b[skip..]);
                        skip = 0;
                    }
                }
                tun.count_sent(sent, 1);
                if self.sched.lock().push_flush(t) {
                    tun.wake.notify_one();
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(_) => {
                // The reader notices and does the bookkeeping.
                tun.kill();
                false
            }
        }
    }

    /// Send a DATA frame: small ones straight to a free tunnel, large ones (and any a tunnel
    /// would not take at once) queued for the tunnel writers.
    /// Returns whether the frame was queued (the caller then respects the queue's limit).
    pub(super) fn send_data(&self, id: u32, header: &[u8], payload: &[u8]) -> bool {
        let large = payload.len() > DIRECT_MAX;
        let direct = !large || self.writers.load(Relaxed) >= self.tunnels.len();
        // A large frame waits a little for a busy tunnel: queueing it costs a copy and a
        // thread hand-off.
        let patience = large.then_some(DIRECT_PATIENCE);
        if direct && self.try_direct(&[IoSlice::new(header), IoSlice::new(payload)], None, patience) {
            return false;
        }
        let mut frame = self.pool.take(header.len() + payload.len());
        frame.extend_from_slice(header);
        frame.extend_from_slice(payload);
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

    /// Send a session-level control frame promptly (any tunnel).
    pub(super) fn send_control(&self, c: Control) {
        let bytes = c.encode();
        if self.try_direct(&[IoSlice::new(&bytes)], None, None) {
            return;
        }
        let wake = self.sched.lock().push_control(c);
        if let Some(t) = wake {
            self.tunnels[t].wake.notify_one();
        }
    }

    /// Send a control frame on tunnel `t` (ping answers must use the ping's tunnel).
    pub(super) fn send_tunnel_control(&self, t: usize, c: Control) {
        let bytes = c.encode();
        if self.try_direct(&[IoSlice::new(&bytes)], Some(t), None) {
            return;
        }
        if self.sched.lock().push_tunnel_control(t, c) {
            self.tunnels[t].wake.notify_one();
        }
    }

    /// Send a RESET and remember it for a while: unlike DATA, a control frame lost with a
    /// dying tunnel is not revealed by any gap, so it is sent again after a tunnel failure.
    pub(super) fn send_reset(&self, id: u32, code: ResetCode) {
        {
            let mut r = self.recent_resets.lock();
            if r.len() == RECENT_RESETS {
                r.pop_front();
            }
            r.push_back((id, code, Instant::now()));
        }
        self.send_control(Control::Reset { stream: id, code: code.to_u32() });
    }

    /// Queue several control frames at once (any tunnel).
    pub(super) fn queue_controls(&self, frames: impl IntoIterator<Item = Control>) {
        let mut s = self.sched.lock();
        let mut wake = Vec::new();
        for c in frames {
            wake.extend(s.push_control(c));
        }
        drop(s);
        for t in wake {
            self.tunnels[t].wake.notify_one();
        }
    }
}
