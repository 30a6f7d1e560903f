//! The listener's session limit ([`Listener::set_max_sessions`](super::Listener::set_max_sessions)):
//! a complete bundle beyond it is refused during its handshake with status `SessionLimit`, so
//! the client learns why (it does not get a session that closes at once).
//!
//! Counted: the sessions this listener started that are still open (not closing, the peer not
//! going away; a session in an outage, waiting for its client to resume, counts), including
//! those not yet accepted, plus the bundles being answered right now.

use crate::session::Inner;
use crate::session::Session;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Weak;

#[derive(Default)]
pub(super) struct SessionLimit {
    /// The limit; 0: none.
    max: AtomicUsize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Sessions started here (those that ended are dropped when counting).
    started: Vec<Weak<Inner>>,
    /// Bundles admitted whose session is being started.
    starting: usize,
}

/// A place taken for one bundle; give it back with [`SessionLimit::started`] (or drop it if
/// the session did not start).
pub(super) struct Place<'a> {
    limit: &'a SessionLimit,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.limit.state.lock().starting -= 1;
    }
}

impl SessionLimit {
    pub(super) fn set(&self, max: Option<usize>) {
        self.max.store(max.unwrap_or(0), Relaxed);
    }

    pub(super) fn get(&self) -> Option<usize> {
        Some(self.max.load(Relaxed)).filter(|&m| m > 0)
    }

    /// A place for one more session, or `Err(limit)` when the limit is reached.
    pub(super) fn take(&self) -> Result<Place<'_>, usize> {
        let max = self.max.load(Relaxed);
        let mut st = self.state.lock();
        st.started.retain(|w| w.upgrade().is_some_and(|i| i.takes_rejoins()));
        if max > 0 && st.started.len() + st.starting >= max {
            return Err(max);
        }
        st.starting += 1;
        Ok(Place { limit: self })
    }

    /// The session of `place` started.
    pub(super) fn started(&self, place: Place<'_>, s: &Session) {
        self.state.lock().started.push(s.downgrade());
        drop(place);
    }

    /// Open sessions started here.
    #[cfg(test)]
    fn open(&self) -> usize {
        let mut st = self.state.lock();
        st.started.retain(|w| w.upgrade().is_some_and(|i| i.takes_rejoins()));
        st.started.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_count_until_given_back_and_no_limit_takes_all() {
        let l = SessionLimit::default();
        let a: Vec<_> = (0..5).map(|_| l.take().expect("no limit")).collect();
        l.set(Some(6));
        let b = l.take().expect("the sixth");
        assert_eq!(l.take().err(), Some(6));
        drop(b);
        let _c = l.take().expect("a place given back is free again");
        drop(a);
        assert_eq!(l.open(), 0);
        assert_eq!(l.get(), Some(6));
        l.set(None);
        assert_eq!(l.get(), None);
    }
}
