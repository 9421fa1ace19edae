//! Ranking durations as the UR's engine.json writes them.
//!
//! The UR parses `duration` with Scala's `Duration("3650 days")`; older
//! engine files (and the ones the UR still ships) give a bare number of
//! seconds, `259200`. Both are accepted: a number, or a string holding a
//! number with an optional Scala time unit. Like the UR, the result is
//! truncated to whole seconds.

/// The longest duration accepted, in seconds (about 317,000 years): in
/// milliseconds it is far from overflowing any clock arithmetic.
pub const MAX_DURATION_SECS: f64 = 1e13;

/// Parses a duration into whole seconds.
pub fn parse_duration_secs(s: &str) -> Result<i64, String> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let unit_start = s.find(|c: char| c.is_alphabetic() || c == 'µ').unwrap_or(s.len());
    let (number, unit) = s.split_at(unit_start);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (expected e.g. \"3650 days\", \"72 hours\" or seconds)"))?;
    let seconds_per_unit = match unit {
        "" => 1.0,
        "d" | "day" | "days" => 86_400.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600.0,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1e-3,
        "µs" | "micro" | "micros" | "microsecond" | "microseconds" => 1e-6,
        "ns" | "nano" | "nanos" | "nanosecond" | "nanoseconds" => 1e-9,
        other => return Err(format!("unknown time unit `{other}` in duration `{s}`")),
    };
    let secs = value * seconds_per_unit;
    if !(0.0..=MAX_DURATION_SECS).contains(&secs) {
        return Err(format!("duration `{s}` is out of range"));
    }
    Ok(secs.trunc() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ur_forms() {
        assert_eq!(parse_duration_secs("3650 days"), Ok(3650 * 86_400));
        assert_eq!(parse_duration_secs("259200"), Ok(259_200));
        assert_eq!(parse_duration_secs("3 days"), Ok(259_200));
        assert_eq!(parse_duration_secs("1.5 hours"), Ok(5_400));
        assert_eq!(parse_duration_secs("10m"), Ok(600));
        assert_eq!(parse_duration_secs("1 day"), Ok(86_400));
        assert_eq!(parse_duration_secs("1500ms"), Ok(1));
    }

    #[test]
    fn rejects() {
        assert!(parse_duration_secs("forever").is_err());
        assert!(parse_duration_secs("3 fortnights").is_err());
        assert!(parse_duration_secs("-1 days").is_err());
        assert!(parse_duration_secs("").is_err());
    }
}
