//! The mtmux benchmark suite. Every figure is a median of interleaved rounds and a ratio
//! against a baseline measured in the same run (this machine is shared and noisy).
//!
//! ```text
//! mtmux-bench [--quick] [--rounds N] [--only NAME[,NAME..]] [--out FILE]
//! mtmux-bench --compare-with OTHER_MTMUX_BENCH [--quick] [--rounds N] [--out FILE]
//! mtmux-bench tls [--quick] [--rounds N] [--out FILE]
//! ```
//! The second form compares the loopback rows with another build of the suite (see
//! `compare.rs`); the third measures TLS tunnels against plain ones (see `tls.rs`).
//! NAMEs: bulk, many, pingpong, churn, fairness, memory, scaling, heterogeneous, latency,
//! failover, unequal, both. The loopback rows (bulk, many, pingpong, churn) also run the
//! peers, the Rust multiplexers users would pick instead, through the same workloads in the
//! same rounds (`peers.rs`; the program `mtmux-peers` from benches/peers, built by `make
//! bench-peers`). The link-emulation benchmarks (scaling, heterogeneous, latency, failover,
//! unequal, both) need root; without it they are skipped with a message.

mod attack;
mod compare;
mod failover;
mod linkemu;
mod loopback;
mod paths;
mod peers;
mod report;
mod tls;

use peers::{args, row};
use report::{median, percentile, Better, Figure};
use std::process::Command;

struct Opts {
    /// `tls`: the TLS cost instead of the suite.
    tls: bool,
    quick: bool,
    /// Another build of this suite to compare the loopback rows with (`--compare-with`).
    compare_with: Option<String>,
    rounds: usize,
    only: Vec<String>,
    out: String,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        tls: false,
        quick: false,
        compare_with: None,
        rounds: 5,
        only: Vec::new(),
        out: "benches/RESULTS.md".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "tls" => o.tls = true,
            "--quick" => o.quick = true,
            "--rounds" => {
                o.rounds = args.next().and_then(|v| v.parse().ok()).ok_or("--rounds needs a number")?
            }
            "--only" => {
                o.only = args.next().ok_or("--only needs names")?.split(',').map(String::from).collect()
            }
            "--out" => o.out = args.next().ok_or("--out needs a file")?,
            "--compare-with" => o.compare_with = Some(args.next().ok_or("--compare-with needs a program")?),
            "-h" | "--help" => {
                println!("usage: mtmux-bench [--quick] [--rounds N] [--only NAME[,NAME..]] [--out FILE]");
                println!(
                    "       mtmux-bench --compare-with OTHER_MTMUX_BENCH [--quick] [--rounds N] [--out FILE]"
                );
                println!("       mtmux-bench tls [--quick] [--rounds N] [--out FILE]");
                println!(
                    "names: bulk many pingpong churn fairness memory scaling heterogeneous latency failover"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(o)
}

impl Opts {
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == name)
    }
}

fn spread(v: &[f64]) -> String {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{} rounds, {:.0}–{:.0}", v.len(), lo, hi)
}

/// Interleave two measurements round by round, so both see the same machine noise; `after`
/// runs after each round's pair (the peers' samples).
fn interleaved(
    rounds: usize,
    mut base: impl FnMut() -> f64,
    mut mux: impl FnMut() -> f64,
    mut after: impl FnMut(),
) -> (Vec<f64>, Vec<f64>) {
    // MTMUX_BENCH_NO_BASELINE=1 skips the baselines (to profile mtmux alone).
    let skip = std::env::var_os("MTMUX_BENCH_NO_BASELINE").is_some();
    let mut b = Vec::new();
    let mut m = Vec::new();
    for _ in 0..rounds {
        if skip {
            b.push(f64::NAN);
        } else {
            let (v, cpu) = with_cpu(&mut base);
            log(&format!("  baseline {v:.0} ({cpu})"));
            b.push(v);
        }
        let (v, cpu) = with_cpu(&mut mux);
        log(&format!("  mtmux    {v:.0} ({cpu})"));
        m.push(v);
        after();
    }
    (b, m)
}

/// Process CPU time (user + system) in seconds, and context switches (voluntary,
/// involuntary), all threads included.
fn usage() -> (f64, i64, i64) {
    // Safety: getrusage only writes the struct we pass.
    #[allow(unsafe_code)]
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    (t(ru.ru_utime) + t(ru.ru_stime), ru.ru_nvcsw, ru.ru_nivcsw)
}

/// Run `f`, returning its result and a note of what it cost the process (CPU time, context
/// switches): figures that other load on the machine disturbs much less than throughput.
fn with_cpu(f: &mut impl FnMut() -> f64) -> (f64, String) {
    let (c0, v0, i0) = usage();
    let v = f();
    let (c1, v1, i1) = usage();
    (v, format!("CPU {:.2} s, {} + {} context switches", c1 - c0, v1 - v0, i1 - i0))
}

fn log(msg: &str) {
    eprintln!("[mtmux-bench] {msg}");
}

/// Per round: raw median, raw p99, mtmux median, mtmux p99, hand-off floor (channel) median
/// and p99, hand-off floor (park) median and p99 (µs).
type PinnedRounds = [Vec<f64>; 8];

/// Pingpong pinned to CPU 0: runs this binary under `taskset -c 0` and returns
/// (raw medians, raw p99s, mux medians, mux p99s) per round.
fn pinned_pingpong(n: usize, rounds: usize) -> Option<PinnedRounds> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new("taskset")
        .args(["-c", "0"])
        .arg(exe)
        .args(["--internal-pingpong", &n.to_string(), &rounds.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        log(&format!("pinned pingpong failed: {}", String::from_utf8_lossy(&out.stderr)));
        return None;
    }
    let mut r: PinnedRounds = Default::default();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Vec<f64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if v.len() == 8 {
            for (k, x) in v.into_iter().enumerate() {
                r[k].push(x);
            }
        }
    }
    Some(r)
}

fn internal_pingpong(n: usize, rounds: usize) {
    for _ in 0..rounds {
        let raw = loopback::pingpong_raw(n);
        let mux = loopback::pingpong_mux(4, n);
        let hop = loopback::pingpong_handoff(n);
        let park = loopback::pingpong_handoff_park(n);
        println!(
            "{} {} {} {} {} {} {} {}",
            median(&raw),
            percentile(&raw, 99.0),
            median(&mux),
            percentile(&mux, 99.0),
            median(&hop),
            percentile(&hop, 99.0),
            median(&park),
            percentile(&park, 99.0)
        );
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--internal-pingpong") {
        internal_pingpong(argv[2].parse().unwrap(), argv[3].parse().unwrap());
        return;
    }
    if argv.get(1).map(String::as_str) == Some("--internal-attacker") {
        attack::attacker(argv[2].parse().unwrap(), argv[3].parse().unwrap(), argv[4].parse().unwrap());
        return;
    }
    if argv.get(1).map(String::as_str) == Some("--attack") {
        attack::run(&argv[2..]);
        return;
    }
    if argv.get(1).map(String::as_str) == Some("--internal-delay") {
        linkemu::delay_helper(argv[2].parse().unwrap());
        return;
    }
    if argv.get(1).map(String::as_str) == Some("--internal-linkemu") {
        linkemu::internal(&argv[2..]);
        return;
    }
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("mtmux-bench: {e}");
            std::process::exit(2);
        }
    };
    if o.tls {
        tls::run(o.rounds.max(1), o.quick, &o.out);
        return;
    }
    if let Some(other) = &o.compare_with {
        compare::run(other, o.rounds.max(1), o.quick, &o.out);
        return;
    }
    let gib: u64 = if o.quick { 128 << 20 } else { 1 << 30 };
    let each: u64 = if o.quick { 16 << 20 } else { 64 << 20 };
    let pp_n = if o.quick { 5_000 } else { 20_000 };
    let churn_n = if o.quick { 2_000 } else { 10_000 };
    let idle_n = 10_000;
    let rounds = o.rounds.max(1);
    let loopback_rows = ["bulk", "many", "pingpong", "churn"].iter().any(|n| o.wants(n));
    let peers = if loopback_rows { peers::Peers::find() } else { peers::Peers::off() };
    let mut peer_rows: Vec<peers::Row> = Vec::new();
    let mut figs: Vec<Figure> = Vec::new();
    let fig = |name: &str,
               unit: &'static str,
               value: f64,
               baseline: f64,
               bname: &str,
               better,
               target,
               note: String| Figure {
        name: name.into(),
        unit,
        value,
        baseline,
        baseline_name: bname.into(),
        better,
        target,
        absolute: false,
        note,
    };

    if o.wants("bulk") {
        for tunnels in [1usize, 4] {
            log(&format!("bulk: 1 stream, {} MiB, {tunnels} tunnel(s)", gib >> 20));
            let mut tally = peers::Tally::default();
            let (raw, mux) = interleaved(
                rounds,
                || loopback::bulk_raw(gib),
                || loopback::bulk_mux(tunnels, gib),
                || tally.add(&peers.sample(&args(&["bulk", &gib.to_string()]), false, &tally), "mb_per_s"),
            );
            let target = if tunnels == 1 { 0.9 } else { 1.0 };
            let name = format!(
                "bulk, {} MiB, 1 stream, {tunnels} tunnel{}",
                gib >> 20,
                if tunnels > 1 { "s" } else { "" }
            );
            peer_rows.push(row(&name, "MB/s", Better::Higher, &raw, &mux, &tally));
            figs.push(fig(
                &name,
                "MB/s",
                median(&mux),
                median(&raw),
                "1 TCP conn",
                Better::Higher,
                target,
                spread(&mux),
            ));
        }
    }
    if o.wants("many") {
        log(&format!("many: 16 streams × {} MiB, 4 tunnels", each >> 20));
        let mut tally = peers::Tally::default();
        let (raw, mux) = interleaved(
            rounds,
            || loopback::many_raw(16, each),
            || loopback::many_mux(4, 16, each),
            || tally.add(&peers.sample(&args(&["many", "16", &each.to_string()]), false, &tally), "mb_per_s"),
        );
        let name = format!("many, 16 streams × {} MiB, 4 tunnels", each >> 20);
        peer_rows.push(row(&name, "MB/s", Better::Higher, &raw, &mux, &tally));
        figs.push(fig(
            &name,
            "MB/s",
            median(&mux),
            median(&raw),
            "16 TCP conns",
            Better::Higher,
            0.9,
            spread(&mux),
        ));
    }
    if o.wants("pingpong") {
        log("pingpong: 64 B round trips, unpinned");
        let mut raw_med = Vec::new();
        let mut mux_med = Vec::new();
        let mut raw_p99 = Vec::new();
        let mut mux_p99 = Vec::new();
        let (mut peer_med, mut peer_p99) = (peers::Tally::default(), peers::Tally::default());
        let pp_args = args(&["pingpong", &pp_n.to_string()]);
        for _ in 0..rounds {
            let r = loopback::pingpong_raw(pp_n);
            let m = loopback::pingpong_mux(4, pp_n);
            raw_med.push(median(&r));
            raw_p99.push(percentile(&r, 99.0));
            mux_med.push(median(&m));
            mux_p99.push(percentile(&m, 99.0));
            let p = peers.sample(&pp_args, false, &peer_med);
            peer_med.add(&p, "median_us");
            peer_p99.add(&p, "p99_us");
        }
        peer_rows.push(row(
            "pingpong 64 B, median, unpinned",
            "µs",
            Better::Lower,
            &raw_med,
            &mux_med,
            &peer_med,
        ));
        peer_rows.push(row(
            "pingpong 64 B, p99, unpinned",
            "µs",
            Better::Lower,
            &raw_p99,
            &mux_p99,
            &peer_p99,
        ));
        figs.push(fig(
            "pingpong 64 B, median, unpinned",
            "µs",
            median(&mux_med),
            median(&raw_med),
            "TCP",
            Better::Lower,
            1.0,
            String::new(),
        ));
        log("pingpong: 64 B round trips, pinned to CPU 0");
        // One pinned process per round, each followed by the peers, pinned the same way.
        let (mut peer_med, mut peer_p99) = (peers::Tally::default(), peers::Tally::default());
        let mut pinned: Option<PinnedRounds> = Some(Default::default());
        for _ in 0..rounds {
            match (pinned_pingpong(pp_n, 1), pinned.as_mut()) {
                (Some(one), Some(all)) => {
                    for (a, o) in all.iter_mut().zip(one) {
                        a.extend(o);
                    }
                }
                _ => {
                    pinned = None;
                    break;
                }
            }
            let p = peers.sample(&pp_args, true, &peer_med);
            peer_med.add(&p, "median_us");
            peer_p99.add(&p, "p99_us");
        }
        match pinned {
            Some([rm, rp, mm, mp, hm, hp, km, kp]) => {
                let name = "pingpong 64 B, median, pinned (taskset -c 0)";
                peer_rows.push(row(name, "µs", Better::Lower, &rm, &mm, &peer_med));
                let name = "pingpong 64 B, p99, pinned (taskset -c 0)";
                peer_rows.push(row(name, "µs", Better::Lower, &rp, &mp, &peer_p99));
                figs.push(fig(
                    "pingpong 64 B, median, pinned (taskset -c 0)",
                    "µs",
                    median(&mm),
                    median(&rm),
                    "TCP",
                    Better::Lower,
                    1.5,
                    String::new(),
                ));
                figs.push(fig(
                    "pingpong 64 B, p99, pinned (taskset -c 0)",
                    "µs",
                    median(&mp),
                    median(&rp),
                    "TCP",
                    Better::Lower,
                    3.0,
                    String::new(),
                ));
                // Two floors: the design card's literal form (a crossbeam channel), and the
                // cheapest wake-up a reader thread can give (park/unpark, no spinning).
                figs.push(fig(
                    "hand-off floor: reader thread + channel per side, no mtmux, median, pinned",
                    "µs",
                    median(&hm),
                    median(&rm),
                    "TCP",
                    Better::Lower,
                    f64::INFINITY,
                    format!(
                        "p99 {:.1} µs; with park/unpark instead of the channel: median {:.1} µs \
                         ({:.2}× TCP), p99 {:.1} µs ({:.2}× TCP's); bounds pingpong for the \
                         prescribed design",
                        median(&hp),
                        median(&km),
                        median(&km) / median(&rm),
                        median(&kp),
                        median(&kp) / median(&rp)
                    ),
                ));
            }
            None => log("pinned pingpong skipped: taskset unavailable"),
        }
    }
    if o.wants("churn") {
        log(&format!("churn: {churn_n} × open, 64 B echo, close"));
        let mut tally = peers::Tally::default();
        let (raw, mux) = interleaved(
            rounds,
            || loopback::churn_raw(churn_n),
            || loopback::churn_mux(4, churn_n),
            || {
                tally.add(
                    &peers.sample(&args(&["churn", &churn_n.to_string()]), false, &tally),
                    "streams_per_s",
                )
            },
        );
        peer_rows.push(row("churn: open, 64 B echo, close", "streams/s", Better::Higher, &raw, &mux, &tally));
        figs.push(fig(
            "churn: open, 64 B echo, close",
            "streams/s",
            median(&mux),
            median(&raw),
            "TCP connect/close",
            Better::Higher,
            1.5,
            spread(&mux),
        ));
    }
    if o.wants("fairness") {
        log("fairness: pingpong p99 next to a saturating stream");
        let mut p99 = Vec::new();
        let mut med = Vec::new();
        for _ in 0..rounds {
            let v = loopback::fairness_mux(4, if o.quick { 1_000 } else { 5_000 });
            p99.push(percentile(&v, 99.0) / 1000.0);
            med.push(median(&v) / 1000.0);
        }
        let mut f = fig(
            "fairness: pingpong p99 beside a bulk stream",
            "ms",
            median(&p99),
            f64::NAN,
            "",
            Better::Lower,
            5.0,
            format!("median {:.3} ms", median(&med)),
        );
        f.absolute = true;
        figs.push(f);
    }
    if o.wants("memory") {
        log(&format!("idle memory: {idle_n} idle streams on one session"));
        let mut per = Vec::new();
        let mut threads = (0, 0);
        for _ in 0..rounds.min(3) {
            let (p, tb, ta) = loopback::idle_memory(4, idle_n);
            per.push(p / 1024.0);
            threads = (tb, ta);
        }
        let mut f = fig(
            &format!("idle memory per stream ({idle_n} streams, both ends)"),
            "KiB",
            median(&per),
            f64::NAN,
            "",
            Better::Lower,
            4.0,
            format!("threads {} before, {} after", threads.0, threads.1),
        );
        f.absolute = true;
        figs.push(f);
    }
    if o.wants("scaling") || o.wants("heterogeneous") || o.wants("latency") {
        figs.extend(linkemu::run(&o.only, rounds, o.quick));
    }
    if o.wants("unequal") || o.wants("both") {
        figs.extend(paths::run(&o.only, rounds, o.quick));
    }
    let mut details = String::new();
    if o.wants("failover") {
        log("failover: one stream over 4 capped tunnels; one is killed or blackholed 2 s in");
        let (f, detail) = failover::run(rounds);
        figs.extend(f);
        if !detail.is_empty() {
            details = format!(
                "\n## Failover\n\n{detail}\nPer-tunnel throughput of the median rounds: [`{}`](../{}).\n",
                failover::PICTURE,
                failover::PICTURE
            );
        }
    }

    let table = report::table(&figs);
    println!("\n{table}");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let header = format!(
        "# mtmux benchmark results\n\nProduced by `make bench` (`mtmux-bench{}{}`), {} round(s) per figure, medians.\nMachine: {} × {}, Linux {}.\n\n",
        if o.quick { " --quick" } else { "" },
        if o.only.is_empty() { String::new() } else { format!(" --only {}", o.only.join(",")) },
        rounds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu,
        std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim()
    );
    let peers_section = if peers.off || peer_rows.is_empty() {
        String::new()
    } else {
        format!("\n{}\n{}", peers::INTRO, report::peers_table(&peers.headers, &peer_rows))
    };
    println!("{peers_section}{details}");
    if let Err(e) =
        report::write_section(&o.out, "suite", &format!("{header}{table}{peers_section}{details}"))
    {
        log(&format!("cannot write {}: {e}", o.out));
    } else {
        log(&format!("table written to {}", o.out));
    }
}
