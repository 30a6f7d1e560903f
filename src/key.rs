//! The pre-shared key that authenticates every tunnel (see [`crate::proto::auth`]).

use crate::error::Error;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Shortest key accepted, in bytes: shorter secrets are open to guessing offline from one
/// recorded handshake.
pub const MIN_KEY_LEN: usize = 16;
/// Longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;

/// A pre-shared key: both ends of a session must hold the same one.
///
/// Its bytes never leave the process: each tunnel proves knowledge of it with
/// HMAC-SHA256 over fresh nonces from both sides. `Debug` prints `Key(..)`; comparison is
/// in constant time.
#[derive(Clone)]
pub struct Key(Arc<[u8]>);

impl Key {
    /// A key from raw bytes (16 to 1024 of them; e.g. 32 random bytes, or their base64 text).
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Key, Error> {
        let b = bytes.as_ref();
        if b.len() < MIN_KEY_LEN || b.len() > MAX_KEY_LEN {
            return Err(Error::InvalidConfig(format!(
                "the pre-shared key must be {MIN_KEY_LEN} to {MAX_KEY_LEN} bytes long, got {} \
                 (make one with: head -c 32 /dev/urandom | base64)",
                b.len()
            )));
        }
        Ok(Key(b.into()))
    }

    /// A key from text, such as the contents of a key file or an environment variable:
    /// surrounding whitespace (a trailing newline) is not part of the key.
    pub fn from_text(text: impl AsRef<[u8]>) -> Result<Key, Error> {
        Key::new(text.as_ref().trim_ascii())
    }

    /// Read a key file ([`Key::from_text`] of its contents). The error names the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Key, Error> {
        let path = path.as_ref();
        let text = std::fs::read(path)
            .map_err(|e| Error::InvalidConfig(format!("cannot read the key file {}: {e}", path.display())))?;
        Key::from_text(text).map_err(|e| match e {
            Error::InvalidConfig(m) => Error::InvalidConfig(format!("key file {}: {m}", path.display())),
            e => e,
        })
    }

    /// The key's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        // Constant time in the contents (lengths are not secret).
        self.0.len() == other.0.len()
            && self.0.iter().zip(other.0.iter()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
    }
}

impl Eq for Key {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_are_checked_and_text_is_trimmed() {
        assert!(Key::new(b"short").unwrap_err().to_string().contains("16 to 1024"));
        assert!(Key::new(vec![0u8; 2000]).is_err());
        let a = Key::from_text("  0123456789abcdef\n").unwrap();
        assert_eq!(a, Key::new(b"0123456789abcdef").unwrap());
        assert_ne!(a, Key::new(b"0123456789abcdeF").unwrap());
        assert_eq!(format!("{a:?}"), "Key(..)");
    }

    #[test]
    fn key_file_errors_name_the_file() {
        let e = Key::from_file("/nonexistent/mtmux.key").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/mtmux.key"), "{e}");
    }
}
