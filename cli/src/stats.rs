//! The periodic stats line of `server` and `client`: per session, the rate and total of each
//! tunnel since the previous line.

use crate::units::{fmt_bytes, mb_per_s};
use mtmux::{Session, TunnelStats};
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Remembers the previous snapshot of a session's tunnels to turn counters into rates.
pub struct Meter {
    last: Vec<TunnelStats>,
    at: Instant,
}

impl Meter {
    /// Start measuring from now.
    pub fn new(session: &Session) -> Meter {
        Meter { last: session.tunnel_stats(), at: Instant::now() }
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
            state: mtmux::TunnelState::Live,
            generation: 0,
            frames_resent: 0,
            bytes_resent: 0,
            rejoins: 0,
        };
        Meter { last: (0..session.num_tunnels()).map(zero).collect(), at }
    }

    /// The stats line for the time since the previous call (or since `new`).
    pub fn line(&mut self, session: &Session) -> String {
        let now = Instant::now();
        let cur = session.tunnel_stats();
        let line = format_line(&self.last, &cur, now - self.at, session.num_streams());
        self.last = cur;
        self.at = now;
        line
    }
}

/// `3 streams, tx 12.3 MB/s, rx 0.1 MB/s; per tunnel tx/rx: t0 3.1/0.0 MB/s (1.20 GB/3.4 MB, rtt 0.3 ms), ...`
pub fn format_line(prev: &[TunnelStats], cur: &[TunnelStats], elapsed: Duration, streams: usize) -> String {
    let delta = |f: fn(&TunnelStats) -> u64| -> u64 {
        cur.iter().zip(prev).map(|(c, p)| f(c).saturating_sub(f(p))).sum()
    };
    let tx = delta(|t| t.bytes_sent);
    let rx = delta(|t| t.bytes_received);
    let mut s = format!(
        "{streams} stream{}, tx {:.1} MB/s, rx {:.1} MB/s; per tunnel tx/rx:",
        if streams == 1 { "" } else { "s" },
        mb_per_s(tx, elapsed),
        mb_per_s(rx, elapsed)
    );
    for (i, (c, p)) in cur.iter().zip(prev).enumerate() {
        let sep = if i == 0 { " " } else { ", " };
        if !c.alive {
            let _ = write!(s, "{sep}t{} dead", c.index);
            continue;
        }
        let _ = write!(
            s,
            "{sep}t{} {:.1}/{:.1} MB/s ({}/{}",
            c.index,
            mb_per_s(c.bytes_sent.saturating_sub(p.bytes_sent), elapsed),
            mb_per_s(c.bytes_received.saturating_sub(p.bytes_received), elapsed),
            fmt_bytes(c.bytes_sent),
            fmt_bytes(c.bytes_received),
        );
        if let Some(rtt) = c.rtt {
            let _ = write!(s, ", rtt {:.1} ms", rtt.as_secs_f64() * 1e3);
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
            state: if alive { mtmux::TunnelState::Live } else { mtmux::TunnelState::Dead },
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
        let line = format_line(&prev, &cur, Duration::from_secs(2), 3);
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
        let line = format_line(&prev, &cur, Duration::from_secs(1), 1);
        assert!(line.starts_with("1 stream, "), "{line}");
        assert!(line.ends_with("t1 dead"), "{line}");
    }
}
