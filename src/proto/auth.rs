//! The pre-shared key challenge, the session secret and the re-join proofs (HMAC-SHA256 from
//! RustCrypto; constant-time verification; no hand-written cryptography).
//!
//! **Key challenge.** With a pre-shared key, every JOIN HELLO carries [`HELLO_FLAG_KEY`] and
//! the server answers it, before the tunnel joins any bundle, with a challenge: a fresh
//! 16-byte nonce `sn` of its own (new for every connection) and its proof; the client checks
//! it and sends its own proof; the server checks that and only then adds the tunnel to its
//! bundle:
//!
//! ```text
//! proof = HMAC-SHA256(key, label ‖ HELLO (64 bytes, as sent) ‖ sn)
//! ```
//!
//! with label "mtmux v2 key server" or "mtmux v2 key client". The HELLO carries the client's
//! nonce, so both sides contribute freshness; a recorded exchange is worthless on a new
//! connection (new `sn`), a proof for one tunnel index, bundle or parameter set does not fit
//! another, and the server's proof is not the client's (no reflection).
//!
//! [`HELLO_FLAG_KEY`]: super::handshake::HELLO_FLAG_KEY
//!
//! At JOIN each side contributes a fresh 16-byte nonce (the client's in every HELLO of the
//! bundle, the server's in every accepting REPLY). Both derive
//!
//! ```text
//! secret = HMAC-SHA256(key, "mtmux v2 session" ‖ bundle id ‖ client nonce ‖ server nonce)
//! ```
//!
//! where `key` is the pre-shared key when one is configured, and a fixed public label
//! otherwise. A REJOIN (or RESUME) then proves knowledge of `secret` over fresh nonces from
//! both sides, the server first (so the client never re-joins an impostor), the client
//! second:
//!
//! ```text
//! proof = HMAC-SHA256(secret, label ‖ bundle id ‖ index ‖ generation ‖ client nonce ‖ server nonce)
//! ```
//!
//! with label "mtmux v2 rejoin server" or "mtmux v2 rejoin client". Knowing the bundle id is
//! not enough to re-join; a replayed proof fails because the server's nonce is new each time.
//! Without a pre-shared key, someone who recorded the first handshake has both nonces and can
//! compute the secret; a pre-shared key closes that gap (the key is never sent).

use super::handshake::{BundleId, HELLO_LEN, NONCE_LEN, PROOF_LEN};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A session's secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Secret([u8; 32]);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Key used when no pre-shared key is configured.
const NO_PSK: &[u8] = b"mtmux v2: no pre-shared key";

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

impl Secret {
    /// Derive the session secret from the JOIN nonces (and the pre-shared key, if any).
    pub fn derive(
        psk: Option<&[u8]>,
        bundle: &BundleId,
        client: &[u8; NONCE_LEN],
        server: &[u8; NONCE_LEN],
    ) -> Secret {
        let mut m = mac(psk.unwrap_or(NO_PSK));
        m.update(b"mtmux v2 session");
        m.update(&bundle.0);
        m.update(client);
        m.update(server);
        Secret(m.finalize().into_bytes().into())
    }

    fn proof_mac(&self, server: bool, rejoin: &RejoinNonces) -> HmacSha256 {
        let mut m = mac(&self.0);
        m.update(if server { b"mtmux v2 rejoin server" } else { b"mtmux v2 rejoin client" });
        m.update(&rejoin.bundle.0);
        m.update(&rejoin.index.to_be_bytes());
        m.update(&rejoin.generation.to_be_bytes());
        m.update(&rejoin.client);
        m.update(&rejoin.server);
        m
    }

    /// The proof one side sends in a re-join (`server`: the server's, else the client's).
    pub fn proof(&self, server: bool, rejoin: &RejoinNonces) -> [u8; PROOF_LEN] {
        self.proof_mac(server, rejoin).finalize().into_bytes().into()
    }

    /// Check the other side's proof, in constant time.
    pub fn verify(&self, server: bool, rejoin: &RejoinNonces, proof: &[u8]) -> bool {
        self.proof_mac(server, rejoin).verify_slice(proof).is_ok()
    }
}

fn key_mac(key: &[u8], server: bool, hello: &[u8; HELLO_LEN], nonce: &[u8; NONCE_LEN]) -> HmacSha256 {
    let mut m = mac(key);
    m.update(if server { b"mtmux v2 key server" } else { b"mtmux v2 key client" });
    m.update(hello);
    m.update(nonce);
    m
}

/// The proof of the pre-shared `key` one side sends in a JOIN's key challenge (`server`: the
/// server's, else the client's), over the `hello` as sent and the server's challenge `nonce`.
pub fn key_proof(
    key: &[u8],
    server: bool,
    hello: &[u8; HELLO_LEN],
    nonce: &[u8; NONCE_LEN],
) -> [u8; PROOF_LEN] {
    key_mac(key, server, hello, nonce).finalize().into_bytes().into()
}

/// Check the other side's key proof, in constant time.
pub fn verify_key_proof(
    key: &[u8],
    server: bool,
    hello: &[u8; HELLO_LEN],
    nonce: &[u8; NONCE_LEN],
    proof: &[u8],
) -> bool {
    key_mac(key, server, hello, nonce).verify_slice(proof).is_ok()
}

/// What a re-join proof covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejoinNonces {
    /// The session's bundle.
    pub bundle: BundleId,
    /// The tunnel slot being re-joined.
    pub index: u16,
    /// The new generation of the slot.
    pub generation: u32,
    /// The client's fresh nonce (from its REJOIN HELLO).
    pub client: [u8; NONCE_LEN],
    /// The server's fresh nonce (from its challenge).
    pub server: [u8; NONCE_LEN],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_proofs_bind_key_role_hello_and_nonce() {
        let key = b"0123456789abcdef";
        let hello = [7u8; HELLO_LEN];
        let sn = [9u8; NONCE_LEN];
        let p = key_proof(key, true, &hello, &sn);
        assert!(verify_key_proof(key, true, &hello, &sn, &p));
        assert!(!verify_key_proof(key, false, &hello, &sn, &p), "no reflection");
        assert!(!verify_key_proof(b"0123456789abcdeF", true, &hello, &sn, &p), "another key");
        assert!(!verify_key_proof(key, true, &hello, &[8; NONCE_LEN], &p), "another challenge");
        let mut h2 = hello;
        h2[7] ^= 1;
        assert!(!verify_key_proof(key, true, &h2, &sn, &p), "another HELLO");
        assert!(!verify_key_proof(key, true, &hello, &sn, &p[..31]), "truncated");
        assert!(!verify_key_proof(key, true, &hello, &sn, &[0; PROOF_LEN]));
    }

    fn nonces() -> RejoinNonces {
        RejoinNonces { bundle: BundleId([1; 16]), index: 2, generation: 3, client: [4; 16], server: [5; 16] }
    }

    #[test]
    fn both_sides_derive_the_same_secret_and_proofs_check() {
        let a = Secret::derive(None, &BundleId([1; 16]), &[2; 16], &[3; 16]);
        let b = Secret::derive(None, &BundleId([1; 16]), &[2; 16], &[3; 16]);
        assert_eq!(a, b);
        let n = nonces();
        assert!(b.verify(true, &n, &a.proof(true, &n)));
        assert!(b.verify(false, &n, &a.proof(false, &n)));
    }

    #[test]
    fn proofs_bind_role_nonces_slot_generation_and_key() {
        let s = Secret::derive(None, &BundleId([1; 16]), &[2; 16], &[3; 16]);
        let n = nonces();
        let p = s.proof(false, &n);
        // The server's proof is not the client's (no reflection).
        assert!(!s.verify(true, &n, &p));
        for changed in [
            RejoinNonces { server: [6; 16], ..n },
            RejoinNonces { client: [6; 16], ..n },
            RejoinNonces { generation: 4, ..n },
            RejoinNonces { index: 1, ..n },
            RejoinNonces { bundle: BundleId([9; 16]), ..n },
        ] {
            assert!(!s.verify(false, &changed, &p), "{changed:?}");
        }
        assert!(!s.verify(false, &n, &p[..31]), "a truncated proof fails");
        let other = Secret::derive(Some(b"key"), &BundleId([1; 16]), &[2; 16], &[3; 16]);
        assert_ne!(other, s, "the pre-shared key feeds the secret");
        assert!(!other.verify(false, &n, &p));
    }
}
