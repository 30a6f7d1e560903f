//! The tunnel handshake: a fixed 40-byte HELLO from the client on every tunnel, answered by
//! a 40-byte REPLY (plus an optional UTF-8 reason) once the server has the whole bundle or
//! has refused it.
//!
//! ```text
//! HELLO / REPLY
//!  0      4        5        6          8          10         12            28          32            36          40
//!  +------+--------+--------+----------+----------+----------+-------------+-----------+-------------+-----------+
//!  |"MTMX"|version | kind / | tunnel   | tunnel   | reserved/| bundle id   | max frame | stream      | session   |
//!  |      |        | status | index    | count    | reason len|            |           | window      | window    |
//!  +------+--------+--------+----------+----------+----------+-------------+-----------+-------------+-----------+
//! ```
//!
//! Pure encode/decode; the socket side lives in `crate::listener`.

use byteorder::{BigEndian, ByteOrder};
use std::fmt;

/// Magic bytes that open every HELLO and REPLY.
pub const MAGIC: [u8; 4] = *b"MTMX";
/// Handshake version spoken by this implementation.
pub const HANDSHAKE_VERSION: u8 = 1;
/// Length of the fixed part of HELLO and REPLY.
pub const HELLO_LEN: usize = 40;
/// Longest refusal reason carried by a REPLY.
pub const MAX_REASON_LEN: usize = 255;

/// A random identifier shared by all tunnels of one bundle.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BundleId(pub [u8; 16]);

impl fmt::Debug for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a HELLO asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HelloKind {
    /// Join a new bundle (the only kind version 1 accepts).
    Join = 1,
    /// Re-join a tunnel to an existing bundle after a tunnel failure. Reserved: refused with
    /// [`Status::Unsupported`] by version 1.
    Rejoin = 2,
}

/// Session parameters each side announces: what it accepts from the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Largest DATA payload this side accepts.
    pub max_frame: u32,
    /// Initial per-stream receive window (charge units, see `data_charge`).
    pub stream_window: u32,
    /// Initial session-wide receive window.
    pub session_window: u32,
}

/// One tunnel's HELLO.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Join or re-join.
    pub kind: HelloKind,
    /// Bundle this tunnel belongs to.
    pub bundle: BundleId,
    /// Position of this tunnel in the bundle, `0..count`.
    pub index: u16,
    /// Number of tunnels in the bundle.
    pub count: u16,
    /// The client's parameters.
    pub params: Params,
}

/// REPLY status. Values are part of the wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The tunnel joined and the bundle is complete: the session starts.
    Accept = 0,
    /// The HELLO had a version the server does not speak.
    BadVersion = 1,
    /// The HELLO was malformed.
    Malformed = 2,
    /// Parameters or tunnel count out of the server's range.
    BadParams = 3,
    /// The server is at its limit of pending handshakes or queued sessions.
    Busy = 4,
    /// Not all tunnels of the bundle arrived within the handshake timeout.
    Incomplete = 5,
    /// The tunnel conflicts with its bundle (duplicate index, different count or parameters).
    Conflict = 6,
    /// The tunnel arrived on the wrong port for its index.
    WrongPort = 7,
    /// The request (e.g. re-join) is not supported.
    Unsupported = 8,
    /// The server is shutting down.
    Closing = 9,
}

impl Status {
    fn from_u8(b: u8) -> Status {
        match b {
            0 => Status::Accept,
            1 => Status::BadVersion,
            2 => Status::Malformed,
            3 => Status::BadParams,
            4 => Status::Busy,
            5 => Status::Incomplete,
            6 => Status::Conflict,
            7 => Status::WrongPort,
            8 => Status::Unsupported,
            9 => Status::Closing,
            _ => Status::Malformed,
        }
    }
}

/// The server's answer on one tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Accept or the refusal reason.
    pub status: Status,
    /// Echo of the tunnel index.
    pub index: u16,
    /// Echo of the tunnel count.
    pub count: u16,
    /// Echo of the bundle id.
    pub bundle: BundleId,
    /// The server's parameters (meaningful when accepted).
    pub params: Params,
    /// Human-readable detail of a refusal (empty when accepted).
    pub reason: String,
}

/// Why handshake bytes could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The first four bytes are not `MTMX`: not an mtmux peer.
    BadMagic([u8; 4]),
    /// A version this implementation does not speak.
    BadVersion(u8),
    /// Unknown HELLO kind.
    BadKind(u8),
    /// Reserved bytes not zero, index out of range, zero count or zero parameters.
    Malformed(&'static str),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadMagic(m) => write!(f, "not an mtmux peer (magic {m:02x?})"),
            HandshakeError::BadVersion(v) => {
                write!(f, "handshake version {v} (this side speaks {HANDSHAKE_VERSION})")
            }
            HandshakeError::BadKind(k) => write!(f, "unknown handshake kind {k}"),
            HandshakeError::Malformed(why) => write!(f, "malformed handshake: {why}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

fn write_common(b: &mut [u8; HELLO_LEN], kind: u8, index: u16, count: u16, bundle: &BundleId, p: &Params) {
    b[0..4].copy_from_slice(&MAGIC);
    b[4] = HANDSHAKE_VERSION;
    b[5] = kind;
    BigEndian::write_u16(&mut b[6..8], index);
    BigEndian::write_u16(&mut b[8..10], count);
    b[12..28].copy_from_slice(&bundle.0);
    BigEndian::write_u32(&mut b[28..32], p.max_frame);
    BigEndian::write_u32(&mut b[32..36], p.stream_window);
    BigEndian::write_u32(&mut b[36..40], p.session_window);
}

fn read_params(b: &[u8; HELLO_LEN]) -> Params {
    Params {
        max_frame: BigEndian::read_u32(&b[28..32]),
        stream_window: BigEndian::read_u32(&b[32..36]),
        session_window: BigEndian::read_u32(&b[36..40]),
    }
}

fn check_magic_version(b: &[u8; HELLO_LEN]) -> Result<(), HandshakeError> {
    if b[0..4] != MAGIC {
        return Err(HandshakeError::BadMagic([b[0], b[1], b[2], b[3]]));
    }
    if b[4] != HANDSHAKE_VERSION {
        return Err(HandshakeError::BadVersion(b[4]));
    }
    Ok(())
}

impl Hello {
    /// Encode into the fixed 40-byte form.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        write_common(&mut b, self.kind as u8, self.index, self.count, &self.bundle, &self.params);
        b
    }

    /// Decode and validate a HELLO.
    pub fn decode(b: &[u8; HELLO_LEN]) -> Result<Hello, HandshakeError> {
        check_magic_version(b)?;
        let kind = match b[5] {
            1 => HelloKind::Join,
            2 => HelloKind::Rejoin,
            k => return Err(HandshakeError::BadKind(k)),
        };
        if b[10] != 0 || b[11] != 0 {
            return Err(HandshakeError::Malformed("reserved bytes are not zero"));
        }
        let index = BigEndian::read_u16(&b[6..8]);
        let count = BigEndian::read_u16(&b[8..10]);
        if count == 0 {
            return Err(HandshakeError::Malformed("tunnel count is zero"));
        }
        if index >= count {
            return Err(HandshakeError::Malformed("tunnel index is not below the tunnel count"));
        }
        let params = read_params(b);
        if params.max_frame == 0 || params.stream_window == 0 || params.session_window == 0 {
            return Err(HandshakeError::Malformed("zero frame size or window"));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[12..28]);
        Ok(Hello { kind, bundle: BundleId(id), index, count, params })
    }
}

impl Reply {
    /// An acceptance of `hello` carrying the server's parameters.
    pub fn accept(hello: &Hello, params: Params) -> Reply {
        Reply {
            status: Status::Accept,
            index: hello.index,
            count: hello.count,
            bundle: hello.bundle,
            params,
            reason: String::new(),
        }
    }

    /// A refusal; `hello` may be unknown when the HELLO itself could not be decoded.
    pub fn refuse(hello: Option<&Hello>, status: Status, reason: impl Into<String>) -> Reply {
        let zero = Params { max_frame: 0, stream_window: 0, session_window: 0 };
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_LEN {
            let mut cut = MAX_REASON_LEN;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        Reply {
            status,
            index: hello.map_or(0, |h| h.index),
            count: hello.map_or(0, |h| h.count),
            bundle: hello.map_or(BundleId([0; 16]), |h| h.bundle),
            params: zero,
            reason,
        }
    }

    /// Encode: the fixed part followed by the reason text.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = [0u8; HELLO_LEN];
        write_common(&mut b, self.status as u8, self.index, self.count, &self.bundle, &self.params);
        let reason = &self.reason.as_bytes()[..self.reason.len().min(MAX_REASON_LEN)];
        BigEndian::write_u16(&mut b[10..12], reason.len() as u16);
        let mut v = b.to_vec();
        v.extend_from_slice(reason);
        v
    }

    /// Decode the fixed part; returns the reply (with an empty reason) and the number of
    /// reason bytes that follow, which the caller reads and passes to [`Reply::set_reason`].
    pub fn decode_fixed(b: &[u8; HELLO_LEN]) -> Result<(Reply, usize), HandshakeError> {
        check_magic_version(b)?;
        let reason_len = BigEndian::read_u16(&b[10..12]) as usize;
        if reason_len > MAX_REASON_LEN {
            return Err(HandshakeError::Malformed("refusal reason too long"));
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[12..28]);
        let reply = Reply {
            status: Status::from_u8(b[5]),
            index: BigEndian::read_u16(&b[6..8]),
            count: BigEndian::read_u16(&b[8..10]),
            bundle: BundleId(id),
            params: read_params(b),
            reason: String::new(),
        };
        Ok((reply, reason_len))
    }

    /// Attach the reason bytes read after the fixed part (invalid UTF-8 is replaced).
    pub fn set_reason(&mut self, bytes: &[u8]) {
        self.reason = String::from_utf8_lossy(bytes).into_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hello() -> Hello {
        Hello {
            kind: HelloKind::Join,
            bundle: BundleId([7; 16]),
            index: 2,
            count: 4,
            params: Params { max_frame: 65536, stream_window: 1 << 20, session_window: 1 << 26 },
        }
    }

    #[test]
    fn hello_round_trips() {
        let h = hello();
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn garbage_is_not_a_hello() {
        let b = *b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n\0\0\0";
        assert!(matches!(Hello::decode(&b), Err(HandshakeError::BadMagic(_))));
    }

    #[test]
    fn index_must_be_below_count() {
        let mut h = hello();
        h.index = 4;
        assert!(matches!(Hello::decode(&h.encode()), Err(HandshakeError::Malformed(_))));
    }

    #[test]
    fn refusal_carries_a_reason() {
        let r = Reply::refuse(Some(&hello()), Status::Incomplete, "got 1 of 4 tunnels");
        let bytes = r.encode();
        let (mut back, n) = Reply::decode_fixed(bytes[..HELLO_LEN].try_into().unwrap()).unwrap();
        back.set_reason(&bytes[HELLO_LEN..HELLO_LEN + n]);
        assert_eq!(back, r);
    }

    #[test]
    fn long_reasons_are_truncated_on_a_char_boundary() {
        let r = Reply::refuse(None, Status::Busy, "é".repeat(200));
        assert!(r.reason.len() <= MAX_REASON_LEN);
        assert!(r.encode().len() <= HELLO_LEN + MAX_REASON_LEN);
    }

    proptest! {
        #[test]
        fn arbitrary_hello_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), HELLO_LEN)) {
            let b: [u8; HELLO_LEN] = v.try_into().unwrap();
            if let Ok(h) = Hello::decode(&b) {
                prop_assert_eq!(h.encode(), b);
            }
            let _ = Reply::decode_fixed(&b);
        }

        #[test]
        fn accept_round_trips(index in 0u16..100, extra in 1u16..100, mf in 1u32.., sw in 1u32.., ss in 1u32..) {
            let mut h = hello();
            h.index = index;
            h.count = index + extra;
            let r = Reply::accept(&h, Params { max_frame: mf, stream_window: sw, session_window: ss });
            let bytes = r.encode();
            let (back, n) = Reply::decode_fixed(bytes[..HELLO_LEN].try_into().unwrap()).unwrap();
            prop_assert_eq!(n, 0);
            prop_assert_eq!(back, r);
        }
    }
}
