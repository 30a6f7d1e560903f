//! The server's limits under attack, measured on the real process: an OPEN flood does not
//! raise its threads or descriptors past the documented bound, streams that cannot connect to
//! the target are bounded too, and bundles that never complete their handshake take no
//! session slot.

mod common;

use common::*;
use mtmux::proto::handshake::{BundleId, Hello, HelloKind, Params};
use mtmux::{Config, Error, ResetCode, Session, Stream};
use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Threads the server runs per session of one tunnel: the library's reader and writer of the
/// tunnel and its supervisor, the server's stream acceptor and event logger.
const THREADS_PER_SESSION: usize = 2 + 1 + 2;

/// A client session of one tunnel, made by the test itself (no `mtmux client`).
fn dial(addr: SocketAddr) -> Session {
    let cfg = Config { tunnels: 1, rejoin: false, ..Config::default() };
    mtmux::dial(addr, &cfg).expect("dial the server")
}

/// The most threads and descriptors seen in process `pid` while the sampler ran.
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<((usize, usize), Vec<String>)>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = thread::spawn(move || {
            let mut most = (0, 0);
            let mut names = Vec::new();
            while !s.load(Ordering::SeqCst) {
                let t = threads_but_handshakes(pid);
                if t > most.0 {
                    // Which threads made the peak (for the message if a bound is passed).
                    names = thread_names(pid);
                }
                most = (most.0.max(t), most.1.max(fds(pid)));
                // The sampling period, not a synchronisation.
                thread::sleep(Duration::from_millis(2));
            }
            (most, names)
        });
        Sampler { stop, handle }
    }

    /// The most threads and descriptors seen, and the threads' names at the peak.
    fn stop(self) -> ((usize, usize), Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap()
    }
}

/// The threads of process `pid` other than the listener's handshake threads (`mtmux-hs`):
/// those are bounded by `--max-handshakes`, and an idle one lingers for 10 s after the
/// handshake it ran (so right after the sessions were dialed, some are still there; counted,
/// they made the floods' peaks look 1-2 threads above the bound).
fn threads_but_handshakes(pid: u32) -> usize {
    thread_names(pid).iter().filter(|n| *n != "mtmux-hs").count()
}

/// Wait until the server runs exactly `want` threads besides handshake threads; returns its
/// descriptors then.
fn wait_for_threads(pid: u32, what: &str, want: usize) -> usize {
    wait_for_counts(pid, what, |_, _| threads_but_handshakes(pid) == want).1
}

/// An idle server's threads: main, the listener's acceptor, the refusal logger and the signal
/// handler.
const IDLE_THREADS: usize = 4;

/// How one flooded stream ended up: carried (the echo came back), reset at once (with its
/// code), or still waiting when the read timed out.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Carried,
    Reset(ResetCode),
    Waiting,
}

/// Open a stream, send the forward header of the "default" forward and one byte (docs/
/// CLI-PROTOCOL.md; its first frame is the OPEN), and see what becomes of it within `wait`.
fn open_one(session: &Session) -> Stream {
    let mut s = session.open_stream().expect("open a stream");
    s.write_all(b"\x01\x07defaultx").expect("write the first bytes");
    s
}

fn fate(mut s: &Stream, wait: Duration) -> Fate {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1) => Fate::Carried,
        Ok(n) => panic!("read {n} bytes"),
        Err(e) => match Error::from(e) {
            Error::StreamReset { code, remote: true } => Fate::Reset(code),
            // A stream turned away with code TooManyStreams reports the stream limit.
            Error::TooManyStreams => Fate::Reset(ResetCode::TooManyStreams),
            Error::TimedOut => Fate::Waiting,
            e => panic!("unexpected stream error: {e}"),
        },
    }
}

#[test]
fn an_open_flood_keeps_threads_and_descriptors_under_the_bound_and_both_come_back() {
    const SESSIONS: usize = 4;
    const OPENS: usize = 150;
    const PER_SESSION: usize = 40;
    const TOTAL: usize = 60;
    let echo = echo_service();
    let (mut srv, addr) = server(
        echo,
        &[
            "--tunnels",
            "1",
            "--max-sessions",
            "8",
            "--max-streams",
            &PER_SESSION.to_string(),
            "--max-streams-total",
            &TOTAL.to_string(),
            // The connecting bounds are the next test's.
            "--max-connecting",
            "1000",
            "--max-connecting-total",
            "1000",
        ],
    );
    let pid = srv.pid();
    // Idle: the main thread, the acceptor of the one port, the refusal logger.
    let (t0, f0) = wait_for_counts(pid, "idle server", |t, _| t == IDLE_THREADS);
    let sessions: Vec<Session> = (0..SESSIONS).map(|_| dial(addr)).collect();
    srv.wait_for(&format!("session {SESSIONS} from"));
    // Each session's threads, then the flood may add at most two per carried stream.
    let t1 = t0 + SESSIONS * THREADS_PER_SESSION;
    let f1 = wait_for_threads(pid, "sessions up", t1);
    let sampler = Sampler::start(pid);
    let started = Instant::now();
    let fates: Vec<Vec<(Stream, Fate)>> = thread::scope(|s| {
        let floods: Vec<_> = sessions
            .iter()
            .map(|session| {
                s.spawn(move || {
                    let streams: Vec<Stream> = (0..OPENS).map(|_| open_one(session)).collect();
                    streams
                        .into_iter()
                        .map(|st| {
                            let f = fate(&st, Duration::from_secs(10));
                            (st, f)
                        })
                        .collect()
                })
            })
            .collect();
        floods.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let flood_took = started.elapsed();
    let ((most_threads, most_fds), peak_threads) = sampler.stop();
    let mut carried_total = 0;
    for (i, fates) in fates.iter().enumerate() {
        let carried = fates.iter().filter(|(_, f)| *f == Fate::Carried).count();
        let reset = fates.iter().filter(|(_, f)| *f == Fate::Reset(ResetCode::TooManyStreams)).count();
        assert_eq!(
            carried + reset,
            OPENS,
            "session {i}: every stream carried or reset: {:?}",
            fates.iter().map(|(_, f)| f).collect::<Vec<_>>()
        );
        assert!(carried <= PER_SESSION, "session {i}: {carried} streams carried");
        carried_total += carried;
    }
    // The first TOTAL streams are carried (they stay open), all others reset.
    assert_eq!(carried_total, TOTAL);
    eprintln!(
        "OPEN flood: {} opens in {flood_took:?}; {carried_total} carried; threads {t0} idle, {t1} with \
         {SESSIONS} sessions, at most {most_threads} during the flood (bound {}); descriptors {f0}, {f1}, \
         at most {most_fds} (bound {})",
        SESSIONS * OPENS,
        t1 + 2 * TOTAL,
        f1 + TOTAL
    );
    // SLACK: the peak used to be 1-2 threads above the formula: the listener's idle handshake
    // threads (they linger 10 s after the dials) were counted; they no longer are
    // (`threads_but_handshakes`), and the peak meets the formula exactly (3 runs). Kept as a
    // margin for a stream thread that gave its ticket back but has not exited yet.
    const SLACK: usize = 4;
    assert!(
        most_threads <= t1 + 2 * TOTAL + SLACK,
        "{most_threads} threads > {t1} + 2 x {TOTAL} + {SLACK}: {peak_threads:?}"
    );
    assert!(most_fds <= f1 + TOTAL, "{most_fds} descriptors > {f1} + {TOTAL}");
    srv.wait_for("reset at once: already");
    // Everything closes: back to the baseline.
    drop(fates);
    drop(sessions);
    wait_for_counts(pid, "after the flood", |t, f| t <= t0 && f <= f0);
    // Legitimate streams still work, through the real client.
    let (_cli, local) = client(addr, &["--tunnels", "1"]);
    let payload = data(200_000, 9);
    assert!(exchange(local, &payload).unwrap() == payload, "the echo differs");
}

/// A target whose connects hang: a listener with a backlog of 0 whose queue is already full,
/// so the kernel drops every further SYN (the connection attempt waits for its timeout).
fn blackhole() -> (Socket, Vec<TcpStream>, SocketAddr) {
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    l.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into()).unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(c) => fill.push(c),
            Err(_) => break,
        }
        assert!(fill.len() < 16, "the listen queue never filled");
    }
    (l, fill, addr)
}

#[test]
fn streams_that_cannot_connect_to_the_target_are_bounded_per_session_and_in_total() {
    const SESSIONS: usize = 2;
    const OPENS: usize = 20;
    const CONNECTING: usize = 4;
    const CONNECTING_TOTAL: usize = 6;
    let (_target, _fill, target) = blackhole();
    let (mut srv, addr) = server(
        target,
        &[
            "--tunnels",
            "1",
            "--connect-timeout",
            "4s",
            "--max-connecting",
            &CONNECTING.to_string(),
            "--max-connecting-total",
            &CONNECTING_TOTAL.to_string(),
        ],
    );
    let pid = srv.pid();
    let (t0, f0) = wait_for_counts(pid, "idle server", |t, _| t == IDLE_THREADS);
    let sessions: Vec<Session> = (0..SESSIONS).map(|_| dial(addr)).collect();
    srv.wait_for(&format!("session {SESSIONS} from"));
    let t1 = t0 + SESSIONS * THREADS_PER_SESSION;
    let f1 = wait_for_threads(pid, "sessions up", t1);
    let sampler = Sampler::start(pid);
    // Open everything, then look at every stream at once: those reset at once say so within
    // the second; those being connected are still waiting then (the connect takes 4 s).
    let streams: Vec<Vec<Stream>> =
        sessions.iter().map(|s| (0..OPENS).map(|_| open_one(s)).collect()).collect();
    let fates: Vec<Vec<Fate>> = thread::scope(|s| {
        let hs: Vec<Vec<_>> = streams
            .iter()
            .map(|ss| ss.iter().map(|st| s.spawn(move || fate(st, Duration::from_secs(1)))).collect())
            .collect();
        hs.into_iter().map(|h| h.into_iter().map(|h| h.join().unwrap()).collect()).collect()
    });
    let ((most_threads, most_fds), peak_threads) = sampler.stop();
    let mut waiting_total = 0;
    for (i, f) in fates.iter().enumerate() {
        let waiting = f.iter().filter(|f| **f == Fate::Waiting).count();
        let reset = f.iter().filter(|f| **f == Fate::Reset(ResetCode::TooManyStreams)).count();
        assert_eq!(waiting + reset, OPENS, "session {i}: {f:?}");
        assert!(waiting <= CONNECTING, "session {i}: {waiting} streams being connected");
        waiting_total += waiting;
    }
    assert_eq!(waiting_total, CONNECTING_TOTAL);
    eprintln!(
        "connect flood: threads {t1} with {SESSIONS} sessions, at most {most_threads} (bound {}); descriptors \
         {f1}, at most {most_fds} (bound {})",
        t1 + CONNECTING_TOTAL,
        f1 + CONNECTING_TOTAL
    );
    // One thread and one socket per stream being connected.
    assert!(most_threads <= t1 + CONNECTING_TOTAL, "{most_threads} threads: {peak_threads:?}");
    assert!(most_fds <= f1 + CONNECTING_TOTAL, "{most_fds} descriptors");
    srv.wait_for("being connected to the target (--max-connecting");
    // The connects time out, their streams are reset, and the server is back where it was.
    srv.wait_for("cannot connect to target");
    wait_for_counts(pid, "after the connect timeouts", |t, f| t <= t1 && f <= f1);
    drop(streams);
    drop(sessions);
    wait_for_counts(pid, "after the sessions", |t, f| t <= t0 && f <= f0);
}

/// Connections that never finish a handshake: garbage, a HELLO cut short, or the first
/// tunnel of a bundle whose others never come.
fn bad_handshakes(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let params = Params { max_frame: 65536, stream_window: 1 << 20, session_window: 64 << 20 };
    (0..n)
        .map(|i| {
            let mut c = connect_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), addr);
            let hello = Hello {
                kind: HelloKind::Join,
                bundle: BundleId([i as u8; 16]),
                index: 0,
                count: 2,
                flags: 0,
                params,
                generation: 0,
                nonce: [i as u8; 16],
            }
            .encode();
            let _ = match i % 3 {
                0 => c.write_all(b"GET / HTTP/1.1\r\nHost: mtmux\r\n\r\n"),
                1 => c.write_all(&hello[..20]),
                _ => c.write_all(&hello),
            };
            c
        })
        .collect()
}

/// A TCP connection to `to` from address `from`.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::new(from, 0).into()).unwrap();
    s.connect_timeout(&to.into(), WAIT).unwrap();
    s.into()
}

#[test]
fn bundles_that_never_finish_their_handshake_take_no_session_slot() {
    let echo = echo_service();
    let (mut srv, addr) = server(
        echo,
        &[
            "--tunnels",
            "2",
            "--single-port",
            "--max-sessions",
            "1",
            "--handshake-timeout",
            "20s",
            "--max-handshakes-per-source",
            "40",
        ],
    );
    // 50 connections from 127.0.0.2; 40 may be in their handshake at once, the others are
    // refused at once (and logged with their address).
    let _bad = bad_handshakes(addr, 50);
    srv.wait_for("refused 127.0.0.2:");
    // The one session slot is still free for the real client (127.0.0.1), well before the
    // bad handshakes time out.
    let started = Instant::now();
    let (_cli, local) = client(addr, &["--tunnels", "2", "--single-port"]);
    let payload = data(100_000, 5);
    assert!(exchange(local, &payload).unwrap() == payload, "the echo differs");
    srv.wait_for("session 1 from 127.0.0.1");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(!srv.output().iter().any(|l| l.contains("--max-sessions")), "{:#?}", srv.output());
}

/// The flood of issue 9 against the default limits, for the numbers in the README: 16
/// one-tunnel sessions open 1024 streams each, as fast as they can. Before the limits this
/// drove the server to 9,153 threads and 4,575 descriptors.
#[test]
#[ignore = "a measurement (16 x 1024 streams), run by hand: cargo test -p mtmux-cli --test limits -- --ignored --nocapture"]
fn measure_the_issues_open_flood_against_the_default_limits() {
    const SESSIONS: usize = 16;
    const OPENS: usize = 1024;
    let echo = echo_service();
    let (mut srv, addr) = server(echo, &["--tunnels", "1"]);
    let pid = srv.pid();
    let (t0, f0) = wait_for_counts(pid, "idle server", |t, _| t == IDLE_THREADS);
    let sessions: Vec<Session> = (0..SESSIONS).map(|_| dial(addr)).collect();
    let t1 = t0 + SESSIONS * THREADS_PER_SESSION;
    let f1 = wait_for_threads(pid, "sessions up", t1);
    let rss = |what: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status.lines().find(|l| l.starts_with(what)).unwrap_or_default().to_string()
    };
    let sampler = Sampler::start(pid);
    let started = Instant::now();
    let carried: usize = thread::scope(|s| {
        let hs: Vec<_> = sessions
            .iter()
            .map(|session| {
                s.spawn(move || {
                    let streams: Vec<Stream> = (0..OPENS).map(|_| open_one(session)).collect();
                    streams.iter().filter(|st| fate(st, Duration::from_secs(20)) == Fate::Carried).count()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let took = started.elapsed();
    let ((most_threads, most_fds), peak_threads) = sampler.stop();
    let peak = rss("VmHWM:");
    drop(sessions);
    let (t2, f2) = wait_for_counts(pid, "after the flood", |t, f| t <= t0 && f <= f0);
    eprintln!(
        "issue-9 flood, default limits: {} opens in {took:?}, {carried} carried; threads {t0} idle, {t1} with \
         sessions, peak {most_threads}, after {t2}; descriptors {f0}, {f1}, peak {most_fds}, after {f2}; \
         {peak}; after: {}",
        SESSIONS * OPENS,
        rss("VmRSS:")
    );
    assert!(
        most_threads <= t1 + 2 * 2048 && most_fds <= f1 + 2048,
        "{most_threads} threads: {peak_threads:?}"
    );
    srv.kill();
}
