//! Zero-loss tunnel failover (issue 8): a tunnel that dies (RST, FIN, blackhole) under load
//! loses nothing: its unacknowledged frames are re-sent on the others, no stream fails, the
//! client re-joins the tunnel and it carries traffic again. Real loopback sockets through a
//! fault-injecting relay ([`common::relay`]); the tests run one at a time ([`serial`]).
mod common;

use common::relay::Dir;
use common::rig::{
    failover_cfg, payload, rig, send, serial, tunnel, wait_rejoined, wait_until, EventLog, Rig, Transfer,
    PERIOD,
};
use common::{pattern, within};
use mtmux::{Config, Event, Session};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// The tunnel the single-fault tests kill.
const VICTIM: usize = 1;
const MIB: u64 = 1 << 20;

fn counters() -> (Arc<AtomicU64>, Arc<AtomicBool>) {
    (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)))
}

#[derive(Clone, Copy, Debug)]
enum Kill {
    Rst,
    Fin,
    Blackhole,
}

impl Kill {
    fn apply(self, rig: &Rig, i: usize) {
        match self {
            Kill::Rst => rig.relay.rst(i),
            Kill::Fin => rig.relay.fin(i),
            Kill::Blackhole => rig.relay.blackhole(i),
        }
    }
}

/// After a failover: tunnel `i` is in generation 1 on both ends and carries bytes again (a
/// fresh 32 MiB transfer puts at least 1 MiB on it each way).
fn assert_rejoined_and_carrying(rig: &Rig, i: usize) {
    let limit = rig.client.config().keepalive_timeout + Duration::from_secs(10);
    let at_rejoin: Vec<_> = rig.ends().iter().map(|(_, s)| wait_rejoined(s, i, 0, limit)).collect();
    let (moved, stop) = counters();
    let more = Transfer::start(&rig.client, &rig.server, 32 * MIB, 32 * MIB, &moved, &stop);
    assert_eq!(more.finish(), 64 * MIB);
    for ((end, s), before) in rig.ends().iter().zip(at_rejoin) {
        let now = tunnel(s, i);
        assert_eq!((now.generation, now.rejoins), (1, 1), "{end}: tunnel {i}: {now:?}");
        assert!(
            now.bytes_sent >= before.bytes_sent + MIB,
            "{end}: tunnel {i} sends nothing after its re-join: {now:?}"
        );
        assert!(
            now.bytes_received >= before.bytes_received + MIB,
            "{end}: tunnel {i} receives nothing after its re-join: {now:?}"
        );
    }
    assert_eq!(rig.relay.accepted(i), 2, "one connection for the tunnel, one for its re-join");
}

/// 256 MiB on one stream; tunnel `VICTIM` is killed a quarter of the way through.
fn one_stream_survives(kill: Kill) {
    let _s = serial();
    within(Duration::from_secs(180), move || {
        let rig = rig(&failover_cfg());
        // A path a little longer than the others: the relay holds frames of the victim when
        // it dies, and whatever it drops must be re-sent.
        rig.relay.delay(VICTIM, Duration::from_millis(5));
        let log = EventLog::start(&rig.client);
        let (moved, stop) = counters();
        let t = Transfer::start(&rig.client, &rig.server, 256 * MIB, 0, &moved, &stop);
        wait_until(Duration::from_secs(60), "a quarter moved", || moved.load(SeqCst) >= 64 * MIB);
        kill.apply(&rig, VICTIM);
        assert!(moved.load(SeqCst) < 256 * MIB, "the transfer ended before the kill");
        assert_eq!(t.finish(), 256 * MIB, "{kill:?}");
        assert_rejoined_and_carrying(&rig, VICTIM);
        // Frames the relay dropped with the tunnel must have been re-sent (64 KiB dropped are
        // DATA, not just a ping or an ACK, which are not re-sent); a stale tunnel's always are.
        let c = tunnel(&rig.client, VICTIM);
        let dropped = rig.relay.dropped(VICTIM, Dir::ToServer);
        println!(
            "{kill:?}: the relay dropped {dropped} bytes; the client re-sent {} frames",
            c.frames_resent
        );
        if dropped >= 64 << 10 || matches!(kill, Kill::Blackhole) {
            assert!(c.frames_resent > 0, "{kill:?}: frames lost with the tunnel were not re-sent: {c:?}");
        }
        let what = format!("{kill:?}: TunnelLost and TunnelRejoined");
        let lost = log.wait_for(Duration::from_secs(5), &what, |e| {
            matches!(e, Event::TunnelLost { index: VICTIM, generation: 0, .. })
        });
        log.wait_for(Duration::from_secs(5), &what, |e| {
            matches!(e, Event::TunnelRejoined { index: VICTIM, generation: 1, .. })
        });
        if let Kill::Blackhole = kill {
            let stale = log.wait_for(Duration::from_secs(5), "TunnelStale", |e| {
                matches!(e, Event::TunnelStale { index: VICTIM, generation: 0, .. })
            });
            assert!(stale < lost, "stale ({stale:?}) before lost ({lost:?})");
        }
        assert!(
            !log.has(|e| matches!(e, Event::TunnelLost { index, .. } if *index != VICTIM)),
            "only the killed tunnel is lost: {:?}",
            log.events()
        );
    });
}

#[test]
fn one_stream_loses_nothing_when_a_tunnel_is_reset() {
    one_stream_survives(Kill::Rst);
}

#[test]
fn one_stream_loses_nothing_when_a_tunnel_is_closed_with_fin() {
    one_stream_survives(Kill::Fin);
}

#[test]
fn one_stream_loses_nothing_when_a_tunnel_is_blackholed() {
    one_stream_survives(Kill::Blackhole);
}

#[test]
fn sixteen_streams_both_ways_lose_nothing_when_a_tunnel_is_reset() {
    let _s = serial();
    within(Duration::from_secs(180), || {
        let rig = rig(&failover_cfg());
        let (moved, stop) = counters();
        // Half opened by each end; 8 MiB each way on every stream: 256 MiB in all.
        let transfers: Vec<_> = (0..16)
            .map(|k| {
                let (a, b) = if k % 2 == 0 { (&rig.client, &rig.server) } else { (&rig.server, &rig.client) };
                Transfer::start(a, b, 8 * MIB, 8 * MIB, &moved, &stop)
            })
            .collect();
        wait_until(Duration::from_secs(60), "a quarter moved", || moved.load(SeqCst) >= 64 * MIB);
        rig.relay.rst(VICTIM);
        assert!(moved.load(SeqCst) < 256 * MIB, "the transfers ended before the kill");
        let total: u64 = transfers.into_iter().map(Transfer::finish).sum();
        assert_eq!(total, 256 * MIB);
        assert_rejoined_and_carrying(&rig, VICTIM);
    });
}

#[test]
fn three_of_four_tunnels_reset_at_once_lose_nothing() {
    let _s = serial();
    within(Duration::from_secs(180), || {
        let rig = rig(&failover_cfg());
        let (moved, stop) = counters();
        let t = Transfer::start(&rig.client, &rig.server, 128 * MIB, 128 * MIB, &moved, &stop);
        wait_until(Duration::from_secs(60), "a quarter moved", || moved.load(SeqCst) >= 64 * MIB);
        for i in 0..3 {
            rig.relay.rst(i);
        }
        assert!(moved.load(SeqCst) < 256 * MIB, "the transfer ended before the kill");
        assert_eq!(t.finish(), 256 * MIB);
        for i in 0..3 {
            for (end, s) in rig.ends() {
                let t = wait_rejoined(s, i, 0, Duration::from_secs(10));
                assert_eq!(t.generation, 1, "{end}: tunnel {i}");
            }
        }
        assert_eq!(tunnel(&rig.client, 3).generation, 0, "the spared tunnel is the first connection");
    });
}

/// Regression: with tunnels reset under many short request/response streams, 33 of 64 hung:
/// the sender forgot a stream once both its directions had finished, so the frames of it
/// that died with a tunnel were never sent again.
#[test]
fn short_request_response_streams_all_complete_while_two_tunnels_are_reset() {
    const STREAMS: usize = 64;
    const REQUEST: usize = 64 << 10;
    const ANSWER: usize = 1 << 20;
    let _s = serial();
    within(Duration::from_secs(150), || {
        let rig = rig(&failover_cfg());
        let server = rig.server.clone();
        let answering = thread::spawn(move || {
            let handlers: Vec<_> = (0..STREAMS)
                .map(|_| {
                    let s = server.accept_stream_timeout(Duration::from_secs(60)).expect("accept");
                    thread::spawn(move || -> Result<(), String> {
                        let id = s.id() as u64;
                        let mut request = Vec::new();
                        (&s).read_to_end(&mut request).map_err(|e| format!("stream {id}: request: {e}"))?;
                        if request != pattern(2 * id, REQUEST) {
                            return Err(format!("stream {id}: request corrupted ({} bytes)", request.len()));
                        }
                        (&s).write_all(&pattern(2 * id + 1, ANSWER))
                            .map_err(|e| format!("stream {id}: answer: {e}"))?;
                        s.close().map_err(|e| format!("stream {id}: close: {e}"))
                    })
                })
                .collect();
            handlers.into_iter().map(|h| h.join().expect("handler")).collect::<Vec<_>>()
        });
        // Eight clients, eight exchanges each, one after the other: streams finish all along.
        let (tx, rx) = mpsc::channel();
        for _ in 0..8 {
            let (c, tx) = (rig.client.clone(), tx.clone());
            thread::spawn(move || {
                for _ in 0..STREAMS / 8 {
                    let _ = tx.send(exchange(&c, REQUEST, ANSWER));
                }
            });
        }
        let (mut done, mut failed) = (0, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(100);
        while done + failed.len() < STREAMS {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(())) => done += 1,
                Ok(Err(e)) => failed.push(e),
                Err(_) => break,
            }
            match done + failed.len() {
                16 => rig.relay.rst(1),
                40 => rig.relay.rst(2),
                _ => {}
            }
        }
        assert!(done == STREAMS && failed.is_empty(), "{done} of {STREAMS} completed; failed: {failed:#?}");
        let answered = answering.join().expect("answering thread");
        assert!(answered.iter().all(|r| r.is_ok()), "{answered:#?}");
        assert!(tunnel(&rig.client, 1).generation >= 1 && tunnel(&rig.client, 2).generation >= 1);
    });
}

/// One request/response stream, as a client: open, send, half-close, read the answer to its
/// end (each read bounded by 10 s, so that a hung stream is reported, not waited for).
fn exchange(c: &Session, request: usize, answer: usize) -> Result<(), String> {
    let s = c.open_stream().map_err(|e| format!("open: {e}"))?;
    let id = s.id() as u64;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    (&s).write_all(&pattern(2 * id, request)).map_err(|e| format!("stream {id}: request: {e}"))?;
    s.close_write().map_err(|e| format!("stream {id}: close_write: {e}"))?;
    let mut got = Vec::new();
    (&s).read_to_end(&mut got).map_err(|e| format!("stream {id}: answer after {} bytes: {e}", got.len()))?;
    if got != pattern(2 * id + 1, answer) {
        return Err(format!("stream {id}: answer corrupted ({} bytes)", got.len()));
    }
    Ok(())
}

/// A blackholed tunnel holds a steady stream up for about `stale_timeout` (its frames are
/// re-sent elsewhere once it is stale), not for the keepalive timeout.
#[test]
fn a_blackholed_tunnel_stalls_a_stream_no_longer_than_the_stale_timeout() {
    let stale_timeout = Duration::from_millis(300);
    let _s = serial();
    within(Duration::from_secs(60), move || {
        let rig = rig(&Config { stale_timeout: Some(stale_timeout), ..failover_cfg() });
        let log = EventLog::start(&rig.client);
        let server_log = EventLog::start(&rig.server);
        let writer = Arc::new(rig.client.open_stream().unwrap());
        let (w, stop) = (writer.clone(), Arc::new(AtomicBool::new(false)));
        let seed = 2 * writer.id() as u64;
        let st = stop.clone();
        let sender = thread::spawn(move || send(&w, seed, u64::MAX, &st));
        let reader = rig.server.accept_stream_timeout(Duration::from_secs(10)).unwrap();
        // Every read is timestamped; bytes are checked as they come.
        let data = payload(seed);
        let (mut buf, mut pos, mut reads) = (vec![0u8; 256 << 10], 0u64, Vec::new());
        let mut blackholed_at: Option<Instant> = None;
        let start = Instant::now();
        loop {
            let n = (&reader).read(&mut buf).unwrap_or_else(|e| {
                panic!(
                    "read at byte {pos}, {:?} after the blackhole: {e}",
                    blackholed_at.map(|t| t.elapsed())
                )
            });
            if n == 0 {
                break;
            }
            reads.push(Instant::now());
            for (k, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, data[((pos + k as u64) % PERIOD as u64) as usize], "byte {}", pos + k as u64);
            }
            pos += n as u64;
            // One second steady, then the blackhole, then 2.5 s more (under the 3 s keepalive).
            if blackholed_at.is_none() && start.elapsed() > Duration::from_secs(1) {
                rig.relay.blackhole(VICTIM);
                blackholed_at = Some(Instant::now());
            }
            if blackholed_at.is_some_and(|t| t.elapsed() > Duration::from_millis(2500)) {
                stop.store(true, SeqCst);
            }
        }
        assert_eq!(sender.join().unwrap(), Ok(pos), "every byte written arrived");
        let t = blackholed_at.unwrap();
        let longest = |from: Instant, to: Instant| {
            reads.windows(2).filter(|w| w[1] > from && w[0] < to).map(|w| w[1] - w[0]).max().unwrap()
        };
        let before = longest(t - Duration::from_millis(900), t);
        let after = longest(t, t + Duration::from_millis(2500));
        let stale = log.wait_for(Duration::from_secs(3), "TunnelStale", |e| {
            matches!(e, Event::TunnelStale { index: VICTIM, .. })
        });
        println!(
            "longest gap between reads: {after:?} after the blackhole (stale_timeout {stale_timeout:?}, \
             stale reported after {:?}), {before:?} in the second before",
            stale - t
        );
        for (end, l) in [("client", &log), ("server", &server_log)] {
            for (at, e) in l.events() {
                println!("  {end} {:?} after the blackhole: {e:?}", at.saturating_duration_since(t));
            }
        }
        assert!(after < Duration::from_secs(1), "a stream stalled {after:?} behind a blackholed tunnel");
    });
}

/// A tunnel that receives nothing is declared lost `keepalive_timeout` after its silence
/// began, not up to a keepalive interval later.
#[test]
fn keepalive_declares_a_silent_tunnel_lost_on_time() {
    let _s = serial();
    within(Duration::from_secs(60), || {
        let cfg = failover_cfg();
        let rig = rig(&cfg);
        let log = EventLog::start(&rig.client);
        // Let pings flow for a while, so that the silence starts from a steady state.
        wait_until(Duration::from_secs(5), "a ping answered", || tunnel(&rig.client, VICTIM).rtt.is_some());
        rig.relay.blackhole(VICTIM);
        let blackholed = Instant::now();
        // The client's silence on the tunnel began with the last bytes the relay gave it.
        let silent_since = rig.relay.last_delivery(VICTIM, Dir::ToClient).expect("bytes were delivered");
        let lost = log.wait_for(cfg.keepalive_timeout * 2, "TunnelLost", |e| {
            matches!(e, Event::TunnelLost { index: VICTIM, .. })
        });
        let took = lost - silent_since;
        println!(
            "TunnelLost {took:?} after the last bytes arrived ({:?} after the blackhole); keepalive_timeout {:?}",
            lost - blackholed,
            cfg.keepalive_timeout
        );
        let reason = log.events().into_iter().find_map(|(_, e)| match e {
            Event::TunnelLost { index: VICTIM, reason, .. } => Some(reason),
            _ => None,
        });
        assert!(reason.as_deref().is_some_and(|r| r.contains("keepalive")), "{reason:?}");
        assert!(
            took >= cfg.keepalive_timeout - Duration::from_millis(100),
            "too early: {took:?} ({reason:?})"
        );
        assert!(
            took <= cfg.keepalive_timeout + Duration::from_millis(500),
            "too late: {took:?} ({reason:?})"
        );
    });
}
