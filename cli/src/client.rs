//! `mtmux client`: accept local TCP connections and carry each as one stream of the one
//! session to the server.
//!
//! Tunnel failures are the library's business: it re-dials a lost tunnel and re-joins it to
//! the running session, and when every tunnel is lost it keeps the session for
//! `--resume-timeout` while forwarded connections wait. The keeper dials a new session, with
//! backoff, only when the old one has really ended (closed, expired, or refused).
//!
//! Threads: the main thread accepts local connections; the keeper thread dials and watches
//! the session; one thread per session logs its failover events; each connection runs a
//! [`pipe`] (two threads); an optional stats thread. Connections open their streams in the
//! order they were accepted ([`order`](crate::order)): stream ids follow the applications'
//! order, and the server connects to the target in that order.

use crate::args::ClientArgs;
use crate::config::{self, ClientForward, ClientReverse};
use crate::events::{expired_line, log_events};
use crate::forward;
use crate::order::{Turn, Turns, GRACE};
use crate::pipe::{abort_tcp, pipe_and_log};
use crate::security::{load_key, KEY_ENV};
use crate::stats::Meter;
use crate::units::fmt_duration;
use crate::{end_reason, expired, spawn, validated, Fatal};
use log::{debug, info, warn};
use mtmux::{Config, Error, Session, Stream};
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// First wait before re-dialing; doubles up to `--max-backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// A session that lived this long resets the backoff (a server that closes sessions at once
/// must not be re-dialed in a tight loop).
const STABLE: Duration = Duration::from_secs(10);

/// Run `mtmux client` until the process is stopped; returns only on a failure to start.
/// `file`: the `--config` file, whose forwards join `--local` (named "default").
pub fn run(a: ClientArgs, file: Option<config::File>) -> Result<(), Fatal> {
    check_host_port("--server", &a.server)?;
    let (file_forwards, reverses) = match &file {
        Some(f) => f.forwards::<ClientForward, ClientReverse>()?,
        None => Default::default(),
    };
    let file_forwards = file_forwards.into_iter().map(|(n, f)| (n, f.local)).collect();
    let forwards = config::merge(file_forwards, a.local.as_deref());
    let reverses: BTreeMap<String, String> = reverses.into_iter().map(|(n, r)| (n, r.target)).collect();
    if forwards.is_empty() && reverses.is_empty() {
        return Err(Fatal::usage(
            "nothing to forward: give --local HOST:PORT, or [forward.NAME] local = \"HOST:PORT\" in --config",
        ));
    }
    let key = load_key(a.key.key_file.as_deref(), std::env::var_os(KEY_ENV))?;
    let cfg = validated(
        Config { key: key.key, ..a.failover.apply(a.tunnel.config(a.max_streams as usize)) },
        file.as_ref(),
    )?;
    for w in &key.warnings {
        warn!("{w}");
    }
    let cfg = crate::tls::client(&a.tls, &a.server, cfg)?;
    let mut locals = Vec::new();
    for (name, addr) in &forwards {
        let l = TcpListener::bind(addr).map_err(|e| Fatal::new(format!("cannot listen on {addr}: {e}")))?;
        locals.push((name.clone(), l));
    }
    let keeper = Arc::new(Keeper {
        server: a.server,
        reverses,
        cfg,
        max_backoff: backoff_cap(a.max_backoff, a.tunnel.handshake_timeout),
        wake: Mutex::new(false),
        woken: Condvar::new(),
        current: Mutex::new(None),
        changed: Condvar::new(),
        next_id: AtomicU64::new(1),
        turns: Arc::new(Turns::new(GRACE)),
    });
    if !a.keep_trying {
        keeper.dial().map_err(|e| Fatal::new(dial_failure(&keeper.server, &e)))?;
    }
    let k = keeper.clone();
    spawn("keeper", move || k.keep());
    let k = keeper.clone();
    let sessions: crate::metrics::Sessions =
        Arc::new(move || k.current().as_ref().map(|c| (c.id, c.session.clone())).into_iter().collect());
    if !a.stats_interval.is_zero() {
        if a.ops.stats_format == crate::args::StatsFormat::Json {
            let (sessions, file) = (sessions.clone(), a.ops.stats_file.clone());
            spawn("stats", move || {
                crate::metrics::json_stats_loop("client", sessions, a.stats_interval, file)
            });
        } else {
            let k = keeper.clone();
            spawn("stats", move || k.log_stats(a.stats_interval));
        }
    }
    if let Some(addr) = &a.ops.metrics {
        crate::metrics::serve(addr, sessions)?;
    }
    for (name, local) in &locals {
        let addr = local.local_addr().map_err(|e| Fatal::new(format!("local listener: {e}")))?;
        info!(
            "listening on {addr}; every connection becomes a stream of forward {name:?} to {} over {} tunnels",
            keeper.server, keeper.cfg.tunnels
        );
    }
    for (name, target) in &keeper.reverses {
        info!("reverse forward {name:?}: streams the server opens go to {target}");
    }
    if let Some(source) = &key.source {
        info!("proving the pre-shared key ({source}) to the server");
    }
    let mut accepting = Vec::new();
    for (name, local) in locals {
        let k = keeper.clone();
        let l = Arc::new(local);
        accepting.push(l.clone());
        spawn(&format!("accept-{name}"), move || k.accept_loop(&name, &l));
    }
    let (drain_tx, drain_rx) = std::sync::mpsc::channel();
    crate::signals::install(move || {
        for l in &accepting {
            crate::signals::shut_listener(l);
        }
        let _ = drain_tx.send(());
    })?;
    // Runs until a signal.
    let _ = drain_rx.recv();
    keeper.drain(a.ops.drain_timeout);
    Ok(())
}

/// A usage error unless `value` has the form HOST:PORT (a bare port is a common slip).
fn check_host_port(flag: &str, value: &str) -> Result<(), Fatal> {
    let ok =
        value.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(Fatal::usage(format!("{flag} {value}: expected HOST:PORT, e.g. {flag} 203.0.113.5:7000")))
    }
}

/// The longest wait between two dials: `--max-backoff`, but below half the handshake timeout,
/// so that a local connection waiting for a session (up to the handshake timeout) sees at
/// least one more dial before it is given up.
fn backoff_cap(max_backoff: Duration, handshake_timeout: Duration) -> Duration {
    max_backoff.min(handshake_timeout / 2).max(FIRST_BACKOFF)
}

/// One line for a failed dial: the server refused us (wrong key, busy, ...) or could not be
/// reached.
pub fn dial_failure(server: &str, e: &Error) -> String {
    match e {
        Error::Refused(why) if why.starts_with("SessionLimit") => {
            let limit = session_limit(why).map(|n| format!(" (--max-sessions {n})")).unwrap_or_default();
            format!(
                "the server at {server} is at its session limit{limit}: try later or raise it on the server"
            )
        }
        Error::Auth(_) | Error::Refused(_) => {
            format!("cannot start a session with the server at {server}: {e}")
        }
        Error::Protocol(why) if why.contains("not an mtmux peer") => {
            let what = why.split_once("not an mtmux peer").map(|(_, w)| w.trim()).unwrap_or("");
            format!("{server} is not an mtmux server {what}: check --server (host and port)")
        }
        _ => format!("cannot reach the server at {server}: {e}"),
    }
}

/// The limit in a `SessionLimit` refusal's reason ("... at its session limit (4)").
fn session_limit(why: &str) -> Option<u64> {
    let (_, rest) = why.split_once("limit (")?;
    rest.split(')').next()?.parse().ok()
}

/// The session in use.
#[derive(Clone)]
struct Current {
    /// Sessions are numbered from 1 in the order they were dialed.
    id: u64,
    session: Session,
    /// When it came up.
    since: Instant,
}

struct Keeper {
    server: String,
    /// Reverse forward name → target on this side.
    reverses: BTreeMap<String, String>,
    cfg: Config,
    max_backoff: Duration,
    /// Set (and `woken` notified) by a local connection that finds no session: the keeper
    /// re-dials at once instead of finishing its backoff.
    wake: Mutex<bool>,
    woken: Condvar,
    /// The session in use, `None` while re-dialing.
    current: Mutex<Option<Current>>,
    /// Notified when `current` gets a new session.
    changed: Condvar,
    next_id: AtomicU64,
    /// Local connections open their streams in the order they were accepted, so that stream
    /// ids (and the server's connects to the target) follow the applications' order.
    turns: Arc<Turns>,
}

impl Keeper {
    /// Accept local connections of forward `name` until the listener fails for good.
    fn accept_loop(self: &Arc<Self>, name: &str, local: &TcpListener) {
        loop {
            match local.accept() {
                Ok((conn, _)) => {
                    let k = self.clone();
                    let name = name.to_string();
                    let turn = self.turns.turn(self.turns.issue());
                    spawn("conn", move || k.serve(conn, &name, turn));
                }
                Err(e) if crate::signals::draining() => {
                    debug!("forward {name:?}: no longer accepting ({e})");
                    return;
                }
                Err(e) => {
                    // Out of descriptors or similar: back off rather than spin.
                    warn!("accepting a local connection failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn current(&self) -> MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Dial once and make the result the current session.
    fn dial(&self) -> Result<(), Error> {
        let session = mtmux::dial(&self.server, &self.cfg)?;
        let id = self.next_id.fetch_add(1, Relaxed);
        info!("session {id} up: {} tunnels to {}", session.num_tunnels(), self.server);
        let s = session.clone();
        // A server that stopped may come back: the session waits for it (--resume-timeout).
        spawn(&format!("events-{id}"), move || {
            let _ = log_events(id, &s, false);
        });
        *self.current() = Some(Current { id, session, since: Instant::now() });
        self.changed.notify_all();
        Ok(())
    }

    /// Keep a session up for ever: watch the current one, dial a new one with backoff when it
    /// ends (lost tunnels and outages the library handles within the session).
    fn keep(self: &Arc<Self>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let current = self.current().clone();
            match current {
                Some(Current { id, session, since }) => {
                    self.watch(id, &session);
                    let mut cur = self.current();
                    if cur.as_ref().is_some_and(|c| c.id == id) {
                        *cur = None;
                    }
                    drop(cur);
                    if since.elapsed() >= STABLE {
                        backoff = FIRST_BACKOFF;
                    } else {
                        debug!(
                            "session {id} lived only {}; re-dialing in {backoff:?}",
                            fmt_duration(since.elapsed())
                        );
                        self.nap(backoff);
                        backoff = (backoff * 2).min(self.max_backoff);
                    }
                }
                None => {
                    if let Err(e) = self.dial() {
                        warn!("{}; retrying in {backoff:?}", dial_failure(&self.server, &e));
                        self.nap(backoff);
                        backoff = (backoff * 2).min(self.max_backoff);
                    }
                }
            }
        }
    }

    /// Block until the session ends (through tunnel losses and outages it survives). Streams
    /// the server opens are its reverse forwards.
    fn watch(self: &Arc<Self>, id: u64, session: &Session) {
        let err = loop {
            match session.accept_stream() {
                Ok(s) => {
                    let k = self.clone();
                    spawn(&format!("reverse-{id}-{}", s.id()), move || {
                        crate::reverse::serve_incoming(id, s, &k.reverses, k.cfg.handshake_timeout)
                    });
                }
                Err(e) => break e,
            }
        };
        if let Some(why) = expired(session, &err) {
            warn!("{}; starting a new session", expired_line(id, &why, self.cfg.resume_timeout));
            return;
        }
        let (Ok(reason) | Err(reason)) = end_reason(session, &err);
        warn!("session {id} ended: {reason}; re-dialing");
    }

    /// Wait `d` before the next dial, or less when a local connection asks for a session.
    fn nap(&self, d: Duration) {
        let mut woken = self.wake.lock().unwrap_or_else(|p| p.into_inner());
        if !*woken {
            woken = self.woken.wait_timeout(woken, d).unwrap_or_else(|p| p.into_inner()).0;
        }
        if *woken {
            debug!("a local connection is waiting: re-dialing now");
        }
        *woken = false;
    }

    /// The current session if it is open, waiting up to `wait` for one (and waking the
    /// keeper to re-dial at once when there is none).
    fn session(&self, wait: Duration) -> Option<(u64, Session)> {
        let deadline = Instant::now() + wait;
        let mut cur = self.current();
        let mut asked = false;
        loop {
            if let Some(c) = cur.as_ref() {
                if !c.session.is_closed() {
                    return Some((c.id, c.session.clone()));
                }
            }
            if !asked {
                asked = true;
                *self.wake.lock().unwrap_or_else(|p| p.into_inner()) = true;
                self.woken.notify_all();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            cur = self.changed.wait_timeout(cur, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    /// Open a stream for a new local connection, on a fresh session if the current one
    /// just died.
    fn open(&self, from: &str) -> Option<(u64, Stream)> {
        let wait = self.cfg.handshake_timeout;
        for _ in 0..2 {
            let Some((id, session)) = self.session(wait) else {
                warn!("connection from {from}: no session to the server after {wait:?}; closing it");
                return None;
            };
            match session.open_stream() {
                Ok(s) => return Some((id, s)),
                // Died between the check and the open: the keeper is re-dialing.
                Err(Error::SessionClosed(_)) => continue,
                Err(e) => {
                    warn!("session {id}: cannot open a stream for the connection from {from}: {e}");
                    return None;
                }
            }
        }
        warn!("connection from {from}: the session to the server keeps failing; closing it");
        None
    }

    /// Carry one local connection of forward `name`.
    fn serve(&self, conn: TcpStream, name: &str, mut turn: Turn) {
        let from = conn.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
        let _ = conn.set_nodelay(true);
        turn.wait();
        let opened = self.open(&from);
        turn.finished();
        let Some((id, stream)) = opened else {
            abort_tcp(&conn);
            return;
        };
        let sid = stream.id();
        if let Err(e) = forward::write_header(&stream, name) {
            warn!("session {id} stream {sid}: cannot send the forward header: {}", Error::from(e));
            abort_tcp(&conn);
            return;
        }
        info!("session {id} stream {sid}: opened for {from} (forward {name:?})");
        pipe_and_log(&conn, "local connection", &stream, &format!("session {id} stream {sid}"));
    }

    /// After a signal: local listeners are shut; let the streams finish for at most
    /// `timeout`, then close the session.
    fn drain(&self, timeout: Duration) {
        let current = || self.current().as_ref().map(|c| c.session.clone());
        crate::signals::wait_drained(timeout, || current().map_or(0, |s| s.num_streams()));
        if let Some(s) = current() {
            let _ = s.close();
        }
        info!("drained; exiting");
    }

    fn log_stats(&self, every: Duration) {
        let mut meter: Option<(u64, Meter)> = None;
        loop {
            std::thread::sleep(every);
            let Some(Current { id, session, since }) = self.current().clone() else { continue };
            if meter.as_ref().is_none_or(|(m, _)| *m != id) {
                meter = Some((id, Meter::since(since, &session)));
            }
            if let Some(line) = meter.as_mut().and_then(|(_, m)| m.line(&session)) {
                info!("session {id} stats: {line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_limit_refusal_says_what_to_do() {
        let e = Error::Refused("SessionLimit: this server is at its session limit (4)".into());
        assert_eq!(
            dial_failure("host:7000", &e),
            "the server at host:7000 is at its session limit (--max-sessions 4): try later or raise it on the server"
        );
        let e = Error::Refused("SessionLimit: full".into());
        assert_eq!(
            dial_failure("host:7000", &e),
            "the server at host:7000 is at its session limit: try later or raise it on the server"
        );
    }

    #[test]
    fn the_backoff_stays_below_half_the_handshake_timeout() {
        let s = Duration::from_secs;
        assert_eq!(backoff_cap(s(30), s(10)), s(5));
        assert_eq!(backoff_cap(s(2), s(10)), s(2));
        assert_eq!(backoff_cap(Duration::ZERO, s(10)), FIRST_BACKOFF);
    }
}
