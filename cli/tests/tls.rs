//! `mtmux server --tls-cert/--tls-key` and `mtmux client --tls-ca/--tls-fingerprint`: TLS on
//! every tunnel through the real binaries, a wrong CA refused with a clear message, and flag
//! combinations that cannot work refused as usage errors.

#[path = "../../tests/common/certs.rs"]
mod certs;
mod common;

use certs::{Ca, Validity};
use common::*;
use std::path::{Path, PathBuf};

/// PEM files of a CA, a server certificate it signed for 127.0.0.1, and another CA.
struct Files {
    dir: PathBuf,
    ca: String,
    other_ca: String,
    cert: String,
    key: String,
}

fn files(tag: &str) -> Files {
    let dir = certs::dir(&format!("cli-{tag}"));
    let ca = Ca::new("mtmux test CA");
    let leaf = ca.issue(&["localhost", "127.0.0.1"], Validity::Current);
    let s = |p: PathBuf| p.to_str().unwrap().to_string();
    Files {
        ca: s(certs::write(&dir, "ca.pem", &ca.pem)),
        other_ca: s(certs::write(&dir, "other-ca.pem", &Ca::new("another CA").pem)),
        cert: s(certs::write(&dir, "server.pem", &leaf.cert)),
        key: s(certs::write(&dir, "server.key", &leaf.key)),
        dir,
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn tls_server_and_client_carry_bytes_intact() {
    let f = files("e2e");
    let echo = echo_service();
    let (mut srv, srv_addr) = server(echo, &["--tunnels", "3", "--tls-cert", &f.cert, "--tls-key", &f.key]);
    let line = srv.wait_for("certificate SHA-256");
    let fingerprint = line.rsplit(' ').next().unwrap().to_string();
    assert_eq!(fingerprint.len(), 95, "{line}");

    let (mut cli, local) = client(srv_addr, &["--tunnels", "3", "--tls-ca", &f.ca]);
    cli.wait_for("TLS on every tunnel: expecting 127.0.0.1");
    let payload = data(3_000_000, 1);
    let got = exchange(local, &payload).unwrap();
    assert!(got == payload, "echo returned {} bytes of {}, or different ones", got.len(), payload.len());
    cli.wait_for("session 1 up: 3 tunnels");

    // A client that pins the certificate (and knows no CA) gets in too.
    let (_pinned, local) = client(srv_addr, &["--tunnels", "3", "--tls-fingerprint", &fingerprint]);
    let payload = data(500_000, 2);
    assert!(exchange(local, &payload).unwrap() == payload);
    srv.wait_for("session 2 from");
}

#[test]
fn a_client_with_the_wrong_ca_fails_with_a_clear_message() {
    let f = files("wrong-ca");
    let (mut srv, srv_addr) =
        server(closed_port(), &["--tunnels", "2", "--tls-cert", &f.cert, "--tls-key", &f.key]);
    let addr = srv_addr.to_string();
    let args =
        ["client", "--server", &addr, "--local", "127.0.0.1:0", "--tunnels", "2", "--tls-ca", &f.other_ca];
    let (status, _, err) = run(&args);
    assert_eq!(status.code(), Some(1), "{err:#?}");
    let last = err.last().expect("an error line");
    assert!(
        last.contains("mtmux: error: cannot start a session with the server")
            && last.contains("the server's certificate is not signed by a trusted CA (check --tls-ca)"),
        "{err:#?}"
    );
    // The server logs the refusal with the client's address.
    let line = srv.wait_for("refused 127.0.0.1:");
    assert!(line.contains("TLS") && line.contains("does not trust"), "{line}");
}

#[test]
fn a_plain_client_of_a_tls_server_is_told_to_use_tls() {
    let f = files("plain-client");
    let (_srv, srv_addr) =
        server(closed_port(), &["--tunnels", "2", "--tls-cert", &f.cert, "--tls-key", &f.key]);
    let addr = srv_addr.to_string();
    let (status, _, err) = run(&["client", "--server", &addr, "--local", "127.0.0.1:0", "--tunnels", "2"]);
    assert_eq!(status.code(), Some(1), "{err:#?}");
    assert!(err.last().unwrap().contains("this server requires TLS"), "{err:#?}");
}

#[test]
fn tls_flags_that_cannot_work_are_usage_errors() {
    let f = files("flags");
    let missing = Path::new(&f.dir).join("missing.pem");
    let missing = missing.to_str().unwrap();
    let client = ["client", "--server", "127.0.0.1:9", "--local", "127.0.0.1:0"];
    let server = ["server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-ca", &f.ca, "--tls-fingerprint", "00"], "cannot be used with"),
        (vec!["--tls-server-name", "example.com"], "--tls-ca"),
        (vec!["--tls-ca", &f.ca, "--tls-cert", &f.cert], "--tls-key"),
        (vec!["--tls-fingerprint", "zz"], "not a SHA-256 fingerprint"),
        (vec!["--tls-ca", missing], "missing.pem"),
        (vec!["--tls-ca", &f.key], "holds no certificate"),
    ];
    for (extra, says) in cases {
        let args = [&client[..], &extra].concat();
        let (status, _, err) = run(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {err:#?}");
        assert_eq!(err.len(), 1, "{args:?}: {err:#?}");
        assert!(err[0].starts_with("mtmux: error: ") && err[0].contains(says), "{args:?}: {err:#?}");
    }
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--tls-key", &f.key], "--tls-cert"),
        (vec!["--tls-client-ca", &f.ca], "--tls-cert"),
        (vec!["--tls-cert", missing, "--tls-key", &f.key], "missing.pem"),
        (vec!["--tls-cert", &f.cert, "--tls-key", &f.cert], "holds no private key"),
    ];
    for (extra, says) in cases {
        let args = [&server[..], &extra].concat();
        let (status, _, err) = run(&args);
        assert_eq!(status.code(), Some(2), "{args:?}: {err:#?}");
        assert!(err.last().is_some_and(|l| l.contains(says)), "{args:?}: {err:#?}");
    }
}
