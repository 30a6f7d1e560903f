//! Log lines on standard error: `2026-05-01T10:00:00.123Z INFO  session 1 up: ...`.
//! `--quiet` keeps warnings and errors, `--verbose` adds debug lines; `MTMUX_LOG` (e.g.
//! `debug`) overrides both.

use crate::args::LogArgs;
use log::LevelFilter;
use std::io::Write;

/// Install the logger for the whole process.
pub fn init(args: LogArgs) {
    install(if args.quiet {
        LevelFilter::Warn
    } else if args.verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    })
}

/// The same for a command whose standard error another program shows (`connect --stdio`
/// under ssh): warnings only, unless --verbose.
pub fn init_quiet_by_default(args: LogArgs) {
    install(if args.verbose { LevelFilter::Debug } else { LevelFilter::Warn })
}

fn install(level: LevelFilter) {
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("MTMUX_LOG")
        .format(|buf, record| {
            writeln!(buf, "{} {:<5} {}", buf.timestamp_millis(), record.level(), record.args())
        })
        .init();
}
