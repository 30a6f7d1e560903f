//! Ordered accept (issue 11, point 1): peer-opened streams are accepted in the order the peer
//! opened them, although their first frames travel over different tunnels and arrive out of
//! order; the wait for a missing lower id is bounded by the reorder timeout.
mod common;

use common::relay::FaultRelay;
use common::{cfg, read_reply, within};
use mtmux::proto::frame::{Control, Header, FLAG_OPEN};
use mtmux::proto::handshake::{BundleId, Hello, HelloKind, Params, Status};
use mtmux::{Config, Listener, Session};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// Eight tunnels through a relay that delays one of them: each stream's OPEN goes out on the
/// next free tunnel, so in every batch one OPEN reaches the server late, after those of
/// higher ids. The server still accepts 1, 3, 5, ... and each stream carries its own number.
#[test]
fn streams_are_accepted_in_open_order_across_a_delayed_tunnel() {
    within(Duration::from_secs(120), || {
        let c = Config { tunnels: 8, ..cfg(8) };
        let listener = Listener::bind("127.0.0.1:0", &c).expect("bind");
        let relay = FaultRelay::new(listener.local_addrs());
        let (addr, cc) = (relay.addr(), c.clone());
        let client = thread::spawn(move || mtmux::dial(addr, &cc).expect("dial"));
        let server = listener.accept_timeout(Duration::from_secs(10)).expect("accept");
        let client = client.join().expect("client thread");
        relay.delay(3, Duration::from_millis(30));
        let (batches, per_batch) = (25u32, 16u32);
        let mut expected_id = 1;
        for b in 0..batches {
            let opened: Vec<_> = (0..per_batch)
                .map(|i| {
                    let mut s = client.open_stream().expect("open");
                    s.write_all(&(b * per_batch + i).to_be_bytes()).expect("write");
                    s
                })
                .collect();
            for i in 0..per_batch {
                let mut s = server.accept_stream_timeout(Duration::from_secs(10)).expect("accept");
                let mut n = [0; 4];
                s.read_exact(&mut n).expect("read");
                assert_eq!(
                    (s.id(), u32::from_be_bytes(n)),
                    (expected_id, b * per_batch + i),
                    "batch {b}: accepted out of open order"
                );
                expected_id += 2;
            }
            drop(opened);
        }
        client.close().unwrap();
    });
}

fn hello(c: &Config) -> Hello {
    let params = Params {
        max_frame: c.max_frame_size as u32,
        stream_window: c.stream_window as u32,
        session_window: c.session_window as u32,
    };
    Hello {
        kind: HelloKind::Join,
        bundle: BundleId([5; 16]),
        index: 0,
        count: 1,
        flags: 0,
        params,
        generation: 0,
        nonce: [3; 16],
    }
}

/// A one-tunnel session whose client side is a raw socket: it chooses which ids arrive.
fn raw_peer(c: &Config) -> (Listener, TcpStream, Session) {
    let c = Config { tunnels: 1, ..c.clone() };
    let l = Listener::bind("127.0.0.1:0", &c).unwrap();
    let mut raw = TcpStream::connect(l.local_addr()).unwrap();
    raw.write_all(&hello(&c).encode()).unwrap();
    assert_eq!(read_reply(&raw).unwrap().status, Status::Accept);
    let s = l.accept_timeout(Duration::from_secs(5)).unwrap();
    (l, raw, s)
}

fn open(id: u32) -> Vec<u8> {
    let mut v = Header::data(id, 0, FLAG_OPEN, 1).encode().to_vec();
    v.push(id as u8);
    v
}

/// A lower id that never arrives holds the later streams for the hold bound (the stale
/// timeout, capped by the reorder timeout), no longer; when it does arrive afterwards it is
/// still accepted (late, not lost).
#[test]
fn a_missing_id_holds_later_streams_at_most_the_hold_bound() {
    within(Duration::from_secs(30), || {
        let c = Config {
            stale_timeout: Some(Duration::from_millis(1500)),
            reorder_timeout: Duration::from_secs(20),
            ..cfg(1)
        };
        let (_l, mut raw, s) = raw_peer(&c);
        let t0 = Instant::now();
        raw.write_all(&[open(3), open(5)].concat()).unwrap();
        let first = s.accept_stream_timeout(Duration::from_secs(10)).expect("held stream released");
        let waited = t0.elapsed();
        assert_eq!(first.id(), 3);
        assert!(
            waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
            "held {waited:?} for a 1.5 s stale timeout"
        );
        assert_eq!(s.accept_stream_timeout(Duration::from_secs(1)).unwrap().id(), 5);
        raw.write_all(&[open(1), open(7)].concat()).unwrap();
        let late = s.accept_stream_timeout(Duration::from_secs(1)).unwrap();
        assert_eq!(late.id(), 1, "the late stream is accepted, not lost");
        assert_eq!(s.accept_stream_timeout(Duration::from_secs(1)).unwrap().id(), 7);
        assert!(!s.is_closed());
    });
}

/// An id the peer resets before sending any data resolves its place at once: the later
/// streams are not held for the timeout.
#[test]
fn a_reset_id_releases_the_streams_behind_it() {
    within(Duration::from_secs(30), || {
        let c = Config {
            stale_timeout: Some(Duration::from_secs(20)),
            reorder_timeout: Duration::from_secs(20),
            ..cfg(1)
        };
        let (_l, mut raw, s) = raw_peer(&c);
        raw.write_all(&open(3)).unwrap();
        assert!(s.accept_stream_timeout(Duration::from_millis(300)).is_err(), "3 is held for 1");
        let reset = Control::Reset { stream: 1, code: mtmux::ResetCode::Cancelled.to_u32() };
        raw.write_all(&reset.encode()).unwrap();
        let t0 = Instant::now();
        let st = s.accept_stream_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(st.id(), 3);
        assert!(t0.elapsed() < Duration::from_secs(2), "released by the reset, not the timeout");
    });
}

/// An acceptor already waiting when a stream is held learns the hold's deadline (it is not
/// left waiting for a lower id that never comes).
#[test]
fn a_waiting_acceptor_gets_a_held_stream_after_the_timeout() {
    within(Duration::from_secs(30), || {
        let c = Config { reorder_timeout: Duration::from_millis(800), ..cfg(1) };
        let (_l, mut raw, s) = raw_peer(&c);
        let s2 = s.clone();
        let acceptor = thread::spawn(move || s2.accept_stream().map(|st| st.id()));
        // Let the acceptor block first (not a synchronisation: either order must work).
        thread::sleep(Duration::from_millis(100));
        raw.write_all(&open(3)).unwrap();
        assert_eq!(acceptor.join().unwrap().unwrap(), 3);
    });
}

/// Regression (found by the C tests): a stream the peer opened and left silent (it sends
/// nothing until its first write) held the streams opened after it for the whole reorder
/// timeout (10 s by default). The hold is the stale timeout now: 250 ms with no RTT yet.
#[test]
fn a_silent_lower_stream_delays_later_ones_by_the_stale_timeout_only() {
    within(Duration::from_secs(30), || {
        let (client, server) = common::pair(&cfg(2));
        let _silent = client.open_stream().unwrap();
        let mut talks = client.open_stream().unwrap();
        let t0 = Instant::now();
        talks.write_all(b"hi").unwrap();
        let got = server.accept_stream_timeout(Duration::from_secs(5)).expect("not held for long");
        assert_eq!(got.id(), talks.id());
        assert!(t0.elapsed() < Duration::from_secs(2), "held {:?}", t0.elapsed());
    });
}
