//! Helpers shared by the integration tests: every wait here is bounded.
#![allow(dead_code)]

use mtmux::{Config, Listener, Session};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// A config suited to tests: quick keepalive so that failures show within seconds.
pub fn cfg(tunnels: usize) -> Config {
    Config {
        tunnels,
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_secs(2),
        reorder_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

/// A connected client/server session pair over loopback.
pub fn pair(cfg: &Config) -> (Session, Session) {
    let l = Listener::bind("127.0.0.1:0", cfg).expect("bind");
    let addr = l.local_addr();
    let c = cfg.clone();
    let client = thread::spawn(move || mtmux::dial(addr, &c).expect("dial"));
    let server = l.accept_timeout(Duration::from_secs(10)).expect("accept");
    (client.join().expect("client thread"), server)
}

/// Run `f` on a thread and wait at most `limit` for it; panics (failing the test) on timeout.
pub fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        // The body panicked: report its panic, not a timeout.
        Err(mpsc::RecvTimeoutError::Disconnected) => std::panic::resume_unwind(h.join().unwrap_err()),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("did not finish within {limit:?}"),
    }
}

/// Deterministic pseudo-random bytes (xorshift), so that corruption is detectable.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Control flags of one relayed connection.
#[derive(Default)]
struct Flow {
    /// Keep what arrives from the client instead of forwarding it (the relay keeps reading).
    held: AtomicBool,
    /// Bytes from the client kept while held.
    held_bytes: AtomicUsize,
    /// Drop everything, including held bytes, and close.
    killed: AtomicBool,
}

struct RelayConn {
    down: TcpStream,
    up: TcpStream,
    flow: Arc<Flow>,
}

/// A TCP relay between mtmux peers (single-port mode) that a test can freeze (stop moving
/// bytes, keeping connections open: a silent peer), or hold and cut one connection of (a
/// tunnel dies with frames inside it).
pub struct Relay {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<RelayConn>>>,
    frozen: Arc<AtomicBool>,
    /// The server's listener, kept open while the relay lives.
    pub listener: Option<Listener>,
}

/// Move bytes from `from` to `to`. While frozen, nothing is read (bytes pile up in the kernel:
/// a silent peer). While held (`from_client` only), bytes are read and kept, counted in
/// `held_bytes`, and forwarded only if released; a cut drops them for good.
fn pump(mut from: TcpStream, mut to: TcpStream, flow: Arc<Flow>, frozen: Arc<AtomicBool>, from_client: bool) {
    let killed = || flow.killed.load(Ordering::SeqCst);
    let held = || from_client && flow.held.load(Ordering::SeqCst);
    let mut buf = vec![0u8; 64 * 1024];
    let mut kept: Vec<u8> = Vec::new();
    loop {
        // The relay's own flag polling for the test's lifetime; it does not synchronise the
        // test.
        while frozen.load(Ordering::SeqCst) && !killed() {
            thread::park_timeout(Duration::from_millis(5));
        }
        if killed() {
            break;
        }
        if !held() && !kept.is_empty() {
            if to.write_all(&kept).is_err() {
                break;
            }
            kept.clear();
        }
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) if held() => {
                kept.extend_from_slice(&buf[..n]);
                flow.held_bytes.fetch_add(n, Ordering::SeqCst);
            }
            Ok(n) => {
                if killed() || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    if killed() {
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    } else {
        let _ = to.shutdown(Shutdown::Write);
    }
}

impl Relay {
    pub fn new(target: SocketAddr) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let frozen = Arc::new(AtomicBool::new(false));
        let (c2, f2) = (conns.clone(), frozen.clone());
        thread::spawn(move || {
            for down in l.incoming() {
                let Ok(down) = down else { return };
                let Ok(up) = TcpStream::connect(target) else {
                    return;
                };
                let flow = Arc::new(Flow::default());
                c2.lock().unwrap().push(RelayConn {
                    down: down.try_clone().unwrap(),
                    up: up.try_clone().unwrap(),
                    flow: flow.clone(),
                });
                let (d2, u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                let (fa, fb) = (flow.clone(), flow);
                let (za, zb) = (f2.clone(), f2.clone());
                thread::spawn(move || pump(d2, u2, fa, za, true));
                thread::spawn(move || pump(up, down, fb, zb, false));
            }
        });
        Relay { addr, conns, frozen, listener: None }
    }

    /// Stop forwarding on every connection (connections stay open).
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Bytes from the client held on connection `i` so far.
    pub fn held_bytes(&self, i: usize) -> usize {
        self.conns.lock().unwrap()[i].flow.held_bytes.load(Ordering::SeqCst)
    }

    /// Keep what the client sends on connection `i` (in accept order) in the relay.
    pub fn hold(&self, i: usize) {
        self.conns.lock().unwrap()[i].flow.held.store(true, Ordering::SeqCst);
    }

    /// Abort connection `i` on both sides, dropping whatever it holds.
    pub fn cut(&self, i: usize) {
        let conns = self.conns.lock().unwrap();
        let c = &conns[i];
        c.flow.killed.store(true, Ordering::SeqCst);
        let _ = c.down.shutdown(Shutdown::Both);
        let _ = c.up.shutdown(Shutdown::Both);
    }

    /// The client-side address of connection `i` (to find which tunnel it is).
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        self.conns.lock().unwrap()[i].down.peer_addr().unwrap()
    }

    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }
}

/// A client/server pair whose tunnels all pass through a [`Relay`] (single-port mode). The
/// listener stays open (the relay keeps it) so that lost tunnels can re-join.
pub fn relayed_pair(cfg: &Config) -> (Session, Session, Relay) {
    let cfg = Config { single_port: true, ..cfg.clone() };
    let l = Listener::bind("127.0.0.1:0", &cfg).expect("bind");
    let mut relay = Relay::new(l.local_addr());
    let addr = relay.addr;
    let c = cfg.clone();
    let client = thread::spawn(move || mtmux::dial(addr, &c).expect("dial"));
    let server = l.accept_timeout(Duration::from_secs(10)).expect("accept");
    relay.listener = Some(l);
    (client.join().expect("client thread"), server, relay)
}
