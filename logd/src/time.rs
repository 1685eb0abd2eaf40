//! UTC calendar arithmetic for rollup buckets, months and labels (days since 1970 ⇄ year, month, day).

use std::time::{SystemTime, UNIX_EPOCH};

pub const MINUTE: i64 = 60;
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 86_400;

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day number.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    pub year: i64,
    pub month: u32,
}

impl Month {
    pub fn of(unix: i64) -> Month {
        let (year, month, _) = civil_from_days(unix.div_euclid(DAY));
        Month { year, month }
    }

    /// Parses `YYYY-MM`.
    pub fn parse(text: &str) -> Result<Month, String> {
        let bad = || format!("{text:?} is not a month; write it as YYYY-MM, e.g. 2026-11");
        let (y, m) = text.trim().split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(bad());
        }
        let year: i64 = y.parse().map_err(|_| bad())?;
        let month: u32 = m.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) || !(1970..=9999).contains(&year) {
            return Err(bad());
        }
        Ok(Month { year, month })
    }

    /// Unix seconds of its first instant.
    pub fn start(self) -> i64 {
        days_from_civil(self.year, self.month, 1) * DAY
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn prev(self) -> Month {
        if self.month == 1 {
            Month {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Month {
                year: self.year,
                month: self.month - 1,
            }
        }
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// `YYYY-MM-DD` of a Unix time.
pub fn date(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `YYYY-MM-DD HH:MM` (UTC) of a Unix time.
pub fn date_time(unix: i64) -> String {
    let s = unix.rem_euclid(DAY);
    format!("{} {:02}:{:02}", date(unix), s / HOUR, (s % HOUR) / MINUTE)
}

/// `HH:MM` (UTC) of a Unix time.
pub fn clock(unix: i64) -> String {
    let s = unix.rem_euclid(DAY);
    format!("{:02}:{:02}", s / HOUR, (s % HOUR) / MINUTE)
}

/// Parses a duration back from now (`90s`, `15m`, `6h`, `7d`) or an absolute
/// `YYYY-MM-DD` / `YYYY-MM-DDTHH:MM` (UTC) into Unix seconds.
pub fn parse_since(text: &str, now: i64) -> Result<i64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "{text:?} is not a time; write a span back from now (\"30m\", \"6h\", \"7d\") or a UTC date (\"2026-11-01\", \"2026-11-01T08:00\")"
        )
    };
    if let Some(unit) = t.chars().last().filter(char::is_ascii_alphabetic) {
        let n: i64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
        let mult = match unit {
            's' => 1,
            'm' => MINUTE,
            'h' => HOUR,
            'd' => DAY,
            _ => return Err(bad()),
        };
        if !(0..=36_500 * DAY).contains(&n.saturating_mul(mult)) {
            return Err(bad());
        }
        return Ok(now - n * mult);
    }
    let (d, hm) = match t.split_once('T') {
        Some((d, hm)) => (d, Some(hm)),
        None => (t, None),
    };
    let parts: Vec<&str> = d.split('-').collect();
    if parts.len() != 3 || parts[0].len() != 4 || parts[1].len() != 2 || parts[2].len() != 2 {
        return Err(bad());
    }
    let y: i64 = parts[0].parse().map_err(|_| bad())?;
    let m: u32 = parts[1].parse().map_err(|_| bad())?;
    let day: u32 = parts[2].parse().map_err(|_| bad())?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let days = days_from_civil(y, m, day);
    if civil_from_days(days) != (y, m, day) {
        return Err(bad());
    }
    let mut secs = days * DAY;
    if let Some(hm) = hm {
        let (h, mi) = hm.split_once(':').ok_or_else(bad)?;
        let h: i64 = h.parse().map_err(|_| bad())?;
        let mi: i64 = mi.parse().map_err(|_| bad())?;
        if !(0..24).contains(&h) || !(0..60).contains(&mi) {
            return Err(bad());
        }
        secs += h * HOUR + mi * MINUTE;
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_round_trip_over_four_centuries() {
        for z in (-200_000..200_000).step_by(7) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(date(951_782_400), "2000-02-29");
        assert_eq!(date_time(1_700_000_000), "2023-11-14 22:13");
    }

    #[test]
    fn months_parse_and_step() {
        let m = Month::parse("2026-12").unwrap();
        assert_eq!(m.next().to_string(), "2027-01");
        assert_eq!(m.next().prev(), m);
        assert_eq!(Month::of(m.start()), m);
        assert_eq!(Month::of(m.next().start() - 1), m);
        for bad in ["2026-13", "2026-1", "26-01", "x", "2026-00", ""] {
            assert!(Month::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn since_takes_spans_and_dates() {
        assert_eq!(parse_since("90s", 1000).unwrap(), 910);
        assert_eq!(parse_since("2h", 10_000).unwrap(), 2800);
        assert_eq!(
            parse_since("2026-11-01", 0).unwrap(),
            days_from_civil(2026, 11, 1) * DAY
        );
        assert_eq!(
            parse_since("2026-11-01T08:30", 0).unwrap(),
            days_from_civil(2026, 11, 1) * DAY + 8 * HOUR + 30 * MINUTE
        );
        for bad in [
            "",
            "h",
            "5y",
            "2026-02-30",
            "2026-11-01T25:00",
            "-5m",
            "99999999999999d",
        ] {
            assert!(parse_since(bad, 0).is_err(), "{bad}");
        }
    }
}
