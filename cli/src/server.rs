//! `mtmux server`: accept bundles from clients and connect every stream to the one target.
//!
//! A session whose every tunnel is lost is kept for `--resume-timeout` (its streams and
//! their target connections wait) so that the client can re-join it.
//!
//! Who gets in: on an address other hosts can reach, the server starts only with a
//! pre-shared key or TLS, or `--insecure` ([`protection`]). Connections the listener refuses
//! during their handshake are logged with their address ([`refusals`](crate::refusals)).
//!
//! Threads: the main thread accepts sessions; one logs refusals; per session, one thread
//! accepts its streams and one logs its failover events (and the library runs two per tunnel
//! and a supervisor); each stream gets one thread while it is connected to the target (the
//! streams of a session connect one after the other, in the client's order: see
//! [`order`](crate::order)), then
//! runs a [`pipe`](crate::pipe) (two threads) over its own TCP connection to the target; an
//! optional stats thread logs every session's tunnels. Streams are admitted against the
//! [`Budget`] (`--max-connecting[-total]`, `--max-streams[-total]`): one beyond a bound is
//! reset at once and costs no thread, so the stream threads never exceed
//! 2 × `--max-streams-total`.

use crate::args::ServerArgs;
use crate::events::{count, expired_line, log_events};
use crate::limits::{Budget, Limit, Ticket};
use crate::net::{connect, port_layout, resolve};
use crate::order::{Turn, Turns, GRACE};
use crate::pipe::pipe_and_log;
use crate::security::{load_key, protection, unprotected_line, Protection, KEY_ENV};
use crate::stats::Meter;
use crate::units::fmt_duration;
use crate::{end_reason, expired, spawn, validated, Fatal};
use log::{info, warn};
use mtmux::{Listener, ResetCode, Session, Stream};
use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Run `mtmux server` until the process is stopped; returns only on a failure to start.
pub fn run(a: ServerArgs) -> Result<(), Fatal> {
    let key = load_key(a.key.key_file.as_deref(), std::env::var_os(KEY_ENV))?;
    let cfg = validated(mtmux::Config { key: key.key.clone(), ..a.config() })?;
    if a.connect_timeout.is_zero() {
        return Err(Fatal::usage("--connect-timeout must be greater than zero"));
    }
    // Resolved now to catch typos, and again for every stream (the target may move).
    resolve(&a.target).map_err(|e| Fatal::new(format!("bad --target {}: {e}", a.target)))?;
    let listen: Vec<_> =
        a.listen.to_socket_addrs().map_err(|e| Fatal::new(format!("--listen {}: {e}", a.listen)))?.collect();
    // TLS (another flag set) plugs in here as the second protection.
    let Some(protected) = protection(&listen, cfg.key.is_some(), false, a.insecure) else {
        return Err(Fatal::usage(unprotected_line(&a.listen, &a.target)));
    };
    for w in &key.warnings {
        warn!("{w}");
    }
    let listener = Arc::new(
        Listener::bind(&a.listen, &cfg).map_err(|e| Fatal::new(format!("--listen {}: {e}", a.listen)))?,
    );
    let addrs = listener.local_addrs();
    info!(
        "listening on {} ({}, up to {} tunnels per client); forwarding every stream to {}",
        addrs[0],
        port_layout(addrs),
        cfg.tunnels,
        a.target
    );
    match (protected, &key.source) {
        (Protection::Key, Some(source)) => info!("clients must prove the pre-shared key ({source})"),
        (Protection::Insecure, _) => warn!(
            "no key or TLS (--insecure): anyone who can reach {} gets a session with {}",
            addrs[0], a.target
        ),
        _ => {}
    }
    let l = listener.clone();
    spawn("refusals", move || crate::refusals::log_refusals(&l));
    let server = Arc::new(Server {
        target: a.target.clone(),
        connect_timeout: a.connect_timeout,
        resume_timeout: cfg.resume_timeout,
        max_sessions: a.max_sessions as usize,
        budget: Budget::new(a.bounds()),
        sessions: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(1),
    });
    if !a.stats_interval.is_zero() {
        let s = server.clone();
        spawn("stats", move || s.log_stats(a.stats_interval));
    }
    loop {
        match listener.accept() {
            Ok(session) => server.admit(session),
            Err(e) => return Err(Fatal::new(format!("listener stopped: {e}"))),
        }
    }
}

struct Server {
    target: String,
    connect_timeout: Duration,
    /// How long a session without tunnels is kept (for the line when one expires).
    resume_timeout: Duration,
    max_sessions: usize,
    /// Streams being connected and carried, bounded per session and in total.
    budget: Arc<Budget>,
    /// Live sessions by number, with the meter of their stats line.
    sessions: Mutex<BTreeMap<u64, (Session, Meter)>>,
    next_id: AtomicU64,
}

impl Server {
    /// Take a new session, or close it at once when at the limit.
    fn admit(self: &Arc<Self>, session: Session) {
        let peer = peer_of(&session);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions.len() >= self.max_sessions {
            drop(sessions);
            warn!("refused a session from {peer}: already {} sessions (--max-sessions)", self.max_sessions);
            // Dropping the last handle closes it gracefully without blocking.
            drop(session);
            return;
        }
        let id = self.next_id.fetch_add(1, Relaxed);
        sessions.insert(id, (session.clone(), Meter::new(&session)));
        drop(sessions);
        info!("session {id} from {peer}: {} tunnels", session.num_tunnels());
        let s = session.clone();
        spawn(&format!("events-{id}"), move || log_events(id, &s));
        let server = self.clone();
        spawn(&format!("session-{id}"), move || server.serve_session(id, session));
    }

    /// Accept the session's streams until it ends.
    fn serve_session(self: Arc<Self>, id: u64, session: Session) {
        let started = Instant::now();
        let mut streams = 0u64;
        let mut refused = Refused::default();
        // Streams connect to the target in the order they were accepted (the client's order).
        let turns = Arc::new(Turns::new(GRACE));
        let err = loop {
            match session.accept_stream() {
                Ok(stream) => match self.budget.admit(id) {
                    Ok(ticket) => {
                        streams += 1;
                        let server = self.clone();
                        let turn = turns.turn(turns.issue());
                        spawn(&format!("stream-{id}-{}", stream.id()), move || {
                            server.serve_stream(id, stream, ticket, turn)
                        });
                    }
                    Err(limit) => {
                        // At once, without a thread or a connection to the target.
                        let _ = stream.reset_with(ResetCode::TooManyStreams);
                        refused.note(id, stream.id(), limit);
                    }
                },
                Err(e) => break e,
            }
        };
        self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        if let Some(why) = expired(&session, &err) {
            warn!(
                "{} (from {}, after {}, {})",
                expired_line(id, &why, self.resume_timeout),
                peer_of(&session),
                fmt_duration(started.elapsed()),
                count(streams, "stream")
            );
            return;
        }
        let line = |reason: String| {
            format!(
                "session {id} from {} ended after {}, {}: {reason}",
                peer_of(&session),
                fmt_duration(started.elapsed()),
                count(streams, "stream")
            )
        };
        match end_reason(&session, &err) {
            Ok(reason) => info!("{}", line(reason)),
            Err(reason) => warn!("{}", line(reason)),
        }
    }

    /// Connect one stream to the target and carry it until both sides are done. `ticket` is
    /// its share of the budget, given back when this returns; `turn` its place in the
    /// session's order of connects ([`crate::order`]).
    fn serve_stream(&self, session: u64, stream: Stream, mut ticket: Ticket, mut turn: Turn) {
        let sid = stream.id();
        turn.wait();
        let connected = connect(&self.target, self.connect_timeout);
        turn.finished();
        ticket.connected();
        let tcp = match connected {
            Ok(tcp) => tcp,
            Err(e) => {
                warn!("session {session} stream {sid}: cannot connect to target {}: {e}", self.target);
                // The client learns why (and says so) from the code.
                let _ = stream.reset_with(connect_failure_code(&e));
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
        info!("session {session} stream {sid}: opened, connected to {} from {local}", self.target);
        pipe_and_log(&tcp, "target", &stream, &format!("session {session} stream {sid}"));
    }

    fn log_stats(&self, every: Duration) {
        loop {
            std::thread::sleep(every);
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            for (id, (session, meter)) in sessions.iter_mut() {
                info!("session {id} stats: {}", meter.line(session));
            }
            drop(sessions);
            let t = self.budget.totals();
            info!("streams: {} carried, {} of them being connected to the target", t.streams, t.connecting);
        }
    }
}

/// Streams of one session turned away at a bound: the first is logged, then at most one line
/// a second (an OPEN flood would otherwise write a line per stream).
#[derive(Default)]
struct Refused {
    last_line: Option<Instant>,
    since_last_line: u64,
}

impl Refused {
    fn note(&mut self, session: u64, stream: u32, limit: Limit) {
        self.since_last_line += 1;
        if self.last_line.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            return;
        }
        let more = match self.since_last_line {
            1 => String::new(),
            n => format!(" ({} refused since the last line)", n - 1),
        };
        warn!("session {session} stream {stream}: reset at once: {limit}{more}");
        self.last_line = Some(Instant::now());
        self.since_last_line = 0;
    }
}

/// The RESET code that tells the client why its stream could not be connected to the target.
fn connect_failure_code(e: &std::io::Error) -> ResetCode {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => ResetCode::TargetRefused,
        TimedOut | WouldBlock => ResetCode::TargetTimedOut,
        _ => ResetCode::TargetUnreachable,
    }
}

/// The client's address as the first tunnel sees it.
fn peer_of(session: &Session) -> String {
    session.peer_addrs().first().map(|a| a.to_string()).unwrap_or_else(|| "?".into())
}
