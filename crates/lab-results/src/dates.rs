//! HL7 DTM / TS / DT / TM and ASTM date-times to FHIR `dateTime`, `instant`, `date` and `time`.
//!
//! Nothing is assumed: a value keeps its precision (down to the day; FHIR has no hour or
//! minute precision, so those get `:00` seconds and keep the value as sent), its offset as
//! written, and a time without an offset gets the configured local offset or, without one,
//! only its date.

use chrono::{Datelike, FixedOffset, Timelike};
use hl7v2::{Precision, Timestamp};

use crate::{Error, Location};

/// A FHIR `dateTime`, and the value as sent when the FHIR value says less than it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DateTime {
    pub value: String,
    pub original: Option<String>,
}

fn parse(raw: &str, at: &Location) -> Result<Option<Timestamp>, Error> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let ts = Timestamp::parse(raw.as_bytes())
        .map_err(|e| Error::invalid(at.clone(), raw, timestamp_reason(&e)))?;
    if ts.naive().year() < 1 {
        return Err(Error::invalid(
            at.clone(),
            raw,
            "is not a date FHIR can hold (year 0)",
        ));
    }
    Ok(Some(ts))
}

fn timestamp_reason(e: &hl7v2::Error) -> String {
    match e {
        hl7v2::Error::InvalidTimestamp { reason, .. } => format!("is not a DTM: {reason}"),
        other => other.to_string(),
    }
}

fn date_part(ts: &Timestamp) -> String {
    let d = ts.naive().date();
    match ts.precision() {
        Precision::Year => format!("{:04}", d.year()),
        Precision::Month => format!("{:04}-{:02}", d.year(), d.month()),
        _ => format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day()),
    }
}

/// `+hh:mm`, refused outside FHIR's range (-13:59..+14:00).
fn offset(off: FixedOffset, raw: &str, at: &Location) -> Result<String, Error> {
    let secs = off.local_minus_utc();
    let mins = secs.abs() / 60;
    if mins > 14 * 60 {
        return Err(Error::invalid(
            at.clone(),
            raw,
            "has an offset beyond the +/-14:00 FHIR allows",
        ));
    }
    let sign = if secs < 0 { '-' } else { '+' };
    Ok(format!("{sign}{:02}:{:02}", mins / 60, mins % 60))
}

fn clock(ts: &Timestamp) -> String {
    let t = ts.naive();
    let mut s = format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second());
    if let Precision::Fraction(n) = ts.precision() {
        let n = u32::from(n.clamp(1, 9));
        let frac = (t.nanosecond() % 1_000_000_000) / 10u32.pow(9 - n);
        s.push_str(&format!(".{frac:0width$}", width = n as usize));
    }
    s
}

/// A DTM (or TS, DT, ASTM date-time) as a FHIR `dateTime`; `None` when empty.
///
/// # Errors
/// [`Error::Invalid`] at `at` when the value is not a DTM or cannot be a FHIR `dateTime`.
pub(crate) fn date_time(
    raw: &str,
    at: &Location,
    local: Option<FixedOffset>,
) -> Result<Option<DateTime>, Error> {
    let Some(ts) = parse(raw, at)? else {
        return Ok(None);
    };
    let raw = raw.trim();
    let has_time = ts.precision() >= Precision::Hour;
    if !has_time {
        return Ok(Some(DateTime {
            value: date_part(&ts),
            original: None,
        }));
    }
    match ts.offset().or(local) {
        Some(off) => Ok(Some(DateTime {
            value: format!("{}T{}{}", date_part(&ts), clock(&ts), offset(off, raw, at)?),
            original: (ts.precision() < Precision::Second).then(|| raw.to_owned()),
        })),
        None => Ok(Some(DateTime {
            value: date_part(&ts),
            original: Some(raw.to_owned()),
        })),
    }
}

/// A DTM as a FHIR `instant` (date, time to the second and offset); `None` when empty, when
/// it has no time, or when no offset is known.
///
/// # Errors
/// As [`date_time`].
pub(crate) fn instant(
    raw: &str,
    at: &Location,
    local: Option<FixedOffset>,
) -> Result<Option<String>, Error> {
    let Some(ts) = parse(raw, at)? else {
        return Ok(None);
    };
    if ts.precision() < Precision::Hour {
        return Ok(None);
    }
    match ts.offset().or(local) {
        Some(off) => Ok(Some(format!(
            "{}T{}{}",
            date_part(&ts),
            clock(&ts),
            offset(off, raw.trim(), at)?
        ))),
        None => Ok(None),
    }
}

/// The date of a DTM as a FHIR `date` (a birth date sent with a time keeps only its date).
///
/// # Errors
/// As [`date_time`].
pub(crate) fn date(raw: &str, at: &Location) -> Result<Option<String>, Error> {
    Ok(parse(raw, at)?.map(|ts| date_part(&ts)))
}

/// An HL7 TM (`HH[MM[SS[.S...]]][+/-ZZZZ]`) as a FHIR `time` (`hh:mm:ss[.s...]`; the offset is
/// dropped, FHIR `time` has none).
///
/// # Errors
/// [`Error::Invalid`] when the value is not a TM.
pub(crate) fn time(raw: &str, at: &Location) -> Result<Option<String>, Error> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let bad = || Error::invalid(at.clone(), raw, "is not a TM (HH[MM[SS[.S]]][+/-ZZZZ])");
    let body = raw.split(['+', '-']).next().unwrap_or(raw);
    let (hms, frac) = match body.split_once('.') {
        Some((h, f)) => (h, Some(f)),
        None => (body, None),
    };
    if !hms.bytes().all(|b| b.is_ascii_digit()) || ![2, 4, 6].contains(&hms.len()) {
        return Err(bad());
    }
    let num = |i: usize| hms.get(i..i + 2).and_then(|s| s.parse::<u32>().ok());
    let (h, m, s) = (
        num(0).unwrap_or(99),
        num(2).unwrap_or(0),
        num(4).unwrap_or(0),
    );
    if h > 23 || m > 59 || s > 59 {
        return Err(bad());
    }
    let mut out = format!("{h:02}:{m:02}:{s:02}");
    if let Some(f) = frac {
        if f.is_empty() || hms.len() != 6 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        out.push('.');
        out.push_str(f);
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> Location {
        Location::new("OBX", 1, 14)
    }

    fn dt(raw: &str, local: Option<i32>) -> DateTime {
        let local = local.and_then(FixedOffset::east_opt);
        date_time(raw, &at(), local).unwrap().unwrap()
    }

    #[test]
    fn precision_and_offset_are_kept() {
        assert_eq!(dt("2024", None).value, "2024");
        assert_eq!(dt("202403", None).value, "2024-03");
        assert_eq!(dt("20240301", None).value, "2024-03-01");
        let full = dt("20240301093005.1234-0500", None);
        assert_eq!(full.value, "2024-03-01T09:30:05.1234-05:00");
        assert_eq!(full.original, None);
        assert_eq!(
            dt("20240301093005+0000", None).value,
            "2024-03-01T09:30:05+00:00"
        );
        // Minute precision: FHIR needs seconds; the value as sent is kept.
        let minute = dt("202403010930+0100", None);
        assert_eq!(minute.value, "2024-03-01T09:30:00+01:00");
        assert_eq!(minute.original.as_deref(), Some("202403010930+0100"));
    }

    #[test]
    fn no_zone_is_guessed() {
        let local = dt("20240301093005", None);
        assert_eq!(local.value, "2024-03-01");
        assert_eq!(local.original.as_deref(), Some("20240301093005"));
        assert_eq!(
            dt("20240301093005", Some(3600)).value,
            "2024-03-01T09:30:05+01:00"
        );
        // An offset in the value wins over the configured one.
        assert_eq!(
            dt("20240301093005-0300", Some(3600)).value,
            "2024-03-01T09:30:05-03:00"
        );
        assert_eq!(instant("20240301093005", &at(), None).unwrap(), None);
        assert_eq!(
            instant("2024030109+0200", &at(), None).unwrap().as_deref(),
            Some("2024-03-01T09:00:00+02:00")
        );
        assert_eq!(instant("20240301+0200", &at(), None).unwrap(), None);
    }

    #[test]
    fn bad_values_name_the_field() {
        for bad in [
            "yesterday",
            "2024-03-01",
            "20241301",
            "00000101",
            "20240301093005+1500",
        ] {
            let e = date_time(bad, &at(), None).unwrap_err();
            assert_eq!(e.location().unwrap().to_string(), "OBX(1)-14", "{bad}");
        }
        assert_eq!(date_time("  ", &at(), None).unwrap(), None);
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(
            date("20190411101633+0215", &at()).unwrap().as_deref(),
            Some("2019-04-11")
        );
        assert_eq!(time("0930", &at()).unwrap().as_deref(), Some("09:30:00"));
        assert_eq!(
            time("093005.25+0100", &at()).unwrap().as_deref(),
            Some("09:30:05.25")
        );
        assert!(time("2561", &at()).is_err());
        assert!(time("9", &at()).is_err());
    }
}
