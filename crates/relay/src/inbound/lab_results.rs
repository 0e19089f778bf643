//! The lab-results processor: a channel whose configuration names it
//! ([`INBOUND_PROCESSOR_EXTENSION`] with `valueCode` `lab-results`) has each message converted
//! by the `lab-results` crate (HL7 ORU^R01 / OUL^R22, ASTM E1394) and the transaction Bundle
//! stored in the relay's registry, processed as a FHIR server processes a transaction:
//!
//! - every entry is a conditional create: when its `ifNoneExist` search finds a resource, that
//!   one is used and nothing is written (a resent result creates nothing: the report's and each
//!   result's identifier carry the filler order number and the result time);
//! - `urn:uuid:` references between entries become `Type/id`;
//! - `basedOn` names the `ServiceRequest` found by the order number the message carries
//!   (placer, else filler: the number `lab-orders` wrote in ORC-2 / OBR-2 / ASTM O.3, which is
//!   the request's identifier, or its id when it has none). No order, or more than one: the
//!   reference is kept as a logical one (the identifier alone) and the report is stored;
//! - a report with status `final` moves its `ServiceRequest` to `completed`.
//!
//! Messages are processed one at a time per relay process, so two copies of one result
//! arriving together cannot both create it. The writes are not one database transaction: a
//! failure midway leaves what was written, and the redelivery (the agent sends again after a
//! 503) finds it and writes the rest.

use std::collections::HashMap;
use std::sync::Arc;

use lab_results::{Format, Options};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::fhir::{id_of, url_params};
use crate::store::{PutError, Registry, StoreError};

/// The extension of an `Agent.channel` that names what the relay does with its messages.
pub const INBOUND_PROCESSOR_EXTENSION: &str =
    "https://outpost.health/fhir/StructureDefinition/inbound-processor";

/// A processor the relay runs for a channel's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Processor {
    /// `lab-results`: results to DiagnosticReport, Observation, Specimen, Patient.
    LabResults,
}

/// The processor a channel (an element of `Agent.channel`) names: `Ok(None)` for none, `Err`
/// with the problem in words for a code the relay does not know.
pub(crate) fn processor(channel: &Value) -> Result<Option<Processor>, String> {
    let Some(ext) = channel["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"].as_str() == Some(INBOUND_PROCESSOR_EXTENSION))
    else {
        return Ok(None);
    };
    match ext["valueCode"].as_str() {
        Some("lab-results") => Ok(Some(Processor::LabResults)),
        other => Err(format!(
            "inbound-processor {}: unknown processor; the relay runs lab-results",
            other.map_or("(no valueCode)".to_owned(), |c| format!("{c:?}"))
        )),
    }
}

/// Why a result message was not stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ResultsError {
    /// The content type is neither HL7 v2 nor ASTM, and the body is neither (the sender's
    /// fault).
    #[error("not an HL7 v2 or ASTM message (content type {0})")]
    Format(String),
    /// The message cannot be converted (the sender's fault): the segment and field.
    #[error("cannot convert the result message: {0}")]
    Convert(#[from] lab_results::Error),
    /// The registry failed (temporary: the agent sends the message again).
    #[error("cannot store the results")]
    Store(#[from] StoreError),
    /// A converted resource the registry refused (the relay's fault).
    #[error("a converted resource was refused")]
    Refused(#[source] crate::store::InvalidResource),
}

impl From<PutError> for ResultsError {
    fn from(e: PutError) -> Self {
        match e {
            PutError::Store(s) => ResultsError::Store(s),
            PutError::Invalid(i) => ResultsError::Refused(i),
        }
    }
}

/// What storing one result message did.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    /// The transaction Bundle as converted (conditional references to the order), for
    /// rest-hook Subscriptions.
    pub(crate) bundle: Value,
    /// Resources created now.
    pub(crate) created: Vec<Arc<Value>>,
    /// Reports and results stored before that this message changed (a status, a value).
    pub(crate) updated: Vec<Arc<Value>>,
    /// Reports and results of this message already stored as they are: with `created` and
    /// `updated`, what a Subscription is matched against when anything changed (a corrected
    /// Observation under an unchanged DiagnosticReport still concerns the report).
    pub(crate) unchanged: Vec<Arc<Value>>,
    /// Reports updated: the report itself or one of its results changed or is new.
    pub(crate) revised: usize,
    /// `DiagnosticReport/<id>` of each report, new or found.
    pub(crate) reports: Vec<String>,
    /// Reports already stored (a resend).
    pub(crate) already: usize,
    /// `ServiceRequest/<id>` moved to `completed`.
    pub(crate) completed: Vec<String>,
    /// Order numbers that matched no (or more than one) ServiceRequest.
    pub(crate) unmatched: Vec<String>,
}

impl Stored {
    /// One line for the device's acknowledgement (MSA-3) and the log.
    pub(crate) fn summary(&self) -> String {
        let mut parts = Vec::new();
        let new = self
            .reports
            .len()
            .saturating_sub(self.already + self.revised);
        if new > 0 {
            parts.push(format!(
                "stored {new} report(s), {} resource(s)",
                self.created.len()
            ));
        }
        if self.revised > 0 {
            parts.push(format!(
                "updated {} report(s): {} resource(s) changed",
                self.revised,
                self.updated.len()
            ));
        }
        if self.already > 0 {
            parts.push(format!("{} report(s) already stored", self.already));
        }
        if !self.completed.is_empty() {
            parts.push(format!("{} completed", self.completed.join(", ")));
        }
        if !self.unmatched.is_empty() {
            parts.push(format!("no order {}", self.unmatched.join(", ")));
        }
        if parts.is_empty() {
            parts.push("nothing to store".into());
        }
        parts.join("; ")
    }
}

/// What happened to one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Created,
    Updated,
    Unchanged,
}

/// Converts and stores result messages, one at a time.
#[derive(Debug)]
pub(crate) struct LabResults {
    registry: Registry,
    one_at_a_time: Mutex<()>,
}

impl LabResults {
    pub(crate) fn new(registry: Registry) -> LabResults {
        LabResults {
            registry,
            one_at_a_time: Mutex::new(()),
        }
    }

    /// Converts `body` (of `content_type`) and stores what is new.
    ///
    /// # Errors
    ///
    /// [`ResultsError::Format`] / [`ResultsError::Convert`] for a message that is not a result
    /// message (final: answer AE); [`ResultsError::Store`] when the registry failed
    /// (temporary); [`ResultsError::Refused`] when the registry refused a converted resource.
    pub(crate) async fn process(
        &self,
        body: &str,
        content_type: &str,
    ) -> Result<Stored, ResultsError> {
        let format = Format::from_content_type(content_type)
            .or_else(|| Format::detect(body.as_bytes()))
            .ok_or_else(|| ResultsError::Format(content_type.to_owned()))?;
        let mut conversion = lab_results::convert(body.as_bytes(), format, &Options::default())?;
        let _turn = self.one_at_a_time.lock().await;
        let mut stored = Stored {
            bundle: conversion.bundle.clone(),
            ..Stored::default()
        };
        // The order of each report.
        let mut orders: Vec<Option<String>> = Vec::new();
        for i in 0..conversion.reports.len() {
            let report = &conversion.reports[i];
            let found = match (&report.order_search, &report.order) {
                (Some(search), Some(number)) => {
                    let mut hits = self
                        .registry
                        .search("ServiceRequest", &url_params(search), 2)
                        .await?;
                    if hits.is_empty() && crate::fhir::valid_id(&number.value) {
                        // lab-orders sends the request's id when it has no identifier.
                        hits = self
                            .registry
                            .get("ServiceRequest", &number.value)
                            .await?
                            .into_iter()
                            .collect();
                    }
                    if hits.len() == 1 {
                        Some(format!("ServiceRequest/{}", id_of(&hits[0])))
                    } else {
                        stored.unmatched.push(number.value.clone());
                        None
                    }
                }
                _ => None,
            };
            if let Some(reference) = &found {
                conversion.link_order(i, reference);
            }
            orders.push(found);
        }
        let mut entries: Vec<Value> = conversion.bundle["entry"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // Conditional references the relay could not resolve stay as logical references.
        for e in &mut entries {
            // `get_mut`, not indexing: indexing a missing key would add `"basedOn": null`.
            let based_on = e
                .get_mut("resource")
                .and_then(|r| r.get_mut("basedOn"))
                .and_then(Value::as_array_mut);
            for b in based_on.into_iter().flatten() {
                if b["reference"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("ServiceRequest?"))
                    && let Some(obj) = b.as_object_mut()
                {
                    obj.remove("reference");
                    obj.insert("type".into(), Value::String("ServiceRequest".into()));
                }
            }
        }
        // Conditional creates: what exists is used, the rest gets an id.
        let mut resolved: HashMap<String, String> = HashMap::new();
        // Entries to write: their index, and the stored resource they replace (an update).
        let mut writes: Vec<(usize, Option<Arc<Value>>)> = Vec::new();
        for (n, e) in entries.iter_mut().enumerate() {
            let ty = e["resource"]["resourceType"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let full_url = e["fullUrl"].as_str().unwrap_or_default().to_owned();
            let existing = match e["request"]["ifNoneExist"].as_str() {
                Some(search) => self
                    .registry
                    .search(&ty, &url_params(search), 1)
                    .await?
                    .into_iter()
                    .next(),
                None => None,
            };
            let id = match existing {
                Some(r) => {
                    let id = id_of(&r).to_owned();
                    // A result sent again may say more (preliminary → final under the same
                    // key): reports and results are updated; the patient and specimen the
                    // EHR may have edited are left alone.
                    if matches!(ty.as_str(), "DiagnosticReport" | "Observation") {
                        e["resource"]["id"] = Value::String(id.clone());
                        writes.push((n, Some(r)));
                    }
                    id
                }
                None => {
                    let id = uuid::Uuid::new_v4().to_string();
                    e["resource"]["id"] = Value::String(id.clone());
                    writes.push((n, None));
                    id
                }
            };
            resolved.insert(full_url, format!("{ty}/{id}"));
        }
        let mut report_state: HashMap<String, Change> = HashMap::new();
        for (n, previous) in writes {
            let full_url = entries[n]["fullUrl"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let mut resource = entries[n]["resource"].take();
            rewrite_references(&mut resource, &resolved);
            let change = match &previous {
                None => Change::Created,
                Some(before) => {
                    let mut old = (**before).clone();
                    if let Some(m) = old.as_object_mut() {
                        m.remove("meta");
                    }
                    if old == resource {
                        report_state.insert(full_url, Change::Unchanged);
                        stored.unchanged.push(Arc::clone(before));
                        continue;
                    }
                    Change::Updated
                }
            };
            let (written, _) = self.registry.put(resource).await?;
            match change {
                Change::Created => stored.created.push(written),
                _ => stored.updated.push(written),
            }
            report_state.insert(full_url, change);
        }
        for report in &conversion.reports {
            let reference = resolved.get(&report.full_url).cloned().unwrap_or_default();
            // The report's results, as the converted Bundle refers to them (`urn:uuid:`).
            let results: Vec<&str> = stored.bundle["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["fullUrl"].as_str() == Some(report.full_url.as_str()))
                .flat_map(|e| e["resource"]["result"].as_array().into_iter().flatten())
                .filter_map(|r| r["reference"].as_str())
                .collect();
            let a_result_changed = results.iter().any(|r| {
                matches!(
                    report_state.get(*r),
                    Some(Change::Updated | Change::Created)
                )
            });
            match report_state.get(&report.full_url) {
                Some(Change::Created) => {}
                Some(Change::Updated) => stored.revised += 1,
                _ if a_result_changed => stored.revised += 1,
                _ => stored.already += 1,
            }
            stored.reports.push(reference);
        }
        // A final report completes its order.
        for (report, order) in conversion.reports.iter().zip(&orders) {
            let Some(id) = order
                .as_deref()
                .and_then(|o| o.strip_prefix("ServiceRequest/"))
            else {
                continue;
            };
            if report.status != "final" {
                continue;
            }
            if let Some(sr) = self.registry.get("ServiceRequest", id).await?
                && sr["status"].as_str() != Some("completed")
            {
                let mut sr = (*sr).clone();
                sr["status"] = Value::String("completed".into());
                self.registry.put(sr).await?;
                stored.completed.push(format!("ServiceRequest/{id}"));
            }
        }
        Ok(stored)
    }
}

/// Replaces every `reference` that is a key of `resolved` (an entry's `urn:uuid:`) with its
/// `Type/id`.
fn rewrite_references(v: &mut Value, resolved: &HashMap<String, String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("reference")
                && let Some(to) = resolved.get(r.as_str())
            {
                *r = to.clone();
            }
            for child in m.values_mut() {
                rewrite_references(child, resolved);
            }
        }
        Value::Array(a) => {
            for child in a {
                rewrite_references(child, resolved);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ORU: &str = "MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240301101500+0100||ORU^R01|42|P|2.5.1\r\
PID|1||MRN-7^^^HOSP^MR||Doe^Jane||19800101|F\r\
ORC|RE|PL-42^EHR|F-9^LAB\r\
OBR|1|PL-42^EHR|F-9^LAB|2345-7^Glucose^LN|||20240301093000+0100|||||||||||||||20240301101500+0100|||F\r\
OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|3.9-6.1|N|||F\r";

    #[test]
    fn processor_extension() {
        let ch = |code: Value| json!({"name": "lab", "extension": [{"url": INBOUND_PROCESSOR_EXTENSION, "valueCode": code}]});
        assert_eq!(
            processor(&ch(json!("lab-results"))),
            Ok(Some(Processor::LabResults))
        );
        assert!(
            processor(&ch(json!("bot")))
                .unwrap_err()
                .contains("\"bot\"")
        );
        assert_eq!(processor(&json!({"name": "x"})), Ok(None));
    }

    #[tokio::test]
    async fn stores_links_completes_and_ignores_a_resend() {
        let registry = Registry::open_sqlite(None).await.unwrap();
        registry
            .put(
                json!({"resourceType": "ServiceRequest", "id": "sr-1", "status": "active",
                "intent": "order", "identifier": [{"system": "urn:placer", "value": "PL-42"}],
                "subject": {"reference": "Patient/p"}}),
            )
            .await
            .unwrap();
        let lr = LabResults::new(registry.clone());
        let first = lr.process(ORU, "x-application/hl7-v2+er7").await.unwrap();
        assert_eq!(first.created.len(), 3, "{:?}", first.created);
        assert_eq!(first.completed, ["ServiceRequest/sr-1"]);
        assert_eq!(first.already, 0);
        let report = registry
            .search(
                "DiagnosticReport",
                &[("based-on".into(), "ServiceRequest/sr-1".into())],
                10,
            )
            .await
            .unwrap();
        assert_eq!(report.len(), 1);
        let patient = report[0]["subject"]["reference"].as_str().unwrap();
        assert!(patient.starts_with("Patient/"), "{patient}");
        let obs = registry
            .search(
                "Observation",
                &[
                    ("code".into(), "http://loinc.org|2345-7".into()),
                    ("date".into(), "2024-03-01".into()),
                    ("patient".into(), patient.into()),
                ],
                10,
            )
            .await
            .unwrap();
        assert_eq!(obs.len(), 1);
        assert_eq!(obs[0]["basedOn"][0]["reference"], "ServiceRequest/sr-1");
        assert_eq!(
            registry
                .get("ServiceRequest", "sr-1")
                .await
                .unwrap()
                .unwrap()["status"],
            "completed"
        );
        let again = lr.process(ORU, "x-application/hl7-v2+er7").await.unwrap();
        assert!(again.created.is_empty());
        assert_eq!(again.already, 1);
        assert_eq!(again.reports, first.reports);
        assert!(again.summary().contains("1 report(s) already stored"));
    }

    #[tokio::test]
    async fn a_final_report_sent_under_the_same_key_updates_the_preliminary_one() {
        let registry = Registry::open_sqlite(None).await.unwrap();
        registry
            .put(
                json!({"resourceType": "ServiceRequest", "id": "sr-1", "status": "active",
                "intent": "order", "identifier": [{"value": "PL-42"}]}),
            )
            .await
            .unwrap();
        let lr = LabResults::new(registry.clone());
        let preliminary = ORU.replace("|||F\r", "|||P\r");
        let first = lr
            .process(&preliminary, "x-application/hl7-v2+er7")
            .await
            .unwrap();
        assert!(first.completed.is_empty());
        let report = registry.search("DiagnosticReport", &[], 10).await.unwrap();
        assert_eq!(report[0]["status"], "preliminary");
        let last = lr.process(ORU, "x-application/hl7-v2+er7").await.unwrap();
        assert_eq!(last.revised, 1, "{}", last.summary());
        assert_eq!(last.updated.len(), 2, "the report and its result");
        assert!(last.created.is_empty());
        assert_eq!(last.completed, ["ServiceRequest/sr-1"]);
        assert!(
            last.summary().starts_with("updated 1 report(s)"),
            "{}",
            last.summary()
        );
        let report = registry.search("DiagnosticReport", &[], 10).await.unwrap();
        assert_eq!(report.len(), 1);
        assert_eq!(report[0]["status"], "final");
        assert_eq!(report[0]["meta"]["versionId"], "2");
    }

    #[tokio::test]
    async fn unknown_order_is_a_logical_reference_and_bad_input_an_error() {
        let registry = Registry::open_sqlite(None).await.unwrap();
        let lr = LabResults::new(registry.clone());
        let stored = lr.process(ORU, "x-application/hl7-v2+er7").await.unwrap();
        assert_eq!(stored.unmatched, ["PL-42"]);
        assert!(
            stored
                .created
                .iter()
                .all(|r| r.get("basedOn") != Some(&Value::Null)),
            "{:?}",
            stored.created
        );
        let report = registry.search("DiagnosticReport", &[], 10).await.unwrap();
        assert_eq!(report[0]["basedOn"][0]["type"], "ServiceRequest");
        assert!(report[0]["basedOn"][0].get("reference").is_none());
        let e = lr
            .process(
                "MSH|^~\\&|A|B|C|D|2024||ADT^A01|1|P|2.5\r",
                "x-application/hl7-v2+er7",
            )
            .await
            .unwrap_err();
        assert!(matches!(e, ResultsError::Convert(_)), "{e}");
        assert!(matches!(
            lr.process("hello", "text/plain").await.unwrap_err(),
            ResultsError::Format(_)
        ));
    }
}
