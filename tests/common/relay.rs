//! A fault-injecting TCP relay for tests, for mtmux's port-range mode: it listens on `n`
//! consecutive loopback ports and forwards a connection that arrives on port `base + i` to
//! `targets[i]`; that connection belongs to tunnel `i`. A tunnel index accepts any number of
//! connections (re-joins), one after the other or at once.
//!
//! Faults, per tunnel index, applied to the connections of that index open at the call:
//! - [`FaultRelay::rst`]: abort both sides with a TCP RST (SO_LINGER 0, then close);
//! - [`FaultRelay::fin`]: close both sides gracefully (FIN), then drain until they close;
//! - [`FaultRelay::blackhole`]: forward nothing more in either direction but keep both sockets
//!   open. The relay stops *reading* (so the sender's socket buffer fills, as on a path that
//!   drops everything), and bytes it had already read are held back, never delivered. A
//!   blackholed connection stays open until `rst`/`fin` of its index or the relay is dropped:
//!   like a real path, it does not pass on that an end closed;
//! - [`FaultRelay::delay`]: add a one-way delay to every chunk (this and later connections);
//! - [`FaultRelay::flip`]: invert one byte (the middle one) of the next chunk read in one
//!   direction: bytes altered in transit, the connection otherwise intact;
//! - [`FaultRelay::set_down`] / [`FaultRelay::down_for`]: reset every connection and refuse
//!   new ones (accepted, then reset at once) while down: the whole bundle is cut off.
//!
//! An end that closes (FIN) or aborts (RST) is passed on to the other end. Counters: connections
//! accepted and refused, bytes delivered per direction. Dropping the relay resets every
//! connection and ends every thread it started.
//!
//! Pure std and `libc` (no mtmux), so that other test crates can include it with `#[path]`.

use std::hash::{BuildHasher, RandomState};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Which way bytes go through the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the dialing side (mtmux client) to the target (mtmux server).
    ToServer = 0,
    /// From the target back to the dialing side.
    ToClient = 1,
}

/// What a relayed connection does with bytes.
///
/// ```text
///   Forward ──blackhole──▶ Blackhole
///     │                        │
///     └──────fin / rst─────────┴──▶ Fin (drain until both ends close) / Reset (terminal)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Forward,
    Blackhole,
    Fin,
    Reset,
}

/// Chunks read but not yet delivered, per direction (a router's queue: 4 MiB at most).
const QUEUE_CHUNKS: usize = 32;
const READ_BUF: usize = 128 << 10;
/// How long one write may block before the deliverer checks for a mode change.
const WRITE_SLICE: Duration = Duration::from_millis(100);

/// One relayed connection: the socket accepted from the client and the one to the target.
/// Its four threads (a reader and a deliverer per direction) hold the only strong references,
/// so the sockets close as soon as the last of them ends.
struct Conn {
    /// `[client, server]`: direction `d` reads from `socks[d]` and writes to `socks[d ^ 1]`.
    socks: [TcpStream; 2],
    mode: Mutex<Mode>,
    changed: Condvar,
    /// Held by a deliverer while it writes, so that a mode change can wait for a write in
    /// progress (after `blackhole` returns, nothing more is delivered).
    gates: [Mutex<()>; 2],
}

/// Bytes read, and when they may be delivered.
type Chunk = (Instant, Vec<u8>);

/// A connection as its tunnel index knows it.
struct Link {
    conn: Weak<Conn>,
    threads: Vec<JoinHandle<()>>,
}

/// Per tunnel index.
#[derive(Default)]
struct Slot {
    links: Mutex<Vec<Link>>,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    delivered: [AtomicU64; 2],
    /// Bytes read but never delivered (reset, FIN), per direction.
    dropped: [AtomicU64; 2],
    /// When bytes were last delivered (since `Shared::epoch`; 0 for never), per direction.
    last_ns: [AtomicU64; 2],
    delay_ns: AtomicU64,
    /// Invert a byte of the next chunk read, per direction; and how many were inverted.
    flip: [AtomicBool; 2],
    flipped: [AtomicU64; 2],
}

struct Shared {
    epoch: Instant,
    targets: Vec<SocketAddr>,
    slots: Vec<Slot>,
    down: AtomicBool,
    stop: AtomicBool,
}

/// The relay; see the module doc.
pub struct FaultRelay {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    acceptors: Vec<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Make the next close of `s` abortive: the peer gets a RST, not a FIN.
fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // Safety: a valid socket descriptor and a pointer to a `linger` of the stated size.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Bind `n` consecutive loopback ports, below the ephemeral range where outgoing connections
/// never take a port (as mtmux's own `bind_range`).
fn bind_range(n: usize) -> Vec<TcpListener> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (10_000u64, ephemeral_low.saturating_sub(n as u64));
    for _ in 0..256 {
        let first = lo + RandomState::new().hash_one(Instant::now()) % (hi - lo);
        let bound: Vec<_> =
            (0..n as u64).map_while(|i| TcpListener::bind(("127.0.0.1", (first + i) as u16)).ok()).collect();
        if bound.len() == n {
            return bound;
        }
    }
    panic!("relay: no {n} consecutive free ports in {lo}..{hi}");
}

impl Conn {
    fn mode(&self) -> Mode {
        *lock(&self.mode)
    }

    /// Change the mode (unless `Reset`, which is final), then wait for writes in progress.
    fn set_mode(&self, to: Mode) {
        {
            let mut m = lock(&self.mode);
            if *m == Mode::Reset || (to == Mode::Blackhole && *m != Mode::Forward) {
                return;
            }
            *m = to;
        }
        self.changed.notify_all();
        for g in &self.gates {
            drop(lock(g));
        }
    }

    /// Abort both sides: the close that follows (when the last thread ends) sends RSTs.
    /// Blocked readers wake up at once (shutting down the read side sends nothing).
    fn abort(&self) {
        *lock(&self.mode) = Mode::Reset;
        self.changed.notify_all();
        for s in &self.socks {
            set_linger_zero(s);
            let _ = s.shutdown(Shutdown::Read);
        }
    }

    /// Close both sides gracefully; the readers then drain until the ends close.
    fn finish(&self) {
        self.set_mode(Mode::Fin);
        if self.mode() == Mode::Fin {
            for s in &self.socks {
                let _ = s.shutdown(Shutdown::Write);
            }
        }
    }

    /// Wait until bytes may move: the mode when it is not `Blackhole`, and (with `due`) not
    /// before `due`.
    fn wait_open(&self, due: Option<Instant>) -> Mode {
        let mut m = lock(&self.mode);
        loop {
            let wait = match (*m, due) {
                (Mode::Blackhole, _) => None,
                (Mode::Forward, Some(due)) if Instant::now() < due => Some(due - Instant::now()),
                (mode, _) => return mode,
            };
            m = match wait {
                None => self.changed.wait(m).unwrap_or_else(|e| e.into_inner()),
                Some(d) => self.changed.wait_timeout(m, d).unwrap_or_else(|e| e.into_inner()).0,
            };
        }
    }
}

/// Read from the source side of `dir` into the queue, until the source ends or the mode says
/// stop. In `Fin` mode read and drop everything until the source closes.
fn read_side(conn: Arc<Conn>, shared: Arc<Shared>, index: usize, dir: Dir, tx: SyncSender<Chunk>) {
    let mut src = &conn.socks[dir as usize];
    let slot = &shared.slots[index];
    let drop_bytes = |n: usize| slot.dropped[dir as usize].fetch_add(n as u64, SeqCst);
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let mode = conn.wait_open(None);
        if mode == Mode::Reset {
            return;
        }
        let n = match src.read(&mut buf) {
            Ok(0) => return, // end of stream: dropping `tx` passes the FIN on
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return conn.abort(), // the end aborted: pass the RST on
        };
        if mode == Mode::Fin {
            drop_bytes(n);
            continue;
        }
        if slot.flip[dir as usize].swap(false, SeqCst) {
            buf[n / 2] ^= 0xFF;
            slot.flipped[dir as usize].fetch_add(1, SeqCst);
        }
        let delay = Duration::from_nanos(slot.delay_ns.load(SeqCst));
        // A full queue blocks here (back-pressure); a send fails only once the deliverer
        // has stopped, in `Fin` or `Reset` mode, which the top of the loop handles.
        if let Err(lost) = tx.send((Instant::now() + delay, buf[..n].to_vec())) {
            drop_bytes(lost.0 .1.len());
        }
    }
}

/// Deliver queued chunks to the destination side of `dir`, each not before it is due.
fn deliver_side(conn: Arc<Conn>, shared: Arc<Shared>, index: usize, dir: Dir, rx: Receiver<Chunk>) {
    let mut dst = &conn.socks[dir as usize ^ 1];
    let slot = &shared.slots[index];
    // What was read and will not be delivered: this chunk's rest and the queue.
    let drop_rest = |rest: usize, rx: &Receiver<Chunk>| {
        let queued: usize = rx.try_iter().map(|(_, d)| d.len()).sum();
        slot.dropped[dir as usize].fetch_add((rest + queued) as u64, SeqCst);
    };
    while let Ok((due, data)) = rx.recv() {
        let mut off = 0;
        while off < data.len() {
            if conn.wait_open(Some(due)) != Mode::Forward {
                return drop_rest(data.len() - off, &rx);
            }
            let _gate = lock(&conn.gates[dir as usize]);
            if conn.mode() != Mode::Forward {
                continue;
            }
            match dst.write(&data[off..]) {
                Ok(n) => {
                    off += n;
                    slot.delivered[dir as usize].fetch_add(n as u64, SeqCst);
                    slot.last_ns[dir as usize].store(shared.epoch.elapsed().as_nanos() as u64, SeqCst);
                }
                // A write slice ran out (the end does not read): check the mode again.
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.abort();
                    return drop_rest(data.len() - off, &rx);
                }
            }
        }
    }
    // The source ended cleanly and everything was delivered.
    if conn.mode() == Mode::Forward {
        let _ = dst.shutdown(Shutdown::Write);
    }
}

/// Start relaying one accepted connection of tunnel `index`.
fn relay_conn(shared: &Arc<Shared>, index: usize, client: TcpStream) {
    let slot = &shared.slots[index];
    let refuse = |socks: &[TcpStream]| {
        socks.iter().for_each(set_linger_zero);
        slot.refused.fetch_add(1, SeqCst);
    };
    if shared.down.load(SeqCst) {
        return refuse(&[client]);
    }
    let Ok(server) = TcpStream::connect(shared.targets[index]) else {
        return refuse(&[client]);
    };
    // Registered before a byte moves: once an end sees the connection work, `rst` and the
    // other faults find it. `set_down` sets its flag before it sweeps the links.
    let mut links = lock(&slot.links);
    if shared.down.load(SeqCst) || shared.stop.load(SeqCst) {
        return refuse(&[client, server]);
    }
    for s in [&client, &server] {
        let _ = s.set_nodelay(true);
        let _ = s.set_write_timeout(Some(WRITE_SLICE));
    }
    let conn = Arc::new(Conn {
        socks: [client, server],
        mode: Mutex::new(Mode::Forward),
        changed: Condvar::new(),
        gates: [Mutex::new(()), Mutex::new(())],
    });
    let mut threads = Vec::new();
    for dir in [Dir::ToServer, Dir::ToClient] {
        let (tx, rx) = sync_channel(QUEUE_CHUNKS);
        let (c, s) = (conn.clone(), shared.clone());
        threads.push(spawn("frelay-read", move || read_side(c, s, index, dir, tx)));
        let (c, s) = (conn.clone(), shared.clone());
        threads.push(spawn("frelay-deliver", move || deliver_side(c, s, index, dir, rx)));
    }
    slot.accepted.fetch_add(1, SeqCst);
    links.push(Link { conn: Arc::downgrade(&conn), threads });
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    thread::Builder::new().name(name.into()).spawn(f).expect("relay: spawn a thread")
}

/// Threads of this process that belong to a relay (their names start with `frelay-`).
pub fn relay_threads() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("frelay-"))
        .count()
}

fn accept_loop(shared: Arc<Shared>, index: usize, listener: TcpListener) {
    loop {
        match listener.accept() {
            _ if shared.stop.load(SeqCst) => return,
            Ok((client, _)) => relay_conn(&shared, index, client),
            // Out of descriptors or similar: do not spin.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Abort every connection in `links` and wait for their threads: when this returns, the RSTs
/// are sent.
fn reset_links(links: Vec<Link>) {
    for l in &links {
        if let Some(c) = l.conn.upgrade() {
            c.abort();
        }
    }
    for l in links {
        l.threads.into_iter().for_each(|t| drop(t.join()));
    }
}

impl FaultRelay {
    /// Listen on `targets.len()` consecutive loopback ports; port `base + i` forwards to
    /// `targets[i]`.
    pub fn new(targets: &[SocketAddr]) -> FaultRelay {
        let listeners = bind_range(targets.len());
        let addrs = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            targets: targets.to_vec(),
            slots: targets.iter().map(|_| Slot::default()).collect(),
            down: AtomicBool::new(false),
            stop: AtomicBool::new(false),
        });
        let acceptors = listeners
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let (s, l) = (shared.clone(), l.try_clone().unwrap());
                spawn("frelay-accept", move || accept_loop(s, i, l))
            })
            .collect();
        FaultRelay { addrs, shared, listeners, acceptors }
    }

    /// The first port (tunnel 0): what an mtmux client dials.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// Every listening address, tunnel 0 first.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The open connections of tunnel `i`; connections whose threads have all ended are
    /// forgotten on the way.
    fn live(&self, i: usize) -> Vec<Arc<Conn>> {
        let mut links = lock(&self.shared.slots[i].links);
        links.retain(|l| l.conn.strong_count() > 0);
        links.iter().filter_map(|l| l.conn.upgrade()).collect()
    }

    /// Abort the open connections of tunnel `i` with a RST on both sides; returns once sent.
    pub fn rst(&self, i: usize) {
        reset_links(std::mem::take(&mut *lock(&self.shared.slots[i].links)));
    }

    /// Close the open connections of tunnel `i` gracefully (FIN to both ends).
    pub fn fin(&self, i: usize) {
        self.live(i).iter().for_each(|c| c.finish());
    }

    /// Stop forwarding on the open connections of tunnel `i`, keeping them open.
    pub fn blackhole(&self, i: usize) {
        self.live(i).iter().for_each(|c| c.set_mode(Mode::Blackhole));
    }

    /// Delay every chunk of tunnel `i` (open and later connections) by `d`, each way.
    pub fn delay(&self, i: usize, d: Duration) {
        self.shared.slots[i].delay_ns.store(d.as_nanos() as u64, SeqCst);
    }

    /// Invert one byte (the middle one) of the next chunk that any connection of tunnel `i`
    /// reads in direction `dir`; see [`flipped`](FaultRelay::flipped) for when it happened.
    pub fn flip(&self, i: usize, dir: Dir) {
        self.shared.slots[i].flip[dir as usize].store(true, SeqCst);
    }

    /// Bytes of tunnel `i` inverted in direction `dir` so far.
    pub fn flipped(&self, i: usize, dir: Dir) -> u64 {
        self.shared.slots[i].flipped[dir as usize].load(SeqCst)
    }

    /// While down, every connection is reset and new ones are refused (accepted, then reset).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, SeqCst);
        if down {
            (0..self.addrs.len()).for_each(|i| self.rst(i));
        }
    }

    /// Go down for `d` (an outage of the whole bundle), then up again.
    pub fn down_for(&self, d: Duration) {
        self.set_down(true);
        thread::sleep(d);
        self.set_down(false);
    }

    /// Connections of tunnel `i` relayed so far.
    pub fn accepted(&self, i: usize) -> usize {
        self.shared.slots[i].accepted.load(SeqCst)
    }

    /// Connections of tunnel `i` refused (relay down or target unreachable).
    pub fn refused(&self, i: usize) -> usize {
        self.shared.slots[i].refused.load(SeqCst)
    }

    /// Connections of tunnel `i` still open.
    pub fn open(&self, i: usize) -> usize {
        self.live(i).len()
    }

    /// Bytes of tunnel `i` delivered in direction `dir`, over all its connections.
    pub fn delivered(&self, i: usize, dir: Dir) -> u64 {
        self.shared.slots[i].delivered[dir as usize].load(SeqCst)
    }

    /// Bytes of tunnel `i` read in direction `dir` but never delivered (lost with a reset or
    /// FIN; a blackhole holds them instead). More are lost in the kernel's socket buffers.
    pub fn dropped(&self, i: usize, dir: Dir) -> u64 {
        self.shared.slots[i].dropped[dir as usize].load(SeqCst)
    }

    /// When bytes of tunnel `i` were last delivered in direction `dir` (after `blackhole`: when
    /// that end's silence began).
    pub fn last_delivery(&self, i: usize, dir: Dir) -> Option<Instant> {
        let ns = self.shared.slots[i].last_ns[dir as usize].load(SeqCst);
        (ns != 0).then(|| self.shared.epoch + Duration::from_nanos(ns))
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        for l in &self.listeners {
            // Safety: shutdown of a listening socket we own wakes the thread in accept().
            unsafe {
                libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
        self.acceptors.drain(..).for_each(|t| drop(t.join()));
        for s in &self.shared.slots {
            reset_links(std::mem::take(&mut *lock(&s.links)));
        }
    }
}
