//! Accepting and dialing bundles: the socket side of the handshake.
//!
//! A [`Listener`] listens on a port range (`port .. port + tunnels - 1`, tunnel `i` on
//! `port + i`, as the Go original) or, with `Config::single_port`, on one port for all
//! tunnels. One acceptor thread per port hands each connection to a short-lived handshake
//! thread (at most `max_pending_handshakes` at once), which reads the HELLO with a timeout and
//! adds the tunnel to its bundle. When a bundle is complete its tunnels get their REPLY and a
//! server [`Session`] is queued for [`Listener::accept`]. A bundle that is not complete within
//! `handshake_timeout` is refused and its connections closed; one bad tunnel fails its bundle.

use crate::config::{check_peer_params, Config, MAX_TUNNELS};
use crate::core::bundle::{Assembler, Join};
use crate::core::ids::Role;
use crate::error::{Error, Result};
use crate::ffi::sys;
use crate::proto::handshake::{BundleId, Hello, HelloKind, Params, Reply, Status, HELLO_LEN};
use crate::session::Session;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
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
    assembler: Mutex<Assembler<TcpStream>>,
    /// Handshake threads waiting for their bundle to complete wait here.
    bundle_cv: Condvar,
    /// Connections between accept and the end of their handshake thread.
    handshakes: AtomicUsize,
    sessions_tx: Sender<Session>,
    sessions_rx: Receiver<Session>,
    closed: AtomicBool,
    /// Dropped at close, which wakes `accept`.
    closed_tx: Mutex<Option<Sender<()>>>,
    closed_rx: Receiver<()>,
    acceptors: Mutex<Vec<JoinHandle<()>>>,
}

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

/// Bind `n` consecutive ports starting at `base`'s port (any free range when it is 0).
fn bind_range(base: SocketAddr, n: usize) -> Result<Vec<TcpListener>> {
    if base.port() != 0 {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let a = with_port(base, base.port() as u32 + i as u32).ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "port range {}..{} exceeds 65535",
                    base.port(),
                    base.port() as usize + n - 1
                ))
            })?;
            v.push(
                TcpListener::bind(a).map_err(|e| context(e, format!("cannot listen on {a} (tunnel {i})")))?,
            );
        }
        return Ok(v);
    }
    // Port 0: look for `n` consecutive free ports below the ephemeral range first, where
    // outgoing connections (and their TIME_WAIT remains) never take ports; then let the OS
    // pick the first port and try the ones after it.
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse::<u32>().ok()))
        .unwrap_or(32768);
    let (lo, hi) = (10_000u32, ephemeral_low.saturating_sub(n as u32));
    let mut last_err = None;
    for attempt in 0..128 {
        let first_port = if attempt < 64 && hi > lo {
            let mut r = [0u8; 4];
            sys::random_bytes(&mut r)?;
            lo + u32::from_le_bytes(r) % (hi - lo)
        } else {
            0
        };
        let first = match with_port(base, first_port).map(TcpListener::bind) {
            Some(Ok(l)) => l,
            Some(Err(e)) if first_port != 0 => {
                last_err = Some(e);
                continue;
            }
            Some(Err(e)) => return Err(e.into()),
            None => continue,
        };
        let p = first.local_addr()?.port() as u32;
        let mut v = vec![first];
        for i in 1..n {
            match with_port(base, p + i as u32).map(TcpListener::bind) {
                Some(Ok(l)) => v.push(l),
                Some(Err(e)) => {
                    last_err = Some(e);
                    break;
                }
                None => break,
            }
        }
        if v.len() == n {
            return Ok(v);
        }
    }
    Err(context(
        last_err.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()),
        format!("cannot find {n} consecutive free ports"),
    ))
}

impl Listener {
    /// Listen for bundles at `addr`: on the port range `port .. port + cfg.tunnels - 1`, or on
    /// `port` alone with `cfg.single_port`. Port 0 picks free port(s); see
    /// [`local_addrs`](Listener::local_addrs).
    pub fn bind(addr: impl ToSocketAddrs, cfg: &Config) -> Result<Listener> {
        cfg.validate()?;
        let base = resolve(addr)?;
        let sockets = if cfg.single_port {
            vec![TcpListener::bind(base).map_err(|e| context(e, format!("cannot listen on {base}")))?]
        } else {
            bind_range(base, cfg.tunnels)?
        };
        let addrs = sockets.iter().map(|s| s.local_addr()).collect::<io::Result<Vec<_>>>()?;
        let (sessions_tx, sessions_rx) = crossbeam_channel::bounded(cfg.accept_backlog);
        let (closed_tx, closed_rx) = crossbeam_channel::bounded(0);
        let inner = Arc::new(ListenerInner {
            cfg: cfg.clone(),
            sockets,
            addrs,
            assembler: Mutex::new(Assembler::new(cfg.max_pending_handshakes)),
            bundle_cv: Condvar::new(),
            handshakes: AtomicUsize::new(0),
            sessions_tx,
            sessions_rx,
            closed: AtomicBool::new(false),
            closed_tx: Mutex::new(Some(closed_tx)),
            closed_rx,
            acceptors: Mutex::new(Vec::new()),
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
    /// Sessions already accepted are not affected.
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

/// Write a refusal (best effort: the peer may be gone or not an mtmux client at all).
fn refuse(mut conn: &TcpStream, hello: Option<&Hello>, status: Status, reason: &str) {
    let _ = conn.set_write_timeout(Some(Duration::from_millis(500)));
    let _ = conn.write_all(&Reply::refuse(hello, status, reason).encode());
    let _ = conn.shutdown(std::net::Shutdown::Both);
}

impl ListenerInner {
    fn close(&self) {
        if self.closed.swap(true, Relaxed) {
            return;
        }
        for s in &self.sockets {
            sys::shutdown_listener(s);
        }
        self.closed_tx.lock().take();
        let held = self.assembler.lock().drain();
        self.bundle_cv.notify_all();
        for c in held {
            refuse(&c, None, Status::Closing, "server is shutting down");
        }
        while self.sessions_rx.try_recv().is_ok() {}
    }

    fn accept_loop(self: Arc<Self>, port_index: usize) {
        let sock = &self.sockets[port_index];
        loop {
            let conn = match sock.accept() {
                Ok((c, _)) => c,
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
                refuse(&conn, None, Status::Closing, "server is shutting down");
                return;
            }
            if self.handshakes.fetch_add(1, Relaxed) >= self.cfg.max_pending_handshakes {
                self.handshakes.fetch_sub(1, Relaxed);
                refuse(&conn, None, Status::Busy, "too many handshakes in progress");
                continue;
            }
            let li = self.clone();
            let spawned =
                std::thread::Builder::new().name("mtmux-hs".into()).stack_size(128 * 1024).spawn(move || {
                    li.handshake(conn, port_index);
                    li.handshakes.fetch_sub(1, Relaxed);
                });
            if spawned.is_err() {
                self.handshakes.fetch_sub(1, Relaxed);
            }
        }
    }

    /// Read one tunnel's HELLO and add the tunnel to its bundle.
    fn handshake(&self, mut conn: TcpStream, port_index: usize) {
        let timeout = self.cfg.handshake_timeout;
        let _ = conn.set_read_timeout(Some(timeout));
        let mut raw = [0u8; HELLO_LEN];
        if conn.read_exact(&mut raw).is_err() {
            refuse(&conn, None, Status::Malformed, "incomplete handshake");
            return;
        }
        let hello = match Hello::decode(&raw) {
            Ok(h) => h,
            Err(e) => {
                let status = match e {
                    crate::proto::handshake::HandshakeError::BadVersion(_) => Status::BadVersion,
                    _ => Status::Malformed,
                };
                refuse(&conn, None, status, &e.to_string());
                return;
            }
        };
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
        let max = self.cfg.tunnels.min(MAX_TUNNELS) as u16;
        let mut a = self.assembler.lock();
        if self.closed.load(Relaxed) {
            drop(a);
            refuse(&conn, Some(&hello), Status::Closing, "server is shutting down");
            return;
        }
        match a.join(&hello, conn, Instant::now(), timeout, max) {
            Join::Complete { tunnels, params } => {
                drop(a);
                self.bundle_cv.notify_all();
                self.start_session(&hello, tunnels, params);
            }
            Join::Refused { conn, status, reason } => {
                let rest = match status {
                    Status::Busy => Vec::new(),
                    _ => a.refuse(&hello.bundle, status, &reason, Instant::now(), timeout),
                };
                drop(a);
                refuse(&conn, Some(&hello), status, &reason);
                for c in rest {
                    refuse(&c, Some(&hello), status, &reason);
                }
            }
            Join::Waiting { deadline, first } => {
                if !first {
                    return;
                }
                // The first tunnel's thread watches the bundle's deadline.
                while a.contains(&hello.bundle) && !self.closed.load(Relaxed) {
                    if self.bundle_cv.wait_until(&mut a, deadline).timed_out() {
                        break;
                    }
                }
                if let Some(e) = a.expire(&hello.bundle, Instant::now()) {
                    drop(a);
                    let why = format!(
                        "only {} of {} tunnels arrived within the handshake timeout ({timeout:?})",
                        e.arrived, e.count
                    );
                    for c in e.tunnels {
                        refuse(&c, Some(&hello), Status::Incomplete, &why);
                    }
                }
            }
        }
    }

    /// Refuse `conn` and every tunnel already waiting in its bundle.
    fn refuse_bundle(&self, conn: &TcpStream, hello: &Hello, status: Status, why: &str) {
        let rest = self.assembler.lock().refuse(
            &hello.bundle,
            status,
            why,
            Instant::now(),
            self.cfg.handshake_timeout,
        );
        self.bundle_cv.notify_all();
        refuse(conn, Some(hello), status, why);
        for c in rest {
            refuse(&c, Some(hello), status, why);
        }
    }

    fn start_session(&self, hello: &Hello, tunnels: Vec<TcpStream>, params: Params) {
        if self.sessions_tx.is_full() {
            for c in &tunnels {
                refuse(c, Some(hello), Status::Busy, "accept backlog full");
            }
            return;
        }
        let reply = |i: usize| {
            let mut h = *hello;
            h.index = i as u16;
            Reply::accept(&h, self.cfg.params()).encode()
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
        if let Ok(s) = Session::start(Role::Server, tunnels, &self.cfg, params) {
            // A session that finds the queue full or closed is dropped, which closes it.
            let _ = self.sessions_tx.try_send(s);
        }
    }
}

/// Open a bundle to the server at `addr`: `cfg.tunnels` connections to `port .. port + n - 1`
/// (or all to `port` with `cfg.single_port`), handshake included, within
/// `cfg.handshake_timeout`.
pub fn dial(addr: impl ToSocketAddrs, cfg: &Config) -> Result<Session> {
    cfg.validate()?;
    let base = resolve(addr)?;
    let deadline = Instant::now() + cfg.handshake_timeout;
    let targets: Vec<SocketAddr> = (0..cfg.tunnels)
        .map(|i| {
            let port = base.port() as u32 + if cfg.single_port { 0 } else { i as u32 };
            with_port(base, port)
                .ok_or_else(|| Error::InvalidConfig(format!("tunnel {i} would use port {port} > 65535")))
        })
        .collect::<Result<_>>()?;
    // Connect all tunnels at once: over a long path, one after another would cost a round
    // trip each.
    let conns: Vec<io::Result<TcpStream>> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .map(|a| {
                scope.spawn(move || {
                    let left =
                        deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
                    TcpStream::connect_timeout(a, left)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(io::ErrorKind::Other.into()))).collect()
    });
    let mut tunnels = Vec::with_capacity(conns.len());
    for (i, c) in conns.into_iter().enumerate() {
        tunnels.push(c.map_err(|e| context(e, format!("tunnel {i} to {}", targets[i])))?);
    }
    client_handshake(tunnels, cfg, deadline)
}

impl Session {
    /// Run the client handshake over connections the caller made (tunnel `i` is
    /// `tunnels[i]`) and start the session.
    pub fn client(tunnels: Vec<TcpStream>, cfg: &Config) -> Result<Session> {
        cfg.validate()?;
        client_handshake(tunnels, cfg, Instant::now() + cfg.handshake_timeout)
    }

    /// Run the server handshake over connections the caller accepted (in any order; the
    /// HELLOs say which tunnel each is) and start the session.
    pub fn server(tunnels: Vec<TcpStream>, cfg: &Config) -> Result<Session> {
        cfg.validate()?;
        server_handshake(tunnels, cfg, Instant::now() + cfg.handshake_timeout)
    }
}

fn left(deadline: Instant) -> Result<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err(Error::TimedOut)
    } else {
        Ok(d)
    }
}

fn check_count(n: usize) -> Result<()> {
    if n == 0 || n > MAX_TUNNELS {
        return Err(Error::InvalidConfig(format!("a bundle needs 1..={MAX_TUNNELS} tunnels, got {n}")));
    }
    Ok(())
}

fn read_reply(mut conn: &TcpStream) -> Result<Reply> {
    let mut raw = [0u8; HELLO_LEN];
    conn.read_exact(&mut raw)?;
    let (mut reply, n) = Reply::decode_fixed(&raw).map_err(|e| Error::Protocol(e.to_string()))?;
    let mut reason = vec![0u8; n];
    conn.read_exact(&mut reason)?;
    reply.set_reason(&reason);
    Ok(reply)
}

fn client_handshake(tunnels: Vec<TcpStream>, cfg: &Config, deadline: Instant) -> Result<Session> {
    check_count(tunnels.len())?;
    let mut id = [0u8; 16];
    sys::random_bytes(&mut id)?;
    let bundle = BundleId(id);
    let count = tunnels.len() as u16;
    for (i, mut c) in tunnels.iter().enumerate() {
        c.set_write_timeout(Some(left(deadline)?))?;
        let hello = Hello { kind: HelloKind::Join, bundle, index: i as u16, count, params: cfg.params() };
        c.write_all(&hello.encode()).map_err(|e| context(e, format!("sending handshake on tunnel {i}")))?;
    }
    let mut params = None;
    for (i, c) in tunnels.iter().enumerate() {
        c.set_read_timeout(Some(left(deadline)?))?;
        let reply = read_reply(c).map_err(|e| match e {
            Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Error::TimedOut
            }
            Error::Io(io) if io.kind() == io::ErrorKind::UnexpectedEof => {
                Error::Protocol(format!("tunnel {i}: the server closed the connection during the handshake"))
            }
            e => e,
        })?;
        if reply.status != Status::Accept {
            return Err(Error::Refused(format!("{:?}: {}", reply.status, reply.reason)));
        }
        if reply.bundle != bundle || reply.index as usize != i {
            return Err(Error::Protocol(format!("tunnel {i}: reply for another tunnel")));
        }
        check_peer_params(&reply.params).map_err(Error::Protocol)?;
        match params {
            None => params = Some(reply.params),
            Some(p) if p != reply.params => {
                return Err(Error::Protocol("tunnels of one bundle announced different parameters".into()))
            }
            Some(_) => {}
        }
        c.set_read_timeout(None)?;
    }
    Session::start(Role::Client, tunnels, cfg, params.expect("at least one tunnel"))
}

fn server_handshake(tunnels: Vec<TcpStream>, cfg: &Config, deadline: Instant) -> Result<Session> {
    check_count(tunnels.len())?;
    // Any failure refuses every connection, so that no client is left with a bare EOF.
    let fail = |hello: Option<&Hello>, status, why: String| {
        for c in &tunnels {
            refuse(c, hello, status, &why);
        }
        Err(Error::Protocol(why))
    };
    let mut hellos = Vec::with_capacity(tunnels.len());
    for (i, mut c) in tunnels.iter().enumerate() {
        let mut raw = [0u8; HELLO_LEN];
        let read = left(deadline)
            .and_then(|t| Ok(c.set_read_timeout(Some(t))?))
            .and_then(|()| Ok(c.read_exact(&mut raw)?));
        if let Err(e) = read {
            return fail(None, Status::Malformed, format!("tunnel {i}: no complete handshake ({e})"));
        }
        match Hello::decode(&raw) {
            Ok(h) => hellos.push(h),
            Err(e) => return fail(None, Status::Malformed, e.to_string()),
        }
    }
    let order = match bundle_order(&hellos) {
        Ok(order) => order,
        Err((status, why)) => return fail(Some(&hellos[0]), status, why),
    };
    let f = hellos[0];
    let mut slots: Vec<Option<TcpStream>> = tunnels.into_iter().map(Some).collect();
    let ordered: Vec<TcpStream> = order.iter().map(|&i| slots[i].take().expect("each once")).collect();
    for (i, mut c) in ordered.iter().enumerate() {
        let mut h = f;
        h.index = i as u16;
        c.set_write_timeout(Some(left(deadline)?))?;
        c.write_all(&Reply::accept(&h, cfg.params()).encode())?;
        c.set_read_timeout(None)?;
    }
    Session::start(Role::Server, ordered, cfg, f.params)
}

/// Check that `hellos` (one per connection) form one complete bundle; returns, for each
/// tunnel index, the position of its connection.
fn bundle_order(hellos: &[Hello]) -> Result<Vec<usize>, (Status, String)> {
    let n = hellos.len();
    let f = hellos[0];
    let mut order: Vec<Option<usize>> = vec![None; n];
    for (i, h) in hellos.iter().enumerate() {
        if h.kind != HelloKind::Join || h.bundle != f.bundle || h.count as usize != n || h.params != f.params
        {
            return Err((Status::Conflict, "the connections are not one bundle".into()));
        }
        check_peer_params(&h.params).map_err(|why| (Status::BadParams, why))?;
        if order[h.index as usize].replace(i).is_some() {
            return Err((Status::Conflict, format!("tunnel index {} appears twice", h.index)));
        }
    }
    Ok(order.into_iter().map(|o| o.expect("n distinct indices below n")).collect())
}
