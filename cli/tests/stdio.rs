//! `mtmux connect --stdio SERVER FORWARD` through the real binary: a round trip, the
//! half-close in both directions, exit codes.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::process::{Child, ChildStdout, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

fn connect(server: SocketAddr, forward: &str) -> Child {
    mtmux()
        .args(["connect", "--stdio", &server.to_string(), forward, "--tunnels", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mtmux connect")
}

/// Read `out` to its end on a thread; the result arrives on the channel.
fn read_all(mut out: ChildStdout) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut got = Vec::new();
        let _ = out.read_to_end(&mut got);
        let _ = tx.send(got);
    });
    rx
}

/// Wait for the child to exit (bounded); kill it and panic at the deadline.
fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mtmux connect did not exit within {WAIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut s);
    s
}

#[test]
fn stdin_goes_to_the_target_and_its_answer_to_stdout_then_exit_0() {
    let echo = echo_service();
    let (_srv, srv_addr) = server(echo, &["--tunnels", "2"]);
    let mut child = connect(srv_addr, "default");
    let out = read_all(child.stdout.take().unwrap());
    let payload = data(2_000_000, 5);
    let mut stdin = child.stdin.take().unwrap();
    let p = payload.clone();
    let writer = thread::spawn(move || {
        stdin.write_all(&p).unwrap();
        // Dropping stdin is the end of input: passed on as a half-close.
    });
    let got = out.recv_timeout(WAIT).expect("stdout ends");
    writer.join().unwrap();
    assert!(got == payload, "{} bytes back of {}", got.len(), payload.len());
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(0), "{}", stderr_of(&mut child));
}

#[test]
fn the_end_of_stdin_reaches_the_target_and_the_targets_end_closes_stdout_first() {
    // The target reads until the end of its input, then answers with the byte count; a
    // second target greets and closes before reading anything.
    let counting = TcpListener::bind("127.0.0.1:0").unwrap();
    let counting_addr = counting.local_addr().unwrap();
    thread::spawn(move || {
        let (mut c, _) = counting.accept().unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        c.write_all(format!("got {}", got.len()).as_bytes()).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
    });
    let (_srv, srv_addr) = server(counting_addr, &["--tunnels", "2"]);
    let mut child = connect(srv_addr, "default");
    let out = read_all(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[7u8; 12345]).unwrap();
    drop(stdin);
    assert_eq!(out.recv_timeout(WAIT).unwrap(), b"got 12345");
    assert_eq!(wait_exit(&mut child).code(), Some(0));

    // The other way round: stdout ends while stdin is still open; the command waits for
    // stdin's end, then exits 0.
    let greeter = TcpListener::bind("127.0.0.1:0").unwrap();
    let greeter_addr = greeter.local_addr().unwrap();
    let (read_tx, read_rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut c, _) = greeter.accept().unwrap();
        c.write_all(b"hello").unwrap();
        c.shutdown(Shutdown::Write).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = Vec::new();
        let _ = read_tx.send(c.read_to_end(&mut got).map(|_| got));
    });
    let (_srv2, srv2_addr) = server(greeter_addr, &["--tunnels", "2"]);
    let mut child = connect(srv2_addr, "default");
    let out = read_all(child.stdout.take().unwrap());
    assert_eq!(out.recv_timeout(WAIT).unwrap(), b"hello");
    assert!(child.try_wait().unwrap().is_none(), "exited while stdin was still open");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"late words").unwrap();
    drop(stdin);
    assert_eq!(read_rx.recv_timeout(WAIT).unwrap().unwrap(), b"late words");
    assert_eq!(wait_exit(&mut child).code(), Some(0));
}

#[test]
fn an_unknown_forward_or_a_dead_server_exits_1_with_a_clear_line() {
    let echo = echo_service();
    let (_srv, srv_addr) = server(echo, &["--tunnels", "2"]);
    let mut child = connect(srv_addr, "ssh");
    let out = read_all(child.stdout.take().unwrap());
    let _stdin = child.stdin.take();
    assert_eq!(out.recv_timeout(WAIT).unwrap(), b"");
    assert_eq!(wait_exit(&mut child).code(), Some(1));
    let err = stderr_of(&mut child);
    assert!(err.contains("forward \"ssh\"") && err.contains("no forward of this name"), "{err}");

    let mut child = connect(closed_port(), "default");
    assert_eq!(wait_exit(&mut child).code(), Some(1));
    let err = stderr_of(&mut child);
    assert!(err.contains("cannot reach the server at"), "{err}");

    let (status, _, err) = run(&["connect", "--stdio", "127.0.0.1:7000", "a b"]);
    assert_eq!(status.code(), Some(2), "{err:?}");
    assert!(err[0].contains("may only contain"), "{err:?}");
}
