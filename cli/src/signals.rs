//! SIGTERM and SIGINT: the first starts a graceful drain, the second exits at once.
//!
//! The drain itself belongs to each subcommand; this module only tells when it starts
//! ([`wait`]) and whether it has ([`draining`]), so that accept loops that fail because
//! their listener was shut down stop quietly.

use std::sync::atomic::{AtomicBool, Ordering};

static DRAINING: AtomicBool = AtomicBool::new(false);

/// Whether a drain has started.
pub fn draining() -> bool {
    DRAINING.load(Ordering::SeqCst)
}
