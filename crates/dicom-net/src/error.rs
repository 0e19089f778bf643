//! The crate's one error type.

/// What can go wrong in PDUs, data sets, or an association.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A PDU that does not follow PS3.8.
    #[error("malformed PDU: {0}")]
    Pdu(String),
    /// A PDU longer than allowed (the maximum this side advertised, for P-DATA).
    #[error("PDU too large: {size} > {max} bytes")]
    PduTooLarge {
        /// The length field.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A data set or command that does not parse.
    #[error("malformed data set at byte {offset}: {reason}")]
    DataSet {
        /// Where.
        offset: usize,
        /// What.
        reason: String,
    },
    /// An element Implicit VR cannot carry: its tag is a sequence in the data dictionary
    /// (PS3.6), the source labels it with another VR, and its value would be read back in
    /// Implicit VR (PS3.5 §7.1.3) as a sequence that does not parse. The data set can go only
    /// in an Explicit VR transfer syntax.
    #[error(
        "{tag} at byte {offset} has VR {vr} but is a sequence in the data dictionary, and \
         Implicit VR would make a receiver read its value as a broken sequence: send it in \
         Explicit VR (detail: {reason})"
    )]
    NeedsExplicitVr {
        /// Where the element begins in the source data set.
        offset: usize,
        /// The tag, as `(gggg,eeee)`.
        tag: String,
        /// The VR the source gave it.
        vr: String,
        /// How reading it back failed.
        reason: String,
    },
    /// Not a Part 10 file.
    #[error("not a DICOM Part 10 file: {0}")]
    NotPart10(String),
    /// A file that cannot be stored (no SOP Class or Instance UID in its data set), found
    /// before anything was sent.
    #[error("{0}")]
    Object(String),
    /// A query key or JSON attribute that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// The SCP rejected the association.
    #[error("association rejected ({result}): {source_name}: {reason}")]
    Rejected {
        /// permanent or transient.
        result: &'static str,
        /// Who rejected.
        source_name: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The SCP (or the provider) aborted the association.
    #[error("association aborted by the {source_name}: {reason}")]
    Aborted {
        /// service user or provider.
        source_name: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// No presentation context was accepted for what is being sent.
    #[error("no accepted presentation context for {0}")]
    NoContext(String),
    /// The peer did something out of order.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer in time.
    #[error("timeout: no {what} within {ms} ms")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The limit.
        ms: u128,
    },
    /// The connection closed.
    #[error("connection closed by the peer")]
    Closed,
    /// Sockets and files.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
