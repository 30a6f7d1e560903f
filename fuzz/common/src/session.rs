//! The whole-session harness: arbitrary bytes as the peer's side of a tunnel into a real
//! server `Session` over a real loopback TCP connection.
//!
//! Per input: a fresh connection to a listening socket made once per process; the server side
//! runs `Session::server` (handshake included) and an application that accepts streams,
//! reads them, answers and closes them; the client side writes the input (after a valid JOIN
//! HELLO, unless the input starts with the handshake magic itself), half-closes, and reads
//! whatever the server sends until the server closes. Checks: nothing panics; the handshake
//! fails with a clear error or the session ends by itself within a bound once the peer's bytes
//! end, with a reason that says why; closing returns within a bound; the process's thread
//! count comes back to where it was (no leaked thread).

use mtmux::proto::handshake::{BundleId, Hello, HelloKind, Params, MAGIC};
use mtmux::{CloseReason, Config, Error, Session};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// How long a session may take to notice that the peer's bytes ended.
const END_WITHIN: Duration = Duration::from_secs(5);

struct Rig {
    listener: TcpListener,
    addr: SocketAddr,
    cfg: Config,
    /// Threads of the process between inputs.
    threads: usize,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        Rig { listener, addr, cfg: config(), threads: thread_count() }
    })
}

/// Small limits, so that short inputs reach them: frames over 1 KiB, windows of a few frames,
/// eight streams, a backlog of four.
pub fn config() -> Config {
    Config {
        tunnels: 1,
        keepalive_interval: Duration::from_millis(500),
        keepalive_timeout: Duration::from_secs(2),
        reorder_timeout: Duration::from_millis(500),
        handshake_timeout: Duration::from_secs(2),
        max_frame_size: 1024,
        stream_window: 4096,
        max_stream_window: 4096,
        session_window: 16384,
        max_streams: 8,
        accept_backlog: 4,
        ..Config::default()
    }
}

/// The JOIN HELLO the client sends before the input (the parameters mirror the server's).
pub fn hello() -> Hello {
    let c = config();
    Hello {
        kind: HelloKind::Join,
        bundle: BundleId(*b"fuzz-bundle-0001"),
        index: 0,
        count: 1,
        flags: 0,
        params: Params {
            max_frame: c.max_frame_size as u32,
            stream_window: c.stream_window as u32,
            session_window: c.session_window as u32,
        },
        generation: 0,
        nonce: [7; 16],
    }
}

/// The bytes the client sends for `data`.
pub fn wire(data: &[u8]) -> Vec<u8> {
    if data.starts_with(&MAGIC) {
        data.to_vec()
    } else {
        let mut v = hello().encode().to_vec();
        v.extend_from_slice(data);
        v
    }
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0)
}

/// The application side: accept streams, read each to its end, answer, close. Returns when
/// the session stops accepting. `sent`: how many bytes the client sent in all.
fn serve(session: &Session, deadline: Instant, sent: usize) {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let stream = match session.accept_stream_timeout(left.max(Duration::from_millis(1))) {
            Ok(s) => s,
            Err(Error::TimedOut) => panic!("the session neither ended nor offered a stream in time"),
            Err(e) => {
                assert!(!e.to_string().is_empty());
                return;
            }
        };
        stream.set_read_timeout(Some(END_WITHIN)).expect("set a read timeout");
        stream.set_write_timeout(Some(END_WITHIN)).expect("set a write timeout");
        let mut got = Vec::new();
        let read = (&stream).take(1 << 20).read_to_end(&mut got);
        // Not bounded by the stream window: the server grants credit again as the application
        // reads, and a client that sends blindly may fit the credit granted meanwhile. What is
        // read must have been sent, though.
        assert!(got.len() <= sent, "read {} bytes of a stream; the client sent {sent} in all", got.len());
        if let Err(e) = read {
            assert_ne!(e.kind(), std::io::ErrorKind::TimedOut, "a stream read outlived the session");
        }
        let _ = (&stream).write_all(&got[..got.len().min(100)]);
        let _ = stream.close();
    }
}

/// Feed `data` to a fresh server session.
pub fn run(data: &[u8]) {
    let rig = rig();
    let mut client = TcpStream::connect(rig.addr).expect("connect to the loopback listener");
    let (server_sock, _) = rig.listener.accept().expect("accept the loopback connection");
    let bytes = wire(data);
    let sent = bytes.len();
    let peer = thread::spawn(move || {
        client.set_read_timeout(Some(3 * END_WITHIN)).expect("set a read timeout");
        // The server may refuse and close early: write errors only end the writing.
        let _ = client.write_all(&bytes);
        let _ = client.shutdown(Shutdown::Write);
        let mut sink = [0u8; 16 << 10];
        loop {
            match client.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    panic!("the server kept the connection open after the session ended")
                }
                Err(_) => return,
            }
        }
    });
    match Session::server(vec![server_sock], &rig.cfg) {
        Err(e) => assert!(!e.to_string().is_empty(), "a refused handshake says why"),
        Ok(session) => {
            let deadline = Instant::now() + END_WITHIN;
            serve(&session, deadline, sent);
            while session.close_reason().is_none() {
                // Polled: the public API has no blocking wait for the end (a stream accept
                // returns at once once the session stops accepting).
                assert!(Instant::now() < deadline, "the session did not end after the peer's bytes ended");
                thread::sleep(Duration::from_millis(1));
            }
            let reason = session.close_reason().expect("closed");
            match &reason {
                CloseReason::TunnelsLost(why) | CloseReason::Protocol(why) => assert!(!why.is_empty()),
                CloseReason::Peer | CloseReason::Local => {}
                CloseReason::Expired(why) => panic!("a session that cannot resume expired: {why}"),
            }
            let start = Instant::now();
            session.close().expect("close");
            assert!(start.elapsed() < END_WITHIN, "close took {:?}", start.elapsed());
        }
    }
    peer.join().expect("the peer thread");
    check_threads(rig.threads);
}

/// The thread count returns to the baseline once a session is closed (threads that already
/// finished may take a moment to leave `/proc`).
fn check_threads(baseline: usize) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = thread_count();
        if now <= baseline {
            return;
        }
        assert!(Instant::now() < deadline, "threads leaked: {now} running, {baseline} before the session");
        thread::sleep(Duration::from_millis(1));
    }
}
