//! TLS settings from the command line: `server --tls-cert/--tls-key [--tls-client-ca]`,
//! `client --tls-ca|--tls-fingerprint [--tls-server-name] [--tls-cert/--tls-key]`. Flag
//! combinations that cannot work are refused by the parser (exit 2); problems with the files
//! are usage errors naming the file.

use crate::args::{ClientTlsArgs, ServerTlsArgs};
use crate::Fatal;
use log::info;
use mtmux::tls::TlsConfig;
use mtmux::Config;

fn usage(e: mtmux::Error) -> Fatal {
    match e {
        mtmux::Error::InvalidConfig(m) => Fatal::usage(m),
        e => Fatal::usage(e.to_string()),
    }
}

/// `cfg` with the server's TLS settings, if any.
pub fn server(a: &ServerTlsArgs, cfg: Config) -> Result<Config, Fatal> {
    let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) else { return Ok(cfg) };
    let mut tls = TlsConfig::server_from_files(cert, key).map_err(usage)?;
    if let Some(ca) = &a.tls_client_ca {
        tls = tls.with_client_ca_file(ca).map_err(usage)?;
    }
    info!(
        "TLS on every tunnel{}; certificate SHA-256 (for clients' --tls-fingerprint) {}",
        if a.tls_client_ca.is_some() { ", client certificates required" } else { "" },
        tls.certificate_fingerprint().unwrap_or_default()
    );
    Ok(Config { tls: Some(tls), ..cfg })
}

/// The host part of `HOST:PORT` (`[v6]:PORT` too).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// `cfg` with the client's TLS settings, if any; `server` is the --server address.
pub fn client(a: &ClientTlsArgs, server: &str, cfg: Config) -> Result<Config, Fatal> {
    let tls = match (&a.tls_ca, &a.tls_fingerprint) {
        (Some(ca), _) => TlsConfig::client_from_file(ca),
        (None, Some(fp)) => TlsConfig::client_pinned(fp),
        (None, None) => return Ok(cfg),
    };
    let name = a.tls_server_name.as_deref().unwrap_or_else(|| host_of(server));
    let mut tls = tls.and_then(|t| t.with_server_name(name)).map_err(usage)?;
    if let (Some(cert), Some(key)) = (&a.tls_cert, &a.tls_key) {
        tls = tls.with_client_cert_files(cert, key).map_err(usage)?;
    }
    let trust = if a.tls_ca.is_some() { "certificate signed by --tls-ca" } else { "pinned certificate" };
    info!("TLS on every tunnel: expecting {name} with the {trust}");
    Ok(Config { tls: Some(tls), ..cfg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_part_is_the_default_server_name() {
        assert_eq!(host_of("mtmux.example.com:7000"), "mtmux.example.com");
        assert_eq!(host_of("203.0.113.5:7000"), "203.0.113.5");
        assert_eq!(host_of("[2001:db8::1]:7000"), "2001:db8::1");
    }
}
