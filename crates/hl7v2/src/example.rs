//! Example messages for demos, tests and benchmarks.

use chrono::{DateTime, Timelike, Utc};

/// `YYYYMMDDHHMMSS[.mmm]` in UTC, the fraction only when the milliseconds are not zero
/// (the form the Medplum CLI writes).
pub fn hl7_now(now: DateTime<Utc>) -> String {
    let ms = now.nanosecond() / 1_000_000 % 1000;
    if ms == 0 {
        now.format("%Y%m%d%H%M%S").to_string()
    } else {
        format!("{}.{ms:03}", now.format("%Y%m%d%H%M%S"))
    }
}

/// An ADT^A01 (admit) of the same shape as the one `medplum hl7 send --generate-example`
/// builds: MSH, EVN, PID, PV1, control ID the milliseconds since the epoch, segments ended by
/// `\r`.
///
/// The PID segment is Medplum's example as it is, with its quirk kept so that messages compare
/// equal: the birth date and sex sit one field early (PID-6 `19800101`, PID-7 `M`, where
/// HL7 v2.5 §3.4.2 has mother's maiden name, date/time of birth and administrative sex at
/// PID-6, PID-7 and PID-8). Use another message where those fields matter.
pub fn example_adt_a01(now: DateTime<Utc>) -> String {
    let ts = hl7_now(now);
    let control_id = now.timestamp_millis();
    format!(
        "MSH|^~\\&|ADTSYS|HOSPITAL|RECEIVER|DEST|{ts}||ADT^A01|{control_id}|P|2.5|\r\
         EVN|A01|{ts}||\r\
         PID|1|12345|12345^^^HOSP^MR|123456|DOE^JOHN^MIDDLE^SUFFIX|19800101|M|||123 STREET^APT 4B^CITY^ST^12345-6789||555-555-5555||S|\r\
         PV1|1|I|2000^2012^01||||12345^DOCTOR^DOC||||||||||1234567^DOCTOR^DOC||AMB|||||||||||||||||||||||||202309280900|\r"
    )
}

/// An ORU^R01 (lab results) with `results` OBX segments, a few NTE segments with escapes, and
/// realistic field contents: about 200 bytes per OBX.
pub fn example_oru_r01(now: DateTime<Utc>, results: usize) -> String {
    let ts = hl7_now(now);
    let control_id = now.timestamp_millis();
    let mut s = format!(
        "MSH|^~\\&|LABSYS|CENTRAL LAB^2.16.840.1.113883.19.4.6^ISO|EHR|GENERAL HOSPITAL|{ts}||ORU^R01^ORU_R01|{control_id}|P|2.5.1|||AL|NE||UNICODE UTF-8\r\
         PID|1||555-44-4444^^^EHR^MR~987654^^^SSA^SS||EVERYWOMAN^EVE^E^^^^L|SMITH^^^^^^M|19620320|F|||2222 HOME STREET^^ANN ARBOR^MI^99999^USA^H||^PRN^PH^^1^555^5552004|||||||||||N\r\
         PV1|1|O|4E^234^A^GENERAL HOSPITAL||||1234^MORGAN^REX^J^^^MD|||||||||||V0001^^^GENERAL HOSPITAL^VN\r\
         ORC|RE|23456^EHR^2.16.840.1.113883.19.3.2.3^ISO|9700123^LAB^2.16.840.1.113883.19.3.1.6^ISO||CM||||{ts}|||1234^MORGAN^REX^J^^^MD\r\
         OBR|1|23456^EHR^2.16.840.1.113883.19.3.2.3^ISO|9700123^LAB^2.16.840.1.113883.19.3.1.6^ISO|24331-1^Lipid Panel^LN|||{ts}|||||||||1234^MORGAN^REX^J^^^MD||||||{ts}|||F\r"
    );
    const TESTS: [(&str, &str, &str, &str, &str); 4] = [
        (
            "2093-3",
            "Cholesterol [Mass/volume] in Serum or Plasma",
            "196",
            "mg/dL",
            "<200",
        ),
        (
            "2571-8",
            "Triglyceride [Mass/volume] in Serum or Plasma",
            "90",
            "mg/dL",
            "<150",
        ),
        (
            "2085-9",
            "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
            "62",
            "mg/dL",
            ">40",
        ),
        (
            "2089-1",
            "Cholesterol in LDL [Mass/volume] in Serum or Plasma",
            "116",
            "mg/dL",
            "<130",
        ),
    ];
    for i in 0..results {
        let (code, name, value, unit, range) = TESTS[i % TESTS.len()];
        s.push_str(&format!(
            "OBX|{n}|NM|{code}^{name}^LN||{value}|{unit}^{unit}^UCUM|{range}|N|||F|||{ts}|||||{ts}||||Central Lab^L^^^^CLIA&2.16.840.1.113883.4.7&ISO^XX^^^99D0000000\r",
            n = i + 1
        ));
        if i % 25 == 24 {
            s.push_str("NTE|1|L|Fasting \\T\\ non-fasting ranges differ.\\.br\\See \\F\\lab manual\\F\\ section 4.\r");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use chrono::TimeZone;

    #[test]
    fn adt_shape() {
        let now = Utc.with_ymd_and_hms(2023, 10, 23, 23, 53, 5).unwrap()
            + chrono::Duration::milliseconds(516);
        let s = example_adt_a01(now);
        let m = Message::parse(s.as_bytes()).unwrap();
        let names: Vec<_> = m.segments().map(|s| s.name()).collect();
        assert_eq!(names, ["MSH", "EVN", "PID", "PV1"]);
        assert_eq!(m.get("MSH-7").unwrap().raw(), b"20231023235305.516");
        assert_eq!(m.get("MSH-10").unwrap().raw(), b"1698105185516");
        assert_eq!(m.get("PID-5-1").unwrap().raw(), b"DOE");
        assert!(s.starts_with("MSH|^~\\&|ADTSYS|HOSPITAL|RECEIVER|DEST|20231023235305.516||ADT^A01|1698105185516|P|2.5|\r"));
    }

    #[test]
    fn whole_seconds_have_no_fraction() {
        let now = Utc.with_ymd_and_hms(2023, 10, 23, 23, 53, 5).unwrap();
        assert_eq!(hl7_now(now), "20231023235305");
    }

    #[test]
    fn oru_size() {
        let s = example_oru_r01(Utc::now(), 100);
        let m = Message::parse(s.as_bytes()).unwrap();
        assert_eq!(m.segments_named("OBX").count(), 100);
        assert!(s.len() > 20_000, "{}", s.len());
        assert_eq!(
            m.get("NTE-3").unwrap().text(),
            "Fasting & non-fasting ranges differ.\nSee |lab manual| section 4."
        );
    }
}
