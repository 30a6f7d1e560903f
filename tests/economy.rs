//! Frames per stream: what a short-lived stream costs on the wire (issue 10). A stream that
//! is opened, answered and closed by both sides costs 2 frames each way (DATA with OPEN,
//! then a bare FIN; the answer, then its FIN): no RESET answers a bare FIN, as TCP sends no
//! RST for a FIN after close.

mod common;

use common::{cfg, pair, within};
use mtmux::Session;
use std::io::{Read, Write};
use std::time::Duration;

fn frames_sent(s: &Session) -> u64 {
    s.tunnel_stats().iter().map(|t| t.frames_sent).sum()
}

#[test]
fn a_churned_stream_costs_two_frames_each_way() {
    within(Duration::from_secs(60), || {
        let mut c = cfg(2);
        // Keepalive pings and ACKs are counted too: make them few.
        c.keepalive_interval = Duration::from_secs(10);
        c.keepalive_timeout = Duration::from_secs(30);
        let (client, server) = pair(&c);
        const N: u64 = 300;
        let srv = std::thread::spawn(move || {
            for _ in 0..N {
                let mut s = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
                let mut b = [0u8; 64];
                s.read_exact(&mut b).unwrap();
                s.write_all(&b).unwrap();
                // The client's FIN: end of stream.
                assert_eq!(s.read(&mut b).unwrap(), 0);
            }
            server
        });
        let before = frames_sent(&client);
        for _ in 0..N {
            let mut s = client.open_stream().unwrap();
            let mut b = [1u8; 64];
            s.write_all(&b).unwrap();
            s.read_exact(&mut b).unwrap();
        }
        let server = srv.join().unwrap();
        // Let the last FINs and their acknowledgements arrive.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while (client.stats().unacked_frames > 0 || server.stats().unacked_frames > 0)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        let sent = frames_sent(&client) - before;
        // 2 per stream, plus ACKs (one per 10 ms at most while frames arrive) and pings.
        // A RESET per stream (the old behaviour) would make it 3 per stream.
        assert!(sent >= 2 * N, "client sent {sent} frames for {N} streams");
        assert!(sent < 2 * N + N / 3, "client sent {sent} frames for {N} streams (a RESET per stream?)");
    });
}

#[test]
fn close_after_unread_data_still_resets() {
    // The other side of the rule: data that arrives for a stream closed both ways is answered
    // with RESET(StreamClosed), so the writer learns its bytes were dropped.
    within(Duration::from_secs(30), || {
        let (client, server) = pair(&cfg(1));
        let mut a = client.open_stream().unwrap();
        a.write_all(b"hello").unwrap();
        let mut b = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
        let mut five = [0u8; 5];
        b.read_exact(&mut five).unwrap();
        b.close().unwrap();
        // The server closed both ways; what the client writes now is discarded there and
        // answered with a RESET: writes fail within a bounded time.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let err = loop {
            match a.write_all(&[0u8; 1024]) {
                Err(e) => break e,
                Ok(()) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Ok(()) => panic!("writes to a stream the peer closed never failed"),
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    });
}

#[test]
fn a_close_right_after_a_large_write_delivers_every_byte_then_the_end() {
    // With fewer writing threads than tunnels, large frames wait in the scheduler for the
    // tunnel writers, so the close usually finds the last one still queued and rides on it.
    within(Duration::from_secs(60), || {
        let (client, server) = pair(&cfg(4));
        let data = |round: u8| -> Vec<u8> {
            (0..(1 << 20) + 777).map(|i| (i as u8).wrapping_mul(31) ^ round).collect()
        };
        let reader = std::thread::spawn(move || {
            for round in 0..20u8 {
                let mut b = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
                let mut got = Vec::new();
                b.read_to_end(&mut got).unwrap();
                assert!(got == data(round), "round {round}: {} bytes", got.len());
            }
        });
        for round in 0..20u8 {
            let mut a = client.open_stream().unwrap();
            a.write_all(&data(round)).unwrap();
            a.close().unwrap();
        }
        reader.join().unwrap();
    });
}

/// Frames sent per tunnel since `before`.
fn per_tunnel(s: &Session, before: &[u64]) -> Vec<u64> {
    s.tunnel_stats().iter().zip(before).map(|(t, b)| t.frames_sent - b).collect()
}

#[test]
fn small_frames_keep_to_one_tunnel_and_bulk_spreads_over_all() {
    within(Duration::from_secs(60), || {
        let mut c = cfg(4);
        c.keepalive_interval = Duration::from_secs(10);
        c.keepalive_timeout = Duration::from_secs(30);
        let (client, server) = pair(&c);
        let mut a = client.open_stream().unwrap();
        a.write_all(b"x").unwrap();
        let mut b = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
        let mut one = [0u8; 1];
        b.read_exact(&mut one).unwrap();
        let echo = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while b.read_exact(&mut buf).is_ok() {
                if b.write_all(&buf).is_err() {
                    break;
                }
            }
            b
        });
        // Round trips of 64 bytes: each frame could go to any free tunnel; consecutive ones
        // share one, so that the peer's reader, already awake, often takes several at once.
        let before: Vec<u64> = client.tunnel_stats().iter().map(|t| t.frames_sent).collect();
        const N: u64 = 400;
        let mut buf = [7u8; 64];
        for _ in 0..N {
            a.write_all(&buf).unwrap();
            a.read_exact(&mut buf).unwrap();
        }
        let small = per_tunnel(&client, &before);
        // A tunnel busy at that moment (its writer sending a ping) moves them to the next one;
        // taking turns would put a quarter on each.
        let top = *small.iter().max().unwrap();
        assert!(top >= N / 2, "{N} small frames went {small:?} over the tunnels");

        // Bulk (64 KiB writes, frames over the direct-write size) goes over every tunnel.
        a.close_write().unwrap();
        drop(echo.join().unwrap());
        let sink = std::thread::spawn(move || {
            let mut r = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
            let n = std::io::copy(&mut r, &mut std::io::sink()).unwrap();
            (server, n)
        });
        let before: Vec<u64> = client.tunnel_stats().iter().map(|t| t.frames_sent).collect();
        let mut bulk = client.open_stream().unwrap();
        let chunk = vec![1u8; 64 * 1024];
        for _ in 0..256 {
            bulk.write_all(&chunk).unwrap();
        }
        drop(bulk);
        let (_server, n) = sink.join().unwrap();
        assert_eq!(n, 256 * 64 * 1024);
        let large = per_tunnel(&client, &before);
        assert!(large.iter().all(|&f| f > 0), "16 MiB went {large:?} over the tunnels");
    });
}
