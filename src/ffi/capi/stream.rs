//! Stream: read, write, half-close, reset, timeouts, more handles.

use super::*;

// ---- Stream --------------------------------------------------------------------------------

/// A bidirectional byte stream of a session (opaque).
pub struct mtmux_stream {
    pub(super) inner: Stream,
}

/// Read up to `len` (> 0) bytes into `buf`. Blocks until at least one byte is available,
/// the peer half-closes, or the read timeout expires. Returns the number of bytes read, 0 at
/// end of stream (the peer closed its write side, or this stream was closed), or a negative
/// `mtmux_result` (e.g. `MTMUX_ERR_STREAM_RESET`, `MTMUX_ERR_TIMED_OUT`,
/// `MTMUX_ERR_SESSION_CLOSED`; `MTMUX_ERR_TOO_MANY_STREAMS` when the peer turned the stream
/// away at its stream limit). When the peer's session closes, the data that had arrived is
/// read first; then a stream whose end the peer had sent reads 0, any other fails with
/// `MTMUX_ERR_SESSION_CLOSED` (never a silent 0 for a stream cut short).
#[no_mangle]
pub extern "C" fn mtmux_stream_read(stream: *const mtmux_stream, buf: *mut c_void, len: usize) -> isize {
    guard("mtmux_stream_read", || {
        // Safety: a live stream handle and `len` writable bytes at `buf` (header contract).
        let (s, buf) = unsafe { (borrow(stream, "stream")?, bytes_mut(buf.cast(), len, "buf")?) };
        Ok((&s.inner).read(buf)? as isize)
    })
}

/// Write up to `len` (> 0) bytes from `buf`. Blocks while the peer's receive window is
/// full, up to the write timeout. Returns the number of bytes accepted (queued for the
/// tunnels; not yet delivered), or a negative `mtmux_result` when it accepted none (e.g.
/// `MTMUX_ERR_WRITE_CLOSED`, `MTMUX_ERR_STREAM_RESET`, `MTMUX_ERR_SESSION_CLOSED`,
/// `MTMUX_ERR_TIMED_OUT`, `MTMUX_ERR_TOO_MANY_STREAMS`). All `len` bytes are accepted unless
/// the write ends part-way, as `send(2)` does: when the write timeout expires, or another
/// thread calls `mtmux_stream_close_write`, `_close`, `_shutdown` (write side), `_reset` or
/// `mtmux_session_close` (or the session ends), after part of `buf` was accepted. Then the
/// call returns that part's length (e.g. 1047487 of 8388608), and the next write fails
/// with the code (`MTMUX_ERR_WRITE_CLOSED`, `_STREAM_RESET`, `_SESSION_CLOSED`; after a
/// timeout the stream stays usable).
#[no_mangle]
pub extern "C" fn mtmux_stream_write(stream: *const mtmux_stream, buf: *const c_void, len: usize) -> isize {
    guard("mtmux_stream_write", || {
        // Safety: a live stream handle and `len` readable bytes at `buf` (header contract).
        let (s, buf) = unsafe { (borrow(stream, "stream")?, bytes(buf.cast(), len, "buf")?) };
        if buf.is_empty() {
            return Err(failure(MTMUX_ERR_INVALID_ARGUMENT, "len is 0"));
        }
        Ok((&s.inner).write(buf)? as isize)
    })
}

/// Write all `len` bytes from `buf` (`len` may be 0, then `buf` may be NULL): calls
/// `mtmux_stream_write` until every byte is accepted. Returns `MTMUX_OK`, or the code of the
/// write that failed (a write woken part-way, see `mtmux_stream_write`, is followed by one
/// that fails with the code); part of the data may have been accepted, and how much is not
/// reported: use `mtmux_stream_write` to know it.
#[no_mangle]
pub extern "C" fn mtmux_stream_write_all(
    stream: *const mtmux_stream,
    buf: *const c_void,
    len: usize,
) -> mtmux_result {
    guard("mtmux_stream_write_all", || {
        // Safety: a live stream handle and `len` readable bytes at `buf` (header contract).
        let (s, buf) = unsafe { (borrow(stream, "stream")?, bytes(buf.cast(), len, "buf")?) };
        (&s.inner).write_all(buf)?;
        Ok(MTMUX_OK)
    })
}

/// Half-close: the peer reads end of stream after all data written so far. Later writes
/// fail with `MTMUX_ERR_WRITE_CLOSED`; a write blocked in another thread wakes up and
/// returns the count it had accepted, or `MTMUX_ERR_WRITE_CLOSED` if none. Reading
/// continues. Idempotent.
#[no_mangle]
pub extern "C" fn mtmux_stream_close_write(stream: *const mtmux_stream) -> mtmux_result {
    guard("mtmux_stream_close_write", || {
        // Safety: a live stream handle (header contract).
        let s = unsafe { borrow(stream, "stream")? };
        s.inner.close_write()?;
        Ok(MTMUX_OK)
    })
}

/// Close both directions: end of stream to the peer after the data written so far, and no
/// more reading (a read blocked in another thread returns 0, a blocked write returns as
/// after `mtmux_stream_close_write`). If data the peer sent is left unread while the peer
/// still sends, the stream is reset instead (the peer's writes fail), as TCP's close with
/// unread data does. Acts on the stream, so on every handle of it (see
/// `mtmux_stream_try_clone`). Never blocks. Idempotent.
#[no_mangle]
pub extern "C" fn mtmux_stream_close(stream: *const mtmux_stream) -> mtmux_result {
    guard("mtmux_stream_close", || {
        // Safety: a live stream handle (header contract).
        let s = unsafe { borrow(stream, "stream")? };
        s.inner.close()?;
        Ok(MTMUX_OK)
    })
}

/// Shut down the reading side (`MTMUX_SHUT_READ`), the writing side (`MTMUX_SHUT_WRITE`) or
/// both (`MTMUX_SHUT_BOTH`), like `shutdown(2)`.
#[no_mangle]
pub extern "C" fn mtmux_stream_shutdown(stream: *const mtmux_stream, how: i32) -> mtmux_result {
    guard("mtmux_stream_shutdown", || {
        // Safety: a live stream handle (header contract).
        let s = unsafe { borrow(stream, "stream")? };
        let how = match how {
            MTMUX_SHUT_READ => Shutdown::Read,
            MTMUX_SHUT_WRITE => Shutdown::Write,
            MTMUX_SHUT_BOTH => Shutdown::Both,
            v => {
                return Err(failure(MTMUX_ERR_INVALID_ARGUMENT, format!("how must be MTMUX_SHUT_*, got {v}")))
            }
        };
        s.inner.shutdown(how)?;
        Ok(MTMUX_OK)
    })
}

/// Abort the stream: queued data is dropped; reads and writes here and at the peer fail
/// with `MTMUX_ERR_STREAM_RESET` (a write blocked in another thread wakes up and returns
/// the count it had accepted, or `MTMUX_ERR_STREAM_RESET` if none).
#[no_mangle]
pub extern "C" fn mtmux_stream_reset(stream: *const mtmux_stream) -> mtmux_result {
    guard("mtmux_stream_reset", || {
        // Safety: a live stream handle (header contract).
        let s = unsafe { borrow(stream, "stream")? };
        s.inner.reset()?;
        Ok(MTMUX_OK)
    })
}

/// Bound later reads to `timeout_ms` each (0: block indefinitely, the default; at most
/// `MTMUX_TIMEOUT_MAX_MS`); a read that times out returns `MTMUX_ERR_TIMED_OUT` and the
/// stream stays usable. Applies to every handle of the stream.
#[no_mangle]
pub extern "C" fn mtmux_stream_set_read_timeout(
    stream: *const mtmux_stream,
    timeout_ms: u64,
) -> mtmux_result {
    guard("mtmux_stream_set_read_timeout", || {
        // Safety: a live stream handle (header contract).
        let s = unsafe { borrow(stream, "stream")? };
        let t = self::timeout_ms(timeout_ms, "timeout_ms")?;
        s.inner.set_read_timeout((!t.is_zero()).then_some(t))?;
        Ok(MTMUX_OK)
    })
}

/// Bound later writes to `timeout_ms` each (0: block indefinitely, the default; at most
/// `MTMUX_TIMEOUT_MAX_MS`): a write that times out returns what it had accepted, or
/// `MTMUX_ERR_TIMED_OUT` if nothing. Applies to every handle of the stream.
#[no_mangle]
pub extern "C" fn mtmux_stream_set_write_timeout(
    stream: *const mtmux_stream,
    timeout_ms: u64,
) -> mtmux_result {
    guard("mtmux_stream_set_write_timeout", || {
        // Safety: a live stream handle (header contract).
        let s = unsafe { borrow(stream, "stream")? };
        let t = self::timeout_ms(timeout_ms, "timeout_ms")?;
        s.inner.set_write_timeout((!t.is_zero()).then_some(t))?;
        Ok(MTMUX_OK)
    })
}

/// `*timeout_ms` = the read timeout (0: none).
#[no_mangle]
pub extern "C" fn mtmux_stream_read_timeout(
    stream: *const mtmux_stream,
    timeout_ms: *mut u64,
) -> mtmux_result {
    guard("mtmux_stream_read_timeout", || {
        // Safety: a live stream handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(stream, "stream")?, output(timeout_ms, "timeout_ms")?) };
        out.write(s.inner.read_timeout().map_or(0, |d| d.as_millis() as u64));
        Ok(MTMUX_OK)
    })
}

/// `*timeout_ms` = the write timeout (0: none).
#[no_mangle]
pub extern "C" fn mtmux_stream_write_timeout(
    stream: *const mtmux_stream,
    timeout_ms: *mut u64,
) -> mtmux_result {
    guard("mtmux_stream_write_timeout", || {
        // Safety: a live stream handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(stream, "stream")?, output(timeout_ms, "timeout_ms")?) };
        out.write(s.inner.write_timeout().map_or(0, |d| d.as_millis() as u64));
        Ok(MTMUX_OK)
    })
}

/// `*id` = the stream id (odd: opened by the client, even: by the server).
#[no_mangle]
pub extern "C" fn mtmux_stream_id(stream: *const mtmux_stream, id: *mut u32) -> mtmux_result {
    guard("mtmux_stream_id", || {
        // Safety: a live stream handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(stream, "stream")?, output(id, "id")?) };
        out.write(s.inner.id());
        Ok(MTMUX_OK)
    })
}

/// Another handle to the same stream, like `dup(2)` for a socket: on success `*clone` is a
/// new handle to release with `mtmux_stream_free`. Reads, writes, closes and timeouts through
/// either handle act on the same stream; the stream is closed (as `mtmux_stream_close`) when
/// its last handle is freed. Useful when two threads (say, one per direction of a proxy)
/// each own a handle and free it when done, without agreeing on who frees last; sharing one
/// handle between threads needs no clone.
#[no_mangle]
pub extern "C" fn mtmux_stream_try_clone(
    stream: *const mtmux_stream,
    clone: *mut *mut mtmux_stream,
) -> mtmux_result {
    guard("mtmux_stream_try_clone", || {
        // Safety: a live stream handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(stream, "stream")?, output(clone, "clone")?) };
        new_handle(out, mtmux_stream { inner: s.inner.try_clone()? });
        Ok(MTMUX_OK)
    })
}

/// Release the handle. Freeing the stream's last handle closes the stream (as
/// `mtmux_stream_close`); with other handles left (`mtmux_stream_try_clone`) the stream goes
/// on. NULL is a no-op.
#[no_mangle]
pub extern "C" fn mtmux_stream_free(stream: *mut mtmux_stream) {
    guard("mtmux_stream_free", || {
        // Safety: NULL or a handle from mtmux that the caller no longer uses.
        unsafe { free_handle(stream) };
        Ok(())
    })
}
