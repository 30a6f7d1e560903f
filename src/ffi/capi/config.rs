//! Configuration: `mtmux_config`, its defaults and validation.

use super::tls::{tls_from_c, Use};
use super::*;
use crate::Key;

// ---- Configuration -----------------------------------------------------------------------------

/// Configuration of a session and of the listener that accepts sessions. Initialise it with
/// `mtmux_config_init`, then change fields. Times are in milliseconds, sizes in bytes; each
/// field states its range (`a ..= b`: both ends included), and every timeout is at most
/// `MTMUX_TIMEOUT_MAX_MS`. Every function taking a config validates it
/// (`MTMUX_ERR_INVALID_CONFIG` and a message naming the field); passing NULL means the
/// defaults (also to `mtmux_config_validate`, which then returns `MTMUX_OK`).
///
/// Growth: new fields are only ever appended. A config whose `size` is that of an earlier
/// published layout is still accepted: the first one (everything up to
/// `max_pending_handshakes`; the fields from `rejoin` on came with tunnel failover) and the
/// one that ended with `max_handshakes_per_source` (the `tls_` fields came after). mtmux reads only those bytes
/// and uses the defaults for the later fields. Any other `size` is refused with
/// `MTMUX_ERR_INVALID_ARGUMENT`. `mtmux_config_init` writes the whole current struct, so a
/// program built against an older header must be recompiled before it calls
/// `mtmux_config_init` with this library (the source needs no change).
///
/// TLS (the `tls_` fields): file names and strings, NULL for unset (the default: plain TCP).
/// mtmux reads the files, and copies the strings, when the config is used (`mtmux_listen`,
/// `mtmux_dial`, `mtmux_config_validate`); the caller may free them once that call returns.
/// A listener uses `tls_cert_file` + `tls_key_file`, and `tls_ca_file` to require client
/// certificates (mutual TLS); dialing uses `tls_ca_file` or `tls_fingerprint` to check the
/// server, `tls_server_name`, and `tls_cert_file` + `tls_key_file` for mutual TLS. Problems
/// with the files are `MTMUX_ERR_INVALID_CONFIG` naming the file; a library built without
/// TLS refuses any `tls_` field with `MTMUX_ERR_INVALID_CONFIG` ("built without TLS").
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct mtmux_config {
    /// `sizeof(mtmux_config)`, set by `mtmux_config_init` (lets the struct grow compatibly:
    /// see above).
    pub size: usize,
    /// TCP connections per bundle (client), or the most a bundle may have (server): 1..=256.
    /// In port-range mode the listener uses ports `port .. port + tunnels - 1`. Default 8.
    pub tunnels: u32,
    /// 1: all tunnels on one port; 0: one port per tunnel. 0 or 1. Default 0.
    pub single_port: u32,
    /// Keepalive ping period per tunnel. 1 ..= `MTMUX_TIMEOUT_MAX_MS`. Default 10000.
    pub keepalive_interval_ms: u64,
    /// A tunnel silent this long is dead. `keepalive_interval_ms + 1` ..=
    /// `MTMUX_TIMEOUT_MAX_MS`. Default 30000.
    pub keepalive_timeout_ms: u64,
    /// How long a stream waits for a missing frame before failing. 1 ..=
    /// `MTMUX_TIMEOUT_MAX_MS`. Default 10000.
    pub reorder_timeout_ms: u64,
    /// Time to connect and hand-shake a whole bundle. 1 ..= `MTMUX_TIMEOUT_MAX_MS`.
    /// Default 10000.
    pub handshake_timeout_ms: u64,
    /// Largest DATA payload per frame. 1024 ..= 16777216 (16 MiB). Default 65536.
    pub max_frame_size: u64,
    /// Initial per-stream receive window: one full frame with its 64-byte charge
    /// (`max_frame_size + 64`) ..= `max_stream_window`. Default 1 MiB.
    pub stream_window: u64,
    /// Limit of per-stream window auto-tuning. `stream_window` ..= `session_window`.
    /// Default 16 MiB.
    pub max_stream_window: u64,
    /// Session-wide receive buffer limit. `max_stream_window` ..= 4294967295 (4 GiB - 1).
    /// Default 64 MiB.
    pub session_window: u64,
    /// Most streams open at once in a session, both directions. 1 ..= 16777216. Default 4096.
    pub max_streams: u32,
    /// Streams (and, on a listener, sessions) waiting for accept before new ones are
    /// refused. 1 ..= `MTMUX_BACKLOG_MAX`. Default 256.
    pub accept_backlog: u32,
    /// Listener only: most tunnels in the middle of a handshake at once. 1 ..=
    /// `MTMUX_BACKLOG_MAX`. Default 128.
    pub max_pending_handshakes: u32,
    /// Client: 1 re-dials a lost tunnel (backing off up to `rejoin_backoff_max_ms`) and
    /// re-joins it to the running session as the slot's next generation; 0 leaves it lost.
    /// A server always accepts re-joins of its sessions. 0 or 1. Default 1.
    pub rejoin: u32,
    /// A tunnel holding unacknowledged frames that sees no acknowledgement progress for this
    /// long is stale: it gets no new frames and its unacknowledged frames are re-sent on the
    /// other tunnels until it moves again. 0 (the default): derived from the smoothed round
    /// trip, max(4 x srtt, 250 ms). Otherwise `MTMUX_STALE_TIMEOUT_MIN_MS` (20) ..=
    /// `MTMUX_TIMEOUT_MAX_MS`.
    pub stale_timeout_ms: u64,
    /// How long both ends keep a session whose every tunnel is lost, waiting for the client
    /// to re-join (resume); blocked calls wait meanwhile, and when it passes they fail with
    /// `MTMUX_ERR_SESSION_EXPIRED`. 0 disables resumption (the session ends with its last
    /// tunnel, `MTMUX_ERR_SESSION_CLOSED`). 0 ..= `MTMUX_TIMEOUT_MAX_MS`. Default 30000.
    pub resume_timeout_ms: u64,
    /// Longest wait between two re-dial attempts of one tunnel (the first comes at once, then
    /// the wait doubles from 100 ms, with jitter). `MTMUX_REJOIN_BACKOFF_MIN_MS` (100) ..=
    /// `MTMUX_TIMEOUT_MAX_MS`. Default 5000.
    pub rejoin_backoff_max_ms: u64,
    /// Pre-shared key: `key_len` bytes at `key` (`MTMUX_KEY_MIN_LEN` 16 ..=
    /// `MTMUX_KEY_MAX_LEN` 1024), or NULL (and 0) for none, the default. When set, every
    /// tunnel proves knowledge of it in both directions before it joins a session; both ends
    /// must use the same key, and a peer with another key or none is refused
    /// (`MTMUX_ERR_AUTH`). mtmux copies the bytes when the config is used: the caller may
    /// wipe or free them once the call that took the config returns.
    pub key: *const u8,
    /// Length of `key` in bytes (0 when `key` is NULL).
    pub key_len: usize,
    /// Listener only: most of the `max_pending_handshakes` from one source address (an IPv4
    /// address, or an IPv6 /64), so that one address trickling half-finished handshakes
    /// cannot take every slot; more from it are refused at once ("busy"). 0 (the default):
    /// derived, max(2 x `tunnels`, `max_pending_handshakes` / 4), never above
    /// `max_pending_handshakes` (32 with the defaults). Otherwise 1..=`MTMUX_BACKLOG_MAX`;
    /// set it to at least `tunnels`, and higher when many clients share one address (NAT).
    pub max_handshakes_per_source: u32,
    /// TLS certificate chain, a PEM file (this side's certificate first, then intermediate
    /// CAs). Listener: required for TLS, with `tls_key_file`. Dialing: the client certificate
    /// for mutual TLS (optional). NULL: none.
    pub tls_cert_file: *const c_char,
    /// The private key of `tls_cert_file`, a PEM file (PKCS#8, RSA or EC). NULL: none.
    pub tls_key_file: *const c_char,
    /// A PEM file of CA certificates. Dialing: the server's certificate must be signed by one
    /// of them (and valid for `tls_server_name`); turns TLS on. Listener: mutual TLS, every
    /// client must present a certificate signed by one of them. NULL: none.
    pub tls_ca_file: *const c_char,
    /// Dialing, instead of `tls_ca_file`: trust exactly the server certificate with this
    /// SHA-256 fingerprint (64 hex digits, plain or colon-separated, as `openssl x509 -noout
    /// -fingerprint -sha256` prints); its CA, names and dates are then not checked. NULL: none.
    pub tls_fingerprint: *const c_char,
    /// Dialing: the name the server's certificate must be valid for (DNS name or IP address).
    /// NULL: the host part of the address dialed.
    pub tls_server_name: *const c_char,
}

/// Bytes of the first published `mtmux_config` that hold fields (everything before `rejoin`).
pub(super) const CONFIG_FIELDS_V1: usize = offset_of!(mtmux_config, rejoin);
/// `sizeof` of the first published `mtmux_config`: its fields rounded up to its alignment.
pub(super) const CONFIG_SIZE_V1: usize = CONFIG_FIELDS_V1.next_multiple_of(align_of::<mtmux_config>());
/// Bytes of the layout that ended with `max_handshakes_per_source` (before the `tls_`
/// fields).
pub(super) const CONFIG_FIELDS_V2: usize =
    offset_of!(mtmux_config, max_handshakes_per_source) + size_of::<u32>();
/// `sizeof` of that layout.
pub(super) const CONFIG_SIZE_V2: usize = CONFIG_FIELDS_V2.next_multiple_of(align_of::<mtmux_config>());

/// Read the config C passes, of any layout `size` that mtmux accepts, as the current layout
/// (fields the caller's layout lacks take their defaults); `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to a config of `(*p).size` readable bytes (at least its `size`
/// field) that no one writes during the call.
pub(super) unsafe fn read_config(p: *const mtmux_config) -> Res<Option<mtmux_config>> {
    if p.is_null() {
        return Ok(None);
    }
    // Safety: every layout starts with `size` (this function's contract).
    let size = unsafe { std::ptr::addr_of!((*p).size).read() };
    let current = size_of::<mtmux_config>();
    if size == current {
        // Safety: the caller's struct is the current layout, `size` bytes long.
        return Ok(Some(unsafe { p.read() }));
    }
    for (layout, fields) in [(CONFIG_SIZE_V1, CONFIG_FIELDS_V1), (CONFIG_SIZE_V2, CONFIG_FIELDS_V2)] {
        if size != layout {
            continue;
        }
        let mut c = config_to_c(&Config::default());
        // Safety: the caller's struct has `layout >= fields` readable bytes and `c` is a
        // distinct local of the current layout, whose first `fields` bytes hold the same
        // fields at the same offsets. The old layout's padding is not copied: in the current
        // layout it holds the next field.
        unsafe {
            std::ptr::copy_nonoverlapping(p.cast::<u8>(), std::ptr::addr_of_mut!(c).cast::<u8>(), fields);
        }
        c.size = current;
        return Ok(Some(c));
    }
    Err(failure(
        MTMUX_ERR_INVALID_ARGUMENT,
        format!(
            "cfg->size is {size}, not sizeof(mtmux_config) = {current} (nor an earlier \
             {CONFIG_SIZE_V1} or {CONFIG_SIZE_V2}): use mtmux_config_init"
        ),
    ))
}

/// The library config of a C config of the current layout (see `read_config`), for `use_`
/// (its TLS fields mean different things when listening and dialing).
pub(super) fn config_from_c(c: Option<&mtmux_config>, use_: Use<'_>) -> Res<Config> {
    let Some(c) = c else {
        return Ok(Config::default());
    };
    let invalid = |m: String| failure(MTMUX_ERR_INVALID_CONFIG, format!("invalid configuration: {m}"));
    let ms = |v: u64, name: &str| -> Res<Duration> {
        if v > MTMUX_TIMEOUT_MAX_MS {
            return Err(invalid(format!("{name} must be at most {MTMUX_TIMEOUT_MAX_MS}, got {v}")));
        }
        Ok(Duration::from_millis(v))
    };
    let size = |v: u64, name: &str| -> Res<usize> {
        usize::try_from(v).map_err(|_| invalid(format!("{name} {v} does not fit this platform")))
    };
    let single_port = match c.single_port {
        0 => false,
        1 => true,
        v => return Err(invalid(format!("single_port must be 0 or 1, got {v}"))),
    };
    let rejoin = match c.rejoin {
        0 => false,
        1 => true,
        v => return Err(invalid(format!("rejoin must be 0 or 1, got {v}"))),
    };
    let stale_timeout = match c.stale_timeout_ms {
        0 => None,
        v if v < MTMUX_STALE_TIMEOUT_MIN_MS => {
            return Err(invalid(format!(
                "stale_timeout_ms must be 0 (derived from the round trip) or at least \
                 {MTMUX_STALE_TIMEOUT_MIN_MS}, got {v}"
            )))
        }
        v => Some(ms(v, "stale_timeout_ms")?),
    };
    if c.rejoin_backoff_max_ms < MTMUX_REJOIN_BACKOFF_MIN_MS {
        return Err(invalid(format!(
            "rejoin_backoff_max_ms must be at least {MTMUX_REJOIN_BACKOFF_MIN_MS}, got {}",
            c.rejoin_backoff_max_ms
        )));
    }
    if c.accept_backlog > MTMUX_BACKLOG_MAX {
        return Err(invalid(format!(
            "accept_backlog must be at most {MTMUX_BACKLOG_MAX}, got {}",
            c.accept_backlog
        )));
    }
    let cfg = Config {
        tunnels: c.tunnels as usize,
        single_port,
        keepalive_interval: ms(c.keepalive_interval_ms, "keepalive_interval_ms")?,
        keepalive_timeout: ms(c.keepalive_timeout_ms, "keepalive_timeout_ms")?,
        reorder_timeout: ms(c.reorder_timeout_ms, "reorder_timeout_ms")?,
        max_frame_size: size(c.max_frame_size, "max_frame_size")?,
        stream_window: size(c.stream_window, "stream_window")?,
        max_stream_window: size(c.max_stream_window, "max_stream_window")?,
        session_window: size(c.session_window, "session_window")?,
        max_streams: c.max_streams as usize,
        accept_backlog: c.accept_backlog as usize,
        handshake_timeout: ms(c.handshake_timeout_ms, "handshake_timeout_ms")?,
        max_pending_handshakes: c.max_pending_handshakes as usize,
        max_handshakes_per_source: match c.max_handshakes_per_source {
            0 => None,
            n => Some(n as usize),
        },
        rejoin,
        stale_timeout,
        resume_timeout: ms(c.resume_timeout_ms, "resume_timeout_ms")?,
        rejoin_backoff_max: ms(c.rejoin_backoff_max_ms, "rejoin_backoff_max_ms")?,
        key: match (c.key.is_null(), c.key_len) {
            (true, 0) => None,
            (true, n) => return Err(invalid(format!("key is NULL but key_len is {n}"))),
            // Safety: the caller's contract: `key` points to `key_len` readable bytes.
            (false, n) => Some(Key::new(unsafe { std::slice::from_raw_parts(c.key, n) })?),
        },
        #[cfg(feature = "tls")]
        tls: None,
    };
    // Safety (both): the caller's contract: each `tls_` field is NULL or a NUL-terminated
    // string.
    #[cfg(feature = "tls")]
    let cfg = Config { tls: unsafe { tls_from_c(c, use_)? }, ..cfg };
    #[cfg(not(feature = "tls"))]
    unsafe {
        tls_from_c(c, use_)?
    };
    cfg.validate()?;
    Ok(cfg)
}

pub(super) fn config_to_c(c: &Config) -> mtmux_config {
    let ms = |d: Duration| d.as_millis() as u64;
    mtmux_config {
        size: size_of::<mtmux_config>(),
        tunnels: c.tunnels as u32,
        single_port: c.single_port as u32,
        keepalive_interval_ms: ms(c.keepalive_interval),
        keepalive_timeout_ms: ms(c.keepalive_timeout),
        reorder_timeout_ms: ms(c.reorder_timeout),
        handshake_timeout_ms: ms(c.handshake_timeout),
        max_frame_size: c.max_frame_size as u64,
        stream_window: c.stream_window as u64,
        max_stream_window: c.max_stream_window as u64,
        session_window: c.session_window as u64,
        max_streams: c.max_streams as u32,
        accept_backlog: c.accept_backlog as u32,
        max_pending_handshakes: c.max_pending_handshakes as u32,
        rejoin: c.rejoin as u32,
        stale_timeout_ms: c.stale_timeout.map_or(0, ms),
        resume_timeout_ms: ms(c.resume_timeout),
        rejoin_backoff_max_ms: ms(c.rejoin_backoff_max),
        key: std::ptr::null(),
        key_len: 0,
        max_handshakes_per_source: c.max_handshakes_per_source.map_or(0, |n| n as u32),
        tls_cert_file: std::ptr::null(),
        tls_key_file: std::ptr::null(),
        tls_ca_file: std::ptr::null(),
        tls_fingerprint: std::ptr::null(),
        tls_server_name: std::ptr::null(),
    }
}

/// Fill `*cfg` with the defaults (and set `cfg->size`).
#[no_mangle]
pub extern "C" fn mtmux_config_init(cfg: *mut mtmux_config) -> mtmux_result {
    guard("mtmux_config_init", || {
        // Safety: the caller passes NULL or a writable `mtmux_config`.
        let out = unsafe { output(cfg, "cfg")? };
        out.write(config_to_c(&Config::default()));
        Ok(MTMUX_OK)
    })
}

/// Check every value of `*cfg` without doing anything else: `MTMUX_OK`, or
/// `MTMUX_ERR_INVALID_CONFIG` with a message naming the field (`MTMUX_ERR_INVALID_ARGUMENT`
/// for a wrong `size`). NULL means the defaults, as everywhere: `MTMUX_OK`.
#[no_mangle]
pub extern "C" fn mtmux_config_validate(cfg: *const mtmux_config) -> mtmux_result {
    guard("mtmux_config_validate", || {
        // Safety: the caller passes NULL or a readable `mtmux_config` of `cfg->size` bytes.
        config_from_c(unsafe { read_config(cfg)? }.as_ref(), Use::Check)?;
        Ok(MTMUX_OK)
    })
}
