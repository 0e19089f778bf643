//! Every Bundle this crate produces — from the corpus, the hand-written messages and the
//! messages of labmcp-astm-lis's analyzer simulator, with the default options and others —
//! validated against FHIR R4 by a third-party validator: the PyPI package fhir.resources
//! 6.4.0 (R4 4.0.1 models), run by scripts/peers/fhir_validate.py. Installed by
//! `source scripts/peers.sh && ensure_peers`, which exports OUTPOST_FHIR_PYTHON.

mod support;

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::FixedOffset;
use lab_results::{Format, Options, OrderLink, convert};
use support::*;

/// A v2.3 ORU: the specimen only in OBR-15 (no SPM), a patient observation before the OBR.
const V23: &str = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|200202150930||ORU^R01|CNTRL-3456|P|2.3\r\
PID|||555-44-4444||EVERYWOMAN^EVE^E||19620320|F\r\
OBX|1|NM|3141-9^Body weight^LN||62|kg||||||F\r\
OBR|1|845439^GHH OE|1045813^GHH LAB|1554-5^GLUCOSE^LN|||200202150730|||||||200202150800|BLD&Blood&HL70070^^^LA&Left arm&HL70163||||||||||F\r\
OBX|1|SN|1554-5^GLUCOSE^LN||^182|mg/dl|70_105|H|||F\r\
NTE|1||Fasting\r";

#[test]
fn every_bundle_is_valid_fhir_r4() {
    let python = std::env::var("OUTPOST_FHIR_PYTHON").expect(
        "OUTPOST_FHIR_PYTHON is not set: run `source scripts/peers.sh && ensure_peers` first",
    );
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/peers/fhir_validate.py"
    );
    let dir = std::env::temp_dir().join(format!("lab-results-fhir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let default = Options::default();
    let zoned = Options {
        local_offset: FixedOffset::west_opt(5 * 3600),
        order_link: OrderLink::Identifier,
        placer_system: Some("urn:ehr:orders".into()),
        local_code_system: Some("urn:outpost:local".into()),
        ..Options::default()
    };
    let mut inputs: Vec<(String, Vec<u8>, Format)> = corpus()
        .into_iter()
        .map(|(name, bytes)| (name, bytes, Format::Hl7))
        .collect();
    inputs.push((
        "oru-full".into(),
        oru_full(&STANDARD.encode(pdf_bytes())).into_bytes(),
        Format::Hl7,
    ));
    inputs.push(("oul-r22".into(), oul_r22().into_bytes(), Format::Hl7));
    inputs.push(("v23".into(), V23.as_bytes().to_vec(), Format::Hl7));
    inputs.push(("astm".into(), astm_results().into_bytes(), Format::Astm));
    for (i, m) in labmcp_messages().into_iter().enumerate() {
        inputs.push((format!("labmcp-{i}"), m.into_bytes(), Format::Astm));
    }
    let mut written = 0;
    for (name, bytes, format) in &inputs {
        for (variant, opts) in [("default", &default), ("zoned", &zoned)] {
            let Ok(c) = convert(bytes, *format, opts) else {
                continue;
            };
            let path = dir.join(format!("{name}.{variant}.json"));
            std::fs::write(&path, serde_json::to_vec_pretty(&c.bundle).unwrap()).unwrap();
            written += 1;
        }
    }
    // 4 corpus messages, 6 written here, both variants.
    assert_eq!(written, 20);

    let out = Command::new(&python)
        .arg(script)
        .arg(&dir)
        .output()
        .expect("run the validator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("validated 20 bundles, "), "{stdout}");
    println!("{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_v23_message_maps_its_specimen_and_patient_observation() {
    let c = convert(V23.as_bytes(), Format::Hl7, &Options::default()).unwrap();
    let dr = resources(&c.bundle, "DiagnosticReport")[0];
    // OBR-15 names no specimen ID: the Specimen is contained in the report.
    assert_eq!(
        dr["contained"][0]["type"]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/v2-0070"
    );
    assert_eq!(
        dr["contained"][0]["collection"]["bodySite"]["coding"][0]["code"],
        "LA"
    );
    assert_eq!(dr["specimen"][0]["reference"], "#specimen1");
    assert_eq!(dr["effectiveDateTime"], "2002-02-15");
    let obs = resources(&c.bundle, "Observation");
    // The NTE after the OBX is a note on that result.
    assert_eq!(obs[0]["note"][0]["text"], "Fasting");
    let weight = obs
        .iter()
        .find(|o| o["code"]["coding"][0]["code"] == "3141-9")
        .unwrap();
    assert_eq!(weight["identifier"][0]["value"], "LAB^CNTRL-3456/1");
    assert_eq!(weight["subject"], dr["subject"]);
    assert!(weight.get("specimen").is_none());
}
