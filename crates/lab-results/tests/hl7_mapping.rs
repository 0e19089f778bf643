//! HL7 v2 ORU^R01 and OUL^R22 written field by field, and what each field becomes.

mod support;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::FixedOffset;
use lab_results::{Error, Format, KeySource, Options, OrderLink, OrderRole, convert};
use serde_json::{Value, json};
use support::*;

fn oru() -> (lab_results::Conversion, Vec<u8>) {
    let pdf = pdf_bytes();
    let msg = oru_full(&STANDARD.encode(&pdf));
    (
        convert(msg.as_bytes(), Format::Hl7, &Options::default()).unwrap(),
        pdf,
    )
}

fn obs(c: &lab_results::Conversion, n: usize) -> Value {
    resources(&c.bundle, "Observation")[n - 1].clone()
}

#[test]
fn report_header_order_and_key() {
    let (c, _) = oru();
    assert_eq!(c.reports.len(), 1);
    let r = &c.reports[0];
    assert_eq!(r.status, "final");
    assert_eq!(r.observations, 16);
    assert_eq!(r.key.source, KeySource::FillerOrder);
    assert_eq!(r.key.value, "F-1001^LAB^24323-8^20240301101500+0100");
    let order = r.order.as_ref().unwrap();
    assert_eq!(
        (order.value.as_str(), order.role),
        ("PL-42", OrderRole::Placer)
    );
    assert_eq!(order.namespace.as_deref(), Some("EHR"));
    assert_eq!(r.order_search.as_deref(), Some("identifier=PL-42"));

    let dr = resources(&c.bundle, "DiagnosticReport")[0];
    assert_eq!(dr["status"], "final");
    assert_eq!(
        dr["code"]["coding"][0],
        json!({"system": "http://loinc.org", "code": "24323-8", "display": "Comprehensive metabolic panel"})
    );
    // The alternate code with its local system (L has no URI unless one is configured).
    assert_eq!(
        dr["code"]["coding"][1],
        json!({"code": "CMP", "display": "CMP local"})
    );
    assert_eq!(dr["category"][0]["coding"][0]["code"], "CH");
    assert_eq!(dr["effectiveDateTime"], "2024-03-01T09:30:00+01:00");
    assert_eq!(dr["issued"], "2024-03-01T10:15:00+01:00");
    assert_eq!(
        dr["resultsInterpreter"][0],
        json!({"type": "Practitioner", "identifier": {"value": "D77"}, "display": "Anna Smith"})
    );
    assert_eq!(dr["performer"][0]["display"], "Tom Tech");
    assert_eq!(
        dr["basedOn"][0]["reference"],
        "ServiceRequest?identifier=PL-42"
    );
    assert_eq!(
        dr["basedOn"][0]["identifier"]["type"]["coding"][0]["code"],
        "PLAC"
    );
    let ids = dr["identifier"].as_array().unwrap();
    assert_eq!(
        ids[0],
        json!({"system": lab_results::REPORT_KEY_SYSTEM, "value": r.key.value})
    );
    assert_eq!(ids[1]["value"], "PL-42");
    assert_eq!(ids[1]["assigner"]["display"], "EHR");
    assert_eq!(ids[2]["value"], "F-1001");
    assert_eq!(ids[2]["type"]["coding"][0]["code"], "FILL");
    // The NTE after the OBR: R4 DiagnosticReport has no note; the R5 element as an extension.
    assert_eq!(dr["extension"][0]["url"], lab_results::REPORT_NOTE_R5);
    assert_eq!(
        dr["extension"][0]["valueAnnotation"]["text"],
        "Specimen received ambient."
    );
    assert_eq!(dr["result"].as_array().unwrap().len(), 16);
    // Conditional create by the key.
    let entry = c.bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "DiagnosticReport")
        .unwrap();
    assert_eq!(entry["request"]["method"], "POST");
    assert_eq!(entry["request"]["ifNoneExist"], r.key.search());
    assert_eq!(entry["fullUrl"], r.full_url.as_str());
}

#[test]
fn patient_and_specimen_are_conditional_creates() {
    let (c, _) = oru();
    let entries = c.bundle["entry"].as_array().unwrap();
    let patient = &entries[0];
    assert_eq!(
        patient["request"]["ifNoneExist"],
        "identifier=urn%3Aoid%3A1.2.3.4%7CMRN-777"
    );
    let p = &patient["resource"];
    assert_eq!(p["identifier"][0]["system"], "urn:oid:1.2.3.4");
    assert_eq!(p["identifier"][1]["type"]["coding"][0]["code"], "SS");
    assert_eq!(
        p["name"][0],
        json!({"use": "official", "family": "O'Brien", "given": ["Mary", "Ann"], "prefix": ["Dr"], "suffix": ["Jr"]})
    );
    assert_eq!(
        (p["birthDate"].as_str(), p["gender"].as_str()),
        (Some("1970-05-17"), Some("female"))
    );

    let spm = &entries[1];
    assert_eq!(spm["request"]["ifNoneExist"], "identifier=SP-77");
    let s = &spm["resource"];
    assert_eq!(s["identifier"][0]["assigner"]["display"], "EHR");
    assert_eq!(s["identifier"][1]["type"]["coding"][0]["code"], "FILL");
    assert_eq!(
        s["type"]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/v2-0487"
    );
    assert_eq!(
        s["collection"]["collectedDateTime"],
        "2024-03-01T09:30:00+01:00"
    );
    assert_eq!(s["receivedTime"], "2024-03-01T09:45:00+01:00");
    assert_eq!(s["subject"]["reference"], patient["fullUrl"]);
    let dr = resources(&c.bundle, "DiagnosticReport")[0];
    assert_eq!(dr["specimen"][0]["reference"], spm["fullUrl"]);
    assert_eq!(obs(&c, 1)["specimen"]["reference"], spm["fullUrl"]);
    assert_eq!(obs(&c, 1)["subject"]["reference"], patient["fullUrl"]);
}

#[test]
fn numbers_units_ranges_and_flags() {
    let (c, _) = oru();
    let glucose = obs(&c, 1);
    assert_eq!(glucose["status"], "final");
    assert_eq!(glucose["category"][0]["coding"][0]["code"], "laboratory");
    assert_eq!(glucose["effectiveDateTime"], "2024-03-01T09:30:00+01:00");
    assert_eq!(glucose["issued"], "2024-03-01T10:15:00+01:00");
    // 5.40: the number is 5.4, the precision says two decimals were sent.
    assert_eq!(
        glucose["valueQuantity"],
        json!({
        "value": 5.4,
        "_value": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/quantity-precision", "valueInteger": 2}]},
        "unit": "millimole per liter", "system": "http://unitsofmeasure.org", "code": "mmol/L"})
    );
    assert_eq!(glucose["referenceRange"][0]["low"]["value"], 3.9);
    assert_eq!(glucose["referenceRange"][0]["high"]["code"], "mmol/L");
    assert_eq!(glucose["referenceRange"][0]["text"], "3.9-6.1");
    assert_eq!(
        glucose["interpretation"][0]["coding"][0],
        json!({"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "N", "display": "Normal"})
    );
    assert_eq!(
        glucose["identifier"][0]["value"],
        "F-1001^LAB^24323-8^20240301101500+0100/1"
    );

    let wbc = obs(&c, 2);
    assert_eq!(wbc["status"], "corrected");
    assert_eq!(wbc["valueQuantity"]["code"], "10*3/uL");
    assert_eq!(wbc["referenceRange"][0]["high"]["value"], 10.8);
    assert_eq!(wbc["interpretation"][0]["coding"][0]["code"], "HH");
    // Not UCUM: unit text only.
    assert_eq!(
        obs(&c, 3)["valueQuantity"],
        json!({"value": 4.06, "unit": "tera.l-1"})
    );
}

#[test]
fn structured_numerics() {
    let (c, _) = oru();
    let crp = obs(&c, 4);
    assert_eq!(
        crp["valueQuantity"],
        json!({"value": 5, "comparator": "<", "unit": "mg/L", "system": "http://unitsofmeasure.org", "code": "mg/L"})
    );
    assert_eq!(crp["referenceRange"][0]["high"]["value"], 5);
    let range = &obs(&c, 5)["valueRange"];
    assert_eq!(
        (
            range["low"]["value"].as_i64(),
            range["high"]["value"].as_i64()
        ),
        (Some(10), Some(20))
    );
    assert_eq!(range["low"]["code"], "%");
    assert_eq!(range["extension"][0]["valueString"], "10 - 20");
    let ratio = &obs(&c, 6)["valueRatio"];
    assert_eq!(
        (
            ratio["numerator"]["value"].as_i64(),
            ratio["denominator"]["value"].as_i64()
        ),
        (Some(1), Some(128))
    );
}

#[test]
fn text_keeps_escapes_and_line_breaks() {
    let (c, _) = oru();
    assert_eq!(obs(&c, 7)["valueString"], "Hemolysed & lipemic | icteric");
    // TX: \.br\ and each repetition are line breaks.
    assert_eq!(
        obs(&c, 8)["valueString"],
        "FINDINGS:\nHeart size normal.\nIMPRESSION: none"
    );
    // FT: highlighting carries no text; \.sp\ is a line break.
    assert_eq!(obs(&c, 9)["valueString"], "Margin: clear\nGrade 1");
}

#[test]
fn codes_dates_and_times() {
    let (c, _) = oru();
    let culture = obs(&c, 10);
    assert_eq!(
        culture["valueCodeableConcept"],
        json!({
        "coding": [{"system": "http://snomed.info/sct", "code": "260373001", "display": "Detected"}],
        "text": "Detected in both bottles"})
    );
    assert_eq!(culture["interpretation"][0]["coding"][0]["code"], "A");
    assert_eq!(obs(&c, 11)["valueDateTime"], "2024-03-01T08:30:05.25-05:00");
    assert_eq!(obs(&c, 12)["valueDateTime"], "2024-02-29");
    assert_eq!(obs(&c, 16)["valueTime"], "09:30:00");
}

#[test]
fn pdf_is_kept_byte_exact() {
    let (c, pdf) = oru();
    let report = obs(&c, 13);
    assert!(report.get("valueString").is_none());
    let ext = &report["extension"][0];
    assert_eq!(ext["url"], lab_results::OBSERVATION_VALUE_R5);
    let att = &ext["valueAttachment"];
    assert_eq!(att["contentType"], "application/pdf");
    assert_eq!(att["size"], pdf.len());
    assert_eq!(STANDARD.decode(att["data"].as_str().unwrap()).unwrap(), pdf);
    // And as the report's presented form, so report viewers show it.
    let dr = resources(&c.bundle, "DiagnosticReport")[0];
    assert_eq!(dr["presentedForm"][0]["data"], att["data"]);
    // RP: a pointer.
    let rp = &obs(&c, 14)["extension"][0]["valueAttachment"];
    assert_eq!(rp["url"], "https://example.org/r?a=1&b=2");
    assert_eq!(rp["contentType"], "application/pdf");
}

#[test]
fn ed_encodings_and_bad_payloads() {
    let msg = |ed: &str| {
        format!(
            "MSH|^~\\&|A|B|C|D|20240301||ORU^R01|1|P|2.5\rOBR|1||F1|X^Y^L|||20240301\r{}\r",
            segment(
                "OBX",
                &[(1, "1"), (2, "ED"), (3, "X^Y^L"), (5, ed), (11, "F")]
            )
        )
    };
    let data = |m: String| {
        let c = convert(m.as_bytes(), Format::Hl7, &Options::default()).unwrap();
        let o = resources(&c.bundle, "Observation")[0].clone();
        STANDARD
            .decode(
                o["extension"][0]["valueAttachment"]["data"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap()
    };
    assert_eq!(data(msg("^AP^octet-stream^Hex^00FF10")), [0, 255, 16]);
    // Base64 wrapped in escaped line breaks, and without padding.
    assert_eq!(data(msg("^AP^^Base64^AAEC\\X0D0A\\Aw")), [0, 1, 2, 3]);
    assert_eq!(data(msg("^TEXT^^A^a\\T\\b")), b"a&b");
    let e = convert(
        msg("^AP^PDF^Base64^@@@@").as_bytes(),
        Format::Hl7,
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(e.location().unwrap().to_string(), "OBX(1)-5-5");
    let e = convert(
        msg("^AP^PDF^UUENCODE^abc").as_bytes(),
        Format::Hl7,
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(e.location().unwrap().to_string(), "OBX(1)-5-4");
}

#[test]
fn notes_statuses_and_absent_values() {
    let (c, _) = oru();
    let rp = obs(&c, 14);
    assert_eq!(
        rp["note"][0],
        json!({"authorString": "Anna Smith", "time": "2024-03-01T10:10:00+01:00", "text": "Reviewed\nby the lab"})
    );
    let cancelled = obs(&c, 15);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        cancelled["dataAbsentReason"]["coding"][0]["code"],
        "not-performed"
    );
}

#[test]
fn oul_r22_specimen_groups() {
    let c = convert(oul_r22().as_bytes(), Format::Hl7, &Options::default()).unwrap();
    assert_eq!(c.reports.len(), 2);
    // The ORC after the OBR belongs to it.
    assert_eq!(c.reports[0].key.value, "LF-1^LAB^718-7^202403021100+0000");
    assert_eq!(c.reports[0].status, "final", "from its results");
    assert_eq!(c.reports[1].status, "preliminary");
    let specimen = &c.bundle["entry"][1];
    assert_eq!(specimen["resource"]["resourceType"], "Specimen");
    for dr in resources(&c.bundle, "DiagnosticReport") {
        assert_eq!(dr["specimen"][0]["reference"], specimen["fullUrl"]);
    }
    let obs = resources(&c.bundle, "Observation");
    assert_eq!(obs.len(), 3);
    // The specimen's own observation (before any OBR) is not in a report.
    let hemolysis = obs
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "9999-1")
        .unwrap();
    assert_eq!(hemolysis["specimen"]["reference"], specimen["fullUrl"]);
    assert_eq!(hemolysis["identifier"][0]["value"], "ANALYZER^OUL-1/1");
    let plt = obs
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "777-3")
        .unwrap();
    assert_eq!(plt["note"][0]["text"], "PLT clumps?");
    assert_eq!(plt["interpretation"][0]["coding"][0]["code"], "L");
    // Minute precision: seconds added, the value as sent kept.
    assert_eq!(plt["effectiveDateTime"], "2024-03-02T11:00:00+00:00");
    assert_eq!(
        plt["_effectiveDateTime"]["extension"][0]["valueString"],
        "202403021100+0000"
    );
}

#[test]
fn resends_are_recognised() {
    let first = oru_full("AAEC");
    // The same results, resent later in a new message.
    let again = first
        .replace("MSG-0001", "MSG-0917")
        .replace("20240301101500+0100||ORU", "20240301113000+0100||ORU");
    let a = convert(first.as_bytes(), Format::Hl7, &Options::default()).unwrap();
    let b = convert(again.as_bytes(), Format::Hl7, &Options::default()).unwrap();
    assert_eq!(a.reports[0].key, b.reports[0].key);
    let searches = |c: &lab_results::Conversion| -> Vec<Value> {
        c.bundle["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["request"]["ifNoneExist"].clone())
            .collect()
    };
    assert_eq!(searches(&a), searches(&b));
    assert!(
        searches(&a).iter().all(|s| s.is_string()),
        "every entry is a conditional create"
    );
    // A corrected report (new OBR-22) is a new report.
    let corrected = first.replace("|20240301101500+0100||CH|F|", "|20240301120000+0100||CH|C|");
    let c = convert(corrected.as_bytes(), Format::Hl7, &Options::default()).unwrap();
    assert_ne!(c.reports[0].key, a.reports[0].key);
    assert_eq!(c.reports[0].status, "corrected");
    // The same input gives the same Bundle.
    assert_eq!(
        a,
        convert(first.as_bytes(), Format::Hl7, &Options::default()).unwrap()
    );
}

#[test]
fn options_change_links_and_zones() {
    let msg = oru_full("AAEC");
    let opts = Options {
        order_link: OrderLink::Identifier,
        placer_system: Some("urn:placer".into()),
        ..Options::default()
    };
    let c = convert(msg.as_bytes(), Format::Hl7, &opts).unwrap();
    let dr = resources(&c.bundle, "DiagnosticReport")[0];
    assert_eq!(
        dr["basedOn"][0],
        json!({"type": "ServiceRequest", "identifier": {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PLAC"}]},
        "system": "urn:placer", "value": "PL-42"}})
    );
    assert_eq!(
        c.reports[0].order_search.as_deref(),
        Some("identifier=urn%3Aplacer%7CPL-42")
    );
    let none = Options {
        order_link: OrderLink::None,
        ..Options::default()
    };
    let c = convert(msg.as_bytes(), Format::Hl7, &none).unwrap();
    assert!(
        resources(&c.bundle, "DiagnosticReport")[0]
            .get("basedOn")
            .is_none()
    );

    // Times without an offset: only the date, unless the sender's offset is configured.
    let local = msg.replace("20240301093000+0100", "20240301093000");
    let c = convert(local.as_bytes(), Format::Hl7, &Options::default()).unwrap();
    let dr = resources(&c.bundle, "DiagnosticReport")[0];
    assert_eq!(dr["effectiveDateTime"], "2024-03-01");
    assert_eq!(
        dr["_effectiveDateTime"]["extension"][0]["valueString"],
        "20240301093000"
    );
    let berlin = Options {
        local_offset: FixedOffset::east_opt(3600),
        ..Options::default()
    };
    let c = convert(local.as_bytes(), Format::Hl7, &berlin).unwrap();
    assert_eq!(
        resources(&c.bundle, "DiagnosticReport")[0]["effectiveDateTime"],
        "2024-03-01T09:30:00+01:00"
    );
}

#[test]
fn errors_name_segment_and_field() {
    let base = "MSH|^~\\&|A|B|C|D|20240301||ORU^R01|1|P|2.5\rOBR|1||F1|X^Y^L\r";
    let cases: [(&str, &str, &str); 7] = [
        ("OBX|1|NM|G^Glu^L||high||||||F", "OBX(1)-5", "not a number"),
        ("OBX|1|NM|||5||||||F", "OBX(1)-3", "empty"),
        ("OBX|1|NM|G^Glu^L||5||||||Q", "OBX(1)-11", "0085"),
        (
            "OBX|1|DTM|G^Glu^L||2024-03-01||||||F",
            "OBX(1)-5",
            "not a DTM",
        ),
        (
            "OBX|1|SN|G^Glu^L||=<^5||||||F",
            "OBX(1)-5",
            "structured numeric",
        ),
        (
            "OBX|1|NM|G^Glu^L||5||||||F|||20241301",
            "OBX(1)-14",
            "no such date",
        ),
        ("OBX|1|TM|G^Glu^L||2599||||||F", "OBX(1)-5", "TM"),
    ];
    for (obx, location, reason) in cases {
        let m = format!("{base}{obx}\r");
        let e = convert(m.as_bytes(), Format::Hl7, &Options::default()).unwrap_err();
        assert_eq!(
            e.location().map(ToString::to_string).as_deref(),
            Some(location),
            "{obx}: {e}"
        );
        assert!(e.to_string().contains(reason), "{obx}: {e}");
    }
    let e = convert(
        b"MSH|^~\\&|A|B|C|D|20240301||ORU^R01|1|P|2.5\rOBR|1||F1\r",
        Format::Hl7,
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "OBR(1)-4 is empty: the report's code (universal service identifier)"
    );
    let e = convert(
        b"MSH|^~\\&|A|B|C|D|20240301||ORU^R01|1|P|2.5\rOBR|1||F1|X^Y^L|||||||||||||||||||||Y\r",
        Format::Hl7,
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Invalid { location, .. } if location.to_string() == "OBR(1)-25"),
        "{e}"
    );
    let e = convert(
        b"MSH|^~\\&|A|B|C|D|20240301||ADT^A01|1|P|2.5\rPID|1\r",
        Format::Hl7,
        &Options::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "MSH(1)-9: ADT^A01 is not a result message (ORU^R01 or OUL^R21..R24)"
    );
    assert!(matches!(
        convert(b"PID|1", Format::Hl7, &Options::default()),
        Err(Error::Hl7(_))
    ));
    let small = Options {
        max_size: 10,
        ..Options::default()
    };
    assert!(matches!(
        convert(base.as_bytes(), Format::Hl7, &small),
        Err(Error::TooLarge { max: 10, .. })
    ));
    // Lenient: a number that is not one becomes text.
    let lenient = Options {
        lenient_values: true,
        ..Options::default()
    };
    let m = format!("{base}OBX|1|NM|G^Glu^L||see note||||||F\r");
    let c = convert(m.as_bytes(), Format::Hl7, &lenient).unwrap();
    assert_eq!(
        resources(&c.bundle, "Observation")[0]["valueString"],
        "see note"
    );
}

#[test]
fn line_feeds_inside_report_text() {
    // A CR-terminated message whose TX value holds line feeds (shared case 05's kind): the
    // lines stay in one value, and so does a line break written \X0A\.
    let msg = "MSH|^~\\&|RIS|RAD|EHR|HOSP|20240301120000+0000||ORU^R01|CTRL0501|P|2.3\r\
PID|1||P100^^^RAD^MR||REPORT^TEST||19600101|M\r\
OBR|1|A1|A1|XR^XRAY CHEST|||20240301110000+0000\r\
OBX|1|TX|REPORT^Report||EXAM: XR CHEST 2 VIEWS\nFINDINGS:\nHeart size normal.\\X0A\\Compared with prior study.\nIMPRESSION:\nNo acute disease.||||||F\r";
    let c = convert(msg.as_bytes(), Format::Hl7, &Options::default()).unwrap();
    let o = resources(&c.bundle, "Observation");
    assert_eq!(o.len(), 1);
    assert_eq!(
        o[0]["valueString"],
        "EXAM: XR CHEST 2 VIEWS\nFINDINGS:\nHeart size normal.\nCompared with prior study.\nIMPRESSION:\nNo acute disease."
    );
    assert_eq!(o[0]["status"], "final");
}
