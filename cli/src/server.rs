//! `mtmux server`: accept bundles from clients and connect every stream to the one target.
//!
//! A session whose every tunnel is lost is kept for `--resume-timeout` (its streams and
//! their target connections wait) so that the client can re-join it.
//!
//! Who gets in: on an address other hosts can reach, the server starts only with a
//! pre-shared key or TLS client certificates, or `--insecure` ([`protection`]). Connections the listener refuses
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
use crate::config::{self, ServerForward, ServerReverse};
use crate::events::{count, expired_line, log_events};
use crate::forward::{self, names};
use crate::limits::{Budget, Limit, Ticket};
use crate::net::{connect, port_layout, resolve};
use crate::order::{Turn, Turns, GRACE};
use crate::pipe::pipe_and_log;
use crate::security::{load_key, protection, unprotected_line, Protection, KEY_ENV};
use crate::signals;
use crate::stats::Meter;
use crate::units::fmt_duration;
use crate::{end_reason, expired, spawn, validated, Fatal};
use log::{info, warn};
use mtmux::{Listener, ResetCode, Session, Stream};
use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Run `mtmux server` until the process is stopped; returns only on a failure to start.
/// `file`: the `--config` file, whose forwards join `--target` (named "default").
pub fn run(a: ServerArgs, file: Option<config::File>) -> Result<(), Fatal> {
    let (file_forwards, reverses) = match &file {
        Some(f) => f.forwards::<ServerForward, ServerReverse>()?,
        None => Default::default(),
    };
    let file_forwards = file_forwards.into_iter().map(|(n, f)| (n, f.target)).collect();
    let forwards = config::merge(file_forwards, a.target.as_deref());
    if forwards.is_empty() && reverses.is_empty() {
        return Err(Fatal::usage(
            "nothing to forward: give --target HOST:PORT, or [forward.NAME] target = \"HOST:PORT\" in --config",
        ));
    }
    let key = load_key(a.key.key_file.as_deref(), std::env::var_os(KEY_ENV))?;
    let cfg = validated(mtmux::Config { key: key.key.clone(), ..a.config() }, file.as_ref())?;
    let cfg = crate::tls::server(&a.tls, cfg)?;
    if a.connect_timeout.is_zero() {
        return Err(Fatal::usage("--connect-timeout must be greater than zero"));
    }
    // Resolved now to catch typos, and again for every stream (the target may move).
    for (name, target) in &forwards {
        let what = if name == forward::DEFAULT && a.target.is_some() {
            "--target".to_string()
        } else {
            format!("[forward.{name}] target")
        };
        resolve(target).map_err(|e| Fatal::new(format!("bad {what} {target}: {e}")))?;
    }
    let targets = forwards.values().cloned().collect::<Vec<_>>().join(", ");
    let listen: Vec<_> =
        a.listen.to_socket_addrs().map_err(|e| Fatal::new(format!("--listen {}: {e}", a.listen)))?.collect();
    // TLS keeps strangers out only when it checks their certificates (--tls-client-ca):
    // anyone can complete a handshake that only authenticates the server.
    let client_certs = a.tls.tls_client_ca.is_some();
    let Some(protected) = protection(&listen, cfg.key.is_some(), client_certs, a.insecure) else {
        return Err(Fatal::usage(unprotected_line(&a.listen, &targets)));
    };
    for w in &key.warnings {
        warn!("{w}");
    }
    let listener = Arc::new(
        Listener::bind(&a.listen, &cfg).map_err(|e| Fatal::new(format!("--listen {}: {e}", a.listen)))?,
    );
    // Bundles beyond the limit are refused in their handshake: the client is told why.
    listener.set_max_sessions(Some(a.max_sessions as usize));
    let addrs = listener.local_addrs();
    info!(
        "listening on {} ({}, up to {} tunnels per client); forwarding streams to {}",
        addrs[0],
        port_layout(addrs),
        cfg.tunnels,
        forwards.iter().map(|(n, t)| format!("{t} (forward {n:?})")).collect::<Vec<_>>().join(", ")
    );
    match (protected, &key.source) {
        (Protection::Key, Some(source)) => info!("clients must prove the pre-shared key ({source})"),
        (Protection::Insecure, _) => warn!(
            "no key or client certificates (--insecure): anyone who can reach {} gets a session with {}",
            addrs[0], targets
        ),
        _ => {}
    }
    let l = listener.clone();
    spawn("refusals", move || crate::refusals::log_refusals(&l));
    let reverse_listeners = crate::reverse::bind_all(&reverses)?;
    let server = Arc::new(Server {
        forwards,
        connect_timeout: a.connect_timeout,
        resume_timeout: cfg.resume_timeout,
        budget: Budget::new(a.bounds()),
        sessions: Mutex::new(BTreeMap::new()),
        next_id: AtomicU64::new(1),
    });
    let s = server.clone();
    let sessions: crate::metrics::Sessions = Arc::new(move || s.all_sessions());
    if !a.stats_interval.is_zero() {
        if a.ops.stats_format == crate::args::StatsFormat::Json {
            let (sessions, file) = (sessions.clone(), a.ops.stats_file.clone());
            spawn("stats", move || {
                crate::metrics::json_stats_loop("server", sessions, a.stats_interval, file)
            });
        } else {
            let s = server.clone();
            spawn("stats", move || s.log_stats(a.stats_interval));
        }
    }
    if let Some(addr) = &a.ops.metrics {
        crate::metrics::serve(addr, sessions)?;
    }
    let mut reverse_arcs = Vec::new();
    for (name, l) in reverse_listeners {
        let s = server.clone();
        let l = Arc::new(l);
        reverse_arcs.push(l.clone());
        spawn(&format!("reverse-{name}"), move || {
            crate::reverse::accept_loop(&name, &l, || s.newest_session(), s.connect_timeout)
        });
    }
    let l = listener.clone();
    signals::install(move || {
        l.close();
        for r in &reverse_arcs {
            signals::shut_listener(r);
        }
    })?;
    loop {
        match listener.accept() {
            Ok(session) => server.admit(session),
            Err(_) if signals::draining() => return server.drain(a.ops.drain_timeout),
            Err(e) => return Err(Fatal::new(format!("listener stopped: {e}"))),
        }
    }
}

/// Longest wait for the events thread's verdict on a session that ended (it polls the
/// session's end every second).
const STOP_VERDICT: Duration = Duration::from_secs(3);

struct Server {
    /// Forward name → target.
    forwards: BTreeMap<String, String>,
    connect_timeout: Duration,
    /// How long a session without tunnels is kept (for the line when one expires).
    resume_timeout: Duration,
    /// Streams being connected and carried, bounded per session and in total.
    budget: Arc<Budget>,
    /// Live sessions by number, with the meter of their stats line.
    sessions: Mutex<BTreeMap<u64, (Session, Meter)>>,
    next_id: AtomicU64,
}

impl Server {
    /// Every session, by number.
    fn all_sessions(&self) -> Vec<(u64, Session)> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.iter().map(|(id, (s, _))| (*id, s.clone())).collect()
    }

    /// The newest open session (reverse forwards go to it).
    fn newest_session(&self) -> Option<(u64, Session)> {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.iter().rev().find(|(_, (s, _))| !s.is_closed()).map(|(id, (s, _))| (*id, s.clone()))
    }

    /// Take a new session (the listener refuses bundles beyond `--max-sessions` in their
    /// handshake, and logs them as refusals).
    fn admit(self: &Arc<Self>, session: Session) {
        let peer = peer_of(&session);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let id = self.next_id.fetch_add(1, Relaxed);
        sessions.insert(id, (session.clone(), Meter::new(&session)));
        drop(sessions);
        info!("session {id} from {peer}: {} tunnels", session.num_tunnels());
        let s = session.clone();
        let (stopped_tx, stopped) = std::sync::mpsc::channel();
        spawn(&format!("events-{id}"), move || {
            let _ = stopped_tx.send(log_events(id, &s, true));
        });
        let server = self.clone();
        spawn(&format!("session-{id}"), move || server.serve_session(id, session, stopped));
    }

    /// Accept the session's streams until it ends. `stopped`: the events thread's verdict at
    /// the end, whether the client stopped ([`log_events`]).
    fn serve_session(self: Arc<Self>, id: u64, session: Session, stopped: Receiver<bool>) {
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
        // The events thread ends within its poll of the session's end.
        if stopped.recv_timeout(STOP_VERDICT).unwrap_or(false) {
            info!(
                "session {id} from {} closed by the client after {}, {} (all its tunnels closed at once: \
                 it stopped without ending the session)",
                peer_of(&session),
                fmt_duration(started.elapsed()),
                count(streams, "stream")
            );
            return;
        }
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
        let Some((name, target)) = self.forward_of(session, &stream) else { return };
        turn.wait();
        let connected = connect(target, self.connect_timeout);
        turn.finished();
        ticket.connected();
        let tcp = match connected {
            Ok(tcp) => tcp,
            Err(e) => {
                warn!("session {session} stream {sid} (forward {name:?}): cannot connect to target {target}: {e}");
                // The client learns why (and says so) from the code.
                let _ = stream.reset_with(connect_failure_code(&e));
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().map(|a| a.to_string()).unwrap_or_default();
        info!(
            "session {session} stream {sid}: opened, connected to {target} from {local} (forward {name:?})"
        );
        pipe_and_log(&tcp, "target", &stream, &format!("session {session} stream {sid}"));
    }

    /// Read the stream's forward header and find its target; reset the stream (and log why)
    /// when there is no header or no such forward.
    fn forward_of(&self, session: u64, stream: &Stream) -> Option<(String, &String)> {
        let sid = stream.id();
        let name = match forward::read_header(stream, self.connect_timeout) {
            Ok(name) => name,
            Err(e) => {
                warn!("session {session} stream {sid}: {e}; reset");
                forward::refuse(stream, &e);
                return None;
            }
        };
        match self.forwards.get(&name) {
            Some(target) => Some((name, target)),
            None => {
                warn!(
                    "session {session} stream {sid}: the client asked for forward {name:?}, which this server \
                     does not have (it has {}); reset",
                    names(self.forwards.keys())
                );
                forward::refuse_unknown(stream);
                None
            }
        }
    }

    /// After a signal: the listeners are closed; let the streams finish for at most
    /// `timeout`, then close every session (in parallel: each may wait for its peer).
    fn drain(&self, timeout: Duration) -> Result<(), Fatal> {
        let live = || -> Vec<Session> {
            let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.values().map(|(s, _)| s.clone()).collect()
        };
        signals::wait_drained(timeout, || live().iter().map(Session::num_streams).sum());
        let sessions = live();
        info!("closing {}", count(sessions.len() as u64, "session"));
        std::thread::scope(|sc| {
            for s in &sessions {
                sc.spawn(move || s.close());
            }
        });
        info!("drained; exiting");
        Ok(())
    }

    fn log_stats(&self, every: Duration) {
        let mut last_totals = None;
        loop {
            std::thread::sleep(every);
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            for (id, (session, meter)) in sessions.iter_mut() {
                if let Some(line) = meter.line(session) {
                    info!("session {id} stats: {line}");
                }
            }
            drop(sessions);
            let t = self.budget.totals();
            if last_totals != Some(t) {
                info!(
                    "streams: {} carried, {} of them being connected to the target",
                    t.streams, t.connecting
                );
                last_totals = Some(t);
            }
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
