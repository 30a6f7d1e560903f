//! Everything that crosses a foreign-function boundary, and the only place with `unsafe`:
//! - [`sys`]: calls into libc for the socket options and calls `std::net` lacks;
//! - `capi`: the C ABI exported as `libmtmux` (see `include/mtmux.h`).
#![allow(unsafe_code)]

pub mod capi;
pub mod sys;
