//! mtmux-peers: the loopback workloads of mtmux-bench over the Rust multiplexers users would
//! pick instead of mtmux, each over one TCP connection, both ends in this process.
//! mtmux-bench runs it once per round, interleaved with raw TCP and mtmux.
//!
//! ```text
//! mtmux-peers list                     one line per peer: NAME VERSION
//! mtmux-peers PEER bulk BYTES          {"peer":..,"workload":"bulk","mb_per_s":X}
//! mtmux-peers PEER many N BYTES        {"peer":..,"workload":"many","mb_per_s":X}
//! mtmux-peers PEER pingpong N          {"peer":..,"workload":"pingpong","median_us":X,"p99_us":Y,"n":N}
//! mtmux-peers PEER churn N             {"peer":..,"workload":"churn","streams_per_s":X}
//! ```
//! Runtime: tokio's multi-thread runtime with its default worker count (one per CPU: 2 on
//! the benchmark machine), what `#[tokio::main]` gives. A run that does not finish within
//! MTMUX_PEERS_TIMEOUT seconds (default 300) fails with a message instead of hanging.

mod peer;
mod work;

use std::io;
use std::time::Duration;

const USAGE: &str =
    "usage: mtmux-peers list | mtmux-peers PEER (bulk BYTES | many N BYTES | pingpong N | churn N)";

/// The `p`-th percentile of `v` (nearest rank, as mtmux-bench's report.rs).
fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s.get(rank.min(s.len()).saturating_sub(1)).copied().unwrap_or(f64::NAN)
}

fn num<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, String> {
    let a = args.get(i).ok_or_else(|| format!("missing {what}\n{USAGE}"))?;
    a.parse().map_err(|_| format!("{what} must be a positive number, not {a:?}"))
}

/// Parse and run one workload; its JSON line.
fn run(args: &[String]) -> Result<String, String> {
    let peer = args.first().ok_or(USAGE)?.as_str();
    if !peer::PEERS.iter().any(|(p, _)| *p == peer) {
        let names: Vec<_> = peer::PEERS.iter().map(|(p, _)| *p).collect();
        return Err(format!("unknown peer {peer:?} (one of: {})", names.join(", ")));
    }
    let workload = args.get(1).ok_or(USAGE)?.as_str();
    let positive = |x: u64, what: &str| if x == 0 { Err(format!("{what} must be > 0")) } else { Ok(x) };
    let head = format!("{{\"peer\":\"{peer}\",\"workload\":\"{workload}\"");
    let p = peer.to_string();
    let job: Job = match workload {
        "bulk" => {
            let total = positive(num(args, 2, "BYTES")?, "BYTES")?;
            Box::pin(
                async move { work::bulk(&p, total).await.map(|x| format!("{head},\"mb_per_s\":{x:.3}}}")) },
            )
        }
        "many" => {
            let n = positive(num(args, 2, "N")?, "N")? as usize;
            let each = positive(num(args, 3, "BYTES")?, "BYTES")?;
            Box::pin(
                async move { work::many(&p, n, each).await.map(|x| format!("{head},\"mb_per_s\":{x:.3}}}")) },
            )
        }
        "pingpong" => {
            let n = positive(num(args, 2, "N")?, "N")? as usize;
            Box::pin(async move {
                let v = work::pingpong(&p, n).await?;
                let (med, p99) = (percentile(&v, 50.0), percentile(&v, 99.0));
                Ok(format!("{head},\"median_us\":{med:.3},\"p99_us\":{p99:.3},\"n\":{n}}}"))
            })
        }
        "churn" => {
            let n = positive(num(args, 2, "N")?, "N")? as usize;
            Box::pin(
                async move { work::churn(&p, n).await.map(|x| format!("{head},\"streams_per_s\":{x:.3}}}")) },
            )
        }
        other => return Err(format!("unknown workload {other:?}\n{USAGE}")),
    };
    let rt = tokio::runtime::Runtime::new().map_err(|e| format!("tokio runtime: {e}"))?;
    // The measuring side is a task too, so that all the work runs on the runtime's workers.
    rt.block_on(async move { tokio::spawn(job).await })
        .map_err(|e| format!("{peer} {workload}: {e}"))?
        .map_err(|e| format!("{peer} {workload}: {e}"))
}

type Job = std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<String>> + Send>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("-h" | "--help") => {
            println!("{USAGE}");
            return;
        }
        Some("list") => {
            for (name, version) in peer::PEERS {
                println!("{name} {version}");
            }
            return;
        }
        _ => {}
    }
    let secs = std::env::var("MTMUX_PEERS_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(300u64);
    // A watchdog, so that a peer that stalls fails the round with a message.
    let what = args.join(" ");
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(secs));
        eprintln!("mtmux-peers {what}: no result within {secs} s (MTMUX_PEERS_TIMEOUT)");
        std::process::exit(1);
    });
    match run(&args) {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("mtmux-peers: {e}");
            std::process::exit(if e.contains(USAGE) || e.starts_with("unknown") { 2 } else { 1 });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(a: &str) -> Result<String, String> {
        run(&a.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn bad_arguments_are_named() {
        assert!(run_args("").unwrap_err().contains("usage"));
        assert!(run_args("quic bulk 1").unwrap_err().contains("unknown peer \"quic\""));
        assert!(run_args("yamux").unwrap_err().contains("usage"));
        assert!(run_args("yamux fly 1").unwrap_err().contains("unknown workload \"fly\""));
        assert!(run_args("yamux bulk").unwrap_err().contains("missing BYTES"));
        assert!(run_args("yamux bulk lots").unwrap_err().contains("BYTES must be a positive number"));
        assert!(run_args("yamux many 0 100").unwrap_err().contains("N must be > 0"));
    }

    #[test]
    fn percentiles_match_the_suite() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    /// Every peer completes every workload, small, over real loopback TCP, and reports the
    /// figure its workload promises.
    #[test]
    fn every_peer_runs_every_workload() {
        for (peer, _) in peer::PEERS {
            for (workload, key) in [
                ("bulk 1048576", "mb_per_s"),
                ("many 4 1048576", "mb_per_s"),
                ("pingpong 100", "p99_us"),
                ("churn 50", "streams_per_s"),
            ] {
                // Bounded: a peer that stalls fails the test instead of hanging it.
                let (tx, rx) = std::sync::mpsc::channel();
                let what = format!("{peer} {workload}");
                std::thread::spawn(move || tx.send(run_args(&what)));
                let line = rx
                    .recv_timeout(Duration::from_secs(60))
                    .unwrap_or_else(|_| panic!("{peer} {workload}: no result within 60 s"))
                    .unwrap_or_else(|e| panic!("{e}"));
                let value: f64 = line
                    .split(&format!("\"{key}\":"))
                    .nth(1)
                    .and_then(|rest| rest.split([',', '}']).next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{peer} {workload}: no {key} in {line}"));
                assert!(value > 0.0 && value.is_finite(), "{peer} {workload}: {line}");
            }
        }
    }
}
