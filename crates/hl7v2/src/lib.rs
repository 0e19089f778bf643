//! HL7 v2 messages in ER7 ("pipe and hat") form: parse, read, build, acknowledge.
//!
//! [`Message::parse`] takes bytes and borrows them: it finds the delimiters (MSH-1, MSH-2) and
//! the segment boundaries and allocates one small index. Fields, repetitions, components and
//! subcomponents are found when read, as slices of the input, so reading one value of a large
//! message costs what it takes to find it. Input need not be UTF-8: text is decoded only when a
//! value is read as text, with the character set of MSH-18 or one the caller names.
//!
//! ```
//! use hl7v2::Message;
//!
//! let input = b"MSH|^~\\&|LAB|HOSP|EHR|HOSP|20240101120000||ORU^R01|MSG1|P|2.5\n\
//!               PID|1||12345^^^HOSP^MR||O'NEIL^MARY\\T\\JANE\n\
//!               OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L\n";
//! let msg = Message::parse(input)?;
//! assert_eq!(msg.get("MSH-9-2")?.raw(), b"R01");
//! assert_eq!(msg.get("PID-5-2")?.text(), "MARY&JANE");
//! assert_eq!(msg.get("OBX(1)-5")?.text(), "5.4");
//! assert!(msg.get("PID-99")?.is_empty());
//! # Ok::<(), hl7v2::Error>(())
//! ```
//!
//! What this crate does:
//!
//! - parsing with `\r`, `\n` or `\r\n` segment terminators (or `\r` only, with
//!   [`ParseOptions::strict`]), any delimiters, MSH-2 of three characters (no subcomponent
//!   separator) or five (the v2.7 truncation character), a leading byte-order mark, and a size
//!   limit;
//! - [`Path`]s such as `PID-5-1`, `PID.5.1`, `OBX(2)-5`, `PID-3[2]-1`, and every value of a
//!   segment in one pass ([`Segment::values`]);
//! - the escape codec ([`escape`], [`unescape`], [`EscapeTokens`]) and character sets
//!   ([`Charset`]);
//! - building messages ([`MessageBuilder`]) and acknowledgements ([`build_ack`], [`AckMode`]
//!   from MSH-15/MSH-16, [`Acknowledgment`] to read one), what a receiver owes a sender
//!   ([`acks_for`] in original and enhanced mode, built at a time the caller passes), and the
//!   reject of input that does not parse ([`build_reject`], with the HL7 table 0357 code from
//!   [`AckError::for_parse_error`]);
//! - DTM/TS timestamps that keep their precision and offset ([`Timestamp`]);
//! - batch files ([`Batch`]);
//! - example messages ([`example_adt_a01`], [`example_oru_r01`]).
//!
//! ## Segment terminators
//!
//! HL7 v2 ends every segment with a carriage return (Chapter 2, Figure 2-1); files and JSON
//! bodies often use `\n` or `\r\n` instead. Which one a message uses is decided once, from the
//! end of its header segment, never line by line:
//!
//! - header ended by `\r` or `\r\n`: `\r` (with the `\n` right after it, if any) ends each
//!   segment, and a bare `\n` anywhere else is **data** inside a value, whatever the next line
//!   looks like;
//! - header ended by a bare `\n`: `\n`, `\r\n` and `\r` end segments; a `\n` followed by a line
//!   that does not start with a segment ID stays in its value.
//!
//! [`Message::to_wire`] gives the bytes to send: a message whose segments each end with one `\r`
//! as it is, byte for byte; any other gets `\r` after each segment in place of its terminators
//! (and blank lines, a byte-order mark, a missing final `\r` are the only other differences).
//! A byte inside a segment is never changed.
//!
//! ```
//! use hl7v2::Message;
//!
//! let report = b"MSH|^~\\&|RIS|RAD|EHR|HOSP|20240301120000||ORU^R01|C5|P|2.3\r\
//!                OBX|1|TX|REPORT||Heart size normal.\nCXR\nNo acute disease.||||||F\r";
//! let msg = Message::parse(report)?;
//! assert_eq!(msg.segment_count(), 2);
//! assert_eq!(msg.get("OBX-5")?.text(), "Heart size normal.\nCXR\nNo acute disease.");
//! assert_eq!(msg.to_wire().as_ref(), report);
//! # Ok::<(), hl7v2::Error>(())
//! ```
//!
//! What it does not do: I/O (see the `mllp` crate), validation against message structures or
//! data-type dictionaries, or encodings where delimiters are not single ASCII bytes (UTF-16).
//!
//! ## Features
//!
//! None: the crate has no optional parts.

#![cfg_attr(
    not(test),
    warn(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod ack;
mod batch;
mod builder;
mod charset;
mod delimiters;
mod error;
mod escape;
mod example;
mod message;
mod path;
mod receiver;
mod reject;
mod segment;
mod timestamp;
mod value;
mod walk;

pub use ack::{
    AckCode, AckCondition, AckError, AckMode, AckOptions, Acknowledgment, Outcome, build_ack,
};
pub use batch::Batch;
pub use builder::{MessageBuilder, SegmentBuilder};
pub use charset::Charset;
pub use delimiters::Delimiters;
pub use error::Error;
pub use escape::{DelimiterEscape, EscapeToken, EscapeTokens, escape, unescape};
pub use example::{example_adt_a01, example_oru_r01, hl7_now};
pub use message::{DEFAULT_MAX_SIZE, Message, ParseOptions};
pub use path::Path;
pub use receiver::{ack_options_at, acks_for};
pub use reject::build_reject;
pub use segment::Segment;
pub use timestamp::{Precision, Timestamp};
pub use value::{Level, Value, Values};
pub use walk::{Location, SegmentValues};
