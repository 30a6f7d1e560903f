//! Handshake threads are reused across attempts and end with their listener. Its own test
//! binary: it counts the process's threads, which other tests running in parallel would
//! disturb.
mod common;

use common::{read_reply, within};
use mtmux::proto::handshake::{BundleId, Hello, HelloKind, Status, HELLO_FLAG_KEY, PROOF_LEN};
use mtmux::{Config, Key, Listener};
use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

fn hello(n: u32) -> Hello {
    Hello {
        kind: HelloKind::Join,
        bundle: BundleId([n as u8; 16]),
        index: 0,
        count: 1,
        flags: HELLO_FLAG_KEY,
        params: Config::default().params(),
        generation: 0,
        nonce: [3; 16],
    }
}

/// Threads of this process whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with(prefix))
        .count()
}

#[test]
fn wrong_key_attempts_reuse_handshake_threads_which_end_with_the_listener() {
    within(Duration::from_secs(60), || {
        let cfg = Config {
            tunnels: 1,
            key: Some(Key::new("the listener's pre-shared key!").unwrap()),
            ..Config::default()
        };
        let l = Listener::bind("127.0.0.1:0", &cfg).unwrap();
        let addr = l.local_addr();
        let before = threads_named("mtmux-hs");
        let mut most = 0;
        for n in 0..300u32 {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(&hello(n).encode()).unwrap();
            assert_eq!(read_reply(&c).unwrap().status, Status::Challenge);
            c.write_all(&[0; PROOF_LEN]).unwrap();
            assert_eq!(read_reply(&c).unwrap().status, Status::BadProof);
            most = most.max(threads_named("mtmux-hs") - before);
        }
        // One attempt at a time needs one thread; a thread that has answered but not yet gone
        // back to idle when the next attempt arrives (a loaded machine) makes another. Without
        // reuse it would be one per attempt.
        assert!(most <= 10, "{most} handshake threads for one attempt at a time");
        assert_eq!(l.refusal_counts().0, 300);
        l.close();
        let deadline = Instant::now() + Duration::from_secs(5);
        while threads_named("mtmux-hs") > before {
            assert!(Instant::now() < deadline, "handshake threads outlived the listener");
            thread::sleep(Duration::from_millis(10));
        }
    });
}
