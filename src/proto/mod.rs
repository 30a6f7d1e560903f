//! The wire protocol: frame codec and tunnel handshake (pure encode/decode).
//! `docs/PROTOCOL.md` is the specification.

pub mod auth;
pub mod frame;
pub mod handshake;
