//! FHIR `date` / `dateTime` to HL7 DTM and ASTM date-times.

use chrono::{DateTime, Utc};

use crate::Error;

/// `YYYYMMDDHHMMSS` in UTC.
pub fn hl7_now(now: DateTime<Utc>) -> String {
    now.format("%Y%m%d%H%M%S+0000").to_string()
}

/// The parts of a FHIR date or dateTime: digits of the date and time, fraction, offset.
struct Parts {
    digits: String,
    fraction: String,
    /// `+hhmm` / `-hhmm`, or empty (a date, or a dateTime without a zone).
    offset: String,
}

fn parts(s: &str, element: &'static str) -> Result<Parts, Error> {
    let bad = || Error::Invalid {
        element,
        reason: format!("{s:?} is not a FHIR date or dateTime"),
    };
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let date_parts: Vec<&str> = date.split('-').collect();
    let widths = [4, 2, 2];
    if date_parts.is_empty()
        || date_parts.len() > 3
        || date_parts
            .iter()
            .zip(widths)
            .any(|(p, w)| p.len() != w || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let mut digits: String = date_parts.concat();
    let (mut fraction, mut offset) = (String::new(), String::new());
    if let Some(t) = time {
        let (clock, zone) = if let Some(c) = t.strip_suffix('Z') {
            (c, Some("+0000".to_owned()))
        } else if let Some(i) = t.rfind(['+', '-']) {
            let z = &t[i..];
            let hhmm = z[1..].replace(':', "");
            if hhmm.len() != 4 || !hhmm.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            (&t[..i], Some(format!("{}{hhmm}", &z[..1])))
        } else {
            (t, None)
        };
        let (hms, frac) = match clock.split_once('.') {
            Some((a, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (a, f),
            Some(_) => return Err(bad()),
            None => (clock, ""),
        };
        let hms_parts: Vec<&str> = hms.split(':').collect();
        if hms_parts.len() != 3
            || hms_parts
                .iter()
                .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(bad());
        }
        digits.push_str(&hms_parts.concat());
        fraction = frac.chars().take(4).collect();
        offset = zone.unwrap_or_default();
    }
    Ok(Parts {
        digits,
        fraction,
        offset,
    })
}

/// HL7 DTM: `2024-03-01T09:30:00.25+01:00` → `20240301093000.25+0100`, `…Z` → `+0000`,
/// `1970-01-01` → `19700101`. The fraction keeps at most 4 digits (DTM's limit).
pub fn hl7_dtm(s: &str, element: &'static str) -> Result<String, Error> {
    let p = parts(s, element)?;
    let mut out = p.digits;
    if !p.fraction.is_empty() {
        out.push('.');
        out.push_str(&p.fraction);
    }
    out.push_str(&p.offset);
    Ok(out)
}

/// ASTM: `YYYYMMDD[HHMMSS]`, the wall time as written (ASTM has no zone).
pub fn astm_datetime(s: &str, element: &'static str) -> Result<String, Error> {
    Ok(parts(s, element)?.digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_to_hl7_and_astm() {
        let e = "x";
        assert_eq!(
            hl7_dtm("2024-03-01T09:30:00.25+01:00", e).unwrap(),
            "20240301093000.25+0100"
        );
        assert_eq!(
            hl7_dtm("2024-03-01T09:30:00Z", e).unwrap(),
            "20240301093000+0000"
        );
        assert_eq!(
            hl7_dtm("2024-03-01T09:30:00-05:00", e).unwrap(),
            "20240301093000-0500"
        );
        assert_eq!(
            hl7_dtm("2024-03-01T09:30:00.123456Z", e).unwrap(),
            "20240301093000.1234+0000"
        );
        assert_eq!(hl7_dtm("1970-01-01", e).unwrap(), "19700101");
        assert_eq!(hl7_dtm("1970-01", e).unwrap(), "197001");
        assert_eq!(hl7_dtm("1970", e).unwrap(), "1970");
        assert_eq!(
            astm_datetime("2024-03-01T09:30:00+01:00", e).unwrap(),
            "20240301093000"
        );
        for bad in [
            "",
            "yesterday",
            "2024-3-1",
            "2024-03-01T9:30",
            "2024-03-01T09:30:00+1",
            "2024-03-01T09:30:00.Z",
        ] {
            assert!(hl7_dtm(bad, e).is_err(), "{bad}");
        }
    }
}
