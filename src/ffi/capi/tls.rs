//! The `tls_` fields of `mtmux_config`: file names and strings that become a
//! [`TlsConfig`](crate::tls::TlsConfig) when the config is used. The same fields mean
//! different things on a listener and when dialing (see `mtmux_config`).

use super::*;

/// What a C config is used for.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "tls"), allow(dead_code))]
pub(super) enum Use<'a> {
    /// `mtmux_listen`.
    Listen,
    /// `mtmux_dial` of an address whose host part is `host` (the default server name).
    Dial { host: &'a str },
    /// `mtmux_config_validate`: whichever use the fields describe.
    Check,
}

/// The host part of `"host:port"` (`"[v6]:port"` too).
pub(super) fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// The names of the fields that are set.
fn set_fields(c: &mtmux_config) -> Vec<&'static str> {
    let fields = [
        ("tls_cert_file", c.tls_cert_file),
        ("tls_key_file", c.tls_key_file),
        ("tls_ca_file", c.tls_ca_file),
        ("tls_fingerprint", c.tls_fingerprint),
        ("tls_server_name", c.tls_server_name),
    ];
    fields.iter().filter(|(_, p)| !p.is_null()).map(|(n, _)| *n).collect()
}

/// Without the `tls` feature: any `tls_` field set is an error.
///
/// # Safety
/// Nothing is dereferenced.
#[cfg(not(feature = "tls"))]
pub(super) unsafe fn tls_from_c(c: &mtmux_config, _use: Use<'_>) -> Res<()> {
    match set_fields(c).first() {
        None => Ok(()),
        Some(name) => Err(failure(
            MTMUX_ERR_INVALID_CONFIG,
            format!(
                "invalid configuration: {name} is set, but this mtmux library was built without TLS \
                 (cargo feature tls)"
            ),
        )),
    }
}

#[cfg(feature = "tls")]
pub(super) use with_tls::tls_from_c;

#[cfg(feature = "tls")]
mod with_tls {
    use super::*;
    use crate::tls::TlsConfig;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    /// The fields, read.
    struct Fields<'a> {
        cert: Option<&'a Path>,
        key: Option<&'a Path>,
        ca: Option<&'a Path>,
        fingerprint: Option<&'a str>,
        server_name: Option<&'a str>,
    }

    fn invalid(msg: &str) -> Error {
        Error::InvalidConfig(format!("tls: {msg}"))
    }

    /// # Safety
    /// `p` is NULL or a NUL-terminated string that outlives `'a`.
    unsafe fn path<'a>(p: *const c_char) -> Option<&'a Path> {
        // Safety: this function's contract.
        (!p.is_null())
            .then(|| Path::new(std::ffi::OsStr::from_bytes(unsafe { CStr::from_ptr(p) }.to_bytes())))
    }

    /// # Safety
    /// `p` is NULL or a NUL-terminated string that outlives `'a`.
    unsafe fn text<'a>(p: *const c_char, name: &str) -> Res<Option<&'a str>> {
        // Safety: this function's contract.
        (!p.is_null()).then(|| unsafe { utf8(p, name) }).transpose()
    }

    /// A listener: a certificate and key, and a CA for mutual TLS.
    fn listen(f: &Fields<'_>) -> Result<TlsConfig, Error> {
        if f.fingerprint.is_some() || f.server_name.is_some() {
            return Err(invalid(
                "tls_fingerprint and tls_server_name are for dialing; a listener uses tls_cert_file, \
                 tls_key_file and (to require client certificates) tls_ca_file",
            ));
        }
        let (Some(cert), Some(key)) = (f.cert, f.key) else {
            return Err(invalid("a TLS listener needs both tls_cert_file and tls_key_file"));
        };
        let t = TlsConfig::server_from_files(cert, key)?;
        match f.ca {
            Some(ca) => t.with_client_ca_file(ca),
            None => Ok(t),
        }
    }

    /// Dialing: a CA or a fingerprint, the server name, and a certificate for mutual TLS.
    fn dial(f: &Fields<'_>, host: Option<&str>) -> Result<TlsConfig, Error> {
        let t =
            match (f.ca, f.fingerprint) {
                (Some(ca), None) => TlsConfig::client_from_file(ca)?,
                (None, Some(fp)) => TlsConfig::client_pinned(fp)?,
                (Some(_), Some(_)) => return Err(invalid("set tls_ca_file or tls_fingerprint, not both")),
                (None, None) => return Err(invalid(
                    "dialing with TLS needs tls_ca_file (the CA that signed the server's certificate) or \
                     tls_fingerprint (the server certificate's SHA-256) to check the server",
                )),
            };
        let t = match f.server_name.or(host) {
            Some(name) => t.with_server_name(name)?,
            None => t,
        };
        match (f.cert, f.key) {
            (Some(cert), Some(key)) => t.with_client_cert_files(cert, key),
            (None, None) => Ok(t),
            _ => Err(invalid("tls_cert_file and tls_key_file go together")),
        }
    }

    /// The TLS configuration the `tls_` fields of `c` describe for `use_`; `None` when none
    /// is set.
    ///
    /// # Safety
    /// Each `tls_` field of `c` is NULL or a NUL-terminated string.
    pub(in super::super) unsafe fn tls_from_c(c: &mtmux_config, use_: Use<'_>) -> Res<Option<TlsConfig>> {
        if set_fields(c).is_empty() {
            return Ok(None);
        }
        // Safety: this function's contract; the strings outlive this call.
        let f = unsafe {
            Fields {
                cert: path(c.tls_cert_file),
                key: path(c.tls_key_file),
                ca: path(c.tls_ca_file),
                fingerprint: text(c.tls_fingerprint, "tls_fingerprint")?,
                server_name: text(c.tls_server_name, "tls_server_name")?,
            }
        };
        let t = match use_ {
            Use::Listen => listen(&f),
            Use::Dial { host } => dial(&f, Some(host)),
            Use::Check => {
                let dials = f.fingerprint.is_some()
                    || f.server_name.is_some()
                    || (f.ca.is_some() && f.cert.is_none());
                if dials {
                    dial(&f, None)
                } else {
                    listen(&f)
                }
            }
        };
        Ok(Some(t?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_the_feature_tls_fields_are_refused() {
        let mut c = config_to_c(&Config::default());
        c.tls_ca_file = c"ca.pem".as_ptr();
        let f = config_from_c(Some(&c), Use::Check).expect_err("refused");
        assert_eq!(f.code, MTMUX_ERR_INVALID_CONFIG);
        assert!(f.message.contains("tls_ca_file is set, but this mtmux library was built without TLS"));
    }

    #[test]
    fn host_parts() {
        assert_eq!(host_of("example.com:7000"), "example.com");
        assert_eq!(host_of("127.0.0.1:7000"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7000"), "::1");
        assert_eq!(host_of("nohost"), "nohost");
    }
}
