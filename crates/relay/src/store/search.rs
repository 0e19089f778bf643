//! FHIR search parameters, evaluated on a resource's JSON (the same for every backend: the
//! database holds resources as documents, and searches read them in id order).

use serde_json::Value;

use crate::fhir::id_of;

/// Whether a resource matches one search parameter. Supported: `_id` (comma-separated list),
/// `identifier` (`system|value`, `|value` or `value`), `name` (case-insensitive prefix of
/// `name`, a HumanName's family/given/text, or `Device.deviceName.name`), `url`, `address`,
/// `status`, `subject` / `patient` (reference), `entity` (AuditEvent: a reference, any version),
/// `birthdate` (Patient, the date as written), `family` (case-insensitive prefix of a family
/// name), and `_count`/`_sort`/`_total`/`_format`, which are not filters. Unknown parameters
/// match nothing, so a typo never widens a search. Record types are searched through the
/// index first ([`index`](super::index)); what it does not answer comes here.
pub(crate) fn matches(r: &Value, key: &str, value: &str) -> bool {
    match key {
        "_count" | "_sort" | "_total" | "_format" | "_summary" | "_elements" => true,
        "_id" => value.split(',').any(|id| id == id_of(r)),
        "identifier" => {
            let (system, val) = match value.split_once('|') {
                Some((s, v)) => (Some(s), v),
                None => (None, value),
            };
            r["identifier"].as_array().into_iter().flatten().any(|i| {
                i["value"].as_str() == Some(val)
                    && system.is_none_or(|s| s.is_empty() || i["system"].as_str() == Some(s))
            })
        }
        "name" => {
            let needle = value.to_lowercase();
            let hit = |s: Option<&str>| s.is_some_and(|s| s.to_lowercase().starts_with(&needle));
            hit(r["name"].as_str())
                || r["name"].as_array().into_iter().flatten().any(|n| {
                    hit(n["family"].as_str())
                        || hit(n["text"].as_str())
                        || n["given"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|g| hit(g.as_str()))
                })
                || r["deviceName"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| hit(n["name"].as_str()))
        }
        "url" | "address" | "status" => r[key].as_str() == Some(value),
        "birthdate" => r["birthDate"].as_str() == Some(value),
        "family" => {
            let needle = value.to_lowercase();
            r["name"].as_array().into_iter().flatten().any(|n| {
                n["family"]
                    .as_str()
                    .is_some_and(|f| f.to_lowercase().starts_with(&needle))
            })
        }
        "entity" => r["entity"].as_array().into_iter().flatten().any(|e| {
            e["what"]["reference"].as_str().is_some_and(|w| {
                w == value
                    || w.strip_prefix(value)
                        .is_some_and(|rest| rest.starts_with("/_history/"))
            })
        }),
        "subject" | "patient" => {
            r["subject"]["reference"].as_str() == Some(value)
                || r["subject"]["reference"]
                    .as_str()
                    .map(|s| s.rsplit('/').next())
                    == Some(Some(value))
        }
        _ => false,
    }
}
