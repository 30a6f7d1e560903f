//! Joining a TCP connection and an mtmux stream: bytes flow both ways, an end-of-stream in one
//! direction is passed on as a half-close (so `nc -N` or an HTTP/1.0 client still gets the
//! whole response), and a failure on either side aborts both: the stream is reset and the TCP
//! connection is closed with a reset, so neither application mistakes a failure for a clean end.
//!
//! Two threads per pair: the caller's thread copies stream → TCP, a scoped helper copies
//! TCP → stream.

use crate::units::{fmt_bytes, fmt_duration};
use mtmux::Stream;
use socket2::SockRef;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

/// Copy buffer per direction (one default-size frame).
const BUF_SIZE: usize = 64 * 1024;

/// How often a write to a local application that does not read checks whether the pair was
/// aborted meanwhile.
const WRITE_POLL: Duration = Duration::from_secs(1);

/// What happened on one pair.
#[derive(Debug)]
pub struct Outcome {
    /// Bytes read from the TCP connection and written to the stream.
    pub to_stream: u64,
    /// Bytes read from the stream and written to the TCP connection.
    pub from_stream: u64,
    /// The first failure, if any, with its side (`<tcp name>: ...` or `stream: ...`).
    pub error: Option<String>,
    /// Whether the failure is worth a warning: not when an application reset its connection
    /// (a TCP RST, here or passed on from the other end as a stream reset), which is how
    /// many applications end normally (iperf3 does).
    pub warn: bool,
}

impl Outcome {
    /// `tx 1.2 MB, rx 3.4 MB in 2.50 s` (tx: into the tunnel).
    pub fn summary(&self, elapsed: Duration) -> String {
        format!(
            "tx {}, rx {} in {}",
            fmt_bytes(self.to_stream),
            fmt_bytes(self.from_stream),
            fmt_duration(elapsed)
        )
    }
}

/// Run the pair ([`pipe`]) and log how it ended, one line prefixed `who` (e.g.
/// `session 3 stream 7`).
pub fn pipe_and_log(tcp: &TcpStream, tcp_name: &str, stream: &Stream, who: &str) {
    let started = std::time::Instant::now();
    let outcome = pipe(tcp, tcp_name, stream);
    let summary = outcome.summary(started.elapsed());
    match outcome.error {
        None => log::info!("{who}: closed, {summary}"),
        Some(e) if outcome.warn => log::warn!("{who}: failed, {summary}: {e}"),
        Some(e) => log::info!("{who}: reset, {summary}: {e}"),
    }
}

/// Close a TCP connection with a reset: the application sees an error, not a clean end.
pub fn abort_tcp(tcp: &TcpStream) {
    let _ = SockRef::from(tcp).set_linger(Some(Duration::ZERO));
    let _ = tcp.shutdown(Shutdown::Read);
}

/// Run the pair until both directions have ended. Blocks; uses one extra thread. `tcp_name`
/// names the TCP side in errors (`local connection`, `target`).
pub fn pipe(tcp: &TcpStream, tcp_name: &str, stream: &Stream) -> Outcome {
    let pair = Pair { tcp, tcp_name, stream, failure: OnceLock::new() };
    let (to_stream, from_stream) = std::thread::scope(|s| {
        let up = std::thread::Builder::new()
            .name(format!("pipe-{}", stream.id()))
            .stack_size(128 * 1024)
            .spawn_scoped(s, || pair.tcp_to_stream());
        let up = match up {
            Ok(h) => h,
            Err(e) => {
                pair.abort(format!("cannot start a thread: {e}"), true);
                return (0, 0);
            }
        };
        let down = pair.stream_to_tcp();
        (up.join().unwrap_or(0), down)
    });
    let (error, warn) = match pair.failure.into_inner() {
        Some((e, warn)) => (Some(e), warn),
        None => (None, false),
    };
    Outcome { to_stream, from_stream, error, warn }
}

struct Pair<'a> {
    tcp: &'a TcpStream,
    tcp_name: &'a str,
    stream: &'a Stream,
    /// Set once, by the first direction that fails.
    failure: OnceLock<(String, bool)>,
}

/// A stream failure as one log text, and whether it deserves a warning.
fn stream_failure(e: mtmux::Error) -> (String, bool) {
    use mtmux::ResetCode::*;
    match e {
        // The other end's application reset its connection (passed on as Cancelled).
        mtmux::Error::StreamReset { code: Cancelled, remote: true } => {
            ("reset by the application at the other end".into(), false)
        }
        mtmux::Error::StreamReset {
            code: c @ (TargetRefused | TargetUnreachable | TargetTimedOut),
            remote: true,
        } => (format!("the server could not connect it to its target: {c}"), true),
        e => (format!("stream: {}", crate::forward::explain(&e)), true),
    }
}

impl Pair<'_> {
    /// Abort both sides. The TCP connection gets a reset when it is closed (SO_LINGER 0) and
    /// its reading side is shut down at once, which wakes the other direction without sending
    /// a FIN that the application could take for a complete response.
    fn abort(&self, why: String, warn: bool) {
        if self.failure.set((why, warn)).is_err() {
            return;
        }
        abort_tcp(self.tcp);
        let _ = self.stream.reset();
    }

    /// The TCP side failed: a reset by its application is how many end, not worth a warning.
    fn tcp_failed(&self, e: &io::Error) {
        let reset = matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe);
        self.abort(format!("{}: {e}", self.tcp_name), !reset);
    }

    fn stream_failed(&self, e: mtmux::Error) {
        let (why, warn) = stream_failure(e);
        self.abort(why, warn);
    }

    fn aborted(&self) -> bool {
        self.failure.get().is_some()
    }

    /// TCP → stream, then half-close the stream.
    fn tcp_to_stream(&self) -> u64 {
        let (mut tcp, mut stream) = (self.tcp, self.stream);
        let mut buf = vec![0u8; BUF_SIZE];
        let mut total = 0;
        loop {
            let n = match tcp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.tcp_failed(&e);
                    return total;
                }
            };
            if let Err(e) = stream.write_all(&buf[..n]) {
                self.stream_failed(mtmux::Error::from(e));
                return total;
            }
            total += n as u64;
        }
        // A read of 0 also ends the loop when the other direction aborted.
        if !self.aborted() {
            if let Err(e) = self.stream.close_write() {
                self.stream_failed(e);
            }
        }
        total
    }

    /// Stream → TCP, then half-close the TCP connection.
    fn stream_to_tcp(&self) -> u64 {
        let _ = self.tcp.set_write_timeout(Some(WRITE_POLL));
        let mut stream = self.stream;
        let mut buf = vec![0u8; BUF_SIZE];
        let mut total = 0;
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    self.stream_failed(mtmux::Error::from(e));
                    return total;
                }
            };
            if let Err(e) = self.write_tcp(&buf[..n]) {
                self.tcp_failed(&e);
                return total;
            }
            if self.aborted() {
                return total;
            }
            total += n as u64;
        }
        if !self.aborted() {
            // Fails only when the connection is already gone, which the other direction
            // reports.
            let _ = self.tcp.shutdown(Shutdown::Write);
        }
        total
    }

    /// Write all of `data`, giving up quietly when the pair is aborted while the local
    /// application is not reading.
    fn write_tcp(&self, mut data: &[u8]) -> io::Result<()> {
        let mut tcp = self.tcp;
        while !data.is_empty() {
            match tcp.write(data) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => data = &data[n..],
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if self.aborted() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
