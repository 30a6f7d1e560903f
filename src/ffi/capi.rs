//! The C ABI of mtmux (`libmtmux.so` / `libmtmux.a`, header `include/mtmux.h`).
//!
//! `cbindgen` generates the header from this file alone (`make header`), so every item here
//! that C sees carries the documentation C programmers read. The rules of the boundary
//! (models: rustls-ffi, blazesym, hyper's C API):
//! - opaque handles (`mtmux_listener`, `mtmux_session`, `mtmux_stream`) are boxed Rust
//!   objects; `_free` drops them and `_free(NULL)` does nothing;
//! - inputs first, outputs last, and an output is written only when the call succeeds;
//! - every exported function runs its body inside `guard`, which turns errors into a code
//!   plus a thread-local message and catches panics, so none crosses into C;
//! - nothing C passes is trusted: pointers are checked for NULL, strings for UTF-8, integers
//!   that select something (`how`, `single_port`) are validated, never transmuted into enums.
// C names (`mtmux_result`), and entry points that take raw pointers without being `unsafe fn`:
// their callers are C programs bound by the header's contract, not Rust code.
#![allow(non_camel_case_types, clippy::not_unsafe_ptr_arg_deref)]

use crate::{
    CloseReason, Config, Error, Event, Listener, Session, Stream, TunnelState, MIN_REJOIN_BACKOFF,
    MIN_STALE_TIMEOUT,
};
use std::any::Any;
use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::io::{self, Read, Write};
use std::mem::{align_of, offset_of, size_of, MaybeUninit};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

// ---- Results and errors ---------------------------------------------------------------------

/// Result of an mtmux call: `MTMUX_OK` (0) or a negative `MTMUX_ERR_...` code. Functions that
/// return a byte count (`mtmux_stream_read`, `mtmux_stream_write`) return these codes as
/// negative counts. The numbers never change once published. `mtmux_strerror` names a code;
/// `mtmux_last_error` gives the detail of the last failure on the calling thread.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtmux_result {
    /// Success.
    MTMUX_OK = 0,
    /// A required pointer argument was NULL.
    MTMUX_ERR_NULL = -1,
    /// An argument is out of range (a zero length, an unknown `how`, a timeout above
    /// `MTMUX_TIMEOUT_MAX_MS`, a config whose `size` is neither `sizeof(mtmux_config)` nor
    /// that of its first published layout).
    MTMUX_ERR_INVALID_ARGUMENT = -2,
    /// A string argument is not valid UTF-8.
    MTMUX_ERR_UTF8 = -3,
    /// An address is not of the form `host:port` or does not resolve.
    MTMUX_ERR_ADDRESS = -4,
    /// The caller's buffer is too small for the result (see `MTMUX_ADDR_STRLEN`).
    MTMUX_ERR_BUFFER_TOO_SMALL = -5,
    /// A bug inside mtmux (a Rust panic, caught at the boundary).
    MTMUX_ERR_PANIC = -6,
    /// A configuration value is out of range; the message names the field.
    MTMUX_ERR_INVALID_CONFIG = -10,
    /// The session has ended (closed here, by the peer, or all tunnels lost without
    /// resumption); an expired session has its own code, `MTMUX_ERR_SESSION_EXPIRED`.
    MTMUX_ERR_SESSION_CLOSED = -11,
    /// The listener was closed.
    MTMUX_ERR_LISTENER_CLOSED = -12,
    /// The stream was reset (aborted) by either side.
    MTMUX_ERR_STREAM_RESET = -13,
    /// The stream's write side was closed (`mtmux_stream_close_write`) before this write.
    MTMUX_ERR_WRITE_CLOSED = -14,
    /// A timeout expired (read, write, accept, connect).
    MTMUX_ERR_TIMED_OUT = -15,
    /// A frame of the stream did not arrive within the reorder timeout.
    MTMUX_ERR_REORDER_TIMEOUT = -16,
    /// The peer broke the mtmux protocol.
    MTMUX_ERR_PROTOCOL = -17,
    /// The stream limit (`max_streams`) is reached, here or at the peer.
    MTMUX_ERR_TOO_MANY_STREAMS = -18,
    /// The server refused the bundle during the handshake; the message has its reason.
    MTMUX_ERR_REFUSED = -19,
    /// Nothing listens at the address (TCP connection refused).
    MTMUX_ERR_CONNECTION_REFUSED = -20,
    /// The address (or a port of the range) is already in use.
    MTMUX_ERR_ADDRESS_IN_USE = -21,
    /// Another operating-system I/O error; the message has the detail.
    MTMUX_ERR_IO = -22,
    /// The session has ended because every tunnel was lost and none came back within
    /// `resume_timeout_ms` (or the server no longer knew the session when the client came
    /// back); `mtmux_session_close_reason` then gives `MTMUX_CLOSE_EXPIRED`. Every call on the
    /// session or its streams that can fail with `MTMUX_ERR_SESSION_CLOSED` fails with this
    /// code instead after an expiry: `mtmux_session_open_stream`, `mtmux_session_accept_stream`
    /// (`_timeout`), `mtmux_session_next_event`, `mtmux_stream_read`, `mtmux_stream_write`,
    /// `mtmux_stream_write_all`, and calls that were blocked in them while the session waited
    /// for its tunnels to come back.
    MTMUX_ERR_SESSION_EXPIRED = -23,
}

use mtmux_result::*;

/// Buffer size that always holds an address written by `mtmux_listener_local_addr` or
/// `mtmux_session_tunnel_addr`, with its terminating NUL.
pub const MTMUX_ADDR_STRLEN: usize = 64;

/// Largest timeout accepted anywhere, in milliseconds (30 days). Longer values are refused
/// with `MTMUX_ERR_INVALID_ARGUMENT` (or `MTMUX_ERR_INVALID_CONFIG` in a config).
pub const MTMUX_TIMEOUT_MAX_MS: u64 = 2_592_000_000;

/// Largest `accept_backlog` a config may ask for: the queue is allocated up front.
pub const MTMUX_BACKLOG_MAX: u32 = 65536;

/// Smallest non-zero `stale_timeout_ms` of a config (shorter would call healthy tunnels
/// stale between two acknowledgements).
pub const MTMUX_STALE_TIMEOUT_MIN_MS: u64 = 20;

/// Smallest `rejoin_backoff_max_ms` of a config.
pub const MTMUX_REJOIN_BACKOFF_MIN_MS: u64 = 100;

// The C constants restate the library's limits: a change there must show here.
const _: () = assert!(MIN_STALE_TIMEOUT.as_millis() == MTMUX_STALE_TIMEOUT_MIN_MS as u128);
const _: () = assert!(MIN_REJOIN_BACKOFF.as_millis() == MTMUX_REJOIN_BACKOFF_MIN_MS as u128);

/// Why a session ended (`mtmux_session_close_reason`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtmux_close_reason {
    /// The session has not ended.
    MTMUX_CLOSE_NONE = 0,
    /// `mtmux_session_close` was called, or every handle was freed.
    MTMUX_CLOSE_LOCAL = 1,
    /// The peer closed the session.
    MTMUX_CLOSE_PEER = 2,
    /// Every tunnel failed (I/O error or keepalive timeout).
    MTMUX_CLOSE_TUNNELS_LOST = 3,
    /// The peer broke the protocol.
    MTMUX_CLOSE_PROTOCOL = 4,
    /// Every tunnel was lost and the session was not resumed in time (or the server no longer
    /// knew it).
    MTMUX_CLOSE_EXPIRED = 5,
}

/// `how` of `mtmux_stream_shutdown`: stop reading (later reads return 0, arriving data is
/// dropped).
pub const MTMUX_SHUT_READ: i32 = 0;
/// `how` of `mtmux_stream_shutdown`: half-close (same as `mtmux_stream_close_write`).
pub const MTMUX_SHUT_WRITE: i32 = 1;
/// `how` of `mtmux_stream_shutdown`: both (same as `mtmux_stream_close`).
pub const MTMUX_SHUT_BOTH: i32 = 2;

/// A failed call: its code and the detail for `mtmux_last_error`.
struct Failure {
    code: mtmux_result,
    message: String,
}

fn failure(code: mtmux_result, message: impl Into<String>) -> Failure {
    Failure { code, message: message.into() }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure { code: code_of(&e), message: e.to_string() }
    }
}

impl From<io::Error> for Failure {
    /// `Read`/`Write` on a stream return `io::Error`s that carry the mtmux error inside.
    fn from(e: io::Error) -> Failure {
        Error::from(e).into()
    }
}

/// The C code of a library error.
fn code_of(e: &Error) -> mtmux_result {
    match e {
        Error::InvalidConfig(_) => MTMUX_ERR_INVALID_CONFIG,
        Error::SessionClosed(CloseReason::Expired(_)) => MTMUX_ERR_SESSION_EXPIRED,
        Error::SessionClosed(_) => MTMUX_ERR_SESSION_CLOSED,
        Error::StreamReset { .. } => MTMUX_ERR_STREAM_RESET,
        Error::WriteClosed => MTMUX_ERR_WRITE_CLOSED,
        Error::TimedOut => MTMUX_ERR_TIMED_OUT,
        Error::ReorderTimeout { .. } => MTMUX_ERR_REORDER_TIMEOUT,
        Error::Protocol(_) => MTMUX_ERR_PROTOCOL,
        Error::TooManyStreams => MTMUX_ERR_TOO_MANY_STREAMS,
        Error::Refused(_) => MTMUX_ERR_REFUSED,
        Error::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused => MTMUX_ERR_CONNECTION_REFUSED,
            io::ErrorKind::AddrInUse => MTMUX_ERR_ADDRESS_IN_USE,
            io::ErrorKind::TimedOut => MTMUX_ERR_TIMED_OUT,
            _ => MTMUX_ERR_IO,
        },
    }
}

type Res<T> = Result<T, Failure>;

thread_local! {
    /// Detail of the last failure on this thread, returned by `mtmux_last_error`.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: String) {
    // A NUL inside the text would cut it short in C; it cannot come from our own messages.
    let c = CString::new(message.replace('\0', "?")).unwrap_or_default();
    // `try_with`: during thread teardown the slot may be gone; the code still reports.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = c);
}

/// What an exported function returns when its body fails.
trait FromFailure {
    fn from_failure(code: mtmux_result) -> Self;
}

impl FromFailure for mtmux_result {
    fn from_failure(code: mtmux_result) -> Self {
        code
    }
}

impl FromFailure for isize {
    fn from_failure(code: mtmux_result) -> Self {
        code as i32 as isize
    }
}

impl FromFailure for () {
    fn from_failure(_: mtmux_result) -> Self {}
}

impl FromFailure for *const c_char {
    fn from_failure(_: mtmux_result) -> Self {
        c"mtmux: internal error".as_ptr()
    }
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "unknown panic"
    }
}

/// The one guard around every exported function: runs `body`, turns a failure into its code
/// and the thread's last-error message (prefixed with `func`), and stops any panic here.
fn guard<R: FromFailure>(func: &str, body: impl FnOnce() -> Res<R>) -> R {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(r)) => r,
        Ok(Err(f)) => {
            set_last_error(format!("{func}: {}", f.message));
            R::from_failure(f.code)
        }
        Err(payload) => {
            set_last_error(format!("{func}: internal error (panic: {})", panic_text(&*payload)));
            R::from_failure(MTMUX_ERR_PANIC)
        }
    }
}

// ---- Checking what C passes (used only inside `unsafe` blocks of exported functions) --------

/// Borrow the object behind a handle or config pointer.
///
/// # Safety
/// `p` is NULL or points to a live `T` that no other thread frees during the call (the
/// header's contract for handles: `_free` must not race other calls on the same handle).
unsafe fn borrow<'a, T>(p: *const T, name: &str) -> Res<&'a T> {
    // Safety: forwarded from this function's contract.
    unsafe { p.as_ref() }.ok_or_else(|| failure(MTMUX_ERR_NULL, format!("{name} is NULL")))
}

/// An output pointer, checked before any work is done and written only on success.
///
/// # Safety
/// `p` is NULL or valid for writing a `T` (it may be uninitialised).
unsafe fn output<'a, T>(p: *mut T, name: &str) -> Res<&'a mut MaybeUninit<T>> {
    // Safety: `MaybeUninit<T>` has the layout of `T`; validity is this function's contract.
    unsafe { p.cast::<MaybeUninit<T>>().as_mut() }
        .ok_or_else(|| failure(MTMUX_ERR_NULL, format!("{name} is NULL")))
}

/// A NUL-terminated UTF-8 string.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays unchanged during the call.
unsafe fn utf8<'a>(p: *const c_char, name: &str) -> Res<&'a str> {
    if p.is_null() {
        return Err(failure(MTMUX_ERR_NULL, format!("{name} is NULL")));
    }
    // Safety: non-NULL and NUL-terminated by this function's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|e| failure(MTMUX_ERR_UTF8, format!("{name} is not valid UTF-8: {e}")))
}

fn check_len(len: usize, name: &str) -> Res<()> {
    if len > isize::MAX as usize {
        return Err(failure(MTMUX_ERR_INVALID_ARGUMENT, format!("{name} length {len} is too large")));
    }
    Ok(())
}

/// `len` bytes to read from; NULL is allowed only when `len` is 0.
///
/// # Safety
/// `p` is NULL or valid for reading `len` bytes that no one writes during the call.
unsafe fn bytes<'a>(p: *const u8, len: usize, name: &str) -> Res<&'a [u8]> {
    check_len(len, name)?;
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(failure(MTMUX_ERR_NULL, format!("{name} is NULL")));
    }
    // Safety: non-NULL, `len` readable bytes (this function's contract), `len` ≤ isize::MAX.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// `len` (> 0) bytes to write into.
///
/// # Safety
/// `p` is NULL or valid for writing `len` bytes that no one else accesses during the call.
unsafe fn bytes_mut<'a>(p: *mut u8, len: usize, name: &str) -> Res<&'a mut [u8]> {
    check_len(len, name)?;
    if p.is_null() {
        return Err(failure(MTMUX_ERR_NULL, format!("{name} is NULL")));
    }
    if len == 0 {
        return Err(failure(MTMUX_ERR_INVALID_ARGUMENT, format!("{name} length is 0")));
    }
    // Safety: non-NULL and `len` writable bytes by this function's contract. Memory that C
    // hands over counts as initialised bytes (as in rustls-ffi); mtmux only writes into it.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

fn timeout_ms(ms: u64, name: &str) -> Res<Duration> {
    if ms > MTMUX_TIMEOUT_MAX_MS {
        return Err(failure(
            MTMUX_ERR_INVALID_ARGUMENT,
            format!("{name} {ms} ms is above MTMUX_TIMEOUT_MAX_MS ({MTMUX_TIMEOUT_MAX_MS})"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

/// Resolve `host:port` here, so that a bad address gets its own code.
fn resolve(addr: &str) -> Res<SocketAddr> {
    let bad = |why: String| failure(MTMUX_ERR_ADDRESS, format!("bad address {addr:?}: {why}"));
    addr.to_socket_addrs()
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("it resolves to nothing".into()))
}

/// Write `addr` as a NUL-terminated string into `buf[..len]`.
///
/// # Safety
/// As [`bytes_mut`] for `buf`, `len`.
unsafe fn write_addr(addr: Option<SocketAddr>, buf: *mut c_char, len: usize) -> Res<()> {
    // Safety: forwarded from this function's contract.
    let out = unsafe { bytes_mut(buf.cast::<u8>(), len, "buf")? };
    let text = match addr {
        Some(a) => a.to_string(),
        None => return Err(failure(MTMUX_ERR_IO, "the socket has no address (it is closed)")),
    };
    if text.len() >= out.len() {
        return Err(failure(
            MTMUX_ERR_BUFFER_TOO_SMALL,
            format!("address {text} needs {} bytes, buffer has {}", text.len() + 1, out.len()),
        ));
    }
    out[..text.len()].copy_from_slice(text.as_bytes());
    out[text.len()] = 0;
    Ok(())
}

/// Put a Rust object behind a new handle.
fn new_handle<T>(out: &mut MaybeUninit<*mut T>, value: T) {
    out.write(Box::into_raw(Box::new(value)));
}

/// Drop the object behind a handle.
///
/// # Safety
/// `p` is NULL or a pointer from [`new_handle`] that is not used again.
unsafe fn free_handle<T>(p: *mut T) {
    if !p.is_null() {
        // Safety: `p` came from `Box::into_raw` and ownership returns here once.
        drop(unsafe { Box::from_raw(p) });
    }
}

// ---- Library information ---------------------------------------------------------------------

/// The library version, e.g. `"0.1.0"` (a static string).
#[no_mangle]
pub extern "C" fn mtmux_version() -> *const c_char {
    guard("mtmux_version", || Ok(concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()))
}

/// A static description of a result code (`"unknown error code"` for numbers mtmux does not
/// define). Never NULL.
#[no_mangle]
pub extern "C" fn mtmux_strerror(code: i32) -> *const c_char {
    guard("mtmux_strerror", || {
        let s: &'static CStr = match code {
            0 => c"success",
            -1 => c"a required pointer argument is NULL",
            -2 => c"invalid argument",
            -3 => c"string is not valid UTF-8",
            -4 => c"bad address",
            -5 => c"buffer too small",
            -6 => c"internal error (panic inside mtmux)",
            -10 => c"invalid configuration",
            -11 => c"session closed",
            -12 => c"listener closed",
            -13 => c"stream reset",
            -14 => c"write side of the stream is closed",
            -15 => c"timed out",
            -16 => c"reorder timeout: a frame of the stream never arrived",
            -17 => c"protocol violation by the peer",
            -18 => c"too many streams",
            -19 => c"refused by the server",
            -20 => c"connection refused",
            -21 => c"address in use",
            -22 => c"I/O error",
            -23 => c"session expired: every tunnel was lost and none came back in time",
            _ => c"unknown error code",
        };
        Ok(s.as_ptr())
    })
}

/// Detail of the last failed mtmux call on the calling thread (`""` if none has failed),
/// e.g. `"mtmux_dial: tunnel 0 to 127.0.0.1:7000: Connection refused (os error 111)"`.
/// Successful calls leave it unchanged. The string stays valid until the next failing mtmux
/// call on this thread; copy it to keep it.
#[no_mangle]
pub extern "C" fn mtmux_last_error() -> *const c_char {
    guard("mtmux_last_error", || {
        Ok(LAST_ERROR
            .try_with(|slot| slot.borrow().as_ptr())
            .unwrap_or_else(|_| c"thread is exiting".as_ptr()))
    })
}

// ---- Configuration -----------------------------------------------------------------------------

/// Configuration of a session and of the listener that accepts sessions. Initialise it with
/// `mtmux_config_init`, then change fields. Times are in milliseconds, sizes in bytes. Every
/// function taking a config validates it (`MTMUX_ERR_INVALID_CONFIG` and a message naming
/// the field); passing NULL means the defaults.
///
/// Growth: new fields are only ever appended. A config whose `size` is that of the first
/// published layout (everything up to `max_pending_handshakes`; the fields from `rejoin` on
/// came with tunnel failover) is still accepted: mtmux reads only those bytes and uses the
/// defaults for the later fields. Any other `size` than the two is refused with
/// `MTMUX_ERR_INVALID_ARGUMENT`. `mtmux_config_init` writes the whole current struct, so a
/// program built against an older header must be recompiled before it calls
/// `mtmux_config_init` with this library (the source needs no change).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct mtmux_config {
    /// `sizeof(mtmux_config)`, set by `mtmux_config_init` (lets the struct grow compatibly:
    /// see above).
    pub size: usize,
    /// TCP connections per bundle (client), or the most a bundle may have (server): 1..=256.
    /// In port-range mode the listener uses ports `port .. port + tunnels - 1`. Default 8.
    pub tunnels: u32,
    /// 1: all tunnels on one port; 0: one port per tunnel. Default 0.
    pub single_port: u32,
    /// Keepalive ping period per tunnel. Default 10000.
    pub keepalive_interval_ms: u64,
    /// A tunnel silent this long is dead; must exceed the interval. Default 30000.
    pub keepalive_timeout_ms: u64,
    /// How long a stream waits for a missing frame before failing. Default 10000.
    pub reorder_timeout_ms: u64,
    /// Time to connect and hand-shake a whole bundle. Default 10000.
    pub handshake_timeout_ms: u64,
    /// Largest DATA payload per frame, 1024..=16 MiB. Default 65536.
    pub max_frame_size: u64,
    /// Initial per-stream receive window (at least one frame + 64). Default 1 MiB.
    pub stream_window: u64,
    /// Limit of per-stream window auto-tuning (at least `stream_window`). Default 16 MiB.
    pub max_stream_window: u64,
    /// Session-wide receive buffer limit (`max_stream_window` ..= 4 GiB - 1). Default 64 MiB.
    pub session_window: u64,
    /// Most streams open at once in a session, both directions. Default 4096.
    pub max_streams: u32,
    /// Streams (and, on a listener, sessions) waiting for accept before new ones are
    /// refused, 1..=`MTMUX_BACKLOG_MAX`. Default 256.
    pub accept_backlog: u32,
    /// Listener only: most tunnels in the middle of a handshake at once. Default 128.
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
}

/// Bytes of the first published `mtmux_config` that hold fields (everything before `rejoin`).
const CONFIG_FIELDS_V1: usize = offset_of!(mtmux_config, rejoin);
/// `sizeof` of the first published `mtmux_config`: its fields rounded up to its alignment.
const CONFIG_SIZE_V1: usize = CONFIG_FIELDS_V1.next_multiple_of(align_of::<mtmux_config>());

/// Read the config C passes, of any layout `size` that mtmux accepts, as the current layout
/// (fields the caller's layout lacks take their defaults); `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to a config of `(*p).size` readable bytes (at least its `size`
/// field) that no one writes during the call.
unsafe fn read_config(p: *const mtmux_config) -> Res<Option<mtmux_config>> {
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
    if size == CONFIG_SIZE_V1 {
        let mut c = config_to_c(&Config::default());
        // Safety: the caller's struct has `CONFIG_SIZE_V1 >= CONFIG_FIELDS_V1` readable bytes
        // and `c` is a distinct local of the current layout, whose first `CONFIG_FIELDS_V1`
        // bytes hold the same fields at the same offsets. The V1 padding is not copied: in
        // the current layout it holds `rejoin`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                p.cast::<u8>(),
                std::ptr::addr_of_mut!(c).cast::<u8>(),
                CONFIG_FIELDS_V1,
            );
        }
        c.size = current;
        return Ok(Some(c));
    }
    Err(failure(
        MTMUX_ERR_INVALID_ARGUMENT,
        format!(
            "cfg->size is {size}, not sizeof(mtmux_config) = {current} (nor the earlier \
             {CONFIG_SIZE_V1}): use mtmux_config_init"
        ),
    ))
}

/// The library config of a C config of the current layout (see `read_config`).
fn config_from_c(c: Option<&mtmux_config>) -> Res<Config> {
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
        rejoin,
        stale_timeout,
        resume_timeout: ms(c.resume_timeout_ms, "resume_timeout_ms")?,
        rejoin_backoff_max: ms(c.rejoin_backoff_max_ms, "rejoin_backoff_max_ms")?,
    };
    cfg.validate()?;
    Ok(cfg)
}

fn config_to_c(c: &Config) -> mtmux_config {
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
/// `MTMUX_ERR_INVALID_CONFIG` with a message naming the field.
#[no_mangle]
pub extern "C" fn mtmux_config_validate(cfg: *const mtmux_config) -> mtmux_result {
    guard("mtmux_config_validate", || {
        if cfg.is_null() {
            return Err(failure(MTMUX_ERR_NULL, "cfg is NULL"));
        }
        // Safety: the caller passes a readable `mtmux_config` of `cfg->size` bytes.
        config_from_c(unsafe { read_config(cfg)? }.as_ref())?;
        Ok(MTMUX_OK)
    })
}

// ---- Listener ------------------------------------------------------------------------------

/// A listener accepting bundles of tunnels from clients (opaque).
pub struct mtmux_listener {
    inner: Listener,
}

/// Listen at `addr` (`"host:port"`; port 0 picks free ports): on ports `port .. port +
/// tunnels - 1`, or on `port` alone with `single_port`. `cfg` may be NULL for the defaults.
/// On success `*listener` is a new listener to release with `mtmux_listener_free`.
#[no_mangle]
pub extern "C" fn mtmux_listen(
    addr: *const c_char,
    cfg: *const mtmux_config,
    listener: *mut *mut mtmux_listener,
) -> mtmux_result {
    guard("mtmux_listen", || {
        // Safety: the caller passes a NUL-terminated string, NULL or a config of `cfg->size`
        // readable bytes, and a writable pointer (header contract).
        let (addr, cfg, out) =
            unsafe { (utf8(addr, "addr")?, read_config(cfg)?, output(listener, "listener")?) };
        let cfg = config_from_c(cfg.as_ref())?;
        let l = Listener::bind(resolve(addr)?, &cfg)?;
        new_handle(out, mtmux_listener { inner: l });
        Ok(MTMUX_OK)
    })
}

/// Wait for the next client's complete bundle; on success `*session` is a new session.
/// Fails with `MTMUX_ERR_LISTENER_CLOSED` once `mtmux_listener_close` is called (also from
/// another thread while this one waits).
#[no_mangle]
pub extern "C" fn mtmux_listener_accept(
    listener: *const mtmux_listener,
    session: *mut *mut mtmux_session,
) -> mtmux_result {
    guard("mtmux_listener_accept", || {
        // Safety: a live listener handle and a writable pointer (header contract).
        let (l, out) = unsafe { (borrow(listener, "listener")?, output(session, "session")?) };
        let s = l.inner.accept().map_err(listener_error)?;
        new_handle(out, mtmux_session { inner: s });
        Ok(MTMUX_OK)
    })
}

/// Like `mtmux_listener_accept`, waiting at most `timeout_ms` (0: do not wait), then
/// `MTMUX_ERR_TIMED_OUT`.
#[no_mangle]
pub extern "C" fn mtmux_listener_accept_timeout(
    listener: *const mtmux_listener,
    timeout_ms: u64,
    session: *mut *mut mtmux_session,
) -> mtmux_result {
    guard("mtmux_listener_accept_timeout", || {
        // Safety: a live listener handle and a writable pointer (header contract).
        let (l, out) = unsafe { (borrow(listener, "listener")?, output(session, "session")?) };
        let timeout = self::timeout_ms(timeout_ms, "timeout_ms")?;
        let s = l.inner.accept_timeout(timeout).map_err(listener_error)?;
        new_handle(out, mtmux_session { inner: s });
        Ok(MTMUX_OK)
    })
}

/// The listener reports its end as `SessionClosed`; C gets a code of its own.
fn listener_error(e: Error) -> Failure {
    match e {
        Error::SessionClosed(_) => failure(MTMUX_ERR_LISTENER_CLOSED, "the listener is closed"),
        e => e.into(),
    }
}

/// Write the listener's first address (the base of its port range), e.g.
/// `"127.0.0.1:7000"`, NUL-terminated, into `buf` of `len` bytes (`MTMUX_ADDR_STRLEN`
/// always suffices).
#[no_mangle]
pub extern "C" fn mtmux_listener_local_addr(
    listener: *const mtmux_listener,
    buf: *mut c_char,
    len: usize,
) -> mtmux_result {
    guard("mtmux_listener_local_addr", || {
        // Safety: a live listener handle and `len` writable bytes at `buf` (header contract).
        unsafe {
            let l = borrow(listener, "listener")?;
            write_addr(Some(l.inner.local_addr()), buf, len)?;
        }
        Ok(MTMUX_OK)
    })
}

/// Stop listening: a thread blocked in `mtmux_listener_accept` returns
/// `MTMUX_ERR_LISTENER_CLOSED`, handshakes in progress are refused and sessions not yet
/// accepted are closed. Sessions already accepted are not affected. Idempotent.
#[no_mangle]
pub extern "C" fn mtmux_listener_close(listener: *const mtmux_listener) -> mtmux_result {
    guard("mtmux_listener_close", || {
        // Safety: a live listener handle (header contract).
        let l = unsafe { borrow(listener, "listener")? };
        l.inner.close();
        Ok(MTMUX_OK)
    })
}

/// Close (as `mtmux_listener_close`) and release the listener. NULL is a no-op.
#[no_mangle]
pub extern "C" fn mtmux_listener_free(listener: *mut mtmux_listener) {
    guard("mtmux_listener_free", || {
        // Safety: NULL or a handle from `mtmux_listen` that the caller no longer uses.
        unsafe { free_handle(listener) };
        Ok(())
    })
}

// ---- Session -------------------------------------------------------------------------------

/// A session: one bundle of tunnels carrying many streams (opaque).
pub struct mtmux_session {
    inner: Session,
}

/// Open a bundle to the server at `addr` (`"host:port"`): `tunnels` connections to ports
/// `port .. port + tunnels - 1` (or all to `port` with `single_port`), handshake included,
/// within `handshake_timeout_ms`. `cfg` may be NULL for the defaults. On success `*session`
/// is a new session to release with `mtmux_session_free`.
#[no_mangle]
pub extern "C" fn mtmux_dial(
    addr: *const c_char,
    cfg: *const mtmux_config,
    session: *mut *mut mtmux_session,
) -> mtmux_result {
    guard("mtmux_dial", || {
        // Safety: the caller passes a NUL-terminated string, NULL or a config of `cfg->size`
        // readable bytes, and a writable pointer (header contract).
        let (addr, cfg, out) =
            unsafe { (utf8(addr, "addr")?, read_config(cfg)?, output(session, "session")?) };
        let cfg = config_from_c(cfg.as_ref())?;
        let s = crate::dial(resolve(addr)?, &cfg)?;
        new_handle(out, mtmux_session { inner: s });
        Ok(MTMUX_OK)
    })
}

/// Open a new stream (no round trip: the peer learns of it with its first data). Fails with
/// `MTMUX_ERR_TOO_MANY_STREAMS` at `max_streams` and `MTMUX_ERR_SESSION_CLOSED` once the
/// session is closing. On success `*stream` is a new stream to release with
/// `mtmux_stream_free`.
#[no_mangle]
pub extern "C" fn mtmux_session_open_stream(
    session: *const mtmux_session,
    stream: *mut *mut mtmux_stream,
) -> mtmux_result {
    guard("mtmux_session_open_stream", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(stream, "stream")?) };
        let st = s.inner.open_stream()?;
        new_handle(out, mtmux_stream { inner: st });
        Ok(MTMUX_OK)
    })
}

/// Wait for the next stream opened by the peer; on success `*stream` is a new stream. Fails
/// with `MTMUX_ERR_SESSION_CLOSED` when the session ends (also while waiting).
#[no_mangle]
pub extern "C" fn mtmux_session_accept_stream(
    session: *const mtmux_session,
    stream: *mut *mut mtmux_stream,
) -> mtmux_result {
    guard("mtmux_session_accept_stream", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(stream, "stream")?) };
        let st = s.inner.accept_stream()?;
        new_handle(out, mtmux_stream { inner: st });
        Ok(MTMUX_OK)
    })
}

/// Like `mtmux_session_accept_stream`, waiting at most `timeout_ms` (0: do not wait), then
/// `MTMUX_ERR_TIMED_OUT`.
#[no_mangle]
pub extern "C" fn mtmux_session_accept_stream_timeout(
    session: *const mtmux_session,
    timeout_ms: u64,
    stream: *mut *mut mtmux_stream,
) -> mtmux_result {
    guard("mtmux_session_accept_stream_timeout", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(stream, "stream")?) };
        let timeout = self::timeout_ms(timeout_ms, "timeout_ms")?;
        let st = s.inner.accept_stream_timeout(timeout)?;
        new_handle(out, mtmux_stream { inner: st });
        Ok(MTMUX_OK)
    })
}

/// Close the session gracefully: no new streams; blocked reads, writes and accepts on it
/// (in any thread) fail with `MTMUX_ERR_SESSION_CLOSED`; data already written is delivered;
/// then the tunnels close. Blocks until the session's threads have ended (at most about
/// `keepalive_timeout_ms`). Idempotent. The handle stays valid until freed.
#[no_mangle]
pub extern "C" fn mtmux_session_close(session: *const mtmux_session) -> mtmux_result {
    guard("mtmux_session_close", || {
        // Safety: a live session handle (header contract).
        let s = unsafe { borrow(session, "session")? };
        s.inner.close()?;
        Ok(MTMUX_OK)
    })
}

/// Release the session handle. The session itself ends when this handle and every stream
/// handle of it are freed (gracefully, without waiting), or at `mtmux_session_close`.
/// NULL is a no-op.
#[no_mangle]
pub extern "C" fn mtmux_session_free(session: *mut mtmux_session) {
    guard("mtmux_session_free", || {
        // Safety: NULL or a handle from mtmux that the caller no longer uses.
        unsafe { free_handle(session) };
        Ok(())
    })
}

/// `*closed` = 1 if the session is closing or closed (no new streams), else 0.
#[no_mangle]
pub extern "C" fn mtmux_session_is_closed(session: *const mtmux_session, closed: *mut i32) -> mtmux_result {
    guard("mtmux_session_is_closed", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(closed, "closed")?) };
        out.write(s.inner.is_closed() as i32);
        Ok(MTMUX_OK)
    })
}

/// `*reason` = why the session ended, `MTMUX_CLOSE_NONE` while it has not.
#[no_mangle]
pub extern "C" fn mtmux_session_close_reason(
    session: *const mtmux_session,
    reason: *mut mtmux_close_reason,
) -> mtmux_result {
    guard("mtmux_session_close_reason", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(reason, "reason")?) };
        out.write(match s.inner.close_reason() {
            None => mtmux_close_reason::MTMUX_CLOSE_NONE,
            Some(CloseReason::Local) => mtmux_close_reason::MTMUX_CLOSE_LOCAL,
            Some(CloseReason::Peer) => mtmux_close_reason::MTMUX_CLOSE_PEER,
            Some(CloseReason::TunnelsLost(_)) => mtmux_close_reason::MTMUX_CLOSE_TUNNELS_LOST,
            Some(CloseReason::Protocol(_)) => mtmux_close_reason::MTMUX_CLOSE_PROTOCOL,
            Some(CloseReason::Expired(_)) => mtmux_close_reason::MTMUX_CLOSE_EXPIRED,
        });
        Ok(MTMUX_OK)
    })
}

/// `*count` = streams currently open in the session (either direction).
#[no_mangle]
pub extern "C" fn mtmux_session_num_streams(
    session: *const mtmux_session,
    count: *mut usize,
) -> mtmux_result {
    guard("mtmux_session_num_streams", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(count, "count")?) };
        out.write(s.inner.num_streams());
        Ok(MTMUX_OK)
    })
}

/// `*count` = tunnels in the bundle (alive or not).
#[no_mangle]
pub extern "C" fn mtmux_session_num_tunnels(
    session: *const mtmux_session,
    count: *mut usize,
) -> mtmux_result {
    guard("mtmux_session_num_tunnels", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(count, "count")?) };
        out.write(s.inner.num_tunnels());
        Ok(MTMUX_OK)
    })
}

/// Where a tunnel slot is in its life (`mtmux_tunnel_stats.state`). A slot (its index)
/// outlives the TCP connections that fill it: each re-join starts a new generation.
///
/// ```text
///   LIVE --no acknowledgement progress for stale_timeout--> STALE --moves again--> LIVE
///   LIVE or STALE --RST / FIN / I/O error / keepalive timeout--> DEAD
///   DEAD --client re-dials--> REJOINING --accepted--> LIVE (generation + 1)
///                             REJOINING --attempt failed--> DEAD
/// ```
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtmux_tunnel_state {
    /// Carrying traffic.
    MTMUX_TUNNEL_LIVE = 0,
    /// Open, but it stopped delivering: its unacknowledged frames were re-sent on the other
    /// tunnels and it gets no new ones until it moves again.
    MTMUX_TUNNEL_STALE = 1,
    /// Lost; waiting for a re-join (or for good, where re-joining is off or impossible).
    MTMUX_TUNNEL_DEAD = 2,
    /// The client is re-dialing it.
    MTMUX_TUNNEL_REJOINING = 3,
}

fn tunnel_state_to_c(s: TunnelState) -> mtmux_tunnel_state {
    match s {
        TunnelState::Live => mtmux_tunnel_state::MTMUX_TUNNEL_LIVE,
        TunnelState::Stale => mtmux_tunnel_state::MTMUX_TUNNEL_STALE,
        TunnelState::Dead => mtmux_tunnel_state::MTMUX_TUNNEL_DEAD,
        TunnelState::Rejoining => mtmux_tunnel_state::MTMUX_TUNNEL_REJOINING,
    }
}

/// Statistics of one tunnel slot (`mtmux_session_tunnel_stats`). The counters add up over
/// the slot's generations (the connections that filled it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct mtmux_tunnel_stats {
    /// Position of the tunnel in the bundle.
    pub index: u32,
    /// 1 while the tunnel works (state `MTMUX_TUNNEL_LIVE` or `MTMUX_TUNNEL_STALE`), else 0.
    pub alive: u32,
    /// Bytes written to the socket (frame headers included).
    pub bytes_sent: u64,
    /// Bytes read from the socket.
    pub bytes_received: u64,
    /// Frames written.
    pub frames_sent: u64,
    /// Frames read.
    pub frames_received: u64,
    /// Round trip of the last answered keepalive ping in microseconds; 0 if none yet.
    pub rtt_us: u64,
    /// Where the slot is in its life.
    pub state: mtmux_tunnel_state,
    /// Which connection fills the slot: 0 for the first, one more for each re-join.
    pub generation: u32,
    /// DATA frames this side re-sent on other tunnels because this one died or went stale.
    pub frames_resent: u64,
    /// Bytes of those frames (headers included).
    pub bytes_resent: u64,
    /// How many times the slot was re-joined.
    pub rejoins: u64,
}

/// Per-tunnel statistics: writes the first `min(capacity, tunnels)` entries, in tunnel
/// order, to `stats` and the number of tunnels to `*count`. `stats` may be NULL when
/// `capacity` is 0 (to ask for the count). Any thread, concurrently with other calls on the
/// session; each entry is a snapshot of counters read one by one, not atomically together.
#[no_mangle]
pub extern "C" fn mtmux_session_tunnel_stats(
    session: *const mtmux_session,
    stats: *mut mtmux_tunnel_stats,
    capacity: usize,
    count: *mut usize,
) -> mtmux_result {
    guard("mtmux_session_tunnel_stats", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(count, "count")?) };
        if stats.is_null() && capacity > 0 {
            return Err(failure(MTMUX_ERR_NULL, "stats is NULL but capacity is not 0"));
        }
        check_len(capacity.saturating_mul(size_of::<mtmux_tunnel_stats>()), "stats")?;
        let all = s.inner.tunnel_stats();
        for (i, t) in all.iter().take(capacity).enumerate() {
            let entry = mtmux_tunnel_stats {
                index: t.index as u32,
                alive: t.alive as u32,
                bytes_sent: t.bytes_sent,
                bytes_received: t.bytes_received,
                frames_sent: t.frames_sent,
                frames_received: t.frames_received,
                rtt_us: t.rtt.map_or(0, |d| (d.as_micros() as u64).max(1)),
                state: tunnel_state_to_c(t.state),
                generation: t.generation,
                frames_resent: t.frames_resent,
                bytes_resent: t.bytes_resent,
                rejoins: t.rejoins,
            };
            // Safety: `stats` is non-NULL (checked above) with room for `capacity` entries
            // (header contract), and `i < capacity`.
            unsafe { stats.add(i).write(entry) };
        }
        out.write(all.len());
        Ok(MTMUX_OK)
    })
}

/// Write the local address of tunnel `tunnel` (0-based), e.g. `"127.0.0.1:41234"`,
/// NUL-terminated, into `buf` of `len` bytes (`MTMUX_ADDR_STRLEN` always suffices).
#[no_mangle]
pub extern "C" fn mtmux_session_local_addr(
    session: *const mtmux_session,
    tunnel: usize,
    buf: *mut c_char,
    len: usize,
) -> mtmux_result {
    guard("mtmux_session_local_addr", || {
        // Safety: a live session handle and `len` writable bytes at `buf` (header contract).
        unsafe {
            let s = borrow(session, "session")?;
            write_addr(tunnel_addr(s, tunnel, Session::local_addrs)?, buf, len)?;
        }
        Ok(MTMUX_OK)
    })
}

/// Write the peer's address of tunnel `tunnel` (0-based), NUL-terminated, into `buf` of
/// `len` bytes (`MTMUX_ADDR_STRLEN` always suffices).
#[no_mangle]
pub extern "C" fn mtmux_session_peer_addr(
    session: *const mtmux_session,
    tunnel: usize,
    buf: *mut c_char,
    len: usize,
) -> mtmux_result {
    guard("mtmux_session_peer_addr", || {
        // Safety: a live session handle and `len` writable bytes at `buf` (header contract).
        unsafe {
            let s = borrow(session, "session")?;
            write_addr(tunnel_addr(s, tunnel, Session::peer_addrs)?, buf, len)?;
        }
        Ok(MTMUX_OK)
    })
}

/// One tunnel's address from `addrs`; `None` when its socket no longer has one (closed).
fn tunnel_addr(
    s: &mtmux_session,
    tunnel: usize,
    addrs: fn(&Session) -> Vec<SocketAddr>,
) -> Res<Option<SocketAddr>> {
    let n = s.inner.num_tunnels();
    if tunnel >= n {
        return Err(failure(
            MTMUX_ERR_INVALID_ARGUMENT,
            format!("tunnel {tunnel} does not exist (the session has {n})"),
        ));
    }
    // The list skips sockets without an address, so it is only indexable when complete.
    let all = addrs(&s.inner);
    Ok((all.len() == n).then(|| all[tunnel]))
}

// ---- Session statistics and failover events ----------------------------------------------------

/// Statistics of a session as a whole (`mtmux_session_stats`; the struct has a name of its
/// own because C cannot give a type and a function the same one); per-tunnel figures come
/// from `mtmux_session_tunnel_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct mtmux_session_statistics {
    /// Tunnel slots in the bundle (as `mtmux_session_num_tunnels`).
    pub tunnels: u32,
    /// Slots whose state is `MTMUX_TUNNEL_LIVE`.
    pub live_tunnels: u32,
    /// How many times the session came back after losing every tunnel.
    pub resumes: u64,
    /// How long the current outage (no tunnel left) has lasted, in milliseconds; 0 when there
    /// is none. `in_outage` tells an outage shorter than 1 ms from none.
    pub outage_ms: u64,
    /// DATA frames this side has sent that the peer has not yet acknowledged (the replay
    /// buffer that a lost tunnel's frames are re-sent from).
    pub unacked_frames: u64,
    /// Flow-control charge of those frames in bytes (what the replay buffer holds).
    pub unacked_bytes: u64,
    /// Acknowledgement frames sent.
    pub acks_sent: u64,
    /// Bytes of those acknowledgement frames (headers included).
    pub ack_bytes_sent: u64,
    /// Re-joins this side refused (a wrong proof, a replayed or out-of-date attempt).
    pub rejoins_refused: u64,
    /// Failover events dropped because nobody read them with `mtmux_session_next_event`
    /// (a session keeps the last `MTMUX_EVENT_QUEUE` unread ones).
    pub events_dropped: u64,
    /// 1 while every tunnel is lost and the session waits up to `resume_timeout_ms` for the
    /// client to re-join, else 0.
    pub in_outage: u32,
}

/// Unread failover events a session keeps; older ones are dropped and counted in
/// `mtmux_session_statistics.events_dropped`.
pub const MTMUX_EVENT_QUEUE: u32 = 256;

const _: () = assert!(crate::EVENT_QUEUE == MTMUX_EVENT_QUEUE as usize);

/// `*stats` = the session's statistics. Any thread, concurrently with other calls on the
/// session; the counters are read one by one, not atomically together.
#[no_mangle]
pub extern "C" fn mtmux_session_stats(
    session: *const mtmux_session,
    stats: *mut mtmux_session_statistics,
) -> mtmux_result {
    guard("mtmux_session_stats", || {
        // Safety: a live session handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(session, "session")?, output(stats, "stats")?) };
        let st = s.inner.stats();
        let live = st.tunnels.iter().filter(|t| t.state == TunnelState::Live).count();
        out.write(mtmux_session_statistics {
            tunnels: st.tunnels.len() as u32,
            live_tunnels: live as u32,
            resumes: st.resumes,
            outage_ms: st.outage.map_or(0, |d| d.as_millis() as u64),
            unacked_frames: st.unacked_frames,
            unacked_bytes: st.unacked_bytes,
            acks_sent: st.acks_sent,
            ack_bytes_sent: st.ack_bytes_sent,
            rejoins_refused: st.rejoins_refused,
            events_dropped: st.events_dropped,
            in_outage: st.outage.is_some() as u32,
        });
        Ok(MTMUX_OK)
    })
}

/// What happened to a session's tunnels (`mtmux_event.kind`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtmux_event_kind {
    /// Tunnel `index` (generation `generation`) was lost; `frames_resent` of its frames were
    /// re-sent on the others, `live` tunnels remain; `reason` says how it ended.
    MTMUX_EVENT_TUNNEL_LOST = 1,
    /// Tunnel `index` stopped delivering for the stale timeout: `frames_resent` of its frames
    /// were re-sent on the others, `live` tunnels remain, and it gets no new frames until it
    /// moves again.
    MTMUX_EVENT_TUNNEL_STALE = 2,
    /// Stale tunnel `index` moved again and carries traffic again.
    MTMUX_EVENT_TUNNEL_RECOVERED = 3,
    /// Lost tunnel `index` was replaced by a new connection, generation `generation`, after
    /// `duration_ms` without one.
    MTMUX_EVENT_TUNNEL_REJOINED = 4,
    /// Every tunnel is lost: the session waits up to `duration_ms` (its resume timeout) for
    /// them to come back.
    MTMUX_EVENT_OUTAGE_STARTED = 5,
    /// A tunnel came back after every one was lost, after an outage of `duration_ms`.
    MTMUX_EVENT_RESUMED = 6,
    /// A re-dial of lost tunnel `index` failed (`reason` says why); another follows after a
    /// backoff.
    MTMUX_EVENT_REJOIN_FAILED = 7,
}

/// A failover event (`mtmux_session_next_event`). Fields a kind does not use are 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct mtmux_event {
    /// What happened.
    pub kind: mtmux_event_kind,
    /// The tunnel slot (tunnel events).
    pub index: u32,
    /// The slot's generation: the one lost, gone stale or recovered, or the new one of a
    /// re-join.
    pub generation: u32,
    /// Tunnels still live (`MTMUX_EVENT_TUNNEL_LOST`, `MTMUX_EVENT_TUNNEL_STALE`).
    pub live: u32,
    /// DATA frames re-sent on other tunnels because of it (`_TUNNEL_LOST`, `_TUNNEL_STALE`).
    pub frames_resent: u64,
    /// Milliseconds: the slot's time without a connection (`_TUNNEL_REJOINED`), the resume
    /// timeout (`_OUTAGE_STARTED`), the outage's length (`_RESUMED`).
    pub duration_ms: u64,
    /// Length in bytes (without the NUL) of the whole reason text (`_TUNNEL_LOST`, e.g.
    /// `"connection reset"`, and `_REJOIN_FAILED`), even when the caller's buffer held less
    /// of it.
    pub reason_len: usize,
}

/// Wait at most `timeout_ms` (0: do not wait) for the session's next failover event and
/// write it to `*event`. The reason text of a lost tunnel or a failed re-dial goes
/// NUL-terminated into `reason` of `reason_cap` bytes, cut to fit at a UTF-8 character
/// boundary (it was cut when `event->reason_len >= reason_cap`); events without a reason
/// write `""`. With `reason_cap` 0 no text is written and `reason` may be NULL.
///
/// Returns `MTMUX_OK`; `MTMUX_ERR_TIMED_OUT` when no event came in time; once the session
/// has ended and every event was read, `MTMUX_ERR_SESSION_CLOSED` (or
/// `MTMUX_ERR_SESSION_EXPIRED`). The session queues events whether or not anyone reads them
/// (the last `MTMUX_EVENT_QUEUE`; older ones are counted in `events_dropped`). Any thread;
/// several threads may wait at once, and each event goes to one of them.
#[no_mangle]
pub extern "C" fn mtmux_session_next_event(
    session: *const mtmux_session,
    timeout_ms: u64,
    event: *mut mtmux_event,
    reason: *mut c_char,
    reason_cap: usize,
) -> mtmux_result {
    guard("mtmux_session_next_event", || {
        // Safety: a live session handle, a writable pointer and `reason_cap` writable bytes
        // at `reason` (header contract).
        let (s, out, text) = unsafe {
            let s = borrow(session, "session")?;
            let out = output(event, "event")?;
            let text = if reason_cap == 0 {
                None
            } else {
                Some(bytes_mut(reason.cast::<u8>(), reason_cap, "reason")?)
            };
            (s, out, text)
        };
        let timeout = self::timeout_ms(timeout_ms, "timeout_ms")?;
        let Some(e) = s.inner.next_event(timeout) else {
            if s.inner.is_closed() {
                let why = s.inner.close_reason().unwrap_or(CloseReason::Local);
                return Err(Error::SessionClosed(why).into());
            }
            return Err(Error::TimedOut.into());
        };
        let (c, why) = event_to_c(&e);
        if let Some(buf) = text {
            let mut n = why.len().min(buf.len() - 1);
            while !why.is_char_boundary(n) {
                n -= 1;
            }
            buf[..n].copy_from_slice(&why.as_bytes()[..n]);
            buf[n] = 0;
        }
        out.write(c);
        Ok(MTMUX_OK)
    })
}

/// The C form of an event, and its reason text (`""` for kinds without one).
fn event_to_c(e: &Event) -> (mtmux_event, &str) {
    use mtmux_event_kind::*;
    let ms = |d: &Duration| d.as_millis() as u64;
    let blank = |kind| mtmux_event {
        kind,
        index: 0,
        generation: 0,
        live: 0,
        frames_resent: 0,
        duration_ms: 0,
        reason_len: 0,
    };
    match e {
        Event::TunnelLost { index, generation, reason, frames_resent, live } => (
            mtmux_event {
                index: *index as u32,
                generation: *generation,
                live: *live as u32,
                frames_resent: *frames_resent,
                reason_len: reason.len(),
                ..blank(MTMUX_EVENT_TUNNEL_LOST)
            },
            reason,
        ),
        Event::TunnelStale { index, generation, frames_resent, live } => (
            mtmux_event {
                index: *index as u32,
                generation: *generation,
                live: *live as u32,
                frames_resent: *frames_resent,
                ..blank(MTMUX_EVENT_TUNNEL_STALE)
            },
            "",
        ),
        Event::TunnelRecovered { index, generation } => (
            mtmux_event {
                index: *index as u32,
                generation: *generation,
                ..blank(MTMUX_EVENT_TUNNEL_RECOVERED)
            },
            "",
        ),
        Event::TunnelRejoined { index, generation, after } => (
            mtmux_event {
                index: *index as u32,
                generation: *generation,
                duration_ms: ms(after),
                ..blank(MTMUX_EVENT_TUNNEL_REJOINED)
            },
            "",
        ),
        Event::OutageStarted { resume_for } => {
            (mtmux_event { duration_ms: ms(resume_for), ..blank(MTMUX_EVENT_OUTAGE_STARTED) }, "")
        }
        Event::Resumed { after } => {
            (mtmux_event { duration_ms: ms(after), ..blank(MTMUX_EVENT_RESUMED) }, "")
        }
        Event::RejoinFailed { index, error } => (
            mtmux_event { index: *index as u32, reason_len: error.len(), ..blank(MTMUX_EVENT_REJOIN_FAILED) },
            error,
        ),
    }
}

// ---- Stream --------------------------------------------------------------------------------

/// A bidirectional byte stream of a session (opaque).
pub struct mtmux_stream {
    inner: Stream,
}

/// Read up to `len` (> 0) bytes into `buf`. Blocks until at least one byte is available,
/// the peer half-closes, or the read timeout expires. Returns the number of bytes read, 0 at
/// end of stream (the peer closed its write side, or this stream was closed), or a negative
/// `mtmux_result` (e.g. `MTMUX_ERR_STREAM_RESET`, `MTMUX_ERR_TIMED_OUT`,
/// `MTMUX_ERR_SESSION_CLOSED`).
#[no_mangle]
pub extern "C" fn mtmux_stream_read(stream: *const mtmux_stream, buf: *mut c_void, len: usize) -> isize {
    guard("mtmux_stream_read", || {
        // Safety: a live stream handle and `len` writable bytes at `buf` (header contract).
        let (s, buf) = unsafe { (borrow(stream, "stream")?, bytes_mut(buf.cast(), len, "buf")?) };
        Ok((&s.inner).read(buf)? as isize)
    })
}

/// Write up to `len` (> 0) bytes from `buf`. Blocks while the peer's receive window is
/// full, up to the write timeout. Returns the number of bytes accepted (all of them unless
/// the write timeout expired part-way) or a negative `mtmux_result` (e.g.
/// `MTMUX_ERR_WRITE_CLOSED`, `MTMUX_ERR_STREAM_RESET`, `MTMUX_ERR_TIMED_OUT`).
#[no_mangle]
pub extern "C" fn mtmux_stream_write(stream: *const mtmux_stream, buf: *const c_void, len: usize) -> isize {
    guard("mtmux_stream_write", || {
        // Safety: a live stream handle and `len` readable bytes at `buf` (header contract).
        let (s, buf) = unsafe { (borrow(stream, "stream")?, bytes(buf.cast(), len, "buf")?) };
        if buf.is_empty() {
            return Err(failure(MTMUX_ERR_INVALID_ARGUMENT, "len is 0"));
        }
        Ok((&s.inner).write(buf)? as isize)
    })
}

/// Write all `len` bytes from `buf` (`len` may be 0, then `buf` may be NULL). On failure
/// part of the data may have been sent.
#[no_mangle]
pub extern "C" fn mtmux_stream_write_all(
    stream: *const mtmux_stream,
    buf: *const c_void,
    len: usize,
) -> mtmux_result {
    guard("mtmux_stream_write_all", || {
        // Safety: a live stream handle and `len` readable bytes at `buf` (header contract).
        let (s, buf) = unsafe { (borrow(stream, "stream")?, bytes(buf.cast(), len, "buf")?) };
        (&s.inner).write_all(buf)?;
        Ok(MTMUX_OK)
    })
}

/// Half-close: the peer reads end of stream after all data written so far. Later writes
/// fail with `MTMUX_ERR_WRITE_CLOSED` (a write blocked in another thread wakes up with it);
/// reading continues. Idempotent.
#[no_mangle]
pub extern "C" fn mtmux_stream_close_write(stream: *const mtmux_stream) -> mtmux_result {
    guard("mtmux_stream_close_write", || {
        // Safety: a live stream handle (header contract).
        let s = unsafe { borrow(stream, "stream")? };
        s.inner.close_write()?;
        Ok(MTMUX_OK)
    })
}

/// Close both directions: end of stream to the peer after the data written so far, and no
/// more reading (a read blocked in another thread returns 0). Never blocks. Idempotent.
#[no_mangle]
pub extern "C" fn mtmux_stream_close(stream: *const mtmux_stream) -> mtmux_result {
    guard("mtmux_stream_close", || {
        // Safety: a live stream handle (header contract).
        let s = unsafe { borrow(stream, "stream")? };
        s.inner.close()?;
        Ok(MTMUX_OK)
    })
}

/// Shut down the reading side (`MTMUX_SHUT_READ`), the writing side (`MTMUX_SHUT_WRITE`) or
/// both (`MTMUX_SHUT_BOTH`), like `shutdown(2)`.
#[no_mangle]
pub extern "C" fn mtmux_stream_shutdown(stream: *const mtmux_stream, how: i32) -> mtmux_result {
    guard("mtmux_stream_shutdown", || {
        // Safety: a live stream handle (header contract).
        let s = unsafe { borrow(stream, "stream")? };
        let how = match how {
            MTMUX_SHUT_READ => Shutdown::Read,
            MTMUX_SHUT_WRITE => Shutdown::Write,
            MTMUX_SHUT_BOTH => Shutdown::Both,
            v => {
                return Err(failure(MTMUX_ERR_INVALID_ARGUMENT, format!("how must be MTMUX_SHUT_*, got {v}")))
            }
        };
        s.inner.shutdown(how)?;
        Ok(MTMUX_OK)
    })
}

/// Abort the stream: queued data is dropped; reads and writes here and at the peer fail
/// with `MTMUX_ERR_STREAM_RESET` (a write blocked in another thread wakes up).
#[no_mangle]
pub extern "C" fn mtmux_stream_reset(stream: *const mtmux_stream) -> mtmux_result {
    guard("mtmux_stream_reset", || {
        // Safety: a live stream handle (header contract).
        let s = unsafe { borrow(stream, "stream")? };
        s.inner.reset()?;
        Ok(MTMUX_OK)
    })
}

/// Bound later reads to `timeout_ms` each (0: block indefinitely, the default); a read
/// that times out returns `MTMUX_ERR_TIMED_OUT`.
#[no_mangle]
pub extern "C" fn mtmux_stream_set_read_timeout(
    stream: *const mtmux_stream,
    timeout_ms: u64,
) -> mtmux_result {
    guard("mtmux_stream_set_read_timeout", || {
        // Safety: a live stream handle (header contract).
        let s = unsafe { borrow(stream, "stream")? };
        let t = self::timeout_ms(timeout_ms, "timeout_ms")?;
        s.inner.set_read_timeout((!t.is_zero()).then_some(t))?;
        Ok(MTMUX_OK)
    })
}

/// Bound later writes to `timeout_ms` each (0: block indefinitely, the default).
#[no_mangle]
pub extern "C" fn mtmux_stream_set_write_timeout(
    stream: *const mtmux_stream,
    timeout_ms: u64,
) -> mtmux_result {
    guard("mtmux_stream_set_write_timeout", || {
        // Safety: a live stream handle (header contract).
        let s = unsafe { borrow(stream, "stream")? };
        let t = self::timeout_ms(timeout_ms, "timeout_ms")?;
        s.inner.set_write_timeout((!t.is_zero()).then_some(t))?;
        Ok(MTMUX_OK)
    })
}

/// `*timeout_ms` = the read timeout (0: none).
#[no_mangle]
pub extern "C" fn mtmux_stream_read_timeout(
    stream: *const mtmux_stream,
    timeout_ms: *mut u64,
) -> mtmux_result {
    guard("mtmux_stream_read_timeout", || {
        // Safety: a live stream handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(stream, "stream")?, output(timeout_ms, "timeout_ms")?) };
        out.write(s.inner.read_timeout().map_or(0, |d| d.as_millis() as u64));
        Ok(MTMUX_OK)
    })
}

/// `*timeout_ms` = the write timeout (0: none).
#[no_mangle]
pub extern "C" fn mtmux_stream_write_timeout(
    stream: *const mtmux_stream,
    timeout_ms: *mut u64,
) -> mtmux_result {
    guard("mtmux_stream_write_timeout", || {
        // Safety: a live stream handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(stream, "stream")?, output(timeout_ms, "timeout_ms")?) };
        out.write(s.inner.write_timeout().map_or(0, |d| d.as_millis() as u64));
        Ok(MTMUX_OK)
    })
}

/// `*id` = the stream id (odd: opened by the client, even: by the server).
#[no_mangle]
pub extern "C" fn mtmux_stream_id(stream: *const mtmux_stream, id: *mut u32) -> mtmux_result {
    guard("mtmux_stream_id", || {
        // Safety: a live stream handle and a writable pointer (header contract).
        let (s, out) = unsafe { (borrow(stream, "stream")?, output(id, "id")?) };
        out.write(s.inner.id());
        Ok(MTMUX_OK)
    })
}

/// Close the stream (as `mtmux_stream_close`) and release the handle. NULL is a no-op.
#[no_mangle]
pub extern "C" fn mtmux_stream_free(stream: *mut mtmux_stream) {
    guard("mtmux_stream_free", || {
        // Safety: NULL or a handle from mtmux that the caller no longer uses.
        unsafe { free_handle(stream) };
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_may_be_shared_between_c_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<mtmux_listener>();
        shareable::<mtmux_session>();
        shareable::<mtmux_stream>();
    }

    #[test]
    fn every_code_has_its_own_message() {
        let codes = [
            MTMUX_OK,
            MTMUX_ERR_NULL,
            MTMUX_ERR_INVALID_ARGUMENT,
            MTMUX_ERR_UTF8,
            MTMUX_ERR_ADDRESS,
            MTMUX_ERR_BUFFER_TOO_SMALL,
            MTMUX_ERR_PANIC,
            MTMUX_ERR_INVALID_CONFIG,
            MTMUX_ERR_SESSION_CLOSED,
            MTMUX_ERR_LISTENER_CLOSED,
            MTMUX_ERR_STREAM_RESET,
            MTMUX_ERR_WRITE_CLOSED,
            MTMUX_ERR_TIMED_OUT,
            MTMUX_ERR_REORDER_TIMEOUT,
            MTMUX_ERR_PROTOCOL,
            MTMUX_ERR_TOO_MANY_STREAMS,
            MTMUX_ERR_REFUSED,
            MTMUX_ERR_CONNECTION_REFUSED,
            MTMUX_ERR_ADDRESS_IN_USE,
            MTMUX_ERR_IO,
            MTMUX_ERR_SESSION_EXPIRED,
        ];
        let unknown = mtmux_strerror(1);
        let mut seen = std::collections::HashSet::new();
        for c in codes {
            let p = mtmux_strerror(c as i32);
            assert_ne!(p, unknown, "{c:?} has no message");
            // Safety: mtmux_strerror returns static NUL-terminated strings.
            assert!(seen.insert(unsafe { CStr::from_ptr(p) }), "{c:?} shares its message");
        }
    }

    #[test]
    fn a_panic_becomes_a_code_and_a_message() {
        let r: mtmux_result = guard("test_fn", || panic!("boom"));
        assert_eq!(r, MTMUX_ERR_PANIC);
        // Safety: mtmux_last_error returns a valid NUL-terminated string.
        let msg = unsafe { CStr::from_ptr(mtmux_last_error()) }.to_str().unwrap().to_owned();
        assert!(msg.contains("test_fn") && msg.contains("boom"), "{msg}");
    }

    #[test]
    fn config_round_trips_through_c() {
        let c = config_to_c(&Config::default());
        assert_eq!(config_from_c(Some(&c)).ok(), Some(Config::default()));
        let custom = Config {
            rejoin: false,
            stale_timeout: Some(Duration::from_millis(300)),
            resume_timeout: Duration::ZERO,
            rejoin_backoff_max: Duration::from_millis(700),
            ..Config::default()
        };
        assert_eq!(config_from_c(Some(&config_to_c(&custom))).ok(), Some(custom));
    }

    #[test]
    fn a_config_of_the_first_layout_gets_the_new_defaults() {
        // What a program built against the first header passes: its struct ends before
        // `rejoin`; the bytes after it are not the caller's.
        let mut v1 = MaybeUninit::<mtmux_config>::uninit();
        let mut c = config_to_c(&Config { tunnels: 3, ..Config::default() });
        c.size = CONFIG_SIZE_V1;
        // Safety: `v1` has room for a whole `mtmux_config`: garbage after the V1 fields
        // (`rejoin` = 0xA5A5A5A5 would be refused if read), then only the V1 bytes of `c`.
        unsafe {
            v1.as_mut_ptr().cast::<u8>().write_bytes(0xA5, size_of::<mtmux_config>());
            std::ptr::copy_nonoverlapping(
                std::ptr::addr_of!(c).cast::<u8>(),
                v1.as_mut_ptr().cast::<u8>(),
                CONFIG_FIELDS_V1,
            );
        }
        // Safety: `v1` holds a config of `CONFIG_SIZE_V1` bytes.
        let read = unsafe { read_config(v1.as_ptr()) }.ok().flatten().unwrap();
        assert_eq!(config_from_c(Some(&read)).ok(), Some(Config { tunnels: 3, ..Config::default() }));
    }
}
