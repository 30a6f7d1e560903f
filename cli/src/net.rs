//! Small address helpers shared by the subcommands.

use log::debug;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// All addresses `target` (HOST:PORT) stands for; an error if none.
pub fn resolve(target: &str) -> io::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = target.to_socket_addrs()?.collect();
    if addrs.is_empty() {
        return Err(io::Error::new(io::ErrorKind::NotFound, "resolves to no address"));
    }
    Ok(addrs)
}

/// Connect to the first address of `target` that answers within `timeout`.
pub fn connect(target: &str, timeout: Duration) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in resolve(target)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => {
                debug!("connect to {addr} failed: {e}");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| io::ErrorKind::NotFound.into()))
}

/// How a listener's or session's tunnel addresses are laid out: `ports 7000-7003, one per
/// tunnel` or `one port for all tunnels`.
pub fn port_layout(addrs: &[SocketAddr]) -> String {
    match addrs {
        [first, .., last] if first.port() != last.port() => {
            format!("ports {}-{}, one per tunnel", first.port(), last.port())
        }
        _ => "one port for all tunnels".into(),
    }
}
