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

/// A TCP relay between mtmux peers (single-port mode) that a test can freeze (stop moving
/// bytes, keeping connections open: a silent peer) or cut one connection of (a tunnel dies).
pub struct Relay {
    pub addr: SocketAddr,
    conns: Arc<Mutex<Vec<(TcpStream, TcpStream)>>>,
    frozen: Arc<AtomicBool>,
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
                let Ok(up) = TcpStream::connect(target) else { return };
                c2.lock().unwrap().push((down.try_clone().unwrap(), up.try_clone().unwrap()));
                for (mut from, mut to) in [(down.try_clone().unwrap(), up.try_clone().unwrap()), (up, down)] {
                    let f = f2.clone();
                    thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            while f.load(Ordering::SeqCst) {
                                // Frozen: hold the bytes, keep the connection (bounded by the
                                // test's own timeouts; the relay thread dies with the process).
                                thread::park_timeout(Duration::from_millis(20));
                            }
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if f.load(Ordering::SeqCst) {
                                        while f.load(Ordering::SeqCst) {
                                            thread::park_timeout(Duration::from_millis(20));
                                        }
                                    }
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Relay { addr, conns, frozen }
    }

    /// Stop forwarding in both directions (connections stay open).
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Abort relayed connection `i` (in accept order) on both sides.
    pub fn cut(&self, i: usize) {
        let conns = self.conns.lock().unwrap();
        let (a, b) = &conns[i];
        let _ = a.shutdown(Shutdown::Both);
        let _ = b.shutdown(Shutdown::Both);
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
