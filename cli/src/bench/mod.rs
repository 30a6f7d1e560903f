//! `mtmux bench`: throughput of one session over N tunnels, and of the same transfer over one
//! plain TCP connection for comparison.
//!
//! A bench server (`--server`, or a thread of this process by default) serves every stream
//! and every plain TCP connection with the [`wire`] protocol. The client opens `--streams`
//! streams that transfer at once while a reporter thread prints, every `--interval`, the
//! session's and each tunnel's throughput. Transfers are timed at the receiver (see
//! [`transfer`]); then the same transfer runs over one TCP connection to the server's
//! baseline port.

mod report;
mod transfer;
mod wire;

use crate::args::{BenchArgs, Direction};
use crate::net::port_layout;
use crate::units::fmt_bytes;
use crate::{end_reason, spawn, validated, Fatal};
use log::{info, log, warn, Level};
use mtmux::{Listener, Session};
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use wire::Limit;

/// Default length of a run when neither `--bytes` nor `--duration` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(5);

/// How the summary names the comparison.
const BASELINE_LABEL: &str = "plain TCP, 1 connection";

/// Stream limit of bench sessions: above `--streams` plus the info stream.
const MAX_STREAMS: usize = 8192;

/// Run `mtmux bench`: a bench server (`--server`, until stopped), a client against a remote
/// one (`--client`), or both in this process.
pub fn run(a: BenchArgs) -> Result<(), Fatal> {
    let cfg = validated(a.tunnel.config(MAX_STREAMS), None)?;
    if a.interval.is_zero() {
        return Err(Fatal::usage("--interval must be greater than zero"));
    }
    if a.round_time.is_zero() {
        return Err(Fatal::usage("--round-time must be greater than zero"));
    }
    if let Some(listen) = &a.server {
        let server = BenchServer::start(listen, &cfg, a.tcp_port, !a.no_baseline, Level::Info)?;
        let addrs = server.listener.local_addrs();
        info!(
            "bench server listening on {} ({}, up to {} tunnels per client); plain TCP baseline on {}",
            addrs[0],
            port_layout(addrs),
            cfg.tunnels,
            server.baseline.map(|a| a.to_string()).unwrap_or_else(|| "none".into())
        );
        server.accept_sessions(None);
        return Ok(());
    }
    let plan = Plan {
        streams: a.streams as usize,
        direction: a.direction,
        total: match (a.bytes, a.duration) {
            (Some(b), _) => Limit::Bytes(b),
            (None, d) => Limit::Time(d.unwrap_or(DEFAULT_DURATION)),
        },
        interval: a.interval,
        baseline: !a.no_baseline,
        rounds: a.rounds as usize,
        round: match (a.bytes, a.duration) {
            (Some(b), _) => Limit::Bytes(b),
            (None, d) => Limit::Time(a.round_time.min(d.unwrap_or(DEFAULT_DURATION))),
        },
        json: a.json,
    };
    match &a.client {
        Some(addr) => {
            let session = mtmux::dial(addr.as_str(), &cfg)
                .map_err(|e| Fatal::new(format!("cannot reach the bench server at {addr}: {e}")))?;
            let result = plan.run(&session, None);
            let _ = session.close();
            result
        }
        None => {
            // Loopback, port 0: any free ports.
            let server = BenchServer::start("127.0.0.1:0", &cfg, None, !a.no_baseline, Level::Debug)?;
            let addr = server.listener.local_addr();
            let listener = server.listener.clone();
            let (tx, rx) = mpsc::channel();
            spawn("bench-server", move || server.accept_sessions(Some(tx)));
            let session =
                mtmux::dial(addr, &cfg).map_err(|e| Fatal::new(format!("in-process bench server: {e}")))?;
            let peer = rx
                .recv_timeout(cfg.handshake_timeout)
                .map_err(|_| Fatal::new("in-process bench server: no session"))?;
            let result = plan.run(&session, Some(&peer));
            let _ = session.close();
            listener.close();
            result
        }
    }
}

/// `127.0.0.1:7000-7003` for a port range, `127.0.0.1:7000` for one port.
fn describe(addrs: &[SocketAddr]) -> String {
    match addrs {
        [first, .., last] if first.port() != last.port() => format!("{first}-{}", last.port()),
        [first, ..] => first.to_string(),
        [] => "?".into(),
    }
}

/// Serves bench streams on sessions, and plain TCP baseline connections.
struct BenchServer {
    listener: std::sync::Arc<Listener>,
    baseline: Option<SocketAddr>,
    /// Level of the per-session and per-stream log lines.
    events: Level,
}

impl BenchServer {
    /// Listen for bundles at `listen` and, with `baseline`, for plain TCP on `tcp_port` (by
    /// default the port after the tunnel ports, or any free port).
    fn start(
        listen: &str,
        cfg: &mtmux::Config,
        tcp_port: Option<u16>,
        baseline: bool,
        events: Level,
    ) -> Result<BenchServer, Fatal> {
        let listener =
            Listener::bind(listen, cfg).map_err(|e| Fatal::new(format!("bench server on {listen}: {e}")))?;
        let addrs = listener.local_addrs();
        let ip = addrs[0].ip();
        let tcp = match (baseline, tcp_port) {
            (false, _) => None,
            (true, Some(p)) => Some(TcpListener::bind((ip, p)).map_err(|e| {
                Fatal::new(format!("cannot listen on {} (--tcp-port): {e}", SocketAddr::new(ip, p)))
            })?),
            (true, None) => {
                let next = addrs[addrs.len() - 1].port().checked_add(1).unwrap_or(0);
                Some(
                    TcpListener::bind((ip, next))
                        .or_else(|_| TcpListener::bind((ip, 0)))
                        .map_err(|e| Fatal::new(format!("cannot listen for the plain TCP baseline: {e}")))?,
                )
            }
        };
        let baseline = match &tcp {
            Some(l) => Some(l.local_addr().map_err(|e| Fatal::new(format!("baseline listener: {e}")))?),
            None => None,
        };
        if let Some(tcp) = tcp {
            spawn("bench-tcp", move || accept_baseline(tcp, events));
        }
        Ok(BenchServer { listener: std::sync::Arc::new(listener), baseline, events })
    }

    /// Serve sessions until the listener closes; each new session is also sent to `publish`.
    fn accept_sessions(self, publish: Option<mpsc::Sender<Session>>) {
        let port = self.baseline.map_or(0, |a| a.port());
        let events = self.events;
        let mut next_id = 1u64;
        while let Ok(session) = self.listener.accept() {
            let id = next_id;
            next_id += 1;
            let peer = session.peer_addrs().first().map_or_else(|| "?".into(), |a| a.to_string());
            log!(events, "session {id} from {peer}: {} tunnels", session.num_tunnels());
            if let Some(p) = &publish {
                let _ = p.send(session.clone());
            }
            spawn("bench-session", move || {
                let err = loop {
                    match session.accept_stream() {
                        Ok(stream) => spawn("bench-stream", move || match transfer::serve(&stream, port) {
                            Ok(req) => log!(events, "session {id} stream {}: served {req}", stream.id()),
                            Err(e) => warn!("session {id} stream {}: {}", stream.id(), mtmux::Error::from(e)),
                        }),
                        Err(e) => break e,
                    }
                };
                let (Ok(reason) | Err(reason)) = end_reason(&session, &err);
                log!(events, "session {id} from {peer} ended: {reason}");
            });
        }
    }
}

fn accept_baseline(tcp: TcpListener, events: Level) {
    for conn in tcp.incoming() {
        let Ok(conn) = conn else { continue };
        let peer = conn.peer_addr().map_or_else(|_| "?".into(), |a| a.to_string());
        spawn("bench-tcp-conn", move || match transfer::serve(&conn, 0) {
            Ok(req) => log!(events, "plain TCP connection from {peer}: served {req}"),
            Err(e) => warn!("plain TCP connection from {peer}: {e}"),
        });
    }
}

/// Each of `streams` streams' share of `total`.
fn split(total: Limit, streams: usize) -> Vec<Limit> {
    let n = streams as u64;
    (0..n)
        .map(|i| match total {
            Limit::Bytes(b) => Limit::Bytes(b / n + u64::from(i < b % n)),
            t @ Limit::Time(_) => t,
        })
        .collect()
}

/// Paired rounds of mtmux and plain TCP, and their ratios.
struct Comparison {
    ratios: Vec<f64>,
    /// The rounds whose ratio is the median.
    mux: Measured,
    tcp: Measured,
}

impl Comparison {
    fn new(rounds: Vec<(Measured, Measured)>) -> Comparison {
        let rate = |m: &Measured| (m.up + m.down) as f64 / m.elapsed.as_secs_f64().max(1e-9);
        let mut pairs: Vec<(f64, Measured, Measured)> =
            rounds.into_iter().map(|(m, t)| (rate(&m) / rate(&t), m, t)).collect();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let ratios = pairs.iter().map(|p| p.0).collect();
        let (_, mux, tcp) = pairs.swap_remove(pairs.len() / 2);
        Comparison { ratios, mux, tcp }
    }

    fn median_ratio(&self) -> f64 {
        self.ratios[self.ratios.len() / 2]
    }

    fn range(&self) -> (f64, f64) {
        (self.ratios[0], self.ratios[self.ratios.len() - 1])
    }
}

/// One run of the client: what to send and how to report it.
struct Plan {
    streams: usize,
    direction: Direction,
    /// For all streams together, per direction.
    total: Limit,
    interval: Duration,
    baseline: bool,
    /// Paired rounds of the comparison with plain TCP, and what each moves.
    rounds: usize,
    round: Limit,
    /// One JSON object at the end instead of the table and summary.
    json: bool,
}

/// Per-tunnel byte counters at one moment, in each direction.
#[derive(Clone)]
struct Sample {
    up: Vec<u64>,
    down: Vec<u64>,
}

/// Totals of a transfer, timed at the receiver.
struct Measured {
    up: u64,
    down: u64,
    elapsed: Duration,
}

impl Plan {
    /// Print a line of the human-readable report (nothing with --json).
    fn say(&self, line: std::fmt::Arguments<'_>) {
        if !self.json {
            println!("{line}");
        }
    }

    fn run(&self, session: &Session, server_side: Option<&Session>) -> Result<(), Fatal> {
        let tunnels = session.num_tunnels();
        let baseline_port = if self.baseline {
            let s = session.open_stream().map_err(|e| Fatal::new(format!("bench: {e}")))?;
            transfer::info(&s)
                .map_err(|e| Fatal::new(format!("bench server info: {}", mtmux::Error::from(e))))?
        } else {
            0
        };
        self.say(format_args!(
            "mtmux bench: {tunnels} tunnels to {}, {} stream{}, direction {}, {}",
            describe(&session.peer_addrs()),
            self.streams,
            if self.streams == 1 { "" } else { "s" },
            self.direction,
            match self.total {
                Limit::Bytes(b) => format!("{} each way", fmt_bytes(b)),
                Limit::Time(d) => format!("for {d:?}"),
            }
        ));
        // Count at the receiver when it is in this process; a remote server's receiving
        // side cannot be seen, so up is then what the client's tunnels sent.
        let what = match (server_side, self.direction) {
            (Some(_), _) | (None, Direction::Down) => "tunnel bytes received",
            (None, Direction::Up) => "tunnel bytes sent",
            (None, Direction::Both) => "up: tunnel bytes sent, down: received",
        };
        let sample = || {
            let client = session.tunnel_stats();
            Sample {
                up: match server_side {
                    Some(s) => s.tunnel_stats().iter().map(|t| t.bytes_received).collect(),
                    None => client.iter().map(|t| t.bytes_sent).collect(),
                },
                down: client.iter().map(|t| t.bytes_received).collect(),
            }
        };
        self.say(format_args!("{}", report::table_header(tunnels, what)));
        let first = sample();
        let start = Instant::now();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let m = std::thread::scope(|s| {
            let reporter = s.spawn(|| self.report(stop_rx, start, first.clone(), &sample));
            let m = self.transfer(session, self.total, start);
            drop(stop_tx);
            let _ = reporter.join();
            m
        })?;
        let last = sample();
        let streams = format!("{} stream{}", self.streams, if self.streams == 1 { "" } else { "s" });
        self.say(format_args!("summary (timed at the receiver):"));
        let label = format!("mtmux, {tunnels} tunnels, {streams}");
        let width = label.len().max(BASELINE_LABEL.len()) + ", down:".len();
        self.print_result(&label, width, &m);
        if matches!(self.direction, Direction::Up | Direction::Both) {
            self.say(format_args!("    per tunnel, up:   {}", report::tunnel_shares(&first.up, &last.up)));
        }
        if matches!(self.direction, Direction::Down | Direction::Both) {
            self.say(format_args!(
                "    per tunnel, down: {}",
                report::tunnel_shares(&first.down, &last.down)
            ));
        }
        let mut baseline_json = None;
        if baseline_port != 0 {
            let ip = session.peer_addrs().first().map(|a| a.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]));
            let cmp = self.compare(session, SocketAddr::new(ip, baseline_port))?;
            let tcp = &cmp.tcp;
            let rate = |m: &Measured| (m.up + m.down) as f64 / m.elapsed.as_secs_f64().max(1e-9);
            self.print_result(BASELINE_LABEL, width, tcp);
            let ratio = cmp.median_ratio();
            let (lo, hi) = cmp.range();
            baseline_json = Some((measured_json(tcp), ratio, (lo, hi)));
            self.say(format_args!(
                "  mtmux / plain TCP: {ratio:.2} (median of {} interleaved rounds of {} each, range {lo:.2}–{hi:.2}; mtmux median round {:.1} MB/s)",
                cmp.ratios.len(),
                match self.round {
                    Limit::Bytes(b) => fmt_bytes(b),
                    Limit::Time(d) => format!("{d:?}"),
                },
                rate(&cmp.mux) / 1e6
            ));
            if server_side.is_some() && ratio < 1.0 {
                self.say(format_args!("  (over loopback nothing caps one TCP connection and both ends share the CPUs: see README)"));
            }
        }
        if self.json {
            let shares =
                |f: &[u64], l: &[u64]| l.iter().zip(f).map(|(l, f)| l - f.min(l)).collect::<Vec<u64>>();
            let v = serde_json::json!({
                "tunnels": tunnels,
                "streams": self.streams,
                "direction": self.direction.to_string(),
                "peer": describe(&session.peer_addrs()),
                "mtmux": measured_json(&m),
                "per_tunnel_bytes": { "up": shares(&first.up, &last.up), "down": shares(&first.down, &last.down) },
                "baseline": baseline_json.as_ref().map(|(b, _, _)| b.clone()),
                "ratio": baseline_json.as_ref().map(|(_, r, _)| *r),
                "ratio_range": baseline_json.as_ref().map(|(_, _, (lo, hi))| [*lo, *hi]),
                "rounds": baseline_json.as_ref().map(|_| self.rounds),
            });
            println!("{v}");
        }
        Ok(())
    }

    /// Every interval until `stop` disconnects: one row per direction.
    fn report(
        &self,
        stop: mpsc::Receiver<()>,
        start: Instant,
        mut prev: Sample,
        sample: &dyn Fn() -> Sample,
    ) {
        let mut prev_at = start;
        for k in 1u32.. {
            let due = start + self.interval * k;
            if stop.recv_timeout(due.saturating_duration_since(Instant::now()))
                != Err(mpsc::RecvTimeoutError::Timeout)
            {
                return;
            }
            let cur = sample();
            let now = Instant::now();
            let (at, over) = (now - start, now - prev_at);
            if matches!(self.direction, Direction::Up | Direction::Both) {
                self.say(format_args!("{}", report::table_row(at, "up", &prev.up, &cur.up, over)));
            }
            if matches!(self.direction, Direction::Down | Direction::Both) {
                self.say(format_args!("{}", report::table_row(at, "down", &prev.down, &cur.down, over)));
            }
            prev = cur;
            prev_at = now;
        }
    }

    /// One round over one plain TCP connection.
    fn baseline(&self, addr: SocketAddr) -> Result<Measured, Fatal> {
        let fail = |e: io::Error| Fatal::new(format!("plain TCP baseline to {addr}: {e}"));
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).map_err(fail)?;
        let start = Instant::now();
        let done = transfer::client(&tcp, self.direction, self.round).map_err(fail)?;
        Ok(Measured { up: done.sent, down: done.received, elapsed: done.at - start })
    }

    /// One round over the session's streams (no live report).
    fn mux_round(&self, session: &Session) -> Result<Measured, Fatal> {
        self.transfer(session, self.round, Instant::now())
    }

    /// Move `total` over `streams` streams of the session at once, timed from `start` until
    /// the last receiver has everything.
    fn transfer(&self, session: &Session, total: Limit, start: Instant) -> Result<Measured, Fatal> {
        let results: Vec<io::Result<transfer::Done>> = std::thread::scope(|s| {
            let workers: Vec<_> = split(total, self.streams)
                .into_iter()
                .map(|limit| {
                    s.spawn(move || {
                        let stream = session.open_stream()?;
                        transfer::client(&stream, self.direction, limit)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Err(io::Error::other("panicked"))))
                .collect()
        });
        let mut m = Measured { up: 0, down: 0, elapsed: Duration::ZERO };
        for r in results {
            let done =
                r.map_err(|e| Fatal::new(format!("bench stream failed: {}", mtmux::Error::from(e))))?;
            m.up += done.sent;
            m.down += done.received;
            m.elapsed = m.elapsed.max(done.at - start);
        }
        Ok(m)
    }

    /// The comparison with plain TCP: `rounds` pairs of short runs, mtmux then plain TCP,
    /// interleaved so that both see the same machine (a loopback figure moves with whatever
    /// else the CPUs do; one long run of each would compare two different moments).
    fn compare(&self, session: &Session, tcp: SocketAddr) -> Result<Comparison, Fatal> {
        let mut rounds = Vec::new();
        for _ in 0..self.rounds {
            let mux = self.mux_round(session)?;
            let plain = self.baseline(tcp)?;
            rounds.push((mux, plain));
        }
        Ok(Comparison::new(rounds))
    }

    /// One line per direction, labels padded to `width` so the numbers line up.
    fn print_result(&self, what: &str, width: usize, m: &Measured) {
        let line = |dir: &str, bytes| {
            self.say(format_args!("  {}", report::result(&format!("{what}, {dir}"), width, bytes, m.elapsed)))
        };
        if matches!(self.direction, Direction::Up | Direction::Both) {
            line("up", m.up);
        }
        if matches!(self.direction, Direction::Down | Direction::Both) {
            line("down", m.down);
        }
    }
}

/// A transfer's totals as JSON: bytes each way, seconds, MB/s (10^6 bytes) each way.
fn measured_json(m: &Measured) -> serde_json::Value {
    let secs = m.elapsed.as_secs_f64();
    serde_json::json!({
        "up_bytes": m.up,
        "down_bytes": m.down,
        "seconds": secs,
        "up_mb_per_s": crate::units::mb_per_s(m.up, m.elapsed),
        "down_mb_per_s": crate::units::mb_per_s(m.down, m.elapsed),
    })
}
