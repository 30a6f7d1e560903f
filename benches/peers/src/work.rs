//! The loopback workloads of mtmux-bench (benches/src/loopback.rs) over a peer: same sizes,
//! same timing points. The session is connected before the clock starts; time is taken at
//! the receiver. Everything runs as tasks of the runtime.

use crate::peer::{session, Acceptor, BoxConn, Opener};
use futures::future::{self, Either};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, Barrier};

/// Size of each write (as loopback.rs).
pub const WRITE: usize = 64 * 1024;

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn early_end() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "early end of stream")
}

/// Open a stream from the client and accept it on the server (the peer learns of it from
/// its first byte, which is consumed here), as loopback.rs's `stream_pair`.
async fn stream_pair(o: &mut dyn Opener, a: &mut dyn Acceptor) -> io::Result<(BoxConn, BoxConn)> {
    let mut c = o.open().await?;
    c.write_all(b"!").await?;
    let mut s = a.accept().await?;
    let mut one = [0u8; 1];
    s.read_exact(&mut one).await?;
    Ok((c, s))
}

/// Write `total` bytes in 64 KiB writes, then close the stream's write side.
async fn send<W: AsyncWrite + Unpin>(mut w: W, total: u64, byte: u8) -> io::Result<()> {
    let buf = vec![byte; WRITE];
    let mut sent = 0;
    while sent < total {
        let n = (total - sent).min(WRITE as u64) as usize;
        w.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    w.shutdown().await
}

/// Whether `peer`'s streams take in the peer's window updates only while their read side is
/// polled. tokio-yamux's do (its `StreamHandle::poll_write` says so, tentacle issue 33): a
/// sender that only writes stalls for good once the first 256 KiB window is spent.
fn needs_reader(peer: &str) -> bool {
    peer == "tokio-yamux"
}

/// [`send`], with a read pending on the same stream while writing when the peer needs one
/// (see [`needs_reader`]), as a proxy's `copy_bidirectional` has: the stream is split with
/// `tokio::io::split` and the read half waits for bytes that never come.
async fn send_on(peer: &str, w: BoxConn, total: u64, byte: u8) -> io::Result<()> {
    if !needs_reader(peer) {
        return send(w, total, byte).await;
    }
    let (mut rd, wr) = tokio::io::split(w);
    let reading = async move {
        let mut b = [0u8; 1];
        while let Ok(1..) = rd.read(&mut b).await {}
        future::pending::<()>().await
    };
    match future::select(Box::pin(send(wr, total, byte)), Box::pin(reading)).await {
        Either::Left((r, _)) => r,
        Either::Right(((), _)) => unreachable!("the reading future never ends"),
    }
}

/// Read until `total` bytes arrived.
async fn receive(r: &mut BoxConn, total: u64) -> io::Result<()> {
    let mut buf = vec![0u8; WRITE];
    let mut got = 0u64;
    while got < total {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Err(early_end());
        }
        got += n as u64;
    }
    Ok(())
}

fn joined<T>(r: Result<io::Result<T>, tokio::task::JoinError>) -> io::Result<T> {
    r.map_err(io::Error::other)?
}

/// Workload 1, bulk: one stream, `total` bytes (MB/s, timed at the receiver).
pub async fn bulk(peer: &str, total: u64) -> io::Result<f64> {
    let p = peer.to_string();
    let (mut o, mut a) = session(peer).await?;
    let (w, mut r) = stream_pair(&mut *o, &mut *a).await?;
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let sender = tokio::spawn(async move {
        go_rx.await.map_err(io::Error::other)?;
        send_on(&p, w, total, 0x5a).await
    });
    let t = Instant::now();
    let _ = go_tx.send(());
    receive(&mut r, total).await?;
    let speed = mb_per_s(total, t.elapsed());
    joined(sender.await)?;
    Ok(speed)
}

/// Workload 2, many: `n` streams of `each` bytes in parallel; time from the common start
/// until the last receiver is done (MB/s in total). As in loopback.rs, the tasks read the
/// clock: the first to leave the start barrier and the last receiver to finish.
pub async fn many(peer: &str, n: usize, each: u64) -> io::Result<f64> {
    let (mut o, mut a) = session(peer).await?;
    let start = Arc::new(Barrier::new(2 * n));
    let clock = Arc::new(Clock::default());
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (w, mut r) = stream_pair(&mut *o, &mut *a).await?;
        let (b, c, p) = (start.clone(), clock.clone(), peer.to_string());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            c.started(Instant::now());
            send_on(&p, w, each, 0x33).await
        }));
        let (b, c) = (start.clone(), clock.clone());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            c.started(Instant::now());
            receive(&mut r, each).await?;
            c.finished(Instant::now());
            Ok(())
        }));
    }
    for task in tasks {
        joined(task.await)?;
    }
    Ok(mb_per_s(each * n as u64, clock.elapsed()))
}

/// The clock of parallel transfers: the earliest start and the latest finish any task saw.
#[derive(Default)]
struct Clock(std::sync::Mutex<(Option<Instant>, Option<Instant>)>);

impl Clock {
    fn started(&self, t: Instant) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = Some(g.0.map_or(t, |s| s.min(t)));
    }

    fn finished(&self, t: Instant) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.1 = Some(g.1.map_or(t, |s| s.max(t)));
    }

    fn elapsed(&self) -> Duration {
        match *self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            (Some(a), Some(b)) => b.saturating_duration_since(a),
            _ => Duration::ZERO,
        }
    }
}

/// Echo 64-byte messages until the stream ends.
async fn echo64(mut s: BoxConn) {
    let mut b = [0u8; 64];
    while s.read_exact(&mut b).await.is_ok() {
        if s.write_all(&b).await.is_err() {
            break;
        }
    }
}

/// Workload 3, pingpong: `n` round trips of 64 bytes after 1000 unmeasured ones (µs each).
pub async fn pingpong(peer: &str, n: usize) -> io::Result<Vec<f64>> {
    let (mut o, mut a) = session(peer).await?;
    let (mut c, s) = stream_pair(&mut *o, &mut *a).await?;
    let echo = tokio::spawn(echo64(s));
    let mut b = [7u8; 64];
    for _ in 0..1000 {
        c.write_all(&b).await?;
        c.read_exact(&mut b).await?;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.write_all(&b).await?;
        c.read_exact(&mut b).await?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    c.shutdown().await?;
    drop(c);
    echo.await.map_err(io::Error::other)?;
    Ok(v)
}

/// Workload 4, churn: `n` × (open a stream, write 64 B, read the echo, close) (streams/s).
/// The server echoes each stream until it ends, then accepts the next, as loopback.rs's
/// `churn_mux`.
pub async fn churn(peer: &str, n: usize) -> io::Result<f64> {
    let (mut o, mut a) = session(peer).await?;
    let server = tokio::spawn(async move {
        for _ in 0..n {
            echo64(a.accept().await?).await;
        }
        io::Result::Ok(())
    });
    let t = Instant::now();
    for _ in 0..n {
        let mut s = o.open().await?;
        let mut b = [1u8; 64];
        s.write_all(&b).await?;
        s.read_exact(&mut b).await?;
        s.shutdown().await?;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    joined(server.await)?;
    Ok(rate)
}
