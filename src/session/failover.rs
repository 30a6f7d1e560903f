//! Tunnel failover: acknowledgements, re-sending what a dead or stale tunnel did not deliver,
//! filling a slot with a re-joined connection, and keeping the session through an outage.
//! The decisions are the pure state machines of `core` (`ReplayQueue`, `AckTracker`,
//! `Scheduler`); this file applies them to the session's tunnels.
//!
//! ```text
//!  tunnel dies ──▶ its unacknowledged frames are re-sent on the others (each frame once per
//!   │              event, never on the generation that failed), TunnelLost
//!   ├─ others live ──▶ the client re-dials the slot ──▶ TunnelRejoined (generation + 1)
//!   └─ none live ──▶ outage: OutageStarted; blocked calls wait; frames wait in the scheduler
//!                     ├─ a tunnel re-joins within resume_timeout ──▶ Resumed
//!                     └─ resume_timeout passes ──▶ Closed(Expired)
//! ```

use super::frames::ReadEnd;
use super::stats::Event;
use super::tunnel::{self, Conn};
use super::{Inner, CLOSED, OPEN};
use crate::core::ack::ACK_DELAY;
use crate::core::replay::{frame_charge, Handover};
use crate::error::CloseReason;
use crate::proto::frame::Control;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shortest stale timeout derived from the round trip.
const STALE_FLOOR: Duration = Duration::from_millis(250);

impl Inner {
    /// A frame that counts in ACKs, `len` bytes on the wire, arrived at `now` on generation
    /// `generation` of tunnel `t`: acknowledge now if enough is owed.
    pub(super) fn frame_arrived(&self, t: usize, generation: u32, len: usize, now: Instant) {
        let ack = {
            let mut a = self.tunnels[t].acks.lock();
            if a.generation() != generation {
                return;
            }
            let first = !a.owed();
            a.on_frame(len, now);
            if first {
                // The supervisor sends the ACK if nothing else does before ACK_DELAY.
                self.nudge_supervisor();
            }
            if a.due(now, ACK_DELAY, self.ack_bytes) {
                a.take()
            } else {
                None
            }
        };
        if let Some((generation, frames)) = ack {
            self.send_ack(t, generation, frames);
        }
    }

    pub(super) fn send_ack(&self, t: usize, generation: u32, frames: u64) {
        self.acks_sent.fetch_add(if self.tunnels.len() > 1 { 2 } else { 1 }, Relaxed);
        self.send_control_twice(Control::Ack { tunnel: t as u16, generation, frames });
    }

    /// Send every ACK that has waited `ACK_DELAY`; returns whether any frame still waits for
    /// one.
    pub(super) fn flush_acks(&self, now: Instant) -> bool {
        let mut owed = false;
        for (t, tun) in self.tunnels.iter().enumerate() {
            let ack = {
                let mut a = tun.acks.lock();
                if a.due(now, ACK_DELAY, self.ack_bytes) {
                    a.take()
                } else {
                    owed |= a.owed();
                    None
                }
            };
            if let Some((generation, frames)) = ack {
                self.send_ack(t, generation, frames);
            }
        }
        owed
    }

    /// The peer's ACK: it received `frames` counted frames on generation `generation` of our
    /// tunnel `tunnel`.
    pub(super) fn on_ack(&self, tunnel: u16, generation: u32, frames: u64) -> Result<(), String> {
        let t = tunnel as usize;
        let tun =
            self.tunnels.get(t).ok_or_else(|| format!("ACK for tunnel {t} of {}", self.tunnels.len()))?;
        // Frames handed over for re-sending that arrived after all are not sent again.
        let arrived = self.sched.lock().drop_acknowledged(t, generation, frames);
        if !arrived.is_empty() {
            self.credit_acknowledged(arrived.iter().map(|f| frame_charge(f)).sum());
            for f in arrived {
                self.pool.give(f);
            }
        }
        let released = {
            let mut r = tun.replay.lock();
            if r.generation != generation {
                // An ACK of an earlier connection of the slot: its frames were handed over.
                return Ok(());
            }
            r.queue.ack(frames, Instant::now()).map_err(|e| format!("tunnel {t}: {e}"))?
        };
        self.credit_acknowledged(released.charge);
        for f in released.frames {
            self.pool.give(f);
        }
        if released.progressed {
            self.tunnel_moves(t, generation);
        }
        Ok(())
    }

    /// Generation `generation` of tunnel `t` delivers again (an ACK advanced, or a probe was
    /// answered): if it was stale, it takes frames again.
    pub(super) fn tunnel_moves(&self, t: usize, generation: u32) {
        let tun = &self.tunnels[t];
        if tun.set_stale(generation, false) {
            self.sched.lock().set_stale(t, generation, false);
            tun.wake.notify_one();
            self.push_event(Event::TunnelRecovered { index: t, generation });
        }
    }

    /// When a stream whose reorder gap would expire at `deadline` gives up: time without any
    /// tunnel does not count (the missing frames wait for one), so during an outage the wait
    /// is renewed, and after a resumption the gap gets its full timeout again.
    pub(super) fn reorder_deadline(&self, deadline: Instant) -> Instant {
        let timeout = self.cfg.reorder_timeout;
        if self.outage.lock().is_some() {
            return Instant::now() + timeout;
        }
        match *self.resumed_at.lock() {
            Some(t) => deadline.max(t + timeout),
            None => deadline,
        }
    }

    /// Tunnels with a working connection.
    pub(super) fn live_tunnels(&self) -> usize {
        self.tunnels.iter().filter(|t| !t.is_dead()).count()
    }

    /// The stale timeout in force: configured, or derived from the smoothed round trip.
    pub(super) fn stale_timeout(&self) -> Duration {
        self.cfg.stale_timeout.unwrap_or_else(|| (self.rtt().1.unwrap_or_default() * 4).max(STALE_FLOOR))
    }

    /// Re-send the frames generation `generation` of tunnel `t` held when it failed; counts
    /// them. Returns how many.
    fn reinject(&self, t: usize, generation: u32, h: Handover) -> u64 {
        let n = h.frames.len() as u64;
        let bytes: usize = h.frames.iter().map(Vec::len).sum();
        let c = &self.tunnels[t].counters;
        c.frames_resent.fetch_add(n, Relaxed);
        c.bytes_resent.fetch_add(bytes as u64, Relaxed);
        self.resend(t, generation, h.frames, Some(h.first));
        n
    }

    /// Mark stalled tunnels stale and re-send what they hold (supervisor). Returns whether
    /// any tunnel holds unacknowledged frames.
    pub(super) fn check_stale(&self, now: Instant) -> bool {
        let timeout = self.stale_timeout();
        let mut holding = false;
        for (t, tun) in self.tunnels.iter().enumerate() {
            if tun.is_dead() {
                continue;
            }
            let (generation, frames) = {
                let mut r = tun.replay.lock();
                if !r.queue.stalled(now, timeout) {
                    holding |= !r.queue.is_empty();
                    continue;
                }
                // The only tunnel that takes frames is never set aside: there is nowhere
                // else to send them.
                let others = self.tunnels.iter().any(|o| o.index != t && o.is_usable());
                if tun.is_usable() && !others {
                    holding = true;
                    continue;
                }
                (r.generation, r.queue.take_all())
            };
            let became_stale = tun.set_stale(generation, true);
            if became_stale {
                self.sched.lock().set_stale(t, generation, true);
                // Probe it: an answer means it moves again.
                self.send_tunnel_control(t, Control::Ping(self.clock_ns(now)));
            }
            let resent = self.reinject(t, generation, frames);
            if became_stale {
                let live = self.tunnels.iter().filter(|o| o.is_usable()).count();
                self.push_event(Event::TunnelStale { index: t, generation, frames_resent: resent, live });
            }
        }
        holding
    }

    /// A tunnel's reader stopped; decide what that means for the session.
    pub(super) fn tunnel_ended(&self, t: usize, generation: u32, end: ReadEnd) {
        let tun = &self.tunnels[t];
        let why = match &end {
            ReadEnd::Eof => "closed by the peer".to_string(),
            ReadEnd::Closed => "closed".to_string(),
            ReadEnd::Silent(d) => format!("silent for {:.1}s (keepalive timeout)", d.as_secs_f64()),
            ReadEnd::Io(e) => e.to_string(),
            ReadEnd::Protocol(why) => format!("protocol violation: {why}"),
            ReadEnd::Killed(why) => why.clone(),
        };
        {
            // Everything from the death of the generation to its report happens in order with
            // other tunnels' deaths and with re-joins: a slot's loss is always reported before
            // its re-join, and exactly one loss starts an outage.
            let in_order = self.lost_lock.lock();
            let Some(frames) = tun.mark_dead(generation, &why) else { return };
            {
                let mut s = self.sched.lock();
                s.tunnel_dead(t, generation);
                tun.wake.notify_all();
            }
            if let ReadEnd::Protocol(why) = end {
                drop(in_order);
                self.fail(CloseReason::Protocol(why));
                return;
            }
            let going_away = self.state.lock().peer_going_away;
            let phase = self.phase.load(Relaxed);
            let live = self.live_tunnels();
            if phase != OPEN || going_away {
                // An expected end: we or the peer are closing.
                drop(in_order);
                if live == 0 {
                    self.fail(if phase == OPEN { CloseReason::Peer } else { CloseReason::Local });
                }
                return;
            }
            let resent = self.reinject(t, generation, frames);
            self.push_event(Event::TunnelLost {
                index: t,
                generation,
                reason: why.clone(),
                frames_resent: resent,
                live,
            });
            if live == 0 {
                if !self.resumable {
                    drop(in_order);
                    self.fail(CloseReason::TunnelsLost(format!("tunnel {t} {why}")));
                    return;
                }
                let mut outage = self.outage.lock();
                if outage.is_none() {
                    *outage = Some(Instant::now());
                    self.push_event(Event::OutageStarted { resume_for: self.cfg.resume_timeout });
                }
            }
        }
        // ACKs sent on the dead tunnel may be lost with it; they are cumulative, so sending
        // the latest again is harmless. The dead tunnel's own count tells the peer which of the
        // frames it is about to re-send arrived after all.
        for (u, other) in self.tunnels.iter().enumerate() {
            if let Some((g, n)) = other.acks.lock().current() {
                self.send_ack(u, g, n);
            }
        }
        self.wake_supervisor();
    }

    /// Fill slot `t` with a re-joined connection `conn` (a newer generation) and start its
    /// threads. The previous generation, if still alive here, ends first (its frames are
    /// re-sent, possibly on the new one).
    pub(crate) fn attach(self: &Arc<Self>, t: usize, conn: Arc<Conn>) -> std::io::Result<()> {
        let _one_at_a_time = self.attach_lock.lock();
        let tun = &self.tunnels[t];
        let old = tun.generation();
        if conn.generation <= old {
            conn.kill("out-of-date generation");
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a newer generation re-joined first",
            ));
        }
        if !tun.is_dead() {
            self.tunnel_ended(t, old, ReadEnd::Killed("replaced by a re-joined connection".into()));
        }
        if self.phase.load(Relaxed) == CLOSED {
            conn.kill("session closed");
            return Ok(());
        }
        let generation = conn.generation;
        {
            let _in_order = self.lost_lock.lock();
            let after = tun.install(conn.clone());
            self.sched.lock().revive(t, generation);
            self.push_event(Event::TunnelRejoined { index: t, generation, after });
            if let Some(since) = self.outage.lock().take() {
                *self.resumed_at.lock() = Some(Instant::now());
                self.resumes.fetch_add(1, Relaxed);
                self.push_event(Event::Resumed { after: since.elapsed() });
            }
        }
        if let Err(e) = self.spawn_conn_threads(t, conn) {
            self.tunnel_ended(t, generation, ReadEnd::Killed(format!("cannot start its threads: {e}")));
            return Err(e);
        }
        // Frames waiting for a tunnel (re-sent ones, or everything during an outage).
        tun.wake.notify_one();
        Ok(())
    }

    /// Start the reader and writer of connection `conn` of slot `t`.
    pub(super) fn spawn_conn_threads(self: &Arc<Self>, t: usize, conn: Arc<Conn>) -> std::io::Result<()> {
        for (kind, body) in [("r", tunnel::reader as fn(Arc<Inner>, usize, Arc<Conn>)), ("w", tunnel::writer)]
        {
            let inner = self.clone();
            let c = conn.clone();
            self.spawn(&format!("mtmux-{kind}{t}"), move || body(inner, t, c))?;
        }
        Ok(())
    }

    /// Whether an outage has outlasted `resume_timeout` (supervisor): then the session
    /// expires. Returns when it will, if an outage is under way.
    pub(super) fn check_outage(&self, now: Instant) -> Option<Instant> {
        let since = (*self.outage.lock())?;
        let deadline = since + self.cfg.resume_timeout;
        if now >= deadline {
            self.fail(CloseReason::Expired(format!(
                "no tunnel came back within the resume timeout ({:?})",
                self.cfg.resume_timeout
            )));
            return None;
        }
        Some(deadline)
    }

    /// Queue a failover event for [`Session::next_event`](crate::Session::next_event); the
    /// oldest unread one makes room when the queue is full.
    pub(super) fn push_event(&self, e: Event) {
        if let Err(crossbeam_channel::TrySendError::Full(e)) = self.events_tx.try_send(e) {
            let _ = self.events_rx.try_recv();
            self.events_dropped.fetch_add(1, Relaxed);
            let _ = self.events_tx.try_send(e);
        }
    }
}

impl Inner {
    /// Whether the session takes re-joins now (open, not closing).
    pub(crate) fn takes_rejoins(&self) -> bool {
        self.phase.load(Relaxed) == OPEN && !self.state.lock().peer_going_away
    }

    /// Check a REJOIN against the session: a slot of this bundle, the same count and
    /// parameters as at JOIN, and a generation newer than the slot's.
    pub(crate) fn check_rejoin(
        &self,
        h: &crate::proto::handshake::Hello,
    ) -> Result<(), (crate::proto::handshake::Status, String)> {
        use crate::proto::handshake::Status;
        if !self.takes_rejoins() {
            return Err((Status::UnknownSession, "the session is closing".into()));
        }
        if h.count as usize != self.tunnels.len() || h.params != self.peer {
            return Err((
                Status::Conflict,
                "the re-join disagrees with the session's tunnel count or parameters".into(),
            ));
        }
        let current = self.tunnels[h.index as usize].generation();
        if h.generation <= current {
            return Err((
                Status::StaleGeneration,
                format!("tunnel {} is at generation {current}; {} is not newer", h.index, h.generation),
            ));
        }
        Ok(())
    }

    /// Count a refused re-join.
    pub(crate) fn rejoin_refused(&self) {
        self.rejoins_refused.fetch_add(1, Relaxed);
    }
}
