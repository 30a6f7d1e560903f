//! One tunnel slot of the bundle, the TCP connection that fills it, and that connection's two
//! threads. A slot outlives its connections: each re-join fills it with a new connection of a
//! new *generation*; frames and acknowledgements always name the generation they belong to,
//! so late traffic of a replaced connection is never confused with the new one.
//!
//! - the **reader** (`mtmux-r<i>`) decodes frames and hands them to the session
//!   (`Inner::handle_frame`), counts those that the peer expects an ACK for, and notices a
//!   silent peer (keepalive) at the exact deadline; it never blocks on anything but its socket.
//! - the **writer** (`mtmux-w<i>`) waits until its socket has room, then takes work from the
//!   scheduler (or finishes a frame an application thread started), writes it, and keeps what
//!   counts in ACKs in the slot's replay buffer. It also sends the tunnel's keepalive pings
//!   (every 200 ms while the tunnel carries data: the round trip under load).
//!
//! Application threads write to a tunnel directly when its writer is idle and the socket takes
//! the frame without blocking; that path needs no thread hand-off at all.

use super::frames::{is_timeout, FrameReader, ReadEnd};
use super::Inner;
use crate::core::ack::AckTracker;
use crate::core::replay::{Handover, ReplayQueue};
use crate::core::sched::Batch;
use crate::ffi::sys;
use crate::proto::frame::Control;
use crate::session::stats::TunnelState;
use crate::wire::Wire;
use parking_lot::{Condvar, Mutex};
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Unsent bytes the kernel may hold per tunnel before the socket counts as full.
pub(crate) const NOTSENT_LOWAT: u32 = 128 * 1024;
/// Most bytes a writer takes from the scheduler at once.
const BATCH_BUDGET: usize = 64 * 1024;
/// How soon a writer held back by the scheduler (its tunnel is much slower than the others)
/// looks again whether the backlog or the delays make it worth using.
const HELD_RECHECK: Duration = Duration::from_millis(10);
/// How often a writer samples its socket's `TCP_INFO` for the delay estimate (at most).
const SAMPLE_EVERY: Duration = Duration::from_millis(1);
/// Ping interval while the tunnel carries data (the round trip under load, queueing in both
/// directions, is what the receive windows must cover, and it changes with the load) or is
/// held as slow (its path delay is measured again).
const LOADED_PING: Duration = Duration::from_millis(200);
/// Bytes sent between two pings that make a tunnel busy.
const BUSY_BYTES: u64 = 64 * 1024;
/// How long a writer whose ping is due waits for its full socket at a time.
const PING_WAIT: Duration = Duration::from_millis(100);

/// One TCP connection (plain or TLS) filling a tunnel slot.
pub(crate) struct Conn {
    pub(crate) wire: Wire,
    /// Which connection of the slot this is.
    pub(crate) generation: u32,
    /// Addresses, recorded at start (a socket that has been shut down no longer reports its
    /// peer).
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
    /// Why this side ended the connection, once it did.
    killed: Mutex<Option<String>>,
}

impl Conn {
    /// Wrap a connection whose handshake is done, with the socket options a tunnel needs.
    pub(crate) fn new(wire: Wire, generation: u32, keepalive_timeout: Duration) -> io::Result<Arc<Conn>> {
        let sock = wire.sock();
        sock.set_nodelay(true)?;
        sock.set_write_timeout(None)?;
        sys::set_notsent_lowat(sock, NOTSENT_LOWAT)?;
        // Without it the kernel retries unacknowledged data for about 15 minutes.
        sys::set_user_timeout(sock, keepalive_timeout)?;
        Ok(Arc::new(Conn {
            local: wire.local_addr()?,
            peer: wire.peer_addr()?,
            wire,
            generation,
            killed: Mutex::new(None),
        }))
    }

    /// End the connection from this side (both threads and any blocked write return
    /// promptly); the first reason given is the one reported.
    pub(crate) fn kill(&self, why: &str) {
        self.killed.lock().get_or_insert_with(|| why.to_string());
        let _ = self.wire.shutdown(Shutdown::Both);
    }

    fn kill_reason(&self) -> Option<String> {
        self.killed.lock().clone()
    }
}

/// Write side of a tunnel slot, owned by whoever holds the lock.
pub(crate) struct TunnelTx {
    /// The connection writes go to; `None` while the slot is dead.
    pub(crate) conn: Option<Arc<Conn>>,
    /// Bytes that must be written before anything else: the rest of a frame an application
    /// thread started but the socket did not take whole.
    pub(crate) pending: Vec<u8>,
}

/// The frames kept for replay on a slot, and the generation they were written to.
pub(crate) struct SlotReplay {
    pub(crate) generation: u32,
    pub(crate) queue: ReplayQueue,
}

/// Counters of one tunnel slot (over all its generations).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    /// Last keepalive round trip in nanoseconds (0: none yet).
    pub(crate) rtt_ns: AtomicU64,
    /// When the last frame arrived (session clock, nanoseconds).
    pub(crate) last_rx_ns: AtomicU64,
    /// Frames of this slot re-sent on other tunnels, and their bytes.
    pub(crate) frames_resent: AtomicU64,
    pub(crate) bytes_resent: AtomicU64,
    /// Times the slot was re-joined.
    pub(crate) rejoins: AtomicU64,
}

const LIVE: u8 = 0;
const STALE: u8 = 1;
const DEAD: u8 = 2;
const REJOINING: u8 = 3;

/// One tunnel slot of the bundle.
pub(crate) struct Tunnel {
    /// Position in the bundle.
    pub(crate) index: usize,
    /// The current connection (the last one while the slot is dead). Its lock also orders the
    /// slot's life: death and re-join happen under it.
    conn: Mutex<Arc<Conn>>,
    /// Serialises writes; see the module doc for who may block while holding it.
    pub(crate) tx: Mutex<TunnelTx>,
    /// The writer waits here (paired with the session's scheduler mutex).
    pub(crate) wake: Condvar,
    /// [`TunnelState`] as a number, readable without a lock.
    state: AtomicU8,
    /// Generation of the current connection.
    generation: AtomicU32,
    /// Traffic counters.
    pub(crate) counters: Counters,
    /// Frames written to the current generation and not yet acknowledged.
    pub(crate) replay: Mutex<SlotReplay>,
    /// What arrived on the current generation and what was acknowledged to the peer.
    pub(crate) acks: Mutex<AckTracker>,
    /// When the slot lost its connection, while it has none.
    lost_at: Mutex<Option<Instant>>,
    /// The scheduler found the tunnel much slower than the others (see `core::path`): no
    /// direct writes go to it.
    pub(crate) slow: AtomicBool,
}

impl Tunnel {
    pub(crate) fn new(index: usize, conn: Arc<Conn>) -> Tunnel {
        let generation = conn.generation;
        Tunnel {
            index,
            conn: Mutex::new(conn.clone()),
            tx: Mutex::new(TunnelTx { conn: Some(conn), pending: Vec::new() }),
            wake: Condvar::new(),
            state: AtomicU8::new(LIVE),
            generation: AtomicU32::new(generation),
            counters: Counters::default(),
            replay: Mutex::new(SlotReplay { generation, queue: ReplayQueue::new() }),
            acks: Mutex::new(AckTracker::new(generation)),
            lost_at: Mutex::new(None),
            slow: AtomicBool::new(false),
        }
    }

    pub(crate) fn state(&self) -> TunnelState {
        match self.state.load(Relaxed) {
            LIVE => TunnelState::Live,
            STALE => TunnelState::Stale,
            DEAD => TunnelState::Dead,
            _ => TunnelState::Rejoining,
        }
    }

    /// Whether the slot has no working connection.
    pub(crate) fn is_dead(&self) -> bool {
        self.state.load(Relaxed) >= DEAD
    }

    /// Whether the tunnel takes new frames (live, not stale).
    pub(crate) fn is_usable(&self) -> bool {
        self.state.load(Relaxed) == LIVE
    }

    pub(crate) fn generation(&self) -> u32 {
        self.generation.load(Relaxed)
    }

    /// The current (or last) connection.
    pub(crate) fn conn(&self) -> Arc<Conn> {
        self.conn.lock().clone()
    }

    /// Mark live generation `generation` stale (`true`) or live again (`false`). Returns
    /// whether the state changed.
    pub(crate) fn set_stale(&self, generation: u32, stale: bool) -> bool {
        let _c = self.conn.lock();
        let (from, to) = if stale { (LIVE, STALE) } else { (STALE, LIVE) };
        self.generation() == generation && self.state.compare_exchange(from, to, Relaxed, Relaxed).is_ok()
    }

    /// Generation `generation` ended: kill its connection, mark the slot dead, and take the
    /// frames it holds for re-sending (at once, so that a re-join can never replace a replay
    /// buffer that still holds frames). `None` if this generation was already dead (each
    /// generation dies once).
    pub(crate) fn mark_dead(&self, generation: u32, why: &str) -> Option<Handover> {
        let c = self.conn.lock();
        if self.generation() != generation || self.is_dead() {
            return None;
        }
        c.kill(why);
        self.state.store(DEAD, Relaxed);
        *self.lost_at.lock() = Some(Instant::now());
        self.tx.lock().conn = None;
        let mut r = self.replay.lock();
        debug_assert_eq!(r.generation, generation);
        Some(r.queue.close())
    }

    /// A dead slot's re-dial starts (`true`) or failed (`false`).
    pub(crate) fn set_rejoining(&self, rejoining: bool) {
        let _c = self.conn.lock();
        let (from, to) = if rejoining { (DEAD, REJOINING) } else { (REJOINING, DEAD) };
        let _ = self.state.compare_exchange(from, to, Relaxed, Relaxed);
    }

    /// Fill the slot with `conn`, a newer generation. The caller has ended the previous
    /// generation (whose frames [`mark_dead`](Self::mark_dead) took). Returns how long the
    /// slot was without a connection.
    pub(crate) fn install(&self, conn: Arc<Conn>) -> Duration {
        let mut c = self.conn.lock();
        let generation = conn.generation;
        {
            let mut r = self.replay.lock();
            debug_assert!(r.queue.is_empty(), "a dead generation's frames were taken");
            *r = SlotReplay { generation, queue: ReplayQueue::new() };
        }
        *self.acks.lock() = AckTracker::new(generation);
        {
            let mut tx = self.tx.lock();
            tx.conn = Some(conn.clone());
            tx.pending.clear();
        }
        *c = conn;
        self.generation.store(generation, Relaxed);
        self.state.store(LIVE, Relaxed);
        self.counters.rejoins.fetch_add(1, Relaxed);
        self.lost_at.lock().take().map_or(Duration::ZERO, |t| t.elapsed())
    }

    pub(crate) fn count_sent(&self, bytes: usize, frames: usize) {
        self.counters.bytes_sent.fetch_add(bytes as u64, Relaxed);
        self.counters.frames_sent.fetch_add(frames as u64, Relaxed);
    }
}

/// The reader thread of tunnel `t`, generation `conn.generation`.
pub(crate) fn reader(inner: Arc<Inner>, t: usize, conn: Arc<Conn>) {
    let tun = &inner.tunnels[t];
    let cfg = &inner.cfg;
    let tick = (cfg.keepalive_timeout / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
    let mut timeout = tick;
    let _ = conn.wire.set_read_timeout(Some(timeout));
    let max_frame = cfg.max_frame_size as u32;
    let mut fr = FrameReader::new();
    let mut last_heard = Instant::now();
    let mut heard = tun.counters.bytes_received.load(Relaxed);
    let end = loop {
        match fr.next(&conn.wire, max_frame, &tun.counters.bytes_received, &inner.pool) {
            Ok(Some(frame)) => {
                last_heard = Instant::now();
                heard = tun.counters.bytes_received.load(Relaxed);
                tun.counters.last_rx_ns.store(inner.clock_ns(last_heard), Relaxed);
                tun.counters.frames_received.fetch_add(1, Relaxed);
                let counted = frame.counted_len();
                if let Err(why) = inner.handle_frame(t, frame) {
                    break ReadEnd::Protocol(why);
                }
                if let Some(len) = counted {
                    inner.frame_arrived(t, conn.generation, len, last_heard);
                }
            }
            Ok(None) => break ReadEnd::Eof,
            Err(ReadEnd::Io(e)) if is_timeout(&e) => {
                let now = Instant::now();
                let total = tun.counters.bytes_received.load(Relaxed);
                if total != heard {
                    heard = total;
                    last_heard = now;
                }
                let silence = now.duration_since(last_heard);
                if silence >= cfg.keepalive_timeout {
                    break ReadEnd::Silent(silence);
                }
                if inner.closing_expired(now) || tun.generation() != conn.generation || tun.is_dead() {
                    break ReadEnd::Closed;
                }
                // Wake at the keepalive deadline itself, not up to a tick after it.
                let next = tick.min(cfg.keepalive_timeout - silence).max(Duration::from_millis(1));
                if next != timeout {
                    timeout = next;
                    let _ = conn.wire.set_read_timeout(Some(timeout));
                }
            }
            Err(end) => break end,
        }
    };
    let end = match (conn.kill_reason(), end) {
        (_, ReadEnd::Protocol(why)) => ReadEnd::Protocol(why),
        (Some(why), _) => ReadEnd::Killed(why),
        (None, end) => end,
    };
    inner.tunnel_ended(t, conn.generation, end);
}

/// The writer thread of tunnel `t`, generation `conn.generation`.
pub(crate) fn writer(inner: Arc<Inner>, t: usize, conn: Arc<Conn>) {
    let tun = &inner.tunnels[t];
    let generation = conn.generation;
    let interval = inner.cfg.keepalive_interval;
    let mut batch = Batch::default();
    // Pings right away and a few times soon after measure the round trip before windows need
    // tuning (the first one may include the peer's start-up); then one per interval.
    let mut next_ping = Instant::now();
    let mut probes = [5u64, 50, 500].into_iter().map(Duration::from_millis);
    let mut after_ping = move || probes.next().unwrap_or(interval).min(interval);
    // Besides: a ping at most every LOADED_PING while the writer works and the tunnel is busy
    // (more went out since the last ping than pings and pongs) or held (a ping that queued
    // behind data may have made its path look long; an idle one measures it afresh). Checked
    // only when the writer runs anyway: an idle tunnel pings no more than before.
    let (mut last_ping, mut sent_at_ping) = (Instant::now(), 0u64);
    let loaded_ping_due = |now: Instant, last_ping: Instant, sent_at_ping: u64| {
        now.duration_since(last_ping) >= LOADED_PING.min(interval)
            && (tun.counters.bytes_sent.load(Relaxed) - sent_at_ping > BUSY_BYTES || tun.slow.load(Relaxed))
    };
    let gone = || tun.generation() != generation || tun.is_dead();
    let mut last_sample: Option<Instant> = None;
    loop {
        // Take work only when the socket has room, so the tunnel that can send soonest
        // takes the next frame.
        // A due ping waits for room like data (it measures the round trip under load).
        let until_ping = next_ping.saturating_duration_since(Instant::now());
        let wait = if until_ping.is_zero() { PING_WAIT } else { until_ping };
        match conn.wire.wait_writable(wait) {
            Ok(true) => {}
            Ok(false) => {
                if gone() {
                    return;
                }
                continue;
            }
            Err(e) => {
                conn.kill(&format!("poll failed: {e}"));
                return;
            }
        }
        let mut finishing = false;
        {
            let mut s = inner.sched.lock();
            loop {
                if gone() || inner.is_closed() {
                    s.clear_idle(t);
                    return;
                }
                // The delay estimate: a getsockopt, at most every SAMPLE_EVERY.
                let now = Instant::now();
                if last_sample.is_none_or(|at| now.duration_since(at) >= SAMPLE_EVERY) {
                    last_sample = Some(now);
                    if let Ok(sample) = sys::tcp_sample(conn.wire.sock()) {
                        s.record_sample(t, sample);
                    }
                    tun.slow.store(s.slow(t), Relaxed);
                }
                let mut ready = s.take_flush(t);
                if s.has_work_for(t) {
                    let frames = s.next_batch(t, BATCH_BUDGET, &mut batch);
                    if frames > 0 && s.at_low_water() {
                        inner.room.notify_all();
                    }
                    ready = true;
                }
                let now = Instant::now();
                if now >= next_ping || loaded_ping_due(now, last_ping, sent_at_ping) {
                    batch.push_control(Control::Ping(inner.clock_ns(now)));
                    if now >= next_ping {
                        next_ping = now + after_ping();
                    }
                    (last_ping, sent_at_ping) = (now, tun.counters.bytes_sent.load(Relaxed));
                    ready = true;
                }
                if ready {
                    break;
                }
                if inner.is_closing() {
                    // Nothing left for this tunnel (its GOAWAY went out with earlier work).
                    finishing = true;
                    break;
                }
                s.set_idle(t);
                let until = match s.held_back(t) {
                    true => next_ping.min(now + HELD_RECHECK),
                    false => next_ping,
                };
                tun.wake.wait_until(&mut s, until);
                s.clear_idle(t);
            }
        }
        let mut tx = tun.tx.lock();
        if !tx.conn.as_ref().is_some_and(|c| Arc::ptr_eq(c, &conn)) {
            // The generation ended while the batch was taken: it goes to another one.
            drop(tx);
            inner.resend(t, generation, std::mem::take(&mut batch.data), None);
            return;
        }
        inner.announce(t, generation, batch.data.len());
        let result = {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 + batch.data.len());
            if !tx.pending.is_empty() {
                slices.push(IoSlice::new(&tx.pending));
            }
            if !batch.control.is_empty() {
                slices.push(IoSlice::new(&batch.control));
            }
            slices.extend(batch.data.iter().map(|f| IoSlice::new(f)));
            let bytes: usize = slices.iter().map(|s| s.len()).sum();
            // Also what an earlier non-blocking TLS send left (it goes first).
            let r = conn.wire.write_all_vectored(&mut slices);
            if r.is_ok() {
                tun.count_sent(bytes, batch.frames());
            }
            r
        };
        tx.pending.clear();
        // Written, or perhaps partly written before an error: either way the frames wait for
        // the peer's acknowledgement (an error kills the generation, which re-sends them).
        inner.keep_for_replay(t, generation, batch.data.drain(..));
        if finishing && result.is_ok() {
            // Everything queued is out: half-close (with TLS after a close_notify, written
            // under the write lock like every write) so the peer reads end-of-stream after the
            // last frame, and keep reading until it closes too.
            let _ = conn.wire.close_write();
        }
        drop(tx);
        batch.clear();
        if let Err(e) = result {
            conn.kill(&format!("write failed: {e}"));
            return;
        }
        if finishing {
            return;
        }
    }
}
