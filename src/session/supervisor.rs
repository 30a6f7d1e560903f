//! The session's supervisor thread (`mtmux-sup`): the timers of failover. It sends the
//! acknowledgements that nothing else triggered within `ACK_DELAY`, sets stalled tunnels
//! aside, re-dials lost tunnels (client), and ends a session whose outage outlasted
//! `resume_timeout`. It ticks every [`ACTIVE_TICK`] while frames wait for acknowledgement in
//! either direction and sleeps otherwise; the first frame after a quiet spell wakes it.

use super::tunnel::Conn;
use super::Inner;
use crate::config::Config;
use crate::core::backoff::Backoff;
use crate::error::{CloseReason, Error};
use crate::ffi::sys;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tick while frames wait for acknowledgement (the ACK delay, and stale detection's grain).
const ACTIVE_TICK: Duration = Duration::from_millis(10);
/// Longest sleep otherwise.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// Payload buffers a quiet session keeps.
const IDLE_POOL: usize = 8;

/// What a client needs to re-dial its tunnels.
pub(crate) struct Redial {
    /// Where each tunnel connects.
    pub(crate) targets: Vec<SocketAddr>,
    slots: Mutex<Vec<DialSlot>>,
}

struct DialSlot {
    /// No attempt before this.
    next_try: Instant,
    backoff: Backoff,
    /// An attempt is under way.
    busy: bool,
    /// When the last attempt started.
    last_start: Option<Instant>,
    /// Generation of the next attempt (every attempt uses a new one).
    next_generation: u32,
}

impl Redial {
    pub(crate) fn new(targets: Vec<SocketAddr>, cfg: &Config) -> Redial {
        let now = Instant::now();
        let slots = (0..targets.len())
            .map(|_| DialSlot {
                next_try: now,
                backoff: Backoff::new(cfg.rejoin_backoff_max),
                busy: false,
                last_start: None,
                next_generation: 1,
            })
            .collect();
        Redial { targets, slots: Mutex::new(slots) }
    }

    /// Start the attempts that are due; returns when the next one will be.
    fn start_due(&self, inner: &Arc<Inner>, now: Instant) -> Option<Instant> {
        let mut next = None;
        let mut slots = self.slots.lock();
        for (t, slot) in slots.iter_mut().enumerate() {
            let tun = &inner.tunnels[t];
            if slot.busy || tun.state() != crate::TunnelState::Dead {
                continue;
            }
            if now < slot.next_try {
                next = Some(next.map_or(slot.next_try, |n: Instant| n.min(slot.next_try)));
                continue;
            }
            let generation = slot.next_generation.max(tun.generation() + 1);
            slot.next_generation = generation + 1;
            slot.busy = true;
            slot.last_start = Some(now);
            tun.set_rejoining(true);
            let i = inner.clone();
            if inner.spawn_detached(&format!("mtmux-dial{t}"), move || dial(i, t, generation)).is_err() {
                slot.busy = false;
                tun.set_rejoining(false);
                slot.next_try = now + slot.backoff.failed(sys::random_u32());
            }
        }
        next
    }
}

impl Redial {
    /// Make every waiting re-dial due now, unless it last started less than
    /// [`REDIAL_NOW_GAP`] ago (a flood of new streams must not become a flood of dials).
    /// Returns whether any became due. The backoff itself goes on from where it was.
    fn due_now(&self, now: Instant) -> bool {
        let mut any = false;
        for slot in self.slots.lock().iter_mut() {
            let recent = slot.last_start.is_some_and(|s| now.saturating_duration_since(s) < REDIAL_NOW_GAP);
            if !slot.busy && !recent && slot.next_try > now {
                slot.next_try = now;
                any = true;
            }
        }
        any
    }
}

/// Least time between two attempts of a slot that [`Inner::redial_now`] brings forward.
const REDIAL_NOW_GAP: Duration = Duration::from_millis(100);

/// One re-dial attempt of slot `t` with generation `generation` (its own thread: connecting
/// and the handshake block for up to `handshake_timeout`).
fn dial(inner: Arc<Inner>, t: usize, generation: u32) {
    let redial = inner.redial.as_ref().expect("only clients dial");
    let result = crate::listener::rejoin(
        redial.targets[t],
        &inner.cfg,
        &inner.bundle,
        &inner.secret,
        t as u16,
        inner.tunnels.len() as u16,
        generation,
    )
    .and_then(|sock| Ok(Conn::new(sock, generation, inner.cfg.keepalive_timeout)?));
    let tun = &inner.tunnels[t];
    let outcome = match result {
        Ok(conn) if inner.phase.load(Relaxed) == super::OPEN => inner.attach(t, conn).map_err(Error::from),
        Ok(conn) => {
            conn.kill("session closing");
            Ok(())
        }
        Err(e) => Err(e),
    };
    let mut slots = redial.slots.lock();
    let slot = &mut slots[t];
    slot.busy = false;
    match outcome {
        Ok(()) => {
            slot.backoff.reset();
            slot.next_try = Instant::now();
        }
        Err(Error::SessionClosed(CloseReason::Expired(why))) => {
            drop(slots);
            inner.fail(CloseReason::Expired(why));
            return;
        }
        Err(e) => {
            tun.set_rejoining(false);
            inner.push_event(super::Event::RejoinFailed { index: t, error: e.to_string() });
            slot.next_try = Instant::now() + slot.backoff.failed(sys::random_u32());
        }
    }
    drop(slots);
    inner.wake_supervisor();
}

/// The supervisor thread of a session.
pub(crate) fn supervise(inner: Arc<Inner>) {
    loop {
        // Set before looking, so that a frame arriving meanwhile finds it set and wakes us.
        inner.sup_idle.store(true, Relaxed);
        if inner.is_closed() {
            return;
        }
        let now = Instant::now();
        let owed = inner.flush_acks(now);
        let holding = inner.check_stale(now);
        let mut wake_at = inner.check_outage(now);
        if inner.is_closed() {
            return;
        }
        if inner.takes_rejoins() {
            if let Some(r) = &inner.redial {
                if let Some(d) = r.start_due(&inner, now) {
                    wake_at = Some(wake_at.map_or(d, |w| w.min(d)));
                }
            }
        }
        let active = owed || holding;
        if active {
            inner.sup_idle.store(false, Relaxed);
        } else {
            // Quiet: give the buffers kept for a burst back to the allocator.
            inner.pool.trim(IDLE_POOL);
        }
        let tick = if active { ACTIVE_TICK } else { IDLE_TICK };
        let deadline = wake_at.map_or(now + tick, |w| w.min(now + tick));
        let mut g = inner.sup_lock.lock();
        // A nudge cleared the flag after we looked: look again at once.
        if (active || inner.sup_idle.load(Relaxed)) && !inner.is_closed() {
            inner.sup_cv.wait_until(&mut g, deadline);
        }
    }
}

impl Inner {
    /// A client in an outage (no tunnel live) re-dials its lost tunnels now rather than at the
    /// backoff's next attempt: someone wants to use the session (a new stream was opened).
    pub(crate) fn redial_now(&self) {
        if self.outage.lock().is_none() {
            return;
        }
        if self.redial.as_ref().is_some_and(|r| r.due_now(Instant::now())) {
            self.wake_supervisor();
        }
    }

    /// Wake the supervisor now (a tunnel died, a re-dial finished, the session closed).
    pub(crate) fn wake_supervisor(&self) {
        self.sup_idle.store(false, Relaxed);
        let _g = self.sup_lock.lock();
        self.sup_cv.notify_all();
    }

    /// Wake the supervisor if it sleeps its long sleep: frames now wait for acknowledgement.
    pub(crate) fn nudge_supervisor(&self) {
        if self.sup_idle.swap(false, Relaxed) {
            let _g = self.sup_lock.lock();
            self.sup_cv.notify_all();
        }
    }
}
