//! The library's configuration errors in the CLI's words: `keepalive_timeout (30s) must be
//! longer than keepalive_interval (40s)` becomes `--keepalive-timeout (30s) must be longer than
//! --keepalive-interval (40s)`, and where the value came from `--config FILE`, the line says
//! so (`--keepalive-timeout (keepalive-timeout in FILE)`).

use crate::config::File;

/// Every [`mtmux::Config`] field a flag sets, with that flag. Fields no flag sets keep their
/// defaults, which are valid, so the library never names them to a CLI user.
pub const FIELDS: [(&str, &str); 11] = [
    ("tunnels", "--tunnels"),
    ("single_port", "--single-port"),
    ("keepalive_interval", "--keepalive-interval"),
    ("keepalive_timeout", "--keepalive-timeout"),
    ("handshake_timeout", "--handshake-timeout"),
    ("reorder_timeout", "--reorder-timeout"),
    ("stale_timeout", "--stale-timeout"),
    ("resume_timeout", "--resume-timeout"),
    ("max_streams", "--max-streams"),
    ("max_pending_handshakes", "--max-handshakes"),
    ("max_handshakes_per_source", "--max-handshakes-per-source"),
];

/// Listener settings the library's refusal notes name ([`mtmux::Listener::next_refusal`]),
/// with the server's flag.
pub const LISTENER: [(&str, &str); 1] = [("max_sessions", "--max-sessions")];

/// `message` (the library's text of a configuration error or refusal) with every field name replaced by
/// its flag, and the library's `None` by the flag's absence. `file`: the `--config` file, for
/// the flags it set.
pub fn in_flag_terms(message: &str, file: Option<&File>) -> String {
    let message = message
        .replace(
            "(or None to derive it from the round trip)",
            "(or leave it out to derive it from the round trip)",
        )
        .replace("(or None to derive it)", "(or leave it out to derive it)");
    let mut out = String::with_capacity(message.len() + 16);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        match FIELDS.iter().chain(&LISTENER).find(|(field, _)| *field == word.as_str()) {
            Some((_, flag)) => {
                out.push_str(flag);
                let key = &flag[2..];
                if let Some(f) = file.filter(|f| f.sets(key)) {
                    out.push_str(&format!(" ({key} in {})", f.path.display()));
                }
            }
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in message.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Cli;
    use clap::CommandFactory;
    use std::time::Duration;

    /// Every flag of the table exists on `server` (the subcommand with them all).
    #[test]
    fn every_flag_of_the_table_exists() {
        let cmd = Cli::command();
        let server = cmd.find_subcommand("server").expect("server");
        let longs: Vec<String> =
            server.get_arguments().filter_map(|a| a.get_long()).map(|l| format!("--{l}")).collect();
        for (field, flag) in FIELDS {
            assert!(longs.iter().any(|l| l == flag), "{field}: no flag {flag} on server");
        }
    }

    /// Each field a flag sets, set to a value the library refuses: its message names the flag
    /// and no field name.
    #[test]
    fn every_field_the_library_names_becomes_its_flag() {
        let s = Duration::from_secs;
        let d = mtmux::Config::default;
        let bad: Vec<(&str, mtmux::Config)> = vec![
            ("--tunnels", mtmux::Config { tunnels: 0, ..d() }),
            ("--keepalive-interval", mtmux::Config { keepalive_interval: Duration::ZERO, ..d() }),
            (
                "--keepalive-timeout",
                mtmux::Config { keepalive_interval: s(40), keepalive_timeout: s(30), ..d() },
            ),
            ("--handshake-timeout", mtmux::Config { handshake_timeout: Duration::ZERO, ..d() }),
            ("--reorder-timeout", mtmux::Config { reorder_timeout: Duration::ZERO, ..d() }),
            ("--stale-timeout", mtmux::Config { stale_timeout: Some(Duration::from_millis(1)), ..d() }),
            ("--resume-timeout", mtmux::Config { resume_timeout: s(31 * 24 * 3600), ..d() }),
            ("--max-streams", mtmux::Config { max_streams: 0, ..d() }),
            ("--max-handshakes", mtmux::Config { max_pending_handshakes: 0, ..d() }),
            ("--max-handshakes-per-source", mtmux::Config { max_handshakes_per_source: Some(0), ..d() }),
        ];
        for (flag, cfg) in bad {
            let e = cfg.validate().expect_err(flag).to_string();
            let line = in_flag_terms(&e, None);
            assert!(line.contains(flag), "{flag}: {line}");
            let mut rest = line.clone();
            for (_, flag) in FIELDS {
                rest = rest.replace(flag, "");
            }
            let words: Vec<&str> = rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).collect();
            for (field, _) in FIELDS {
                assert!(!words.contains(&field), "{flag}: field {field} left in {line:?}");
            }
            assert!(!line.contains("None"), "{flag}: {line}");
        }
        // single_port appears in no message of validate (it cannot be wrong on its own), but
        // in the table all the same, for messages that name it.
        assert_eq!(in_flag_terms("single_port differs", None), "--single-port differs");
    }

    #[test]
    fn only_whole_words_are_replaced_and_a_file_setting_is_named() {
        assert_eq!(
            in_flag_terms("keepalive_timeout (30s) must be longer than keepalive_interval (40s)", None),
            "--keepalive-timeout (30s) must be longer than --keepalive-interval (40s)"
        );
        assert_eq!(
            in_flag_terms("max_streams_x and xmax_streams stay", None),
            "max_streams_x and xmax_streams stay"
        );
        assert_eq!(
            in_flag_terms("refused 127.0.0.1:9: at the session limit (4, max_sessions)", None),
            "refused 127.0.0.1:9: at the session limit (4, --max-sessions)"
        );
        let file = File::for_test("/etc/mtmux.toml", &["keepalive-timeout"]);
        assert_eq!(
            in_flag_terms(
                "keepalive_timeout (30s) must be longer than keepalive_interval (40s)",
                Some(&file)
            ),
            "--keepalive-timeout (keepalive-timeout in /etc/mtmux.toml) (30s) must be longer than \
             --keepalive-interval (40s)"
        );
    }
}
