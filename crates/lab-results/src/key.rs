//! The keys that make a resent result recognisable, and FHIR token searches.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use crate::options::{OBSERVATION_KEY_SYSTEM, REPORT_KEY_SYSTEM};

/// Everything but RFC 3986's unreserved characters is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// FHIR search escaping (search.html §"Escaping Search Parameters"): `\`, `|`, `,`, `$`.
fn fhir_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | '|' | ',' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `param=[system|]value` (or a plain value for a string or date parameter), escaped for FHIR
/// and percent-encoded for a URL query.
pub(crate) fn search_param(param: &str, system: Option<&str>, value: &str) -> String {
    let token = match system {
        Some(s) => format!("{}|{}", fhir_escape(s), fhir_escape(value)),
        None => fhir_escape(value),
    };
    format!("{param}={}", utf8_percent_encode(&token, QUERY_VALUE))
}

/// What a report's key is made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// The filler order number (OBR-3, else ORC-3): the lab's own number for the work.
    FillerOrder,
    /// The placer order number (OBR-2, else ORC-2), when the message has no filler number.
    PlacerOrder,
    /// ASTM: the specimen ID (O.3, else the instrument's O.4).
    Specimen,
    /// Neither: the sending application and control ID (MSH-3, MSH-10; ASTM H.5, H.3) and the
    /// report's position. An instrument that resends the same message keeps it; one that
    /// rebuilds the message with a new control ID is not recognised.
    Message,
}

/// The key of one report: the same result sent twice has the same key, so a receiver can tell
/// a resend from a new result. Written as an identifier of the `DiagnosticReport`
/// (`system` [`REPORT_KEY_SYSTEM`]) and used in its conditional create (`ifNoneExist`).
///
/// The value is `number^namespace^code^time`: the order number ([`KeySource`]), its namespace
/// (EI-2, empty for ASTM), the report's code (OBR-4-1, ASTM O.5's test code) — some senders
/// repeat one accession number on every OBR — and the result time as sent (OBR-22, else
/// OBR-7, else the first OBX-14; ASTM O.23, else the first R.13, else O.8, else O.7), so a
/// corrected report sent later is a new report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportKey {
    /// `number^namespace^code^time`.
    pub value: String,
    /// What `number` is.
    pub source: KeySource,
}

impl ReportKey {
    pub(crate) fn new(
        number: &str,
        namespace: &str,
        code: &str,
        time: &str,
        source: KeySource,
    ) -> ReportKey {
        ReportKey {
            value: format!("{number}^{namespace}^{code}^{time}"),
            source,
        }
    }

    /// The search that finds the report: `identifier=<REPORT_KEY_SYSTEM>|<value>`, encoded for
    /// a URL query (the `ifNoneExist` of the report's entry).
    pub fn search(&self) -> String {
        search_param("identifier", Some(REPORT_KEY_SYSTEM), &self.value)
    }

    /// The key of result `n` (1-based, in message order) of this report
    /// (`system` [`OBSERVATION_KEY_SYSTEM`]).
    pub fn observation(&self, n: usize) -> String {
        format!("{}/{n}", self.value)
    }

    /// The search that finds result `n` of this report.
    pub fn observation_search(&self, n: usize) -> String {
        search_param(
            "identifier",
            Some(OBSERVATION_KEY_SYSTEM),
            &self.observation(n),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_are_escaped_and_encoded() {
        assert_eq!(
            search_param("identifier", None, "MRN 1"),
            "identifier=MRN%201"
        );
        assert_eq!(
            search_param("identifier", Some("urn:oid:1.2"), "a|b,c$d\\e"),
            "identifier=urn%3Aoid%3A1.2%7Ca%5C%7Cb%5C%2Cc%5C%24d%5C%5Ce"
        );
        let k = ReportKey::new(
            "F-1",
            "LAB",
            "2345-7",
            "20240301+0100",
            KeySource::FillerOrder,
        );
        assert_eq!(k.value, "F-1^LAB^2345-7^20240301+0100");
        assert_eq!(
            k.search(),
            "identifier=https%3A%2F%2Foutpost.health%2Ffhir%2Fsid%2Flab-report%7CF-1%5ELAB%5E2345-7%5E20240301%2B0100"
        );
        assert_eq!(k.observation(3), "F-1^LAB^2345-7^20240301+0100/3");
    }
}
