//! Records the version of each peer crate that Cargo.lock resolved, so that the binary
//! reports exactly what it measured (`mtmux-peers list`).

fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    for (krate, var) in [
        ("yamux", "PEER_VERSION_YAMUX"),
        ("tokio-yamux", "PEER_VERSION_TOKIO_YAMUX"),
        ("async_smux", "PEER_VERSION_ASYNC_SMUX"),
        ("smux", "PEER_VERSION_SMUX"),
        ("tokio", "PEER_VERSION_TOKIO"),
    ] {
        println!("cargo:rustc-env={var}={}", locked_version(&lock, krate));
    }
}

/// The version of `name` in a Cargo.lock ("?" when absent or listed twice).
fn locked_version(lock: &str, name: &str) -> String {
    let mut found = Vec::new();
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{name}\"") {
            if let Some(v) = lines.next().and_then(|l| l.trim().strip_prefix("version = ")) {
                found.push(v.trim_matches('"').to_string());
            }
        }
    }
    match found.as_slice() {
        [one] => one.clone(),
        _ => "?".into(),
    }
}
