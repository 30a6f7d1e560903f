//! A session: one bundle of tunnels carrying many streams, either side may open streams.
//!
//! # Threads
//! Two per tunnel connection, whatever the number of streams: a reader (`mtmux-r<i>`) and a
//! writer (`mtmux-w<i>`); see [`tunnel`]. One supervisor per session (`mtmux-sup`, the timers
//! of failover; see [`supervisor`]), and on a client a short-lived `mtmux-dial<i>` while a
//! lost tunnel is re-dialed. Application threads call into [`Stream`] and [`Session`] and
//! write frames straight to a tunnel when one is free.
//!
//! # Lifecycle
//! ```text
//!   Open ──close()/last handle dropped──▶ Closing ──all tunnels done──▶ Closed(Local)
//!     │                                  (GOAWAY sent, queued frames flushed, tunnels
//!     │                                   half-closed, peer's end awaited)
//!     ├──peer GOAWAY, then its tunnels end──────────────────────────▶ Closed(Peer)
//!     ├──last tunnel lost, resumption off or impossible─────────────▶ Closed(TunnelsLost)
//!     ├──last tunnel lost, no re-join within resume_timeout ─────────▶ Closed(Expired)
//!     └──peer breaks the protocol─────────────────────────────────────▶ Closed(Protocol)
//! ```
//! A tunnel lost while others live costs nothing but its share of the capacity until it
//! re-joins (see [`failover`]). Entering `Closed` fails every blocked call at once: streams
//! are removed from the table (their readers see their channel disconnect), waiting writers
//! and acceptors are notified, and every socket is shut down.
//!
//! The close reason is fixed when the session stops taking new streams (`Closing`, or the
//! peer's GOAWAY), before anything can fail with `SessionClosed`, and never changes after:
//! whoever sees a call fail then reads the same reason from `close_reason` (see
//! `State::close_reason`).
//!
//! # Files
//! `tunnel` (a tunnel slot, its connection and threads), `frames` (the frame decoder),
//! `inbound` (what a reader does with each frame), `accept` (peer-opened streams handed out
//! in opening order), `outbound` (how frames get onto tunnels),
//! `failover` (acknowledgements, re-sending, re-join, outage), `supervisor` (the timers and
//! re-dialing), `stream` (the `Stream` API), `incoming` (`Session::incoming`), `lifecycle`
//! (closing and failure), `stats` (also the tunnels' addresses), `pool` (recycled payload
//! buffers).
//!
//! # Locks (acquired in this order, never the reverse)
//! `tunnel.conn` → `tunnel.tx` → `tunnel.replay` / `tunnel.acks` / `sched`; `state` is never
//! held while taking another. The session credit is reserved without a lock (`credit_closed`
//! only guards waiting). Nobody blocks while holding a lock except a tunnel writer holding its
//! own `tunnel.tx`.

mod accept;
mod failover;
mod frames;
mod handoff;
mod inbound;
mod incoming;
mod lifecycle;
mod outbound;
mod pool;
mod stats;
mod stream;
pub(crate) mod supervisor;
mod table;
pub(crate) mod tunnel;

pub use incoming::IncomingStreams;
pub use stats::{Event, SessionStats, TunnelState, TunnelStats, EVENT_QUEUE};
pub use stream::Stream;

use crate::config::Config;
use crate::core::accept_order::AcceptOrder;
use crate::core::dedup::Ended;
use crate::core::ids::{Role, StreamIds};
use crate::core::rtt::MinRtt;
use crate::core::sched::Scheduler;
use crate::core::window::{RecvWindow, SharedSendWindow};
use crate::error::{CloseReason, Error, Result};
use crate::proto::auth::Secret;
use crate::proto::handshake::{BundleId, Params};
use crate::wire::Wire;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use stream::{Accepted, StreamShared};
use supervisor::Redial;
use table::Entry;
use tunnel::{Conn, Tunnel};

/// Ended streams whose received-frame state is kept to recognise late duplicates.
const ENDED_STREAMS: usize = 1024;

const OPEN: u8 = 0;
const CLOSING: u8 = 1;
const CLOSED: u8 = 2;

/// Session lifecycle (see the module doc).
enum Lifecycle {
    Open,
    /// Why: `Local`, or `Peer` when the peer's GOAWAY came first.
    Closing {
        deadline: Instant,
        reason: CloseReason,
    },
    Closed(CloseReason),
}

/// Session state under the `state` lock.
struct State {
    lifecycle: Lifecycle,
    ids: StreamIds,
    streams: HashMap<u32, Entry>,
    /// Session-level receive window (what all streams together may have in flight to us).
    recv: RecvWindow,
    /// Charge received on all streams.
    recv_total: u64,
    /// The peer sent GOAWAY: it opens no more streams and neither do we.
    peer_going_away: bool,
    /// Queue of streams opened by the peer, `None` once the session stops accepting.
    accept_tx: Option<Sender<Accepted>>,
    /// Peer-opened streams held until the lower ids arrive (see `accept`).
    order: AcceptOrder<Accepted>,
    /// Dropped when the session closes, which wakes every `select` on `closed_rx`.
    closed_tx: Option<Sender<()>>,
    /// What arrived of recently ended streams (see `core::dedup`).
    ended: Ended,
}

/// Everything a session's threads and handles share.
pub(crate) struct Inner {
    cfg: Config,
    role: Role,
    /// What the peer announced in the handshake.
    peer: Params,
    tunnels: Vec<Tunnel>,
    sched: Mutex<Scheduler>,
    /// Application writers wait here for room in the scheduler (with `sched`).
    room: Condvar,
    state: Mutex<State>,
    /// Session-level send credit, reserved without a lock by writers.
    credit: SharedSendWindow,
    /// Set when the session closes; writers waiting for credit wait on `credit_cv` with it.
    credit_closed: Mutex<Option<CloseReason>>,
    credit_cv: Condvar,
    /// Mirror of the lifecycle for lock-free checks.
    phase: AtomicU8,
    accept_rx: Receiver<Accepted>,
    /// Signalled when a stream is held for order, so that a waiting acceptor learns its
    /// deadline.
    order_wake_tx: Sender<()>,
    order_wake_rx: Receiver<()>,
    closed_rx: Receiver<()>,
    /// Disconnects when every session thread has exited (each holds a clone of the sender,
    /// and so does `exited_tx` until the session stops starting threads).
    exited_rx: Receiver<()>,
    exited_tx: Mutex<Option<Sender<()>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Time origin of ping tokens.
    epoch: Instant,
    /// Minimum round trip over the tunnels' recent keepalive samples (see `core::rtt`).
    min_rtt: Mutex<MinRtt>,
    /// `min_rtt` in nanoseconds (0: unknown), readable without the lock.
    min_rtt_ns: AtomicU64,
    /// Smoothed round trip over all tunnels' samples, nanoseconds (0: unknown): includes the
    /// queueing delay of loaded paths, which windows must cover too.
    srtt_ns: AtomicU64,
    /// Where the next direct write starts looking for a free tunnel.
    next_tunnel: AtomicUsize,
    /// The bundle and its secret (proven in re-joins).
    pub(crate) bundle: BundleId,
    pub(crate) secret: Secret,
    /// Client: how to re-dial lost tunnels (`None`: a server, or connections the caller made).
    redial: Option<Redial>,
    /// Serialises re-joins of the session's slots.
    attach_lock: Mutex<()>,
    /// Re-joins refused (wrong proof, stale generation, ...).
    pub(crate) rejoins_refused: AtomicU64,
    /// Whether losing every tunnel starts an outage (resumption) rather than ending the session.
    resumable: bool,
    /// When the current outage (no tunnel live) began.
    outage: Mutex<Option<Instant>>,
    /// When the last outage ended.
    resumed_at: Mutex<Option<Instant>>,
    /// Orders the reports of tunnels lost at once, and the start and end of an outage.
    lost_lock: Mutex<()>,
    /// Outages survived.
    resumes: AtomicU64,
    /// Bytes received on a tunnel after which an ACK is sent at once.
    ack_bytes: u64,
    /// ACK frames sent.
    acks_sent: AtomicU64,
    /// Failover events not yet read, and how many were dropped unread.
    events_tx: Sender<Event>,
    events_rx: Receiver<Event>,
    events_dropped: AtomicU64,
    /// The supervisor sleeps here; `sup_idle` says it sleeps its long sleep.
    sup_lock: Mutex<()>,
    sup_cv: Condvar,
    sup_idle: AtomicBool,
    /// Recycled DATA payload buffers.
    pool: pool::BufPool,
    /// Whether stream reads waiting for an answer spin first (see `handoff`).
    spin: Arc<handoff::Spin>,
    /// Session-level charge consumed by streams and not yet applied to `state.recv`.
    unreported: AtomicU64,
    /// Application threads inside `Stream::write` right now.
    pub(crate) writers: AtomicUsize,
}

/// A handle held by every user-facing object; the last one dropped closes the session.
pub(crate) struct Handle {
    pub(crate) inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.begin_close();
    }
}

/// A session over a bundle of tunnels. Cheap to clone; all clones are the same session.
/// The session closes gracefully when [`close`](Session::close) is called or when the last
/// `Session` and [`Stream`] handle is dropped.
#[derive(Clone)]
pub struct Session {
    h: Arc<Handle>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("role", &self.h.inner.role)
            .field("tunnels", &self.h.inner.tunnels.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// How a session is set up, besides its tunnels and configuration.
pub(crate) struct Setup {
    /// Which side we are.
    pub(crate) role: Role,
    /// What the peer announced in the handshake.
    pub(crate) peer: Params,
    /// The bundle and its secret (proven in re-joins).
    pub(crate) bundle: BundleId,
    pub(crate) secret: Secret,
    /// Client: how to re-dial lost tunnels.
    pub(crate) redial: Option<Redial>,
    /// Whether losing every tunnel starts an outage (resumption) rather than ending the
    /// session: the client re-dials, or the server takes re-joins and the client said it
    /// re-dials, and `resume_timeout` is not zero.
    pub(crate) resumable: bool,
}

impl Session {
    /// Start a session over tunnels whose handshake is complete. `tunnels` are in index
    /// order, all of generation 0.
    pub(crate) fn start(tunnels: Vec<Wire>, cfg: &Config, setup: Setup) -> Result<Session> {
        let Setup { role, peer, bundle, secret, redial, resumable } = setup;
        let conns = tunnels
            .into_iter()
            .map(|s| Conn::new(s, 0, cfg.keepalive_timeout))
            .collect::<std::io::Result<Vec<_>>>()?;
        let n = conns.len();
        let tunnels = conns.iter().enumerate().map(|(i, c)| Tunnel::new(i, c.clone())).collect();
        let (accept_tx, accept_rx) = crossbeam_channel::bounded(cfg.accept_backlog);
        let (closed_tx, closed_rx) = crossbeam_channel::bounded(0);
        let (order_wake_tx, order_wake_rx) = crossbeam_channel::bounded(1);
        let first_peer_id = match role {
            Role::Client => 2,
            Role::Server => 1,
        };
        let (exited_tx, exited_rx) = crossbeam_channel::bounded::<()>(0);
        let (events_tx, events_rx) = crossbeam_channel::bounded(EVENT_QUEUE);
        // Four frames per tunnel (at least eight) keep every writer busy and let writers and
        // application threads work in batches; beyond that the application thread waits.
        let queue_limit = (4 * n).max(8) * (cfg.max_frame_size.max(peer.max_frame as usize) + 64);
        // The peer acknowledges at least every session window / (4 × tunnels) bytes, so the
        // unacknowledged frames (capped at its session window) never block a sender for long.
        let ack_bytes = (cfg.session_window as u64 / (4 * n as u64)).clamp(16 << 10, 1 << 20);
        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            role,
            peer,
            tunnels,
            sched: Mutex::new(Scheduler::new(n, queue_limit)),
            room: Condvar::new(),
            state: Mutex::new(State {
                lifecycle: Lifecycle::Open,
                ids: StreamIds::new(role, cfg.max_streams),
                streams: HashMap::new(),
                recv: RecvWindow::new(cfg.session_window as u64, cfg.session_window as u64),
                recv_total: 0,
                peer_going_away: false,
                accept_tx: Some(accept_tx),
                order: AcceptOrder::new(first_peer_id, cfg.accept_backlog),
                closed_tx: Some(closed_tx),
                ended: Ended::new(ENDED_STREAMS),
            }),
            // What is sent and not acknowledged stays within what the peer granted.
            credit: SharedSendWindow::new(peer.session_window as u64, peer.session_window as u64),
            credit_closed: Mutex::new(None),
            credit_cv: Condvar::new(),
            phase: AtomicU8::new(OPEN),
            accept_rx,
            order_wake_tx,
            order_wake_rx,
            closed_rx,
            exited_rx,
            exited_tx: Mutex::new(Some(exited_tx)),
            threads: Mutex::new(Vec::with_capacity(2 * n + 1)),
            epoch: Instant::now(),
            min_rtt: Mutex::new(MinRtt::new(Duration::from_secs(30))),
            min_rtt_ns: AtomicU64::new(0),
            srtt_ns: AtomicU64::new(0),
            next_tunnel: AtomicUsize::new(0),
            bundle,
            secret,
            redial,
            resumable,
            attach_lock: Mutex::new(()),
            rejoins_refused: AtomicU64::new(0),
            outage: Mutex::new(None),
            resumed_at: Mutex::new(None),
            lost_lock: Mutex::new(()),
            resumes: AtomicU64::new(0),
            ack_bytes,
            acks_sent: AtomicU64::new(0),
            events_tx,
            events_rx,
            events_dropped: AtomicU64::new(0),
            sup_lock: Mutex::new(()),
            sup_cv: Condvar::new(),
            sup_idle: AtomicBool::new(false),
            // Frames wait in the replay buffers until acknowledged (up to about a megabyte per
            // tunnel); enough buffers to cycle them without going back to the allocator.
            pool: pool::BufPool::new(32 + 16 * n),
            spin: Arc::default(),
            unreported: AtomicU64::new(0),
            writers: AtomicUsize::new(0),
        });
        let started =
            conns.into_iter().enumerate().try_for_each(|(t, c)| inner.spawn_conn_threads(t, c)).and_then(
                |()| {
                    let i = inner.clone();
                    inner.spawn("mtmux-sup", move || supervisor::supervise(i))
                },
            );
        if let Err(e) = started {
            inner.fail(CloseReason::TunnelsLost(format!("cannot start a session thread: {e}")));
            return Err(e.into());
        }
        Ok(Session { h: Arc::new(Handle { inner }) })
    }

    /// Open a new stream. Costs no round trip: the peer learns of the stream from its first
    /// frame, which is sent with the first write (or a bare OPEN at the first read, or at
    /// close). Fails with [`Error::TooManyStreams`] at the `max_streams` limit and with
    /// [`Error::SessionClosed`] once the session is closing. During an outage (every tunnel
    /// lost, resumable) it succeeds, and a client re-dials its tunnels at once rather than at
    /// the backoff's next attempt (at most one attempt per tunnel per 100 ms that way).
    pub fn open_stream(&self) -> Result<Stream> {
        let inner = &self.h.inner;
        let (shared, rx) = {
            let mut st = inner.state.lock();
            if let Some(e) = st.refuses_new_streams() {
                return Err(e);
            }
            if st.streams.len() >= inner.cfg.max_streams {
                return Err(Error::TooManyStreams);
            }
            let id = st.ids.allocate().ok_or(Error::TooManyStreams)?;
            let (tx, rx) = handoff::channel(inner.spin.clone());
            let shared = Arc::new(StreamShared::new(id, true, inner.peer.stream_window as u64));
            st.streams.insert(id, Entry::new(shared.clone(), tx, inner.cfg.stream_window as u64));
            (shared, rx)
        };
        // In an outage, a new stream is a reason to try the tunnels again at once.
        inner.redial_now();
        Ok(Stream::new(self.h.clone(), Accepted { shared, rx }))
    }

    /// Wait for the next stream opened by the peer. Streams are returned in the order the
    /// peer opened them (increasing ids), even when their first frames arrive out of order
    /// over different tunnels: a stream that arrives before a lower id is held until that id
    /// arrives, at most the stale timeout (by default max(4 × smoothed RTT, 250 ms), and never
    /// more than `reorder_timeout`): a stream the peer opened but left silent delays the ones
    /// opened after it by that much at most. A missing id that arrives later is returned late.
    /// See docs/PROTOCOL.md §4.1, "Acceptance order".
    pub fn accept_stream(&self) -> Result<Stream> {
        self.accept_deadline(None)
    }

    /// Wait at most `timeout` for the next stream opened by the peer; [`Error::TimedOut`] then.
    pub fn accept_stream_timeout(&self, timeout: Duration) -> Result<Stream> {
        self.accept_deadline(crate::config::deadline_after(timeout))
    }

    fn accept_deadline(&self, deadline: Option<Instant>) -> Result<Stream> {
        let inner = &self.h.inner;
        loop {
            // Streams held for order too long are released first (see `accept`).
            let (hold, failed) = {
                let mut st = inner.state.lock();
                inner.release_overdue(&mut st, Instant::now())
            };
            inner.refuse_streams(&failed);
            let wake = match (deadline, hold) {
                (Some(d), Some(h)) => Some(d.min(h)),
                (d, h) => d.or(h),
            };
            let timer = match wake {
                Some(w) => crossbeam_channel::at(w),
                None => crossbeam_channel::never(),
            };
            crossbeam_channel::select_biased! {
                recv(inner.accept_rx) -> a => return match a {
                    Ok(a) => Ok(Stream::new(self.h.clone(), a)),
                    Err(_) => Err(inner.close_error()),
                },
                recv(inner.closed_rx) -> _ => {
                    // Streams that arrived before the close are still handed out.
                    return match inner.accept_rx.try_recv() {
                        Ok(a) => Ok(Stream::new(self.h.clone(), a)),
                        Err(_) => Err(inner.close_error()),
                    };
                },
                recv(inner.order_wake_rx) -> _ => {}
                recv(timer) -> _ => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(Error::TimedOut);
                    }
                }
            }
        }
    }

    /// Close the session gracefully: no new streams, streams fail with
    /// [`Error::SessionClosed`], frames already written are delivered, then the tunnels close.
    /// Blocks until the session's threads have ended (at most about `keepalive_timeout`).
    pub fn close(&self) -> Result<()> {
        let inner = &self.h.inner;
        inner.begin_close();
        inner.wake_supervisor();
        let limit = Instant::now() + inner.cfg.keepalive_timeout + Duration::from_secs(1);
        // Nothing is ever sent: this returns when every thread has dropped its sender.
        let _ = inner.exited_rx.recv_deadline(limit);
        if inner.threads_running() {
            // The peer did not finish in time: stop hard.
            inner.fail(CloseReason::Local);
            let _ = inner.exited_rx.recv_timeout(Duration::from_secs(5));
        }
        inner.join_threads();
        Ok(())
    }

    /// Whether the session is closing or closed (no new streams can be opened): the same as
    /// `close_reason().is_some()`.
    pub fn is_closed(&self) -> bool {
        self.h.inner.phase.load(Relaxed) != OPEN || self.h.inner.state.lock().peer_going_away
    }

    /// Why the session ended or is ending; `None` while it is open. The reason is set before
    /// any call can fail with [`Error::SessionClosed`] (right after such a failure it is never
    /// `None`, and it is the reason that error carries) and never changes afterwards: a session
    /// the peer began to close stays [`CloseReason::Peer`] even if this side then closes it too.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.h.inner.state.lock().close_reason()
    }

    /// Streams currently open (in either direction, until both directions have finished).
    pub fn num_streams(&self) -> usize {
        self.h.inner.state.lock().streams.len()
    }

    /// Number of tunnels in the bundle (alive or not).
    pub fn num_tunnels(&self) -> usize {
        self.h.inner.tunnels.len()
    }

    /// A weak reference to the session's state (the listener's registry of sessions that take
    /// re-joins).
    pub(crate) fn downgrade(&self) -> std::sync::Weak<Inner> {
        Arc::downgrade(&self.h.inner)
    }

    /// The configuration the session runs with.
    pub fn config(&self) -> &Config {
        &self.h.inner.cfg
    }
}

impl Inner {
    pub(crate) fn cfg(&self) -> &Config {
        &self.cfg
    }

    fn is_closed(&self) -> bool {
        self.phase.load(Relaxed) == CLOSED
    }

    fn is_closing(&self) -> bool {
        self.phase.load(Relaxed) == CLOSING
    }

    /// The error for operations on a closed session.
    pub(crate) fn close_error(&self) -> Error {
        Error::SessionClosed(self.state.lock().close_reason().unwrap_or(CloseReason::Local))
    }

    /// Nanoseconds since the session's epoch, the token of a ping sent at `now`.
    fn clock_ns(&self, now: Instant) -> u64 {
        now.duration_since(self.epoch).as_nanos() as u64
    }

    /// Round-trip estimates for sizing flow-control windows, if measured: the path's
    /// minimum (no queueing) and the smoothed value (with the queueing of loaded paths).
    pub(crate) fn rtt(&self) -> (Option<Duration>, Option<Duration>) {
        let get = |a: &AtomicU64| match a.load(Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        };
        (get(&self.min_rtt_ns), get(&self.srtt_ns))
    }

    /// Record a keepalive round trip measured on tunnel `t`.
    fn record_rtt(&self, t: usize, now: Instant, rtt: Duration) {
        let ns = (rtt.as_nanos() as u64).max(1);
        // The scheduler's delay estimate ignores each connection's first ping itself.
        self.sched.lock().record_ping(t, now, rtt);
        let first = self.tunnels[t].counters.rtt_ns.swap(ns, Relaxed) == 0;
        if first {
            // The first ping of a tunnel may have waited for the peer's session to start.
            return;
        }
        let min = self.min_rtt.lock().record(now, rtt);
        self.min_rtt_ns.store((min.as_nanos() as u64).max(1), Relaxed);
        let old = self.srtt_ns.load(Relaxed);
        self.srtt_ns.store(if old == 0 { ns } else { (old * 7 + ns) / 8 }, Relaxed);
    }

    /// Whether a graceful close has run out of time.
    fn closing_expired(&self, now: Instant) -> bool {
        if !self.is_closing() {
            return false;
        }
        matches!(self.state.lock().lifecycle, Lifecycle::Closing { deadline, .. } if now >= deadline)
    }

    /// Start a session thread. Refused once the session stopped starting threads (closed).
    pub(crate) fn spawn(&self, name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let exited = self.exited_tx.lock().clone().ok_or(std::io::ErrorKind::NotConnected)?;
        let h = std::thread::Builder::new().name(name.into()).stack_size(256 * 1024).spawn(move || {
            f();
            drop(exited);
        })?;
        let mut threads = self.threads.lock();
        // Threads of replaced tunnel generations.
        threads.retain(|h| !h.is_finished());
        threads.push(h);
        Ok(())
    }

    /// Start a thread that closing the session does not wait for (a re-dial blocked in
    /// `connect` for up to `handshake_timeout`: it finds the session closed and drops its
    /// connection). Refused once the session stopped starting threads.
    pub(crate) fn spawn_detached(
        &self,
        name: &str,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        if self.exited_tx.lock().is_none() {
            return Err(std::io::ErrorKind::NotConnected.into());
        }
        std::thread::Builder::new().name(name.into()).stack_size(256 * 1024).spawn(f).map(drop)
    }

    fn threads_running(&self) -> bool {
        self.threads.lock().iter().any(|h| !h.is_finished())
    }

    fn join_threads(&self) {
        let me = std::thread::current().id();
        let threads = std::mem::take(&mut *self.threads.lock());
        for h in threads {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
    }
}
