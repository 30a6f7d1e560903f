//! The transport of an accepted connection, before its HELLO: TLS when the listener's
//! configuration has it (handshake failures go to the refusal queue with the peer's address),
//! and what a plain listener says to a client that starts TLS.

use super::{refuse, ListenerInner};
use crate::proto::handshake::{HandshakeError, Status};
use crate::wire::Wire;
use std::net::TcpStream;
use std::time::Instant;

/// First byte of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

impl ListenerInner {
    /// `conn` as a [`Wire`], its TLS handshake (if any) done by `deadline`; `None` when it was
    /// refused (and noted).
    pub(super) fn secure(&self, conn: TcpStream, deadline: Instant) -> Option<Wire> {
        let peer = conn.peer_addr().ok();
        match Wire::server(conn, &self.cfg, deadline) {
            Ok(w) => Some(w),
            Err(r) => {
                let why = r.error.to_string();
                if let Some(plain) = r.plain {
                    // A plain mtmux client reads a plain refusal.
                    let hint = "this server requires TLS; the client connected without it (give the client \
                                the server's CA with --tls-ca, or its fingerprint with --tls-fingerprint)";
                    refuse(&plain.into(), None, Status::Unsupported, hint);
                }
                self.refusals.note(peer, why);
                None
            }
        }
    }
}

/// The reason to give a client whose first bytes are not an mtmux HELLO.
pub(super) fn not_mtmux(raw: &[u8], e: HandshakeError) -> String {
    if raw.first() == Some(&TLS_HANDSHAKE_RECORD) {
        return "the client started a TLS handshake, but this server does not use TLS (give the server a \
                certificate with --tls-cert and --tls-key, or remove the client's TLS settings)"
            .into();
    }
    e.to_string()
}
