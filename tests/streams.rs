//! Stream behaviour over real loopback sessions: bulk integrity, concurrency, half-close,
//! reset, both sides opening, limits, flow-control isolation and timeouts.
mod common;

use common::{cfg, pair, pattern, within};
use mtmux::{Config, Error, ResetCode};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn read_all(mut s: &mtmux::Stream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn sixty_four_concurrent_streams_both_directions_random_sizes() {
    within(Duration::from_secs(120), || {
        let (client, server) = pair(&cfg(4));
        // Half the streams are opened by each side; on every stream both ends send a random
        // amount (up to 8 MiB) at the same time and check what they receive.
        let size =
            |i: u64| (pattern(i, 4).iter().fold(0u64, |a, &b| a * 256 + b as u64) % (8 << 20)) as usize;
        let run = |session: mtmux::Session, opener: bool, base: u64| {
            thread::spawn(move || {
                let workers: Vec<_> = (0..32u64)
                    .map(|k| {
                        let s = if opener { session.open_stream() } else { session.accept_stream() }.unwrap();
                        thread::spawn(move || {
                            let s = Arc::new(s);
                            // The stream id tells both ends which stream this is.
                            let key = s.id() as u64;
                            let mine = pattern(key * 2 + base, size(key * 2 + base));
                            let theirs_len = size(key * 2 + (1 - base));
                            let w = s.clone();
                            let writer = thread::spawn(move || {
                                (&*w).write_all(&mine).unwrap();
                                w.close_write().unwrap();
                            });
                            let got = read_all(&s);
                            writer.join().unwrap();
                            assert_eq!(got.len(), theirs_len, "stream {key} length");
                            assert!(
                                got == pattern(key * 2 + (1 - base), theirs_len),
                                "stream {key} corrupted"
                            );
                            let _ = k;
                        })
                    })
                    .collect();
                for w in workers {
                    w.join().unwrap();
                }
            })
        };
        // Client opens 32 (odd ids), server opens 32 (even ids); each side also accepts 32.
        let a = run(client.clone(), true, 0);
        let b = run(server.clone(), false, 1);
        let c = run(server.clone(), true, 1);
        let d = run(client.clone(), false, 0);
        for h in [a, b, c, d] {
            h.join().unwrap();
        }
    });
}

#[test]
fn one_stream_over_eight_tunnels_carries_256_mib_intact() {
    within(Duration::from_secs(120), || {
        let (client, server) = pair(&cfg(8));
        const CHUNK: usize = 1 << 20;
        let sender = thread::spawn(move || {
            let mut s = client.open_stream().unwrap();
            for i in 0..256u64 {
                s.write_all(&pattern(i, CHUNK)).unwrap();
            }
            s.close_write().unwrap();
            client
        });
        let mut s = server.accept_stream().unwrap();
        let mut buf = vec![0u8; CHUNK];
        for i in 0..256u64 {
            s.read_exact(&mut buf).unwrap();
            assert!(buf == pattern(i, CHUNK), "chunk {i} corrupted");
        }
        assert_eq!(s.read(&mut buf).unwrap(), 0, "end of stream after 256 MiB");
        let client = sender.join().unwrap();
        // Striping: frames went over every tunnel. (On loopback no tunnel is a bottleneck, so
        // the split follows which writer threads happen to run and need not be even; on
        // capped links each tunnel carries its capacity, see the scaling benchmark.)
        for t in server.tunnel_stats() {
            assert!(
                t.bytes_received > (256 << 20) / 100,
                "tunnel {} carried only {} bytes",
                t.index,
                t.bytes_received
            );
        }
        drop(client);
    });
}

#[test]
fn half_close_each_way() {
    within(Duration::from_secs(30), || {
        let (client, server) = pair(&cfg(3));
        // Client half-closes first, then reads the full response.
        let srv = thread::spawn(move || {
            let mut s = server.accept_stream().unwrap();
            let req = read_all(&s);
            assert_eq!(req, b"request");
            s.write_all(b"response to request").unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            // Server half-closes first on the second stream; the client still writes after.
            let mut s2 = server.accept_stream().unwrap();
            s2.write_all(b"greeting").unwrap();
            s2.close_write().unwrap();
            assert!(matches!(s2.write(b"x"), Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe));
            let got = read_all(&s2);
            assert_eq!(got, b"late reply");
            server
        });
        let mut s = client.open_stream().unwrap();
        s.write_all(b"request").unwrap();
        s.close_write().unwrap();
        assert_eq!(read_all(&s), b"response to request");
        let mut s2 = client.open_stream().unwrap();
        s2.write_all(b"").unwrap();
        // A bare OPEN goes out with the first read, so the server can accept and speak first.
        let mut greet = [0u8; 8];
        s2.read_exact(&mut greet).unwrap();
        assert_eq!(&greet, b"greeting");
        assert_eq!(s2.read(&mut greet).unwrap(), 0);
        s2.write_all(b"late reply").unwrap();
        s2.close_write().unwrap();
        srv.join().unwrap();
    });
}

#[test]
fn reset_fails_the_peer_reads_and_writes() {
    within(Duration::from_secs(30), || {
        let (client, server) = pair(&cfg(2));
        let s = client.open_stream().unwrap();
        (&s).write_all(b"abc").unwrap();
        let peer = server.accept_stream().unwrap();
        let mut b = [0u8; 3];
        (&peer).read_exact(&mut b).unwrap();
        // The peer is blocked in a read when the reset arrives.
        let reader = thread::spawn(move || {
            let r = (&peer).read(&mut [0u8; 10]);
            (peer, r)
        });
        s.reset().unwrap();
        let (peer, r) = reader.join().unwrap();
        let e = Error::from(r.unwrap_err());
        assert!(matches!(e, Error::StreamReset { code: ResetCode::Cancelled, remote: true }), "{e:?}");
        let w = (&peer).write(b"more").unwrap_err();
        assert_eq!(w.kind(), std::io::ErrorKind::ConnectionReset);
        // Locally, too.
        assert!(matches!(
            Error::from((&s).write(b"x").unwrap_err()),
            Error::StreamReset { remote: false, .. }
        ));
        assert!(matches!(Error::from((&s).read(&mut [0u8; 1]).unwrap_err()), Error::StreamReset { .. }));
        // The session is unaffected.
        let mut s2 = client.open_stream().unwrap();
        s2.write_all(b"still fine").unwrap();
        s2.close_write().unwrap();
        assert_eq!(read_all(&server.accept_stream().unwrap()), b"still fine");
    });
}

#[test]
fn both_sides_open_streams() {
    within(Duration::from_secs(30), || {
        let (client, server) = pair(&cfg(2));
        let mut a = client.open_stream().unwrap();
        let mut b = server.open_stream().unwrap();
        a.write_all(b"from client").unwrap();
        a.close_write().unwrap();
        b.write_all(b"from server").unwrap();
        b.close_write().unwrap();
        let at_server = server.accept_stream().unwrap();
        let at_client = client.accept_stream().unwrap();
        assert_eq!(at_server.id() % 2, 1, "client ids are odd");
        assert_eq!(at_client.id() % 2, 0, "server ids are even");
        assert_eq!(read_all(&at_server), b"from client");
        assert_eq!(read_all(&at_client), b"from server");
        (&at_server).write_all(b"ack").unwrap();
        drop(at_server);
        let mut ack = Vec::new();
        a.read_to_end(&mut ack).unwrap();
        assert_eq!(ack, b"ack");
    });
}

#[test]
fn max_streams_limit_local_and_remote() {
    within(Duration::from_secs(30), || {
        let client_cfg = Config { max_streams: 3, ..cfg(2) };
        let l = mtmux::Listener::bind("127.0.0.1:0", &Config { max_streams: 2, ..cfg(2) }).unwrap();
        let addr = l.local_addr();
        let client = mtmux::dial(addr, &client_cfg).unwrap();
        let server = l.accept().unwrap();
        let s1 = client.open_stream().unwrap();
        let s2 = client.open_stream().unwrap();
        let s3 = client.open_stream().unwrap();
        assert!(matches!(client.open_stream(), Err(Error::TooManyStreams)));
        (&s1).write_all(b"1").unwrap();
        (&s2).write_all(b"2").unwrap();
        let _a1 = server.accept_stream().unwrap();
        let _a2 = server.accept_stream().unwrap();
        // The server holds 2 streams, its limit: the third is refused.
        (&s3).write_all(b"3").unwrap();
        let e = Error::from((&s3).read(&mut [0u8; 1]).unwrap_err());
        assert!(matches!(e, Error::StreamReset { code: ResetCode::TooManyStreams, remote: true }), "{e:?}");
        // Closing streams frees their slots on both sides.
        drop((s1, s2, s3, _a1, _a2));
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.num_streams() > 0 || server.num_streams() > 0 {
            assert!(Instant::now() < deadline, "streams were not released");
            thread::yield_now();
        }
        let mut s4 = client.open_stream().unwrap();
        s4.write_all(b"4").unwrap();
        s4.close_write().unwrap();
        assert_eq!(read_all(&server.accept_stream().unwrap()), b"4");
    });
}

#[test]
fn a_stream_that_is_never_read_does_not_stall_the_others() {
    within(Duration::from_secs(60), || {
        let c = Config { stream_window: 256 << 10, max_stream_window: 256 << 10, ..cfg(4) };
        let (client, server) = pair(&c);
        let stuck = client.open_stream().unwrap();
        stuck.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
        let chunk = vec![1u8; 64 << 10];
        let mut pushed = 0;
        loop {
            match (&stuck).write(&chunk) {
                Ok(n) => pushed += n,
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
                    break;
                }
            }
            assert!(pushed <= 1 << 20, "writes to an unread stream must block at its window");
        }
        // The window, not the session, bounds what the unread stream may have in flight.
        assert!(pushed <= 256 << 10, "{pushed} bytes went out beyond a 256 KiB window");
        let unread = server.accept_stream().unwrap();
        // Meanwhile another stream moves 64 MiB.
        let srv = server.clone();
        let rx = thread::spawn(move || {
            let s = srv.accept_stream().unwrap();
            read_all(&s).len()
        });
        let mut other = client.open_stream().unwrap();
        let big = vec![2u8; 1 << 20];
        for _ in 0..64 {
            other.write_all(&big).unwrap();
        }
        other.close_write().unwrap();
        assert_eq!(rx.join().unwrap(), 64 << 20);
        // The stuck stream still delivers everything once read.
        stuck.set_write_timeout(None).unwrap();
        stuck.close_write().unwrap();
        assert_eq!(read_all(&unread).len(), pushed);
    });
}

#[test]
fn read_and_write_timeouts() {
    within(Duration::from_secs(30), || {
        let (client, server) = pair(&cfg(2));
        let s = client.open_stream().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let t = Instant::now();
        let e = (&s).read(&mut [0u8; 4]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(100));
        assert!(s.set_read_timeout(Some(Duration::ZERO)).is_err(), "zero timeout is refused");
        // After a timeout the stream still works (a generous timeout now: other tests load
        // the machine).
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let peer = server.accept_stream().unwrap();
        (&peer).write_all(b"late").unwrap();
        let mut b = [0u8; 4];
        (&s).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"late");
        assert_eq!(s.read_timeout(), Some(Duration::from_secs(10)));
    });
}

#[test]
fn close_from_another_thread_wakes_blocked_calls() {
    within(Duration::from_secs(30), || {
        let (client, server) = pair(&cfg(2));
        let s = Arc::new(client.open_stream().unwrap());
        let (s2, c2) = (s.clone(), client.clone());
        let reader = thread::spawn(move || (&*s2).read(&mut [0u8; 8]).map_err(Error::from));
        let acceptor = thread::spawn(move || c2.accept_stream().map(|_| ()));
        let _peer = server.accept_stream().unwrap();
        client.close().unwrap();
        assert!(matches!(reader.join().unwrap(), Err(Error::SessionClosed(_))));
        assert!(matches!(acceptor.join().unwrap(), Err(Error::SessionClosed(_))));
        assert!(matches!(client.open_stream(), Err(Error::SessionClosed(_))));
        assert!(matches!(Error::from((&*s).write(b"x").unwrap_err()), Error::SessionClosed(_)));
        // The peer sees the session end, too.
        assert!(matches!(server.accept_stream(), Err(Error::SessionClosed(_))));
        // Regression: a closed session still reports where its tunnels went (shut-down
        // sockets no longer know their peer).
        assert_eq!(client.peer_addrs().len(), 2);
        assert_eq!(server.local_addrs(), client.peer_addrs());
    });
}

#[test]
fn graceful_close_delivers_queued_data() {
    within(Duration::from_secs(30), || {
        let (client, server) = pair(&cfg(4));
        let mut s = client.open_stream().unwrap();
        let data = pattern(9, 4 << 20);
        let srv = thread::spawn(move || {
            let s = server.accept_stream().unwrap();
            read_all(&s)
        });
        s.write_all(&data).unwrap();
        s.close_write().unwrap();
        // Close right after writing: what write() accepted still arrives.
        client.close().unwrap();
        assert!(srv.join().unwrap() == data);
    });
}

#[test]
fn single_port_mode() {
    within(Duration::from_secs(30), || {
        let c = Config { single_port: true, ..cfg(6) };
        let (client, server) = pair(&c);
        assert_eq!(client.num_tunnels(), 6);
        let ports: std::collections::HashSet<u16> = client.peer_addrs().iter().map(|a| a.port()).collect();
        assert_eq!(ports.len(), 1, "all tunnels on one port");
        let rx = thread::spawn(move || read_all(&server.accept_stream().unwrap()));
        let mut s = client.open_stream().unwrap();
        s.write_all(&pattern(1, 4 << 20)).unwrap();
        s.close_write().unwrap();
        assert!(rx.join().unwrap() == pattern(1, 4 << 20));
    });
}

#[test]
fn stats_count_traffic_and_measure_rtt() {
    within(Duration::from_secs(30), || {
        let (client, server) = pair(&cfg(3));
        let rx = thread::spawn(move || (read_all(&server.accept_stream().unwrap()).len(), server));
        let mut s = client.open_stream().unwrap();
        s.write_all(&vec![0u8; 1 << 20]).unwrap();
        s.close_write().unwrap();
        let (n, _server) = rx.join().unwrap();
        assert_eq!(n, 1 << 20);
        let sent: u64 = client.tunnel_stats().iter().map(|t| t.bytes_sent).sum();
        assert!(sent >= 1 << 20);
        // The first ping goes out at once; wait (bounded) for its answer.
        let deadline = Instant::now() + Duration::from_secs(5);
        while client.tunnel_stats().iter().any(|t| t.rtt.is_none()) {
            assert!(Instant::now() < deadline, "no keepalive round trip measured");
            thread::yield_now();
        }
        assert!(client.tunnel_stats().iter().all(|t| t.alive && t.frames_sent > 0));
    });
}

#[test]
fn small_requests_are_not_stuck_behind_bulk_data() {
    within(Duration::from_secs(60), || {
        let (client, server) = pair(&cfg(2));
        // The echo stream is opened and accepted first, so each side knows which is which.
        let mut s = client.open_stream().unwrap();
        s.write_all(&[7u8; 64]).unwrap();
        let echo_stream = server.accept_stream().unwrap();
        let echo = thread::spawn(move || {
            let mut b = [0u8; 64];
            while (&echo_stream).read_exact(&mut b).is_ok() {
                (&echo_stream).write_all(&b).unwrap();
            }
        });
        s.read_exact(&mut [0u8; 64]).unwrap();
        let bulk_client = client.clone();
        let bulk = thread::spawn(move || {
            let mut s = bulk_client.open_stream().unwrap();
            let chunk = vec![3u8; 1 << 20];
            for _ in 0..256 {
                s.write_all(&chunk).unwrap();
            }
            s.close_write().unwrap();
        });
        let bulk_rx = thread::spawn(move || read_all(&server.accept_stream().unwrap()).len());
        let mut worst = Duration::ZERO;
        for _ in 0..200 {
            let t = Instant::now();
            s.write_all(&[7u8; 64]).unwrap();
            s.read_exact(&mut [0u8; 64]).unwrap();
            worst = worst.max(t.elapsed());
        }
        // Not a performance figure (see the benchmarks), only "not stuck behind 256 MiB".
        assert!(worst < Duration::from_secs(1), "a 64-byte round trip took {worst:?}");
        s.close_write().unwrap();
        bulk.join().unwrap();
        assert_eq!(bulk_rx.join().unwrap(), 256 << 20);
        echo.join().unwrap();
    });
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn threads_do_not_grow_with_streams() {
    within(Duration::from_secs(60), || {
        let c = Config { max_streams: 10_000, accept_backlog: 2048, ..cfg(4) };
        let (client, server) = pair(&c);
        let before = thread_count();
        let mut mine = Vec::new();
        for i in 0..2000 {
            let mut s = client.open_stream().unwrap();
            s.write_all(&[i as u8]).unwrap();
            mine.push(s);
        }
        let theirs: Vec<_> = (0..2000).map(|_| server.accept_stream().unwrap()).collect();
        assert_eq!(client.num_streams(), 2000);
        assert_eq!(server.num_streams(), 2000);
        // 2 threads per tunnel and session, whatever the number of streams (other tests
        // running in parallel may add their own; allow for them).
        assert!(thread_count() <= before + 8, "threads grew from {before} to {}", thread_count());
        drop(mine);
        drop(theirs);
    });
}

#[test]
fn sessions_over_connections_the_caller_made() {
    within(Duration::from_secs(30), || {
        let c = cfg(3);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let conns: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let mut accepted: Vec<_> = (0..3).map(|_| l.accept().unwrap().0).collect();
        // The server may hold them in any order: the HELLOs say which tunnel each is.
        accepted.reverse();
        let c2 = c.clone();
        let server = thread::spawn(move || mtmux::Session::server(accepted, &c2).unwrap());
        let client = mtmux::Session::client(conns, &c).unwrap();
        let server = server.join().unwrap();
        assert_eq!((client.num_tunnels(), server.num_tunnels()), (3, 3));
        let mut s = server.open_stream().unwrap();
        s.write_all(b"from the server").unwrap();
        s.close_write().unwrap();
        assert_eq!(read_all(&client.accept_stream().unwrap()), b"from the server");
        // Connections that are not one bundle are refused.
        let a = std::net::TcpStream::connect(addr).unwrap();
        let (a_srv, _) = l.accept().unwrap();
        let b = std::net::TcpStream::connect(addr).unwrap();
        let (b_srv, _) = l.accept().unwrap();
        let c3 = c.clone();
        let one = thread::spawn(move || mtmux::Session::client(vec![a], &Config { tunnels: 1, ..c3 }));
        let c4 = c.clone();
        let two = thread::spawn(move || mtmux::Session::client(vec![b], &Config { tunnels: 1, ..c4 }));
        assert!(matches!(mtmux::Session::server(vec![a_srv, b_srv], &c), Err(Error::Protocol(_))));
        assert!(matches!(one.join().unwrap(), Err(Error::Refused(_))));
        assert!(matches!(two.join().unwrap(), Err(Error::Refused(_))));
    });
}

/// Regression: closing the write side from another thread left a writer blocked on flow
/// control asleep until its write timeout (or forever).
#[test]
fn close_write_wakes_a_writer_blocked_on_flow_control() {
    within(Duration::from_secs(30), || {
        let c = Config { stream_window: 80 << 10, max_stream_window: 80 << 10, ..cfg(1) };
        let (client, server) = pair(&c);
        let s = Arc::new(client.open_stream().unwrap());
        (&*s).write_all(b"x").unwrap();
        let _peer = server.accept_stream().unwrap();
        let w = s.clone();
        // The peer never reads: this write blocks once the window is used.
        let writer = thread::spawn(move || (&*w).write_all(&vec![0u8; 1 << 20]).map_err(Error::from));
        let deadline = Instant::now() + Duration::from_secs(10);
        while client.tunnel_stats()[0].bytes_sent < 64 << 10 {
            assert!(Instant::now() < deadline, "the writer never started");
            thread::yield_now();
        }
        let t = Instant::now();
        s.close_write().unwrap();
        assert!(matches!(writer.join().unwrap(), Err(Error::WriteClosed)));
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
    });
}

/// Regression: after a read reported the peer's reset, a write could still succeed for a
/// moment (the reader learned of the reset before the writer).
#[test]
fn once_a_read_reports_a_reset_writes_do_too() {
    within(Duration::from_secs(30), || {
        let (client, server) = pair(&cfg(2));
        for _ in 0..20 {
            let s = client.open_stream().unwrap();
            (&s).write_all(b"x").unwrap();
            let peer = server.accept_stream().unwrap();
            peer.reset().unwrap();
            let e = Error::from((&s).read(&mut [0u8; 4]).unwrap_err());
            assert!(matches!(e, Error::StreamReset { remote: true, .. }), "{e:?}");
            let w = Error::from((&s).write(b"y").unwrap_err());
            assert!(matches!(w, Error::StreamReset { remote: true, .. }), "{w:?}");
        }
    });
}

/// Regression: timeouts too large for the clock panicked ("overflow when adding duration to
/// instant"); they now mean "no deadline", and configurations refuse them.
#[test]
fn huge_timeouts_do_not_panic() {
    within(Duration::from_secs(30), || {
        let bad = Config { handshake_timeout: Duration::MAX, ..cfg(1) };
        assert!(matches!(mtmux::dial("127.0.0.1:1", &bad), Err(Error::InvalidConfig(_))));
        assert!(matches!(mtmux::Listener::bind("127.0.0.1:0", &bad), Err(Error::InvalidConfig(_))));
        let huge = Config { accept_backlog: usize::MAX / 64, ..cfg(1) };
        assert!(matches!(mtmux::Listener::bind("127.0.0.1:0", &huge), Err(Error::InvalidConfig(_))));
        let (client, server) = pair(&cfg(1));
        let s = client.open_stream().unwrap();
        s.set_read_timeout(Some(Duration::MAX)).unwrap();
        s.set_write_timeout(Some(Duration::MAX)).unwrap();
        (&s).write_all(b"ping").unwrap();
        let peer = server.accept_stream_timeout(Duration::MAX).unwrap();
        (&peer).write_all(b"pong").unwrap();
        let mut b = [0u8; 4];
        (&s).read_exact(&mut b).unwrap();
        assert_eq!(&b, b"pong");
    });
}

/// Regression: after `shutdown(Read)`, arriving data was discarded without returning the
/// stream's credit, so a peer that kept writing stalled forever after one window.
#[test]
fn writes_into_a_read_shut_stream_keep_flowing() {
    within(Duration::from_secs(30), || {
        let c = Config { stream_window: 128 << 10, max_stream_window: 128 << 10, ..cfg(2) };
        let (client, server) = pair(&c);
        let mut s = client.open_stream().unwrap();
        s.write_all(b"x").unwrap();
        let peer = server.accept_stream().unwrap();
        peer.shutdown(Shutdown::Read).unwrap();
        assert_eq!((&peer).read(&mut [0u8; 8]).unwrap(), 0, "reads after shutdown(Read) return 0");
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        // Far more than the window: the peer discards it all and keeps granting credit.
        s.write_all(&vec![5u8; 4 << 20]).unwrap();
        // The other direction still works.
        (&peer).write_all(b"still writing").unwrap();
        peer.close_write().unwrap();
        // Closed both ways now: further data makes the peer say it stopped reading, which
        // ends our writing only (EPIPE-like); what it sent is still delivered.
        let deadline = Instant::now() + Duration::from_secs(10);
        let e = loop {
            match s.write_all(&[6u8; 64 << 10]) {
                Ok(()) => assert!(Instant::now() < deadline, "writes never failed"),
                Err(e) => break e,
            }
        };
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
        assert!(matches!(Error::from(e), Error::StreamReset { code: ResetCode::StreamClosed, remote: true }));
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"still writing");
    });
}

/// Every frame a sender keeps for replay is released by the peer's acknowledgements: once
/// traffic stops, nothing stays unacknowledged on either side (a frame that the peer does not
/// count, kept by mistake, would shift every later release and fill the replay buffer until
/// long transfers stall).
#[test]
fn every_frame_is_acknowledged_once_traffic_stops() {
    within(Duration::from_secs(60), || {
        let (client, server) = pair(&cfg(4));
        let rx = thread::spawn(move || {
            let mut n = 0;
            for _ in 0..8 {
                let mut s = server.accept_stream().unwrap();
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    match s.read(&mut buf).unwrap() {
                        0 => break,
                        k => n += k,
                    }
                }
                s.write_all(b"done").unwrap();
            }
            (server, n)
        });
        for i in 0..8u64 {
            let mut s = client.open_stream().unwrap();
            s.write_all(&pattern(i, 8 << 20)).unwrap();
            s.close_write().unwrap();
            let mut done = Vec::new();
            s.read_to_end(&mut done).unwrap();
            assert_eq!(done, b"done");
        }
        let (server, n) = rx.join().unwrap();
        assert_eq!(n, 64 << 20);
        let deadline = Instant::now() + Duration::from_secs(5);
        for s in [&client, &server] {
            loop {
                let st = s.stats();
                if st.unacked_frames == 0 && st.unacked_bytes == 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "still unacknowledged: {st:?}");
                thread::sleep(Duration::from_millis(10));
            }
            assert!(s.stats().acks_sent > 0);
        }
    });
}

/// Regression: a reader that closed (or dropped) its stream with data unread left a peer
/// blocked on flow control waiting forever for credit (found by the wrong-key bench). Now
/// the close resets the stream, as TCP's close with unread data does, and the writer fails
/// at once with StreamClosed (BrokenPipe).
#[test]
fn dropping_a_stream_with_unread_data_fails_a_blocked_writer_at_once() {
    within(Duration::from_secs(30), || {
        let (client, server) = pair(&cfg(2));
        let mut w = client.open_stream().unwrap();
        let writer = thread::spawn(move || {
            let buf = vec![7u8; 64 << 10];
            loop {
                if let Err(e) = w.write_all(&buf) {
                    return e;
                }
            }
        });
        let r = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
        // Read nothing: the writer fills the stream window (1 MiB of charge: 15 frames of
        // 64 KiB) and blocks; no more data comes that could draw a RESET.
        let full = 15 * (64 << 10) as u64;
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.tunnel_stats().iter().map(|t| t.bytes_received).sum::<u64>() < full {
            assert!(Instant::now() < deadline, "the window never filled");
            thread::sleep(Duration::from_millis(5));
        }
        let dropped = Instant::now();
        drop(r);
        let e = writer.join().unwrap();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        assert!(matches!(Error::from(e), Error::StreamReset { code: ResetCode::StreamClosed, remote: true }));
        assert!(dropped.elapsed() < Duration::from_secs(2), "the writer waited {:?}", dropped.elapsed());
        // The session is fine.
        let mut s = client.open_stream().unwrap();
        s.write_all(b"ok").unwrap();
        s.close_write().unwrap();
        assert_eq!(read_all(&server.accept_stream().unwrap()), b"ok");
    });
}
