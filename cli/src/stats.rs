//! The periodic stats line of `server` and `client`: per session, the rate and total of each
//! tunnel since the previous line, the state of tunnels that are not live, the frames re-sent
//! because a tunnel died or stalled, and how long an outage (no tunnel live) has lasted.

use crate::units::{fmt_bytes, fmt_span, mb_per_s};
use mtmux::{Session, TunnelState, TunnelStats};
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Remembers the previous snapshot of a session's tunnels to turn counters into rates.
pub struct Meter {
    last: Vec<TunnelStats>,
    at: Instant,
    /// Streams at the previous line (`None`: no line yet).
    streams: Option<usize>,
}

impl Meter {
    /// Start measuring from now.
    pub fn new(session: &Session) -> Meter {
        Meter { last: session.tunnel_stats(), at: Instant::now(), streams: None }
    }

    /// Start measuring from `at`, when the session started (every counter was zero).
    pub fn since(at: Instant, session: &Session) -> Meter {
        let zero = |index| TunnelStats {
            index,
            bytes_sent: 0,
            bytes_received: 0,
            frames_sent: 0,
            frames_received: 0,
            rtt: None,
            alive: true,
            state: TunnelState::Live,
            generation: 0,
            frames_resent: 0,
            bytes_resent: 0,
            rejoins: 0,
        };
        Meter { last: (0..session.num_tunnels()).map(zero).collect(), at, streams: None }
    }

    /// The stats line for the time since the previous call (or since `new`); `None` when
    /// nothing changed since the previous line (no bytes, same streams and tunnel states).
    pub fn line(&mut self, session: &Session) -> Option<String> {
        let now = Instant::now();
        let stats = session.stats();
        let streams = session.num_streams();
        if self.streams == Some(streams) && stats.outage.is_none() && idle(&self.last, &stats.tunnels) {
            self.at = now;
            return None;
        }
        let line = format_line(&self.last, &stats.tunnels, now - self.at, streams, stats.outage);
        self.last = stats.tunnels;
        self.at = now;
        self.streams = Some(streams);
        Some(line)
    }
}

/// Whether nothing but the round trips changed between two snapshots.
pub fn idle(prev: &[TunnelStats], cur: &[TunnelStats]) -> bool {
    prev.len() == cur.len()
        && prev.iter().zip(cur).all(|(p, c)| TunnelStats { rtt: p.rtt, ..c.clone() } == *p)
}

/// `3 streams, tx/rx 12.3/0.1 MB/s (1.20 GB/3.4 MB), rtt 0.3-1.2 ms; per tunnel: t0 3.1/0 t1 9.2/0 ...`:
/// the session's rates and totals, the range of the tunnels' keepalive round trips and the
/// frames re-sent since the session started, then each tunnel's rates tx/rx (MB/s, `0` for
/// none, no decimals from 10 up). A tunnel that is not live says so (`t1 stale 0/0`,
/// `t2 dead`, `t3 rejoining`), and an outage comes first (`3 streams, outage 2.1s, ...`).
/// Per-tunnel totals and re-sends are in `--stats-format json` and `--metrics`; this line
/// stays under 200 characters with 8 tunnels.
pub fn format_line(
    prev: &[TunnelStats],
    cur: &[TunnelStats],
    elapsed: Duration,
    streams: usize,
    outage: Option<Duration>,
) -> String {
    let delta = |f: fn(&TunnelStats) -> u64| -> u64 {
        cur.iter().zip(prev).map(|(c, p)| f(c).saturating_sub(f(p))).sum()
    };
    let total = |f: fn(&TunnelStats) -> u64| -> u64 { cur.iter().map(f).sum() };
    let mut s = format!("{streams} stream{}", if streams == 1 { "" } else { "s" });
    if let Some(outage) = outage {
        let _ = write!(s, ", outage {}", fmt_span(outage));
    }
    let _ = write!(
        s,
        ", tx/rx {}/{} MB/s ({}/{})",
        short(mb_per_s(delta(|t| t.bytes_sent), elapsed)),
        short(mb_per_s(delta(|t| t.bytes_received), elapsed)),
        fmt_bytes(total(|t| t.bytes_sent)),
        fmt_bytes(total(|t| t.bytes_received)),
    );
    let rtts = cur.iter().filter_map(|t| t.rtt);
    if let (Some(lo), Some(hi)) = (rtts.clone().min(), rtts.max()) {
        let (lo, hi) = (short(lo.as_secs_f64() * 1e3), short(hi.as_secs_f64() * 1e3));
        if lo == hi {
            let _ = write!(s, ", rtt {lo} ms");
        } else {
            let _ = write!(s, ", rtt {lo}-{hi} ms");
        }
    }
    match total(|t| t.frames_resent) {
        0 => {}
        1 => s.push_str(", 1 frame re-sent"),
        n => {
            let _ = write!(s, ", {n} frames re-sent");
        }
    }
    s.push_str("; per tunnel:");
    for (c, p) in cur.iter().zip(prev) {
        let _ = write!(s, " t{} ", c.index);
        match c.state {
            TunnelState::Live => {}
            TunnelState::Stale => s.push_str("stale "),
            TunnelState::Dead | TunnelState::Rejoining => {
                let _ = write!(s, "{}", c.state);
                continue;
            }
        }
        let _ = write!(
            s,
            "{}/{}",
            rate(c.bytes_sent.saturating_sub(p.bytes_sent), elapsed),
            rate(c.bytes_received.saturating_sub(p.bytes_received), elapsed),
        );
    }
    s
}

/// A tunnel's rate in MB/s, short: `0`, `0.4`, `9.5`, `12`.
fn rate(bytes: u64, elapsed: Duration) -> String {
    match mb_per_s(bytes, elapsed) {
        r if r < 0.05 => "0".into(),
        r => short(r),
    }
}

/// `0.4`, `9.5`, `12`: one decimal below 10.
fn short(x: f64) -> String {
    if x < 9.95 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel(index: usize, sent: u64, received: u64, alive: bool) -> TunnelStats {
        TunnelStats {
            index,
            bytes_sent: sent,
            bytes_received: received,
            frames_sent: 0,
            frames_received: 0,
            rtt: None,
            alive,
            state: if alive { TunnelState::Live } else { TunnelState::Dead },
            generation: 0,
            frames_resent: 0,
            bytes_resent: 0,
            rejoins: 0,
        }
    }

    #[test]
    fn line_shows_session_rates_totals_and_tunnel_rates() {
        let prev = [tunnel(0, 0, 0, true), tunnel(1, 1_000_000, 0, true)];
        let mut cur = [tunnel(0, 2_000_000, 500_000, true), tunnel(1, 3_000_000, 0, true)];
        cur[1].rtt = Some(Duration::from_micros(1500));
        let line = format_line(&prev, &cur, Duration::from_secs(2), 3, None);
        assert_eq!(
            line,
            "3 streams, tx/rx 2.0/0.2 MB/s (5.0 MB/500.0 kB), rtt 1.5 ms; per tunnel: t0 1.0/0.2 t1 1.0/0"
        );
    }

    #[test]
    fn dead_tunnels_are_marked() {
        let prev = [tunnel(0, 0, 0, true), tunnel(1, 0, 0, true)];
        let cur = [tunnel(0, 0, 0, true), tunnel(1, 0, 0, false)];
        let line = format_line(&prev, &cur, Duration::from_secs(1), 1, None);
        assert!(line.starts_with("1 stream, "), "{line}");
        assert!(line.ends_with("t0 0/0 t1 dead"), "{line}");
    }

    #[test]
    fn states_other_than_live_and_resent_frames_are_shown_compactly() {
        let prev =
            [tunnel(0, 0, 0, true), tunnel(1, 0, 0, true), tunnel(2, 0, 0, true), tunnel(3, 0, 0, true)];
        let mut cur = prev.clone();
        cur[0].frames_resent = 1;
        cur[0].rtt = Some(Duration::from_micros(300));
        cur[1].state = TunnelState::Stale;
        cur[1].frames_resent = 12;
        cur[1].rtt = Some(Duration::from_micros(12_000));
        cur[2].state = TunnelState::Dead;
        cur[2].alive = false;
        cur[2].frames_resent = 37;
        cur[3].state = TunnelState::Rejoining;
        cur[3].alive = false;
        let line = format_line(&prev, &cur, Duration::from_secs(1), 2, None);
        assert_eq!(
            line,
            "2 streams, tx/rx 0.0/0.0 MB/s (0 B/0 B), rtt 0.3-12 ms, 50 frames re-sent; \
             per tunnel: t0 0/0 t1 stale 0/0 t2 dead t3 rejoining"
        );
    }

    #[test]
    fn eight_busy_tunnels_fit_in_200_characters() {
        let gb = 1_000_000_000u64;
        let prev: Vec<_> = (0..8).map(|i| tunnel(i, 40 * gb, 40 * gb, true)).collect();
        let mut cur: Vec<_> = prev.clone();
        for (i, t) in cur.iter_mut().enumerate() {
            // 9.9 MB/s each way on most tunnels, 123 MB/s on one: the widest rates.
            let step = if i == 3 { 123_000_000 } else { 9_900_000 };
            t.bytes_sent += step;
            t.bytes_received += step;
            t.frames_resent = 1234;
            t.rtt = Some(Duration::from_micros(100_000 + 1_000 * i as u64));
        }
        cur[5].state = TunnelState::Stale;
        let line = format_line(&prev, &cur, Duration::from_secs(1), 512, None);
        assert!(line.len() < 200, "{} characters: {line}", line.len());
        assert!(line.contains(" t0 9.9/9.9 ") && line.contains(" t3 123/123 "), "{line}");
        assert!(line.contains(" t5 stale 9.9/9.9 ") && line.ends_with(" t7 9.9/9.9"), "{line}");
        assert!(line.contains(", 9872 frames re-sent;"), "{line}");
    }

    #[test]
    fn an_outage_is_shown_first() {
        let prev = [tunnel(0, 0, 0, false)];
        let line = format_line(&prev, &prev, Duration::from_secs(1), 1, Some(Duration::from_millis(2100)));
        assert!(line.starts_with("1 stream, outage 2.1s, tx/rx 0.0/0.0 MB/s"), "{line}");
    }
}
