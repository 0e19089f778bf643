//! The agent WebSocket messages: one JSON object per text frame, discriminated by `type`.

use serde::{Deserialize, Serialize};

use crate::Error;

/// Default largest message accepted by [`AgentMessage::decode`]: 16 MiB.
pub const DEFAULT_MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Every agent message of Medplum 5.0.x (plus the later `returnAck` and `agent:stats:*`, and
/// Outpost's own `agent:deadletters:*`).
///
/// Serialized exactly as Medplum sends it: `type` first, camelCase fields in the order Medplum's
/// main code path writes them, absent optional fields omitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AgentMessage {
    /// Agent → server, first message on every connection.
    #[serde(rename = "agent:connect:request")]
    ConnectRequest(ConnectRequest),
    /// Server → agent: the agent is live.
    #[serde(rename = "agent:connect:response")]
    ConnectResponse(ConnectResponse),
    /// Either way, every 10 s.
    #[serde(rename = "agent:heartbeat:request")]
    HeartbeatRequest(HeartbeatRequest),
    /// Either way, carrying the sender's version.
    #[serde(rename = "agent:heartbeat:response")]
    HeartbeatResponse(HeartbeatResponse),
    /// Server → agent: a push to a device. Agent → server: a message from a device.
    #[serde(rename = "agent:transmit:request")]
    TransmitRequest(TransmitRequest),
    /// The answer to a transmit request.
    #[serde(rename = "agent:transmit:response")]
    TransmitResponse(TransmitResponse),
    /// Server → agent: re-read configuration.
    #[serde(rename = "agent:reloadconfig:request")]
    ReloadConfigRequest(ReloadConfigRequest),
    /// Agent → server.
    #[serde(rename = "agent:reloadconfig:response")]
    ReloadConfigResponse(StatusResponse),
    /// Server → agent: upgrade to a version.
    #[serde(rename = "agent:upgrade:request")]
    UpgradeRequest(UpgradeRequest),
    /// Agent → server.
    #[serde(rename = "agent:upgrade:response")]
    UpgradeResponse(StatusResponse),
    /// Server → agent: send recent log lines.
    #[serde(rename = "agent:logs:request")]
    LogsRequest(LogsRequest),
    /// Agent → server.
    #[serde(rename = "agent:logs:response")]
    LogsResponse(LogsResponse),
    /// Server → agent: send statistics (after Medplum 5.0.10).
    #[serde(rename = "agent:stats:request")]
    StatsRequest(StatsRequest),
    /// Agent → server.
    #[serde(rename = "agent:stats:response")]
    StatsResponse(StatsResponse),
    /// Server → agent: list the dead letters, or send one again (an Outpost extension;
    /// Medplum's agent answers it `agent:error` "Unknown message type").
    #[serde(rename = "agent:deadletters:request")]
    DeadLettersRequest(DeadLettersRequest),
    /// Agent → server (an Outpost extension).
    #[serde(rename = "agent:deadletters:response")]
    DeadLettersResponse(DeadLettersResponse),
    /// Either way: the one generic error.
    #[serde(rename = "agent:error")]
    Error(ErrorMessage),
}

/// `agent:connect:request`. Both fields are optional on the wire so a server can answer
/// "Missing access token" / "Missing agent ID" rather than fail to decode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectRequest {
    /// The agent's OAuth access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// The Agent resource id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Correlation id (not used by Medplum for connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// `agent:connect:response` (no fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectResponse {
    /// Correlation id (unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// `agent:heartbeat:request`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatRequest {
    /// Never set in practice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Correlation id (unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// `agent:heartbeat:response`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// The sender's version (agent → server: the agent's; server → agent: the server's).
    #[serde(default)]
    pub version: String,
    /// Correlation id (unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// `agent:transmit:request`: a push (server → agent, `remote` is the device URL) or an inbound
/// message (agent → server, with `channel` and `accessToken`, `remote` the device's address).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransmitRequest {
    /// Agent → server: the agent's token, checked on every message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Agent → server: the `Agent.channel.name` the message came in on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Where to (push: `mllp://host:port?...`) or where from (inbound: `host:port`).
    #[serde(default)]
    pub remote: String,
    /// `x-application/hl7-v2+er7`, `x-application/ping`, ...
    #[serde(default)]
    pub content_type: String,
    /// The payload (HL7 text; hex for byte streams; base64 or JSON for DICOM).
    #[serde(default)]
    pub body: String,
    /// Present when the sender waits for the answer; copied into it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// `first` or `application`: which HL7 acknowledgement ends the wait (after 5.0.10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_ack: Option<String>,
    /// Server → agent, an Outpost extension that Medplum's agent ignores: milliseconds from
    /// the moment the agent receives the push until its caller stops waiting (the `$push`
    /// `waitTimeout` left when the relay sent it). The agent gives up on the push at that time,
    /// waiting for a pooled connection included, and does not deliver it afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
}

/// `agent:transmit:response`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransmitResponse {
    /// The channel of the request, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The `remote` of the request.
    #[serde(default)]
    pub remote: String,
    /// The `callback` of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
    /// Content type of `body`; `text/plain` for errors.
    #[serde(default)]
    pub content_type: String,
    /// 200 on success, 400 on failure; absent means success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Older agents: `ok` or `error` instead of `statusCode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// The device's answer, or the error text.
    #[serde(default)]
    pub body: String,
    /// Outpost: how long the device took, in µs, from the push's arrival at the agent to the
    /// device's answer (not sent by Medplum's agent; absent when no device answered).
    #[serde(default, rename = "deviceUs", skip_serializing_if = "Option::is_none")]
    pub device_us: Option<u64>,
}

impl TransmitResponse {
    /// Whether the response reports a failure (`statusCode >= 400`, or the old `status: error`).
    pub fn is_error(&self) -> bool {
        self.status_code.is_some_and(|c| c >= 400) || self.status.as_deref() == Some("error")
    }

    /// Whether the answer is temporary and the request is to be sent again later, with the same
    /// callback: `statusCode` 429 or 500 and above (the relay could not take responsibility for
    /// the message: its store or its target failed). Every other answer is final. Medplum's
    /// server only sends 200 and 400 here.
    pub fn is_retryable(&self) -> bool {
        self.status_code.is_some_and(|c| c == 429 || c >= 500)
    }
}

/// `agent:reloadconfig:request`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadConfigRequest {
    /// Unused by agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// `agent:reloadconfig:response` and `agent:upgrade:response`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusResponse {
    /// 200 on success.
    #[serde(default)]
    pub status_code: u16,
    /// Correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// `agent:upgrade:request`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeRequest {
    /// Unused by agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// Target version; latest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Upgrade even when the agent thinks it should not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// Outpost: the id of the `Binary` on the relay holding the executable of `version`
    /// (Medplum's agent downloads its installer from GitHub instead, and never sees this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    /// Outpost: the SHA-256 of that executable, lower-case hex, as the operator registered it;
    /// the agent refuses a download that does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// `agent:logs:request`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsRequest {
    /// How many lines (agent default 20, maximum 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// `agent:logs:response`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogsResponse {
    /// 200 on success.
    #[serde(default)]
    pub status_code: u16,
    /// The log lines, newest first.
    #[serde(default)]
    pub logs: Vec<LogMessage>,
    /// Correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// One log line: `{level, msg, timestamp, ...}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LogMessage {
    /// `NONE`, `ERROR`, `WARN`, `INFO` or `DEBUG`.
    pub level: String,
    /// The message.
    pub msg: String,
    /// ISO 8601.
    pub timestamp: String,
    /// Any other fields.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `agent:stats:request`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRequest {
    /// Correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// `agent:stats:response`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatsResponse {
    /// 200 on success.
    #[serde(default)]
    pub status_code: u16,
    /// Free-form statistics.
    #[serde(default)]
    pub stats: serde_json::Value,
    /// Correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// `agent:deadletters:request` (Outpost): the inbound messages the agent moved aside after too
/// many errors; with `retry`, that one is queued again first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLettersRequest {
    /// The dead letter to send again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<i64>,
    /// Correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// `agent:deadletters:response` (Outpost).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLettersResponse {
    /// 200 on success; 404 when `retry` named no dead letter.
    #[serde(default)]
    pub status_code: u16,
    /// The dead letters left, oldest first: `{id, channel, remote, contentType, callback,
    /// receivedAt, deadAt, failures, reason}` (no message bodies).
    #[serde(default)]
    pub dead_letters: Vec<serde_json::Value>,
    /// The dead letter queued again, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried: Option<i64>,
    /// Correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// `agent:error`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// What went wrong.
    #[serde(default)]
    pub body: String,
    /// The request this answers, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<String>,
}

/// What an `agent:error` reports, for a receiver that acts on it. Medplum sends only text; these
/// are its texts (`packages/server/src/agent/websockets.ts`, the agent's `app.ts`) and
/// Outpost's, recognised here once so that callers match a variant, not a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// "Missing access token".
    MissingAccessToken,
    /// "Invalid access token" (expired, revoked or unknown): log in again.
    InvalidAccessToken,
    /// "Missing agent ID".
    MissingAgentId,
    /// "Not connected": a transmit request before the connect handshake finished.
    NotConnected,
    /// "Channel not found": the `channel` of an inbound message is not on the Agent.
    ChannelNotFound,
    /// "Agent.status is currently set to off".
    AgentOff,
    /// "Unknown message type: …" or "Unexpected message type: …".
    UnknownMessageType,
    /// Anything else (a Bot's error, a parse error, a missing resource).
    Other,
}

impl ErrorMessage {
    /// What the error reports.
    pub fn kind(&self) -> ErrorKind {
        let body = self.body.trim_start();
        let starts = |prefix: &str| body.starts_with(prefix);
        if starts("Invalid access token") {
            ErrorKind::InvalidAccessToken
        } else if starts("Missing access token") {
            ErrorKind::MissingAccessToken
        } else if starts("Missing agent ID") {
            ErrorKind::MissingAgentId
        } else if starts("Not connected") {
            ErrorKind::NotConnected
        } else if starts("Channel not found") {
            ErrorKind::ChannelNotFound
        } else if starts("Agent.status is currently set to off") {
            ErrorKind::AgentOff
        } else if starts("Unknown message type") || starts("Unexpected message type") {
            ErrorKind::UnknownMessageType
        } else {
            ErrorKind::Other
        }
    }
}

/// Which way a message travels; decides what the deprecated type names mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Agent → server: `connect` is a connect request, `transmit` a transmit request.
    ToServer,
    /// Server → agent: `connected` is a connect response, `transmit` a transmit response,
    /// `push` a transmit request.
    ToAgent,
}

/// The result of decoding one WebSocket message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A message of a known type.
    Message(AgentMessage),
    /// A JSON object with a `type` this crate does not know. The receiver answers
    /// `agent:error` ("Unknown message type: …", with the callback) and keeps the connection.
    Unknown {
        /// The `type` value.
        kind: String,
        /// The `callback`, if the message had one.
        callback: Option<String>,
    },
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    callback: Option<String>,
}

const KNOWN: &[&str] = &[
    "agent:connect:request",
    "agent:connect:response",
    "agent:heartbeat:request",
    "agent:heartbeat:response",
    "agent:transmit:request",
    "agent:transmit:response",
    "agent:reloadconfig:request",
    "agent:reloadconfig:response",
    "agent:upgrade:request",
    "agent:upgrade:response",
    "agent:logs:request",
    "agent:logs:response",
    "agent:deadletters:request",
    "agent:deadletters:response",
    "agent:stats:request",
    "agent:stats:response",
    "agent:error",
];

impl AgentMessage {
    /// Decodes one message (a WebSocket text or binary frame carrying UTF-8 JSON).
    ///
    /// Refuses input over `max` bytes before parsing. Deprecated type names are mapped as the
    /// `direction` says. A well-formed object with an unknown `type` is [`Decoded::Unknown`],
    /// not an error.
    pub fn decode(bytes: &[u8], direction: Direction, max: usize) -> Result<Decoded, Error> {
        if bytes.len() > max {
            return Err(Error::TooLarge {
                size: bytes.len(),
                max,
            });
        }
        let first = match serde_json::from_slice::<AgentMessage>(bytes) {
            Ok(m) => return Ok(Decoded::Message(m)),
            Err(e) => e,
        };
        let env: Envelope = match serde_json::from_slice(bytes) {
            Ok(env) => env,
            Err(_) => return Err(Error::Json(first.to_string())),
        };
        let canonical = match (direction, env.kind.as_str()) {
            (Direction::ToServer, "connect") => "agent:connect:request",
            (Direction::ToServer, "transmit") => "agent:transmit:request",
            (Direction::ToAgent, "connected") => "agent:connect:response",
            (Direction::ToAgent, "transmit") => "agent:transmit:response",
            (Direction::ToAgent, "push") => "agent:transmit:request",
            (_, kind) if KNOWN.contains(&kind) => return Err(Error::Json(first.to_string())),
            _ => {
                return Ok(Decoded::Unknown {
                    kind: env.kind,
                    callback: env.callback,
                });
            }
        };
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))?;
        value["type"] = serde_json::Value::String(canonical.to_owned());
        serde_json::from_value(value)
            .map(Decoded::Message)
            .map_err(|e| Error::Json(e.to_string()))
    }

    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: no maps with non-string keys, no custom impls.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The message's `type` string.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentMessage::ConnectRequest(_) => "agent:connect:request",
            AgentMessage::ConnectResponse(_) => "agent:connect:response",
            AgentMessage::HeartbeatRequest(_) => "agent:heartbeat:request",
            AgentMessage::HeartbeatResponse(_) => "agent:heartbeat:response",
            AgentMessage::TransmitRequest(_) => "agent:transmit:request",
            AgentMessage::TransmitResponse(_) => "agent:transmit:response",
            AgentMessage::ReloadConfigRequest(_) => "agent:reloadconfig:request",
            AgentMessage::ReloadConfigResponse(_) => "agent:reloadconfig:response",
            AgentMessage::UpgradeRequest(_) => "agent:upgrade:request",
            AgentMessage::UpgradeResponse(_) => "agent:upgrade:response",
            AgentMessage::LogsRequest(_) => "agent:logs:request",
            AgentMessage::LogsResponse(_) => "agent:logs:response",
            AgentMessage::StatsRequest(_) => "agent:stats:request",
            AgentMessage::StatsResponse(_) => "agent:stats:response",
            AgentMessage::DeadLettersRequest(_) => "agent:deadletters:request",
            AgentMessage::DeadLettersResponse(_) => "agent:deadletters:response",
            AgentMessage::Error(_) => "agent:error",
        }
    }

    /// The message's `callback`, if it has one.
    pub fn callback(&self) -> Option<&str> {
        match self {
            AgentMessage::ConnectRequest(m) => m.callback.as_deref(),
            AgentMessage::ConnectResponse(m) => m.callback.as_deref(),
            AgentMessage::HeartbeatRequest(m) => m.callback.as_deref(),
            AgentMessage::HeartbeatResponse(m) => m.callback.as_deref(),
            AgentMessage::TransmitRequest(m) => m.callback.as_deref(),
            AgentMessage::TransmitResponse(m) => m.callback.as_deref(),
            AgentMessage::ReloadConfigRequest(m) => m.callback.as_deref(),
            AgentMessage::ReloadConfigResponse(m) | AgentMessage::UpgradeResponse(m) => {
                m.callback.as_deref()
            }
            AgentMessage::UpgradeRequest(m) => m.callback.as_deref(),
            AgentMessage::LogsRequest(m) => m.callback.as_deref(),
            AgentMessage::LogsResponse(m) => m.callback.as_deref(),
            AgentMessage::StatsRequest(m) => m.callback.as_deref(),
            AgentMessage::StatsResponse(m) => m.callback.as_deref(),
            AgentMessage::DeadLettersRequest(m) => m.callback.as_deref(),
            AgentMessage::DeadLettersResponse(m) => m.callback.as_deref(),
            AgentMessage::Error(m) => m.callback.as_deref(),
        }
    }

    /// An `agent:error` answering `callback`.
    pub fn error(body: impl Into<String>, callback: Option<String>) -> AgentMessage {
        AgentMessage::Error(ErrorMessage {
            body: body.into(),
            callback,
        })
    }
}
