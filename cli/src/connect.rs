//! `mtmux connect --stdio SERVER FORWARD`: standard input and output as one stream of
//! forward FORWARD, for ssh's `ProxyCommand` and scripts.
//!
//! stdin → stream, then the stream is half-closed (the server's target sees the end); the
//! stream → stdout, then stdout is closed. The command exits when both directions have
//! ended: 0 when both ended cleanly, 1 when the stream, the session or a standard descriptor
//! failed (the stream is then reset, so the target sees a failure, not a clean end).

use crate::args::ConnectArgs;
use crate::forward;
use crate::security::{load_key, KEY_ENV};
use crate::{validated, Fatal};
use log::{debug, warn};
use mtmux::{Config, Stream};
use std::io::{self, Read, Write};
use std::sync::{mpsc, Arc};

const BUF_SIZE: usize = 64 * 1024;

/// Run the command; returns when both directions are done. `file`: the `--config` file (its
/// keys are flags already; it names where a bad value came from).
pub fn run(a: ConnectArgs, file: Option<&crate::config::File>) -> Result<(), Fatal> {
    forward::check_name(&a.forward).map_err(Fatal::usage)?;
    let key = load_key(a.key.key_file.as_deref(), std::env::var_os(KEY_ENV))?;
    let cfg = validated(Config { key: key.key, ..a.failover.apply(a.tunnel.config(16)) }, file)?;
    for w in &key.warnings {
        warn!("{w}");
    }
    let session =
        mtmux::dial(&a.server, &cfg).map_err(|e| Fatal::new(crate::client::dial_failure(&a.server, &e)))?;
    let stream = session
        .open_stream()
        .map_err(|e| Fatal::new(format!("cannot open a stream to {}: {e}", a.server)))?;
    forward::write_header(&stream, &a.forward)
        .map_err(|e| Fatal::new(format!("cannot send the forward header: {}", mtmux::Error::from(e))))?;
    debug!(
        "session up ({} tunnels), stream {} for forward {:?}",
        session.num_tunnels(),
        stream.id(),
        a.forward
    );
    let outcome = carry(Arc::new(stream), io::stdin(), io::stdout());
    // Let the last frames (and the half-close) leave before the session is closed.
    let _ = session.close();
    match outcome {
        None => Ok(()),
        Some(e) => Err(Fatal::new(format!("forward {:?} via {}: {e}", a.forward, a.server))),
    }
}

/// Copy `input` → `stream` (then half-close it) and `stream` → `output` (then drop it, closing
/// it) until both are done, or until the first failure, which is returned at once (the copy
/// from `input` may still be blocked in a read: it is left to the process's exit).
pub fn carry(
    stream: Arc<Stream>,
    input: impl Read + Send + 'static,
    output: impl Write + Send + 'static,
) -> Option<String> {
    let (tx, rx) = mpsc::channel::<Result<(), String>>();
    let (up, up_tx) = (stream.clone(), tx.clone());
    std::thread::spawn(move || {
        let _ = up_tx.send(copy_up(&up, input));
    });
    let down = stream.clone();
    std::thread::spawn(move || {
        let _ = tx.send(copy_down(&down, output));
    });
    for _ in 0..2 {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                let _ = stream.reset();
                return Some(why);
            }
            Err(_) => return Some("a copying thread ended unexpectedly".into()),
        }
    }
    None
}

/// stdin → stream, then half-close the stream.
fn copy_up(stream: &Stream, mut input: impl Read) -> Result<(), String> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut w = stream;
    loop {
        match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => w
                .write_all(&buf[..n])
                .map_err(|e| format!("stream: {}", forward::explain(&mtmux::Error::from(e))))?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("standard input: {e}")),
        }
    }
    stream.close_write().map_err(|e| format!("stream: {}", forward::explain(&e)))
}

/// stream → stdout, then close stdout.
fn copy_down(stream: &Stream, mut output: impl Write) -> Result<(), String> {
    let mut buf = vec![0u8; BUF_SIZE];
    let mut r = stream;
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => output
                .write_all(&buf[..n])
                .and_then(|_| output.flush())
                .map_err(|e| format!("standard output: {e}"))?,
            Err(e) => return Err(format!("stream: {}", forward::explain(&mtmux::Error::from(e)))),
        }
    }
    // The end of the stream: close standard output so that its reader sees the end while we
    // may still be sending standard input.
    drop(output);
    close_stdout();
    Ok(())
}

/// Close descriptor 1 (the reader of our standard output sees its end while we may still be
/// sending standard input).
fn close_stdout() {
    // SAFETY: closing fd 1 is sound; nothing else in this process writes to it afterwards
    // (logs go to standard error).
    unsafe {
        libc::close(1);
    }
}
