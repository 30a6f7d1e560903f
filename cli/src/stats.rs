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

/// `3 streams, tx 12.3 MB/s, rx 0.1 MB/s; per tunnel tx/rx: t0 3.1/0.0 MB/s (1.20 GB/3.4 MB, rtt 0.3 ms), ...`;
/// a tunnel that is not live says so (`t1 stale 0.0/0.0 MB/s (...)`, `t2 dead`, `t3 rejoining`),
/// one that had frames re-sent counts them (`..., 37 frames re-sent)`), and an outage comes
/// first (`3 streams, outage 2.1s, ...`).
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
    let tx = delta(|t| t.bytes_sent);
    let rx = delta(|t| t.bytes_received);
    let mut s = format!("{streams} stream{}", if streams == 1 { "" } else { "s" });
    if let Some(outage) = outage {
        let _ = write!(s, ", outage {}", fmt_span(outage));
    }
    let _ = write!(
        s,
        ", tx {:.1} MB/s, rx {:.1} MB/s; per tunnel tx/rx:",
        mb_per_s(tx, elapsed),
        mb_per_s(rx, elapsed)
    );
    for (i, (c, p)) in cur.iter().zip(prev).enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        let _ = write!(s, "{sep}t{} ", c.index);
        let resent = match c.frames_resent {
            0 => String::new(),
            1 => "1 frame re-sent".into(),
            n => format!("{n} frames re-sent"),
        };
        match c.state {
            TunnelState::Live => {}
            TunnelState::Stale => s.push_str("stale "),
            TunnelState::Dead | TunnelState::Rejoining => {
                let _ = write!(s, "{}", c.state);
                if !resent.is_empty() {
                    let _ = write!(s, " ({resent})");
                }
                continue;
            }
        }
        let _ = write!(
            s,
            "{:.1}/{:.1} MB/s ({}/{}",
            mb_per_s(c.bytes_sent.saturating_sub(p.bytes_sent), elapsed),
            mb_per_s(c.bytes_received.saturating_sub(p.bytes_received), elapsed),
            fmt_bytes(c.bytes_sent),
            fmt_bytes(c.bytes_received),
        );
        if let Some(rtt) = c.rtt {
            let _ = write!(s, ", rtt {:.1} ms", rtt.as_secs_f64() * 1e3);
        }
        if !resent.is_empty() {
            let _ = write!(s, ", {resent}");
        }
        s.push(')');
    }
    s
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
    fn line_shows_session_and_tunnel_rates_and_totals() {
        let prev = [tunnel(0, 0, 0, true), tunnel(1, 1_000_000, 0, true)];
        let mut cur = [tunnel(0, 2_000_000, 500_000, true), tunnel(1, 3_000_000, 0, true)];
        cur[1].rtt = Some(Duration::from_micros(1500));
        let line = format_line(&prev, &cur, Duration::from_secs(2), 3, None);
        assert_eq!(
            line,
            "3 streams, tx 2.0 MB/s, rx 0.2 MB/s; per tunnel tx/rx: \
             t0 1.0/0.2 MB/s (2.0 MB/500.0 kB), t1 1.0/0.0 MB/s (3.0 MB/0 B, rtt 1.5 ms)"
        );
    }

    #[test]
    fn dead_tunnels_are_marked() {
        let prev = [tunnel(0, 0, 0, true), tunnel(1, 0, 0, true)];
        let cur = [tunnel(0, 0, 0, true), tunnel(1, 0, 0, false)];
        let line = format_line(&prev, &cur, Duration::from_secs(1), 1, None);
        assert!(line.starts_with("1 stream, "), "{line}");
        assert!(line.ends_with("t1 dead"), "{line}");
    }

    #[test]
    fn states_other_than_live_and_resent_frames_are_shown_compactly() {
        let prev =
            [tunnel(0, 0, 0, true), tunnel(1, 0, 0, true), tunnel(2, 0, 0, true), tunnel(3, 0, 0, true)];
        let mut cur = prev.clone();
        cur[0].frames_resent = 1;
        cur[1].state = TunnelState::Stale;
        cur[1].frames_resent = 12;
        cur[2].state = TunnelState::Dead;
        cur[2].alive = false;
        cur[2].frames_resent = 37;
        cur[3].state = TunnelState::Rejoining;
        cur[3].alive = false;
        let line = format_line(&prev, &cur, Duration::from_secs(1), 2, None);
        assert_eq!(
            line,
            "2 streams, tx 0.0 MB/s, rx 0.0 MB/s; per tunnel tx/rx: \
             t0 0.0/0.0 MB/s (0 B/0 B, 1 frame re-sent), t1 stale 0.0/0.0 MB/s (0 B/0 B, 12 frames re-sent), \
             t2 dead (37 frames re-sent), t3 rejoining"
        );
    }

    #[test]
    fn an_outage_is_shown_first() {
        let prev = [tunnel(0, 0, 0, false)];
        let line = format_line(&prev, &prev, Duration::from_secs(1), 1, Some(Duration::from_millis(2100)));
        assert!(line.starts_with("1 stream, outage 2.1s, tx 0.0 MB/s"), "{line}");
    }
}
