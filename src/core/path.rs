//! Which tunnel a frame should go to when tunnels differ in delay: the earliest-completion-first
//! choice of MPTCP's ECF/BLEST schedulers, as pure code (samples and time are passed in).
//!
//! Each tunnel has an estimate of when a byte written to it now would reach the peer:
//!
//! ```text
//! eta = one-way path delay + queueing in flight + unsent bytes / rate
//!     = min ping rtt / 2   + (kernel srtt − kernel min rtt, if data is in flight)
//!                          + notsent / delivery rate
//! ```
//!
//! The path delay comes from the tunnel's own keepalive pings (a windowed minimum, so it
//! includes delay the kernel cannot see, e.g. behind a relay) or, before any ping answered,
//! from the kernel's minimum RTT; the rest from the socket's `TCP_INFO`, sampled by the
//! tunnel's writer whenever it asks for work.
//!
//! A tunnel is **held** (takes no session-level work) while some usable tunnels have a path
//! shorter by more than a margin (max(10 ms, a quarter of the shortest), path delay without
//! queueing) and an estimate lower by the margin, and the backlog is small enough that those
//! faster tunnels will have sent a frame before it would arrive on the slow one:
//!
//! ```text
//! hold t  ⇔  eta_t + frame/rate_t  >  min eta of faster ones + (backlog + frame)/their rate + margin
//! ```
//!
//! Tunnels whose paths are within the margin of each other are never held, whatever their
//! queues: the pull scheduler already gives a tunnel with a fuller queue less (it asks for
//! work later), and holding it would empty its queue. A slow tunnel is used again once the
//! backlog is deep enough that sending on it pays (its frame arrives before the faster ones
//! could send it).

use super::rtt::MinRtt;
use std::time::{Duration, Instant};

/// How long a ping sample counts towards a tunnel's path delay: long, as the kernel's own
/// minimum RTT (pings under load include queueing, which the socket sample adds anyway).
const PING_WINDOW: Duration = Duration::from_secs(300);
/// Tunnels whose estimates differ by less than this count as equal: routes a few
/// milliseconds apart are all worth using (the receive window covers such a skew), and the
/// estimates themselves move by that much with queueing.
const MARGIN_MIN: Duration = Duration::from_millis(10);
/// Rate assumed for a tunnel whose kernel has no delivery-rate sample yet (bytes per second).
const RATE_FLOOR: f64 = 1e6;

/// What a tunnel's socket reports (`TCP_INFO`), sampled by its writer.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// The kernel's smoothed round trip.
    pub srtt: Duration,
    /// The kernel's minimum round trip.
    pub min_rtt: Duration,
    /// Bytes written to the socket and not yet sent.
    pub notsent: u64,
    /// The kernel's recent delivery rate, bytes per second (0: unknown).
    pub rate: u64,
    /// Whether sent data awaits the peer's TCP acknowledgement. Without any, nothing queues
    /// ahead of a new byte in the network, whatever the last smoothed RTT says (it is only
    /// updated by acknowledgements, so an idle tunnel keeps the value of its last busy time).
    pub in_flight: bool,
}

/// The estimate kept for one tunnel.
#[derive(Debug)]
struct Path {
    /// Minimum keepalive round trip (path delay both ways, as the session sees it).
    ping: MinRtt,
    /// Latest socket sample, if any.
    sample: Option<Sample>,
    /// Whether the connection's first ping answered (it may include the peer's start-up, and
    /// a minimum filter would keep such an outlier: it is not a sample).
    pinged: bool,
}

impl Path {
    fn new() -> Self {
        Path { ping: MinRtt::new(PING_WINDOW), sample: None, pinged: false }
    }

    fn rate(&self) -> f64 {
        self.sample.map_or(0.0, |s| s.rate as f64).max(RATE_FLOOR)
    }

    /// The path's one-way delay without queueing, if known.
    fn path_delay(&self) -> Option<Duration> {
        let ping = self.ping.get();
        let kernel_min = self.sample.map(|s| s.min_rtt).filter(|d| !d.is_zero());
        let rtt = match (ping, kernel_min) {
            (Some(p), Some(k)) => p.max(k),
            (p, k) => p.or(k)?,
        };
        Some(rtt / 2)
    }

    /// When a byte written now would arrive, if anything is known of the tunnel.
    fn eta(&self) -> Option<Duration> {
        let s = self.sample;
        let delay = self.path_delay()?;
        let queued = s.map_or(Duration::ZERO, |s| {
            let network = if s.in_flight { s.srtt.saturating_sub(s.min_rtt) } else { Duration::ZERO };
            network + Duration::from_secs_f64(s.notsent as f64 / self.rate())
        });
        Some(delay + queued)
    }
}

/// Delay estimates of a session's tunnels and the hold decision.
#[derive(Debug)]
pub struct Paths {
    paths: Vec<Path>,
}

impl Paths {
    /// Estimates for `tunnels` tunnels, nothing known yet.
    pub fn new(tunnels: usize) -> Self {
        Paths { paths: (0..tunnels).map(|_| Path::new()).collect() }
    }

    /// A keepalive round trip of tunnel `t` measured at `now` (the first of a connection is
    /// ignored).
    pub fn record_ping(&mut self, t: usize, now: Instant, rtt: Duration) {
        let p = &mut self.paths[t];
        if std::mem::replace(&mut p.pinged, true) {
            p.ping.record(now, rtt);
        }
    }

    /// Tunnel `t`'s socket reported `sample`.
    pub fn record_sample(&mut self, t: usize, sample: Sample) {
        self.paths[t].sample = Some(sample);
    }

    /// Tunnel `t` has a new connection: what was known of the old one no longer holds.
    pub fn reset(&mut self, t: usize) {
        self.paths[t] = Path::new();
    }

    /// When a byte written to tunnel `t` now would arrive, if known.
    pub fn eta(&self, t: usize) -> Option<Duration> {
        self.paths[t].eta()
    }

    /// Whether tunnel `t` should leave a `frame`-byte frame to faster tunnels, with `backlog`
    /// bytes waiting to be sent in all and `usable(u)` telling which tunnels take work. A
    /// tunnel with no estimate, or whose path is not longer than every usable other one's by
    /// the margin, is never held: differences of queueing alone are the pull scheduler's
    /// business (a tunnel with a fuller queue asks for work later).
    pub fn holds(&self, t: usize, backlog: usize, frame: usize, usable: impl Fn(usize) -> bool) -> bool {
        let (Some(eta_t), Some(delay_t)) = (self.eta(t), self.paths[t].path_delay()) else {
            return false;
        };
        let others = || (0..self.paths.len()).filter(|&u| u != t && usable(u));
        let Some(shortest) = others().filter_map(|u| self.paths[u].path_delay()).min() else {
            return false;
        };
        let margin = MARGIN_MIN.max(shortest / 4);
        if delay_t <= shortest + margin {
            return false;
        }
        // The faster ones: every usable tunnel whose path and estimate beat t's by the margin.
        let (mut best, mut rate) = (None::<Duration>, 0.0);
        for u in others() {
            let p = &self.paths[u];
            if let (Some(e), Some(d)) = (p.eta(), p.path_delay()) {
                if d + margin < delay_t && e + margin < eta_t {
                    best = Some(best.map_or(e, |b| b.min(e)));
                    rate += p.rate();
                }
            }
        }
        let Some(best) = best else { return false };
        let on_t = eta_t + Duration::from_secs_f64(frame as f64 / self.paths[t].rate());
        let waiting = best + Duration::from_secs_f64((backlog + frame) as f64 / rate);
        on_t > waiting + margin
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    /// A socket sample: `rtt` without queueing, `rate` MB/s, nothing unsent.
    fn sample(rtt: u64, rate: u64) -> Sample {
        Sample { srtt: ms(rtt), min_rtt: ms(rtt), notsent: 0, rate: rate * 1_000_000, in_flight: true }
    }

    fn paths(samples: &[Sample]) -> Paths {
        let mut p = Paths::new(samples.len());
        for (t, s) in samples.iter().enumerate() {
            p.record_sample(t, *s);
        }
        p
    }

    const ALL: fn(usize) -> bool = |_| true;

    #[test]
    fn equal_tunnels_are_never_held() {
        let p = paths(&[sample(2, 10), sample(2, 10), sample(3, 10), sample(2, 10)]);
        for t in 0..4 {
            assert!(!p.holds(t, 4 << 20, 65536, ALL), "tunnel {t}");
        }
    }

    #[test]
    fn a_tunnel_far_slower_than_the_others_is_held() {
        // 3 tunnels of 2 ms RTT and one of 402 ms, 10 MB/s each.
        let p = paths(&[sample(2, 10), sample(2, 10), sample(402, 10), sample(2, 10)]);
        assert!(p.holds(2, 1 << 20, 65536, ALL));
        assert!(!p.holds(0, 1 << 20, 65536, ALL), "the fast ones take work");
    }

    #[test]
    fn the_slow_tunnel_pays_once_the_backlog_outlasts_its_delay() {
        // The slow one's frame arrives in ~200 ms; the three others drain 30 MB/s.
        let p = paths(&[sample(2, 10), sample(2, 10), sample(402, 10), sample(2, 10)]);
        assert!(p.holds(2, 3 << 20, 65536, ALL), "3 MiB drain in ~100 ms");
        assert!(!p.holds(2, 9 << 20, 65536, ALL), "9 MiB take ~300 ms: the slow one helps");
    }

    #[test]
    fn a_slow_tunnel_alone_is_not_held() {
        let p = paths(&[sample(2, 10), sample(402, 10)]);
        assert!(!p.holds(1, 0, 65536, |u| u == 1), "the fast one is not usable");
        let lone = paths(&[sample(402, 10)]);
        assert!(!lone.holds(0, 0, 65536, ALL));
    }

    #[test]
    fn unknown_tunnels_are_not_held_and_do_not_hold_others() {
        let mut p = Paths::new(2);
        assert!(!p.holds(0, 0, 1000, ALL));
        p.record_sample(1, sample(400, 10));
        assert!(!p.holds(1, 0, 1000, ALL), "nothing known of tunnel 0");
    }

    #[test]
    fn ping_delay_the_kernel_cannot_see_counts() {
        // Behind a relay the kernel sees 1 ms; the pings see 400 ms.
        let t0 = Instant::now();
        let mut p = paths(&[sample(1, 10), sample(1, 10), sample(1, 10)]);
        for t in 0..3 {
            // The first ping of a connection waited for the peer's start-up: ignored.
            p.record_ping(t, t0, ms(900));
            assert!(!p.holds(t, 0, 65536, ALL));
        }
        p.record_ping(0, t0, ms(2));
        p.record_ping(1, t0, ms(2));
        p.record_ping(2, t0, ms(400));
        assert!(p.holds(2, 0, 65536, ALL));
        assert!(p.eta(2).unwrap() >= ms(200));
        // A re-joined connection forgets it.
        p.reset(2);
        assert!(!p.holds(2, 0, 65536, ALL));
    }

    #[test]
    fn queueing_alone_holds_no_tunnel_but_counts_against_a_long_one() {
        // Same path; tunnel 1 has 2 MB unsent at 10 MB/s (200 ms) and a full bottleneck queue:
        // it asks for work later anyway (pull scheduler); holding it would empty its queue.
        let loaded =
            Sample { srtt: ms(40), min_rtt: ms(2), notsent: 2_000_000, rate: 10_000_000, in_flight: true };
        let mut p = paths(&[sample(2, 10), loaded, sample(2, 10)]);
        assert!(!p.holds(1, 0, 65536, ALL));
        assert!(p.eta(1).unwrap() > ms(230));
        // A path 30 ms longer each way with that queue is held, and so is an idle one.
        let long = Sample { srtt: ms(100), min_rtt: ms(62), ..loaded };
        p.record_sample(1, long);
        assert!(p.holds(1, 0, 65536, ALL));
        // Once it has sent everything, the smoothed RTT of its busy time no longer counts
        // (the kernel updates it only when acknowledgements come).
        p.record_sample(1, Sample { srtt: ms(400), notsent: 0, in_flight: false, ..long });
        assert!(p.eta(1).unwrap() < ms(40));
        assert!(p.holds(1, 0, 65536, ALL));
    }

    #[test]
    fn a_slower_but_close_tunnel_keeps_working() {
        // 20 ms against 24 ms round trips: within the margin.
        let p = paths(&[sample(20, 8), sample(24, 8)]);
        assert!(!p.holds(1, 0, 65536, ALL));
        // 10 ms more one way than loopback tunnels: also (routes a few ms apart are equal).
        let p = paths(&[sample(1, 500), sample(1, 500), sample(20, 500)]);
        assert!(!p.holds(2, 0, 65536, ALL));
        // 30 ms more is not.
        let p = paths(&[sample(1, 500), sample(1, 500), sample(61, 500)]);
        assert!(p.holds(2, 0, 65536, ALL));
    }
}
