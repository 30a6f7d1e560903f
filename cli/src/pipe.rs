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
        Some(e) => log::warn!("{who}: failed, {summary}: {e}"),
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
                pair.abort(format!("cannot start a thread: {e}"));
                return (0, 0);
            }
        };
        let down = pair.stream_to_tcp();
        (up.join().unwrap_or(0), down)
    });
    Outcome { to_stream, from_stream, error: pair.failure.into_inner() }
}

struct Pair<'a> {
    tcp: &'a TcpStream,
    tcp_name: &'a str,
    stream: &'a Stream,
    /// Set once, by the first direction that fails.
    failure: OnceLock<String>,
}

impl Pair<'_> {
    /// Abort both sides. The TCP connection gets a reset when it is closed (SO_LINGER 0) and
    /// its reading side is shut down at once, which wakes the other direction without sending
    /// a FIN that the application could take for a complete response.
    fn abort(&self, why: String) {
        if self.failure.set(why).is_err() {
            return;
        }
        abort_tcp(self.tcp);
        let _ = self.stream.reset();
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
                    self.abort(format!("{}: {e}", self.tcp_name));
                    return total;
                }
            };
            if let Err(e) = stream.write_all(&buf[..n]) {
                self.abort(format!("stream: {}", crate::forward::explain(&mtmux::Error::from(e))));
                return total;
            }
            total += n as u64;
        }
        // A read of 0 also ends the loop when the other direction aborted.
        if !self.aborted() {
            if let Err(e) = self.stream.close_write() {
                // The peer's reset may come first here (e.g. an unknown forward name).
                self.abort(format!("stream: {}", crate::forward::explain(&e)));
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
                    self.abort(format!("stream: {}", crate::forward::explain(&mtmux::Error::from(e))));
                    return total;
                }
            };
            if let Err(e) = self.write_tcp(&buf[..n]) {
                self.abort(format!("{}: {e}", self.tcp_name));
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
