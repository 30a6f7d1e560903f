//! A forwarding proxy with the TcpStream-grade API: every stream a client opens over the
//! tunnels is connected to a TCP target, one thread per direction, each with its own handle
//! (`try_clone`), no `Arc`. In one process: the target (it answers each line in capitals),
//! the mtmux server forwarding to it, and a client that sends a line through.
//!
//! `cargo run --example proxy`
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The target: a TCP service that answers each line in capitals.
    let target = TcpListener::bind("127.0.0.1:0")?;
    let target_addr = target.local_addr()?;
    thread::spawn(move || {
        for conn in target.incoming().flatten() {
            thread::spawn(move || {
                let mut out = conn.try_clone().expect("clone");
                for line in BufReader::new(conn).lines().map_while(Result::ok) {
                    let _ = writeln!(out, "{}", line.to_uppercase());
                }
            });
        }
    });

    // The mtmux server: each stream of each session goes to the target.
    let cfg = mtmux::Config { tunnels: 4, ..Default::default() };
    let listener = mtmux::Listener::bind("127.0.0.1:0", &cfg)?;
    let addr = listener.local_addr();
    thread::spawn(move || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        for session in listener.incoming() {
            let session = session?;
            thread::spawn(move || -> std::io::Result<()> {
                for stream in session.incoming() {
                    let stream = stream?;
                    let conn = TcpStream::connect(target_addr)?;
                    // Client to target, with handles of its own ...
                    let (mut from, mut to) = (stream.try_clone()?, conn.try_clone()?);
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                    // ... and target to client with the originals.
                    let (mut from, mut to) = (conn, stream);
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.close_write();
                    });
                }
                Ok(())
            });
        }
        Ok(())
    });

    // A client: one stream through the proxy.
    let session = mtmux::dial(addr, &cfg)?;
    let mut stream = session.open_stream()?;
    stream.write_all(b"hello through four tunnels\n")?;
    stream.close_write()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    print!("{reply}");
    assert_eq!(reply, "HELLO THROUGH FOUR TUNNELS\n");
    session.close()?;
    Ok(())
}
