//! `mtmux server`: accept bundles from clients and connect every stream to the one target.
//!
//! A session whose every tunnel is lost is kept for `--resume-timeout` (its streams and
//! their target connections wait) so that the client can re-join it.
//!
//! Threads: the main thread accepts sessions; per session, one thread accepts its streams and
//! one logs its failover events; each stream runs a [`pipe`] (two threads) to its own TCP
//! connection to the target; an optional stats thread logs every session's tunnels.

use crate::args::ServerArgs;
use crate::events::{count, expired_line, log_events};
use crate::net::{connect, port_layout, resolve};
use crate::pipe::pipe_and_log;
use crate::stats::Meter;
use crate::units::fmt_duration;
use crate::{end_reason, expired, spawn, validated, Fatal};
use log::{info, warn};
use mtmux::{Listener, Session, Stream};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Run `mtmux server` until the process is stopped; returns only on a failure to start.
pub fn run(a: ServerArgs) -> Result<(), Fatal> {
    let cfg = validated(a.failover.apply(a.tunnel.config(a.max_streams as usize)))?;
    let cfg = crate::tls::server(&a.tls, cfg)?;
    if a.connect_timeout.is_zero() {
        return Err(Fatal::usage("--connect-timeout must be greater than zero"));
    }
    // Resolved now to catch typos, and again for every stream (the target may move).
    resolve(&a.target).map_err(|e| Fatal::new(format!("bad --target {}: {e}", a.target)))?;
    let listener =
        Listener::bind(&a.listen, &cfg).map_err(|e| Fatal::new(format!("--listen {}: {e}", a.listen)))?;
    let addrs = listener.local_addrs();
    info!(
        "listening on {} ({}, up to {} tunnels per client); forwarding every stream to {}",
        addrs[0],
        port_layout(addrs),
        cfg.tunnels,
        a.target
    );
    let server = Arc::new(Server {
        target: a.target,
        connect_timeout: a.connect_timeout,
        resume_timeout: cfg.resume_timeout,
        max_sessions: a.max_sessions as usize,
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
        let err = loop {
            match session.accept_stream() {
                Ok(stream) => {
                    streams += 1;
                    let server = self.clone();
                    spawn(&format!("stream-{id}-{}", stream.id()), move || server.serve_stream(id, stream));
                }
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

    /// Connect one stream to the target and carry it until both sides are done.
    fn serve_stream(&self, session: u64, stream: Stream) {
        let sid = stream.id();
        let tcp = match connect(&self.target, self.connect_timeout) {
            Ok(tcp) => tcp,
            Err(e) => {
                warn!("session {session} stream {sid}: cannot connect to target {}: {e}", self.target);
                let _ = stream.reset();
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
        }
    }
}

/// The client's address as the first tunnel sees it.
fn peer_of(session: &Session) -> String {
    session.peer_addrs().first().map(|a| a.to_string()).unwrap_or_else(|| "?".into())
}
