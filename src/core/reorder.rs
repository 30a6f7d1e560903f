//! Per-stream receive buffer: puts DATA frames that arrived over different tunnels back in
//! sequence order and hands out their bytes.
//!
//! Frames `0..next` have been moved to `ready` (in order); frames at or after `next` wait in
//! `pending` until the gap before them closes. A *gap* exists when a frame after `next` has
//! arrived but `next` itself has not; the caller fails the stream when a gap outlives the
//! reorder timeout (with protocol version 2 a frame lost with a tunnel is re-sent, so this is
//! a last line of defence against a broken peer, not the normal way a tunnel failure shows). Time is passed
//! in, never read.

use crate::proto::frame::{data_charge, FLAG_FIN, FLAG_OPEN};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Why a frame was refused. All are protocol violations by the sender.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReorderError {
    /// The sequence number was already received (or lies behind the delivered prefix).
    Duplicate(u32),
    /// A frame with a sequence number after the stream's FIN.
    AfterFin(u32),
    /// OPEN on a frame other than sequence 0, or sequence 0 without OPEN.
    BadOpen(u32),
}

impl std::fmt::Display for ReorderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReorderError::Duplicate(s) => write!(f, "duplicate frame sequence {s}"),
            ReorderError::AfterFin(s) => write!(f, "frame sequence {s} after the stream's FIN"),
            ReorderError::BadOpen(s) => write!(f, "OPEN flag mismatch on frame sequence {s}"),
        }
    }
}

struct Held {
    fin: bool,
    payload: Vec<u8>,
}

/// The reorder buffer of one stream's receive direction.
#[derive(Default)]
pub struct ReorderBuffer {
    /// Next sequence number to move to `ready`.
    next: u32,
    /// Out-of-order frames by sequence number.
    pending: BTreeMap<u32, Held>,
    /// In-order payloads not yet read, oldest first.
    ready: VecDeque<Vec<u8>>,
    /// Bytes of `ready.front()` already read.
    front_read: usize,
    /// Unread bytes in `ready`.
    ready_bytes: usize,
    /// Sequence number of the FIN frame, once any frame told us.
    fin_seq: Option<u32>,
    /// When the current gap was first seen (`None`: no gap).
    gap_since: Option<Instant>,
    /// Longest time a filled gap held later data back, since the last `take_max_hold`.
    max_hold: Duration,
}

/// Distance from `from` forward to `to` in sequence space (wrapping).
fn ahead(from: u32, to: u32) -> u32 {
    to.wrapping_sub(from)
}

impl ReorderBuffer {
    /// An empty buffer expecting sequence 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accept frame `seq`. Returns whether any bytes or the end of the stream became
    /// readable.
    pub fn insert(
        &mut self,
        seq: u32,
        flags: u16,
        payload: Vec<u8>,
        now: Instant,
    ) -> Result<bool, ReorderError> {
        if (seq == 0) != (flags & FLAG_OPEN != 0) {
            return Err(ReorderError::BadOpen(seq));
        }
        // Half the sequence space behind `next` counts as "already delivered".
        if ahead(self.next, seq) >= 1 << 31 || self.pending.contains_key(&seq) {
            return Err(ReorderError::Duplicate(seq));
        }
        if let Some(fin) = self.fin_seq {
            if ahead(self.next, seq) > ahead(self.next, fin) {
                return Err(ReorderError::AfterFin(seq));
            }
        }
        let fin = flags & FLAG_FIN != 0;
        if fin {
            if let Some(old) = self.fin_seq {
                if old != seq {
                    return Err(ReorderError::AfterFin(seq));
                }
            }
            if let Some(last) = self.furthest_pending() {
                if ahead(self.next, last) > ahead(self.next, seq) {
                    return Err(ReorderError::AfterFin(last));
                }
            }
            self.fin_seq = Some(seq);
        }
        let progressed = if seq == self.next {
            if let Some(since) = self.gap_since {
                // The gap this frame fills held later data back this long.
                self.max_hold = self.max_hold.max(now.saturating_duration_since(since));
            }
            self.push_ready(payload);
            self.next = self.next.wrapping_add(1);
            while let Some(h) = self.pending.remove(&self.next) {
                self.push_ready(h.payload);
                self.next = self.next.wrapping_add(1);
            }
            true
        } else {
            self.pending.insert(seq, Held { fin, payload });
            false
        };
        self.update_gap(progressed, now);
        Ok(progressed)
    }

    /// The waiting frame furthest ahead of `next`. Every waiting frame lies less than half
    /// the sequence space ahead; once the numbers wrap, those below `next` come after all
    /// those above it.
    fn furthest_pending(&self) -> Option<u32> {
        let wrapped = self.pending.range(..self.next).next_back();
        wrapped.or_else(|| self.pending.iter().next_back()).map(|(&s, _)| s)
    }

    fn push_ready(&mut self, payload: Vec<u8>) {
        if !payload.is_empty() {
            self.ready_bytes += payload.len();
            self.ready.push_back(payload);
        }
    }

    fn update_gap(&mut self, progressed: bool, now: Instant) {
        if !self.has_gap() {
            self.gap_since = None;
        } else if progressed || self.gap_since.is_none() {
            // Each missing frame gets the full timeout, measured from when it became the one
            // the stream waits for.
            self.gap_since = Some(now);
        }
    }

    fn has_gap(&self) -> bool {
        if self.fin_received() {
            return false;
        }
        !self.pending.is_empty()
    }

    /// All frames up to and including FIN have been put in order.
    pub fn fin_received(&self) -> bool {
        matches!(self.fin_seq, Some(f) if ahead(f, self.next) == 1)
    }

    /// Nothing left to read and the FIN has been reached: reads return end-of-stream.
    pub fn at_eof(&self) -> bool {
        self.ready_bytes == 0 && self.fin_received()
    }

    /// Bytes ready to be read in order.
    pub fn readable(&self) -> usize {
        self.ready_bytes
    }

    /// When the stream must fail if the current gap is still open, if there is a gap.
    pub fn gap_deadline(&self, timeout: Duration) -> Option<Instant> {
        self.gap_since.map(|t| t + timeout)
    }

    /// The longest time data waited for a missing frame since the last call (then reset):
    /// how much the tunnels' delays differ, which the receive window must cover on top of
    /// the round trip.
    pub fn take_max_hold(&mut self) -> Duration {
        std::mem::take(&mut self.max_hold)
    }

    /// The sequence number the stream is waiting for.
    pub fn waiting_for(&self) -> u32 {
        self.next
    }

    /// Copy in-order bytes into `buf`. Returns the number of bytes copied and the flow-control
    /// charge released (payload bytes plus the per-frame charge of every frame finished).
    pub fn read(&mut self, buf: &mut [u8]) -> (usize, u64) {
        self.read_recycling(buf, |_| {})
    }

    /// [`read`](Self::read), handing every payload buffer it finishes to `recycle` (so the
    /// caller can reuse its allocation).
    pub fn read_recycling(&mut self, buf: &mut [u8], mut recycle: impl FnMut(Vec<u8>)) -> (usize, u64) {
        let mut copied = 0;
        let mut released = 0;
        while copied < buf.len() {
            let Some(front) = self.ready.front() else { break };
            let avail = &front[self.front_read..];
            let n = avail.len().min(buf.len() - copied);
            buf[copied..copied + n].copy_from_slice(&avail[..n]);
            copied += n;
            self.front_read += n;
            released += n as u64;
            if self.front_read == front.len() {
                released += data_charge(front.len()) - front.len() as u64;
                recycle(self.ready.pop_front().expect("front exists"));
                self.front_read = 0;
            }
        }
        self.ready_bytes -= copied;
        (copied, released)
    }

    /// Drop everything buffered (the reader closed or the stream was reset). Returns the
    /// flow-control charge released.
    pub fn discard(&mut self) -> u64 {
        let mut released: u64 = self.ready.iter().map(|p| data_charge(p.len())).sum();
        released -= self.front_read as u64;
        released += self.pending.values().map(|h| data_charge(h.payload.len())).sum::<u64>();
        // Keep sequence tracking so that later frames are still checked and counted.
        let pending = std::mem::take(&mut self.pending);
        for (seq, h) in pending {
            if h.fin {
                self.fin_seq = Some(seq);
            }
        }
        self.ready.clear();
        self.front_read = 0;
        self.ready_bytes = 0;
        self.gap_since = None;
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> Instant {
        Instant::now()
    }

    fn flags(seq: u32, fin: bool) -> u16 {
        (if seq == 0 { FLAG_OPEN } else { 0 }) | if fin { FLAG_FIN } else { 0 }
    }

    fn read_all(r: &mut ReorderBuffer) -> Vec<u8> {
        let mut out = vec![0u8; r.readable()];
        let (n, _) = r.read(&mut out);
        out.truncate(n);
        out
    }

    #[test]
    fn in_order_frames_are_readable_at_once() {
        let mut r = ReorderBuffer::new();
        let now = t0();
        assert!(r.insert(0, FLAG_OPEN, b"ab".to_vec(), now).unwrap());
        assert!(r.insert(1, FLAG_FIN, b"cd".to_vec(), now).unwrap());
        assert_eq!(read_all(&mut r), b"abcd");
        assert!(r.at_eof());
    }

    #[test]
    fn out_of_order_frames_wait_for_the_gap() {
        let mut r = ReorderBuffer::new();
        let now = t0();
        assert!(!r.insert(1, 0, b"cd".to_vec(), now).unwrap());
        assert_eq!(r.readable(), 0);
        assert_eq!(r.gap_deadline(Duration::from_secs(1)), Some(now + Duration::from_secs(1)));
        assert!(r.insert(0, FLAG_OPEN, b"ab".to_vec(), now).unwrap());
        assert_eq!(read_all(&mut r), b"abcd");
        assert_eq!(r.gap_deadline(Duration::from_secs(1)), None);
    }

    #[test]
    fn reports_how_long_gaps_held_data_back() {
        let mut r = ReorderBuffer::new();
        let now = t0();
        r.insert(1, 0, b"b".to_vec(), now).unwrap();
        r.insert(0, FLAG_OPEN, b"a".to_vec(), now + Duration::from_millis(30)).unwrap();
        r.insert(3, 0, b"d".to_vec(), now + Duration::from_millis(40)).unwrap();
        r.insert(2, 0, b"c".to_vec(), now + Duration::from_millis(45)).unwrap();
        assert_eq!(r.take_max_hold(), Duration::from_millis(30));
        assert_eq!(r.take_max_hold(), Duration::ZERO);
    }

    #[test]
    fn duplicates_and_frames_after_fin_are_refused() {
        let mut r = ReorderBuffer::new();
        let now = t0();
        r.insert(0, FLAG_OPEN, b"a".to_vec(), now).unwrap();
        assert_eq!(r.insert(0, FLAG_OPEN, b"a".to_vec(), now), Err(ReorderError::Duplicate(0)));
        r.insert(2, FLAG_FIN, vec![], now).unwrap();
        assert_eq!(r.insert(3, 0, b"x".to_vec(), now), Err(ReorderError::AfterFin(3)));
        assert_eq!(r.insert(5, FLAG_FIN, vec![], now), Err(ReorderError::AfterFin(5)));
    }

    #[test]
    fn fin_before_pending_frames_is_refused() {
        let mut r = ReorderBuffer::new();
        let now = t0();
        r.insert(4, 0, b"x".to_vec(), now).unwrap();
        assert_eq!(r.insert(2, FLAG_FIN, vec![], now), Err(ReorderError::AfterFin(4)));
    }

    #[test]
    fn fin_before_pending_frames_is_refused_across_the_wrap() {
        // A stream far into its life: sequence numbers wrap from u32::MAX to 0 (which carries
        // OPEN again, as the sender sets it on every frame numbered 0).
        let mut r = ReorderBuffer { next: u32::MAX - 1, ..ReorderBuffer::new() };
        let now = t0();
        r.insert(1, 0, b"after the wrap".to_vec(), now).unwrap();
        r.insert(u32::MAX, 0, b"before it".to_vec(), now).unwrap();
        // Frame 1 is already here and lies after frame 0: 0 cannot be the last frame. (The
        // largest number waiting, u32::MAX, is not the furthest ahead.)
        assert_eq!(r.insert(0, FLAG_OPEN | FLAG_FIN, vec![], now), Err(ReorderError::AfterFin(1)));
        r.insert(2, FLAG_FIN, vec![], now).unwrap();
        r.insert(0, FLAG_OPEN, b"!".to_vec(), now).unwrap();
        r.insert(u32::MAX - 1, 0, b"<".to_vec(), now).unwrap();
        assert_eq!(read_all(&mut r), b"<before it!after the wrap");
        assert!(r.at_eof());
    }

    #[test]
    fn open_flag_must_match_sequence_zero() {
        let mut r = ReorderBuffer::new();
        assert_eq!(r.insert(0, 0, b"a".to_vec(), t0()), Err(ReorderError::BadOpen(0)));
        assert_eq!(r.insert(3, FLAG_OPEN, b"a".to_vec(), t0()), Err(ReorderError::BadOpen(3)));
    }

    #[test]
    fn progress_restarts_the_gap_timer() {
        let mut r = ReorderBuffer::new();
        let now = t0();
        r.insert(2, 0, b"c".to_vec(), now).unwrap();
        r.insert(3, 0, b"d".to_vec(), now).unwrap();
        let later = now + Duration::from_millis(50);
        r.insert(0, FLAG_OPEN, b"a".to_vec(), later).unwrap();
        // Frame 1 is now the missing one; it gets a full timeout from `later`.
        assert_eq!(r.gap_deadline(Duration::from_secs(1)), Some(later + Duration::from_secs(1)));
    }

    #[test]
    fn read_releases_payload_and_frame_charge() {
        let mut r = ReorderBuffer::new();
        let now = t0();
        r.insert(0, FLAG_OPEN, vec![1; 10], now).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(r.read(&mut buf), (4, 4));
        let mut buf = [0u8; 100];
        assert_eq!(r.read(&mut buf), (6, 6 + data_charge(10) - 10));
    }

    #[test]
    fn discard_releases_everything_buffered() {
        let mut r = ReorderBuffer::new();
        let now = t0();
        r.insert(0, FLAG_OPEN, vec![1; 10], now).unwrap();
        r.insert(2, 0, vec![1; 20], now).unwrap();
        let mut buf = [0u8; 3];
        r.read(&mut buf);
        assert_eq!(r.discard(), data_charge(10) - 3 + data_charge(20));
        assert_eq!(r.readable(), 0);
    }

    proptest! {
        /// Any arrival order of a stream's frames yields the original bytes, EOF, and a total
        /// released charge equal to the total charge sent.
        #[test]
        fn any_permutation_reassembles(sizes in proptest::collection::vec(0usize..50, 1..40), seed in any::<u64>()) {
            let n = sizes.len();
            let frames: Vec<(u32, Vec<u8>)> = sizes.iter().enumerate()
                .map(|(i, &s)| (i as u32, (0..s).map(|j| (i * 7 + j) as u8).collect()))
                .collect();
            let mut order: Vec<usize> = (0..n).collect();
            let mut x = seed | 1;
            for i in (1..n).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let mut r = ReorderBuffer::new();
            let now = Instant::now();
            let mut out = Vec::new();
            let mut released = 0;
            for &i in &order {
                let (seq, p) = &frames[i];
                let last = i == n - 1;
                // Empty middle frames are not valid on the wire; give them a byte.
                let p = if p.is_empty() && !last && i != 0 { vec![0xee] } else { p.clone() };
                r.insert(*seq, flags(*seq, last), p, now).unwrap();
                let mut buf = [0u8; 17];
                loop {
                    let (k, rel) = r.read(&mut buf);
                    if k == 0 { break; }
                    out.extend_from_slice(&buf[..k]);
                    released += rel;
                }
            }
            let expected: Vec<u8> = frames.iter().enumerate().flat_map(|(i, (_, p))| {
                if p.is_empty() && i != n - 1 && i != 0 { vec![0xee] } else { p.clone() }
            }).collect();
            let charge: u64 = frames.iter().enumerate().map(|(i, (_, p))| {
                data_charge(if p.is_empty() && i != n - 1 && i != 0 { 1 } else { p.len() })
            }).sum();
            prop_assert_eq!(out, expected);
            prop_assert!(r.at_eof());
            prop_assert_eq!(released, charge);
            prop_assert_eq!(r.gap_deadline(Duration::from_secs(1)), None);
        }
    }
}
