//! Accepting and dialing bundles: the socket side of the handshake.
//!
//! A [`Listener`] listens on a port range (`port .. port + tunnels - 1`, tunnel `i` on
//! `port + i`, as the Go original) or, with `Config::single_port`, on one port for all
//! tunnels. One acceptor thread per port hands each connection to a short-lived handshake
//! thread, which reads the HELLO with a timeout and adds the tunnel to its bundle. When a
//! bundle is complete its tunnels get their REPLY and a server [`Session`] is queued for
//! [`Listener::accept`]. A bundle that is not complete within `handshake_timeout` is refused
//! and its connections closed; one bad tunnel fails its bundle.
//!
//! Each connection holds a handshake slot from accept until its handshake is over (its bundle
//! complete, refused or expired, its re-join done): at most `max_pending_handshakes` in all
//! and [`Config::handshakes_per_source`] from one source address; beyond either, a connection
//! is refused with a "busy" reply at once (and noted for [`Listener::next_refusal`]).

mod bind;
mod dial;
mod incoming;
mod keyauth;
mod limit;
mod refusals;
mod rejoin;
mod secure;
mod slots;

pub use dial::dial;
pub(crate) use dial::rejoin;
pub use incoming::IncomingSessions;
pub use refusals::{Refusal, REFUSAL_QUEUE};

use crate::config::{check_peer_params, Config, MAX_TUNNELS};
use crate::core::bundle::{Assembler, Join};
use crate::core::ids::Role;
use crate::error::{Error, Result};
use crate::ffi::sys;
use crate::proto::auth::Secret;
use crate::proto::handshake::{
    check_prefix, Hello, HelloKind, Reply, Status, COMMON_LEN, HANDSHAKE_VERSION, HELLO_FLAG_REJOIN,
    HELLO_LEN, NONCE_LEN,
};
use crate::session::{Session, Setup};
use crate::wire::Wire;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Accepts bundles of tunnels from clients and turns each into a [`Session`].
pub struct Listener {
    inner: Arc<ListenerInner>,
}

struct ListenerInner {
    cfg: Config,
    sockets: Vec<TcpListener>,
    addrs: Vec<SocketAddr>,
    assembler: Mutex<Assembler<Wire>>,
    /// Handshake threads waiting for their bundle to complete wait here.
    bundle_cv: Condvar,
    /// Connections between accept and the end of their handshake thread, in total and by
    /// source address.
    handshakes: Mutex<slots::Slots>,
    sessions_tx: Sender<Session>,
    sessions_rx: Receiver<Session>,
    closed: AtomicBool,
    /// Dropped at close, which wakes `accept`.
    closed_tx: Mutex<Option<Sender<()>>>,
    closed_rx: Receiver<()>,
    acceptors: Mutex<Vec<JoinHandle<()>>>,
    /// Running sessions whose clients re-join lost tunnels.
    registry: rejoin::Registry,
    /// Connections refused during their handshake, for `next_refusal`.
    refusals: refusals::Refusals,
    /// At most this many open sessions (`set_max_sessions`).
    limit: limit::SessionLimit,
    /// Hands accepted connections to idle handshake threads (a rendezvous: it succeeds only
    /// when one waits); taken at close, which lets them end.
    jobs_tx: Mutex<Option<Sender<Job>>>,
    jobs_rx: Receiver<Job>,
}

/// A connection for a handshake thread, the index of the port it arrived on, and its
/// handshake slot.
type Job = (TcpStream, usize, Slot);

/// How long an idle handshake thread waits for more work before it ends.
const HANDSHAKE_THREAD_IDLE: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("addrs", &self.inner.addrs).finish()
    }
}

fn resolve(addr: impl ToSocketAddrs) -> Result<SocketAddr> {
    addr.to_socket_addrs()?.next().ok_or_else(|| {
        Error::Io(Arc::new(io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing")))
    })
}

fn with_port(addr: SocketAddr, port: u32) -> Option<SocketAddr> {
    let port = u16::try_from(port).ok()?;
    let mut a = addr;
    a.set_port(port);
    Some(a)
}

fn context(e: io::Error, what: String) -> Error {
    Error::Io(Arc::new(io::Error::new(e.kind(), format!("{what}: {e}"))))
}

impl Listener {
    /// Listen for bundles at `addr`: on the port range `port .. port + cfg.tunnels - 1`, or on
    /// `port` alone with `cfg.single_port`. Port 0 picks free port(s); see
    /// [`local_addrs`](Listener::local_addrs).
    pub fn bind(addr: impl ToSocketAddrs, cfg: &Config) -> Result<Listener> {
        cfg.validate()?;
        Wire::check_side(cfg, true)?;
        let base = resolve(addr)?;
        let sockets = if cfg.single_port {
            vec![TcpListener::bind(base).map_err(|e| context(e, format!("cannot listen on {base}")))?]
        } else {
            bind::bind_range(base, cfg.tunnels)?
        };
        let addrs = sockets.iter().map(|s| s.local_addr()).collect::<io::Result<Vec<_>>>()?;
        let (sessions_tx, sessions_rx) = crossbeam_channel::bounded(cfg.accept_backlog);
        let (closed_tx, closed_rx) = crossbeam_channel::bounded(0);
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(0);
        let inner = Arc::new(ListenerInner {
            cfg: cfg.clone(),
            sockets,
            addrs,
            assembler: Mutex::new(Assembler::new(cfg.max_pending_handshakes)),
            bundle_cv: Condvar::new(),
            handshakes: Mutex::new(slots::Slots::new(
                cfg.max_pending_handshakes,
                cfg.handshakes_per_source(),
            )),
            sessions_tx,
            sessions_rx,
            closed: AtomicBool::new(false),
            closed_tx: Mutex::new(Some(closed_tx)),
            closed_rx,
            acceptors: Mutex::new(Vec::new()),
            registry: rejoin::Registry::default(),
            refusals: refusals::Refusals::default(),
            limit: limit::SessionLimit::default(),
            jobs_tx: Mutex::new(Some(jobs_tx)),
            jobs_rx,
        });
        let mut acceptors = Vec::new();
        for i in 0..inner.sockets.len() {
            let li = inner.clone();
            let h = std::thread::Builder::new()
                .name(format!("mtmux-acc{i}"))
                .stack_size(128 * 1024)
                .spawn(move || li.accept_loop(i));
            match h {
                Ok(h) => acceptors.push(h),
                Err(e) => {
                    inner.close();
                    return Err(e.into());
                }
            }
        }
        *inner.acceptors.lock() = acceptors;
        Ok(Listener { inner })
    }

    /// Wait for the next complete bundle and return its session.
    pub fn accept(&self) -> Result<Session> {
        self.accept_deadline(None)
    }

    /// Wait at most `timeout` for the next session; [`Error::TimedOut`] then.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Session> {
        self.accept_deadline(crate::config::deadline_after(timeout))
    }

    fn accept_deadline(&self, deadline: Option<Instant>) -> Result<Session> {
        let li = &self.inner;
        let timeout = match deadline {
            Some(d) => crossbeam_channel::at(d),
            None => crossbeam_channel::never(),
        };
        crossbeam_channel::select_biased! {
            recv(li.sessions_rx) -> s => s.map_err(|_| Error::SessionClosed(crate::CloseReason::Local)),
            recv(li.closed_rx) -> _ => Err(Error::SessionClosed(crate::CloseReason::Local)),
            recv(timeout) -> _ => Err(Error::TimedOut),
        }
    }

    /// The next connection refused during its handshake (wrong or missing key, bad
    /// parameters, wrong port, too many handshakes, ...), with the peer's address and the
    /// reason, waiting at most `timeout` (`None`: until one comes). The listener keeps the
    /// last [`REFUSAL_QUEUE`] unread refusals; older ones are dropped (see
    /// [`refusal_counts`](Listener::refusal_counts)). Returns `None` on timeout.
    pub fn next_refusal(&self, timeout: Option<Duration>) -> Option<Refusal> {
        self.inner.refusals.next(timeout)
    }

    /// Serve at most `max` open sessions at once (`None`, the default: no limit). A client
    /// whose bundle completes while this many sessions started by this listener are open
    /// (accepted or not; one waiting in an outage for its client to resume counts, one that is
    /// closing does not) is refused during its handshake with status `SessionLimit`: its
    /// [`dial`] fails with [`Error::Refused`] saying so, and the refusal is noted for
    /// [`next_refusal`](Listener::next_refusal). Re-joins of running sessions are not
    /// affected. Lowering the limit closes no session.
    pub fn set_max_sessions(&self, max: Option<usize>) {
        self.inner.limit.set(max);
    }

    /// The limit of [`set_max_sessions`](Listener::set_max_sessions).
    pub fn max_sessions(&self) -> Option<usize> {
        self.inner.limit.get()
    }

    /// (connections refused so far, refusals dropped from the queue unread).
    pub fn refusal_counts(&self) -> (u64, u64) {
        self.inner.refusals.counts()
    }

    /// The first listening address (the base of the port range).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.addrs[0]
    }

    /// All listening addresses, tunnel 0 first.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.inner.addrs
    }

    /// Stop listening: pending handshakes are refused, a thread blocked in
    /// [`accept`](Listener::accept) returns an error, and sessions not yet accepted are closed.
    /// Sessions already accepted go on, but their clients can no longer re-join lost tunnels
    /// (nobody listens for them).
    pub fn close(&self) {
        self.inner.close();
        let acceptors = std::mem::take(&mut *self.inner.acceptors.lock());
        for h in acceptors {
            let _ = h.join();
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.close();
    }
}

/// A connection's handshake slot, given back when dropped.
struct Slot {
    li: Arc<ListenerInner>,
    peer: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.li.handshakes.lock().give_back(self.peer);
    }
}

/// Fill `buf` from `conn` before `deadline` (however the bytes trickle in).
fn read_by(mut conn: &Wire, buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        conn.set_read_timeout(Some(left))?;
        match conn.read(&mut buf[got..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Write a refusal (best effort: the peer may be gone or not an mtmux client at all).
fn refuse(mut conn: &Wire, hello: Option<&Hello>, status: Status, reason: &str) {
    let _ = conn.set_write_timeout(Some(Duration::from_millis(500)));
    let _ = conn.write_all(&Reply::refuse(hello, status, reason).encode());
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

impl ListenerInner {
    /// Refuse `conn` and note it (with the peer's address) for `Listener::next_refusal`.
    fn refuse(&self, conn: &Wire, hello: Option<&Hello>, status: Status, reason: &str) {
        self.refusals.note(conn.peer_addr().ok(), reason);
        refuse(conn, hello, status, reason);
    }

    fn close(&self) {
        if self.closed.swap(true, Relaxed) {
            return;
        }
        for s in &self.sockets {
            self.refuse_backlog(s);
            sys::shutdown_listener(s);
        }
        self.closed_tx.lock().take();
        self.jobs_tx.lock().take();
        let held = self.assembler.lock().drain();
        self.bundle_cv.notify_all();
        for c in held {
            self.refuse(&c, None, Status::Closing, "server is shutting down");
        }
        while self.sessions_rx.try_recv().is_ok() {}
    }

    /// Refuse the connections the kernel completed on `sock` that nobody accepted yet: they
    /// are handshakes in progress too, and shutting the socket down would only reset them.
    /// Bounded, so that a flood cannot hold `close` up.
    fn refuse_backlog(&self, sock: &TcpListener) {
        if sock.set_nonblocking(true).is_err() {
            return;
        }
        for _ in 0..self.cfg.max_pending_handshakes {
            let Ok((conn, _)) = sock.accept() else { return };
            let _ = conn.set_nonblocking(false);
            // As `accept_loop` refuses once closed: in the clear (a TLS client reads garbage,
            // and fails at once as well).
            self.refuse(&conn.into(), None, Status::Closing, "server is shutting down");
        }
    }

    fn accept_loop(self: Arc<Self>, port_index: usize) {
        let sock = &self.sockets[port_index];
        let Some(jobs) = self.jobs_tx.lock().clone() else { return };
        loop {
            let (conn, peer) = match sock.accept() {
                Ok(c) => c,
                Err(_) if self.closed.load(Relaxed) => return,
                Err(e) => {
                    // Out of descriptors or similar: back off instead of spinning; close()
                    // ends the wait at once.
                    let _ = e;
                    let _ = self.closed_rx.recv_timeout(Duration::from_millis(50));
                    continue;
                }
            };
            if self.closed.load(Relaxed) {
                self.refuse(&conn.into(), None, Status::Closing, "server is shutting down");
                return;
            }
            let taken = self.handshakes.lock().take(peer.ip());
            if let Err(full) = taken {
                let (told, noted) = match full {
                    slots::Full::Total(n) => (
                        "too many handshakes in progress".to_string(),
                        format!("too many handshakes in progress ({n}, max_pending_handshakes)"),
                    ),
                    slots::Full::Source(n) => (
                        "too many handshakes in progress from your address".to_string(),
                        format!(
                            "too many handshakes in progress from this address ({n}, \
                             max_handshakes_per_source)"
                        ),
                    ),
                };
                refuse(&conn.into(), None, Status::Busy, &told);
                self.refusals.note(Some(peer), noted);
                continue;
            }
            // Gives the slot back however the handshake ends (or if no thread can start).
            let slot = Slot { li: self.clone(), peer: peer.ip() };
            // An idle handshake thread takes it; otherwise a new one starts (at most
            // `max_pending_handshakes` are busy, see above). Reusing threads keeps a flood of
            // bad handshakes cheap.
            let job = match jobs.try_send((conn, port_index, slot)) {
                Ok(()) => continue,
                Err(e) => e.into_inner(),
            };
            let li = self.clone();
            let _ = std::thread::Builder::new()
                .name("mtmux-hs".into())
                .stack_size(128 * 1024)
                .spawn(move || li.handshake_thread(job));
        }
    }

    /// A handshake thread: runs handshakes until it has been idle for a while or the listener
    /// closes.
    fn handshake_thread(&self, first: Job) {
        let mut job = Some(first);
        while let Some((conn, port_index, slot)) = job.take() {
            self.handshake(conn, port_index);
            drop(slot);
            job = self.jobs_rx.recv_timeout(HANDSHAKE_THREAD_IDLE).ok();
        }
    }

    /// Read one tunnel's HELLO and add the tunnel to its bundle.
    fn handshake(&self, conn: TcpStream, port_index: usize) {
        let timeout = self.cfg.handshake_timeout;
        // The deadline covers the whole HELLO (and the TLS handshake before it), however
        // slowly its bytes come.
        let deadline = Instant::now() + timeout;
        let Some(conn) = self.secure(conn, deadline) else { return };
        let mut raw = [0u8; HELLO_LEN];
        if read_by(&conn, &mut raw[..COMMON_LEN], deadline).is_err() {
            self.refuse(&conn, None, Status::Malformed, "incomplete handshake");
            return;
        }
        match check_prefix(raw[..COMMON_LEN].try_into().expect("len")) {
            Ok(HANDSHAKE_VERSION) => {}
            Ok(1) => {
                // A version 1 client reads a version 1 reply: tell it in its own layout.
                let why =
                    "this server speaks mtmux protocol version 2, the client version 1: upgrade the client";
                let _ = conn.set_write_timeout(Some(Duration::from_millis(500)));
                self.refusals.note(conn.peer_addr().ok(), why);
                let _ = (&conn).write_all(&Reply::refuse(None, Status::BadVersion, why).encode_v1());
                let _ = conn.shutdown(std::net::Shutdown::Both);
                return;
            }
            Ok(v) => {
                self.refuse(&conn, None, Status::BadVersion, &format!("unknown protocol version {v}"));
                return;
            }
            Err(e) => {
                self.refuse(&conn, None, Status::Malformed, &secure::not_mtmux(&raw, e));
                return;
            }
        }
        if read_by(&conn, &mut raw[COMMON_LEN..], deadline).is_err() {
            self.refuse(&conn, None, Status::Malformed, "incomplete handshake");
            return;
        }
        let hello = match Hello::decode(&raw) {
            Ok(h) => h,
            Err(e) => {
                self.refuse(&conn, None, Status::Malformed, &e.to_string());
                return;
            }
        };
        // The key comes first: a tunnel that cannot prove it affects no bundle and no session.
        if let Err((status, why)) =
            keyauth::server_check(self.cfg.key.as_ref(), &conn, &hello, &raw, deadline)
        {
            self.refuse(&conn, Some(&hello), status, &why);
            return;
        }
        if let Err(why) = check_peer_params(&hello.params) {
            self.refuse_bundle(&conn, &hello, Status::BadParams, &why);
            return;
        }
        if !self.cfg.single_port && hello.index as usize != port_index {
            let want = with_port(self.addrs[0], self.addrs[0].port() as u32 + hello.index as u32);
            let why = match want {
                Some(a) => format!(
                    "tunnel {} must connect to {a} (this server listens on a port range)",
                    hello.index
                ),
                None => format!("tunnel {} is outside this server's port range", hello.index),
            };
            self.refuse_bundle(&conn, &hello, Status::WrongPort, &why);
            return;
        }
        if hello.kind == HelloKind::Rejoin {
            rejoin::serve(self, conn, &hello, deadline);
            return;
        }
        let max = self.cfg.tunnels.min(MAX_TUNNELS) as u16;
        let mut a = self.assembler.lock();
        if self.closed.load(Relaxed) {
            drop(a);
            self.refuse(&conn, Some(&hello), Status::Closing, "server is shutting down");
            return;
        }
        match a.join(&hello, conn, Instant::now(), timeout, max) {
            Join::Complete { tunnels, hello: first } => {
                drop(a);
                self.bundle_cv.notify_all();
                self.start_session(&first, tunnels);
            }
            Join::Refused { conn, status, reason } => {
                let rest = match status {
                    Status::Busy => Vec::new(),
                    _ => a.refuse(&hello.bundle, status, &reason, Instant::now(), timeout),
                };
                drop(a);
                self.refuse(&conn, Some(&hello), status, &reason);
                for c in rest {
                    self.refuse(&c, Some(&hello), status, &reason);
                }
            }
            Join::Waiting { deadline, first } => {
                // Every tunnel's thread waits while its bundle assembles, so that the tunnel
                // keeps its handshake slot (counted per source) for as long as it is held.
                while a.contains(&hello.bundle) && !self.closed.load(Relaxed) {
                    if self.bundle_cv.wait_until(&mut a, deadline).timed_out() {
                        break;
                    }
                }
                // The first tunnel's thread expires the bundle.
                if !first {
                    return;
                }
                if let Some(e) = a.expire(&hello.bundle, Instant::now()) {
                    drop(a);
                    let why = format!(
                        "only {} of {} tunnels arrived within the handshake timeout ({timeout:?})",
                        e.arrived, e.count
                    );
                    for c in e.tunnels {
                        self.refuse(&c, Some(&hello), Status::Incomplete, &why);
                    }
                }
            }
        }
    }

    /// Refuse `conn` and every tunnel already waiting in its bundle.
    fn refuse_bundle(&self, conn: &Wire, hello: &Hello, status: Status, why: &str) {
        let rest = self.assembler.lock().refuse(
            &hello.bundle,
            status,
            why,
            Instant::now(),
            self.cfg.handshake_timeout,
        );
        self.bundle_cv.notify_all();
        self.refuse(conn, Some(hello), status, why);
        for c in rest {
            self.refuse(&c, Some(hello), status, why);
        }
    }

    fn start_session(&self, hello: &Hello, tunnels: Vec<Wire>) {
        if self.sessions_tx.is_full() {
            for c in &tunnels {
                self.refuse(c, Some(hello), Status::Busy, "accept backlog full");
            }
            return;
        }
        let place = match self.limit.take() {
            Ok(place) => place,
            Err(max) => {
                let peer = tunnels[0].peer_addr().ok();
                self.refusals.note(peer, format!("at the session limit ({max}, max_sessions)"));
                let why = format!("this server is at its session limit ({max})");
                for c in &tunnels {
                    refuse(c, Some(hello), Status::SessionLimit, &why);
                }
                return;
            }
        };
        let mut server_nonce = [0u8; NONCE_LEN];
        if sys::random_bytes(&mut server_nonce).is_err() {
            for c in &tunnels {
                self.refuse(c, Some(hello), Status::Busy, "no randomness available");
            }
            return;
        }
        let reply = |i: usize| {
            let mut h = *hello;
            h.index = i as u16;
            Reply::accept(&h, self.cfg.params(), server_nonce).encode()
        };
        for (i, mut c) in tunnels.iter().enumerate() {
            let _ = c.set_write_timeout(Some(self.cfg.handshake_timeout));
            if c.write_all(&reply(i)).is_err() {
                return;
            }
        }
        for c in &tunnels {
            let _ = c.set_read_timeout(None);
        }
        // The client re-dials lost tunnels: keep the session reachable for its re-joins, and
        // through an outage for resume_timeout.
        let rejoins = hello.flags & HELLO_FLAG_REJOIN != 0;
        let setup = Setup {
            role: Role::Server,
            peer: hello.params,
            bundle: hello.bundle,
            secret: Secret::derive(
                self.cfg.key.as_ref().map(|k| k.bytes()),
                &hello.bundle,
                &hello.nonce,
                &server_nonce,
            ),
            redial: None,
            resumable: rejoins && !self.cfg.resume_timeout.is_zero(),
        };
        if let Ok(s) = Session::start(tunnels, &self.cfg, setup) {
            self.limit.started(place, &s);
            if rejoins {
                self.registry.insert(hello.bundle, &s);
            }
            // A session that finds the queue full or closed is dropped, which closes it.
            let _ = self.sessions_tx.try_send(s);
        }
    }
}
