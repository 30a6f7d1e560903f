//! The README's hello world: a server and a client over 4 tunnels, in one process.
//!
//! `cargo run --example hello`
use std::io::{Read, Write};

fn main() -> Result<(), mtmux::Error> {
    let cfg = mtmux::Config { tunnels: 4, ..Default::default() };
    // Server: one port per tunnel (port 0: any free range).
    let listener = mtmux::Listener::bind("127.0.0.1:0", &cfg)?;
    let addr = listener.local_addr();
    println!("server listening on {:?}", listener.local_addrs());
    let server = std::thread::spawn(move || -> Result<(), mtmux::Error> {
        let session = listener.accept()?;
        let mut stream = session.accept_stream()?;
        let mut msg = String::new();
        stream.read_to_string(&mut msg)?;
        stream.write_all(format!("hello, {msg}").as_bytes())?;
        Ok(())
    });
    // Client
    let session = mtmux::dial(addr, &cfg)?;
    let mut stream = session.open_stream()?;
    stream.write_all(b"world")?;
    stream.close_write()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    println!("{reply}");
    server.join().expect("server thread")?;
    for t in session.tunnel_stats() {
        println!(
            "tunnel {}: sent {} B, received {} B, rtt {:?}",
            t.index, t.bytes_sent, t.bytes_received, t.rtt
        );
    }
    session.close()
}
