//! Why a message cannot be converted, and where in it.

use std::fmt;

/// Where a problem is: a segment (HL7) or record (ASTM), which occurrence of it in the message,
/// and the field (and component) number as the standard numbers them.
///
/// Shown in the HL7 path syntax of the `hl7v2` crate for both formats: `OBX(3)-5`,
/// `OBR(1)-25`, `SPM(1)-17-1`; for ASTM the record type stands for the segment: `R(2)-4` is
/// field 4 (the value) of the second R record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Segment ID (`OBX`) or ASTM record type (`R`).
    pub segment: String,
    /// 1-based occurrence of that segment or record type in the message.
    pub occurrence: usize,
    /// Field number (1-based; for HL7 `MSH`, field 1 is the field separator).
    pub field: usize,
    /// Component number, when the problem is in one component.
    pub component: Option<usize>,
}

impl Location {
    pub(crate) fn new(segment: &str, occurrence: usize, field: usize) -> Location {
        Location {
            segment: segment.to_owned(),
            occurrence,
            field,
            component: None,
        }
    }

    pub(crate) fn component(mut self, c: usize) -> Location {
        self.component = Some(c);
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})-{}", self.segment, self.occurrence, self.field)?;
        if let Some(c) = self.component {
            write!(f, "-{c}")?;
        }
        Ok(())
    }
}

/// A message that cannot be converted. Every variant but the parse errors of the crates below
/// names the segment (or record) and field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is larger than [`Options::max_size`](crate::Options::max_size).
    #[error("message too large: {size} > {max} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The input is not an HL7 v2 message.
    #[error("cannot read the HL7 v2 message: {0}")]
    Hl7(#[from] hl7v2::Error),
    /// The input is not an ASTM E1394 message.
    #[error("cannot read the ASTM message: {0}")]
    Astm(#[from] astm::Error),
    /// A well-formed message that carries no results (an ADT, an order, an ASTM message without
    /// R records).
    #[error("{location}: {found} is not a result message ({expected})")]
    NotResults {
        /// `MSH-9`, or for ASTM the first R record that is missing.
        location: Location,
        /// What the message is.
        found: String,
        /// What would have been converted.
        expected: &'static str,
    },
    /// A value the conversion needs is empty.
    #[error("{location} is empty: {what}")]
    Missing {
        /// Where.
        location: Location,
        /// What the value is for.
        what: &'static str,
    },
    /// A value that cannot be read as its data type or table says.
    #[error("{location}: {value:?} {reason}")]
    Invalid {
        /// Where.
        location: Location,
        /// The value as received (escapes decoded, at most 64 characters).
        value: String,
        /// Why it cannot be used.
        reason: String,
    },
}

impl Error {
    /// Where the problem is, for every error but the parse errors of the `hl7v2` and `astm`
    /// crates and [`Error::TooLarge`] (those concern the message as a whole).
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::NotResults { location, .. }
            | Error::Missing { location, .. }
            | Error::Invalid { location, .. } => Some(location),
            Error::TooLarge { .. } | Error::Hl7(_) | Error::Astm(_) => None,
        }
    }

    pub(crate) fn invalid(location: Location, value: &str, reason: impl Into<String>) -> Error {
        Error::Invalid {
            location,
            value: value.chars().take(64).collect(),
            reason: reason.into(),
        }
    }
}
