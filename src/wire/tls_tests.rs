//! TLS wires without a session: partial non-blocking writes, and both ends writing hard while
//! they read (the lock discipline that keeps that from stopping).

use super::*;
use crate::tls::TlsConfig;
use rcgen::{CertificateParams, KeyPair};
use std::net::TcpListener;
use std::sync::Arc;

/// A connected pair of TLS wires (client, server) over loopback.
fn tls_pair() -> (Wire, Wire) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().self_signed(&key).unwrap();
    let server = TlsConfig::server(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let client = TlsConfig::client(cert.pem().as_bytes()).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let cfg = Config { tls: Some(client), ..Config::default() };
    let c = std::thread::spawn(move || Wire::client(TcpStream::connect(addr).unwrap(), &cfg, addr, deadline));
    let cfg = Config { tls: Some(server), ..Config::default() };
    let s = Wire::server(l.accept().unwrap().0, &cfg, deadline).map_err(|r| r.error).unwrap();
    (c.join().unwrap().unwrap(), s)
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) ^ seed).rotate_left(7) as u8).collect()
}

/// Read `len` bytes from `w` (its read timeout as a tick).
fn read_all(w: &Wire, len: usize) -> Vec<u8> {
    w.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut got = Vec::with_capacity(len);
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < len {
        assert!(Instant::now() < deadline, "read stalled at {} of {len}", got.len());
        got.reserve(64 << 10);
        match w.read_into_spare(&mut got, 64 << 10) {
            Ok(0) => panic!("end of stream at {} of {len}", got.len()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    got
}

/// A non-blocking send into a full socket keeps the ciphertext the socket did not take and
/// says so; the next blocking write sends it first; the peer decrypts everything in order.
#[test]
fn nonblocking_sends_keep_their_ciphertext_until_the_next_write() {
    let (w, peer) = tls_pair();
    sys::set_notsent_lowat(w.sock(), 16 * 1024).unwrap();
    let frame = pattern(256 << 10, 1);
    let mut sent = Vec::new();
    let mut left_behind = false;
    for _ in 0..4096 {
        match w.send_vectored(&[IoSlice::new(&frame)], true) {
            Ok(n) => {
                assert_eq!(n, frame.len(), "TLS takes a whole frame or none");
                sent.extend_from_slice(&frame);
                left_behind |= w.has_unsent();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(left_behind && w.has_unsent(), "a full socket leaves ciphertext behind");
    assert!(w.send_vectored(&[IoSlice::new(b"x")], true).is_err(), "nothing more until it is out");
    let total = sent.len() + 5;
    let reader = std::thread::spawn(move || read_all(&peer, total));
    w.write_all_vectored(&mut [IoSlice::new(b"tail!")]).unwrap();
    assert!(!w.has_unsent());
    sent.extend_from_slice(b"tail!");
    assert!(reader.join().unwrap() == sent, "the peer reads every byte, in order");
}

/// Both ends write 32 MiB at once while their readers read: a reader waiting in `recv` never
/// holds what a writer needs, so neither end stops.
#[test]
fn both_ends_writing_hard_never_stop_each_other() {
    let (a, b) = tls_pair();
    let (a, b) = (Arc::new(a), Arc::new(b));
    for w in [&a, &b] {
        sys::set_notsent_lowat(w.sock(), 128 * 1024).unwrap();
    }
    const LEN: usize = 32 << 20;
    let mut threads = Vec::new();
    for (w, seed) in [(a.clone(), 1u32), (b.clone(), 2)] {
        threads.push(std::thread::spawn(move || {
            let data = pattern(LEN, seed);
            for chunk in data.chunks(100_000) {
                w.write_all_vectored(&mut [IoSlice::new(chunk)]).unwrap();
            }
            Vec::new()
        }));
    }
    for (r, seed) in [(a.clone(), 2u32), (b.clone(), 1)] {
        threads.push(std::thread::spawn(move || {
            let got = read_all(&r, LEN);
            assert!(got == pattern(LEN, seed), "bytes differ");
            got
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    // A clean close reads as the end of the stream.
    a.close_write().unwrap();
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut v = Vec::with_capacity(16);
    assert_eq!(b.read_into_spare(&mut v, 16).unwrap(), 0);
}

/// A TCP end without close_notify is an error, not a clean end of stream.
#[test]
fn a_bare_tcp_end_is_unexpected() {
    let (a, b) = tls_pair();
    a.shutdown(Shutdown::Both).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut v = Vec::with_capacity(16);
    let e = b.read_into_spare(&mut v, 16).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    assert!(e.to_string().contains("without a close_notify"), "{e}");
}
