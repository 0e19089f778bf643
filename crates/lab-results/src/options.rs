//! How a conversion reads the message and names what it creates.

use std::collections::BTreeMap;

use chrono::FixedOffset;

/// The identifier system of the key that every `DiagnosticReport` gets (see
/// [`ReportKey`](crate::ReportKey)).
pub const REPORT_KEY_SYSTEM: &str = "https://outpost.health/fhir/sid/lab-report";
/// The identifier system of the key that every `Observation` gets: the report key, `/`, the
/// position of the result in its report.
pub const OBSERVATION_KEY_SYSTEM: &str = "https://outpost.health/fhir/sid/lab-observation";

/// How `DiagnosticReport.basedOn` (and `Observation.basedOn`) points at the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderLink {
    /// A conditional reference, `ServiceRequest?identifier=[system|]value`, that the FHIR
    /// server resolves while it processes the transaction (FHIR R4 §3.1.0.13.3 / http.html
    /// "Conditional References"). A server fails the whole transaction when no order, or more
    /// than one, matches.
    #[default]
    Conditional,
    /// A logical reference, `{"type": "ServiceRequest", "identifier": {...}}`: never fails,
    /// never resolved by the server.
    Identifier,
    /// No `basedOn`.
    None,
}

/// Conversion settings. `Options::default()` suits most senders.
#[derive(Debug, Clone)]
pub struct Options {
    /// Inputs larger than this are refused before any work (default 16 MiB, as the HL7
    /// parser's default).
    pub max_size: usize,
    /// The UTC offset of the sender's clock. HL7 DTM and ASTM date-times often carry no
    /// offset, and a FHIR `dateTime` with a time must have one: with `Some`, such values get
    /// this offset; with `None` (the default) they keep only their date (the value as sent is
    /// kept in the `originalText` extension) and `issued`, an `instant`, is left out. No zone
    /// is ever guessed.
    pub local_offset: Option<FixedOffset>,
    /// How reports point at their order.
    pub order_link: OrderLink,
    /// The identifier system of placer order numbers (ORC-2 / OBR-2, ASTM O.3), when known: the
    /// order search becomes `identifier=system|value` instead of `identifier=value`.
    pub placer_system: Option<String>,
    /// The identifier system of filler order numbers (ORC-3 / OBR-3).
    pub filler_system: Option<String>,
    /// Identifier systems by HL7 assigning authority or namespace (`HD.1`, `EI.2`): patient
    /// identifiers and order numbers whose assigner is named here get that system (an assigner
    /// with a universal ID of type `ISO`, `UUID` or `URI` gets `urn:oid:`, `urn:uuid:` or the
    /// URI without being named).
    pub assigner_systems: BTreeMap<String, String>,
    /// The identifier system of ASTM patient IDs (P.3, P.4, P.5) and of HL7 patient identifiers
    /// that have no other.
    pub patient_system: Option<String>,
    /// The code system of the instrument's test codes (ASTM O.5 and R.3; lab-orders' option of
    /// the same name), and of HL7 codes whose coding system is `L` or `99zzz`.
    pub local_code_system: Option<String>,
    /// Lenient values: an NM or SN result that is not a number (`"see note"`) becomes a
    /// `valueString` instead of an error. Off by default: a result that is not what its type
    /// says is refused with the segment and field named.
    pub lenient_values: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_size: hl7v2::DEFAULT_MAX_SIZE,
            local_offset: None,
            order_link: OrderLink::Conditional,
            placer_system: None,
            filler_system: None,
            assigner_systems: BTreeMap::new(),
            patient_system: None,
            local_code_system: None,
            lenient_values: false,
        }
    }
}
