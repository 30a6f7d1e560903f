//! Plain handshake (`mtmux::proto::handshake`): HELLO and REPLY decoding against the spec
//! model of docs/PROTOCOL.md §2.1–2.2, and encode/decode round trips.
//!
//! Checks, on every input:
//! 1. The first 64 bytes as a HELLO: `Hello::decode` never panics, accepts exactly what the
//!    model accepts, and what it accepts re-encodes to the same bytes; `check_prefix` agrees
//!    with the magic.
//! 2. The input as a REPLY: `Reply::decode_common` never panics, refuses bad magic, versions
//!    other than 1 and 2 and trailers over 255 bytes; a version 2 reply with a known status
//!    and zero reserved bytes re-encodes (`set_ext`, trailer) to exactly its bytes.
//! 3. Structured: arbitrary `Hello` values round-trip when valid and are refused otherwise;
//!    arbitrary refusals (any reason text) and challenges encode within bounds and decode back
//!    (refusals in version 1's layout too).
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use mtmux::proto::handshake::{
    check_prefix, BundleId, HandshakeError, Hello, HelloKind, Params, Reply, Status, COMMON_LEN, EXT_LEN,
    HANDSHAKE_VERSION, HELLO_LEN, MAGIC, MAX_REASON_LEN, NONCE_LEN, PROOF_LEN,
};
use mtmux_fuzz::model::spec_hello_valid;

fuzz_target!(|data: &[u8]| {
    raw_hello(data);
    raw_reply(data);
    structured(data);
});

fn raw_hello(data: &[u8]) {
    let Some(b) = data.get(..HELLO_LEN) else { return };
    let b: &[u8; HELLO_LEN] = b.try_into().unwrap();
    let common: &[u8; COMMON_LEN] = b[..COMMON_LEN].try_into().unwrap();
    match check_prefix(common) {
        Ok(v) => assert!(b[..4] == MAGIC && v == b[4]),
        Err(e) => assert!(b[..4] != MAGIC && matches!(e, HandshakeError::BadMagic(_))),
    }
    match Hello::decode(b) {
        Ok(h) => {
            assert!(spec_hello_valid(b), "accepted an invalid HELLO {b:02x?}");
            assert_eq!(&h.encode(), b, "an accepted HELLO re-encodes to its bytes");
            assert!(h.index < h.count);
        }
        Err(e) => {
            assert!(!spec_hello_valid(b), "refused a valid HELLO {b:02x?}: {e}");
            assert!(!e.to_string().is_empty());
        }
    }
}

fn status_from(b: u8) -> Option<Status> {
    use Status::*;
    let all = [
        Accept,
        BadVersion,
        Malformed,
        BadParams,
        Busy,
        Incomplete,
        Conflict,
        WrongPort,
        Unsupported,
        Closing,
        Challenge,
        UnknownSession,
        BadProof,
        StaleGeneration,
        KeyRequired,
        NoKey,
        SessionLimit,
    ];
    all.get(b as usize).copied()
}

fn raw_reply(data: &[u8]) {
    let Some(common) = data.get(..COMMON_LEN) else { return };
    let common: &[u8; COMMON_LEN] = common.try_into().unwrap();
    let (mut reply, version, trailer_len) = match Reply::decode_common(common) {
        Ok(r) => r,
        Err(e) => {
            let version_ok = common[4] == 1 || common[4] == HANDSHAKE_VERSION;
            let trailer = u16::from_be_bytes([common[10], common[11]]) as usize;
            assert!(
                common[..4] != MAGIC || !version_ok || trailer > MAX_REASON_LEN,
                "refused a well-formed reply: {e}"
            );
            return;
        }
    };
    assert!(common[..4] == MAGIC && version == common[4]);
    assert!(trailer_len <= MAX_REASON_LEN);
    // Unknown statuses read as Malformed, never as Accept or Challenge.
    assert_eq!(reply.status, status_from(common[5]).unwrap_or(Status::Malformed));
    let ext_len = if version == HANDSHAKE_VERSION { EXT_LEN } else { 0 };
    let Some(rest) = data.get(COMMON_LEN..COMMON_LEN + ext_len + trailer_len) else { return };
    if version == HANDSHAKE_VERSION {
        reply.set_ext(rest[..EXT_LEN].try_into().unwrap());
    }
    reply.trailer = rest[ext_len..].to_vec();
    let _ = reply.reason();
    let canonical = status_from(common[5]).is_some() && (version == 1 || data[44..48] == [0; 4]);
    if canonical {
        let wire = if version == 1 { reply.encode_v1() } else { reply.encode() };
        assert_eq!(wire, data[..COMMON_LEN + ext_len + trailer_len], "a reply re-encodes to its bytes");
    }
}

#[derive(Arbitrary, Debug)]
struct HelloShape {
    rejoin: bool,
    bundle: [u8; 16],
    index: u16,
    count: u16,
    flags: u16,
    params: (u32, u32, u32),
    generation: u32,
    nonce: [u8; NONCE_LEN],
}

#[derive(Arbitrary, Debug)]
enum Step {
    Hello(HelloShape),
    Refusal { status: u8, reason: String, with_hello: bool },
    Challenge { nonce: [u8; NONCE_LEN], proof: [u8; PROOF_LEN] },
    Accept { params: (u32, u32, u32), nonce: [u8; NONCE_LEN] },
}

fn hello_of(s: &HelloShape) -> Hello {
    Hello {
        kind: if s.rejoin { HelloKind::Rejoin } else { HelloKind::Join },
        bundle: BundleId(s.bundle),
        index: s.index,
        count: s.count,
        flags: s.flags,
        params: Params { max_frame: s.params.0, stream_window: s.params.1, session_window: s.params.2 },
        generation: s.generation,
        nonce: s.nonce,
    }
}

/// Decode a whole version 2 REPLY as a client does.
fn decode_reply(wire: &[u8]) -> Reply {
    let (mut r, v, n) = Reply::decode_common(wire[..COMMON_LEN].try_into().unwrap()).expect("own reply");
    assert_eq!(v, HANDSHAKE_VERSION);
    r.set_ext(wire[COMMON_LEN..HELLO_LEN].try_into().unwrap());
    assert_eq!(wire.len(), HELLO_LEN + n, "the trailer length covers the rest");
    r.trailer = wire[HELLO_LEN..].to_vec();
    r
}

fn structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(steps) = Vec::<Step>::arbitrary(&mut u) else { return };
    // The last HELLO that decoded: replies echo it.
    let mut last: Option<Hello> = None;
    for step in steps.iter().take(32) {
        match step {
            Step::Hello(s) => {
                let h = hello_of(s);
                let wire = h.encode();
                let valid = spec_hello_valid(&wire);
                match Hello::decode(&wire) {
                    Ok(back) => {
                        assert!(valid);
                        assert_eq!(back, h);
                        last = Some(h);
                    }
                    Err(_) => assert!(!valid, "{h:?} must decode"),
                }
            }
            Step::Refusal { status, reason, with_hello } => {
                let status = status_from(*status).unwrap_or(Status::Malformed);
                let hello = if *with_hello { last.as_ref() } else { None };
                let r = Reply::refuse(hello, status, reason.clone());
                assert!(r.trailer.len() <= MAX_REASON_LEN);
                assert!(reason.as_bytes().starts_with(&r.trailer), "truncated, not rewritten");
                assert!(std::str::from_utf8(&r.trailer).is_ok(), "cut on a character boundary");
                assert!(reason.len() > MAX_REASON_LEN || r.trailer.len() == reason.len());
                let wire = r.encode();
                assert!(wire.len() <= HELLO_LEN + MAX_REASON_LEN);
                assert_eq!(decode_reply(&wire), r);
                assert_eq!(r.reason(), String::from_utf8(r.trailer.clone()).unwrap());
                // The version 1 layout: 40 bytes and the reason.
                let v1 = r.encode_v1();
                let (back, version, n) = Reply::decode_common(v1[..COMMON_LEN].try_into().unwrap()).unwrap();
                assert_eq!((version, back.status, n), (1, status, r.trailer.len()));
                assert_eq!(&v1[COMMON_LEN..], &r.trailer[..]);
            }
            Step::Challenge { nonce, proof } => {
                let Some(h) = last else { continue };
                let r = Reply::challenge(&h, *nonce, *proof);
                let back = decode_reply(&r.encode());
                assert_eq!(back, r);
                assert_eq!(
                    (back.index, back.count, back.bundle, back.generation),
                    (h.index, h.count, h.bundle, h.generation)
                );
                assert_eq!(back.trailer, proof.to_vec());
            }
            Step::Accept { params, nonce } => {
                let Some(h) = last else { continue };
                let p = Params { max_frame: params.0, stream_window: params.1, session_window: params.2 };
                let r = Reply::accept(&h, p, *nonce);
                let back = decode_reply(&r.encode());
                assert_eq!(back, r);
                assert!(back.trailer.is_empty() && back.status == Status::Accept);
            }
        }
    }
}
