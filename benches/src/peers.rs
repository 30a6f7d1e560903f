//! The peers: the Rust multiplexers users would pick instead of mtmux (yamux, tokio-yamux,
//! async_smux, smux), driven through the loopback workloads by the separate program
//! `mtmux-peers` (benches/peers, its own workspace so that tokio stays out of this one). The
//! suite runs it once per peer per round, between its raw TCP and mtmux samples, so every
//! figure of the peers table comes from the same run and the same machine noise.
//!
//! Where the program is: `$MTMUX_PEERS`, else `mtmux-peers` next to this program (a shared
//! `CARGO_TARGET_DIR`), else benches/peers/target/release/mtmux-peers. Without it the suite
//! says so loudly and the peers table says "not built" in every peer's column.
//! MTMUX_BENCH_NO_PEERS=1 leaves the peers out (`--compare-with` sets it).

use crate::report::{median, Better};
use std::path::PathBuf;
use std::process::Command;

/// The peers, in the order of the table's columns.
pub const NAMES: [&str; 4] = ["yamux", "tokio-yamux", "async_smux", "smux"];

fn log(msg: &str) {
    eprintln!("[mtmux-bench] {msg}");
}

/// One sample line of `mtmux-peers`: its numeric fields by name.
pub type Line = Vec<(String, f64)>;

/// The numeric fields of a flat JSON object line (`{"peer":"x","mb_per_s":12.5}` → mb_per_s).
pub fn parse_line(line: &str) -> Line {
    let body = line.trim().trim_start_matches('{').trim_end_matches('}');
    body.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once(':')?;
            Some((k.trim().trim_matches('"').to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// What the peers table shows, above it in benches/RESULTS.md.
pub const INTRO: &str = "## mtmux and its peers (same run)

The loopback rows again, with the Rust multiplexers users would pick instead of mtmux, each \
run by `mtmux-peers` (benches/peers) between the raw TCP and mtmux samples of every round, \
so all columns come from the same rounds. Each peer runs over ONE TCP connection \
(TCP_NODELAY, default configuration) with both ends in one process, on tokio's multi-thread \
runtime with its default worker count (one per CPU it may run on: one when pinned); mtmux \
runs as in the table above (4 tunnels, except the 1-tunnel bulk row). In brackets: the ratio \
to raw TCP of the same rounds. tokio-yamux's senders keep a read pending on their stream \
(its streams take in window updates only while read; a write-only sender stalls after \
256 KiB). The peers: yamux (rust-libp2p's, futures-based, driven by a task that polls its \
Connection), tokio-yamux (Nervos tentacle's), async_smux, and smux (a young port of Go's \
smux, one maintainer).
";

/// Arguments of `mtmux-peers` as owned strings.
pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// The peers table's row of a figure: raw TCP's and mtmux's samples, and the peers' tally.
pub fn row(name: &str, unit: &'static str, better: Better, raw: &[f64], mux: &[f64], t: &Tally) -> Row {
    Row { name: name.into(), unit, better, raw: median(raw), mtmux: median(mux), peers: t.medians() }
}

/// The program that runs the peers, and what it reports about them.
pub struct Peers {
    exe: Option<PathBuf>,
    /// Column headers: each peer's name and crate version.
    pub headers: Vec<String>,
    /// Left out on purpose (MTMUX_BENCH_NO_PEERS): no peers table at all.
    pub off: bool,
}

impl Peers {
    /// No peers (only rows without peers were asked for).
    pub fn off() -> Peers {
        Peers { exe: None, headers: Vec::new(), off: true }
    }

    /// Find `mtmux-peers` and ask it for the versions it was built with.
    pub fn find() -> Peers {
        let off = std::env::var_os("MTMUX_BENCH_NO_PEERS").is_some();
        let names = || NAMES.iter().map(|n| n.to_string()).collect();
        if off {
            return Peers { exe: None, headers: names(), off };
        }
        let mut candidates: Vec<PathBuf> =
            std::env::var_os("MTMUX_PEERS").map(PathBuf::from).into_iter().collect();
        if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(PathBuf::from)) {
            candidates.push(dir.join("mtmux-peers"));
        }
        candidates.push(PathBuf::from("benches/peers/target/release/mtmux-peers"));
        for exe in candidates.into_iter().filter(|c| c.is_file()) {
            match Command::new(&exe).arg("list").output() {
                Ok(out) if out.status.success() => {
                    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
                    let headers = NAMES
                        .iter()
                        .map(|n| match listed.lines().find(|l| l.split_whitespace().next() == Some(n)) {
                            Some(l) => l.trim().to_string(),
                            None => format!("{n} (not in {})", exe.display()),
                        })
                        .collect();
                    log(&format!("peers: {} ({})", exe.display(), listed.trim().replace('\n', ", ")));
                    return Peers { exe: Some(exe), headers, off };
                }
                _ => log(&format!("peers: {} does not run; ignored", exe.display())),
            }
        }
        log("!!!!!!!! peers: mtmux-peers is NOT BUILT: the peers table will say \"not built\".");
        log("!!!!!!!! Build it with `make bench-peers` (`make bench` does), or set MTMUX_PEERS.");
        Peers { exe: None, headers: names(), off }
    }

    /// Run `mtmux-peers PEER ARGS..` for each peer (under `taskset -c 0` when `pinned`):
    /// each peer's sample line, or why there is none. A peer that already failed in `so_far`
    /// is not run again (a stalled peer would cost its whole timeout every round).
    pub fn sample(&self, args: &[String], pinned: bool, so_far: &Tally) -> Vec<Result<Line, String>> {
        if self.off {
            return Vec::new();
        }
        let Some(exe) = &self.exe else {
            return NAMES.iter().map(|_| Err("not built".to_string())).collect();
        };
        NAMES
            .iter()
            .enumerate()
            .map(|(i, peer)| {
                if let Some(e) = so_far.failure(i) {
                    log(&format!("  {peer:<12} skipped: {e}"));
                    return Err(e.to_string());
                }
                let mut cmd = if pinned { Command::new("taskset") } else { Command::new(exe) };
                if pinned {
                    cmd.args(["-c", "0"]).arg(exe);
                }
                let out = cmd.arg(peer).args(args).output().map_err(|e| format!("cannot run: {e}"))?;
                let line = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").to_string();
                if !out.status.success() || !line.starts_with('{') {
                    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    log(&format!("  {peer:<12} FAILED: {err}"));
                    return Err(format!("failed: {err}"));
                }
                log(&format!("  {peer:<12} {line}"));
                Ok(parse_line(&line))
            })
            .collect()
    }
}

/// The samples of one figure, per peer: values, or why a peer has none.
#[derive(Default)]
pub struct Tally {
    cols: Vec<(Vec<f64>, Option<String>)>,
}

impl Tally {
    /// Add the field `key` of one round's samples.
    pub fn add(&mut self, round: &[Result<Line, String>], key: &str) {
        if self.cols.len() < round.len() {
            self.cols.resize_with(round.len(), Default::default);
        }
        for (col, r) in self.cols.iter_mut().zip(round) {
            match r {
                Ok(line) => match line.iter().find(|(k, _)| k == key) {
                    Some((_, v)) => col.0.push(*v),
                    None => col.1 = Some(format!("failed: no {key} in its answer")),
                },
                // Keep the first reason: later rounds usually fail the same way.
                Err(e) => {
                    col.1.get_or_insert_with(|| e.clone());
                }
            }
        }
    }

    /// Why peer `i` has no figure, if it failed in some round.
    pub fn failure(&self, i: usize) -> Option<&str> {
        self.cols.get(i).and_then(|c| c.1.as_deref())
    }

    /// Each peer's median, or why there is none (a peer that failed in any round has none:
    /// a median of the rounds that worked would hide the failure).
    pub fn medians(&self) -> Vec<Result<f64, String>> {
        self.cols
            .iter()
            .map(|(v, err)| match err {
                Some(e) => Err(e.clone()),
                None => Ok(median(v)),
            })
            .collect()
    }
}

/// A row of the peers table: one workload, raw TCP, mtmux and each peer from the same rounds.
pub struct Row {
    /// What was measured (as in the main table).
    pub name: String,
    /// Unit of every value.
    pub unit: &'static str,
    /// Direction of goodness.
    pub better: Better,
    /// Raw TCP's median.
    pub raw: f64,
    /// mtmux's median.
    pub mtmux: f64,
    /// Each peer's median, or why there is none, in the order of [`NAMES`].
    pub peers: Vec<Result<f64, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sample_lines() {
        let l =
            parse_line(r#"{"peer":"yamux","workload":"pingpong","median_us":17.8,"p99_us":42.5,"n":5000}"#);
        assert_eq!(
            l,
            vec![("median_us".to_string(), 17.8), ("p99_us".to_string(), 42.5), ("n".to_string(), 5000.0)]
        );
        assert!(parse_line("garbage").is_empty());
    }

    #[test]
    fn a_failed_round_fails_the_peer() {
        let mut t = Tally::default();
        let ok = |v: f64| Ok(vec![("mb_per_s".to_string(), v)]);
        t.add(&[ok(1.0), ok(5.0)], "mb_per_s");
        t.add(&[ok(3.0), Err("failed: stalled".into())], "mb_per_s");
        t.add(&[ok(2.0), ok(4.0)], "mb_per_s");
        assert_eq!(t.medians(), vec![Ok(2.0), Err("failed: stalled".to_string())]);
        assert_eq!((t.failure(0), t.failure(1), t.failure(2)), (None, Some("failed: stalled"), None));
        let mut missing = Tally::default();
        missing.add(&[Err("not built".into())], "mb_per_s");
        assert_eq!(missing.medians(), vec![Err("not built".to_string())]);
    }
}
