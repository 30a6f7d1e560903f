//! Keeping the applications' connection order end to end.
//!
//! Three steps keep it: the client opens the streams of its local connections in the order it
//! accepted them (one [`Turn`] per connection around `open_stream`, so stream ids follow that
//! order); the library accepts a session's streams in id order; and the server connects them
//! to the target in that order: a stream connects only when the previous turn's connect has
//! finished (succeeded or failed). `connect()` returning means the handshake completed, so the
//! target's kernel has queued the connection: the target accepts the connections in the order
//! the client's applications made them (iperf3, FTP and other protocols with a control and a
//! data connection tell them apart by that order).
//!
//! The wait is bounded: a turn still in progress after [`GRACE`] (a target that does not
//! answer, a client waiting for its session during an outage) no longer holds the next turns,
//! which then start without it (order is kept among the connections that succeed in time).
//! Connects to a responsive target take about one round trip each, so a burst of N streams of
//! one session reaches the target after N round trips (sessions do not wait for each other).

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a connect in progress holds the next turn.
pub const GRACE: Duration = Duration::from_secs(1);

/// Turns of one session's connects to the target.
#[derive(Debug)]
pub struct Turns {
    state: Mutex<State>,
    changed: Condvar,
    grace: Duration,
}

#[derive(Debug)]
struct State {
    /// Turn numbers handed out so far.
    issued: u64,
    /// The next turn allowed to start.
    next: u64,
    /// The latest started turn, when it started, and whether its connect has finished.
    latest: Option<u64>,
    started_at: Option<Instant>,
    done: bool,
    /// Turns dropped before they started (skipped when their number comes).
    abandoned: BTreeSet<u64>,
}

impl State {
    /// Turn `next` has started or was abandoned: move on, past abandoned turns.
    fn advance(&mut self) {
        self.next += 1;
        while self.abandoned.remove(&self.next) {
            self.next += 1;
        }
    }
}

/// One stream's place in the order; [`Turn::wait`] blocks until it may connect.
#[derive(Debug)]
pub struct Turn {
    turns: Arc<Turns>,
    number: u64,
    started: bool,
}

impl Turns {
    pub fn new(grace: Duration) -> Turns {
        Turns {
            state: Mutex::new(State {
                issued: 0,
                next: 0,
                latest: None,
                started_at: None,
                done: true,
                abandoned: BTreeSet::new(),
            }),
            changed: Condvar::new(),
            grace,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next turn (call in the order the streams were accepted).
    pub fn issue(&self) -> u64 {
        let mut s = self.lock();
        s.issued += 1;
        s.issued - 1
    }

    /// Take turn `number`: see [`Turn::wait`].
    pub fn turn(self: &Arc<Self>, number: u64) -> Turn {
        Turn { turns: self.clone(), number, started: false }
    }
}

impl Turn {
    /// Block until every earlier turn has started and the latest one has finished connecting
    /// (or has been connecting for the grace period); then this turn starts.
    pub fn wait(&mut self) {
        let t = &*self.turns;
        let mut s = t.lock();
        loop {
            if s.next == self.number {
                let free = match s.started_at {
                    None => true,
                    Some(at) => s.done || at.elapsed() >= t.grace,
                };
                if free {
                    break;
                }
                let left = (s.started_at.unwrap() + t.grace).saturating_duration_since(Instant::now());
                s = t.changed.wait_timeout(s, left).unwrap_or_else(|p| p.into_inner()).0;
            } else {
                s = t.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        }
        s.advance();
        s.latest = Some(self.number);
        s.started_at = Some(Instant::now());
        s.done = false;
        self.started = true;
        t.changed.notify_all();
    }

    /// This turn's connect finished (or, if it never started, it gives up its place): the next
    /// turn may start. Idempotent; dropping the turn does it.
    pub fn finished(&mut self) {
        let t = &*self.turns;
        let mut s = t.lock();
        if !self.started {
            self.started = true;
            if s.next == self.number {
                s.advance();
            } else {
                s.abandoned.insert(self.number);
            }
        } else if s.latest == Some(self.number) {
            s.done = true;
        } else {
            return;
        }
        t.changed.notify_all();
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    /// Threads started in reverse order still connect in turn order.
    #[test]
    fn turns_start_in_order() {
        let turns = Arc::new(Turns::new(Duration::from_secs(30)));
        let numbers: Vec<u64> = (0..8).map(|_| turns.issue()).collect();
        let log = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = numbers
            .into_iter()
            .rev()
            .map(|n| {
                let (turns, log) = (turns.clone(), log.clone());
                thread::spawn(move || {
                    let mut turn = turns.turn(n);
                    turn.wait();
                    log.lock().unwrap().push(n);
                    turn.finished();
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(*log.lock().unwrap(), (0..8).collect::<Vec<_>>());
    }

    /// A connect that takes longer than the grace period holds the next turn that long only.
    #[test]
    fn a_slow_connect_holds_the_next_turn_for_the_grace_period_only() {
        let turns = Arc::new(Turns::new(Duration::from_millis(200)));
        let (a, b) = (turns.issue(), turns.issue());
        let mut first = turns.turn(a);
        first.wait();
        let t0 = Instant::now();
        let mut second = turns.turn(b);
        second.wait();
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(190) && waited < Duration::from_secs(5), "{waited:?}");
        first.finished();
        second.finished();
    }

    /// A turn dropped without waiting (the stream went away) does not block the next one.
    #[test]
    fn an_abandoned_turn_is_skipped() {
        let turns = Arc::new(Turns::new(Duration::from_secs(30)));
        let (a, b, c) = (turns.issue(), turns.issue(), turns.issue());
        // Abandoned before its number comes, and when it has come.
        drop(turns.turn(b));
        drop(turns.turn(a));
        let mut third = turns.turn(c);
        third.wait();
        third.finished();
        assert_eq!(turns.lock().next, 3);
    }

    /// A turn whose connect finished frees the next at once.
    #[test]
    fn a_finished_connect_frees_the_next_turn_at_once() {
        let turns = Arc::new(Turns::new(Duration::from_secs(30)));
        let (a, b) = (turns.issue(), turns.issue());
        let mut first = turns.turn(a);
        first.wait();
        first.finished();
        let t0 = Instant::now();
        let mut second = turns.turn(b);
        second.wait();
        assert!(t0.elapsed() < Duration::from_secs(5));
        second.finished();
        assert_eq!(turns.lock().next, 2);
    }
}
