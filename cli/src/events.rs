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
//!
//! Failed re-dials (`session 1 tunnel 2 re-join failed: ...; trying again`) are debug lines:
//! during an outage every tunnel fails one after the other until the network is back.
//!
//! On the server, a client that stopped without ending its session (every tunnel closed by
//! its kernel at once, see [`PeerStop`]) is no outage: `session 1: the client closed all 8
//! tunnels without ending the session (it stopped?); closing it`, and the session ends at
//! once (`... closed by the client ...`, at info).

use crate::units::fmt_span;
use mtmux::{Event, Session};
use std::time::{Duration, Instant};

/// Longest wait for an event before checking whether the session has ended.
const EVENT_WAIT: Duration = Duration::from_secs(1);

/// Shortest pause between two polls when `next_event` returns at once without an event (it
/// does while a session is closing), so the thread never spins.
const MIN_POLL: Duration = Duration::from_millis(100);

/// The library's reason for a tunnel whose peer closed the connection (a clean EOF).
const CLOSED_BY_PEER: &str = "closed by the peer";

/// Log every failover event of session `id` until it has closed and every event was read.
/// Blocks: run it on a thread of its own (it holds a handle, so it ends within [`EVENT_WAIT`]
/// of the session's end, never keeps it open).
///
/// Returns whether the peer stopped: every tunnel was closed by it (a clean EOF, as when its
/// process exits) without the session being closed. With `close_when_peer_stops` (the
/// server: a client that stopped never resumes), such a session is closed at once rather
/// than kept for `--resume-timeout`.
pub fn log_events(id: u64, session: &Session, close_when_peer_stops: bool) -> bool {
    let mut stop = PeerStop::new(session.num_tunnels());
    loop {
        let asked = Instant::now();
        match session.next_event(EVENT_WAIT) {
            Some(event) => {
                stop.note(&event, Instant::now());
                if close_when_peer_stops && matches!(event, Event::OutageStarted { .. }) && stop.stopped() {
                    log::info!(
                        "session {id}: the client closed all {} without ending the session (it stopped?); \
                         closing it",
                        count(session.num_tunnels() as u64, "tunnel")
                    );
                    let _ = session.close();
                    continue;
                }
                log::log!(level(&event), "{}", event_line(id, &event))
            }
            None if session.close_reason().is_some() => return stop.stopped(),
            None => std::thread::sleep(MIN_POLL.saturating_sub(asked.elapsed())),
        }
    }
}

/// Whether the peer stopped: every tunnel's last loss was the peer's kernel ending the
/// connection, within [`AT_ONCE`] of each other, and at least one of them a clean close
/// (EOF). A process that exits closes its connections with a FIN, or a RST where data it had
/// not read was waiting; an outage of the path silences tunnels or (a middlebox) resets them,
/// but does not close one cleanly at the moment the others end.
#[derive(Debug)]
pub struct PeerStop {
    /// Per tunnel: how and when its peer ended it (`None`: alive, or lost another way).
    ended: Vec<Option<(End, Instant)>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Eof,
    Reset,
}

/// Whether a tunnel's loss `reason` is the peer's kernel ending the connection abruptly: a
/// RST seen by the reader, or by a writer (`broken pipe`).
fn ended_by_peer(reason: &str) -> bool {
    let r = reason.to_lowercase();
    r.contains("reset by peer") || r.contains("broken pipe")
}

/// Longest spread between the ends of the tunnels of a peer that stopped.
const AT_ONCE: Duration = Duration::from_secs(1);

impl PeerStop {
    pub fn new(tunnels: usize) -> PeerStop {
        PeerStop { ended: vec![None; tunnels] }
    }

    /// Note `event`, seen at `now`.
    pub fn note(&mut self, event: &Event, now: Instant) {
        let (index, end) = match event {
            Event::TunnelLost { index, reason, .. } if reason == CLOSED_BY_PEER => (index, Some(End::Eof)),
            Event::TunnelLost { index, reason, .. } if ended_by_peer(reason) => (index, Some(End::Reset)),
            Event::TunnelLost { index, .. } | Event::TunnelRejoined { index, .. } => (index, None),
            _ => return,
        };
        if let Some(e) = self.ended.get_mut(*index) {
            *e = end.map(|end| (end, now));
        }
    }

    pub fn stopped(&self) -> bool {
        let ends: Option<Vec<(End, Instant)>> = self.ended.iter().copied().collect();
        let Some(ends) = ends.filter(|e| !e.is_empty()) else { return false };
        let (first, last) = (ends.iter().map(|e| e.1).min(), ends.iter().map(|e| e.1).max());
        let spread = last.zip(first).map(|(l, f)| l - f).unwrap_or_default();
        ends.iter().any(|e| e.0 == End::Eof) && spread <= AT_ONCE
    }
}

/// How much an event matters to an operator.
fn level(event: &Event) -> log::Level {
    match event {
        Event::RejoinFailed { .. } => log::Level::Debug,
        _ => log::Level::Info,
    }
}

/// The log line of one event of session `id`.
pub fn event_line(id: u64, event: &Event) -> String {
    match event {
        Event::TunnelLost { index, reason, frames_resent, live, .. } => {
            let reason = tidy(reason);
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
        Event::RejoinFailed { index, error } => {
            format!("session {id} tunnel {index} re-join failed: {}; trying again", tidy(error))
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

/// An error text as a phrase of a log line: `Connection reset by peer (os error 104)` →
/// `connection reset by peer` (also after a `: `); acronyms keep their capitals.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Drop every " (os error N)".
    while let Some(at) = rest.find(" (os error ") {
        out.push_str(&rest[..at]);
        let tail = &rest[at + " (os error ".len()..];
        let digits = tail.find(|c: char| !c.is_ascii_digit()).unwrap_or(tail.len());
        if digits > 0 && tail[digits..].starts_with(')') {
            rest = &tail[digits + 1..];
        } else {
            out.push_str(" (os error ");
            rest = tail;
        }
    }
    out.push_str(rest);
    out.split(": ").map(lowercase_word).collect::<Vec<_>>().join(": ")
}

/// `Connection reset` → `connection reset`; `ACK lost` stays.
fn lowercase_word(phrase: &str) -> String {
    let mut chars = phrase.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(phrase[first.len_utf8()..].chars()).collect()
        }
        _ => phrase.to_string(),
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
pub fn count(n: u64, what: &str) -> String {
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

/// Whether an expiry's text says the server refused a re-join for not knowing the session
/// (the library's words: "the server no longer knows this session ...").
fn server_forgot(why: &str) -> bool {
    why.contains("no longer knows")
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
            assert_eq!(level(&event), log::Level::Info);
        }
        let failed = Event::RejoinFailed { index: 1, error: "connection refused".into() };
        assert_eq!(
            event_line(1, &failed),
            "session 1 tunnel 1 re-join failed: connection refused; trying again"
        );
        assert_eq!(level(&failed), log::Level::Debug);
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
    fn a_peer_stopped_when_its_kernel_ended_every_tunnel_at_once() {
        let lost = |index, reason: &str| Event::TunnelLost {
            index,
            generation: 0,
            reason: reason.into(),
            frames_resent: 0,
            live: 0,
        };
        const RESET: &str = "Connection reset by peer (os error 104)";
        let t0 = Instant::now();
        let mut s = PeerStop::new(3);
        s.note(&lost(0, CLOSED_BY_PEER), t0);
        s.note(&lost(1, RESET), t0);
        assert!(!s.stopped(), "tunnel 2 is still up");
        s.note(&lost(2, "write failed: Broken pipe (os error 32)"), t0 + ms(5));
        assert!(s.stopped(), "a FIN and RSTs at once: the process exited");
        // A re-joined tunnel, or one lost another way, is no stop.
        s.note(&Event::TunnelRejoined { index: 1, generation: 1, after: ms(5) }, t0 + ms(6));
        assert!(!s.stopped());
        s.note(&lost(1, "silent for 30.0s (keepalive timeout)"), t0 + ms(7));
        assert!(!s.stopped());
        s.note(&lost(1, CLOSED_BY_PEER), t0 + ms(8));
        assert!(s.stopped());
        // Only resets (a middlebox, the test relay): an outage.
        let mut s = PeerStop::new(2);
        s.note(&lost(0, RESET), t0);
        s.note(&lost(1, RESET), t0);
        assert!(!s.stopped());
        // Ends far apart: tunnels dying one by one, not a process exiting.
        let mut s = PeerStop::new(2);
        s.note(&lost(0, CLOSED_BY_PEER), t0);
        s.note(&lost(1, CLOSED_BY_PEER), t0 + AT_ONCE + ms(1));
        assert!(!s.stopped());
        assert!(!PeerStop::new(0).stopped());
    }

    #[test]
    fn error_texts_read_as_phrases() {
        assert_eq!(tidy("Connection reset by peer (os error 104)"), "connection reset by peer");
        assert_eq!(tidy("write failed: Broken pipe (os error 32)"), "write failed: broken pipe");
        assert_eq!(tidy("silent for 30.0s (keepalive timeout)"), "silent for 30.0s (keepalive timeout)");
        assert_eq!(tidy("ACK for an unknown generation"), "ACK for an unknown generation");
        assert_eq!(tidy("odd (os error x)"), "odd (os error x)");
        let lost = Event::TunnelLost {
            index: 1,
            generation: 2,
            reason: "Connection reset by peer (os error 104)".into(),
            frames_resent: 3,
            live: 2,
        };
        assert_eq!(
            event_line(4, &lost),
            "session 4 tunnel 1 lost (connection reset by peer): 3 frames re-sent on 2 tunnels"
        );
    }

    #[test]
    fn expiry_says_whether_time_ran_out_or_the_server_forgot_the_session() {
        let minute = Duration::from_secs(60);
        assert_eq!(
            expired_line(3, "no tunnel came back within the resume timeout (60s)", minute),
            "session 3 expired: no tunnel came back within 60s"
        );
        assert_eq!(
            expired_line(
                3,
                "the server no longer knows this session (it ended, expired or restarted): ",
                minute
            ),
            "the server no longer knows session 3 (it restarted?)"
        );
    }
}
