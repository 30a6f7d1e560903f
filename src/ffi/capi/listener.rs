//! Listener: listen, accept, close.

use super::*;

// ---- Listener ------------------------------------------------------------------------------

/// A listener accepting bundles of tunnels from clients (opaque).
pub struct mtmux_listener {
    pub(super) inner: Listener,
}

/// Listen at `addr` (`"host:port"`; port 0 picks free ports): on ports `port .. port +
/// tunnels - 1`, or on `port` alone with `single_port`. `cfg` may be NULL for the defaults.
/// On success `*listener` is a new listener to release with `mtmux_listener_free`.
#[no_mangle]
pub extern "C" fn mtmux_listen(
    addr: *const c_char,
    cfg: *const mtmux_config,
    listener: *mut *mut mtmux_listener,
) -> mtmux_result {
    guard("mtmux_listen", || {
        // Safety: the caller passes a NUL-terminated string, NULL or a config of `cfg->size`
        // readable bytes, and a writable pointer (header contract).
        let (addr, cfg, out) =
            unsafe { (utf8(addr, "addr")?, read_config(cfg)?, output(listener, "listener")?) };
        let cfg = config_from_c(cfg.as_ref(), tls::Use::Listen)?;
        let l = Listener::bind(resolve(addr)?, &cfg)?;
        new_handle(out, mtmux_listener { inner: l });
        Ok(MTMUX_OK)
    })
}

/// Wait for the next client's complete bundle; on success `*session` is a new session.
/// Fails with `MTMUX_ERR_LISTENER_CLOSED` once `mtmux_listener_close` is called (also from
/// another thread while this one waits).
#[no_mangle]
pub extern "C" fn mtmux_listener_accept(
    listener: *const mtmux_listener,
    session: *mut *mut mtmux_session,
) -> mtmux_result {
    guard("mtmux_listener_accept", || {
        // Safety: a live listener handle and a writable pointer (header contract).
        let (l, out) = unsafe { (borrow(listener, "listener")?, output(session, "session")?) };
        let s = l.inner.accept().map_err(listener_error)?;
        new_handle(out, mtmux_session { inner: s });
        Ok(MTMUX_OK)
    })
}

/// Like `mtmux_listener_accept`, waiting at most `timeout_ms` (0: do not wait), then
/// `MTMUX_ERR_TIMED_OUT`.
#[no_mangle]
pub extern "C" fn mtmux_listener_accept_timeout(
    listener: *const mtmux_listener,
    timeout_ms: u64,
    session: *mut *mut mtmux_session,
) -> mtmux_result {
    guard("mtmux_listener_accept_timeout", || {
        // Safety: a live listener handle and a writable pointer (header contract).
        let (l, out) = unsafe { (borrow(listener, "listener")?, output(session, "session")?) };
        let timeout = self::timeout_ms(timeout_ms, "timeout_ms")?;
        let s = l.inner.accept_timeout(timeout).map_err(listener_error)?;
        new_handle(out, mtmux_session { inner: s });
        Ok(MTMUX_OK)
    })
}

/// The listener reports its end as `SessionClosed`; C gets a code of its own.
pub(super) fn listener_error(e: Error) -> Failure {
    match e {
        Error::SessionClosed(_) => failure(MTMUX_ERR_LISTENER_CLOSED, "the listener is closed"),
        e => e.into(),
    }
}

/// Write the listener's first address (the base of its port range), e.g.
/// `"127.0.0.1:7000"`, NUL-terminated, into `buf` of `len` bytes (`MTMUX_ADDR_STRLEN`
/// always suffices).
#[no_mangle]
pub extern "C" fn mtmux_listener_local_addr(
    listener: *const mtmux_listener,
    buf: *mut c_char,
    len: usize,
) -> mtmux_result {
    guard("mtmux_listener_local_addr", || {
        // Safety: a live listener handle and `len` writable bytes at `buf` (header contract).
        unsafe {
            let l = borrow(listener, "listener")?;
            write_addr(Some(l.inner.local_addr()), buf, len)?;
        }
        Ok(MTMUX_OK)
    })
}

/// Serve at most `max_sessions` open sessions at once (0, the default: no limit). A client
/// whose bundle completes while this many sessions started by this listener are open
/// (accepted or not; one waiting in an outage for its client to resume counts, one that is
/// closing does not) is refused during its handshake: its `mtmux_dial` fails with
/// `MTMUX_ERR_REFUSED` and a message that says the server is at its session limit. Re-joins
/// of running sessions are not affected; lowering the limit closes no session.
#[no_mangle]
pub extern "C" fn mtmux_listener_set_max_sessions(
    listener: *const mtmux_listener,
    max_sessions: usize,
) -> mtmux_result {
    guard("mtmux_listener_set_max_sessions", || {
        // Safety: a live listener handle (header contract).
        let l = unsafe { borrow(listener, "listener")? };
        l.inner.set_max_sessions(Some(max_sessions).filter(|&n| n > 0));
        Ok(MTMUX_OK)
    })
}

/// Stop listening: a thread blocked in `mtmux_listener_accept` returns
/// `MTMUX_ERR_LISTENER_CLOSED`, handshakes in progress are refused ("server is shutting
/// down": a client dialing meanwhile fails at once with `MTMUX_ERR_REFUSED`, also when some
/// of its tunnels have not arrived) and sessions not yet accepted are closed. Sessions
/// already accepted are not affected. Idempotent.
#[no_mangle]
pub extern "C" fn mtmux_listener_close(listener: *const mtmux_listener) -> mtmux_result {
    guard("mtmux_listener_close", || {
        // Safety: a live listener handle (header contract).
        let l = unsafe { borrow(listener, "listener")? };
        l.inner.close();
        Ok(MTMUX_OK)
    })
}

/// Close (as `mtmux_listener_close`) and release the listener. NULL is a no-op.
#[no_mangle]
pub extern "C" fn mtmux_listener_free(listener: *mut mtmux_listener) {
    guard("mtmux_listener_free", || {
        // Safety: NULL or a handle from `mtmux_listen` that the caller no longer uses.
        unsafe { free_handle(listener) };
        Ok(())
    })
}
