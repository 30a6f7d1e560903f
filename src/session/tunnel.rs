//! One tunnel: a TCP connection of the bundle and its two threads.
//!
//! - the **reader** (`mtmux-r<i>`) decodes frames and hands them to the session
//!   (`Inner::handle_frame`); it never blocks on anything but its socket. A read timeout
//!   ticks it so it can notice a silent peer (keepalive) or the end of a graceful close.
//! - the **writer** (`mtmux-w<i>`) waits until its socket has room, then takes work from the
//!   scheduler (or finishes a frame an application thread started), and writes it. It also
//!   sends the tunnel's keepalive pings.
//!
//! Application threads write to a tunnel directly when its writer is idle and the socket takes
//! the whole frame without blocking; that path needs no thread hand-off at all.

use super::pool::BufPool;
use super::Inner;
use crate::core::sched::Batch;
use crate::ffi::sys;
use crate::proto::frame::{Cmd, Control, FrameError, Header, CONTROL_MAX_LEN, HEADER_LEN};
use parking_lot::{Condvar, Mutex};
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Unsent bytes the kernel may hold per tunnel before the socket counts as full.
pub(crate) const NOTSENT_LOWAT: u32 = 128 * 1024;
/// Most bytes a writer takes from the scheduler at once.
const BATCH_BUDGET: usize = 64 * 1024;
/// Read-ahead buffer of the frame reader.
const READ_BUF: usize = 8 * 1024;

/// Write side of a tunnel, owned by whoever holds the lock.
pub(crate) struct TunnelTx {
    /// Bytes that must be written before anything else: the rest of a frame an application
    /// thread started but the socket did not take whole.
    pub(crate) pending: Vec<u8>,
}

/// Counters of one tunnel.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    /// Last keepalive round trip in nanoseconds (0: none yet).
    pub(crate) rtt_ns: AtomicU64,
}

/// One TCP connection of the bundle.
pub(crate) struct Tunnel {
    /// Position in the bundle.
    pub(crate) index: usize,
    /// Local and peer address, recorded at start (a socket that has been shut down no longer
    /// reports its peer).
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
    /// The socket (both threads and direct writers use it; writes are serialised by `tx`).
    pub(crate) sock: TcpStream,
    /// Serialises writes; see the module doc for who may block while holding it.
    pub(crate) tx: Mutex<TunnelTx>,
    /// The writer waits here (paired with the session's scheduler mutex).
    pub(crate) wake: Condvar,
    /// Set once the tunnel has failed or ended.
    dead: AtomicBool,
    /// Traffic counters.
    pub(crate) counters: Counters,
}

impl Tunnel {
    pub(crate) fn new(index: usize, sock: TcpStream) -> io::Result<Tunnel> {
        Ok(Tunnel {
            index,
            local: sock.local_addr()?,
            peer: sock.peer_addr()?,
            sock,
            tx: Mutex::new(TunnelTx { pending: Vec::new() }),
            wake: Condvar::new(),
            dead: AtomicBool::new(false),
            counters: Counters::default(),
        })
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Relaxed)
    }

    /// Stop the tunnel: both threads and any blocked write return promptly. Returns whether
    /// this call was the one that stopped it.
    pub(crate) fn kill(&self) -> bool {
        let first = !self.dead.swap(true, Relaxed);
        let _ = self.sock.shutdown(Shutdown::Both);
        first
    }

    pub(crate) fn count_sent(&self, bytes: usize, frames: usize) {
        self.counters.bytes_sent.fetch_add(bytes as u64, Relaxed);
        self.counters.frames_sent.fetch_add(frames as u64, Relaxed);
    }
}

/// Write all of `bufs` (blocking), with `MSG_NOSIGNAL`.
fn write_all_vectored(sock: &TcpStream, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    while !bufs.is_empty() {
        match sys::send_vectored(sock, bufs, false) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A decoded frame.
pub(crate) enum Frame {
    /// A DATA frame and its payload.
    Data(Header, Vec<u8>),
    /// Any other frame.
    Control(Control),
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
}

/// Incremental frame decoder over a blocking socket with a read timeout. A timeout in the
/// middle of a frame loses nothing: the partial frame stays here.
struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    /// A DATA frame whose payload is being read.
    partial: Option<(Header, Vec<u8>)>,
}

impl FrameReader {
    fn new() -> Self {
        FrameReader { buf: Vec::with_capacity(READ_BUF), start: 0, partial: None }
    }

    /// Read the next frame. `Ok(None)`: end of stream at a frame boundary.
    fn next(
        &mut self,
        sock: &TcpStream,
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
                    match sys::read_into_spare(sock, payload, left) {
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
            match sys::read_into_spare(sock, &mut self.buf, READ_BUF) {
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

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// The reader thread of tunnel `t`.
pub(crate) fn reader(inner: Arc<Inner>, t: usize) {
    let tun = &inner.tunnels[t];
    let cfg = &inner.cfg;
    let tick = (cfg.keepalive_timeout / 4).clamp(Duration::from_millis(5), Duration::from_secs(1));
    let _ = tun.sock.set_read_timeout(Some(tick));
    let max_frame = cfg.max_frame_size as u32;
    let mut fr = FrameReader::new();
    let mut last_heard = Instant::now();
    let mut heard = 0;
    let end = loop {
        match fr.next(&tun.sock, max_frame, &tun.counters.bytes_received, &inner.pool) {
            Ok(Some(frame)) => {
                tun.counters.frames_received.fetch_add(1, Relaxed);
                if let Err(why) = inner.handle_frame(t, frame) {
                    break ReadEnd::Protocol(why);
                }
            }
            Ok(None) => break ReadEnd::Eof,
            Err(ReadEnd::Io(e)) if is_timeout(&e) => {
                let now = Instant::now();
                let total = tun.counters.bytes_received.load(Relaxed);
                if total != heard {
                    heard = total;
                    last_heard = now;
                }
                if now.duration_since(last_heard) >= cfg.keepalive_timeout {
                    break ReadEnd::Silent(now.duration_since(last_heard));
                }
                if inner.closing_expired(now) || tun.is_dead() {
                    break ReadEnd::Closed;
                }
            }
            Err(end) => break end,
        }
    };
    inner.tunnel_ended(t, end);
}

/// The writer thread of tunnel `t`.
pub(crate) fn writer(inner: Arc<Inner>, t: usize) {
    let tun = &inner.tunnels[t];
    let interval = inner.cfg.keepalive_interval;
    let mut batch = Batch::default();
    // Pings right away and a few times soon after measure the round trip before windows need
    // tuning (the first one may include the peer's start-up); then one per interval.
    let mut next_ping = Instant::now();
    let mut probes = [5u64, 50, 500].into_iter().map(Duration::from_millis);
    let mut after_ping = move || probes.next().unwrap_or(interval).min(interval);
    loop {
        // Take work only when the socket has room, so the tunnel that can send soonest
        // takes the next frame.
        let until_ping = next_ping.saturating_duration_since(Instant::now());
        match sys::wait_writable(&tun.sock, until_ping.max(Duration::from_millis(1))) {
            Ok(true) => {}
            Ok(false) => {
                // Still full at ping time: the data in flight keeps the peer's keepalive
                // satisfied; the round trip is measured next time.
                next_ping = Instant::now() + after_ping();
                if tun.is_dead() {
                    return;
                }
                continue;
            }
            Err(_) => {
                tun.kill();
                return;
            }
        }
        let mut finishing = false;
        {
            let mut s = inner.sched.lock();
            loop {
                if tun.is_dead() || inner.is_closed() {
                    s.clear_idle(t);
                    return;
                }
                let mut ready = s.take_flush(t);
                if s.has_work_for(t) {
                    let frames = s.next_batch(t, BATCH_BUDGET, &mut batch);
                    if frames > 0 && s.at_low_water() {
                        inner.room.notify_all();
                    }
                    ready = true;
                }
                let now = Instant::now();
                if now >= next_ping {
                    batch.push_control(Control::Ping(inner.clock_ns(now)));
                    next_ping = now + after_ping();
                    ready = true;
                }
                if ready {
                    break;
                }
                if inner.is_closing() {
                    // Nothing left for this tunnel (its GOAWAY went out with earlier work).
                    finishing = true;
                    break;
                }
                s.set_idle(t);
                tun.wake.wait_until(&mut s, next_ping);
                s.clear_idle(t);
            }
        }
        let mut tx = tun.tx.lock();
        let result = {
            let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(2 + batch.data.len());
            if !tx.pending.is_empty() {
                slices.push(IoSlice::new(&tx.pending));
            }
            if !batch.control.is_empty() {
                slices.push(IoSlice::new(&batch.control));
            }
            slices.extend(batch.data.iter().map(|f| IoSlice::new(f)));
            let bytes: usize = slices.iter().map(|s| s.len()).sum();
            let r = write_all_vectored(&tun.sock, &mut slices);
            if r.is_ok() {
                tun.count_sent(bytes, batch.frames());
            }
            r
        };
        tx.pending.clear();
        for frame in batch.data.drain(..) {
            inner.pool.give(frame);
        }
        batch.clear();
        if result.is_err() {
            drop(tx);
            tun.kill();
            return;
        }
        if finishing {
            // Everything queued is out: half-close so the peer reads end-of-stream after
            // the last frame, and keep reading until it closes too.
            let _ = tun.sock.shutdown(Shutdown::Write);
            return;
        }
    }
}
