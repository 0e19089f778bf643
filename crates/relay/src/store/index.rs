//! The search index: the values of the search parameters of stored record resources (orders,
//! patients, lab results), one row per value, kept in a table of their own beside the resource
//! table and written in the same transaction. A search on an indexed parameter reads the
//! matching ids from the index (`(resource_type, param, value)` is a B-tree index in both
//! backends) instead of reading every resource of the type.
//!
//! Indexed, for every record type: `identifier` (token); `_id` reads the resource table's
//! primary key. For `DiagnosticReport` and
//! `Observation` also `based-on`, `subject` (`patient` is `subject` with type `Patient`),
//! `code`, `date` (`effective[x]`) and `status`; for `ServiceRequest` `subject`, `code` and
//! `status`; for `Specimen` `accession` and `subject`; for `AuditEvent` `entity`.
//!
//! Values: a token is its system (empty when there is none) and its code or value; a
//! reference is `Type/id` as written (without `/_history/n`); a date is the UTC instant its
//! period starts, `YYYY-MM-DDTHH:MM:SS.mmmZ` so that text order is time order.

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use serde_json::Value;

/// Resource types whose searches go through the index.
pub(crate) const INDEXED_TYPES: &[&str] = &[
    "Patient",
    "Practitioner",
    "ServiceRequest",
    "AuditEvent",
    "DiagnosticReport",
    "Observation",
    "Specimen",
];

/// The version of what [`rows`] writes; a store whose index is older is re-indexed when it
/// opens.
pub(crate) const INDEX_VERSION: i64 = 1;

/// One value of one search parameter of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IndexRow {
    /// The search parameter (`identifier`, `based-on`, ...).
    pub(crate) param: &'static str,
    /// A token's system; empty for other kinds.
    pub(crate) system: String,
    /// The value.
    pub(crate) value: String,
}

/// The search parameter that `param` of `ty` reads in the index, and how its value is
/// written; `None` when it is not indexed for that type.
fn indexed(ty: &str, param: &str) -> Option<(&'static str, Kind)> {
    let results = matches!(ty, "DiagnosticReport" | "Observation");
    Some(match param {
        // Not in the index table: the resource table's primary key.
        "_id" => ("_id", Kind::Id),
        "identifier" => ("identifier", Kind::Token),
        "based-on" if results => ("based-on", Kind::Reference("ServiceRequest")),
        "patient" if results || matches!(ty, "ServiceRequest" | "Specimen") => {
            ("subject", Kind::Reference("Patient"))
        }
        "subject" if results || matches!(ty, "ServiceRequest" | "Specimen") => {
            ("subject", Kind::Reference("Patient"))
        }
        "code" if results || ty == "ServiceRequest" => ("code", Kind::Token),
        "status" if results || ty == "ServiceRequest" => ("status", Kind::Token),
        "date" if results => ("date", Kind::Date),
        "accession" if ty == "Specimen" => ("accession", Kind::Token),
        "entity" if ty == "AuditEvent" => ("entity", Kind::Reference("")),
        _ => return None,
    })
}

/// How a parameter's values are written and searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The resource's id.
    Id,
    Token,
    /// A reference; a bare id in a search means this type.
    Reference(&'static str),
    Date,
}

/// The index rows of a resource (none for types that are not indexed).
pub(crate) fn rows(r: &Value) -> Vec<IndexRow> {
    let ty = r["resourceType"].as_str().unwrap_or("");
    if !INDEXED_TYPES.contains(&ty) {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut token = |param: &'static str, system: Option<&str>, value: Option<&str>| {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            out.push(IndexRow {
                param,
                system: system.unwrap_or("").to_owned(),
                value: v.to_owned(),
            });
        }
    };
    for i in r["identifier"].as_array().into_iter().flatten() {
        token("identifier", i["system"].as_str(), i["value"].as_str());
    }
    let results = matches!(ty, "DiagnosticReport" | "Observation");
    if results {
        for b in r["basedOn"].as_array().into_iter().flatten() {
            token(
                "based-on",
                None,
                b["reference"].as_str().map(without_history),
            );
        }
    }
    if results || matches!(ty, "ServiceRequest" | "Specimen") {
        token(
            "subject",
            None,
            r["subject"]["reference"].as_str().map(without_history),
        );
    }
    if results || ty == "ServiceRequest" {
        for c in r["code"]["coding"].as_array().into_iter().flatten() {
            token("code", c["system"].as_str(), c["code"].as_str());
        }
        token("status", None, r["status"].as_str());
    }
    if results {
        let effective = r["effectiveDateTime"]
            .as_str()
            .or(r["effectivePeriod"]["start"].as_str())
            .or(r["effectiveInstant"].as_str());
        token(
            "date",
            None,
            effective.and_then(bounds).map(|(lo, _)| lo).as_deref(),
        );
    }
    if ty == "Specimen" {
        let a = &r["accessionIdentifier"];
        token("accession", a["system"].as_str(), a["value"].as_str());
    }
    if ty == "AuditEvent" {
        for e in r["entity"].as_array().into_iter().flatten() {
            token(
                "entity",
                None,
                e["what"]["reference"].as_str().map(without_history),
            );
        }
    }
    out.sort_by(|a, b| (a.param, &a.system, &a.value).cmp(&(b.param, &b.system, &b.value)));
    out.dedup();
    out
}

fn without_history(reference: &str) -> &str {
    reference
        .find("/_history/")
        .map_or(reference, |at| &reference[..at])
}

/// One way a condition may be met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Match {
    /// This value, in this system when one is given (`Some("")`: in no system).
    Token {
        /// The system, when the search names one.
        system: Option<String>,
        /// The code or value.
        value: String,
    },
    /// A value in `[lo, hi)` (text order: the instants of [`rows`]).
    Range {
        /// Inclusive lower bound.
        lo: Option<String>,
        /// Exclusive upper bound.
        hi: Option<String>,
    },
}

/// One indexed search parameter: a resource matches when one of its rows meets one of `any`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cond {
    /// The indexed parameter.
    pub(crate) param: &'static str,
    /// Alternatives (a comma-separated search value); empty matches nothing.
    pub(crate) any: Vec<Match>,
}

/// The conditions of a search on `ty` that the index answers, and the parameters it does not
/// (left to [`matches`](super::matches)).
pub(crate) fn plan(ty: &str, params: &[(String, String)]) -> (Vec<Cond>, Vec<(String, String)>) {
    let mut conds = Vec::new();
    let mut rest = Vec::new();
    if !INDEXED_TYPES.contains(&ty) {
        return (conds, params.to_vec());
    }
    for (key, value) in params {
        let Some((param, kind)) = indexed(ty, key) else {
            rest.push((key.clone(), value.clone()));
            continue;
        };
        let any = split_unescaped(value, ',')
            .into_iter()
            .filter_map(|v| parse(kind, &v))
            .collect();
        conds.push(Cond { param, any });
    }
    (conds, rest)
}

/// A search value (already split at commas) as a [`Match`]; `None` when it cannot match
/// (a date that is not one, a prefix that is not supported).
fn parse(kind: Kind, v: &str) -> Option<Match> {
    match kind {
        Kind::Id => Some(Match::Token {
            system: None,
            value: v.to_owned(),
        }),
        Kind::Token => {
            let parts = split_unescaped(v, '|');
            let (system, value) = match parts.as_slice() {
                [value] => (None, value.clone()),
                [system, value] => (Some(system.clone()), value.clone()),
                _ => return None,
            };
            // `|value` searches every system, as the registry's own searches do.
            Some(Match::Token {
                system: system.map(|s| unescape(&s)).filter(|s| !s.is_empty()),
                value: unescape(&value),
            })
        }
        Kind::Reference(default_type) => {
            let v = unescape(v);
            let value = if v.contains('/') || default_type.is_empty() {
                without_history(&v).to_owned()
            } else {
                format!("{default_type}/{v}")
            };
            Some(Match::Token {
                system: None,
                value,
            })
        }
        Kind::Date => {
            let (prefix, date) = match v.get(..2) {
                Some(p @ ("eq" | "ge" | "gt" | "le" | "lt" | "sa" | "eb")) => (p, &v[2..]),
                _ => ("eq", v),
            };
            let (lo, hi) = bounds(date)?;
            let (lo, hi) = match prefix {
                "eq" => (Some(lo), Some(hi)),
                "ge" => (Some(lo), None),
                "gt" | "sa" => (Some(hi), None),
                "lt" | "eb" => (None, Some(lo)),
                "le" => (None, Some(hi)),
                _ => return None,
            };
            Some(Match::Range { lo, hi })
        }
    }
}

/// `s` split at each `sep` not escaped by `\` (FHIR search escaping); escapes are kept.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut escaped = false;
    for c in s.chars() {
        let Some(last) = parts.last_mut() else {
            break;
        };
        if escaped {
            last.push('\\');
            last.push(c);
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(String::new());
        } else {
            last.push(c);
        }
    }
    if escaped && let Some(last) = parts.last_mut() {
        last.push('\\');
    }
    parts
}

/// FHIR search escapes (`\|`, `\,`, `\$`, `\\`) removed.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

const INSTANT: &str = "%Y-%m-%dT%H:%M:%S%.3fZ";

/// The period a FHIR date or dateTime stands for, as UTC instants `[start, end)`: `2024` is
/// the year, `2024-03-01` the day, a dateTime with seconds its second. Dates without a time
/// are taken in UTC. `None` when it is not a date.
pub(crate) fn bounds(s: &str) -> Option<(String, String)> {
    let s = s.trim();
    let fmt = |d: NaiveDateTime| d.and_utc().format(INSTANT).to_string();
    let day = |y: i32, m: u32, d: u32| NaiveDate::from_ymd_opt(y, m, d);
    match s.len() {
        4 => {
            let y: i32 = s.parse().ok()?;
            Some((
                fmt(day(y, 1, 1)?.and_hms_opt(0, 0, 0)?),
                fmt(day(y + 1, 1, 1)?.and_hms_opt(0, 0, 0)?),
            ))
        }
        7 => {
            let start = NaiveDate::parse_from_str(&format!("{s}-01"), "%Y-%m-%d").ok()?;
            let next = if start.month() == 12 {
                day(start.year() + 1, 1, 1)?
            } else {
                day(start.year(), start.month() + 1, 1)?
            };
            Some((
                fmt(start.and_hms_opt(0, 0, 0)?),
                fmt(next.and_hms_opt(0, 0, 0)?),
            ))
        }
        10 => {
            let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
            Some((
                fmt(d.and_hms_opt(0, 0, 0)?),
                fmt(d.succ_opt()?.and_hms_opt(0, 0, 0)?),
            ))
        }
        _ => {
            let t: DateTime<Utc> = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
            let whole = s.split(['+', 'Z', 'z']).next().unwrap_or(s);
            // To the precision given: a time with seconds is that second, with fractions
            // that millisecond.
            let step = if whole.contains('.') {
                chrono::Duration::milliseconds(1)
            } else {
                chrono::Duration::seconds(1)
            };
            Some((
                t.format(INSTANT).to_string(),
                (t + step).format(INSTANT).to_string(),
            ))
        }
    }
}

/// The SQL that finds the resources of `ty` meeting every condition, in id order, and its
/// parameters (all text). `ph(n)` writes placeholder `n` (1-based) for the backend.
pub(crate) fn select(
    ty: &str,
    conds: &[Cond],
    ph: impl Fn(usize) -> String,
) -> (String, Vec<String>) {
    let mut args = vec![ty.to_owned()];
    let arg = |v: String, args: &mut Vec<String>| {
        args.push(v);
        ph(args.len())
    };
    let mut sql = format!(
        "SELECT content FROM resource WHERE resource_type = {}",
        ph(1)
    );
    for c in conds {
        if c.param == "_id" {
            let ids: Vec<String> = c
                .any
                .iter()
                .filter_map(|m| match m {
                    Match::Token { value, .. } => Some(arg(value.clone(), &mut args)),
                    Match::Range { .. } => None,
                })
                .collect();
            if ids.is_empty() {
                sql.push_str(" AND FALSE");
            } else {
                sql.push_str(&format!(" AND id IN ({})", ids.join(", ")));
            }
            continue;
        }
        let param = arg(c.param.to_owned(), &mut args);
        let mut alternatives = Vec::new();
        for m in &c.any {
            match m {
                Match::Token { system, value } => {
                    let v = arg(value.clone(), &mut args);
                    match system {
                        Some(s) => {
                            let s = arg(s.clone(), &mut args);
                            alternatives.push(format!("(value = {v} AND system = {s})"));
                        }
                        None => alternatives.push(format!("value = {v}")),
                    }
                }
                Match::Range { lo, hi } => {
                    let mut parts = Vec::new();
                    if let Some(lo) = lo {
                        parts.push(format!("value >= {}", arg(lo.clone(), &mut args)));
                    }
                    if let Some(hi) = hi {
                        parts.push(format!("value < {}", arg(hi.clone(), &mut args)));
                    }
                    if parts.is_empty() {
                        parts.push("TRUE".into());
                    }
                    alternatives.push(format!("({})", parts.join(" AND ")));
                }
            }
        }
        if alternatives.is_empty() {
            alternatives.push("FALSE".into());
        }
        sql.push_str(&format!(
            " AND id IN (SELECT id FROM search_index WHERE resource_type = {} AND param = {param} AND ({}))",
            ph(1),
            alternatives.join(" OR ")
        ));
    }
    sql.push_str(" ORDER BY id");
    (sql, args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_of_a_report() {
        let r = json!({"resourceType": "DiagnosticReport", "id": "r",
            "identifier": [{"system": "urn:k", "value": "F-9^LAB"}],
            "basedOn": [{"reference": "ServiceRequest/sr-1"}],
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
            "status": "final", "effectiveDateTime": "2024-03-01T09:30:00+01:00"});
        let rows = rows(&r);
        let find = |p: &str| {
            rows.iter()
                .filter(|r| r.param == p)
                .map(|r| format!("{}|{}", r.system, r.value))
                .collect::<Vec<_>>()
        };
        assert_eq!(find("identifier"), ["urn:k|F-9^LAB"]);
        assert_eq!(find("based-on"), ["|ServiceRequest/sr-1"]);
        assert_eq!(find("subject"), ["|Patient/p1"]);
        assert_eq!(find("code"), ["http://loinc.org|2345-7"]);
        assert_eq!(find("date"), ["|2024-03-01T08:30:00.000Z"]);
        assert!(
            super::rows(&json!({"resourceType": "Agent", "identifier": [{"value": "x"}]}))
                .is_empty()
        );
    }

    #[test]
    fn ids_use_the_primary_key() {
        let (conds, rest) = plan("ServiceRequest", &[("_id".into(), "a,b".into())]);
        assert!(rest.is_empty());
        let (sql, args) = select("ServiceRequest", &conds, |n| format!("?{n}"));
        assert!(sql.ends_with("AND id IN (?2, ?3) ORDER BY id"), "{sql}");
        assert_eq!(args, ["ServiceRequest", "a", "b"]);
    }

    #[test]
    fn dates_and_prefixes() {
        assert_eq!(
            bounds("2024-02").unwrap(),
            (
                "2024-02-01T00:00:00.000Z".into(),
                "2024-03-01T00:00:00.000Z".into()
            )
        );
        assert_eq!(bounds("2024-12-31").unwrap().1, "2025-01-01T00:00:00.000Z");
        assert!(bounds("yesterday").is_none());
        let (conds, rest) = plan(
            "Observation",
            &[
                ("date".into(), "ge2024-03-01".into()),
                ("_count".into(), "5".into()),
            ],
        );
        assert_eq!(rest, [("_count".to_owned(), "5".to_owned())]);
        assert_eq!(
            conds[0].any,
            [Match::Range {
                lo: Some("2024-03-01T00:00:00.000Z".into()),
                hi: None
            }]
        );
    }

    #[test]
    fn tokens_are_unescaped_and_references_typed() {
        let (conds, _) = plan(
            "DiagnosticReport",
            &[
                ("identifier".into(), "urn:k|F-9\\|x,|bare".into()),
                ("patient".into(), "p1".into()),
                ("based-on".into(), "ServiceRequest/sr-1/_history/2".into()),
            ],
        );
        assert_eq!(
            conds[0].any,
            [
                Match::Token {
                    system: Some("urn:k".into()),
                    value: "F-9|x".into()
                },
                Match::Token {
                    system: None,
                    value: "bare".into()
                },
            ]
        );
        assert_eq!(conds[1].param, "subject");
        assert_eq!(
            conds[1].any,
            [Match::Token {
                system: None,
                value: "Patient/p1".into()
            }]
        );
        assert_eq!(
            conds[2].any,
            [Match::Token {
                system: None,
                value: "ServiceRequest/sr-1".into()
            }]
        );
        let (sql, args) = select("DiagnosticReport", &conds, |n| format!("${n}"));
        assert_eq!(args.len(), 9, "{sql}");
        assert!(
            sql.contains("param = $2 AND ((value = $3 AND system = $4) OR value = $5)"),
            "{sql}"
        );
    }
}
