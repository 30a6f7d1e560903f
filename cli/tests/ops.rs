//! Operations through the real binary: SIGTERM drains, JSON stats, the metrics endpoint,
//! `bench --json`.

mod common;

use common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn signal(p: &Proc, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(p.pid() as i32, sig) }, 0);
}

/// Wait (bounded) until connecting to `addr` is refused.
fn wait_refused(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    loop {
        match TcpStream::connect_timeout(&addr, WAIT) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            _ if Instant::now() > deadline => panic!("{addr} still accepts connections"),
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Send the first half of `payload`, the rest after `between()`, then half-close; return the
/// echo.
fn echo_in_two_halves(conn: TcpStream, payload: &[u8], between: impl FnOnce()) -> Vec<u8> {
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let half = payload.len() / 2;
    let reader = conn.try_clone().unwrap();
    let reading = std::thread::spawn(move || {
        let mut got = Vec::new();
        (&reader).read_to_end(&mut got).map(|_| got)
    });
    (&conn).write_all(&payload[..half]).unwrap();
    between();
    (&conn).write_all(&payload[half..]).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    reading.join().unwrap().unwrap()
}

#[test]
fn sigterm_on_the_server_refuses_new_bundles_lets_a_stream_finish_and_exits_0() {
    let echo = echo_service();
    let (mut srv, srv_addr) = server(echo, &["--tunnels", "2", "--drain-timeout", "20s"]);
    let (_cli, local) = client(srv_addr, &["--tunnels", "2"]);
    let payload = data(1_000_000, 3);
    let conn = TcpStream::connect_timeout(&local, WAIT).unwrap();
    let mut signalled = None;
    let got = echo_in_two_halves(conn, &payload, || {
        srv.wait_for("stream 1: opened");
        signal(&srv, libc::SIGTERM);
        srv.wait_for("SIGTERM: draining");
        wait_refused(srv_addr);
        signalled = Some(Instant::now());
    });
    assert!(got == payload, "{} bytes echoed of {}", got.len(), payload.len());
    let (status, _, err) = srv.finish();
    assert_eq!(status.code(), Some(0), "{err:#?}");
    // It exits when the stream is done, long before the drain timeout.
    assert!(signalled.unwrap().elapsed() < Duration::from_secs(15));
    assert!(err.iter().any(|l| l.contains("drained; exiting")), "{err:#?}");
}

#[test]
fn sigterm_on_the_client_closes_local_listeners_and_the_drain_timeout_bounds_the_wait() {
    let echo = echo_service();
    let (_srv, srv_addr) = server(echo, &["--tunnels", "2"]);
    let (mut cli, local) = client(srv_addr, &["--tunnels", "2", "--drain-timeout", "1s"]);
    // A stream in progress that finishes during the drain.
    let payload = data(200_000, 4);
    let conn = TcpStream::connect_timeout(&local, WAIT).unwrap();
    let got = echo_in_two_halves(conn, &payload, || {
        cli.wait_for("stream 1: opened");
        signal(&cli, libc::SIGINT);
        cli.wait_for("SIGINT: draining");
        wait_refused(local);
    });
    assert!(got == payload);
    let (status, _, err) = cli.finish();
    assert_eq!(status.code(), Some(0), "{err:#?}");

    // A stream that never ends: the drain gives up after --drain-timeout.
    let (mut cli, local) = client(srv_addr, &["--tunnels", "2", "--drain-timeout", "1s"]);
    let idle = TcpStream::connect_timeout(&local, WAIT).unwrap();
    (&idle).write_all(b"x").unwrap();
    cli.wait_for("stream 1: opened");
    let t = Instant::now();
    signal(&cli, libc::SIGTERM);
    let (status, _, err) = cli.finish();
    assert_eq!(status.code(), Some(0), "{err:#?}");
    assert!(err.iter().any(|l| l.contains("drain timeout (1s)")), "{err:#?}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn a_second_signal_exits_at_once() {
    let echo = echo_service();
    let (mut srv, srv_addr) = server(echo, &["--tunnels", "2", "--drain-timeout", "60s"]);
    let (_cli, local) = client(srv_addr, &["--tunnels", "2"]);
    let idle = TcpStream::connect_timeout(&local, WAIT).unwrap();
    (&idle).write_all(b"x").unwrap();
    srv.wait_for("stream 1: opened");
    signal(&srv, libc::SIGTERM);
    srv.wait_for("draining: 1 stream(s) still open");
    signal(&srv, libc::SIGTERM);
    let (status, _, _) = srv.finish();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
}
