//! SIGTERM and SIGINT: the first starts a graceful drain, the second exits at once.
//!
//! A drain stops accepting (the tunnel listener, local and reverse listeners), lets the
//! streams in progress finish for at most `--drain-timeout`, then closes the sessions and
//! exits 0. The drain itself belongs to each subcommand; this module delivers the signals,
//! says whether a drain has started ([`draining`]) so that accept loops whose listener was
//! shut down stop quietly, and waits for streams to finish ([`wait_drained`]).

use crate::{spawn, Fatal};
use log::{info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use socket2::SockRef;
use std::net::{Shutdown, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static DRAINING: AtomicBool = AtomicBool::new(false);

/// Whether a drain has started.
pub fn draining() -> bool {
    DRAINING.load(Ordering::SeqCst)
}

/// Handle SIGTERM and SIGINT from now on: the first runs `on_drain` (on the signal thread),
/// the second exits the process at once with status 128 + the signal.
pub fn install(on_drain: impl FnOnce() + Send + 'static) -> Result<(), Fatal> {
    let mut signals =
        Signals::new([SIGTERM, SIGINT]).map_err(|e| Fatal::new(format!("cannot handle signals: {e}")))?;
    spawn("signals", move || {
        let mut on_drain = Some(on_drain);
        for sig in signals.forever() {
            let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
            match on_drain.take() {
                Some(f) => {
                    DRAINING.store(true, Ordering::SeqCst);
                    info!("{name}: draining (no new connections; streams in progress may finish); {name} again exits at once");
                    f();
                }
                None => {
                    warn!("{name} again: exiting now");
                    std::process::exit(128 + sig);
                }
            }
        }
    });
    Ok(())
}

/// Stop a TCP listener accepting: on Linux, shutting a listening socket down closes its
/// queue (new connections are refused) and wakes a thread blocked in `accept` with an error.
pub fn shut_listener(l: &TcpListener) {
    let _ = SockRef::from(l).shutdown(Shutdown::Both);
}

/// Wait until `busy()` (streams still carried) is 0 or `timeout` has passed; true when
/// everything finished. Logs progress every few seconds.
pub fn wait_drained(timeout: Duration, busy: impl Fn() -> usize) -> bool {
    let deadline = Instant::now() + timeout;
    let mut next_line = Instant::now();
    loop {
        let n = busy();
        if n == 0 {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            warn!("drain timeout ({timeout:?}): closing with {n} stream(s) still open");
            return false;
        }
        if now >= next_line {
            info!("draining: {n} stream(s) still open, waiting up to {:?}", deadline - now);
            next_line = now + Duration::from_secs(5);
        }
        std::thread::sleep(Duration::from_millis(20).min(deadline - now));
    }
}
