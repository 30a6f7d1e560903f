//! `mtmux bench`: exit code, interval table and summary, in-process and against a remote
//! bench server. Short runs (a few MB).

mod common;

use common::*;

/// The bench succeeded and printed a summary whose mtmux line moved `bytes`.
fn check_summary(out: &[String], mtmux_line: &str, dirs: &[&str]) {
    let text = out.join("\n");
    assert!(text.contains("summary (timed at the receiver):"), "{text}");
    for dir in dirs {
        let line = format!("{mtmux_line}, {dir}:");
        assert!(out.iter().any(|l| l.contains(&line) && l.ends_with("MB/s")), "no {line:?} in\n{text}");
        let per_tunnel = format!("per tunnel, {dir}:");
        assert!(out.iter().any(|l| l.contains(&per_tunnel) && l.contains("t0 ")), "{text}");
        let baseline = format!("plain TCP, 1 connection, {dir}:");
        assert!(out.iter().any(|l| l.contains(&baseline) && l.ends_with("MB/s")), "{text}");
    }
    let ratio =
        out.iter().find(|l| l.starts_with("  mtmux / plain TCP: ")).unwrap_or_else(|| panic!("{text}"));
    assert!(ratio.contains("(median of 5 interleaved rounds of "), "{ratio}");
}

#[test]
fn in_process_bench_prints_tunnel_table_and_summary() {
    let (status, out, err) =
        run(&["bench", "--tunnels", "3", "--streams", "2", "--bytes", "8M", "--interval", "50ms"]);
    assert!(status.success(), "{status}: {err:#?}");
    assert!(out[0].starts_with("mtmux bench: 3 tunnels to 127.0.0.1:"), "{out:#?}");
    assert!(out[1].contains("session") && out[1].contains("t0") && out[1].contains("t2"), "{out:#?}");
    check_summary(&out, "mtmux, 3 tunnels, 2 streams", &["up"]);
    assert!(out.iter().any(|l| l.contains("mtmux, 3 tunnels, 2 streams, up:") && l.contains(" 8.0 MB in ")));
}

#[test]
fn bench_runs_down_and_both_directions() {
    for (dir, dirs) in [("down", &["down"][..]), ("both", &["up", "down"][..])] {
        let (status, out, err) =
            run(&["bench", "--tunnels", "2", "--bytes", "4M", "--direction", dir, "--single-port"]);
        assert!(status.success(), "{dir}: {status}: {err:#?}");
        check_summary(&out, "mtmux, 2 tunnels, 1 stream", dirs);
    }
}

#[test]
fn bench_for_a_duration_prints_a_row_per_interval() {
    let (status, out, err) =
        run(&["bench", "--tunnels", "2", "--duration", "400ms", "--interval", "100ms", "--no-baseline"]);
    assert!(status.success(), "{status}: {err:#?}");
    let rows = out.iter().filter(|l| l.trim_start().starts_with("0.") && l.contains(" up ")).count();
    assert!(rows >= 2, "expected interval rows: {out:#?}");
    assert!(!out.iter().any(|l| l.contains("plain TCP")), "{out:#?}");
}

#[test]
fn bench_client_against_a_bench_server() {
    let mut server = Proc::start(&["bench", "--server", "127.0.0.1:0", "--tunnels", "4"]);
    let addr = server.listening_addr().to_string();
    let (status, out, err) = run(&["bench", "--client", &addr, "--tunnels", "2", "--bytes", "4M"]);
    assert!(status.success(), "{status}: {err:#?}");
    check_summary(&out, "mtmux, 2 tunnels, 1 stream", &["up"]);
    server.wait_for("session 1 from 127.0.0.1");
    server.wait_for("stream 3: served up 4.0 MB");
}
