//! Benchmarks 1–6: loopback, client and server in this process, session set up before the
//! clock starts, time taken at the receiver. Each function returns one sample.

use mtmux::{Config, Listener, Session, Stream};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

pub const WRITE: usize = 64 * 1024;

/// A connected session pair over loopback.
pub fn pair(cfg: &Config) -> (Session, Session) {
    pair_with(cfg, cfg)
}

/// A connected session pair over loopback, each end with its own configuration.
pub fn pair_with(server: &Config, client: &Config) -> (Session, Session) {
    let l = Listener::bind("127.0.0.1:0", server).expect("bind");
    let addr = l.local_addr();
    let c = client.clone();
    let client = thread::spawn(move || mtmux::dial(addr, &c).expect("dial"));
    let server = l.accept().expect("accept");
    (client.join().expect("dial thread"), server)
}

fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (s, _) = l.accept().unwrap();
    (c, s)
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// Send `total` bytes in 64 KiB writes from `w` after `go`; time at the receiver `r`.
fn timed_transfer<W: Write + Send + 'static, R: Read>(mut w: W, mut r: R, total: u64) -> f64 {
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let sender = thread::spawn(move || {
        let buf = vec![0x5au8; WRITE];
        go_rx.recv().unwrap();
        let mut sent = 0;
        while sent < total {
            let n = (total - sent).min(WRITE as u64) as usize;
            w.write_all(&buf[..n]).unwrap();
            sent += n as u64;
        }
        w
    });
    let mut buf = vec![0u8; WRITE];
    let t = Instant::now();
    go_tx.send(()).unwrap();
    let mut got = 0u64;
    while got < total {
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "early end of stream");
        got += n as u64;
    }
    let speed = mb_per_s(total, t.elapsed());
    drop(sender.join().unwrap());
    speed
}

/// 1. bulk over one plain TCP connection (MB/s).
pub fn bulk_raw(total: u64) -> f64 {
    let (c, s) = tcp_pair();
    timed_transfer(c, s, total)
}

/// Open a stream from the client and accept it on the server (the peer learns of it from
/// its first byte, which is consumed here).
pub fn stream_pair(client: &Session, server: &Session) -> (Stream, Stream) {
    let mut a = client.open_stream().unwrap();
    a.write_all(b"!").unwrap();
    let mut b = server.accept_stream().unwrap();
    let mut one = [0u8; 1];
    b.read_exact(&mut one).unwrap();
    (a, b)
}

/// 1. bulk over one mtmux stream of a session with `tunnels` tunnels (MB/s).
pub fn bulk_mux(tunnels: usize, total: u64) -> f64 {
    let (client, server) = pair(&Config { tunnels, ..Default::default() });
    let (a, b) = stream_pair(&client, &server);
    let speed = timed_transfer(a, b, total);
    drop((client, server));
    speed
}

/// Bulk over one stream of a session between `server` and `client` configurations (MB/s).
pub fn bulk_mux_with(server: &Config, client: &Config, total: u64) -> f64 {
    let (client, server) = pair_with(server, client);
    let (a, b) = stream_pair(&client, &server);
    let speed = timed_transfer(a, b, total);
    drop((client, server));
    speed
}

/// Run `n` transfers of `each` bytes in parallel; time from the common start until the last
/// receiver is done (MB/s in total). Both ends of the clock are read by the transfer threads
/// (the first to leave the start barrier, the last receiver to finish): on a loaded machine
/// the main thread can be descheduled right after the barrier for longer than the transfers
/// take, which once reported 551 GB/s for 16 TCP connections.
fn parallel_transfers<W, R>(pairs: Vec<(W, R)>, each: u64) -> f64
where
    W: Write + Send + 'static,
    R: Read + Send + 'static,
{
    let n = pairs.len();
    let start = Arc::new(Barrier::new(2 * n));
    let clock = Arc::new(Clock::default());
    let mut handles = Vec::new();
    for (mut w, mut r) in pairs {
        let (b, c) = (start.clone(), clock.clone());
        handles.push(thread::spawn(move || {
            let buf = vec![0x33u8; WRITE];
            b.wait();
            c.started(Instant::now());
            let mut sent = 0;
            while sent < each {
                let k = (each - sent).min(WRITE as u64) as usize;
                w.write_all(&buf[..k]).unwrap();
                sent += k as u64;
            }
            drop(w);
        }));
        let (b, c) = (start.clone(), clock.clone());
        handles.push(thread::spawn(move || {
            let mut buf = vec![0u8; WRITE];
            b.wait();
            c.started(Instant::now());
            let mut got = 0;
            while got < each {
                let k = r.read(&mut buf).unwrap();
                assert!(k > 0);
                got += k as u64;
            }
            c.finished(Instant::now());
        }));
    }
    for h in handles {
        h.join().unwrap();
    }
    mb_per_s(each * n as u64, clock.elapsed())
}

/// The clock of parallel transfers: the earliest start and the latest finish any thread saw.
#[derive(Default)]
struct Clock(std::sync::Mutex<(Option<Instant>, Option<Instant>)>);

impl Clock {
    /// A thread left the start line at `t`.
    fn started(&self, t: Instant) {
        let mut g = self.0.lock().unwrap();
        g.0 = Some(g.0.map_or(t, |s| s.min(t)));
    }

    /// A receiver got its last byte at `t`.
    fn finished(&self, t: Instant) {
        let mut g = self.0.lock().unwrap();
        g.1 = Some(g.1.map_or(t, |s| s.max(t)));
    }

    /// From the earliest start to the latest finish.
    fn elapsed(&self) -> Duration {
        let g = self.0.lock().unwrap();
        match *g {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        }
    }
}

/// 2. many: `n` plain TCP connections in parallel (MB/s in total).
pub fn many_raw(n: usize, each: u64) -> f64 {
    parallel_transfers((0..n).map(|_| tcp_pair()).collect(), each)
}

/// 2. many: `n` streams of one session with `tunnels` tunnels (MB/s in total).
pub fn many_mux(tunnels: usize, n: usize, each: u64) -> f64 {
    let (client, server) = pair(&Config { tunnels, ..Default::default() });
    let pairs: Vec<_> = (0..n).map(|_| stream_pair(&client, &server)).collect();
    let speed = parallel_transfers(pairs, each);
    drop((client, server));
    speed
}

/// Echo 64-byte messages until the stream ends.
fn echo64<S: Read + Write>(mut s: S) {
    let mut b = [0u8; 64];
    while s.read_exact(&mut b).is_ok() {
        if s.write_all(&b).is_err() {
            break;
        }
    }
}

/// Round trips of 64 bytes; returns each round trip in microseconds.
fn round_trips<S: Read + Write>(s: &mut S, warmup: usize, n: usize) -> Vec<f64> {
    let mut b = [7u8; 64];
    for _ in 0..warmup {
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    v
}

/// 3. pingpong over plain TCP (µs per round trip).
pub fn pingpong_raw(n: usize) -> Vec<f64> {
    let (mut c, s) = tcp_pair();
    c.set_nodelay(true).unwrap();
    s.set_nodelay(true).unwrap();
    let server = thread::spawn(move || echo64(s));
    let v = round_trips(&mut c, 1000, n);
    drop(c);
    server.join().unwrap();
    v
}

/// 3. pingpong over one stream of a session with `tunnels` tunnels (µs per round trip).
pub fn pingpong_mux(tunnels: usize, n: usize) -> Vec<f64> {
    let (client, server) = pair(&Config { tunnels, ..Default::default() });
    let (mut a, b) = stream_pair(&client, &server);
    let echo = thread::spawn(move || echo64(b));
    let v = round_trips(&mut a, 1000, n);
    drop(a);
    echo.join().unwrap();
    v
}

/// The hand-off floor: pingpong over plain TCP where, on each side, a dedicated reader thread
/// forwards every message through a crossbeam channel to the application thread, which
/// writes straight to the socket. This is the minimal form of the architecture mtmux's design
/// card prescribes (dedicated reader threads per tunnel, channels to the streams), with no
/// mtmux code at all: what it costs over raw TCP bounds what any implementation of that
/// design can reach (µs per round trip).
pub fn pingpong_handoff(n: usize) -> Vec<f64> {
    fn side(s: TcpStream) -> (TcpStream, crossbeam_channel::Receiver<Vec<u8>>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut r = s.try_clone().unwrap();
        thread::spawn(move || loop {
            let mut b = vec![0u8; 64];
            if r.read_exact(&mut b).is_err() || tx.send(b).is_err() {
                return;
            }
        });
        (s, rx)
    }
    let (c, s) = tcp_pair();
    c.set_nodelay(true).unwrap();
    s.set_nodelay(true).unwrap();
    let server = thread::spawn(move || {
        let (mut s, rx) = side(s);
        while let Ok(b) = rx.recv() {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let (mut c, rx) = side(c);
    let b = [7u8; 64];
    let mut v = Vec::with_capacity(n);
    for i in 0..n + 1000 {
        let t = Instant::now();
        c.write_all(&b).unwrap();
        rx.recv().unwrap();
        if i >= 1000 {
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    // The reader threads hold clones of the sockets: end them with a shutdown, not a drop.
    c.shutdown(std::net::Shutdown::Both).unwrap();
    drop(rx);
    server.join().unwrap();
    v
}

/// The hand-off floor with the cheapest wake-up there is: as [`pingpong_handoff`], but the
/// reader thread puts each message in a queue under a mutex and unparks the application
/// thread (one futex call), which parks when the queue is empty. No spinning, no channel:
/// what a reader thread per side costs by itself (µs per round trip).
pub fn pingpong_handoff_park(n: usize) -> Vec<f64> {
    use std::collections::VecDeque;
    use std::sync::Mutex;
    type Queue = Arc<Mutex<(VecDeque<[u8; 64]>, bool)>>;
    fn side(s: &TcpStream) -> Queue {
        let q: Queue = Arc::new(Mutex::new((VecDeque::new(), false)));
        let (qr, app, mut r) = (q.clone(), thread::current(), s.try_clone().unwrap());
        thread::spawn(move || loop {
            let mut b = [0u8; 64];
            let ok = r.read_exact(&mut b).is_ok();
            {
                let mut g = qr.lock().unwrap();
                if ok {
                    g.0.push_back(b);
                } else {
                    g.1 = true;
                }
            }
            app.unpark();
            if !ok {
                return;
            }
        });
        q
    }
    /// The next message, or `None` once the reader has ended.
    fn take(q: &Queue) -> Option<[u8; 64]> {
        loop {
            {
                let mut g = q.lock().unwrap();
                if let Some(b) = g.0.pop_front() {
                    return Some(b);
                }
                if g.1 {
                    return None;
                }
            }
            thread::park();
        }
    }
    let (c, s) = tcp_pair();
    c.set_nodelay(true).unwrap();
    s.set_nodelay(true).unwrap();
    let server = thread::spawn(move || {
        let q = side(&s);
        let mut s = s;
        while let Some(b) = take(&q) {
            if s.write_all(&b).is_err() {
                break;
            }
        }
    });
    let q = side(&c);
    let mut c = c;
    let b = [7u8; 64];
    let mut v = Vec::with_capacity(n);
    for i in 0..n + 1000 {
        let t = Instant::now();
        c.write_all(&b).unwrap();
        take(&q).unwrap();
        if i >= 1000 {
            v.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    // The reader threads hold clones of the sockets: end them with a shutdown, not a drop.
    c.shutdown(std::net::Shutdown::Both).unwrap();
    server.join().unwrap();
    v
}

/// 4. churn over plain TCP: connect, write 64 B, read the echo, close (connections/s).
pub fn churn_raw(n: usize) -> f64 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let server = thread::spawn(move || {
        for _ in 0..n {
            let (s, _) = l.accept().unwrap();
            s.set_nodelay(true).unwrap();
            echo64(s);
        }
    });
    let t = Instant::now();
    for _ in 0..n {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        let mut b = [1u8; 64];
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    server.join().unwrap();
    rate
}

/// 4. churn over mtmux: open a stream, write 64 B, read the echo, close (streams/s).
pub fn churn_mux(tunnels: usize, n: usize) -> f64 {
    let (client, server) = pair(&Config { tunnels, ..Default::default() });
    let srv = thread::spawn(move || {
        for _ in 0..n {
            echo64(server.accept_stream().unwrap());
        }
        server
    });
    let t = Instant::now();
    for _ in 0..n {
        let mut s = client.open_stream().unwrap();
        let mut b = [1u8; 64];
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(srv.join().unwrap());
    rate
}

/// Benchmark 5, fairness: round trips on one stream while another stream of the same
/// session saturates the tunnels (µs per round trip).
pub fn fairness_mux(tunnels: usize, n: usize) -> Vec<f64> {
    fairness_cfg(&Config { tunnels, ..Default::default() }, n)
}

/// [`fairness_mux`] with a given configuration.
pub fn fairness_cfg(cfg: &Config, n: usize) -> Vec<f64> {
    let (client, server) = pair(cfg);
    let (mut ping, pong) = stream_pair(&client, &server);
    let echo = thread::spawn(move || echo64(pong));
    let (bulk_tx, bulk_rx) = stream_pair(&client, &server);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let writer = thread::spawn(move || {
        let buf = vec![1u8; WRITE];
        let mut w = bulk_tx;
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            if w.write_all(&buf).is_err() {
                break;
            }
        }
        let _ = w.close_write();
    });
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; WRITE];
        let mut r = bulk_rx;
        let mut total = 0u64;
        while let Ok(k) = r.read(&mut buf) {
            if k == 0 {
                break;
            }
            total += k as u64;
        }
        total
    });
    let v = round_trips(&mut ping, 200, n);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    let moved = reader.join().unwrap();
    assert!(moved > 0);
    drop(ping);
    echo.join().unwrap();
    v
}

fn status_field(name: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Benchmark 6, idle memory: RSS growth (bytes per stream, both ends in this process) and
/// threads, with `n` open idle streams on one session.
pub fn idle_memory(tunnels: usize, n: usize) -> (f64, usize, usize) {
    let cfg = Config { tunnels, max_streams: n + 16, accept_backlog: n + 16, ..Default::default() };
    let (client, server) = pair(&cfg);
    // Warm up allocator arenas and the session's tables outside the measurement.
    {
        let warm: Vec<_> = (0..256).map(|_| stream_pair(&client, &server)).collect();
        drop(warm);
    }
    let threads_before = status_field("Threads:") as usize;
    let rss_before = status_field("VmRSS:") * 1024;
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        streams.push(stream_pair(&client, &server));
    }
    let rss_after = status_field("VmRSS:") * 1024;
    let threads_after = status_field("Threads:") as usize;
    assert_eq!(client.num_streams(), n);
    let per_stream = (rss_after.saturating_sub(rss_before)) as f64 / n as f64;
    drop(streams);
    (per_stream, threads_before, threads_after)
}

/// Acknowledgement traffic of a transfer of `each` bytes on each of `streams` streams of a
/// session with `tunnels` tunnels: (data bytes, ACK bytes both ends sent, ACK frames).
pub fn ack_traffic(tunnels: usize, streams: usize, each: u64) -> (u64, u64, u64) {
    let (client, server) = pair(&Config { tunnels, ..Default::default() });
    let pairs: Vec<_> = (0..streams).map(|_| stream_pair(&client, &server)).collect();
    parallel_transfers(pairs, each);
    let (c, s) = (client.stats(), server.stats());
    drop((client, server));
    (each * streams as u64, c.ack_bytes_sent + s.ack_bytes_sent, c.acks_sent + s.acks_sent)
}
