//! What the listener turned away, and why: a bounded queue an operator's program reads to log
//! refusals with the peer's address ([`Listener::next_refusal`](super::Listener::next_refusal)).

use crossbeam_channel::{Receiver, Sender};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Refusals kept until read; beyond this the oldest are dropped (and counted).
pub const REFUSAL_QUEUE: usize = 256;

/// A connection the listener refused during its handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Why, in words (e.g. "authentication failed: the client proved a different pre-shared
    /// key").
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused {}: {}", self.peer, self.reason)
    }
}

/// The queue: writers never block, the oldest entry gives way to the newest.
pub(crate) struct Refusals {
    tx: Sender<Refusal>,
    rx: Receiver<Refusal>,
    /// Refusals ever noted, and those dropped unread.
    noted: AtomicU64,
    dropped: AtomicU64,
}

impl Default for Refusals {
    fn default() -> Self {
        let (tx, rx) = crossbeam_channel::bounded(REFUSAL_QUEUE);
        Refusals { tx, rx, noted: AtomicU64::new(0), dropped: AtomicU64::new(0) }
    }
}

impl Refusals {
    pub(crate) fn note(&self, peer: Option<SocketAddr>, reason: impl Into<String>) {
        let Some(peer) = peer else { return };
        self.noted.fetch_add(1, Relaxed);
        let mut r = Refusal { peer, reason: reason.into() };
        while let Err(e) = self.tx.try_send(r) {
            r = e.into_inner();
            if self.rx.try_recv().is_ok() {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }

    pub(crate) fn next(&self, timeout: Option<Duration>) -> Option<Refusal> {
        match timeout {
            None => self.rx.recv().ok(),
            Some(t) => self.rx.recv_timeout(t).ok(),
        }
    }

    /// (refusals noted, refusals dropped unread).
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.noted.load(Relaxed), self.dropped.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_give_way_and_are_counted() {
        let q = Refusals::default();
        let peer: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for i in 0..REFUSAL_QUEUE + 3 {
            q.note(Some(peer), format!("r{i}"));
        }
        q.note(None, "no address: not queued");
        assert_eq!(q.counts(), (REFUSAL_QUEUE as u64 + 3, 3));
        assert_eq!(q.next(Some(Duration::ZERO)).unwrap().reason, "r3");
    }
}
