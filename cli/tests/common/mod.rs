//! Running the real `mtmux` binary in tests: every wait has a deadline, and a child process is
//! killed when its handle is dropped (also when a test fails).
#![allow(dead_code)] // each test file uses a different part

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Generous bound for anything that should take milliseconds on an idle machine.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn mtmux() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mtmux"));
    c.env_remove("MTMUX_LOG").env_remove("MTMUX_KEY");
    c
}

/// One line of a child's output.
#[derive(Debug, Clone)]
pub enum Line {
    Out(String),
    Err(String),
}

/// A running `mtmux` process whose output is read line by line.
pub struct Proc {
    child: Child,
    lines: Receiver<Line>,
    /// Everything read so far, for failure messages.
    seen: Vec<Line>,
}

impl Proc {
    pub fn start(args: &[&str]) -> Proc {
        Proc::start_env(args, &[])
    }

    /// [`start`](Proc::start) with environment variables set.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = mtmux()
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mtmux");
        let (tx, rx) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let tx2 = tx.clone();
        thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(Line::Out(l));
            }
        });
        thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx2.send(Line::Err(l));
            }
        });
        Proc { child, lines: rx, seen: Vec::new() }
    }

    /// Wait for a line (stdout or stderr) containing `pattern`, among those printed so far
    /// or to come; panics at the deadline or when the process ends first.
    pub fn wait_for(&mut self, pattern: &str) -> String {
        if let Some(Line::Out(l) | Line::Err(l)) =
            self.seen.iter().find(|(Line::Out(l) | Line::Err(l))| l.contains(pattern))
        {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    let (Line::Out(l) | Line::Err(l)) = line;
                    if l.contains(pattern) {
                        return l;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line with {pattern:?} within {WAIT:?}; output so far: {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("mtmux exited before printing {pattern:?}; output: {:#?}", self.seen)
                }
            }
        }
    }

    /// The address after `listening on ` in the first line that has it.
    pub fn listening_addr(&mut self) -> SocketAddr {
        let line = self.wait_for("listening on ");
        let rest = &line[line.find("listening on ").unwrap() + "listening on ".len()..];
        let token: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != ';').collect();
        token.parse().unwrap_or_else(|e| panic!("bad address {token:?} in {line:?}: {e}"))
    }

    /// Wait for the process to end (its output closes first); returns its status and all
    /// output. Kills it and panics at the deadline.
    pub fn finish(mut self) -> (ExitStatus, Vec<String>, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    panic!("mtmux did not finish within {WAIT:?}; output: {:#?}", self.seen)
                }
            }
        }
        let status = self.child.wait().expect("wait");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        for l in self.seen.drain(..) {
            match l {
                Line::Out(s) => out.push(s),
                Line::Err(s) => err.push(s),
            }
        }
        (status, out, err)
    }

    /// Everything printed so far (without waiting), for failure messages.
    pub fn output(&mut self) -> Vec<String> {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
        self.seen.iter().map(|(Line::Out(l) | Line::Err(l))| l.clone()).collect()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop the process now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `mtmux args` to completion: (exit status, stdout lines, stderr lines).
pub fn run(args: &[&str]) -> (ExitStatus, Vec<String>, Vec<String>) {
    Proc::start(args).finish()
}

/// A local service on a free port: `serve` runs on a thread of its own for every connection.
pub fn service(serve: impl Fn(TcpStream) + Send + Clone + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { return };
            let serve = serve.clone();
            thread::spawn(move || serve(c));
        }
    });
    addr
}

/// Send back everything, half-close after the client's end.
pub fn echo(mut c: TcpStream) {
    let mut r = c.try_clone().unwrap();
    let _ = std::io::copy(&mut r, &mut c);
    let _ = c.shutdown(Shutdown::Write);
}

/// A local echo service: sends back everything, half-closes after the client's end.
pub fn echo_service() -> SocketAddr {
    service(echo)
}

/// A TCP port with nothing listening on it (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Deterministic test data.
pub fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Connect to `addr` (bounded), send `payload` and half-close from a second thread, read
/// everything until the end.
pub fn exchange(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let conn = TcpStream::connect_timeout(&addr, WAIT)?;
    conn.set_read_timeout(Some(WAIT))?;
    conn.set_write_timeout(Some(WAIT))?;
    thread::scope(|s| {
        let writer = s.spawn(|| -> std::io::Result<()> {
            (&conn).write_all(payload)?;
            conn.shutdown(Shutdown::Write)
        });
        let mut got = Vec::new();
        let read = (&conn).read_to_end(&mut got);
        writer.join().unwrap()?;
        read.map(|_| got)
    })
}

/// Start `mtmux server` in front of `target` and return it with its address.
pub fn server(target: SocketAddr, extra: &[&str]) -> (Proc, SocketAddr) {
    let target = target.to_string();
    let mut args = vec!["server", "--listen", "127.0.0.1:0", "--target", &target];
    args.extend_from_slice(extra);
    let mut p = Proc::start(&args);
    let addr = p.listening_addr();
    (p, addr)
}

/// Start `mtmux client` to `server` and return it with its local address.
pub fn client(server: SocketAddr, extra: &[&str]) -> (Proc, SocketAddr) {
    let server = server.to_string();
    let mut args = vec!["client", "--server", &server, "--local", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut p = Proc::start(&args);
    let addr = p.listening_addr();
    (p, addr)
}

/// Threads of process `pid` now (`Threads:` of /proc/PID/status).
pub fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("Threads:")).expect("a Threads: line");
    line["Threads:".len()..].trim().parse().expect("a number of threads")
}

/// Open file descriptors of process `pid` now.
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("/proc/PID/fd").count()
}

/// Wait until `pred` holds for process `pid`'s (threads, fds), polling; panics at the deadline
/// with the last values.
pub fn wait_for_counts(pid: u32, what: &str, mut pred: impl FnMut(usize, usize) -> bool) -> (usize, usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (t, f) = (threads(pid), fds(pid));
        if pred(t, f) {
            return (t, f);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {t} threads and {f} descriptors after {WAIT:?}; threads: {:?}",
            thread_names(pid)
        );
        thread::sleep(Duration::from_millis(20));
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("mtmux-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// Write a key file readable by its owner only; returns its path.
    pub fn key_file(&self, name: &str, key: &str) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.0.join(name);
        std::fs::write(&path, format!("{key}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path.to_str().unwrap().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The names of process `pid`'s threads (for failure messages).
pub fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
                .map(|s| s.trim().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
