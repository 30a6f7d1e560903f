//! Named forwards and the CLI's stream header (docs/CLI-PROTOCOL.md).
//!
//! Every stream the CLI opens starts with a header naming its forward: one version byte
//! ([`HEADER_VERSION`]), one length byte (1 to [`MAX_NAME`]), then the name (ASCII letters,
//! digits, `-`, `_`, `.`). No answer follows: the receiver maps the name to the address it
//! configured for it and connects there, or resets the stream with
//! [`UNKNOWN_FORWARD`] (no such name) or [`BAD_HEADER`] (not a header). The receiver never
//! connects to an address the opener chose.
//!
//! With flags only (`--target`, `--local`), the one forward is called [`DEFAULT`].

use mtmux::{ResetCode, Stream};
use std::io::{self, Read, Write};
use std::time::Duration;

/// The forward name used when only flags are given.
pub const DEFAULT: &str = "default";

/// The header's version byte.
pub const HEADER_VERSION: u8 = 1;

/// Longest forward name.
pub const MAX_NAME: usize = 64;

/// Application reset code: the receiver has no forward of the name in the header. In the
/// range the library leaves to applications (`ResetCode::Other`), spelling "MT" + 1.
pub const UNKNOWN_FORWARD: u32 = 0x4d54_0001;

/// Application reset code: the stream did not start with a valid header.
pub const BAD_HEADER: u32 = 0x4d54_0002;

/// Check a forward name (from the config file or the command line).
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("forward name {name:?} must have 1 to {MAX_NAME} characters"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(format!("forward name {name:?} may only contain letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

/// The header for `name` (a checked name).
pub fn header(name: &str) -> Vec<u8> {
    let mut h = Vec::with_capacity(2 + name.len());
    h.push(HEADER_VERSION);
    h.push(name.len() as u8);
    h.extend_from_slice(name.as_bytes());
    h
}

/// Send the header for `name` at the start of `stream`.
pub fn write_header(stream: &Stream, name: &str) -> io::Result<()> {
    let mut s = stream;
    s.write_all(&header(name))
}

/// Why a header could not be read.
#[derive(Debug)]
pub enum HeaderError {
    /// Not a header: wrong version byte, bad length or name characters.
    Bad(String),
    /// The stream failed or ended, or the header did not arrive in time.
    Io(io::Error),
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Bad(m) => write!(f, "bad forward header: {m}"),
            HeaderError::Io(e) => write!(f, "no forward header: {e}"),
        }
    }
}

/// Parse a header from `r` (exactly its bytes are consumed).
pub fn parse_header(mut r: impl Read) -> Result<String, HeaderError> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).map_err(HeaderError::Io)?;
    if head[0] != HEADER_VERSION {
        return Err(HeaderError::Bad(format!(
            "version byte {:#04x}, expected {HEADER_VERSION:#04x} (a peer from before forward names?)",
            head[0]
        )));
    }
    let len = head[1] as usize;
    if len == 0 || len > MAX_NAME {
        return Err(HeaderError::Bad(format!("name length {len}, expected 1 to {MAX_NAME}")));
    }
    let mut name = vec![0u8; len];
    r.read_exact(&mut name).map_err(HeaderError::Io)?;
    let name = String::from_utf8(name).map_err(|_| HeaderError::Bad("name is not text".into()))?;
    check_name(&name).map_err(HeaderError::Bad)?;
    Ok(name)
}

/// Read the header at the start of `stream`, waiting at most `timeout`.
pub fn read_header(stream: &Stream, timeout: Duration) -> Result<String, HeaderError> {
    let _ = stream.set_read_timeout(Some(timeout));
    let got = parse_header(stream);
    let _ = stream.set_read_timeout(None);
    got
}

/// Reset `stream` for the header error `e` (unknown names are handled by the caller).
pub fn refuse(stream: &Stream, e: &HeaderError) {
    let code = match e {
        HeaderError::Bad(_) => BAD_HEADER,
        HeaderError::Io(_) => ResetCode::Cancelled.to_u32(),
    };
    let _ = stream.reset_with(ResetCode::Other(code));
}

/// Reset `stream` because its forward name is unknown here.
pub fn refuse_unknown(stream: &Stream) {
    let _ = stream.reset_with(ResetCode::Other(UNKNOWN_FORWARD));
}

/// What a stream error means: the CLI's own reset codes get a sentence, anything else the
/// library's text.
pub fn explain(e: &mtmux::Error) -> String {
    match e {
        mtmux::Error::StreamReset { code: ResetCode::Other(UNKNOWN_FORWARD), remote: true } => {
            "the peer has no forward of this name (compare the [forward.NAME] / [reverse.NAME] \
             sections of both ends)"
                .into()
        }
        mtmux::Error::StreamReset { code: ResetCode::Other(BAD_HEADER), remote: true } => {
            "the peer did not understand the forward header (mtmux versions differ?)".into()
        }
        e => e.to_string(),
    }
}

/// The names listed for a log line: `"a", "b"`.
pub fn names<'a>(it: impl IntoIterator<Item = &'a String>) -> String {
    it.into_iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_consumes_only_itself() {
        let mut bytes = header("web");
        bytes.extend_from_slice(b"GET /");
        let mut r = &bytes[..];
        assert_eq!(parse_header(&mut r).unwrap(), "web");
        assert_eq!(r, b"GET /");
        assert_eq!(header(DEFAULT), b"\x01\x07default");
    }

    #[test]
    fn bad_headers_are_refused_with_a_reason() {
        for (bytes, says) in [
            (&b"SSH-2.0"[..], "version byte 0x53"),
            (b"\x01\x00", "name length 0"),
            (b"\x01\x41", "name length 65"),
            (b"\x01\x03a b", "may only contain"),
            (b"\x01\x02\xff\xfe", "not text"),
        ] {
            match parse_header(bytes) {
                Err(HeaderError::Bad(m)) => assert!(m.contains(says), "{bytes:?}: {m}"),
                other => panic!("{bytes:?}: {other:?}"),
            }
        }
        assert!(matches!(parse_header(&b"\x01\x05ab"[..]), Err(HeaderError::Io(_))));
    }

    #[test]
    fn names_are_checked() {
        check_name("ssh").unwrap();
        check_name("web-1.internal_x").unwrap();
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
        assert!(check_name("a/b").is_err());
    }

    #[test]
    fn the_cli_reset_codes_are_explained() {
        let e = mtmux::Error::StreamReset { code: ResetCode::Other(UNKNOWN_FORWARD), remote: true };
        assert!(explain(&e).contains("no forward of this name"));
        let e = mtmux::Error::StreamReset { code: ResetCode::Cancelled, remote: true };
        assert_eq!(explain(&e), e.to_string());
    }
}
