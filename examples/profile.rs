//! A driver for profiling the latency paths, one workload per run so that `perf stat` and
//! `perf record` see only it (the benchmark suite interleaves many):
//!
//! ```text
//! cargo build --release --example profile
//! taskset -c 0 perf stat -e context-switches target/release/examples/profile pingpong 4 20000
//! taskset -c 0 perf stat -e context-switches target/release/examples/profile churn 4 20000
//! ```
//! `pingpong TUNNELS N`: N round trips of 64 bytes over one stream; `churn TUNNELS N`: N times
//! open a stream, 64-byte echo, close. `raw-pingpong N` and `raw-churn N` do the same over
//! plain TCP. `bulk TUNNELS MIB`: one stream, 64 KiB writes; `many TUNNELS MIB`: 16 such streams at once. Prints the median round trip (µs) or the rate (per second).

use mtmux::{Config, Listener};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Instant;

fn echo<S: Read + Write>(mut s: S) {
    let mut b = [0u8; 64];
    while s.read_exact(&mut b).is_ok() {
        if s.write_all(&b).is_err() {
            break;
        }
    }
}

/// "median X µs p99 Y µs".
fn median(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: usize| v[v.len() * p / 1000];
    format!("{:.2} µs p90 {:.2} p95 {:.2} p99 {:.2} p99.9 {:.2}", q(500), q(900), q(950), q(990), q(999))
}

fn round_trips<S: Read + Write>(s: &mut S, n: usize) -> String {
    let mut b = [7u8; 64];
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&b).unwrap();
        s.read_exact(&mut b).unwrap();
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    median(v)
}

/// `n` times: open a connection with `open`, write 64 bytes, read the echo, close. Returns
/// connections per second.
fn churn<S: Read + Write>(n: usize, mut open: impl FnMut() -> S) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        let mut c = open();
        let mut b = [1u8; 64];
        c.write_all(&b).unwrap();
        c.read_exact(&mut b).unwrap();
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| args.get(i).and_then(|a| a.parse::<usize>().ok());
    let usage = "usage: profile pingpong|churn|bulk|many TUNNELS N | raw-pingpong|raw-churn N";
    match args.first().map(String::as_str) {
        Some(w @ ("raw-pingpong" | "raw-churn")) => {
            let n = num(1).expect(usage);
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            if w == "raw-pingpong" {
                let srv = thread::spawn(move || echo(l.accept().unwrap().0));
                let mut c = TcpStream::connect(addr).unwrap();
                c.set_nodelay(true).unwrap();
                println!("median {}", round_trips(&mut c, n));
                drop(c);
                srv.join().unwrap();
            } else {
                let srv = thread::spawn(move || {
                    for _ in 0..n {
                        let s = l.accept().unwrap().0;
                        s.set_nodelay(true).unwrap();
                        echo(s);
                    }
                });
                let rate = churn(n, || {
                    let c = TcpStream::connect(addr).unwrap();
                    c.set_nodelay(true).unwrap();
                    c
                });
                println!("{rate:.0} connections/s");
                srv.join().unwrap();
            }
        }
        Some(w @ ("pingpong" | "churn" | "bulk" | "many")) => {
            let (tunnels, n) = (num(1).expect(usage), num(2).expect(usage));
            let cfg = Config { tunnels, ..Default::default() };
            let l = Listener::bind("127.0.0.1:0", &cfg).unwrap();
            let addr = l.local_addr();
            let c = cfg.clone();
            let dial = thread::spawn(move || mtmux::dial(addr, &c).unwrap());
            let server = l.accept().unwrap();
            let client = dial.join().unwrap();
            if w == "many" {
                // 16 streams of n MiB each, 64 KiB writes, a writer and a reader thread each.
                let total = n as u64 * (1 << 20);
                let mut threads = Vec::new();
                let t = Instant::now();
                for _ in 0..16 {
                    let mut a = client.open_stream().unwrap();
                    a.write_all(b"!").unwrap();
                    let mut b = server.accept_stream().unwrap();
                    threads.push(thread::spawn(move || {
                        let buf = vec![0x5au8; 64 * 1024];
                        for _ in 0..total / buf.len() as u64 {
                            a.write_all(&buf).unwrap();
                        }
                    }));
                    threads.push(thread::spawn(move || {
                        let mut buf = vec![0u8; 64 * 1024];
                        let mut got = 0u64;
                        while got < total + 1 {
                            got += b.read(&mut buf).unwrap() as u64;
                        }
                    }));
                }
                for h in threads {
                    h.join().unwrap();
                }
                println!("{:.0} MB/s", 16.0 * total as f64 / t.elapsed().as_secs_f64() / 1e6);
            } else if w == "bulk" {
                // n MiB over one stream, 64 KiB writes.
                let mut a = client.open_stream().unwrap();
                a.write_all(b"!").unwrap();
                let mut b = server.accept_stream().unwrap();
                let mut one = [0u8; 1];
                b.read_exact(&mut one).unwrap();
                let total = n as u64 * (1 << 20);
                let t = Instant::now();
                let w = thread::spawn(move || {
                    let buf = vec![0x5au8; 64 * 1024];
                    for _ in 0..total / buf.len() as u64 {
                        a.write_all(&buf).unwrap();
                    }
                    a
                });
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = 0u64;
                while got < total {
                    got += b.read(&mut buf).unwrap() as u64;
                }
                println!("{:.0} MB/s", total as f64 / t.elapsed().as_secs_f64() / 1e6);
                drop(w.join().unwrap());
            } else if w == "pingpong" {
                let mut a = client.open_stream().unwrap();
                a.write_all(&[7u8; 64]).unwrap();
                let srv = thread::spawn(move || echo(server.accept_stream().unwrap()));
                let mut b = [0u8; 64];
                a.read_exact(&mut b).unwrap();
                println!("median {}", round_trips(&mut a, n));
                drop(a);
                srv.join().unwrap();
            } else {
                let srv = thread::spawn(move || {
                    for _ in 0..n {
                        echo(server.accept_stream().unwrap());
                    }
                    server
                });
                let rate = churn(n, || client.open_stream().unwrap());
                println!("{rate:.0} streams/s");
                let server = srv.join().unwrap();
                // Frames on the wire per stream, each way (every frame costs the receiving
                // side a reader wake-up unless it shares a read with another).
                let frames = |s: &mtmux::Session| {
                    let st = s.stats();
                    (st.tunnels.iter().map(|t| t.frames_sent).sum::<u64>(), st.acks_sent)
                };
                let ((cf, ca), (sf, sa)) = (frames(&client), frames(&server));
                println!(
                    "frames per stream: client {:.2} (ACKs {:.2}), server {:.2} (ACKs {:.2})",
                    cf as f64 / n as f64,
                    ca as f64 / n as f64,
                    sf as f64 / n as f64,
                    sa as f64 / n as f64
                );
            }
        }
        _ => eprintln!("{usage}"),
    }
}
