//! A session: one bundle of tunnels carrying many streams, either side may open streams.
//!
//! # Threads
//! Two per tunnel, whatever the number of streams: a reader (`mtmux-r<i>`) and a writer
//! (`mtmux-w<i>`); see [`tunnel`]. Application threads call into [`Stream`] and [`Session`]
//! and write frames straight to a tunnel when one is free.
//!
//! # Lifecycle
//! ```text
//!   Open ──close()/last handle dropped──▶ Closing ──all tunnels done──▶ Closed(Local)
//!     │                                  (GOAWAY sent, queued frames flushed, tunnels
//!     │                                   half-closed, peer's end awaited)
//!     ├──peer GOAWAY, then its tunnels end──────────────────────────▶ Closed(Peer)
//!     ├──last tunnel fails (I/O error, keepalive timeout)────────────▶ Closed(TunnelsLost)
//!     └──peer breaks the protocol─────────────────────────────────────▶ Closed(Protocol)
//! ```
//! Entering `Closed` fails every blocked call at once: streams are removed from the table
//! (their readers see their channel disconnect), waiting writers and acceptors are notified,
//! and every socket is shut down.
//!
//! # Locks (acquired in this order, never the reverse)
//! `tunnel.tx` → `sched`; `state` is never held while taking another. The session credit is
//! reserved without a lock (`credit_closed` only guards waiting).
//! Nobody blocks while holding a lock except a tunnel writer holding its own `tunnel.tx`.

mod inbound;
mod pool;
mod stream;
pub(crate) mod tunnel;

pub use stream::Stream;

use crate::config::Config;
use crate::core::ids::{Role, StreamIds};
use crate::core::rtt::MinRtt;
use crate::core::sched::Scheduler;
use crate::core::window::{RecvWindow, SharedSendWindow};
use crate::error::{CloseReason, Error, ResetCode, Result};
use crate::ffi::sys;
use crate::proto::frame::Control;
use crate::proto::handshake::Params;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};
use std::io::IoSlice;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use stream::{Accepted, Inbound, StreamShared};
use tunnel::Tunnel;

/// Statistics of one tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelStats {
    /// Position of the tunnel in the bundle.
    pub index: usize,
    /// Bytes written to the socket (headers included).
    pub bytes_sent: u64,
    /// Bytes read from the socket.
    pub bytes_received: u64,
    /// Frames written.
    pub frames_sent: u64,
    /// Frames read.
    pub frames_received: u64,
    /// Round trip of the last keepalive ping, if one was answered.
    pub rtt: Option<Duration>,
    /// Whether the tunnel still works.
    pub alive: bool,
}

const OPEN: u8 = 0;
const CLOSING: u8 = 1;
const CLOSED: u8 = 2;

/// Session lifecycle (see the module doc).
enum Lifecycle {
    Open,
    Closing { deadline: Instant },
    Closed(CloseReason),
}

/// A stream as the session's table knows it: what the tunnel readers need to route and
/// check its frames.
struct Entry {
    shared: Arc<StreamShared>,
    /// Where decoded frames go; dropping it tells the stream's reader the stream is gone.
    tx: Sender<Inbound>,
    /// Receive limit granted to the peer (mirrors the stream's receive window).
    recv_limit: u64,
    /// Charge received so far.
    recv_total: u64,
    /// Sequenced frames received so far.
    frames: u32,
    /// Sequence number of the peer's FIN, once seen.
    fin_seq: Option<u32>,
    /// The application closed the reading side: arriving data is dropped.
    read_closed: bool,
    /// We sent FIN or RESET.
    send_done: bool,
    /// All the peer's frames up to its FIN have arrived.
    recv_done: bool,
}

impl Entry {
    fn new(shared: Arc<StreamShared>, tx: Sender<Inbound>, window: u64) -> Entry {
        Entry {
            shared,
            tx,
            recv_limit: window,
            recv_total: 0,
            frames: 0,
            fin_seq: None,
            read_closed: false,
            send_done: false,
            recv_done: false,
        }
    }
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
    /// Dropped when the session closes, which wakes every `select` on `closed_rx`.
    closed_tx: Option<Sender<()>>,
    /// Tunnel readers still running.
    readers: usize,
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
    closed_rx: Receiver<()>,
    /// Disconnects when every session thread has exited.
    exited_rx: Receiver<()>,
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
    /// RESETs sent recently (stream, code, when): resent if a tunnel dies, since they may have
    /// been lost with it. Bounded by [`RECENT_RESETS`].
    recent_resets: Mutex<VecDeque<(u32, ResetCode, Instant)>>,
    /// Recycled DATA payload buffers.
    pool: pool::BufPool,
    /// Session-level charge consumed by streams and not yet applied to `state.recv`.
    unreported: AtomicU64,
    /// Application threads inside `Stream::write` right now.
    pub(crate) writers: AtomicUsize,
}

/// Largest DATA payload an application thread always tries to write to a tunnel itself.
/// Small frames go out without a thread hand-off (latency). Larger ones go direct only while
/// at least as many application threads are writing as there are tunnels; otherwise they are
/// copied into the scheduler so that the tunnel writers send them in parallel (a send also
/// costs the kernel's TCP work, so one thread sending everything over N tunnels would move no
/// more than one TCP connection does).
const DIRECT_MAX: usize = 16 * 1024;

/// How long a large frame may wait for a busy tunnel before it is queued instead.
const DIRECT_PATIENCE: Duration = Duration::from_micros(200);

/// How many recent RESETs are remembered for resending after a tunnel failure.
const RECENT_RESETS: usize = 1024;

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

impl Session {
    /// Start a session over tunnels whose handshake is complete. `tunnels` are in index order.
    pub(crate) fn start(role: Role, tunnels: Vec<TcpStream>, cfg: &Config, peer: Params) -> Result<Session> {
        for s in &tunnels {
            s.set_nodelay(true)?;
            s.set_write_timeout(None)?;
            sys::set_notsent_lowat(s, tunnel::NOTSENT_LOWAT)?;
        }
        let n = tunnels.len();
        let (accept_tx, accept_rx) = crossbeam_channel::bounded(cfg.accept_backlog);
        let (closed_tx, closed_rx) = crossbeam_channel::bounded(0);
        let (exited_tx, exited_rx) = crossbeam_channel::bounded::<()>(0);
        // Four frames per tunnel (at least eight) keep every writer busy and let writers and
        // application threads work in batches; beyond that the application thread waits.
        let queue_limit = (4 * n).max(8) * (cfg.max_frame_size.max(peer.max_frame as usize) + 64);
        let inner = Arc::new(Inner {
            cfg: cfg.clone(),
            role,
            peer,
            tunnels: tunnels.into_iter().enumerate().map(|(i, s)| Tunnel::new(i, s)).collect(),
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
                closed_tx: Some(closed_tx),
                readers: n,
            }),
            credit: SharedSendWindow::new(peer.session_window as u64),
            credit_closed: Mutex::new(None),
            credit_cv: Condvar::new(),
            phase: AtomicU8::new(OPEN),
            accept_rx,
            closed_rx,
            exited_rx,
            threads: Mutex::new(Vec::with_capacity(2 * n)),
            epoch: Instant::now(),
            min_rtt: Mutex::new(MinRtt::new(Duration::from_secs(30))),
            min_rtt_ns: AtomicU64::new(0),
            srtt_ns: AtomicU64::new(0),
            next_tunnel: AtomicUsize::new(0),
            recent_resets: Mutex::new(VecDeque::new()),
            pool: pool::BufPool::new(32),
            unreported: AtomicU64::new(0),
            writers: AtomicUsize::new(0),
        });
        let mut threads = Vec::with_capacity(2 * n);
        for t in 0..n {
            for (kind, body) in [("r", tunnel::reader as fn(Arc<Inner>, usize)), ("w", tunnel::writer)] {
                let inner2 = inner.clone();
                let exited = exited_tx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("mtmux-{kind}{t}"))
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        body(inner2, t);
                        drop(exited);
                    });
                match spawned {
                    Ok(h) => threads.push(h),
                    Err(e) => {
                        inner.fail(CloseReason::TunnelsLost(format!("cannot start a tunnel thread: {e}")));
                        return Err(e.into());
                    }
                }
            }
        }
        *inner.threads.lock() = threads;
        Ok(Session { h: Arc::new(Handle { inner }) })
    }

    /// Open a new stream. Costs no round trip: the peer learns of the stream from its first
    /// frame, which is sent with the first write (or a bare OPEN at the first read, or at
    /// close). Fails with [`Error::TooManyStreams`] at the `max_streams` limit and with
    /// [`Error::SessionClosed`] once the session is closing.
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
            let (tx, rx) = crossbeam_channel::unbounded();
            let shared = Arc::new(StreamShared::new(id, true, inner.peer.stream_window as u64));
            st.streams.insert(id, Entry::new(shared.clone(), tx, inner.cfg.stream_window as u64));
            (shared, rx)
        };
        Ok(Stream::new(self.h.clone(), Accepted { shared, rx }))
    }

    /// Wait for the next stream opened by the peer.
    pub fn accept_stream(&self) -> Result<Stream> {
        self.accept_deadline(None)
    }

    /// Wait at most `timeout` for the next stream opened by the peer; [`Error::TimedOut`] then.
    pub fn accept_stream_timeout(&self, timeout: Duration) -> Result<Stream> {
        self.accept_deadline(crate::config::deadline_after(timeout))
    }

    fn accept_deadline(&self, deadline: Option<Instant>) -> Result<Stream> {
        let inner = &self.h.inner;
        let timeout = match deadline {
            Some(d) => crossbeam_channel::at(d),
            None => crossbeam_channel::never(),
        };
        crossbeam_channel::select_biased! {
            recv(inner.accept_rx) -> a => match a {
                Ok(a) => Ok(Stream::new(self.h.clone(), a)),
                Err(_) => Err(inner.close_error()),
            },
            recv(inner.closed_rx) -> _ => {
                // Streams that arrived before the close are still handed out.
                match inner.accept_rx.try_recv() {
                    Ok(a) => Ok(Stream::new(self.h.clone(), a)),
                    Err(_) => Err(inner.close_error()),
                }
            },
            recv(timeout) -> _ => Err(Error::TimedOut),
        }
    }

    /// Close the session gracefully: no new streams, streams fail with
    /// [`Error::SessionClosed`], frames already written are delivered, then the tunnels close.
    /// Blocks until the session's threads have ended (at most about `keepalive_timeout`).
    pub fn close(&self) -> Result<()> {
        let inner = &self.h.inner;
        inner.begin_close();
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

    /// Whether the session is closing or closed (no new streams can be opened).
    pub fn is_closed(&self) -> bool {
        self.h.inner.phase.load(Relaxed) != OPEN || self.h.inner.state.lock().peer_going_away
    }

    /// Why the session closed, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        match &self.h.inner.state.lock().lifecycle {
            Lifecycle::Closed(r) => Some(r.clone()),
            _ => None,
        }
    }

    /// Streams currently open (in either direction, until both directions have finished).
    pub fn num_streams(&self) -> usize {
        self.h.inner.state.lock().streams.len()
    }

    /// Number of tunnels in the bundle (alive or not).
    pub fn num_tunnels(&self) -> usize {
        self.h.inner.tunnels.len()
    }

    /// Per-tunnel statistics, in tunnel order.
    pub fn tunnel_stats(&self) -> Vec<TunnelStats> {
        self.h
            .inner
            .tunnels
            .iter()
            .map(|t| {
                let c = &t.counters;
                let rtt = c.rtt_ns.load(Relaxed);
                TunnelStats {
                    index: t.index,
                    bytes_sent: c.bytes_sent.load(Relaxed),
                    bytes_received: c.bytes_received.load(Relaxed),
                    frames_sent: c.frames_sent.load(Relaxed),
                    frames_received: c.frames_received.load(Relaxed),
                    rtt: (rtt != 0).then(|| Duration::from_nanos(rtt)),
                    alive: !t.is_dead(),
                }
            })
            .collect()
    }

    /// Local addresses of the tunnels, in tunnel order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.h.inner.tunnels.iter().filter_map(|t| t.sock.local_addr().ok()).collect()
    }

    /// Peer addresses of the tunnels, in tunnel order.
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.h.inner.tunnels.iter().filter_map(|t| t.sock.peer_addr().ok()).collect()
    }

    /// The configuration the session runs with.
    pub fn config(&self) -> &Config {
        &self.h.inner.cfg
    }
}

impl State {
    /// The error for opening or accepting a stream now, if the session no longer takes them.
    fn refuses_new_streams(&self) -> Option<Error> {
        match &self.lifecycle {
            Lifecycle::Open if self.peer_going_away => Some(Error::SessionClosed(CloseReason::Peer)),
            Lifecycle::Open => None,
            Lifecycle::Closing { .. } => Some(Error::SessionClosed(CloseReason::Local)),
            Lifecycle::Closed(r) => Some(Error::SessionClosed(r.clone())),
        }
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
        let st = self.state.lock();
        match &st.lifecycle {
            Lifecycle::Closed(r) => Error::SessionClosed(r.clone()),
            Lifecycle::Open if st.peer_going_away => Error::SessionClosed(CloseReason::Peer),
            _ => Error::SessionClosed(CloseReason::Local),
        }
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
        matches!(self.state.lock().lifecycle, Lifecycle::Closing { deadline } if now >= deadline)
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

    /// Write `bufs` (one frame) straight to a free tunnel without blocking on a socket: only
    /// to a tunnel whose writer is not busy, only if the socket takes at least part of it. A
    /// partly written frame is finished by that tunnel's writer. `only` restricts to one
    /// tunnel. With `patience`, when every tunnel is busy (usually other application threads
    /// in short non-blocking sends), wait that long for one of them rather than give up.
    fn try_direct(&self, bufs: &[IoSlice<'_>], only: Option<usize>, patience: Option<Duration>) -> bool {
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
    fn send_locked(&self, t: usize, tx: &mut tunnel::TunnelTx, bufs: &[IoSlice<'_>]) -> bool {
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
    fn send_data(&self, id: u32, header: &[u8], payload: &[u8]) -> bool {
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
    fn wait_room(&self, deadline: Option<Instant>) -> bool {
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
    fn send_control(&self, c: Control) {
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
    fn send_tunnel_control(&self, t: usize, c: Control) {
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
    fn send_reset(&self, id: u32, code: ResetCode) {
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
    fn queue_controls(&self, frames: impl IntoIterator<Item = Control>) {
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

    /// Stream `id` sent its FIN (or RESET): forget it once the peer's side is done too.
    fn send_finished(&self, id: u32) {
        let mut st = self.state.lock();
        if let Some(e) = st.streams.get_mut(&id) {
            e.send_done = true;
            if e.recv_done {
                st.streams.remove(&id);
            }
        }
    }

    /// The application closed stream `id`'s reading side; wakes a blocked reader.
    fn close_read(&self, id: u32) {
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
            st.streams.remove(&id);
        }
    }

    /// Abort stream `id` locally: tell the peer, drop its queued frames, forget it.
    fn reset_stream(&self, id: u32, code: ResetCode) {
        let existed = {
            let mut st = self.state.lock();
            match st.streams.remove(&id) {
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
            self.send_reset(id, code);
        }
    }

    /// The application consumed (or discarded) `released` charge of stream `id`; `stream_limit`
    /// is the stream's new receive limit to announce, if any.
    ///
    /// Session-level consumption is accumulated without a lock and applied to the session
    /// window in steps of 1/16 of it, so that reads do not all contend for the session lock;
    /// the peer's session credit lags by less than a step.
    fn release(&self, id: u32, released: u64, stream_limit: Option<u64>) {
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
                e.recv_limit = l;
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
            self.send_control(Control::Window { stream: id, limit });
        }
        if let Some(limit) = session_limit {
            self.send_control(Control::Window { stream: 0, limit });
        }
    }

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
        let entries = {
            let mut st = self.state.lock();
            if !matches!(st.lifecycle, Lifecycle::Open) {
                return;
            }
            let linger = self.cfg.keepalive_timeout.min(Duration::from_secs(5));
            st.lifecycle = Lifecycle::Closing { deadline: Instant::now() + linger };
            self.phase.store(CLOSING, Relaxed);
            st.accept_tx = None;
            st.streams.drain().map(|(_, e)| e).collect::<Vec<_>>()
        };
        self.fail_streams(entries, CloseReason::Local);
        for t in &self.tunnels {
            t.wake.notify_one();
        }
        // Streams queued for accept but never accepted are dropped now.
        while self.accept_rx.try_recv().is_ok() {}
    }

    /// Close at once: every stream and blocked call fails with `SessionClosed(reason)`.
    pub(crate) fn fail(&self, reason: CloseReason) {
        let entries = {
            let mut st = self.state.lock();
            if let Lifecycle::Closed(_) = st.lifecycle {
                return;
            }
            st.lifecycle = Lifecycle::Closed(reason.clone());
            self.phase.store(CLOSED, Relaxed);
            st.accept_tx = None;
            st.closed_tx = None;
            st.streams.drain().map(|(_, e)| e).collect::<Vec<_>>()
        };
        self.fail_streams(entries, reason);
        for t in &self.tunnels {
            t.kill();
        }
        {
            let _s = self.sched.lock();
            for t in &self.tunnels {
                t.wake.notify_all();
            }
            self.room.notify_all();
        }
        while self.accept_rx.try_recv().is_ok() {}
    }

    /// Fail the send side of `entries` and of the session credit; dropping the entries
    /// disconnects the streams' channels, which ends their reads.
    fn fail_streams(&self, entries: Vec<Entry>, reason: CloseReason) {
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

    /// A tunnel's reader stopped; decide what that means for the session.
    fn tunnel_ended(&self, t: usize, end: tunnel::ReadEnd) {
        use tunnel::ReadEnd;
        let tun = &self.tunnels[t];
        tun.kill();
        {
            let _s = self.sched.lock();
            tun.wake.notify_all();
        }
        self.sched.lock().tunnel_dead(t);
        let (remaining, going_away, phase) = {
            let mut st = self.state.lock();
            st.readers -= 1;
            (st.readers, st.peer_going_away, self.phase.load(Relaxed))
        };
        if let ReadEnd::Protocol(why) = end {
            self.fail(CloseReason::Protocol(why));
            return;
        }
        if phase != OPEN || going_away {
            // An expected end: we or the peer are closing.
            if remaining == 0 {
                self.fail(if phase == OPEN { CloseReason::Peer } else { CloseReason::Local });
            }
            return;
        }
        let why = match end {
            ReadEnd::Eof => format!("tunnel {t} closed by the peer"),
            ReadEnd::Closed => format!("tunnel {t} closed"),
            ReadEnd::Silent(d) => format!("tunnel {t} silent for {d:?} (keepalive timeout)"),
            ReadEnd::Io(e) => format!("tunnel {t}: {e}"),
            ReadEnd::Protocol(_) => unreachable!("handled above"),
        };
        if remaining == 0 {
            self.fail(CloseReason::TunnelsLost(why));
            return;
        }
        // Frames in flight on the dead tunnel are lost. DATA frames: tell the peer how many
        // frames each stream has sent, so that a lost tail shows up as a gap in its reorder
        // buffer. Control frames: WINDOW limits are absolute, so announcing them again is
        // harmless; recent RESETs are sent again (the peer ignores those it already has).
        let (streams, windows, session_limit) = {
            let st = self.state.lock();
            let streams: Vec<Arc<StreamShared>> = st.streams.values().map(|e| e.shared.clone()).collect();
            let windows: Vec<Control> = st
                .streams
                .iter()
                .map(|(&id, e)| Control::Window { stream: id, limit: e.recv_limit })
                .collect();
            (streams, windows, st.recv.limit())
        };
        let marks =
            streams.iter().filter_map(|s| s.frames_sent().map(|count| Control::Sent { stream: s.id, count }));
        let horizon = Instant::now().checked_sub(self.cfg.keepalive_timeout * 2);
        let resets: Vec<Control> = self
            .recent_resets
            .lock()
            .iter()
            .filter(|(_, _, at)| horizon.is_none_or(|h| *at >= h))
            .map(|&(stream, code, _)| Control::Reset { stream, code: code.to_u32() })
            .collect();
        let session = std::iter::once(Control::Window { stream: 0, limit: session_limit });
        self.queue_controls(marks.chain(windows).chain(session).chain(resets));
    }
}
