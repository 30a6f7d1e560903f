//! # mtmux: many streams over a bundle of TCP connections
//!
//! mtmux multiplexes many logical byte streams over **several TCP connections at once**
//! ("tunnels"). Each stream's data is cut into frames that travel over all tunnels of a
//! session and are put back in order at the other end, so one stream can use the bandwidth of
//! many TCP connections, and many streams share the same tunnels.
//!
//! ```no_run
//! use std::io::{Read, Write};
//! # fn main() -> Result<(), mtmux::Error> {
//! let cfg = mtmux::Config { tunnels: 4, ..Default::default() };
//! // Server: listens on ports 7000..=7003, one per tunnel.
//! let listener = mtmux::Listener::bind("127.0.0.1:7000", &cfg)?;
//! std::thread::spawn(move || -> Result<(), mtmux::Error> {
//!     let session = listener.accept()?;
//!     let mut stream = session.accept_stream()?;
//!     let mut msg = String::new();
//!     stream.read_to_string(&mut msg)?;
//!     stream.write_all(format!("hello, {msg}").as_bytes())?;
//!     Ok(())
//! });
//! // Client
//! let session = mtmux::dial("127.0.0.1:7000", &cfg)?;
//! let mut stream = session.open_stream()?;
//! stream.write_all(b"world")?;
//! stream.close_write()?;
//! let mut reply = String::new();
//! stream.read_to_string(&mut reply)?;
//! assert_eq!(reply, "hello, world");
//! # Ok(()) }
//! ```
//!
//! The layout follows "pure core, thin I/O": [`proto`] (codec, handshake) and [`core`]
//! (reorder buffer, windows, ids, scheduler, bundle assembly) are plain data structures;
//! `session` and `listener` hold the threads and sockets; `wire` is the transport under each
//! tunnel (plain TCP, or TLS 1.3 with the cargo feature `tls`: see `tls`).
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod config;
pub mod core;
mod error;
pub mod ffi;
mod key;
mod listener;
pub mod proto;
mod session;
#[cfg(feature = "tls")]
pub mod tls;
mod wire;

pub use config::{Config, MAX_TUNNELS, MIN_REJOIN_BACKOFF, MIN_STALE_TIMEOUT};
pub use error::{CloseReason, Error, ResetCode, Result};
pub use key::{Key, MAX_KEY_LEN, MIN_KEY_LEN};
pub use listener::{dial, IncomingSessions, Listener, Refusal, REFUSAL_QUEUE};
pub use session::{
    Event, IncomingStreams, Session, SessionStats, Stream, TunnelState, TunnelStats, EVENT_QUEUE,
};
