//! The server's bounds on the streams it carries: how many are being connected to the target,
//! and how many are carried at all, per session and in total. A stream beyond a bound is reset
//! at once (code TooManyStreams) instead of getting a thread and a connection to the target.
//!
//! A carried stream costs two threads (one while it is being connected) and one descriptor
//! (its connection to the target), so `--max-streams-total` bounds the server's stream
//! threads at twice that many and its target connections at that many.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// The bounds (all at least 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Streams of one session being connected to the target at once (`--max-connecting`).
    pub connecting: usize,
    /// Streams of all sessions being connected at once (`--max-connecting-total`).
    pub connecting_total: usize,
    /// Streams of one session carried at once, being connected included (`--max-streams`).
    pub streams: usize,
    /// Streams of all sessions carried at once (`--max-streams-total`).
    pub streams_total: usize,
}

/// Streams being connected, and carried (connecting ones included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub connecting: usize,
    pub streams: usize,
}

/// Which bound turned a stream away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Connecting(usize),
    ConnectingTotal(usize),
    Streams(usize),
    StreamsTotal(usize),
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Connecting(n) => {
                write!(
                    f,
                    "already {n} streams of this session being connected to the target (--max-connecting)"
                )
            }
            Limit::ConnectingTotal(n) => {
                write!(f, "already {n} streams being connected to the target (--max-connecting-total)")
            }
            Limit::Streams(n) => write!(f, "already {n} streams in this session (--max-streams)"),
            Limit::StreamsTotal(n) => write!(f, "already {n} streams in all sessions (--max-streams-total)"),
        }
    }
}

/// The counts, in total and per session (sessions at zero are forgotten).
#[derive(Debug, Default)]
struct Tally {
    total: Counts,
    sessions: HashMap<u64, Counts>,
}

impl Tally {
    /// Count a new stream of `session` as being connected, or say which bound it exceeds.
    fn admit(&mut self, b: &Bounds, session: u64) -> Result<(), Limit> {
        let own = self.sessions.get(&session).copied().unwrap_or_default();
        if own.streams >= b.streams {
            return Err(Limit::Streams(own.streams));
        }
        if self.total.streams >= b.streams_total {
            return Err(Limit::StreamsTotal(self.total.streams));
        }
        if own.connecting >= b.connecting {
            return Err(Limit::Connecting(own.connecting));
        }
        if self.total.connecting >= b.connecting_total {
            return Err(Limit::ConnectingTotal(self.total.connecting));
        }
        let own = self.sessions.entry(session).or_default();
        own.connecting += 1;
        own.streams += 1;
        self.total.connecting += 1;
        self.total.streams += 1;
        Ok(())
    }

    /// A stream of `session` is no longer being connected (connected, or given up).
    fn connected(&mut self, session: u64) {
        if let Some(own) = self.sessions.get_mut(&session) {
            own.connecting -= 1;
            self.total.connecting -= 1;
        }
    }

    /// A stream of `session` is over; `connecting`: it never got past connecting.
    fn finished(&mut self, session: u64, connecting: bool) {
        if connecting {
            self.connected(session);
        }
        if let Some(own) = self.sessions.get_mut(&session) {
            own.streams -= 1;
            self.total.streams -= 1;
            if own.streams == 0 {
                self.sessions.remove(&session);
            }
        }
    }
}

/// The server's stream budget, shared by all sessions.
#[derive(Debug)]
pub struct Budget {
    bounds: Bounds,
    tally: Mutex<Tally>,
}

/// One admitted stream's share of the budget, given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    budget: Arc<Budget>,
    session: u64,
    connecting: bool,
}

impl Budget {
    pub fn new(bounds: Bounds) -> Arc<Budget> {
        Arc::new(Budget { bounds, tally: Mutex::new(Tally::default()) })
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit a new stream of `session` (counted as being connected until
    /// [`Ticket::connected`]), or say which bound it exceeds.
    pub fn admit(self: &Arc<Self>, session: u64) -> Result<Ticket, Limit> {
        self.tally().admit(&self.bounds, session)?;
        Ok(Ticket { budget: self.clone(), session, connecting: true })
    }

    /// Streams being connected and carried, all sessions together.
    pub fn totals(&self) -> Counts {
        self.tally().total
    }

    /// The same for one session.
    #[cfg(test)]
    pub fn of_session(&self, session: u64) -> Counts {
        self.tally().sessions.get(&session).copied().unwrap_or_default()
    }
}

impl Ticket {
    /// The stream is no longer being connected (it is connected, or the connect failed).
    pub fn connected(&mut self) {
        if std::mem::replace(&mut self.connecting, false) {
            self.budget.tally().connected(self.session);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.budget.tally().finished(self.session, self.connecting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds { connecting: 2, connecting_total: 3, streams: 4, streams_total: 6 };

    #[test]
    fn connecting_is_bounded_per_session_and_in_total() {
        let budget = Budget::new(B);
        let a1 = budget.admit(1).unwrap();
        let _a2 = budget.admit(1).unwrap();
        assert_eq!(budget.admit(1).unwrap_err(), Limit::Connecting(2));
        let _b1 = budget.admit(2).unwrap();
        assert_eq!(budget.admit(2).unwrap_err(), Limit::ConnectingTotal(3));
        drop(a1);
        assert_eq!(budget.totals(), Counts { connecting: 2, streams: 2 });
        let _b2 = budget.admit(2).unwrap();
        assert_eq!(budget.of_session(2), Counts { connecting: 2, streams: 2 });
    }

    #[test]
    fn connected_streams_free_their_connecting_slot_but_not_their_stream_slot() {
        let budget = Budget::new(B);
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut t = budget.admit(1).unwrap();
            t.connected();
            t.connected(); // twice changes nothing
            held.push(t);
        }
        assert_eq!(budget.admit(1).unwrap_err(), Limit::Streams(4));
        for _ in 0..2 {
            let mut t = budget.admit(2).unwrap();
            t.connected();
            held.push(t);
        }
        assert_eq!(budget.admit(3).unwrap_err(), Limit::StreamsTotal(6));
        assert_eq!(budget.totals(), Counts { connecting: 0, streams: 6 });
        held.clear();
        assert_eq!(budget.totals(), Counts::default());
        // Sessions at zero are forgotten.
        assert!(budget.tally().sessions.is_empty());
    }

    #[test]
    fn limits_name_their_flag() {
        for (l, flag) in [
            (Limit::Connecting(64), "--max-connecting)"),
            (Limit::ConnectingTotal(256), "--max-connecting-total"),
            (Limit::Streams(1024), "--max-streams)"),
            (Limit::StreamsTotal(2048), "--max-streams-total"),
        ] {
            assert!(l.to_string().contains(flag), "{l}");
        }
    }
}
