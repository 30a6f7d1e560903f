//! `--config FILE`: several forwards through one session, unknown forward names refused on
//! both sides, reverse forwards, and flags overriding the file.

mod common;

use common::*;
use std::net::SocketAddr;
use std::thread;

/// A service that answers every connection with `tag` then echoes.
fn tagged_echo(tag: &'static [u8]) -> SocketAddr {
    service(move |mut c| {
        use std::io::Write;
        let _ = c.write_all(tag);
        echo(c);
    })
}

/// The address in `listening on ADDR; ... forward "NAME"` of a client's log.
fn local_of(p: &mut Proc, name: &str) -> SocketAddr {
    let line = p.wait_for(&format!("stream of forward \"{name}\""));
    let rest = &line[line.find("listening on ").unwrap() + "listening on ".len()..];
    rest[..rest.find(';').unwrap()].parse().unwrap()
}

fn write(dir: &TempDir, name: &str, text: &str) -> String {
    let p = dir.0.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn three_forwards_share_one_session_and_unknown_names_are_refused_on_both_sides() {
    let dir = TempDir::new("cfg3");
    let (a, b, c) = (tagged_echo(b"A:"), tagged_echo(b"B:"), tagged_echo(b"C:"));
    let srv_cfg = write(
        &dir,
        "server.toml",
        &format!(
            "listen = \"127.0.0.1:0\"\ntunnels = 3\n[forward.alpha]\ntarget = \"{a}\"\n\
             [forward.beta]\ntarget = \"{b}\"\n[forward.gamma]\ntarget = \"{c}\"\n"
        ),
    );
    let mut srv = Proc::start(&["server", "--config", &srv_cfg]);
    let srv_addr = srv.listening_addr();
    let cli_cfg = write(
        &dir,
        "client.toml",
        &format!(
            "server = \"{srv_addr}\"\ntunnels = 3\n[forward.alpha]\nlocal = \"127.0.0.1:0\"\n\
             [forward.beta]\nlocal = \"127.0.0.1:0\"\n[forward.gamma]\nlocal = \"127.0.0.1:0\"\n\
             [forward.nope]\nlocal = \"127.0.0.1:0\"\n"
        ),
    );
    let mut cli = Proc::start(&["client", "--config", &cli_cfg]);
    let locals: Vec<(SocketAddr, &[u8])> = vec![
        (local_of(&mut cli, "alpha"), b"A:"),
        (local_of(&mut cli, "beta"), b"B:"),
        (local_of(&mut cli, "gamma"), b"C:"),
    ];
    let nope = local_of(&mut cli, "nope");
    thread::scope(|s| {
        for (i, (addr, tag)) in locals.iter().enumerate() {
            for j in 0..2 {
                s.spawn(move || {
                    let payload = data(300_000 + 1000 * j, (i * 10 + j) as u32);
                    let got = exchange(*addr, &payload).unwrap();
                    let mut want = tag.to_vec();
                    want.extend_from_slice(&payload);
                    assert!(got == want, "forward {i} connection {j}: {} bytes, wrong", got.len());
                });
            }
        }
    });
    // One session carried all six.
    cli.wait_for("session 1 up");
    assert!(!cli.output().iter().any(|l| l.contains("session 2 up")));
    srv.wait_for("(forward \"gamma\")");

    // The unknown name: the local application sees its connection end without data.
    let got = exchange(nope, b"hello");
    assert!(got.as_ref().map_or(true, |g| g.is_empty()), "{got:?}");
    srv.wait_for("the client asked for forward \"nope\", which this server does not have");
    cli.wait_for("the peer has no forward of this name");
}

#[test]
fn reverse_forward_carries_a_server_side_connection_to_the_clients_target() {
    let dir = TempDir::new("rev");
    let echo = tagged_echo(b"R:");
    let srv_cfg = write(
        &dir,
        "server.toml",
        "listen = \"127.0.0.1:0\"\ntunnels = 2\n[reverse.back]\nlisten = \"127.0.0.1:0\"\n\
         [reverse.stranger]\nlisten = \"127.0.0.1:0\"\n",
    );
    let mut srv = Proc::start(&["server", "--config", &srv_cfg]);
    let srv_addr = srv.listening_addr();
    let reverse_of = |p: &mut Proc, name: &str| -> SocketAddr {
        let line = p.wait_for(&format!("reverse forward \"{name}\": listening on "));
        let rest = &line[line.find("listening on ").unwrap() + "listening on ".len()..];
        rest[..rest.find(';').unwrap()].parse().unwrap()
    };
    let back = reverse_of(&mut srv, "back");
    let stranger = reverse_of(&mut srv, "stranger");
    let cli_cfg = write(
        &dir,
        "client.toml",
        &format!("server = \"{srv_addr}\"\ntunnels = 2\n[reverse.back]\ntarget = \"{echo}\"\n"),
    );
    let mut cli = Proc::start(&["client", "--config", &cli_cfg]);
    cli.wait_for("reverse forward \"back\": streams the server opens go to");
    srv.wait_for("session 1 from");
    let payload = data(500_000, 9);
    let got = exchange(back, &payload).unwrap();
    assert!(got.len() == payload.len() + 2 && got.starts_with(b"R:") && got[2..] == payload[..]);
    cli.wait_for("(reverse \"back\")");

    // A reverse name the client does not have: refused there, and the server hears why.
    let got = exchange(stranger, b"x");
    assert!(got.as_ref().map_or(true, |g| g.is_empty()), "{got:?}");
    cli.wait_for("the server sent reverse forward \"stranger\", which this client does not have");
    srv.wait_for("the peer has no forward of this name");
}

#[test]
fn flags_override_the_file_and_a_flags_only_client_reaches_a_config_server() {
    let dir = TempDir::new("over");
    let (a, b) = (tagged_echo(b"A:"), tagged_echo(b"B:"));
    // The file's default forward goes to A, but --target says B.
    let srv_cfg = write(
        &dir,
        "server.toml",
        &format!("listen = \"127.0.0.1:0\"\ntunnels = 4\n[forward.default]\ntarget = \"{a}\"\n"),
    );
    let b_s = b.to_string();
    let mut srv = Proc::start(&["server", "--config", &srv_cfg, "--target", &b_s, "--tunnels", "2"]);
    let srv_addr = srv.listening_addr();
    srv.wait_for("up to 2 tunnels per client");
    // A client with flags only sends the name "default".
    let (_cli, local) = client(srv_addr, &["--tunnels", "2"]);
    let got = exchange(local, b"ping").unwrap();
    assert_eq!(got, b"B:ping");
}

#[test]
fn config_mistakes_are_usage_errors_naming_the_file() {
    let dir = TempDir::new("bad");
    for (text, says) in [
        ("listen = \"127.0.0.1:0\"\ntunels = 3\n", "unknown key 'tunels'"),
        ("listen = \"127.0.0.1:0\"\n[forward.x]\nlocal = \"127.0.0.1:1\"\n", "unknown field `local`"),
        ("listen = \"127.0.0.1:0\"\ntunnels = 0\n", "--tunnels"),
        ("listen = \"127.0.0.1:0\"\n", "nothing to forward"),
        // The library's check, in the file's terms.
        (
            "listen = \"127.0.0.1:0\"\ntarget = \"127.0.0.1:9\"\nkeepalive-interval = \"40s\"\n",
            "--keepalive-timeout (30s) must be longer than --keepalive-interval (keepalive-interval in ",
        ),
        ("listen = [", "server.toml"),
    ] {
        let path = write(&dir, "server.toml", text);
        let (status, _, err) = run(&["server", "--config", &path]);
        assert_eq!(status.code(), Some(2), "{text}: {err:?}");
        assert!(err.iter().any(|l| l.contains(says)), "{text}: {err:?}");
    }
    let (status, _, err) = run(&["server", "--config", "/nonexistent/mtmux.toml"]);
    assert_eq!(status.code(), Some(2));
    assert!(err[0].contains("/nonexistent/mtmux.toml: cannot read it"), "{err:?}");
}
