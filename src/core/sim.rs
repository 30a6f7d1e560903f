//! Two endpoints of the failover machinery driven against each other in memory, without
//! sockets or threads: a sender (scheduler, one replay buffer per tunnel) and a receiver
//! (acknowledgement trackers, duplicate filter, reorder buffer) joined by tunnels that are
//! in-order queues. One tunnel dies with frames inside it, another stalls and delivers late;
//! the stream must arrive whole, once, in order, and every frame must end acknowledged.

use super::ack::{AckTracker, ACK_DELAY};
use super::dedup::Received;
use super::reorder::ReorderBuffer;
use super::replay::{Pushed, ReplayQueue};
use super::sched::{Batch, Scheduler};
use crate::proto::frame::{Header, FLAG_FIN, FLAG_OPEN, HEADER_LEN};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

const TUNNELS: usize = 3;

/// xorshift: deterministic choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

struct Link {
    /// Frames in flight, in order (TCP).
    wire: VecDeque<Vec<u8>>,
    /// Stalled: nothing is delivered (a blackhole) until released.
    stalled: bool,
    dead: bool,
    generation: u32,
}

struct World {
    now: Instant,
    sched: Scheduler,
    replay: Vec<ReplayQueue>,
    links: Vec<Link>,
    acks: Vec<AckTracker>,
    received: Received,
    reorder: ReorderBuffer,
    out: Vec<u8>,
    duplicates: usize,
    resent: usize,
}

impl World {
    fn new() -> World {
        World {
            now: Instant::now(),
            sched: Scheduler::new(TUNNELS, usize::MAX),
            replay: (0..TUNNELS).map(|_| ReplayQueue::new()).collect(),
            links: (0..TUNNELS)
                .map(|_| Link { wire: VecDeque::new(), stalled: false, dead: false, generation: 0 })
                .collect(),
            acks: (0..TUNNELS).map(|_| AckTracker::new(0)).collect(),
            received: Received::new(),
            reorder: ReorderBuffer::new(),
            out: Vec::new(),
            duplicates: 0,
            resent: 0,
        }
    }

    /// Writer `t` takes a batch and writes it (announce, write, push).
    fn write(&mut self, t: usize) {
        let mut b = Batch::default();
        self.sched.next_batch(t, 4096, &mut b);
        self.replay[t].announce(b.data.len());
        for f in b.data {
            self.links[t].wire.push_back(f.clone());
            match self.replay[t].push(f, self.now) {
                Pushed::Kept | Pushed::Acknowledged(..) => {}
                Pushed::Refused(f) => {
                    self.sched.push_resend(vec![f], t, self.links[t].generation, None);
                }
            }
        }
    }

    /// Tunnel `t` delivers one frame to the receiver.
    fn deliver(&mut self, t: usize) {
        let Some(f) = self.links[t].wire.pop_front() else { return };
        let h = Header::decode(f[..HEADER_LEN].try_into().unwrap(), 1 << 20).unwrap();
        self.acks[t].on_frame(f.len(), self.now);
        if self.received.insert(h.seq) {
            self.reorder.insert(h.seq, h.flags, f[HEADER_LEN..].to_vec(), self.now).unwrap();
            let mut buf = vec![0u8; self.reorder.readable()];
            let (n, _) = self.reorder.read(&mut buf);
            self.out.extend_from_slice(&buf[..n]);
        } else {
            self.duplicates += 1;
        }
    }

    /// The receiver's ACKs (sent on any tunnel; modelled as arriving at once).
    fn acknowledge(&mut self, force: bool) {
        for t in 0..TUNNELS {
            if force || self.acks[t].due(self.now, ACK_DELAY, 8 << 10) {
                if let Some((g, n)) = self.acks[t].take() {
                    if g == self.links[t].generation {
                        self.replay[t].ack(n, self.now).unwrap();
                        self.sched.drop_acknowledged(t, g, n);
                    }
                }
            }
        }
    }

    fn kill(&mut self, t: usize) {
        self.links[t].dead = true;
        self.links[t].wire.clear();
        self.sched.tunnel_dead(t, 0);
        let h = self.replay[t].close();
        self.resent += h.frames.len();
        self.sched.push_resend(h.frames, t, self.links[t].generation, Some(h.first));
    }
}

fn frames_of(data: &[u8], size: usize) -> Vec<Vec<u8>> {
    let chunks: Vec<&[u8]> = data.chunks(size).collect();
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let flags = if i == 0 { FLAG_OPEN } else { 0 } | if i == last { FLAG_FIN } else { 0 };
            let mut f = Header::data(1, i as u32, flags, c.len() as u32).encode().to_vec();
            f.extend_from_slice(c);
            f
        })
        .collect()
}

/// Returns how many duplicates the receiver dropped.
fn run(seed: u64) -> usize {
    let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + seed as u32) as u8).collect();
    let mut w = World::new();
    for f in frames_of(&data, 100) {
        w.sched.push_data(1, f);
    }
    let mut rng = Rng(seed | 1);
    let stale_timeout = Duration::from_millis(250);
    for step in 0..20_000 {
        w.now += Duration::from_millis(1);
        let t = (rng.next() % TUNNELS as u64) as usize;
        match rng.next() % 3 {
            0 if !w.links[t].dead && !w.links[t].stalled => w.write(t),
            1 if !w.links[t].dead && !w.links[t].stalled => w.deliver(t),
            _ => w.acknowledge(false),
        }
        if step == 300 {
            // Tunnel 1 dies with frames written to it and not yet delivered.
            assert!(!w.links[1].wire.is_empty() || !w.replay[1].is_empty());
            w.kill(1);
        }
        if step == 500 {
            w.links[2].stalled = true;
        }
        if w.links[2].stalled && w.replay[2].stalled(w.now, stale_timeout) {
            // Stale: re-send what it holds, give it nothing new, deliver the originals late.
            w.sched.set_stale(2, 0, true);
            let h = w.replay[2].take_all();
            w.resent += h.frames.len();
            w.sched.push_resend(h.frames, 2, 0, Some(h.first));
            w.links[2].stalled = false;
        }
        if w.reorder.at_eof() {
            break;
        }
    }
    // Drain: copies still in flight (late originals of the stale tunnel, re-sent copies of
    // frames that arrived anyway), then the final ACKs.
    for t in 0..TUNNELS {
        while !w.links[t].wire.is_empty() {
            w.deliver(t);
        }
    }
    w.acknowledge(true);
    assert!(w.reorder.at_eof(), "seed {seed}: stream incomplete ({} of {} bytes)", w.out.len(), data.len());
    assert!(w.out == data, "seed {seed}: corrupted");
    assert!(w.resent > 0, "seed {seed}: nothing was re-sent");
    for (t, r) in w.replay.iter().enumerate() {
        if !w.links[t].dead {
            assert!(r.is_empty(), "seed {seed}: tunnel {t} still holds {} frames", r.len());
        }
    }
    assert_eq!(w.sched.resend_queued().0, 0);
    w.duplicates
}

#[test]
fn a_dying_and_a_stalling_tunnel_lose_nothing_and_duplicates_are_dropped() {
    let duplicates: usize = (1..40).map(run).sum();
    assert!(duplicates > 0, "the stale tunnel's late originals must have been dropped somewhere");
}
