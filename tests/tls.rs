//! TLS on every tunnel (feature `tls`).
