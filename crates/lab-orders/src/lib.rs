//! Lab orders: a FHIR R4 `ServiceRequest` (with its `Patient`, and the ordering `Practitioner`,
//! `Encounter` and `Specimen` when known, contained or given alongside) as an HL7 v2.5
//! `ORM^O01` or `OML^O21`, or an ASTM E1394 order message (H, P, O, C, L). No I/O.
//!
//! The field-by-field mapping is in `docs/lab-orders.md`.
//!
//! ```
//! use lab_orders::{Format, Options, Order, convert};
//! use serde_json::json;
//!
//! let sr = json!({
//!     "resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
//!     "priority": "stat",
//!     "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7", "display": "Glucose"}]},
//!     "subject": {"reference": "#p"},
//!     "contained": [{"resourceType": "Patient", "id": "p",
//!         "identifier": [{"value": "MRN1"}], "name": [{"family": "Doe", "given": ["Jane"]}]}],
//! });
//! let order = Order::from_fhir(&sr, &|_| None)?;
//! let orm = convert(&order, Format::Orm, &Options { control_id: "1".into(), ..Options::default() })?;
//! assert!(orm.contains("\rOBR|1|sr1||2345-7^Glucose^LN|S|"));
//! let astm = convert(&order, Format::Astm, &Options::default())?;
//! assert!(astm.contains("\rO|1|sr1||^^^2345-7^Glucose|S|"));
//! # Ok::<(), lab_orders::Error>(())
//! ```

#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod dates;
mod error;
mod messages;
mod model;

pub use dates::{astm_datetime, hl7_dtm};
pub use error::Error;
pub use messages::{Event, Format, Options, convert};
pub use model::{
    Address, Coding, Encounter, Identifier, LOINC, Lookup, Order, Patient, Person, Priority,
    Specimen, lookup_in,
};
