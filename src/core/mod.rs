//! The pure protocol core: plain data structures with no sockets, threads or clocks
//! (time is passed in). The session's threads only move bytes between sockets and these.

pub mod accept_order;
pub mod ack;
pub mod backoff;
pub mod bundle;
pub mod dedup;
pub mod ids;
pub mod path;
pub mod reorder;
pub mod replay;
pub mod rtt;
pub mod sched;
#[cfg(test)]
mod sim;
pub mod window;
