//! The tunnel handshake (protocol version 2): a 64-byte HELLO from the client on every tunnel,
//! answered by a 64-byte REPLY plus a trailer (a refusal's reason text, or a re-join
//! challenge's proof).
//!
//! ```text
//! HELLO / REPLY, common part (the first 40 bytes have version 1's layout)
//!  0      4        5        6          8          10          12          28          32        36         40
//!  +------+--------+--------+----------+----------+-----------+-----------+-----------+---------+----------+
//!  |"MTMX"|version | kind / | tunnel   | tunnel   | flags /   | bundle id | max frame | stream  | session  |
//!  |      |        | status | index    | count    | trailer len|          |           | window  | window   |
//!  +------+--------+--------+----------+----------+-----------+-----------+-----------+---------+----------+
//! extension (version 2)
//!  40           44         48                     64
//!  +------------+----------+----------------------+
//!  | generation | reserved | nonce (16 bytes)     |
//!  +------------+----------+----------------------+
//! ```
//!
//! A JOIN starts a new bundle (generation 0); a REJOIN replaces one tunnel of a running
//! session with a new connection (generation ≥ 1) after proving knowledge of the session's
//! secret (see [`super::auth`]):
//!
//! ```text
//! client                                   server
//!   HELLO(REJOIN, bundle, index, gen, cn) ──▶
//!                                       ◀── REPLY(Challenge, sn) + server proof (32)
//!   client proof (32)                   ──▶
//!                                       ◀── REPLY(Accept) or a refusal
//! ```
//!
//! Pure encode/decode; the socket side lives in `crate::listener` and `crate::session`.

use byteorder::{BigEndian, ByteOrder};
use std::fmt;

/// Magic bytes that open every HELLO and REPLY.
pub const MAGIC: [u8; 4] = *b"MTMX";
/// Handshake version spoken by this implementation.
pub const HANDSHAKE_VERSION: u8 = 2;
/// Length of the part of HELLO and REPLY that every version shares (magic and version first).
pub const COMMON_LEN: usize = 40;
/// Length of version 2's extension after the common part.
pub const EXT_LEN: usize = 24;
/// Length of a whole HELLO (and of a REPLY before its trailer).
pub const HELLO_LEN: usize = COMMON_LEN + EXT_LEN;
/// Longest refusal reason carried by a REPLY.
pub const MAX_REASON_LEN: usize = 255;
/// Length of the nonces each side contributes.
pub const NONCE_LEN: usize = 16;
/// Length of a re-join proof (HMAC-SHA256).
pub const PROOF_LEN: usize = 32;
/// HELLO flag: the client re-dials lost tunnels, so the server should keep the session
/// through an outage (for `resume_timeout`) rather than end it with its last tunnel.
pub const HELLO_FLAG_REJOIN: u16 = 0x0001;
/// HELLO flag: the client holds a pre-shared key. A JOIN then runs the key challenge (see
/// [`super::auth`]) before the tunnel joins its bundle; a server without a key refuses it
/// ([`Status::NoKey`]), and a server with a key refuses a HELLO without the flag
/// ([`Status::KeyRequired`]).
pub const HELLO_FLAG_KEY: u16 = 0x0002;
/// Every HELLO flag this implementation knows.
pub const HELLO_FLAGS: u16 = HELLO_FLAG_REJOIN | HELLO_FLAG_KEY;

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
    /// Join a new bundle.
    Join = 1,
    /// Replace one tunnel of a running session (after a tunnel failure, or to resume a
    /// session that lost every tunnel).
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
    /// Feature flags ([`HELLO_FLAG_REJOIN`], [`HELLO_FLAG_KEY`]).
    pub flags: u16,
    /// The client's parameters.
    pub params: Params,
    /// Which connection of the slot this is: 0 for a JOIN, ≥ 1 for a REJOIN.
    pub generation: u32,
    /// The client's fresh random contribution: to the session secret (JOIN; the same on
    /// every tunnel of the bundle) or to the re-join proof (REJOIN).
    pub nonce: [u8; NONCE_LEN],
}

/// REPLY status. Values are part of the wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The tunnel joined (the bundle is complete: the session starts) or re-joined.
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
    /// The request is not supported.
    Unsupported = 8,
    /// The server is shutting down.
    Closing = 9,
    /// Prove knowledge of the pre-shared key (JOIN with [`HELLO_FLAG_KEY`]) or of the session
    /// secret (REJOIN); the trailer is the server's proof.
    Challenge = 10,
    /// REJOIN: the server has no such session (it ended, expired, or the server restarted).
    UnknownSession = 11,
    /// REJOIN: the client's proof is wrong.
    BadProof = 12,
    /// REJOIN: the generation is not newer than the slot's current one.
    StaleGeneration = 13,
    /// The server requires a pre-shared key and the HELLO lacks [`HELLO_FLAG_KEY`].
    KeyRequired = 14,
    /// The HELLO has [`HELLO_FLAG_KEY`] but the server has no pre-shared key.
    NoKey = 15,
    /// JOIN: the server is at its limit of open sessions
    /// ([`Listener::set_max_sessions`](crate::Listener::set_max_sessions)); try later.
    SessionLimit = 16,
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
            10 => Status::Challenge,
            11 => Status::UnknownSession,
            12 => Status::BadProof,
            13 => Status::StaleGeneration,
            14 => Status::KeyRequired,
            15 => Status::NoKey,
            16 => Status::SessionLimit,
            _ => Status::Malformed,
        }
    }
}

/// The server's answer on one tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Accept, challenge or the refusal reason.
    pub status: Status,
    /// Echo of the tunnel index.
    pub index: u16,
    /// Echo of the tunnel count.
    pub count: u16,
    /// Echo of the bundle id.
    pub bundle: BundleId,
    /// The server's parameters (meaningful when accepted).
    pub params: Params,
    /// Echo of the HELLO's generation.
    pub generation: u32,
    /// The server's fresh random contribution (JOIN accept: to the session secret, the same
    /// on every tunnel; REJOIN challenge: to the proofs); zero in a refusal.
    pub nonce: [u8; NONCE_LEN],
    /// What follows the fixed part: a refusal's UTF-8 reason, a challenge's proof.
    pub trailer: Vec<u8>,
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
            HandshakeError::BadMagic(m) => match speaks(m) {
                Some(what) => write!(f, "not an mtmux peer (it speaks {what})"),
                None => write!(
                    f,
                    "not an mtmux peer (its first bytes are {:02x} {:02x} {:02x} {:02x})",
                    m[0], m[1], m[2], m[3]
                ),
            },
            HandshakeError::BadVersion(v) => {
                write!(f, "handshake version {v} (this side speaks {HANDSHAKE_VERSION})")
            }
            HandshakeError::BadKind(k) => write!(f, "unknown handshake kind {k}"),
            HandshakeError::Malformed(why) => write!(f, "malformed handshake: {why}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The protocol that first bytes `m` announce, when they are a well-known one's.
fn speaks(m: &[u8; 4]) -> Option<&'static str> {
    match m {
        [b'S', b'S', b'H', b'-'] => Some("SSH"),
        [b'H', b'T', b'T', b'P'] => Some("HTTP"),
        // A TLS record (handshake or alert) of version 3.x.
        [0x15 | 0x16, 0x03, ..] => Some("TLS"),
        [b'2', b'2', b'0', b' ' | b'-'] => Some("SMTP or FTP"),
        [b'+', b'O', b'K', _] => Some("POP3"),
        [b'*', b' ', b'O', b'K'] => Some("IMAP"),
        _ => None,
    }
}

/// Check the magic of a HELLO or REPLY's common part and return its version byte (any
/// version: the caller decides what to do with one it does not speak).
pub fn check_prefix(b: &[u8; COMMON_LEN]) -> Result<u8, HandshakeError> {
    if b[0..4] != MAGIC {
        return Err(HandshakeError::BadMagic([b[0], b[1], b[2], b[3]]));
    }
    Ok(b[4])
}

#[allow(clippy::too_many_arguments)]
fn write_common(
    b: &mut [u8],
    version: u8,
    kind: u8,
    index: u16,
    count: u16,
    word: u16,
    bundle: &BundleId,
    p: &Params,
) {
    b[0..4].copy_from_slice(&MAGIC);
    b[4] = version;
    b[5] = kind;
    BigEndian::write_u16(&mut b[6..8], index);
    BigEndian::write_u16(&mut b[8..10], count);
    BigEndian::write_u16(&mut b[10..12], word);
    b[12..28].copy_from_slice(&bundle.0);
    BigEndian::write_u32(&mut b[28..32], p.max_frame);
    BigEndian::write_u32(&mut b[32..36], p.stream_window);
    BigEndian::write_u32(&mut b[36..40], p.session_window);
}

fn write_ext(b: &mut [u8], generation: u32, nonce: &[u8; NONCE_LEN]) {
    BigEndian::write_u32(&mut b[40..44], generation);
    b[48..64].copy_from_slice(nonce);
}

fn read_params(b: &[u8]) -> Params {
    Params {
        max_frame: BigEndian::read_u32(&b[28..32]),
        stream_window: BigEndian::read_u32(&b[32..36]),
        session_window: BigEndian::read_u32(&b[36..40]),
    }
}

fn read_bundle(b: &[u8]) -> BundleId {
    let mut id = [0u8; 16];
    id.copy_from_slice(&b[12..28]);
    BundleId(id)
}

impl Hello {
    /// Encode into the 64-byte form.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut b = [0u8; HELLO_LEN];
        let v = HANDSHAKE_VERSION;
        write_common(
            &mut b,
            v,
            self.kind as u8,
            self.index,
            self.count,
            self.flags,
            &self.bundle,
            &self.params,
        );
        write_ext(&mut b, self.generation, &self.nonce);
        b
    }

    /// Decode and validate a version 2 HELLO.
    pub fn decode(b: &[u8; HELLO_LEN]) -> Result<Hello, HandshakeError> {
        let version = check_prefix(b[..COMMON_LEN].try_into().expect("len"))?;
        if version != HANDSHAKE_VERSION {
            return Err(HandshakeError::BadVersion(version));
        }
        let kind = match b[5] {
            1 => HelloKind::Join,
            2 => HelloKind::Rejoin,
            k => return Err(HandshakeError::BadKind(k)),
        };
        let flags = BigEndian::read_u16(&b[10..12]);
        if flags & !HELLO_FLAGS != 0 {
            return Err(HandshakeError::Malformed("unknown flags"));
        }
        if b[44..48] != [0; 4] {
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
        let generation = BigEndian::read_u32(&b[40..44]);
        if (kind == HelloKind::Join) != (generation == 0) {
            return Err(HandshakeError::Malformed("a JOIN has generation 0, a REJOIN a later one"));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&b[48..64]);
        Ok(Hello { kind, bundle: read_bundle(b), index, count, flags, params, generation, nonce })
    }
}

impl Reply {
    fn new(hello: Option<&Hello>, status: Status, params: Params, nonce: [u8; NONCE_LEN]) -> Reply {
        Reply {
            status,
            index: hello.map_or(0, |h| h.index),
            count: hello.map_or(0, |h| h.count),
            bundle: hello.map_or(BundleId([0; 16]), |h| h.bundle),
            params,
            generation: hello.map_or(0, |h| h.generation),
            nonce,
            trailer: Vec::new(),
        }
    }

    /// An acceptance of `hello` carrying the server's parameters and nonce.
    pub fn accept(hello: &Hello, params: Params, nonce: [u8; NONCE_LEN]) -> Reply {
        Reply::new(Some(hello), Status::Accept, params, nonce)
    }

    /// A challenge (key or re-join): the server's fresh nonce and its own proof.
    pub fn challenge(hello: &Hello, nonce: [u8; NONCE_LEN], proof: [u8; PROOF_LEN]) -> Reply {
        let zero = Params { max_frame: 0, stream_window: 0, session_window: 0 };
        let mut r = Reply::new(Some(hello), Status::Challenge, zero, nonce);
        r.trailer = proof.to_vec();
        r
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
        let mut r = Reply::new(hello, status, zero, [0; NONCE_LEN]);
        r.trailer = reason.into_bytes();
        r
    }

    /// The trailer read as a refusal reason (invalid UTF-8 is replaced).
    pub fn reason(&self) -> String {
        String::from_utf8_lossy(&self.trailer).into_owned()
    }

    /// Encode: the fixed part followed by the trailer.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; HELLO_LEN];
        let trailer = &self.trailer[..self.trailer.len().min(MAX_REASON_LEN)];
        let v = HANDSHAKE_VERSION;
        let len = trailer.len() as u16;
        write_common(&mut b, v, self.status as u8, self.index, self.count, len, &self.bundle, &self.params);
        write_ext(&mut b, self.generation, &self.nonce);
        b.extend_from_slice(trailer);
        b
    }

    /// Encode a refusal in version 1's layout (40 bytes and the reason), so that a version 1
    /// client can read why it is refused.
    pub fn encode_v1(&self) -> Vec<u8> {
        let mut v = self.encode();
        v[4] = 1;
        v.drain(COMMON_LEN..HELLO_LEN);
        v
    }

    /// Decode the common part; returns the reply (empty trailer), its version (1: a version 1
    /// server, whose reply has no extension: only its status and reason mean anything), and
    /// the number of trailer bytes that follow. For version 2 the caller reads the extension
    /// next and passes it to [`Reply::set_ext`], then reads the trailer.
    pub fn decode_common(b: &[u8; COMMON_LEN]) -> Result<(Reply, u8, usize), HandshakeError> {
        let version = check_prefix(b)?;
        if version != 1 && version != HANDSHAKE_VERSION {
            return Err(HandshakeError::BadVersion(version));
        }
        let trailer_len = BigEndian::read_u16(&b[10..12]) as usize;
        if trailer_len > MAX_REASON_LEN {
            return Err(HandshakeError::Malformed("reply trailer too long"));
        }
        let reply = Reply {
            status: Status::from_u8(b[5]),
            index: BigEndian::read_u16(&b[6..8]),
            count: BigEndian::read_u16(&b[8..10]),
            bundle: read_bundle(b),
            params: read_params(b),
            generation: 0,
            nonce: [0; NONCE_LEN],
            trailer: Vec::new(),
        };
        Ok((reply, version, trailer_len))
    }

    /// Apply version 2's extension (the 24 bytes after the common part).
    pub fn set_ext(&mut self, ext: &[u8; EXT_LEN]) {
        self.generation = BigEndian::read_u32(&ext[0..4]);
        self.nonce.copy_from_slice(&ext[8..24]);
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
            flags: HELLO_FLAG_REJOIN,
            params: Params { max_frame: 65536, stream_window: 1 << 20, session_window: 1 << 26 },
            generation: 0,
            nonce: [9; NONCE_LEN],
        }
    }

    fn decode_reply(bytes: &[u8]) -> Reply {
        let (mut r, v, n) = Reply::decode_common(bytes[..COMMON_LEN].try_into().unwrap()).unwrap();
        assert_eq!(v, HANDSHAKE_VERSION);
        r.set_ext(bytes[COMMON_LEN..HELLO_LEN].try_into().unwrap());
        r.trailer = bytes[HELLO_LEN..HELLO_LEN + n].to_vec();
        r
    }

    /// The byte-for-byte example of docs/PROTOCOL.md §2.3 (a keyed JOIN and its challenge).
    #[test]
    fn keyed_join_bytes_match_the_protocol_document() {
        let d = crate::Config::default().params();
        let h = Hello {
            kind: HelloKind::Join,
            bundle: BundleId([0xbb; 16]),
            index: 0,
            count: 1,
            flags: HELLO_FLAG_REJOIN | HELLO_FLAG_KEY,
            params: d,
            generation: 0,
            nonce: [0xcc; 16],
        };
        let b = h.encode();
        assert_eq!(b[..12], [0x4d, 0x54, 0x4d, 0x58, 2, 1, 0, 0, 0, 1, 0, 3]);
        assert_eq!(b[28..48], [0, 1, 0, 0, 0, 0x10, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let c = Reply::challenge(&h, [0xdd; 16], [0xee; 32]).encode();
        assert_eq!(c[..12], [0x4d, 0x54, 0x4d, 0x58, 2, 0x0a, 0, 0, 0, 1, 0, 0x20]);
        assert_eq!(c[28..48], [0; 20]);
        assert_eq!(c[48..64], [0xdd; 16]);
        assert_eq!(c[64..], [0xee; 32]);
    }

    #[test]
    fn hello_round_trips() {
        let h = hello();
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
    }

    #[test]
    fn garbage_is_not_a_hello() {
        let mut b = [0u8; HELLO_LEN];
        b[..39].copy_from_slice(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n\0\0");
        assert!(matches!(Hello::decode(&b), Err(HandshakeError::BadMagic(_))));
        let named = |m: &[u8; 4]| HandshakeError::BadMagic(*m).to_string();
        assert_eq!(named(b"SSH-"), "not an mtmux peer (it speaks SSH)");
        assert_eq!(named(b"HTTP"), "not an mtmux peer (it speaks HTTP)");
        assert_eq!(named(&[0x16, 3, 1, 0]), "not an mtmux peer (it speaks TLS)");
        assert_eq!(named(&[0, 1, 0xab, 0x7f]), "not an mtmux peer (its first bytes are 00 01 ab 7f)");
    }

    #[test]
    fn rejoin_needs_a_later_generation_and_join_generation_zero() {
        let mut h = hello();
        h.kind = HelloKind::Rejoin;
        assert!(matches!(Hello::decode(&h.encode()), Err(HandshakeError::Malformed(_))));
        h.generation = 3;
        assert_eq!(Hello::decode(&h.encode()), Ok(h));
        let mut j = hello();
        j.generation = 1;
        assert!(Hello::decode(&j.encode()).is_err());
    }

    #[test]
    fn version_1_hello_is_told_apart_and_refused_in_its_own_layout() {
        let mut b = hello().encode();
        b[4] = 1;
        assert_eq!(check_prefix(b[..COMMON_LEN].try_into().unwrap()), Ok(1));
        assert_eq!(Hello::decode(&b), Err(HandshakeError::BadVersion(1)));
        let v1 = Reply::refuse(None, Status::BadVersion, "speak 2").encode_v1();
        assert_eq!(v1.len(), COMMON_LEN + 7);
        let (r, version, n) = Reply::decode_common(v1[..COMMON_LEN].try_into().unwrap()).unwrap();
        assert_eq!((version, r.status, n), (1, Status::BadVersion, 7));
        assert_eq!(&v1[COMMON_LEN..], b"speak 2");
    }

    #[test]
    fn challenge_carries_nonce_and_proof() {
        let mut h = hello();
        h.kind = HelloKind::Rejoin;
        h.generation = 2;
        let r = Reply::challenge(&h, [5; NONCE_LEN], [6; PROOF_LEN]);
        let back = decode_reply(&r.encode());
        assert_eq!(back, r);
        assert_eq!(back.generation, 2);
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
        let back = decode_reply(&r.encode());
        assert_eq!(back.reason(), "got 1 of 4 tunnels");
        assert_eq!(back, r);
    }

    #[test]
    fn long_reasons_are_truncated_on_a_char_boundary() {
        let r = Reply::refuse(None, Status::Busy, "é".repeat(200));
        assert!(r.trailer.len() <= MAX_REASON_LEN);
        assert!(r.encode().len() <= HELLO_LEN + MAX_REASON_LEN);
    }

    proptest! {
        #[test]
        fn arbitrary_hello_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), HELLO_LEN)) {
            let b: [u8; HELLO_LEN] = v.try_into().unwrap();
            if let Ok(h) = Hello::decode(&b) {
                prop_assert_eq!(h.encode(), b);
            }
            let _ = Reply::decode_common(b[..COMMON_LEN].try_into().unwrap());
        }

        #[test]
        fn accept_round_trips(index in 0u16..100, extra in 1u16..100, mf in 1u32.., sw in 1u32.., ss in 1u32..) {
            let mut h = hello();
            h.index = index;
            h.count = index + extra;
            let r = Reply::accept(&h, Params { max_frame: mf, stream_window: sw, session_window: ss }, [3; NONCE_LEN]);
            let bytes = r.encode();
            prop_assert_eq!(bytes.len(), HELLO_LEN);
            prop_assert_eq!(decode_reply(&bytes), r);
        }
    }
}
