//! Certificates, keys and fingerprints from PEM text, with errors that name the file (or say
//! the PEM was given in memory) and the problem.

use crate::error::Error;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::Path;

/// Where PEM text came from, for error messages.
#[derive(Clone, Debug)]
pub(crate) enum Source {
    File(String),
    Memory,
}

impl Source {
    pub(crate) fn file(p: &Path) -> Source {
        Source::File(p.display().to_string())
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(p) => write!(f, "file {p}"),
            Source::Memory => f.write_str("PEM given in memory"),
        }
    }
}

fn invalid(msg: String) -> Error {
    Error::InvalidConfig(format!("TLS: {msg}"))
}

/// Read a PEM file; `what` says what it should hold ("certificate", "private key", "CA").
pub(crate) fn read(path: &Path, what: &str) -> Result<(Vec<u8>, Source), Error> {
    let text = std::fs::read(path)
        .map_err(|e| invalid(format!("cannot read the {what} file {}: {e}", path.display())))?;
    Ok((text, Source::file(path)))
}

fn pem_problem(e: pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => {
            format!("a section has no end line ({})", String::from_utf8_lossy(&end_marker))
        }
        pem::Error::IllegalSectionStart { line } => {
            format!("a section has a bad first line ({})", String::from_utf8_lossy(&line))
        }
        pem::Error::Base64Decode(e) => format!("bad base64 ({e})"),
        e => e.to_string(),
    }
}

/// Every certificate in `text` (a chain: the end-entity certificate first).
pub(crate) fn certs(text: &[u8], src: &Source, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("the {what} {src} is not valid PEM: {}", pem_problem(e))))?;
    if certs.is_empty() {
        return Err(invalid(format!(
            "the {what} {src} holds no certificate (expected a \"-----BEGIN CERTIFICATE-----\" section)"
        )));
    }
    Ok(certs)
}

/// The private key in `text` (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub(crate) fn key(text: &[u8], src: &Source) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(text).map_err(|e| match e {
        pem::Error::NoItemsFound => invalid(format!(
            "the private key {src} holds no private key (expected a \"-----BEGIN PRIVATE KEY-----\" section)"
        )),
        e => invalid(format!("the private key {src} is not valid PEM: {}", pem_problem(e))),
    })
}

/// SHA-256 of a certificate's DER bytes: what `openssl x509 -noout -fingerprint -sha256`
/// prints.
pub(crate) fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    Sha256::digest(cert.as_ref()).into()
}

/// Lower-case hex, colon-separated (`ab:12:...`).
pub(crate) fn hex(fp: &[u8; 32]) -> String {
    fp.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A SHA-256 fingerprint written as 64 hex digits, plain or in colon-separated pairs (either
/// case), e.g. what `openssl x509 -noout -fingerprint -sha256` prints (with or without its
/// `sha256 Fingerprint=` prefix).
pub(crate) fn parse_fingerprint(s: &str) -> Result<[u8; 32], Error> {
    let s = s.trim();
    let s = s.rsplit_once('=').map_or(s, |(_, v)| v).trim();
    let digits: String = s.chars().filter(|c| *c != ':').collect();
    let bad = || {
        invalid(format!(
            "the fingerprint {s:?} is not a SHA-256 fingerprint (64 hex digits, optionally in \
             colon-separated pairs, as `openssl x509 -noout -fingerprint -sha256` prints)"
        ))
    };
    if digits.len() != 64 || !digits.is_ascii() {
        return Err(bad());
    }
    let pairs_ok = !s.contains(':') || s.split(':').all(|p| p.len() == 2);
    if !pairs_ok {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_every_usual_spelling() {
        let plain = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let want = parse_fingerprint(plain).unwrap();
        assert_eq!(want[1], 0x11);
        assert_eq!(want[31], 0xff);
        let colons = hex(&want);
        assert_eq!(parse_fingerprint(&colons).unwrap(), want);
        let openssl = format!("sha256 Fingerprint={}", colons.to_uppercase());
        assert_eq!(parse_fingerprint(&openssl).unwrap(), want);
        for bad in ["", "abc", &plain[..62], &format!("{plain}00"), "zz:11", "0:011223344"] {
            let e = parse_fingerprint(bad).unwrap_err().to_string();
            assert!(e.contains("not a SHA-256 fingerprint"), "{bad}: {e}");
        }
    }

    #[test]
    fn pem_problems_are_named() {
        let e = certs(b"nothing here", &Source::Memory, "certificate").unwrap_err().to_string();
        assert!(e.contains("holds no certificate"), "{e}");
        let e = key(b"-----BEGIN CERTIFICATE-----\n", &Source::File("k.pem".into())).unwrap_err();
        assert!(e.to_string().contains("k.pem"), "{e}");
        let e = read(Path::new("/nonexistent/ca.pem"), "CA").unwrap_err().to_string();
        assert!(e.contains("cannot read the CA file /nonexistent/ca.pem"), "{e}");
    }
}
