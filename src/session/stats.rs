//! What a session reports about itself: per-tunnel statistics, session statistics, and the
//! events of tunnel failover (loss, staleness, re-join, resumption).

use super::Session;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Where a tunnel is in its life. A tunnel *slot* (its index) outlives the TCP connections
/// that fill it: each re-join starts a new generation.
///
/// ```text
///   Live ──no acknowledgement progress for stale_timeout──▶ Stale ──moves again──▶ Live
///     │                                                      │
///     └──RST / FIN / I/O error / keepalive timeout───────────┴──▶ Dead ──client re-dials──▶ Rejoining
///                                                                 ▲                          │
///                                                                 └──attempt failed──────────┤
///                                                          Live (generation + 1) ◀──accepted─┘
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TunnelState {
    /// Carrying traffic.
    Live,
    /// Open, but it stopped delivering: its frames were re-sent on the other tunnels and it
    /// gets no new ones until it moves again.
    Stale,
    /// Lost; waiting for a re-join (or for good, where re-joining is off or impossible).
    Dead,
    /// The client is re-dialing it.
    Rejoining,
}

impl std::fmt::Display for TunnelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TunnelState::Live => "live",
            TunnelState::Stale => "stale",
            TunnelState::Dead => "dead",
            TunnelState::Rejoining => "rejoining",
        })
    }
}

/// Statistics of one tunnel slot (counters add up over its generations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelStats {
    /// Position of the tunnel in the bundle.
    pub index: usize,
    /// Bytes written to the socket (headers included).
    pub bytes_sent: u64,
    /// Bytes read from the socket.
    pub bytes_received: u64,
    /// Frames written.
    pub frames_sent: u64,
    /// Frames read.
    pub frames_received: u64,
    /// Round trip of the last keepalive ping, if one was answered.
    pub rtt: Option<Duration>,
    /// Whether the tunnel still works (state live or stale).
    pub alive: bool,
    /// Where the tunnel is in its life.
    pub state: TunnelState,
    /// Which connection fills the slot: 0 for the first, higher for each re-join (every
    /// re-dial attempt takes a new number, so failed attempts leave gaps).
    pub generation: u32,
    /// DATA frames this side re-sent on other tunnels because this one died or went stale.
    pub frames_resent: u64,
    /// Bytes (headers included) of those frames.
    pub bytes_resent: u64,
    /// How many times the slot was re-joined.
    pub rejoins: u64,
}

/// Statistics of a session as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStats {
    /// Per-tunnel statistics, in tunnel order.
    pub tunnels: Vec<TunnelStats>,
    /// How many times the session came back after losing every tunnel.
    pub resumes: u64,
    /// How long the current outage (no tunnel live) has lasted, if there is one.
    pub outage: Option<Duration>,
    /// DATA frames this side has sent and the peer has not yet acknowledged.
    pub unacked_frames: u64,
    /// Flow-control charge of those frames (what the replay buffer holds).
    pub unacked_bytes: u64,
    /// Acknowledgement frames sent and their bytes (headers included).
    pub acks_sent: u64,
    /// Bytes of the acknowledgement frames sent.
    pub ack_bytes_sent: u64,
    /// Re-joins this side refused (wrong proof, replayed or out-of-date attempts).
    pub rejoins_refused: u64,
    /// Events dropped because nobody read them (see [`Session::next_event`](crate::Session::next_event)).
    pub events_dropped: u64,
}

/// Something that happened to a session's tunnels. Read them with
/// [`Session::next_event`](crate::Session::next_event); a session keeps the last
/// [`EVENT_QUEUE`] unread ones and counts the rest as dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A tunnel was lost; its unacknowledged frames were re-sent on the others.
    TunnelLost {
        /// The slot.
        index: usize,
        /// The generation that was lost.
        generation: u32,
        /// How it ended ("connection reset", "keepalive timeout", ...).
        reason: String,
        /// DATA frames re-sent because of it.
        frames_resent: u64,
        /// Tunnels still live.
        live: usize,
    },
    /// A tunnel stopped delivering for `stale_timeout`; its unacknowledged frames were
    /// re-sent on the others and it gets no new frames until it moves.
    TunnelStale {
        /// The slot.
        index: usize,
        /// Its generation.
        generation: u32,
        /// DATA frames re-sent because of it.
        frames_resent: u64,
        /// Tunnels still live.
        live: usize,
    },
    /// A stale tunnel moved again and carries traffic again.
    TunnelRecovered {
        /// The slot.
        index: usize,
        /// Its generation.
        generation: u32,
    },
    /// A lost tunnel was replaced by a new connection.
    TunnelRejoined {
        /// The slot.
        index: usize,
        /// The new generation.
        generation: u32,
        /// How long the slot was without a connection.
        after: Duration,
    },
    /// A re-dial of a lost tunnel failed; another follows after a backoff.
    RejoinFailed {
        /// The slot.
        index: usize,
        /// What went wrong.
        error: String,
    },
    /// Every tunnel is lost: the session waits up to `resume_for` for them to come back.
    OutageStarted {
        /// The resume timeout.
        resume_for: Duration,
    },
    /// A tunnel came back after every one was lost: the session goes on.
    Resumed {
        /// How long the outage lasted.
        after: Duration,
    },
}

/// Unread events a session keeps.
pub const EVENT_QUEUE: usize = 256;

impl Session {
    /// Per-tunnel statistics, in tunnel order.
    pub fn tunnel_stats(&self) -> Vec<TunnelStats> {
        self.h
            .inner
            .tunnels
            .iter()
            .map(|t| {
                let c = &t.counters;
                let rtt = c.rtt_ns.load(Relaxed);
                let state = t.state();
                TunnelStats {
                    index: t.index,
                    bytes_sent: c.bytes_sent.load(Relaxed),
                    bytes_received: c.bytes_received.load(Relaxed),
                    frames_sent: c.frames_sent.load(Relaxed),
                    frames_received: c.frames_received.load(Relaxed),
                    rtt: (rtt != 0).then(|| Duration::from_nanos(rtt)),
                    alive: matches!(state, TunnelState::Live | TunnelState::Stale),
                    state,
                    generation: t.generation(),
                    frames_resent: c.frames_resent.load(Relaxed),
                    bytes_resent: c.bytes_resent.load(Relaxed),
                    rejoins: c.rejoins.load(Relaxed),
                }
            })
            .collect()
    }

    /// Session statistics: the tunnels', resumptions, the current outage, the replay buffer.
    pub fn stats(&self) -> SessionStats {
        let inner = &self.h.inner;
        let mut unacked_frames =
            inner.tunnels.iter().map(|t| t.replay.lock().queue.len() as u64).sum::<u64>();
        unacked_frames += inner.sched.lock().resend_queued().0 as u64;
        let acks_sent = inner.acks_sent.load(Relaxed);
        SessionStats {
            tunnels: self.tunnel_stats(),
            resumes: inner.resumes.load(Relaxed),
            outage: inner.outage.lock().map(|t| t.elapsed()),
            unacked_frames,
            unacked_bytes: inner.credit.unacknowledged(),
            acks_sent,
            ack_bytes_sent: acks_sent * crate::proto::frame::CONTROL_MAX_LEN as u64,
            rejoins_refused: inner.rejoins_refused.load(Relaxed),
            events_dropped: inner.events_dropped.load(Relaxed),
        }
    }

    /// Wait at most `timeout` for the next failover [`Event`] (tunnel lost, stale, re-joined,
    /// outage, resumption); `None` when there is none by then, or at once when the session
    /// has closed and every event was read.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        let inner = &self.h.inner;
        let deadline = crossbeam_channel::after(timeout);
        crossbeam_channel::select_biased! {
            recv(inner.events_rx) -> e => e.ok(),
            recv(inner.closed_rx) -> _ => inner.events_rx.try_recv().ok(),
            recv(deadline) -> _ => None,
        }
    }

    /// Local address of tunnel 0's current (or last) connection: where this side of the
    /// session is, like `TcpStream::local_addr` (every tunnel's: [`local_addrs`](Session::local_addrs)).
    /// Known for the session's whole life, also once its sockets are closed.
    pub fn local_addr(&self) -> SocketAddr {
        self.h.inner.tunnels[0].conn().local
    }

    /// Peer address of tunnel 0's current (or last) connection: who the session is with, like
    /// `TcpStream::peer_addr` (every tunnel's: [`peer_addrs`](Session::peer_addrs)). On a
    /// client, the server's base port; on a server, the client's address and port of its
    /// first tunnel.
    pub fn peer_addr(&self) -> SocketAddr {
        self.h.inner.tunnels[0].conn().peer
    }

    /// Local addresses of the tunnels' current (or last) connections, in tunnel order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.h.inner.tunnels.iter().map(|t| t.conn().local).collect()
    }

    /// Peer addresses of the tunnels' current (or last) connections, in tunnel order.
    pub fn peer_addrs(&self) -> Vec<SocketAddr> {
        self.h.inner.tunnels.iter().map(|t| t.conn().peer).collect()
    }
}
