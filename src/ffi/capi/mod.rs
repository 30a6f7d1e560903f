//! The C ABI of mtmux (`libmtmux.so` / `libmtmux.a`, header `include/mtmux.h`).
//!
//! `cbindgen` generates the header from this module and its files (`make header`): this
//! file holds the boundary's shared pieces (result codes, checks of what C passes, the
//! guard), `config`, `listener`, `session`, `events` and `stream` the exports of each
//! handle; every item C sees carries the documentation C programmers read. The rules of the boundary
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
    /// that of an earlier published layout).
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
    /// The stream limit is reached: here (`mtmux_session_open_stream` at `max_streams`), or
    /// at the peer, which turned the stream away (its first read or write after the peer's
    /// answer fails with this code).
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
    /// Authentication failed: the peer has another pre-shared key, or none while this side
    /// has one (or the reverse), or its TLS certificate could not be verified; the message
    /// says which.
    MTMUX_ERR_AUTH = -24,
}

use mtmux_result::*;

/// Buffer size that always holds an address written by `mtmux_listener_local_addr`,
/// `mtmux_session_local_addr` or `mtmux_session_peer_addr`, with its terminating NUL.
pub const MTMUX_ADDR_STRLEN: usize = 64;

/// Largest timeout accepted anywhere, in milliseconds (30 days). Longer values are refused
/// with `MTMUX_ERR_INVALID_ARGUMENT` (or `MTMUX_ERR_INVALID_CONFIG` in a config).
// The `_u64` suffixes of the millisecond constants give them a `ull` suffix in C, so that
// they have the type of the `uint64_t` fields they bound (2592000000 overflows a 32-bit int).
pub const MTMUX_TIMEOUT_MAX_MS: u64 = 2_592_000_000_u64;

/// Largest `accept_backlog` (and `max_pending_handshakes`) a config may ask for: the queues
/// are allocated up front.
pub const MTMUX_BACKLOG_MAX: u32 = 65536;

/// Smallest non-zero `stale_timeout_ms` of a config (shorter would call healthy tunnels
/// stale between two acknowledgements).
pub const MTMUX_STALE_TIMEOUT_MIN_MS: u64 = 20_u64;

/// Smallest `rejoin_backoff_max_ms` of a config.
pub const MTMUX_REJOIN_BACKOFF_MIN_MS: u64 = 100_u64;

/// Shortest pre-shared key (`mtmux_config.key_len`), in bytes.
pub const MTMUX_KEY_MIN_LEN: usize = 16;

/// Longest pre-shared key (`mtmux_config.key_len`), in bytes.
pub const MTMUX_KEY_MAX_LEN: usize = 1024;

// The C constants restate the library's limits: a change there must show here.
const _: () = assert!(MIN_STALE_TIMEOUT.as_millis() == MTMUX_STALE_TIMEOUT_MIN_MS as u128);
const _: () = assert!(crate::MIN_KEY_LEN == MTMUX_KEY_MIN_LEN && crate::MAX_KEY_LEN == MTMUX_KEY_MAX_LEN);
const _: () = assert!(MIN_REJOIN_BACKOFF.as_millis() == MTMUX_REJOIN_BACKOFF_MIN_MS as u128);
const _: () = assert!(crate::config::MAX_QUEUE == MTMUX_BACKLOG_MAX as usize);
const _: () = assert!(crate::config::MAX_DURATION.as_millis() == MTMUX_TIMEOUT_MAX_MS as u128);

/// Why a session ended (`mtmux_session_close_reason`).
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum mtmux_close_reason {
    /// The session is open (it has not begun to close).
    MTMUX_CLOSE_NONE = 0,
    /// `mtmux_session_close` was called, or every handle was freed.
    MTMUX_CLOSE_LOCAL = 1,
    /// The peer closed the session (from the moment its close is known here).
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
        Error::Auth(_) => MTMUX_ERR_AUTH,
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
    Ok(resolve_all(addr)?[0])
}

/// Every address `host:port` resolves to, in the resolver's order (at least one).
fn resolve_all(addr: &str) -> Res<Vec<SocketAddr>> {
    let bad = |why: String| failure(MTMUX_ERR_ADDRESS, format!("bad address {addr:?}: {why}"));
    let all: Vec<SocketAddr> = addr.to_socket_addrs().map_err(|e| bad(e.to_string()))?.collect();
    if all.is_empty() {
        return Err(bad("it resolves to nothing".into()));
    }
    Ok(all)
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
            -24 => c"authentication failed (pre-shared key or TLS certificate)",
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

mod config;
mod events;
mod listener;
mod session;
mod stream;
mod tls;

pub use config::*;
pub use events::*;
pub use listener::*;
pub use session::*;
pub use stream::*;

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
            MTMUX_ERR_AUTH,
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
        assert_eq!(config_from_c(Some(&c), tls::Use::Check).ok(), Some(Config::default()));
        let custom = Config {
            rejoin: false,
            stale_timeout: Some(Duration::from_millis(300)),
            resume_timeout: Duration::ZERO,
            rejoin_backoff_max: Duration::from_millis(700),
            max_handshakes_per_source: Some(12),
            ..Config::default()
        };
        assert_eq!(config_from_c(Some(&config_to_c(&custom)), tls::Use::Check).ok(), Some(custom));
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
        assert_eq!(
            config_from_c(Some(&read), tls::Use::Check).ok(),
            Some(Config { tunnels: 3, ..Config::default() })
        );
    }

    #[test]
    fn a_config_of_the_layout_before_tls_reads_no_tls_fields() {
        // A program built against the header that ended with `max_handshakes_per_source`: the
        // bytes after it (where `tls_cert_file` now is) are not the caller's and must not be
        // read.
        let mut v2 = MaybeUninit::<mtmux_config>::uninit();
        let mut c = config_to_c(&Config { tunnels: 5, ..Config::default() });
        c.size = CONFIG_SIZE_V2;
        // Safety: `v2` has room for a whole `mtmux_config`: garbage (non-NULL `tls_`
        // pointers if read), then the V2 bytes of `c`.
        unsafe {
            v2.as_mut_ptr().cast::<u8>().write_bytes(0xA5, size_of::<mtmux_config>());
            std::ptr::copy_nonoverlapping(
                std::ptr::addr_of!(c).cast::<u8>(),
                v2.as_mut_ptr().cast::<u8>(),
                CONFIG_FIELDS_V2,
            );
        }
        // Safety: `v2` holds a config of `CONFIG_SIZE_V2` bytes.
        let read = unsafe { read_config(v2.as_ptr()) }.ok().flatten().unwrap();
        assert!(read.tls_cert_file.is_null() && read.tls_server_name.is_null());
        let want = Config { tunnels: 5, ..Config::default() };
        assert_eq!(config_from_c(Some(&read), tls::Use::Check).ok(), Some(want));
    }
}
