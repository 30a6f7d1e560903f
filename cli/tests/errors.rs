//! Misuse and unreachable addresses: one line on stderr and a non-zero exit code, never a
//! panic; help for every subcommand.

mod common;

use common::*;
use std::net::TcpListener;

/// Exactly one line on stderr, naming the problem, and no panic.
fn assert_one_line(err: &[String], mentions: &str) {
    assert_eq!(err.len(), 1, "expected one line, got {err:#?}");
    assert!(err[0].starts_with("mtmux: error: "), "{}", err[0]);
    assert!(err[0].contains(mentions), "{:?} should mention {mentions:?}", err[0]);
    assert!(!err[0].contains("panicked"), "{}", err[0]);
}

#[test]
fn help_is_available_for_every_subcommand() {
    for sub in ["server", "client", "bench"] {
        let (status, out, _) = run(&[sub, "--help"]);
        assert!(status.success(), "{sub} --help: {status}");
        let usage = format!("Usage: mtmux {sub}");
        assert!(out.iter().any(|l| l.contains(&usage)), "{sub} --help: {out:#?}");
    }
    let (status, out, _) = run(&["--help"]);
    assert!(status.success());
    assert!(out.iter().any(|l| l.contains("bench")));
}

#[test]
fn server_and_client_help_list_the_failover_flags_and_their_defaults() {
    for sub in ["server", "client"] {
        let (status, out, _) = run(&[sub, "--help"]);
        assert!(status.success(), "{sub} --help: {status}");
        let text = out.join("\n");
        for flag in ["--resume-timeout", "--reorder-timeout", "--stale-timeout"] {
            assert!(text.contains(flag), "{sub} --help lacks {flag}:\n{text}");
        }
        assert!(text.contains("[default: 60s]"), "{sub} --help: resume default:\n{text}");
        assert!(text.contains("derived from the round trip"), "{sub} --help: stale default:\n{text}");
    }
}

#[test]
fn unknown_flags_exit_2_with_one_line() {
    for sub in ["server", "client", "bench"] {
        let (status, _, err) = run(&[sub, "--no-such-flag"]);
        assert_eq!(status.code(), Some(2), "{sub}");
        assert_one_line(&err, "--no-such-flag");
    }
}

#[test]
fn missing_and_bad_values_exit_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["server", "--listen", "127.0.0.1:0"], "--target"),
        (&["client", "--server", "127.0.0.1:1", "--local", "127.0.0.1:0", "--tunnels", "0"], "0"),
        (&["bench", "--bytes", "12X"], "12X"),
        (&["bench", "--duration", "soon"], "soon"),
        (&["bench", "--bytes", "1M", "--duration", "1s"], "--duration"),
        (&["bench", "--direction", "sideways"], "sideways"),
        (
            &["client", "--server", "127.0.0.1:1", "--local", "127.0.0.1:0", "--stale-timeout", "5ms"],
            "--stale-timeout",
        ),
        (
            &["server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--stale-timeout", "5ms"],
            "at least 20ms",
        ),
        (
            &["server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--reorder-timeout", "0"],
            "--reorder-timeout",
        ),
        (
            &["client", "--server", "127.0.0.1:1", "--local", "127.0.0.1:0", "--resume-timeout", "later"],
            "later",
        ),
        // Passes the parser, fails the library's validation: the line names the flags.
        (
            &["bench", "--keepalive-interval", "5s", "--keepalive-timeout", "1s"],
            "--keepalive-timeout (1s) must be longer than --keepalive-interval (5s)",
        ),
        (
            &["server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--resume-timeout", "60d"],
            "--resume-timeout must be at most",
        ),
        (
            &["client", "--server", "127.0.0.1:1", "--local", "127.0.0.1:0", "--keepalive-interval", "40s"],
            "--keepalive-timeout (30s) must be longer than --keepalive-interval (40s)",
        ),
    ];
    for (args, mentions) in cases {
        let (status, _, err) = run(args);
        assert_eq!(status.code(), Some(2), "{args:?}: {err:#?}");
        assert_one_line(&err, mentions);
    }
}

#[test]
fn unreachable_server_exits_1_with_one_line() {
    let nobody = closed_port().to_string();
    let (status, _, err) = run(&["client", "--server", &nobody, "--local", "127.0.0.1:0", "--tunnels", "2"]);
    assert_eq!(status.code(), Some(1));
    assert_one_line(&err, &nobody);

    let (status, _, err) = run(&["bench", "--client", &nobody, "--tunnels", "2"]);
    assert_eq!(status.code(), Some(1));
    assert_one_line(&err, &nobody);
}

#[test]
fn address_in_use_or_malformed_exits_1_with_one_line() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let (status, _, err) = run(&["server", "--listen", &taken_addr, "--target", "127.0.0.1:9"]);
    assert_eq!(status.code(), Some(1));
    assert_one_line(&err, &taken_addr);

    let (status, _, err) =
        run(&["client", "--server", "127.0.0.1:9", "--local", &taken_addr, "--keep-trying"]);
    assert_eq!(status.code(), Some(1));
    assert_one_line(&err, &taken_addr);

    let (status, _, err) = run(&["server", "--listen", "127.0.0.1:0", "--target", "no-port-here"]);
    assert_eq!(status.code(), Some(1));
    assert_one_line(&err, "no-port-here");
}
