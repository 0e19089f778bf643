//! What a result message says, read from HL7 or ASTM, before it is written as FHIR. Both
//! readers fill these types; `fhir.rs` writes them.

use serde_json::Number;

use crate::dates::DateTime;

/// A FHIR `Coding`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Coding {
    pub system: Option<String>,
    pub version: Option<String>,
    pub code: String,
    pub display: Option<String>,
}

/// A FHIR `CodeableConcept`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Concept {
    pub codings: Vec<Coding>,
    pub text: Option<String>,
}

impl Concept {
    pub fn is_empty(&self) -> bool {
        self.codings.is_empty() && self.text.is_none()
    }

    pub fn text(text: String) -> Concept {
        Concept {
            codings: Vec::new(),
            text: Some(text),
        }
    }

    /// An abnormal flag (table 0078, ASTM R.7) as an ObservationInterpretation; one outside the
    /// table as `text` (its description `text`, else the code). `None` when empty.
    pub fn interpretation(code: String, text: String) -> Option<Concept> {
        match crate::codes::interpretation(&code) {
            Some((system, c, display)) => Some(Concept {
                codings: vec![Coding {
                    system: Some(system.into()),
                    code: c.into(),
                    display: Some(display.into()),
                    version: None,
                }],
                text: None,
            }),
            None if code.is_empty() => None,
            None => Some(Concept::text(if text.is_empty() { code } else { text })),
        }
    }

    /// A diagnostic service section (v2-0074; `LAB` when empty).
    pub fn service_section(code: String) -> Concept {
        Concept {
            codings: vec![Coding {
                system: Some("http://terminology.hl7.org/CodeSystem/v2-0074".into()),
                code: if code.is_empty() { "LAB".into() } else { code },
                ..Coding::default()
            }],
            text: None,
        }
    }
}

/// A FHIR `Identifier`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Ident {
    pub value: String,
    pub system: Option<String>,
    /// A table 0203 code.
    pub type_code: Option<String>,
    /// Text of a type that is not in table 0203.
    pub type_text: Option<String>,
    /// `assigner.display`.
    pub assigner: Option<String>,
}

/// A person or organization named in the message (a logical reference: identifier and name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Party {
    /// `Practitioner`, `Organization` or `Device`.
    pub kind: &'static str,
    pub id: Option<Ident>,
    pub name: Option<String>,
}

/// A FHIR `decimal`: the JSON number and, when the text had trailing zeros the number cannot
/// show, its number of decimal places.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decimal {
    pub number: Number,
    pub precision: Option<u32>,
}

/// A unit: the text, and the UCUM code when it is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unit {
    pub text: String,
    pub ucum: Option<String>,
}

/// A FHIR `Quantity`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Quantity {
    pub value: Decimal,
    /// `<`, `<=`, `>=`, `>`.
    pub comparator: Option<&'static str>,
    pub unit: Option<Unit>,
}

/// A FHIR `Attachment`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Attachment {
    pub content_type: Option<String>,
    /// The bytes, exactly as decoded from the message.
    pub data: Option<Vec<u8>>,
    pub url: Option<String>,
    pub title: Option<String>,
}

/// `Observation.value[x]` (and `component.value[x]`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ObsValue {
    Quantity(Quantity),
    Range {
        low: Option<Quantity>,
        high: Option<Quantity>,
        original: Option<String>,
    },
    Ratio {
        numerator: Quantity,
        denominator: Quantity,
        original: Option<String>,
    },
    String(String),
    Concept(Concept),
    DateTime(DateTime),
    Time(String),
    Period {
        start: Option<DateTime>,
        end: Option<DateTime>,
    },
    /// R4 Observation has no `valueAttachment`: written as the R5 cross-version extension.
    Attachment(Attachment),
}

/// `Observation.referenceRange`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RefRange {
    pub low: Option<Quantity>,
    pub high: Option<Quantity>,
    pub text: String,
}

/// A FHIR `Annotation`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Note {
    pub text: String,
    pub author: Option<String>,
    pub time: Option<DateTime>,
}

/// One result: an OBX or an ASTM R record.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Obs {
    pub code: Concept,
    /// From OBX-11 / R.9; `None`: from the report.
    pub status: Option<&'static str>,
    pub value: Option<ObsValue>,
    /// Values of a repeating OBX-5, one component each.
    pub components: Vec<ObsValue>,
    /// `dataAbsentReason` code.
    pub absent: Option<&'static str>,
    pub interpretation: Vec<Concept>,
    pub range: Option<RefRange>,
    pub notes: Vec<Note>,
    pub effective: Option<DateTime>,
    pub issued: Option<String>,
    pub performers: Vec<Party>,
    pub method: Option<Concept>,
    pub device: Option<Party>,
    /// OBX-21 observation instance identifier.
    pub identifiers: Vec<Ident>,
    /// Index into `Results::specimens`.
    pub specimen: Option<usize>,
}

/// A specimen: SPM, OBR-15, or ASTM O's specimen fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Specimen {
    pub identifiers: Vec<Ident>,
    pub accession: Option<Ident>,
    pub kind: Option<Concept>,
    pub collected: Option<DateTime>,
    pub collected_end: Option<DateTime>,
    pub received: Option<DateTime>,
    pub body_site: Option<Concept>,
    pub method: Option<Concept>,
    pub condition: Vec<Concept>,
    pub notes: Vec<String>,
}

impl Specimen {
    pub fn is_empty(&self) -> bool {
        *self == Specimen::default()
    }
}

/// A human name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Name {
    pub family: Option<String>,
    pub given: Vec<String>,
    pub prefix: Option<String>,
    pub suffix: Option<String>,
    pub use_: Option<&'static str>,
}

/// The patient: PID or ASTM P.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Patient {
    pub identifiers: Vec<Ident>,
    pub names: Vec<Name>,
    pub birth_date: Option<String>,
    pub gender: Option<&'static str>,
}

/// Which order number a report carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderRole {
    /// The placer's number (ORC-2 / OBR-2; lab-orders writes the ServiceRequest's identifier,
    /// or its id, there).
    Placer,
    /// The filler's number (ORC-3 / OBR-3).
    Filler,
    /// ASTM O.3, the specimen ID the LIS sent with the order (lab-orders writes the Specimen's
    /// accession number there, else the placer number).
    Specimen,
}

/// The order a report answers, as the message names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderNumber {
    /// The number (`EI.1`).
    pub value: String,
    /// Its namespace (`EI.2`), when given.
    pub namespace: Option<String>,
    /// Which number it is.
    pub role: OrderRole,
}

/// One report: an OBR with its results, or an ASTM O record with its R records.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub patient: Option<usize>,
    /// Identifiers of the report itself (placer, filler, accession).
    pub identifiers: Vec<Ident>,
    /// The order number `basedOn` searches by, and its identifier system.
    pub order: Option<(OrderNumber, Option<String>)>,
    pub code: Concept,
    pub categories: Vec<Concept>,
    /// From OBR-25 / O.26; `None`: from the results.
    pub status: Option<&'static str>,
    pub effective: Option<DateTime>,
    pub effective_end: Option<DateTime>,
    pub issued: Option<String>,
    pub performers: Vec<Party>,
    pub interpreters: Vec<Party>,
    /// Indexes into `Results::specimens`.
    pub specimens: Vec<usize>,
    pub observations: Vec<Obs>,
    pub notes: Vec<Note>,
    /// The duplicate-detection key (see `ReportKey`).
    pub key: crate::ReportKey,
}

impl Report {
    /// A report without a status takes one from its results; results without one take the
    /// report's.
    pub fn settle_statuses(&mut self) {
        let status = self.status.unwrap_or_else(|| {
            crate::codes::derived_report_status(self.observations.iter().filter_map(|o| o.status))
        });
        self.status = Some(status);
        for o in &mut self.observations {
            o.status
                .get_or_insert(crate::codes::observation_status_of_report(status));
        }
    }
}

/// Everything one message says.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Results {
    pub patients: Vec<Patient>,
    pub specimens: Vec<Specimen>,
    pub reports: Vec<Report>,
    /// Results outside any report (patient observations, specimen observations of OUL), with
    /// their patient.
    pub loose: Vec<(Obs, Option<usize>)>,
    /// What keys loose results: sending application and control ID.
    pub loose_anchor: String,
}
