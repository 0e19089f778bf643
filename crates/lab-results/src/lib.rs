//! Lab results: an HL7 v2 `ORU^R01` or `OUL^R22` (and `OUL^R21`, `R23`, `R24`), v2.3 to
//! v2.5.1 and later, or an ASTM E1394 result message (H, P, O, R, C, L) as one FHIR R4
//! transaction `Bundle`. No I/O.
//!
//! ```text
//!  ORU^R01 / OUL^R22 bytes ─┐                         ┌─ Patient            (PID / P)
//!                           ├─ convert(bytes, format) ┼─ Specimen           (SPM, OBR-15 / O)
//!  ASTM H-P-O-R-C-L bytes ──┘                         ├─ Observation × n    (OBX / R, NTE / C)
//!                                                     └─ DiagnosticReport   (OBR / O)
//! ```
//!
//! Every entry is a conditional create: the Patient by its identifier (PID-3, ASTM P.3), the
//! Specimen by its identifier or accession number, the report and each result by a key made
//! from the filler order number and the result time ([`ReportKey`]), so a result sent twice
//! creates nothing the second time. `basedOn` finds the `ServiceRequest` by the placer (else
//! filler) order number — the number `lab-orders` wrote in ORC-2 / OBR-2 / ASTM O.3 — as a
//! conditional reference ([`OrderLink`]). The field-by-field mapping, which follows the HL7
//! V2-to-FHIR implementation guide, and each place it departs from it, are in
//! `docs/lab-results.md`.
//!
//! ```
//! use lab_results::{Format, Options, convert};
//!
//! let oru = b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240301101500+0100||ORU^R01|42|P|2.5.1\r\
//! PID|1||MRN-7^^^HOSP^MR||Doe^Jane||19800101|F\r\
//! ORC|RE|PL-42^EHR|F-9^LAB\r\
//! OBR|1|PL-42^EHR|F-9^LAB|2345-7^Glucose^LN|||20240301093000+0100|||||||||||||||20240301101500+0100|||F\r\
//! OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|3.9-6.1|N|||F\r";
//! let out = convert(oru, Format::Hl7, &Options::default())?;
//! let report = &out.reports[0];
//! assert_eq!(report.status, "final");
//! assert_eq!(report.key.value, "F-9^LAB^2345-7^20240301101500+0100");
//! assert_eq!(report.order_search.as_deref(), Some("identifier=PL-42"));
//! let glucose = out.resources().find(|r| r["resourceType"] == "Observation").unwrap();
//! assert_eq!(glucose["valueQuantity"]["value"], 5.4);
//! assert_eq!(glucose["valueQuantity"]["code"], "mmol/L");
//! # Ok::<(), lab_results::Error>(())
//! ```
//!
//! What it does not do: I/O, storing resources or resolving references (the FHIR server does,
//! while it processes the transaction), creating `ServiceRequest`s, or reading result messages
//! of other kinds (MDM documents, ORU^R30..R32).
//!
//! ## Features
//!
//! None: the crate has no optional parts.

#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod astm_reader;
mod codes;
mod dates;
mod error;
mod fhir;
mod hl7;
mod hl7_types;
mod key;
mod model;
mod options;
mod ucum;
mod values;

pub use error::{Error, Location};
pub use fhir::{Conversion, OBSERVATION_VALUE_R5, REPORT_NOTE_R5, Report};
pub use key::{KeySource, ReportKey};
pub use model::{OrderNumber, OrderRole};
pub use options::{OBSERVATION_KEY_SYSTEM, Options, OrderLink, REPORT_KEY_SYSTEM};

use uuid::Uuid;

/// The format of a result message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// HL7 v2 ER7 (`x-application/hl7-v2+er7`).
    Hl7,
    /// ASTM E1394 records (`x-application/astm`).
    Astm,
}

impl Format {
    /// The format of a `$push` / agent content type: `x-application/hl7-v2+er7` or
    /// `x-application/astm`.
    pub fn from_content_type(content_type: &str) -> Option<Format> {
        let base = content_type.split(';').next().unwrap_or("").trim();
        match base.to_ascii_lowercase().as_str() {
            "x-application/hl7-v2+er7" | "application/hl7-v2" => Some(Format::Hl7),
            "x-application/astm" => Some(Format::Astm),
            _ => None,
        }
    }

    /// Guesses the format from the first bytes: `MSH` (after a byte-order mark or blank
    /// lines) is HL7, `H` followed by a delimiter is ASTM.
    pub fn detect(input: &[u8]) -> Option<Format> {
        let start = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
        let start = start.trim_ascii_start();
        if start.starts_with(b"MSH") {
            Some(Format::Hl7)
        } else if start.first() == Some(&b'H')
            && start.get(1).is_some_and(|b| b.is_ascii_punctuation())
        {
            Some(Format::Astm)
        } else {
            None
        }
    }
}

/// Converts one result message to a FHIR R4 transaction Bundle.
///
/// The Bundle is the same for the same input and options (its `urn:uuid:` full URLs are
/// name-based UUIDs of the message).
///
/// # Errors
/// - [`Error::TooLarge`] over [`Options::max_size`];
/// - [`Error::Hl7`] / [`Error::Astm`] when the bytes are not a message of that format;
/// - [`Error::NotResults`] for another kind of message (an ADT, an order);
/// - [`Error::Missing`] / [`Error::Invalid`] naming the segment (or record) and field of a
///   value that is required and empty (OBR-4, OBX-3) or cannot be read as its type or table
///   says (a DTM that is not a date, an NM that is not a number, a status outside table
///   0085/0123, Base64 that does not decode).
pub fn convert(input: &[u8], format: Format, opts: &Options) -> Result<Conversion, Error> {
    if input.len() > opts.max_size {
        return Err(Error::TooLarge {
            size: input.len(),
            max: opts.max_size,
        });
    }
    let results = match format {
        Format::Hl7 => hl7::read(input, opts)?,
        Format::Astm => astm_reader::read(input, opts)?,
    };
    let seed = Uuid::new_v5(&Uuid::NAMESPACE_OID, input);
    Ok(fhir::write(&results, opts, seed))
}
