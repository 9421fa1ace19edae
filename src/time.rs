//! ISO-8601 timestamps → epoch milliseconds.
//!
//! PIO writes `eventTime` as `2026-01-15T12:00:00.000Z`; other writers send
//! offsets (`+01:00`, `+0100`, `+01`), no fraction, more fraction digits, or no
//! offset at all (read as UTC, as Joda reads it with a UTC default zone). A
//! date alone (`2026-01-15`) is midnight UTC. Parsing is by hand: it is on the
//! hot path of reading, once per event.

/// Milliseconds since 1970-01-01T00:00:00Z.
pub type Millis = i64;

/// Parses an ISO-8601 date or date-time; `None` when it is not one.
pub fn parse_iso8601(s: &str) -> Option<Millis> {
    pio_form(s.as_bytes()).or_else(|| any_form(s.as_bytes()))
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ`, the form PIO writes, with fixed positions;
/// `None` for any other form (which [`any_form`] reads with the same result).
#[inline]
fn pio_form(b: &[u8]) -> Option<Millis> {
    let b: &[u8; 24] = b.try_into().ok()?;
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':'), (19, b'.'), (23, b'Z')];
    if separators.iter().any(|&(i, c)| b[i] != c) {
        return None;
    }
    let digit = |i: usize| b[i].wrapping_sub(b'0') as u32;
    const DIGITS: [usize; 17] = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 22];
    if DIGITS.iter().any(|&i| digit(i) > 9) {
        return None;
    }
    let two = |i: usize| digit(i) * 10 + digit(i + 1);
    let year = (two(0) * 100 + two(2)) as i64;
    let (month, day, hour, minute, second) = (two(5), two(8), two(11), two(14), two(17));
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let millis = two(20) * 10 + digit(22);
    let seconds = hour as i64 * 3600 + minute as i64 * 60 + second as i64;
    Some(days_from_civil(year, month, day) * 86_400_000 + seconds * 1000 + millis as i64)
}

/// Every form [`parse_iso8601`] reads.
fn any_form(b: &[u8]) -> Option<Millis> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(b, 0, 4)? as i64;
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut millis = days_from_civil(year, month, day) * 86_400_000;
    if b.len() == 10 {
        return Some(millis);
    }
    if !(b[10] == b'T' || b[10] == b't') || b.len() < 16 || b[13] != b':' {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    let minute = digits(b, 14, 2)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut pos = 16;
    let mut second = 0;
    if b.get(pos) == Some(&b':') {
        second = digits(b, pos + 1, 2)?;
        if second > 59 {
            return None;
        }
        pos += 3;
    }
    let mut fraction_ms = 0i64;
    if matches!(b.get(pos), Some(b'.') | Some(b',')) {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            if pos - start < 3 {
                fraction_ms = fraction_ms * 10 + (b[pos] - b'0') as i64;
            }
            pos += 1;
        }
        let n = pos - start;
        if n == 0 || n > 9 {
            return None;
        }
        for _ in n..3 {
            fraction_ms *= 10;
        }
    }
    millis += (hour as i64 * 3600 + minute as i64 * 60 + second as i64) * 1000 + fraction_ms;
    let offset_minutes = match b.get(pos) {
        None => 0,
        Some(b'Z') | Some(b'z') if pos + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let rest = &b[pos + 1..];
            let (h, m) = match rest.len() {
                2 => (digits(rest, 0, 2)?, 0),
                4 => (digits(rest, 0, 2)?, digits(rest, 2, 2)?),
                5 if rest[2] == b':' => (digits(rest, 0, 2)?, digits(rest, 3, 2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = (h * 60 + m) as i64;
            if sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    Some(millis - offset_minutes * 60_000)
}

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_iso8601(millis: Millis) -> String {
    let days = millis.div_euclid(86_400_000);
    let ms_of_day = millis.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let secs = ms_of_day / 1000;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", secs / 3600, secs / 60 % 60, secs % 60, ms_of_day % 1000)
}

fn digits(b: &[u8], start: usize, n: usize) -> Option<u32> {
    let slice = b.get(start..start + n)?;
    let mut v = 0u32;
    for &c in slice {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + (c - b'0') as u32;
    }
    Some(v)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pio_format() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(parse_iso8601("2026-01-15T12:00:00.000Z"), Some(1_768_478_400_000));
        assert_eq!(parse_iso8601("2026-01-15T12:00:00Z"), Some(1_768_478_400_000));
        assert_eq!(parse_iso8601("2026-01-15T12:00:00"), Some(1_768_478_400_000));
        assert_eq!(parse_iso8601("2026-01-15T12:00Z"), Some(1_768_478_400_000));
    }

    #[test]
    fn offsets_and_fractions() {
        let utc = parse_iso8601("2026-01-15T12:00:00.000Z").unwrap();
        assert_eq!(parse_iso8601("2026-01-15T13:00:00+01:00"), Some(utc));
        assert_eq!(parse_iso8601("2026-01-15T13:00:00+0100"), Some(utc));
        assert_eq!(parse_iso8601("2026-01-15T13:00:00+01"), Some(utc));
        assert_eq!(parse_iso8601("2026-01-15T07:30:00-04:30"), Some(utc));
        assert_eq!(parse_iso8601("2026-01-15T12:00:00.5Z"), Some(utc + 500));
        assert_eq!(parse_iso8601("2026-01-15T12:00:00.123456789Z"), Some(utc + 123));
        assert_eq!(parse_iso8601("2026-01-15"), Some(utc - 12 * 3_600_000));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-15T24:00:00Z",
            "2026-01-15T12:00:61Z",
            "2026-01-15T12:00:00.Z",
            "2026-01-15T12:00:00ZZ",
            "2026-01-15 12:00:00Z",
            "2026-01-15T12:00:00+1",
            "ISO8601-date",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
        assert!(parse_iso8601("2024-02-29T00:00:00Z").is_some());
        assert!(parse_iso8601("2023-02-29T00:00:00Z").is_none());
    }

    #[test]
    fn formats_round_trip() {
        for s in ["2026-01-15T12:00:00.000Z", "1969-12-31T23:59:59.999Z", "2000-02-29T01:02:03.004Z"] {
            assert_eq!(format_iso8601(parse_iso8601(s).unwrap()), s);
        }
    }

    /// The fixed-width fast path gives what the general parser gives: on
    /// every day of 1896-2104 (leap days and 1900/2000/2100 included) at
    /// varying times, and on the same times written in other forms.
    #[test]
    fn pio_form_agrees_with_any_form() {
        let mut forms = 0;
        for day in -27_000..49_000_i64 {
            let millis = day * 86_400_000 + (day * 7_919_993).rem_euclid(86_400_000);
            let s = format_iso8601(millis);
            assert_eq!(pio_form(s.as_bytes()), Some(millis), "{s}");
            assert_eq!(any_form(s.as_bytes()), Some(millis), "{s}");
            if day % 97 != 0 {
                continue;
            }
            let (date_time, fraction) = s.split_at(19);
            for digits in 0..11 {
                let fraction = match digits {
                    0 => String::new(),
                    n => format!(
                        ".{}",
                        (fraction[1..4].to_string() + "987654")[..n.min(9)].to_string()
                            + &"1".repeat(n.saturating_sub(9))
                    ),
                };
                for offset in
                    ["Z", "z", "", "+01:00", "-04:30", "+0100", "-0930", "+05", "-00", "-24:00", "+01:60", "+1"]
                {
                    let other = format!("{date_time}{fraction}{offset}");
                    assert_eq!(parse_iso8601(&other), any_form(other.as_bytes()), "{other}");
                    forms += 1;
                }
            }
        }
        assert!(forms > 50_000, "{forms}");
        for leap in ["2024-02-29T00:00:00.000Z", "2000-02-29T23:59:59.999Z", "1600-02-29T12:00:00.000Z"] {
            assert_eq!(pio_form(leap.as_bytes()), any_form(leap.as_bytes()));
            assert!(pio_form(leap.as_bytes()).is_some(), "{leap}");
        }
        for not_leap in ["2023-02-29T00:00:00.000Z", "1900-02-29T00:00:00.000Z", "2100-02-29T00:00:00.000Z"] {
            assert_eq!(parse_iso8601(not_leap), None, "{not_leap}");
        }
    }

    /// One byte changed anywhere in a PIO time: the fast path reads it as the
    /// general parser does, or leaves it to it.
    #[test]
    fn pio_form_rejects_what_any_form_rejects() {
        let base = b"2024-02-29T23:59:59.999Z";
        for pos in 0..base.len() {
            for c in b"0123456789-:.TtZz+ /\x00\xff".iter().copied().chain(b'0'.wrapping_sub(1)..=b'9' + 1) {
                let mut b = base.to_vec();
                b[pos] = c;
                let fast = pio_form(&b);
                assert!(fast.is_none() || fast == any_form(&b), "{}", String::from_utf8_lossy(&b));
                if let Ok(s) = std::str::from_utf8(&b) {
                    assert_eq!(parse_iso8601(s), any_form(&b), "{s}");
                }
            }
        }
        for bad in [
            "2026-00-10T00:00:00.000Z",
            "2026-01-00T00:00:00.000Z",
            "2026-04-31T00:00:00.000Z",
            "2026-01-15T24:00:00.000Z",
            "2026-01-15T23:60:00.000Z",
            "2026-01-15T23:59:60.000Z",
            "2026-01-15T12:00:00.00aZ",
            "+026-01-15T12:00:00.000Z",
        ] {
            assert_eq!(pio_form(bad.as_bytes()), None, "{bad}");
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
