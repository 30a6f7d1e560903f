//! What `mtmux bench` prints: a table row per interval (session and per-tunnel throughput)
//! and the summary lines. Plain functions of counters and times.

use crate::units::{fmt_bytes, fmt_duration, mb_per_s};
use std::fmt::Write;
use std::time::Duration;

/// Width of a tunnel column.
const COL: usize = 8;

/// `    time  dir     session      t0      t1 ...  (MB/s, <what>)`.
pub fn table_header(tunnels: usize, what: &str) -> String {
    let mut s = format!("{:>8}  {:<4} {:>9} ", "time", "dir", "session");
    for i in 0..tunnels {
        let _ = write!(s, "{:>COL$}", format!("t{i}"));
    }
    let _ = write!(s, "  (MB/s, {what})");
    s
}

/// One interval: the session's throughput and each tunnel's, from per-tunnel byte counters.
pub fn table_row(at: Duration, dir: &str, prev: &[u64], cur: &[u64], over: Duration) -> String {
    let deltas: Vec<u64> = cur.iter().zip(prev).map(|(c, p)| c.saturating_sub(*p)).collect();
    let mut s =
        format!("{:>7.2}s  {:<4} {:>9.1} ", at.as_secs_f64(), dir, mb_per_s(deltas.iter().sum(), over));
    for d in deltas {
        let _ = write!(s, "{:>COL$.1}", mb_per_s(d, over));
    }
    s
}

/// How a run's bytes spread over the tunnels: `t0 608.1 MB (25%)  t1 ...`.
pub fn tunnel_shares(first: &[u64], last: &[u64]) -> String {
    let deltas: Vec<u64> = last.iter().zip(first).map(|(l, f)| l.saturating_sub(*f)).collect();
    let total: u64 = deltas.iter().sum::<u64>().max(1);
    deltas
        .iter()
        .enumerate()
        .map(|(i, d)| format!("t{i} {} ({:.0}%)", fmt_bytes(*d), *d as f64 * 100.0 / total as f64))
        .collect::<Vec<_>>()
        .join("  ")
}

/// `<what>: 2.43 GB in 3.00 s = 810.2 MB/s`, the label padded to `width` so that lines
/// line up.
pub fn result(what: &str, width: usize, bytes: u64, elapsed: Duration) -> String {
    format!(
        "{:<width$} {} in {} = {:.1} MB/s",
        format!("{what}:"),
        fmt_bytes(bytes),
        fmt_duration(elapsed),
        mb_per_s(bytes, elapsed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_rows_line_up() {
        let header = table_header(2, "received");
        let row = table_row(
            Duration::from_millis(500),
            "up",
            &[0, 1_000_000],
            &[50_000_000, 51_000_000],
            Duration::from_millis(500),
        );
        assert_eq!(header, "    time  dir    session       t0      t1  (MB/s, received)");
        assert_eq!(row, "   0.50s  up       200.0    100.0   100.0");
        assert_eq!(header.find("t1").map(|i| i + 2), Some(row.len()));
    }

    #[test]
    fn shares_add_up_to_the_whole() {
        assert_eq!(tunnel_shares(&[0, 10], &[3_000_000, 1_000_010]), "t0 3.0 MB (75%)  t1 1.0 MB (25%)");
        // Nothing moved: no division by zero.
        assert_eq!(tunnel_shares(&[5], &[5]), "t0 0 B (0%)");
    }

    #[test]
    fn result_gives_bytes_time_and_rate() {
        assert_eq!(
            result("mtmux", 8, 2_000_000_000, Duration::from_secs(4)),
            "mtmux:   2.00 GB in 4.00 s = 500.0 MB/s"
        );
    }
}
