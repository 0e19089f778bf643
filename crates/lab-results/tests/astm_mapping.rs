//! ASTM E1394 result messages: hand-written, and the ones labmcp-astm-lis's analyzer simulator
//! sends (the real peer's records, printed by its own `default_messages`).

mod support;

use chrono::FixedOffset;
use lab_results::{Error, Format, KeySource, Options, OrderRole, convert};
use serde_json::json;
use support::*;

fn opts() -> Options {
    Options {
        local_offset: FixedOffset::east_opt(3600),
        local_code_system: Some("urn:outpost:chem-1".into()),
        ..Options::default()
    }
}

#[test]
fn records_become_reports_and_results() {
    let c = convert(astm_results().as_bytes(), Format::Astm, &opts()).unwrap();
    assert_eq!(c.reports.len(), 2);
    let r = &c.reports[0];
    assert_eq!(r.key.value, "SPEC-9^^GLU^20240303095900");
    assert_eq!(r.key.source, KeySource::Specimen);
    assert_eq!(r.status, "final");
    let order = r.order.as_ref().unwrap();
    assert_eq!(
        (order.value.as_str(), order.role),
        ("SPEC-9", OrderRole::Specimen)
    );
    assert_eq!(r.order_search.as_deref(), Some("identifier=SPEC-9"));

    let entries = c.bundle["entry"].as_array().unwrap();
    let patient = &entries[0];
    // No identifier system: the birth date and family name must match too.
    assert_eq!(
        patient["request"]["ifNoneExist"],
        "identifier=PAT-000982&birthdate=1957-12-30&family=Roe"
    );
    assert_eq!(
        patient["resource"]["name"][0],
        json!({"family": "Roe", "given": ["Richard", "A"]})
    );
    assert_eq!(
        patient["resource"]["identifier"][1]["type"]["coding"][0]["code"],
        "PI"
    );
    assert_eq!(patient["resource"]["gender"], "male");
    let specimen = &entries[1];
    assert_eq!(specimen["request"]["ifNoneExist"], "accession=SPEC-9");
    assert_eq!(
        specimen["resource"]["accessionIdentifier"]["value"],
        "SPEC-9"
    );
    assert_eq!(specimen["resource"]["type"]["text"], "Serum");
    assert_eq!(
        specimen["resource"]["collection"]["collectedDateTime"],
        "2024-03-03T08:00:00+01:00"
    );

    let dr = resources(&c.bundle, "DiagnosticReport");
    assert_eq!(
        dr[0]["code"]["coding"][0],
        json!({"system": "urn:outpost:chem-1", "code": "GLU", "display": "Glucose"})
    );
    assert_eq!(dr[0]["issued"], "2024-03-03T09:59:00+01:00");
    assert_eq!(
        dr[0]["extension"][0]["valueAnnotation"]["text"],
        "Sample slightly | hemolysed"
    );
    assert_eq!(dr[0]["performer"][0]["identifier"]["value"], "OP02");
    assert_eq!(dr[0]["specimen"][0]["reference"], specimen["fullUrl"]);
    assert_eq!(
        dr[0]["basedOn"][0]["reference"],
        "ServiceRequest?identifier=SPEC-9"
    );
    // Two tests in O.5: the report's code is their names.
    assert_eq!(dr[1]["code"], json!({"text": "TROP, CRP"}));
    assert_eq!(dr[1]["status"], "final");

    let obs = resources(&c.bundle, "Observation");
    assert_eq!(obs.len(), 4);
    let glu = obs[0];
    assert_eq!(
        glu["valueQuantity"],
        json!({"value": 142, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"})
    );
    assert_eq!(glu["referenceRange"][0]["low"]["value"], 70);
    assert_eq!(glu["referenceRange"][0]["high"]["value"], 99);
    assert_eq!(glu["interpretation"][0]["coding"][0]["code"], "H");
    assert_eq!(glu["note"][0]["text"], "Repeat confirmed");
    assert_eq!(glu["device"]["identifier"]["value"], "CHEM-1-A");
    assert_eq!(glu["effectiveDateTime"], "2024-03-03T08:00:00+01:00");
    assert_eq!(glu["issued"], "2024-03-03T09:58:00+01:00");
    let trop = obs[1];
    assert_eq!(trop["status"], "corrected");
    assert_eq!(trop["valueQuantity"]["comparator"], "<");
    assert_eq!(trop["valueQuantity"]["value"], 0.01);
    // No instrument ID on the record: the sender named in H.5.
    assert_eq!(trop["device"]["identifier"]["value"], "CHEM-1");
    assert_eq!(obs[2]["status"], "cancelled");
    assert_eq!(
        obs[2]["dataAbsentReason"]["coding"][0]["code"],
        "not-performed"
    );
    assert_eq!(obs[3]["valueString"], "NEGATIVE");
    assert_eq!(obs[3]["interpretation"][0]["coding"][0]["code"], "N");
}

#[test]
fn resends_and_errors() {
    let msg = astm_results();
    let again = msg.replace("20240303100000", "20240303101500");
    let a = convert(msg.as_bytes(), Format::Astm, &opts()).unwrap();
    let b = convert(again.as_bytes(), Format::Astm, &opts()).unwrap();
    assert_eq!(a.reports[0].key, b.reports[0].key);
    assert_eq!(a.reports[1].key, b.reports[1].key);

    let order_only = "H|\\^&\rP|1|PAT\rO|1|S1||^^^GLU\rL|1|N\r";
    let e = convert(order_only.as_bytes(), Format::Astm, &opts()).unwrap_err();
    assert!(matches!(e, Error::NotResults { .. }), "{e}");
    assert!(e.to_string().contains("H-P-O-L"), "{e}");
    for (bad, location) in [
        ("H|\\^&\rP|1\rR|1|^^^GLU|5\rL|1\r", "R(1)-1"),
        ("H|\\^&\rP|1\rO|1|S1\rR|1|^^^GLU|5\rL|1\r", "O(1)-5"),
        ("H|\\^&\rP|1\rO|1|S1||^^^GLU\rR|1||5\rL|1\r", "R(1)-3"),
        (
            "H|\\^&\rP|1\rO|1|S1||^^^GLU\rR|1|^^^GLU|5|||||Z\rL|1\r",
            "R(1)-9",
        ),
        (
            "H|\\^&\rP|1||||||19801301\rO|1|S1||^^^GLU\rR|1|^^^GLU|5\rL|1\r",
            "P(1)-8",
        ),
    ] {
        let e = convert(bad.as_bytes(), Format::Astm, &opts()).unwrap_err();
        assert_eq!(
            e.location().map(ToString::to_string).as_deref(),
            Some(location),
            "{e}"
        );
    }
    assert!(matches!(
        convert(b"P|1", Format::Astm, &opts()),
        Err(Error::Astm(_))
    ));
}

#[test]
fn labmcp_simulator_messages_convert() {
    let messages = labmcp_messages();
    assert_eq!(messages.len(), 2);
    let cbc = convert(messages[0].as_bytes(), Format::Astm, &opts()).unwrap();
    assert_eq!(cbc.reports.len(), 1);
    assert_eq!(cbc.reports[0].observations, 20);
    assert_eq!(cbc.reports[0].key.value, "S26-000123^^WBC^20260102030400");
    let obs = resources(&cbc.bundle, "Observation");
    let wbc = obs[0];
    assert_eq!(wbc["code"]["coding"][0]["code"], "WBC");
    assert_eq!(wbc["valueQuantity"]["code"], "10*3/uL");
    assert_eq!(wbc["interpretation"][0]["coding"][0]["code"], "H");
    assert_eq!(wbc["note"][0]["text"], "Left_Shift?");
    assert_eq!(wbc["referenceRange"][0]["low"]["value"], 4.0);
    assert_eq!(wbc["device"]["identifier"]["value"], "SIM-HEM-01");
    // "4.0" keeps its one decimal: 4.0 is written 4.0.
    let rbc = obs[1];
    assert_eq!(
        rbc["referenceRange"][0]["low"]["_value"]["extension"][0]["valueInteger"],
        2
    );
    let chem = convert(messages[1].as_bytes(), Format::Astm, &opts()).unwrap();
    assert_eq!(chem.reports[0].observations, 14);
    let k = resources(&chem.bundle, "Observation")
        .into_iter()
        .find(|o| o["code"]["coding"][0]["code"] == "K")
        .unwrap();
    assert_eq!(
        k["note"][0]["text"],
        "Hemolysis index 2+: potassium may be falsely elevated"
    );
    assert_eq!(
        resources(&chem.bundle, "Patient")[0]["name"][0]["family"],
        "Roe"
    );
}
