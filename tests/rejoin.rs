//! Re-join and resumption cannot be hijacked: knowing the bundle id is not enough, a recorded
//! re-join cannot be replayed, an unknown bundle is refused, and a client whose server
//! restarted is told so instead of waiting or losing data silently. Each refused attempt
//! leaves the session untouched.
mod common;

use common::{cfg, read_reply, relayed_pair, within, Relay};
use mtmux::proto::handshake::{BundleId, Hello, HelloKind, Status, HELLO_LEN, PROOF_LEN};
use mtmux::{CloseReason, Config, Error, Listener, Session, TunnelState};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// The HELLO the client sent on relayed connection `i`.
fn recorded_hello(relay: &Relay, i: usize) -> Hello {
    let bytes = relay.client_bytes(i);
    Hello::decode(bytes[..HELLO_LEN].try_into().unwrap()).unwrap()
}

/// A connection straight to the server (around the relay).
fn to_server(relay: &Relay) -> TcpStream {
    TcpStream::connect(relay.listener.as_ref().unwrap().local_addr()).unwrap()
}

/// Both sessions still work and no tunnel was replaced.
fn untouched(client: &Session, server: &Session) {
    for s in [client, server] {
        assert!(s.tunnel_stats().iter().all(|t| t.generation == 0 && t.state == TunnelState::Live));
    }
    let mut st = client.open_stream().unwrap();
    st.write_all(b"still here").unwrap();
    st.close_write().unwrap();
    let mut got = Vec::new();
    server.accept_stream().unwrap().read_to_end(&mut got).unwrap();
    assert_eq!(got, b"still here");
}

#[test]
fn a_rejoin_with_the_right_bundle_id_but_a_forged_proof_is_refused() {
    within(Duration::from_secs(30), || {
        let (client, server, relay) = relayed_pair(&cfg(2));
        let hello = recorded_hello(&relay, 0);
        let mut raw = to_server(&relay);
        let forged = Hello { kind: HelloKind::Rejoin, generation: 7, nonce: [1; 16], ..hello };
        raw.write_all(&forged.encode()).unwrap();
        let challenge = read_reply(&raw).expect("a challenge");
        assert_eq!(challenge.status, Status::Challenge);
        raw.write_all(&[0u8; PROOF_LEN]).unwrap();
        let r = read_reply(&raw).expect("a refusal");
        assert_eq!(r.status, Status::BadProof, "{}", r.reason());
        assert_eq!(server.stats().rejoins_refused, 1);
        untouched(&client, &server);
    });
}

#[test]
fn a_recorded_rejoin_cannot_be_replayed() {
    within(Duration::from_secs(30), || {
        let (client, server, relay) = relayed_pair(&cfg(2));
        relay.cut(0);
        // The client re-dials through the relay (connection 2), which records the REJOIN.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(client.tunnel_stats().iter().any(|t| t.generation >= 1)
            && client.tunnel_stats().iter().all(|t| t.state == TunnelState::Live))
        {
            assert!(Instant::now() < deadline, "no re-join: {:?}", client.tunnel_stats());
            thread::sleep(Duration::from_millis(10));
        }
        let rec = relay.client_bytes(2);
        assert!(rec.len() >= HELLO_LEN + PROOF_LEN, "the re-join was recorded");
        let hello = recorded_hello(&relay, 2);
        assert_eq!(hello.kind, HelloKind::Rejoin);
        let before: Vec<u32> = server.tunnel_stats().iter().map(|t| t.generation).collect();

        // Replayed as it was: its generation is no longer newer than the slot's.
        let mut raw = to_server(&relay);
        raw.write_all(&rec[..HELLO_LEN + PROOF_LEN]).unwrap();
        assert_eq!(read_reply(&raw).unwrap().status, Status::StaleGeneration);

        // With a newer generation: the server's challenge is fresh, so the old proof fails.
        let mut raw = to_server(&relay);
        let newer = Hello { generation: hello.generation + 5, ..hello };
        raw.write_all(&newer.encode()).unwrap();
        assert_eq!(read_reply(&raw).unwrap().status, Status::Challenge);
        raw.write_all(&rec[HELLO_LEN..HELLO_LEN + PROOF_LEN]).unwrap();
        assert_eq!(read_reply(&raw).unwrap().status, Status::BadProof);

        assert_eq!(server.stats().rejoins_refused, 2);
        let after: Vec<u32> = server.tunnel_stats().iter().map(|t| t.generation).collect();
        assert_eq!(before, after, "no slot was replaced");
        let mut st = client.open_stream().unwrap();
        st.write_all(b"ok").unwrap();
        st.close_write().unwrap();
        let mut got = Vec::new();
        server.accept_stream().unwrap().read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ok");
    });
}

#[test]
fn a_rejoin_for_an_unknown_bundle_is_refused() {
    within(Duration::from_secs(30), || {
        let (client, server, relay) = relayed_pair(&cfg(2));
        let hello = recorded_hello(&relay, 0);
        let mut raw = to_server(&relay);
        let stranger =
            Hello { kind: HelloKind::Rejoin, bundle: BundleId([0x5a; 16]), generation: 1, ..hello };
        raw.write_all(&stranger.encode()).unwrap();
        let r = read_reply(&raw).expect("a refusal");
        assert_eq!(r.status, Status::UnknownSession);
        assert!(r.reason().contains("no such session"), "{}", r.reason());
        untouched(&client, &server);
    });
}

#[test]
fn a_restarted_server_refuses_the_resume_and_the_client_says_so() {
    within(Duration::from_secs(30), || {
        let c = Config { rejoin_backoff_max: Duration::from_millis(200), ..cfg(2) };
        let (client, server, mut relay) = relayed_pair(&c);
        let st = client.open_stream().unwrap();
        (&st).write_all(b"x").unwrap();
        let _peer = server.accept_stream().unwrap();
        // The server process dies: its listener goes, its connections break, its state is lost.
        let old = relay.listener.take().unwrap();
        let addr = old.local_addr();
        drop(old);
        relay.cut(0);
        relay.cut(1);
        drop(server);
        // A new server process on the same port knows nothing of the session.
        relay.listener = Some(Listener::bind(addr, &Config { single_port: true, ..c.clone() }).unwrap());
        let t = Instant::now();
        let e = Error::from((&st).read(&mut [0u8; 1]).unwrap_err());
        match e {
            Error::SessionClosed(CloseReason::Expired(why)) => {
                assert!(why.contains("no longer knows this session"), "{why}")
            }
            other => panic!("expected an explicit refusal of the resume, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
        assert!(matches!(client.close_reason(), Some(CloseReason::Expired(_))));
    });
}
