//! The command line: subcommands, flags and their defaults.

use crate::units::{parse_duration, parse_size};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::time::Duration;

/// Carry TCP connections over a bundle of N TCP connections ("tunnels"), striping each
/// connection's bytes across all of them, and measure what that gains.
#[derive(Parser, Debug)]
#[command(name = "mtmux", version, propagate_version = true, max_term_width = 100)]
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
    #[command(
        after_help = "Example: mtmux server --listen 0.0.0.0:7000 --tunnels 8 --target 127.0.0.1:5201"
    )]
    Server(ServerArgs),
    /// Listen locally and carry every accepted connection as one stream to a server.
    ///
    /// Keeps one session (bundle of N tunnels) to --server; if it dies, re-dials with backoff
    /// while still accepting local connections.
    #[command(
        after_help = "Example: mtmux client --server 203.0.113.5:7000 --tunnels 8 --local 127.0.0.1:5201"
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
    /// Address to accept tunnels on (HOST:PORT)
    #[arg(short, long, value_name = "HOST:PORT")]
    pub listen: String,
    /// The one address every stream is connected to (HOST:PORT)
    #[arg(short, long, value_name = "HOST:PORT")]
    pub target: String,
    /// Most client sessions at once; more are closed at once
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_sessions: u32,
    /// Most streams (forwarded connections) at once per session
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,
    /// Time allowed to connect to the target
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Log a stats line per session this often (0: never)
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub stats_interval: Duration,
    #[command(flatten)]
    pub tunnel: TunnelArgs,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The mtmux server (HOST:PORT, the first port of its range)
    #[arg(short, long, value_name = "HOST:PORT")]
    pub server: String,
    /// Local address to accept connections on (HOST:PORT)
    #[arg(short = 'L', long, value_name = "HOST:PORT")]
    pub local: String,
    /// Most local connections carried at once
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams: u32,
    /// Longest wait between two attempts to re-dial the server
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub max_backoff: Duration,
    /// Keep trying when the server is unreachable at start (default: exit with an error)
    #[arg(long)]
    pub keep_trying: bool,
    /// Log a stats line this often (0: never)
    #[arg(long, value_name = "DURATION", default_value = "0", value_parser = parse_duration)]
    pub stats_interval: Duration,
    #[command(flatten)]
    pub tunnel: TunnelArgs,
    #[command(flatten)]
    pub log: LogArgs,
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
    /// Bench server: the port of the plain TCP baseline [default: the port after the tunnel
    /// ports, or any free port]
    #[arg(long, requires = "server")]
    pub tcp_port: Option<u16>,
    #[command(flatten)]
    pub tunnel: TunnelArgs,
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
