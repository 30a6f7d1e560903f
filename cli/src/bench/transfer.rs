//! Both ends of one bench transfer, over an mtmux stream or a plain TCP connection alike.
//!
//! The client writes its request, sends its data (direction up), and half-closes; the server
//! sends its data (direction down), reads until the client's end, and only then half-closes.
//! So the client reads end-of-stream once the server has received everything and sent
//! everything: the client's clock stops when the receiver is done, in either direction.

use super::wire::{Limit, Request, REQUEST_LEN};
use crate::args::Direction;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

/// Size of each write.
const CHUNK: usize = 128 * 1024;

/// A connection that can be half-closed: a TCP connection or an mtmux stream.
pub trait Conn: Sync {
    /// Send end-of-stream after the data written so far; reading continues.
    fn finish_write(&self) -> io::Result<()>;
}

impl Conn for TcpStream {
    fn finish_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

impl Conn for mtmux::Stream {
    fn finish_write(&self) -> io::Result<()> {
        self.close_write().map_err(io::Error::from)
    }
}

/// The client's view of one finished transfer.
#[derive(Clone, Copy, Debug)]
pub struct Done {
    /// Payload bytes sent (direction up).
    pub sent: u64,
    /// Payload bytes received (direction down).
    pub received: u64,
    /// When the end of the server's data arrived: the receiver had everything.
    pub at: Instant,
}

/// Run the client side: request, send, half-close; read until the end.
pub fn client<C>(conn: &C, direction: Direction, limit: Limit) -> io::Result<Done>
where
    C: Conn,
    for<'a> &'a C: Read + Write,
{
    let mut w = conn;
    w.write_all(&Request::Transfer { direction, limit }.encode())?;
    std::thread::scope(|s| {
        let sender = s.spawn(|| -> io::Result<u64> {
            let sent = match direction {
                Direction::Up | Direction::Both => send(conn, limit)?,
                Direction::Down => 0,
            };
            conn.finish_write()?;
            Ok(sent)
        });
        let received = drain(conn);
        let at = Instant::now();
        let sent = sender.join().unwrap_or_else(|_| Err(io::Error::other("sender thread panicked")));
        Ok(Done { sent: sent?, received: received?, at })
    })
}

/// Ask a bench server for its plain TCP baseline port (0: it has none).
pub fn info<C>(conn: &C) -> io::Result<u16>
where
    C: Conn,
    for<'a> &'a C: Read + Write,
{
    let mut c = conn;
    c.write_all(&Request::Info.encode())?;
    conn.finish_write()?;
    let mut port = [0u8; 2];
    c.read_exact(&mut port)?;
    Ok(u16::from_be_bytes(port))
}

/// Run the server side of whatever the client asks for. Returns the request served.
pub fn serve<C>(conn: &C, baseline_port: u16) -> io::Result<Request>
where
    C: Conn,
    for<'a> &'a C: Read + Write,
{
    let mut c = conn;
    let mut raw = [0u8; REQUEST_LEN];
    c.read_exact(&mut raw)?;
    let request = Request::decode(&raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    match request {
        Request::Info => {
            c.write_all(&baseline_port.to_be_bytes())?;
            drain(conn)?;
            conn.finish_write()?;
        }
        Request::Transfer { direction, limit } => std::thread::scope(|s| -> io::Result<()> {
            let sender =
                matches!(direction, Direction::Down | Direction::Both).then(|| s.spawn(|| send(conn, limit)));
            let received = drain(conn);
            if let Some(h) = sender {
                h.join().unwrap_or_else(|_| Err(io::Error::other("sender thread panicked")))?;
            }
            received?;
            conn.finish_write()
        })?,
    }
    Ok(request)
}

/// Send until the limit; returns the bytes sent.
fn send<C>(conn: &C, limit: Limit) -> io::Result<u64>
where
    for<'a> &'a C: Write,
{
    let data = pattern();
    let mut w = conn;
    let mut sent = 0u64;
    match limit {
        Limit::Bytes(n) => {
            while sent < n {
                let k = (n - sent).min(CHUNK as u64) as usize;
                w.write_all(&data[..k])?;
                sent += k as u64;
            }
        }
        Limit::Time(d) => {
            // The limit comes off the wire: an absurd one means "until the peer stops".
            let end = Instant::now().checked_add(d);
            while end.is_none_or(|end| Instant::now() < end) {
                w.write_all(&data)?;
                sent += CHUNK as u64;
            }
        }
    }
    Ok(sent)
}

/// Read until end-of-stream; returns the bytes read.
fn drain<C>(conn: &C) -> io::Result<u64>
where
    for<'a> &'a C: Read,
{
    let mut buf = vec![0u8; CHUNK];
    let mut r = conn;
    let mut total = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Bytes that no link layer could compress away.
fn pattern() -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9;
    (0..CHUNK)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::time::Duration;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    #[test]
    fn every_direction_moves_exactly_the_bytes_asked_for() {
        for direction in [Direction::Up, Direction::Down, Direction::Both] {
            let (c, s) = pair();
            let server = std::thread::spawn(move || serve(&s, 0).unwrap());
            let done = client(&c, direction, Limit::Bytes(1_000_003)).unwrap();
            let up = matches!(direction, Direction::Up | Direction::Both);
            let down = matches!(direction, Direction::Down | Direction::Both);
            assert_eq!(done.sent, if up { 1_000_003 } else { 0 }, "{direction:?}");
            assert_eq!(done.received, if down { 1_000_003 } else { 0 }, "{direction:?}");
            server.join().unwrap();
        }
    }

    #[test]
    fn a_time_limit_stops_the_sender() {
        let (c, s) = pair();
        let server = std::thread::spawn(move || serve(&s, 0).unwrap());
        let started = Instant::now();
        let done = client(&c, Direction::Down, Limit::Time(Duration::from_millis(100))).unwrap();
        assert!(done.received > 0);
        assert!(started.elapsed() < Duration::from_secs(10));
        server.join().unwrap();
    }

    #[test]
    fn info_returns_the_baseline_port() {
        let (c, s) = pair();
        let server = std::thread::spawn(move || serve(&s, 4242).unwrap());
        assert_eq!(info(&c).unwrap(), 4242);
        assert_eq!(server.join().unwrap(), Request::Info);
    }
}
