//! Parsing and printing of sizes, rates and durations. Sizes and rates are decimal (1 MB =
//! 10^6 bytes, as in MB/s); the `KiB`, `MiB`, `GiB` suffixes are binary.

use std::time::Duration;

/// Longest duration accepted on the command line (longer ones would overflow deadlines).
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parse a duration: a plain number is seconds (`2.5`), otherwise humantime's syntax
/// (`500ms`, `10s`, `2m`, `1h 30m`). At most a year.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = match s.parse::<f64>() {
        Ok(secs) => Duration::try_from_secs_f64(secs).map_err(|_| format!("invalid duration '{s}'"))?,
        Err(_) => humantime::parse_duration(s)
            .map_err(|e| format!("invalid duration '{s}': {e} (examples: 500ms, 10s, 2m)"))?,
    };
    if d > MAX_DURATION {
        return Err(format!("invalid duration '{s}': longer than a year"));
    }
    Ok(d)
}

/// Parse a byte count: `1000`, `64k`, `200M`, `1.5G`, `512KiB`, `4MiB` (a trailing `B` is
/// allowed: `200MB`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("invalid size '{s}' (examples: 64M, 1G, 512KiB)"))?;
    let multiplier: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(format!("invalid size '{s}': unknown unit '{unit}' (use k, M, G, KiB, MiB, GiB)")),
    };
    let bytes = value * multiplier;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("invalid size '{s}': must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// `1234567` → `1.23 MB`.
pub fn fmt_bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1e3 {
        format!("{n} B")
    } else if n < 1e6 {
        format!("{:.1} kB", n / 1e3)
    } else if n < 1e9 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.2} GB", n / 1e9)
    }
}

/// Megabytes (10^6) per second.
pub fn mb_per_s(bytes: u64, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs <= 0.0 {
        0.0
    } else {
        bytes as f64 / 1e6 / secs
    }
}

/// A duration for humans: `850 ms`, `2.50 s`.
pub fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// A duration in the failover log lines: `180 ms` below a second, else seconds with at most
/// one decimal as on the command line (`3.2s`, `60s`).
pub fn fmt_span(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{} ms", d.as_millis());
    }
    let secs = format!("{:.1}", d.as_secs_f64());
    format!("{}s", secs.strip_suffix(".0").unwrap_or(&secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_decimal_and_binary_units() {
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("64k").unwrap(), 64_000);
        assert_eq!(parse_size("200M").unwrap(), 200_000_000);
        assert_eq!(parse_size("200MB").unwrap(), 200_000_000);
        assert_eq!(parse_size("1.5G").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("4MiB").unwrap(), 4 << 20);
        assert_eq!(parse_size("512KiB").unwrap(), 512 << 10);
    }

    #[test]
    fn nonsense_sizes_are_rejected() {
        for s in ["", "M", "12X", "-5", "0", "0.1"] {
            assert!(parse_size(s).is_err(), "{s} should be rejected");
        }
    }

    #[test]
    fn durations_accept_plain_seconds_and_units() {
        assert_eq!(parse_duration("2.5").unwrap(), Duration::from_millis(2500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("400y").is_err());
    }

    #[test]
    fn printing_uses_decimal_units() {
        assert_eq!(fmt_bytes(999), "999 B");
        assert_eq!(fmt_bytes(1_500), "1.5 kB");
        assert_eq!(fmt_bytes(200_000_000), "200.0 MB");
        assert_eq!(fmt_bytes(4_060_000_000), "4.06 GB");
        assert_eq!(mb_per_s(10_000_000, Duration::from_secs(2)), 5.0);
        assert_eq!(fmt_duration(Duration::from_millis(850)), "850 ms");
        assert_eq!(fmt_duration(Duration::from_millis(2500)), "2.50 s");
        assert_eq!(fmt_span(Duration::from_millis(180)), "180 ms");
        assert_eq!(fmt_span(Duration::from_millis(3240)), "3.2s");
        assert_eq!(fmt_span(Duration::from_secs(60)), "60s");
        assert_eq!(fmt_span(Duration::from_millis(59_990)), "60s");
    }
}
