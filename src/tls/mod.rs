//! TLS 1.3 on every tunnel (cargo feature `tls`): what [`Config::tls`](crate::Config::tls)
//! holds.
//!
//! Each tunnel's TCP connection starts with a TLS 1.3 handshake (rustls, ring provider; no
//! older TLS version is offered or accepted); the mtmux handshake and every frame then travel
//! inside it. A record altered in transit fails its authentication: that tunnel dies and its
//! frames are re-sent on the others (as with any tunnel failure), so no stream ever sees
//! altered bytes.
//!
//! ```no_run
//! # fn main() -> Result<(), mtmux::Error> {
//! use mtmux::tls::TlsConfig;
//! // Server: a certificate chain and its key.
//! let server = mtmux::Config {
//!     tls: Some(TlsConfig::server_from_files("server.pem", "server.key")?),
//!     ..Default::default()
//! };
//! let listener = mtmux::Listener::bind("0.0.0.0:7000", &server)?;
//! // Client: trust a CA (and check the server's name), or pin the certificate.
//! let client = mtmux::Config {
//!     tls: Some(TlsConfig::client_from_file("ca.pem")?.with_server_name("mtmux.example.com")?),
//!     ..Default::default()
//! };
//! let session = mtmux::dial("mtmux.example.com:7000", &client)?;
//! # Ok(()) }
//! ```
//!
//! Mutual TLS: the server adds [`TlsConfig::with_client_ca`] (then every client must present
//! a certificate signed by that CA), the client [`TlsConfig::with_client_cert`].
//!
//! Certificate problems fail the dial (or the tunnel's re-join) with
//! [`Error::Auth`] and a message that says what is wrong ("TLS: the
//! server's certificate has expired (not after 2024-01-01 00:00:00 UTC)"); a listener
//! reports the connections it refused with [`Listener::next_refusal`](crate::Listener::next_refusal).

mod errors;
mod pem;
mod verify;

pub(crate) use errors::{describe, Peer};

use crate::error::Error;
use pem::Source;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

type Result<T> = std::result::Result<T, Error>;

/// TLS settings of one side: a server's certificate (and, for mutual TLS, the CA its clients'
/// certificates must be signed by), or a client's trust in the server (a CA, or the pinned
/// fingerprint of the server's certificate; and, for mutual TLS, its own certificate).
///
/// Cheap to clone. Two configurations are equal when they were built from the same
/// certificates, keys and settings. `Debug` shows fingerprints and names, never key material.
#[derive(Clone)]
pub struct TlsConfig {
    inner: Arc<Inner>,
}

struct Inner {
    parts: Parts,
    built: Built,
    /// SHA-256 over everything the configuration was built from (equality).
    digest: [u8; 32],
}

/// A certificate chain and its private key.
#[derive(Clone)]
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    /// Where they came from, for messages.
    chain_src: Source,
    key_src: Source,
}

/// How this side checks the peer's certificate.
#[derive(Clone)]
enum Trust {
    /// Not at all (a server without mutual TLS).
    Nobody,
    /// Signed by one of these CAs.
    Roots(Vec<CertificateDer<'static>>),
    /// Exactly the certificate with this SHA-256 (clients only).
    Pin([u8; 32]),
}

#[derive(Clone)]
struct Parts {
    server: bool,
    /// This side's certificate: a server's always, a client's for mutual TLS.
    identity: Option<Identity>,
    trust: Trust,
    /// Client: the name the server's certificate must hold (default: the dialed IP).
    server_name: Option<ServerName<'static>>,
}

enum Built {
    Server(Arc<ServerConfig>),
    Client(Arc<ClientConfig>),
}

fn invalid(msg: String) -> Error {
    Error::InvalidConfig(format!("TLS: {msg}"))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(cas: &[CertificateDer<'static>], what: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for (i, c) in cas.iter().enumerate() {
        roots.add(c.clone()).map_err(|e| {
            invalid(format!("certificate {} of the {what} is not a usable CA certificate: {e}", i + 1))
        })?;
    }
    Ok(roots)
}

/// The error of a rustls configuration step that takes `id`.
fn identity_error(id: &Identity, e: rustls::Error) -> Error {
    match e {
        rustls::Error::InconsistentKeys(_) => invalid(format!(
            "the private key ({}) does not belong to the certificate ({})",
            id.key_src, id.chain_src
        )),
        e => invalid(format!("cannot use the certificate ({}) and key ({}): {e}", id.chain_src, id.key_src)),
    }
}

impl Parts {
    fn build(self) -> Result<TlsConfig> {
        let p = provider();
        let tls13 = &[&rustls::version::TLS13];
        let built = if self.server {
            let id = self.identity.as_ref().expect("a server has a certificate");
            let b = ServerConfig::builder_with_provider(p.clone())
                .with_protocol_versions(tls13)
                .map_err(|e| invalid(format!("{e}")))?;
            let b = match &self.trust {
                Trust::Roots(cas) => {
                    let v =
                        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(cas, "client CA")?), p)
                            .build()
                            .map_err(|e| invalid(format!("the client CA cannot check certificates: {e}")))?;
                    b.with_client_cert_verifier(v)
                }
                _ => b.with_no_client_auth(),
            };
            let mut cfg = b
                .with_single_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| identity_error(id, e))?;
            // Every re-join makes a full handshake: no session tickets to keep.
            cfg.send_tls13_tickets = 0;
            Built::Server(Arc::new(cfg))
        } else {
            let b = ClientConfig::builder_with_provider(p.clone())
                .with_protocol_versions(tls13)
                .map_err(|e| invalid(format!("{e}")))?;
            let b = match &self.trust {
                Trust::Roots(cas) => b.with_root_certificates(roots(cas, "CA")?),
                Trust::Pin(pin) => {
                    b.dangerous().with_custom_certificate_verifier(Arc::new(verify::PinVerifier {
                        pin: *pin,
                        algorithms: p.signature_verification_algorithms,
                    }))
                }
                Trust::Nobody => unreachable!("a client trusts a CA or a pin"),
            };
            let mut cfg = match &self.identity {
                Some(id) => b
                    .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                    .map_err(|e| identity_error(id, e))?,
                None => b.with_no_client_auth(),
            };
            cfg.resumption = Resumption::disabled();
            Built::Client(Arc::new(cfg))
        };
        let digest = self.digest();
        Ok(TlsConfig { inner: Arc::new(Inner { parts: self, built, digest }) })
    }

    fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut put = |tag: &[u8], bytes: &[u8]| {
            h.update(tag);
            h.update((bytes.len() as u64).to_le_bytes());
            h.update(bytes);
        };
        put(b"side", &[self.server as u8]);
        if let Some(id) = &self.identity {
            id.chain.iter().for_each(|c| put(b"cert", c.as_ref()));
            put(b"key", id.key.secret_der());
        }
        match &self.trust {
            Trust::Nobody => put(b"trust", b""),
            Trust::Roots(cas) => cas.iter().for_each(|c| put(b"ca", c.as_ref())),
            Trust::Pin(pin) => put(b"pin", pin),
        }
        if let Some(n) = &self.server_name {
            put(b"name", n.to_str().as_bytes());
        }
        h.finalize().into()
    }
}

fn identity(chain_pem: &[u8], chain_src: Source, key_pem: &[u8], key_src: Source) -> Result<Identity> {
    let chain = pem::certs(chain_pem, &chain_src, "certificate")?;
    let key = Arc::new(pem::key(key_pem, &key_src)?);
    Ok(Identity { chain, key, chain_src, key_src })
}

fn identity_files(chain: &Path, key: &Path) -> Result<Identity> {
    let (c, cs) = pem::read(chain, "certificate")?;
    let (k, ks) = pem::read(key, "private key")?;
    identity(&c, cs, &k, ks)
}

impl TlsConfig {
    /// A server's configuration: its certificate chain (PEM, the server's own certificate
    /// first, then any intermediate CAs) and private key (PEM: PKCS#8, RSA or EC).
    pub fn server(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig> {
        let id = identity(cert_chain_pem, Source::Memory, key_pem, Source::Memory)?;
        Parts { server: true, identity: Some(id), trust: Trust::Nobody, server_name: None }.build()
    }

    /// [`TlsConfig::server`] from files; errors name the file.
    pub fn server_from_files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<TlsConfig> {
        let id = identity_files(cert_chain.as_ref(), key.as_ref())?;
        Parts { server: true, identity: Some(id), trust: Trust::Nobody, server_name: None }.build()
    }

    /// Server: require mutual TLS: every client presents a certificate signed by one of the
    /// CAs in `ca_pem`, or its tunnels are refused.
    pub fn with_client_ca(self, ca_pem: &[u8]) -> Result<TlsConfig> {
        self.client_ca(ca_pem, Source::Memory)
    }

    /// [`TlsConfig::with_client_ca`] from a file.
    pub fn with_client_ca_file(self, ca: impl AsRef<Path>) -> Result<TlsConfig> {
        let (pem, src) = pem::read(ca.as_ref(), "client CA")?;
        self.client_ca(&pem, src)
    }

    fn client_ca(self, ca_pem: &[u8], src: Source) -> Result<TlsConfig> {
        let mut parts = self.parts_of("with_client_ca", true)?;
        parts.trust = Trust::Roots(pem::certs(ca_pem, &src, "client CA")?);
        parts.build()
    }

    /// A client's configuration that trusts servers whose certificate is signed by one of the
    /// CAs in `ca_pem` and valid for the server name (see
    /// [`with_server_name`](TlsConfig::with_server_name)).
    pub fn client(ca_pem: &[u8]) -> Result<TlsConfig> {
        TlsConfig::client_trusting(ca_pem, Source::Memory)
    }

    /// [`TlsConfig::client`] from a file.
    pub fn client_from_file(ca: impl AsRef<Path>) -> Result<TlsConfig> {
        let (pem, src) = pem::read(ca.as_ref(), "CA")?;
        TlsConfig::client_trusting(&pem, src)
    }

    fn client_trusting(ca_pem: &[u8], src: Source) -> Result<TlsConfig> {
        let cas = pem::certs(ca_pem, &src, "CA")?;
        Parts { server: false, identity: None, trust: Trust::Roots(cas), server_name: None }.build()
    }

    /// A client's configuration that trusts exactly the server certificate whose SHA-256
    /// fingerprint is `fingerprint` (64 hex digits, plain or colon-separated, as
    /// `openssl x509 -noout -fingerprint -sha256 -in server.pem` prints it). The pin replaces
    /// every other check of the certificate (CA, names, validity dates); the handshake still
    /// proves that the server holds the certificate's private key.
    pub fn client_pinned(fingerprint: &str) -> Result<TlsConfig> {
        let pin = pem::parse_fingerprint(fingerprint)?;
        Parts { server: false, identity: None, trust: Trust::Pin(pin), server_name: None }.build()
    }

    /// Client: the name the server's certificate must be valid for (a DNS name or an IP
    /// address). Without it, the IP address dialed is the name, so a certificate for a DNS
    /// name needs this (the command line and the C API default to the host part of the
    /// address given).
    pub fn with_server_name(self, name: &str) -> Result<TlsConfig> {
        let mut parts = self.parts_of("with_server_name", false)?;
        let n = ServerName::try_from(name.to_string())
            .map_err(|_| invalid(format!("{name:?} is not a DNS name or an IP address")))?;
        parts.server_name = Some(n);
        parts.build()
    }

    /// Client: mutual TLS: present this certificate chain and key to the server.
    pub fn with_client_cert(self, cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig> {
        let id = identity(cert_chain_pem, Source::Memory, key_pem, Source::Memory)?;
        self.client_identity(id)
    }

    /// [`TlsConfig::with_client_cert`] from files.
    pub fn with_client_cert_files(
        self,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig> {
        let id = identity_files(cert_chain.as_ref(), key.as_ref())?;
        self.client_identity(id)
    }

    fn client_identity(self, id: Identity) -> Result<TlsConfig> {
        let mut parts = self.parts_of("with_client_cert", false)?;
        parts.identity = Some(id);
        parts.build()
    }

    /// A copy of the parts of a configuration of the side `server`, for `method`.
    fn parts_of(&self, method: &str, server: bool) -> Result<Parts> {
        let p = &self.inner.parts;
        if p.server != server {
            let (is, wants) = if p.server { ("server", "client") } else { ("client", "server") };
            return Err(invalid(format!(
                "{method} applies to a {wants} configuration, and this one is a {is}'s"
            )));
        }
        Ok(p.clone())
    }

    /// Whether this is a server's configuration (for [`Listener`](crate::Listener)), not a
    /// client's (for [`dial`](crate::dial)).
    pub fn is_server(&self) -> bool {
        self.inner.parts.server
    }

    /// Client: the server name set with [`with_server_name`](TlsConfig::with_server_name).
    pub fn server_name(&self) -> Option<String> {
        self.inner.parts.server_name.as_ref().map(|n| n.to_str().into_owned())
    }

    /// The SHA-256 fingerprint (colon-separated hex) of this side's own certificate, if it
    /// has one: what a client pins with [`TlsConfig::client_pinned`].
    pub fn certificate_fingerprint(&self) -> Option<String> {
        let id = self.inner.parts.identity.as_ref()?;
        Some(pem::hex(&pem::fingerprint(&id.chain[0])))
    }

    /// The rustls server configuration (a server's).
    pub(crate) fn rustls_server(&self) -> Option<Arc<ServerConfig>> {
        match &self.inner.built {
            Built::Server(c) => Some(c.clone()),
            Built::Client(_) => None,
        }
    }

    /// The rustls client configuration and the server name for a connection to `target` (a
    /// client's).
    pub(crate) fn rustls_client(
        &self,
        target: SocketAddr,
    ) -> Option<(Arc<ClientConfig>, ServerName<'static>)> {
        match &self.inner.built {
            Built::Client(c) => {
                let name = self.inner.parts.server_name.clone().unwrap_or_else(|| target.ip().into());
                Some((c.clone(), name))
            }
            Built::Server(_) => None,
        }
    }
}

impl PartialEq for TlsConfig {
    fn eq(&self, other: &TlsConfig) -> bool {
        self.inner.digest == other.inner.digest
    }
}

impl Eq for TlsConfig {}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = &self.inner.parts;
        let mut d = f.debug_struct("TlsConfig");
        d.field("side", &if p.server { "server" } else { "client" });
        if let Some(fp) = self.certificate_fingerprint() {
            d.field("certificate_sha256", &fp);
        }
        match &p.trust {
            Trust::Nobody => {}
            Trust::Roots(cas) => {
                let fps: Vec<String> = cas.iter().map(|c| pem::hex(&pem::fingerprint(c))).collect();
                d.field(if p.server { "client_ca_sha256" } else { "ca_sha256" }, &fps);
            }
            Trust::Pin(pin) => {
                d.field("pinned_sha256", &pem::hex(pin));
            }
        }
        if let Some(n) = self.server_name() {
            d.field("server_name", &n);
        }
        d.finish_non_exhaustive()
    }
}
