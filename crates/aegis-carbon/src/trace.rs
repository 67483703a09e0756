//! Hourly carbon-intensity traces in the wide CSV layout of `shared/data/carbon`:
//! a `datetime_utc` column (RFC 3339, `...Z`) then one column per zone in gCO2eq/kWh.

use std::fmt;

/// An hourly trace for several zones.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Zone keys, in column order.
    pub zones: Vec<String>,
    /// Unix seconds of each row.
    pub times: Vec<i64>,
    /// `values[row][zone]` in gCO2eq/kWh.
    pub values: Vec<Vec<f64>>,
}

/// Why a trace could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for TraceError {}

impl Trace {
    /// Parses the wide CSV layout.
    pub fn parse(text: &str) -> Result<Self, TraceError> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let err = |line: usize, message: String| TraceError {
            line: line + 1,
            message,
        };
        let (_, header) = lines.next().ok_or_else(|| err(0, "empty trace".into()))?;
        let mut columns = header.split(',').map(str::trim);
        if columns.next() != Some("datetime_utc") {
            return Err(err(0, "first column must be datetime_utc".into()));
        }
        let zones: Vec<String> = columns.map(str::to_owned).collect();
        if zones.is_empty() {
            return Err(err(0, "no zone columns".into()));
        }
        let (mut times, mut values) = (Vec::new(), Vec::new());
        for (n, line) in lines {
            let mut fields = line.split(',').map(str::trim);
            let stamp = fields.next().unwrap_or_default();
            let time =
                parse_rfc3339(stamp).ok_or_else(|| err(n, format!("bad timestamp {stamp:?}")))?;
            let row: Vec<f64> = fields
                .map(|f| {
                    f.parse::<f64>()
                        .map_err(|_| err(n, format!("bad value {f:?}")))
                })
                .collect::<Result<_, _>>()?;
            if row.len() != zones.len() {
                return Err(err(
                    n,
                    format!("{} values for {} zones", row.len(), zones.len()),
                ));
            }
            times.push(time);
            values.push(row);
        }
        Ok(Self {
            zones,
            times,
            values,
        })
    }

    /// Column index of `zone`.
    pub fn zone(&self, zone: &str) -> Option<usize> {
        self.zones.iter().position(|z| z == zone)
    }

    /// The row in force at unix time `now` (the last row starting at or before it).
    pub fn row_at(&self, now: i64) -> Option<usize> {
        match self.times.binary_search(&now) {
            Ok(i) => Some(i),
            Err(0) => None,
            Err(i) => Some(i - 1),
        }
    }
}

/// Parses `YYYY-MM-DDTHH:MM[:SS[.fff]]` followed by `Z`, `+HH:MM`, `-HH:MM` or nothing (UTC),
/// with `T` or a space between date and time, to unix seconds.
pub fn parse_rfc3339(stamp: &str) -> Option<i64> {
    let (stamp, offset) = split_offset(stamp)?;
    let (date, time) = stamp.split_once(['T', ' '])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time
        .splitn(3, ':')
        .map(|p| p.split('.').next()?.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next().flatten().unwrap_or(0));
    // Years outside 0..=9999 (RFC 3339 §5.6 has four digits) would overflow the day count on
    // hostile provider input; hours, minutes and seconds are bounded the same way.
    let in_range = (0..=9999).contains(&y)
        && (1..=12).contains(&m)
        && (1..=31).contains(&day)
        && (0..=23).contains(&hh)
        && (0..=59).contains(&mm)
        && (0..=60).contains(&ss);
    if !in_range {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

/// Splits a trailing UTC offset off a timestamp; returns the rest and the offset in seconds.
fn split_offset(stamp: &str) -> Option<(&str, i64)> {
    if let Some(rest) = stamp.strip_suffix('Z') {
        return Some((rest, 0));
    }
    let tail = stamp.len().checked_sub(6).and_then(|i| stamp.get(i..));
    match tail.map(str::as_bytes) {
        Some([sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]) => {
            let digits = [h1, h2, m1, m2].map(|d| i64::from(d.wrapping_sub(b'0')));
            if digits.iter().any(|d| !(0..=9).contains(d)) {
                return None;
            }
            let seconds = (digits[0] * 10 + digits[1]) * 3600 + (digits[2] * 10 + digits[3]) * 60;
            let seconds = if *sign == b'-' { -seconds } else { seconds };
            Some((&stamp[..stamp.len() - 6], seconds))
        }
        _ => Some((stamp, 0)),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str =
        "datetime_utc,DE,NO\n2023-01-01T00:00:00Z,140.5,37.8\n2023-01-01T01:00:00Z,150,40\n";

    #[test]
    fn parses_the_wide_layout() {
        let t = Trace::parse(SAMPLE).unwrap();
        assert_eq!(t.zones, ["DE", "NO"]);
        assert_eq!(t.times, [1_672_531_200, 1_672_534_800]);
        assert_eq!(t.values[1], [150.0, 40.0]);
        assert_eq!(t.row_at(1_672_534_799), Some(0));
        assert_eq!(t.row_at(1_672_534_800), Some(1));
        assert_eq!(t.row_at(0), None);
    }

    #[test]
    fn names_the_bad_line() {
        let e = Trace::parse("datetime_utc,DE\n2023-01-01T00:00:00Z,x\n").unwrap_err();
        assert_eq!(e.to_string(), "line 2: bad value \"x\"");
    }

    #[test]
    fn unbounded_fields_are_rejected_not_overflowed() {
        for stamp in [
            "99999999999999999-01-01T00:00:00Z",
            "-9223372036854775808-01-01T00:00:00Z",
            "2024-01-01T-1:00:00Z",
            "2024-01-01T00:-5:00Z",
            "2024-01-01T00:00:-1Z",
            "10000-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(stamp), None, "{stamp}");
        }
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59Z"), Some(253_402_300_799));
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-02-29 12:30:00"), Some(1_709_209_800));
        assert_eq!(parse_rfc3339("2024-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2018-01-20T12:00Z"), Some(1_516_449_600));
        assert_eq!(
            parse_rfc3339("2018-01-20T13:00:00+01:00"),
            Some(1_516_449_600)
        );
        assert_eq!(
            parse_rfc3339("2018-01-20T11:30:00-00:30"),
            Some(1_516_449_600)
        );
    }
}
