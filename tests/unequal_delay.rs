//! Tunnels of unequal delay (issue 10): a tunnel whose frames would arrive far later than on
//! the others gets no data while the others can send it sooner (`core::path`), so one slow
//! path does not hold every stream's reorder buffer for its delay; and the round trip under
//! load, which receive windows must cover, is measured while the tunnels are busy. Real
//! loopback sockets through the fault relay; the tests run one at a time.
mod common;

use common::relay::{Dir, FaultRelay};
use common::rig::{serial, tunnel, wait_until, Transfer};
use mtmux::{Config, Listener, Session};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// One-way delay of the slow tunnel.
const DELAY: Duration = Duration::from_millis(100);

/// A session pair over a relay with `tunnels` tunnels, tunnel `delayed` (if any) `DELAY`
/// slower each way from the first byte of its handshake.
fn delayed_pair(tunnels: usize, delayed: Option<usize>) -> (Session, Session, FaultRelay, Listener) {
    let cfg = Config { tunnels, keepalive_interval: Duration::from_secs(1), ..Default::default() };
    pair_over_relay(&cfg, delayed)
}

fn pair_over_relay(cfg: &Config, delayed: Option<usize>) -> (Session, Session, FaultRelay, Listener) {
    let listener = Listener::bind("127.0.0.1:0", cfg).expect("bind");
    let relay = FaultRelay::new(listener.local_addrs());
    if let Some(d) = delayed {
        relay.delay(d, DELAY);
    }
    let (addr, c) = (relay.addr(), cfg.clone());
    let client = thread::spawn(move || mtmux::dial(addr, &c).expect("dial"));
    let server = listener.accept_timeout(Duration::from_secs(10)).expect("accept");
    (client.join().expect("client thread"), server, relay, listener)
}

/// Time to move `bytes` on one new stream from `a` to `b`, verified.
fn timed(a: &Session, b: &Session, bytes: u64) -> Duration {
    let (moved, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let t0 = Instant::now();
    Transfer::start(a, b, bytes, 0, &moved, &stop).finish();
    t0.elapsed()
}

#[test]
fn a_stream_over_three_fast_tunnels_and_one_slow_one_is_not_slowed_by_it() {
    let _serial = serial();
    const BYTES: u64 = 48 * MIB;
    let (c3, s3, _r3, _l3) = delayed_pair(3, None);
    let (c4, s4, r4, _l4) = delayed_pair(4, Some(3));
    // Both ends have measured the slow tunnel's round trip (keepalive probes).
    wait_until(Duration::from_secs(10), "the slow tunnel's round trip measured", || {
        [&c4, &s4].iter().all(|s| tunnel(s, 3).rtt.is_some_and(|r| r >= DELAY))
    });
    // Warm up both (window auto-tuning), then take the better of two rounds each.
    timed(&c3, &s3, 8 * MIB);
    timed(&c4, &s4, 8 * MIB);
    let before = r4.delivered(3, Dir::ToServer);
    let (mut fast, mut mixed) = (Duration::MAX, Duration::MAX);
    for _ in 0..2 {
        fast = fast.min(timed(&c3, &s3, BYTES));
        mixed = mixed.min(timed(&c4, &s4, BYTES));
    }
    let on_slow = r4.delivered(3, Dir::ToServer) - before;
    eprintln!(
        "3 fast tunnels: {fast:?}; 3 fast + 1 delayed {DELAY:?}: {mixed:?}; {on_slow} bytes on the slow one"
    );
    assert!(on_slow < 2 * BYTES / 10, "the slow tunnel carried {on_slow} of {} bytes", 2 * BYTES);
    // Without the hold, every window waits out the slow tunnel's delay: several times slower.
    assert!(
        mixed.as_secs_f64() <= 1.5 * fast.as_secs_f64() + 0.2,
        "3 fast + 1 slow took {mixed:?}, the 3 fast alone {fast:?}"
    );
}

#[test]
fn a_slow_tunnel_carries_the_data_once_the_fast_one_stops_delivering() {
    let _serial = serial();
    let (c, s, relay, _l) = delayed_pair(2, Some(1));
    wait_until(Duration::from_secs(10), "the slow tunnel's round trip measured", || {
        [&c, &s].iter().all(|x| tunnel(x, 1).rtt.is_some_and(|r| r >= DELAY))
    });
    // The fast tunnel stops delivering (blackholed: it goes stale, and stays so): the slow
    // one is all there is, so the data must go that way.
    relay.blackhole(0);
    let (moved, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let t = Transfer::start(&c, &s, 4 * MIB, 0, &moved, &stop);
    t.finish();
    assert!(relay.delivered(1, Dir::ToServer) >= 4 * MIB, "the data went the slow way");
}

#[test]
fn busy_tunnels_measure_their_round_trip_within_a_second_not_a_keepalive_interval() {
    let _serial = serial();
    // Keepalive every 10 s (the default): only the busy-tunnel pings can see the change.
    let cfg = Config { tunnels: 2, ..Default::default() };
    let (c, s, relay, _l) = pair_over_relay(&cfg, None);
    let (moved, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
    let t = Transfer::start(&c, &s, u64::MAX, u64::MAX, &moved, &stop);
    wait_until(Duration::from_secs(10), "64 MiB moved both ways", || {
        moved.load(std::sync::atomic::Ordering::SeqCst) >= 64 * MIB
    });
    // The path gets slower while both directions are busy.
    relay.delay(0, DELAY);
    relay.delay(1, DELAY);
    let changed = Instant::now();
    wait_until(Duration::from_secs(3), "both ends measured the slower round trip", || {
        [&c, &s].iter().all(|x| (0..2).all(|i| tunnel(x, i).rtt.is_some_and(|r| r >= DELAY)))
    });
    eprintln!("round trip re-measured {:?} after the change", changed.elapsed());
    let sent = |x: &Session| x.tunnel_stats().iter().map(|t| t.bytes_sent).sum::<u64>();
    let (up, down) = (sent(&c), sent(&s));
    wait_until(Duration::from_secs(10), "both directions still move", || {
        sent(&c) >= up + 8 * MIB && sent(&s) >= down + 8 * MIB
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    t.finish();
}
