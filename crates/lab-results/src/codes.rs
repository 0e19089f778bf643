//! The code tables: HL7 v2 tables 0078, 0085, 0123, 0203, 0396 and ASTM E1394's result status
//! and report types, mapped as the HL7 V2-to-FHIR implementation guide maps them (its
//! ConceptMaps "InterpretationCodes", "ObservationResultStatusCodesInterpretation",
//! "ResultStatus[Non-Queries]"); where the guide has no answer the choice is documented in
//! `docs/lab-results.md`.

/// `http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation`.
pub(crate) const V3_INTERPRETATION: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
/// `http://terminology.hl7.org/CodeSystem/v2-0078`.
pub(crate) const V2_0078: &str = "http://terminology.hl7.org/CodeSystem/v2-0078";
/// `http://terminology.hl7.org/CodeSystem/v2-0203` (identifier types).
pub(crate) const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
/// `http://unitsofmeasure.org`.
pub(crate) const UCUM: &str = "http://unitsofmeasure.org";

/// Table 0078 (abnormal flags; ASTM R.7 uses the same letters) → ObservationInterpretation:
/// `Some((system, code, display))`, `None` for a value the table does not have.
pub(crate) fn interpretation(code: &str) -> Option<(&'static str, &'static str, &'static str)> {
    let v3 = |c: &'static str, d: &'static str| Some((V3_INTERPRETATION, c, d));
    match code {
        "<" => v3("<", "Off scale low"),
        ">" => v3(">", "Off scale high"),
        "A" => v3("A", "Abnormal"),
        "AA" => v3("AA", "Critical abnormal"),
        "B" => v3("B", "Better"),
        "CAR" => v3("CAR", "Carrier"),
        "D" => v3("D", "Significant change down"),
        "DET" => v3("DET", "Detected"),
        "E" => v3("E", "Equivocal"),
        "EX" => v3("EX", "outside threshold"),
        "EXP" => v3("EXP", "Expected"),
        "H" => v3("H", "High"),
        "HH" => v3("HH", "Critical high"),
        "HU" => v3("HU", "Significantly high"),
        "I" => v3("I", "Intermediate"),
        "IE" => v3("IE", "Insufficient evidence"),
        "IND" => v3("IND", "Indeterminate"),
        "L" => v3("L", "Low"),
        "LL" => v3("LL", "Critical low"),
        "LU" => v3("LU", "Significantly low"),
        "MS" => v3("MS", "moderately susceptible"),
        "N" => v3("N", "Normal"),
        "NCL" => v3("NCL", "No CLSI defined breakpoint"),
        "ND" => v3("ND", "Not detected"),
        "NEG" => v3("NEG", "Negative"),
        "NR" => v3("NR", "Non-reactive"),
        "NS" => v3("NS", "Non-susceptible"),
        "POS" => v3("POS", "Positive"),
        "R" => v3("R", "Resistant"),
        "RR" => v3("RR", "Reactive"),
        "S" => v3("S", "Susceptible"),
        "SDD" => v3("SDD", "Susceptible-dose dependent"),
        "SYN-R" => v3("SYN-R", "Synergy - resistant"),
        "SYN-S" => v3("SYN-S", "Synergy - susceptible"),
        "U" => v3("U", "Significant change up"),
        "UNE" => v3("UNE", "Unexpected"),
        "VS" => v3("VS", "very susceptible"),
        "W" => v3("W", "Worse"),
        "WR" => v3("WR", "Weakly reactive"),
        // In table 0078 but with no ObservationInterpretation code: kept in the v2 system.
        "AC" => Some((V2_0078, "AC", "Anti-complementary substances present")),
        "HM" => Some((V2_0078, "HM", "Hold for Medical Review")),
        "QCF" => Some((V2_0078, "QCF", "Quality Control Failure")),
        "TOX" => Some((V2_0078, "TOX", "Cytotoxic substance present")),
        _ => None,
    }
}

/// Table 0085 (OBX-11) → `Observation.status`. `Ok(None)`: empty (the report's status
/// decides). `Err(())`: not in the table.
pub(crate) fn observation_status(code: &str) -> Result<Option<&'static str>, ()> {
    Ok(Some(match code {
        "" => return Ok(None),
        "A" => "amended",
        // Appended: FHIR R4 Observation has no "appended"; the closest is amended.
        "B" => "amended",
        "C" => "corrected",
        "D" | "W" => "entered-in-error",
        "F" | "U" | "V" => "final",
        "I" | "O" => "registered",
        "N" | "X" => "cancelled",
        "P" | "R" | "S" => "preliminary",
        _ => return Err(()),
    }))
}

/// Table 0123 (OBR-25) → `DiagnosticReport.status`. `Ok(None)`: empty. `Err(reason)`: not in
/// the table, or a value the guide turns into an error (Y, Z).
pub(crate) fn report_status(code: &str) -> Result<Option<&'static str>, &'static str> {
    Ok(Some(match code {
        "" => return Ok(None),
        "O" | "I" | "S" | "N" => "registered",
        "A" | "R" => "partial",
        "P" => "preliminary",
        "C" | "M" => "corrected",
        "F" => "final",
        "X" => "cancelled",
        "Y" => return Err("(no order on record for this test) has no report status"),
        "Z" => return Err("(no record of this patient) has no report status"),
        _ => return Err("is not in HL7 table 0123 (result status)"),
    }))
}

/// ASTM E1394 R.9 (result status) → `Observation.status`; `Ok(None)` when empty.
pub(crate) fn astm_result_status(code: &str) -> Result<Option<&'static str>, ()> {
    Ok(Some(match code {
        "" => return Ok(None),
        "C" => "corrected",
        "P" | "S" | "W" => "preliminary",
        "F" | "M" | "R" | "N" | "Q" | "V" => "final",
        "X" => "cancelled",
        "I" => "registered",
        _ => return Err(()),
    }))
}

/// ASTM E1394 O.26 (report type) → `DiagnosticReport.status`; `None` when the type says
/// nothing about the results (empty, O order, Q query response, Y no order, Z no record): the
/// results' statuses decide.
pub(crate) fn astm_report_status(code: &str) -> Option<&'static str> {
    match code {
        "F" => Some("final"),
        "P" => Some("preliminary"),
        "C" => Some("corrected"),
        "X" => Some("cancelled"),
        "I" => Some("registered"),
        _ => None,
    }
}

/// A report status derived from its results' statuses, for a report that states none.
pub(crate) fn derived_report_status<'a>(statuses: impl Iterator<Item = &'a str>) -> &'static str {
    let all: Vec<&str> = statuses.collect();
    let any = |s: &str| all.contains(&s);
    if all.is_empty() {
        "registered"
    } else if any("unknown") {
        "unknown"
    } else if any("registered") || any("preliminary") {
        if any("final") || any("corrected") || any("amended") {
            "partial"
        } else if any("preliminary") {
            "preliminary"
        } else {
            "registered"
        }
    } else if any("corrected") {
        "corrected"
    } else if any("amended") {
        "amended"
    } else if any("final") {
        "final"
    } else if all.iter().all(|s| *s == "entered-in-error") {
        "entered-in-error"
    } else {
        "cancelled"
    }
}

/// The observation status a result without one takes from its report.
pub(crate) fn observation_status_of_report(report: &str) -> &'static str {
    match report {
        "registered" => "registered",
        "partial" | "preliminary" => "preliminary",
        "final" => "final",
        "amended" | "appended" => "amended",
        "corrected" => "corrected",
        "cancelled" => "cancelled",
        "entered-in-error" => "entered-in-error",
        _ => "unknown",
    }
}

/// Table 0396 (coding system names) → FHIR code system URIs, for the systems lab results use.
/// `L`, `99zzz` and unknown names give `None`.
pub(crate) fn code_system(name: &str) -> Option<String> {
    let uri = match name {
        "LN" | "LOINC" => "http://loinc.org",
        "SCT" | "SNOMEDCT" => "http://snomed.info/sct",
        "UCUM" => UCUM,
        "I10" => "http://hl7.org/fhir/sid/icd-10",
        "I10C" => "http://hl7.org/fhir/sid/icd-10-cm",
        "I9C" => "http://hl7.org/fhir/sid/icd-9-cm",
        "C4" | "CPT" => "http://www.ama-assn.org/go/cpt",
        "NDC" => "http://hl7.org/fhir/sid/ndc",
        "CVX" => "http://hl7.org/fhir/sid/cvx",
        "RXNORM" => "http://www.nlm.nih.gov/research/umls/rxnorm",
        "NCI" => "http://ncimeta.nci.nih.gov",
        "HL70487" => "http://terminology.hl7.org/CodeSystem/v2-0487",
        _ => {
            // HL7nnnn: the v2 table nnnn.
            let table = name.strip_prefix("HL7")?;
            if table.len() == 4 && table.bytes().all(|b| b.is_ascii_digit()) {
                return Some(format!("http://terminology.hl7.org/CodeSystem/v2-{table}"));
            }
            return None;
        }
    };
    Some(uri.to_owned())
}

/// Whether a coding system name is a local one (`L`, `99zzz`).
pub(crate) fn is_local_system(name: &str) -> bool {
    name == "L" || (name.len() == 5 && name.starts_with("99"))
}

/// Table 0203 identifier types this crate writes or passes on.
pub(crate) fn identifier_type(code: &str) -> bool {
    matches!(
        code,
        "MR" | "PI"
            | "PT"
            | "PN"
            | "SS"
            | "SB"
            | "AN"
            | "VN"
            | "DL"
            | "PPN"
            | "NI"
            | "MB"
            | "MA"
            | "MC"
            | "NH"
            | "NNxxx"
            | "U"
            | "PLAC"
            | "FILL"
            | "ACSN"
            | "NPI"
            | "PRN"
            | "XX"
            | "LR"
            | "EN"
            | "TAX"
            | "BRN"
            | "HC"
            | "JHN"
    )
}

/// HL7 table 0001 (administrative sex) → `Patient.gender`.
pub(crate) fn gender(code: &str) -> Option<&'static str> {
    match code {
        "M" => Some("male"),
        "F" => Some("female"),
        "O" | "A" => Some("other"),
        "U" | "N" => Some("unknown"),
        _ => None,
    }
}

/// ED-2 / ED-3 (and RP-3 / RP-4) → a MIME type.
pub(crate) fn mime_type(type_of_data: &str, subtype: &str) -> Option<String> {
    let sub = subtype.trim();
    if sub.contains('/') {
        return Some(sub.to_ascii_lowercase());
    }
    let known = match sub.to_ascii_uppercase().as_str() {
        "PDF" => "application/pdf",
        "RTF" => "application/rtf",
        "HTML" => "text/html",
        "XML" => "application/xml",
        "JPEG" | "JPG" => "image/jpeg",
        "PNG" => "image/png",
        "GIF" => "image/gif",
        "TIFF" | "TIF" => "image/tiff",
        "BMP" => "image/bmp",
        "DICOM" => "application/dicom",
        "OCTET-STREAM" => "application/octet-stream",
        "PLAIN" | "TEXT" => "text/plain",
        "" => match type_of_data.trim().to_ascii_uppercase().as_str() {
            "TEXT" | "TX" => "text/plain",
            "AP" | "APPLICATION" => "application/octet-stream",
            "" => return None,
            _ => "application/octet-stream",
        },
        _ => "application/octet-stream",
    };
    Some(known.to_owned())
}
