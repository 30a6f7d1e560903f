//! The README's "On one machine" block works when pasted as a whole (issue 11, point 9): the
//! block between `<!-- paste-test -->` markers runs in one shell, all at once, with the
//! test's binary instead of `make cli`'s and free ports instead of 7000, 8000 and 8080.

mod common;

use common::closed_port;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// The shell commands of the README's paste-test block.
fn paste_block() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("<!-- paste-test -->").expect("a paste-test marker in README.md");
    let end = readme.find("<!-- /paste-test -->").expect("an end marker");
    let block = &readme[start..end];
    let code = block.split("```sh").nth(1).and_then(|b| b.split("```").next()).expect("a sh block");
    code.to_string()
}

#[test]
fn the_one_machine_block_works_when_pasted_at_once() {
    let have = |tool: &str| Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !have("python3") || !have("curl") {
        eprintln!("SKIPPED: python3 or curl unavailable");
        return;
    }
    // The server listens on 4 consecutive ports (one per tunnel): all of them must be free,
    // or the block's server fails to start and its client keeps trying for ever.
    let mux = (0..100)
        .map(|_| closed_port().port())
        .find(|&p| p < 65530 && (p..p + 4).all(|q| std::net::TcpListener::bind(("127.0.0.1", q)).is_ok()))
        .expect("4 consecutive free ports");
    let ports: Vec<String> =
        [mux, closed_port().port(), closed_port().port()].iter().map(u16::to_string).collect();
    let (mux, http, local) = (&ports[0], &ports[1], &ports[2]);
    let script: String = paste_block()
        .lines()
        // `make cli` builds what this test already has.
        .filter(|l| !l.starts_with("make cli"))
        .map(|l| {
            l.replace("./mtmux", env!("CARGO_BIN_EXE_mtmux"))
                .replace(":7000", &format!(":{mux}"))
                .replace("8000", http)
                .replace(":8080", &format!(":{local}"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let dir = std::env::temp_dir().join(format!("mtmux-paste-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("marker.txt"), "served through mtmux").unwrap();
    // The block's background jobs end with the shell.
    let script = format!("{script}\nstatus=$?\nkill $(jobs -p) 2>/dev/null\nexit $status\n");
    let child = Command::new("bash")
        // Its own process group: on a timeout the whole block is killed, not left running.
        .process_group(0)
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bash");
    let group = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
            panic!("the block did not finish within 60 s (killed)");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "the block failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("marker.txt"), "curl did not get the directory listing: {stdout}");
}
