//! TLS 1.3 on every tunnel (feature `tls`): bulk transfer, certificate problems refused with
//! readable messages, fingerprint pinning, mutual TLS, plain and TLS ends meeting, bounded
//! handshakes, and a byte altered on one tunnel (a relay that flips it) routed around with
//! the transfer intact. Real loopback sockets; certificates made with rcgen.
#[path = "common/certs.rs"]
mod certs;
mod common;

use certs::{Ca, Leaf, Validity};
use common::relay::{Dir, FaultRelay};
use common::rig::{failover_cfg, serial, tunnel, wait_rejoined, wait_until, EventLog, Transfer};
use common::{cfg, within, Relay};
use mtmux::tls::TlsConfig;
use mtmux::{CloseReason, Config, Error, Event, Listener, Session};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Names of the test server certificates.
const NAMES: &[&str] = &["localhost", "127.0.0.1"];

fn server_tls(leaf: &Leaf) -> TlsConfig {
    TlsConfig::server(leaf.cert.as_bytes(), leaf.key.as_bytes()).expect("server TLS config")
}

fn with_tls(base: &Config, tls: TlsConfig) -> Config {
    Config { tls: Some(tls), ..base.clone() }
}

/// Dial a listener with `server` from a client with `client`: the client's result, and the
/// listener (to read its refusals) with the server session if one was accepted.
fn try_pair(server: &Config, client: &Config) -> (Result<Session, Error>, Listener, Option<Session>) {
    let l = Listener::bind("127.0.0.1:0", server).expect("bind");
    let (addr, c) = (l.local_addr(), client.clone());
    let dialed = within(Duration::from_secs(20), move || mtmux::dial(addr, &c));
    let accepted = dialed.as_ref().ok().map(|_| l.accept_timeout(Duration::from_secs(10)).expect("accept"));
    (dialed, l, accepted)
}

fn pair(server: &Config, client: &Config) -> (Session, Session, Listener) {
    let (c, l, s) = try_pair(server, client);
    (c.expect("dial"), s.expect("accepted"), l)
}

/// The auth error a dial failed with.
fn auth_error(r: Result<Session, Error>) -> String {
    match r {
        Err(Error::Auth(m)) => m,
        Err(e) => panic!("expected Error::Auth, got {e:?}"),
        Ok(_) => panic!("expected Error::Auth, the dial succeeded"),
    }
}

/// A short verified exchange over a session pair.
fn hello(client: &Session, server: &Session) {
    let c = client.open_stream().unwrap();
    (&c).write_all(b"hello over TLS").unwrap();
    c.close_write().unwrap();
    let s = server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = String::new();
    (&s).read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello over TLS");
}

/// The next refusal the listener noted, within 10 s.
fn refusal(l: &Listener) -> mtmux::Refusal {
    l.next_refusal(Some(Duration::from_secs(10))).expect("the listener notes the refusal")
}

#[test]
fn one_stream_over_four_tls_tunnels_carries_64_mib_each_way() {
    within(Duration::from_secs(240), || {
        let ca = Ca::new("mtmux test CA");
        let base = cfg(4);
        let server = with_tls(&base, server_tls(&ca.issue(NAMES, Validity::Current)));
        let client = with_tls(&base, TlsConfig::client(ca.pem.as_bytes()).unwrap());
        let (c, s, _l) = pair(&server, &client);
        let (moved, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let t = Transfer::start(&c, &s, 64 * MIB, 64 * MIB, &moved, &stop);
        assert_eq!(t.finish(), 128 * MIB, "every byte arrived intact, both ways");
        for (end, session) in [("client", &c), ("server", &s)] {
            for t in session.tunnel_stats() {
                assert!(
                    t.bytes_sent > MIB && t.bytes_received > MIB,
                    "{end}: tunnel {} idle: {t:?}",
                    t.index
                );
                assert_eq!(t.generation, 0, "{end}: no tunnel was lost: {t:?}");
            }
        }
        // A graceful close over TLS: the server sees the peer's close, not a broken tunnel.
        c.close().unwrap();
        wait_until(Duration::from_secs(10), "the server session closes", || s.close_reason().is_some());
        assert_eq!(s.close_reason(), Some(CloseReason::Peer));
    });
}

#[test]
fn the_tunnels_carry_tls_not_plain_mtmux() {
    within(Duration::from_secs(60), || {
        let ca = Ca::new("mtmux test CA");
        let base = Config { single_port: true, ..cfg(2) };
        let server = with_tls(&base, server_tls(&ca.issue(NAMES, Validity::Current)));
        let client = with_tls(&base, TlsConfig::client(ca.pem.as_bytes()).unwrap());
        let l = Listener::bind("127.0.0.1:0", &server).unwrap();
        let relay = Relay::new(l.local_addr());
        let addr = relay.addr;
        let c = thread::spawn(move || mtmux::dial(addr, &client).expect("dial through the relay"));
        let s = l.accept_timeout(Duration::from_secs(10)).unwrap();
        let c = c.join().unwrap();
        hello(&c, &s);
        assert_eq!(relay.connections(), 2);
        for i in 0..2 {
            let first = relay.client_bytes(i);
            assert_eq!(first[0], 0x16, "connection {i} starts with a TLS handshake record");
            assert!(!first.windows(4).any(|w| w == b"MTMX"), "connection {i} shows the mtmux HELLO");
        }
    });
}

#[test]
fn a_server_certificate_from_another_ca_is_refused_with_a_clear_message() {
    let ca = Ca::new("the server's CA");
    let other = Ca::new("another CA");
    let base = cfg(2);
    let server = with_tls(&base, server_tls(&ca.issue(NAMES, Validity::Current)));
    let client = with_tls(&base, TlsConfig::client(other.pem.as_bytes()).unwrap());
    let (r, l, _) = try_pair(&server, &client);
    let msg = auth_error(r);
    assert_eq!(msg, "TLS: the server's certificate is not signed by a trusted CA (check --tls-ca)");
    let seen = refusal(&l);
    assert!(seen.peer.ip().is_loopback(), "{seen}");
    assert!(seen.reason.contains("TLS") && seen.reason.contains("does not trust"), "{seen}");
}

#[test]
fn an_expired_server_certificate_is_refused_with_its_date() {
    let ca = Ca::new("mtmux test CA");
    let base = cfg(2);
    let server = with_tls(&base, server_tls(&ca.issue(NAMES, Validity::Expired)));
    let client = with_tls(&base, TlsConfig::client(ca.pem.as_bytes()).unwrap());
    let msg = auth_error(try_pair(&server, &client).0);
    assert_eq!(msg, "TLS: the server's certificate has expired (not after 2024-01-01 00:00:00 UTC)");
}

#[test]
fn the_server_name_defaults_to_the_dialed_ip_and_can_be_set() {
    let ca = Ca::new("mtmux test CA");
    let base = cfg(2);
    let server = with_tls(&base, server_tls(&ca.issue(&["mtmux.test"], Validity::Current)));
    let trust = TlsConfig::client(ca.pem.as_bytes()).unwrap();
    let msg = auth_error(try_pair(&server, &with_tls(&base, trust.clone())).0);
    assert!(msg.contains("not valid for the name 127.0.0.1 (it is for mtmux.test"), "{msg}");
    assert!(msg.contains("--tls-server-name"), "{msg}");
    let named = trust.with_server_name("mtmux.test").unwrap();
    assert_eq!(named.server_name().as_deref(), Some("mtmux.test"));
    let (c, s, _l) = pair(&server, &with_tls(&base, named));
    hello(&c, &s);
}

#[test]
fn a_pinned_fingerprint_is_trusted_and_another_is_refused() {
    // A self-made certificate no CA of the client vouches for: the pin alone trusts it.
    let ca = Ca::new("a CA the client does not know");
    let base = cfg(2);
    let tls = server_tls(&ca.issue(NAMES, Validity::Current));
    let fp = tls.certificate_fingerprint().unwrap();
    assert_eq!(fp.len(), 95, "32 colon-separated bytes: {fp}");
    let server = with_tls(&base, tls);
    let pinned = with_tls(&base, TlsConfig::client_pinned(&fp.to_uppercase()).unwrap());
    let (c, s, _l) = pair(&server, &pinned);
    hello(&c, &s);

    let wrong = format!("{}00", &fp.replace(':', "")[..62]);
    let msg = auth_error(try_pair(&server, &with_tls(&base, TlsConfig::client_pinned(&wrong).unwrap())).0);
    assert!(msg.starts_with("TLS: fingerprint mismatch: the server's certificate is "), "{msg}");
    assert!(msg.contains(&fp), "names the certificate's fingerprint: {msg}");
}

#[test]
fn mutual_tls_refuses_clients_without_a_certificate_or_with_a_foreign_one() {
    let ca = Ca::new("mtmux test CA");
    let other = Ca::new("another CA");
    let base = cfg(2);
    let server_tls =
        server_tls(&ca.issue(NAMES, Validity::Current)).with_client_ca(ca.pem.as_bytes()).unwrap();
    let server = with_tls(&base, server_tls);
    let trust = TlsConfig::client(ca.pem.as_bytes()).unwrap();

    let (r, l, _) = try_pair(&server, &with_tls(&base, trust.clone()));
    let msg = auth_error(r);
    assert!(msg.contains("the server requires a client certificate (give one with --tls-cert"), "{msg}");
    let seen = refusal(&l);
    assert!(seen.reason.contains("presented no certificate"), "{seen}");

    let foreign = other.issue(&["client"], Validity::Current);
    let with_foreign =
        trust.clone().with_client_cert(foreign.cert.as_bytes(), foreign.key.as_bytes()).unwrap();
    let (r, l, _) = try_pair(&server, &with_tls(&base, with_foreign));
    let msg = auth_error(r);
    assert!(msg.contains("does not trust this side's certificate"), "{msg}");
    let seen = refusal(&l);
    assert!(
        seen.reason.contains("client's certificate is not signed by a trusted CA (check --tls-client-ca)"),
        "{seen}"
    );

    let mine = ca.issue(&["client"], Validity::Current);
    let with_mine = trust.with_client_cert(mine.cert.as_bytes(), mine.key.as_bytes()).unwrap();
    let (c, s, _l) = pair(&server, &with_tls(&base, with_mine));
    hello(&c, &s);
}

#[test]
fn plain_and_tls_ends_tell_each_other_clearly() {
    let ca = Ca::new("mtmux test CA");
    let base = cfg(2);
    let tls_server = with_tls(&base, server_tls(&ca.issue(NAMES, Validity::Current)));
    let tls_client = with_tls(&base, TlsConfig::client(ca.pem.as_bytes()).unwrap());

    let (r, l, _) = try_pair(&tls_server, &base);
    match r {
        Err(Error::Refused(m)) => assert!(m.contains("this server requires TLS"), "{m}"),
        other => panic!("a plain client of a TLS server: {other:?}"),
    }
    let seen = refusal(&l);
    assert!(seen.reason.contains("the client does not use TLS"), "{seen}");

    match try_pair(&base, &tls_client).0 {
        Err(Error::Refused(m)) => {
            assert!(m.contains("this server does not use TLS") && m.contains("without TLS"), "{m}")
        }
        other => panic!("a TLS client of a plain server: {other:?}"),
    }
}

#[test]
fn a_tls_handshake_is_bounded_by_the_handshake_timeout() {
    let ca = Ca::new("mtmux test CA");
    let base = Config { handshake_timeout: Duration::from_secs(1), ..cfg(1) };
    let server = with_tls(&base, server_tls(&ca.issue(NAMES, Validity::Current)));
    let l = Listener::bind("127.0.0.1:0", &server).unwrap();
    let addr = l.local_addr();
    within(Duration::from_secs(20), move || {
        // Silent, then a ClientHello trickled a byte every 100 ms: both are cut off at the
        // deadline, however the bytes come.
        for trickle in [false, true] {
            let start = Instant::now();
            let mut c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let hello = [0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
            let mut sent = 0;
            let closed_after = loop {
                if trickle {
                    let _ = c.write_all(&[hello[sent % hello.len()]]);
                    sent += 1;
                }
                match c.read(&mut [0u8; 64]) {
                    Ok(0) => break start.elapsed(),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => break start.elapsed(),
                    Ok(_) => {}
                }
                thread::sleep(Duration::from_millis(if trickle { 50 } else { 0 }));
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "still open after 5 s (trickle: {trickle})"
                );
            };
            assert!(closed_after >= Duration::from_millis(900), "closed early: {closed_after:?}");
            assert!(
                closed_after < Duration::from_millis(2500),
                "trickle {trickle}: closed after {closed_after:?}"
            );
            let seen = refusal(&l);
            assert!(seen.reason.contains("handshake timeout"), "{seen}");
        }
    });
}

#[test]
fn a_byte_altered_on_one_tls_tunnel_kills_only_that_tunnel() {
    let _s = serial();
    within(Duration::from_secs(240), || {
        let ca = Ca::new("mtmux test CA");
        let base = failover_cfg();
        let server = with_tls(&base, server_tls(&ca.issue(NAMES, Validity::Current)));
        let client = with_tls(&base, TlsConfig::client(ca.pem.as_bytes()).unwrap());
        let listener = Listener::bind("127.0.0.1:0", &server).unwrap();
        let relay = FaultRelay::new(listener.local_addrs());
        let addr = relay.addr();
        let c = thread::spawn(move || mtmux::dial(addr, &client).expect("dial"));
        let s = listener.accept_timeout(Duration::from_secs(10)).unwrap();
        let c = c.join().unwrap();
        let (client_log, server_log) = (EventLog::start(&c), EventLog::start(&s));
        let (moved, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let t = Transfer::start(&c, &s, 128 * MIB, 128 * MIB, &moved, &stop);
        // Tunnel 1 gets a byte altered towards the server, tunnel 2 towards the client.
        for (i, dir, at) in [(1, Dir::ToServer, 48 * MIB), (2, Dir::ToClient, 120 * MIB)] {
            wait_until(Duration::from_secs(60), "bytes moved", || moved.load(SeqCst) >= at);
            relay.flip(i, dir);
            wait_until(Duration::from_secs(10), "a byte altered", || relay.flipped(i, dir) == 1);
        }
        assert_eq!(t.finish(), 256 * MIB, "every byte arrived intact, both ways");
        // Each altered record failed its authentication at its receiver, which dropped that
        // tunnel (and only it); the client re-joined both.
        let lost = |log: &EventLog, i: usize| {
            log.wait_for(Duration::from_secs(10), "the tunnel's loss", |e| {
                matches!(e, Event::TunnelLost { index, reason, .. } if *index == i && reason.contains("TLS"))
            })
        };
        lost(&server_log, 1);
        lost(&client_log, 2);
        for i in [1, 2] {
            let limit = base.keepalive_timeout + Duration::from_secs(10);
            for session in [&c, &s] {
                wait_rejoined(session, i, 0, limit);
            }
            assert_eq!(relay.accepted(i), 2, "tunnel {i}: its connection and its re-join");
        }
        for i in [0, 3] {
            assert_eq!(tunnel(&c, i).generation, 0, "tunnel {i} was not touched");
            assert_eq!(relay.accepted(i), 1);
        }
        let bad = [&client_log, &server_log]
            .iter()
            .flat_map(|l| l.events())
            .find(|(_, e)| matches!(e, Event::TunnelLost { index, .. } if *index == 0 || *index == 3));
        assert!(bad.is_none(), "an untouched tunnel was lost: {bad:?}");
    });
}

#[test]
fn config_debug_shows_fingerprints_not_keys_and_equality_follows_the_inputs() {
    let ca = Ca::new("mtmux test CA");
    let leaf = ca.issue(NAMES, Validity::Current);
    let a = with_tls(&Config::default(), server_tls(&leaf));
    let shown = format!("{a:?}");
    assert!(shown.contains("certificate_sha256"), "{shown}");
    for line in leaf.key.lines().filter(|l| !l.starts_with("-----")) {
        assert!(!shown.contains(line), "the key shows in Debug: {shown}");
    }
    assert_eq!(a, with_tls(&Config::default(), server_tls(&leaf)));
    assert_ne!(a, with_tls(&Config::default(), server_tls(&ca.issue(NAMES, Validity::Current))));
    assert_ne!(a, Config::default());
}

#[test]
fn bad_tls_settings_are_refused_with_the_file_and_the_problem() {
    let ca = Ca::new("mtmux test CA");
    let leaf = ca.issue(NAMES, Validity::Current);
    let other = ca.issue(NAMES, Validity::Current);
    let dir = certs::dir("bad-settings");
    let cert = certs::write(&dir, "server.pem", &leaf.cert);
    let key = certs::write(&dir, "server.key", &leaf.key);
    let wrong_key = certs::write(&dir, "other.key", &other.key);
    let invalid = |r: Result<TlsConfig, Error>| match r {
        Err(Error::InvalidConfig(m)) => m,
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    TlsConfig::server_from_files(&cert, &key).unwrap();
    let m = invalid(TlsConfig::server_from_files(dir.join("missing.pem"), &key));
    assert!(m.contains("cannot read the certificate file") && m.contains("missing.pem"), "{m}");
    let m = invalid(TlsConfig::server_from_files(&cert, &cert));
    assert!(m.contains("server.pem holds no private key"), "{m}");
    let m = invalid(TlsConfig::server_from_files(&key, &key));
    assert!(m.contains("server.key holds no certificate"), "{m}");
    let m = invalid(TlsConfig::server_from_files(&cert, &wrong_key));
    assert!(m.contains("other.key") && m.contains("does not belong to the certificate"), "{m}");
    let m = invalid(TlsConfig::client_pinned("not a fingerprint"));
    assert!(m.contains("not a SHA-256 fingerprint"), "{m}");
    let m = invalid(TlsConfig::client(ca.pem.as_bytes()).unwrap().with_client_ca(ca.pem.as_bytes()));
    assert!(m.contains("applies to a server configuration"), "{m}");
    let m = invalid(TlsConfig::client(ca.pem.as_bytes()).unwrap().with_server_name("not a name!"));
    assert!(m.contains("not a DNS name or an IP address"), "{m}");

    // Each side needs its own kind of configuration.
    let server = with_tls(&cfg(1), server_tls(&leaf));
    let client = with_tls(&cfg(1), TlsConfig::client(ca.pem.as_bytes()).unwrap());
    let e = Listener::bind("127.0.0.1:0", &client).unwrap_err();
    assert!(matches!(e, Error::InvalidConfig(ref m) if m.contains("a listener needs a server's")), "{e}");
    let e = mtmux::dial("127.0.0.1:9", &server).unwrap_err();
    assert!(matches!(e, Error::InvalidConfig(ref m) if m.contains("dialing needs a client's")), "{e}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sessions_over_connections_the_caller_made_use_tls_too() {
    within(Duration::from_secs(60), || {
        let ca = Ca::new("mtmux test CA");
        let base = cfg(3);
        let server = with_tls(&base, server_tls(&ca.issue(NAMES, Validity::Current)));
        let client = with_tls(&base, TlsConfig::client(ca.pem.as_bytes()).unwrap());
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let dialer = thread::spawn(move || {
            let conns = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
            Session::client(conns, &client).expect("client session")
        });
        let conns = (0..3).map(|_| l.accept().unwrap().0).collect();
        let s = Session::server(conns, &server).expect("server session");
        let c = dialer.join().unwrap();
        hello(&c, &s);
    });
}
