//! UTC calendar periods for budgets: a day and a month, their names (used in
//! counter keys, so a new period starts from zero) and when they end.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "daily",
            Self::Month => "monthly",
        }
    }

    /// `2026-11-22` or `2026-11`.
    pub fn name(self, at: SystemTime) -> String {
        let (year, month, day) = civil(days(at));
        match self {
            Self::Day => format!("{year:04}-{month:02}-{day:02}"),
            Self::Month => format!("{year:04}-{month:02}"),
        }
    }

    /// A number per period (days, or months, since 1970), so a counter can
    /// tell that its period is over without formatting a name.
    pub fn index(self, at: SystemTime) -> i64 {
        let today = days(at);
        match self {
            Self::Day => today,
            Self::Month => {
                let (year, month, _) = civil(today);
                year * 12 + i64::from(month)
            }
        }
    }

    /// When the period containing `at` ends (the next UTC midnight, or the
    /// first of next month).
    pub fn end(self, at: SystemTime) -> SystemTime {
        let today = days(at);
        let next = match self {
            Self::Day => today + 1,
            Self::Month => {
                let (year, month, _) = civil(today);
                let (year, month) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                days_from_civil(year, month, 1)
            }
        };
        UNIX_EPOCH + Duration::from_secs(next as u64 * 86_400)
    }
}

fn days(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64 / 86_400)
}

/// Days since 1970-01-01 -> (year, month, day); Howard Hinnant's algorithm.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Unix milliseconds now (0 before 1970, which a sane clock never is).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The time of a unix-millisecond stamp (before 1970 clamps to 1970).
pub fn from_unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// Unix milliseconds of a calendar date's UTC midnight; `None` for a date
/// that does not exist (month 13, February 30).
pub fn date_ms(year: i64, month: u32, day: u32) -> Option<i64> {
    let days = days_from_civil(year, month, day);
    (civil(days) == (year, month, day)).then_some(days * 86_400_000)
}

/// `2026-11-23T00:00:00Z` for a time on a whole second.
pub fn rfc3339(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (year, month, day) = civil(secs.div_euclid(86_400));
    let rest = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn names_and_ends() {
        // 2026-11-22T10:20:00Z
        let now = at(1_795_343_200);
        assert_eq!(Period::Day.name(now), "2026-11-22");
        assert_eq!(Period::Month.name(now), "2026-11");
        assert_eq!(Period::Day.end(now), at(1_795_392_000)); // 2026-11-23T00:00Z
        assert_eq!(Period::Month.end(now), at(1_796_083_200)); // 2026-12-01T00:00Z
        // Year and leap-day edges.
        let dec31 = at(1_798_761_600 - 1); // 2026-12-31T23:59:59Z
        assert_eq!(Period::Month.name(dec31), "2026-12");
        assert_eq!(Period::Month.end(dec31), at(1_798_761_600)); // 2027-01-01
        assert_eq!(Period::Day.name(at(1_709_164_800)), "2024-02-29");
        assert_eq!(date_ms(2024, 2, 29), Some(1_709_164_800_000));
        assert_eq!(date_ms(2026, 11, 22), Some(1_795_305_600_000)); // a Sunday
        assert_eq!(date_ms(2026, 2, 29), None);
        assert_eq!(date_ms(2026, 13, 1), None);
        assert_eq!(
            Period::Day.index(now) + 1,
            Period::Day.index(at(1_795_392_000))
        );
        assert_eq!(
            Period::Month.index(now) + 1,
            Period::Month.index(at(1_796_083_200))
        );
        assert_eq!(
            Period::Month.index(dec31) + 1,
            Period::Month.index(at(1_798_761_600))
        );
    }
}
