//! The send scheduler: what a tunnel writer sends next, and which writer to wake.
//!
//! Frames that could not be written straight to a tunnel by the application thread wait here.
//! Order of service for a writer: its own tunnel's control frames (keepalive), then
//! session-level control frames (window updates, acknowledgements, resets, ...), then DATA
//! frames being re-sent because the tunnel that carried them died or went stale (never to
//! that same tunnel generation), then new DATA frames taken round-robin, one frame per stream
//! per turn, so a small request is never stuck behind
//! another stream's megabytes. Writers ask for work only when their socket has room, so the
//! tunnel that can send soonest takes the next frame (the pull form of MPTCP's
//! lowest-time-to-flush choice). A tunnel whose frames would arrive much later than on the
//! others is *held* ([`Paths::holds`]): it takes no session-level work while the faster
//! tunnels will send the backlog sooner. Pure data structure; the session wraps it in a mutex.

use super::path::{Paths, Sample};
use crate::proto::frame::Control;
use std::collections::{HashMap, VecDeque};

/// Work handed to one tunnel writer: the frames that do not count in ACKs (keepalive, ACK)
/// encoded together first, then those that do, each in its own buffer so that it can be kept
/// for replay once written.
#[derive(Default, Debug)]
pub struct Batch {
    /// Encoded frames that do not count in ACKs.
    pub control: Vec<u8>,
    /// Number of frames in `control`.
    pub control_frames: usize,
    /// Encoded frames that count in ACKs (control frames, DATA frames), in write order.
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
        if c.counts_in_acks() {
            self.data.push(c.encode());
        } else {
            c.encode_into(&mut self.control);
            self.control_frames += 1;
        }
    }

    /// Number of frames in the batch.
    pub fn frames(&self) -> usize {
        self.control_frames + self.data.len()
    }
}

/// A frame to re-send, and the tunnel generation that failed to deliver it.
#[derive(Debug)]
struct Resend {
    frame: Vec<u8>,
    slot: usize,
    generation: u32,
    /// Its position among the frames written to that generation (`u64::MAX`: unknown).
    index: u64,
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
    /// DATA frames to re-send, oldest first (not bounded by `limit`: they already hold credit).
    resend: VecDeque<Resend>,
    /// Tunnels that can no longer send.
    dead: Vec<bool>,
    /// Tunnels that stopped delivering: they send only their own control frames.
    stale: Vec<bool>,
    /// Current generation of each tunnel slot.
    generation: Vec<u32>,
    /// Tunnels whose socket holds a partly written frame that their writer must finish.
    flush: Vec<bool>,
    /// Delay estimates of the tunnels.
    paths: Paths,
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
            resend: VecDeque::new(),
            dead: vec![false; tunnels],
            stale: vec![false; tunnels],
            generation: vec![0; tunnels],
            flush: vec![false; tunnels],
            paths: Paths::new(tunnels),
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
        self.ring.is_empty()
            && self.resend.is_empty()
            && self.control.is_empty()
            && self.tunnel_control.iter().all(VecDeque::is_empty)
    }

    /// Queue frames that generation `generation` of tunnel `slot` failed to deliver, to be
    /// re-sent on any other tunnel generation; `first` is the position of the first among the
    /// frames written to that generation, if known. Returns the writers to wake.
    pub fn push_resend(
        &mut self,
        frames: Vec<Vec<u8>>,
        slot: usize,
        generation: u32,
        first: Option<u64>,
    ) -> Vec<usize> {
        if frames.is_empty() {
            return Vec::new();
        }
        self.resend.extend(frames.into_iter().enumerate().map(|(i, frame)| Resend {
            frame,
            slot,
            generation,
            index: first.map_or(u64::MAX, |f| f + i as u64),
        }));
        let wake: Vec<usize> = self.idle.iter().copied().filter(|&t| self.may_resend(t)).collect();
        self.idle.retain(|t| !wake.contains(t));
        wake
    }

    /// The peer acknowledged `count` frames of generation `generation` of tunnel `slot`: the
    /// frames among them still waiting to be re-sent arrived after all. Returns them (never
    /// re-sent after they were acknowledged).
    pub fn drop_acknowledged(&mut self, slot: usize, generation: u32, count: u64) -> Vec<Vec<u8>> {
        let mut gone = Vec::new();
        self.resend.retain_mut(|r| {
            let acked = r.slot == slot && r.generation == generation && r.index < count;
            if acked {
                gone.push(std::mem::take(&mut r.frame));
            }
            !acked
        });
        gone
    }

    /// Frames waiting to be re-sent, and their bytes.
    pub fn resend_queued(&self) -> (usize, usize) {
        (self.resend.len(), self.resend.iter().map(|r| r.frame.len()).sum())
    }

    /// Whether writer `t` may take some frame of the re-send queue.
    fn may_resend(&self, t: usize) -> bool {
        self.usable(t) && self.resend.iter().any(|r| r.slot != t || r.generation != self.generation[t])
    }

    /// Whether tunnel `t` takes session-level work.
    fn usable(&self, t: usize) -> bool {
        !self.dead[t] && !self.stale[t] && !self.held(t)
    }

    /// Whether tunnel `t` is alive and delivering (whatever its delay).
    fn live(&self, t: usize) -> bool {
        !self.dead[t] && !self.stale[t]
    }

    /// Whether live tunnel `t` should leave the queued work to faster tunnels (see
    /// [`Paths::holds`]).
    pub fn held(&self, t: usize) -> bool {
        if !self.live(t) {
            return false;
        }
        let backlog = self.queued_bytes + self.resend.iter().map(|r| r.frame.len()).sum::<usize>();
        let frame =
            self.ring.front().and_then(|id| self.queues.get(id)).and_then(|q| q.front()).map_or(0, Vec::len);
        self.paths.holds(t, backlog, frame, |u| self.live(u))
    }

    /// Whether live tunnel `t` is so slow that nothing, not even a small frame written
    /// directly, should go to it now (held with nothing queued).
    pub fn slow(&self, t: usize) -> bool {
        self.live(t) && self.paths.holds(t, 0, 0, |u| self.live(u))
    }

    /// A keepalive round trip of tunnel `t` measured at `now`.
    pub fn record_ping(&mut self, t: usize, now: std::time::Instant, rtt: std::time::Duration) {
        self.paths.record_ping(t, now, rtt);
    }

    /// Tunnel `t`'s socket reported `sample`.
    pub fn record_sample(&mut self, t: usize, sample: Sample) {
        self.paths.record_sample(t, sample);
    }

    /// Whether writer `t` is held back from work that is waiting (it should look again
    /// soon: a deeper backlog or a change of delays may make it pay).
    pub fn held_back(&self, t: usize) -> bool {
        self.live(t)
            && (!self.ring.is_empty() || !self.control.is_empty() || !self.resend.is_empty())
            && self.held(t)
    }

    /// Take an idle writer to wake for session-level work, preferring one that is not held.
    fn pop_idle(&mut self) -> Option<usize> {
        let i = self.idle.iter().rposition(|&t| !self.held(t)).or(self.idle.len().checked_sub(1))?;
        Some(self.idle.remove(i))
    }

    /// Generation `generation` of tunnel `t` stopped delivering (`true`) or moves again
    /// (`false`); a mark for a generation the slot no longer carries is ignored.
    pub fn set_stale(&mut self, t: usize, generation: u32, stale: bool) {
        if self.generation[t] == generation {
            self.stale[t] = stale;
        }
    }

    /// Tunnel `t` carries generation `generation` now (a re-join).
    pub fn revive(&mut self, t: usize, generation: u32) {
        self.dead[t] = false;
        self.stale[t] = false;
        self.flush[t] = false;
        self.tunnel_control[t].clear();
        self.generation[t] = generation;
        self.paths.reset(t);
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
        self.pop_idle()
    }

    /// Queue a session-level control frame. Returns a writer to wake, if one is idle.
    pub fn push_control(&mut self, c: Control) -> Option<usize> {
        self.control.push_back(c);
        self.pop_idle()
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
            || (self.usable(t) && (!self.control.is_empty() || !self.ring.is_empty()))
            || self.may_resend(t)
    }

    /// Generation `generation` of tunnel `t` died: its own control frames are dropped and it
    /// gets no more work (ignored if the slot already carries a newer generation).
    pub fn tunnel_dead(&mut self, t: usize, generation: u32) {
        if self.generation[t] != generation {
            return;
        }
        self.dead[t] = true;
        self.flush[t] = false;
        self.tunnel_control[t].clear();
        self.clear_idle(t);
    }

    /// The stream `id` finishes sending: if its last frame, `last_seq`, still waits here,
    /// mark it FIN (no frame of its own for the close). Returns whether it did.
    pub fn fin_on_queued(&mut self, id: u32, last_seq: u32) -> bool {
        let last = self.queues.get_mut(&id).and_then(|q| q.back_mut());
        last.is_some_and(|f| crate::proto::frame::Header::set_fin_if_seq(f, last_seq))
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

    /// Fill `batch` with work for writer `t`: all its tunnel control frames; unless the
    /// tunnel is stale, all session control frames, then frames to re-send (not those its
    /// own generation failed to deliver), then DATA frames round-robin, until `budget` bytes
    /// are reached (at least one frame if any is queued). Returns the number of DATA frames
    /// taken.
    pub fn next_batch(&mut self, t: usize, budget: usize, batch: &mut Batch) -> usize {
        for c in self.tunnel_control[t].drain(..) {
            batch.push_control(c);
        }
        if !self.usable(t) {
            return 0;
        }
        for c in self.control.drain(..) {
            batch.push_control(c);
        }
        let mut taken = 0;
        let mut bytes = batch.control.len() + batch.data.iter().map(Vec::len).sum::<usize>();
        let generation = self.generation[t];
        let mut i = 0;
        while i < self.resend.len() && (bytes < budget || taken == 0) {
            if self.resend[i].slot == t && self.resend[i].generation == generation {
                i += 1;
                continue;
            }
            let r = self.resend.remove(i).expect("index checked");
            bytes += r.frame.len();
            batch.data.push(r.frame);
            taken += 1;
        }
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
        // Tunnel 1's pong is not tunnel 0's business; the WINDOW counts in ACKs, so it has
        // its own buffer (kept for replay), ahead of the DATA frame.
        assert!(b.control.is_empty());
        assert_eq!(b.data[0], Control::Window { stream: 1, limit: 5 }.encode());
        assert_eq!(b.data[1].len(), 100);
        assert_eq!(b.frames(), 2);
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
    fn resent_frames_go_first_but_never_to_the_generation_that_failed() {
        let mut s = Scheduler::new(2, 1 << 20);
        s.push_data(1, frame(1, 10));
        s.set_idle(0);
        s.set_idle(1);
        assert_eq!(s.push_resend(vec![frame(9, 10), frame(8, 10)], 0, 0, Some(5)), vec![1]);
        let mut b = Batch::default();
        // Tunnel 0 generation 0 failed to deliver them: it only gets the new frame.
        assert!(s.has_work_for(0));
        s.next_batch(0, 1000, &mut b);
        assert_eq!(b.data.iter().map(|f| f[0]).collect::<Vec<_>>(), vec![1]);
        assert!(!s.has_work_for(0));
        // A re-joined generation of slot 0 may carry them.
        s.revive(0, 1);
        assert!(s.has_work_for(0));
        b.clear();
        s.next_batch(1, 0, &mut b);
        assert_eq!(b.data.iter().map(|f| f[0]).collect::<Vec<_>>(), vec![9]);
        assert_eq!(s.resend_queued(), (1, 10));
    }

    #[test]
    fn frames_acknowledged_meanwhile_are_not_re_sent() {
        let mut s = Scheduler::new(2, 1 << 20);
        s.push_resend(vec![frame(1, 10), frame(2, 10), frame(3, 10)], 0, 4, Some(7));
        s.push_resend(vec![frame(4, 10)], 0, 4, None);
        // Generation 4 of tunnel 0 delivered its frames 0..9 after all: 7 and 8 are dropped.
        let gone = s.drop_acknowledged(0, 4, 9);
        assert_eq!(gone.iter().map(|f| f[0]).collect::<Vec<_>>(), vec![1, 2]);
        assert!(s.drop_acknowledged(1, 4, 100).is_empty(), "another tunnel's ACK");
        assert_eq!(s.resend_queued().0, 2);
    }

    #[test]
    fn stale_tunnels_send_only_their_own_control_frames() {
        let mut s = Scheduler::new(2, 1 << 20);
        s.set_stale(1, 0, true);
        s.push_data(1, frame(1, 10));
        s.push_control(Control::GoAway(0));
        s.push_tunnel_control(1, Control::Ping(5));
        let mut b = Batch::default();
        assert_eq!(s.next_batch(1, 1000, &mut b), 0);
        assert_eq!(b.control, Control::Ping(5).encode());
        assert!(!s.has_work_for(1));
        s.set_stale(1, 0, false);
        assert!(s.has_work_for(1));
    }

    #[test]
    fn marks_of_a_replaced_generation_are_ignored() {
        let mut s = Scheduler::new(1, 1 << 20);
        s.revive(0, 1);
        s.tunnel_dead(0, 0);
        s.set_stale(0, 0, true);
        s.push_data(1, frame(1, 1));
        assert!(s.has_work_for(0), "generation 1 is alive and well");
    }

    #[test]
    fn a_much_slower_tunnel_is_held_and_the_fast_writer_is_woken_instead() {
        use crate::core::path::Sample;
        use std::time::Duration;
        let sample = |rtt_ms: u64| Sample {
            srtt: Duration::from_millis(rtt_ms),
            min_rtt: Duration::from_millis(rtt_ms),
            notsent: 0,
            rate: 10_000_000,
            in_flight: false,
        };
        let mut s = Scheduler::new(2, 1 << 20);
        s.record_sample(0, sample(2));
        s.record_sample(1, sample(400));
        assert!(s.slow(1) && !s.slow(0));
        s.set_idle(0);
        s.set_idle(1);
        // Tunnel 1 went idle last but is held: tunnel 0's writer is woken.
        assert_eq!(s.push_data(1, frame(1, 1000)), Some(0));
        assert!(!s.has_work_for(1) && s.held_back(1));
        let mut b = Batch::default();
        assert_eq!(s.next_batch(1, 1 << 20, &mut b), 0);
        assert_eq!(s.next_batch(0, 1 << 20, &mut b), 1);
        // Once the fast tunnel stops delivering, the slow one takes the work.
        s.push_data(1, frame(1, 1000));
        s.set_stale(0, 0, true);
        assert!(!s.slow(1) && s.has_work_for(1));
        // A re-joined connection starts with nothing known of its path.
        s.set_stale(0, 0, false);
        assert!(s.slow(1));
        s.revive(1, 1);
        assert!(!s.slow(1));
    }

    #[test]
    fn dead_tunnels_get_no_work() {
        let mut s = Scheduler::new(2, 1 << 20);
        s.set_idle(1);
        s.tunnel_dead(1, 0);
        assert!(!s.push_tunnel_control(1, Control::Ping(1)));
        assert_eq!(s.push_data(1, frame(1, 1)), None);
        s.set_idle(1);
        assert!(!s.is_idle(1));
    }

    #[test]
    fn a_close_rides_on_the_last_queued_frame() {
        use crate::proto::frame::{Header, FLAG_FIN, HEADER_LEN};
        let data = |seq: u32| {
            let mut f = Header::data(5, seq, 0, 3).encode().to_vec();
            f.extend_from_slice(b"abc");
            f
        };
        let flags = |f: &[u8]| Header::decode(f[..HEADER_LEN].try_into().unwrap(), 1 << 20).unwrap().flags;
        let mut s = Scheduler::new(1, 1 << 20);
        // Nothing queued for the stream: the close needs a frame of its own.
        assert!(!s.fin_on_queued(5, 0));
        s.push_data(5, data(0));
        s.push_data(5, data(1));
        // Frame 2 went straight to a tunnel: frame 1 is not the last, no FIN on it.
        assert!(!s.fin_on_queued(5, 2));
        assert!(s.fin_on_queued(5, 1));
        let mut b = Batch::default();
        s.next_batch(0, 1 << 20, &mut b);
        assert_eq!(b.data.len(), 2);
        assert_eq!(flags(&b.data[0]) & FLAG_FIN, 0);
        assert_eq!(flags(&b.data[1]) & FLAG_FIN, FLAG_FIN);
        // Another stream's queue is not touched.
        s.push_data(6, data(1));
        assert!(!s.fin_on_queued(5, 1));
    }
}
