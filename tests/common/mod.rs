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
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).unwrap_or_else(|_| panic!("did not finish within {limit:?}"))
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
