//! The TcpStream-grade API (issue 11, point 7) and the contract of calls woken from another
//! thread (point 8), over real loopback sessions: stream handles (`try_clone`), what dropping
//! and closing them does, the `incoming` iterators, the session's addresses, timeouts as
//! `io::Result`, what a stream sees when the peer's session closes, the close reason being
//! known before any call fails, partial writes, the peer's stream limit, and a listener closed
//! while a bundle is half-arrived.
mod common;

use common::relay::{Dir, FaultRelay};
use common::rig::wait_until;
use common::{cfg, pair, pattern, within};
use mtmux::proto::handshake::HELLO_LEN;
use mtmux::{CloseReason, Config, Error, ResetCode, Session, Stream};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

fn read_all(mut s: &Stream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).unwrap();
    v
}

/// A proxy's shape: each direction of a stream on its own thread with its own handle.
#[test]
fn try_clone_moves_each_direction_to_its_own_thread() {
    within(LIMIT, || {
        let (client, server) = pair(&cfg(4));
        // An echo server: one thread per stream copies what it reads back through a clone.
        let echo = thread::spawn(move || {
            let mut echoed = 0;
            for stream in server.incoming() {
                let mut reader = stream.unwrap();
                let mut writer = reader.try_clone().unwrap();
                thread::spawn(move || {
                    io::copy(&mut reader, &mut writer).unwrap();
                    writer.close_write().unwrap();
                })
                .join()
                .unwrap();
                echoed += 1;
            }
            echoed
        });
        let data = pattern(1, 4 << 20);
        let s = client.open_stream().unwrap();
        let mut w = s.try_clone().unwrap();
        let sent = data.clone();
        let writer = thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.close_write().unwrap();
            // This handle goes away here; the reading one keeps the stream open.
        });
        let got = read_all(&s);
        writer.join().unwrap();
        assert!(got == data, "echoed bytes differ");
        drop(s);
        client.close().unwrap();
        assert_eq!(echo.join().unwrap(), 1, "the server's incoming() ends when the session does");
    });
}

#[test]
fn the_stream_closes_when_its_last_handle_is_dropped() {
    within(LIMIT, || {
        let (client, server) = pair(&cfg(2));
        let s = client.open_stream().unwrap();
        let c = s.try_clone().unwrap();
        (&s).write_all(b"x").unwrap();
        drop(s);
        // Another handle lives: the stream is open, writes go on.
        (&c).write_all(b"y").unwrap();
        let peer = server.accept_stream().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 2];
        (&peer).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"xy");
        // The last handle: FIN after the data, as close() does.
        (&c).write_all(b"z").unwrap();
        drop(c);
        assert_eq!(read_all(&peer), b"z");
    });
}

#[test]
fn close_shutdown_and_timeouts_act_on_every_handle() {
    within(LIMIT, || {
        let (client, server) = pair(&cfg(2));
        let s = client.open_stream().unwrap();
        let c = s.try_clone().unwrap();
        // Timeouts belong to the stream, as a socket's belong to every TcpStream clone.
        s.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
        assert_eq!(c.read_timeout(), Some(Duration::from_millis(150)));
        assert_eq!((&c).read(&mut [0u8; 4]).unwrap_err().kind(), io::ErrorKind::TimedOut);
        let zero = c.set_write_timeout(Some(Duration::ZERO)).unwrap_err();
        assert_eq!(zero.kind(), io::ErrorKind::InvalidInput);
        c.set_read_timeout(None).unwrap();
        assert_eq!(s.read_timeout(), None);
        // A read blocked on one handle wakes when another closes the stream.
        let r = c.try_clone().unwrap();
        let reader = thread::spawn(move || (&r).read(&mut [0u8; 4]).map_err(Error::from));
        (&s).write_all(b"hi").unwrap();
        let peer = server.accept_stream().unwrap();
        s.close().unwrap();
        assert!(matches!(reader.join().unwrap(), Ok(0)));
        let e = (&c).write(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(matches!(Error::from(e), Error::WriteClosed));
        assert_eq!(read_all(&peer), b"hi");
        // shutdown returns io::Result like TcpStream's.
        let t = client.open_stream().unwrap();
        t.shutdown(Shutdown::Both).unwrap();
        t.shutdown(Shutdown::Read).unwrap();
        assert_eq!((&t).read(&mut [0u8; 4]).unwrap(), 0);
        t.reset().unwrap();
        let e: io::Error = t.shutdown(Shutdown::Write).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    });
}

#[test]
fn incoming_iterators_end_when_the_listener_or_session_closes() {
    within(LIMIT, || {
        let c = cfg(2);
        let listener = Arc::new(mtmux::Listener::bind("127.0.0.1:0", &c).unwrap());
        let addr = listener.local_addr();
        let l = listener.clone();
        let (accepted_tx, accepted) = std::sync::mpsc::channel();
        let server = thread::spawn(move || {
            let mut per_session = Vec::new();
            for session in l.incoming() {
                let session = session.unwrap();
                accepted_tx.send(()).unwrap();
                per_session.push(thread::spawn(move || {
                    let mut bytes = Vec::new();
                    for stream in session.incoming() {
                        bytes.extend(read_all(&stream.unwrap()));
                    }
                    (bytes, session.close_reason())
                }));
            }
            per_session.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
        });
        for n in 1..=2u8 {
            let client = mtmux::dial(addr, &c).unwrap();
            for _ in 0..n {
                let mut s = client.open_stream().unwrap();
                s.write_all(&[n]).unwrap();
                s.close_write().unwrap();
            }
            client.close().unwrap();
            // (Closing the listener would close sessions it has not handed out yet.)
            accepted.recv_timeout(Duration::from_secs(10)).unwrap();
        }
        listener.close();
        let mut sessions = server.join().unwrap();
        sessions.sort_by_key(|(bytes, _)| bytes.clone());
        assert_eq!(
            sessions,
            vec![(vec![1], Some(CloseReason::Peer)), (vec![2, 2], Some(CloseReason::Peer))],
            "each session's streams, then the end of both iterators"
        );
    });
}

#[test]
fn a_session_has_the_addresses_of_its_tunnel_0() {
    within(LIMIT, || {
        let l = mtmux::Listener::bind("127.0.0.1:0", &cfg(3)).unwrap();
        let client = mtmux::dial(l.local_addr(), &cfg(3)).unwrap();
        let server = l.accept().unwrap();
        assert_eq!(client.peer_addr(), l.local_addr());
        assert_eq!(server.local_addr(), l.local_addr());
        assert_eq!(client.local_addr(), server.peer_addr());
        assert_eq!(client.local_addrs()[0], client.local_addr());
        assert_eq!(server.peer_addrs()[1], client.local_addrs()[1]);
        assert_eq!(client.open_stream().unwrap().session().peer_addr(), l.local_addr());
        // Still known once the session is closed.
        client.close().unwrap();
        assert_eq!(client.peer_addr(), l.local_addr());
    });
}

/// When the peer's session closes, a stream's data that arrived is read first, then reads
/// fail with SessionClosed(Peer) (never a clean end of stream), unless the peer's FIN came.
/// Streams the peer opened and wrote just before closing are not lost (regression: its GOAWAY
/// could overtake their first frames, and they were refused).
#[test]
fn what_a_stream_sees_when_the_peer_session_closes() {
    within(LIMIT, || {
        let (client, server) = pair(&cfg(2));
        let cut = client.open_stream().unwrap();
        (&cut).write_all(b"partial").unwrap();
        let done = client.open_stream().unwrap();
        (&done).write_all(b"complete").unwrap();
        done.close_write().unwrap();
        client.close().unwrap();
        // Streams opened before the peer closed are still handed out, in the order it opened
        // them.
        let accepted: Vec<Stream> = server.incoming().map(Result::unwrap).collect();
        assert_eq!(accepted.len(), 2);
        let (peer_cut, peer_done) = (&accepted[0], &accepted[1]);
        assert_eq!((peer_cut.id(), peer_done.id()), (cut.id(), done.id()));

        let mut got = [0u8; 7];
        (&*peer_cut).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"partial");
        let e = (&*peer_cut).read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted);
        assert!(matches!(Error::from(e), Error::SessionClosed(CloseReason::Peer)));
        assert_eq!(read_all(peer_done), b"complete");
        // Writes fail the same way (now that the session has ended here).
        let e = (&*peer_cut).write_all(&[0u8; 4096]).unwrap_err();
        assert!(matches!(Error::from(e), Error::SessionClosed(CloseReason::Peer)));
        assert_eq!(server.close_reason(), Some(CloseReason::Peer));
    });
}

/// Regression: right after a call failed with SessionClosed because the peer closed,
/// `close_reason` still said `None` for a while (9 runs in 10): between the peer's GOAWAY and
/// the end of its tunnels. The reason is now set before any call can fail, and stays.
#[test]
fn the_close_reason_is_known_as_soon_as_a_call_fails() {
    within(LIMIT, || {
        for run in 0..20 {
            let (client, server) = pair(&cfg(1));
            let watcher = thread::spawn(move || {
                // The first moment this side knows: the peer's GOAWAY.
                let deadline = Instant::now() + Duration::from_secs(10);
                while !server.is_closed() {
                    assert!(Instant::now() < deadline, "the peer's close never showed");
                    thread::yield_now();
                }
                let open = server.open_stream().unwrap_err();
                let at_once = server.close_reason();
                let accept = server.accept_stream().unwrap_err();
                let after_accept = server.close_reason();
                // Closing this side too does not change it.
                server.close().unwrap();
                (open, at_once, accept, after_accept, server.close_reason())
            });
            client.close().unwrap();
            let (open, at_once, accept, after_accept, last) = watcher.join().unwrap();
            assert!(matches!(open, Error::SessionClosed(CloseReason::Peer)), "run {run}: {open:?}");
            assert!(matches!(accept, Error::SessionClosed(CloseReason::Peer)), "run {run}: {accept:?}");
            for r in [at_once, after_accept, last] {
                assert_eq!(r, Some(CloseReason::Peer), "run {run}");
            }
            assert_eq!(client.close_reason(), Some(CloseReason::Local), "run {run}");
        }
    });
}

/// A small window, so that a write blocks once the peer stops reading.
fn small_window() -> Config {
    Config { stream_window: 128 << 10, max_stream_window: 128 << 10, ..cfg(2) }
}

/// Start one `write` of 8 MiB on a stream the peer does not read, wait until it has used the
/// stream's window (it is blocked on flow control), wake it with `wake`; returns what that
/// write returned and what the next write returns.
fn woken_write(wake: impl FnOnce(&Stream, &Session)) -> (io::Result<usize>, Error) {
    let (client, server) = pair(&small_window());
    let s = client.open_stream().unwrap();
    let w = s.try_clone().unwrap();
    let writer = thread::spawn(move || (&w).write(&vec![7u8; 8 << 20]));
    let _peer = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
    wait_until(Duration::from_secs(10), "the stream window used", || {
        client.tunnel_stats().iter().map(|t| t.bytes_sent).sum::<u64>() >= 120 << 10
    });
    let woken = Instant::now();
    wake(&s, &client);
    let first = writer.join().unwrap();
    assert!(woken.elapsed() < Duration::from_secs(5), "the writer woke after {:?}", woken.elapsed());
    let next = Error::from((&s).write(b"more").unwrap_err());
    (first, next)
}

/// The contract of a write woken from another thread after part of its buffer was accepted:
/// it returns that part's length, as send(2) and TcpStream do, and the next write fails.
#[test]
fn a_woken_write_returns_what_it_had_accepted_and_the_next_one_fails() {
    within(LIMIT, || {
        let partial = |r: io::Result<usize>| {
            let n = r.expect("a partial count, not an error");
            assert!(n > 0 && n < 8 << 20, "{n}");
        };
        let (first, next) = woken_write(|s, _| s.close_write().unwrap());
        partial(first);
        assert!(matches!(next, Error::WriteClosed), "{next:?}");
        let (first, next) = woken_write(|s, _| s.close().unwrap());
        partial(first);
        assert!(matches!(next, Error::WriteClosed), "{next:?}");
        let (first, next) = woken_write(|s, _| s.reset().unwrap());
        partial(first);
        assert!(matches!(next, Error::StreamReset { code: ResetCode::Cancelled, remote: false }), "{next:?}");
        let (first, next) = woken_write(|_, session| session.close().unwrap());
        partial(first);
        assert!(matches!(next, Error::SessionClosed(CloseReason::Local)), "{next:?}");
    });
}

/// A stream the peer turns away at its own (application) limit reports TooManyStreams too.
#[test]
fn a_stream_the_peer_turns_away_reports_too_many_streams() {
    within(LIMIT, || {
        let (client, server) = pair(&cfg(2));
        let s = client.open_stream().unwrap();
        (&s).write_all(b"hello").unwrap();
        let peer = server.accept_stream().unwrap();
        peer.reset_with(ResetCode::TooManyStreams).unwrap();
        let e = (&s).read(&mut [0u8; 8]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::QuotaExceeded);
        assert!(matches!(Error::from(e), Error::TooManyStreams));
        // Locally it is the reset it was.
        let e = Error::from((&peer).read(&mut [0u8; 8]).unwrap_err());
        assert!(matches!(e, Error::StreamReset { code: ResetCode::TooManyStreams, remote: false }), "{e:?}");
    });
}

/// Regression: closing a listener while a bundle's tunnel 1 had arrived and its tunnel 0 had
/// not left the dial waiting for its handshake timeout (the client read the replies in tunnel
/// order). The dial now fails at once with the listener's refusal.
#[test]
fn closing_a_listener_refuses_a_dial_whose_tunnel_0_never_arrived() {
    within(LIMIT, || {
        let c = Config { handshake_timeout: Duration::from_secs(30), ..cfg(2) };
        let l = mtmux::Listener::bind("127.0.0.1:0", &c).unwrap();
        // Tunnel 0 ends at a socket that never answers; tunnel 1 reaches the listener.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let relay = FaultRelay::new(&[silent.local_addr().unwrap(), l.local_addrs()[1]]);
        let addr = relay.addr();
        let dial = thread::spawn(move || {
            let t = Instant::now();
            (mtmux::dial(addr, &c).map(drop), t.elapsed())
        });
        wait_until(Duration::from_secs(10), "tunnel 1's HELLO forwarded", || {
            relay.delivered(1, Dir::ToServer) >= HELLO_LEN as u64
        });
        l.close();
        let (r, took) = dial.join().unwrap();
        match r {
            Err(Error::Refused(why)) => assert!(why.contains("shutting down"), "{why}"),
            other => panic!("expected the listener's refusal, got {other:?}"),
        }
        assert!(took < Duration::from_secs(10), "the dial took {took:?}");
        drop(silent);
    });
}

/// `shutdown(Both)` is `close`: with data left unread while the peer still writes, the stream
/// is reset, so a peer blocked on flow control learns at once (it waited forever).
#[test]
fn shutdown_both_with_unread_data_fails_a_blocked_writer_at_once() {
    within(LIMIT, || {
        let (client, server) = pair(&small_window());
        let mut w = client.open_stream().unwrap();
        let writer = thread::spawn(move || loop {
            if let Err(e) = w.write_all(&[7u8; 16 << 10]) {
                return e;
            }
        });
        let r = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
        wait_until(Duration::from_secs(10), "the stream window used", || {
            server.tunnel_stats().iter().map(|t| t.bytes_received).sum::<u64>() >= 120 << 10
        });
        let shut = Instant::now();
        r.shutdown(Shutdown::Both).unwrap();
        let e = writer.join().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe, "{e}");
        assert!(shut.elapsed() < Duration::from_secs(5), "the writer waited {:?}", shut.elapsed());
    });
}
