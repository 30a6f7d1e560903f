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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Control flags of one relayed connection.
#[derive(Default)]
struct Flow {
    /// Stop moving bytes (they stay in the relay's socket buffers).
    held: AtomicBool,
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
}

fn pump(mut from: TcpStream, mut to: TcpStream, flow: Arc<Flow>, frozen: Arc<AtomicBool>) {
    let stopped = || flow.held.load(Ordering::SeqCst) || frozen.load(Ordering::SeqCst);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // While held or frozen the relay does not read, so bytes pile up in its socket buffer
        // (the relay's own test-lifetime loop; it polls its flags, it does not synchronise the
        // test).
        while stopped() && !flow.killed.load(Ordering::SeqCst) {
            thread::park_timeout(Duration::from_millis(5));
        }
        if flow.killed.load(Ordering::SeqCst) {
            break;
        }
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                while stopped() && !flow.killed.load(Ordering::SeqCst) {
                    thread::park_timeout(Duration::from_millis(5));
                }
                if flow.killed.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    if flow.killed.load(Ordering::SeqCst) {
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
                thread::spawn(move || pump(d2, u2, fa, za));
                thread::spawn(move || pump(up, down, fb, zb));
            }
        });
        Relay { addr, conns, frozen }
    }

    /// Stop forwarding on every connection (connections stay open).
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Stop forwarding on connection `i` (in accept order); its bytes wait in the relay.
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

/// A client/server pair whose tunnels all pass through a [`Relay`] (single-port mode).
pub fn relayed_pair(cfg: &Config) -> (Session, Session, Relay) {
    let cfg = Config { single_port: true, ..cfg.clone() };
    let l = Listener::bind("127.0.0.1:0", &cfg).expect("bind");
    let relay = Relay::new(l.local_addr());
    let addr = relay.addr;
    let c = cfg.clone();
    let client = thread::spawn(move || mtmux::dial(addr, &c).expect("dial"));
    let server = l.accept_timeout(Duration::from_secs(10)).expect("accept");
    (client.join().expect("client thread"), server, relay)
}
