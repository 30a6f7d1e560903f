//! Flow-control window arithmetic, for one stream or for the whole session.
//!
//! Windows count *charge* (payload bytes plus a fixed cost per DATA frame, see
//! `proto::frame::data_charge`). The receiver announces an absolute `limit` of the sender's
//! cumulative charge; a WINDOW frame only ever raises it, so WINDOW frames may travel over any
//! tunnel and arrive in any order. Pure arithmetic; time is passed in.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The receiving side of a window: how much the peer may send, and when to tell it more.
#[derive(Clone, Debug)]
pub struct RecvWindow {
    /// Current window size (auto-tuned between `min` and `max`).
    size: u64,
    /// The initial size, below which auto-tuning never shrinks the window.
    min: u64,
    /// Largest window auto-tuning may reach.
    max: u64,
    /// Absolute limit announced to the peer.
    limit: u64,
    /// Charge consumed by the application (or discarded) so far.
    consumed: u64,
    /// When the last update was announced; used for auto-tuning.
    last_update: Option<Instant>,
}

impl RecvWindow {
    /// A window of `initial` charge that auto-tuning may grow to `max`.
    pub fn new(initial: u64, max: u64) -> Self {
        RecvWindow {
            size: initial,
            min: initial,
            max: max.max(initial),
            limit: initial,
            consumed: 0,
            last_update: None,
        }
    }

    /// The absolute limit currently granted to the peer.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Current window size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Record `n` charge consumed. Returns the new limit to announce when at least half of the
    /// window has been consumed since the last announcement.
    ///
    /// Auto-tuning (as in QUIC implementations and rust-yamux): if the previous announcement
    /// was less than one round trip ago, the window is what limits throughput, so it doubles,
    /// up to `max`; if it was more than four round trips ago, the window is larger than the
    /// path needs, so it halves, down to its initial size. The window thus settles between
    /// one and four times the bandwidth-delay product; a larger one would only queue data in
    /// the kernel ahead of other streams' frames. `rtt` is the delay to cover: the path's
    /// minimum round trip (`core::rtt`) plus the tunnels' delay skew. Shrinking never lowers
    /// an announced limit: the peer is only granted less in later updates.
    pub fn consume(&mut self, n: u64, now: Instant, rtt: Option<Duration>) -> Option<u64> {
        self.consumed += n;
        let outstanding = self.limit - self.consumed.min(self.limit);
        if outstanding > self.size / 2 {
            return None;
        }
        if let (Some(last), Some(rtt)) = (self.last_update, rtt) {
            let since = now.saturating_duration_since(last);
            if since < rtt {
                self.size = (self.size * 2).min(self.max);
            } else if since > rtt * 4 {
                self.size = (self.size / 2).max(self.min);
            }
        }
        self.last_update = Some(now);
        self.limit = self.limit.max(self.consumed + self.size);
        Some(self.limit)
    }

    /// Whether a peer that has sent `total` charge in all stays within the limit.
    pub fn allows(&self, total: u64) -> bool {
        total <= self.limit
    }
}

/// The sending side of a window: how much more may be sent.
#[derive(Clone, Copy, Debug)]
pub struct SendWindow {
    /// Absolute limit announced by the peer.
    limit: u64,
    /// Charge sent so far.
    used: u64,
}

impl SendWindow {
    /// A window with the peer's initial limit.
    pub fn new(initial: u64) -> Self {
        SendWindow { limit: initial, used: 0 }
    }

    /// Charge that may still be sent.
    pub fn available(&self) -> u64 {
        self.limit.saturating_sub(self.used)
    }

    /// Apply a WINDOW frame. Returns whether the limit grew (stale updates are ignored).
    pub fn raise(&mut self, limit: u64) -> bool {
        if limit > self.limit {
            self.limit = limit;
            true
        } else {
            false
        }
    }

    /// Spend `n` charge. The caller checked `available()`.
    pub fn spend(&mut self, n: u64) {
        debug_assert!(n <= self.available());
        self.used += n;
    }

    /// Charge sent so far.
    pub fn used(&self) -> u64 {
        self.used
    }
}

/// A send window shared by many writers (the session-level one): reservations are made with
/// a compare-and-swap, so writers do not serialise on a lock. Waiting for credit is the
/// caller's business.
///
/// Besides the peer's limit, what is sent and not yet acknowledged is bounded by `cap`: a
/// sender keeps every DATA frame until the peer acknowledges it, and that replay buffer must
/// not outgrow what the peer granted, even if the peer raised its limit without
/// acknowledging.
#[derive(Debug)]
pub struct SharedSendWindow {
    /// Absolute limit announced by the peer.
    limit: AtomicU64,
    /// Charge reserved so far.
    used: AtomicU64,
    /// Charge acknowledged so far.
    acked: AtomicU64,
    /// Most charge reserved and not yet acknowledged.
    cap: u64,
}

impl SharedSendWindow {
    /// A window with the peer's initial limit, holding at most `cap` unacknowledged charge.
    pub fn new(initial: u64, cap: u64) -> Self {
        SharedSendWindow {
            limit: AtomicU64::new(initial),
            used: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            cap,
        }
    }

    fn ceiling(&self) -> u64 {
        self.limit.load(Ordering::Acquire).min(self.acked.load(Ordering::Acquire).saturating_add(self.cap))
    }

    /// Charge that may still be reserved.
    pub fn available(&self) -> u64 {
        self.ceiling().saturating_sub(self.used.load(Ordering::Acquire))
    }

    /// Reserve up to `max` charge, but only if more than `min` is available; returns what
    /// was reserved.
    pub fn try_reserve(&self, min: u64, max: u64) -> Option<u64> {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            let avail = self.ceiling().saturating_sub(used);
            if avail <= min {
                return None;
            }
            let take = avail.min(max);
            match self.used.compare_exchange_weak(used, used + take, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(take),
                Err(now) => used = now,
            }
        }
    }

    /// Apply a WINDOW frame. Returns whether the limit grew.
    pub fn raise(&self, limit: u64) -> bool {
        self.limit.fetch_max(limit, Ordering::AcqRel) < limit
    }

    /// `charge` more was acknowledged by the peer (or will never be sent).
    pub fn acknowledge(&self, charge: u64) {
        self.acked.fetch_add(charge, Ordering::AcqRel);
    }

    /// Charge reserved and not acknowledged.
    pub fn unacknowledged(&self) -> u64 {
        self.used.load(Ordering::Acquire).saturating_sub(self.acked.load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announces_after_half_the_window() {
        let mut w = RecvWindow::new(100, 100);
        let now = Instant::now();
        assert_eq!(w.consume(40, now, None), None);
        assert_eq!(w.consume(10, now, None), Some(150));
        assert_eq!(w.limit(), 150);
        assert!(w.allows(150));
        assert!(!w.allows(151));
    }

    #[test]
    fn autotunes_when_updates_come_faster_than_one_rtt() {
        let mut w = RecvWindow::new(100, 400);
        let now = Instant::now();
        let rtt = Some(Duration::from_millis(10));
        assert_eq!(w.consume(60, now, rtt), Some(160));
        // Next update 5 ms later (< 1 RTT): the window doubles.
        assert_eq!(w.consume(60, now + Duration::from_millis(5), rtt), Some(120 + 200));
        assert_eq!(w.size(), 200);
        // 15 ms later (between 1 and 2 RTT): the window is not the limit; it stays.
        assert_eq!(w.consume(110, now + Duration::from_millis(20), rtt), Some(230 + 200));
        assert_eq!(w.size(), 200);
        // Never beyond max.
        let t = now + Duration::from_millis(21);
        w.consume(120, t, rtt);
        assert_eq!(w.size(), 400);
        w.consume(400, t, rtt);
        assert_eq!(w.size(), 400);
        // Much slower than the round trip: the window shrinks back, never below its start,
        // and never takes back what was granted.
        let limit = w.limit();
        let t = now + Duration::from_secs(1);
        let granted = w.consume(400, t, rtt).unwrap();
        assert!(granted >= limit);
        assert_eq!(w.size(), 200);
        w.consume(200, t + Duration::from_secs(1), rtt);
        w.consume(200, t + Duration::from_secs(2), rtt);
        assert_eq!(w.size(), 100);
    }

    #[test]
    fn shared_window_reserves_within_the_limit() {
        let w = SharedSendWindow::new(1000, u64::MAX / 2);
        assert_eq!(w.try_reserve(64, 300), Some(300));
        assert_eq!(w.try_reserve(64, 900), Some(700));
        assert_eq!(w.try_reserve(64, 10), None);
        assert!(w.raise(1100));
        assert!(!w.raise(1050));
        // 100 available, but not more than the minimum asked for.
        assert_eq!(w.try_reserve(100, 1000), None);
        assert_eq!(w.try_reserve(64, 1000), Some(100));
    }

    #[test]
    fn concurrent_reservations_never_exceed_the_limit() {
        let w = std::sync::Arc::new(SharedSendWindow::new(100_000, u64::MAX / 2));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    let mut got = 0;
                    while let Some(n) = w.try_reserve(0, 37) {
                        got += n;
                    }
                    got
                })
            })
            .collect();
        let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(total, 100_000);
        assert_eq!(w.available(), 0);
    }

    #[test]
    fn unacknowledged_charge_is_capped_whatever_the_peer_grants() {
        let w = SharedSendWindow::new(10_000, 1000);
        assert_eq!(w.try_reserve(0, 5000), Some(1000));
        assert_eq!(w.try_reserve(0, 1), None, "the replay cap binds");
        w.acknowledge(400);
        assert_eq!(w.unacknowledged(), 600);
        assert_eq!(w.try_reserve(0, 5000), Some(400));
        w.acknowledge(9_000);
        assert_eq!(w.available(), 10_000 - 1400, "then the peer's limit binds");
    }

    #[test]
    fn send_window_ignores_stale_updates() {
        let mut s = SendWindow::new(100);
        s.spend(80);
        assert_eq!(s.available(), 20);
        assert!(s.raise(200));
        assert!(!s.raise(150));
        assert_eq!(s.available(), 120);
        assert_eq!(s.used(), 80);
    }
}
