//! Seed corpora made with the library's encoders, so that they stay valid when the protocol
//! changes: frames (each command, DATA with every flag combination), handshakes (HELLO,
//! accept, challenge, refusals in both versions) and whole sessions (streams opened, written,
//! finished and reset; windows, pings, acks, goaway; a few classic protocol violations).

use mtmux::proto::frame::{Control, Header, FLAG_FIN, FLAG_OPEN};
use mtmux::proto::handshake::{BundleId, Hello, HelloKind, Params, Reply, Status, HELLO_FLAG_REJOIN};
use std::io;
use std::path::Path;

fn data(stream: u32, seq: u32, flags: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Header::data(stream, seq, flags, payload.len() as u32).encode().to_vec();
    v.extend_from_slice(payload);
    v
}

fn controls() -> Vec<Control> {
    vec![
        Control::Window { stream: 0, limit: 1 << 20 },
        Control::Window { stream: 1, limit: 8192 },
        Control::Reset { stream: 1, code: 1 },
        Control::Ping(42),
        Control::Pong(42),
        Control::GoAway(0),
        Control::Ack { tunnel: 0, generation: 0, frames: 3 },
    ]
}

/// Frame target inputs: three bytes of the receiver's max frame, then frames.
fn frame_seeds() -> Vec<Vec<u8>> {
    let max = [0x00, 0x04, 0x00]; // 1024
    let mut out = Vec::new();
    for c in controls() {
        out.push([&max[..], &c.encode()].concat());
    }
    for flags in 0..4u16 {
        out.push([&max[..], &data(1, flags as u32, flags, b"hello")].concat());
    }
    out.push([&max[..], &data(1, 0, FLAG_OPEN | FLAG_FIN, b"")].concat());
    let mut stream = max.to_vec();
    stream.extend(data(3, 0, FLAG_OPEN, b"abc"));
    for c in controls() {
        c.encode_into(&mut stream);
    }
    stream.extend(data(3, 1, FLAG_FIN, b"def"));
    out.push(stream);
    // Header of an ACK with its reserved bytes set.
    let mut ack = Control::Ack { tunnel: 1, generation: 2, frames: 3 }.encode();
    ack[16 + 2] = 1;
    out.push([&max[..], &ack].concat());
    out
}

fn hello(kind: HelloKind) -> Hello {
    Hello {
        kind,
        bundle: BundleId(*b"seed-bundle-0001"),
        index: 1,
        count: 4,
        flags: HELLO_FLAG_REJOIN,
        params: Params { max_frame: 65536, stream_window: 1 << 20, session_window: 1 << 26 },
        generation: if kind == HelloKind::Join { 0 } else { 3 },
        nonce: [9; 16],
    }
}

fn handshake_seeds() -> Vec<Vec<u8>> {
    let join = hello(HelloKind::Join);
    let rejoin = hello(HelloKind::Rejoin);
    vec![
        join.encode().to_vec(),
        rejoin.encode().to_vec(),
        Reply::accept(&join, join.params, [5; 16]).encode(),
        Reply::challenge(&rejoin, [6; 16], [7; 32]).encode(),
        Reply::refuse(Some(&join), Status::Incomplete, "only 1 of 4 tunnels arrived").encode(),
        Reply::refuse(None, Status::BadVersion, "this server speaks version 2").encode_v1(),
    ]
}

/// Session target inputs: frames after the harness's JOIN (and two whole handshakes).
fn session_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    // One stream: open, data, fin.
    out.push([data(1, 0, FLAG_OPEN, b"hello"), data(1, 1, FLAG_FIN, b" world")].concat());
    // Out of order, on two streams, with session frames between.
    let mut v = data(3, 1, 0, b"second");
    v.extend(data(1, 0, FLAG_OPEN | FLAG_FIN, b"short"));
    for c in controls() {
        c.encode_into(&mut v);
    }
    v.extend(data(3, 0, FLAG_OPEN, b"first"));
    v.extend(data(3, 2, FLAG_FIN, b""));
    out.push(v);
    // A stream reset by the peer, then GOAWAY.
    let mut v = data(5, 0, FLAG_OPEN, &[1; 1000]);
    Control::Reset { stream: 5, code: 2 }.encode_into(&mut v);
    Control::GoAway(0).encode_into(&mut v);
    out.push(v);
    // Keepalive and acknowledgements only.
    let mut v = Vec::new();
    for c in [Control::Ping(1), Control::Ack { tunnel: 0, generation: 0, frames: 0 }, Control::Pong(7)] {
        c.encode_into(&mut v);
    }
    out.push(v);
    // More than the frame reader's 8 KiB read-ahead, within the session window and the accept
    // backlog: frames straddle reads.
    let mut v = Vec::new();
    for seq in 0..3u32 {
        for stream in [1u32, 3, 5, 7] {
            let flags = [FLAG_OPEN, 0, FLAG_FIN][seq as usize];
            v.extend(data(stream, seq, flags, &[stream as u8; 1000]));
        }
    }
    out.push(v);
    // Violations: a stream id of the server's parity, a window overrun, a duplicate sequence.
    out.push(data(2, 0, FLAG_OPEN, b"even"));
    let mut v = Vec::new();
    for seq in 0..5 {
        v.extend(data(1, seq, if seq == 0 { FLAG_OPEN } else { 0 }, &[seq as u8; 1024]));
    }
    out.push(v);
    out.push([data(1, 0, FLAG_OPEN, b"a"), data(1, 0, FLAG_OPEN, b"a")].concat());
    // Whole handshakes (the input starts with the magic).
    let mut h = crate::session::hello().encode().to_vec();
    h.extend(data(1, 0, FLAG_OPEN | FLAG_FIN, b"x"));
    out.push(h);
    let mut bad = crate::session::hello();
    bad.params.max_frame = 10;
    out.push(bad.encode().to_vec());
    out
}

/// Write every seed corpus under `dir`; returns the number of files.
pub fn write_all(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    for (target, seeds) in
        [("frame", frame_seeds()), ("handshake", handshake_seeds()), ("session", session_seeds())]
    {
        let d = dir.join(target);
        std::fs::create_dir_all(&d)?;
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(d.join(format!("seed-{i:02}")), s)?;
            n += 1;
        }
    }
    Ok(n)
}
