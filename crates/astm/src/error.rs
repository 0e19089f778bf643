//! The crate's one error type.

use std::time::Duration;

/// What can go wrong reading records or moving a message over the link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A message (records) does not start with an H record of at least `H|\^&`.
    #[error("invalid header at byte {offset}: {reason}")]
    InvalidHeader {
        /// Where.
        offset: usize,
        /// What.
        reason: &'static str,
    },
    /// Input over the size limit.
    #[error("message too large: {size} > {max} bytes")]
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A record holds a byte that may not appear in ASTM text (a control character).
    #[error("record {record} holds control byte 0x{byte:02X} at offset {offset}")]
    RestrictedByte {
        /// 1-based record number.
        record: usize,
        /// The byte.
        byte: u8,
        /// Offset within the record.
        offset: usize,
    },
    /// The receiver did not answer ENQ (or a frame) in time.
    #[error("no answer from the receiver within {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The receiver kept refusing the session (NAK to ENQ).
    #[error("receiver busy: ENQ refused {0} times")]
    Busy(u32),
    /// A frame was refused six times.
    #[error("frame {frame} (FN {fn_digit}) refused {tries} times")]
    FrameRejected {
        /// 1-based frame index in the message.
        frame: usize,
        /// Its frame number.
        fn_digit: u8,
        /// Attempts.
        tries: u32,
    },
    /// The receiver interrupted the transfer (EOT instead of ACK) and the message was stopped.
    #[error("receiver interrupted the transfer after {0} frames")]
    Interrupted(usize),
    /// The other side wants to send at the same time and has priority.
    #[error("line contention: the instrument has priority")]
    Contention,
    /// The connection closed.
    #[error("connection closed")]
    Closed,
    /// A socket error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
