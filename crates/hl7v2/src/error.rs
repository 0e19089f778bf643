//! The crate's one error type.

/// Everything that can go wrong while parsing, addressing or timestamp-reading HL7 v2.
///
/// Offsets are byte offsets into the input given to the parser (after a skipped byte-order mark
/// they still count from the start of the original input).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is larger than [`ParseOptions::max_size`](crate::ParseOptions::max_size).
    #[error("message too large: {size} > {max} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The input does not start with an `MSH` segment (`FHS`/`BHS` for batches).
    #[error("no MSH segment at byte {offset}: message must start with \"MSH\"")]
    NoMsh {
        /// Where the header was expected.
        offset: usize,
    },
    /// The header segment ends before its field separator and encoding characters.
    #[error("MSH segment too short: {len} bytes, need at least 8 (\"MSH|^~\\&\")")]
    MshTooShort {
        /// Length of the header segment.
        len: usize,
    },
    /// MSH-1 or MSH-2 are not a usable set of delimiters.
    #[error("invalid encoding characters at byte {offset}: {reason}")]
    InvalidEncodingCharacters {
        /// Offset of the offending byte.
        offset: usize,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// A segment does not start with a three-character segment ID.
    #[error("invalid segment name at byte {offset}: expected three upper-case letters or digits")]
    InvalidSegmentName {
        /// Start of the segment.
        offset: usize,
    },
    /// In strict mode, a `\n` was found where only `\r` may end a segment.
    #[error(
        "line feed at byte {offset}: strict mode accepts only carriage return as segment terminator"
    )]
    LineFeedTerminator {
        /// Offset of the line feed.
        offset: usize,
    },
    /// A batch file is not a well-formed sequence of FHS/BHS, messages, BTS/FTS.
    #[error("invalid batch at byte {offset}: {reason}")]
    InvalidBatch {
        /// Offset of the offending segment.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A path such as `PID-5-1` could not be read.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A DTM/TS value could not be read.
    #[error("invalid timestamp {value:?}: {reason}")]
    InvalidTimestamp {
        /// The value as given (lossily decoded).
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An encoding label that neither HL7 (MSH-18) nor the WHATWG registry knows.
    #[error("unknown character set {0:?}")]
    UnknownCharset(String),
}
