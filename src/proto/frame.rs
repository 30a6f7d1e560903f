//! The frame codec: a fixed 16-byte header followed by `length` payload bytes.
//!
//! ```text
//!  0        1        2                4                8                12               16
//!  +--------+--------+----------------+----------------+----------------+----------------+
//!  |version |  cmd   |     flags      |   stream id    |      seq       |     length     |
//!  +--------+--------+----------------+----------------+----------------+----------------+
//! ```
//!
//! All integers are big-endian. `docs/PROTOCOL.md` is the normative description; this module is
//! its executable form. Everything here is pure: bytes in, values out, no I/O.

use byteorder::{BigEndian, ByteOrder};
use std::fmt;

/// Length of every frame header on the wire.
pub const HEADER_LEN: usize = 16;
/// The frame format version this implementation speaks.
pub const VERSION: u8 = 2;
/// Flow-control cost of a DATA frame on top of its payload (see [`data_charge`]).
pub const FRAME_CHARGE: u64 = 64;
/// Hard protocol ceiling for `max_frame_size`.
pub const MAX_FRAME_LIMIT: u32 = 16 << 20;

/// Frame commands. The numeric values are part of the wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cmd {
    /// A sequenced stream frame: payload bytes, optionally flagged OPEN (first) and FIN (last).
    Data = 0,
    /// Raise the peer's send limit for a stream (stream id 0: the whole session).
    Window = 1,
    /// Abort a stream in both directions, with a reason code.
    Reset = 2,
    /// Keepalive probe on one tunnel; answered by `Pong` on the same tunnel.
    Ping = 3,
    /// Answer to `Ping`, echoing its payload.
    Pong = 4,
    /// The sender opens no more streams and will close the session once its streams are done.
    GoAway = 5,
    /// Data-level acknowledgement: how many DATA frames arrived on one tunnel generation.
    /// (Command 6, version 1's SENT mark, is retired: version 2 re-sends instead.)
    Ack = 7,
}

impl Cmd {
    fn from_u8(b: u8) -> Option<Cmd> {
        Some(match b {
            0 => Cmd::Data,
            1 => Cmd::Window,
            2 => Cmd::Reset,
            3 => Cmd::Ping,
            4 => Cmd::Pong,
            5 => Cmd::GoAway,
            7 => Cmd::Ack,
            _ => return None,
        })
    }
}

/// DATA flag: this is the stream's first frame (sequence 0).
pub const FLAG_OPEN: u16 = 0x0001;
/// DATA flag: this is the stream's last frame; no frame of the stream follows it.
pub const FLAG_FIN: u16 = 0x0002;

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the frame does.
    pub cmd: Cmd,
    /// Command-specific flags (only DATA has any).
    pub flags: u16,
    /// Stream the frame belongs to; 0 for session-level frames.
    pub stream: u32,
    /// Per-stream sequence number of DATA frames; 0 otherwise.
    pub seq: u32,
    /// Payload length in bytes.
    pub len: u32,
}

/// Why a header or control payload was rejected. Any of these is a protocol violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The version byte is not [`VERSION`].
    BadVersion(u8),
    /// The command byte is not a known command.
    UnknownCommand(u8),
    /// A non-DATA frame with a non-zero sequence field.
    BadSequence {
        /// The command.
        cmd: Cmd,
        /// Announced sequence.
        seq: u32,
    },
    /// The payload is longer than the receiver's maximum frame size.
    TooLong {
        /// Announced payload length.
        len: u32,
        /// Largest payload the receiver accepts.
        max: u32,
    },
    /// The payload length does not fit the command.
    BadLength {
        /// The command.
        cmd: Cmd,
        /// Announced payload length.
        len: u32,
    },
    /// The stream id is 0 where a stream is required, or non-zero where it must be 0.
    BadStream {
        /// The command.
        cmd: Cmd,
        /// Announced stream id.
        stream: u32,
    },
    /// Flags that the command does not define, or an invalid combination.
    BadFlags {
        /// The command.
        cmd: Cmd,
        /// Announced flags.
        flags: u16,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadVersion(v) => write!(f, "frame version {v} (expected {VERSION})"),
            FrameError::UnknownCommand(c) => write!(f, "unknown frame command {c:#04x}"),
            FrameError::BadSequence { cmd, seq } => write!(f, "{cmd:?} frame with non-zero sequence {seq}"),
            FrameError::TooLong { len, max } => {
                write!(f, "frame payload of {len} bytes exceeds the maximum of {max}")
            }
            FrameError::BadLength { cmd, len } => {
                write!(f, "{cmd:?} frame with invalid payload length {len}")
            }
            FrameError::BadStream { cmd, stream } => {
                write!(f, "{cmd:?} frame with invalid stream id {stream}")
            }
            FrameError::BadFlags { cmd, flags } => {
                write!(f, "{cmd:?} frame with invalid flags {flags:#06x}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

impl Header {
    /// A DATA header.
    pub fn data(stream: u32, seq: u32, flags: u16, len: u32) -> Header {
        Header { cmd: Cmd::Data, flags, stream, seq, len }
    }

    /// Encode into the 16-byte wire form.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = VERSION;
        b[1] = self.cmd as u8;
        BigEndian::write_u16(&mut b[2..4], self.flags);
        BigEndian::write_u32(&mut b[4..8], self.stream);
        BigEndian::write_u32(&mut b[8..12], self.seq);
        BigEndian::write_u32(&mut b[12..16], self.len);
        b
    }

    /// Set FIN on the encoded DATA frame `frame` if it is frame `seq` of its stream (the
    /// stream's last: a close that follows a write rides on it). Returns whether it did.
    pub fn set_fin_if_seq(frame: &mut [u8], seq: u32) -> bool {
        if frame.len() < HEADER_LEN
            || frame[1] != Cmd::Data as u8
            || BigEndian::read_u32(&frame[8..12]) != seq
        {
            return false;
        }
        let flags = BigEndian::read_u16(&frame[2..4]) | FLAG_FIN;
        BigEndian::write_u16(&mut frame[2..4], flags);
        true
    }

    /// Decode and validate a header. `max_frame` is the largest DATA payload the receiver
    /// accepts. Every constraint that can be checked without stream state is checked here.
    pub fn decode(b: &[u8; HEADER_LEN], max_frame: u32) -> Result<Header, FrameError> {
        if b[0] != VERSION {
            return Err(FrameError::BadVersion(b[0]));
        }
        let cmd = Cmd::from_u8(b[1]).ok_or(FrameError::UnknownCommand(b[1]))?;
        let h = Header {
            cmd,
            flags: BigEndian::read_u16(&b[2..4]),
            stream: BigEndian::read_u32(&b[4..8]),
            seq: BigEndian::read_u32(&b[8..12]),
            len: BigEndian::read_u32(&b[12..16]),
        };
        h.validate(max_frame)?;
        Ok(h)
    }

    fn validate(&self, max_frame: u32) -> Result<(), FrameError> {
        let Header { cmd, flags, stream, seq, len } = *self;
        let needs_stream = matches!(cmd, Cmd::Data | Cmd::Reset);
        let session_only = matches!(cmd, Cmd::Ping | Cmd::Pong | Cmd::GoAway | Cmd::Ack);
        if cmd != Cmd::Data && seq != 0 {
            return Err(FrameError::BadSequence { cmd, seq });
        }
        if (needs_stream && stream == 0) || (session_only && stream != 0) {
            return Err(FrameError::BadStream { cmd, stream });
        }
        let allowed_flags = if cmd == Cmd::Data { FLAG_OPEN | FLAG_FIN } else { 0 };
        if flags & !allowed_flags != 0 {
            return Err(FrameError::BadFlags { cmd, flags });
        }
        let expected_len = match cmd {
            Cmd::Data => {
                if len > max_frame {
                    return Err(FrameError::TooLong { len, max: max_frame });
                }
                // An empty DATA frame must mean something (open or fin), otherwise it is
                // a free way to make the receiver do work.
                if len == 0 && flags == 0 {
                    return Err(FrameError::BadLength { cmd, len });
                }
                return Ok(());
            }
            Cmd::Window | Cmd::Ping | Cmd::Pong => 8,
            Cmd::Reset | Cmd::GoAway => 4,
            Cmd::Ack => ACK_LEN,
        };
        if len != expected_len {
            return Err(FrameError::BadLength { cmd, len });
        }
        Ok(())
    }
}

/// Flow-control cost of a DATA frame with `len` payload bytes. Empty frames (a bare OPEN or
/// FIN) cost nothing; others cost their payload plus [`FRAME_CHARGE`], so that the window
/// also bounds the receiver's per-frame bookkeeping, not only the payload bytes.
pub fn data_charge(len: usize) -> u64 {
    if len == 0 {
        0
    } else {
        len as u64 + FRAME_CHARGE
    }
}

/// An unsequenced control frame: everything except DATA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// The peer may send on `stream` (0: the session) until its total charge reaches `limit`.
    Window {
        /// Stream id, 0 for the session.
        stream: u32,
        /// Absolute limit of the sender's cumulative charge.
        limit: u64,
    },
    /// Abort `stream` with a reason code (see [`crate::ResetCode`]).
    Reset {
        /// Stream id.
        stream: u32,
        /// Reason code.
        code: u32,
    },
    /// Keepalive probe with an opaque token.
    Ping(u64),
    /// Keepalive answer echoing the probe's token.
    Pong(u64),
    /// The sender is closing the session; `code` says why (0: normal close).
    GoAway(u32),
    /// The sender has received `frames` DATA frames in all on generation `generation` of
    /// tunnel `tunnel` (cumulative, so a later ACK supersedes an earlier one).
    Ack {
        /// Tunnel index.
        tunnel: u16,
        /// Generation of the tunnel (which connection of the slot).
        generation: u32,
        /// DATA frames received on it so far.
        frames: u64,
    },
}

/// Payload length of an ACK frame: tunnel (2), reserved (2), generation (4), frames (8).
pub const ACK_LEN: u32 = 16;

/// Encoded length of the largest control frame.
pub const CONTROL_MAX_LEN: usize = HEADER_LEN + ACK_LEN as usize;

/// Whether frames of command `cmd` count in ACKs: every frame except PING, PONG and ACK (a
/// sender keeps those that count until they are acknowledged, and re-sends them on another
/// tunnel if theirs fails).
pub fn counts_in_acks(cmd: Cmd) -> bool {
    !matches!(cmd, Cmd::Ping | Cmd::Pong | Cmd::Ack)
}

impl Control {
    /// Whether this frame counts in ACKs (see [`counts_in_acks`]).
    pub fn counts_in_acks(&self) -> bool {
        !matches!(self, Control::Ping(_) | Control::Pong(_) | Control::Ack { .. })
    }

    /// Append the wire form of this frame to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let (cmd, stream, seq, payload): (Cmd, u32, u32, &[u8]) = match *self {
            Control::Window { stream, limit } => {
                let h = Header { cmd: Cmd::Window, flags: 0, stream, seq: 0, len: 8 };
                out.extend_from_slice(&h.encode());
                out.extend_from_slice(&limit.to_be_bytes());
                return;
            }
            Control::Reset { stream, code } => (Cmd::Reset, stream, 0, &code.to_be_bytes()[..]),
            Control::Ping(t) => {
                let h = Header { cmd: Cmd::Ping, flags: 0, stream: 0, seq: 0, len: 8 };
                out.extend_from_slice(&h.encode());
                out.extend_from_slice(&t.to_be_bytes());
                return;
            }
            Control::Pong(t) => {
                let h = Header { cmd: Cmd::Pong, flags: 0, stream: 0, seq: 0, len: 8 };
                out.extend_from_slice(&h.encode());
                out.extend_from_slice(&t.to_be_bytes());
                return;
            }
            Control::GoAway(code) => (Cmd::GoAway, 0, 0, &code.to_be_bytes()[..]),
            Control::Ack { tunnel, generation, frames } => {
                let h = Header { cmd: Cmd::Ack, flags: 0, stream: 0, seq: 0, len: ACK_LEN };
                out.extend_from_slice(&h.encode());
                out.extend_from_slice(&tunnel.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(&generation.to_be_bytes());
                out.extend_from_slice(&frames.to_be_bytes());
                return;
            }
        };
        let h = Header { cmd, flags: 0, stream, seq, len: payload.len() as u32 };
        out.extend_from_slice(&h.encode());
        out.extend_from_slice(payload);
    }

    /// The wire form as a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(CONTROL_MAX_LEN);
        self.encode_into(&mut v);
        v
    }

    /// Build a control frame from a validated non-DATA header and its payload.
    pub fn decode(h: &Header, payload: &[u8]) -> Result<Control, FrameError> {
        if payload.len() != h.len as usize {
            return Err(FrameError::BadLength { cmd: h.cmd, len: payload.len() as u32 });
        }
        Ok(match h.cmd {
            Cmd::Window => Control::Window { stream: h.stream, limit: BigEndian::read_u64(payload) },
            Cmd::Reset => Control::Reset { stream: h.stream, code: BigEndian::read_u32(payload) },
            Cmd::Ping => Control::Ping(BigEndian::read_u64(payload)),
            Cmd::Pong => Control::Pong(BigEndian::read_u64(payload)),
            Cmd::GoAway => Control::GoAway(BigEndian::read_u32(payload)),
            Cmd::Ack => {
                if payload[2..4] != [0, 0] {
                    return Err(FrameError::BadLength { cmd: h.cmd, len: h.len });
                }
                Control::Ack {
                    tunnel: BigEndian::read_u16(&payload[0..2]),
                    generation: BigEndian::read_u32(&payload[4..8]),
                    frames: BigEndian::read_u64(&payload[8..16]),
                }
            }
            Cmd::Data => return Err(FrameError::BadStream { cmd: h.cmd, stream: h.stream }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = 64 * 1024;

    fn decode(b: &[u8]) -> Result<Header, FrameError> {
        Header::decode(b.try_into().unwrap(), MAX)
    }

    #[test]
    fn data_header_round_trips() {
        let h = Header::data(7, 42, FLAG_OPEN, 1000);
        assert_eq!(decode(&h.encode()), Ok(h));
    }

    #[test]
    fn rejects_wrong_version() {
        let mut b = Header::data(1, 0, FLAG_OPEN, 0).encode();
        b[0] = 9;
        assert_eq!(decode(&b), Err(FrameError::BadVersion(9)));
    }

    #[test]
    fn rejects_unknown_command() {
        let mut b = Header::data(1, 0, FLAG_OPEN, 0).encode();
        b[1] = 0x42;
        assert_eq!(decode(&b), Err(FrameError::UnknownCommand(0x42)));
    }

    #[test]
    fn rejects_oversized_data() {
        let b = Header::data(1, 0, 0, MAX + 1).encode();
        assert_eq!(decode(&b), Err(FrameError::TooLong { len: MAX + 1, max: MAX }));
    }

    #[test]
    fn rejects_empty_data_without_flags() {
        let b = Header::data(1, 3, 0, 0).encode();
        assert!(matches!(decode(&b), Err(FrameError::BadLength { .. })));
    }

    #[test]
    fn rejects_data_on_stream_zero_and_ping_on_a_stream() {
        assert!(matches!(
            decode(&Header::data(0, 0, FLAG_OPEN, 1).encode()),
            Err(FrameError::BadStream { .. })
        ));
        let h = Header { cmd: Cmd::Ping, flags: 0, stream: 5, seq: 0, len: 8 };
        assert!(matches!(decode(&h.encode()), Err(FrameError::BadStream { .. })));
    }

    #[test]
    fn rejects_unknown_flags_ack_on_a_stream_and_the_retired_sent() {
        let b = Header::data(1, 0, 0x80, 5).encode();
        assert!(matches!(decode(&b), Err(FrameError::BadFlags { .. })));
        let h = Header { cmd: Cmd::Ack, flags: 0, stream: 1, seq: 0, len: ACK_LEN };
        assert!(matches!(decode(&h.encode()), Err(FrameError::BadStream { .. })));
        let mut sent = Header::data(1, 3, 0, 0).encode();
        sent[1] = 6;
        assert_eq!(decode(&sent), Err(FrameError::UnknownCommand(6)));
    }

    #[test]
    fn control_frames_with_a_sequence_are_refused() {
        // WINDOW on stream 5 with sequence 0x01010101: the spec says 0.
        let b = [2, 1, 0, 0, 0, 0, 0, 5, 1, 1, 1, 1, 0, 0, 0, 8];
        assert_eq!(decode(&b), Err(FrameError::BadSequence { cmd: Cmd::Window, seq: 0x0101_0101 }));
        let ping = Header { cmd: Cmd::Ping, flags: 0, stream: 0, seq: 7, len: 8 };
        assert!(matches!(decode(&ping.encode()), Err(FrameError::BadSequence { .. })));
    }

    #[test]
    fn ack_reserved_bytes_must_be_zero() {
        let mut b = Control::Ack { tunnel: 3, generation: 9, frames: 1 << 40 }.encode();
        let h = decode(&b[..HEADER_LEN]).unwrap();
        assert!(Control::decode(&h, &b[HEADER_LEN..]).is_ok());
        b[HEADER_LEN + 3] = 1;
        assert!(Control::decode(&h, &b[HEADER_LEN..]).is_err());
    }

    #[test]
    fn charge_counts_overhead_only_for_payload_frames() {
        assert_eq!(data_charge(0), 0);
        assert_eq!(data_charge(1), 1 + FRAME_CHARGE);
    }

    fn control_strategy() -> impl Strategy<Value = Control> {
        prop_oneof![
            (1u32.., any::<u64>()).prop_map(|(stream, limit)| Control::Window { stream, limit }),
            Just(0u32).prop_flat_map(|_| any::<u64>()).prop_map(|limit| Control::Window { stream: 0, limit }),
            (1u32.., any::<u32>()).prop_map(|(stream, code)| Control::Reset { stream, code }),
            any::<u64>().prop_map(Control::Ping),
            any::<u64>().prop_map(Control::Pong),
            any::<u32>().prop_map(Control::GoAway),
            (any::<u16>(), any::<u32>(), any::<u64>())
                .prop_map(|(tunnel, generation, frames)| Control::Ack { tunnel, generation, frames }),
        ]
    }

    proptest! {
        #[test]
        fn control_frames_round_trip(c in control_strategy()) {
            let bytes = c.encode();
            prop_assert!(bytes.len() <= CONTROL_MAX_LEN);
            let h = decode(&bytes[..HEADER_LEN]).unwrap();
            prop_assert_eq!(h.len as usize, bytes.len() - HEADER_LEN);
            prop_assert_eq!(Control::decode(&h, &bytes[HEADER_LEN..]), Ok(c));
        }

        #[test]
        fn data_headers_round_trip(stream in 1u32.., seq in any::<u32>(), flags in 0u16..4, len in 1u32..=MAX) {
            let h = Header::data(stream, seq, flags, len);
            prop_assert_eq!(decode(&h.encode()), Ok(h));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::array::uniform16(any::<u8>())) {
            if let Ok(h) = Header::decode(&bytes, MAX) {
                // Whatever decodes must re-encode to the same bytes.
                prop_assert_eq!(h.encode(), bytes);
            }
        }
    }
}
