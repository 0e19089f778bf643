//! DTM/TS values: `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`, precision and offset kept.

use std::fmt;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Timelike};

use crate::Error;

/// How much of a timestamp was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// `YYYY`
    Year,
    /// `YYYYMM`
    Month,
    /// `YYYYMMDD`
    Day,
    /// `YYYYMMDDHH`
    Hour,
    /// `YYYYMMDDHHMM`
    Minute,
    /// `YYYYMMDDHHMMSS`
    Second,
    /// `YYYYMMDDHHMMSS.S` to `.SSSSSSSSS`: the number of fraction digits (the standard allows up
    /// to 4; up to 9 are read, since some senders write micro- or nanoseconds).
    Fraction(u8),
}

/// An HL7 DTM (or the first component of a TS): the date and time as written, how precise it
/// is, and the UTC offset if one was given. Nothing is assumed: a value without an offset stays
/// a local time with no zone, and a value without seconds does not gain any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    naive: NaiveDateTime,
    precision: Precision,
    offset: Option<FixedOffset>,
}

impl Timestamp {
    /// Reads a DTM value, or a TS (the degree-of-precision component after `^` is ignored).
    pub fn parse(value: &[u8]) -> Result<Timestamp, Error> {
        let err = |reason| Error::InvalidTimestamp {
            value: String::from_utf8_lossy(value).into_owned(),
            reason,
        };
        let v = value.trim_ascii();
        let v = v.split(|&b| b == b'^').next().unwrap_or(v);
        let digits = v.iter().take_while(|b| b.is_ascii_digit()).count();
        let precision = match digits {
            4 => Precision::Year,
            6 => Precision::Month,
            8 => Precision::Day,
            10 => Precision::Hour,
            12 => Precision::Minute,
            14 => Precision::Second,
            _ => {
                return Err(err(
                    "expected 4, 6, 8, 10, 12 or 14 digits before any fraction or offset",
                ));
            }
        };
        let num = |from: usize, len: usize, default: u32| -> u32 {
            if from + len <= digits {
                v[from..from + len]
                    .iter()
                    .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'))
            } else {
                default
            }
        };
        let year = i32::try_from(num(0, 4, 0)).map_err(|_| err("year out of range"))?;
        let date = NaiveDate::from_ymd_opt(year, num(4, 2, 1), num(6, 2, 1))
            .ok_or_else(|| err("no such date"))?;
        let mut rest = &v[digits..];
        let mut precision = precision;
        let mut nanos = 0;
        if let Some(frac) = rest.strip_prefix(b".") {
            if precision != Precision::Second {
                return Err(err("a fraction needs seconds before it"));
            }
            let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
            if !(1..=9).contains(&n) {
                return Err(err("fraction must have 1 to 9 digits"));
            }
            nanos = frac[..n]
                .iter()
                .fold(0, |acc, &d| acc * 10 + u32::from(d - b'0'))
                * 10u32.pow(9 - n as u32);
            precision = Precision::Fraction(n as u8);
            rest = &frac[n..];
        }
        let time =
            chrono::NaiveTime::from_hms_nano_opt(num(8, 2, 0), num(10, 2, 0), num(12, 2, 0), nanos)
                .ok_or_else(|| err("no such time"))?;
        let offset = match rest {
            [] => None,
            [sign @ (b'+' | b'-'), h1, h2, m1, m2]
                if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) =>
            {
                let hours = i32::from((h1 - b'0') * 10 + (h2 - b'0'));
                let minutes = i32::from((m1 - b'0') * 10 + (m2 - b'0'));
                if hours > 23 || minutes > 59 {
                    return Err(err("offset out of range"));
                }
                let secs = (hours * 60 + minutes) * 60;
                let secs = if *sign == b'-' { -secs } else { secs };
                Some(FixedOffset::east_opt(secs).ok_or_else(|| err("offset out of range"))?)
            }
            _ => {
                return Err(err(
                    "expected nothing or an offset +HHMM / -HHMM after the time",
                ));
            }
        };
        Ok(Timestamp {
            naive: date.and_time(time),
            precision,
            offset,
        })
    }

    /// A timestamp from a local date-time without zone.
    pub fn from_naive(naive: NaiveDateTime, precision: Precision) -> Timestamp {
        Timestamp {
            naive: truncate(naive, precision),
            precision,
            offset: None,
        }
    }

    /// A timestamp from a zoned date-time, keeping its offset.
    pub fn from_datetime<Tz: TimeZone>(dt: &DateTime<Tz>, precision: Precision) -> Timestamp {
        let fixed = dt.fixed_offset();
        Timestamp {
            naive: truncate(fixed.naive_local(), precision),
            precision,
            offset: Some(*fixed.offset()),
        }
    }

    /// The date and time as written (local to [`offset`](Self::offset) if there is one).
    pub fn naive(&self) -> NaiveDateTime {
        self.naive
    }

    /// How much was given.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The UTC offset, if one was given.
    pub fn offset(&self) -> Option<FixedOffset> {
        self.offset
    }

    /// The instant, when an offset was given. Without one there is no instant, and no
    /// zone is guessed.
    pub fn to_datetime(&self) -> Option<DateTime<FixedOffset>> {
        let off = self.offset?;
        off.from_local_datetime(&self.naive).single()
    }
}

fn truncate(t: NaiveDateTime, p: Precision) -> NaiveDateTime {
    let d = t.date();
    let (mo, da, h, mi, s, ns) = match p {
        Precision::Year => (1, 1, 0, 0, 0, 0),
        Precision::Month => (d.month(), 1, 0, 0, 0, 0),
        Precision::Day => (d.month(), d.day(), 0, 0, 0, 0),
        Precision::Hour => (d.month(), d.day(), t.hour(), 0, 0, 0),
        Precision::Minute => (d.month(), d.day(), t.hour(), t.minute(), 0, 0),
        Precision::Second => (d.month(), d.day(), t.hour(), t.minute(), t.second(), 0),
        Precision::Fraction(n) => {
            let unit = 10u32.pow(9 - u32::from(n.clamp(1, 9)));
            let ns = t.nanosecond() % 1_000_000_000;
            (
                d.month(),
                d.day(),
                t.hour(),
                t.minute(),
                t.second(),
                ns - ns % unit,
            )
        }
    };
    NaiveDate::from_ymd_opt(d.year(), mo, da)
        .and_then(|d| d.and_hms_nano_opt(h, mi, s, ns))
        .unwrap_or(t)
}

/// Writes the value back in HL7 form at its own precision.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self.naive;
        write!(f, "{:04}", t.year())?;
        let parts = [t.month(), t.day(), t.hour(), t.minute(), t.second()];
        let shown = match self.precision {
            Precision::Year => 0,
            Precision::Month => 1,
            Precision::Day => 2,
            Precision::Hour => 3,
            Precision::Minute => 4,
            Precision::Second | Precision::Fraction(_) => 5,
        };
        for p in &parts[..shown] {
            write!(f, "{p:02}")?;
        }
        if let Precision::Fraction(n) = self.precision {
            let n = u32::from(n.clamp(1, 9));
            let frac = (t.nanosecond() % 1_000_000_000) / 10u32.pow(9 - n);
            write!(f, ".{frac:0width$}", width = n as usize)?;
        }
        if let Some(off) = self.offset {
            let secs = off.local_minus_utc();
            let sign = if secs < 0 { '-' } else { '+' };
            let mins = secs.abs() / 60;
            write!(f, "{sign}{:02}{:02}", mins / 60, mins % 60)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn every_precision_round_trips() {
        for s in [
            "2023",
            "202310",
            "20231023",
            "2023102323",
            "202310232353",
            "20231023235305",
            "20231023235305.5",
            "20231023235305.51",
            "20231023235305.516",
            "20231023235305.5160",
            "20231023235305.1234-0500",
            "202310232353+0130",
            "2023+0000",
        ] {
            assert_eq!(ts(s).to_string(), s);
        }
    }

    #[test]
    fn fraction_is_exact() {
        // Medplum reads ".1234" as +1.234 s; it is 0.1234 s.
        let t = ts("20231023235305.1234");
        assert_eq!(t.naive().nanosecond(), 123_400_000);
        assert_eq!(t.naive().second(), 5);
        assert_eq!(t.precision(), Precision::Fraction(4));
    }

    #[test]
    fn no_silent_utc() {
        let local = ts("20231023235305");
        assert_eq!(local.offset(), None);
        assert_eq!(local.to_datetime(), None);
        let zoned = ts("20231023235305-0500");
        let dt = zoned.to_datetime().unwrap();
        assert_eq!(dt.to_utc().to_rfc3339(), "2023-10-24T04:53:05+00:00");
    }

    #[test]
    fn precision_kept() {
        let t = ts("202303");
        assert_eq!(t.precision(), Precision::Month);
        assert_eq!(t.to_string(), "202303");
    }

    #[test]
    fn ts_with_degree_of_precision() {
        assert_eq!(ts("20231023^D").precision(), Precision::Day);
    }

    #[test]
    fn invalid_values() {
        for s in [
            "",
            "20",
            "20231",
            "20231301",
            "20230230",
            "2023102325",
            "20231023235305.",
            "20231023.5",
            "20231023235305+05",
            "20231023235305+2500",
            "20231023235305.1234567890",
            "2023x",
        ] {
            assert!(Timestamp::parse(s.as_bytes()).is_err(), "{s}");
        }
    }

    #[test]
    fn from_datetime_keeps_offset() {
        let dt = FixedOffset::east_opt(3600)
            .unwrap()
            .with_ymd_and_hms(2024, 1, 2, 3, 4, 5)
            .unwrap();
        assert_eq!(
            Timestamp::from_datetime(&dt, Precision::Second).to_string(),
            "20240102030405+0100"
        );
        assert_eq!(
            Timestamp::from_datetime(&dt, Precision::Day).to_string(),
            "20240102+0100"
        );
    }
}
