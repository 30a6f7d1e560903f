//! The pre-shared key on the wire: the server's check of a HELLO's key flag and its key
//! challenge, and the client's answer (see [`crate::proto::auth`] for the proofs).

use super::{context, read_by};
use crate::error::{Error, Result};
use crate::ffi::sys;
use crate::key::Key;
use crate::proto::auth::{key_proof, verify_key_proof};
use crate::proto::handshake::{
    Hello, HelloKind, Reply, Status, HELLO_FLAG_KEY, HELLO_LEN, NONCE_LEN, PROOF_LEN,
};
use crate::wire::Wire;
use std::io::Write;
use std::time::Instant;

/// What the client is told when its key and the server's disagree.
pub(super) const KEY_REQUIRED: &str = "this server requires a pre-shared key and the client has none";
pub(super) const NO_KEY: &str = "the client has a pre-shared key but this server has none";
pub(super) const WRONG_KEY: &str = "the client proved a different pre-shared key";

/// Server: check `hello` (received as `raw`) against this side's `key` and, for a JOIN with
/// a key, run the challenge on `conn` (within `deadline`). A REJOIN proves the session
/// secret instead, which the key feeds. `Err` carries the refusal.
pub(super) fn server_check(
    key: Option<&Key>,
    mut conn: &Wire,
    hello: &Hello,
    raw: &[u8; HELLO_LEN],
    deadline: Instant,
) -> Result<(), (Status, String)> {
    let flagged = hello.flags & HELLO_FLAG_KEY != 0;
    let key = match (key, flagged) {
        (None, false) => return Ok(()),
        (Some(_), false) => return Err((Status::KeyRequired, KEY_REQUIRED.into())),
        (None, true) => return Err((Status::NoKey, NO_KEY.into())),
        (Some(k), true) => k,
    };
    if hello.kind == HelloKind::Rejoin {
        return Ok(());
    }
    let mut nonce = [0u8; NONCE_LEN];
    sys::random_bytes(&mut nonce).map_err(|e| (Status::Busy, format!("no randomness: {e}")))?;
    let ours = key_proof(key.bytes(), true, raw, &nonce);
    let _ = conn.set_write_timeout(Some(deadline.saturating_duration_since(Instant::now())));
    conn.write_all(&Reply::challenge(hello, nonce, ours).encode())
        .map_err(|e| (Status::Malformed, format!("writing the key challenge: {e}")))?;
    let mut theirs = [0u8; PROOF_LEN];
    read_by(conn, &mut theirs, deadline)
        .map_err(|e| (Status::Malformed, format!("no answer to the key challenge ({e})")))?;
    if !verify_key_proof(key.bytes(), false, raw, &nonce, &theirs) {
        return Err((Status::BadProof, WRONG_KEY.into()));
    }
    Ok(())
}

/// Client: answer the key challenge `reply` to `hello`, sent as `raw` on tunnel `i`. Our
/// proof goes out even when the server's proof is wrong, so that the server can report the
/// mismatch too; then the call fails at once.
pub(super) fn client_answer(
    key: &Key,
    mut conn: &Wire,
    hello: &Hello,
    raw: &[u8; HELLO_LEN],
    reply: &Reply,
    i: usize,
) -> Result<()> {
    if reply.status != Status::Challenge {
        return Err(refusal(reply));
    }
    if reply.bundle != hello.bundle || reply.index != hello.index || reply.generation != hello.generation {
        return Err(Error::Protocol(format!("tunnel {i}: key challenge for another tunnel")));
    }
    let server_ok = verify_key_proof(key.bytes(), true, raw, &reply.nonce, &reply.trailer);
    let ours = key_proof(key.bytes(), false, raw, &reply.nonce);
    conn.write_all(&ours).map_err(|e| context(e, format!("answering the key challenge on tunnel {i}")))?;
    if !server_ok {
        let peer = conn.peer_addr().map_or_else(|_| "the server".into(), |a| a.to_string());
        return Err(Error::Auth(format!(
            "{peer} holds a different pre-shared key (its proof on tunnel {i} does not match ours)"
        )));
    }
    Ok(())
}

/// The client's error for a REPLY that is neither an acceptance nor a challenge.
pub(super) fn refusal(reply: &Reply) -> Error {
    match reply.status {
        Status::KeyRequired => Error::Auth(
            "the server requires a pre-shared key and this side has none: use the server's key \
             (mtmux: --key-file or MTMUX_KEY)"
                .into(),
        ),
        Status::NoKey => Error::Auth(
            "this side has a pre-shared key but the server has none: configure the same key on \
             both ends, or none"
                .into(),
        ),
        Status::BadProof if reply.reason() == WRONG_KEY => {
            Error::Auth("the server holds a different pre-shared key".into())
        }
        Status::Challenge => {
            Error::Auth("the server asks for a pre-shared key and this side has none".into())
        }
        s => Error::Refused(format!("{s:?}: {}", reply.reason())),
    }
}
