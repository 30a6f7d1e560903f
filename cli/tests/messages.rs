//! Mistakes and failures get one line that says what is wrong and what to change (issue 11,
//! point 5), through the real binary.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;

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
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            thread::spawn(move || {
                let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n");
                let mut sink = [0; 1024];
                while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    let a = addr.to_string();
    let (status, _out, err) = run(&["client", "--server", &a, "--local", "127.0.0.1:0", "--tunnels", "1"]);
    assert!(!status.success());
    let all = err.join("\n");
    assert!(all.contains(&format!("{a} is not an mtmux server (it speaks SSH)")), "{all}");
    assert!(!all.contains("magic"), "{all}");
}
