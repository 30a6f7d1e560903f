//! Server-side bundle assembly: groups tunnels by bundle id until all of a bundle's tunnels
//! have arrived. Several clients may be handshaking at once; each gets its own bundle. The
//! number of tunnels held while waiting is bounded, and each bundle has a deadline after which
//! the listener refuses it. Generic over the connection type so it is tested without sockets.

use crate::proto::handshake::{BundleId, Hello, HelloKind, Status};
use std::collections::HashMap;
use std::time::{Duration, Instant};

struct Pending<T> {
    /// The first tunnel's HELLO: every other tunnel must agree with it (count, parameters,
    /// flags, nonce).
    first: Hello,
    slots: Vec<Option<T>>,
    arrived: usize,
    deadline: Instant,
}

/// Result of a tunnel joining.
pub enum Join<T> {
    /// The bundle is complete: its tunnels in index order and what the client announced.
    Complete {
        /// Connections, index 0 first.
        tunnels: Vec<T>,
        /// One of the bundle's HELLOs (they agree on everything but the index).
        hello: Hello,
    },
    /// The tunnel is held until the rest of the bundle arrives or `deadline` passes.
    Waiting {
        /// When the bundle expires.
        deadline: Instant,
        /// This is the bundle's first tunnel (whose handler watches the deadline).
        first: bool,
    },
    /// The tunnel cannot join; the connection is handed back with the reason.
    Refused {
        /// The refused connection.
        conn: T,
        /// Status for the REPLY.
        status: Status,
        /// Human-readable detail.
        reason: String,
    },
}

/// An expired bundle: the connections it held and how far it got.
pub struct Expired<T> {
    /// Connections that had arrived.
    pub tunnels: Vec<T>,
    /// How many had arrived.
    pub arrived: usize,
    /// How many were announced.
    pub count: u16,
}

/// A bundle refused while some of its tunnels may still be on their way.
struct Refusal {
    status: Status,
    reason: String,
    until: Instant,
}

/// Bundles being assembled.
pub struct Assembler<T> {
    bundles: HashMap<BundleId, Pending<T>>,
    /// Recently refused bundles: their late tunnels are refused at once instead of waiting
    /// for the rest of a bundle that will never complete. At most `max_held` entries.
    refused: HashMap<BundleId, Refusal>,
    held: usize,
    max_held: usize,
}

impl<T> Assembler<T> {
    /// An assembler holding at most `max_held` waiting tunnels in total.
    pub fn new(max_held: usize) -> Self {
        Assembler { bundles: HashMap::new(), refused: HashMap::new(), held: 0, max_held }
    }

    /// Tunnels currently held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Add a tunnel. `max_tunnels` is the largest bundle the server accepts.
    pub fn join(
        &mut self,
        hello: &Hello,
        conn: T,
        now: Instant,
        timeout: Duration,
        max_tunnels: u16,
    ) -> Join<T> {
        let refuse = |conn, status, reason: String| Join::Refused { conn, status, reason };
        if let Some(r) = self.refused.get(&hello.bundle) {
            if r.until > now {
                return refuse(conn, r.status, r.reason.clone());
            }
        }
        if hello.kind == HelloKind::Rejoin {
            // The listener takes re-joins to running sessions; they never assemble a bundle.
            return refuse(conn, Status::Unsupported, "a REJOIN does not start a bundle".into());
        }
        if hello.count > max_tunnels {
            return refuse(
                conn,
                Status::BadParams,
                format!("bundle of {} tunnels; this server accepts at most {max_tunnels}", hello.count),
            );
        }
        if let Some(p) = self.bundles.get(&hello.bundle) {
            let f = &p.first;
            if (f.count, f.params, f.flags, f.nonce) != (hello.count, hello.params, hello.flags, hello.nonce)
            {
                return refuse(
                    conn,
                    Status::Conflict,
                    "tunnel disagrees with its bundle's count, parameters, flags or nonce".into(),
                );
            }
            if p.slots[hello.index as usize].is_some() {
                return refuse(conn, Status::Conflict, format!("tunnel index {} arrived twice", hello.index));
            }
        }
        if hello.count == 1 {
            return Join::Complete { tunnels: vec![conn], hello: *hello };
        }
        if self.held >= self.max_held {
            return refuse(conn, Status::Busy, "too many handshakes in progress".into());
        }
        let first = !self.bundles.contains_key(&hello.bundle);
        let p = self.bundles.entry(hello.bundle).or_insert_with(|| Pending {
            first: *hello,
            slots: (0..hello.count).map(|_| None).collect(),
            arrived: 0,
            deadline: now + timeout,
        });
        p.slots[hello.index as usize] = Some(conn);
        p.arrived += 1;
        self.held += 1;
        if p.arrived < p.first.count as usize {
            return Join::Waiting { deadline: p.deadline, first };
        }
        let p = self.bundles.remove(&hello.bundle).expect("present");
        self.held -= p.arrived;
        let tunnels = p.slots.into_iter().map(|s| s.expect("all arrived")).collect();
        Join::Complete { tunnels, hello: p.first }
    }

    /// Whether bundle `id` is still being assembled.
    pub fn contains(&self, id: &BundleId) -> bool {
        self.bundles.contains_key(id)
    }

    /// Refuse bundle `id` now (one of its tunnels was refused): returns the connections it
    /// held, and its tunnels arriving within `linger` are refused with the same reason.
    pub fn refuse(
        &mut self,
        id: &BundleId,
        status: Status,
        reason: &str,
        now: Instant,
        linger: Duration,
    ) -> Vec<T> {
        self.refused.retain(|_, r| r.until > now);
        if self.refused.len() < self.max_held {
            self.refused.insert(*id, Refusal { status, reason: reason.to_string(), until: now + linger });
        }
        match self.bundles.remove(id) {
            Some(p) => {
                self.held -= p.arrived;
                p.slots.into_iter().flatten().collect()
            }
            None => Vec::new(),
        }
    }

    /// Remove bundle `id` if its deadline has passed.
    pub fn expire(&mut self, id: &BundleId, now: Instant) -> Option<Expired<T>> {
        if self.bundles.get(id)?.deadline > now {
            return None;
        }
        let p = self.bundles.remove(id)?;
        self.held -= p.arrived;
        Some(Expired {
            tunnels: p.slots.into_iter().flatten().collect(),
            arrived: p.arrived,
            count: p.first.count,
        })
    }

    /// Remove every waiting bundle (the listener is closing).
    pub fn drain(&mut self) -> Vec<T> {
        self.held = 0;
        self.bundles.drain().flat_map(|(_, p)| p.slots.into_iter().flatten()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::handshake::Params;

    fn hello(id: u8, index: u16, count: u16) -> Hello {
        Hello {
            kind: HelloKind::Join,
            bundle: BundleId([id; 16]),
            index,
            count,
            flags: 0,
            params: Params { max_frame: 1024, stream_window: 4096, session_window: 8192 },
            generation: 0,
            nonce: [id; 16],
        }
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn interleaved_clients_get_their_own_bundles() {
        let mut a = Assembler::new(16);
        let now = Instant::now();
        assert!(matches!(a.join(&hello(1, 1, 2), "a1", now, T, 8), Join::Waiting { first: true, .. }));
        assert!(matches!(a.join(&hello(2, 0, 2), "b0", now, T, 8), Join::Waiting { first: true, .. }));
        match a.join(&hello(2, 1, 2), "b1", now, T, 8) {
            Join::Complete { tunnels, .. } => assert_eq!(tunnels, vec!["b0", "b1"]),
            _ => panic!("bundle 2 should be complete"),
        }
        match a.join(&hello(1, 0, 2), "a0", now, T, 8) {
            Join::Complete { tunnels, .. } => assert_eq!(tunnels, vec!["a0", "a1"]),
            _ => panic!("bundle 1 should be complete"),
        }
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn duplicates_and_mismatches_are_refused() {
        let mut a = Assembler::new(16);
        let now = Instant::now();
        a.join(&hello(1, 0, 3), "x", now, T, 8);
        assert!(matches!(
            a.join(&hello(1, 0, 3), "dup", now, T, 8),
            Join::Refused { status: Status::Conflict, .. }
        ));
        assert!(matches!(
            a.join(&hello(1, 1, 4), "cnt", now, T, 8),
            Join::Refused { status: Status::Conflict, .. }
        ));
        assert!(matches!(
            a.join(&hello(3, 0, 9), "big", now, T, 8),
            Join::Refused { status: Status::BadParams, .. }
        ));
        let mut other_nonce = hello(1, 2, 3);
        other_nonce.nonce = [9; 16];
        assert!(matches!(
            a.join(&other_nonce, "nonce", now, T, 8),
            Join::Refused { status: Status::Conflict, .. }
        ));
        let mut r = hello(4, 0, 2);
        r.kind = HelloKind::Rejoin;
        r.generation = 1;
        assert!(matches!(a.join(&r, "rj", now, T, 8), Join::Refused { status: Status::Unsupported, .. }));
    }

    #[test]
    fn held_tunnels_are_bounded() {
        let mut a = Assembler::new(2);
        let now = Instant::now();
        a.join(&hello(1, 0, 4), 1, now, T, 8);
        a.join(&hello(2, 0, 4), 2, now, T, 8);
        assert!(matches!(a.join(&hello(3, 0, 4), 3, now, T, 8), Join::Refused { status: Status::Busy, .. }));
        // A single-tunnel bundle needs no waiting room.
        assert!(matches!(a.join(&hello(4, 0, 1), 4, now, T, 8), Join::Complete { .. }));
    }

    #[test]
    fn only_the_first_tunnel_watches_the_deadline() {
        let mut a = Assembler::new(16);
        let now = Instant::now();
        assert!(matches!(a.join(&hello(1, 0, 3), 0, now, T, 8), Join::Waiting { first: true, .. }));
        assert!(matches!(a.join(&hello(1, 1, 3), 1, now, T, 8), Join::Waiting { first: false, .. }));
        assert!(a.contains(&BundleId([1; 16])));
        assert_eq!(a.refuse(&BundleId([1; 16]), Status::WrongPort, "wrong port", now, T), vec![0, 1]);
        assert!(!a.contains(&BundleId([1; 16])));
        assert_eq!(a.held(), 0);
    }

    #[test]
    fn late_tunnels_of_a_refused_bundle_are_refused_at_once() {
        let mut a = Assembler::new(16);
        let now = Instant::now();
        // Tunnel 1 was refused before tunnel 0 arrived.
        assert!(a.refuse(&BundleId([1; 16]), Status::WrongPort, "wrong port", now, T).is_empty());
        match a.join(&hello(1, 0, 3), 0, now, T, 8) {
            Join::Refused { status: Status::WrongPort, reason, .. } => assert_eq!(reason, "wrong port"),
            _ => panic!("a late tunnel of a refused bundle must be refused"),
        }
        // Once the refusal has lapsed, the id is free again.
        assert!(matches!(a.join(&hello(1, 0, 3), 0, now + T, T, 8), Join::Waiting { .. }));
    }

    #[test]
    fn incomplete_bundles_expire() {
        let mut a = Assembler::new(16);
        let now = Instant::now();
        a.join(&hello(1, 2, 3), "t2", now, T, 8);
        assert!(a.expire(&BundleId([1; 16]), now).is_none());
        let e = a.expire(&BundleId([1; 16]), now + T).unwrap();
        assert_eq!((e.tunnels, e.arrived, e.count), (vec!["t2"], 1, 3));
        assert_eq!(a.held(), 0);
        assert!(a.drain().is_empty());
    }
}
