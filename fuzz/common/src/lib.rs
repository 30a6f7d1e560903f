//! Shared pieces of the fuzz targets: models written from docs/PROTOCOL.md (independently of
//! the library's code, so that a target compares two readings of the spec), the whole-session
//! harness and the seed corpora.

pub mod model;
pub mod seeds;
pub mod session;
