//! Trusting a server by the SHA-256 fingerprint of its certificate (pinning) instead of a CA.
//!
//! The pin is the whole trust decision: the certificate's names, CA and validity period are
//! not checked (as with an SSH host key), but the handshake signature still is, with the
//! provider's algorithms, so only the holder of the pinned certificate's private key passes.

use super::pem::{fingerprint, hex};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use std::sync::Arc;

/// The server's certificate is not the pinned one.
#[derive(Debug)]
pub(crate) struct PinMismatch {
    pub(crate) expected: [u8; 32],
    pub(crate) got: [u8; 32],
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fingerprint mismatch: the server's certificate is {}, not the pinned {} (check \
             --tls-fingerprint)",
            hex(&self.got),
            hex(&self.expected)
        )
    }
}

impl std::error::Error for PinMismatch {}

/// Accepts exactly the server certificate whose SHA-256 is `pin`.
#[derive(Debug)]
pub(crate) struct PinVerifier {
    pub(crate) pin: [u8; 32],
    pub(crate) algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = fingerprint(end_entity);
        if got != self.pin {
            let e = PinMismatch { expected: self.pin, got };
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e)))));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
