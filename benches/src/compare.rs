//! What failover costs when nothing fails: the loopback rows (bulk, many, pingpong, churn) of
//! this build against another build of the suite (the code before failover), run as separate
//! processes alternately (ABBA order, so that neither build always runs first) in the same
//! session of the machine. Protocol v1 and v2 do not interoperate: each build talks only to
//! itself. Also the acknowledgement traffic of this build (`SessionStats::ack_bytes_sent`
//! against the bytes moved).
//!
//! ```text
//! mtmux-bench --compare-with OTHER_MTMUX_BENCH [--rounds N] [--quick] [--out FILE]
//! ```

use crate::loopback;
use crate::report::{median, write_section};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

const ROWS: &str = "bulk,many,pingpong,churn";

fn log(msg: &str) {
    eprintln!("[mtmux-bench] {msg}");
}

/// A row of the suite's table: mtmux's value and the baseline's (NaN when none).
type Row = (f64, f64);

/// The leading number of a table cell ("1829 MB/s (1 TCP conn)" → 1829).
fn number(cell: &str) -> f64 {
    cell.split_whitespace().next().and_then(|x| x.parse().ok()).unwrap_or(f64::NAN)
}

/// The rows of a results table by name (the note after `<br>` dropped).
fn parse_table(md: &str) -> BTreeMap<String, Row> {
    let mut rows = BTreeMap::new();
    for line in md.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 8 || cells[1].parse::<u32>().is_err() {
            continue;
        }
        let name = cells[2].split(" <br>").next().unwrap_or("").to_string();
        rows.insert(name, (number(cells[3]), number(cells[4])));
    }
    rows
}

/// Run one build's loopback rows once; its table by row name.
fn run_build(exe: &str, quick: bool, tag: &str) -> Result<BTreeMap<String, Row>, String> {
    let out = std::env::temp_dir().join(format!("mtmux-compare-{}-{tag}.md", std::process::id()));
    let mut cmd = Command::new(exe);
    cmd.args(["--only", ROWS, "--rounds", "1", "--out"]).arg(&out);
    // Only the two builds of mtmux are compared: no peers (see peers.rs).
    cmd.env("MTMUX_BENCH_NO_PEERS", "1");
    if quick {
        cmd.arg("--quick");
    }
    let res = cmd.output().map_err(|e| format!("{exe}: {e}"))?;
    if !res.status.success() {
        return Err(format!("{exe} failed: {}", String::from_utf8_lossy(&res.stderr)));
    }
    let md = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out);
    Ok(parse_table(&md))
}

fn range(v: &[f64], digits: usize) -> String {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.digits$}–{hi:.digits$}")
}

/// Whether a row's figure is better when higher (throughput) or lower (latency).
fn higher_is_better(name: &str) -> bool {
    !(name.starts_with("pingpong") || name.starts_with("hand-off"))
}

/// The target on after ÷ before for a row, as text and as a test.
fn target(name: &str) -> Option<(&'static str, f64)> {
    if name.starts_with("bulk") || name.starts_with("many") {
        Some(("≥ 0.97 (loses ≤ 3%)", 0.97))
    } else if name.starts_with("pingpong") || name.starts_with("churn") {
        Some(("no worse (within 3%)", if higher_is_better(name) { 0.97 } else { 1.03 }))
    } else {
        None
    }
}

pub fn run(other: &str, rounds: usize, quick: bool, out: &str) {
    let me = std::env::current_exe().expect("current exe").to_string_lossy().into_owned();
    let total: u64 = if quick { 128 << 20 } else { 1 << 30 };
    let each: u64 = if quick { 16 << 20 } else { 64 << 20 };
    // per row: (before values, after values, before ratios to TCP, after ratios to TCP)
    let mut rows: BTreeMap<String, [Vec<f64>; 4]> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut acks: Vec<(String, f64)> = Vec::new();
    for r in 0..rounds {
        let builds = if r % 2 == 0 {
            [("before", other), ("after", me.as_str())]
        } else {
            [("after", me.as_str()), ("before", other)]
        };
        let mut got: [BTreeMap<String, Row>; 2] = Default::default();
        for (tag, exe) in builds {
            log(&format!("round {}/{rounds}: {tag} ({exe})", r + 1));
            match run_build(exe, quick, tag) {
                Ok(t) => got[usize::from(tag == "after")] = t,
                Err(e) => log(&format!("  {e}")),
            }
        }
        // Only rows both builds produced in this round count, so every pair is from one round.
        for (name, &(b, bb)) in &got[0] {
            let Some(&(a, ab)) = got[1].get(name) else { continue };
            if !order.contains(name) {
                order.push(name.clone());
            }
            let e = rows.entry(name.clone()).or_default();
            e[0].push(b);
            e[1].push(a);
            e[2].push(b / bb);
            e[3].push(a / ab);
        }
        for (name, tunnels, streams) in [("bulk, 4 tunnels", 4, 1), ("many, 16 streams, 4 tunnels", 4, 16)] {
            let (data, ack_bytes, n) =
                loopback::ack_traffic(tunnels, streams, if streams > 1 { each } else { total });
            log(&format!("  acks in {name}: {n} ACK frames, {ack_bytes} bytes for {data} data bytes"));
            acks.push((name.to_string(), ack_bytes as f64 / data as f64));
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Cost of failover when nothing fails\n\n\
         Produced by `make bench-cost` (`mtmux-bench --compare-with <build of b2bdf66>{}`): the loopback rows \
         of the code before failover (commit `b2bdf66`, protocol v1) and of this code (protocol v2), each \
         build's own suite run once per round as a separate process, the two alternately (ABBA), {rounds} \
         rounds. Each row: median over rounds (range); \"÷ TCP\" is the row's ratio to its plain TCP \
         baseline measured in the same process run; \"after ÷ before\" pairs the two builds' ratios to TCP \
         round by round (median, range).\n",
        if quick { " --quick" } else { "" }
    );
    md.push_str("| row | before | after | before ÷ TCP | after ÷ TCP | after ÷ before (÷ TCP, paired) | after ÷ before (raw, paired) | target | met |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for name in &order {
        let [b, a, bt, at] = &rows[name];
        let paired: Vec<f64> = at.iter().zip(bt).map(|(x, y)| x / y).collect();
        let raw: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
        let digits = if median(b) >= 100.0 { 0 } else { 1 };
        let (ttext, met) = match target(name) {
            Some((text, t)) => {
                let m = median(&paired);
                let ok = if higher_is_better(name) { m >= t } else { m <= t };
                (text, if ok { "yes" } else { "**no**" })
            }
            None => ("–", "–"),
        };
        let _ = writeln!(
            md,
            "| {name} | {:.digits$} ({}) | {:.digits$} ({}) | {:.2} | {:.2} | {:.3} ({}) | {:.3} ({}) | {ttext} | {met} |",
            median(b),
            range(b, digits),
            median(a),
            range(a, digits),
            median(bt),
            median(at),
            median(&paired),
            range(&paired, 3),
            median(&raw),
            range(&raw, 3),
        );
    }
    for name in ["bulk, 4 tunnels", "many, 16 streams, 4 tunnels"] {
        let v: Vec<f64> = acks.iter().filter(|(n, _)| n == name).map(|(_, x)| x * 100.0).collect();
        if !v.is_empty() {
            let _ = writeln!(
                md,
                "| acknowledgement bytes ÷ data bytes, {name} (after) | – | {:.3}% ({}%) | – | – | – | – | ≤ 1% | {} |",
                median(&v),
                range(&v, 3),
                if median(&v) <= 1.0 { "yes" } else { "**no**" }
            );
        }
    }
    println!("\n{md}");
    match write_section(out, "cost", &md) {
        Ok(()) => log(&format!("comparison written to {out}")),
        Err(e) => log(&format!("cannot write {out}: {e}")),
    }
}
