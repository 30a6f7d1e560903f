//! The sender's replay buffer of one tunnel generation, and stale detection.
//!
//! Every frame written to a tunnel that counts in ACKs (DATA, and the control frames WINDOW,
//! RESET and GOAWAY: all but PING, PONG and ACK) is kept here, in write order, until the
//! peer's ACK says that it arrived: the kernel accepting a `write()` is not delivery. ACKs
//! are cumulative counts of such frames received on this tunnel generation; TCP delivers a
//! tunnel's frames in order, so a count names a prefix of this queue.
//!
//! When the tunnel dies, or makes no progress for the stale timeout while holding frames,
//! [`take_all`](ReplayQueue::take_all) hands the frames over to be re-sent on the other
//! tunnels (where they enter those tunnels' queues). Later ACKs of this generation still count
//! as progress (the tunnel moves again) but release nothing here: each frame is held by
//! exactly one queue, so its memory and flow-control charge are released exactly once.
//!
//! A writer [`announce`](ReplayQueue::announce)s frames before it writes them and
//! [`push`](ReplayQueue::push)es them after: on a fast path the peer's ACK can arrive in
//! between, and it then releases the frame as it is pushed. Pure data structure; time is
//! passed in.

use crate::proto::frame::{data_charge, Cmd, HEADER_LEN};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An ACK acknowledged more frames than were ever sent on the tunnel: a protocol violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AckBeyondSent {
    /// What the ACK said.
    pub acked: u64,
    /// What was sent.
    pub sent: u64,
}

impl std::fmt::Display for AckBeyondSent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ACK of {} frames on a tunnel that carried {}", self.acked, self.sent)
    }
}

/// What an ACK released.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Released {
    /// The ACK moved the tunnel's acknowledged count forward.
    pub progressed: bool,
    /// Flow-control charge of the frames released.
    pub charge: u64,
    /// The frames released (for the caller to recycle).
    pub frames: Vec<Vec<u8>>,
}

/// Flow-control charge of an encoded frame (header and payload): a DATA frame's charge, 0 for
/// control frames.
pub fn frame_charge(frame: &[u8]) -> u64 {
    if frame.get(1) == Some(&(Cmd::Data as u8)) {
        data_charge(frame.len().saturating_sub(HEADER_LEN))
    } else {
        0
    }
}

/// Unacknowledged DATA frames of one tunnel generation.
#[derive(Debug, Default)]
pub struct ReplayQueue {
    /// Frames sent and not yet acknowledged (nor handed over), oldest first.
    frames: VecDeque<Vec<u8>>,
    /// Frames sent on this generation before `frames[0]` (acknowledged or handed over).
    base: u64,
    /// Highest acknowledged count received.
    acked: u64,
    /// Charge of `frames`.
    charge: u64,
    /// Since when the oldest frame has waited without any acknowledgement progress.
    waiting_since: Option<Instant>,
    /// The tunnel generation died and its frames were handed over: nothing more is taken.
    closed: bool,
    /// Frames announced (being written) and not yet pushed.
    inflight: u64,
}

/// Frames handed over for re-sending: the first was frame number `first` of its tunnel
/// generation, the others follow in order (an ACK of that generation counting past one of
/// them means it arrived after all, and need not be re-sent).
#[derive(Debug, Default)]
pub struct Handover {
    /// Position of `frames[0]` among the frames written to the generation.
    pub first: u64,
    /// The frames, oldest first.
    pub frames: Vec<Vec<u8>>,
}

/// What became of a pushed frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Kept until acknowledged.
    Kept,
    /// The peer acknowledged it before it was recorded: released at once, with its charge.
    Acknowledged(Vec<u8>, u64),
    /// The generation died: re-send it elsewhere.
    Refused(Vec<u8>),
}

impl ReplayQueue {
    /// An empty queue for a new tunnel generation.
    pub fn new() -> Self {
        Self::default()
    }

    /// `n` frames are about to be written to the tunnel.
    pub fn announce(&mut self, n: usize) {
        self.inflight += n as u64;
    }

    /// `n` announced frames were not written after all.
    pub fn withdraw(&mut self, n: usize) {
        self.inflight = self.inflight.saturating_sub(n as u64);
    }

    /// Record a frame written to the tunnel (announced before). A closed queue (the
    /// generation died meanwhile) hands the frame back: the caller re-sends it elsewhere.
    pub fn push(&mut self, frame: Vec<u8>, now: Instant) -> Pushed {
        self.inflight = self.inflight.saturating_sub(1);
        if self.frames.is_empty() && self.base < self.acked {
            self.base += 1;
            let charge = frame_charge(&frame);
            return Pushed::Acknowledged(frame, charge);
        }
        if self.closed {
            return Pushed::Refused(frame);
        }
        if self.frames.is_empty() {
            self.waiting_since = Some(now);
        }
        self.charge += frame_charge(&frame);
        self.frames.push_back(frame);
        Pushed::Kept
    }

    /// Frames written (or being written) on this generation in all.
    pub fn sent(&self) -> u64 {
        self.base + self.frames.len() as u64 + self.inflight
    }

    /// Frames held.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether no frame is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Charge of the frames held.
    pub fn charge(&self) -> u64 {
        self.charge
    }

    /// Apply an ACK: the peer has received `count` DATA frames of this generation.
    pub fn ack(&mut self, count: u64, now: Instant) -> Result<Released, AckBeyondSent> {
        if count > self.sent() {
            return Err(AckBeyondSent { acked: count, sent: self.sent() });
        }
        let mut r = Released::default();
        if count <= self.acked {
            // An old ACK overtaken by a newer one on another tunnel.
            return Ok(r);
        }
        self.acked = count;
        r.progressed = true;
        while self.base < count {
            // The rest is still being written: released as it is pushed.
            let Some(f) = self.frames.pop_front() else { break };
            r.charge += frame_charge(&f);
            r.frames.push(f);
            self.base += 1;
        }
        self.charge -= r.charge;
        self.waiting_since = (!self.frames.is_empty()).then_some(now);
        Ok(r)
    }

    /// Whether frames have waited `timeout` without acknowledgement progress.
    pub fn stalled(&self, now: Instant, timeout: Duration) -> bool {
        self.waiting_since.is_some_and(|since| now.saturating_duration_since(since) >= timeout)
    }

    /// The tunnel generation died: hand every held frame over for re-sending, and refuse
    /// later pushes.
    pub fn close(&mut self) -> Handover {
        self.closed = true;
        self.take_all()
    }

    /// Hand every held frame over for re-sending elsewhere (the tunnel is stale).
    pub fn take_all(&mut self) -> Handover {
        let first = self.base;
        self.base += self.frames.len() as u64;
        self.charge = 0;
        self.waiting_since = None;
        Handover { first, frames: self.frames.drain(..).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::Header;

    fn frame(len: usize) -> Vec<u8> {
        let mut f = Header::data(1, 0, 0, len as u32).encode().to_vec();
        f.resize(HEADER_LEN + len, 7);
        f
    }

    fn kept(q: &mut ReplayQueue, f: Vec<u8>, now: Instant) {
        q.announce(1);
        assert_eq!(q.push(f, now), Pushed::Kept);
    }

    #[test]
    fn an_ack_may_overtake_the_record_of_a_frame_being_written() {
        let now = Instant::now();
        let mut q = ReplayQueue::new();
        kept(&mut q, frame(10), now);
        q.announce(2);
        // The peer got all three before the writer recorded the last two.
        let r = q.ack(3, now).unwrap();
        assert_eq!(r.frames.len(), 1);
        assert!(matches!(q.push(frame(10), now), Pushed::Acknowledged(_, 74)));
        assert!(matches!(q.push(frame(10), now), Pushed::Acknowledged(_, 74)));
        assert!(q.is_empty() && !q.stalled(now + Duration::from_secs(9), Duration::from_secs(1)));
        assert_eq!(q.ack(4, now), Err(AckBeyondSent { acked: 4, sent: 3 }));
        q.announce(1);
        q.withdraw(1);
        assert_eq!(q.sent(), 3, "a withdrawn frame was never sent");
    }

    #[test]
    fn acks_release_a_prefix_once() {
        let now = Instant::now();
        let mut q = ReplayQueue::new();
        for _ in 0..3 {
            kept(&mut q, frame(100), now);
        }
        assert_eq!(q.charge(), 3 * 164);
        let r = q.ack(2, now).unwrap();
        assert!(r.progressed);
        assert_eq!((r.charge, r.frames.len()), (328, 2));
        // A late, smaller ACK changes nothing.
        assert_eq!(q.ack(1, now).unwrap(), Released::default());
        assert_eq!(q.len(), 1);
        assert_eq!(q.ack(4, now), Err(AckBeyondSent { acked: 4, sent: 3 }));
    }

    #[test]
    fn stalls_only_while_holding_frames_without_progress() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut q = ReplayQueue::new();
        assert!(!q.stalled(t0 + ms(1000), ms(250)));
        kept(&mut q, frame(1), t0);
        kept(&mut q, frame(1), t0 + ms(200));
        assert!(!q.stalled(t0 + ms(249), ms(250)));
        assert!(q.stalled(t0 + ms(250), ms(250)));
        // Progress restarts the clock for what is left.
        q.ack(1, t0 + ms(300)).unwrap();
        assert!(!q.stalled(t0 + ms(500), ms(250)));
        assert!(q.stalled(t0 + ms(550), ms(250)));
        q.ack(2, t0 + ms(600)).unwrap();
        assert!(!q.stalled(t0 + ms(5000), ms(250)));
    }

    #[test]
    fn handed_over_frames_are_not_released_again_but_later_acks_still_show_progress() {
        let now = Instant::now();
        let mut q = ReplayQueue::new();
        kept(&mut q, frame(10), now);
        kept(&mut q, frame(10), now);
        let moved = q.take_all();
        assert_eq!((moved.first, moved.frames.len()), (0, 2));
        assert_eq!((q.charge(), q.sent()), (0, 2));
        let r = q.ack(2, now).unwrap();
        assert!(r.progressed, "the tunnel delivered after all: it moves");
        assert_eq!(r.charge, 0, "nothing is released twice");
        kept(&mut q, frame(10), now);
        assert_eq!(q.ack(3, now).unwrap().frames.len(), 1);
        kept(&mut q, frame(10), now);
        let closed = q.close();
        assert_eq!((closed.first, closed.frames.len()), (3, 1));
        q.announce(1);
        assert!(
            matches!(q.push(frame(10), now), Pushed::Refused(_)),
            "a dead generation takes no more frames"
        );
    }
}
