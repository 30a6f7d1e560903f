//! What the failover tests share: a client and a server session whose tunnels pass through a
//! [`FaultRelay`] (port-range mode), verified transfers, an event log, and the process's
//! resource usage. Every wait is bounded.

use super::pattern;
use super::relay::FaultRelay;
use mtmux::{Config, Event, Listener, Session, Stream, TunnelState, TunnelStats};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The failover tests measure times and count the process's threads and descriptors, and each
/// one loads both cores: they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Hold while a test runs (a failed test does not block the others).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Four tunnels and timeouts that show failures within seconds: keepalive every second, a
/// tunnel silent for 3 s is dead, a lost session waits 8 s for its tunnels, re-dials back off
/// to 500 ms at most.
pub fn failover_cfg() -> Config {
    Config {
        tunnels: 4,
        keepalive_interval: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(3),
        handshake_timeout: Duration::from_secs(5),
        resume_timeout: Duration::from_secs(8),
        rejoin_backoff_max: Duration::from_millis(500),
        ..Default::default()
    }
}

/// A session pair over a relay: `client` dialed the relay, which forwards tunnel `i` to the
/// listener's port `i`. The listener stays open: re-joins go through it.
pub struct Rig {
    pub client: Session,
    pub server: Session,
    pub relay: FaultRelay,
    pub listener: Listener,
}

pub fn rig(cfg: &Config) -> Rig {
    let listener = Listener::bind("127.0.0.1:0", cfg).expect("bind");
    let relay = FaultRelay::new(listener.local_addrs());
    let (addr, c) = (relay.addr(), cfg.clone());
    let client = thread::spawn(move || mtmux::dial(addr, &c).expect("dial"));
    let server = listener.accept_timeout(Duration::from_secs(10)).expect("accept");
    Rig { client: client.join().expect("client thread"), server, relay, listener }
}

impl Rig {
    /// Both ends, named for messages.
    pub fn ends(&self) -> [(&'static str, &Session); 2] {
        [("client", &self.client), ("server", &self.server)]
    }
}

/// Poll `cond` every 10 ms until it holds; panics naming `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

pub fn tunnel(s: &Session, i: usize) -> TunnelStats {
    s.tunnel_stats().swap_remove(i)
}

/// Wait until tunnel `i` of `s` is live in a generation after `after`; its statistics then.
pub fn wait_rejoined(s: &Session, i: usize, after: u32, limit: Duration) -> TunnelStats {
    let mut last = None;
    let deadline = Instant::now() + limit;
    loop {
        let t = tunnel(s, i);
        if t.state == TunnelState::Live && t.generation > after {
            return t;
        }
        if Instant::now() > deadline {
            panic!("tunnel {i} not live after generation {after} within {limit:?}: {last:?}");
        }
        last = Some(t);
        thread::sleep(Duration::from_millis(10));
    }
}

/// Bytes a verified stream carries: a pseudo-random pattern repeated with an odd period, so
/// that bytes lost, repeated or reordered show at any position (no shift by whole 64 KiB
/// frames is a multiple of the period).
pub const PERIOD: usize = (1 << 20) + 4099;

pub fn payload(seed: u64) -> Vec<u8> {
    pattern(seed, PERIOD)
}

/// Write `total` bytes of stream `seed`'s payload (or fewer, if `stop` is set first), then
/// close the write side. Returns the bytes written.
pub fn send(s: &Stream, seed: u64, total: u64, stop: &AtomicBool) -> Result<u64, String> {
    let data = payload(seed);
    let mut pos = 0u64;
    while pos < total && !stop.load(SeqCst) {
        let off = (pos % PERIOD as u64) as usize;
        let n = (PERIOD - off).min(256 << 10).min((total - pos) as usize);
        let mut w = s;
        w.write_all(&data[off..off + n]).map_err(|e| format!("seed {seed}: write at byte {pos}: {e}"))?;
        pos += n as u64;
    }
    s.close_write().map_err(|e| format!("seed {seed}: close_write: {e}"))?;
    Ok(pos)
}

/// Read stream `seed` to its end, checking every byte against its payload and adding them to
/// `moved`. Returns the bytes read.
pub fn receive(s: &Stream, seed: u64, moved: &AtomicU64) -> Result<u64, String> {
    let data = payload(seed);
    let mut buf = vec![0u8; 256 << 10];
    let mut pos = 0u64;
    loop {
        let mut r = s;
        let n = r.read(&mut buf).map_err(|e| format!("seed {seed}: read at byte {pos}: {e}"))?;
        if n == 0 {
            return Ok(pos);
        }
        for (k, b) in buf[..n].iter().enumerate() {
            let at = pos + k as u64;
            if *b != data[(at % PERIOD as u64) as usize] {
                return Err(format!("seed {seed}: byte {at} differs from what was sent"));
            }
        }
        pos += n as u64;
        moved.fetch_add(n as u64, SeqCst);
    }
}

/// How long a transfer's stream may stand still before its read or write fails.
pub const STUCK: Duration = Duration::from_secs(20);

/// Verified transfers in progress on one stream, in both directions at once.
pub struct Transfer {
    pub id: u32,
    /// (direction, sender, receiver)
    ways: Vec<(&'static str, Side, Side)>,
}

type Side = JoinHandle<Result<u64, String>>;

impl Transfer {
    /// Open a stream at `a` and accept it at `b`; then `up` bytes go from `a` to `b` and `down`
    /// bytes from `b` to `a` (seeds: twice the stream id, plus one for `down`), counted in
    /// `moved` as they arrive; senders stop early once `stop` is set. Start transfers one
    /// after the other: each accepts the stream it opened. A read or write that waits longer
    /// than [`STUCK`] fails: a stream that stops moving is reported, not waited for.
    pub fn start(
        a: &Session,
        b: &Session,
        up: u64,
        down: u64,
        moved: &Arc<AtomicU64>,
        stop: &Arc<AtomicBool>,
    ) -> Transfer {
        let bound = |s: &Stream| {
            s.set_read_timeout(Some(STUCK)).unwrap();
            s.set_write_timeout(Some(STUCK)).unwrap();
        };
        let sa = Arc::new(a.open_stream().expect("open_stream"));
        bound(&sa);
        let id = sa.id();
        let (ua, us) = (sa.clone(), stop.clone());
        let up_sender = thread::spawn(move || send(&ua, 2 * id as u64, up, &us));
        let sb = Arc::new(b.accept_stream_timeout(Duration::from_secs(10)).expect("accept_stream"));
        assert_eq!(sb.id(), id, "accepted another stream than the one just opened");
        bound(&sb);
        let (ub, um) = (sb.clone(), moved.clone());
        let up_receiver = thread::spawn(move || receive(&ub, 2 * id as u64, &um));
        let (db, ds) = (sb, stop.clone());
        let down_sender = thread::spawn(move || send(&db, 2 * id as u64 + 1, down, &ds));
        let (da, dm) = (sa, moved.clone());
        let down_receiver = thread::spawn(move || receive(&da, 2 * id as u64 + 1, &dm));
        Transfer { id, ways: vec![("up", up_sender, up_receiver), ("down", down_sender, down_receiver)] }
    }

    /// Wait for both directions; panics unless every byte sent arrived intact and no call
    /// failed. Returns the bytes moved both ways.
    pub fn finish(self) -> u64 {
        self.join().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Wait for both directions: the bytes moved both ways, or what went wrong.
    pub fn join(self) -> Result<u64, String> {
        let mut total = 0;
        let mut failed = Vec::new();
        for (way, sender, receiver) in self.ways {
            let sent = sender.join().expect("sender thread");
            let received = receiver.join().expect("receiver thread");
            match (sent, received) {
                (Ok(s), Ok(r)) if s == r => total += r,
                (s, r) => failed.push(format!("stream {} {way}: sender {s:?}, receiver {r:?}", self.id)),
            }
        }
        if failed.is_empty() {
            Ok(total)
        } else {
            Err(failed.join("; "))
        }
    }
}

/// Every event a session reports, with when it was read, collected by a thread until dropped.
pub struct EventLog {
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EventLog {
    pub fn start(s: &Session) -> EventLog {
        let (events, stop, s) =
            (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)), s.clone());
        let (ev, st) = (events.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(SeqCst) {
                if let Some(e) = s.next_event(Duration::from_millis(20)) {
                    ev.lock().unwrap().push((Instant::now(), e));
                }
            }
        });
        EventLog { events, stop, thread: Some(thread) }
    }

    pub fn events(&self) -> Vec<(Instant, Event)> {
        self.events.lock().unwrap().clone()
    }

    /// Wait for an event matching `pred`; when it was read.
    pub fn wait_for(&self, limit: Duration, what: &str, pred: impl Fn(&Event) -> bool) -> Instant {
        let mut at = None;
        wait_until(limit, what, || {
            at = self.events.lock().unwrap().iter().find(|(_, e)| pred(e)).map(|(t, _)| *t);
            at.is_some()
        });
        at.expect("found")
    }

    /// Whether an event matching `pred` was seen.
    pub fn has(&self, pred: impl Fn(&Event) -> bool) -> bool {
        self.events.lock().unwrap().iter().any(|(_, e)| pred(e))
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the process holds: threads, open descriptors, resident memory.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    pub threads: usize,
    pub fds: usize,
    pub rss_kib: u64,
}

pub fn usage() -> Usage {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    Usage {
        threads: field("Threads:") as usize,
        fds: std::fs::read_dir("/proc/self/fd").unwrap().count(),
        rss_kib: field("VmRSS:"),
    }
}
