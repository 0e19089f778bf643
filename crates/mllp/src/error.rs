//! The crate's one error type.

use std::time::Duration;

use hl7v2::AckCode;

/// Everything that can go wrong framing, sending or serving MLLP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A frame's content is larger than the configured maximum. The framer has skipped it and
    /// goes on with the next frame.
    #[error("frame too large: {size} > {max} bytes")]
    FrameTooLarge {
        /// Bytes of content seen when the frame was given up (at least `max + 1`).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The connection closed in the middle of a frame.
    #[error("connection closed inside a frame, after {len} bytes of it")]
    Truncated {
        /// Bytes of the unfinished frame.
        len: usize,
    },
    /// A message to send contains a byte that would end or restart its frame.
    #[error("message contains the MLLP framing byte 0x{byte:02X} at offset {offset}")]
    FramingByteInContent {
        /// The byte (0x0B or 0x1C).
        byte: u8,
        /// Where it is.
        offset: usize,
    },
    /// The message to send is not HL7 that we can read MSH-10 from.
    #[error("invalid HL7 message: {0}")]
    Hl7(#[from] hl7v2::Error),
    /// The message to send has no MSH-10, so its acknowledgement could not be matched.
    #[error("message has no control ID (MSH-10); its acknowledgement could not be matched")]
    MissingControlId,
    /// TCP connection refused, unreachable host, DNS failure...
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address as given.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS handshake failed: the server's certificate did not verify (the cause names the
    /// problem, e.g. `invalid peer certificate: UnknownIssuer`), or the server refused ours.
    #[error("TLS handshake with {addr} failed: {source}")]
    Tls {
        /// The address as given.
        addr: String,
        /// The cause, from rustls.
        source: std::io::Error,
    },
    /// The TCP connection did not complete in time.
    #[error("cannot connect to {addr}: no answer within {} ms", .timeout.as_millis())]
    ConnectTimeout {
        /// The address as given.
        addr: String,
        /// The limit.
        timeout: Duration,
    },
    /// The send's deadline passed before the message could be written: no pooled connection
    /// came free in time, or connecting took longer than the time left. Nothing was sent.
    #[error("no connection to {addr} within {} ms; the message was not sent", .waited.as_millis())]
    NotSent {
        /// The destination.
        addr: String,
        /// How long the send waited.
        waited: Duration,
    },
    /// No acknowledgement for the message in time.
    #[error("no acknowledgement for message {control_id} within {} ms", .timeout.as_millis())]
    AckTimeout {
        /// MSH-10 of the message sent.
        control_id: String,
        /// The limit.
        timeout: Duration,
    },
    /// The peer closed the connection before acknowledging.
    #[error("connection closed by {peer} before message {control_id} was acknowledged")]
    Closed {
        /// The peer.
        peer: String,
        /// MSH-10 of the message sent.
        control_id: String,
    },
    /// The peer answered AE, AR, CE or CR.
    #[error("message {control_id} not accepted: {description}")]
    Negative {
        /// MSA-1.
        code: AckCode,
        /// MSH-10 of the message sent.
        control_id: String,
        /// Code, MSA-3 and ERR text.
        description: String,
        /// The acknowledgement as received.
        ack: bytes::Bytes,
    },
    /// A socket error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}
