//! Connection order through the real binaries (issue 11, point 1): the target sees the
//! connections in the order the client's applications made them, and `iperf3 --bidir` (which
//! tells its control and data connections apart by arrival order) completes every run.

mod common;
#[path = "../../tests/common/relay.rs"]
#[allow(dead_code)] // the relay offers more faults than these tests use
mod relay;

use common::*;
use relay::FaultRelay;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A target that reports the 4-byte number each connection sends, in the order it accepted
/// the connections.
fn numbering_target() -> (SocketAddr, mpsc::Receiver<u32>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            c.set_read_timeout(Some(WAIT)).unwrap();
            let mut n = [0; 4];
            if c.read_exact(&mut n).is_err() || tx.send(u32::from_be_bytes(n)).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// Eight tunnels through a relay that delays one of them, so that first frames of streams
/// arrive out of order: connections made one after the other reach the target in that order.
#[test]
fn the_target_accepts_connections_in_the_clients_order() {
    let (target, numbers) = numbering_target();
    let (_srv, srv_addr) = server(target, &["--tunnels", "8"]);
    let targets: Vec<SocketAddr> =
        (0..8).map(|i| SocketAddr::new(srv_addr.ip(), srv_addr.port() + i)).collect();
    let relay = FaultRelay::new(&targets);
    relay.delay(2, Duration::from_millis(30));
    let (_cli, local) = client(relay.addr(), &["--tunnels", "8"]);
    let (batches, per_batch) = (10u32, 12u32);
    for b in 0..batches {
        let conns: Vec<TcpStream> = (0..per_batch)
            .map(|i| {
                let mut c = TcpStream::connect_timeout(&local, WAIT).expect("connect");
                c.write_all(&(b * per_batch + i).to_be_bytes()).expect("write");
                c
            })
            .collect();
        let got: Vec<u32> =
            (0..per_batch).map(|_| numbers.recv_timeout(WAIT).expect("target connection")).collect();
        let want: Vec<u32> = (b * per_batch..(b + 1) * per_batch).collect();
        assert_eq!(got, want, "batch {b}: the target accepted the connections out of order");
        drop(conns);
    }
}

/// `iperf3` is installed by `make test` (apt); without it the test says so and passes.
fn iperf3() -> Option<&'static str> {
    let ok = Command::new("iperf3").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: iperf3 unavailable (make test installs it with apt-get where it can)");
    }
    ok.then_some("iperf3")
}

/// A child process killed when dropped.
struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait for `addr` to accept a connection (bounded polling).
fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "nothing listening on {addr} within {WAIT:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The `"bytes"` value of the JSON object named `key` in iperf3's `-J` output.
fn json_bytes(json: &str, key: &str) -> Option<u64> {
    let at = json.find(&format!("\"{key}\":"))?;
    let rest = &json[at..];
    let b = rest.find("\"bytes\":")? + "\"bytes\":".len();
    let digits: String = rest[b..].trim_start().chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// One `iperf3 --bidir -t 1` client run through `local`, its JSON output; panics when it does
/// not finish within 20 s (a stall).
fn iperf3_run(iperf3: &str, local: SocketAddr, run: u32) -> String {
    let child = Command::new(iperf3)
        .args(["-c", "127.0.0.1", "-p", &local.port().to_string(), "--bidir", "-t", "1", "-J"])
        .args(["--connect-timeout", "5000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start iperf3 -c");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => String::from_utf8_lossy(&out.expect("iperf3 -c").stdout).into_owned(),
        Err(_) => {
            // SAFETY: kill(2) on the pid of our own child, which has not been reaped (its
            // waiter thread is still blocked in wait).
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("run {run}: iperf3 --bidir stalled (no result within 20 s)");
        }
    }
}

/// 20 runs of `iperf3 --bidir` through 8 tunnels: each completes within its bound and moves
/// bytes both ways (out of order, iperf3 takes the data connection for the control one and
/// stalls at 0 bytes), and neither end logs a warning.
#[test]
fn iperf3_bidir_completes_every_run() {
    let Some(iperf3) = iperf3() else { return };
    let port = closed_port();
    let mut iperf_server = Kill(
        Command::new(iperf3)
            .args(["-s", "-B", "127.0.0.1", "-p", &port.port().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start iperf3 -s"),
    );
    wait_listening(port);
    let (mut srv, srv_addr) = server(port, &["--tunnels", "8"]);
    let (mut cli, local) = client(srv_addr, &["--tunnels", "8"]);
    let (mut busy, mut refused) = (0, 0);
    // The iperf3 server closes its listening socket at the end of every test and opens a new
    // one (iperf3's cleanup_server): a connection that reaches it in between is refused, or
    // reset if it was waiting in the old socket's backlog; one that comes while it still
    // finishes the previous test is told "busy" and closed, which may reach the client as a
    // reset too. Through the tunnels the next run's control connection can get there before
    // the previous run's close did (a direct iperf3 client would be turned away the same way,
    // had it been as quick). The client's log shows it: the target refused the connection,
    // or reset it after the 37-byte cookie with at most the 1-byte answer.
    let turned_away = |l: &String| {
        l.contains("could not connect it to its target")
            || (l.contains("reset by the application at the other end")
                && (l.contains("reset, tx 37 B, rx 0 B in ") || l.contains("reset, tx 37 B, rx 1 B in ")))
    };
    // Bounded: the client logs a stream's end just after iperf3 may have exited.
    let target_turned_away = |cli: &mut Proc, before: usize| {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let n = cli.output().iter().filter(|l| turned_away(l)).count();
            if n > before || Instant::now() >= deadline {
                return n;
            }
            thread::sleep(Duration::from_millis(20));
        }
    };
    for run in 1..=20 {
        // The iperf3 server takes a moment to notice the previous run's connections closed
        // (the closes travel through the tunnel): "busy" is retried, within a bound, and so is
        // a run whose control connection the iperf3 server turned away between two tests.
        let deadline = Instant::now() + Duration::from_secs(10);
        let json = loop {
            let before = cli.output().iter().filter(|l| turned_away(l)).count();
            let json = iperf3_run(iperf3, local, run);
            if json.contains("the server is busy running a test") && Instant::now() < deadline {
                busy += 1;
                thread::sleep(Duration::from_millis(100));
                continue;
            }
            let up = json_bytes(&json, "sum_received").unwrap_or(0);
            if up == 0 && target_turned_away(&mut cli, before) > before && Instant::now() < deadline {
                refused += 1;
                thread::sleep(Duration::from_millis(100));
                continue;
            }
            break json;
        };
        let up = json_bytes(&json, "sum_received").unwrap_or(0);
        let down = json_bytes(&json, "sum_received_bidir_reverse").unwrap_or(0);
        let error = json.lines().find(|l| l.contains("\"error\"")).unwrap_or("no error field");
        if up == 0 || down == 0 {
            // Both ends' logs name the failure (a reset stream, a refused connect, ...).
            let (client_log, server_log) = (cli.output(), srv.output());
            panic!(
                "run {run}: bytes moved {up} up, {down} down ({}): {json}\nclient: {client_log:#?}\nserver: {server_log:#?}",
                error.trim()
            );
        }
    }
    eprintln!(
        "20 runs of iperf3 --bidir completed ({busy} retries while the iperf3 server was busy, \
         {refused} after it turned a connection away between two tests)"
    );
    let _ = iperf_server.0.try_wait();
    // iperf3 ends its connections with resets: normal closes, not warnings. (A connect the
    // iperf3 server refused is a warning on each end, and was retried above.)
    for (name, p, refusal) in [
        ("server", &mut srv, "cannot connect to target"),
        ("client", &mut cli, "could not connect it to its target"),
    ] {
        let warnings: Vec<String> =
            p.output().into_iter().filter(|l| l.contains(" WARN ") && !l.contains(refusal)).collect();
        assert!(warnings.is_empty(), "{name} warned during normal iperf3 runs: {warnings:#?}");
    }
}
