//! Benchmarks 7–8 under link emulation: a private network namespace whose loopback has an
//! `htb` class per tunnel port, so that **each TCP connection is capped** (recipe and pitfalls:
//! `shared/LINKEMU.md`). MTU 1500 inside the namespace; baselines are the measured goodput of
//! plain TCP connections through the same classes, in the same run.
//!
//! The parent process sets up the namespace and runs this binary inside it
//! (`ip netns exec NS mtmux-bench --internal-linkemu ...`) for each measurement.

use crate::report::{median, Better, Figure};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Per-connection cap: 20 MB/s.
const RATE_MBIT: u32 = 160;
/// Ports below the ephemeral range (LINKEMU.md pitfall).
const SCALING_BASE: u16 = 21000;
const HETERO_BASE: u16 = 22000;
const TCP_BASE: u16 = 23000;
/// Delay each way for benchmark 9 (20 ms round trip).
const DELAY_MS: u32 = 10;
/// Benchmark 9 caps each connection at 8 MB/s: the delay helper handles every packet in user
/// space and must not become the bottleneck (it moves ~95 MB/s on this machine class).
const LATENCY_MBIT: u32 = 64;
const LATENCY_BASE: u16 = 24000;
const LATENCY_TCP: u16 = 23001;

fn log(msg: &str) {
    eprintln!("[mtmux-bench] {msg}");
}

/// A network namespace with per-port htb classes; deleted on drop.
pub(crate) struct Namespace {
    pub(crate) name: String,
    next_class: u32,
    /// Packets on the loopback are delayed (benchmark 9).
    delayed: bool,
}

/// The packet-delay helper running in the namespace; stopped on drop.
pub(crate) struct Delay {
    child: std::process::Child,
}

impl Drop for Delay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn run_cmd(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{}: {e}", args[0]))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Delete namespaces left by benchmark processes that no longer run (killed by a signal,
/// so their `Drop` never ran); the qdiscs go with them.
fn remove_orphans() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix("mtmux-bench-") else { continue };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            log(&format!("removing namespace {name} left by an ended run"));
            let _ = run_cmd(&["ip", "netns", "del", name]);
        }
    }
}

impl Namespace {
    pub(crate) fn create() -> Result<Namespace, String> {
        remove_orphans();
        let name = format!("mtmux-bench-{}", std::process::id());
        run_cmd(&["ip", "netns", "add", &name])?;
        let ns = Namespace { name, next_class: 10, delayed: false };
        let n = ns.name.as_str();
        run_cmd(&["ip", "-n", n, "link", "set", "lo", "up"])?;
        run_cmd(&["ip", "-n", n, "link", "set", "lo", "mtu", "1500"])?;
        run_cmd(&[
            "tc", "-n", n, "qdisc", "add", "dev", "lo", "root", "handle", "1:", "htb", "default", "99",
            "r2q", "1000",
        ])?;
        run_cmd(&[
            "tc", "-n", n, "class", "add", "dev", "lo", "parent", "1:", "classid", "1:99", "htb", "rate",
            "10gbit",
        ])?;
        Ok(ns)
    }

    /// Cap traffic to destination `port` at `mbit`.
    fn cap(&mut self, port: u16, mbit: u32) -> Result<(), String> {
        self.class(port, "dport", mbit).map(|_| ())
    }

    /// An htb class with a `bfifo` of its own for the packets whose `dir` ("dport" or
    /// "sport") is `port`, at `mbit`; returns the class number (the `bfifo`'s handle).
    pub(crate) fn class(&mut self, port: u16, dir: &str, mbit: u32) -> Result<u32, String> {
        let id = self.next_class;
        self.next_class += 1;
        let n = self.name.clone();
        let class = format!("1:{id}");
        let rate = format!("{mbit}mbit");
        run_cmd(&[
            "tc", "-n", &n, "class", "add", "dev", "lo", "parent", "1:", "classid", &class, "htb", "rate",
            &rate, "ceil", &rate,
        ])?;
        run_cmd(&[
            "tc",
            "-n",
            &n,
            "qdisc",
            "add",
            "dev",
            "lo",
            "parent",
            &class,
            "handle",
            &format!("{id}:"),
            "bfifo",
            "limit",
            "150000",
        ])?;
        run_cmd(&[
            "tc",
            "-n",
            &n,
            "filter",
            "add",
            "dev",
            "lo",
            "parent",
            "1:",
            "protocol",
            "ip",
            "prio",
            "1",
            "u32",
            "match",
            "ip",
            dir,
            &port.to_string(),
            "0xffff",
            "flowid",
            &class,
        ])?;
        Ok(id)
    }

    /// Delay every TCP packet on the namespace's loopback by `ms` (each way): an NFQUEUE
    /// rule hands packets to this binary (`--internal-delay`), which holds them (no qdisc can
    /// delay on this kernel; see LINKEMU.md). The rule is on INPUT, after the loopback device
    /// has orphaned the packet: held in OUTPUT it would still count against the sending
    /// socket, and TCP Small Queues would throttle the sender to a fraction of the rate.
    fn delay(&mut self, ms: u32) -> Result<Delay, String> {
        let delay = self.delay_helper(ms)?;
        run_cmd(&[
            "ip",
            "netns",
            "exec",
            &self.name,
            iptables(),
            "-A",
            "INPUT",
            "-i",
            "lo",
            "-p",
            "tcp",
            "-j",
            "NFQUEUE",
            "--queue-num",
            "0",
            "--queue-bypass",
        ])
        .map_err(|e| format!("{e} (apt-get install iptables)"))?;
        self.delayed = true;
        Ok(delay)
    }

    /// Start the delay helper in the namespace, holding what NFQUEUE rule 0 hands it `ms`
    /// milliseconds (the caller adds the rules).
    pub(crate) fn delay_helper(&mut self, ms: u32) -> Result<Delay, String> {
        use std::io::BufRead;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(exe)
            .args(["--internal-delay", &ms.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the delay helper: {e}"))?;
        let mut line = String::new();
        let ready = child.stdout.take().map(|o| std::io::BufReader::new(o).read_line(&mut line));
        let delay = Delay { child };
        if !matches!(ready, Some(Ok(_))) || line.trim() != "ready" {
            return Err("the delay helper did not start (NFQUEUE unavailable?)".into());
        }
        Ok(delay)
    }

    /// Run this binary inside the namespace; returns its last stdout line as a number.
    pub(crate) fn measure(&self, args: &[String]) -> Result<f64, String> {
        self.run_inside(args)?
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("no result from {args:?}"))
    }

    /// Run this binary inside the namespace (`--internal-linkemu ARGS`); returns its stdout.
    pub(crate) fn run_inside(&self, args: &[String]) -> Result<String, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(exe)
            .arg("--internal-linkemu")
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("measurement {args:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = run_cmd(&["ip", "netns", "del", &self.name]);
    }
}

/// The iptables command to use (the legacy one where both exist, as NFQUEUE needs).
pub(crate) fn iptables() -> &'static str {
    if Command::new("iptables-legacy").arg("-V").output().is_ok() {
        "iptables-legacy"
    } else {
        "iptables"
    }
}

pub(crate) fn can_emulate() -> Result<(), String> {
    // Safety-free check: geteuid has no preconditions, but it is a libc call; the benchmark
    // crate is not the library, so a tiny unsafe block here is acceptable.
    #[allow(unsafe_code)]
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err("needs root (network namespaces and tc)".into());
    }
    for tool in ["ip", "tc"] {
        if Command::new(tool).arg("-V").output().is_err() {
            return Err(format!("`{tool}` not found (iproute2)"));
        }
    }
    Ok(())
}

/// Run the link-emulation benchmarks selected by `only` (empty: all).
pub fn run(only: &[String], rounds: usize, quick: bool) -> Vec<Figure> {
    if let Err(why) = can_emulate() {
        log(&format!("link emulation skipped: {why}"));
        return Vec::new();
    }
    let mut ns = match Namespace::create() {
        Ok(ns) => ns,
        Err(e) => {
            log(&format!("link emulation skipped: cannot create a namespace: {e}"));
            return Vec::new();
        }
    };
    let secs = if quick { "2" } else { "4" };
    let wants = |n: &str| only.is_empty() || only.iter().any(|o| o == n);
    let mut figs = Vec::new();
    let setup = (|| -> Result<(), String> {
        for i in 0..8 {
            ns.cap(SCALING_BASE + i, RATE_MBIT)?;
        }
        for (i, r) in [RATE_MBIT, RATE_MBIT, RATE_MBIT, RATE_MBIT / 4].iter().enumerate() {
            ns.cap(HETERO_BASE + i as u16, *r)?;
            ns.cap(TCP_BASE + 10 + i as u16, *r)?;
        }
        for i in 0..8 {
            ns.cap(LATENCY_BASE + i, LATENCY_MBIT)?;
        }
        ns.cap(LATENCY_TCP, LATENCY_MBIT)?;
        ns.cap(TCP_BASE, RATE_MBIT)
    })();
    if let Err(e) = setup {
        log(&format!("link emulation skipped: {e}"));
        return Vec::new();
    }
    let s = |x: &str| x.to_string();
    if wants("scaling") {
        figs.extend(scaling(&ns, rounds, secs, "scaling", 0.95, SCALING_BASE, TCP_BASE, RATE_MBIT));
    }
    if wants("heterogeneous") {
        log("heterogeneous: 4 tunnels capped at R, R, R, R/4");
        let ports: Vec<String> = (0..4).map(|i| (TCP_BASE + 10 + i).to_string()).collect();
        let mut sum = Vec::new();
        let mut mux = Vec::new();
        for _ in 0..rounds {
            let mut args = vec![s("tcp-parallel"), s(secs)];
            args.extend(ports.iter().cloned());
            match (ns.measure(&args), ns.measure(&[s("mux"), HETERO_BASE.to_string(), s("4"), s(secs)])) {
                (Ok(a), Ok(b)) => {
                    sum.push(a);
                    mux.push(b);
                }
                (a, b) => log(&format!("heterogeneous round failed: {a:?} {b:?}")),
            }
        }
        if !mux.is_empty() {
            figs.push(Figure {
                name: format!(
                    "heterogeneous: 4 tunnels capped at {0}, {0}, {0}, {1} MB/s",
                    RATE_MBIT / 8,
                    RATE_MBIT / 32
                ),
                unit: "MB/s",
                value: median(&mux),
                baseline: median(&sum),
                baseline_name: "sum of 4 capped TCP conns".into(),
                better: Better::Higher,
                target: 0.9,
                absolute: false,
                note: String::new(),
            });
        }
    }
    if wants("latency") {
        match ns.delay(DELAY_MS) {
            Ok(_delay) => {
                let secs = if quick { "4" } else { "8" };
                figs.extend(scaling(
                    &ns,
                    rounds,
                    secs,
                    "latency",
                    0.9,
                    LATENCY_BASE,
                    LATENCY_TCP,
                    LATENCY_MBIT,
                ));
            }
            Err(e) => log(&format!("latency benchmark skipped: {e}")),
        }
    }
    drop(ns);
    figs
}

/// Benchmark 7 (and 9 with a delay set): one stream over N = 1, 2, 4, 8 capped tunnels
/// against N times the goodput of one capped TCP connection.
#[allow(clippy::too_many_arguments)]
fn scaling(
    ns: &Namespace,
    rounds: usize,
    secs: &str,
    label: &str,
    target: f64,
    base: u16,
    tcp_port: u16,
    mbit: u32,
) -> Vec<Figure> {
    let s = |x: &str| x.to_string();
    let rtt = if ns.delayed { format!(", +{} ms RTT", 2 * DELAY_MS) } else { String::new() };
    let mut figs = Vec::new();
    for n in [1usize, 2, 4, 8] {
        log(&format!("{label}: 1 stream over {n} capped tunnel(s) of {} MB/s{rtt}", mbit / 8));
        let mut one = Vec::new();
        let mut mux = Vec::new();
        for _ in 0..rounds {
            match (
                ns.measure(&[s("tcp"), tcp_port.to_string(), s(secs)]),
                ns.measure(&[s("mux"), base.to_string(), n.to_string(), s(secs)]),
            ) {
                (Ok(a), Ok(b)) => {
                    log(&format!("  1 capped TCP conn {a:.2} MB/s, mtmux {b:.2} MB/s"));
                    one.push(a);
                    mux.push(b);
                }
                (a, b) => log(&format!("{label} round failed: {a:?} {b:?}")),
            }
        }
        if !mux.is_empty() {
            figs.push(Figure {
                name: format!(
                    "{label}: 1 stream, {n} tunnel{} capped at {} MB/s each{rtt}",
                    if n > 1 { "s" } else { "" },
                    mbit / 8
                ),
                unit: "MB/s",
                value: median(&mux),
                baseline: n as f64 * median(&one),
                baseline_name: format!("{n} × 1 capped TCP conn"),
                better: Better::Higher,
                target,
                absolute: false,
                note: format!("1 capped conn: {:.2} MB/s", median(&one)),
            });
        }
    }
    figs
}

/// Receive from `r` for `secs` seconds; returns the goodput (MB/s) after a warm-up of a
/// quarter of the time (slow start), measured at the receiver.
pub(crate) fn receive_for<R: Read>(mut r: R, secs: f64, done: &AtomicBool) -> f64 {
    let mut buf = vec![0u8; 64 * 1024];
    let start = Instant::now();
    let warm = Duration::from_secs_f64(secs / 4.0);
    let end = Duration::from_secs_f64(secs);
    let mut counted = 0u64;
    let mut t0 = None;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let e = start.elapsed();
        if e >= warm {
            if t0.is_none() {
                t0 = Some(Instant::now());
            } else {
                counted += n as u64;
            }
        }
        if e >= end {
            break;
        }
    }
    done.store(true, Ordering::SeqCst);
    let t = t0.map(|t| t.elapsed().as_secs_f64()).unwrap_or(f64::NAN);
    counted as f64 / t / 1e6
}

pub(crate) fn send_until<W: Write>(mut w: W, done: &AtomicBool) {
    let buf = vec![0x42u8; 64 * 1024];
    while !done.load(Ordering::SeqCst) {
        if w.write_all(&buf).is_err() {
            break;
        }
    }
}

/// One plain TCP flow to `port` for `secs` (MB/s).
fn tcp_flow(port: u16, secs: f64) -> f64 {
    let l = TcpListener::bind(("127.0.0.1", port)).expect("bind");
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let sender = thread::spawn(move || {
        let c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        send_until(c, &d2);
    });
    let (s, _) = l.accept().unwrap();
    let rate = receive_for(&s, secs, &done);
    drop(s);
    sender.join().unwrap();
    rate
}

/// The delay helper (`--internal-delay MS`): holds every queued packet MS milliseconds, then
/// lets it through. Runs until killed.
pub fn delay_helper(ms: u64) {
    let fail = |what: &str, e: std::io::Error| -> ! {
        eprintln!("delay helper: {what}: {e}");
        std::process::exit(1)
    };
    let mut q = nfq::Queue::open().unwrap_or_else(|e| fail("open", e));
    q.bind(0).unwrap_or_else(|e| fail("bind", e));
    // Metadata only: the verdict does not need the packet's bytes.
    q.set_copy_range(0, 0).unwrap_or_else(|e| fail("copy range", e));
    q.set_queue_max_len(0, 1 << 16).unwrap_or_else(|e| fail("queue length", e));
    q.set_nonblocking(true);
    println!("ready");
    let _ = std::io::stdout().flush();
    let hold = Duration::from_millis(ms);
    // The crate exposes no descriptor to poll, so the helper checks every `tick`; packets
    // leave within a tick of their due time.
    let tick = Duration::from_micros(200);
    let mut held: std::collections::VecDeque<(Instant, nfq::Message)> = std::collections::VecDeque::new();
    loop {
        loop {
            match q.recv() {
                Ok(m) => held.push_back((Instant::now(), m)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => fail("recv", e),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(t, _)| now.duration_since(*t) >= hold) {
            let (_, mut m) = held.pop_front().expect("front exists");
            m.set_verdict(nfq::Verdict::Accept);
            q.verdict(m).unwrap_or_else(|e| fail("verdict", e));
        }
        let next = held.front().map(|(t, _)| (*t + hold).saturating_duration_since(now)).unwrap_or(tick);
        thread::sleep(next.min(tick));
    }
}

/// The measurement commands run inside the namespace; each prints one number (MB/s), except
/// the failover runs, which print their own report.
pub fn internal(args: &[String]) {
    let secs = |i: usize| args[i].parse::<f64>().expect("seconds");
    let rate = match args[0].as_str() {
        "failover" => return crate::failover::internal(&args[1..]),
        "mux-n" => return crate::paths::internal_mux(&args[1..]),
        "tcp" => tcp_flow(args[1].parse().unwrap(), secs(2)),
        "tcp-parallel" => {
            let secs = secs(1);
            let flows: Vec<_> = args[2..]
                .iter()
                .map(|p| {
                    let p: u16 = p.parse().unwrap();
                    thread::spawn(move || tcp_flow(p, secs))
                })
                .collect();
            flows.into_iter().map(|h| h.join().unwrap()).sum()
        }
        "mux" => {
            let base: u16 = args[1].parse().unwrap();
            let tunnels: usize = args[2].parse().unwrap();
            let secs = secs(3);
            let cfg = mtmux::Config { tunnels, ..Default::default() };
            let l = mtmux::Listener::bind(("127.0.0.1", base), &cfg).expect("bind");
            let c2 = cfg.clone();
            let done = Arc::new(AtomicBool::new(false));
            let d2 = done.clone();
            let client = thread::spawn(move || {
                let s = mtmux::dial(("127.0.0.1", base), &c2).expect("dial");
                let st = s.open_stream().unwrap();
                send_until(&st, &d2);
                s
            });
            let server = l.accept().unwrap();
            let st = server.accept_stream().unwrap();
            let rate = receive_for(&st, secs, &done);
            let stats = server.tunnel_stats();
            eprintln!(
                "per-tunnel MB received: {:?}",
                stats
                    .iter()
                    .map(|t| t.bytes_received as f64 / 1e6)
                    .map(|x| (x * 10.0).round() / 10.0)
                    .collect::<Vec<_>>()
            );
            drop(st);
            drop(server);
            drop(client.join().unwrap());
            rate
        }
        other => panic!("unknown internal measurement {other}"),
    };
    println!("{rate}");
}
