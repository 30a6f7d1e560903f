//! What wrong-key attempts cost a legitimate session (issue 9): a listener with a pre-shared
//! key serves one legitimate session (one stream over 4 tunnels, bulk) while a separate
//! attacker process makes `rate` wrong-key handshakes per second (connect, HELLO with the KEY
//! flag, read the challenge, send a random proof, read the refusal, close). Rounds alternate
//! without and with the attacker (ABBA), medians and ranges reported; then the attacker runs
//! alone and the server process's CPU time per refused attempt is measured (the attacker's
//! own CPU is in its own process and not counted).
//!
//! `mtmux-bench --attack [--rate N] [--rounds N] [--seconds S] [--capped MBIT]`
//!
//! With `--capped MBIT` it runs in a private network namespace whose loopback caps each
//! legitimate tunnel at MBIT (an htb class per tunnel port, for packets to 127.0.0.1: the
//! internet case, where the network and not the CPU limits the session), while the attacker
//! connects to 127.0.0.2 (uncapped: its flows do not share the victim's bottleneck).

use mtmux::proto::handshake::{BundleId, Hello, HelloKind, HELLO_FLAG_KEY, HELLO_LEN};
use mtmux::{Config, Key, Listener};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const KEY: &str = "the legitimate pre-shared key, 32B";

fn cpu_seconds() -> f64 {
    // Safety: getrusage writes a valid rusage into the zeroed struct we own.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The attacker process: `threads` workers pacing `rate` attempts per second for `secs`.
/// Prints the attempts completed (refused as expected) and the failures.
pub fn attacker(addr: SocketAddr, rate: u64, secs: f64) {
    let threads = 8u64;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let hs: Vec<_> = (0..threads)
        .map(|w| {
            let (done, failed) = (done.clone(), failed.clone());
            thread::spawn(move || {
                let every = Duration::from_secs_f64(threads as f64 / rate as f64);
                let mut next = Instant::now() + every.mul_f64(w as f64 / threads as f64);
                let mut n = w as u8;
                while Instant::now() < end {
                    let now = Instant::now();
                    if now < next {
                        thread::sleep(next - now);
                    }
                    next += every;
                    n = n.wrapping_add(1);
                    if one_attempt(addr, n) {
                        done.fetch_add(1, Relaxed);
                    } else {
                        failed.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    println!("{} {}", done.load(Relaxed), failed.load(Relaxed));
}

/// One wrong-key handshake; true when the server answered with a challenge and a refusal.
fn one_attempt(addr: SocketAddr, n: u8) -> bool {
    let Ok(mut c) = TcpStream::connect(addr) else { return false };
    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
    let hello = Hello {
        kind: HelloKind::Join,
        bundle: BundleId([n; 16]),
        index: 0,
        count: 4,
        flags: HELLO_FLAG_KEY,
        params: Config::default().params(),
        generation: 0,
        nonce: [n; 16],
    };
    let mut challenge = [0u8; HELLO_LEN + 32];
    if c.write_all(&hello.encode()).is_err() || c.read_exact(&mut challenge).is_err() {
        return false;
    }
    if c.write_all(&[n; 32]).is_err() {
        return false;
    }
    let mut refusal = [0u8; HELLO_LEN];
    c.read_exact(&mut refusal).is_ok() && refusal[5] == 12
}

fn spawn_attacker(addr: SocketAddr, rate: u64, secs: f64) -> Child {
    Command::new(std::env::current_exe().expect("own path"))
        .args(["--internal-attacker", &addr.to_string(), &rate.to_string(), &secs.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the attacker")
}

fn attacker_result(child: Child) -> (u64, u64) {
    let out = child.wait_with_output().expect("attacker");
    let s = String::from_utf8_lossy(&out.stdout);
    let mut it = s.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

/// Ports of the capped run (below the ephemeral range).
const CAPPED_BASE: u16 = 25000;

/// Set up the namespace and run this benchmark inside it.
fn capped(mbit: u32, args: &[String]) {
    use crate::linkemu::{run_cmd, Namespace};
    let ns = Namespace::create().expect("network namespace (needs root)");
    let n = ns.name.as_str();
    for i in 0..4u16 {
        let (id, port) = (50 + i, CAPPED_BASE + i);
        let class = format!("1:{id}");
        let rate = format!("{mbit}mbit");
        run_cmd(&[
            "tc", "-n", n, "class", "add", "dev", "lo", "parent", "1:", "classid", &class, "htb", "rate",
            &rate, "ceil", &rate,
        ])
        .unwrap();
        run_cmd(&[
            "tc",
            "-n",
            n,
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
        ])
        .unwrap();
        run_cmd(&[
            "tc",
            "-n",
            n,
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
            "dst",
            "127.0.0.1/32",
            "match",
            "ip",
            "dport",
            &port.to_string(),
            "0xffff",
            "flowid",
            &class,
        ])
        .unwrap();
    }
    let exe = std::env::current_exe().expect("own path");
    let status = Command::new("ip")
        .args(["netns", "exec", n])
        .arg(exe)
        .arg("--attack")
        .arg("--in-namespace")
        .args(args)
        .status()
        .expect("run inside the namespace");
    assert!(status.success(), "the capped run failed");
    drop(ns);
}

pub fn run(args: &[String]) {
    let mut rate = 10_000u64;
    let mut rounds = 5usize;
    let mut secs = 3.0f64;
    let mut in_ns = false;
    let mut cap = None;
    let mut rest = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || {
            let x = it.next().expect("a value");
            if a != "--capped" {
                rest.extend([a.clone(), x.clone()]);
            }
            x.parse::<f64>().expect("a number")
        };
        match a.as_str() {
            "--rate" => rate = v() as u64,
            "--rounds" => rounds = v() as usize,
            "--seconds" => secs = v(),
            "--capped" => cap = Some(v() as u32),
            "--in-namespace" => in_ns = true,
            other => panic!("unknown --attack argument {other}"),
        }
    }
    if let Some(mbit) = cap {
        return capped(mbit, &rest);
    }
    let cfg = Config { tunnels: 4, key: Some(Key::new(KEY).unwrap()), ..Default::default() };
    let (l, addr, target) = if in_ns {
        let l = Listener::bind(("0.0.0.0", CAPPED_BASE), &cfg).expect("bind");
        let victim: SocketAddr = ([127, 0, 0, 1], CAPPED_BASE).into();
        (l, victim, SocketAddr::from(([127, 0, 0, 2], CAPPED_BASE)))
    } else {
        let l = Listener::bind("127.0.0.1:0", &cfg).expect("bind");
        let a = l.local_addr();
        (l, a, a)
    };
    let c2 = cfg.clone();
    let client = thread::spawn(move || mtmux::dial(addr, &c2).expect("dial"));
    let server = l.accept_timeout(Duration::from_secs(10)).expect("accept");
    let client = client.join().unwrap();
    let mut tx = client.open_stream().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let writer = thread::spawn(move || {
        let buf = vec![0x5au8; 64 << 10];
        while !s2.load(Relaxed) {
            if tx.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut rx = server.accept_stream().unwrap();
    let mut buf = vec![0u8; 256 << 10];
    let mut measure = |d: f64| {
        let end = Instant::now() + Duration::from_secs_f64(d);
        let start = Instant::now();
        let mut got = 0u64;
        while Instant::now() < end {
            got += rx.read(&mut buf).expect("read") as u64;
        }
        got as f64 / start.elapsed().as_secs_f64() / 1e6
    };
    measure(1.0);
    let drain = |l: &Listener| while l.next_refusal(Some(Duration::ZERO)).is_some() {};
    let (mut base, mut hit, mut rates) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..rounds * 2 {
        let attacked = matches!(r % 4, 1 | 2);
        if attacked {
            let child = spawn_attacker(target, rate, secs + 1.0);
            thread::sleep(Duration::from_millis(500));
            hit.push(measure(secs));
            let (ok, failed) = attacker_result(child);
            rates.push(ok as f64 / (secs + 1.0));
            if failed > 0 {
                eprintln!("[attack] round {r}: {failed} attempts did not get their refusal");
            }
        } else {
            base.push(measure(secs));
        }
        drain(&l);
    }
    stop.store(true, Relaxed);
    drop(rx);
    let _ = writer.join();
    drop(client);
    drop(server);
    // The attacker alone: the server process's CPU per refused attempt.
    let before = (cpu_seconds(), l.refusal_counts().0);
    let child = spawn_attacker(target, rate, secs);
    let (ok, _) = attacker_result(child);
    let cpu = cpu_seconds() - before.0;
    let refused = l.refusal_counts().0 - before.1;
    let (lo_b, hi_b) =
        (base.iter().cloned().fold(f64::MAX, f64::min), base.iter().cloned().fold(0.0, f64::max));
    let (lo_h, hi_h) =
        (hit.iter().cloned().fold(f64::MAX, f64::min), hit.iter().cloned().fold(0.0, f64::max));
    let (mb, mh) = (median(&mut base), median(&mut hit));
    let link = if in_ns { "each tunnel capped by htb (see --capped)" } else { "loopback, uncapped" };
    println!("wrong-key attempts vs a legitimate session (1 stream, 4 tunnels, {link}, {rounds} rounds each, ABBA)");
    println!("  without attack: {mb:.0} MB/s (range {lo_b:.0}-{hi_b:.0})");
    println!(
        "  under attack:   {mh:.0} MB/s (range {lo_h:.0}-{hi_h:.0}), attacker completed {:.0} attempts/s (asked {rate})",
        median(&mut rates)
    );
    println!("  ratio: {:.3} (throughput kept)", mh / mb);
    println!(
        "  attacker alone: {ok} attempts, {refused} refusals noted, server CPU {:.1} µs per attempt ({:.1}% of one core at {rate}/s)",
        cpu * 1e6 / ok.max(1) as f64,
        cpu * 1e6 / ok.max(1) as f64 * rate as f64 / 1e6 * 100.0
    );
}
