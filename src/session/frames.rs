//! Frame decoding on a tunnel's reader thread: an incremental decoder over a blocking
//! connection (plain or TLS) with a read timeout (or, in tests, over any [`ByteSource`]).

use super::pool::BufPool;
use crate::proto::frame::{Cmd, Control, FrameError, Header, CONTROL_MAX_LEN, HEADER_LEN};
use crate::wire::Wire;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Read-ahead buffer of the frame reader.
const READ_BUF: usize = 8 * 1024;

/// A decoded frame.
#[derive(Debug)]
pub(crate) enum Frame {
    /// A DATA frame and its payload.
    Data(Header, Vec<u8>),
    /// Any other frame.
    Control(Control),
}

impl Frame {
    /// If the frame counts in ACKs, its length on the wire.
    pub(crate) fn counted_len(&self) -> Option<usize> {
        match self {
            Frame::Data(_, payload) => Some(HEADER_LEN + payload.len()),
            Frame::Control(c) if c.counts_in_acks() => Some(HEADER_LEN),
            Frame::Control(_) => None,
        }
    }
}

/// Why a tunnel's reader stopped.
pub(crate) enum ReadEnd {
    /// The peer closed the connection.
    Eof,
    /// The session is closing and the tunnel is done.
    Closed,
    /// Nothing arrived within the keepalive timeout.
    Silent(Duration),
    /// An I/O error.
    Io(io::Error),
    /// The peer sent a malformed frame.
    Protocol(String),
    /// This side ended the connection (the text says why).
    Killed(String),
}

/// Where a [`FrameReader`] gets its bytes: a tunnel's socket, or in tests a scripted source
/// (chunks of any size, timeouts between them). Generic, so the socket path costs nothing.
pub(crate) trait ByteSource {
    /// Read up to `max` bytes into the spare capacity of `buf` (which the caller reserved),
    /// extending its length; 0 at end of stream. A read timeout is an error for which
    /// [`is_timeout`] holds.
    fn read_into_spare(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize>;
}

impl ByteSource for Wire {
    #[inline]
    fn read_into_spare(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
        Wire::read_into_spare(self, buf, max)
    }
}

/// Incremental frame decoder over a blocking socket with a read timeout. A timeout in the
/// middle of a frame loses nothing: the partial frame stays here.
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    /// A DATA frame whose payload is being read.
    partial: Option<(Header, Vec<u8>)>,
}

impl FrameReader {
    pub(crate) fn new() -> Self {
        FrameReader { buf: Vec::with_capacity(READ_BUF), start: 0, partial: None }
    }

    /// Read the next frame. `Ok(None)`: end of stream at a frame boundary.
    pub(crate) fn next<S: ByteSource>(
        &mut self,
        sock: &S,
        max_frame: u32,
        counted: &AtomicU64,
        pool: &BufPool,
    ) -> Result<Option<Frame>, ReadEnd> {
        loop {
            if let Some((h, payload)) = &mut self.partial {
                let want = h.len as usize - payload.len();
                let have = (self.buf.len() - self.start).min(want);
                payload.extend_from_slice(&self.buf[self.start..self.start + have]);
                self.start += have;
                if payload.len() < h.len as usize {
                    // Large payloads go straight from the socket into their own buffer.
                    let left = h.len as usize - payload.len();
                    match sock.read_into_spare(payload, left) {
                        Ok(0) => return Err(ReadEnd::Io(io::ErrorKind::UnexpectedEof.into())),
                        Ok(n) => {
                            counted.fetch_add(n as u64, Relaxed);
                            continue;
                        }
                        Err(e) => return Err(ReadEnd::Io(e)),
                    }
                }
                let (h, payload) = self.partial.take().expect("present");
                return Ok(Some(Frame::Data(h, payload)));
            }
            let avail = self.buf.len() - self.start;
            if avail >= HEADER_LEN {
                let raw: &[u8; HEADER_LEN] =
                    self.buf[self.start..self.start + HEADER_LEN].try_into().expect("len");
                let h = Header::decode(raw, max_frame)
                    .map_err(|e: FrameError| ReadEnd::Protocol(e.to_string()))?;
                if h.cmd == Cmd::Data {
                    self.start += HEADER_LEN;
                    self.partial = Some((h, pool.take(h.len as usize)));
                    continue;
                }
                let total = HEADER_LEN + h.len as usize;
                if avail >= total {
                    let payload = &self.buf[self.start + HEADER_LEN..self.start + total];
                    let c = Control::decode(&h, payload).map_err(|e| ReadEnd::Protocol(e.to_string()))?;
                    self.start += total;
                    return Ok(Some(Frame::Control(c)));
                }
            }
            // Need more bytes: compact and refill.
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            debug_assert!(self.buf.len() < CONTROL_MAX_LEN.max(HEADER_LEN) + READ_BUF);
            match sock.read_into_spare(&mut self.buf, READ_BUF) {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) => return Err(ReadEnd::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => {
                    counted.fetch_add(n as u64, Relaxed);
                }
                Err(e) => return Err(ReadEnd::Io(e)),
            }
        }
    }
}

pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::frame::{FLAG_FIN, FLAG_OPEN};
    use proptest::prelude::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    const MAX: u32 = 64 * 1024;

    /// A scripted byte source: chunks as they would arrive, and read timeouts between them.
    struct Script(RefCell<VecDeque<Option<Vec<u8>>>>);

    impl ByteSource for Script {
        fn read_into_spare(&self, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
            let mut q = self.0.borrow_mut();
            match q.pop_front() {
                None => Ok(0),
                Some(None) => Err(io::ErrorKind::WouldBlock.into()),
                Some(Some(mut chunk)) => {
                    let n = chunk.len().min(max).min(buf.capacity() - buf.len());
                    buf.extend_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        q.push_front(Some(chunk.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    /// Cut `wire` into chunks of the given sizes (cycled), with a timeout after every other.
    fn script(wire: &[u8], sizes: &[usize]) -> Script {
        let mut q = VecDeque::new();
        let mut at = 0;
        for (i, &size) in sizes.iter().cycle().enumerate() {
            if at == wire.len() {
                break;
            }
            let end = (at + size.max(1)).min(wire.len());
            q.push_back(Some(wire[at..end].to_vec()));
            if i % 2 == 1 {
                q.push_back(None);
            }
            at = end;
        }
        Script(RefCell::new(q))
    }

    /// Decode everything, retrying after timeouts as a tunnel reader does.
    fn decode_all(src: &Script) -> (Vec<Frame>, Result<(), String>, u64) {
        let (mut fr, counted, pool) = (FrameReader::new(), AtomicU64::new(0), BufPool::new(4));
        let mut frames = Vec::new();
        let end = loop {
            match fr.next(src, MAX, &counted, &pool) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break Ok(()),
                Err(ReadEnd::Io(e)) if is_timeout(&e) => continue,
                Err(ReadEnd::Io(e)) => break Err(e.to_string()),
                Err(ReadEnd::Protocol(why)) => break Err(why),
                Err(_) => break Err("other".into()),
            }
        };
        (frames, end, counted.load(Relaxed))
    }

    fn same(a: &Frame, b: &Frame) -> bool {
        match (a, b) {
            (Frame::Data(h1, p1), Frame::Data(h2, p2)) => h1 == h2 && p1 == p2,
            (Frame::Control(c1), Frame::Control(c2)) => c1 == c2,
            _ => false,
        }
    }

    fn frame_strategy() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (1u32.., any::<u32>(), 0u16..4, 0usize..20_000).prop_map(|(stream, seq, flags, len)| {
                // An empty DATA frame must carry OPEN or FIN.
                let len = if flags == 0 { len.max(1) } else { len };
                let payload: Vec<u8> = (0..len).map(|i| (i as u32 ^ seq) as u8).collect();
                Frame::Data(Header::data(stream, seq, flags, len as u32), payload)
            }),
            any::<u64>().prop_map(|t| Frame::Control(Control::Ping(t))),
            (any::<u32>(), any::<u64>())
                .prop_map(|(stream, limit)| Frame::Control(Control::Window { stream, limit })),
            (any::<u16>(), any::<u32>(), any::<u64>()).prop_map(|(tunnel, generation, frames)| {
                Frame::Control(Control::Ack { tunnel, generation, frames })
            }),
        ]
    }

    fn encode(frames: &[Frame]) -> Vec<u8> {
        let mut wire = Vec::new();
        for f in frames {
            match f {
                Frame::Data(h, p) => {
                    wire.extend_from_slice(&h.encode());
                    wire.extend_from_slice(p);
                }
                Frame::Control(c) => c.encode_into(&mut wire),
            }
        }
        wire
    }

    #[test]
    fn a_stream_cut_mid_frame_is_an_unexpected_end() {
        let frames = [Frame::Data(Header::data(1, 0, FLAG_OPEN, 10_000), vec![7; 10_000])];
        let wire = encode(&frames);
        for cut in [1, HEADER_LEN - 1, HEADER_LEN, HEADER_LEN + 1, 9_000, wire.len() - 1] {
            let (got, end, counted) = decode_all(&script(&wire[..cut], &[3000, 1]));
            assert!(got.is_empty());
            assert!(end.unwrap_err().contains("end of file"), "cut at {cut}");
            assert_eq!(counted, cut as u64);
        }
        let ping = Control::Ping(9).encode();
        let (got, end, _) = decode_all(&script(&ping[..20], &[5]));
        assert!(got.is_empty() && end.is_err());
        let (got, end, _) = decode_all(&script(&ping, &[1]));
        assert!(got.len() == 1 && end.is_ok());
        let fin = encode(&[Frame::Data(Header::data(3, 7, FLAG_FIN, 0), vec![])]);
        let (got, end, _) = decode_all(&script(&fin, &[1]));
        assert!(got.len() == 1 && end.is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// However the bytes arrive (one at a time, in big chunks, with read timeouts between
        /// them), the frames come out as they went in, and every byte is counted once.
        #[test]
        fn frames_survive_any_chunking(
            frames in proptest::collection::vec(frame_strategy(), 1..12),
            sizes in proptest::collection::vec(1usize..12_000, 1..8),
        ) {
            let wire = encode(&frames);
            let (got, end, counted) = decode_all(&script(&wire, &sizes));
            prop_assert_eq!(end, Ok(()));
            prop_assert_eq!(got.len(), frames.len());
            for (a, b) in got.iter().zip(&frames) {
                prop_assert!(same(a, b));
            }
            prop_assert_eq!(counted, wire.len() as u64);
        }

        /// Garbage ends in a protocol error or an unexpected end, never a panic; a clean end
        /// means the bytes were whole frames, which re-encode to exactly those bytes.
        #[test]
        fn garbage_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..400), size in 1usize..64) {
            let (got, end, _) = decode_all(&script(&bytes, &[size]));
            if end.is_ok() {
                prop_assert_eq!(encode(&got), bytes);
            }
        }
    }
}
