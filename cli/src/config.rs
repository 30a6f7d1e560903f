//! `--config FILE`: a TOML file with the same settings as the flags, plus the named forwards.
//!
//! Top-level keys are the long flags without their dashes (`tunnels = 8`,
//! `key-file = "/etc/mtmux/key"`, `keepalive-timeout = "30s"`, `single-port = true`); they are
//! turned into flags placed before the command line's, so every value is checked exactly as
//! a flag is and a flag given on the command line overrides the file. The tables
//! `[forward.NAME]` and `[reverse.NAME]` describe forwards:
//!
//! | section            | `server`                   | `client`                    |
//! |--------------------|----------------------------|-----------------------------|
//! | `[forward.NAME]`   | `target = "HOST:PORT"`     | `local = "HOST:PORT"`       |
//! | `[reverse.NAME]`   | `listen = "HOST:PORT"`     | `target = "HOST:PORT"`      |

use crate::forward::{check_name, DEFAULT};
use crate::Fatal;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

/// The subcommands that take `--config`.
const WITH_CONFIG: [&str; 3] = ["server", "client", "connect"];

/// Flags a file may not set.
const NOT_IN_FILE: [&str; 3] = ["config", "help", "version"];

/// A loaded config file: its path and its forward tables (the other keys became flags).
#[derive(Debug, Default)]
pub struct File {
    pub path: PathBuf,
    tables: toml::Table,
    /// The top-level keys (flags without `--`) whose value comes from the file: set there and
    /// not given again on the command line.
    keys: Vec<String>,
}

/// `[forward.NAME]` of a server: where streams of that name go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerForward {
    pub target: String,
}

/// `[reverse.NAME]` of a server: where it accepts connections for the client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerReverse {
    pub listen: String,
}

/// `[forward.NAME]` of a client: where it accepts connections for the server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientForward {
    pub local: String,
}

/// `[reverse.NAME]` of a client: where streams the server opens under that name go.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientReverse {
    pub target: String,
}

/// Forwards and reverse forwards by name.
pub type Named<F, R> = (BTreeMap<String, F>, BTreeMap<String, R>);

/// The two tables, with the forward type of one side.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tables<F, R> {
    #[serde(default = "BTreeMap::new")]
    forward: BTreeMap<String, F>,
    #[serde(default = "BTreeMap::new")]
    reverse: BTreeMap<String, R>,
}

impl File {
    /// Whether the value of flag `--KEY` comes from this file.
    pub fn sets(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k == key)
    }

    /// A file at `path` that set `keys` (for tests).
    #[cfg(test)]
    pub fn for_test(path: &str, keys: &[&str]) -> File {
        File {
            path: path.into(),
            tables: toml::Table::new(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    /// The `[forward.*]` and `[reverse.*]` tables as `F` and `R`, names checked.
    pub fn forwards<F: DeserializeOwned, R: DeserializeOwned>(&self) -> Result<Named<F, R>, Fatal> {
        let t: Tables<F, R> = toml::Value::Table(self.tables.clone())
            .try_into()
            .map_err(|e| Fatal::usage(format!("--config {}: {}", self.path.display(), one_line(&e))))?;
        for name in t.forward.keys().chain(t.reverse.keys()) {
            check_name(name).map_err(|e| Fatal::usage(format!("--config {}: {e}", self.path.display())))?;
        }
        Ok((t.forward, t.reverse))
    }
}

/// Forwards from the file (`file`, maybe none) plus the one a flag gives (`flag`), which is
/// named [`DEFAULT`] and replaces a file's `default`.
pub fn merge(file: BTreeMap<String, String>, flag: Option<&str>) -> BTreeMap<String, String> {
    let mut all = file;
    if let Some(addr) = flag {
        all.insert(DEFAULT.into(), addr.into());
    }
    all
}

fn one_line(e: &impl std::fmt::Display) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    lines.join(" ")
}

/// Expand `--config FILE` in `argv`: the file's top-level keys become flags right after the
/// subcommand (so that later flags win). Returns the new argv and the file, if one was given.
/// `long_flags(sub)` lists the long flags of subcommand `sub`.
pub fn expand(
    argv: Vec<OsString>,
    long_flags: impl Fn(&str) -> Vec<String>,
) -> Result<(Vec<OsString>, Option<File>), Fatal> {
    let Some(sub) = argv.get(1).and_then(|s| s.to_str()).filter(|s| WITH_CONFIG.contains(s)) else {
        return Ok((argv, None));
    };
    let Some(path) = find_config(&argv[2..]) else { return Ok((argv, None)) };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Fatal::usage(format!("--config {}: cannot read it: {e}", path.display())))?;
    let (flags, tables) = to_flags(&text, &long_flags(sub))
        .map_err(|e| Fatal::usage(format!("--config {}: {e}", path.display())))?;
    let given = |key: &str| {
        argv[2..].iter().map(|a| a.to_string_lossy()).take_while(|a| a != "--").any(|a| {
            a.strip_prefix("--")
                .and_then(|rest| rest.strip_prefix(key))
                .is_some_and(|tail| tail.is_empty() || tail.starts_with('='))
        })
    };
    let keys = flags
        .iter()
        .filter_map(|f| f.strip_prefix("--").map(|k| k.split('=').next().unwrap_or(k).to_string()))
        .filter(|k| !given(k))
        .collect();
    let mut out = argv[..2].to_vec();
    out.extend(flags.into_iter().map(OsString::from));
    out.extend_from_slice(&argv[2..]);
    Ok((out, Some(File { path, tables, keys })))
}

/// The value of `--config` among a subcommand's arguments.
fn find_config(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            return None;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// The file's top-level keys as flags (`--tunnels=8`), and its `forward`/`reverse` tables.
fn to_flags(text: &str, known: &[String]) -> Result<(Vec<String>, toml::Table), String> {
    let table: toml::Table = text.parse().map_err(|e| one_line(&e))?;
    let mut flags = Vec::new();
    let mut tables = toml::Table::new();
    for (key, value) in table {
        if key == "forward" || key == "reverse" {
            tables.insert(key, value);
            continue;
        }
        if NOT_IN_FILE.contains(&key.as_str()) || !known.contains(&key) {
            return Err(format!(
                "unknown key '{key}' (keys are the long flags without '--', e.g. tunnels, key-file; \
                 forwards go in [forward.NAME] and [reverse.NAME])"
            ));
        }
        match value {
            toml::Value::String(s) => flags.push(format!("--{key}={s}")),
            toml::Value::Integer(n) => flags.push(format!("--{key}={n}")),
            toml::Value::Boolean(true) => flags.push(format!("--{key}")),
            toml::Value::Boolean(false) => {}
            other => {
                return Err(format!(
                    "'{key}' must be a string, a number or true/false, not {}",
                    other.type_str()
                ))
            }
        }
    }
    Ok((flags, tables))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<String> {
        ["tunnels", "key-file", "single-port", "listen", "keepalive-timeout", "config"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn top_level_keys_become_flags_and_tables_are_kept() {
        let text = r#"
            listen = "0.0.0.0:7000"
            tunnels = 4
            single-port = true
            keepalive-timeout = "20s"
            [forward.web]
            target = "127.0.0.1:80"
            [reverse.back]
            listen = "127.0.0.1:9000"
        "#;
        let (flags, tables) = to_flags(text, &known()).unwrap();
        assert_eq!(
            flags,
            ["--keepalive-timeout=20s", "--listen=0.0.0.0:7000", "--single-port", "--tunnels=4"]
        );
        let file = File { path: "s.toml".into(), tables, keys: Vec::new() };
        let (f, r) = file.forwards::<ServerForward, ServerReverse>().unwrap();
        assert_eq!(f["web"].target, "127.0.0.1:80");
        assert_eq!(r["back"].listen, "127.0.0.1:9000");
    }

    #[test]
    fn mistakes_in_the_file_are_named() {
        for (text, says) in [
            ("tunels = 4", "unknown key 'tunels'"),
            ("config = \"x\"", "unknown key 'config'"),
            ("tunnels = [4]", "'tunnels' must be a string, a number or true/false"),
            ("tunnels = ", "expected"),
        ] {
            let e = to_flags(text, &known()).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        let (_, tables) = to_flags("[forward.web]\nlocal = \"127.0.0.1:1\"", &known()).unwrap();
        let file = File { path: "s.toml".into(), tables, keys: Vec::new() };
        let e = file.forwards::<ServerForward, ServerReverse>().unwrap_err().to_string();
        assert!(e.contains("unknown field `local`") && e.contains("s.toml"), "{e}");
        let (_, tables) = to_flags("[forward.\"a b\"]\ntarget = \"127.0.0.1:1\"", &known()).unwrap();
        let e = File { path: "s.toml".into(), tables, keys: Vec::new() }
            .forwards::<ServerForward, ServerReverse>()
            .unwrap_err();
        assert!(e.to_string().contains("may only contain"), "{e}");
    }

    #[test]
    fn the_file_goes_before_the_command_line_so_flags_win() {
        let dir = std::env::temp_dir().join(format!("mtmux-config-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "tunnels = 4\n").unwrap();
        let argv: Vec<OsString> = ["mtmux", "server", "--config", path.to_str().unwrap(), "--tunnels", "2"]
            .map(OsString::from)
            .to_vec();
        let (out, file) = expand(argv, |_| known()).unwrap();
        assert!(file.is_some());
        let out: Vec<String> = out.into_iter().map(|s| s.into_string().unwrap()).collect();
        assert_eq!(out[..3], ["mtmux", "server", "--tunnels=4"]);
        assert_eq!(out[5..], ["--tunnels", "2"]);
        let argv: Vec<OsString> = ["mtmux", "bench", "--config", "x"].map(OsString::from).to_vec();
        assert!(expand(argv, |_| known()).unwrap().1.is_none());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_flag_replaces_the_files_default_forward() {
        let file = BTreeMap::from([("default".to_string(), "a:1".to_string()), ("x".into(), "b:2".into())]);
        let all = merge(file.clone(), Some("c:3"));
        assert_eq!(all["default"], "c:3");
        assert_eq!(all["x"], "b:2");
        assert_eq!(merge(file, None)["default"], "a:1");
    }
}
