//! `mtmux client` + `mtmux server` forwarding real loopback TCP connections.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;

#[test]
fn echo_through_client_and_server_returns_every_byte_after_half_close() {
    let echo = echo_service();
    let (mut srv, srv_addr) = server(echo, &["--tunnels", "3"]);
    let (mut cli, local) = client(srv_addr, &["--tunnels", "3"]);
    // Larger than every window and buffer on the way, so both directions stream at once.
    let payload = data(3_000_000, 1);
    let got = exchange(local, &payload).unwrap();
    assert!(got == payload, "echo returned {} bytes of {}, or different ones", got.len(), payload.len());
    // One info line per session and stream event on both sides.
    cli.wait_for("session 1 up: 3 tunnels");
    cli.wait_for("stream 1: closed, tx 3.0 MB, rx 3.0 MB");
    srv.wait_for("session 1 from 127.0.0.1");
    srv.wait_for("stream 1: closed, tx 3.0 MB, rx 3.0 MB");
}

#[test]
fn many_connections_at_once_each_get_their_own_bytes_back() {
    let echo = echo_service();
    let (_srv, srv_addr) = server(echo, &["--tunnels", "4"]);
    let (_cli, local) = client(srv_addr, &["--tunnels", "4"]);
    thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                s.spawn(move || {
                    let payload = data(100_000 + i * 7919, i as u32 + 10);
                    let got = exchange(local, &payload).unwrap();
                    assert!(got == payload, "connection {i}: wrong echo");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
}

#[test]
fn target_that_half_closes_first_still_receives_the_clients_bytes() {
    // The target greets, half-closes, then reads until the client's end.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_addr = target.local_addr().unwrap();
    let (got_tx, got_rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut c, _) = target.accept().unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.write_all(b"hello from the target").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let _ = got_tx.send(c.read_to_end(&mut got).map(|_| got));
    });
    let (_srv, srv_addr) = server(target_addr, &["--tunnels", "2"]);
    let (_cli, local) = client(srv_addr, &["--tunnels", "2"]);

    let mut conn = TcpStream::connect_timeout(&local, WAIT).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut greeting = Vec::new();
    conn.read_to_end(&mut greeting).unwrap();
    assert_eq!(greeting, b"hello from the target");
    // Our direction is still open after the target's end.
    let payload = data(500_000, 3);
    conn.write_all(&payload).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let got = got_rx.recv_timeout(WAIT).expect("target finished").unwrap();
    assert!(got == payload, "target got {} bytes of {}", got.len(), payload.len());
}

#[test]
fn unreachable_target_resets_the_local_connection_and_is_logged() {
    let (mut srv, srv_addr) = server(closed_port(), &["--tunnels", "2"]);
    let (mut cli, local) = client(srv_addr, &["--tunnels", "2"]);
    // Nothing to send: the client opens the stream at once, and the server's failure to
    // reach the target comes back as a reset.
    let mut conn = TcpStream::connect_timeout(&local, WAIT).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 16];
    match conn.read(&mut buf) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
        Ok(n) => panic!("expected a reset, read {n} bytes"),
    }
    srv.wait_for("cannot connect to target");
    cli.wait_for("stream 1: failed");
}

#[test]
fn one_server_serves_several_clients_at_once() {
    let echo = echo_service();
    let (mut srv, srv_addr) = server(echo, &["--tunnels", "3"]);
    let (_c1, local1) = client(srv_addr, &["--tunnels", "3"]);
    let (_c2, local2) = client(srv_addr, &["--tunnels", "2"]);
    thread::scope(|s| {
        let a = s.spawn(|| exchange(local1, &data(400_000, 5)).unwrap());
        let b = s.spawn(|| exchange(local2, &data(300_000, 6)).unwrap());
        assert!(a.join().unwrap() == data(400_000, 5));
        assert!(b.join().unwrap() == data(300_000, 6));
    });
    srv.wait_for("session 1 from");
    srv.wait_for("session 2 from");
}

#[test]
fn single_port_mode_forwards_too() {
    let echo = echo_service();
    let (_srv, srv_addr) = server(echo, &["--tunnels", "4", "--single-port"]);
    let (_cli, local) = client(srv_addr, &["--tunnels", "4", "--single-port"]);
    let payload = data(200_000, 9);
    assert!(exchange(local, &payload).unwrap() == payload);
}

#[test]
fn sessions_beyond_the_limit_are_refused() {
    let echo = echo_service();
    let (mut srv, srv_addr) = server(echo, &["--tunnels", "2", "--max-sessions", "1"]);
    let (_c1, _) = client(srv_addr, &["--tunnels", "2"]);
    srv.wait_for("session 1 from");
    let (mut c2, _) = client(srv_addr, &["--tunnels", "2", "--keep-trying"]);
    srv.wait_for("at the session limit (1, --max-sessions)");
    // It keeps trying (with backoff), each time told why.
    c2.wait_for(
        "is at its session limit (--max-sessions 1): try later or raise it on the server; retrying in",
    );
}

/// A target that sends without end, and reports how its connection ended.
fn endless_target() -> (std::net::SocketAddr, mpsc::Receiver<std::io::Result<()>>) {
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = target.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (c, _) = target.accept().unwrap();
        c.set_write_timeout(Some(WAIT)).unwrap();
        let chunk = data(64 * 1024, 8);
        let ended = loop {
            if let Err(e) = (&c).write_all(&chunk) {
                break Err(e);
            }
        };
        let _ = tx.send(ended);
    });
    (addr, rx)
}

/// Read until the end; `Err` if the connection failed rather than ended.
fn read_until_end(conn: &TcpStream) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match (&*conn).read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) => return Err(e),
        }
    }
}

#[test]
fn server_dying_mid_transfer_resets_the_local_connection_without_resumption() {
    let (target, _) = endless_target();
    let (mut srv, srv_addr) = server(target, &["--tunnels", "2"]);
    // With resumption the connection would wait for the server (see tests/failover.rs).
    let (mut cli, local) = client(srv_addr, &["--tunnels", "2", "--resume-timeout", "0"]);
    let conn = TcpStream::connect_timeout(&local, WAIT).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut first = [0u8; 1000];
    (&conn).read_exact(&mut first).unwrap();
    srv.kill();
    // A clean end here would pass a truncated transfer off as complete.
    let end = read_until_end(&conn);
    assert!(end.is_err(), "expected an error, the connection ended cleanly after {end:?} more bytes");
    cli.wait_for("stream 1: failed");
}

#[test]
fn local_application_aborting_resets_the_target_connection() {
    // The target reads until the end and reports how the connection ended.
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_addr = target.local_addr().unwrap();
    let (tx, ended) = mpsc::channel();
    thread::spawn(move || {
        let (c, _) = target.accept().unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        let _ = tx.send(read_until_end(&c));
    });
    let (mut srv, srv_addr) = server(target_addr, &["--tunnels", "2"]);
    let (mut cli, local) = client(srv_addr, &["--tunnels", "2"]);
    let conn = TcpStream::connect_timeout(&local, WAIT).unwrap();
    (&conn).write_all(&data(100_000, 4)).unwrap();
    // The server must have the stream and its target connection first (a stream reset before
    // its first frames arrive is never accepted, and the target never hears of it).
    srv.wait_for("stream 1: opened");
    // Close with a reset instead of a FIN.
    socket2::SockRef::from(&conn).set_linger(Some(std::time::Duration::ZERO)).unwrap();
    drop(conn);
    let ended = ended.recv_timeout(WAIT).unwrap_or_else(|_| {
        panic!(
            "the target's connection did not end; client: {:#?}\nserver: {:#?}",
            cli.output(),
            srv.output()
        )
    });
    assert!(ended.is_err(), "the target saw a clean end after {ended:?} bytes");
}

#[test]
fn stats_lines_show_every_tunnel_and_stay_short_with_8() {
    let echo = echo_service();
    let (mut srv, srv_addr) = server(echo, &["--tunnels", "8", "--stats-interval", "100ms"]);
    let (mut cli, local) = client(srv_addr, &["--tunnels", "8", "--stats-interval", "100ms"]);
    assert!(exchange(local, &data(1_000_000, 2)).unwrap().len() == 1_000_000);
    for p in [&mut srv, &mut cli] {
        let line = p.wait_for("session 1 stats: ");
        assert!(line.contains("; per tunnel: t0 ") && line.contains(" t7 "), "{line}");
        // The stats part of the line (after the log prefix) stays readable.
        let stats = &line[line.find("session 1 stats: ").unwrap()..];
        assert!(stats.len() < 200, "{} characters: {stats}", stats.len());
    }
    // The client's first line counts from the session's start, so it saw the transfer.
    let line = cli.wait_for("session 1 stats: ");
    assert!(line.contains(" MB/") || line.contains(" kB/"), "{line}");
}
