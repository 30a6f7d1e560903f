//! `mtmux`: forward TCP services over a bundle of tunnels (`server`, `client`) and measure
//! the gain (`bench`). See `mtmux --help`.

mod args;
mod bench;
mod client;
mod config;
mod connect;
mod events;
mod flags;
mod forward;
mod limits;
mod logging;
mod metrics;
mod net;
mod order;
mod pipe;
mod refusals;
mod reverse;
mod security;
mod server;
mod signals;
mod stats;
mod tls;
mod units;

use clap::{CommandFactory, FromArgMatches};
use std::fmt;
use std::process::ExitCode;

/// A failure that ends the command: printed as one line, then exit code 1 (2 for misuse).
#[derive(Debug)]
pub struct Fatal {
    msg: String,
    usage: bool,
}

impl Fatal {
    /// A runtime failure (unreachable address, port in use, ...).
    pub fn new(msg: impl Into<String>) -> Fatal {
        Fatal { msg: msg.into(), usage: false }
    }

    /// A bad value on the command line that the parser could not catch.
    pub fn usage(msg: impl Into<String>) -> Fatal {
        Fatal { msg: msg.into(), usage: true }
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

/// Check a configuration assembled from flags (and `file`, the `--config` file): a bad one is
/// a usage error whose text names the flags ([`flags::in_flag_terms`]).
pub fn validated(cfg: mtmux::Config, file: Option<&config::File>) -> Result<mtmux::Config, Fatal> {
    cfg.validate().map_err(|e| Fatal::usage(flags::in_flag_terms(&e.to_string(), file)))?;
    Ok(cfg)
}

/// Why a session ended: its close reason, or else the error that reported the end. `Err` for
/// the reasons worth a warning (tunnels lost, protocol violation).
pub fn end_reason(session: &mtmux::Session, err: &mtmux::Error) -> Result<String, String> {
    use mtmux::CloseReason;
    let reason = match (session.close_reason(), err) {
        (Some(r), _) => r,
        (None, mtmux::Error::SessionClosed(r)) => r.clone(),
        (None, e) => return Err(e.to_string()),
    };
    match reason {
        CloseReason::Local | CloseReason::Peer => Ok(reason.to_string()),
        _ => Err(reason.to_string()),
    }
}

/// The library's text when the session ended as [`mtmux::CloseReason::Expired`] (every
/// tunnel lost and not resumed in time, or the server no longer knows it).
pub fn expired(session: &mtmux::Session, err: &mtmux::Error) -> Option<String> {
    let reason = session.close_reason().or_else(|| match err {
        mtmux::Error::SessionClosed(r) => Some(r.clone()),
        _ => None,
    });
    match reason {
        Some(mtmux::CloseReason::Expired(why)) => Some(why),
        _ => None,
    }
}

/// Start a named thread; when the system refuses, log it and go on (the work is dropped,
/// which closes its connections).
pub fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    // Small stacks: threads are per stream, and their buffers are on the heap.
    let spawned = std::thread::Builder::new().name(name.into()).stack_size(256 * 1024).spawn(f);
    if let Err(e) = spawned {
        log::warn!("cannot start thread {name}: {e}");
    }
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("mtmux: internal error{at}: {what}");
    }));
    let (argv, file) = match config::expand(std::env::args_os().collect(), long_flags) {
        Ok(x) => x,
        Err(e) => return fatal(e),
    };
    let cli =
        match args::Cli::command().try_get_matches_from(argv).and_then(|m| args::Cli::from_arg_matches(&m)) {
            Ok(cli) => cli,
            Err(e) => return usage_error(e),
        };
    let result = match cli.command {
        args::Command::Server(a) => {
            logging::init(a.log);
            server::run(a, file)
        }
        args::Command::Client(a) => {
            logging::init(a.log);
            client::run(a, file)
        }
        args::Command::Connect(a) => {
            logging::init_quiet_by_default(a.log);
            connect::run(a, file.as_ref())
        }
        args::Command::Bench(a) => {
            logging::init(a.log);
            bench::run(a)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(e),
    }
}

fn fatal(e: Fatal) -> ExitCode {
    eprintln!("mtmux: error: {e}");
    ExitCode::from(if e.usage { 2 } else { 1 })
}

/// The long flags of subcommand `sub` (what a config file may set).
fn long_flags(sub: &str) -> Vec<String> {
    let cmd = args::Cli::command();
    cmd.find_subcommand(sub)
        .map(|c| c.get_arguments().filter_map(|a| a.get_long()).map(String::from).collect())
        .unwrap_or_default()
}

/// Help and version go to stdout with success; a misuse is one line on stderr and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(2);
    }
    // clap's first paragraph, on one line (it lists missing arguments on lines of their own).
    let rendered = e.render().to_string();
    let first: Vec<&str> = rendered.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    let first = first.join(" ");
    let first = first.strip_prefix("error: ").unwrap_or(&first);
    // Point at the subcommand's help when there is one.
    let sub =
        std::env::args().nth(1).filter(|s| ["server", "client", "bench", "connect"].contains(&s.as_str()));
    let help = match sub {
        Some(s) => format!("mtmux {s} --help"),
        None => "mtmux --help".into(),
    };
    eprintln!("mtmux: error: {first} (see '{help}')");
    ExitCode::from(2)
}
