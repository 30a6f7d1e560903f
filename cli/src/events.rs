//! A session's failover events as log lines, one per event, and the thread that logs them:
//!
//! ```text
//! session 1 tunnel 2 lost (connection reset): 37 frames re-sent on 3 tunnels
//! session 1 tunnel 2 stale: 12 frames re-sent on 3 tunnels
//! session 1 tunnel 2 moving again
//! session 1 tunnel 2 re-joined after 180 ms (generation 3)
//! session 1: all tunnels lost; resuming for up to 60s
//! session 1 resumed after 3.2s
//! ```

use crate::units::fmt_span;
use mtmux::{Event, Session};
use std::time::{Duration, Instant};

/// Longest wait for an event before checking whether the session has ended.
const EVENT_WAIT: Duration = Duration::from_secs(1);

/// Shortest pause between two polls when `next_event` returns at once without an event (it
/// does while a session is closing), so the thread never spins.
const MIN_POLL: Duration = Duration::from_millis(100);

/// Log every failover event of session `id` until it has closed and every event was read.
/// Blocks: run it on a thread of its own (it holds a handle, so it ends within [`EVENT_WAIT`]
/// of the session's end, never keeps it open).
pub fn log_events(id: u64, session: &Session) {
    loop {
        let asked = Instant::now();
        match session.next_event(EVENT_WAIT) {
            Some(event) => log::info!("{}", event_line(id, &event)),
            None if session.close_reason().is_some() => return,
            None => std::thread::sleep(MIN_POLL.saturating_sub(asked.elapsed())),
        }
    }
}

/// The log line of one event of session `id`.
pub fn event_line(id: u64, event: &Event) -> String {
    match event {
        Event::TunnelLost { index, reason, frames_resent, live, .. } => {
            format!("session {id} tunnel {index} lost ({reason}): {}", resent(*frames_resent, *live))
        }
        Event::TunnelStale { index, frames_resent, live, .. } => {
            format!("session {id} tunnel {index} stale: {}", resent(*frames_resent, *live))
        }
        Event::TunnelRecovered { index, .. } => format!("session {id} tunnel {index} moving again"),
        Event::TunnelRejoined { index, generation, after } => {
            format!(
                "session {id} tunnel {index} re-joined after {} (generation {generation})",
                fmt_span(*after)
            )
        }
        Event::OutageStarted { resume_for } if resume_for.is_zero() => {
            format!("session {id}: all tunnels lost; not resuming (--resume-timeout 0)")
        }
        Event::OutageStarted { resume_for } => {
            format!("session {id}: all tunnels lost; resuming for up to {}", fmt_span(*resume_for))
        }
        Event::Resumed { after } => format!("session {id} resumed after {}", fmt_span(*after)),
    }
}

/// `37 frames re-sent on 3 tunnels`, or `no tunnel left` when none is live.
fn resent(frames: u64, live: usize) -> String {
    match (frames, live) {
        (0, 0) => "no tunnel left".into(),
        (_, 0) => format!("{} to re-send, no tunnel left", count(frames, "frame")),
        _ => format!("{} re-sent on {}", count(frames, "frame"), count(live as u64, "tunnel")),
    }
}

/// `1 frame`, `2 frames`.
fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

/// The line for session `id` ended as [`mtmux::CloseReason::Expired`] with the library's
/// text `why`: `session 3 expired: no tunnel came back within 60s`, or, when the server
/// answered a re-join that it does not know the session, `the server no longer knows
/// session 3 (it restarted?)`.
pub fn expired_line(id: u64, why: &str, resume_timeout: Duration) -> String {
    if server_forgot(why) {
        format!("the server no longer knows session {id} (it restarted?)")
    } else {
        format!("session {id} expired: no tunnel came back within {}", fmt_span(resume_timeout))
    }
}

/// Whether an expiry's text says the server refused a re-join for not knowing the session.
fn server_forgot(why: &str) -> bool {
    let why = why.to_ascii_lowercase();
    ["unknown session", "no such session", "no longer knows", "restarted"].iter().any(|s| why.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_event_is_one_line_naming_the_session_and_tunnel() {
        let lost = Event::TunnelLost {
            index: 2,
            generation: 0,
            reason: "connection reset".into(),
            frames_resent: 37,
            live: 3,
        };
        let cases = [
            (lost, "session 1 tunnel 2 lost (connection reset): 37 frames re-sent on 3 tunnels"),
            (
                Event::TunnelStale { index: 2, generation: 1, frames_resent: 12, live: 3 },
                "session 1 tunnel 2 stale: 12 frames re-sent on 3 tunnels",
            ),
            (Event::TunnelRecovered { index: 2, generation: 1 }, "session 1 tunnel 2 moving again"),
            (
                Event::TunnelRejoined { index: 2, generation: 3, after: ms(180) },
                "session 1 tunnel 2 re-joined after 180 ms (generation 3)",
            ),
            (
                Event::OutageStarted { resume_for: Duration::from_secs(60) },
                "session 1: all tunnels lost; resuming for up to 60s",
            ),
            (Event::Resumed { after: ms(3200) }, "session 1 resumed after 3.2s"),
        ];
        for (event, line) in cases {
            assert_eq!(event_line(1, &event), line);
        }
    }

    #[test]
    fn counts_are_singular_or_plural_and_a_last_tunnel_says_so() {
        let lost = |frames_resent, live| Event::TunnelLost {
            index: 0,
            generation: 4,
            reason: "keepalive timeout".into(),
            frames_resent,
            live,
        };
        assert_eq!(
            event_line(7, &lost(1, 1)),
            "session 7 tunnel 0 lost (keepalive timeout): 1 frame re-sent on 1 tunnel"
        );
        assert_eq!(
            event_line(7, &lost(0, 2)),
            "session 7 tunnel 0 lost (keepalive timeout): 0 frames re-sent on 2 tunnels"
        );
        assert_eq!(event_line(7, &lost(0, 0)), "session 7 tunnel 0 lost (keepalive timeout): no tunnel left");
        assert_eq!(
            event_line(7, &lost(5, 0)),
            "session 7 tunnel 0 lost (keepalive timeout): 5 frames to re-send, no tunnel left"
        );
        assert_eq!(
            event_line(7, &Event::OutageStarted { resume_for: Duration::ZERO }),
            "session 7: all tunnels lost; not resuming (--resume-timeout 0)"
        );
    }

    #[test]
    fn expiry_says_whether_time_ran_out_or_the_server_forgot_the_session() {
        let minute = Duration::from_secs(60);
        assert_eq!(
            expired_line(3, "no tunnel came back within 60s", minute),
            "session 3 expired: no tunnel came back within 60s"
        );
        assert_eq!(
            expired_line(3, "re-join refused: unknown session", minute),
            "the server no longer knows session 3 (it restarted?)"
        );
    }
}
