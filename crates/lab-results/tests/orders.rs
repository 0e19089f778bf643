//! Results join the orders lab-orders sent: an order goes out as ORM^O01 or ASTM, the lab
//! answers with the numbers it was given, and the searches in the result Bundle find the
//! ServiceRequest, Patient and Specimen the order was made from.

mod support;

use chrono::TimeZone;
use lab_orders::{Format as OrderFormat, Order, lookup_in};
use lab_results::{Format, Options, OrderRole, convert};
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use support::*;

/// A FHIR search as a server runs it, for the parameters these Bundles use: `identifier` /
/// `accession` (token: `system|value` needs both to match, a bare value matches any system),
/// `birthdate` (exact date), `family` (case-insensitive prefix); `&` between them.
fn finds(search: &str, resource: &Value) -> bool {
    search.split('&').all(|param| {
        let (param, token) = param.split_once('=').unwrap();
        let token = percent_decode_str(token)
            .decode_utf8()
            .unwrap()
            .into_owned();
        match param {
            "birthdate" => resource["birthDate"] == token.as_str(),
            "family" => resource["name"].as_array().unwrap().iter().any(|n| {
                n["family"]
                    .as_str()
                    .unwrap_or("")
                    .to_lowercase()
                    .starts_with(&token.to_lowercase())
            }),
            "identifier" | "accession" => {
                let (system, value) = match token.split_once('|') {
                    Some((s, v)) => (Some(s.to_owned()), v.to_owned()),
                    None => (None, token.clone()),
                };
                let ids: Vec<&Value> = if param == "identifier" {
                    resource["identifier"]
                        .as_array()
                        .map(|a| a.iter().collect())
                        .unwrap_or_default()
                } else {
                    vec![&resource["accessionIdentifier"]]
                };
                ids.iter().any(|i| {
                    i["value"] == value.as_str()
                        && system.as_ref().is_none_or(|s| i["system"] == s.as_str())
                })
            }
            other => panic!("search parameter {other}"),
        }
    })
}

fn patient() -> Value {
    json!({"resourceType": "Patient", "id": "pat-1",
        "identifier": [{"system": "urn:oid:1.2.3.4", "value": "MRN-777", "assigner": {"display": "HOSP"},
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}}],
        "name": [{"family": "Doe", "given": ["Jane"]}], "birthDate": "1980-02-03", "gender": "female"})
}

fn service_request(identifier: Option<Value>, specimen: bool) -> Value {
    let mut sr = json!({"resourceType": "ServiceRequest", "id": "sr-7", "status": "active", "intent": "order",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
        "subject": {"reference": "Patient/pat-1"},
        "contained": [{"resourceType": "Specimen", "id": "spec", "accessionIdentifier": {"value": "SPEC-9"},
            "type": {"text": "SER"}}]});
    if let Some(id) = identifier {
        sr["identifier"] = json!([id]);
    }
    if specimen {
        sr["specimen"] = json!([{"reference": "#spec"}]);
    }
    sr
}

fn order_message(sr: &Value, format: OrderFormat) -> String {
    let given = [patient()];
    let order = Order::from_fhir(sr, &lookup_in(&given)).unwrap();
    let opts = lab_orders::Options {
        control_id: "ORD-1".into(),
        timestamp: chrono::Utc.with_ymd_and_hms(2024, 3, 1, 8, 0, 0).unwrap(),
        ..lab_orders::Options::default()
    };
    lab_orders::convert(&order, format, &opts).unwrap()
}

/// What a LIS answers: PID, ORC-2 and OBR-2 and OBR-4 copied from the order, its own filler
/// number, one result.
fn lis_answer(orm: &str) -> String {
    let m = hl7v2::Message::parse(orm.as_bytes()).unwrap();
    let raw = |p: &str| String::from_utf8_lossy(m.get(p).unwrap().raw()).into_owned();
    format!(
        "MSH|^~\\&|LIS|LAB|OUTPOST||20240301110000+0100||ORU^R01|R-1|P|2.5\r{}\r{}\r{}\r{}\r",
        segment("PID", &[(1, "1"), (3, &raw("PID-3")), (5, &raw("PID-5"))]),
        segment("ORC", &[(1, "RE"), (2, &raw("ORC-2")), (3, "LAB-555^LAB")]),
        segment(
            "OBR",
            &[
                (1, "1"),
                (2, &raw("OBR-2")),
                (3, "LAB-555^LAB"),
                (4, &raw("OBR-4")),
                (7, "20240301093000+0100"),
                (25, "F")
            ]
        ),
        segment(
            "OBX",
            &[
                (1, "1"),
                (2, "NM"),
                (3, "2345-7^Glucose^LN"),
                (5, "5.4"),
                (6, "mmol/L"),
                (11, "F")
            ]
        ),
    )
}

#[test]
fn hl7_result_finds_the_order_by_its_placer_identifier() {
    let sr = service_request(
        Some(
            json!({"system": "urn:ehr:orders", "value": "PL-42", "assigner": {"display": "EHR"},
            "type": {"coding": [{"code": "PLAC"}]}}),
        ),
        false,
    );
    let orm = order_message(&sr, OrderFormat::Orm);
    let c = convert(
        lis_answer(&orm).as_bytes(),
        Format::Hl7,
        &Options::default(),
    )
    .unwrap();
    let report = &c.reports[0];
    let order = report.order.as_ref().unwrap();
    assert_eq!(
        (order.value.as_str(), order.namespace.as_deref(), order.role),
        ("PL-42", Some("EHR"), OrderRole::Placer)
    );
    let search = report.order_search.as_deref().unwrap();
    assert!(
        finds(search, &sr),
        "{search} does not find the ServiceRequest"
    );
    let dr = resources(&c.bundle, "DiagnosticReport")[0];
    assert_eq!(
        dr["basedOn"][0]["reference"],
        format!("ServiceRequest?{search}")
    );
    // With the identifier system configured the search names it, and still finds the order.
    let opts = Options {
        placer_system: Some("urn:ehr:orders".into()),
        ..Options::default()
    };
    let c = convert(lis_answer(&orm).as_bytes(), Format::Hl7, &opts).unwrap();
    assert!(finds(c.reports[0].order_search.as_deref().unwrap(), &sr));
    // The Patient entry is a conditional create that finds the patient the order was for.
    let entry = &c.bundle["entry"][0];
    assert_eq!(entry["resource"]["resourceType"], "Patient");
    assert!(finds(
        entry["request"]["ifNoneExist"].as_str().unwrap(),
        &patient()
    ));
}

#[test]
fn an_order_without_identifier_is_linked_by_id() {
    // lab-orders sends the ServiceRequest's id as the placer number when it has no identifier:
    // an identifier search cannot find it; the caller that looked it up links it.
    let sr = service_request(None, false);
    let orm = order_message(&sr, OrderFormat::Orm);
    let mut c = convert(
        lis_answer(&orm).as_bytes(),
        Format::Hl7,
        &Options::default(),
    )
    .unwrap();
    assert_eq!(c.reports[0].order.as_ref().unwrap().value, "sr-7");
    assert!(!finds(c.reports[0].order_search.as_deref().unwrap(), &sr));
    assert!(c.link_order(0, "ServiceRequest/sr-7"));
    let linked: Vec<&Value> = c
        .resources()
        .filter(|r| r["resourceType"] == "DiagnosticReport" || r["resourceType"] == "Observation")
        .collect();
    assert_eq!(linked.len(), 2);
    for r in linked {
        assert_eq!(r["basedOn"], json!([{"reference": "ServiceRequest/sr-7"}]));
    }
    assert!(!c.link_order(5, "ServiceRequest/x"));
}

#[test]
fn astm_result_finds_the_order_and_its_specimen() {
    // The instrument echoes O.3 and P.3 of the order it ran.
    let answer = |order: &str| {
        let m = astm::Message::parse(order.as_bytes()).unwrap();
        let p3 = String::from_utf8_lossy(m.records()[1].field(3)).into_owned();
        let o3 = String::from_utf8_lossy(m.records()[2].field(3)).into_owned();
        format!(
            "H|\\^&|||CHEM-1|||||LIS||P|LIS2-A2|20240301110000\r{}\r{}\r{}\rL|1|N\r",
            segment("P", &[(2, "1"), (3, &p3)]),
            segment("O", &[(2, "1"), (3, &o3), (5, "^^^2345-7"), (26, "F")]),
            segment(
                "R",
                &[
                    (2, "1"),
                    (3, "^^^2345-7"),
                    (4, "5.4"),
                    (5, "mmol/L"),
                    (9, "F"),
                    (13, "20240301105900")
                ]
            ),
        )
    };
    // The order names a Specimen: lab-orders sends its accession number as O.3.
    let sr = service_request(Some(json!({"value": "PL-42"})), true);
    let c = convert(
        answer(&order_message(&sr, OrderFormat::Astm)).as_bytes(),
        Format::Astm,
        &Options::default(),
    )
    .unwrap();
    let order = c.reports[0].order.as_ref().unwrap();
    assert_eq!(
        (order.value.as_str(), order.role),
        ("SPEC-9", OrderRole::Specimen)
    );
    let specimen_entry = c.bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["resource"]["resourceType"] == "Specimen")
        .unwrap();
    let ordered_specimen = &sr["contained"][0];
    assert!(finds(
        specimen_entry["request"]["ifNoneExist"].as_str().unwrap(),
        ordered_specimen
    ));
    assert!(finds(
        c.bundle["entry"][0]["request"]["ifNoneExist"]
            .as_str()
            .unwrap(),
        &patient()
    ));
    // No Specimen on the order: O.3 is the placer number, and the order search finds it.
    let sr = service_request(Some(json!({"value": "PL-42"})), false);
    let c = convert(
        answer(&order_message(&sr, OrderFormat::Astm)).as_bytes(),
        Format::Astm,
        &Options::default(),
    )
    .unwrap();
    assert!(finds(c.reports[0].order_search.as_deref().unwrap(), &sr));
}

#[test]
fn a_bare_patient_number_must_match_birth_date_and_name_too() {
    // PID-3 without a system: another facility's MRN-777 is another person.
    let msg = "MSH|^~\\&|LIS|LAB|OUTPOST||20240301110000+0100||ORU^R01|R-1|P|2.5\r\
PID|1||MRN-777^^^HOSP^MR||Doe^Jane||19800203|F\r\
OBR|1|PL-42|LAB-555|2345-7^Glucose^LN|||20240301093000+0100\r\
OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|||||F\r";
    let c = convert(msg.as_bytes(), Format::Hl7, &Options::default()).unwrap();
    let search = c.bundle["entry"][0]["request"]["ifNoneExist"]
        .as_str()
        .unwrap();
    assert_eq!(search, "identifier=MRN-777&birthdate=1980-02-03&family=Doe");
    let mut ours = patient();
    ours["identifier"][0]
        .as_object_mut()
        .unwrap()
        .remove("system");
    assert!(finds(search, &ours));
    let mut someone_else = ours.clone();
    someone_else["birthDate"] = json!("1955-07-01");
    assert!(!finds(search, &someone_else));
    // With the assigning authority's system configured, the identifier alone decides.
    let opts = Options {
        assigner_systems: [("HOSP".to_owned(), "urn:oid:1.2.3.4".to_owned())].into(),
        ..Options::default()
    };
    let c = convert(msg.as_bytes(), Format::Hl7, &opts).unwrap();
    let search = c.bundle["entry"][0]["request"]["ifNoneExist"]
        .as_str()
        .unwrap();
    assert_eq!(search, "identifier=urn%3Aoid%3A1.2.3.4%7CMRN-777");
    assert!(finds(search, &patient()));
}
