//! Authenticated handshake (`mtmux::proto::auth` with `mtmux::proto::handshake`): the re-join
//! challenge/response of docs/PROTOCOL.md §2.3 played in memory between a client and a server
//! that each derived the session secret from the JOIN (with a pre-shared key each, or none),
//! with an attacker on the wire who may replace, reflect or replay any message with bytes from
//! the input.
//!
//! Checks: decoding what the attacker sends never panics; the client accepts the server's
//! proof only if both sides hold the same secret and see the same re-join (bundle, slot,
//! generation, both nonces); the server accepts the client's proof only if, in addition, the
//! bytes it got are the client's own proof (a reflected server proof, a proof replayed into a
//! later exchange with a fresh server nonce, a truncated or extended one: all refused); and
//! when nobody tampers and both hold the same key the exchange always succeeds.
//!
//! It also plays the pre-shared-key challenge of a JOIN (§2.3, "Pre-shared key") with the same
//! attacker: the client accepts the server's key proof exactly when both hold the same key and
//! the server proved it over the HELLO the client sent and the nonce the client received; the
//! server accepts the client's key proof exactly when it is the genuine proof of the same key
//! over the same HELLO and its own fresh nonce.
//!
//! Extending it further: add the new message to
//! `Tamper`, a step to `exchange` that builds it with the library's encoder, runs it past
//! `Tamper::apply`, decodes it with the library's decoder and states when each side must
//! accept it.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mtmux::proto::auth::{key_proof, verify_key_proof, RejoinNonces, Secret};
use mtmux::proto::handshake::{
    BundleId, Hello, HelloKind, Params, Reply, Status, COMMON_LEN, HELLO_FLAG_KEY, HELLO_FLAG_REJOIN,
    HELLO_LEN, NONCE_LEN, PROOF_LEN,
};
use mtmux::{Key, MAX_KEY_LEN, MIN_KEY_LEN};

/// What the attacker does to one message.
#[derive(Arbitrary, Debug)]
enum Tamper {
    /// Deliver it as sent.
    Pass,
    /// Replace it with these bytes.
    Replace(Vec<u8>),
    /// Flip one bit.
    Flip(u16),
    /// Deliver only a prefix.
    Truncate(u16),
    /// Append bytes.
    Extend(Vec<u8>),
}

impl Tamper {
    fn apply(&self, sent: &[u8]) -> Vec<u8> {
        let mut b = sent.to_vec();
        match self {
            Tamper::Pass => {}
            Tamper::Replace(v) => b = v.clone(),
            Tamper::Flip(bit) if !b.is_empty() => {
                let bit = *bit as usize % (b.len() * 8);
                b[bit / 8] ^= 1 << (bit % 8);
            }
            Tamper::Flip(_) => {}
            Tamper::Truncate(n) => b.truncate(*n as usize % (b.len() + 1)),
            Tamper::Extend(v) => b.extend_from_slice(v),
        }
        b
    }
}

/// The client's third message.
#[derive(Arbitrary, Debug)]
enum ProofMsg {
    /// Its own proof, tampered or not.
    Own(Tamper),
    /// The server's proof sent back (reflection).
    Reflect,
    /// The client proof of the previous exchange (replay).
    Replay,
}

#[derive(Arbitrary, Debug)]
struct Attempt {
    index: u16,
    generation: u32,
    client_nonce: [u8; NONCE_LEN],
    server_nonce: [u8; NONCE_LEN],
    hello: Tamper,
    challenge: Tamper,
    proof: ProofMsg,
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Raw key bytes of each side (a `Key` only when 16..=1024 bytes long).
    client_key: Option<Vec<u8>>,
    /// The server holds the client's key (else `server_key`).
    same_key: bool,
    server_key: Option<Vec<u8>>,
    bundle: [u8; 16],
    join_client_nonce: [u8; NONCE_LEN],
    join_server_nonce: [u8; NONCE_LEN],
    /// What the client saw of the JOIN nonces, if the attacker changed them.
    seen_join: Option<([u8; NONCE_LEN], [u8; NONCE_LEN])>,
    count: u16,
    attempts: Vec<Attempt>,
}

/// A side's key as the library takes it: `Key` validates the length.
fn key(raw: &Option<Vec<u8>>) -> Option<Key> {
    let raw = raw.as_ref()?;
    let k = Key::new(raw);
    assert_eq!(k.is_ok(), (MIN_KEY_LEN..=MAX_KEY_LEN).contains(&raw.len()));
    if let Err(e) = &k {
        assert!(e.to_string().contains("16 to 1024"), "{e}");
    }
    k.ok()
}

/// What a side feeds the secret derivation: the key's bytes, or none.
fn psk_bytes(raw: &Option<Vec<u8>>) -> Option<&[u8]> {
    key(raw).and(raw.as_deref())
}

/// Decode a REPLY as a client does (`None`: the client refuses it as malformed).
fn read_reply(b: &[u8]) -> Option<Reply> {
    let common: &[u8; COMMON_LEN] = b.get(..COMMON_LEN)?.try_into().ok()?;
    let (mut r, version, n) = Reply::decode_common(common).ok()?;
    if version != 2 {
        return None;
    }
    r.set_ext(b.get(COMMON_LEN..HELLO_LEN)?.try_into().ok()?);
    r.trailer = b.get(HELLO_LEN..HELLO_LEN + n)?.to_vec();
    Some(r)
}

/// Whether two keys are the same HMAC key. HMAC pads a key shorter than its block (64 bytes)
/// with zeros and hashes a longer one, so "K" and "K\0" are one key (both ends still need it;
/// found by this target). Equivalence is read off the MAC itself.
fn same_hmac_key(a: &[u8], b: &[u8]) -> bool {
    let probe = |k: &[u8]| key_proof(k, true, &[0; HELLO_LEN], &[0; NONCE_LEN]);
    probe(a) == probe(b)
}

/// The key challenge of a JOIN of tunnel `index` (client key `ck`, server key `sk`), with the
/// attacker's `a` tampers; asserts each side's verdict.
fn key_challenge(ck: &[u8], sk: &[u8], bundle: BundleId, count: u16, a: &Attempt) {
    let index = a.index % count;
    let hello = Hello {
        kind: HelloKind::Join,
        bundle,
        index,
        count,
        flags: HELLO_FLAG_KEY,
        params: Params { max_frame: 65536, stream_window: 1 << 20, session_window: 1 << 26 },
        generation: 0,
        nonce: a.client_nonce,
    };
    let sent = hello.encode();
    let same = same_hmac_key(ck, sk);
    let must_pass = same
        && matches!(a.hello, Tamper::Pass)
        && matches!(a.challenge, Tamper::Pass)
        && matches!(a.proof, ProofMsg::Own(Tamper::Pass));
    let stop = |step: &str| assert!(!must_pass, "an honest key challenge failed at the {step}");
    // 1. HELLO as the server reads it (exactly HELLO_LEN bytes, decoded and checked).
    let wire = a.hello.apply(&sent);
    let Some(raw) = wire.get(..HELLO_LEN).map(|b| <[u8; HELLO_LEN]>::try_from(b).unwrap()) else {
        return stop("HELLO");
    };
    let Ok(got) = Hello::decode(&raw) else { return stop("HELLO decode") };
    if got.flags & HELLO_FLAG_KEY == 0 || got.kind != HelloKind::Join {
        return stop("HELLO flags"); // the server refuses: KeyRequired, or no key challenge
    }
    // 2. Challenge: the server's fresh nonce and its proof over the HELLO it got.
    let ks = key_proof(sk, true, &raw, &a.server_nonce);
    let Some(reply) = read_reply(&a.challenge.apply(&Reply::challenge(&got, a.server_nonce, ks).encode()))
    else {
        return stop("challenge");
    };
    let client_ok =
        reply.status == Status::Challenge && verify_key_proof(ck, true, &sent, &reply.nonce, &reply.trailer);
    let genuine = same && raw == sent && reply.nonce == a.server_nonce && reply.trailer == ks;
    assert_eq!(
        client_ok,
        genuine && reply.status == Status::Challenge,
        "client verdict on the server's key proof"
    );
    assert!(
        !verify_key_proof(ck, false, &sent, &reply.nonce, &reply.trailer),
        "a server proof is no client proof"
    );
    // 3. The client's proof (sent even when the server's failed), as the server checks it.
    let kc = key_proof(ck, false, &sent, &reply.nonce);
    let proof = match &a.proof {
        ProofMsg::Own(t) => t.apply(&kc),
        ProofMsg::Reflect => ks.to_vec(),
        ProofMsg::Replay => kc.to_vec(),
    };
    let server_ok = verify_key_proof(sk, false, &raw, &a.server_nonce, &proof);
    let genuine_proof = same && raw == sent && reply.nonce == a.server_nonce && proof == kc;
    assert_eq!(server_ok, genuine_proof, "server verdict on the client's key proof ({:?})", a.proof);
    if !(client_ok && server_ok) {
        stop("key proofs");
    }
}

fuzz_target!(|input: Input| {
    let client_psk = psk_bytes(&input.client_key);
    let server_raw = if input.same_key { &input.client_key } else { &input.server_key };
    let server_psk = psk_bytes(server_raw);
    let bundle = BundleId(input.bundle);
    let (cn, sn) = (input.join_client_nonce, input.join_server_nonce);
    let (seen_cn, seen_sn) = input.seen_join.unwrap_or((cn, sn));
    let server_secret = Secret::derive(server_psk, &bundle, &cn, &sn);
    let client_secret = Secret::derive(client_psk, &bundle, &seen_cn, &seen_sn);
    // Same inputs, same secret; a different key or nonce, a different one. (A key equal to the
    // library's public no-key label stands for no key; a fuzzer will not find it, and a key
    // longer than a SHA-256 block collides with its hash, which it will not find either.)
    let same_key = match (client_psk, server_psk) {
        (Some(a), Some(b)) => same_hmac_key(a, b),
        (a, b) => a == b,
    };
    let same_inputs = same_key && (seen_cn, seen_sn) == (cn, sn);
    assert_eq!(client_secret == server_secret, same_inputs);
    assert_eq!(format!("{client_secret:?}"), "Secret(..)", "Debug never shows the secret");

    let count = input.count.max(1);
    if let (Some(ck), Some(sk)) = (client_psk, server_psk) {
        for a in input.attempts.iter().take(4) {
            key_challenge(ck, sk, bundle, count, a);
        }
    }
    let mut previous_proof: Option<[u8; PROOF_LEN]> = None;
    let mut used_server_nonces: Vec<[u8; NONCE_LEN]> = Vec::new();
    for a in input.attempts.iter().take(8) {
        // The server draws a fresh nonce for every attempt (its duty, not the proofs').
        if used_server_nonces.contains(&a.server_nonce) {
            continue;
        }
        used_server_nonces.push(a.server_nonce);
        // Nobody tampers and the keys agree: the re-join must go through.
        let untouched = matches!(a.hello, Tamper::Pass)
            && matches!(a.challenge, Tamper::Pass)
            && matches!(a.proof, ProofMsg::Own(Tamper::Pass));
        let must_pass = untouched && same_inputs;
        let stop = |step: &str| assert!(!must_pass, "an honest re-join failed at the {step}");
        let generation = a.generation.max(1);
        let index = a.index % count;
        let hello = Hello {
            kind: HelloKind::Rejoin,
            bundle,
            index,
            count,
            flags: HELLO_FLAG_REJOIN,
            params: Params { max_frame: 65536, stream_window: 1 << 20, session_window: 1 << 26 },
            generation,
            nonce: a.client_nonce,
        };
        let client_view =
            RejoinNonces { bundle, index, generation, client: a.client_nonce, server: [0; NONCE_LEN] };

        // 1. HELLO, client to server.
        let wire = a.hello.apply(&hello.encode());
        let Some(got) = wire.get(..HELLO_LEN).and_then(|b| Hello::decode(b.try_into().unwrap()).ok()) else {
            stop("HELLO");
            continue;
        };
        if got.kind != HelloKind::Rejoin {
            stop("HELLO kind");
            continue;
        }
        let server_view = RejoinNonces {
            bundle: got.bundle,
            index: got.index,
            generation: got.generation,
            client: got.nonce,
            server: a.server_nonce,
        };

        // 2. Challenge, server to client: the server's nonce and proof.
        let server_proof = server_secret.proof(true, &server_view);
        let challenge = Reply::challenge(&got, a.server_nonce, server_proof);
        let wire = a.challenge.apply(&challenge.encode());
        let Some(reply) = read_reply(&wire) else {
            stop("challenge");
            continue;
        };
        if reply.status != Status::Challenge
            || (reply.bundle, reply.index, reply.generation) != (bundle, index, generation)
        {
            stop("challenge's echo");
            continue;
        }
        let client_view = RejoinNonces { server: reply.nonce, ..client_view };
        let client_ok = client_secret.verify(true, &client_view, &reply.trailer);
        assert_eq!(
            client_ok,
            client_secret == server_secret && client_view == server_view && reply.trailer == server_proof,
            "the client accepted a server proof it should not have (or refused a genuine one)"
        );
        assert!(
            !client_secret.verify(false, &client_view, &reply.trailer),
            "a server proof is no client proof"
        );
        if !client_ok {
            stop("server proof");
            continue;
        }

        // 3. Proof, client to server.
        let own = client_secret.proof(false, &client_view);
        let sent = match &a.proof {
            ProofMsg::Own(t) => t.apply(&own),
            ProofMsg::Reflect => server_proof.to_vec(),
            ProofMsg::Replay => match previous_proof {
                Some(p) => p.to_vec(),
                None => continue,
            },
        };
        previous_proof = Some(own);
        // The server reads exactly PROOF_LEN bytes; it also must refuse any other length.
        let server_ok = server_secret.verify(false, &server_view, &sent);
        let genuine = sent == own;
        assert_eq!(
            server_ok,
            genuine && client_secret == server_secret && client_view == server_view,
            "{:?}: the server accepted a proof it should not have (or refused a genuine one)",
            a.proof
        );
        if let Some(p) = sent.get(..PROOF_LEN) {
            let exact = server_secret.verify(false, &server_view, p);
            assert_eq!(exact, p == own && client_secret == server_secret && client_view == server_view);
        }
        if !server_ok {
            stop("client proof");
        }
    }
});
