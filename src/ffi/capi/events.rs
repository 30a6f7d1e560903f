//! Session statistics and failover events.

use super::*;

// ---- Session statistics and failover events ----------------------------------------------------

/// Statistics of a session as a whole (`mtmux_session_stats`; the struct has a name of its
/// own because C cannot give a type and a function the same one); per-tunnel figures come
/// from `mtmux_session_tunnel_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct mtmux_session_statistics {
    /// Tunnel slots in the bundle (as `mtmux_session_num_tunnels`).
    pub tunnels: u32,
    /// Slots whose state is `MTMUX_TUNNEL_LIVE`.
    pub live_tunnels: u32,
    /// How many times the session came back after losing every tunnel.
    pub resumes: u64,
    /// How long the current outage (no tunnel left) has lasted, in milliseconds; 0 when there
    /// is none. `in_outage` tells an outage shorter than 1 ms from none.
    pub outage_ms: u64,
    /// DATA frames this side has sent that the peer has not yet acknowledged (the replay
    /// buffer that a lost tunnel's frames are re-sent from).
    pub unacked_frames: u64,
    /// Flow-control charge of those frames in bytes (what the replay buffer holds).
    pub unacked_bytes: u64,
    /// Acknowledgement frames sent.
    pub acks_sent: u64,
    /// Bytes of those acknowledgement frames (headers included).
    pub ack_bytes_sent: u64,
    /// Re-joins this side refused (a wrong proof, a replayed or out-of-date attempt).
    pub rejoins_refused: u64,
    /// Failover events dropped because nobody read them with `mtmux_session_next_event`
    /// (a session keeps the last `MTMUX_EVENT_QUEUE` unread ones).
    pub events_dropped: u64,
    /// 1 while every tunnel is lost and the session waits up to `resume_timeout_ms` for the
    /// client to re-join, else 0.
    pub in_outage: u32,
}

/// Unread failover events a session keeps; older ones are dropped and counted in
/// `mtmux_session_statistics.events_dropped`.
pub const MTMUX_EVENT_QUEUE: u32 = 256;

const _: () = assert!(crate::EVENT_QUEUE == MTMUX_EVENT_QUEUE as usize);

/// `*stats` = the session's statistics. Any thread, concurrently with other calls on the
/// session; the counters are read one by one, not atomically together.
#[no_mangle]
pub extern "C" fn mtmux_session_stats(
    session: *const mtmux_session,
    stats: *mut mtmux_session_statistics,
) -> mtmux_result {
    guard("mtmux_session_stats", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(stats, "stats")?) };
        let st = s.inner.stats();
        let live = st.tunnels.iter().filter(|t| t.state == TunnelState::Live).count();
        out.write(mtmux_session_statistics {
            tunnels: st.tunnels.len() as u32,
            live_tunnels: live as u32,
            resumes: st.resumes,
            outage_ms: st.outage.map_or(0, |d| d.as_millis() as u64),
            unacked_frames: st.unacked_frames,
            unacked_bytes: st.unacked_bytes,
            acks_sent: st.acks_sent,
            ack_bytes_sent: st.ack_bytes_sent,
            rejoins_refused: st.rejoins_refused,
            events_dropped: st.events_dropped,
            in_outage: st.outage.is_some() as u32,
        });
        Ok(MTMUX_OK)
    })
}

/// What happened to a session's tunnels (`mtmux_event.kind`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtmux_event_kind {
    /// Tunnel `index` (generation `generation`) was lost; `frames_resent` of its frames were
    /// re-sent on the others, `live` tunnels remain; `reason` says how it ended.
    MTMUX_EVENT_TUNNEL_LOST = 1,
    /// Tunnel `index` stopped delivering for the stale timeout: `frames_resent` of its frames
    /// were re-sent on the others, `live` tunnels remain, and it gets no new frames until it
    /// moves again.
    MTMUX_EVENT_TUNNEL_STALE = 2,
    /// Stale tunnel `index` moved again and carries traffic again.
    MTMUX_EVENT_TUNNEL_RECOVERED = 3,
    /// Lost tunnel `index` was replaced by a new connection, generation `generation`, after
    /// `duration_ms` without one.
    MTMUX_EVENT_TUNNEL_REJOINED = 4,
    /// Every tunnel is lost: the session waits up to `duration_ms` (its resume timeout) for
    /// them to come back.
    MTMUX_EVENT_OUTAGE_STARTED = 5,
    /// A tunnel came back after every one was lost, after an outage of `duration_ms`.
    MTMUX_EVENT_RESUMED = 6,
    /// A re-dial of lost tunnel `index` failed (`reason` says why); another follows after a
    /// backoff.
    MTMUX_EVENT_REJOIN_FAILED = 7,
}

/// A failover event (`mtmux_session_next_event`). Fields a kind does not use are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct mtmux_event {
    /// What happened.
    pub kind: mtmux_event_kind,
    /// The tunnel slot (tunnel events).
    pub index: u32,
    /// The slot's generation: the one lost, gone stale or recovered, or the new one of a
    /// re-join.
    pub generation: u32,
    /// Tunnels still live (`MTMUX_EVENT_TUNNEL_LOST`, `MTMUX_EVENT_TUNNEL_STALE`).
    pub live: u32,
    /// DATA frames re-sent on other tunnels because of it (`_TUNNEL_LOST`, `_TUNNEL_STALE`).
    pub frames_resent: u64,
    /// Milliseconds: the slot's time without a connection (`_TUNNEL_REJOINED`), the resume
    /// timeout (`_OUTAGE_STARTED`), the outage's length (`_RESUMED`).
    pub duration_ms: u64,
    /// Length in bytes (without the NUL) of the whole reason text (`_TUNNEL_LOST`, e.g.
    /// `"connection reset"`, and `_REJOIN_FAILED`), even when the caller's buffer held less
    /// of it.
    pub reason_len: usize,
}

/// Wait at most `timeout_ms` (0: do not wait) for the session's next failover event and
/// write it to `*event`. The reason text of a lost tunnel or a failed re-dial goes
/// NUL-terminated into `reason` of `reason_cap` bytes, cut to fit at a UTF-8 character
/// boundary (it was cut when `event->reason_len >= reason_cap`); events without a reason
/// write `""`. With `reason_cap` 0 no text is written and `reason` may be NULL.
///
/// Returns `MTMUX_OK`; `MTMUX_ERR_TIMED_OUT` when no event came in time; once the session
/// has ended and every event was read, `MTMUX_ERR_SESSION_CLOSED` (or
/// `MTMUX_ERR_SESSION_EXPIRED`). The session queues events whether or not anyone reads them
/// (the last `MTMUX_EVENT_QUEUE`; older ones are counted in `events_dropped`). Any thread;
/// several threads may wait at once, and each event goes to one of them.
#[no_mangle]
pub extern "C" fn mtmux_session_next_event(
    session: *const mtmux_session,
    timeout_ms: u64,
    event: *mut mtmux_event,
    reason: *mut c_char,
    reason_cap: usize,
) -> mtmux_result {
    guard("mtmux_session_next_event", || {
        // Safety: a live session handle, a writable pointer and `reason_cap` writable bytes
        // at `reason` (header contract).
        let (s, out, text) = unsafe {
            let s = borrow(session, "session")?;
            let out = output(event, "event")?;
            let text = if reason_cap == 0 {
                None
            } else {
                Some(bytes_mut(reason.cast::<u8>(), reason_cap, "reason")?)
            };
            (s, out, text)
        };
        let timeout = self::timeout_ms(timeout_ms, "timeout_ms")?;
        let Some(e) = s.inner.next_event(timeout) else {
            if s.inner.is_closed() {
                let why = s.inner.close_reason().unwrap_or(CloseReason::Local);
                return Err(Error::SessionClosed(why).into());
            }
            return Err(Error::TimedOut.into());
        };
        let (c, why) = event_to_c(&e);
        if let Some(buf) = text {
            let mut n = why.len().min(buf.len() - 1);
            while !why.is_char_boundary(n) {
                n -= 1;
            }
            buf[..n].copy_from_slice(&why.as_bytes()[..n]);
            buf[n] = 0;
        }
        out.write(c);
        Ok(MTMUX_OK)
    })
}

/// The C form of an event, and its reason text (`""` for kinds without one).
pub(super) fn event_to_c(e: &Event) -> (mtmux_event, &str) {
    use mtmux_event_kind::*;
    let ms = |d: &Duration| d.as_millis() as u64;
    let blank = |kind| mtmux_event {
        kind,
        index: 0,
        generation: 0,
        live: 0,
        frames_resent: 0,
        duration_ms: 0,
        reason_len: 0,
    };
    match e {
        Event::TunnelLost { index, generation, reason, frames_resent, live } => (
            mtmux_event {
                index: *index as u32,
                generation: *generation,
                live: *live as u32,
                frames_resent: *frames_resent,
                reason_len: reason.len(),
                ..blank(MTMUX_EVENT_TUNNEL_LOST)
            },
            reason,
        ),
        Event::TunnelStale { index, generation, frames_resent, live } => (
            mtmux_event {
                index: *index as u32,
                generation: *generation,
                live: *live as u32,
                frames_resent: *frames_resent,
                ..blank(MTMUX_EVENT_TUNNEL_STALE)
            },
            "",
        ),
        Event::TunnelRecovered { index, generation } => (
            mtmux_event {
                index: *index as u32,
                generation: *generation,
                ..blank(MTMUX_EVENT_TUNNEL_RECOVERED)
            },
            "",
        ),
        Event::TunnelRejoined { index, generation, after } => (
            mtmux_event {
                index: *index as u32,
                generation: *generation,
                duration_ms: ms(after),
                ..blank(MTMUX_EVENT_TUNNEL_REJOINED)
            },
            "",
        ),
        Event::OutageStarted { resume_for } => {
            (mtmux_event { duration_ms: ms(resume_for), ..blank(MTMUX_EVENT_OUTAGE_STARTED) }, "")
        }
        Event::Resumed { after } => {
            (mtmux_event { duration_ms: ms(after), ..blank(MTMUX_EVENT_RESUMED) }, "")
        }
        Event::RejoinFailed { index, error } => (
            mtmux_event { index: *index as u32, reason_len: error.len(), ..blank(MTMUX_EVENT_REJOIN_FAILED) },
            error,
        ),
    }
}
