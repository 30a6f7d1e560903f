//! Hostile or broken peers: garbage and half-finished handshakes, incomplete bundles,
//! malformed frames. The offender gets a clear error and is closed; the listener keeps
//! serving everyone else; nothing panics or hangs.
mod common;

use common::{cfg, read_reply, within};
use mtmux::proto::frame::{Control, Header, FLAG_FIN, FLAG_OPEN, HEADER_LEN};
use mtmux::proto::handshake::{BundleId, Hello, HelloKind, Status, COMMON_LEN};
use mtmux::{CloseReason, Config, Error, Listener};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

fn hello(index: u16, count: u16, cfg: &Config) -> Hello {
    let id = BundleId(*b"fake-bundle-0001");
    let params = mtmux::proto::handshake::Params {
        max_frame: cfg.max_frame_size as u32,
        stream_window: cfg.stream_window as u32,
        session_window: cfg.session_window as u32,
    };
    Hello { kind: HelloKind::Join, bundle: id, index, count, flags: 0, params, generation: 0, nonce: [7; 16] }
}

/// A real client still gets a working session.
fn assert_listener_serves(l: &Listener, cfg: &Config) {
    let addr = l.local_addr();
    let c = cfg.clone();
    let client = thread::spawn(move || mtmux::dial(addr, &c));
    let server = l.accept_timeout(Duration::from_secs(10)).expect("listener still accepts");
    let client = client.join().unwrap().expect("dial works");
    let mut s = client.open_stream().unwrap();
    s.write_all(b"ok").unwrap();
    s.close_write().unwrap();
    let mut got = Vec::new();
    server.accept_stream().unwrap().read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ok");
}

#[test]
fn garbage_on_the_listener_is_refused() {
    within(Duration::from_secs(30), || {
        let c = cfg(2);
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        let mut g = TcpStream::connect(l.local_addr()).unwrap();
        g.write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n").unwrap();
        let r = read_reply(&g).expect("a refusal");
        assert_eq!(r.status, Status::Malformed);
        assert!(r.reason().contains("not an mtmux peer"), "{}", r.reason());
        let mut rest = Vec::new();
        let _ = g.read_to_end(&mut rest);
        assert_listener_serves(&l, &c);
    });
}

#[test]
fn truncated_handshake_times_out_without_blocking_others() {
    within(Duration::from_secs(30), || {
        let c = Config { handshake_timeout: Duration::from_millis(500), ..cfg(2) };
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        let mut t = TcpStream::connect(l.local_addr()).unwrap();
        t.write_all(b"MTMX\x02").unwrap();
        let start = Instant::now();
        // While it hangs there, a real client is served.
        assert_listener_serves(&l, &Config { handshake_timeout: Duration::from_secs(5), ..c.clone() });
        let r = read_reply(&t).expect("a refusal after the timeout");
        assert_eq!(r.status, Status::Malformed);
        assert!(start.elapsed() >= Duration::from_millis(400));
    });
}

#[test]
fn bundle_missing_tunnels_is_refused_after_the_timeout() {
    within(Duration::from_secs(30), || {
        let c = Config { handshake_timeout: Duration::from_millis(500), ..cfg(3) };
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        // Only tunnel 0 of a 3-tunnel bundle shows up.
        let mut t = TcpStream::connect(l.local_addr()).unwrap();
        t.write_all(&hello(0, 3, &c).encode()).unwrap();
        let r = read_reply(&t).expect("a refusal");
        assert_eq!(r.status, Status::Incomplete);
        assert!(r.reason().contains("only 1 of 3"), "{}", r.reason());
        assert_listener_serves(&l, &Config { handshake_timeout: Duration::from_secs(5), ..c });
    });
}

#[test]
fn pending_handshakes_are_bounded() {
    within(Duration::from_secs(30), || {
        // The total limit alone: one address may take all 4 slots here (tests/limits.rs has
        // the per-source limit).
        let c = Config {
            handshake_timeout: Duration::from_millis(800),
            max_pending_handshakes: 4,
            max_handshakes_per_source: Some(4),
            ..cfg(1)
        };
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        let silent: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(l.local_addr()).unwrap()).collect();
        // Beyond the limit: refused at once, not queued.
        let mut busy = None;
        let deadline = Instant::now() + Duration::from_secs(5);
        while busy.is_none() {
            assert!(Instant::now() < deadline);
            let extra = TcpStream::connect(l.local_addr()).unwrap();
            if let Some(r) = read_reply(&extra) {
                if r.status == Status::Busy {
                    busy = Some(r);
                }
            }
        }
        // The silent ones are dropped at the handshake timeout, and then service resumes.
        for s in &silent {
            assert_eq!(read_reply(s).map(|r| r.status), Some(Status::Malformed));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match mtmux::dial(l.local_addr(), &c) {
                Ok(_) => break,
                Err(e) => assert!(Instant::now() < deadline, "listener did not recover: {e}"),
            }
        }
    });
}

#[test]
fn clients_dialing_at_once_get_their_own_sessions() {
    within(Duration::from_secs(60), || {
        let c = cfg(4);
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        let addr = l.local_addr();
        const CLIENTS: usize = 6;
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (b, c) = (barrier.clone(), c.clone());
                thread::spawn(move || {
                    b.wait();
                    let s = mtmux::dial(addr, &c).unwrap();
                    let mut st = s.open_stream().unwrap();
                    st.write_all(format!("client {i}").as_bytes()).unwrap();
                    st.close_write().unwrap();
                    let mut echo = String::new();
                    st.read_to_string(&mut echo).unwrap();
                    assert_eq!(echo, format!("client {i}"));
                    s.local_addrs()
                })
            })
            .collect();
        let mut groups = Vec::new();
        for _ in 0..CLIENTS {
            let s = l.accept_timeout(Duration::from_secs(20)).unwrap();
            let mut st = s.accept_stream().unwrap();
            let mut msg = String::new();
            st.read_to_string(&mut msg).unwrap();
            st.write_all(msg.as_bytes()).unwrap();
            st.close_write().unwrap();
            groups.push((s.peer_addrs(), s));
        }
        let mut client_addrs: Vec<Vec<SocketAddr>> = clients.into_iter().map(|h| h.join().unwrap()).collect();
        // Every server session's tunnels are exactly one client's tunnels, in order.
        for (peer, _) in &groups {
            let pos = client_addrs.iter().position(|a| a == peer).expect("a session mixes clients");
            client_addrs.remove(pos);
        }
        assert!(client_addrs.is_empty());
    });
}

#[test]
fn port_mode_mismatch_is_refused_with_a_clear_reason() {
    within(Duration::from_secs(30), || {
        let c = cfg(3);
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        let single = Config { single_port: true, ..c };
        match mtmux::dial(l.local_addr(), &single) {
            Err(Error::Refused(why)) => assert!(why.contains("must connect to"), "{why}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    });
}

#[test]
fn dial_to_a_closed_port_names_the_tunnel() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    match mtmux::dial(("127.0.0.1", port), &Config { single_port: true, ..cfg(2) }) {
        Err(Error::Io(e)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
            assert!(e.to_string().contains("tunnel"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        mtmux::dial("127.0.0.1:1", &Config { tunnels: 0, ..cfg(1) }),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn listener_close_wakes_accept() {
    within(Duration::from_secs(10), || {
        let l = Arc::new(Listener::bind("127.0.0.1:0", &cfg(2)).unwrap());
        let l2 = l.clone();
        let waiter = thread::spawn(move || l2.accept());
        // A bounded wait for the acceptor to block is not needed: close() also covers an
        // accept that starts afterwards.
        l.close();
        assert!(matches!(waiter.join().unwrap(), Err(Error::SessionClosed(_))));
        assert!(l.accept().is_err());
    });
}

/// A one-tunnel bundle whose client side is a raw socket speaking the handshake by hand.
fn fake_peer(cfg: &Config) -> (Listener, TcpStream, mtmux::Session) {
    let c = Config { tunnels: 1, ..cfg.clone() };
    let l = Listener::bind("127.0.0.1:0", &c).unwrap();
    let mut raw = TcpStream::connect(l.local_addr()).unwrap();
    let mut h = hello(0, 1, &c);
    h.bundle = BundleId([9; 16]);
    raw.write_all(&h.encode()).unwrap();
    assert_eq!(read_reply(&raw).unwrap().status, Status::Accept);
    let s = l.accept_timeout(Duration::from_secs(5)).unwrap();
    (l, raw, s)
}

/// Send `bytes` from the fake peer and expect the server session to close with a protocol
/// error mentioning `expect`.
fn expect_protocol_error(cfg: &Config, bytes: Vec<u8>, expect: &str) {
    let (l, mut raw, s) = fake_peer(cfg);
    raw.write_all(&bytes).unwrap();
    // A frame that opens a stream first hands that stream out; the violation follows. The
    // stream is kept open: a closed one would drop later frames without checking them
    // against its window.
    let mut opened = Vec::new();
    let e = loop {
        match s.accept_stream_timeout(Duration::from_secs(10)) {
            Ok(st) => opened.push(st),
            Err(e) => break Err::<(), _>(e),
        }
    };
    match e {
        Err(Error::SessionClosed(CloseReason::Protocol(why))) => {
            assert!(why.contains(expect), "{why}")
        }
        other => panic!("expected a protocol violation about {expect:?}, got {other:?}"),
    }
    // The offender's connection is closed.
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink);
    assert_listener_serves(&l, &Config { tunnels: 1, ..cfg.clone() });
}

fn data(stream: u32, seq: u32, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Header::data(stream, seq, flags, payload.len() as u32).encode().to_vec();
    v.extend_from_slice(payload);
    v
}

#[test]
fn unknown_command_closes_the_session() {
    within(Duration::from_secs(30), || {
        let mut b = data(1, 0, FLAG_OPEN, b"x");
        b[1] = 0x33;
        expect_protocol_error(&cfg(1), b, "unknown frame command");
    });
}

#[test]
fn oversized_frame_closes_the_session() {
    within(Duration::from_secs(30), || {
        let c = cfg(1);
        let h = Header::data(1, 0, FLAG_OPEN, c.max_frame_size as u32 + 1).encode().to_vec();
        expect_protocol_error(&c, h, "exceeds the maximum");
    });
}

#[test]
fn frame_beyond_the_window_closes_the_session() {
    within(Duration::from_secs(30), || {
        let c = Config {
            max_frame_size: 16 << 10,
            stream_window: 40 << 10,
            max_stream_window: 40 << 10,
            ..cfg(1)
        };
        let mut b = Vec::new();
        for seq in 0..3 {
            b.extend(data(1, seq, if seq == 0 { FLAG_OPEN } else { 0 }, &vec![0u8; 16 << 10]));
        }
        expect_protocol_error(&c, b, "beyond the advertised window");
    });
}

#[test]
fn frame_for_a_stream_never_opened_closes_the_session() {
    within(Duration::from_secs(30), || {
        // Even ids are the server's; it never opened stream 2.
        let mut b = Control::Window { stream: 2, limit: 1 << 30 }.encode();
        b.extend(data(2, 0, FLAG_OPEN, b"x"));
        expect_protocol_error(&cfg(1), b, "never opened");
    });
}

#[test]
fn garbage_after_the_handshake_closes_the_session() {
    within(Duration::from_secs(30), || {
        expect_protocol_error(&cfg(1), b"\xde\xad\xbe\xef garbage garbage".to_vec(), "version");
    });
}

/// Read frames from the fake peer's socket until `pred` matches one (bounded by the socket's
/// read timeout).
fn read_until(raw: &mut TcpStream, mut pred: impl FnMut(&Header, &[u8]) -> bool) {
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hdr = [0u8; HEADER_LEN];
    loop {
        raw.read_exact(&mut hdr).unwrap();
        let h = Header::decode(&hdr, 1 << 20).unwrap();
        let mut payload = vec![0u8; h.len as usize];
        raw.read_exact(&mut payload).unwrap();
        if pred(&h, &payload) {
            return;
        }
    }
}

/// Protocol version 2 re-sends frames a dying or stale tunnel may not have delivered, so a
/// frame can arrive twice: the copy is dropped (and not charged to the window), the stream
/// delivers every byte once, and the ACK counts both arrivals on the tunnel.
#[test]
fn duplicate_frames_are_delivered_once() {
    within(Duration::from_secs(30), || {
        let (_l, mut raw, s) = fake_peer(&cfg(1));
        let mut b = data(1, 0, FLAG_OPEN, b"abc");
        b.extend(data(1, 0, FLAG_OPEN, b"abc"));
        b.extend(data(1, 1, FLAG_FIN, b"def"));
        b.extend(data(1, 1, FLAG_FIN, b"def"));
        raw.write_all(&b).unwrap();
        let mut st = s.accept_stream().unwrap();
        let mut got = Vec::new();
        st.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"abcdef");
        let mut acked = 0;
        read_until(&mut raw, |h, p| {
            if let Ok(Control::Ack { tunnel: 0, generation: 0, frames }) = Control::decode(h, p) {
                acked = frames;
            }
            acked == 4
        });
        assert!(!s.is_closed());
    });
}

#[test]
fn an_ack_of_frames_never_sent_closes_the_session() {
    within(Duration::from_secs(30), || {
        let b = Control::Ack { tunnel: 0, generation: 0, frames: 1000 }.encode();
        expect_protocol_error(&cfg(1), b, "ACK of 1000 frames");
    });
}

#[test]
fn a_control_frame_with_a_sequence_closes_the_session() {
    within(Duration::from_secs(30), || {
        let mut b = Control::Window { stream: 0, limit: 1 << 30 }.encode();
        b[8..12].copy_from_slice(&[1, 1, 1, 1]);
        expect_protocol_error(&cfg(1), b, "non-zero sequence");
    });
}

/// A version 1 client gets a refusal it can read (version 1's layout) that names the
/// version mismatch, not a timeout or garbage.
#[test]
fn a_version_1_client_is_told_to_upgrade() {
    within(Duration::from_secs(30), || {
        let c = cfg(1);
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        let mut raw = TcpStream::connect(l.local_addr()).unwrap();
        let mut v1 = hello(0, 1, &c).encode()[..COMMON_LEN].to_vec();
        v1[4] = 1;
        v1[10] = 0;
        v1[11] = 0;
        raw.write_all(&v1).unwrap();
        let r = read_reply(&raw).expect("a version 1 refusal");
        assert_eq!(r.status, Status::BadVersion);
        assert!(r.reason().contains("version 2"), "{}", r.reason());
        assert_listener_serves(&l, &c);
    });
}

/// Port 0 in port-range mode takes consecutive ports below the ephemeral range when it can,
/// so that outgoing connections (and their TIME_WAIT remains, which once exhausted the
/// ephemeral range during a benchmark) do not keep a listener from finding a range.
#[test]
fn port_zero_ranges_avoid_the_ephemeral_ports() {
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(32768);
    let l = Listener::bind("127.0.0.1:0", &cfg(4)).unwrap();
    let ports: Vec<u16> = l.local_addrs().iter().map(|a| a.port()).collect();
    assert_eq!(ports.len(), 4);
    for w in ports.windows(2) {
        assert_eq!(w[1], w[0] + 1, "consecutive ports: {ports:?}");
    }
    assert!(ports[3] < ephemeral_low, "{ports:?} should lie below the ephemeral range");
}
