//! The bench's own little protocol, spoken on every stream (and on the plain TCP baseline
//! connection): the client sends a 16-byte request, then both sides send data as the request
//! says and half-close when done.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `MTB1` |
//! | 4 | 1 | op: 0 info, 1 up, 2 down, 3 both |
//! | 5 | 1 | limit: 0 bytes, 1 milliseconds |
//! | 6 | 2 | reserved, 0 |
//! | 8 | 8 | limit value (big-endian) |
//!
//! An info request is answered with 2 bytes: the server's plain TCP baseline port (0: none).

use crate::args::Direction;
use std::time::Duration;

/// Length of a request.
pub const REQUEST_LEN: usize = 16;
const MAGIC: &[u8; 4] = b"MTB1";

/// What the client asks for on one stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Where is the plain TCP baseline?
    Info,
    /// Send data in `direction` until `limit` (per direction, for this stream).
    Transfer { direction: Direction, limit: Limit },
}

/// When a sender stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// After this many bytes.
    Bytes(u64),
    /// After this long (from when it starts sending).
    Time(Duration),
}

impl Request {
    /// The 16 bytes on the wire.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[..4].copy_from_slice(MAGIC);
        let (op, kind, value) = match *self {
            Request::Info => (0, 0, 0),
            Request::Transfer { direction, limit } => {
                let op = match direction {
                    Direction::Up => 1,
                    Direction::Down => 2,
                    Direction::Both => 3,
                };
                match limit {
                    Limit::Bytes(n) => (op, 0, n),
                    Limit::Time(d) => (op, 1, d.as_millis().min(u64::MAX as u128) as u64),
                }
            }
        };
        b[4] = op;
        b[5] = kind;
        b[8..].copy_from_slice(&value.to_be_bytes());
        b
    }

    /// Parse a request; the error says what is wrong.
    pub fn decode(b: &[u8; REQUEST_LEN]) -> Result<Request, String> {
        if &b[..4] != MAGIC {
            return Err("not an mtmux bench request (bad magic)".into());
        }
        let value = u64::from_be_bytes(b[8..].try_into().expect("8 bytes"));
        let limit = match b[5] {
            0 => Limit::Bytes(value),
            1 => Limit::Time(Duration::from_millis(value)),
            k => return Err(format!("unknown limit kind {k}")),
        };
        let direction = match b[4] {
            0 => return Ok(Request::Info),
            1 => Direction::Up,
            2 => Direction::Down,
            3 => Direction::Both,
            op => return Err(format!("unknown op {op}")),
        };
        Ok(Request::Transfer { direction, limit })
    }
}

impl std::fmt::Display for Request {
    /// `info`, `up 1.0 GB`, `both for 10s`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Info => f.write_str("info"),
            Request::Transfer { direction, limit: Limit::Bytes(n) } => {
                write!(f, "{direction} {}", crate::units::fmt_bytes(*n))
            }
            Request::Transfer { direction, limit: Limit::Time(d) } => write!(f, "{direction} for {d:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let cases = [
            Request::Info,
            Request::Transfer { direction: Direction::Up, limit: Limit::Bytes(123_456_789_012) },
            Request::Transfer { direction: Direction::Down, limit: Limit::Time(Duration::from_millis(2500)) },
            Request::Transfer { direction: Direction::Both, limit: Limit::Bytes(1) },
        ];
        for r in cases {
            assert_eq!(Request::decode(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn garbage_is_rejected() {
        let mut b = Request::Info.encode();
        b[0] = b'X';
        assert!(Request::decode(&b).is_err());
        let mut b = Request::Info.encode();
        b[4] = 9;
        assert!(Request::decode(&b).unwrap_err().contains("op"));
        let mut b = Request::Info.encode();
        b[5] = 7;
        assert!(Request::decode(&b).unwrap_err().contains("limit"));
    }
}
