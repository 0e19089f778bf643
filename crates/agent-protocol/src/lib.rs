//! The wire contract between an on-premises agent and its relay, as the Medplum Agent speaks it
//! (Medplum 5.0.x): the WebSocket messages ([`AgentMessage`]), the `$push` operation's
//! parameters ([`PushRequest`]) and FHIR `OperationOutcome`s.
//!
//! [`link::Link`] is the connection itself as a sans-IO state machine, the same on both ends:
//! the connect handshake, heartbeats and the silence check, and the table of requests in flight
//! with their deadlines. The agent and the relay drive it over their sockets.
//!
//! No sockets, no HTTP, no clock reads (time is passed in). Decoding is bounded ([`AgentMessage::decode`] takes a
//! maximum size) and tolerant where Medplum is (deprecated type names, missing optional fields,
//! unknown message types reported as [`Decoded::Unknown`] rather than failing the socket).
//! Encoding writes what Medplum writes, byte for byte; the golden fixtures in `tests/golden/`
//! pin it.
//!
//! ```
//! use agent_protocol::{AgentMessage, Decoded, Direction, TransmitRequest, DEFAULT_MAX_MESSAGE};
//!
//! let push = AgentMessage::TransmitRequest(TransmitRequest {
//!     remote: "mllp://10.0.0.5:2575".into(),
//!     content_type: "x-application/hl7-v2+er7".into(),
//!     body: "MSH|^~\\&|...".into(),
//!     callback: Some("Agent/1-abc".into()),
//!     ..Default::default()
//! });
//! let json = push.to_json();
//! assert!(json.starts_with(r#"{"type":"agent:transmit:request","remote":"mllp://10.0.0.5:2575""#));
//! let back = AgentMessage::decode(json.as_bytes(), Direction::ToAgent, DEFAULT_MAX_MESSAGE)?;
//! assert_eq!(back, Decoded::Message(push));
//! # Ok::<(), agent_protocol::Error>(())
//! ```
//!
//! ## Features
//!
//! None.

pub mod channel;
mod error;
pub mod link;
mod message;
mod push;

pub use error::Error;
pub use message::{
    AgentMessage, ConnectRequest, ConnectResponse, DEFAULT_MAX_MESSAGE, DeadLettersRequest,
    DeadLettersResponse, Decoded, Direction, ErrorKind, ErrorMessage, HeartbeatRequest,
    HeartbeatResponse, LogMessage, LogsRequest, LogsResponse, ReloadConfigRequest, StatsRequest,
    StatsResponse, StatusResponse, TransmitRequest, TransmitResponse, UpgradeRequest,
};
pub use push::{
    CONTENT_TYPE_ASTM, CONTENT_TYPE_DICOM, CONTENT_TYPE_DICOM_JSON, CONTENT_TYPE_HL7_V2,
    CONTENT_TYPE_OCTET_STREAM, CONTENT_TYPE_PING, CONTENT_TYPE_TEXT, DEFAULT_WAIT_TIMEOUT_MS,
    Details, Issue, MAX_WAIT_TIMEOUT_MS, OperationOutcome, PushRequest,
};
