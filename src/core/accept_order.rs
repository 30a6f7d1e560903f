//! Accepting peer-opened streams in the order the peer opened them.
//!
//! The peer allocates its stream ids in increasing order (1, 3, 5, … or 2, 4, 6, …), but the
//! first frames of its streams travel over different tunnels and may arrive out of order. An
//! application (or a proxy connecting each stream on to a target) usually expects the order
//! in which the peer's applications opened them: protocols with a control and a data
//! connection tell them apart by order.
//!
//! [`AcceptOrder`] holds a stream whose first frame arrived early (a lower id of the peer is
//! still missing) until every lower id is *resolved*: its first frame arrived and it was
//! queued for accept, or it arrived as a RESET or was refused (nothing to accept). Every id
//! the peer allocates is sent (a stream's first DATA frame, or a RESET if it was aborted
//! before sending anything), so normally the wait ends exactly when the missing frame
//! arrives. The wait is still bounded: a stream is held at most `timeout` (the session's
//! reorder timeout) after its own arrival; then the ids missing below it are given up and it
//! is released. An id given up that arrives later is released at once ("late": out of order,
//! but not lost). Held entries are also capped at `max_held`: beyond it the lowest gap is
//! given up at once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A stream that arrived before a lower id was resolved.
#[derive(Debug)]
struct Held<T> {
    /// `None`: the id is resolved without a stream to accept (reset or refused).
    item: Option<T>,
    arrived: Instant,
}

/// Reorders peer-opened streams into id order, with a bounded wait (see the module doc).
#[derive(Debug)]
pub struct AcceptOrder<T> {
    /// Lowest peer id not yet resolved (u64: the last id, `u32::MAX`, may be passed).
    next: u64,
    /// Ids above `next` that arrived, in id order.
    held: BTreeMap<u32, Held<T>>,
    max_held: usize,
    /// Ids given up on (released past) since creation.
    gaps: u64,
}

impl<T> AcceptOrder<T> {
    /// Order for a peer whose first id is `first` (1 for a client, 2 for a server); at most
    /// `max_held` ids are held (at least 1).
    pub fn new(first: u32, max_held: usize) -> Self {
        AcceptOrder { next: first as u64, held: BTreeMap::new(), max_held: max_held.max(1), gaps: 0 }
    }

    /// The first frame of peer id `id` arrived at `now` (each id arrives once): `item` is the
    /// stream to accept, or `None` if there is none (reset or refused). Returns the streams to
    /// queue for accept now, in order.
    pub fn arrive(&mut self, id: u32, item: Option<T>, now: Instant) -> Vec<T> {
        if (id as u64) < self.next {
            // Given up on earlier: late, released at once.
            return item.into_iter().collect();
        }
        self.held.insert(id, Held { item, arrived: now });
        let mut out = Vec::new();
        self.drain(&mut out);
        while self.held.len() > self.max_held {
            self.skip_first_gap(&mut out);
        }
        out
    }

    /// Give up on the ids missing below every stream held for `timeout` or longer at `now`.
    /// Returns the streams to queue for accept now, in order.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(id) = self.oldest().filter(|&(_, at)| at + timeout <= now).map(|(id, _)| id) {
            self.skip_to(id, &mut out);
        }
        out
    }

    /// When [`expire`](Self::expire) next has something to do, if anything is held.
    pub fn deadline(&self, timeout: Duration) -> Option<Instant> {
        self.oldest().map(|(_, at)| at + timeout)
    }

    /// Release everything held, in id order, giving up on every missing id (the session stops
    /// accepting: what arrived is handed out).
    pub fn flush(&mut self) -> Vec<T> {
        let held = std::mem::take(&mut self.held);
        if let Some((&last, _)) = held.last_key_value() {
            self.next = last as u64 + 2;
        }
        held.into_values().filter_map(|h| h.item).collect()
    }

    /// Streams held now (including resolved ids without a stream).
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// How many times a missing id was given up on (by timeout or by the cap).
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    /// The held id that arrived first, with its arrival time.
    fn oldest(&self) -> Option<(u32, Instant)> {
        self.held.iter().min_by_key(|(_, h)| h.arrived).map(|(&id, h)| (id, h.arrived))
    }

    fn skip_first_gap(&mut self, out: &mut Vec<T>) {
        if let Some((&id, _)) = self.held.first_key_value() {
            self.skip_to(id, out);
        }
    }

    /// Give up on every missing id below held id `id`: release the held ids up to `id`, then
    /// the run that follows.
    fn skip_to(&mut self, id: u32, out: &mut Vec<T>) {
        while let Some(e) = self.held.first_entry() {
            if *e.key() > id {
                break;
            }
            if *e.key() as u64 != self.next {
                self.gaps += 1;
            }
            self.next = *e.key() as u64 + 2;
            if let Some(item) = e.remove().item {
                out.push(item);
            }
        }
        self.drain(out);
    }

    /// Release the run of consecutive resolved ids starting at `next`.
    fn drain(&mut self, out: &mut Vec<T>) {
        while let Some(e) = self.held.first_entry() {
            if *e.key() as u64 != self.next {
                break;
            }
            if let Some(item) = e.remove().item {
                out.push(item);
            }
            self.next += 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    #[test]
    fn in_order_arrivals_pass_at_once() {
        let now = Instant::now();
        let mut o = AcceptOrder::new(1, 16);
        for id in [1, 3, 5, 7] {
            assert_eq!(o.arrive(id, Some(id), now), vec![id]);
        }
        assert_eq!(o.held(), 0);
        assert_eq!(o.deadline(T), None);
    }

    #[test]
    fn early_arrivals_wait_for_the_missing_id() {
        let now = Instant::now();
        let mut o = AcceptOrder::new(1, 16);
        assert!(o.arrive(3, Some(3), now).is_empty());
        assert!(o.arrive(7, Some(7), now).is_empty());
        assert_eq!(o.arrive(1, Some(1), now), vec![1, 3]);
        assert_eq!(o.arrive(5, Some(5), now), vec![5, 7]);
        assert_eq!((o.held(), o.gaps()), (0, 0));
    }

    #[test]
    fn server_ids_are_even() {
        let now = Instant::now();
        let mut o = AcceptOrder::new(2, 16);
        assert!(o.arrive(4, Some(4), now).is_empty());
        assert_eq!(o.arrive(2, Some(2), now), vec![2, 4]);
    }

    #[test]
    fn a_reset_or_refused_id_resolves_its_place() {
        let now = Instant::now();
        let mut o = AcceptOrder::new(1, 16);
        assert!(o.arrive(5, Some(5), now).is_empty());
        assert!(o.arrive(3, None, now).is_empty());
        assert_eq!(o.arrive(1, None, now), vec![5]);
    }

    #[test]
    fn the_wait_is_bounded_and_late_ids_still_arrive() {
        let t0 = Instant::now();
        let mut o = AcceptOrder::new(1, 16);
        assert!(o.arrive(3, Some(3), t0).is_empty());
        assert!(o.arrive(7, Some(7), t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(o.deadline(T), Some(t0 + T));
        assert!(o.expire(t0 + T - Duration::from_millis(1), T).is_empty());
        // 1 is given up: 3 goes; 5 is still missing and 7 has its own full wait.
        assert_eq!(o.expire(t0 + T, T), vec![3]);
        assert_eq!(o.deadline(T), Some(t0 + Duration::from_secs(14)));
        assert_eq!(o.arrive(1, Some(1), t0 + T), vec![1]);
        assert_eq!(o.expire(t0 + Duration::from_secs(14), T), vec![7]);
        assert_eq!(o.arrive(5, Some(5), t0 + T), vec![5]);
        assert_eq!(o.gaps(), 2);
        assert_eq!(o.arrive(9, Some(9), t0 + T), vec![9]);
    }

    #[test]
    fn the_oldest_held_stream_sets_the_deadline() {
        let t0 = Instant::now();
        let mut o = AcceptOrder::new(1, 16);
        assert!(o.arrive(5, Some(5), t0).is_empty());
        assert!(o.arrive(3, Some(3), t0 + Duration::from_secs(5)).is_empty());
        assert_eq!(o.deadline(T), Some(t0 + T));
        // Giving up on 1 releases 3 and 5 together (5 waited its full time).
        assert_eq!(o.expire(t0 + T, T), vec![3, 5]);
    }

    #[test]
    fn the_cap_gives_up_on_the_lowest_gap() {
        let now = Instant::now();
        let mut o = AcceptOrder::new(1, 2);
        assert!(o.arrive(5, None, now).is_empty());
        assert!(o.arrive(7, Some(7), now).is_empty());
        // Three held: give up on 1 and 3; 5 (none), 7 and 9 pass.
        assert_eq!(o.arrive(9, Some(9), now), vec![7, 9]);
        assert_eq!(o.held(), 0);
        assert_eq!(o.arrive(3, Some(3), now), vec![3]);
    }

    #[test]
    fn flush_hands_out_everything_held_in_order() {
        let now = Instant::now();
        let mut o = AcceptOrder::new(1, 16);
        assert!(o.arrive(9, Some(9), now).is_empty());
        assert!(o.arrive(5, Some(5), now).is_empty());
        assert!(o.arrive(7, None, now).is_empty());
        assert_eq!(o.flush(), vec![5, 9]);
        assert_eq!(o.arrive(11, Some(11), now), vec![11]);
        assert_eq!(o.arrive(3, Some(3), now), vec![3]);
    }

    #[test]
    fn the_last_id_is_no_overflow() {
        let now = Instant::now();
        let mut o = AcceptOrder::new(u32::MAX - 2, 4);
        assert_eq!(o.arrive(u32::MAX - 2, Some(1), now), vec![1]);
        assert_eq!(o.arrive(u32::MAX, Some(2), now), vec![2]);
    }
}
