//! Hand-written ServiceRequests to ORM^O01, OML^O21 and ASTM, text for text, and parsed back.

use chrono::TimeZone;
use lab_orders::{Error, Event, Format, Options, Order, convert, lookup_in};
use serde_json::{Value, json};

fn patient() -> Value {
    json!({"resourceType": "Patient", "id": "pat-1",
        "identifier": [
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789",
             "type": {"coding": [{"code": "SS"}]}},
            {"system": "urn:oid:1.2.3.4", "value": "MRN-777", "assigner": {"display": "HOSP"},
             "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}
        ],
        "name": [
            {"use": "nickname", "given": ["Jo"]},
            {"use": "official", "family": "O'Brien", "given": ["Mary", "Ann", "Lou"], "prefix": ["Dr"], "suffix": ["Jr"]}
        ],
        "birthDate": "1970-05-17", "gender": "female",
        "address": [{"line": ["1 Main St", "Apt 2"], "city": "Springfield", "state": "IL", "postalCode": "62701", "country": "US"}],
        "telecom": [{"system": "email", "value": "m@example.org"}, {"system": "phone", "value": "555-0100"}]})
}

fn full_order() -> Value {
    json!({"resourceType": "ServiceRequest", "id": "sr-42", "status": "active", "intent": "order",
    "identifier": [
        {"system": "urn:filler", "value": "F-1", "type": {"coding": [{"code": "FILL"}]}},
        {"system": "urn:placer", "value": "PL-42", "assigner": {"display": "EHR"}, "type": {"coding": [{"code": "PLAC"}]}}
    ],
    "requisition": {"value": "REQ-7"},
    "priority": "stat",
    "code": {"coding": [
        {"system": "urn:local-lab", "code": "GLU", "display": "Glucose (local)"},
        {"system": "http://loinc.org", "code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma"}
    ], "text": "Glucose"},
    "subject": {"reference": "Patient/pat-1"},
    "encounter": {"reference": "#enc"},
    "requester": {"reference": "#doc"},
    "specimen": [{"reference": "#spec"}],
    "occurrenceDateTime": "2024-03-01T09:30:00+01:00",
    "authoredOn": "2024-02-29T17:05:10Z",
    "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9", "display": "Type 2 diabetes"}]}],
    "note": [{"text": "Fasting | 12 h ^ no food"}, {"text": "Line one\nLine two & more"}],
    "contained": [
        {"resourceType": "Practitioner", "id": "doc",
         "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567893"}],
         "name": [{"family": "House", "given": ["Gregory"]}]},
        {"resourceType": "Encounter", "id": "enc", "status": "in-progress",
         "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
         "identifier": [{"value": "V-123"}]},
        {"resourceType": "Specimen", "id": "spec", "accessionIdentifier": {"value": "SPEC-9"},
         "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0487", "code": "SER", "display": "Serum"}]}}
    ]})
}

fn opts(event: Event) -> Options {
    Options {
        sending_application: "OUTPOST".into(),
        sending_facility: "HOSP".into(),
        receiving_application: "LIS".into(),
        receiving_facility: "LAB".into(),
        control_id: "MSG-1".into(),
        timestamp: chrono::Utc.with_ymd_and_hms(2024, 3, 1, 8, 0, 0).unwrap(),
        event,
        astm_code_system: None,
    }
}

fn order(sr: &Value) -> Result<Order, Error> {
    let given = [patient()];
    Order::from_fhir(sr, &lookup_in(&given))
}

const ORM: &str = "MSH|^~\\&|OUTPOST|HOSP|LIS|LAB|20240301080000+0000||ORM^O01^ORM_O01|MSG-1|P|2.5\r\
PID|1||MRN-777^^^HOSP&urn:oid:1.2.3.4&URI^MR~123-45-6789^^^&http://hl7.org/fhir/sid/us-ssn&URI^SS||O'Brien^Mary^Ann Lou^Jr^Dr||19700517|F|||1 Main St^Apt 2^Springfield^IL^62701^US||555-0100\r\
PV1|1|I|||||||||||||||||V-123\r\
ORC|NW|PL-42^EHR||REQ-7|||^^^20240301093000+0100^^S||20240229170510+0000|||1234567893^House^Gregory\r\
OBR|1|PL-42^EHR||2345-7^Glucose [Mass/volume] in Serum or Plasma^LN^GLU^Glucose (local)^L|S|20240301093000+0100|||||||||SER|1234567893^House^Gregory|||||||||||^^^20240301093000+0100^^S||||E11.9^Type 2 diabetes^I10C\r\
NTE|1|P|Fasting \\F\\ 12 h \\S\\ no food\r\
NTE|2|P|Line one\r\
NTE|3|P|Line two \\T\\ more\r";

const ASTM: &str = "H|\\^&|||OUTPOST|||||LIS||P|LIS2-A2|20240301080000\r\
P|1|MRN-777|||O'Brien^Mary^Ann Lou^Jr^Dr||19700517|F||1 Main St Apt 2^Springfield^IL^62701^US||555-0100\r\
O|1|SPEC-9||^^^2345-7^Glucose [Mass/volume] in Serum or Plasma|S|20240301093000|||||N||||SER|House^Gregory|||||||||O\r\
C|1|L|Fasting &F& 12 h &S& no food|G\r\
C|2|L|Line one|G\r\
C|3|L|Line two &E& more|G\r\
L|1|N\r";

#[test]
fn orm_o01_text_for_text_and_read_back() {
    let o = order(&full_order()).unwrap();
    let orm = convert(&o, Format::Orm, &opts(Event::New)).unwrap();
    assert_eq!(orm, ORM);
    let m = hl7v2::Message::parse(orm.as_bytes()).unwrap();
    assert_eq!(m.get("MSH-9-2").unwrap().text(), "O01");
    assert_eq!(m.get("PID-3-1").unwrap().text(), "MRN-777");
    assert_eq!(m.get("PID-5-1").unwrap().text(), "O'Brien");
    assert_eq!(m.get("ORC-1").unwrap().text(), "NW");
    assert_eq!(m.get("OBR-4-1").unwrap().text(), "2345-7");
    assert_eq!(m.get("OBR-4-3").unwrap().text(), "LN");
    // The notes come back exactly, delimiters and all.
    assert_eq!(
        m.get("NTE(1)-3").unwrap().text(),
        "Fasting | 12 h ^ no food"
    );
    assert_eq!(m.get("NTE(3)-3").unwrap().text(), "Line two & more");
}

#[test]
fn oml_o21_has_the_specimen_segment() {
    let o = order(&full_order()).unwrap();
    let oml = convert(&o, Format::Oml, &opts(Event::New)).unwrap();
    let expected = ORM
        .replace("ORM^O01^ORM_O01", "OML^O21^OML_O21")
        .replace("||||||||SER|1234567893", "|||||||||1234567893")
        + "SPM|1|SPEC-9||SER^Serum^HL70487\r";
    assert_eq!(oml, expected);
    let m = hl7v2::Message::parse(oml.as_bytes()).unwrap();
    assert_eq!(m.get("SPM-4-1").unwrap().text(), "SER");
    assert!(m.get("OBR-15").unwrap().is_empty());
}

#[test]
fn astm_order_text_for_text_and_read_back() {
    let o = order(&full_order()).unwrap();
    let text = convert(&o, Format::Astm, &opts(Event::New)).unwrap();
    assert_eq!(text, ASTM);
    let bytes: Vec<u8> = text.chars().map(|c| c as u8).collect();
    let msg = astm::Message::parse(&bytes).unwrap();
    let records = msg.records();
    assert_eq!(records.len(), 7);
    let o = &records[2];
    assert_eq!(o.kind(), b'O');
    assert_eq!(o.field_text(3), "SPEC-9");
    assert_eq!(o.text(o.component(5, 4)), "2345-7");
    assert_eq!(o.field_text(6), "S");
    assert_eq!(records[1].text(records[1].component(6, 1)), "O'Brien");
    assert_eq!(records[3].field_text(4), "Fasting | 12 h ^ no food");
    assert_eq!(records[5].field_text(4), "Line two & more");
}

#[test]
fn astm_takes_the_instruments_code_system_when_asked() {
    let o = order(&full_order()).unwrap();
    let text = convert(
        &o,
        Format::Astm,
        &Options {
            astm_code_system: Some("urn:local-lab".into()),
            ..opts(Event::New)
        },
    )
    .unwrap();
    assert!(
        text.contains("\rO|1|SPEC-9||^^^GLU^Glucose (local)|S|"),
        "{text}"
    );
}

#[test]
fn minimal_routine_order_update_and_cancel() {
    let sr = json!({"resourceType": "ServiceRequest", "id": "sr-1", "status": "active", "intent": "order",
        "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}], "text": "CBC panel"},
        "subject": {"reference": "http://fhir.example.org/fhir/Patient/pat-1"}});
    let o = order(&sr).unwrap();
    let orm = convert(&o, Format::Orm, &opts(Event::New)).unwrap();
    assert!(!orm.contains("\rPV1|"), "no encounter, no PV1");
    assert!(orm.contains("\rORC|NW|sr-1|||||^^^^^R\r"), "{orm}");
    assert!(
        orm.contains("\rOBR|1|sr-1||58410-2^CBC panel^LN|R|"),
        "{orm}"
    );
    let xo = convert(&o, Format::Orm, &opts(Event::Update)).unwrap();
    assert!(xo.contains("\rORC|XO|sr-1|"));
    let mut revoked = sr.clone();
    revoked["status"] = json!("revoked");
    let o = order(&revoked).unwrap();
    let ca = convert(&o, Format::Orm, &opts(Event::Update)).unwrap();
    assert!(ca.contains("\rORC|CA|sr-1|"));
    let astm = convert(&o, Format::Astm, &opts(Event::Update)).unwrap();
    assert!(
        astm.contains("\rO|1|sr-1||^^^58410-2^CBC panel|R||||||C|"),
        "{astm}"
    );
}

#[test]
fn priorities() {
    for (fhir, code) in [
        ("routine", "R"),
        ("urgent", "A"),
        ("asap", "A"),
        ("stat", "S"),
    ] {
        let mut sr = full_order();
        sr["priority"] = json!(fhir);
        let o = order(&sr).unwrap();
        let orm = convert(&o, Format::Orm, &opts(Event::New)).unwrap();
        let m = hl7v2::Message::parse(orm.as_bytes()).unwrap();
        assert_eq!(m.get("OBR-5").unwrap().text(), code, "{fhir}");
        assert_eq!(m.get("ORC-7-6").unwrap().text(), code, "{fhir}");
        let astm = convert(&o, Format::Astm, &opts(Event::New)).unwrap();
        assert!(
            astm.contains(&format!("|{code}|20240301093000|")),
            "{fhir}: {astm}"
        );
    }
}

#[test]
fn non_ascii_names_are_declared_utf8() {
    let mut p = patient();
    p["name"] = json!([{"family": "Müller", "given": ["Jörg"]}]);
    let given = [p];
    let o = Order::from_fhir(&full_order(), &lookup_in(&given)).unwrap();
    let orm = convert(&o, Format::Orm, &opts(Event::New)).unwrap();
    assert!(orm.starts_with("MSH|^~\\&|OUTPOST|HOSP|LIS|LAB|20240301080000+0000||ORM^O01^ORM_O01|MSG-1|P|2.5||||||UNICODE UTF-8\r"), "{orm}");
    assert!(orm.contains("|Müller^Jörg|"), "{orm}");
}

#[test]
fn orders_that_cannot_be_converted_say_what_is_missing() {
    let mut no_subject = full_order();
    no_subject.as_object_mut().unwrap().remove("subject");
    assert_eq!(
        order(&no_subject).unwrap_err(),
        Error::Missing {
            element: "ServiceRequest.subject"
        }
    );

    let mut no_code = full_order();
    no_code["code"] = json!({"text": "something"});
    let e = order(&no_code).unwrap_err();
    assert_eq!(
        e,
        Error::Missing {
            element: "ServiceRequest.code"
        }
    );
    assert_eq!(
        e.to_string(),
        "cannot convert the order: ServiceRequest.code is missing"
    );

    let mut unknown = full_order();
    unknown["subject"] = json!({"reference": "Patient/nobody"});
    assert_eq!(
        order(&unknown).unwrap_err().to_string(),
        "cannot convert the order: ServiceRequest.subject refers to Patient/nobody, which was not found"
    );

    let mut group = full_order();
    group["subject"] = json!({"reference": "#g"});
    group["contained"]
        .as_array_mut()
        .unwrap()
        .push(json!({"resourceType": "Group", "id": "g"}));
    assert!(
        order(&group)
            .unwrap_err()
            .to_string()
            .contains("refers to a Group, expected Patient")
    );

    let mut bad_priority = full_order();
    bad_priority["priority"] = json!("whenever");
    assert!(
        order(&bad_priority)
            .unwrap_err()
            .to_string()
            .contains("ServiceRequest.priority")
    );

    let mut bad_date = full_order();
    bad_date["occurrenceDateTime"] = json!("next tuesday");
    let o = order(&bad_date).unwrap();
    let e = convert(&o, Format::Orm, &opts(Event::New)).unwrap_err();
    assert!(
        e.to_string().contains("ServiceRequest.occurrenceDateTime"),
        "{e}"
    );

    let mut nameless = patient();
    nameless.as_object_mut().unwrap().remove("name");
    let given = [nameless];
    assert_eq!(
        Order::from_fhir(&full_order(), &lookup_in(&given)).unwrap_err(),
        Error::Missing {
            element: "Patient.name"
        }
    );
    assert!(Order::from_fhir(&json!({"resourceType": "Patient"}), &|_| None).is_err());
}
