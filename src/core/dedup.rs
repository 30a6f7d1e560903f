//! Which DATA frames of a stream have arrived: the receiver drops the duplicates that
//! re-sending after a tunnel failure can produce (a frame may arrive both on the tunnel that
//! went stale and, re-sent, on another one).
//!
//! [`Received`] tracks one stream: every sequence number below `next` has arrived, plus the
//! set of later ones. [`Ended`] keeps that state for streams that have left the session's
//! table, for a bounded number of them, so that a late duplicate of an ended stream is told
//! apart from late data the sender did pay flow-control credit for. Pure data structures.

use std::collections::{HashMap, HashSet, VecDeque};

/// Sequence numbers of one stream's DATA frames that have arrived (wrapping modulo 2³²: half
/// the space behind `next` counts as already received).
#[derive(Clone, Debug, Default)]
pub struct Received {
    /// Every frame before this one has arrived.
    next: u32,
    /// Frames at or after `next` that have arrived.
    later: HashSet<u32>,
}

impl Received {
    /// Nothing received yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Record frame `seq`; returns `false` if it had already arrived (a duplicate).
    pub fn insert(&mut self, seq: u32) -> bool {
        if self.contains(seq) {
            return false;
        }
        if seq == self.next {
            self.next = self.next.wrapping_add(1);
            while self.later.remove(&self.next) {
                self.next = self.next.wrapping_add(1);
            }
        } else {
            self.later.insert(seq);
        }
        true
    }

    /// Whether frame `seq` has arrived.
    pub fn contains(&self, seq: u32) -> bool {
        seq.wrapping_sub(self.next) >= 1 << 31 || self.later.contains(&seq)
    }

    /// Whether every frame up to and including `last` has arrived.
    pub fn complete_through(&self, last: u32) -> bool {
        self.next == last.wrapping_add(1)
    }
}

/// The [`Received`] state of recently ended streams, at most `cap` of them (oldest forgotten
/// first).
#[derive(Debug)]
pub struct Ended {
    streams: HashMap<u32, Received>,
    order: VecDeque<u32>,
    cap: usize,
}

impl Ended {
    /// Remember at most `cap` ended streams.
    pub fn new(cap: usize) -> Self {
        Ended { streams: HashMap::new(), order: VecDeque::new(), cap }
    }

    /// Stream `id` ended with `received`.
    pub fn remember(&mut self, id: u32, received: Received) {
        if self.cap == 0 {
            return;
        }
        if self.streams.insert(id, received).is_none() {
            if self.order.len() == self.cap {
                let old = self.order.pop_front().expect("full");
                self.streams.remove(&old);
            }
            self.order.push_back(id);
        }
    }

    /// `Some(true)` if frame `seq` of ended stream `id` is a duplicate, `Some(false)` if it is
    /// new (recorded now), `None` if the stream is not remembered.
    pub fn check(&mut self, id: u32, seq: u32) -> Option<bool> {
        self.streams.get_mut(&id).map(|r| !r.insert(seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn duplicates_are_recognised_in_and_out_of_order() {
        let mut r = Received::new();
        assert!(r.insert(0) && r.insert(2) && !r.insert(2));
        assert!(!r.insert(0));
        assert!(!r.complete_through(2));
        assert!(r.insert(1));
        assert!(r.complete_through(2));
        assert!(r.contains(1) && !r.contains(3));
    }

    #[test]
    fn wraps_around_the_sequence_space() {
        let mut r = Received { next: u32::MAX, later: HashSet::new() };
        assert!(r.insert(0));
        assert!(r.insert(u32::MAX));
        assert!(r.complete_through(0));
        assert!(!r.insert(u32::MAX - 5), "just behind next: already received");
    }

    #[test]
    fn ended_streams_are_bounded() {
        let mut e = Ended::new(2);
        let mut r = Received::new();
        r.insert(0);
        e.remember(1, r.clone());
        e.remember(3, r.clone());
        assert_eq!(e.check(1, 0), Some(true));
        assert_eq!(e.check(1, 1), Some(false));
        assert_eq!(e.check(1, 1), Some(true));
        e.remember(5, r);
        assert_eq!(e.check(1, 0), None, "the oldest was forgotten");
        assert_eq!(e.check(5, 0), Some(true));
    }

    proptest! {
        #[test]
        fn any_delivery_order_with_duplicates_accepts_each_frame_once(
            order in Just((0u32..64).collect::<Vec<_>>()).prop_shuffle(),
            dups in proptest::collection::vec(0u32..64, 0..64),
        ) {
            let mut r = Received::new();
            let mut accepted = 0;
            for (i, seq) in order.iter().enumerate() {
                accepted += r.insert(*seq) as u32;
                if let Some(d) = dups.get(i) {
                    if r.contains(*d) {
                        prop_assert!(!r.insert(*d));
                    }
                }
            }
            prop_assert_eq!(accepted, 64);
            prop_assert!(r.complete_through(63));
        }
    }
}
