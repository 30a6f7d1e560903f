//! Handshake limits under attack: slowloris connections (one byte a second) and bundles that
//! never complete cannot keep a real client out. Connections from another source address are
//! made from 127.0.0.2 (loopback answers on all of 127/8).
mod common;

use common::{cfg, read_reply, within};
use mtmux::proto::handshake::{BundleId, Hello, HelloKind, Params, Status};
use mtmux::{Config, Error, Listener, Session};
use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const SLOWLORIS: usize = 130;

/// A TCP connection to `to` from address `from` (any port).
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from, 0).into()).unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(10)).unwrap();
    s.into()
}

fn hello(bundle: u8, index: u16, count: u16, c: &Config) -> Hello {
    let params = Params {
        max_frame: c.max_frame_size as u32,
        stream_window: c.stream_window as u32,
        session_window: c.session_window as u32,
    };
    Hello {
        kind: HelloKind::Join,
        bundle: BundleId([bundle; 16]),
        index,
        count,
        flags: 0,
        params,
        generation: 0,
        nonce: [bundle; 16],
    }
}

/// Slowloris: open `n` connections from `from` and send each a valid HELLO one byte per second
/// (it never completes within a handshake timeout of a few seconds) until the returned sender
/// is dropped.
fn slowloris(from: IpAddr, to: SocketAddr, n: usize, c: &Config) -> mpsc::Sender<()> {
    let conns: Vec<TcpStream> = (0..n).map(|_| connect_from(from, to)).collect();
    let bytes = hello(0xEE, 0, 1, c).encode();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    thread::spawn(move || {
        for b in bytes.iter().cycle() {
            for mut s in &conns {
                // Refused and timed-out connections fail here; the attacker does not care.
                let _ = s.write(&[*b]);
            }
            // The attacker's pace (one byte a second), not a synchronisation.
            if !matches!(stop_rx.recv_timeout(Duration::from_secs(1)), Err(mpsc::RecvTimeoutError::Timeout)) {
                return;
            }
        }
    });
    stop_tx
}

/// Wait for `n` refusals noted by the listener and return them.
fn refusals(l: &Listener, n: usize) -> Vec<mtmux::Refusal> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match l.next_refusal(Some(left)) {
            Some(r) => got.push(r),
            None => panic!("only {} of {n} refusals noted: {got:#?}", got.len()),
        }
    }
    got
}

/// A stream of `client` carries bytes to `server` and back.
fn assert_session_works(client: &Session, server: &Session) {
    let mut s = client.open_stream().unwrap();
    s.write_all(b"still served").unwrap();
    s.close_write().unwrap();
    let mut t = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
    let mut got = Vec::new();
    t.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"still served");
}

/// Dial from 127.0.0.1 and accept; returns both ends and how long the dial took.
fn dial_and_accept(l: &Listener, c: &Config) -> Result<(Session, Session, Duration), Error> {
    let started = Instant::now();
    let client = mtmux::dial(l.local_addr(), c)?;
    let took = started.elapsed();
    let server = l.accept_timeout(Duration::from_secs(10)).expect("a session for the client");
    Ok((client, server, took))
}

#[test]
fn slowloris_from_another_address_does_not_keep_a_client_out() {
    within(Duration::from_secs(60), || {
        let c = Config { handshake_timeout: Duration::from_secs(5), ..cfg(4) };
        let per_source = c.handshakes_per_source();
        assert!(per_source < c.max_pending_handshakes && SLOWLORIS > c.max_pending_handshakes);
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        let _attack = slowloris(ATTACKER, l.local_addr(), SLOWLORIS, &c);
        // The attacker holds its share of the slots; every other connection of it was
        // refused at once and noted with its address.
        for r in refusals(&l, SLOWLORIS - per_source) {
            assert_eq!(r.peer.ip(), ATTACKER);
            assert!(r.reason.contains("from this address"), "{r}");
        }
        let (client, server, took) = dial_and_accept(&l, &c).expect("the real client gets in");
        assert!(took < c.handshake_timeout / 4, "the client waited {took:?}");
        assert_session_works(&client, &server);
    });
}

#[test]
fn slowloris_from_the_clients_own_address_delays_it_by_at_most_one_handshake_timeout() {
    within(Duration::from_secs(60), || {
        let c = Config { handshake_timeout: Duration::from_secs(3), ..cfg(4) };
        let per_source = c.handshakes_per_source();
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        let attack_started = Instant::now();
        let _attack = slowloris(IpAddr::V4(Ipv4Addr::LOCALHOST), l.local_addr(), SLOWLORIS, &c);
        refusals(&l, SLOWLORIS - per_source);
        // While the attacker holds this address's share, its clients are told to come back.
        match mtmux::dial(l.local_addr(), &c) {
            Err(Error::Refused(why)) => assert!(why.contains("from your address"), "{why}"),
            Err(e) => panic!("expected a busy refusal, got {e}"),
            Ok(_) => panic!("the address's share should be taken by the attacker"),
        }
        // The attacker's connections time out at the handshake deadline (the deadline covers
        // the whole HELLO, however slowly it comes), then the client gets in.
        let bound = attack_started + c.handshake_timeout + Duration::from_secs(2);
        let (client, server) = loop {
            match dial_and_accept(&l, &c) {
                Ok((client, server, _)) => break (client, server),
                Err(Error::Refused(why)) if Instant::now() < bound => {
                    assert!(why.contains("busy") || why.contains("too many handshakes"), "{why}");
                    // A client's retry pace after a busy refusal.
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("no session {:?} after the attack started: {e}", attack_started.elapsed()),
            }
        };
        let waited = attack_started.elapsed();
        assert!(waited >= c.handshake_timeout - Duration::from_millis(200), "in after {waited:?}");
        assert_session_works(&client, &server);
    });
}

#[test]
fn tunnels_of_incomplete_bundles_hold_their_sources_slots_until_the_bundle_expires() {
    within(Duration::from_secs(60), || {
        let c = Config {
            single_port: true,
            handshake_timeout: Duration::from_secs(2),
            max_handshakes_per_source: Some(4),
            ..cfg(3)
        };
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        let addr = l.local_addr();
        // Two bundles of three tunnels, each missing its last: four complete HELLOs from
        // 127.0.0.2, held while their bundles wait.
        let started = Instant::now();
        let held: Vec<TcpStream> = [(1, 0), (1, 1), (2, 0), (2, 1)]
            .iter()
            .map(|&(bundle, index)| {
                let mut s = connect_from(ATTACKER, addr);
                s.write_all(&hello(bundle, index, 3, &c).encode()).unwrap();
                s
            })
            .collect();
        // For as long as the bundles wait, every further connection from that address is
        // refused at once, the non-first tunnels' slots included.
        let mut tries = 0;
        while started.elapsed() < c.handshake_timeout / 2 {
            let extra = connect_from(ATTACKER, addr);
            let r = read_reply(&extra).expect("an immediate refusal");
            assert_eq!(r.status, Status::Busy, "{}", r.reason());
            assert!(r.reason().contains("from your address"), "{}", r.reason());
            tries += 1;
            thread::sleep(Duration::from_millis(100));
        }
        assert!(tries >= 3);
        // Meanwhile a client from another address is served.
        let (client, server, _) = dial_and_accept(&l, &Config { single_port: true, ..cfg(3) }).unwrap();
        assert_session_works(&client, &server);
        // The incomplete bundles expire; then the address gets slots again: a real client
        // from 127.0.0.2 (over connections it made itself) gets its session.
        for s in &held {
            assert_eq!(read_reply(s).map(|r| r.status), Some(Status::Incomplete));
        }
        let tunnels: Vec<TcpStream> = (0..3).map(|_| connect_from(ATTACKER, addr)).collect();
        let cc = Config { rejoin: false, ..c.clone() };
        let client = thread::spawn(move || Session::client(tunnels, &cc));
        let server = l.accept_timeout(Duration::from_secs(10)).unwrap();
        let client = client.join().unwrap().expect("127.0.0.2 is served again");
        assert_eq!(server.peer_addrs()[0].ip(), ATTACKER);
        assert_session_works(&client, &server);
    });
}

#[test]
fn a_full_listener_notes_the_total_limit_with_the_address() {
    within(Duration::from_secs(30), || {
        let c = Config {
            handshake_timeout: Duration::from_secs(3),
            max_pending_handshakes: 3,
            max_handshakes_per_source: Some(2),
            ..cfg(1)
        };
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        let _a = [connect_from(ATTACKER, l.local_addr()), connect_from(ATTACKER, l.local_addr())];
        let _b = TcpStream::connect(l.local_addr()).unwrap();
        // Slots: 2 from 127.0.0.2, 1 from 127.0.0.1; the total is reached.
        let third = TcpStream::connect(l.local_addr()).unwrap();
        assert_eq!(read_reply(&third).map(|r| r.status), Some(Status::Busy));
        let r = refusals(&l, 1).remove(0);
        assert_eq!(r.peer, third.local_addr().unwrap());
        assert!(r.reason.contains("max_pending_handshakes"), "{r}");
    });
}

#[test]
fn a_stream_turned_away_with_a_code_fails_at_the_opener_with_that_code() {
    within(Duration::from_secs(30), || {
        let (client, server) = common::pair(&cfg(2));
        let mut s = client.open_stream().unwrap();
        s.write_all(b"open").unwrap();
        let t = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
        t.reset_with(mtmux::ResetCode::TooManyStreams).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let e = Error::from(s.read(&mut [0u8; 8]).unwrap_err());
        // The code TooManyStreams reads as the stream limit (issue 11: as the docs promise),
        // whether the peer's max_streams or its application turned the stream away.
        assert!(matches!(e, Error::TooManyStreams), "{e:?}");
        assert_eq!(e.to_string(), "too many streams (here or at the peer)");
        // Another code keeps its name.
        let mut s = client.open_stream().unwrap();
        s.write_all(b"open").unwrap();
        let t = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
        t.reset_with(mtmux::ResetCode::Refused).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let e = Error::from(s.read(&mut [0u8; 8]).unwrap_err());
        assert!(matches!(e, Error::StreamReset { code: mtmux::ResetCode::Refused, remote: true }), "{e:?}");
    });
}

/// `set_max_sessions`: a complete bundle at the limit is refused in its handshake with
/// `SessionLimit` (the client's `dial` says why, the listener notes the peer); unaccepted
/// sessions count; once a session closes, the next client gets in.
#[test]
fn a_bundle_at_the_session_limit_is_refused_and_told_why() {
    within(Duration::from_secs(60), || {
        let c = cfg(2);
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        l.set_max_sessions(Some(1));
        assert_eq!(l.max_sessions(), Some(1));
        let addr = l.local_addr();
        // Not accepted yet: it counts all the same.
        let first = mtmux::dial(addr, &c).unwrap();
        match mtmux::dial(addr, &c) {
            Err(Error::Refused(why)) => {
                assert!(why.starts_with("SessionLimit: ") && why.contains("session limit (1)"), "{why}")
            }
            other => panic!("expected a SessionLimit refusal, got {other:?}"),
        }
        let r = l.next_refusal(Some(Duration::from_secs(10))).expect("the refusal is noted");
        assert!(r.peer.ip().is_loopback() && r.reason.contains("session limit (1, max_sessions)"), "{r}");
        let served = l.accept_timeout(Duration::from_secs(10)).unwrap();
        first.close().unwrap();
        // The server sees the client's GOAWAY: the session no longer counts (bounded retry
        // while that GOAWAY is on its way).
        let deadline = Instant::now() + Duration::from_secs(10);
        let second = loop {
            match mtmux::dial(addr, &c) {
                Ok(s) => break s,
                Err(Error::Refused(why)) if why.starts_with("SessionLimit") && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("the second client: {e}"),
            }
        };
        assert!(!second.is_closed());
        drop(served);
        // No limit: any number.
        l.set_max_sessions(None);
        let more: Vec<Session> = (0..3).map(|_| mtmux::dial(addr, &c).unwrap()).collect();
        assert_eq!(more.len(), 3);
    });
}
