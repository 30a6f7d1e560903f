//! Round-trip estimate for flow-control decisions: the windowed minimum of the keepalive
//! samples, i.e. the path's delay without queueing (as BBR's min_rtt). A smoothed average
//! would follow queueing delay (and session start-up) up, and windows sized from it would
//! fill the very queues that inflated it. Pure: time is passed in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Sliding-window minimum of RTT samples.
#[derive(Debug)]
pub struct MinRtt {
    /// Samples that may still become the minimum, oldest first, with increasing RTT.
    samples: VecDeque<(Instant, Duration)>,
    /// How long a sample counts.
    window: Duration,
}

impl MinRtt {
    /// A filter remembering samples for `window`.
    pub fn new(window: Duration) -> Self {
        MinRtt { samples: VecDeque::new(), window }
    }

    /// Add a sample taken at `now`; returns the new minimum.
    pub fn record(&mut self, now: Instant, rtt: Duration) -> Duration {
        // An older sample no smaller than the new one can never be the minimum again.
        while self.samples.back().is_some_and(|&(_, r)| r >= rtt) {
            self.samples.pop_back();
        }
        self.samples.push_back((now, rtt));
        while self.samples.front().is_some_and(|&(t, _)| now.saturating_duration_since(t) > self.window) {
            self.samples.pop_front();
        }
        self.samples.front().map(|&(_, r)| r).expect("the new sample is present")
    }

    /// The current minimum, if any sample was recorded.
    pub fn get(&self) -> Option<Duration> {
        self.samples.front().map(|&(_, r)| r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn keeps_the_minimum_within_the_window() {
        let t0 = Instant::now();
        let mut m = MinRtt::new(ms(1000));
        assert_eq!(m.get(), None);
        assert_eq!(m.record(t0, ms(30)), ms(30));
        assert_eq!(m.record(t0 + ms(10), ms(50)), ms(30));
        assert_eq!(m.record(t0 + ms(20), ms(20)), ms(20));
        assert_eq!(m.record(t0 + ms(30), ms(40)), ms(20));
        // The 20 ms sample expires; the later 40 ms one is the minimum now.
        assert_eq!(m.record(t0 + ms(1025), ms(60)), ms(40));
        assert_eq!(m.record(t0 + ms(2000), ms(70)), ms(60));
        assert!(m.samples.len() <= 2);
    }

    #[test]
    fn a_queueing_spike_does_not_raise_the_estimate() {
        let t0 = Instant::now();
        let mut m = MinRtt::new(ms(30_000));
        m.record(t0, ms(20));
        for i in 1..100 {
            assert_eq!(m.record(t0 + ms(i * 10), ms(20 + i)), ms(20));
        }
    }
}
