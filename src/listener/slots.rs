//! Handshake slots: how many connections are in their handshake, in total and per source
//! address, so that one address (a slowloris attacker, a broken client in a loop) cannot take
//! every slot and keep everyone else out.
//!
//! A connection takes a slot when it is accepted and gives it back when its handshake is
//! over: refused, timed out, re-joined, or its bundle complete. Pure bookkeeping; the listener
//! holds it under a mutex.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

/// Why a connection got no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Full {
    /// `max_pending_handshakes` connections are in their handshake.
    Total(usize),
    /// This many are in their handshake from the connection's source (its address, or its
    /// IPv6 /64).
    Source(usize),
}

/// Connections in their handshake, in total and by source.
#[derive(Debug)]
pub(crate) struct Slots {
    total: usize,
    /// Entries are removed at zero, so there are at most `total` of them.
    by_source: HashMap<IpAddr, usize>,
    max_total: usize,
    max_per_source: usize,
}

/// The source a connection from `ip` counts against: the IPv4 address (also when it arrives
/// as an IPv4-mapped IPv6 address), or the IPv6 /64 prefix (one host or site usually holds a
/// whole /64, so counting single IPv6 addresses would limit nothing).
pub(crate) fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

impl Slots {
    /// At most `max_total` connections in their handshake, `max_per_source` of them from one
    /// source.
    pub(crate) fn new(max_total: usize, max_per_source: usize) -> Slots {
        Slots { total: 0, by_source: HashMap::new(), max_total, max_per_source }
    }

    /// Take a slot for a connection from `peer`, or say which limit is reached.
    pub(crate) fn take(&mut self, peer: IpAddr) -> Result<(), Full> {
        if self.total >= self.max_total {
            return Err(Full::Total(self.total));
        }
        let n = self.by_source.entry(source_of(peer)).or_insert(0);
        if *n >= self.max_per_source {
            return Err(Full::Source(*n));
        }
        *n += 1;
        self.total += 1;
        Ok(())
    }

    /// Give back the slot a connection from `peer` took.
    pub(crate) fn give_back(&mut self, peer: IpAddr) {
        let key = source_of(peer);
        if let Some(n) = self.by_source.get_mut(&key) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.by_source.remove(&key);
            }
        }
    }
}

#[cfg(test)]
impl Slots {
    /// Connections in their handshake.
    pub(crate) fn total(&self) -> usize {
        self.total
    }

    /// Connections in their handshake from `peer`'s source.
    pub(crate) fn held_by(&self, peer: IpAddr) -> usize {
        self.by_source.get(&source_of(peer)).copied().unwrap_or(0)
    }

    /// Sources with a connection in its handshake.
    pub(crate) fn sources(&self) -> usize {
        self.by_source.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_source_gets_its_share_and_others_the_rest() {
        let mut s = Slots::new(5, 2);
        let (a, b, c) = (ip("192.0.2.1"), ip("192.0.2.2"), ip("192.0.2.3"));
        assert_eq!(s.take(a), Ok(()));
        assert_eq!(s.take(a), Ok(()));
        assert_eq!(s.take(a), Err(Full::Source(2)));
        assert_eq!(s.take(b), Ok(()));
        assert_eq!(s.take(b), Ok(()));
        assert_eq!(s.take(c), Ok(()));
        // The total is reached before c's own share.
        assert_eq!(s.take(c), Err(Full::Total(5)));
        assert_eq!((s.total(), s.sources()), (5, 3));
        s.give_back(a);
        assert_eq!(s.held_by(a), 1);
        assert_eq!(s.take(c), Ok(()));
        assert_eq!(s.held_by(c), 2);
    }

    #[test]
    fn sources_at_zero_are_forgotten() {
        let mut s = Slots::new(100, 100);
        for i in 0..50u8 {
            let a = IpAddr::from([10, 0, 0, i]);
            s.take(a).unwrap();
            s.take(a).unwrap();
        }
        assert_eq!((s.total(), s.sources()), (100, 50));
        for i in 0..50u8 {
            let a = IpAddr::from([10, 0, 0, i]);
            s.give_back(a);
            s.give_back(a);
        }
        assert_eq!((s.total(), s.sources()), (0, 0));
        // A stray give-back changes nothing.
        s.give_back(ip("10.0.0.1"));
        assert_eq!(s.total(), 0);
    }

    #[test]
    fn the_map_never_holds_more_sources_than_slots() {
        let mut s = Slots::new(8, 1);
        for i in 0..1000u32 {
            let _ = s.take(IpAddr::from(i.to_be_bytes()));
            assert!(s.sources() <= s.total() && s.total() <= 8);
        }
        // Refused sources left no entry behind.
        assert_eq!(s.sources(), 8);
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4_and_ipv6_counts_by_slash_64() {
        assert_eq!(source_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        let mut s = Slots::new(10, 2);
        s.take(ip("192.0.2.7")).unwrap();
        s.take(ip("::ffff:192.0.2.7")).unwrap();
        assert_eq!(s.take(ip("192.0.2.7")), Err(Full::Source(2)));
        s.take(ip("2001:db8:1:2::1")).unwrap();
        s.take(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert_eq!(s.take(ip("2001:db8:1:2:1234::1")), Err(Full::Source(2)));
        // Another /64 is another source.
        assert_eq!(s.take(ip("2001:db8:1:3::1")), Ok(()));
        s.give_back(ip("2001:db8:1:2::1"));
        assert_eq!(s.held_by(ip("2001:db8:1:2::77")), 1);
    }
}
