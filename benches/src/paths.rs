//! Link-emulation rows of issue 10, in a namespace of their own (see `linkemu`):
//!
//! - **unequal delay**: 4 tunnels capped at 20 MB/s, the fourth +200 ms each way (NFQUEUE on
//!   that port only), against mtmux over the 3 others alone; 1 stream and 8 streams.
//! - **both directions**: 8 tunnels capped at 10 MB/s each way (`dport` and `sport` classes),
//!   one stream each way at once, against one stream one way over the same tunnels.

use crate::linkemu::{receive_for, run_cmd, send_until, Namespace};
use crate::report::{median, Better, Figure};
use std::io::Write as _;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread;

/// Unequal delay: per-tunnel cap (20 MB/s), ports, and the slow tunnel's delay each way.
const UNEQUAL_MBIT: u32 = 160;
const UNEQUAL_BASE: u16 = 25000;
const UNEQUAL_MS: u32 = 200;
/// Both directions: per-tunnel cap each way (10 MB/s) and ports.
const BOTH_MBIT: u32 = 80;
const BOTH_BASE: u16 = 26000;

fn log(msg: &str) {
    eprintln!("[mtmux-bench] {msg}");
}

/// Run the rows selected by `only` ("unequal", "both"; empty: all).
pub fn run(only: &[String], rounds: usize, quick: bool) -> Vec<Figure> {
    let wants = |n: &str| only.is_empty() || only.iter().any(|o| o == n);
    let mut figs = Vec::new();
    if !wants("unequal") && !wants("both") {
        return figs;
    }
    if let Err(why) = crate::linkemu::can_emulate() {
        log(&format!("link emulation skipped: {why}"));
        return figs;
    }
    let secs = if quick { "4" } else { "8" };
    if wants("both") {
        match both(rounds, secs) {
            Ok(f) => figs.extend(f),
            Err(e) => log(&format!("both directions skipped: {e}")),
        }
    }
    if wants("unequal") {
        match unequal(rounds, secs) {
            Ok(f) => figs.extend(f),
            Err(e) => log(&format!("unequal delay skipped: {e}")),
        }
    }
    figs
}

fn s(x: impl ToString) -> String {
    x.to_string()
}

/// The unequal-delay rows.
fn unequal(rounds: usize, secs: &str) -> Result<Vec<Figure>, String> {
    let mut ns = Namespace::create()?;
    for i in 0..4 {
        ns.class(UNEQUAL_BASE + i, "dport", UNEQUAL_MBIT)?;
    }
    let _delay = ns.delay_port(UNEQUAL_MS, UNEQUAL_BASE + 3)?;
    let mut figs = Vec::new();
    for streams in [1usize, 8] {
        log(&format!(
            "unequal delay: {streams} stream(s), 4 tunnels of {} MB/s, one +{UNEQUAL_MS} ms each way",
            UNEQUAL_MBIT / 8
        ));
        let (mut three, mut four) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let run = |tunnels: usize| {
                ns.measure(&[s("mux-n"), s(UNEQUAL_BASE), s(tunnels), s(secs), s(streams), s("up")])
            };
            match (run(3), run(4)) {
                (Ok(a), Ok(b)) => {
                    log(&format!("  3 tunnels {a:.2} MB/s, 4 with the slow one {b:.2} MB/s"));
                    three.push(a);
                    four.push(b);
                }
                (a, b) => log(&format!("unequal delay round failed: {a:?} {b:?}")),
            }
        }
        if !four.is_empty() {
            figs.push(Figure {
                name: format!(
                    "unequal delay: {streams} stream{}, 4 tunnels capped at {} MB/s, one +{UNEQUAL_MS} ms each way",
                    if streams > 1 { "s" } else { "" },
                    UNEQUAL_MBIT / 8
                ),
                unit: "MB/s",
                value: median(&four),
                baseline: median(&three),
                baseline_name: "mtmux over the 3 others alone".into(),
                better: Better::Higher,
                target: 0.95,
                absolute: false,
                note: spread(&four),
            });
        }
    }
    Ok(figs)
}

/// The both-directions rows: each direction's goodput with both running, against one
/// direction alone.
fn both(rounds: usize, secs: &str) -> Result<Vec<Figure>, String> {
    let mut ns = Namespace::create()?;
    for i in 0..8 {
        ns.class(BOTH_BASE + i, "dport", BOTH_MBIT)?;
        ns.class(BOTH_BASE + i, "sport", BOTH_MBIT)?;
    }
    log(&format!(
        "both directions: 8 tunnels capped at {} MB/s each way, one stream each way",
        BOTH_MBIT / 8
    ));
    let (mut alone, mut up, mut down) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let one = ns.measure(&[s("mux-n"), s(BOTH_BASE), s(8), s(secs), s(1), s("up")]);
        let two = ns.run_inside(&[s("mux-n"), s(BOTH_BASE), s(8), s(secs), s(1), s("both")]);
        let two = two.and_then(|out| {
            let v: Vec<f64> = out.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            match v[..] {
                [u, d] => Ok((u, d)),
                _ => Err(format!("no result from both: {out}")),
            }
        });
        match (one, two) {
            (Ok(a), Ok((u, d))) => {
                log(&format!("  one way {a:.2} MB/s; both: up {u:.2} MB/s, down {d:.2} MB/s"));
                alone.push(a);
                up.push(u);
                down.push(d);
            }
            (a, b) => log(&format!("both directions round failed: {a:?} {b:?}")),
        }
    }
    if up.is_empty() {
        return Ok(Vec::new());
    }
    let fig = |way: &str, v: &[f64]| Figure {
        name: format!(
            "both directions at once, {way}: 1 stream each way, 8 tunnels capped at {} MB/s each way",
            BOTH_MBIT / 8
        ),
        unit: "MB/s",
        value: median(v),
        baseline: median(&alone),
        baseline_name: "1 stream one way alone".into(),
        better: Better::Higher,
        target: 0.9,
        absolute: false,
        note: spread(v),
    };
    Ok(vec![fig("up", &up), fig("down", &down)])
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{} rounds, {lo:.1}–{hi:.1}", v.len())
}

impl Namespace {
    /// Delay TCP packets to and from `port` (each way) by `ms` on the namespace's loopback,
    /// with the NFQUEUE helper (see [`Namespace::delay`](crate::linkemu)).
    fn delay_port(&mut self, ms: u32, port: u16) -> Result<crate::linkemu::Delay, String> {
        let helper = self.delay_helper(ms)?;
        let iptables = crate::linkemu::iptables();
        for dir in ["--dport", "--sport"] {
            run_cmd(&[
                "ip",
                "netns",
                "exec",
                &self.name,
                iptables,
                "-A",
                "INPUT",
                "-i",
                "lo",
                "-p",
                "tcp",
                dir,
                &port.to_string(),
                "-j",
                "NFQUEUE",
                "--queue-num",
                "0",
                "--queue-bypass",
            ])
            .map_err(|e| format!("{e} (apt-get install iptables)"))?;
        }
        Ok(helper)
    }
}

/// `mux-n BASE TUNNELS SECS STREAMS up|both`, inside the namespace: `STREAMS` streams from the
/// client to the server (and as many back with `both`); prints the goodput (MB/s) up, then
/// down with `both`.
pub fn internal_mux(args: &[String]) {
    let base: u16 = args[0].parse().unwrap();
    let tunnels: usize = args[1].parse().unwrap();
    let secs: f64 = args[2].parse().unwrap();
    let streams: usize = args[3].parse().unwrap();
    let both = args[4] == "both";
    let cfg = mtmux::Config { tunnels, ..Default::default() };
    let l = mtmux::Listener::bind(("127.0.0.1", base), &cfg).expect("bind");
    let c2 = cfg.clone();
    let client = thread::spawn(move || mtmux::dial(("127.0.0.1", base), &c2).expect("dial"));
    let server = l.accept().unwrap();
    let client = client.join().unwrap();
    // Streams opened by the client; with `both`, each carries data both ways.
    let mut pairs = Vec::new();
    for _ in 0..streams {
        let a = Arc::new(client.open_stream().unwrap());
        // The stream reaches the server with its first byte.
        (&*a).write_all_first();
        let b = Arc::new(server.accept_stream().unwrap());
        pairs.push((a, b));
    }
    let tracing = std::env::var_os("MTMUX_BENCH_TRACE");
    let (tc, ts) = (client.clone(), server.clone());
    if let Some(path) = tracing {
        let mut out = std::fs::File::create(path).expect("trace file");
        thread::spawn(move || loop {
            thread::sleep(std::time::Duration::from_millis(500));
            for (name, x) in [("client", &tc), ("server", &ts)] {
                let st = x.stats();
                let rtt: Vec<u64> =
                    st.tunnels.iter().map(|t| t.rtt.map_or(0, |r| r.as_millis() as u64)).collect();
                let sent: u64 = st.tunnels.iter().map(|t| t.bytes_sent >> 20).sum();
                let got: u64 = st.tunnels.iter().map(|t| t.bytes_received >> 20).sum();
                let _ = writeln!(
                    out,
                    "{name}: unacked {} KiB, rtt ms {rtt:?}, sent MiB {sent} received MiB {got}",
                    st.unacked_bytes >> 10
                );
            }
        });
    }
    // Each sender stops when its own receiver is done (a shared flag would stop a sender
    // whose receiver still waits for bytes).
    let flow = |from: Arc<mtmux::Stream>, to: Arc<mtmux::Stream>| {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let tx = thread::spawn(move || send_until(&*from, &d));
        let rx = thread::spawn(move || {
            let mut first = [0u8; 1];
            let _ = std::io::Read::read_exact(&mut &*to, &mut first);
            receive_for(&*to, secs, &done)
        });
        (tx, rx)
    };
    let up: Vec<_> = pairs.iter().map(|p| flow(p.0.clone(), p.1.clone())).collect();
    let down: Vec<_> =
        if both { pairs.iter().map(|p| flow(p.1.clone(), p.0.clone())).collect() } else { Vec::new() };
    let finish = |flows: Vec<(thread::JoinHandle<()>, thread::JoinHandle<f64>)>| {
        let mut senders = Vec::new();
        let mut rate = 0.0;
        for (tx, rx) in flows {
            rate += rx.join().unwrap();
            senders.push(tx);
        }
        (rate, senders)
    };
    let (up, mut senders) = finish(up);
    let (down, more) = finish(down);
    senders.extend(more);
    for p in &pairs {
        let _ = p.0.reset();
        let _ = p.1.reset();
    }
    for t in senders {
        let _ = t.join();
    }
    drop(pairs);
    let down = both.then_some(down);
    match down {
        Some(d) => println!("{up} {d}"),
        None => println!("{up}"),
    }
}

/// Write one byte so that the peer learns of the stream (the receiver skips it).
trait FirstByte {
    fn write_all_first(self);
}

impl FirstByte for &mtmux::Stream {
    fn write_all_first(self) {
        let mut w = self;
        std::io::Write::write_all(&mut w, &[0]).expect("first byte");
    }
}
