//! Reverse forwards (like `ssh -R`): the server accepts TCP connections on the addresses of
//! its `[reverse.NAME] listen` sections and carries each as a stream it opens to the client,
//! named NAME in the stream header; the client connects the stream to its own
//! `[reverse.NAME] target`.
//!
//! A server with several clients sends reverse connections to the newest session; with no
//! session up, a reverse connection is closed with a reset.

use crate::config::ServerReverse;
use crate::forward::{self, names};
use crate::net::connect;
use crate::pipe::{abort_tcp, pipe_and_log};
use crate::{spawn, Fatal};
use log::{info, warn};
use mtmux::{Session, Stream};
use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Bind the listener of every reverse forward (all before any is used, so that a port in use
/// stops the server at start).
pub fn bind_all(reverses: &BTreeMap<String, ServerReverse>) -> Result<Vec<(String, TcpListener)>, Fatal> {
    let mut out = Vec::new();
    for (name, r) in reverses {
        let l = TcpListener::bind(&r.listen)
            .map_err(|e| Fatal::new(format!("[reverse.{name}] listen {}: {e}", r.listen)))?;
        let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| r.listen.clone());
        info!("reverse forward {name:?}: listening on {addr}; every connection goes to the client");
        out.push((name.clone(), l));
    }
    Ok(out)
}

/// Accept connections on `listener` for ever (until it fails, e.g. when it is shut down),
/// carrying each over the session `pick` returns.
pub fn accept_loop(
    name: &str,
    listener: &TcpListener,
    pick: impl Fn() -> Option<(u64, Session)>,
    wait: Duration,
) {
    loop {
        let (conn, from) = match listener.accept() {
            Ok(c) => c,
            Err(e) if crate::signals::draining() => {
                info!("reverse forward {name:?}: no longer accepting ({e})");
                return;
            }
            Err(e) => {
                warn!("reverse forward {name:?}: accepting a connection failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        let _ = conn.set_nodelay(true);
        let Some((id, session)) = pick() else {
            warn!("reverse forward {name:?}: connection from {from} closed: no client session is up");
            abort_tcp(&conn);
            continue;
        };
        let name = name.to_string();
        spawn("reverse-conn", move || open_and_carry(&name, id, &session, conn, &from.to_string(), wait));
    }
}

/// Open a stream for a reverse connection and carry it.
fn open_and_carry(name: &str, id: u64, session: &Session, conn: TcpStream, from: &str, _wait: Duration) {
    let stream = match session.open_stream() {
        Ok(s) => s,
        Err(e) => {
            warn!("session {id}: cannot open a stream for reverse forward {name:?} (from {from}): {e}");
            abort_tcp(&conn);
            return;
        }
    };
    let sid = stream.id();
    if let Err(e) = forward::write_header(&stream, name) {
        warn!("session {id} stream {sid}: cannot send the forward header: {}", mtmux::Error::from(e));
        abort_tcp(&conn);
        return;
    }
    info!("session {id} stream {sid}: opened for {from} (reverse {name:?})");
    pipe_and_log(&conn, "reverse connection", &stream, &format!("session {id} stream {sid}"));
}

/// Client side: carry a stream the server opened to the target of its reverse forward, or
/// reset it when the name is unknown here. Blocks until the stream is done.
pub fn serve_incoming(id: u64, stream: Stream, targets: &BTreeMap<String, String>, wait: Duration) {
    let sid = stream.id();
    let name = match forward::read_header(&stream, wait) {
        Ok(n) => n,
        Err(e) => {
            warn!("session {id} stream {sid} (opened by the server): {e}; reset");
            forward::refuse(&stream, &e);
            return;
        }
    };
    let Some(target) = targets.get(&name) else {
        warn!(
            "session {id} stream {sid}: the server sent reverse forward {name:?}, which this client does not \
             have (it has {}); reset",
            if targets.is_empty() { "none".to_string() } else { names(targets.keys()) }
        );
        forward::refuse_unknown(&stream);
        return;
    };
    let tcp = match connect(target, wait) {
        Ok(t) => t,
        Err(e) => {
            warn!("session {id} stream {sid} (reverse {name:?}): cannot connect to target {target}: {e}");
            let _ = stream.reset();
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    info!("session {id} stream {sid}: opened by the server, connected to {target} (reverse {name:?})");
    pipe_and_log(&tcp, "target", &stream, &format!("session {id} stream {sid}"));
}
