//! The pre-shared key on the command line's terms (`--key-file`, `MTMUX_KEY`) and the safe
//! default: a server other hosts can reach starts only with a key, TLS or `--insecure`.

mod common;

use common::*;

const KEY: &str = "c2VjcmV0IGtleSBmb3IgdGhlIG10bXV4IHRlc3Rz";

/// Exactly one line on stderr, naming the problem.
fn assert_one_line(err: &[String], mentions: &[&str]) {
    assert_eq!(err.len(), 1, "expected one line, got {err:#?}");
    assert!(err[0].starts_with("mtmux: error: "), "{}", err[0]);
    for m in mentions {
        assert!(err[0].contains(m), "{:?} should mention {m:?}", err[0]);
    }
}

#[test]
fn server_and_client_with_the_same_key_file_carry_bytes() {
    let dir = TempDir::new("keys");
    let key = dir.key_file("mtmux.key", KEY);
    let echo = echo_service();
    let (mut srv, srv_addr) = server(echo, &["--tunnels", "2", "--key-file", &key]);
    srv.wait_for("clients must prove the pre-shared key (--key-file ");
    let (mut cli, local) = client(srv_addr, &["--tunnels", "2", "--key-file", &key]);
    cli.wait_for("proving the pre-shared key (--key-file ");
    let payload = data(300_000, 7);
    assert!(exchange(local, &payload).unwrap() == payload, "the echo differs");
    srv.wait_for("session 1 from 127.0.0.1");
    // A key file nobody else can read draws no warning.
    assert!(!srv.output().iter().any(|l| l.contains("other users")), "{:#?}", srv.output());
}

#[test]
fn the_key_may_come_from_mtmux_key_and_the_file_wins_over_it() {
    let dir = TempDir::new("keys");
    let key = dir.key_file("mtmux.key", KEY);
    let echo = echo_service();
    let echo_s = echo.to_string();
    let mut srv = Proc::start_env(
        &["server", "--listen", "127.0.0.1:0", "--target", &echo_s, "--tunnels", "2"],
        &[("MTMUX_KEY", KEY)],
    );
    let srv_addr = srv.listening_addr().to_string();
    srv.wait_for("clients must prove the pre-shared key (MTMUX_KEY)");
    let mut cli = Proc::start_env(
        &["client", "--server", &srv_addr, "--local", "127.0.0.1:0", "--tunnels", "2", "--key-file", &key],
        &[("MTMUX_KEY", "another key the file overrides")],
    );
    let local = cli.listening_addr();
    cli.wait_for("MTMUX_KEY is set too and is ignored: --key-file wins");
    let payload = data(100_000, 8);
    assert!(exchange(local, &payload).unwrap() == payload, "the echo differs");
}

#[test]
fn a_client_with_another_key_exits_with_one_line_saying_authentication_failed() {
    let dir = TempDir::new("keys");
    let good = dir.key_file("good.key", KEY);
    let bad = dir.key_file("bad.key", "a different key, also long enough");
    let (mut srv, srv_addr) = server(closed_port(), &["--tunnels", "2", "--key-file", &good]);
    let addr = srv_addr.to_string();
    let (status, _, err) =
        run(&["client", "--server", &addr, "--local", "127.0.0.1:0", "--tunnels", "2", "--key-file", &bad]);
    assert_eq!(status.code(), Some(1));
    assert_one_line(&err, &[&addr, "authentication failed"]);
    // The server logs the refusal with the client's address.
    srv.wait_for("refused 127.0.0.1:");
    // No key at all against a server that wants one: refused as plainly.
    let (status, _, err) = run(&["client", "--server", &addr, "--local", "127.0.0.1:0", "--tunnels", "2"]);
    assert_eq!(status.code(), Some(1));
    assert_one_line(&err, &[&addr, "key"]);
}

#[test]
fn a_server_on_a_reachable_address_needs_a_key_tls_or_insecure() {
    let (status, _, err) = run(&["server", "--listen", "0.0.0.0:0", "--target", "127.0.0.1:5201"]);
    assert_eq!(status.code(), Some(2));
    assert_one_line(
        &err,
        &[
            "refusing to listen on 0.0.0.0:0 without --key-file/MTMUX_KEY or --tls-client-ca",
            "127.0.0.1:5201",
            "--insecure",
        ],
    );
    // --insecure starts it, with a warning; so does a key.
    let mut p = Proc::start(&["server", "--listen", "0.0.0.0:0", "--target", "127.0.0.1:5201", "--insecure"]);
    p.listening_addr();
    p.wait_for("no key or client certificates (--insecure): anyone who can reach");
    drop(p);
    let dir = TempDir::new("keys");
    let key = dir.key_file("mtmux.key", KEY);
    let mut p =
        Proc::start(&["server", "--listen", "0.0.0.0:0", "--target", "127.0.0.1:5201", "--key-file", &key]);
    p.listening_addr();
    p.wait_for("clients must prove the pre-shared key");
}

#[test]
fn bad_keys_exit_2_with_one_line_naming_their_source() {
    let dir = TempDir::new("keys");
    let short = dir.key_file("short.key", "too short");
    let missing = dir.0.join("missing.key");
    let missing = missing.to_str().unwrap();
    for (args, env, mentions) in [
        (
            vec!["server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9", "--key-file", &short],
            vec![],
            vec!["--key-file", "short.key", "16 to 1024 bytes"],
        ),
        (
            vec!["client", "--server", "127.0.0.1:9", "--local", "127.0.0.1:0", "--key-file", missing],
            vec![],
            vec!["--key-file", "missing.key"],
        ),
        (
            vec!["client", "--server", "127.0.0.1:9", "--local", "127.0.0.1:0"],
            vec![("MTMUX_KEY", "short")],
            vec!["MTMUX_KEY", "got 5"],
        ),
    ] {
        let (status, _, err) = Proc::start_env(&args, &env).finish();
        assert_eq!(status.code(), Some(2), "{args:?}: {err:#?}");
        assert_one_line(&err, &mentions);
        // The key itself is never printed.
        assert!(!err[0].contains("too short"), "{}", err[0]);
    }
}

#[test]
fn a_key_file_other_users_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("keys");
    let key = dir.key_file("open.key", KEY);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (mut srv, _) = server(closed_port(), &["--key-file", &key]);
    let line = srv.wait_for("can be read by other users");
    assert!(line.contains("WARN") && line.contains("chmod 600"), "{line}");
}
