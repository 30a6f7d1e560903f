//! Pre-shared key authentication: every tunnel proves the key in both directions before it
//! joins a session. A wrong or missing key on either side gives a clear error at once (not a
//! timeout) and a refusal the server can log with the peer's address; a recorded handshake
//! cannot be replayed; a tunnel of a valid bundle with a forged proof is refused without
//! touching the bundle or the session.
mod common;

use common::{cfg, read_reply, relayed_pair, within};
use mtmux::proto::auth::key_proof;
use mtmux::proto::handshake::{BundleId, Hello, HelloKind, Status, HELLO_FLAG_KEY, HELLO_LEN, PROOF_LEN};
use mtmux::{Config, Error, Key, Listener, Session, TunnelState};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

fn key(s: &str) -> Option<Key> {
    Some(Key::new(s).unwrap())
}

fn keyed(tunnels: usize, k: &str) -> Config {
    Config { key: key(k), ..cfg(tunnels) }
}

/// One stream each way carries `n` bytes intact.
fn carries(client: &Session, server: &Session, n: usize) {
    let data = common::pattern(7, n);
    let d2 = data.clone();
    let mut st = client.open_stream().unwrap();
    let w = thread::spawn(move || {
        st.write_all(&d2).unwrap();
        st.close_write().unwrap();
        st
    });
    let mut got = Vec::new();
    let mut acc = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
    acc.read_to_end(&mut got).unwrap();
    assert!(got == data, "stream corrupted");
    acc.write_all(b"back").unwrap();
    acc.close_write().unwrap();
    let mut st = w.join().unwrap();
    let mut back = Vec::new();
    st.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"back");
}

/// Dial `server_cfg`'s listener with `client_cfg`; returns the client's result, how long it
/// took, the listener's first refusal and whether the listener produced a session.
fn attempt(
    server_cfg: &Config,
    client_cfg: &Config,
) -> (mtmux::Result<Session>, Duration, Option<mtmux::Refusal>, bool) {
    let l = Listener::bind("127.0.0.1:0", server_cfg).unwrap();
    let addr = l.local_addr();
    let start = Instant::now();
    let r = mtmux::dial(addr, client_cfg);
    let took = start.elapsed();
    let refusal = l.next_refusal(Some(Duration::from_secs(5)));
    let accepted = l.accept_timeout(Duration::from_millis(200)).is_ok();
    (r, took, refusal, accepted)
}

fn auth_error(r: mtmux::Result<Session>) -> String {
    match r {
        Err(e @ Error::Auth(_)) => {
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
            e.to_string()
        }
        Err(e) => panic!("expected an authentication error, got {e:?}"),
        Ok(_) => panic!("expected an authentication error, got a session"),
    }
}

#[test]
fn the_same_key_on_both_ends_carries_data_on_every_tunnel() {
    within(Duration::from_secs(60), || {
        let c = keyed(4, "correct horse battery staple");
        let (client, server) = common::pair(&c);
        carries(&client, &server, 8 << 20);
        assert!(client.tunnel_stats().iter().all(|t| t.state == TunnelState::Live));
        // Over connections the caller made, too.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let conns: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(a).unwrap()).collect();
        let accepted: Vec<TcpStream> = (0..2).map(|_| l.accept().unwrap().0).collect();
        let c2 = c.clone();
        let srv = thread::spawn(move || Session::server(accepted, &c2).unwrap());
        let cli = Session::client(conns, &c).unwrap();
        carries(&cli, &srv.join().unwrap(), 1 << 20);
    });
}

#[test]
fn a_wrong_key_is_refused_at_once_with_a_clear_error_on_both_sides() {
    within(Duration::from_secs(30), || {
        let server = keyed(2, "the server's key, 32 bytes long!");
        let client = keyed(2, "the client's key, 32 bytes long!");
        let (r, took, refusal, accepted) = attempt(&server, &client);
        let msg = auth_error(r);
        assert!(msg.contains("different pre-shared key"), "{msg}");
        assert!(took < Duration::from_secs(2), "answered in {took:?}, not after a timeout");
        let refusal = refusal.expect("the server notes the refusal");
        assert_eq!(refusal.peer.ip().to_string(), "127.0.0.1");
        assert!(refusal.reason.contains("different pre-shared key"), "{refusal}");
        assert!(!accepted, "no session for a wrong key");
    });
}

#[test]
fn a_missing_key_on_either_side_names_the_mismatch() {
    within(Duration::from_secs(30), || {
        let (r, took, refusal, accepted) = attempt(&keyed(2, "only the server has this key"), &cfg(2));
        let msg = auth_error(r);
        assert!(msg.contains("requires a pre-shared key") && msg.contains("has none"), "{msg}");
        assert!(took < Duration::from_secs(2));
        assert!(refusal.unwrap().reason.contains("client has none"));
        assert!(!accepted);

        let (r, _, refusal, accepted) = attempt(&cfg(2), &keyed(2, "only the client has this key"));
        let msg = auth_error(r);
        assert!(msg.contains("server has none"), "{msg}");
        assert!(refusal.unwrap().reason.contains("this server has none"));
        assert!(!accepted);

        // Sessions over the caller's connections say the same.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let conn = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let acc = l.accept().unwrap().0;
        let srv =
            thread::spawn(move || Session::server(vec![acc], &keyed(1, "only the server has this key")));
        let msg = auth_error(Session::client(vec![conn], &cfg(1)));
        assert!(msg.contains("requires a pre-shared key"), "{msg}");
        let srv_msg = auth_error(srv.join().unwrap());
        assert!(srv_msg.contains("client has none"), "{srv_msg}");
    });
}

#[test]
fn a_recorded_handshake_replayed_on_a_new_connection_is_refused() {
    within(Duration::from_secs(30), || {
        let c = keyed(1, "a key for recording and replay");
        let (client, server, relay) = relayed_pair(&c);
        // What the client sent: its HELLO and its proof (then frames, which do not matter).
        let recorded = relay.client_bytes(0);
        let hello = Hello::decode(recorded[..HELLO_LEN].try_into().unwrap()).unwrap();
        assert_ne!(hello.flags & HELLO_FLAG_KEY, 0);
        let l = relay.listener.as_ref().unwrap();
        let mut raw = TcpStream::connect(l.local_addr()).unwrap();
        raw.write_all(&recorded[..HELLO_LEN + PROOF_LEN]).unwrap();
        let challenge = read_reply(&raw).expect("a fresh challenge");
        assert_eq!(challenge.status, Status::Challenge);
        let verdict = read_reply(&raw).expect("a refusal");
        assert_eq!(verdict.status, Status::BadProof, "{}", verdict.reason());
        let refusal = l.next_refusal(Some(Duration::from_secs(5))).unwrap();
        assert!(refusal.reason.contains("different pre-shared key"), "{refusal}");
        assert!(l.accept_timeout(Duration::from_millis(300)).is_err(), "no second session");
        carries(&client, &server, 64 << 10);
    });
}

fn hello(index: u16, bundle: BundleId, kind: HelloKind, generation: u32) -> Hello {
    Hello {
        kind,
        bundle,
        index,
        count: 2,
        flags: HELLO_FLAG_KEY,
        params: Config::default().params(),
        generation,
        nonce: [3; 16],
    }
}

/// Send `h` on a new connection to `addr` and answer the key challenge with `proof(raw hello,
/// challenge nonce)`; returns the connection.
fn join_with(
    addr: std::net::SocketAddr,
    h: &Hello,
    proof: impl Fn(&[u8; HELLO_LEN], &[u8; 16]) -> [u8; 32],
) -> TcpStream {
    let mut c = TcpStream::connect(addr).unwrap();
    let raw = h.encode();
    c.write_all(&raw).unwrap();
    let challenge = read_reply(&c).expect("a challenge");
    assert_eq!(challenge.status, Status::Challenge, "{}", challenge.reason());
    c.write_all(&proof(&raw, &challenge.nonce)).unwrap();
    c
}

#[test]
fn a_tunnel_of_a_valid_bundle_with_a_forged_proof_touches_neither_bundle_nor_session() {
    within(Duration::from_secs(40), || {
        let secret = "the bundle's real pre-shared key";
        let c = Config { single_port: true, ..keyed(2, secret) };
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        let addr = l.local_addr();
        let right = |raw: &[u8; HELLO_LEN], n: &[u8; 16]| key_proof(secret.as_bytes(), false, raw, n);
        // A bundle in assembly: its tunnel 0 proved the key and waits for tunnel 1.
        let bundle = BundleId([0x42; 16]);
        let t0 = join_with(addr, &hello(0, bundle, HelloKind::Join, 0), right);
        // A forger who saw the bundle id claims tunnel 1 without the key.
        let forged = join_with(addr, &hello(1, bundle, HelloKind::Join, 0), |_, _| [0x5a; PROOF_LEN]);
        let verdict = read_reply(&forged).expect("a refusal");
        assert_eq!(verdict.status, Status::BadProof, "{}", verdict.reason());
        assert!(l
            .next_refusal(Some(Duration::from_secs(5)))
            .unwrap()
            .reason
            .contains("different pre-shared key"));
        // The real tunnel 1 still completes the bundle: both get their acceptance.
        let t1 = join_with(addr, &hello(1, bundle, HelloKind::Join, 0), right);
        for t in [&t0, &t1] {
            let r = read_reply(t).expect("accepted");
            assert_eq!(r.status, Status::Accept, "{}", r.reason());
        }
        let session = l.accept_timeout(Duration::from_secs(5)).expect("the bundle became a session");
        drop(session);

        // A running session: a forged re-join of one of its tunnels is refused, the session
        // carries on untouched.
        let (client, server, relay) = relayed_pair(&keyed(2, secret));
        let recorded = relay.client_bytes(0);
        let bundle = Hello::decode(recorded[..HELLO_LEN].try_into().unwrap()).unwrap().bundle;
        let rl = relay.listener.as_ref().unwrap();
        let forged =
            join_with(rl.local_addr(), &hello(1, bundle, HelloKind::Rejoin, 9), |_, _| [0x5a; PROOF_LEN]);
        let verdict = read_reply(&forged).expect("a refusal");
        assert_eq!(verdict.status, Status::BadProof, "{}", verdict.reason());
        assert_eq!(server.stats().rejoins_refused, 1);
        for s in [&client, &server] {
            assert!(s.tunnel_stats().iter().all(|t| t.generation == 0 && t.state == TunnelState::Live));
        }
        carries(&client, &server, 256 << 10);
    });
}

#[test]
fn with_a_key_lost_tunnels_rejoin_and_nothing_is_lost() {
    within(Duration::from_secs(40), || {
        let (client, server, relay) = relayed_pair(&keyed(2, "a key that also guards re-joins"));
        relay.cut(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "tunnel 0 did not re-join");
            if let Some(mtmux::Event::TunnelRejoined { generation, .. }) = client.next_event(left) {
                assert!(generation >= 1);
                break;
            }
        }
        assert_eq!(server.stats().rejoins_refused, 0);
        carries(&client, &server, 4 << 20);
    });
}
