//! The pure protocol core: plain data structures with no sockets, threads or clocks
//! (time is passed in). The session's threads only move bytes between sockets and these.

pub mod bundle;
pub mod ids;
pub mod reorder;
pub mod rtt;
pub mod sched;
pub mod window;
