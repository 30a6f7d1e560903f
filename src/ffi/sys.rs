//! The few socket calls `std::net` does not offer: vectored non-blocking sends with
//! `MSG_NOSIGNAL`, `poll` for writability, `TCP_NOTSENT_LOWAT`, reading into a vector's spare
//! capacity, and OS randomness. Every `unsafe` block says why it is sound.

use std::io::{self, IoSlice};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Send `bufs` with one `sendmsg`. `MSG_NOSIGNAL` always (a C program linking us must not die
/// of SIGPIPE); `MSG_DONTWAIT` when `nonblocking`. Returns the bytes sent.
pub fn send_vectored(sock: &TcpStream, bufs: &[IoSlice<'_>], nonblocking: bool) -> io::Result<usize> {
    let mut flags = libc::MSG_NOSIGNAL;
    if nonblocking {
        flags |= libc::MSG_DONTWAIT;
    }
    // Safety: zeroed msghdr is a valid empty header; we point it at `bufs`, which outlives the
    // call. `IoSlice` is guaranteed ABI-compatible with `struct iovec` on Unix.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
        libc::sendmsg(sock.as_raw_fd(), &msg, flags)
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Wait until `sock` is writable (with `TCP_NOTSENT_LOWAT`: until its unsent bytes fall below
/// the mark) or `timeout` passes. Returns whether it is writable (or in error, which the next
/// write reports).
pub fn wait_writable(sock: &TcpStream, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    loop {
        // Safety: `pfd` is a valid pollfd and we pass a count of 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(r > 0);
    }
}

/// Limit the bytes a socket keeps queued but not yet sent, so frames wait in the scheduler
/// (where the next one can still be chosen) instead of in the kernel.
pub fn set_notsent_lowat(sock: &TcpStream, bytes: u32) -> io::Result<()> {
    let v: libc::c_int = bytes.min(i32::MAX as u32) as libc::c_int;
    // Safety: we pass a pointer to a live c_int and its exact size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Read up to `max` bytes from `sock` into the spare capacity of `buf` (which the caller
/// reserved), extending its length. Returns the bytes read (0 at end of stream).
pub fn read_into_spare(sock: &TcpStream, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let want = max.min(buf.capacity() - buf.len());
    if want == 0 {
        return Ok(0);
    }
    loop {
        // Safety: the destination is the vector's reserved, unused capacity of at least `want`
        // bytes; recv writes at most `want` bytes there, and we only extend the length by
        // what it reports as written.
        let n = unsafe {
            let dst = buf.as_mut_ptr().add(buf.len());
            libc::recv(sock.as_raw_fd(), dst as *mut libc::c_void, want, 0)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // Safety: recv initialised `n <= want` bytes past the old length.
        unsafe { buf.set_len(buf.len() + n as usize) };
        return Ok(n as usize);
    }
}

/// Set `TCP_USER_TIMEOUT`: the kernel gives up on a connection whose sent data stays
/// unacknowledged this long (instead of retrying for about 15 minutes).
pub fn set_user_timeout(sock: &TcpStream, timeout: Duration) -> io::Result<()> {
    let v: libc::c_uint = timeout.as_millis().clamp(1, u32::MAX as u128) as libc::c_uint;
    // Safety: we pass a pointer to a live c_uint and its exact size.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            &v as *const libc::c_uint as *const libc::c_void,
            std::mem::size_of::<libc::c_uint>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The socket's `TCP_INFO` as the scheduler's delay estimate needs it.
pub fn tcp_sample(sock: &TcpStream) -> io::Result<crate::core::path::Sample> {
    // Safety: a zeroed tcp_info is valid plain data; we pass its exact size, and the kernel
    // writes at most that many bytes (older kernels fewer: the rest stays zero).
    let info = unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            &mut info as *mut libc::tcp_info as *mut libc::c_void,
            &mut len,
        );
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        info
    };
    Ok(crate::core::path::Sample {
        srtt: Duration::from_micros(info.tcpi_rtt as u64),
        min_rtt: Duration::from_micros(info.tcpi_min_rtt as u64),
        notsent: info.tcpi_notsent_bytes as u64,
        rate: info.tcpi_delivery_rate,
        in_flight: info.tcpi_unacked > 0,
    })
}

/// A random `u32` from the OS (0 if the OS source fails, which only weakens jitter).
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = random_bytes(&mut b);
    u32::from_le_bytes(b)
}

/// Shut down a listening socket: on Linux this makes a thread blocked in `accept` return.
pub fn shutdown_listener(l: &std::net::TcpListener) {
    // Safety: shutdown on a descriptor we own; errors are harmless here.
    unsafe {
        libc::shutdown(l.as_raw_fd(), libc::SHUT_RDWR);
    }
}

/// Fill `buf` with random bytes from the OS.
pub fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // Safety: we pass the unfilled tail of `buf` and its exact length.
        let n = unsafe {
            libc::getrandom(buf[filled..].as_mut_ptr() as *mut libc::c_void, buf.len() - filled, 0)
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(())
}

/// How many CPUs the calling thread may run on (its affinity mask; 1 under `taskset -c N`).
/// Falls back to 2 (more than one) if the mask cannot be read.
pub fn cpus_allowed() -> usize {
    // SAFETY: `set` is a plain bit mask the kernel fills in; its size is passed along.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return 2;
        }
        libc::CPU_COUNT(&set) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn vectored_send_and_spare_read() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        let n = send_vectored(&a, &[IoSlice::new(b"hello "), IoSlice::new(b"world")], false).unwrap();
        assert_eq!(n, 11);
        let mut v = Vec::with_capacity(64);
        let mut got = 0;
        while got < 11 {
            got += read_into_spare(&b, &mut v, 64).unwrap();
        }
        assert_eq!(v, b"hello world");
        assert!(wait_writable(&a, Duration::from_millis(100)).unwrap());
        set_notsent_lowat(&a, 128 * 1024).unwrap();
        set_user_timeout(&a, Duration::from_secs(30)).unwrap();
        let s = tcp_sample(&a).unwrap();
        assert!(s.srtt > Duration::ZERO && s.srtt < Duration::from_secs(1), "{s:?}");
        drop(a);
        let mut rest = Vec::new();
        (&b).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }

    #[test]
    fn random_bytes_are_not_all_zero() {
        let mut b = [0u8; 32];
        random_bytes(&mut b).unwrap();
        assert!(b.iter().any(|&x| x != 0));
    }
}
