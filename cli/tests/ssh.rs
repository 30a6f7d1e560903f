//! A real OpenSSH client and server through `mtmux connect --stdio` as ssh's ProxyCommand
//! (issue 11 point 4): `sshd` runs on loopback behind `mtmux server` (forward "ssh", 4
//! tunnels), and `ssh -o ProxyCommand='mtmux connect --stdio SERVER ssh --tunnels 4'` runs
//! commands and moves 4 MB each way through it, and `scp` copies 4 MB up.
//!
//! `make test` installs `openssh-client` and `openssh-server` with apt where it can (root with
//! apt-get); without `ssh`, `ssh-keygen` or `/usr/sbin/sshd` the test prints SKIPPED and passes.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// sshd must be started by its absolute path.
const SSHD: &str = "/usr/sbin/sshd";
/// The bound of one ssh run (connection, authentication, the command).
const SSH_WAIT: Duration = Duration::from_secs(60);
/// sha256 of 1,000,000 zero bytes.
const ZEROS_SHA256: &str = "d29751f2649b32ff572b5e0a9f541ea660a50f94ff0beedfb0b692b924cc8025";

/// Whether the OpenSSH programs are here; says SKIPPED loudly when not.
fn openssh_available() -> bool {
    let runs = |prog: &str, arg: &str| {
        Command::new(prog).arg(arg).stdin(Stdio::null()).output().is_ok_and(|o| {
            // `ssh -V` and `sshd -V` print their version on stderr (sshd exits 1 on -V in
            // older releases): being able to start them is what counts.
            !o.stderr.is_empty() || !o.stdout.is_empty()
        })
    };
    let missing: Vec<&str> = [("ssh", "-V"), ("scp", "-?"), ("ssh-keygen", "-?"), (SSHD, "-V")]
        .into_iter()
        .filter(|(p, a)| !runs(p, a))
        .map(|(p, _)| p)
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: OpenSSH unavailable ({} missing; make test installs openssh-client and \
             openssh-server with apt-get where it can)",
            missing.join(", ")
        );
    }
    missing.is_empty()
}

/// A child process killed (and reaped) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `cmd` to completion within `bound`, its stdin from `stdin` (a file) or nothing; kills
/// it and panics at the deadline.
fn run_bounded(cmd: &mut Command, stdin: Option<&Path>, bound: Duration, what: &str) -> Output {
    let input = match stdin {
        Some(p) => Stdio::from(std::fs::File::open(p).unwrap()),
        None => Stdio::null(),
    };
    let mut child = Killed(cmd.stdin(input).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    let reader = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut got = Vec::new();
            let _ = r.read_to_end(&mut got);
            let _ = tx.send(got);
        });
        rx
    };
    let out = reader(Box::new(child.0.stdout.take().unwrap()));
    let err = reader(Box::new(child.0.stderr.take().unwrap()));
    let deadline = Instant::now() + bound;
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.0.kill();
            let _ = child.0.wait();
            let err = err.recv_timeout(WAIT).unwrap_or_default();
            panic!("{what}: no end within {bound:?}; stderr: {}", String::from_utf8_lossy(&err));
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The outputs end when the child and what it started (the ProxyCommand) have closed them.
    let stdout = out.recv_timeout(WAIT).expect("stdout closes");
    let stderr = err.recv_timeout(WAIT).expect("stderr closes");
    Output { status, stdout, stderr }
}

/// The name of the user running the tests (ssh logs in as them).
fn user() -> String {
    let o = Command::new("id").arg("-un").output().expect("id -un");
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// `sshd -D -e` on 127.0.0.1 with its own host key, config and authorized_keys in `dir`,
/// accepting `client_pub`. Returns it (killed on drop) and its port, once it listens.
fn start_sshd(dir: &Path, client_pub: &Path) -> (Killed, u16) {
    let host_key = dir.join("host_key");
    keygen(&host_key);
    let authorized = dir.join("authorized_keys");
    std::fs::copy(client_pub, &authorized).unwrap();
    // The privilege-separation directory sshd insists on.
    if !Path::new("/run/sshd").exists() {
        let _ = std::fs::create_dir_all("/run/sshd");
    }
    // A free port, found by binding and releasing it: another program may take it in between,
    // so a port sshd cannot bind is tried again with another (3 attempts).
    let mut last = Vec::new();
    for _ in 0..3 {
        let port = closed_port().port();
        match try_sshd(dir, &host_key, &authorized, port) {
            Ok(child) => return (child, port),
            Err(seen) if seen.iter().any(|l| l.contains("Cannot bind") || l.contains("in use")) => {
                last = seen
            }
            Err(seen) => panic!("sshd did not listen within {WAIT:?}: {seen:#?}"),
        }
    }
    panic!("sshd found no free port in 3 attempts: {last:#?}")
}

/// Start sshd on `port`: it once it listens, else the lines it printed.
fn try_sshd(dir: &Path, host_key: &Path, authorized: &Path, port: u16) -> Result<Killed, Vec<String>> {
    let cfg = dir.join("sshd_config");
    std::fs::write(
        &cfg,
        format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\n\
             PidFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             Subsystem sftp internal-sftp\nLogLevel VERBOSE\n",
            host_key.display(),
            authorized.display(),
            dir.join("sshd.pid").display()
        ),
    )
    .unwrap();
    let check = Command::new(SSHD).arg("-t").arg("-f").arg(&cfg).output().expect("sshd -t");
    assert!(check.status.success(), "sshd -t rejects the config: {}", String::from_utf8_lossy(&check.stderr));
    let mut child = Killed(
        Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start sshd"),
    );
    let (tx, rx) = mpsc::channel();
    let err = child.0.stderr.take().unwrap();
    // Reads sshd's log to its end (also after nobody listens), so sshd never blocks on it.
    thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains("Server listening on") => return Ok(child),
            Ok(l) => seen.push(l),
            Err(_) => return Err(seen),
        }
    }
}

/// `ssh-keygen -q -N '' -t ed25519 -f path`.
fn keygen(path: &Path) {
    let o = Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen");
    assert!(o.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&o.stderr));
}

/// The options of ssh and scp: the key, no host-key bookkeeping, no prompts, and the
/// ProxyCommand `mtmux connect --stdio server ssh --tunnels 4`.
fn ssh_options(key: &Path, server: std::net::SocketAddr) -> Vec<String> {
    let proxy = format!("{} connect --stdio {server} ssh --tunnels 4", env!("CARGO_BIN_EXE_mtmux"));
    let mut v: Vec<String> = vec!["-F".into(), "/dev/null".into(), "-i".into()];
    v.push(key.to_str().unwrap().into());
    for o in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "LogLevel=ERROR",
        &format!("ProxyCommand={proxy}"),
    ] {
        v.push("-o".into());
        v.push(o.into());
    }
    v
}

/// `ssh` to `user@mtmux-test` through `mtmux connect --stdio`, running `remote`, its stdin
/// from `stdin`.
fn ssh(key: &Path, server: std::net::SocketAddr, remote: &str, stdin: Option<&Path>) -> Output {
    let mut cmd = Command::new("ssh");
    cmd.env_remove("MTMUX_LOG")
        .env_remove("MTMUX_KEY")
        .args(ssh_options(key, server))
        .arg(format!("{}@mtmux-test", user()))
        .arg(remote);
    run_bounded(&mut cmd, stdin, SSH_WAIT, &format!("ssh {remote:?}"))
}

fn describe(o: &Output) -> String {
    format!(
        "status {:?}; stdout {:?}; stderr {:?}",
        o.status,
        String::from_utf8_lossy(&o.stdout[..o.stdout.len().min(2000)]),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn openssh_ssh_and_scp_run_through_connect_stdio_over_4_tunnels() {
    if !openssh_available() {
        return;
    }
    let dir = TempDir::new("ssh");
    let client_key: PathBuf = dir.0.join("client_key");
    keygen(&client_key);
    let (_sshd, sshd_port) = start_sshd(&dir.0, &client_key.with_extension("pub"));

    let cfg = dir.0.join("mtmux.toml");
    std::fs::write(&cfg, format!("[forward.ssh]\ntarget = \"127.0.0.1:{sshd_port}\"\n")).unwrap();
    let mut srv = Proc::start(&[
        "server",
        "--listen",
        "127.0.0.1:0",
        "--config",
        cfg.to_str().unwrap(),
        "--tunnels",
        "4",
    ]);
    let srv_addr = srv.listening_addr();

    // A command, and 1 MB produced on the far side and hashed there.
    let remote = "echo hello-over-mtmux; head -c 1000000 /dev/zero | sha256sum";
    let o = ssh(&client_key, srv_addr, remote, None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}; server: {:#?}", describe(&o), srv.output());
    assert!(out.contains("hello-over-mtmux"), "{}", describe(&o));
    assert!(out.contains(ZEROS_SHA256), "{}", describe(&o));
    let session = srv.wait_for("session 1 from");
    assert!(session.ends_with(": 4 tunnels"), "{session:?}; server: {:#?}", srv.output());

    // 4 MB up: ssh's stdin into a file on the far side, compared byte for byte.
    let payload = data(4 << 20, 11);
    let up_src = dir.0.join("up.bin");
    std::fs::write(&up_src, &payload).unwrap();
    let up_dst = dir.0.join("up.copy");
    let o = ssh(&client_key, srv_addr, &format!("cat > {}", up_dst.display()), Some(&up_src));
    assert!(o.status.success(), "{}", describe(&o));
    let copied = std::fs::read(&up_dst).unwrap();
    assert!(copied == payload, "{} bytes arrived of {}", copied.len(), payload.len());

    // 4 MB down: the file sent back on ssh's stdout.
    let o = ssh(&client_key, srv_addr, &format!("cat {}", up_src.display()), None);
    assert!(o.status.success(), "{}", describe(&o));
    assert!(o.stdout == payload, "{} bytes came back of {}", o.stdout.len(), payload.len());

    // 4 MB up with scp (SFTP since OpenSSH 9.0) through the same ProxyCommand.
    let scp_dst = dir.0.join("scp.copy");
    let mut scp = Command::new("scp");
    scp.env_remove("MTMUX_LOG")
        .env_remove("MTMUX_KEY")
        .args(ssh_options(&client_key, srv_addr))
        .arg(&up_src)
        .arg(format!("{}@mtmux-test:{}", user(), scp_dst.display()));
    let o = run_bounded(&mut scp, None, SSH_WAIT, "scp");
    assert!(o.status.success(), "{}", describe(&o));
    let copied = std::fs::read(&scp_dst).unwrap();
    assert!(copied == payload, "scp: {} bytes arrived of {}", copied.len(), payload.len());

    // Every ssh or scp run was its own session of 4 tunnels.
    for n in 2..=4 {
        let line = srv.wait_for(&format!("session {n} from"));
        assert!(line.ends_with(": 4 tunnels"), "{line:?}; server: {:#?}", srv.output());
    }
}
