//! The crate's one error type.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Why a stream was reset. The numbers are the wire values of RESET frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetCode {
    /// The application aborted the stream (`Stream::reset`).
    Cancelled,
    /// The peer's accept backlog was full.
    Refused,
    /// The peer is at its limit of concurrent streams: its `max_streams`, or a limit of the
    /// application that turned the stream away ([`Stream::reset_with`](crate::Stream::reset_with)).
    TooManyStreams,
    /// The receiver gave up waiting for a missing frame.
    ReorderTimeout,
    /// Data arrived after the receiver had closed its reading side. This code ends only the
    /// sending direction of the stream that receives it: its writes fail (as with EPIPE),
    /// its reads still deliver what the peer sent.
    StreamClosed,
    /// The stream broke the protocol.
    Protocol,
    /// The session is closing and takes no new streams.
    SessionClosing,
    /// The application that accepted the stream could not connect it on: its target refused
    /// the connection (e.g. `mtmux server` when nothing listens on `--target`).
    TargetRefused,
    /// The application that accepted the stream could not connect it on: its target is
    /// unreachable (no route, host down) or the connect failed otherwise.
    TargetUnreachable,
    /// The application that accepted the stream could not connect it on: connecting to its
    /// target timed out.
    TargetTimedOut,
    /// A code this version does not know.
    Other(u32),
}

impl ResetCode {
    /// Wire value.
    pub fn to_u32(self) -> u32 {
        match self {
            ResetCode::Cancelled => 0,
            ResetCode::Refused => 1,
            ResetCode::TooManyStreams => 2,
            ResetCode::ReorderTimeout => 3,
            ResetCode::StreamClosed => 4,
            ResetCode::Protocol => 5,
            ResetCode::SessionClosing => 6,
            ResetCode::TargetRefused => 7,
            ResetCode::TargetUnreachable => 8,
            ResetCode::TargetTimedOut => 9,
            ResetCode::Other(c) => c,
        }
    }

    /// From the wire value.
    pub fn from_u32(c: u32) -> ResetCode {
        match c {
            0 => ResetCode::Cancelled,
            1 => ResetCode::Refused,
            2 => ResetCode::TooManyStreams,
            3 => ResetCode::ReorderTimeout,
            4 => ResetCode::StreamClosed,
            5 => ResetCode::Protocol,
            6 => ResetCode::SessionClosing,
            7 => ResetCode::TargetRefused,
            8 => ResetCode::TargetUnreachable,
            9 => ResetCode::TargetTimedOut,
            c => ResetCode::Other(c),
        }
    }
}

impl fmt::Display for ResetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetCode::Cancelled => f.write_str("cancelled"),
            ResetCode::Refused => f.write_str("refused: accept backlog full"),
            ResetCode::TooManyStreams => f.write_str("too many streams"),
            ResetCode::ReorderTimeout => f.write_str("a frame went missing (reorder timeout)"),
            ResetCode::StreamClosed => f.write_str("the reading side was closed"),
            ResetCode::Protocol => f.write_str("protocol violation"),
            ResetCode::SessionClosing => f.write_str("session closing"),
            ResetCode::TargetRefused => f.write_str("the target refused the connection"),
            ResetCode::TargetUnreachable => f.write_str("the target is unreachable"),
            ResetCode::TargetTimedOut => f.write_str("connecting to the target timed out"),
            ResetCode::Other(c) => write!(f, "code {c}"),
        }
    }
}

/// Why a session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// `Session::close` was called, or every handle was dropped.
    Local,
    /// The peer closed the session.
    Peer,
    /// Every tunnel failed; the text says how the last one did.
    TunnelsLost(String),
    /// The peer broke the protocol; the text says how.
    Protocol(String),
    /// Every tunnel was lost and the session could not be resumed: no tunnel came back
    /// within `resume_timeout`, or the server no longer knows the session (it restarted).
    /// The text says which.
    Expired(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::Peer => f.write_str("closed by the peer"),
            CloseReason::TunnelsLost(why) => write!(f, "all tunnels lost ({why})"),
            CloseReason::Protocol(why) => write!(f, "protocol violation by the peer: {why}"),
            CloseReason::Expired(why) => write!(f, "expired: {why}"),
        }
    }
}

/// Everything that can go wrong in mtmux.
#[derive(Clone, Debug)]
pub enum Error {
    /// A configuration value is out of range.
    InvalidConfig(String),
    /// The session has ended; no stream of it can send or receive any more.
    SessionClosed(CloseReason),
    /// The stream was reset (aborted), by the peer (`remote`) or locally.
    StreamReset {
        /// Why.
        code: ResetCode,
        /// Whether the peer reset it.
        remote: bool,
    },
    /// The write side of the stream was closed (`close_write`/`shutdown`) before this write.
    WriteClosed,
    /// A read, write or accept timeout expired.
    TimedOut,
    /// A frame of the stream did not arrive within `reorder_timeout`.
    ReorderTimeout {
        /// The stream.
        stream: u32,
        /// The sequence number that never came.
        missing: u32,
    },
    /// The peer sent something the protocol forbids.
    Protocol(String),
    /// The stream limit is reached: here (`Session::open_stream` at this side's
    /// `max_streams`), or at the peer (it turned the stream away with RESET code
    /// [`ResetCode::TooManyStreams`], at its `max_streams` or a limit of its application: the
    /// first read or write of the stream after the RESET arrived fails with this error).
    TooManyStreams,
    /// The server refused the bundle; the text is its reason.
    Refused(String),
    /// The peer could not be authenticated, or did not accept this side's credentials (wrong
    /// or missing pre-shared key, TLS certificate problems); the text says which.
    Auth(String),
    /// An operating-system I/O error.
    Io(Arc<io::Error>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidConfig(m) => write!(f, "invalid configuration: {m}"),
            Error::SessionClosed(r) => write!(f, "session closed: {r}"),
            Error::StreamReset { code, remote: true } => {
                write!(f, "stream reset by the peer: {code}")
            }
            Error::StreamReset { code, remote: false } => write!(f, "stream reset: {code}"),
            Error::WriteClosed => f.write_str("the stream's write side is closed"),
            Error::TimedOut => f.write_str("timed out"),
            Error::ReorderTimeout { stream, missing } => {
                write!(f, "stream {stream}: frame {missing} did not arrive within the reorder timeout")
            }
            Error::Protocol(m) => write!(f, "protocol violation: {m}"),
            Error::TooManyStreams => f.write_str("too many streams (here or at the peer)"),
            Error::Refused(m) => write!(f, "refused by the server: {m}"),
            Error::Auth(m) => write!(f, "authentication failed: {m}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        // An mtmux error that travelled through `io::Error` comes back as itself.
        if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
            let inner = e.into_inner().expect("checked").downcast::<Error>().expect("checked");
            return *inner;
        }
        Error::Io(Arc::new(e))
    }
}

impl Error {
    /// The `std::io::ErrorKind` this error maps to: the kind of the `io::Error` that
    /// `Read`/`Write` on a [`Stream`](crate::Stream) return (its inner error downcasts back to
    /// this `Error`, and `Error::from(io_error)` does it).
    ///
    /// | `Error` | `io::ErrorKind` | like a `TcpStream` that |
    /// |---|---|---|
    /// | `InvalidConfig` | `InvalidInput` | is given a bad argument |
    /// | `SessionClosed(Expired(_))` | `TimedOut` | lost its path for too long |
    /// | `SessionClosed(_)`, other reasons | `ConnectionAborted` | is closed under a call |
    /// | `StreamReset { code: StreamClosed, .. }` | `BrokenPipe` | writes to a peer that stopped reading (EPIPE) |
    /// | `StreamReset { .. }`, other codes | `ConnectionReset` | got an RST |
    /// | `WriteClosed` | `BrokenPipe` | writes after `shutdown(Write)` |
    /// | `TimedOut` | `TimedOut` | hit its timeout (a `TcpStream` says `WouldBlock` on Unix) |
    /// | `ReorderTimeout { .. }` | `ConnectionAborted` | gave up on missing data |
    /// | `Protocol(_)` | `InvalidData` | got garbage |
    /// | `TooManyStreams` | `QuotaExceeded` | (none: a quota of streams is used up) |
    /// | `Refused(_)` | `ConnectionRefused` | was refused at connect |
    /// | `Auth(_)` | `PermissionDenied` | failed a TLS or key check |
    /// | `Io(e)` | `e.kind()` | (the operating system's error) |
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::InvalidConfig(_) => io::ErrorKind::InvalidInput,
            Error::SessionClosed(CloseReason::Expired(_)) => io::ErrorKind::TimedOut,
            Error::SessionClosed(_) => io::ErrorKind::ConnectionAborted,
            // The peer stopped reading: like writing to a socket shut for reading (EPIPE).
            Error::StreamReset { code: ResetCode::StreamClosed, .. } => io::ErrorKind::BrokenPipe,
            Error::StreamReset { .. } => io::ErrorKind::ConnectionReset,
            Error::WriteClosed => io::ErrorKind::BrokenPipe,
            Error::TimedOut => io::ErrorKind::TimedOut,
            Error::ReorderTimeout { .. } => io::ErrorKind::ConnectionAborted,
            Error::Protocol(_) => io::ErrorKind::InvalidData,
            Error::TooManyStreams => io::ErrorKind::QuotaExceeded,
            Error::Refused(_) => io::ErrorKind::ConnectionRefused,
            Error::Auth(_) => io::ErrorKind::PermissionDenied,
            Error::Io(e) => e.kind(),
        }
    }
}

impl From<Error> for io::Error {
    /// The error keeps its mtmux form inside: `io_err.get_ref()` downcasts to [`Error`].
    fn from(e: Error) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_io_error() {
        let e = Error::ReorderTimeout { stream: 3, missing: 7 };
        let io: io::Error = e.clone().into();
        assert_eq!(io.kind(), io::ErrorKind::ConnectionAborted);
        assert!(io.to_string().contains("reorder timeout"));
        match Error::from(io) {
            Error::ReorderTimeout { stream: 3, missing: 7 } => {}
            other => panic!("got {other:?}"),
        }
    }

    /// The table in the doc of `Error::kind` (and the README's), row by row.
    #[test]
    fn kinds_are_the_documented_ones() {
        use io::ErrorKind as K;
        let reset = |code| Error::StreamReset { code, remote: true };
        let rows = [
            (Error::InvalidConfig("x".into()), K::InvalidInput),
            (Error::SessionClosed(CloseReason::Expired("x".into())), K::TimedOut),
            (Error::SessionClosed(CloseReason::Peer), K::ConnectionAborted),
            (Error::SessionClosed(CloseReason::Local), K::ConnectionAborted),
            (Error::SessionClosed(CloseReason::TunnelsLost("x".into())), K::ConnectionAborted),
            (reset(ResetCode::StreamClosed), K::BrokenPipe),
            (reset(ResetCode::Cancelled), K::ConnectionReset),
            (reset(ResetCode::TooManyStreams), K::ConnectionReset),
            (Error::WriteClosed, K::BrokenPipe),
            (Error::TimedOut, K::TimedOut),
            (Error::ReorderTimeout { stream: 1, missing: 2 }, K::ConnectionAborted),
            (Error::Protocol("x".into()), K::InvalidData),
            (Error::TooManyStreams, K::QuotaExceeded),
            (Error::Refused("x".into()), K::ConnectionRefused),
            (Error::Auth("x".into()), K::PermissionDenied),
            (Error::Io(Arc::new(K::AddrInUse.into())), K::AddrInUse),
        ];
        for (e, kind) in rows {
            assert_eq!(e.kind(), kind, "{e:?}");
            assert_eq!(io::Error::from(e.clone()).kind(), kind, "{e:?}");
        }
    }

    #[test]
    fn reset_codes_round_trip() {
        for c in 0..10 {
            assert_eq!(ResetCode::from_u32(c).to_u32(), c);
        }
    }
}
