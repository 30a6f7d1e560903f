//! Who may use a server: the pre-shared key (`--key-file PATH` or the `MTMUX_KEY` environment
//! variable, never a key on the command line, where `ps` shows it to every user), and the
//! check that a server other hosts can reach is protected by a key or TLS client certificates
//! unless the operator says `--insecure`.

use crate::Fatal;
use mtmux::Key;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;

/// The environment variable that may hold the key (as text, like a key file).
pub const KEY_ENV: &str = "MTMUX_KEY";

/// The key and what to log about it.
#[derive(Debug, Default)]
pub struct LoadedKey {
    pub key: Option<Key>,
    /// Where it came from (`--key-file /etc/mtmux.key`, `MTMUX_KEY`), for the startup line.
    pub source: Option<String>,
    /// Warnings for the log (a key file other users can read, MTMUX_KEY ignored).
    pub warnings: Vec<String>,
}

/// The library's message without its "invalid configuration: " prefix.
fn key_error(e: mtmux::Error) -> String {
    match e {
        mtmux::Error::InvalidConfig(m) => m,
        e => e.to_string(),
    }
}

/// The key from `--key-file` (`file`) or else from `MTMUX_KEY` (`env`, its value if set).
/// `--key-file` wins when both are given (a flag is the more explicit of the two), with a
/// warning. An unreadable file or a key of the wrong length is an error naming its source.
pub fn load_key(file: Option<&Path>, env: Option<OsString>) -> Result<LoadedKey, Fatal> {
    let mut loaded = LoadedKey::default();
    if let Some(path) = file {
        loaded.key =
            Some(Key::from_file(path).map_err(|e| Fatal::usage(format!("--key-file: {}", key_error(e))))?);
        loaded.source = Some(format!("--key-file {}", path.display()));
        if let Some(w) = readable_by_others(path) {
            loaded.warnings.push(w);
        }
        if env.is_some() {
            loaded.warnings.push(format!("{KEY_ENV} is set too and is ignored: --key-file wins"));
        }
        return Ok(loaded);
    }
    if let Some(text) = env {
        use std::os::unix::ffi::OsStringExt;
        loaded.key = Some(
            Key::from_text(text.into_vec())
                .map_err(|e| Fatal::usage(format!("{KEY_ENV}: {}", key_error(e))))?,
        );
        loaded.source = Some(KEY_ENV.into());
    }
    Ok(loaded)
}

/// A warning when other users may read the key file (as ssh warns about private keys).
fn readable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!("the key file {} can be read by other users (mode {mode:03o}); chmod 600 it", path.display())
    })
}

/// What keeps strangers out of a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protection {
    /// A pre-shared key (and maybe TLS).
    Key,
    /// TLS that checks client certificates (mutual TLS), without a key.
    Tls,
    /// Nothing, but only this host can reach the listener.
    LoopbackOnly,
    /// Nothing, and other hosts can reach it: the operator said `--insecure`.
    Insecure,
}

/// Whether a server listening on `addrs` (`--listen`, resolved) may start with what it has:
/// `None` when other hosts could reach it with neither a key nor TLS that checks client
/// certificates (`has_tls`; TLS that only authenticates the server lets anyone in), and no
/// `--insecure`.
pub fn protection(addrs: &[SocketAddr], has_key: bool, has_tls: bool, insecure: bool) -> Option<Protection> {
    if has_key {
        return Some(Protection::Key);
    }
    if has_tls {
        return Some(Protection::Tls);
    }
    if !addrs.is_empty() && addrs.iter().all(|a| a.ip().to_canonical().is_loopback()) {
        return Some(Protection::LoopbackOnly);
    }
    insecure.then_some(Protection::Insecure)
}

/// The one line a server refused by [`protection`] prints.
pub fn unprotected_line(listen: &str, target: &str) -> String {
    format!(
        "refusing to listen on {listen} without --key-file/{KEY_ENV} or --tls-client-ca: anyone who can reach it gets \
         a session with {target}; add a key, TLS client certificates, or --insecure"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn addrs(s: &[&str]) -> Vec<SocketAddr> {
        s.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn only_loopback_may_go_without_a_key_or_tls() {
        let lo = addrs(&["127.0.0.1:7000", "[::1]:7000", "[::ffff:127.0.0.1]:7000"]);
        let any = addrs(&["0.0.0.0:7000"]);
        let mixed = addrs(&["127.0.0.1:7000", "192.0.2.1:7000"]);
        assert_eq!(protection(&lo, false, false, false), Some(Protection::LoopbackOnly));
        assert_eq!(protection(&addrs(&["127.0.0.2:1"]), false, false, false), Some(Protection::LoopbackOnly));
        for a in [&any, &mixed, &addrs(&["[::]:7000"]), &addrs(&[])] {
            assert_eq!(protection(a, false, false, false), None, "{a:?}");
            assert_eq!(protection(a, false, false, true), Some(Protection::Insecure));
            assert_eq!(protection(a, true, false, false), Some(Protection::Key));
            assert_eq!(protection(a, false, true, false), Some(Protection::Tls));
        }
        let line = unprotected_line("0.0.0.0:7000", "127.0.0.1:5201");
        assert!(
            line.contains("0.0.0.0:7000") && line.contains("127.0.0.1:5201") && line.contains("--insecure")
        );
    }

    fn key_file(text: &[u8], mode: u32) -> (tempdir::Dir, std::path::PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir::Dir::new();
        let path = dir.0.join("key");
        std::fs::File::create(&path).unwrap().write_all(text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    /// A directory removed at the end of the test.
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicU32, Ordering};
                static N: AtomicU32 = AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "mtmux-key-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn the_key_file_wins_over_the_environment_and_says_so() {
        let (_d, path) = key_file(b"0123456789abcdef0123456789abcdef\n", 0o600);
        let k = load_key(Some(&path), Some("another key, long enough".into())).unwrap();
        assert_eq!(k.key, Some(Key::new(b"0123456789abcdef0123456789abcdef").unwrap()));
        assert_eq!(k.warnings, vec![format!("{KEY_ENV} is set too and is ignored: --key-file wins")]);
        let k = load_key(None, Some(" from the environment \n".into())).unwrap();
        assert_eq!(k.key, Some(Key::new(b"from the environment").unwrap()));
        assert_eq!(k.source.as_deref(), Some(KEY_ENV));
        assert!(k.warnings.is_empty());
        let k = load_key(None, None).unwrap();
        assert!(k.key.is_none() && k.source.is_none());
    }

    #[test]
    fn bad_keys_are_usage_errors_naming_their_source() {
        let (_d, path) = key_file(b"short", 0o600);
        let e = load_key(Some(&path), None).unwrap_err();
        assert!(e.usage && e.msg.starts_with("--key-file: key file ") && e.msg.contains("16 to 1024"), "{e}");
        let e = load_key(Some(Path::new("/nonexistent/mtmux.key")), None).unwrap_err();
        assert!(e.msg.contains("/nonexistent/mtmux.key"), "{e}");
        let e = load_key(None, Some("".into())).unwrap_err();
        assert!(e.usage && e.msg.starts_with("MTMUX_KEY: ") && e.msg.contains("got 0"), "{e}");
    }

    #[test]
    fn a_key_file_others_can_read_is_warned_about() {
        let (_d, path) = key_file(b"0123456789abcdef", 0o644);
        let k = load_key(Some(&path), None).unwrap();
        assert!(k.key.is_some());
        assert_eq!(k.warnings.len(), 1);
        assert!(
            k.warnings[0].contains("mode 644") && k.warnings[0].contains("chmod 600"),
            "{:?}",
            k.warnings
        );
    }
}
