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

#[test]
fn json_stats_are_one_object_per_line_and_idle_intervals_print_nothing() {
    let echo = echo_service();
    let (_srv, srv_addr) = server(echo, &["--tunnels", "2"]);
    let (mut cli, local) =
        client(srv_addr, &["--tunnels", "2", "--stats-interval", "100ms", "--stats-format", "json"]);
    assert!(exchange(local, &data(300_000, 6)).unwrap().len() == 300_000);
    // The line that saw the transfer.
    let line = cli.wait_for("\"bytes_sent\":");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(v["role"], "client");
    let s = &v["sessions"][0];
    assert_eq!(s["session"], 1);
    assert_eq!(s["tunnels"].as_array().unwrap().len(), 2);
    let sent: u64 = s["tunnels"].as_array().unwrap().iter().map(|t| t["bytes_sent"].as_u64().unwrap()).sum();
    assert!(sent > 0, "{line}");
    // Once the stream is closed, watch ten idle intervals: at most one more line (the
    // last acknowledgements of the transfer).
    cli.wait_for("\"streams\":0");
    let seen = |p: &mut Proc| p.output().into_iter().filter(|l| l.starts_with('{')).collect::<Vec<_>>();
    let before = seen(&mut cli).len();
    std::thread::sleep(Duration::from_millis(1000));
    let after = seen(&mut cli);
    assert!(after.len() <= before + 1, "{} lines while idle: {:#?}", after.len() - before, &after[before..]);
    for l in cli.output().iter().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    }
}

#[test]
fn the_metrics_endpoint_answers_with_session_and_tunnel_metrics() {
    let echo = echo_service();
    let (mut srv, srv_addr) = server(echo, &["--tunnels", "3", "--metrics", "127.0.0.1:0"]);
    let line = srv.wait_for("metrics on http://");
    let addr: SocketAddr =
        line[line.find("http://").unwrap() + 7..].trim_end_matches("/metrics").parse().unwrap();
    let (_cli, local) = client(srv_addr, &["--tunnels", "3"]);
    assert!(exchange(local, &data(100_000, 7)).unwrap().len() == 100_000);
    let mut conn = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.0 200 OK\r\n"), "{body}");
    assert!(body.contains("Content-Type: text/plain; version=0.0.4"), "{body}");
    for want in [
        "# TYPE mtmux_sessions gauge",
        "mtmux_sessions 1",
        "mtmux_session_streams{session=\"1\"}",
        "# HELP mtmux_tunnel_bytes_sent_total",
        "# TYPE mtmux_tunnel_bytes_received_total counter",
        "mtmux_tunnel_frames_sent_total{session=\"1\",tunnel=\"2\"}",
        "mtmux_tunnel_frames_resent_total{session=\"1\",tunnel=\"0\"} 0",
        "mtmux_tunnel_rejoins_total{session=\"1\",tunnel=\"1\"} 0",
        "mtmux_tunnel_up{session=\"1\",tunnel=\"0\",state=\"live\"} 1",
        "# TYPE mtmux_tunnel_rtt_seconds gauge",
    ] {
        assert!(body.contains(want), "missing {want:?} in:\n{body}");
    }
    // The received bytes add up to what the client sent (the echo payload and headers).
    let received: f64 = body
        .lines()
        .filter(|l| l.starts_with("mtmux_tunnel_bytes_received_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(received >= 100_000.0, "{received}");
}

#[test]
fn bench_json_prints_one_parseable_result() {
    let (status, out, err) = run(&["bench", "--tunnels", "2", "--bytes", "2M", "--json", "--rounds", "3"]);
    assert!(status.success(), "{err:#?}");
    assert_eq!(out.len(), 1, "{out:#?}");
    let v: serde_json::Value = serde_json::from_str(&out[0]).unwrap_or_else(|e| panic!("{e}: {}", out[0]));
    assert_eq!(v["tunnels"], 2);
    assert_eq!(v["mtmux"]["up_bytes"], 2_000_000);
    assert!(v["mtmux"]["up_mb_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["baseline"]["up_bytes"], 2_000_000);
    // The ratio is the median of 3 interleaved pairs of rounds, within their range.
    let ratio = v["ratio"].as_f64().unwrap();
    let (lo, hi) = (v["ratio_range"][0].as_f64().unwrap(), v["ratio_range"][1].as_f64().unwrap());
    assert!(0.0 < lo && lo <= ratio && ratio <= hi, "{v}");
    assert_eq!(v["rounds"], 3);
    assert_eq!(v["per_tunnel_bytes"]["up"].as_array().unwrap().len(), 2);
}

#[test]
fn make_install_puts_every_file_under_destdir_and_prefix() {
    if std::process::Command::new("make").arg("--version").output().is_err() {
        eprintln!("SKIPPED: no make on this machine");
        return;
    }
    let dir = TempDir::new("install");
    // The library files of a release build may not exist in a test build: stand-ins with the
    // right names (what is checked is where `make` puts them).
    let libdir = dir.0.join("lib-built");
    std::fs::create_dir_all(&libdir).unwrap();
    for f in ["libmtmux.so", "libmtmux.a"] {
        std::fs::write(libdir.join(f), b"stand-in").unwrap();
    }
    let dest = dir.0.join("dest");
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = std::process::Command::new("make")
        .args(["-C", repo, "install-files", "PREFIX=/opt/mtmux"])
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("MTMUX_BIN={}", env!("CARGO_BIN_EXE_mtmux")))
        .arg(format!("C_LIBDIR={}", libdir.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let root = dest.join("opt/mtmux");
    for f in [
        "bin/mtmux",
        "lib/libmtmux.so",
        "lib/libmtmux.a",
        "include/mtmux.h",
        "lib/systemd/system/mtmux-server.service",
        "share/doc/mtmux/README.md",
        "share/doc/mtmux/CLI-PROTOCOL.md",
    ] {
        assert!(root.join(f).is_file(), "{f} not installed under {}", root.display());
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.join("bin/mtmux")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    // The installed binary runs.
    let v = std::process::Command::new(root.join("bin/mtmux")).arg("--version").output().unwrap();
    assert!(v.status.success() && String::from_utf8_lossy(&v.stdout).starts_with("mtmux "));
}
