//! Bundle assembly (`mtmux::core::bundle::Assembler`) against a model under arbitrary
//! join / refuse / expire / drain sequences of a few interleaved bundles, with a fake clock.
//!
//! Connections are numbered tokens, so that every one can be followed. Checks: a bundle
//! completes exactly when the last of its indices arrives (at once for a one-tunnel bundle),
//! with its connections in index order and the first HELLO, and never twice; duplicates,
//! disagreeing tunnels, oversized bundles and re-joins are refused with the right status; the
//! held-tunnel limit holds (Busy beyond it); a refused bundle's late tunnels are refused with
//! its reason until the refusal lapses; expiry happens exactly at the deadline and hands back
//! what the bundle held; and every connection handed in comes back exactly once (at the join,
//! or from `refuse`, `expire` or `drain`): the assembler neither leaks nor duplicates one.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mtmux::core::bundle::{Assembler, Join};
use mtmux::proto::handshake::{BundleId, Hello, HelloKind, Params, Status};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_millis(1000);
const LINGER: Duration = Duration::from_millis(500);

#[derive(Arbitrary, Debug)]
enum Op {
    Join {
        bundle: u8,
        index: u8,
        count: u8,
        rejoin: bool,
        /// Variants of the fields every tunnel of a bundle must agree on.
        params: u8,
        flags: bool,
        nonce: u8,
    },
    Refuse {
        bundle: u8,
        status: u8,
    },
    Expire(u8),
    Tick(u16),
    Drain,
}

struct Waiting {
    first: Hello,
    slots: BTreeMap<u16, u64>,
    deadline: Duration,
}

#[derive(Default)]
struct Model {
    bundles: HashMap<BundleId, Waiting>,
    /// Refused bundles: (status, reason, until).
    refused: HashMap<BundleId, (Status, String, Duration)>,
}

impl Model {
    fn held(&self) -> usize {
        self.bundles.values().map(|w| w.slots.len()).sum()
    }
}

/// Connections handed back: each must be out (handed in and not yet back).
fn back(conns: &[u64], out: &mut BTreeSet<u64>) {
    for c in conns {
        assert!(out.remove(c), "connection {c} handed back twice or never handed in");
    }
}

fn sorted(conns: &[u64]) -> Vec<u64> {
    let mut v = conns.to_vec();
    v.sort_unstable();
    v
}

fn status_of(b: u8) -> Status {
    [Status::WrongPort, Status::Malformed, Status::BadParams, Status::Conflict][b as usize % 4]
}

fuzz_target!(|input: (u8, u8, Vec<Op>)| {
    let (max_held, max_tunnels, ops) = input;
    let max_held = max_held as usize % 12;
    let max_tunnels = (max_tunnels % 10) as u16 + 1;
    let t0 = Instant::now();
    let mut now = Duration::ZERO;
    let mut a: Assembler<u64> = Assembler::new(max_held);
    let mut m = Model::default();
    let mut next_conn = 0u64;
    // Connections handed in and not yet handed back.
    let mut out: BTreeSet<u64> = BTreeSet::new();
    for op in ops.iter().take(256) {
        match *op {
            Op::Join { bundle, index, count, rejoin, params, flags, nonce } => {
                let count = count as u16 % 12 + 1;
                let hello = Hello {
                    kind: if rejoin { HelloKind::Rejoin } else { HelloKind::Join },
                    bundle: BundleId([bundle % 4; 16]),
                    index: index as u16 % count,
                    count,
                    flags: flags as u16,
                    params: Params {
                        max_frame: 1024 + params as u32 % 2,
                        stream_window: 4096,
                        session_window: 8192,
                    },
                    generation: rejoin as u32,
                    nonce: [nonce % 2; 16],
                };
                let conn = next_conn;
                next_conn += 1;
                out.insert(conn);
                let id = hello.bundle;
                let got = a.join(&hello, conn, t0 + now, TIMEOUT, max_tunnels);
                // The model's verdict.
                let refused_now = m.refused.get(&id).filter(|r| r.2 > now).cloned();
                let existing = m.bundles.get(&id);
                let expect_refusal: Option<Status> = if let Some((s, _, _)) = &refused_now {
                    Some(*s)
                } else if rejoin {
                    Some(Status::Unsupported)
                } else if count > max_tunnels {
                    Some(Status::BadParams)
                } else if let Some(w) = existing {
                    let f = &w.first;
                    if (f.count, f.params, f.flags, f.nonce)
                        != (count, hello.params, hello.flags, hello.nonce)
                        || w.slots.contains_key(&hello.index)
                    {
                        Some(Status::Conflict)
                    } else {
                        None
                    }
                } else {
                    None
                };
                let expect_refusal =
                    expect_refusal.or_else(|| (count > 1 && m.held() >= max_held).then_some(Status::Busy));
                match got {
                    Join::Refused { conn: c, status, reason } => {
                        assert_eq!(Some(status), expect_refusal, "{hello:?}: refused with {reason}");
                        if let Some((_, r, _)) = &refused_now {
                            assert_eq!(&reason, r, "a refused bundle's late tunnel gets its reason");
                        }
                        assert!(!reason.is_empty());
                        assert_eq!(c, conn);
                        back(&[c], &mut out);
                    }
                    Join::Complete { tunnels, hello: h } => {
                        assert_eq!(expect_refusal, None, "{hello:?} must be refused");
                        let mut expect = match m.bundles.remove(&id) {
                            Some(w) => {
                                assert_eq!(h, w.first, "the bundle's first HELLO");
                                w.slots
                            }
                            None => {
                                assert_eq!(h, hello);
                                BTreeMap::new()
                            }
                        };
                        expect.insert(hello.index, conn);
                        assert_eq!(expect.len(), count as usize, "completes only when all arrived");
                        assert_eq!(tunnels, expect.into_values().collect::<Vec<_>>(), "index order");
                        back(&tunnels, &mut out);
                    }
                    Join::Waiting { deadline, first } => {
                        assert_eq!(expect_refusal, None, "{hello:?} must be refused");
                        assert_eq!(first, existing.is_none());
                        let w = m.bundles.entry(id).or_insert_with(|| Waiting {
                            first: hello,
                            slots: BTreeMap::new(),
                            deadline: now + TIMEOUT,
                        });
                        assert_eq!(deadline, t0 + w.deadline);
                        w.slots.insert(hello.index, conn);
                        assert!(w.slots.len() < count as usize, "a full bundle must complete");
                    }
                }
            }
            Op::Refuse { bundle, status } => {
                let id = BundleId([bundle % 4; 16]);
                let status = status_of(status);
                let reason = format!("refused {status:?}");
                let got = a.refuse(&id, status, &reason, t0 + now, LINGER);
                m.refused.retain(|_, r| r.2 > now);
                if m.refused.len() < max_held {
                    m.refused.insert(id, (status, reason, now + LINGER));
                }
                let expect: BTreeSet<u64> =
                    m.bundles.remove(&id).map(|w| w.slots.into_values().collect()).unwrap_or_default();
                assert_eq!(sorted(&got), expect.into_iter().collect::<Vec<_>>());
                back(&got, &mut out);
            }
            Op::Expire(bundle) => {
                let id = BundleId([bundle % 4; 16]);
                let got = a.expire(&id, t0 + now);
                let due = m.bundles.get(&id).is_some_and(|w| w.deadline <= now);
                match got {
                    Some(e) => {
                        assert!(due, "expired before its deadline");
                        let w = m.bundles.remove(&id).unwrap();
                        assert_eq!((e.arrived, e.count), (w.slots.len(), w.first.count));
                        let expect: BTreeSet<u64> = w.slots.into_values().collect();
                        assert_eq!(sorted(&e.tunnels), expect.into_iter().collect::<Vec<_>>());
                        back(&e.tunnels, &mut out);
                    }
                    None => assert!(!due, "a bundle past its deadline must expire"),
                }
            }
            Op::Tick(ms) => now += Duration::from_millis(ms as u64),
            Op::Drain => {
                let got = a.drain();
                let expect: BTreeSet<u64> =
                    m.bundles.drain().flat_map(|(_, w)| w.slots.into_values()).collect();
                assert_eq!(sorted(&got), expect.into_iter().collect::<Vec<_>>());
                back(&got, &mut out);
            }
        }
        assert_eq!(a.held(), m.held());
        assert!(a.held() <= max_held, "held tunnels over the limit");
        for id in 0..4u8 {
            assert_eq!(a.contains(&BundleId([id; 16])), m.bundles.contains_key(&BundleId([id; 16])));
        }
        // What is out is exactly what is held.
        assert_eq!(out.len(), a.held());
    }
    back(&a.drain(), &mut out);
    assert!(out.is_empty(), "connections lost: {out:?}");
});
