//! The server side of REJOIN: which running sessions take re-joins, and the challenge that
//! makes a re-joining client prove it holds the session's secret before the session is
//! touched. A refused attempt leaves the session as it was (and is counted).

use super::{read_by, ListenerInner};
use crate::proto::auth::RejoinNonces;
use crate::proto::handshake::{BundleId, Hello, Reply, Status, NONCE_LEN, PROOF_LEN};
use crate::session::tunnel::Conn;
use crate::session::{Inner, Session};
use crate::wire::Wire;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Weak};
use std::time::Instant;

/// Running sessions whose clients re-join lost tunnels, by bundle id.
#[derive(Default)]
pub(super) struct Registry {
    sessions: Mutex<HashMap<BundleId, Weak<Inner>>>,
}

impl Registry {
    pub(super) fn insert(&self, bundle: BundleId, s: &Session) {
        let mut m = self.sessions.lock();
        // Forget sessions that have ended.
        m.retain(|_, w| w.upgrade().is_some_and(|i| i.takes_rejoins()));
        m.insert(bundle, s.downgrade());
    }

    fn get(&self, bundle: &BundleId) -> Option<Arc<Inner>> {
        self.sessions.lock().get(bundle)?.upgrade().filter(|i| i.takes_rejoins())
    }
}

/// Handle a REJOIN HELLO on `conn` (the handshake thread of the listener).
pub(super) fn serve(li: &ListenerInner, conn: Wire, hello: &Hello, deadline: Instant) {
    let Some(inner) = li.registry.get(&hello.bundle) else {
        li.refuse(
            &conn,
            Some(hello),
            Status::UnknownSession,
            "this server has no such session (it ended, expired, or the server restarted)",
        );
        return;
    };
    if let Err((status, why)) = challenge(&inner, &conn, hello, deadline) {
        inner.rejoin_refused();
        li.refuse(&conn, Some(hello), status, &why);
        return;
    }
    let accepted = (&conn).write_all(&Reply::accept(hello, inner.cfg().params(), [0; NONCE_LEN]).encode());
    let conn = accepted.and_then(|()| {
        conn.set_read_timeout(None)?;
        Conn::new(conn, hello.generation, inner.cfg().keepalive_timeout)
    });
    // The client starts sending right after the accept; a generation that lost a race to a
    // newer one is refused by `attach` (its connection closed).
    if let Ok(conn) = conn {
        let _ = inner.attach(hello.index as usize, conn);
    }
}

/// Check the REJOIN against the session, prove our side, and check the client's proof.
fn challenge(
    inner: &Inner,
    mut conn: &Wire,
    hello: &Hello,
    deadline: Instant,
) -> Result<(), (Status, String)> {
    inner.check_rejoin(hello)?;
    let mut server = [0u8; NONCE_LEN];
    crate::ffi::sys::random_bytes(&mut server).map_err(|e| (Status::Busy, e.to_string()))?;
    let nonces = RejoinNonces {
        bundle: hello.bundle,
        index: hello.index,
        generation: hello.generation,
        client: hello.nonce,
        server,
    };
    let ours = inner.secret.proof(true, &nonces);
    let _ = conn.set_write_timeout(Some(deadline.saturating_duration_since(Instant::now())));
    conn.write_all(&Reply::challenge(hello, server, ours).encode())
        .map_err(|e| (Status::Malformed, format!("writing the challenge: {e}")))?;
    let mut theirs = [0u8; PROOF_LEN];
    read_by(conn, &mut theirs, deadline).map_err(|e| (Status::Malformed, format!("no proof: {e}")))?;
    if !inner.secret.verify(false, &nonces, &theirs) {
        return Err((Status::BadProof, "the re-join proof is wrong".into()));
    }
    // A newer generation may have re-joined while we waited for the proof.
    inner.check_rejoin(hello)
}
