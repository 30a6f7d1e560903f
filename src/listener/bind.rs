//! Binding the listener's port range.

use super::{context, with_port};
use crate::error::{Error, Result};
use crate::ffi::sys;
use std::io;
use std::net::{SocketAddr, TcpListener};

/// Bind `n` consecutive ports starting at `base`'s port (any free range when it is 0).
pub(super) fn bind_range(base: SocketAddr, n: usize) -> Result<Vec<TcpListener>> {
    if base.port() != 0 {
        let mut v = Vec::with_capacity(n);
        for i in 0..n {
            let a = with_port(base, base.port() as u32 + i as u32).ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "port range {}..{} exceeds 65535",
                    base.port(),
                    base.port() as usize + n - 1
                ))
            })?;
            v.push(
                TcpListener::bind(a).map_err(|e| context(e, format!("cannot listen on {a} (tunnel {i})")))?,
            );
        }
        return Ok(v);
    }
    // Port 0: look for `n` consecutive free ports below the ephemeral range first, where
    // outgoing connections (and their TIME_WAIT remains) never take ports; then let the OS
    // pick the first port and try the ones after it.
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse::<u32>().ok()))
        .unwrap_or(32768);
    let (lo, hi) = (10_000u32, ephemeral_low.saturating_sub(n as u32));
    let mut last_err = None;
    for attempt in 0..128 {
        let first_port = if attempt < 64 && hi > lo {
            let mut r = [0u8; 4];
            sys::random_bytes(&mut r)?;
            lo + u32::from_le_bytes(r) % (hi - lo)
        } else {
            0
        };
        let first = match with_port(base, first_port).map(TcpListener::bind) {
            Some(Ok(l)) => l,
            Some(Err(e)) if first_port != 0 => {
                last_err = Some(e);
                continue;
            }
            Some(Err(e)) => return Err(e.into()),
            None => continue,
        };
        let p = first.local_addr()?.port() as u32;
        let mut v = vec![first];
        for i in 1..n {
            match with_port(base, p + i as u32).map(TcpListener::bind) {
                Some(Ok(l)) => v.push(l),
                Some(Err(e)) => {
                    last_err = Some(e);
                    break;
                }
                None => break,
            }
        }
        if v.len() == n {
            return Ok(v);
        }
    }
    Err(context(
        last_err.unwrap_or_else(|| io::ErrorKind::AddrInUse.into()),
        format!("cannot find {n} consecutive free ports"),
    ))
}
