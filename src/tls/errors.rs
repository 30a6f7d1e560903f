//! rustls errors in words a user acts on: certificate problems (and the peer's alerts about
//! ours) become [`Error::Auth`], everything else [`Error::Protocol`], each starting "TLS:".

use super::verify::PinMismatch;
use crate::error::Error;
use rustls::pki_types::UnixTime;
use rustls::{AlertDescription, CertificateError};

/// The other end of a TLS connection, as seen from this side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Peer {
    /// We are the client: the peer is the server.
    Server,
    /// We are the server: the peer is the client.
    Client,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Peer::Server => "server",
            Peer::Client => "client",
        }
    }

    /// The flag that gives this side the CA that checks the peer's certificate.
    fn ca_flag(self) -> &'static str {
        match self {
            Peer::Server => "--tls-ca",
            Peer::Client => "--tls-client-ca",
        }
    }
}

/// `secs` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub(crate) fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem / 60 % 60, rem % 60)
}

/// A presented name without its kind: `DnsName("a.example")` is `a.example`.
fn bare_name(n: &str) -> &str {
    match n.split_once('(') {
        Some((_, rest)) => rest.trim_end_matches(')').trim_matches('"'),
        None => n,
    }
}

fn when(t: &UnixTime) -> String {
    utc(t.as_secs())
}

/// What is wrong with the peer's certificate.
fn certificate(peer: Peer, e: &CertificateError) -> String {
    let p = peer.name();
    let what = match e {
        CertificateError::UnknownIssuer => {
            format!("is not signed by a trusted CA (check {})", peer.ca_flag())
        }
        CertificateError::Expired => "has expired".into(),
        CertificateError::ExpiredContext { not_after, .. } => {
            format!("has expired (not after {})", when(not_after))
        }
        CertificateError::NotValidYet => "is not valid yet (check the clocks)".into(),
        CertificateError::NotValidYetContext { not_before, .. } => {
            format!("is not valid yet (not before {}; check the clocks)", when(not_before))
        }
        CertificateError::NotValidForName => {
            "is not valid for the server name this client expects (see --tls-server-name)".into()
        }
        CertificateError::NotValidForNameContext { expected, presented } => format!(
            "is not valid for the name {} (it is for {}; set the expected name with --tls-server-name)",
            expected.to_str(),
            if presented.is_empty() {
                "no name".into()
            } else {
                presented.iter().map(|n| bare_name(n)).collect::<Vec<_>>().join(", ")
            }
        ),
        CertificateError::BadSignature => "has a bad signature".into(),
        CertificateError::Revoked => "has been revoked".into(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            format!("may not be used by a TLS {p}")
        }
        CertificateError::Other(o) if o.0.is::<PinMismatch>() => return format!("TLS: {o}"),
        other => format!("is not acceptable ({other:?})"),
    };
    format!("TLS: the {p}'s certificate {what}")
}

/// An alert the peer sent: mostly, why it refused this side.
fn alert(peer: Peer, a: AlertDescription) -> Error {
    let p = peer.name();
    let auth = |what: String| Error::Auth(format!("TLS: the {p} {what}"));
    match a {
        AlertDescription::CertificateRequired => match peer {
            Peer::Server => {
                auth("requires a client certificate (give one with --tls-cert and --tls-key)".into())
            }
            Peer::Client => auth("requires a certificate".into()),
        },
        AlertDescription::UnknownCA => {
            auth("does not trust this side's certificate (it is not signed by a CA the peer knows)".into())
        }
        AlertDescription::CertificateExpired => auth("says this side's certificate has expired".into()),
        AlertDescription::BadCertificate
        | AlertDescription::UnsupportedCertificate
        | AlertDescription::CertificateUnknown
        | AlertDescription::CertificateRevoked
        | AlertDescription::AccessDenied => auth(format!("refused this side's certificate (alert {a:?})")),
        AlertDescription::ProtocolVersion => {
            Error::Protocol(format!("TLS: the {p} does not speak TLS 1.3 (alert {a:?})"))
        }
        AlertDescription::BadRecordMac | AlertDescription::DecryptError => Error::Protocol(format!(
            "TLS: the {p} could not authenticate a record (alert {a:?}): data altered in transit"
        )),
        other => Error::Protocol(format!("TLS: the {p} ended the connection (alert {other:?})")),
    }
}

/// The error for a failed TLS connection with `peer`.
pub(crate) fn describe(peer: Peer, e: &rustls::Error) -> Error {
    match e {
        rustls::Error::InvalidCertificate(c) => Error::Auth(certificate(peer, c)),
        rustls::Error::NoCertificatesPresented => Error::Auth(format!(
            "TLS: the {} presented no certificate, and this side requires one",
            peer.name()
        )),
        rustls::Error::AlertReceived(a) => alert(peer, *a),
        rustls::Error::DecryptError => Error::Protocol(
            "TLS: a record from the peer failed authentication (data altered in transit)".into(),
        ),
        e => Error::Protocol(format!("TLS: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_lose_their_kind() {
        assert_eq!(bare_name("DnsName(\"mtmux.test\")"), "mtmux.test");
        assert_eq!(bare_name("IpAddress(127.0.0.1)"), "127.0.0.1");
        assert_eq!(bare_name("plain"), "plain");
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_704_067_199), "2023-12-31 23:59:59 UTC");
        assert_eq!(utc(4_102_444_800), "2100-01-01 00:00:00 UTC");
    }

    #[test]
    fn certificate_problems_read_as_advice() {
        let e = describe(Peer::Server, &rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        assert!(matches!(e, Error::Auth(_)));
        assert_eq!(
            e.to_string(),
            "authentication failed: TLS: the server's certificate is not signed by a trusted CA (check --tls-ca)"
        );
        let e = describe(Peer::Server, &rustls::Error::AlertReceived(AlertDescription::CertificateRequired));
        assert!(e.to_string().contains("requires a client certificate"), "{e}");
        let e = describe(Peer::Client, &rustls::Error::DecryptError);
        assert!(matches!(e, Error::Protocol(_)));
    }
}
