//! The README's hello world, client and server over loopback.
mod common;

use std::io::{Read, Write};
use std::time::Duration;

#[test]
fn hello_world_as_in_the_readme() {
    common::within(Duration::from_secs(30), || {
        let cfg = mtmux::Config { tunnels: 4, ..Default::default() };
        let listener = mtmux::Listener::bind("127.0.0.1:0", &cfg).unwrap();
        let addr = listener.local_addr();
        let server = std::thread::spawn(move || -> mtmux::Result<()> {
            let session = listener.accept()?;
            let mut stream = session.accept_stream()?;
            let mut msg = String::new();
            stream.read_to_string(&mut msg)?;
            stream.write_all(format!("hello, {msg}").as_bytes())?;
            Ok(())
        });
        let session = mtmux::dial(addr, &cfg).unwrap();
        let mut stream = session.open_stream().unwrap();
        stream.write_all(b"world").unwrap();
        stream.close_write().unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "hello, world");
        server.join().unwrap().unwrap();
        session.close().unwrap();
        assert!(session.is_closed());
    });
}

/// A client with more tunnels than the server's port range is told why a later port refuses.
#[test]
fn more_tunnels_than_the_servers_range_is_explained() {
    let server = mtmux::Config { tunnels: 2, ..Default::default() };
    let l = mtmux::Listener::bind("127.0.0.1:0", &server).unwrap();
    // Ports 3 and 4 of the client's range are past the server's (nothing listens there
    // unless another program on this host happens to).
    let client = mtmux::Config { tunnels: 4, ..Default::default() };
    match mtmux::dial(l.local_addr(), &client) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            let m = e.to_string();
            assert!(m.contains("fewer tunnels") && m.contains("single port"), "{m}");
        }
        other => panic!("expected a refused connection with a hint, got {:?}", other.map(|_| ())),
    }
}
