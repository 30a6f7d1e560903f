//! Test certificates made with rcgen: CAs, certificates they sign (current or expired), and
//! PEM files of them in a per-test directory.
//!
//! Pure rcgen and std (no mtmux), so that other test crates can include it with `#[path]`.
#![allow(dead_code)]

use rcgen::{date_time_ymd, BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// A certificate authority that signs test certificates.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    /// Its certificate, PEM.
    pub pem: String,
}

/// A certificate signed by a [`Ca`] and its private key, PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

/// When a certificate is valid.
#[derive(Clone, Copy)]
pub enum Validity {
    /// From 2020 to 2099.
    Current,
    /// From 2020 to 2024-01-01: expired.
    Expired,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = date_time_ymd(2099, 1, 1);
        let cert = p.self_signed(&key).expect("CA certificate");
        let pem = cert.pem();
        Ca { cert, key, pem }
    }

    /// A certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn issue(&self, names: &[&str], validity: Validity) -> Leaf {
        let key = KeyPair::generate().expect("key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut p = CertificateParams::new(names.clone()).expect("params");
        p.distinguished_name.push(DnType::CommonName, names.first().cloned().unwrap_or_default());
        p.not_before = date_time_ymd(2020, 1, 1);
        p.not_after = match validity {
            Validity::Current => date_time_ymd(2099, 1, 1),
            Validity::Expired => date_time_ymd(2024, 1, 1),
        };
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("certificate");
        Leaf { cert: cert.pem(), key: key.serialize_pem() }
    }
}

/// A fresh directory for one test's files (under the system's temporary directory).
pub fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mtmux-tls-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("test directory");
    d
}

/// Write `text` to `dir/name`; returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write a PEM file");
    p
}
