//! The messages: HL7 v2.5 ORM^O01 and OML^O21, ASTM E1394 H-P-O-C-L.

use chrono::{DateTime, Utc};
use hl7v2::MessageBuilder;

use crate::model::{Coding, LOINC, Order};
use crate::{Error, dates};

/// Which message to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// HL7 v2.5 ORM^O01 (`hl7-orm`).
    Orm,
    /// HL7 v2.5 OML^O21 (`hl7-oml`).
    Oml,
    /// ASTM E1394 order message (`astm`).
    Astm,
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format, Error> {
        match s {
            "hl7-orm" => Ok(Format::Orm),
            "hl7-oml" => Ok(Format::Oml),
            "astm" => Ok(Format::Astm),
            other => Err(Error::Invalid {
                element: "format",
                reason: format!("{other:?}: expected hl7-orm, hl7-oml or astm"),
            }),
        }
    }
}

impl Format {
    /// The `$push` content type for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Orm | Format::Oml => "x-application/hl7-v2+er7",
            Format::Astm => "x-application/astm",
        }
    }
}

/// Why the message is sent: the order is new, or changed. A `revoked` or `entered-in-error`
/// order is sent as a cancel whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Event {
    /// Created: ORC-1 `NW`, ASTM O.12 `N`.
    #[default]
    New,
    /// Updated: ORC-1 `XO`, ASTM O.12 `N` (the order again; ASTM has no "changed").
    Update,
}

/// Header values and the message's identity.
#[derive(Debug, Clone)]
pub struct Options {
    /// MSH-3; ASTM H.5.
    pub sending_application: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-5; ASTM H.10.
    pub receiving_application: String,
    /// MSH-6.
    pub receiving_facility: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-7; ASTM H.14.
    pub timestamp: DateTime<Utc>,
    /// New or changed.
    pub event: Event,
    /// ASTM O.5 takes one code: the coding with this system, else the first (LOINC first).
    pub astm_code_system: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sending_application: "OUTPOST".into(),
            sending_facility: String::new(),
            receiving_application: String::new(),
            receiving_facility: String::new(),
            control_id: String::new(),
            timestamp: Utc::now(),
            event: Event::New,
            astm_code_system: None,
        }
    }
}

/// HL7 table 0396 for the systems orders use.
fn hl7_system(system: Option<&str>) -> &'static str {
    match system {
        Some(LOINC) => "LN",
        Some("http://snomed.info/sct") => "SCT",
        Some("http://www.ama-assn.org/go/cpt") => "C4",
        Some("http://hl7.org/fhir/sid/icd-10-cm") => "I10C",
        Some("http://hl7.org/fhir/sid/icd-10") => "I10",
        Some("http://terminology.hl7.org/CodeSystem/v2-0487") => "HL70487",
        _ => "L",
    }
}

/// HL7 table 0004 from the v3 ActCode of `Encounter.class`.
fn patient_class(code: &str) -> &'static str {
    match code {
        "IMP" | "ACUTE" | "NONAC" => "I",
        "AMB" | "VR" | "HH" | "FLD" => "O",
        "EMER" => "E",
        "PRENC" => "P",
        "OBSENC" => "O",
        _ => "U",
    }
}

fn sex(gender: Option<&str>, astm: bool) -> &'static str {
    match gender {
        Some("male") => "M",
        Some("female") => "F",
        Some("other") if !astm => "O",
        _ => "U",
    }
}

/// `parts` without its trailing empty values (so `Doe^Jane`, not `Doe^Jane^^^`).
fn trimmed<'a>(parts: &'a [&'a str]) -> &'a [&'a str] {
    let keep = parts
        .iter()
        .rposition(|p| !p.is_empty())
        .map_or(0, |i| i + 1);
    &parts[..keep]
}

/// Builds the message for `order`: segments or records ended by `\r`.
pub fn convert(order: &Order, format: Format, opts: &Options) -> Result<String, Error> {
    match format {
        Format::Orm | Format::Oml => hl7(order, format == Format::Oml, opts),
        Format::Astm => astm(order, opts),
    }
}

fn hl7(order: &Order, oml: bool, opts: &Options) -> Result<String, Error> {
    let ts = dates::hl7_now(opts.timestamp);
    let occurrence = order
        .occurrence
        .as_deref()
        .map(|d| dates::hl7_dtm(d, "ServiceRequest.occurrenceDateTime"))
        .transpose()?;
    let authored = order
        .authored
        .as_deref()
        .map(|d| dates::hl7_dtm(d, "ServiceRequest.authoredOn"))
        .transpose()?;
    let birth = order
        .patient
        .birth_date
        .as_deref()
        .map(|d| dates::hl7_dtm(d, "Patient.birthDate"))
        .transpose()?;
    let mut b = MessageBuilder::new();
    let trigger: [&str; 3] = if oml {
        ["OML", "O21", "OML_O21"]
    } else {
        ["ORM", "O01", "ORM_O01"]
    };
    b.msh()
        .field(3, &opts.sending_application)
        .field(4, &opts.sending_facility)
        .field(5, &opts.receiving_application)
        .field(6, &opts.receiving_facility)
        .field(7, &ts)
        .components(9, &trigger)
        .field(10, &opts.control_id)
        .field(11, "P")
        .field(12, "2.5");

    let p = &order.patient;
    let pid = b.segment("PID");
    pid.field(1, "1");
    for (rep, id) in p.identifiers.iter().enumerate() {
        let rep = rep + 1;
        pid.value(3, rep, 1, 1, &id.value);
        if let Some(a) = &id.assigner {
            pid.value(3, rep, 4, 1, a);
        }
        if let Some(s) = &id.system {
            pid.value(3, rep, 4, 2, s).value(3, rep, 4, 3, "URI");
        }
        if let Some(t) = &id.type_code {
            pid.value(3, rep, 5, 1, t);
        }
    }
    pid.components(
        5,
        trimmed(&[&p.family, &p.given, &p.middle, &p.suffix, &p.prefix]),
    );
    if let Some(b) = &birth {
        pid.field(7, b);
    }
    pid.field(8, sex(p.gender.as_deref(), false));
    if let Some(a) = &p.address {
        pid.components(
            11,
            &[
                &a.line1,
                &a.line2,
                &a.city,
                &a.state,
                &a.postal_code,
                &a.country,
            ],
        );
    }
    if let Some(phone) = &p.phone {
        pid.field(13, phone);
    }

    if let Some(e) = &order.encounter {
        let pv1 = b.segment("PV1");
        pv1.field(1, "1")
            .field(2, e.class.as_deref().map_or("U", patient_class));
        if let Some(v) = &e.visit_number {
            pv1.component(19, 1, &v.value);
        }
    }

    let control = if order.is_cancelled() {
        "CA"
    } else {
        match opts.event {
            Event::New => "NW",
            Event::Update => "XO",
        }
    };
    let placer_ns = order.placer.assigner.as_deref().unwrap_or("");
    let orderer = order.orderer.as_ref().map(|o| {
        [
            o.identifier.as_ref().map_or("", |i| i.value.as_str()),
            o.family.as_str(),
            o.given.as_str(),
        ]
    });
    let orc = b.segment("ORC");
    orc.field(1, control).component(2, 1, &order.placer.value);
    if !placer_ns.is_empty() {
        orc.component(2, 2, placer_ns);
    }
    if let Some(r) = &order.requisition {
        orc.component(4, 1, &r.value);
    }
    if let Some(o) = &occurrence {
        orc.component(7, 4, o);
    }
    orc.component(7, 6, order.priority.code());
    if let Some(a) = &authored {
        orc.field(9, a);
    }
    if let Some(o) = &orderer {
        orc.components(12, trimmed(o));
    }

    let obr = b.segment("OBR");
    obr.field(1, "1").component(2, 1, &order.placer.value);
    if !placer_ns.is_empty() {
        obr.component(2, 2, placer_ns);
    }
    // OBR-4: the first code (LOINC when there is one), the second as the alternate.
    let display = |c: &Coding| {
        c.display
            .clone()
            .or_else(|| order.code_text.clone())
            .unwrap_or_default()
    };
    for (i, c) in order.codes.iter().take(2).enumerate() {
        let at = i * 3;
        obr.component(4, at + 1, &c.code)
            .component(4, at + 2, &display(c))
            .component(4, at + 3, hl7_system(c.system.as_deref()));
    }
    obr.field(5, order.priority.code());
    if let Some(o) = &occurrence {
        obr.field(6, o);
    }
    if !oml && let Some(kind) = order.specimen.as_ref().and_then(|s| s.kind.as_ref()) {
        obr.value(15, 1, 1, 1, &kind.code);
    }
    if let Some(o) = &orderer {
        obr.components(16, trimmed(o));
    }
    if let Some(o) = &occurrence {
        obr.component(27, 4, o);
    }
    obr.component(27, 6, order.priority.code());
    for (rep, r) in order.reasons.iter().enumerate() {
        obr.value(31, rep + 1, 1, 1, &r.code)
            .value(31, rep + 1, 2, 1, r.display.as_deref().unwrap_or(""))
            .value(31, rep + 1, 3, 1, hl7_system(r.system.as_deref()));
    }

    let mut nte = 0;
    for note in &order.notes {
        for line in note.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            nte += 1;
            b.segment("NTE")
                .field(1, &nte.to_string())
                .field(2, "P")
                .field(3, line);
        }
    }

    if oml && let Some(s) = &order.specimen {
        let spm = b.segment("SPM");
        spm.field(1, "1");
        if let Some(id) = &s.id {
            spm.component(2, 1, id);
        }
        if let Some(k) = &s.kind {
            spm.component(4, 1, &k.code)
                .component(4, 2, k.display.as_deref().unwrap_or(""))
                .component(4, 3, hl7_system(k.system.as_deref()));
        }
    }
    let mut bytes = b.build();
    if !bytes.is_ascii() {
        // Names and notes beyond ASCII travel in UTF-8, the agent's default: say so.
        b.msh().field(18, "UNICODE UTF-8");
        bytes = b.build();
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn astm(order: &Order, opts: &Options) -> Result<String, Error> {
    use astm::{Delimiters, RecordBuilder, build_message};
    let d = Delimiters::default();
    let when = order
        .occurrence
        .as_deref()
        .or(order.authored.as_deref())
        .map(|t| dates::astm_datetime(t, "ServiceRequest.occurrenceDateTime"))
        .transpose()?;
    let birth = order
        .patient
        .birth_date
        .as_deref()
        .map(|t| dates::astm_datetime(t, "Patient.birthDate"))
        .transpose()?;
    let mut h = RecordBuilder::header(d);
    h.field(5, &opts.sending_application)
        .field(10, &opts.receiving_application)
        .field(12, "P")
        .field(13, "LIS2-A2")
        .field(14, &opts.timestamp.format("%Y%m%d%H%M%S").to_string());

    let p = &order.patient;
    let mut pr = RecordBuilder::new(b'P', d);
    pr.field(2, "1")
        .field(
            3,
            &p.identifiers
                .first()
                .ok_or(Error::Missing {
                    element: "Patient.identifier",
                })?
                .value,
        )
        .components(
            6,
            trimmed(&[&p.family, &p.given, &p.middle, &p.suffix, &p.prefix]),
        );
    if let Some(b) = &birth {
        pr.field(8, b);
    }
    pr.field(9, sex(p.gender.as_deref(), true));
    if let Some(a) = &p.address {
        let street = [a.line1.as_str(), a.line2.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        pr.components(
            11,
            &[&street, &a.city, &a.state, &a.postal_code, &a.country],
        );
    }
    if let Some(phone) = &p.phone {
        pr.field(13, phone);
    }

    let code = opts
        .astm_code_system
        .as_deref()
        .and_then(|sys| {
            order
                .codes
                .iter()
                .find(|c| c.system.as_deref() == Some(sys))
        })
        .or(order.codes.first())
        .ok_or(Error::Missing {
            element: "ServiceRequest.code",
        })?;
    let specimen_id = order
        .specimen
        .as_ref()
        .and_then(|s| s.id.clone())
        .unwrap_or_else(|| order.placer.value.clone());
    let mut o = RecordBuilder::new(b'O', d);
    o.field(2, "1")
        .field(3, &specimen_id)
        .set(5, 1, 4, &code.code)
        .set(
            5,
            1,
            5,
            code.display
                .as_deref()
                .or(order.code_text.as_deref())
                .unwrap_or(""),
        )
        .field(6, order.priority.code());
    if let Some(w) = &when {
        o.field(7, w);
    }
    o.field(12, if order.is_cancelled() { "C" } else { "N" });
    if let Some(k) = order.specimen.as_ref().and_then(|s| s.kind.as_ref()) {
        o.field(16, &k.code);
    }
    if let Some(who) = &order.orderer {
        o.components(17, trimmed(&[&who.family, &who.given]));
    }
    o.field(26, "O");

    let mut records = vec![h, pr, o];
    let mut n = 0;
    for note in &order.notes {
        for line in note.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
            n += 1;
            let mut c = RecordBuilder::new(b'C', d);
            c.field(2, &n.to_string())
                .field(3, "L")
                .field(4, line)
                .field(5, "G");
            records.push(c);
        }
    }
    let mut l = RecordBuilder::new(b'L', d);
    l.field(2, "1").field(3, "N");
    records.push(l);
    // ASTM text is ISO 8859-1: one byte, one character.
    Ok(build_message(&records)
        .into_iter()
        .map(char::from)
        .collect())
}
