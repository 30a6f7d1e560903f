//! The fault-injecting relay of the failover tests, checked with plain TCP: it forwards each
//! port to its target, and its faults (RST, FIN, blackhole, delay, down) do what they say.
mod common;

use common::relay::{relay_threads, Dir, FaultRelay};
use common::{pattern, within};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The tests count the relay threads of the process: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `n` target servers and a relay in front of them.
fn setup(n: usize) -> (FaultRelay, Vec<TcpListener>) {
    let targets: Vec<_> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs: Vec<SocketAddr> = targets.iter().map(|l| l.local_addr().unwrap()).collect();
    (FaultRelay::new(&addrs), targets)
}

/// A connection through relay port `i`: (the client's end, the target's end). Returns once
/// the relay counts it (it does so just after connecting to the target).
fn connect(relay: &FaultRelay, targets: &[TcpListener], i: usize) -> (TcpStream, TcpStream) {
    let before = relay.accepted(i);
    let client = TcpStream::connect(relay.addrs()[i]).unwrap();
    let (server, _) = targets[i].accept().unwrap();
    wait_for(Duration::from_secs(5), "the relay counts the connection", || relay.accepted(i) > before);
    for s in [&client, &server] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    (client, server)
}

/// Poll `cond` until it holds; panics with `what` after `limit`.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn each_port_forwards_to_its_own_target_both_ways() {
    let _s = serial();
    within(Duration::from_secs(30), || {
        let (relay, targets) = setup(3);
        for i in 0..3 {
            let (mut c, mut s) = connect(&relay, &targets, i);
            let up = pattern(i as u64, 4 << 20);
            let down = pattern(100 + i as u64, 3 << 20);
            let (up2, down2) = (up.clone(), down.clone());
            let server = thread::spawn(move || {
                let mut got = vec![0u8; up2.len()];
                s.read_exact(&mut got).unwrap();
                s.write_all(&down2).unwrap();
                got == up2
            });
            c.write_all(&up).unwrap();
            let mut got = vec![0u8; down.len()];
            c.read_exact(&mut got).unwrap();
            assert!(server.join().unwrap(), "tunnel {i}: bytes to the server differ");
            assert!(got == down, "tunnel {i}: bytes to the client differ");
            // The counters move just after each write, maybe after the reader saw its bytes.
            wait_for(Duration::from_secs(5), "every byte counted", || {
                relay.delivered(i, Dir::ToServer) == 4 << 20 && relay.delivered(i, Dir::ToClient) == 3 << 20
            });
            assert_eq!(relay.accepted(i), 1);
        }
    });
}

#[test]
fn rst_resets_both_ends() {
    let _s = serial();
    within(Duration::from_secs(30), || {
        let (relay, targets) = setup(2);
        let (mut c, mut s) = connect(&relay, &targets, 1);
        c.write_all(b"hello").unwrap();
        s.read_exact(&mut [0u8; 5]).unwrap();
        let (_c0, _s0) = connect(&relay, &targets, 0);
        relay.rst(1);
        assert_eq!(c.read(&mut [0u8; 1]).unwrap_err().kind(), ErrorKind::ConnectionReset);
        assert_eq!(s.read(&mut [0u8; 1]).unwrap_err().kind(), ErrorKind::ConnectionReset);
        assert_eq!((relay.open(1), relay.open(0)), (0, 1), "only tunnel 1 is reset");
    });
}

#[test]
fn fin_closes_both_ends_gracefully() {
    let _s = serial();
    within(Duration::from_secs(30), || {
        let (relay, targets) = setup(1);
        let (mut c, mut s) = connect(&relay, &targets, 0);
        c.write_all(b"x").unwrap();
        s.read_exact(&mut [0u8; 1]).unwrap();
        relay.fin(0);
        assert_eq!(c.read(&mut [0u8; 1]).unwrap(), 0, "client end: end of stream");
        assert_eq!(s.read(&mut [0u8; 1]).unwrap(), 0, "server end: end of stream");
        // Writes after the FIN are drained, not answered with a reset.
        c.write_all(b"late").unwrap();
        wait_for(Duration::from_secs(5), "late bytes counted as dropped", || {
            relay.dropped(0, Dir::ToServer) == 4
        });
        drop((c, s));
        wait_for(Duration::from_secs(5), "the relay closes once both ends have", || relay.open(0) == 0);
    });
}

#[test]
fn blackhole_stops_forwarding_and_keeps_both_connections_open() {
    let _s = serial();
    within(Duration::from_secs(30), || {
        let (relay, targets) = setup(1);
        let (mut c, mut s) = connect(&relay, &targets, 0);
        c.write_all(b"before").unwrap();
        s.read_exact(&mut [0u8; 6]).unwrap();
        relay.blackhole(0);
        let (up, down) = (relay.delivered(0, Dir::ToServer), relay.delivered(0, Dir::ToClient));
        let last = relay.last_delivery(0, Dir::ToServer).expect("bytes were delivered");
        // The relay reads nothing more: the client's writes fill the socket buffers and block.
        c.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
        let chunk = vec![7u8; 64 << 10];
        let mut accepted = 0usize;
        while let Ok(n) = c.write(&chunk) {
            accepted += n;
            assert!(accepted < 256 << 20, "the relay keeps reading a blackholed connection");
        }
        s.write_all(b"from the server").unwrap();
        for (end, name) in [(&mut s, "server"), (&mut c, "client")] {
            end.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let e = end.read(&mut [0u8; 1]).expect_err("nothing may arrive");
            assert!(matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{name}: {e}");
        }
        assert_eq!(relay.delivered(0, Dir::ToServer), up);
        assert_eq!(relay.delivered(0, Dir::ToClient), down);
        assert_eq!(relay.last_delivery(0, Dir::ToServer), Some(last), "the server end's silence began then");
        assert_eq!(relay.open(0), 1);
        println!("a blackholed connection took {} KiB before the client's write blocked", accepted >> 10);
    });
}

#[test]
fn reconnections_on_the_same_port_are_relayed_and_counted() {
    let _s = serial();
    within(Duration::from_secs(30), || {
        let (relay, targets) = setup(2);
        for round in 0..6u8 {
            let (mut c, mut s) = connect(&relay, &targets, 1);
            c.write_all(&[round]).unwrap();
            let mut b = [0u8; 1];
            s.read_exact(&mut b).unwrap();
            assert_eq!(b[0], round);
            relay.rst(1);
        }
        assert_eq!((relay.accepted(1), relay.accepted(0), relay.open(1)), (6, 0, 0));
    });
}

#[test]
fn down_resets_everything_and_refuses_until_up_again() {
    let _s = serial();
    within(Duration::from_secs(30), || {
        let (relay, targets) = setup(2);
        let mut before: Vec<_> = (0..2).map(|i| connect(&relay, &targets, i)).collect();
        relay.set_down(true);
        for (c, s) in &mut before {
            assert_eq!(c.read(&mut [0u8; 1]).unwrap_err().kind(), ErrorKind::ConnectionReset);
            assert_eq!(s.read(&mut [0u8; 1]).unwrap_err().kind(), ErrorKind::ConnectionReset);
        }
        // Accepted by the kernel, then reset by the relay; nothing reaches the target.
        let mut c = TcpStream::connect(relay.addrs()[0]).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(c.read(&mut [0u8; 1]).unwrap_err().kind(), ErrorKind::ConnectionReset);
        assert_eq!(relay.refused(0), 1);
        relay.set_down(false);
        let (mut c, mut s) = connect(&relay, &targets, 0);
        c.write_all(b"up").unwrap();
        s.read_exact(&mut [0u8; 2]).unwrap();
        assert_eq!(relay.accepted(0), 2);
    });
}

#[test]
fn delay_adds_one_way_latency() {
    let _s = serial();
    within(Duration::from_secs(30), || {
        let (relay, targets) = setup(1);
        let (mut c, mut s) = connect(&relay, &targets, 0);
        relay.delay(0, Duration::from_millis(100));
        let echo = thread::spawn(move || {
            let mut b = [0u8; 4];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        });
        let t = Instant::now();
        c.write_all(b"ping").unwrap();
        c.read_exact(&mut [0u8; 4]).unwrap();
        let rtt = t.elapsed();
        echo.join().unwrap();
        assert!(rtt >= Duration::from_millis(200) && rtt < Duration::from_secs(1), "round trip {rtt:?}");
    });
}

#[test]
fn dropping_the_relay_resets_connections_and_ends_its_threads() {
    let _s = serial();
    within(Duration::from_secs(30), || {
        // A thread joined by the previous test's relay may show for an instant longer.
        wait_for(Duration::from_secs(5), "no relay thread is left", || relay_threads() == 0);
        let (relay, targets) = setup(2);
        let mut conns: Vec<_> = (0..2).map(|i| connect(&relay, &targets, i)).collect();
        relay.blackhole(1);
        assert_eq!(relay_threads(), 2 + 2 * 4, "an acceptor per port and four threads per connection");
        drop(relay);
        for (c, _) in &mut conns {
            assert_eq!(c.read(&mut [0u8; 1]).unwrap_err().kind(), ErrorKind::ConnectionReset);
        }
        wait_for(Duration::from_secs(5), "every relay thread ends", || relay_threads() == 0);
    });
}
