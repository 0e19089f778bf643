//! Every message of `corpus/hl7v2/fhir-converter/`: a result message (ORU, OUL) converts, or
//! fails with a typed error naming a segment and field that exist in it; any other message is
//! refused as not a result message.

mod support;

use lab_results::{Error, Format, Options, convert};
use support::corpus;

#[test]
fn every_corpus_message_converts_or_names_the_field() {
    let files = corpus();
    assert!(files.len() > 130, "corpus has {} files", files.len());
    let (mut converted, mut refused) = (Vec::new(), Vec::new());
    for (name, bytes) in &files {
        let msg = hl7v2::Message::parse(bytes).unwrap();
        let kind = msg.get("MSH-9-1").unwrap().text().trim().to_owned();
        let result = convert(bytes, Format::Hl7, &Options::default());
        if kind != "ORU" && kind != "OUL" {
            assert!(
                matches!(result, Err(Error::NotResults { .. })),
                "{name}: {kind} should be refused as not a result"
            );
            continue;
        }
        match result {
            Ok(c) => {
                assert!(!c.reports.is_empty(), "{name}: no report");
                for r in &c.reports {
                    assert!(!r.key.value.is_empty());
                }
                converted.push(name.as_str());
            }
            Err(e) => {
                let at = e
                    .location()
                    .unwrap_or_else(|| panic!("{name}: {e} names no field"));
                let segment = msg.segment_n(&at.segment, at.occurrence);
                assert!(
                    segment.is_some(),
                    "{name}: {e}: no {}({}) in the message",
                    at.segment,
                    at.occurrence
                );
                refused.push(format!("{name}: {e}"));
            }
        }
    }
    println!("converted: {converted:?}\nrefused:\n{}", refused.join("\n"));
    assert_eq!(
        converted,
        [
            "LAB-ORU-1.hl7",
            "LAB-ORU-2.hl7",
            "LRI_2.0-NG_CBC_Typ_Message.hl7",
            "ORU-R01-RMGEAD.hl7"
        ]
    );
    // The others carry an OBX without an observation identifier (OBX-3 is required).
    assert_eq!(refused.len(), 7, "{refused:#?}");
    assert!(
        refused
            .iter()
            .all(|r| r.contains("-3 is empty: the observation identifier"))
    );
}

#[test]
fn corpus_conversions_hold_what_the_messages_say() {
    let files = corpus();
    let get = |n: &str| {
        let (_, bytes) = files.iter().find(|(name, _)| name == n).unwrap();
        convert(bytes, Format::Hl7, &Options::default()).unwrap()
    };
    // NIST LRI CBC: 28 results, UCUM units, an ORC with placer and filler numbers.
    let lri = get("LRI_2.0-NG_CBC_Typ_Message.hl7");
    assert_eq!(lri.reports[0].observations, 28);
    assert_eq!(
        lri.reports[0].key.value,
        "R-991133^NIST Lab Filler^57021-8^20110104170028-0800"
    );
    assert_eq!(
        lri.reports[0].order_search.as_deref(),
        Some("identifier=ORD666555")
    );
    let obs: Vec<_> = lri
        .resources()
        .filter(|r| r["resourceType"] == "Observation")
        .collect();
    assert_eq!(obs[0]["valueQuantity"]["code"], "10*6/uL");
    assert_eq!(obs[0]["valueQuantity"]["unit"], "million per microliter");
    assert_eq!(obs[0]["effectiveDateTime"], "2011-01-03T14:34:28-08:00");
    assert_eq!(obs[3]["interpretation"][0]["coding"][0]["code"], "HH");
    assert_eq!(
        obs[19]["valueCodeableConcept"]["coding"][0]["system"],
        "http://snomed.info/sct"
    );
    assert_eq!(obs[25]["valueString"], "Many spherocytes present.");
    // v2.4 glucose as SN with no comparator; a unit in lower case that is still UCUM.
    let glucose = get("ORU-R01-RMGEAD.hl7");
    let o = glucose
        .resources()
        .find(|r| r["resourceType"] == "Observation")
        .unwrap();
    assert_eq!(o["valueQuantity"]["value"], 182);
    assert_eq!(o["valueQuantity"]["code"], "mg/dl");
    assert_eq!(o["interpretation"][0]["coding"][0]["code"], "H");
    assert_eq!(o["referenceRange"][0]["text"], "70_105");
}
