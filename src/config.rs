//! Session and listener configuration.

use crate::error::Error;
use crate::key::Key;
use crate::proto::frame::{data_charge, MAX_FRAME_LIMIT};
use crate::proto::handshake::Params;
use std::time::Duration;

/// Largest number of tunnels in a bundle (each tunnel costs two threads).
pub const MAX_TUNNELS: usize = 256;

/// Longest timeout or interval a configuration may hold (30 days): beyond that, deadlines
/// would overflow the clock.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Largest `accept_backlog` and `max_pending_handshakes` (queues are allocated up front).
pub const MAX_QUEUE: usize = 1 << 16;

/// Smallest `stale_timeout` (shorter would declare healthy tunnels stale between two
/// acknowledgements).
pub const MIN_STALE_TIMEOUT: Duration = Duration::from_millis(20);

/// Smallest `rejoin_backoff_max` (the first re-dial waits 100 ms at most).
pub const MIN_REJOIN_BACKOFF: Duration = Duration::from_millis(100);

/// `now + d`, or `None` (no deadline) when that is beyond what the clock can represent.
pub(crate) fn deadline_after(d: Duration) -> Option<std::time::Instant> {
    std::time::Instant::now().checked_add(d)
}

/// Configuration of a session (and of the listener that accepts sessions).
///
/// Start from `Config::default()` and change fields, then [`Config::validate`] (every
/// constructor of this crate validates too). Both ends of a session may use different
/// configurations except for [`single_port`](Config::single_port) and the tunnel count, which
/// must fit the server's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Number of TCP connections in the bundle (client), or the most a bundle may have
    /// (server). In port-range mode the server listens on `port .. port + tunnels - 1`.
    /// Default 8.
    pub tunnels: usize,
    /// All tunnels use one port instead of one port per tunnel. Default `false` (port range,
    /// as the Go original).
    pub single_port: bool,
    /// How often each tunnel sends a keepalive ping. Default 10 s.
    pub keepalive_interval: Duration,
    /// A tunnel that receives nothing for this long is dead. Default 30 s.
    pub keepalive_timeout: Duration,
    /// How long a stream waits for a missing frame before it fails with
    /// [`Error::ReorderTimeout`]. Default 10 s.
    pub reorder_timeout: Duration,
    /// Largest DATA payload per frame, in bytes. Default 64 KiB.
    pub max_frame_size: usize,
    /// Initial per-stream receive window in bytes (each frame also costs 64 bytes of it).
    /// Default 1 MiB.
    pub stream_window: usize,
    /// Largest per-stream receive window that auto-tuning may grow to. Default 16 MiB.
    pub max_stream_window: usize,
    /// Session-wide receive buffer limit: the most bytes all streams together may have
    /// buffered and in flight towards this side. Default 64 MiB.
    pub session_window: usize,
    /// Most streams open at once in a session (both directions together). Default 4096.
    pub max_streams: usize,
    /// Streams opened by the peer and not yet accepted (and, on a listener, sessions not yet
    /// accepted) beyond which new ones are refused. Default 256.
    pub accept_backlog: usize,
    /// Time allowed to connect and complete the handshake of a whole bundle. Default 10 s.
    pub handshake_timeout: Duration,
    /// Listener only: most tunnels in the middle of a handshake at once (from accept until
    /// the HELLO is read and the tunnel's bundle is complete, refused or expired, or its
    /// re-join is done); more are refused with a "busy" reply at once. Default 128.
    pub max_pending_handshakes: usize,
    /// Listener only: most of those `max_pending_handshakes` from one source address (an
    /// IPv4 address, or an IPv6 /64), so that one address trickling half-finished handshakes
    /// cannot take every slot; more from it are refused with a "busy" reply at once.
    /// `None` (the default) derives it: `max(2 × tunnels, max_pending_handshakes / 4)`
    /// (see [`Config::handshakes_per_source`]). Set it to at least `tunnels` (a client
    /// connects all its tunnels at once), and higher when many clients share one address
    /// (NAT) and may dial at the same moment.
    pub max_handshakes_per_source: Option<usize>,
    /// Re-dial a lost tunnel and re-join it to the running session (client; a server always
    /// accepts re-joins of its sessions). Default `true`. Sessions started over connections
    /// the caller made ([`Session::client`](crate::Session::client)) cannot re-dial.
    pub rejoin: bool,
    /// A tunnel holding unacknowledged frames that sees no acknowledgement progress for this
    /// long is *stale*: no new frames go to it and its unacknowledged frames are re-sent on the
    /// other tunnels; it gets traffic again once it moves. `None` (the default) derives it from
    /// the smoothed round trip: `max(4 × srtt, 250 ms)`.
    pub stale_timeout: Option<Duration>,
    /// How long both ends keep a session whose every tunnel is lost, waiting for the client
    /// to re-join (resume). Blocked calls wait meanwhile; when it passes they fail with
    /// [`CloseReason::Expired`](crate::CloseReason::Expired). Zero disables resumption (the
    /// session ends when its last tunnel does). Default 30 s.
    pub resume_timeout: Duration,
    /// Longest wait between two re-dial attempts of one tunnel (the first comes at once, then
    /// the wait doubles from 100 ms, with jitter). Default 5 s.
    pub rejoin_backoff_max: Duration,
    /// Pre-shared key. When set, every tunnel proves knowledge of it in both directions
    /// before it joins a session (a peer without it, or with another key, is refused with
    /// [`Error::Auth`]); both ends must set the same key. Default `None`: anyone who can
    /// reach the listener may open a session.
    pub key: Option<Key>,
    /// TLS 1.3 on every tunnel (cargo feature `tls`): a server's certificate on a listener, a
    /// client's trust (CA or pinned fingerprint) when dialing; see [`crate::tls`]. Both ends
    /// must agree on using it. Default `None`: plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            tunnels: 8,
            single_port: false,
            keepalive_interval: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(30),
            reorder_timeout: Duration::from_secs(10),
            max_frame_size: 64 * 1024,
            stream_window: 1 << 20,
            max_stream_window: 16 << 20,
            session_window: 64 << 20,
            max_streams: 4096,
            accept_backlog: 256,
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 128,
            max_handshakes_per_source: None,
            rejoin: true,
            stale_timeout: None,
            resume_timeout: Duration::from_secs(30),
            rejoin_backoff_max: Duration::from_secs(5),
            key: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl Config {
    /// Check that every value makes sense; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if self.tunnels == 0 || self.tunnels > MAX_TUNNELS {
            return bad(format!("tunnels must be 1..={MAX_TUNNELS}, got {}", self.tunnels));
        }
        if self.keepalive_interval.is_zero() {
            return bad("keepalive_interval must be greater than zero".into());
        }
        if self.keepalive_timeout <= self.keepalive_interval {
            return bad(format!(
                "keepalive_timeout ({:?}) must be longer than keepalive_interval ({:?})",
                self.keepalive_timeout, self.keepalive_interval
            ));
        }
        if self.reorder_timeout.is_zero() {
            return bad("reorder_timeout must be greater than zero".into());
        }
        if self.handshake_timeout.is_zero() {
            return bad("handshake_timeout must be greater than zero".into());
        }
        if self.stale_timeout.is_some_and(|d| d < MIN_STALE_TIMEOUT) {
            return bad(format!(
                "stale_timeout must be at least {MIN_STALE_TIMEOUT:?} (or None to derive it from the round trip)"
            ));
        }
        if self.rejoin_backoff_max < MIN_REJOIN_BACKOFF {
            return bad(format!("rejoin_backoff_max must be at least {MIN_REJOIN_BACKOFF:?}"));
        }
        for (name, d) in [
            ("keepalive_interval", self.keepalive_interval),
            ("keepalive_timeout", self.keepalive_timeout),
            ("reorder_timeout", self.reorder_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("resume_timeout", self.resume_timeout),
            ("rejoin_backoff_max", self.rejoin_backoff_max),
            ("stale_timeout", self.stale_timeout.unwrap_or_default()),
        ] {
            if d > MAX_DURATION {
                return bad(format!("{name} must be at most {MAX_DURATION:?} (30 days), got {d:?}"));
            }
        }
        if self.max_frame_size < 1024 || self.max_frame_size > MAX_FRAME_LIMIT as usize {
            return bad(format!(
                "max_frame_size must be 1024..={MAX_FRAME_LIMIT}, got {}",
                self.max_frame_size
            ));
        }
        let min_window = data_charge(self.max_frame_size) as usize;
        if self.stream_window < min_window {
            return bad(format!(
                "stream_window ({}) must hold at least one full frame ({min_window} with its 64-byte charge)",
                self.stream_window
            ));
        }
        if self.max_stream_window < self.stream_window {
            return bad("max_stream_window must be at least stream_window".into());
        }
        if self.session_window < self.max_stream_window || self.session_window > u32::MAX as usize {
            return bad(format!(
                "session_window must be between max_stream_window ({}) and {}, got {}",
                self.max_stream_window,
                u32::MAX,
                self.session_window
            ));
        }
        if self.max_streams == 0 {
            return bad("max_streams must be at least 1".into());
        }
        if self.accept_backlog == 0 || self.accept_backlog > MAX_QUEUE {
            return bad(format!("accept_backlog must be 1..={MAX_QUEUE}, got {}", self.accept_backlog));
        }
        if self.max_pending_handshakes == 0 || self.max_pending_handshakes > MAX_QUEUE {
            return bad(format!(
                "max_pending_handshakes must be 1..={MAX_QUEUE}, got {}",
                self.max_pending_handshakes
            ));
        }
        if self.max_handshakes_per_source.is_some_and(|n| n == 0 || n > MAX_QUEUE) {
            return bad(format!(
                "max_handshakes_per_source must be 1..={MAX_QUEUE} (or None to derive it), got {}",
                self.max_handshakes_per_source.unwrap_or_default()
            ));
        }
        if self.max_streams > 1 << 24 {
            return bad(format!("max_streams must be at most {}, got {}", 1 << 24, self.max_streams));
        }
        Ok(())
    }

    /// The per-source handshake limit in force: `max_handshakes_per_source`, or when it is
    /// `None`, `max(2 × tunnels, max_pending_handshakes / 4)`, never above
    /// `max_pending_handshakes`.
    ///
    /// Why that default: a client connects all its tunnels at once (at most `tunnels` on
    /// this server), and may re-join as many lost ones at the same time, hence `2 × tunnels`:
    /// one legitimate client is never refused. A quarter of all slots lets several clients
    /// behind one address (NAT, one host) dial at the same moment, while one address can
    /// hold at most a quarter of them (32 of the default 128): a real client from anywhere
    /// else always finds slots, and keeping everyone out takes at least four addresses.
    pub fn handshakes_per_source(&self) -> usize {
        self.max_handshakes_per_source
            .unwrap_or_else(|| (2 * self.tunnels).max(self.max_pending_handshakes / 4))
            .min(self.max_pending_handshakes)
    }

    /// The parameters this side announces in its handshake (frame size and windows), as a
    /// HELLO or REPLY carries them.
    pub fn params(&self) -> Params {
        Params {
            max_frame: self.max_frame_size as u32,
            stream_window: self.stream_window as u32,
            session_window: self.session_window as u32,
        }
    }
}

/// Check parameters announced by a peer; returns a reason when they cannot work.
pub(crate) fn check_peer_params(p: &Params) -> Result<(), String> {
    if p.max_frame < 1024 || p.max_frame > MAX_FRAME_LIMIT {
        return Err(format!("peer max frame size {} is out of range", p.max_frame));
    }
    if (p.stream_window as u64) < data_charge(p.max_frame as usize) {
        return Err(format!("peer stream window {} is smaller than one frame", p.stream_window));
    }
    if p.session_window < p.stream_window {
        return Err("peer session window is smaller than its stream window".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
        check_peer_params(&Config::default().params()).unwrap();
    }

    #[test]
    fn nonsense_is_rejected_with_the_field_name() {
        type Change = Box<dyn Fn(&mut Config)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|c| c.tunnels = 0), "tunnels"),
            (Box::new(|c| c.tunnels = 10_000), "tunnels"),
            (Box::new(|c| c.keepalive_timeout = c.keepalive_interval), "keepalive_timeout"),
            (Box::new(|c| c.keepalive_interval = Duration::ZERO), "keepalive_interval"),
            (Box::new(|c| c.reorder_timeout = Duration::ZERO), "reorder_timeout"),
            (Box::new(|c| c.max_frame_size = 10), "max_frame_size"),
            (Box::new(|c| c.stream_window = 100), "stream_window"),
            (Box::new(|c| c.session_window = 1), "session_window"),
            (Box::new(|c| c.max_streams = 0), "max_streams"),
            (Box::new(|c| c.accept_backlog = 0), "accept_backlog"),
            (Box::new(|c| c.handshake_timeout = Duration::ZERO), "handshake_timeout"),
            (Box::new(|c| c.handshake_timeout = Duration::MAX), "handshake_timeout"),
            (Box::new(|c| c.keepalive_timeout = Duration::MAX), "keepalive_timeout"),
            (Box::new(|c| c.reorder_timeout = Duration::from_secs(u64::MAX)), "reorder_timeout"),
            (Box::new(|c| c.accept_backlog = usize::MAX / 64), "accept_backlog"),
            (Box::new(|c| c.max_pending_handshakes = usize::MAX), "max_pending_handshakes"),
            (Box::new(|c| c.max_handshakes_per_source = Some(0)), "max_handshakes_per_source"),
            (Box::new(|c| c.max_handshakes_per_source = Some(usize::MAX)), "max_handshakes_per_source"),
            (Box::new(|c| c.max_streams = usize::MAX), "max_streams"),
            (Box::new(|c| c.stale_timeout = Some(Duration::from_millis(1))), "stale_timeout"),
            (Box::new(|c| c.stale_timeout = Some(Duration::MAX)), "stale_timeout"),
            (Box::new(|c| c.resume_timeout = Duration::MAX), "resume_timeout"),
            (Box::new(|c| c.rejoin_backoff_max = Duration::ZERO), "rejoin_backoff_max"),
        ];
        for (change, field) in cases {
            let mut c = Config::default();
            change(&mut c);
            let msg = c.validate().unwrap_err().to_string();
            assert!(msg.contains(field), "{msg} should name {field}");
        }
    }

    #[test]
    fn the_per_source_handshake_limit_covers_a_whole_client_and_a_share_of_the_total() {
        let c = |tunnels, total, per_source| Config {
            tunnels,
            max_pending_handshakes: total,
            max_handshakes_per_source: per_source,
            ..Config::default()
        };
        // Defaults: a quarter of 128.
        assert_eq!(Config::default().handshakes_per_source(), 32);
        // A bundle and its re-joins when that is more than a quarter, else a quarter.
        assert_eq!(c(64, 256, None).handshakes_per_source(), 128);
        assert_eq!(c(64, 1024, None).handshakes_per_source(), 256);
        // Never above the total; an explicit value is taken as it is.
        assert_eq!(c(8, 4, None).handshakes_per_source(), 4);
        assert_eq!(c(8, 128, Some(5)).handshakes_per_source(), 5);
        assert_eq!(c(8, 128, Some(500)).handshakes_per_source(), 128);
        c(8, 128, Some(1)).validate().unwrap();
    }

    #[test]
    fn peer_params_out_of_range_are_refused() {
        let mut p = Config::default().params();
        p.max_frame = 10;
        assert!(check_peer_params(&p).is_err());
    }
}
