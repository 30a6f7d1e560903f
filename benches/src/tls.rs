//! What TLS costs: one stream over 4 tunnels on loopback, TLS 1.3 tunnels against plain TCP
//! tunnels, in one run: the two alternate round by round (ABBA), each round a fresh session
//! pair. Throughput is timed at the receiver; CPU is the process's (both ends) per GiB moved.
//!
//! `mtmux-bench tls [--quick] [--rounds N] [--out FILE]` (`make bench-tls`) writes the
//! section `tls` of benches/RESULTS.md.

use crate::loopback::bulk_mux_with;
use crate::report::{median, write_section};
use crate::{log, usage};
use mtmux::tls::TlsConfig;
use mtmux::Config;

const TUNNELS: usize = 4;

/// Server and client configurations with TLS (a CA and a certificate for 127.0.0.1).
fn tls_configs() -> (Config, Config) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = p.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca, &ca_key)
        .expect("certificate");
    let base = Config { tunnels: TUNNELS, ..Default::default() };
    let server =
        TlsConfig::server(leaf.pem().as_bytes(), key.serialize_pem().as_bytes()).expect("server TLS");
    let client = TlsConfig::client(ca.pem().as_bytes()).expect("client TLS");
    (Config { tls: Some(server), ..base.clone() }, Config { tls: Some(client), ..base })
}

/// One transfer: (MB/s, CPU seconds per GiB).
fn measure(server: &Config, client: &Config, total: u64) -> (f64, f64) {
    let (c0, _, _) = usage();
    let speed = bulk_mux_with(server, client, total);
    let (c1, _, _) = usage();
    (speed, (c1 - c0) / (total as f64 / (1u64 << 30) as f64))
}

fn range(v: &[f64], digits: usize) -> String {
    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.digits$}–{hi:.digits$}")
}

/// The 1-minute load average (how busy the shared machine was).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(String::from))
        .unwrap_or_else(|| "?".into())
}

pub fn run(rounds: usize, quick: bool, out: &str) {
    let total: u64 = if quick { 256 << 20 } else { 1 << 30 };
    let load_before = load();
    let plain = Config { tunnels: TUNNELS, ..Default::default() };
    let (tls_server, tls_client) = tls_configs();
    log(&format!(
        "tls: 1 stream, {} MiB, {TUNNELS} tunnels, plain vs TLS, {rounds} rounds (ABBA)",
        total >> 20
    ));
    let (mut p, mut t) = (Vec::new(), Vec::new());
    for r in 0..rounds {
        // A B, then B A: each side goes first as often as the other.
        let plain_first = r % 2 == 0;
        for k in 0..2 {
            if (k == 0) == plain_first {
                let m = measure(&plain, &plain, total);
                log(&format!("  round {}: plain {:.0} MB/s, {:.2} CPU s/GiB", r + 1, m.0, m.1));
                p.push(m);
            } else {
                let m = measure(&tls_server, &tls_client, total);
                log(&format!("  round {}: TLS   {:.0} MB/s, {:.2} CPU s/GiB", r + 1, m.0, m.1));
                t.push(m);
            }
        }
    }
    let speed = |v: &[(f64, f64)]| v.iter().map(|m| m.0).collect::<Vec<_>>();
    let cpu = |v: &[(f64, f64)]| v.iter().map(|m| m.1).collect::<Vec<_>>();
    let ratio: Vec<f64> = p.iter().zip(&t).map(|(a, b)| b.0 / a.0).collect();
    let cpu_ratio: Vec<f64> = p.iter().zip(&t).map(|(a, b)| b.1 / a.1).collect();
    let (ps, ts, pc, tc) = (speed(&p), speed(&t), cpu(&p), cpu(&t));
    let md = format!(
        "## Cost of TLS\n\n\
         Produced by `make bench-tls` (`mtmux-bench tls{}`): one stream, {} MiB, over {TUNNELS} tunnels on \
         loopback, plain TCP tunnels and TLS 1.3 tunnels (rustls with ring, \
         TLS13_AES_256_GCM_SHA384, its first choice) alternating round by round (ABBA), {rounds} rounds, a fresh session \
         pair each. Medians (range); \"TLS ÷ plain\" pairs the rounds. CPU is the process's user + \
         system time (both ends) per GiB moved, the steadier figure here: the machine is a \
         shared, noisy 2-core VM (1-minute load average {} before the run, {} after).\n\n\
         | tunnels | plain MB/s | TLS MB/s | TLS ÷ plain (paired) | plain CPU s/GiB | TLS CPU s/GiB | TLS ÷ plain CPU (paired) |\n\
         |---|---|---|---|---|---|---|\n\
         | {TUNNELS} | {:.0} ({}) | {:.0} ({}) | {:.2} ({}) | {:.2} ({}) | {:.2} ({}) | {:.2} ({}) |\n",
        if quick { " --quick" } else { "" },
        total >> 20,
        load_before,
        load(),
        median(&ps),
        range(&ps, 0),
        median(&ts),
        range(&ts, 0),
        median(&ratio),
        range(&ratio, 2),
        median(&pc),
        range(&pc, 2),
        median(&tc),
        range(&tc, 2),
        median(&cpu_ratio),
        range(&cpu_ratio, 2),
    );
    println!("\n{md}");
    match write_section(out, "tls", &md) {
        Ok(()) => log(&format!("TLS section written to {out}")),
        Err(e) => log(&format!("cannot write {out}: {e}")),
    }
}
