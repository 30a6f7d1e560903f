//! Reorder buffer (`mtmux::core::reorder`) against a reference model under arbitrary
//! insert / read / discard sequences with a fake clock.
//!
//! The model keeps the delivered bytes as one byte queue (with the frame boundaries for the
//! per-frame charge) and waiting frames in a `BTreeMap`, and applies the rules of
//! docs/PROTOCOL.md §4.2 as written: OPEN exactly on sequence 0, no sequence twice (half the
//! sequence space behind the next expected frame counts as delivered), nothing after FIN, a
//! FIN never before a frame already received. After every operation the buffer and the model
//! agree on the result, the bytes read, the charge released, `readable`, `at_eof`,
//! `fin_received`, `waiting_for`, the gap deadline and the longest hold. At the end all
//! charge taken in is released again (read or discarded): flow-control credit never leaks,
//! and nothing stays buffered (bounded memory).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mtmux::core::reorder::{ReorderBuffer, ReorderError};
use mtmux::proto::frame::{data_charge, FLAG_FIN, FLAG_OPEN};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Arbitrary, Debug)]
enum Seq {
    /// `k` frames after the one the stream waits for.
    Ahead(u8),
    /// `k + 1` frames before it (already delivered).
    Behind(u8),
    /// Any sequence number.
    Raw(u32),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Insert { seq: Seq, open: bool, fin: bool, len: u8 },
    Read(u8),
    Discard,
    Tick(u16),
    TakeMaxHold,
}

/// The reference: the rules, with the simplest data structures.
#[derive(Default)]
struct Model {
    next: u32,
    pending: BTreeMap<u32, (bool, Vec<u8>)>,
    fin: Option<u32>,
    /// Delivered, unread bytes.
    bytes: VecDeque<u8>,
    /// Unread bytes left of each delivered non-empty frame, oldest first.
    frames: VecDeque<usize>,
    gap_since: Option<Duration>,
    max_hold: Duration,
}

fn dist(from: u32, to: u32) -> u32 {
    to.wrapping_sub(from)
}

impl Model {
    fn fin_received(&self) -> bool {
        self.fin.is_some_and(|f| f.wrapping_add(1) == self.next)
    }

    fn deliver(&mut self, payload: Vec<u8>) {
        if !payload.is_empty() {
            self.frames.push_back(payload.len());
            self.bytes.extend(payload);
        }
        self.next = self.next.wrapping_add(1);
    }

    fn insert(
        &mut self,
        seq: u32,
        flags: u16,
        payload: Vec<u8>,
        now: Duration,
    ) -> Result<bool, ReorderError> {
        let open = flags & FLAG_OPEN != 0;
        let fin = flags & FLAG_FIN != 0;
        if open != (seq == 0) {
            return Err(ReorderError::BadOpen(seq));
        }
        if dist(self.next, seq) >= 1 << 31 || self.pending.contains_key(&seq) {
            return Err(ReorderError::Duplicate(seq));
        }
        if self.fin.is_some_and(|f| dist(self.next, seq) > dist(self.next, f)) {
            return Err(ReorderError::AfterFin(seq));
        }
        if fin {
            if self.fin.is_some_and(|f| f != seq) {
                return Err(ReorderError::AfterFin(seq));
            }
            // The furthest frame already waiting must not lie after the FIN.
            if let Some(&last) = self.pending.keys().max_by_key(|&&s| dist(self.next, s)) {
                if dist(self.next, last) > dist(self.next, seq) {
                    return Err(ReorderError::AfterFin(last));
                }
            }
            self.fin = Some(seq);
        }
        let progressed = seq == self.next;
        if progressed {
            if let Some(since) = self.gap_since {
                self.max_hold = self.max_hold.max(now.saturating_sub(since));
            }
            self.deliver(payload);
            while let Some((_, p)) = self.pending.remove(&self.next) {
                self.deliver(p);
            }
        } else {
            self.pending.insert(seq, (fin, payload));
        }
        let gap = !self.fin_received() && !self.pending.is_empty();
        if !gap {
            self.gap_since = None;
        } else if progressed || self.gap_since.is_none() {
            self.gap_since = Some(now);
        }
        Ok(progressed)
    }

    fn read(&mut self, n: usize) -> (Vec<u8>, u64) {
        let out: Vec<u8> = (0..n).map_while(|_| self.bytes.pop_front()).collect();
        let mut left = out.len();
        let mut released = out.len() as u64;
        while left > 0 {
            let front = self.frames.front_mut().expect("bytes belong to frames");
            let k = left.min(*front);
            *front -= k;
            left -= k;
            if *front == 0 {
                self.frames.pop_front();
                released += data_charge(1) - 1;
            }
        }
        (out, released)
    }

    fn discard(&mut self) -> u64 {
        let unread = self.bytes.len() as u64 + self.frames.len() as u64 * (data_charge(1) - 1);
        let waiting: u64 = self.pending.values().map(|(_, p)| data_charge(p.len())).sum();
        self.bytes.clear();
        self.frames.clear();
        self.pending.clear();
        self.gap_since = None;
        unread + waiting
    }
}

const TIMEOUT: Duration = Duration::from_secs(1);

fuzz_target!(|ops: Vec<Op>| {
    let t0 = Instant::now();
    let mut now = Duration::ZERO;
    let mut buf = ReorderBuffer::new();
    let mut model = Model::default();
    // Flow-control charge taken in (accepted frames) and given back (read or discarded).
    let (mut charged, mut released) = (0u64, 0u64);
    for (i, op) in ops.iter().enumerate().take(512) {
        match op {
            Op::Insert { seq, open, fin, len } => {
                let seq = match *seq {
                    Seq::Ahead(k) => model.next.wrapping_add(k as u32),
                    Seq::Behind(k) => model.next.wrapping_sub(k as u32 + 1),
                    Seq::Raw(s) => s,
                };
                let flags = if *open { FLAG_OPEN } else { 0 } | if *fin { FLAG_FIN } else { 0 };
                let payload: Vec<u8> =
                    (0..*len).map(|j| (i as u8).wrapping_mul(31).wrapping_add(j)).collect();
                let want = model.insert(seq, flags, payload.clone(), now);
                let got = buf.insert(seq, flags, payload.clone(), t0 + now);
                assert_eq!(got, want, "insert seq {seq} flags {flags:#x} len {len}");
                if got.is_ok() {
                    charged += data_charge(payload.len());
                } else {
                    assert!(!got.unwrap_err().to_string().is_empty());
                }
            }
            Op::Read(n) => {
                let mut out = vec![0u8; *n as usize];
                let (k, rel) = buf.read(&mut out);
                let (want, want_rel) = model.read(*n as usize);
                assert_eq!((&out[..k], rel), (&want[..], want_rel), "read of {n}");
                released += rel;
            }
            Op::Discard => {
                let rel = buf.discard();
                assert_eq!(rel, model.discard(), "discard");
                released += rel;
            }
            Op::Tick(ms) => now += Duration::from_millis(*ms as u64),
            Op::TakeMaxHold => {
                assert_eq!(buf.take_max_hold(), std::mem::take(&mut model.max_hold));
            }
        }
        assert_eq!(buf.readable(), model.bytes.len());
        assert_eq!(buf.fin_received(), model.fin_received());
        assert_eq!(buf.at_eof(), model.bytes.is_empty() && model.fin_received());
        assert_eq!(buf.waiting_for(), model.next);
        assert_eq!(buf.gap_deadline(TIMEOUT), model.gap_since.map(|s| t0 + s + TIMEOUT));
        assert!(released <= charged, "more credit released than taken");
    }
    // Everything still held is released by a discard: no credit is lost.
    released += buf.discard();
    assert_eq!(released, charged, "charge taken in and given back differ");
    assert_eq!(buf.readable(), 0);
});
