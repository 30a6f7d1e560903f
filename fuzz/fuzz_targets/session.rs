//! Whole session: arbitrary bytes as the peer's side of a tunnel into a real server
//! `mtmux::Session` over loopback TCP (see `mtmux_fuzz::session` for the harness and what it
//! checks). The input follows a valid JOIN HELLO unless it starts with the magic `MTMX`, in
//! which case the handshake itself is the input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    mtmux_fuzz::session::run(data);
});
