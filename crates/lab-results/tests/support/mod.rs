//! Fixtures shared by the tests: result messages written field by field, and helpers to read
//! the Bundle.
#![allow(dead_code)] // each test file uses its own part of the fixtures

use serde_json::Value;

/// One segment or record: `name|f1|f2...` with the given fields at their numbers (HL7 field
/// numbering; for ASTM records the type letter is field 1, so pass fields from 2).
pub fn segment(name: &str, fields: &[(usize, &str)]) -> String {
    let offset = usize::from(name.len() == 1); // ASTM: the letter is field 1
    let last = fields.iter().map(|(n, _)| *n).max().unwrap_or(0);
    let mut parts = vec![String::new(); last + 1 - offset];
    for (n, v) in fields {
        parts[*n - offset] = (*v).to_owned();
    }
    parts[0] = name.to_owned();
    parts.join("|")
}

/// A PDF-like payload: every byte value, a header and an end marker.
pub fn pdf_bytes() -> Vec<u8> {
    let mut b = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    b.extend((0..=255u8).cycle().take(3000));
    b.extend_from_slice(b"\n%%EOF\n");
    b
}

/// ORU^R01 v2.5.1 with one report and one result of every value type.
pub fn oru_full(pdf_base64: &str) -> String {
    let ed = format!("^AP^PDF^Base64^{pdf_base64}");
    let obx = |n: usize, fields: &[(usize, &str)]| {
        let set = n.to_string();
        let mut all = vec![(1, set.as_str())];
        all.extend_from_slice(fields);
        segment("OBX", &all)
    };
    let segs = [
        "MSH|^~\\&|LIS|LAB|EHR|HOSP|20240301101500+0100||ORU^R01^ORU_R01|MSG-0001|P|2.5.1|||||||UNICODE UTF-8".to_owned(),
        segment("PID", &[(1, "1"), (3, "MRN-777^^^HOSP&1.2.3.4&ISO^MR~123-45-6789^^^SSA^SS"), (5, "O'Brien^Mary^Ann^Jr^Dr^^L"), (7, "19700517"), (8, "F")]),
        segment("PV1", &[(1, "1"), (2, "O")]),
        segment("ORC", &[(1, "RE"), (2, "PL-42^EHR"), (3, "F-1001^LAB")]),
        segment("OBR", &[(1, "1"), (2, "PL-42^EHR"), (3, "F-1001^LAB"), (4, "24323-8^Comprehensive metabolic panel^LN^CMP^CMP local^L"),
            (7, "20240301093000+0100"), (22, "20240301101500+0100"), (24, "CH"), (25, "F"),
            (32, "D77&Smith&Anna"), (34, "T1&Tech&Tom")]),
        segment("NTE", &[(1, "1"), (2, "L"), (3, "Specimen received ambient.")]),
        obx(1, &[(2, "NM"), (3, "2345-7^Glucose^LN"), (5, "5.40"), (6, "mmol/L^millimole per liter^UCUM"), (7, "3.9-6.1"), (8, "N"), (11, "F"), (14, "20240301093000+0100")]),
        obx(2, &[(2, "NM"), (3, "26464-8^Leukocytes^LN"), (5, "105.6"), (6, "10*3/uL^thousand per microliter^UCUM"), (7, "4.3 to 10.8"), (8, "HH"), (11, "C")]),
        obx(3, &[(2, "NM"), (3, "11273-0^Erythrocytes^LN"), (5, "4.06"), (6, "tera.l-1"), (11, "F")]),
        obx(4, &[(2, "SN"), (3, "1988-5^CRP^LN"), (5, "<^5"), (6, "mg/L"), (7, "<5"), (11, "F")]),
        obx(5, &[(2, "SN"), (3, "5905-5^Monocytes^LN"), (5, "^10^-^20"), (6, "%"), (11, "F")]),
        obx(6, &[(2, "SN"), (3, "5370-2^Titer^LN"), (5, "^1^:^128"), (11, "F")]),
        obx(7, &[(2, "ST"), (3, "8251-1^Comment^LN"), (5, "Hemolysed \\T\\ lipemic \\F\\ icteric"), (11, "F")]),
        obx(8, &[(2, "TX"), (3, "11526-1^Pathology report^LN"), (5, "FINDINGS:\\.br\\Heart size normal.~IMPRESSION: none"), (11, "F")]),
        obx(9, &[(2, "FT"), (3, "11529-5^Surgical pathology^LN"), (5, "\\H\\Margin\\N\\: clear\\.sp\\Grade 1"), (11, "F")]),
        obx(10, &[(2, "CWE"), (3, "600-7^Blood culture^LN"), (5, "260373001^Detected^SCT^^^^^^Detected in both bottles"), (8, "A"), (11, "F")]),
        obx(11, &[(2, "DTM"), (3, "33882-2^Collection time^LN"), (5, "20240301083005.25-0500"), (11, "F")]),
        obx(12, &[(2, "DT"), (3, "11778-8^Delivery date^LN"), (5, "20240229"), (11, "F")]),
        obx(13, &[(2, "ED"), (3, "60567-5^Report PDF^LN"), (5, ed.as_str()), (11, "F")]),
        obx(14, &[(2, "RP"), (3, "18748-4^Image^LN"), (5, "https://example.org/r?a=1\\T\\b=2^^AP^PDF"), (11, "F")]),
        segment("NTE", &[(1, "1"), (3, "Reviewed~by the lab"), (5, "D77^Smith^Anna"), (6, "20240301101000+0100")]),
        obx(15, &[(2, "NM"), (3, "2160-0^Creatinine^LN"), (11, "X")]),
        obx(16, &[(2, "TM"), (3, "8867-4^Time^LN"), (5, "0930"), (11, "F")]),
        segment("SPM", &[(1, "1"), (2, "SP-77&EHR^SF-77&LAB"), (4, "SER^Serum^HL70487"), (17, "20240301093000+0100"), (18, "20240301094500+0100")]),
    ];
    segs.join("\r") + "\r"
}

/// OUL^R22 v2.5.1: a specimen group with two orders, each with results.
pub fn oul_r22() -> String {
    [
        "MSH|^~\\&|ANALYZER|LAB|LIS|LAB|20240302120000+0000||OUL^R22^OUL_R22|OUL-1|P|2.5.1"
            .to_owned(),
        segment(
            "PID",
            &[
                (1, "1"),
                (3, "PAT-9^^^LAB^MR"),
                (5, "Roe^Richard"),
                (7, "19571230"),
                (8, "M"),
            ],
        ),
        segment(
            "SPM",
            &[
                (1, "1"),
                (2, "TUBE-5^TUBE-5F"),
                (4, "BLD^Whole blood^HL70487"),
                (17, "202403021100+0000"),
            ],
        ),
        segment(
            "OBX",
            &[
                (1, "1"),
                (2, "NM"),
                (3, "9999-1^Hemolysis index^L"),
                (5, "12"),
                (11, "F"),
            ],
        ),
        segment(
            "OBR",
            &[
                (1, "1"),
                (2, "ORD-1^EHR"),
                (3, "LF-1^LAB"),
                (4, "718-7^Hemoglobin^LN"),
                (7, "202403021100+0000"),
            ],
        ),
        segment(
            "ORC",
            &[(1, "SC"), (2, "ORD-1^EHR"), (3, "LF-1^LAB"), (5, "CM")],
        ),
        segment(
            "OBX",
            &[
                (1, "1"),
                (2, "NM"),
                (3, "718-7^Hemoglobin^LN"),
                (5, "13.1"),
                (6, "g/dL"),
                (7, "12.0-16.0"),
                (11, "F"),
                (14, "202403021130+0000"),
            ],
        ),
        segment(
            "OBR",
            &[
                (1, "2"),
                (2, "ORD-2^EHR"),
                (3, "LF-2^LAB"),
                (4, "777-3^Platelets^LN"),
                (7, "202403021100+0000"),
                (25, "P"),
            ],
        ),
        segment(
            "OBX",
            &[
                (1, "1"),
                (2, "NM"),
                (3, "777-3^Platelets^LN"),
                (5, "142"),
                (6, "10*3/uL"),
                (8, "L"),
                (11, "P"),
            ],
        ),
        segment("NTE", &[(1, "1"), (3, "PLT clumps?")]),
    ]
    .join("\r")
        + "\r"
}

/// An ASTM E1394 result message: two orders, numeric, compared and text results, comments.
pub fn astm_results() -> String {
    [
        "H|\\^&|||CHEM-1^2.0^SN77|||||LIS||P|LIS2-A2|20240303100000".to_owned(),
        segment(
            "P",
            &[
                (2, "1"),
                (3, "PAT-000982"),
                (4, "LAB-55"),
                (6, "Roe^Richard^A"),
                (8, "19571230"),
                (9, "M"),
            ],
        ),
        segment(
            "O",
            &[
                (2, "1"),
                (3, "SPEC-9"),
                (4, "^4^1"),
                (5, "^Glucose^^GLU"),
                (6, "R"),
                (8, "20240303080000"),
                (12, "N"),
                (16, "Serum"),
                (23, "20240303095900"),
                (26, "F"),
            ],
        ),
        segment(
            "C",
            &[
                (2, "1"),
                (3, "I"),
                (4, "Sample slightly &F& hemolysed"),
                (5, "G"),
            ],
        ),
        segment(
            "R",
            &[
                (2, "1"),
                (3, "^Glucose^^GLU"),
                (4, "142"),
                (5, "mg/dL"),
                (6, "70 to 99"),
                (7, "H"),
                (9, "F"),
                (11, "OP02"),
                (13, "20240303095800"),
                (14, "CHEM-1-A"),
            ],
        ),
        segment(
            "C",
            &[(2, "1"), (3, "I"), (4, "Repeat^confirmed"), (5, "I")],
        ),
        segment(
            "O",
            &[
                (2, "2"),
                (3, "SPEC-9"),
                (5, "^^^TROP\\^^^CRP"),
                (8, "20240303080000"),
                (26, "F"),
            ],
        ),
        segment(
            "R",
            &[
                (2, "1"),
                (3, "^^^TROP"),
                (4, "<0.01"),
                (5, "ng/mL"),
                (9, "C"),
                (13, "20240303095000"),
            ],
        ),
        segment("R", &[(2, "2"), (3, "^^^CRP"), (9, "X")]),
        segment(
            "R",
            &[(2, "3"), (3, "^^^HIV"), (4, "NEGATIVE"), (7, "N"), (9, "F")],
        ),
        "L|1|N".to_owned(),
    ]
    .join("\r")
        + "\r"
}

/// The resources of one type, in Bundle order.
pub fn resources<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == kind)
        .collect()
}

/// The entry whose full URL a reference names.
pub fn resolve<'a>(bundle: &'a Value, reference: &Value) -> &'a Value {
    let url = reference["reference"].as_str().unwrap();
    &bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["fullUrl"] == url)
        .unwrap_or_else(|| panic!("{url} is not in the Bundle"))["resource"]
}

/// The HL7 messages of `corpus/hl7v2/fhir-converter/`, by file name.
pub fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../corpus/hl7v2/fhir-converter"
    );
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// The two messages labmcp-astm-lis's analyzer simulator sends, as its `default_messages`
/// builds them (a CBC with 20 results and a chemistry panel), at a fixed time.
pub fn labmcp_messages() -> Vec<String> {
    let venv = std::env::var("OUTPOST_LABMCP")
        .expect("OUTPOST_LABMCP is not set: run `source scripts/peers.sh && ensure_peers` first");
    let out = std::process::Command::new(format!("{venv}/bin/python"))
        .args([
            "-c",
            "import json; from datetime import datetime; \
             from labmcp_astm_lis.simulator import default_messages; \
             print(json.dumps(default_messages(datetime(2026, 1, 2, 3, 4, 5))))",
        ])
        .output()
        .expect("run labmcp-astm-lis");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let messages: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    messages.into_iter().map(|m| m.join("\r") + "\r").collect()
}
