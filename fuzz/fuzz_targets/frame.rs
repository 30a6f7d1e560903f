//! Frame codec (`mtmux::proto::frame`): arbitrary bytes against a model of docs/PROTOCOL.md §3.
//!
//! Checks, on every input:
//! 1. `Header::decode` of any 16 bytes never panics and accepts exactly what the spec model
//!    accepts (with the same error kind); whatever it accepts re-encodes to the same bytes.
//! 2. `Control::decode` of a valid control header and any payload never panics; whatever it
//!    accepts re-encodes to the same bytes.
//! 3. Re-framing: the input read as a byte stream and cut into frames one after another
//!    (header, then `len` payload bytes, as a tunnel reader does) re-encodes to exactly the
//!    bytes consumed, stops at the first invalid frame, and never reads past the input.
//! 4. Structured round trip: arbitrary `Control` values and DATA headers encode to frames that
//!    decode back to themselves when the spec allows them, and are refused otherwise.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use mtmux::proto::frame::{
    Cmd, Control, FrameError, Header, ACK_LEN, CONTROL_MAX_LEN, FLAG_FIN, FLAG_OPEN, HEADER_LEN, VERSION,
};
use mtmux_fuzz::model::{spec_check_header, ErrKind};

fuzz_target!(|data: &[u8]| {
    // The receiver's max frame comes from the input too, so that the TooLong edge is explored
    // (the default 64 KiB when the input is short).
    let max_frame = match data {
        [a, b, c, ..] => u32::from_be_bytes([0, *a, *b, *c]).max(1),
        _ => 64 * 1024,
    };
    let body = data.get(3..).unwrap_or(&[]);
    single_frame(body, max_frame);
    reframe(body, max_frame);
    structured(data, max_frame);
});

fn error_kind(e: &FrameError) -> ErrKind {
    match e {
        FrameError::BadVersion(_) => ErrKind::Version,
        FrameError::UnknownCommand(_) => ErrKind::Command,
        FrameError::BadSequence { .. } => ErrKind::Sequence,
        FrameError::TooLong { .. } => ErrKind::TooLong,
        FrameError::BadLength { .. } => ErrKind::Length,
        FrameError::BadStream { .. } => ErrKind::Stream,
        FrameError::BadFlags { .. } => ErrKind::Flags,
    }
}

/// Decode one header and compare with the model; returns it when valid.
fn check_header(raw: &[u8; HEADER_LEN], max_frame: u32) -> Option<Header> {
    let got = Header::decode(raw, max_frame);
    let want = spec_check_header(raw, max_frame);
    match (&got, want) {
        (Ok(h), Ok(())) => {
            assert_eq!(&h.encode(), raw, "an accepted header re-encodes to its bytes");
            assert_eq!(h.encode()[0], VERSION);
            Some(*h)
        }
        (Err(e), Err(kinds)) => {
            // The spec lists violations without an order: any one that applies may be reported.
            assert!(kinds.contains(&error_kind(e)), "{raw:02x?}: library says {e}, model {kinds:?}");
            // Every error has a message (the session reports it).
            assert!(!e.to_string().is_empty());
            None
        }
        (got, want) => panic!("{raw:02x?} (max {max_frame}): library {got:?}, model {want:?}"),
    }
}

fn single_frame(body: &[u8], max_frame: u32) {
    let Some(raw) = body.get(..HEADER_LEN) else { return };
    let raw: &[u8; HEADER_LEN] = raw.try_into().unwrap();
    let Some(h) = check_header(raw, max_frame) else { return };
    if h.cmd == Cmd::Data {
        return;
    }
    // Any payload, of any length, next to a valid control header.
    let payload = &body[HEADER_LEN..];
    match Control::decode(&h, payload) {
        Ok(c) => {
            assert_eq!(payload.len(), h.len as usize);
            let mut wire = raw.to_vec();
            wire.extend_from_slice(payload);
            assert_eq!(c.encode(), wire, "an accepted control frame re-encodes to its bytes");
            assert_eq!(c.counts_in_acks(), mtmux::proto::frame::counts_in_acks(h.cmd));
        }
        Err(e) => {
            let reserved_set =
                h.cmd == Cmd::Ack && payload.len() == ACK_LEN as usize && payload[2..4] != [0, 0];
            assert!(payload.len() != h.len as usize || reserved_set, "{h:?} {payload:02x?}: {e}");
        }
    }
}

/// The input as the byte stream of one tunnel.
fn reframe(stream: &[u8], max_frame: u32) {
    let mut at = 0;
    let mut rebuilt = Vec::with_capacity(stream.len());
    while let Some(raw) = stream.get(at..at + HEADER_LEN) {
        let raw: &[u8; HEADER_LEN] = raw.try_into().unwrap();
        let Some(h) = check_header(raw, max_frame) else { return };
        let end = at + HEADER_LEN + h.len as usize;
        let Some(payload) = stream.get(at + HEADER_LEN..end) else { break };
        if h.cmd == Cmd::Data {
            assert!(h.len <= max_frame);
            rebuilt.extend_from_slice(&h.encode());
            rebuilt.extend_from_slice(payload);
        } else {
            assert!(HEADER_LEN + h.len as usize <= CONTROL_MAX_LEN, "control frames are small");
            match Control::decode(&h, payload) {
                Ok(c) => c.encode_into(&mut rebuilt),
                Err(_) => return,
            }
        }
        at = end;
        assert_eq!(rebuilt, stream[..at], "frames re-encode to the bytes they came from");
    }
}

/// A frame described by fields, including invalid ones.
#[derive(Arbitrary, Debug)]
enum Shape {
    Control(ControlShape),
    Data { stream: u32, seq: u32, open: bool, fin: bool, len: u32 },
}

#[derive(Arbitrary, Debug)]
enum ControlShape {
    Window { stream: u32, limit: u64 },
    Reset { stream: u32, code: u32 },
    Ping(u64),
    Pong(u64),
    GoAway(u32),
    Ack { tunnel: u16, generation: u32, frames: u64 },
}

impl ControlShape {
    fn control(&self) -> Control {
        match *self {
            ControlShape::Window { stream, limit } => Control::Window { stream, limit },
            ControlShape::Reset { stream, code } => Control::Reset { stream, code },
            ControlShape::Ping(t) => Control::Ping(t),
            ControlShape::Pong(t) => Control::Pong(t),
            ControlShape::GoAway(c) => Control::GoAway(c),
            ControlShape::Ack { tunnel, generation, frames } => Control::Ack { tunnel, generation, frames },
        }
    }
}

fn structured(data: &[u8], max_frame: u32) {
    let mut u = Unstructured::new(data);
    let Ok(shapes) = Vec::<Shape>::arbitrary(&mut u) else { return };
    for s in shapes.iter().take(64) {
        match s {
            Shape::Control(cs) => {
                let c = cs.control();
                let wire = c.encode();
                assert!(wire.len() <= CONTROL_MAX_LEN);
                let h = check_header(wire[..HEADER_LEN].try_into().unwrap(), max_frame);
                // Only a RESET of stream 0 is not a valid frame; the encoder writes what it is
                // given and the receiver refuses it.
                let valid = !matches!(c, Control::Reset { stream: 0, .. });
                match h {
                    Some(h) => {
                        assert!(valid, "{c:?} must be refused");
                        assert_eq!(h.len as usize, wire.len() - HEADER_LEN);
                        assert_eq!(Control::decode(&h, &wire[HEADER_LEN..]), Ok(c));
                    }
                    None => assert!(!valid, "{c:?} must decode"),
                }
            }
            &Shape::Data { stream, seq, open, fin, len } => {
                let flags = if open { FLAG_OPEN } else { 0 } | if fin { FLAG_FIN } else { 0 };
                let h = Header::data(stream, seq, flags, len);
                let valid = stream != 0 && len <= max_frame && (len > 0 || flags != 0);
                assert_eq!(check_header(&h.encode(), max_frame) == Some(h), valid, "{h:?}");
            }
        }
    }
}
