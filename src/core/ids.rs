//! Stream-id allocation and recognition of the peer's ids.
//!
//! The client opens odd ids (1, 3, 5, ...), the server even ids (2, 4, ...); 0 is the session.
//! Each side allocates its ids in increasing order, but their first frames may arrive out of
//! order because they travel over different tunnels. The receiver therefore remembers the
//! highest peer id seen plus the (few) lower peer ids not yet seen: a frame for an id above the
//! highest, or for one of the missing ids, opens a new stream; any other id belongs to a stream
//! that exists or has ended.

use std::collections::HashSet;

/// Which side of the session we are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Dialed the bundle; opens odd stream ids.
    Client,
    /// Accepted the bundle; opens even stream ids.
    Server,
}

/// How a peer-opened id relates to what we have seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerId {
    /// First frame of a new stream.
    New,
    /// A stream we already know about (it may have ended since).
    Seen,
}

/// A stream id the peer may not use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdError {
    /// An id of our parity that we never allocated.
    NotOpened(u32),
    /// The peer skipped more ids than the limit of not-yet-seen streams allows.
    TooManyMissing(u32),
}

impl std::fmt::Display for IdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdError::NotOpened(id) => {
                write!(f, "frame for stream {id}, which this side never opened")
            }
            IdError::TooManyMissing(id) => {
                write!(f, "stream {id} skips too many unopened stream ids")
            }
        }
    }
}

/// Stream-id state of one session.
#[derive(Debug)]
pub struct StreamIds {
    /// Next id we allocate (0 when exhausted).
    next_local: u32,
    /// Parity of the peer's ids (1 for odd).
    peer_parity: u32,
    /// Highest peer id seen, 0 before any.
    peer_highest: u32,
    /// Peer ids below `peer_highest` whose first frame has not arrived yet.
    missing: HashSet<u32>,
    /// Bound on `missing`.
    max_missing: usize,
}

impl StreamIds {
    /// Ids for `role`; at most `max_missing` peer ids may be outstanding.
    pub fn new(role: Role, max_missing: usize) -> Self {
        let (next_local, peer_parity) = match role {
            Role::Client => (1, 0),
            Role::Server => (2, 1),
        };
        StreamIds { next_local, peer_parity, peer_highest: 0, missing: HashSet::new(), max_missing }
    }

    /// Allocate the next local id, or `None` when the id space is exhausted.
    pub fn allocate(&mut self) -> Option<u32> {
        let id = self.next_local;
        if id == 0 {
            return None;
        }
        self.next_local = id.checked_add(2).unwrap_or(0);
        Some(id)
    }

    /// Whether `id` is of the peer's parity.
    pub fn is_peer(&self, id: u32) -> bool {
        id % 2 == self.peer_parity
    }

    /// Check an id of our own parity: it must have been allocated.
    pub fn check_local(&self, id: u32) -> Result<(), IdError> {
        if self.next_local == 0 || id < self.next_local {
            Ok(())
        } else {
            Err(IdError::NotOpened(id))
        }
    }

    /// Classify a peer id seen in a frame, recording it as seen.
    pub fn observe_peer(&mut self, id: u32) -> Result<PeerId, IdError> {
        debug_assert!(self.is_peer(id) && id != 0);
        if id > self.peer_highest {
            let first_skipped =
                if self.peer_highest == 0 { 2 - self.peer_parity } else { self.peer_highest + 2 };
            let skipped = ((id - first_skipped) / 2) as usize;
            if self.missing.len() + skipped > self.max_missing {
                return Err(IdError::TooManyMissing(id));
            }
            let mut s = first_skipped;
            while s < id {
                self.missing.insert(s);
                s += 2;
            }
            self.peer_highest = id;
            Ok(PeerId::New)
        } else if self.missing.remove(&id) {
            Ok(PeerId::New)
        } else {
            Ok(PeerId::Seen)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_allocates_odd_server_even() {
        let mut c = StreamIds::new(Role::Client, 8);
        let mut s = StreamIds::new(Role::Server, 8);
        assert_eq!((c.allocate(), c.allocate()), (Some(1), Some(3)));
        assert_eq!((s.allocate(), s.allocate()), (Some(2), Some(4)));
        assert!(c.is_peer(2) && !c.is_peer(3));
        assert!(s.is_peer(1) && !s.is_peer(2));
    }

    #[test]
    fn out_of_order_opens_are_all_new_once() {
        let mut s = StreamIds::new(Role::Server, 8);
        assert_eq!(s.observe_peer(5), Ok(PeerId::New));
        assert_eq!(s.observe_peer(5), Ok(PeerId::Seen));
        assert_eq!(s.observe_peer(1), Ok(PeerId::New));
        assert_eq!(s.observe_peer(3), Ok(PeerId::New));
        assert_eq!(s.observe_peer(3), Ok(PeerId::Seen));
        assert_eq!(s.observe_peer(1), Ok(PeerId::Seen));
    }

    #[test]
    fn bounded_number_of_skipped_ids() {
        let mut s = StreamIds::new(Role::Client, 3);
        assert_eq!(s.observe_peer(8), Ok(PeerId::New)); // skips 2, 4, 6
        assert_eq!(s.observe_peer(12), Err(IdError::TooManyMissing(12)));
        assert_eq!(s.observe_peer(10), Ok(PeerId::New));
    }

    #[test]
    fn local_ids_must_have_been_allocated() {
        let mut c = StreamIds::new(Role::Client, 8);
        c.allocate();
        assert_eq!(c.check_local(1), Ok(()));
        assert_eq!(c.check_local(3), Err(IdError::NotOpened(3)));
    }

    #[test]
    fn id_space_exhaustion_is_reported() {
        let mut c = StreamIds::new(Role::Client, 8);
        c.next_local = u32::MAX;
        assert_eq!(c.allocate(), Some(u32::MAX));
        assert_eq!(c.allocate(), None);
    }
}
