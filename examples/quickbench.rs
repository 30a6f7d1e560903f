//! Scratch throughput check (not the benchmark suite): one stream, 1 GiB, 64 KiB writes.
use std::io::{Read, Write};
use std::time::Instant;

fn raw() -> f64 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(a).unwrap();
        let buf = vec![7u8; 65536];
        for _ in 0..16384 {
            c.write_all(&buf).unwrap();
        }
    });
    let (mut s, _) = l.accept().unwrap();
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    let mut got = 0usize;
    while got < 1 << 30 {
        got += s.read(&mut buf).unwrap();
    }
    let e = start.elapsed().as_secs_f64();
    t.join().unwrap();
    (1u64 << 30) as f64 / e / 1e6
}

fn mux(tunnels: usize) -> f64 {
    let cfg = mtmux::Config { tunnels, ..Default::default() };
    let l = mtmux::Listener::bind("127.0.0.1:0", &cfg).unwrap();
    let a = l.local_addr();
    let c2 = cfg.clone();
    let t = std::thread::spawn(move || {
        let s = mtmux::dial(a, &c2).unwrap();
        let mut st = s.open_stream().unwrap();
        let buf = vec![7u8; 65536];
        for _ in 0..16384 {
            st.write_all(&buf).unwrap();
        }
        st.close_write().unwrap();
        let mut x = [0u8; 1];
        let _ = st.read(&mut x);
        s
    });
    let sess = l.accept().unwrap();
    let mut st = sess.accept_stream().unwrap();
    let mut buf = vec![0u8; 65536];
    let start = Instant::now();
    let mut got = 0usize;
    loop {
        let n = st.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got += n;
    }
    let e = start.elapsed().as_secs_f64();
    assert_eq!(got, 1 << 30);
    drop(st);
    let cs = t.join().unwrap();
    let stats = sess.tunnel_stats();
    eprintln!(
        "  per-tunnel MB received: {:?}",
        stats.iter().map(|s| s.bytes_received >> 20).collect::<Vec<_>>()
    );
    drop(cs);
    (1u64 << 30) as f64 / e / 1e6
}

fn main() {
    for _ in 0..3 {
        let r = raw();
        let m1 = mux(1);
        let m4 = mux(4);
        println!("raw {r:.0} MB/s | mux1 {m1:.0} ({:.2}) | mux4 {m4:.0} ({:.2})", m1 / r, m4 / r);
    }
}
