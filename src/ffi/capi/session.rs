//! Session: dial, streams, close, per-tunnel statistics and addresses.

use super::*;

// ---- Session -------------------------------------------------------------------------------

/// A session: one bundle of tunnels carrying many streams (opaque).
pub struct mtmux_session {
    pub(super) inner: Session,
}

/// Open a bundle to the server at `addr` (`"host:port"`): `tunnels` connections to ports
/// `port .. port + tunnels - 1` (or all to `port` with `single_port`), handshake included,
/// within `handshake_timeout_ms`. When `host` resolves to several addresses (`localhost`:
/// `::1` and `127.0.0.1`), tunnel 0 tries each in turn and the other tunnels go to the one
/// that answered. `cfg` may be NULL for the defaults. On success `*session` is a new session
/// to release with `mtmux_session_free`.
#[no_mangle]
pub extern "C" fn mtmux_dial(
    addr: *const c_char,
    cfg: *const mtmux_config,
    session: *mut *mut mtmux_session,
) -> mtmux_result {
    guard("mtmux_dial", || {
        // Safety: the caller passes a NUL-terminated string, NULL or a config of `cfg->size`
        // readable bytes, and a writable pointer (header contract).
        let (addr, cfg, out) =
            unsafe { (utf8(addr, "addr")?, read_config(cfg)?, output(session, "session")?) };
        let cfg = config_from_c(cfg.as_ref(), tls::Use::Dial { host: tls::host_of(addr) })?;
        let s = crate::dial(resolve_all(addr)?.as_slice(), &cfg)?;
        new_handle(out, mtmux_session { inner: s });
        Ok(MTMUX_OK)
    })
}

/// Open a new stream (no round trip: the peer learns of it with its first data). Fails with
/// `MTMUX_ERR_TOO_MANY_STREAMS` at this side's `max_streams` and `MTMUX_ERR_SESSION_CLOSED`
/// once the session is closing (also when the peer began closing it). A stream the peer
/// turns away at its own limit is reported by its first read or write after the peer's
/// answer arrived: `MTMUX_ERR_TOO_MANY_STREAMS` (the peer's limit is not known here in
/// advance). On success `*stream` is a new stream to release with `mtmux_stream_free`.
#[no_mangle]
pub extern "C" fn mtmux_session_open_stream(
    session: *const mtmux_session,
    stream: *mut *mut mtmux_stream,
) -> mtmux_result {
    guard("mtmux_session_open_stream", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(stream, "stream")?) };
        let st = s.inner.open_stream()?;
        new_handle(out, mtmux_stream { inner: st });
        Ok(MTMUX_OK)
    })
}

/// Wait for the next stream opened by the peer; on success `*stream` is a new stream. Fails
/// with `MTMUX_ERR_SESSION_CLOSED` when the session ends (also while waiting); streams the
/// peer opened before it closed the session are still returned first.
#[no_mangle]
pub extern "C" fn mtmux_session_accept_stream(
    session: *const mtmux_session,
    stream: *mut *mut mtmux_stream,
) -> mtmux_result {
    guard("mtmux_session_accept_stream", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(stream, "stream")?) };
        let st = s.inner.accept_stream()?;
        new_handle(out, mtmux_stream { inner: st });
        Ok(MTMUX_OK)
    })
}

/// Like `mtmux_session_accept_stream`, waiting at most `timeout_ms` (0: do not wait), then
/// `MTMUX_ERR_TIMED_OUT`.
#[no_mangle]
pub extern "C" fn mtmux_session_accept_stream_timeout(
    session: *const mtmux_session,
    timeout_ms: u64,
    stream: *mut *mut mtmux_stream,
) -> mtmux_result {
    guard("mtmux_session_accept_stream_timeout", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(stream, "stream")?) };
        let timeout = self::timeout_ms(timeout_ms, "timeout_ms")?;
        let st = s.inner.accept_stream_timeout(timeout)?;
        new_handle(out, mtmux_stream { inner: st });
        Ok(MTMUX_OK)
    })
}

/// Close the session gracefully: no new streams; blocked reads, writes and accepts on it
/// (in any thread) fail with `MTMUX_ERR_SESSION_CLOSED`; data already written is delivered;
/// then the tunnels close. Blocks until the session's threads have ended (at most about
/// `keepalive_timeout_ms`). Idempotent. The handle stays valid until freed.
#[no_mangle]
pub extern "C" fn mtmux_session_close(session: *const mtmux_session) -> mtmux_result {
    guard("mtmux_session_close", || {
        // Safety: a live session handle (header contract).
        let s = unsafe { borrow(session, "session")? };
        s.inner.close()?;
        Ok(MTMUX_OK)
    })
}

/// Release the session handle. The session itself ends when this handle and every stream
/// handle of it are freed (gracefully, without waiting), or at `mtmux_session_close`.
/// NULL is a no-op.
#[no_mangle]
pub extern "C" fn mtmux_session_free(session: *mut mtmux_session) {
    guard("mtmux_session_free", || {
        // Safety: NULL or a handle from mtmux that the caller no longer uses.
        unsafe { free_handle(session) };
        Ok(())
    })
}

/// `*closed` = 1 if the session is closing or closed (no new streams: closed here, closing
/// at the peer, or ended), else 0; 1 exactly when `mtmux_session_close_reason` gives a
/// reason.
#[no_mangle]
pub extern "C" fn mtmux_session_is_closed(session: *const mtmux_session, closed: *mut i32) -> mtmux_result {
    guard("mtmux_session_is_closed", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(closed, "closed")?) };
        out.write(s.inner.is_closed() as i32);
        Ok(MTMUX_OK)
    })
}

/// `*reason` = why the session ended or is ending, `MTMUX_CLOSE_NONE` while it is open. The
/// reason is set before any call can fail with `MTMUX_ERR_SESSION_CLOSED` (or
/// `_SESSION_EXPIRED`), so right after such a failure it is never `MTMUX_CLOSE_NONE`, and
/// it never changes afterwards (a session the peer began to close stays
/// `MTMUX_CLOSE_PEER` even if this side then closes it too).
#[no_mangle]
pub extern "C" fn mtmux_session_close_reason(
    session: *const mtmux_session,
    reason: *mut mtmux_close_reason,
) -> mtmux_result {
    guard("mtmux_session_close_reason", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(reason, "reason")?) };
        out.write(match s.inner.close_reason() {
            None => mtmux_close_reason::MTMUX_CLOSE_NONE,
            Some(CloseReason::Local) => mtmux_close_reason::MTMUX_CLOSE_LOCAL,
            Some(CloseReason::Peer) => mtmux_close_reason::MTMUX_CLOSE_PEER,
            Some(CloseReason::TunnelsLost(_)) => mtmux_close_reason::MTMUX_CLOSE_TUNNELS_LOST,
            Some(CloseReason::Protocol(_)) => mtmux_close_reason::MTMUX_CLOSE_PROTOCOL,
            Some(CloseReason::Expired(_)) => mtmux_close_reason::MTMUX_CLOSE_EXPIRED,
        });
        Ok(MTMUX_OK)
    })
}

/// `*count` = streams currently open in the session (either direction).
#[no_mangle]
pub extern "C" fn mtmux_session_num_streams(
    session: *const mtmux_session,
    count: *mut usize,
) -> mtmux_result {
    guard("mtmux_session_num_streams", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(count, "count")?) };
        out.write(s.inner.num_streams());
        Ok(MTMUX_OK)
    })
}

/// `*count` = tunnels in the bundle (alive or not).
#[no_mangle]
pub extern "C" fn mtmux_session_num_tunnels(
    session: *const mtmux_session,
    count: *mut usize,
) -> mtmux_result {
    guard("mtmux_session_num_tunnels", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(count, "count")?) };
        out.write(s.inner.num_tunnels());
        Ok(MTMUX_OK)
    })
}

/// Where a tunnel slot is in its life (`mtmux_tunnel_stats.state`). A slot (its index)
/// outlives the TCP connections that fill it: each re-join starts a new generation.
///
/// ```text
///   LIVE --no acknowledgement progress for stale_timeout--> STALE --moves again--> LIVE
///   LIVE or STALE --RST / FIN / I/O error / keepalive timeout--> DEAD
///   DEAD --client re-dials--> REJOINING --accepted--> LIVE (generation + 1)
///                             REJOINING --attempt failed--> DEAD
/// ```
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtmux_tunnel_state {
    /// Carrying traffic.
    MTMUX_TUNNEL_LIVE = 0,
    /// Open, but it stopped delivering: its unacknowledged frames were re-sent on the other
    /// tunnels and it gets no new ones until it moves again.
    MTMUX_TUNNEL_STALE = 1,
    /// Lost; waiting for a re-join (or for good, where re-joining is off or impossible).
    MTMUX_TUNNEL_DEAD = 2,
    /// The client is re-dialing it.
    MTMUX_TUNNEL_REJOINING = 3,
}

pub(super) fn tunnel_state_to_c(s: TunnelState) -> mtmux_tunnel_state {
    match s {
        TunnelState::Live => mtmux_tunnel_state::MTMUX_TUNNEL_LIVE,
        TunnelState::Stale => mtmux_tunnel_state::MTMUX_TUNNEL_STALE,
        TunnelState::Dead => mtmux_tunnel_state::MTMUX_TUNNEL_DEAD,
        TunnelState::Rejoining => mtmux_tunnel_state::MTMUX_TUNNEL_REJOINING,
    }
}

/// Statistics of one tunnel slot (`mtmux_session_tunnel_stats`). The counters add up over
/// the slot's generations (the connections that filled it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct mtmux_tunnel_stats {
    /// Position of the tunnel in the bundle.
    pub index: u32,
    /// 1 while the tunnel works (state `MTMUX_TUNNEL_LIVE` or `MTMUX_TUNNEL_STALE`), else 0.
    pub alive: u32,
    /// Bytes written to the socket (frame headers included).
    pub bytes_sent: u64,
    /// Bytes read from the socket.
    pub bytes_received: u64,
    /// Frames written.
    pub frames_sent: u64,
    /// Frames read.
    pub frames_received: u64,
    /// Round trip of the last answered keepalive ping in microseconds; 0 if none yet.
    pub rtt_us: u64,
    /// Where the slot is in its life.
    pub state: mtmux_tunnel_state,
    /// Which connection fills the slot: 0 for the first, one more for each re-join.
    pub generation: u32,
    /// DATA frames this side re-sent on other tunnels because this one died or went stale.
    pub frames_resent: u64,
    /// Bytes of those frames (headers included).
    pub bytes_resent: u64,
    /// How many times the slot was re-joined.
    pub rejoins: u64,
}

/// Per-tunnel statistics: writes the first `min(capacity, tunnels)` entries, in tunnel
/// order, to `stats` and the number of tunnels to `*count`. `stats` may be NULL when
/// `capacity` is 0 (to ask for the count). Any thread, concurrently with other calls on the
/// session; each entry is a snapshot of counters read one by one, not atomically together.
#[no_mangle]
pub extern "C" fn mtmux_session_tunnel_stats(
    session: *const mtmux_session,
    stats: *mut mtmux_tunnel_stats,
    capacity: usize,
    count: *mut usize,
) -> mtmux_result {
    guard("mtmux_session_tunnel_stats", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(count, "count")?) };
        if stats.is_null() && capacity > 0 {
            return Err(failure(MTMUX_ERR_NULL, "stats is NULL but capacity is not 0"));
        }
        check_len(capacity.saturating_mul(size_of::<mtmux_tunnel_stats>()), "stats")?;
        let all = s.inner.tunnel_stats();
        for (i, t) in all.iter().take(capacity).enumerate() {
            let entry = mtmux_tunnel_stats {
                index: t.index as u32,
                alive: t.alive as u32,
                bytes_sent: t.bytes_sent,
                bytes_received: t.bytes_received,
                frames_sent: t.frames_sent,
                frames_received: t.frames_received,
                rtt_us: t.rtt.map_or(0, |d| (d.as_micros() as u64).max(1)),
                state: tunnel_state_to_c(t.state),
                generation: t.generation,
                frames_resent: t.frames_resent,
                bytes_resent: t.bytes_resent,
                rejoins: t.rejoins,
            };
            // Safety: `stats` is non-NULL (checked above) with room for `capacity` entries
            // (header contract), and `i < capacity`.
            unsafe { stats.add(i).write(entry) };
        }
        out.write(all.len());
        Ok(MTMUX_OK)
    })
}

/// Write the local address of tunnel `tunnel` (0-based; tunnel 0's is the session's own
/// address, as a socket's `getsockname`), e.g. `"127.0.0.1:41234"`, NUL-terminated, into
/// `buf` of `len` bytes (`MTMUX_ADDR_STRLEN` always suffices). The address of the tunnel's
/// current (or last) connection: still known once the session is closed.
#[no_mangle]
pub extern "C" fn mtmux_session_local_addr(
    session: *const mtmux_session,
    tunnel: usize,
    buf: *mut c_char,
    len: usize,
) -> mtmux_result {
    guard("mtmux_session_local_addr", || {
        // Safety: a live session handle and `len` writable bytes at `buf` (header contract).
        unsafe {
            let s = borrow(session, "session")?;
            write_addr(tunnel_addr(s, tunnel, Session::local_addrs)?, buf, len)?;
        }
        Ok(MTMUX_OK)
    })
}

/// Write the peer's address of tunnel `tunnel` (0-based; tunnel 0's is the session's peer,
/// as a socket's `getpeername`), NUL-terminated, into `buf` of `len` bytes
/// (`MTMUX_ADDR_STRLEN` always suffices). Still known once the session is closed.
#[no_mangle]
pub extern "C" fn mtmux_session_peer_addr(
    session: *const mtmux_session,
    tunnel: usize,
    buf: *mut c_char,
    len: usize,
) -> mtmux_result {
    guard("mtmux_session_peer_addr", || {
        // Safety: a live session handle and `len` writable bytes at `buf` (header contract).
        unsafe {
            let s = borrow(session, "session")?;
            write_addr(tunnel_addr(s, tunnel, Session::peer_addrs)?, buf, len)?;
        }
        Ok(MTMUX_OK)
    })
}

/// One tunnel's address from `addrs`; `None` when its socket no longer has one (closed).
pub(super) fn tunnel_addr(
    s: &mtmux_session,
    tunnel: usize,
    addrs: fn(&Session) -> Vec<SocketAddr>,
) -> Res<Option<SocketAddr>> {
    let n = s.inner.num_tunnels();
    if tunnel >= n {
        return Err(failure(
            MTMUX_ERR_INVALID_ARGUMENT,
            format!("tunnel {tunnel} does not exist (the session has {n})"),
        ));
    }
    // The list skips sockets without an address, so it is only indexable when complete.
    let all = addrs(&s.inner);
    Ok((all.len() == n).then(|| all[tunnel]))
}
