//! Figures, medians and the results table.

use std::fmt::Write as _;

/// Whether bigger or smaller is better for a figure's ratio.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Throughput-like: ratio = mtmux / baseline, target is a minimum.
    Higher,
    /// Latency-like: ratio = mtmux / baseline, target is a maximum.
    Lower,
}

/// One line of the results table.
#[derive(Clone, Debug)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// Unit of `value` and `baseline`.
    pub unit: &'static str,
    /// mtmux's median.
    pub value: f64,
    /// The baseline's median, measured in the same run (NaN when the target is absolute).
    pub baseline: f64,
    /// What the baseline is.
    pub baseline_name: String,
    /// Direction of goodness.
    pub better: Better,
    /// Target on the ratio (or on the value when `absolute`).
    pub target: f64,
    /// The target applies to `value`, not to the ratio.
    pub absolute: bool,
    /// Extra detail (samples, spread).
    pub note: String,
}

impl Figure {
    /// mtmux / baseline.
    pub fn ratio(&self) -> f64 {
        self.value / self.baseline
    }

    /// A figure shown for context, without a target.
    pub fn informational(&self) -> bool {
        self.target.is_infinite()
    }

    /// Whether the figure meets its target.
    pub fn ok(&self) -> bool {
        let x = if self.absolute { self.value } else { self.ratio() };
        match self.better {
            Better::Higher => x >= self.target,
            Better::Lower => x <= self.target,
        }
    }

    fn target_text(&self) -> String {
        if self.informational() {
            return "–".into();
        }
        let op = if self.better == Better::Higher { "≥" } else { "≤" };
        if self.absolute {
            format!("{op} {} {}", fmt_num(self.target), self.unit)
        } else {
            format!("{op} {:.2}×", self.target)
        }
    }
}

/// The median of `v` (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// The `p`-th percentile of `v` (nearest rank), ignoring NaN samples (skipped
/// measurements); NaN when nothing is left.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The results table in Markdown.
pub fn table(figures: &[Figure]) -> String {
    let mut out = String::new();
    out.push_str("| # | benchmark | mtmux | baseline | ratio | target | met |\n");
    out.push_str("|---|---|---|---|---|---|---|\n");
    for (i, f) in figures.iter().enumerate() {
        let ratio = if f.baseline.is_nan() { "–".to_string() } else { format!("{:.2}×", f.ratio()) };
        let baseline = if f.baseline.is_nan() {
            "–".to_string()
        } else {
            format!("{} {} ({})", fmt_num(f.baseline), f.unit, f.baseline_name)
        };
        let _ = writeln!(
            out,
            "| {} | {}{} | {} {} | {} | {} | {} | {} |",
            i + 1,
            f.name,
            if f.note.is_empty() { String::new() } else { format!(" <br><sub>{}</sub>", f.note) },
            fmt_num(f.value),
            f.unit,
            baseline,
            ratio,
            f.target_text(),
            if f.informational() {
                "–"
            } else if f.ok() {
                "yes"
            } else {
                "**no**"
            }
        );
    }
    out
}

/// The peers table: per workload, raw TCP, mtmux and each peer (`headers`), every value with
/// its ratio to raw TCP of the same rounds.
pub fn peers_table(headers: &[String], rows: &[crate::peers::Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| benchmark | raw TCP | mtmux | {} |", headers.join(" | "));
    let _ = writeln!(out, "|---|---|---|{}", "---|".repeat(headers.len()));
    for r in rows {
        let cell = |v: f64| {
            if v.is_nan() {
                "–".to_string()
            } else if r.raw.is_nan() {
                // No baseline (MTMUX_BENCH_NO_BASELINE): no ratio either.
                format!("{} {}", fmt_num(v), r.unit)
            } else {
                format!("{} {} ({:.2}×)", fmt_num(v), r.unit, v / r.raw)
            }
        };
        let peers: Vec<String> = r
            .peers
            .iter()
            .map(|p| match p {
                Ok(v) => cell(*v),
                Err(e) => {
                    // One line of the table: no bars or line breaks from an error message.
                    let e: String =
                        e.chars().map(|c| if c == '|' || c.is_control() { ' ' } else { c }).collect();
                    let short: String = e.chars().take(80).collect();
                    format!("**{short}{}**", if short.len() < e.len() { "…" } else { "" })
                }
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} ({} is better) | {} {} | {} | {} |",
            r.name,
            if r.better == Better::Higher { "higher" } else { "lower" },
            fmt_num(r.raw),
            r.unit,
            cell(r.mtmux),
            peers.join(" | ")
        );
    }
    out
}

/// Write `body` as the section `name` of the Markdown file `path` (between `<!-- name -->`
/// and `<!-- /name -->`), keeping its other sections, which other commands of the suite
/// write. A file without any section is replaced whole; a new section goes at the end.
pub fn write_section(path: &str, name: &str, body: &str) -> std::io::Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, with_section(&old, name, body))
}

fn with_section(old: &str, name: &str, body: &str) -> String {
    let (open, close) = (format!("<!-- {name} -->"), format!("<!-- /{name} -->"));
    let block = format!("{open}\n{}\n{close}", body.trim_end());
    match (old.find(&open), old.find(&close)) {
        (Some(a), Some(b)) if a < b => format!("{}{block}{}", &old[..a], &old[b + close.len()..]),
        _ if !old.contains("<!-- ") => format!("{block}\n"),
        _ => format!("{}\n\n{block}\n", old.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(median(&v), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(median(&[]).is_nan());
        assert!(median(&[f64::NAN, f64::NAN]).is_nan());
        assert_eq!(median(&[f64::NAN, 3.0]), 3.0);
    }

    #[test]
    fn sections() {
        let a = with_section("old table, no sections", "suite", "S1");
        assert_eq!(a, "<!-- suite -->\nS1\n<!-- /suite -->\n");
        let b = with_section(&a, "cost", "C1\n");
        let c = with_section(&b, "suite", "S2");
        assert_eq!(c, "<!-- suite -->\nS2\n<!-- /suite -->\n\n<!-- cost -->\nC1\n<!-- /cost -->\n");
    }

    #[test]
    fn peers_rows() {
        let row = crate::peers::Row {
            name: "bulk".into(),
            unit: "MB/s",
            better: Better::Higher,
            raw: 1000.0,
            mtmux: 1500.0,
            peers: vec![Ok(500.0), Err("not built".into()), Err("failed: a|b\nc".into())],
        };
        let t = peers_table(&["a 1".into(), "b 2".into(), "c 3".into()], &[row]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "| benchmark | raw TCP | mtmux | a 1 | b 2 | c 3 |");
        assert_eq!(lines[1], "|---|---|---|---|---|---|");
        assert_eq!(
            lines[2],
            "| bulk (higher is better) | 1000 MB/s | 1500 MB/s (1.50×) | 500 MB/s (0.50×) | **not built** | **failed: a b c** |"
        );
    }

    #[test]
    fn targets() {
        let mut f = Figure {
            name: "x".into(),
            unit: "MB/s",
            value: 90.0,
            baseline: 100.0,
            baseline_name: "raw".into(),
            better: Better::Higher,
            target: 0.9,
            absolute: false,
            note: String::new(),
        };
        assert!(f.ok());
        f.value = 89.0;
        assert!(!f.ok());
        f.better = Better::Lower;
        f.absolute = true;
        f.target = 5.0;
        f.value = 4.0;
        assert!(f.ok());
        assert!(table(&[f]).contains("≤ 5.00 MB/s"));
    }
}
