//! The result model → a FHIR R4 transaction Bundle: Patient, Specimen, Observation and
//! DiagnosticReport entries, each a conditional create (`ifNoneExist`) by identifier, linked by
//! `urn:uuid:` full URLs.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::codes::{UCUM, V2_0203};
use crate::dates::DateTime;
use crate::key::search_param;
use crate::model::{
    Attachment, Concept, Decimal, Ident, Note, Obs, ObsValue, OrderNumber, OrderRole, Party,
    Patient, Quantity, RefRange, Results, Specimen,
};
use crate::options::{OBSERVATION_KEY_SYSTEM, REPORT_KEY_SYSTEM};
use crate::{Options, OrderLink, ReportKey};

const ORIGINAL_TEXT: &str = "http://hl7.org/fhir/StructureDefinition/originalText";
const QUANTITY_PRECISION: &str = "http://hl7.org/fhir/StructureDefinition/quantity-precision";
/// The R5 `Observation.value[x]` (which has Attachment) for use in R4.
pub const OBSERVATION_VALUE_R5: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.value";
/// The R5 `DiagnosticReport.note` for use in R4.
pub const REPORT_NOTE_R5: &str =
    "http://hl7.org/fhir/5.0/StructureDefinition/extension-DiagnosticReport.note";

/// A converted message.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    /// The FHIR R4 transaction `Bundle`.
    pub bundle: Value,
    /// One per `DiagnosticReport`, in message order.
    pub reports: Vec<Report>,
}

/// What a relay needs to know about one converted report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The duplicate-detection key (also an identifier of the report).
    pub key: ReportKey,
    /// The `urn:uuid:` full URL of its entry in the Bundle.
    pub full_url: String,
    /// `DiagnosticReport.status` (`final`, `preliminary`, ...).
    pub status: String,
    /// The order it answers, as the message names it.
    pub order: Option<OrderNumber>,
    /// The `ServiceRequest` search that finds that order (`identifier=...`), as used in the
    /// conditional `basedOn`.
    pub order_search: Option<String>,
    /// Number of `Observation`s in the report.
    pub observations: usize,
}

impl Conversion {
    /// Points `basedOn` of report `report` and of its observations at `reference` (a literal
    /// reference such as `ServiceRequest/123`), for a caller that found the order itself (by
    /// identifier, or by id: lab-orders sends the ServiceRequest's id as placer number when the
    /// request has no identifier). Returns false when there is no such report.
    pub fn link_order(&mut self, report: usize, reference: &str) -> bool {
        let Some(full_url) = self.reports.get(report).map(|r| r.full_url.clone()) else {
            return false;
        };
        let Some(entries) = self.bundle["entry"].as_array_mut() else {
            return false;
        };
        let results: Vec<String> = entries
            .iter()
            .find(|e| e["fullUrl"] == full_url.as_str())
            .and_then(|e| e["resource"]["result"].as_array())
            .map(|r| {
                r.iter()
                    .filter_map(|x| x["reference"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        for e in entries.iter_mut() {
            let url = e["fullUrl"].as_str().unwrap_or_default();
            if url == full_url || results.iter().any(|r| r == url) {
                e["resource"]["basedOn"] = json!([{"reference": reference}]);
            }
        }
        true
    }

    /// The resources of the Bundle, in entry order.
    pub fn resources(&self) -> impl Iterator<Item = &Value> {
        self.bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| &e["resource"])
    }
}

/// Adds `key: value` unless the value is null, an empty array or an empty object.
fn put(m: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    if !empty {
        m.insert(key.to_owned(), value);
    }
}

fn opt<T>(v: &Option<T>, f: impl Fn(&T) -> Value) -> Value {
    v.as_ref().map_or(Value::Null, f)
}

fn concept(c: &Concept) -> Value {
    let mut m = Map::new();
    let codings: Vec<Value> = c
        .codings
        .iter()
        .map(|k| {
            let mut m = Map::new();
            put(&mut m, "system", opt(&k.system, |s| json!(s)));
            put(&mut m, "version", opt(&k.version, |s| json!(s)));
            put(&mut m, "code", json!(k.code));
            put(&mut m, "display", opt(&k.display, |s| json!(s)));
            Value::Object(m)
        })
        .collect();
    put(&mut m, "coding", Value::Array(codings));
    put(&mut m, "text", opt(&c.text, |s| json!(s)));
    Value::Object(m)
}

fn type_concept(code: &str) -> Value {
    json!({"coding": [{"system": V2_0203, "code": code}]})
}

fn identifier(i: &Ident) -> Value {
    let mut m = Map::new();
    match (&i.type_code, &i.type_text) {
        (Some(c), _) => put(&mut m, "type", type_concept(c)),
        (None, Some(t)) => put(&mut m, "type", json!({"text": t})),
        _ => {}
    }
    put(&mut m, "system", opt(&i.system, |s| json!(s)));
    put(&mut m, "value", json!(i.value));
    put(
        &mut m,
        "assigner",
        opt(&i.assigner, |a| json!({"display": a})),
    );
    Value::Object(m)
}

fn party(p: &Party) -> Value {
    let mut m = Map::new();
    put(&mut m, "type", json!(p.kind));
    put(&mut m, "identifier", opt(&p.id, identifier));
    put(&mut m, "display", opt(&p.name, |s| json!(s)));
    Value::Object(m)
}

fn decimal(m: &mut Map<String, Value>, key: &str, d: &Decimal) {
    m.insert(key.to_owned(), Value::Number(d.number.clone()));
    if let Some(p) = d.precision {
        m.insert(
            format!("_{key}"),
            json!({"extension": [{"url": QUANTITY_PRECISION, "valueInteger": p}]}),
        );
    }
}

fn quantity(q: &Quantity) -> Value {
    let mut m = Map::new();
    decimal(&mut m, "value", &q.value);
    put(&mut m, "comparator", opt(&q.comparator, |c| json!(c)));
    if let Some(u) = &q.unit {
        put(&mut m, "unit", json!(u.text));
        if let Some(code) = &u.ucum {
            put(&mut m, "system", json!(UCUM));
            put(&mut m, "code", json!(code));
        }
    }
    Value::Object(m)
}

fn date_time(m: &mut Map<String, Value>, key: &str, t: &Option<DateTime>) {
    let Some(t) = t else { return };
    m.insert(key.to_owned(), json!(t.value));
    if let Some(original) = &t.original {
        m.insert(
            format!("_{key}"),
            json!({"extension": [{"url": ORIGINAL_TEXT, "valueString": original}]}),
        );
    }
}

fn attachment(a: &Attachment) -> Value {
    let mut m = Map::new();
    put(&mut m, "contentType", opt(&a.content_type, |s| json!(s)));
    if let Some(data) = &a.data {
        put(&mut m, "data", json!(STANDARD.encode(data)));
        put(&mut m, "size", json!(data.len()));
    }
    put(&mut m, "url", opt(&a.url, |s| json!(s)));
    put(&mut m, "title", opt(&a.title, |s| json!(s)));
    Value::Object(m)
}

fn note(n: &Note) -> Value {
    let mut m = Map::new();
    put(&mut m, "authorString", opt(&n.author, |s| json!(s)));
    date_time(&mut m, "time", &n.time);
    put(&mut m, "text", json!(n.text));
    Value::Object(m)
}

fn original_text(original: &Option<String>) -> Value {
    opt(
        original,
        |o| json!([{"url": ORIGINAL_TEXT, "valueString": o}]),
    )
}

/// Writes `value[x]` (or the attachment extension) into `m`.
fn value(m: &mut Map<String, Value>, v: &ObsValue) {
    match v {
        ObsValue::Quantity(q) => put(m, "valueQuantity", quantity(q)),
        ObsValue::Range {
            low,
            high,
            original,
        } => {
            let mut r = Map::new();
            put(&mut r, "extension", original_text(original));
            put(&mut r, "low", opt(low, quantity));
            put(&mut r, "high", opt(high, quantity));
            put(m, "valueRange", Value::Object(r));
        }
        ObsValue::Ratio {
            numerator,
            denominator,
            original,
        } => {
            let mut r = Map::new();
            put(&mut r, "extension", original_text(original));
            put(&mut r, "numerator", quantity(numerator));
            put(&mut r, "denominator", quantity(denominator));
            put(m, "valueRatio", Value::Object(r));
        }
        ObsValue::String(s) => put(m, "valueString", json!(s)),
        ObsValue::Concept(c) => put(m, "valueCodeableConcept", concept(c)),
        ObsValue::DateTime(t) => date_time(m, "valueDateTime", &Some(t.clone())),
        ObsValue::Time(t) => put(m, "valueTime", json!(t)),
        ObsValue::Period { start, end } => {
            let mut p = Map::new();
            date_time(&mut p, "start", start);
            date_time(&mut p, "end", end);
            put(m, "valuePeriod", Value::Object(p));
        }
        ObsValue::Attachment(a) => {
            let ext = json!({"url": OBSERVATION_VALUE_R5, "valueAttachment": attachment(a)});
            match m.get_mut("extension").and_then(Value::as_array_mut) {
                Some(list) => list.push(ext),
                None => {
                    m.insert("extension".into(), json!([ext]));
                }
            }
        }
    }
}

fn reference_range(r: &RefRange) -> Value {
    let mut m = Map::new();
    put(&mut m, "low", opt(&r.low, quantity));
    put(&mut m, "high", opt(&r.high, quantity));
    put(&mut m, "text", json!(r.text));
    Value::Object(m)
}

fn reference(full_url: &str) -> Value {
    json!({"reference": full_url})
}

fn entry(full_url: &str, resource: Value, if_none_exist: Option<String>) -> Value {
    let ty = resource["resourceType"].clone();
    let mut request = Map::new();
    request.insert("method".into(), json!("POST"));
    request.insert("url".into(), ty);
    put(
        &mut request,
        "ifNoneExist",
        opt(&if_none_exist, |s| json!(s)),
    );
    json!({"fullUrl": full_url, "resource": resource, "request": request})
}

/// `basedOn` for an order number.
fn based_on(
    order: &Option<(OrderNumber, Option<String>)>,
    link: OrderLink,
) -> (Value, Option<String>) {
    let Some((number, system)) = order else {
        return (Value::Null, None);
    };
    let search = search_param("identifier", system.as_deref(), &number.value);
    let mut id = Map::new();
    match number.role {
        OrderRole::Placer => put(&mut id, "type", type_concept("PLAC")),
        OrderRole::Filler => put(&mut id, "type", type_concept("FILL")),
        OrderRole::Specimen => {}
    }
    put(&mut id, "system", opt(system, |s| json!(s)));
    put(&mut id, "value", json!(number.value));
    let id = Value::Object(id);
    let value = match link {
        OrderLink::Conditional => {
            json!([{"reference": format!("ServiceRequest?{search}"), "identifier": id}])
        }
        OrderLink::Identifier => json!([{"type": "ServiceRequest", "identifier": id}]),
        OrderLink::None => Value::Null,
    };
    (value, Some(search))
}

struct Writer<'a> {
    seed: Uuid,
    n: usize,
    opts: &'a Options,
    entries: Vec<Value>,
}

impl Writer<'_> {
    fn full_url(&mut self) -> String {
        self.n += 1;
        format!(
            "urn:uuid:{}",
            Uuid::new_v5(&self.seed, self.n.to_string().as_bytes())
        )
    }

    fn patient(&mut self, p: &Patient) -> Option<String> {
        let chosen = p
            .identifiers
            .iter()
            .find(|i| i.type_code.as_deref() == Some("MR"))
            .or(p.identifiers.first())?;
        let mut search = search_param("identifier", chosen.system.as_deref(), &chosen.value);
        if chosen.system.is_none() {
            // A bare value may be another facility's number for another person: the match must
            // also have this birth date and family name, or a new Patient is created.
            if let Some(b) = &p.birth_date {
                search.push('&');
                search.push_str(&search_param("birthdate", None, b));
            }
            if let Some(f) = p.names.iter().find_map(|n| n.family.as_ref()) {
                search.push('&');
                search.push_str(&search_param("family", None, f));
            }
        }
        let mut m = Map::new();
        put(&mut m, "resourceType", json!("Patient"));
        put(
            &mut m,
            "identifier",
            p.identifiers.iter().map(identifier).collect(),
        );
        let names: Vec<Value> = p
            .names
            .iter()
            .map(|n| {
                let mut m = Map::new();
                put(&mut m, "use", opt(&n.use_, |u| json!(u)));
                put(&mut m, "family", opt(&n.family, |f| json!(f)));
                put(&mut m, "given", json!(n.given));
                put(&mut m, "prefix", opt(&n.prefix, |p| json!([p])));
                put(&mut m, "suffix", opt(&n.suffix, |s| json!([s])));
                Value::Object(m)
            })
            .collect();
        put(&mut m, "name", Value::Array(names));
        put(&mut m, "gender", opt(&p.gender, |g| json!(g)));
        put(&mut m, "birthDate", opt(&p.birth_date, |b| json!(b)));
        let url = self.full_url();
        self.entries
            .push(entry(&url, Value::Object(m), Some(search)));
        Some(url)
    }

    fn specimen_resource(s: &Specimen, subject: Option<&String>) -> Value {
        let mut m = Map::new();
        put(&mut m, "resourceType", json!("Specimen"));
        put(
            &mut m,
            "identifier",
            s.identifiers.iter().map(identifier).collect(),
        );
        put(&mut m, "accessionIdentifier", opt(&s.accession, identifier));
        put(&mut m, "type", opt(&s.kind, concept));
        put(&mut m, "subject", opt(&subject.cloned(), |u| reference(u)));
        date_time(&mut m, "receivedTime", &s.received);
        let mut c = Map::new();
        if s.collected_end.is_some() {
            let mut p = Map::new();
            date_time(&mut p, "start", &s.collected);
            date_time(&mut p, "end", &s.collected_end);
            put(&mut c, "collectedPeriod", Value::Object(p));
        } else {
            date_time(&mut c, "collectedDateTime", &s.collected);
        }
        put(&mut c, "method", opt(&s.method, concept));
        put(&mut c, "bodySite", opt(&s.body_site, concept));
        put(&mut m, "collection", Value::Object(c));
        put(
            &mut m,
            "condition",
            s.condition.iter().map(concept).collect(),
        );
        put(
            &mut m,
            "note",
            s.notes.iter().map(|t| json!({"text": t})).collect(),
        );
        Value::Object(m)
    }

    /// A specimen with an identifier is an entry of its own; `None` for one without (it is
    /// contained in its reports instead).
    fn specimen(&mut self, s: &Specimen, subject: Option<&String>) -> Option<String> {
        let search = match (&s.accession, s.identifiers.first()) {
            (Some(a), _) => search_param("accession", a.system.as_deref(), &a.value),
            (None, Some(i)) => search_param("identifier", i.system.as_deref(), &i.value),
            (None, None) => return None,
        };
        let url = self.full_url();
        self.entries.push(entry(
            &url,
            Self::specimen_resource(s, subject),
            Some(search),
        ));
        Some(url)
    }

    #[allow(clippy::too_many_arguments)] // one call site per kind of result; a struct would only rename them
    fn observation(
        &mut self,
        o: &Obs,
        key: String,
        subject: Option<&String>,
        based_on: &Value,
        specimen: Option<&String>,
        effective: &Option<DateTime>,
        issued: &Option<String>,
    ) -> String {
        let mut m = Map::new();
        put(&mut m, "resourceType", json!("Observation"));
        let mut ids = vec![json!({"system": OBSERVATION_KEY_SYSTEM, "value": key})];
        ids.extend(o.identifiers.iter().map(identifier));
        put(&mut m, "identifier", Value::Array(ids));
        put(&mut m, "basedOn", based_on.clone());
        put(&mut m, "status", json!(o.status.unwrap_or("unknown")));
        put(
            &mut m,
            "category",
            json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory", "display": "Laboratory"}]}]),
        );
        put(&mut m, "code", concept(&o.code));
        put(&mut m, "subject", opt(&subject.cloned(), |u| reference(u)));
        date_time(
            &mut m,
            "effectiveDateTime",
            if o.effective.is_some() {
                &o.effective
            } else {
                effective
            },
        );
        put(
            &mut m,
            "issued",
            opt(
                if o.issued.is_some() {
                    &o.issued
                } else {
                    issued
                },
                |s| json!(s),
            ),
        );
        put(
            &mut m,
            "performer",
            o.performers.iter().map(party).collect(),
        );
        if let Some(v) = &o.value {
            value(&mut m, v);
        }
        put(
            &mut m,
            "dataAbsentReason",
            opt(
                &o.absent,
                |c| json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": c}]}),
            ),
        );
        put(
            &mut m,
            "interpretation",
            o.interpretation.iter().map(concept).collect(),
        );
        put(&mut m, "note", o.notes.iter().map(note).collect());
        put(&mut m, "method", opt(&o.method, concept));
        put(
            &mut m,
            "specimen",
            opt(&specimen.cloned(), |u| reference(u)),
        );
        put(&mut m, "device", opt(&o.device, party));
        put(
            &mut m,
            "referenceRange",
            opt(&o.range, |r| json!([reference_range(r)])),
        );
        let components: Vec<Value> = o
            .components
            .iter()
            .map(|v| {
                let mut c = Map::new();
                put(&mut c, "code", concept(&o.code));
                value(&mut c, v);
                Value::Object(c)
            })
            .collect();
        put(&mut m, "component", Value::Array(components));
        let url = self.full_url();
        let search = search_param("identifier", Some(OBSERVATION_KEY_SYSTEM), &key);
        self.entries
            .push(entry(&url, Value::Object(m), Some(search)));
        url
    }
}

/// Writes the model as a transaction Bundle. `seed` makes the full URLs (the same message
/// gives the same Bundle).
pub(crate) fn write(results: &Results, opts: &Options, seed: Uuid) -> Conversion {
    let mut w = Writer {
        seed,
        n: 0,
        opts,
        entries: Vec::new(),
    };
    let patients: Vec<Option<String>> = results.patients.iter().map(|p| w.patient(p)).collect();
    let subject_of = |i: Option<usize>| i.and_then(|i| patients.get(i).cloned().flatten());
    // The patient of a specimen: that of the first report or result naming it.
    let specimen_patient = |s: usize| {
        results
            .reports
            .iter()
            .find(|r| r.specimens.contains(&s))
            .map(|r| r.patient)
            .or_else(|| {
                results
                    .loose
                    .iter()
                    .find(|(o, _)| o.specimen == Some(s))
                    .map(|(_, p)| *p)
            })
            .flatten()
    };
    let specimens: Vec<Option<String>> = results
        .specimens
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let subject = subject_of(specimen_patient(i));
            w.specimen(s, subject.as_ref())
        })
        .collect();
    let mut reports = Vec::new();
    for report in &results.reports {
        let subject = subject_of(report.patient);
        let (based_on, order_search) = based_on(&report.order, w.opts.order_link);
        let report_specimen = report
            .specimens
            .iter()
            .find_map(|&s| specimens.get(s).cloned().flatten());
        let mut result_refs = Vec::new();
        let mut presented = Vec::new();
        for (n, o) in report.observations.iter().enumerate() {
            let specimen = o
                .specimen
                .and_then(|s| specimens.get(s).cloned().flatten())
                .or_else(|| report_specimen.clone());
            let url = w.observation(
                o,
                report.key.observation(n + 1),
                subject.as_ref(),
                &based_on,
                specimen.as_ref(),
                &report.effective,
                &report.issued,
            );
            result_refs.push(reference(&url));
            if let Some(ObsValue::Attachment(a)) = &o.value
                && (a.data.is_some() || a.url.is_some())
            {
                presented.push(attachment(a));
            }
        }
        let mut m = Map::new();
        put(&mut m, "resourceType", json!("DiagnosticReport"));
        let mut contained = Vec::new();
        let mut specimen_refs = Vec::new();
        for &s in &report.specimens {
            match specimens.get(s).cloned().flatten() {
                Some(url) => specimen_refs.push(reference(&url)),
                None => {
                    let id = format!("specimen{}", contained.len() + 1);
                    let mut r = Writer::specimen_resource(&results.specimens[s], subject.as_ref());
                    r["id"] = json!(id);
                    contained.push(r);
                    specimen_refs.push(json!({"reference": format!("#{id}")}));
                }
            }
        }
        put(&mut m, "contained", Value::Array(contained));
        let notes: Vec<Value> = report
            .notes
            .iter()
            .map(|n| json!({"url": REPORT_NOTE_R5, "valueAnnotation": note(n)}))
            .collect();
        put(&mut m, "extension", Value::Array(notes));
        let mut ids = vec![json!({"system": REPORT_KEY_SYSTEM, "value": report.key.value})];
        ids.extend(report.identifiers.iter().map(identifier));
        put(&mut m, "identifier", Value::Array(ids));
        put(&mut m, "basedOn", based_on.clone());
        let status = report.status.unwrap_or("unknown");
        put(&mut m, "status", json!(status));
        put(
            &mut m,
            "category",
            report.categories.iter().map(concept).collect(),
        );
        put(&mut m, "code", concept(&report.code));
        put(&mut m, "subject", opt(&subject, |u| reference(u)));
        if report.effective_end.is_some() {
            let mut p = Map::new();
            date_time(&mut p, "start", &report.effective);
            date_time(&mut p, "end", &report.effective_end);
            put(&mut m, "effectivePeriod", Value::Object(p));
        } else {
            date_time(&mut m, "effectiveDateTime", &report.effective);
        }
        put(&mut m, "issued", opt(&report.issued, |s| json!(s)));
        put(
            &mut m,
            "performer",
            report.performers.iter().map(party).collect(),
        );
        put(
            &mut m,
            "resultsInterpreter",
            report.interpreters.iter().map(party).collect(),
        );
        put(&mut m, "specimen", Value::Array(specimen_refs));
        put(&mut m, "result", Value::Array(result_refs));
        put(&mut m, "presentedForm", Value::Array(presented));
        let url = w.full_url();
        w.entries
            .push(entry(&url, Value::Object(m), Some(report.key.search())));
        reports.push(Report {
            key: report.key.clone(),
            full_url: url,
            status: status.to_owned(),
            order: report.order.as_ref().map(|(o, _)| o.clone()),
            order_search,
            observations: report.observations.len(),
        });
    }
    for (n, (o, patient)) in results.loose.iter().enumerate() {
        let subject = subject_of(*patient);
        let specimen = o.specimen.and_then(|s| specimens.get(s).cloned().flatten());
        w.observation(
            o,
            format!("{}/{}", results.loose_anchor, n + 1),
            subject.as_ref(),
            &Value::Null,
            specimen.as_ref(),
            &None,
            &None,
        );
    }
    Conversion {
        bundle: json!({"resourceType": "Bundle", "type": "transaction", "entry": w.entries}),
        reports,
    }
}
