//! The command line: subcommands, flags and their defaults.

use crate::units::{parse_duration, parse_size};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Carry TCP connections over a bundle of N TCP connections ("tunnels"), striping each
/// connection's bytes across all of them, and measure what that gains.
#[derive(Parser, Debug)]
// A flag given twice keeps its last value: the settings of --config FILE come first, so the
// command line overrides them.
#[command(name = "mtmux", version, propagate_version = true, max_term_width = 100, args_override_self = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Accept bundles from clients and connect every stream to --target.
    ///
    /// Listens on --listen's port range PORT..PORT+N-1 (one port per tunnel) or, with
    /// --single-port, on PORT alone. Every stream a client opens becomes one TCP connection to
    /// --target; the server never connects anywhere else.
    ///
    /// On an address other hosts can reach, the server needs a pre-shared key (--key-file or
    /// MTMUX_KEY) or TLS client certificates (--tls-client-ca), or --insecure: without one,
    /// anyone who can reach it gets a session with --target.
    #[command(
        after_help = "Example:\n  head -c 32 /dev/urandom | base64 > mtmux.key; chmod 600 mtmux.key\n  \
                            mtmux server --listen 0.0.0.0:7000 --tunnels 8 --target 127.0.0.1:5201 --key-file mtmux.key"
    )]
    Server(ServerArgs),
    /// Listen locally and carry every accepted connection as one stream to a server.
    ///
    /// Keeps one session (bundle of N tunnels) to --server. A lost tunnel is re-dialed and
    /// re-joined to the session, its frames re-sent on the others; when every tunnel is lost,
    /// both ends keep the session for --resume-timeout and forwarded connections just wait.
    /// Only when the session really ends does the client dial a new one, with backoff, while
    /// still accepting local connections.
    #[command(
        after_help = "Example: mtmux client --server 203.0.113.5:7000 --tunnels 8 --local 127.0.0.1:5201 \
                            --key-file mtmux.key"
    )]
    Client(ClientArgs),
    /// Measure throughput over N tunnels against one plain TCP connection.
    ///
    /// Without --server/--client, runs a bench server and client in this process over
    /// loopback. Prints every --interval the throughput of the session and of each tunnel,
    /// then a summary timed at the receiver, then the same transfer over one TCP connection.
    #[command(after_help = "Examples:\n  mtmux bench --tunnels 4 --streams 1 --duration 5s\n  \
                            mtmux bench --server 0.0.0.0:7000 --tunnels 8            (on one host)\n  \
                            mtmux bench --client 203.0.113.5:7000 --tunnels 8 --bytes 1G   (on the other)")]
    Bench(BenchArgs),
    /// Carry standard input and output as one stream of a forward (for ssh's ProxyCommand).
    ///
    /// Dials a session to SERVER, opens one stream named FORWARD (the server maps the name
    /// to its target, as for `[forward.FORWARD]` in its config), copies standard input into it
    /// and the stream to standard output, and exits when both directions have ended: 0 when
    /// both ended cleanly, 1 when the stream or session failed. Logs warnings only (on
    /// standard error) unless --verbose.
    #[command(after_help = "Example (ssh over 8 tunnels, no local port):\n  \
                            ssh -o ProxyCommand='mtmux connect --stdio 203.0.113.5:7000 ssh --key-file ~/.mtmux.key' user@host")]
    Connect(ConnectArgs),
}

/// Session settings shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct TunnelArgs {
    /// TCP connections per bundle (server: the most a client may open; also the size of the
    /// port range)
    #[arg(short = 'n', long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub tunnels: u16,
    /// All tunnels on one port instead of one port per tunnel (both ends must agree)
    #[arg(long)]
    pub single_port: bool,
    /// Keepalive ping period per tunnel
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub keepalive_interval: Duration,
    /// A tunnel silent this long is dead
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub keepalive_timeout: Duration,
    /// Time allowed to connect and hand-shake a whole bundle
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
}

/// Failover flags of `server` and `client`: what a session does when tunnels fail.
#[derive(Args, Debug, Clone, Copy)]
pub struct FailoverArgs {
    /// How long a session whose every tunnel is lost is kept, waiting for the client to
    /// re-dial (forwarded connections wait meanwhile; the server keeps the detached session
    /// that long). 0: the session ends with its last tunnel
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub resume_timeout: Duration,
    /// How long a stream waits for a missing frame before it fails
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub reorder_timeout: Duration,
    /// A tunnel that stops delivering for this long is stale: its frames are re-sent on the
    /// other tunnels and it gets no new ones until it moves again (at least 20ms) [default:
    /// derived from the round trip, 4 × the smoothed RTT and at least 250ms]
    #[arg(long, value_name = "DURATION", value_parser = parse_stale_timeout)]
    pub stale_timeout: Option<Duration>,
}

/// The pre-shared key of `server` and `client`.
#[derive(Args, Debug, Clone)]
pub struct KeyArgs {
    /// Read the pre-shared key from PATH: 16 to 1024 bytes, surrounding whitespace ignored
    /// (make one with `head -c 32 /dev/urandom | base64`). Both ends need the same key; every
    /// tunnel proves it knows the key without sending it. Instead of a file, the key may be
    /// in the MTMUX_KEY environment variable (never on the command line, where other users
    /// see it); --key-file wins when both are given
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
}

/// Operations flags of `server` and `client`: shutdown, stats output, metrics.
#[derive(Args, Debug, Clone)]
pub struct OpsArgs {
    /// On SIGTERM/SIGINT, stop accepting and let streams in progress finish for at most this
    /// long, then close and exit 0 (a second signal exits at once)
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Stats (--stats-interval) as log lines (`text`) or as one JSON object per line and
    /// interval on standard output or --stats-file (`json`)
    #[arg(long, value_enum, default_value_t = StatsFormat::Text)]
    pub stats_format: StatsFormat,
    /// Append JSON stats to this file instead of standard output
    #[arg(long, value_name = "PATH")]
    pub stats_file: Option<PathBuf>,
    /// Serve Prometheus metrics (text format, plain HTTP) on HOST:PORT, e.g.
    /// 127.0.0.1:9477; any path answers
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<String>,
}

/// How stats are written.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsFormat {
    Text,
    Json,
}

/// Logging flags.
#[derive(Args, Debug, Clone, Copy)]
pub struct LogArgs {
    /// Only warnings and errors
    #[arg(short, long)]
    pub quiet: bool,
    /// Also debug details
    #[arg(short, long, conflicts_with = "quiet")]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Read settings and forwards from a TOML file: keys are the long flags (`tunnels = 8`,
    /// `key-file = "..."`), `[forward.NAME] target = "HOST:PORT"` names a target, and
    /// `[reverse.NAME] listen = "HOST:PORT"` accepts connections carried to the client's
    /// `[reverse.NAME] target`. Flags override the file
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to accept tunnels on (HOST:PORT)
    #[arg(short, long, value_name = "HOST:PORT")]
    pub listen: String,
    /// The target of the forward named "default", the one a client with only --local uses
    /// (HOST:PORT); more forwards go in --config
    #[arg(short, long, value_name = "HOST:PORT")]
    pub target: Option<String>,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Listen on an address other hosts can reach without a key or TLS client certificates:
    /// anyone who can reach it gets a session with --target (without this flag the server
    /// refuses to start)
    #[arg(long)]
    pub insecure: bool,
    /// Most client sessions at once; a client beyond it is refused in its handshake (and
    /// told so). A bundle that never completes its handshake is no session and takes no slot;
    /// one waiting for its client to resume after an outage does
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions: u32,
    /// Most streams (forwarded connections) at once per session; more are reset at once
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,
    /// Most streams at once in all sessions together; more are reset at once. Each costs two
    /// threads and a connection to --target
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_total: u32,
    /// Most streams of one session being connected to --target at once; more are reset at
    /// once
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connecting: u32,
    /// Most streams of all sessions being connected to --target at once; more are reset at
    /// once
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connecting_total: u32,
    /// Most connections in their handshake at once; more are refused ("busy") at once
    #[arg(long, value_name = "N", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_handshakes: u32,
    /// Most connections in their handshake at once from one address (IPv6: one /64); more
    /// from it are refused ("busy") at once. Raise it when many clients share one address
    /// (NAT) [default: 2 × --tunnels or a quarter of --max-handshakes, whichever is more]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_handshakes_per_source: Option<u32>,
    /// Time allowed to connect to the target
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Log a stats line per session this often (0: never)
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub stats_interval: Duration,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub tunnel: TunnelArgs,
    #[command(flatten)]
    pub failover: FailoverArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub tls: ServerTlsArgs,
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// Read settings and forwards from a TOML file: keys are the long flags (`server =
    /// "HOST:PORT"`, `tunnels = 8`), `[forward.NAME] local = "HOST:PORT"` accepts connections
    /// for the server's forward NAME, `[reverse.NAME] target = "HOST:PORT"` is where the
    /// server's reverse forward NAME goes. Flags override the file
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The mtmux server (HOST:PORT, the first port of its range)
    #[arg(short, long, value_name = "HOST:PORT")]
    pub server: String,
    /// Local address to accept connections on for the forward named "default" (HOST:PORT);
    /// more forwards go in --config
    #[arg(short = 'L', long, value_name = "HOST:PORT")]
    pub local: Option<String>,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Most local connections carried at once
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,
    /// Longest wait between two attempts to re-dial the server (capped at half of
    /// --handshake-timeout; a new local connection during an outage re-dials at once)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub max_backoff: Duration,
    /// Keep trying when the server is unreachable at start (default: exit with an error)
    #[arg(long)]
    pub keep_trying: bool,
    /// Log a stats line this often (0: never)
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub stats_interval: Duration,
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub tunnel: TunnelArgs,
    #[command(flatten)]
    pub failover: FailoverArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// TLS flags of `server`: TLS 1.3 on every tunnel.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "TLS (every tunnel; clients need --tls-ca or --tls-fingerprint)")]
pub struct ServerTlsArgs {
    /// Serve TLS with this certificate chain (PEM: the server's certificate first, then any
    /// intermediate CAs)
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: accept only clients whose certificate this CA signed (PEM)
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

/// TLS flags of `client`: TLS 1.3 on every tunnel.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "TLS (every tunnel; the server needs --tls-cert and --tls-key)")]
#[command(group(ArgGroup::new("tls_trust").args(["tls_ca", "tls_fingerprint"])))]
pub struct ClientTlsArgs {
    /// Use TLS and trust a server whose certificate this CA signed (PEM) and names the server
    /// (see --tls-server-name)
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Use TLS and trust exactly the server certificate with this SHA-256 fingerprint (hex,
    /// plain or colon-separated: what `openssl x509 -noout -fingerprint -sha256` prints)
    #[arg(long, value_name = "HEX")]
    pub tls_fingerprint: Option<String>,
    /// The name the server's certificate must hold [default: the host of --server]
    #[arg(long, value_name = "NAME", requires = "tls_trust")]
    pub tls_server_name: Option<String>,
    /// Mutual TLS: present this certificate chain to the server (PEM)
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_trust"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM)
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

/// Which way the bench sends data.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server
    Up,
    /// Server to client
    Down,
    /// Both at once on every stream
    Both,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Both => "both",
        })
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Run only a bench server, listening on HOST:PORT, for `bench --client` on another host
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "client")]
    pub server: Option<String>,
    /// Run only the client, against a `bench --server` at HOST:PORT
    #[arg(long, value_name = "HOST:PORT")]
    pub client: Option<String>,
    /// Streams in the session, each sending its share at once
    #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub streams: u32,
    /// Bytes to send in each direction, all streams together (e.g. 500M, 2G, 256MiB)
    #[arg(short, long, value_parser = parse_size, conflicts_with = "duration")]
    pub bytes: Option<u64>,
    /// Send for this long instead of a byte count [default: 5s]
    #[arg(short, long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Which way data flows
    #[arg(long, value_enum, default_value_t = Direction::Up)]
    pub direction: Direction,
    /// Print throughput this often
    #[arg(short, long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Skip the plain TCP comparison
    #[arg(long)]
    pub no_baseline: bool,
    /// After the run, compare with plain TCP in this many interleaved pairs of short runs
    /// (mtmux, then one plain TCP connection); the ratio printed is their median
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// How long each comparison run lasts (with --bytes, each moves that many bytes)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub round_time: Duration,
    /// Print one JSON object with the results instead of the table and summary (bytes,
    /// seconds and MB/s each way, per-tunnel bytes, the baseline and the ratio)
    #[arg(long)]
    pub json: bool,
    /// Bench server: the port of the plain TCP baseline [default: the port after the tunnel
    /// ports, or any free port]
    #[arg(long, requires = "server")]
    pub tcp_port: Option<u16>,
    #[command(flatten)]
    pub tunnel: TunnelArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug)]
pub struct ConnectArgs {
    /// Read settings from a TOML file (as `client --config`; its forwards are ignored)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Carry standard input and output (the only mode so far; required)
    #[arg(long, required = true)]
    pub stdio: bool,
    /// The mtmux server (HOST:PORT, the first port of its range)
    #[arg(value_name = "SERVER")]
    pub server: String,
    /// The name of the server's forward to connect to ("default": its --target)
    #[arg(value_name = "FORWARD")]
    pub forward: String,
    #[command(flatten)]
    pub key: KeyArgs,
    #[command(flatten)]
    pub tunnel: TunnelArgs,
    #[command(flatten)]
    pub failover: FailoverArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

impl TunnelArgs {
    /// The library configuration these flags describe.
    pub fn config(&self, max_streams: usize) -> mtmux::Config {
        mtmux::Config {
            tunnels: self.tunnels as usize,
            single_port: self.single_port,
            keepalive_interval: self.keepalive_interval,
            keepalive_timeout: self.keepalive_timeout,
            handshake_timeout: self.handshake_timeout,
            max_streams,
            ..Default::default()
        }
    }
}

impl ServerArgs {
    /// The library configuration of the server's listener and sessions (the key aside).
    pub fn config(&self) -> mtmux::Config {
        mtmux::Config {
            max_pending_handshakes: self.max_handshakes as usize,
            max_handshakes_per_source: self.max_handshakes_per_source.map(|n| n as usize),
            ..self.failover.apply(self.tunnel.config(self.max_streams as usize))
        }
    }

    /// The server's bounds on the streams it carries.
    pub fn bounds(&self) -> crate::limits::Bounds {
        crate::limits::Bounds {
            connecting: self.max_connecting as usize,
            connecting_total: self.max_connecting_total as usize,
            streams: self.max_streams as usize,
            streams_total: self.max_streams_total as usize,
        }
    }
}

impl FailoverArgs {
    /// `cfg` with these settings.
    pub fn apply(&self, cfg: mtmux::Config) -> mtmux::Config {
        mtmux::Config {
            resume_timeout: self.resume_timeout,
            reorder_timeout: self.reorder_timeout,
            stale_timeout: self.stale_timeout,
            ..cfg
        }
    }
}

/// A duration greater than zero.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// A stale timeout: at least the library's minimum.
fn parse_stale_timeout(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < mtmux::MIN_STALE_TIMEOUT {
        return Err(format!("must be at least {}ms", mtmux::MIN_STALE_TIMEOUT.as_millis()));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("mtmux").chain(args.iter().copied()))
    }

    /// The configuration a `client` command line describes.
    fn client_config(extra: &[&str]) -> mtmux::Config {
        let mut args = vec!["client", "--server", "127.0.0.1:7000", "--local", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        match parse(&args).unwrap().command {
            Command::Client(a) => a.failover.apply(a.tunnel.config(a.max_streams as usize)),
            _ => unreachable!(),
        }
    }

    #[test]
    fn failover_defaults_keep_a_session_for_a_minute_and_derive_staleness() {
        let cfg = client_config(&[]);
        assert_eq!(cfg.resume_timeout, Duration::from_secs(60));
        assert_eq!(cfg.stale_timeout, None);
        assert_eq!(cfg.reorder_timeout, Duration::from_secs(10));
        assert!(cfg.rejoin);
        cfg.validate().unwrap();
    }

    #[test]
    fn failover_flags_set_the_config_on_server_and_client() {
        let cfg =
            client_config(&["--resume-timeout", "0", "--reorder-timeout", "2s", "--stale-timeout", "300ms"]);
        assert_eq!(cfg.resume_timeout, Duration::ZERO);
        assert_eq!(cfg.reorder_timeout, Duration::from_secs(2));
        assert_eq!(cfg.stale_timeout, Some(Duration::from_millis(300)));

        let server = ["server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"];
        let args = [&server[..], &["--resume-timeout", "5m", "--stale-timeout", "1s"]].concat();
        let Command::Server(a) = parse(&args).unwrap().command else { unreachable!() };
        let cfg = a.failover.apply(a.tunnel.config(a.max_streams as usize));
        assert_eq!(cfg.resume_timeout, Duration::from_secs(300));
        assert_eq!(cfg.stale_timeout, Some(Duration::from_secs(1)));
    }

    #[test]
    fn server_limit_and_key_flags_set_the_config_and_the_bounds() {
        use crate::limits::Bounds;
        let base = ["server", "--listen", "127.0.0.1:0", "--target", "127.0.0.1:9"];
        let Command::Server(a) = parse(&base).unwrap().command else { unreachable!() };
        let b = Bounds { connecting: 64, connecting_total: 256, streams: 1024, streams_total: 2048 };
        assert_eq!(a.bounds(), b);
        let cfg = a.config();
        assert_eq!((cfg.max_pending_handshakes, cfg.max_handshakes_per_source), (128, None));
        assert_eq!(cfg.handshakes_per_source(), 32);
        assert!(!a.insecure && a.key.key_file.is_none());
        cfg.validate().unwrap();

        let more = [
            "--max-handshakes",
            "64",
            "--max-handshakes-per-source",
            "16",
            "--max-connecting",
            "4",
            "--max-connecting-total",
            "8",
            "--max-streams",
            "20",
            "--max-streams-total",
            "30",
            "--key-file",
            "/etc/mtmux.key",
            "--insecure",
        ];
        let Command::Server(a) = parse(&[&base[..], &more].concat()).unwrap().command else { unreachable!() };
        let b = Bounds { connecting: 4, connecting_total: 8, streams: 20, streams_total: 30 };
        assert_eq!(a.bounds(), b);
        let cfg = a.config();
        assert_eq!((cfg.max_pending_handshakes, cfg.max_handshakes_per_source), (64, Some(16)));
        assert_eq!(cfg.max_streams, 20);
        assert!(a.insecure);
        assert_eq!(a.key.key_file.as_deref(), Some(std::path::Path::new("/etc/mtmux.key")));

        // A key never goes on the command line; limits are at least 1.
        for bad in
            [&["--key", "0123456789abcdef"][..], &["--max-connecting", "0"], &["--max-handshakes", "0"]]
        {
            assert!(parse(&[&base[..], bad].concat()).is_err(), "{bad:?}");
        }
        let client = ["client", "--server", "127.0.0.1:7000", "--local", "127.0.0.1:0", "--key-file", "k"];
        let Command::Client(a) = parse(&client).unwrap().command else { unreachable!() };
        assert_eq!(a.key.key_file.as_deref(), Some(std::path::Path::new("k")));
    }

    #[test]
    fn failover_flags_reject_values_that_cannot_work() {
        for (flag, value, says) in [
            ("--stale-timeout", "5ms", "at least 20ms"),
            ("--stale-timeout", "0", "at least 20ms"),
            ("--reorder-timeout", "0", "greater than zero"),
            ("--resume-timeout", "soon", "invalid duration 'soon'"),
            ("--resume-timeout", "400y", "longer than a year"),
        ] {
            let args = ["client", "--server", "127.0.0.1:7000", "--local", "127.0.0.1:0", flag, value];
            let msg = parse(&args).unwrap_err().to_string();
            assert!(msg.contains(flag) && msg.contains(says), "{flag} {value}: {msg}");
        }
    }
}
