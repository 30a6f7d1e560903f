//! The receiver's acknowledgement state of one tunnel generation: how many DATA frames have
//! arrived on it, and when to tell the sender.
//!
//! An ACK is due once enough bytes have arrived since the last one (so the sender's replay
//! buffer, bounded by the session window, never fills between two ACKs), or once the oldest
//! unacknowledged frame has waited the acknowledgement delay (so that the sender's stale
//! detection sees progress on a healthy tunnel, and the tail of a burst is released). ACKs are
//! cumulative, so a lost one costs nothing but time. Pure data structure; time is passed in.

use std::time::{Duration, Instant};

/// Longest an arrived DATA frame waits for its acknowledgement when nothing else triggers it.
pub const ACK_DELAY: Duration = Duration::from_millis(10);

/// Acknowledgement state of one tunnel generation.
#[derive(Clone, Debug, Default)]
pub struct AckTracker {
    /// The tunnel's generation.
    generation: u32,
    /// DATA frames received on this generation.
    received: u64,
    /// Count in the last ACK sent.
    acked: u64,
    /// Bytes (headers included) received since the last ACK.
    bytes: u64,
    /// When the oldest unacknowledged frame arrived.
    since: Option<Instant>,
}

impl AckTracker {
    /// State of a new generation.
    pub fn new(generation: u32) -> Self {
        AckTracker { generation, ..Default::default() }
    }

    /// The generation tracked.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// A DATA frame of `bytes` (header included) arrived.
    pub fn on_frame(&mut self, bytes: usize, now: Instant) {
        self.received += 1;
        self.bytes += bytes as u64;
        self.since.get_or_insert(now);
    }

    /// Whether frames wait for an ACK.
    pub fn owed(&self) -> bool {
        self.received > self.acked
    }

    /// Whether an ACK is due: `max_bytes` arrived unacknowledged, or the oldest waited `delay`.
    pub fn due(&self, now: Instant, delay: Duration, max_bytes: u64) -> bool {
        self.owed()
            && (self.bytes >= max_bytes
                || self.since.is_some_and(|s| now.saturating_duration_since(s) >= delay))
    }

    /// The ACK of everything received so far (generation, count), if anything was: to send
    /// again even if nothing new is owed (the last one may have been lost).
    pub fn current(&mut self) -> Option<(u32, u64)> {
        self.take();
        (self.received > 0).then_some((self.generation, self.received))
    }

    /// Take the ACK to send (generation, cumulative count), if frames wait for one.
    pub fn take(&mut self) -> Option<(u32, u64)> {
        if !self.owed() {
            return None;
        }
        self.acked = self.received;
        self.bytes = 0;
        self.since = None;
        Some((self.generation, self.received))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_by_bytes_or_by_age_and_cumulative() {
        let t0 = Instant::now();
        let mut a = AckTracker::new(3);
        assert!(!a.due(t0, ACK_DELAY, 1000) && a.take().is_none());
        a.on_frame(600, t0);
        assert!(!a.due(t0, ACK_DELAY, 1000));
        a.on_frame(600, t0 + Duration::from_millis(1));
        assert!(a.due(t0 + Duration::from_millis(1), ACK_DELAY, 1000), "by bytes");
        assert_eq!(a.take(), Some((3, 2)));
        a.on_frame(1, t0 + Duration::from_millis(2));
        assert!(!a.due(t0 + Duration::from_millis(11), ACK_DELAY, 1000));
        assert!(a.due(t0 + Duration::from_millis(12), ACK_DELAY, 1000), "by age");
        assert_eq!(a.take(), Some((3, 3)), "counts are cumulative");
        assert!(!a.owed());
        assert_eq!(a.current(), Some((3, 3)));
        a.on_frame(1, t0);
        assert_eq!(a.current(), Some((3, 4)), "what is owed too");
        assert!(!a.owed());
    }
}
