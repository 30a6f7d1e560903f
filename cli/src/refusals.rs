//! The server's log of connections its listener refused during their handshake (wrong or
//! missing key, too many handshakes from one address, garbage, ...): one info line each with
//! the peer's address and the reason. Under a flood at most [`LINES_PER_SECOND`] such lines a
//! second; the rest of each second is summed up in one line (how many, from how many
//! addresses, the busiest address).

use log::info;
use mtmux::{Listener, Refusal};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Refusals logged one by one per second; beyond that they are summed up.
pub const LINES_PER_SECOND: usize = 20;
const WINDOW: Duration = Duration::from_secs(1);

/// Rate limiting of the refusal lines (pure: the caller passes the time).
#[derive(Debug)]
pub struct RefusalLog {
    window_start: Instant,
    lines: usize,
    /// Refusals not logged one by one in this window, by address.
    suppressed: HashMap<IpAddr, usize>,
    /// Their reasons, first seen first (a few are named in the summary).
    reasons: Vec<String>,
}

impl RefusalLog {
    pub fn new(now: Instant) -> RefusalLog {
        RefusalLog { window_start: now, lines: 0, suppressed: HashMap::new(), reasons: Vec::new() }
    }

    /// The line to log for `r` now, or `None` when it is only counted for the summary.
    /// Call [`roll`](RefusalLog::roll) first when the window may have ended.
    pub fn offer(&mut self, r: &Refusal) -> Option<String> {
        if self.lines < LINES_PER_SECOND {
            self.lines += 1;
            return Some(crate::flags::in_flag_terms(&r.to_string(), None));
        }
        *self.suppressed.entry(r.peer.ip()).or_insert(0) += 1;
        if self.reasons.len() < 3 && !self.reasons.contains(&r.reason) {
            self.reasons.push(r.reason.clone());
        }
        None
    }

    /// When the current window ends.
    pub fn window_end(&self) -> Instant {
        self.window_start + WINDOW
    }

    /// At or after the window's end: start a new window, returning the summary line of the
    /// refusals the ended one did not log (if any).
    pub fn roll(&mut self, now: Instant) -> Option<String> {
        if now < self.window_end() {
            return None;
        }
        let summary = self.summary();
        *self = RefusalLog::new(now);
        summary
    }

    fn summary(&self) -> Option<String> {
        let total: usize = self.suppressed.values().sum();
        let (busiest, most) = self.suppressed.iter().max_by_key(|(ip, n)| (**n, std::cmp::Reverse(**ip)))?;
        Some(format!(
            "refused {total} more connections in the last second (not logged one by one) from {} address{}, \
             most from {busiest} ({most}): {}",
            self.suppressed.len(),
            if self.suppressed.len() == 1 { "" } else { "es" },
            self.reasons.join("; ")
        ))
    }
}

/// Log the listener's refusals for as long as the process runs.
pub fn log_refusals(listener: &Listener) {
    let mut log = RefusalLog::new(Instant::now());
    loop {
        let wait = log.window_end().saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
        let next = listener.next_refusal(Some(wait));
        if let Some(line) = log.roll(Instant::now()) {
            info!("{line}");
        }
        if let Some(line) = next.and_then(|r| log.offer(&r)) {
            info!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(peer: &str, reason: &str) -> Refusal {
        Refusal { peer: peer.parse().unwrap(), reason: reason.into() }
    }

    #[test]
    fn a_flood_is_logged_line_by_line_up_to_the_rate_then_summed_up() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(t0);
        let lines: Vec<String> = (0..LINES_PER_SECOND)
            .filter_map(|i| log.offer(&refusal(&format!("192.0.2.1:{}", 1000 + i), "busy")))
            .collect();
        assert_eq!(lines.len(), LINES_PER_SECOND);
        assert_eq!(lines[0], "refused 192.0.2.1:1000: busy");
        for i in 0..30 {
            assert_eq!(log.offer(&refusal(&format!("192.0.2.2:{i}"), "too many handshakes")), None);
        }
        assert_eq!(log.offer(&refusal("192.0.2.3:9", "authentication failed")), None);
        assert_eq!(log.roll(t0 + Duration::from_millis(500)), None, "the window is not over");
        let summary = log.roll(t0 + WINDOW).expect("a summary");
        assert_eq!(
            summary,
            "refused 31 more connections in the last second (not logged one by one) from 2 addresses, \
             most from 192.0.2.2 (30): too many handshakes; authentication failed"
        );
        // A new window logs line by line again, and a quiet one has no summary.
        assert!(log.offer(&refusal("192.0.2.4:1", "busy")).is_some());
        assert_eq!(log.roll(t0 + 3 * WINDOW), None);
    }
}
