//! When to re-dial a lost tunnel: at once, then after jittered, exponentially growing waits
//! (100 ms, 200 ms, ... up to a cap), so that many clients that lost a server at the same
//! moment do not all return in step. Pure: the randomness is passed in.

use std::time::Duration;

/// Wait before the second attempt.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);

/// Re-dial schedule of one tunnel slot.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// Failed attempts so far.
    failures: u32,
    /// Longest wait.
    max: Duration,
}

impl Backoff {
    /// A schedule whose waits never exceed `max`.
    pub fn new(max: Duration) -> Self {
        Backoff { failures: 0, max }
    }

    /// An attempt failed: how long to wait before the next one. `random` spreads the wait
    /// over ±25% of its nominal value.
    pub fn failed(&mut self, random: u32) -> Duration {
        let nominal = FIRST_RETRY.saturating_mul(1u32 << self.failures.min(16)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        let spread = nominal / 2;
        let jitter = spread.mul_f64(random as f64 / u32::MAX as f64);
        (nominal - nominal / 4 + jitter).min(self.max)
    }

    /// The slot is back: the next loss starts the schedule over.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let first = b.failed(u32::MAX / 2);
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125), "{first:?}");
        let waits: Vec<_> = (0..8).map(|_| b.failed(u32::MAX)).collect();
        assert!(waits.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*waits.last().unwrap(), Duration::from_secs(1));
        assert!(b.failed(0) >= Duration::from_millis(750));
        b.reset();
        assert!(b.failed(0) <= Duration::from_millis(100));
    }
}
