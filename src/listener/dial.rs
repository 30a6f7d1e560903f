//! The client side of the handshake (JOIN over every tunnel, REJOIN of one lost tunnel), and
//! sessions over connections the caller made.

use super::keyauth::{self, client_answer};
use super::{context, refuse, with_port};
use crate::config::{check_peer_params, Config, MAX_TUNNELS};
use crate::core::ids::Role;
use crate::error::{CloseReason, Error, Result};
use crate::ffi::sys;
use crate::proto::auth::{RejoinNonces, Secret};
use crate::proto::handshake::{
    BundleId, Hello, HelloKind, Params, Reply, Status, COMMON_LEN, EXT_LEN, HELLO_FLAG_KEY,
    HELLO_FLAG_REJOIN, HELLO_LEN, NONCE_LEN, PROOF_LEN,
};
use crate::session::supervisor::Redial;
use crate::session::{Session, Setup};
use crate::wire::Wire;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Open a bundle to the server at `addr`: `cfg.tunnels` connections to `port .. port + n - 1`
/// (or all to `port` with `cfg.single_port`), handshake included, within
/// `cfg.handshake_timeout`. When `addr` resolves to several addresses (`localhost` to `::1`
/// and `127.0.0.1`), tunnel 0 tries each in order (each gets an equal share of the time left)
/// and the other tunnels go to the one that answered; when none does, the error lists every
/// address tried. With `cfg.rejoin`, lost tunnels are re-dialed at the same addresses and
/// re-joined to the session.
pub fn dial(addr: impl ToSocketAddrs, cfg: &Config) -> Result<Session> {
    cfg.validate()?;
    Wire::check_side(cfg, false)?;
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing");
        return Err(Error::Io(std::sync::Arc::new(e)));
    }
    let deadline = Instant::now() + cfg.handshake_timeout;
    let (base, first) = connect_first(&addrs, deadline)?;
    let targets: Vec<SocketAddr> = (0..cfg.tunnels)
        .map(|i| {
            let port = base.port() as u32 + if cfg.single_port { 0 } else { i as u32 };
            with_port(base, port)
                .ok_or_else(|| Error::InvalidConfig(format!("tunnel {i} would use port {port} > 65535")))
        })
        .collect::<Result<_>>()?;
    // Connect the other tunnels at once (and run every TLS handshake): over a long path, one
    // after another would cost round trips each.
    let mut first = Some(first);
    let conns: Vec<Result<Wire>> = std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let connected = first.take();
                scope.spawn(move || {
                    let sock = match connected {
                        Some(sock) => sock,
                        None => {
                            let left = deadline
                                .saturating_duration_since(Instant::now())
                                .max(Duration::from_millis(1));
                            TcpStream::connect_timeout(a, left).map_err(|e| {
                                let hint = range_hint(i, cfg, &e);
                                context(e, format!("tunnel {i} to {a}{hint}"))
                            })?
                        }
                    };
                    Wire::client(sock, cfg, *a, deadline)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::Other).into())))
            .collect()
    });
    let tunnels = conns.into_iter().collect::<Result<Vec<_>>>()?;
    client_handshake(tunnels, cfg, deadline, cfg.rejoin.then_some(targets))
}

/// Connect tunnel 0 to the first of `addrs` that answers, each in turn with an equal share of
/// the time left before `deadline`; the address that answered and the connection. When none
/// does, the error (of the last address's kind) names every address tried and why it failed.
fn connect_first(addrs: &[SocketAddr], deadline: Instant) -> Result<(SocketAddr, TcpStream)> {
    let mut failures = Vec::new();
    let mut last = None;
    for (k, a) in addrs.iter().enumerate() {
        let left = deadline.saturating_duration_since(Instant::now());
        let share = (left / (addrs.len() - k) as u32).max(Duration::from_millis(1));
        match TcpStream::connect_timeout(a, share) {
            Ok(sock) => return Ok((*a, sock)),
            Err(e) => {
                failures.push(format!("{a}: {e}"));
                last = Some(e);
            }
        }
    }
    let e = last.expect("at least one address");
    Err(if addrs.len() == 1 {
        context(e, format!("tunnel 0 to {}", addrs[0]))
    } else {
        let kind = e.kind();
        Error::Io(std::sync::Arc::new(io::Error::new(
            kind,
            format!("tunnel 0: no address of the server answered (tried {})", failures.join("; ")),
        )))
    })
}

/// Why a later port of the range may refuse: the common mistakes, named.
fn range_hint(i: usize, cfg: &Config, e: &io::Error) -> String {
    if i == 0 || cfg.single_port || e.kind() != io::ErrorKind::ConnectionRefused {
        return String::new();
    }
    format!(
        " (nothing listens on port {i} of the server's range: the server may take fewer tunnels \
         than this side's {} (its --tunnels / `tunnels`), or listen on a single port (then both \
         ends need --single-port / `single_port`))",
        cfg.tunnels
    )
}

impl Session {
    /// Run the client handshake over connections the caller made (tunnel `i` is
    /// `tunnels[i]`) and start the session. Such a session cannot re-dial a lost tunnel: the
    /// others carry on without it (nothing is lost), and losing the last ends the session.
    ///
    /// With `cfg.tls` (feature `tls`), each connection starts with a TLS handshake.
    pub fn client(tunnels: Vec<TcpStream>, cfg: &Config) -> Result<Session> {
        cfg.validate()?;
        Wire::check_side(cfg, false)?;
        let deadline = Instant::now() + cfg.handshake_timeout;
        let wires = secure_all(tunnels, |s| {
            let target = s.peer_addr()?;
            Wire::client(s, cfg, target, deadline)
        })?;
        client_handshake(wires, cfg, deadline, None)
    }

    /// Run the server handshake over connections the caller accepted (in any order; the
    /// HELLOs say which tunnel each is) and start the session. Without a listener it cannot
    /// take re-joins: losing the last tunnel ends the session.
    ///
    /// With `cfg.tls` (feature `tls`), each connection starts with a TLS handshake.
    pub fn server(tunnels: Vec<TcpStream>, cfg: &Config) -> Result<Session> {
        cfg.validate()?;
        Wire::check_side(cfg, true)?;
        let deadline = Instant::now() + cfg.handshake_timeout;
        let wires = secure_all(tunnels, |s| {
            Wire::server(s, cfg, deadline).map_err(|r| {
                if let Some(plain) = r.plain {
                    let why = "this server requires TLS; the client connected without it";
                    refuse(&plain.into(), None, Status::Unsupported, why);
                }
                r.error
            })
        })?;
        server_handshake(wires, cfg, deadline)
    }
}

/// Each of `socks` through `secure` (their TLS handshakes, all at once: the peer may run
/// them in any order).
fn secure_all(socks: Vec<TcpStream>, secure: impl Fn(TcpStream) -> Result<Wire> + Sync) -> Result<Vec<Wire>> {
    #[cfg(feature = "tls")]
    if socks.len() > 1 {
        let secure = &secure;
        return std::thread::scope(|scope| {
            let handles: Vec<_> = socks.into_iter().map(|s| scope.spawn(move || secure(s))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::Other).into())))
                .collect()
        });
    }
    socks.into_iter().map(secure).collect()
}

fn left(deadline: Instant) -> Result<Duration> {
    let d = deadline.saturating_duration_since(Instant::now());
    if d.is_zero() {
        Err(Error::TimedOut)
    } else {
        Ok(d)
    }
}

fn check_count(n: usize) -> Result<()> {
    if n == 0 || n > MAX_TUNNELS {
        return Err(Error::InvalidConfig(format!("a bundle needs 1..={MAX_TUNNELS} tunnels, got {n}")));
    }
    Ok(())
}

/// The pre-shared key's bytes, if any.
fn psk(cfg: &Config) -> Option<&[u8]> {
    cfg.key.as_ref().map(|k| k.bytes())
}

fn key_flag(cfg: &Config) -> u16 {
    if cfg.key.is_some() {
        HELLO_FLAG_KEY
    } else {
        0
    }
}

fn random_nonce() -> Result<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    sys::random_bytes(&mut n)?;
    Ok(n)
}

/// Read a REPLY (version 2, or a version 1 server's refusal) within `deadline`.
fn read_reply(mut conn: &Wire, deadline: Instant, i: usize) -> Result<Reply> {
    let mut read = |buf: &mut [u8]| -> Result<()> {
        conn.set_read_timeout(Some(left(deadline)?))?;
        conn.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::TimedOut,
            io::ErrorKind::UnexpectedEof => {
                Error::Protocol(format!("tunnel {i}: the server closed the connection during the handshake"))
            }
            _ => e.into(),
        })
    };
    let mut common = [0u8; COMMON_LEN];
    read(&mut common)?;
    let (mut reply, version, trailer) =
        Reply::decode_common(&common).map_err(|e| Error::Protocol(format!("tunnel {i}: {e}")))?;
    if version == 2 {
        let mut ext = [0u8; EXT_LEN];
        read(&mut ext)?;
        reply.set_ext(&ext);
    }
    reply.trailer = vec![0u8; trailer];
    read(&mut reply.trailer)?;
    if version == 1 {
        return Err(Error::Refused(format!(
            "the server speaks mtmux protocol version 1, this client version 2 ({:?}: {})",
            reply.status,
            reply.reason()
        )));
    }
    Ok(reply)
}

fn client_handshake(
    tunnels: Vec<Wire>,
    cfg: &Config,
    deadline: Instant,
    redial: Option<Vec<SocketAddr>>,
) -> Result<Session> {
    check_count(tunnels.len())?;
    let mut id = [0u8; 16];
    sys::random_bytes(&mut id)?;
    let bundle = BundleId(id);
    let nonce = random_nonce()?;
    let count = tunnels.len() as u16;
    let flags = if redial.is_some() { HELLO_FLAG_REJOIN } else { 0 } | key_flag(cfg);
    let mut sent = Vec::with_capacity(tunnels.len());
    for (i, mut c) in tunnels.iter().enumerate() {
        c.set_write_timeout(Some(left(deadline)?))?;
        let hello = Hello {
            kind: HelloKind::Join,
            bundle,
            index: i as u16,
            count,
            flags,
            params: cfg.params(),
            generation: 0,
            nonce,
        };
        let raw = hello.encode();
        c.write_all(&raw).map_err(|e| context(e, format!("sending handshake on tunnel {i}")))?;
        sent.push((hello, raw));
    }
    let read = |c: &Wire, i: usize| read_reply(c, deadline, i);
    let abort = |c: &Wire| drop(c.shutdown(std::net::Shutdown::Both));
    let expect = |want: Status| {
        move |_: usize, r: &Reply| if r.status == want { Ok(()) } else { Err(keyauth::refusal(r)) }
    };
    if let Some(key) = &cfg.key {
        // Every tunnel answers its key challenge (as soon as it comes: a server may send them
        // one after the other) before the server completes the bundle.
        let answer = |c: &Wire, i: usize| {
            let challenge = read(c, i)?;
            client_answer(key, c, &sent[i].0, &sent[i].1, &challenge, i).map(|()| challenge)
        };
        read_replies(&tunnels, answer, |_, _| Ok(()), abort)?;
    }
    let replies = read_replies(&tunnels, read, expect(Status::Accept), abort)?;
    let mut agreed: Option<(Params, [u8; NONCE_LEN])> = None;
    for (i, (c, reply)) in tunnels.iter().zip(replies).enumerate() {
        if reply.bundle != bundle || reply.index as usize != i {
            return Err(Error::Protocol(format!("tunnel {i}: reply for another tunnel")));
        }
        check_peer_params(&reply.params).map_err(Error::Protocol)?;
        match agreed {
            None => agreed = Some((reply.params, reply.nonce)),
            Some(a) if a != (reply.params, reply.nonce) => {
                return Err(Error::Protocol("tunnels of one bundle got different replies".into()))
            }
            Some(_) => {}
        }
        c.set_read_timeout(None)?;
    }
    let (peer, server_nonce) = agreed.expect("at least one tunnel");
    let secret = Secret::derive(psk(cfg), &bundle, &nonce, &server_nonce);
    let resumable = redial.is_some() && !cfg.resume_timeout.is_zero();
    let redial = redial.map(|targets| Redial::new(targets, cfg));
    Session::start(tunnels, cfg, Setup { role: Role::Client, peer, bundle, secret, redial, resumable })
}

/// Read one reply from each of `conns` (with `read(conn, index)`), all at once, and check each
/// (`check(index, reply)`). The first failure (an I/O error, the deadline, or a reply `check`
/// turns into an error, such as a refusal) aborts the other reads at once (`abort` shuts the
/// connections down; not for an authentication failure, see below) and is returned; a refusal
/// the server sent takes precedence over an I/O error of another tunnel. Reading the tunnels in turn instead would leave a client waiting
/// on a tunnel that never arrived at a server that refused its other tunnels (a closing
/// listener, a wrong port) until the handshake timeout.
fn read_replies<C: Sync>(
    conns: &[C],
    read: impl Fn(&C, usize) -> Result<Reply> + Sync,
    check: impl Fn(usize, &Reply) -> Result<()> + Sync,
    abort: impl Fn(&C) + Sync,
) -> Result<Vec<Reply>> {
    let one = |i: usize| read(&conns[i], i).and_then(|r| check(i, &r).map(|()| r));
    if conns.len() == 1 {
        return Ok(vec![one(0)?]);
    }
    // The first failure, and whether it is the server's word (a refusal, an authentication
    // failure) rather than something that went wrong on the way.
    let failed: parking_lot::Mutex<Option<(bool, Error)>> = parking_lot::Mutex::new(None);
    let fail = |e: Error| {
        let told = matches!(e, Error::Refused(_) | Error::Auth(_));
        // A key mismatch is the same on every tunnel, and each gets its answer at once: the
        // others finish theirs (the server then sees the mismatch on each, not connections
        // cut in the middle of a key challenge).
        let aborts = !matches!(e, Error::Auth(_));
        let mut f = failed.lock();
        match &*f {
            None => {
                *f = Some((told, e));
                drop(f);
                if aborts {
                    conns.iter().for_each(&abort);
                }
            }
            // A refusal that arrives while the others are being aborted still wins.
            Some((false, _)) if told => *f = Some((told, e)),
            Some(_) => {}
        }
    };
    let replies: Vec<Option<Reply>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..conns.len())
            .map(|i| {
                let (one, fail) = (&one, &fail);
                std::thread::Builder::new()
                    .name(format!("mtmux-reply{i}"))
                    .stack_size(128 * 1024)
                    .spawn_scoped(scope, move || one(i).map_err(fail).ok())
                    // A thread that cannot start fails the handshake (and wakes the others).
                    .map_err(|e| fail(e.into()))
                    .ok()
            })
            .collect();
        handles.into_iter().map(|h| h.and_then(|h| h.join().ok().flatten())).collect()
    });
    if let Some((_, e)) = failed.into_inner() {
        return Err(e);
    }
    replies
        .into_iter()
        .map(|r| r.ok_or_else(|| Error::Protocol("a handshake thread failed".into())))
        .collect()
}

/// Re-dial tunnel `index` of a session: connect to `target`, REJOIN as generation
/// `generation`, check the server's proof and prove ours. Returns the connection once the
/// server accepted it. A server that no longer knows the session answers with
/// `Error::SessionClosed(CloseReason::Expired(_))`.
pub(crate) fn rejoin(
    target: SocketAddr,
    cfg: &Config,
    bundle: &BundleId,
    secret: &Secret,
    index: u16,
    count: u16,
    generation: u32,
) -> Result<Wire> {
    let deadline = Instant::now() + cfg.handshake_timeout;
    let sock = TcpStream::connect_timeout(&target, cfg.handshake_timeout)
        .map_err(|e| context(e, format!("re-dialing tunnel {index} at {target}")))?;
    let mut conn = Wire::client(sock, cfg, target, deadline)?;
    conn.set_write_timeout(Some(left(deadline)?))?;
    let nonce = random_nonce()?;
    let hello = Hello {
        kind: HelloKind::Rejoin,
        bundle: *bundle,
        index,
        count,
        flags: HELLO_FLAG_REJOIN | key_flag(cfg),
        params: cfg.params(),
        generation,
        nonce,
    };
    conn.write_all(&hello.encode())?;
    let refused = |reply: &Reply| match reply.status {
        Status::UnknownSession => Error::SessionClosed(CloseReason::Expired(format!(
            "the server no longer knows this session (it ended, expired or restarted): {}",
            reply.reason()
        ))),
        Status::KeyRequired | Status::NoKey => keyauth::refusal(reply),
        s => Error::Refused(format!("re-joining tunnel {index}: {s:?}: {}", reply.reason())),
    };
    let challenge = read_reply(&conn, deadline, index as usize)?;
    if challenge.status != Status::Challenge {
        return Err(refused(&challenge));
    }
    if challenge.bundle != *bundle || challenge.index != index || challenge.generation != generation {
        return Err(Error::Protocol(format!("tunnel {index}: challenge for another re-join")));
    }
    let nonces = RejoinNonces { bundle: *bundle, index, generation, client: nonce, server: challenge.nonce };
    if !secret.verify(true, &nonces, &challenge.trailer) {
        return Err(Error::Protocol(format!(
            "tunnel {index}: the server at {target} could not prove it holds this session"
        )));
    }
    let proof: [u8; PROOF_LEN] = secret.proof(false, &nonces);
    conn.write_all(&proof)?;
    let reply = read_reply(&conn, deadline, index as usize)?;
    if reply.status != Status::Accept {
        return Err(refused(&reply));
    }
    conn.set_read_timeout(None)?;
    Ok(conn)
}

fn server_handshake(tunnels: Vec<Wire>, cfg: &Config, deadline: Instant) -> Result<Session> {
    check_count(tunnels.len())?;
    // Any failure refuses every connection, so that no client is left with a bare EOF.
    let fail = |hello: Option<&Hello>, status, why: String| {
        for c in &tunnels {
            refuse(c, hello, status, &why);
        }
        Err(Error::Protocol(why))
    };
    let mut hellos = Vec::with_capacity(tunnels.len());
    for (i, mut c) in tunnels.iter().enumerate() {
        let mut raw = [0u8; HELLO_LEN];
        let read = left(deadline)
            .and_then(|t| Ok(c.set_read_timeout(Some(t))?))
            .and_then(|()| Ok(c.read_exact(&mut raw)?));
        if let Err(e) = read {
            return fail(None, Status::Malformed, format!("tunnel {i}: no complete handshake ({e})"));
        }
        let hello = match Hello::decode(&raw) {
            Ok(h) => h,
            Err(e) => return fail(None, Status::Malformed, e.to_string()),
        };
        if let Err((status, why)) = keyauth::server_check(cfg.key.as_ref(), c, &hello, &raw, deadline) {
            refuse(c, Some(&hello), status, &why);
            let peer = c.peer_addr().map_or_else(|_| format!("tunnel {i}"), |a| a.to_string());
            let why = format!("{peer}: {why}");
            return Err(match status {
                Status::KeyRequired | Status::NoKey | Status::BadProof => Error::Auth(why),
                _ => Error::Protocol(why),
            });
        }
        hellos.push(hello);
    }
    let order = match bundle_order(&hellos) {
        Ok(order) => order,
        Err((status, why)) => return fail(Some(&hellos[0]), status, why),
    };
    let f = hellos[0];
    let server_nonce = random_nonce()?;
    let mut slots: Vec<Option<Wire>> = tunnels.into_iter().map(Some).collect();
    let ordered: Vec<Wire> = order.iter().map(|&i| slots[i].take().expect("each once")).collect();
    for (i, mut c) in ordered.iter().enumerate() {
        let mut h = f;
        h.index = i as u16;
        c.set_write_timeout(Some(left(deadline)?))?;
        c.write_all(&Reply::accept(&h, cfg.params(), server_nonce).encode())?;
        c.set_read_timeout(None)?;
    }
    let secret = Secret::derive(psk(cfg), &f.bundle, &f.nonce, &server_nonce);
    // Without a listener nobody takes re-joins: the session cannot be resumed.
    let setup = Setup {
        role: Role::Server,
        peer: f.params,
        bundle: f.bundle,
        secret,
        redial: None,
        resumable: false,
    };
    Session::start(ordered, cfg, setup)
}

/// Check that `hellos` (one per connection) form one complete bundle; returns, for each
/// tunnel index, the position of its connection.
fn bundle_order(hellos: &[Hello]) -> Result<Vec<usize>, (Status, String)> {
    let n = hellos.len();
    let f = hellos[0];
    let mut order: Vec<Option<usize>> = vec![None; n];
    for (i, h) in hellos.iter().enumerate() {
        if h.kind != HelloKind::Join
            || h.bundle != f.bundle
            || h.count as usize != n
            || (h.params, h.flags, h.nonce) != (f.params, f.flags, f.nonce)
        {
            return Err((Status::Conflict, "the connections are not one bundle".into()));
        }
        check_peer_params(&h.params).map_err(|why| (Status::BadParams, why))?;
        if order[h.index as usize].replace(i).is_some() {
            return Err((Status::Conflict, format!("tunnel index {} appears twice", h.index)));
        }
    }
    Ok(order.into_iter().map(|o| o.expect("n distinct indices below n")).collect())
}
