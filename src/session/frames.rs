//! Frame decoding on a tunnel's reader thread: an incremental decoder over a blocking
//! connection (plain or TLS) with a read timeout.

use super::pool::BufPool;
use crate::proto::frame::{Cmd, Control, FrameError, Header, CONTROL_MAX_LEN, HEADER_LEN};
use crate::wire::Wire;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Read-ahead buffer of the frame reader.
const READ_BUF: usize = 8 * 1024;

/// A decoded frame.
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
    pub(crate) fn next(
        &mut self,
        wire: &Wire,
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
                    match wire.read_into_spare(payload, left) {
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
            match wire.read_into_spare(&mut self.buf, READ_BUF) {
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
