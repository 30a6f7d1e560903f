//! Mistakes and failures get one line that says what is wrong and what to change (issue 11,
//! point 5), through the real binary.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;

/// The target is down: the server resets the stream with code TargetRefused, and the client
/// says so instead of "stream reset by the peer: cancelled".
#[test]
fn a_refused_target_is_reported_on_the_client() {
    let target = closed_port();
    let (mut srv, srv_addr) = server(target, &[]);
    let (mut cli, local) = client(srv_addr, &[]);
    let mut c = TcpStream::connect_timeout(&local, WAIT).expect("connect");
    c.set_read_timeout(Some(WAIT)).unwrap();
    c.write_all(b"hello").unwrap();
    let mut sink = Vec::new();
    // The connection ends (with a reset) rather than hanging.
    let _ = c.read_to_end(&mut sink);
    let line = cli.wait_for("could not connect it to its target");
    assert!(line.contains("the target refused the connection") && line.contains("WARN"), "{line}");
    let line = srv.wait_for("cannot connect to target");
    assert!(line.contains(&target.to_string()), "{line}");
}

/// `--server 7900` (no host) is a usage error: exit code 2 and a line saying what is expected.
#[test]
fn a_bare_port_for_server_is_a_usage_error() {
    let (status, _out, err) = run(&["client", "--server", "7900", "--local", "127.0.0.1:0"]);
    assert_eq!(status.code(), Some(2), "{err:?}");
    let all = err.join("\n");
    assert!(all.contains("--server 7900: expected HOST:PORT"), "{all}");
}

/// Pointed at an SSH server, the client names it instead of printing magic bytes.
#[test]
fn a_client_pointed_at_ssh_says_so() {
    let addr = service(|mut c| {
        let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n");
        let mut sink = [0; 1024];
        while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
    });
    let a = addr.to_string();
    let (status, _out, err) = run(&["client", "--server", &a, "--local", "127.0.0.1:0", "--tunnels", "1"]);
    assert!(!status.success());
    let all = err.join("\n");
    assert!(all.contains(&format!("{a} is not an mtmux server (it speaks SSH)")), "{all}");
    assert!(!all.contains("magic"), "{all}");
}

/// A client turned away at `--max-sessions` gets one line saying so (not a session that
/// flaps), the server logs the refusal with the client's address at info, and once the first
/// client is gone the next one gets in.
#[test]
fn a_client_beyond_max_sessions_is_told_so_and_the_server_logs_it() {
    let (mut srv, srv_addr) = server(echo_service(), &["--max-sessions", "1", "--tunnels", "2"]);
    let (mut first, local) = client(srv_addr, &["--tunnels", "2"]);
    assert_eq!(exchange(local, b"one").unwrap(), b"one");
    srv.wait_for("session 1 from ");
    let a = srv_addr.to_string();
    let (status, _out, err) = run(&["client", "--server", &a, "--local", "127.0.0.1:0", "--tunnels", "2"]);
    assert_eq!(status.code(), Some(1), "{err:?}");
    let want = format!(
        "mtmux: error: the server at {a} is at its session limit (--max-sessions 1): try later or raise it on the server"
    );
    assert_eq!(err.last().map(String::as_str), Some(want.as_str()), "{err:#?}");
    let line = srv.wait_for("at the session limit");
    assert!(line.contains(" INFO ") && line.contains("refused 127.0.0.1:"), "{line}");
    assert!(line.ends_with("at the session limit (1, --max-sessions)"), "{line}");
    // The first client stops: its session is closed at once, and the next client gets in.
    first.kill();
    srv.wait_for("session 1 from 127.0.0.1:");
    srv.wait_for("closed by the client");
    let (_third, local) = client(srv_addr, &["--tunnels", "2"]);
    assert_eq!(exchange(local, b"three").unwrap(), b"three");
    srv.wait_for("session 2 from ");
}

/// A client that simply stops (its process ends: every tunnel closes at once, no GOAWAY) is
/// an info line "closed by the client" on the server, not a warning, whether the session
/// would have waited for it to resume or not. Its kernel closes each tunnel with a FIN, or
/// with a RST where data it had not read yet was waiting; at least one FIN among them tells
/// a stop from a path that reset every tunnel (see `PeerStop`), so the client is killed once
/// its tunnels are quiet: after its connection ended and its stats line said so.
#[test]
fn a_client_that_stops_is_no_warning_on_the_server() {
    for resume in ["60s", "0"] {
        let (mut srv, srv_addr) = server(echo_service(), &["--resume-timeout", resume, "--tunnels", "3"]);
        let (mut cli, local) = client(srv_addr, &["--tunnels", "3", "--stats-interval", "200ms"]);
        assert_eq!(exchange(local, b"hi").unwrap(), b"hi");
        srv.wait_for("session 1 stream 1: closed");
        cli.wait_for("session 1 stats: 0 streams");
        cli.kill();
        let line = srv.wait_for("closed by the client");
        assert!(line.contains(" INFO ") && line.contains("session 1 from 127.0.0.1:"), "{line}");
        let out = srv.output();
        let warnings: Vec<_> = out.iter().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
        assert!(warnings.is_empty(), "--resume-timeout {resume}: {warnings:#?}\n{out:#?}");
    }
}
