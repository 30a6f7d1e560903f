//! Spec models: what docs/PROTOCOL.md says a receiver must accept, written from the tables of
//! §2.1 and §3 rather than from the library's code.

/// A rule of §3.1 that a frame header breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrKind {
    /// Version other than 2.
    Version,
    /// Unknown command.
    Command,
    /// Non-zero sequence on a command other than DATA.
    Sequence,
    /// DATA payload above the receiver's max frame.
    TooLong,
    /// Payload length that does not fit the command (or an empty DATA without OPEN/FIN).
    Length,
    /// Stream id 0 where a stream is required, or non-zero where 0 is required.
    Stream,
    /// Flags the command does not define.
    Flags,
}

/// Whether a 16-byte header is valid for a receiver announcing `max_frame`; otherwise every
/// rule it breaks (a decoder may report any one of them).
pub fn spec_check_header(b: &[u8; 16], max_frame: u32) -> Result<(), Vec<ErrKind>> {
    if b[0] != 2 {
        return Err(vec![ErrKind::Version]);
    }
    let flags = u16::from_be_bytes([b[2], b[3]]);
    let stream = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let seq = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    let len = u32::from_be_bytes([b[12], b[13], b[14], b[15]]);
    // §3.2 table: (stream rule, payload length, allowed flags); None: any stream / any length.
    enum StreamRule {
        NonZero,
        Any,
        Zero,
    }
    let (rule, fixed_len, allowed_flags): (StreamRule, Option<u32>, u16) = match b[1] {
        0 => (StreamRule::NonZero, None, 0x0003),
        1 => (StreamRule::Any, Some(8), 0),
        2 => (StreamRule::NonZero, Some(4), 0),
        3 | 4 => (StreamRule::Zero, Some(8), 0),
        5 => (StreamRule::Zero, Some(4), 0),
        7 => (StreamRule::Zero, Some(16), 0),
        _ => return Err(vec![ErrKind::Command]),
    };
    let mut broken = Vec::new();
    if b[1] != 0 && seq != 0 {
        broken.push(ErrKind::Sequence);
    }
    let stream_ok = match rule {
        StreamRule::NonZero => stream != 0,
        StreamRule::Any => true,
        StreamRule::Zero => stream == 0,
    };
    if !stream_ok {
        broken.push(ErrKind::Stream);
    }
    if flags & !allowed_flags != 0 {
        broken.push(ErrKind::Flags);
    }
    match fixed_len {
        Some(l) if len != l => broken.push(ErrKind::Length),
        Some(_) => {}
        None => {
            if len > max_frame {
                broken.push(ErrKind::TooLong);
            }
            if len == 0 && flags & 0x0003 == 0 {
                broken.push(ErrKind::Length);
            }
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(broken)
    }
}

/// Whether 64 bytes are a HELLO that `Hello::decode` must accept (§2.1 field by field, with
/// the checks that need no configuration: parameters only need to be non-zero here, their
/// ranges are the server's to check).
pub fn spec_hello_valid(b: &[u8; 64]) -> bool {
    let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let kind_ok = match b[5] {
        1 => u32_at(40) == 0,
        2 => u32_at(40) >= 1,
        _ => false,
    };
    &b[0..4] == b"MTMX"
        && b[4] == 2
        && kind_ok
        && u16_at(8) >= 1
        && u16_at(6) < u16_at(8)
        // §2.1 flags: bit 0 REJOIN-CAPABLE, bit 1 KEY; other bits 0.
        && u16_at(10) & !3 == 0
        && u32_at(28) != 0
        && u32_at(32) != 0
        && u32_at(36) != 0
        && b[44..48] == [0; 4]
}
