//! The send scheduler: what a tunnel writer sends next, and which writer to wake.
//!
//! Frames that could not be written straight to a tunnel by the application thread wait here.
//! Order of service for a writer: its own tunnel's control frames (keepalive), then
//! session-level control frames (window updates, resets, ...), then DATA frames taken
//! round-robin, one frame per stream per turn, so a small request is never stuck behind
//! another stream's megabytes. Writers ask for work only when their socket has room, so the
//! tunnel that can send soonest takes the next frame (the pull form of MPTCP's
//! lowest-time-to-flush choice). Pure data structure; the session wraps it in a mutex.

use crate::proto::frame::Control;
use std::collections::{HashMap, VecDeque};

/// Work handed to one tunnel writer: control frames (encoded) first, then DATA frames.
#[derive(Default, Debug)]
pub struct Batch {
    /// Encoded control frames.
    pub control: Vec<u8>,
    /// Number of frames in `control`.
    pub control_frames: usize,
    /// Encoded DATA frames (header and payload), in the order to write them.
    pub data: Vec<Vec<u8>>,
}

impl Batch {
    /// Forget the contents, keeping the allocations.
    pub fn clear(&mut self) {
        self.control.clear();
        self.control_frames = 0;
        self.data.clear();
    }

    /// Append a control frame.
    pub fn push_control(&mut self, c: Control) {
        c.encode_into(&mut self.control);
        self.control_frames += 1;
    }

    /// Number of frames in the batch.
    pub fn frames(&self) -> usize {
        self.control_frames + self.data.len()
    }
}

/// Queued frames of a session.
#[derive(Debug)]
pub struct Scheduler {
    /// Control frames that must go out on one particular tunnel (ping, pong).
    tunnel_control: Vec<VecDeque<Control>>,
    /// Session-level control frames, for any tunnel.
    control: VecDeque<Control>,
    /// Queued DATA frames per stream.
    queues: HashMap<u32, VecDeque<Vec<u8>>>,
    /// Streams with queued DATA, in round-robin order.
    ring: VecDeque<u32>,
    /// Bytes of queued DATA frames.
    queued_bytes: usize,
    /// Queue bound in bytes; writers of DATA wait while it is reached.
    limit: usize,
    /// Writers waiting for work, most recently idle last.
    idle: Vec<usize>,
    /// Tunnels that can no longer send.
    dead: Vec<bool>,
    /// Tunnels whose socket holds a partly written frame that their writer must finish.
    flush: Vec<bool>,
}

impl Scheduler {
    /// A scheduler for `tunnels` tunnels holding at most `limit` bytes of DATA.
    pub fn new(tunnels: usize, limit: usize) -> Self {
        Scheduler {
            tunnel_control: (0..tunnels).map(|_| VecDeque::new()).collect(),
            control: VecDeque::new(),
            queues: HashMap::new(),
            ring: VecDeque::new(),
            queued_bytes: 0,
            limit,
            idle: Vec::new(),
            dead: vec![false; tunnels],
            flush: vec![false; tunnels],
        }
    }

    /// Whether another DATA frame may be queued.
    pub fn has_room(&self) -> bool {
        self.queued_bytes < self.limit
    }

    /// Whether the queue has drained to half its limit: the point at which writers blocked on
    /// a full queue are woken (waking them on every frame taken would cost a context switch
    /// per frame).
    pub fn at_low_water(&self) -> bool {
        self.queued_bytes <= self.limit / 2
    }

    /// Whether nothing at all waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty() && self.control.is_empty() && self.tunnel_control.iter().all(VecDeque::is_empty)
    }

    /// Bytes of DATA waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Queue a DATA frame of stream `id`. Returns a writer to wake, if one is idle.
    pub fn push_data(&mut self, id: u32, frame: Vec<u8>) -> Option<usize> {
        self.queued_bytes += frame.len();
        let q = self.queues.entry(id).or_default();
        if q.is_empty() {
            self.ring.push_back(id);
        }
        q.push_back(frame);
        self.idle.pop()
    }

    /// Queue a session-level control frame. Returns a writer to wake, if one is idle.
    pub fn push_control(&mut self, c: Control) -> Option<usize> {
        self.control.push_back(c);
        self.idle.pop()
    }

    /// Queue a control frame for tunnel `t`. Returns whether that tunnel's writer must be
    /// woken (it was idle).
    pub fn push_tunnel_control(&mut self, t: usize, c: Control) -> bool {
        if self.dead[t] {
            return false;
        }
        self.tunnel_control[t].push_back(c);
        self.wake_if_idle(t)
    }

    /// An application thread left part of a frame for tunnel `t`'s writer to finish. Returns
    /// whether that writer must be woken.
    pub fn push_flush(&mut self, t: usize) -> bool {
        self.flush[t] = true;
        self.wake_if_idle(t)
    }

    /// Take writer `t` off the idle list; returns whether it was on it (and must be woken).
    fn wake_if_idle(&mut self, t: usize) -> bool {
        let was = self.idle.contains(&t);
        self.idle.retain(|&i| i != t);
        was
    }

    /// Take tunnel `t`'s flush mark.
    pub fn take_flush(&mut self, t: usize) -> bool {
        std::mem::take(&mut self.flush[t])
    }

    /// Writer `t` found no work and waits.
    pub fn set_idle(&mut self, t: usize) {
        if !self.dead[t] && !self.idle.contains(&t) {
            self.idle.push(t);
        }
    }

    /// Writer `t` woke up for another reason (timer) and is no longer waiting.
    pub fn clear_idle(&mut self, t: usize) {
        self.idle.retain(|&i| i != t);
    }

    /// Whether writer `t` is registered as idle.
    pub fn is_idle(&self, t: usize) -> bool {
        self.idle.contains(&t)
    }

    /// Whether writer `t` has anything to send.
    pub fn has_work_for(&self, t: usize) -> bool {
        self.flush[t]
            || !self.tunnel_control[t].is_empty()
            || !self.control.is_empty()
            || !self.ring.is_empty()
    }

    /// Tunnel `t` died: its own control frames are dropped and it gets no more work.
    pub fn tunnel_dead(&mut self, t: usize) {
        self.dead[t] = true;
        self.flush[t] = false;
        self.tunnel_control[t].clear();
        self.clear_idle(t);
    }

    /// Drop the queued DATA frames of a stream that was reset. Returns the bytes dropped.
    pub fn drop_stream(&mut self, id: u32) -> usize {
        let Some(q) = self.queues.remove(&id) else {
            return 0;
        };
        let bytes: usize = q.iter().map(Vec::len).sum();
        self.queued_bytes -= bytes;
        self.ring.retain(|&s| s != id);
        bytes
    }

    /// Fill `batch` with work for writer `t`: all its tunnel control frames, all session
    /// control frames, then DATA frames round-robin until `budget` bytes are reached (at least
    /// one frame if any is queued). Returns the number of DATA frames taken.
    pub fn next_batch(&mut self, t: usize, budget: usize, batch: &mut Batch) -> usize {
        for c in self.tunnel_control[t].drain(..) {
            batch.push_control(c);
        }
        for c in self.control.drain(..) {
            batch.push_control(c);
        }
        let mut taken = 0;
        let mut bytes = batch.control.len();
        while bytes < budget || taken == 0 {
            let Some(id) = self.ring.pop_front() else {
                break;
            };
            let q = self.queues.get_mut(&id).expect("ring entries have queues");
            let frame = q.pop_front().expect("ring entries are non-empty");
            if q.is_empty() {
                self.queues.remove(&id);
            } else {
                self.ring.push_back(id);
            }
            self.queued_bytes -= frame.len();
            bytes += frame.len();
            batch.data.push(frame);
            taken += 1;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::HEADER_LEN;

    fn frame(id: u8, len: usize) -> Vec<u8> {
        vec![id; len]
    }

    #[test]
    fn streams_take_turns() {
        let mut s = Scheduler::new(1, 1 << 20);
        for _ in 0..3 {
            s.push_data(1, frame(1, 10));
        }
        s.push_data(2, frame(2, 10));
        let mut b = Batch::default();
        s.next_batch(0, 0, &mut b);
        s.next_batch(0, 0, &mut b);
        s.next_batch(0, 0, &mut b);
        let order: Vec<u8> = b.data.iter().map(|f| f[0]).collect();
        // Stream 2's single frame goes second, not after all of stream 1's.
        assert_eq!(order, vec![1, 2, 1]);
    }

    #[test]
    fn control_goes_before_data() {
        let mut s = Scheduler::new(2, 1 << 20);
        s.push_data(1, frame(1, 100));
        s.push_control(Control::Window { stream: 1, limit: 5 });
        s.push_tunnel_control(1, Control::Pong(9));
        let mut b = Batch::default();
        assert_eq!(s.next_batch(0, 1000, &mut b), 1);
        // Tunnel 1's pong is not tunnel 0's business.
        assert_eq!(b.control.len(), HEADER_LEN + 8);
        let mut b1 = Batch::default();
        assert_eq!(s.next_batch(1, 1000, &mut b1), 0);
        assert_eq!(b1.control, Control::Pong(9).encode());
        assert!(s.is_empty());
    }

    #[test]
    fn batches_respect_the_budget_but_take_at_least_one_frame() {
        let mut s = Scheduler::new(1, 1 << 20);
        for _ in 0..4 {
            s.push_data(1, frame(1, 100));
        }
        let mut b = Batch::default();
        assert_eq!(s.next_batch(0, 10, &mut b), 1);
        b.clear();
        assert_eq!(s.next_batch(0, 250, &mut b), 3);
    }

    #[test]
    fn queue_limit_and_accounting() {
        let mut s = Scheduler::new(1, 150);
        s.push_data(1, frame(1, 100));
        assert!(s.has_room());
        s.push_data(1, frame(1, 100));
        assert!(!s.has_room());
        assert_eq!(s.queued_bytes(), 200);
        assert_eq!(s.drop_stream(1), 200);
        assert!(s.has_room() && s.is_empty());
    }

    #[test]
    fn low_water_is_half_the_limit() {
        let mut s = Scheduler::new(1, 400);
        s.push_data(1, frame(1, 100));
        s.push_data(1, frame(1, 100));
        s.push_data(1, frame(1, 100));
        assert!(s.has_room() && !s.at_low_water());
        let mut b = Batch::default();
        s.next_batch(0, 0, &mut b);
        assert!(s.at_low_water());
    }

    #[test]
    fn wakes_the_most_recently_idle_writer() {
        let mut s = Scheduler::new(3, 1 << 20);
        s.set_idle(0);
        s.set_idle(2);
        assert_eq!(s.push_data(1, frame(1, 1)), Some(2));
        assert_eq!(s.push_control(Control::GoAway(0)), Some(0));
        assert_eq!(s.push_data(1, frame(1, 1)), None);
        s.set_idle(1);
        assert!(s.push_tunnel_control(1, Control::Ping(1)));
        assert!(!s.is_idle(1));
    }

    #[test]
    fn flush_marks_wake_their_own_writer() {
        let mut s = Scheduler::new(2, 1 << 20);
        s.set_idle(0);
        s.set_idle(1);
        assert!(s.push_flush(0));
        assert!(s.has_work_for(0) && !s.has_work_for(1));
        assert!(s.take_flush(0));
        assert!(!s.take_flush(0));
    }

    #[test]
    fn dead_tunnels_get_no_work() {
        let mut s = Scheduler::new(2, 1 << 20);
        s.set_idle(1);
        s.tunnel_dead(1);
        assert!(!s.push_tunnel_control(1, Control::Ping(1)));
        assert_eq!(s.push_data(1, frame(1, 1)), None);
        s.set_idle(1);
        assert!(!s.is_idle(1));
    }
}
