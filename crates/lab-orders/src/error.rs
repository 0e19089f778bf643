//! Why an order cannot be converted.

/// An order that cannot be converted, naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A required element is absent.
    #[error("cannot convert the order: {element} is missing")]
    Missing {
        /// The FHIR path, such as `ServiceRequest.subject`.
        element: &'static str,
    },
    /// A reference that neither a contained resource nor the resources given resolve.
    #[error("cannot convert the order: {element} refers to {reference}, which was not found")]
    Unresolved {
        /// Where the reference is.
        element: &'static str,
        /// The reference.
        reference: String,
    },
    /// A resource of the wrong type, or a value that cannot be used.
    #[error("cannot convert the order: {element}: {reason}")]
    Invalid {
        /// Where.
        element: &'static str,
        /// Why.
        reason: String,
    },
}
