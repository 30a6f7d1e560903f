//! The send side of a stream: credit reservation (the stream's window and the session's) and
//! writes.

use super::{Core, SendPhase};
use crate::error::{Error, Result};
use crate::proto::frame::{data_charge, Header, FLAG_OPEN, FRAME_CHARGE, HEADER_LEN};
use parking_lot::MutexGuard;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

impl Core {
    /// Send the bare OPEN of a local stream that has sent nothing yet (before it blocks in a
    /// read, the peer must know the stream exists).
    pub(super) fn ensure_open(&self) {
        {
            let mut s = self.shared.send.lock();
            if s.next_seq != 0 || !matches!(s.phase, SendPhase::Open) {
                return;
            }
            s.next_seq = 1;
        }
        let id = self.id();
        let _ = self.inner().send_data(id, Header::data(id, 0, FLAG_OPEN, 0).encode().to_vec());
    }

    /// Reserve credit and a sequence number for the next frame of up to `want` bytes.
    fn reserve(&self, want: usize, deadline: Option<Instant>) -> Result<(u32, usize)> {
        let inner = self.inner();
        let max_frame = inner.peer.max_frame as usize;
        let mut s = self.shared.send.lock();
        loop {
            if let Some(e) = s.phase.error() {
                return Err(e);
            }
            let avail = s.window.available();
            if avail > FRAME_CHARGE {
                let max = data_charge(want.min(max_frame).min((avail - FRAME_CHARGE) as usize));
                if let Some(charge) = inner.credit.try_reserve(FRAME_CHARGE, max) {
                    s.window.spend(charge);
                    let seq = s.next_seq;
                    s.next_seq = seq.wrapping_add(1);
                    return Ok((seq, (charge - FRAME_CHARGE) as usize));
                }
                // Wait for session credit without holding the stream (tunnel readers take the
                // stream lock to deliver its window updates), then look at everything again.
                let waited = MutexGuard::unlocked(&mut s, || {
                    let mut closed = inner.credit_closed.lock();
                    if let Some(r) = &*closed {
                        return Err(Error::SessionClosed(r.clone()));
                    }
                    if inner.credit.available() > FRAME_CHARGE {
                        return Ok(());
                    }
                    match deadline {
                        Some(d) if inner.credit_cv.wait_until(&mut closed, d).timed_out() => {
                            Err(Error::TimedOut)
                        }
                        Some(_) => Ok(()),
                        None => {
                            inner.credit_cv.wait(&mut closed);
                            Ok(())
                        }
                    }
                });
                waited?;
                continue;
            }
            match deadline {
                Some(d) => {
                    if self.shared.send_cv.wait_until(&mut s, d).timed_out()
                        && s.window.available() <= FRAME_CHARGE
                    {
                        return Err(Error::TimedOut);
                    }
                }
                None => self.shared.send_cv.wait(&mut s),
            }
        }
    }

    /// Write up to `buf.len()` bytes: frames are built and handed to the tunnels as credit
    /// allows. Once part of `buf` is accepted, a failure (the write side closed, a reset, the
    /// session's end, the timeout) ends the write with the count accepted so far, as `send(2)`
    /// does; the next write reports the failure.
    pub(super) fn write_impl(&self, buf: &[u8], timeout: Option<Duration>) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let deadline = timeout.and_then(crate::config::deadline_after);
        let id = self.id();
        let _writing = WriterCount::enter(&self.inner().writers);
        self.shared.writes.fetch_add(1, Relaxed);
        let mut written = 0;
        while written < buf.len() {
            let (seq, n) = match self.reserve(buf.len() - written, deadline) {
                Ok(r) => r,
                Err(_) if written > 0 => break,
                Err(e) => return Err(e),
            };
            let flags = if seq == 0 { FLAG_OPEN } else { 0 };
            // The frame is built once: it is kept until the peer acknowledges it.
            let mut frame = self.inner().pool.take(HEADER_LEN + n);
            frame.extend_from_slice(&Header::data(id, seq, flags, n as u32).encode());
            frame.extend_from_slice(&buf[written..written + n]);
            let queued = self.inner().send_data(id, frame);
            written += n;
            if queued && !self.inner().wait_room(deadline) {
                break;
            }
        }
        Ok(written)
    }
}

/// Counts the application threads inside `write` (see `Inner::send_data`).
struct WriterCount<'a>(&'a AtomicUsize);

impl<'a> WriterCount<'a> {
    fn enter(c: &'a AtomicUsize) -> Self {
        c.fetch_add(1, Relaxed);
        WriterCount(c)
    }
}

impl Drop for WriterCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
