//! When the peer or a tunnel goes away: a lost tunnel loses nothing (its frames are re-sent
//! and it re-joins); a peer that is gone for good makes every blocked call return an error
//! within the keepalive and resume timeouts; no data is silently lost or corrupted. (The
//! fault-injecting relay tests of failover are in `failover.rs`.)
mod common;

use common::{cfg, pattern, relayed_pair, within};
use mtmux::{CloseReason, Config, Error, Listener};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Fill `s`'s send window (the peer does not read), so that the next write blocks.
fn fill_window(s: &mtmux::Stream) {
    s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while (&*s).write(&chunk).is_ok() {}
    s.set_write_timeout(None).unwrap();
}

#[test]
#[ignore = "helper run as a child process by peer_process_killed_fails_every_blocked_call"]
fn child_peer_process() {
    let Ok(addr) = std::env::var("MTMUX_TEST_PEER") else {
        return;
    };
    let s = mtmux::dial(addr, &cfg(4)).unwrap();
    let st = s.open_stream().unwrap();
    (&st).write_all(b"ready").unwrap();
    // Wait to be killed (bounded, in case the parent dies first).
    st.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = (&st).read(&mut [0u8; 1]);
}

#[test]
fn peer_process_killed_fails_every_blocked_call() {
    within(Duration::from_secs(60), || {
        // The server keeps the session for the client's re-join that never comes.
        let c = Config { resume_timeout: Duration::from_secs(1), ..cfg(4) };
        let l = Listener::bind("127.0.0.1:0", &c).unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_peer_process", "--ignored", "--nocapture"])
            .env("MTMUX_TEST_PEER", l.local_addr().to_string())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let session = l.accept_timeout(Duration::from_secs(30)).unwrap();
        let st = Arc::new(session.accept_stream().unwrap());
        let mut ready = [0u8; 5];
        (&*st).read_exact(&mut ready).unwrap();
        let mine = session.open_stream().unwrap();
        fill_window(&mine);
        // Three calls blocked on the peer: a read, an accept and a write.
        let (r, s2) = (st.clone(), session.clone());
        let reader = thread::spawn(move || (&*r).read(&mut [0u8; 1]).map_err(Error::from));
        let acceptor = thread::spawn(move || s2.accept_stream().map(|_| ()));
        let writer = thread::spawn(move || (&mine).write_all(&[0u8; 1 << 16]).map_err(Error::from));
        let t = Instant::now();
        child.kill().unwrap();
        child.wait().unwrap();
        for (what, result) in [
            ("read", reader.join().unwrap().map(|_| ())),
            ("accept", acceptor.join().unwrap()),
            ("write", writer.join().unwrap()),
        ] {
            match result {
                Err(Error::SessionClosed(CloseReason::Expired(_))) => {}
                other => panic!("{what}: expected SessionClosed(Expired), got {other:?}"),
            }
        }
        let took = t.elapsed();
        assert!(took >= c.resume_timeout && took < c.resume_timeout + c.keepalive_timeout, "took {took:?}");
        assert!(matches!(session.open_stream(), Err(Error::SessionClosed(_))));
    });
}

#[test]
fn silent_peer_is_detected_by_keepalive() {
    within(Duration::from_secs(60), || {
        // No resumption: the last tunnel's silence ends the session.
        let c = Config { resume_timeout: Duration::ZERO, ..cfg(3) };
        let (client, server, relay) = relayed_pair(&c);
        let st = Arc::new(client.open_stream().unwrap());
        (&*st).write_all(b"x").unwrap();
        let _peer = server.accept_stream().unwrap();
        let r = st.clone();
        let reader = thread::spawn(move || (&*r).read(&mut [0u8; 1]).map_err(Error::from));
        let c2 = client.clone();
        let acceptor = thread::spawn(move || c2.accept_stream().map(|_| ()));
        let t = Instant::now();
        relay.freeze();
        match reader.join().unwrap() {
            Err(Error::SessionClosed(CloseReason::TunnelsLost(why))) => {
                assert!(why.contains("keepalive"), "{why}")
            }
            other => panic!("read: {other:?}"),
        }
        assert!(matches!(acceptor.join().unwrap(), Err(Error::SessionClosed(_))));
        let took = t.elapsed();
        assert!(took >= c.keepalive_timeout, "too early: {took:?}");
        // A ping may still pass the relay just after the freeze (a pump already blocked in
        // its read forwards it): up to one keepalive interval and a round trip more.
        assert!(took < c.keepalive_timeout + Duration::from_secs(1), "too late: {took:?}");
        // The server side sees the same silence.
        assert!(matches!(server.accept_stream(), Err(Error::SessionClosed(_))));
    });
}

/// Frames verifiably inside a tunnel when it is cut are re-sent on the others: the stream
/// carries on intact (version 1 failed it with a reorder timeout), the slot re-joins.
#[test]
fn tunnel_cut_mid_transfer_loses_nothing() {
    within(Duration::from_secs(90), || {
        let c = Config { keepalive_timeout: Duration::from_secs(10), ..cfg(4) };
        let (client, server, relay) = relayed_pair(&c);
        assert_eq!(relay.connections(), 4);
        // An idle stream, opened before the cut, that sent nothing recently.
        let mut idle = client.open_stream().unwrap();
        idle.write_all(b"idle").unwrap();
        let idle_peer = server.accept_stream().unwrap();
        let mut b = [0u8; 4];
        (&idle_peer).read_exact(&mut b).unwrap();

        const CHUNK: usize = 256 << 10;
        // More than the windows hold, so the stream is still moving when the cut comes.
        const CHUNKS: u64 = 1024;
        let client2 = client.clone();
        let sender = thread::spawn(move || -> Result<(), Error> {
            let mut s = client2.open_stream()?;
            for i in 0..CHUNKS {
                s.write_all(&pattern(i, CHUNK))?;
            }
            s.close_write()?;
            Ok(())
        });
        let mut s = server.accept_stream().unwrap();
        let mut buf = vec![0u8; CHUNK];
        let mut next = 0u64;
        let mut read_chunk = |s: &mut mtmux::Stream| {
            s.read_exact(&mut buf).unwrap();
            assert!(buf == pattern(next, CHUNK), "chunk {next} corrupted");
            next += 1;
            next
        };
        for _ in 0..8 {
            read_chunk(&mut s);
        }
        // Hold the victim tunnel until frames of the stream are stuck in the relay, then cut
        // it: those bytes never reach the server on that connection. (The tunnel may go stale
        // meanwhile and be routed around: the stream goes on, but must not end first.)
        relay.hold(1);
        let mut read = 8;
        while relay.held_bytes(1) < 16 << 10 && read < CHUNKS {
            read = read_chunk(&mut s);
        }
        let held = relay.held_bytes(1);
        assert!(held > 0, "nothing went into the held tunnel");
        relay.cut(1);
        while read < CHUNKS {
            read = read_chunk(&mut s);
        }
        assert_eq!(s.read(&mut buf).unwrap(), 0, "end of stream");
        sender.join().unwrap().expect("the sender sees no error");
        // The held frames were re-sent (when the tunnel went stale, or when it was cut).
        let resent: u64 = client.tunnel_stats().iter().map(|t| t.bytes_resent).sum();
        assert!(resent > 0, "nothing re-sent, {held} bytes were held");
        // The slot re-joins with a new generation and the session has four tunnels again.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !client.tunnel_stats().iter().all(|t| t.state == mtmux::TunnelState::Live)
            || client.tunnel_stats().iter().all(|t| t.generation == 0)
        {
            assert!(Instant::now() < deadline, "no re-join: {:?}", client.tunnel_stats());
            thread::sleep(Duration::from_millis(20));
        }
        assert!(relay.connections() >= 5, "the client re-dialed through the relay");
        idle.write_all(b" still works").unwrap();
        idle.close_write().unwrap();
        let mut rest = String::new();
        (&idle_peer).read_to_string(&mut rest).unwrap();
        assert_eq!(rest, " still works");
    });
}

#[test]
fn losing_the_last_tunnel_closes_the_session_without_resumption() {
    within(Duration::from_secs(30), || {
        // No re-join either: a re-dial could replace the first tunnel before the second dies.
        let c = Config { resume_timeout: Duration::ZERO, rejoin: false, ..cfg(2) };
        let (client, server, relay) = relayed_pair(&c);
        let st = client.open_stream().unwrap();
        relay.cut(0);
        relay.cut(1);
        let e = Error::from((&st).read(&mut [0u8; 1]).unwrap_err());
        assert!(matches!(e, Error::SessionClosed(CloseReason::TunnelsLost(_))), "{e:?}");
        assert!(matches!(server.accept_stream(), Err(Error::SessionClosed(_))));
        assert!(client.is_closed() && server.is_closed());
    });
}

/// Regression: RESETs written into a tunnel that then died were lost, leaving the peer's
/// writers blocked forever. Control frames count in ACKs and are re-sent like DATA.
#[test]
fn resets_lost_with_a_dying_tunnel_are_sent_again() {
    within(Duration::from_secs(60), || {
        let c = cfg(2);
        let (client, server, relay) = relayed_pair(&c);
        // Six streams whose writers are blocked on a full window.
        let mut writers = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..6 {
            let s = client.open_stream().unwrap();
            (&s).write_all(b"x").unwrap();
            peers.push(server.accept_stream().unwrap());
            fill_window(&s);
            writers.push(thread::spawn(move || (&s).write_all(&[0u8; 1 << 16]).map_err(Error::from)));
        }
        // Hold one tunnel: direct writes rotate over the tunnels, so some of the six RESETs
        // go into the held one and are lost when it is cut.
        relay.hold(1);
        for p in &peers {
            p.reset().unwrap();
        }
        relay.cut(1);
        let t = Instant::now();
        for w in writers {
            match w.join().unwrap() {
                Err(Error::StreamReset { code: mtmux::ResetCode::Cancelled, remote: true }) => {}
                other => panic!("expected the peer's reset, got {other:?}"),
            }
        }
        assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    });
}
