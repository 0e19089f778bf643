//! `$push`: a message through an agent to a device, and the device's answer; counted in the
//! metrics, logged in one line, and handed to the push log (the console's too).

use std::time::Duration;

use agent_protocol::{AgentMessage, CONTENT_TYPE_PING, PushRequest, TransmitRequest};
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::time::Instant;

use super::super::RelayState;
use super::super::extract::Caller;
use super::super::response::{all_ok, outcome, raw};
use crate::agents::AskError;
use crate::fhir::{id_of, url_params};

/// What the agent's deadline for a push leaves before the caller's for its answer to travel
/// back: a fifth of the wait, at least this...
const ANSWER_MARGIN_MIN: Duration = Duration::from_millis(20);
/// ...and at most this.
const ANSWER_MARGIN_MAX: Duration = Duration::from_secs(1);

/// `$push` answer header: µs from the relay sending the push to the agent to the agent's
/// answer.
pub(super) const AGENT_US: &str = "x-outpost-agent-us";
/// `$push` answer header: µs from the push's arrival at the agent to the device's answer, as the
/// agent measured it (Outpost agents only).
pub(super) const DEVICE_US: &str = "x-outpost-device-us";

/// Why a push got no answer from the device. Every case is a 400 OperationOutcome saying what
/// happened (never a 5xx: Medplum's client retries those, and would push twice).
#[derive(Debug, thiserror::Error)]
pub(super) enum PushError {
    /// The `$push` parameters are not acceptable (the caller's mistake).
    #[error(transparent)]
    Parameters(#[from] agent_protocol::Error),
    /// `Agent.status` is `off`.
    #[error("Agent is currently disabled. Agent.status is 'off'")]
    Disabled,
    /// No such Device.
    #[error("Destination device not found")]
    NoDevice,
    /// A tenant's caller named a Device outside its tenant.
    #[error("Forbidden: the destination device is not in this client's tenant")]
    OutsideTenant,
    /// The Device has no `url`.
    #[error("Destination device missing url")]
    NoUrl,
    /// The message did not reach the agent, or no answer came back (the agent's side).
    #[error(transparent)]
    Agent(#[from] AskError),
    /// The agent, or the device through it, answered with an error.
    #[error("{0}")]
    Answered(AnsweredError),
}

/// An error answer from the agent: its text, as it sent it.
#[derive(Debug)]
pub(super) struct AnsweredError(String);

impl std::fmt::Display for AnsweredError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl IntoResponse for PushError {
    fn into_response(self) -> Response {
        let code = match &self {
            PushError::Agent(AskError::Timeout { .. }) => "timeout",
            // The agent could not be reached or did not answer: nobody said no.
            PushError::Agent(_) => "transient",
            PushError::OutsideTenant => {
                return outcome(StatusCode::FORBIDDEN, "forbidden", self.to_string());
            }
            _ => "invalid",
        };
        outcome(StatusCode::BAD_REQUEST, code, self.to_string())
    }
}

/// `POST /Agent/{id}/$push` and `POST /Agent/$push?identifier=`; `arrived` is when the request
/// came in, from which `waitTimeout` counts.
async fn push(
    state: &RelayState,
    caller: &Caller,
    agent: &Value,
    params: PushRequest,
    arrived: Instant,
) -> Result<Response, PushError> {
    let agent_id = id_of(agent).to_owned();
    if agent["status"].as_str() == Some("off") && params.content_type != CONTENT_TYPE_PING {
        return Err(PushError::Disabled);
    }
    let url = destination_url(state, caller, &params)?;
    let allowed = Duration::from_millis(params.wait_timeout);
    let deadline = arrived + allowed;
    // The agent gives up on the push a little before its caller does (`deadlineMs`: what is
    // left, less the time its answer needs to come back), so a device that does not answer in
    // time is reported as that, by the agent, rather than as an agent that did not answer.
    let left = deadline.saturating_duration_since(Instant::now());
    let left = left.saturating_sub((left / 5).clamp(ANSWER_MARGIN_MIN, ANSWER_MARGIN_MAX));
    let mut request = TransmitRequest {
        remote: url,
        content_type: params.content_type.clone(),
        body: params.body,
        return_ack: params.return_ack,
        deadline_ms: Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX)),
        ..TransmitRequest::default()
    };
    if !params.wait_for_response {
        // Medplum answers "All OK" even when nobody is listening; we say so instead.
        state
            .router
            .send(
                &agent_id,
                AgentMessage::TransmitRequest(request),
                deadline,
                allowed,
            )
            .await?;
        let mut ok = all_ok();
        ok.extensions_mut().insert(SentOnly);
        return Ok(ok);
    }
    let callback = format!("Agent/{agent_id}-{}", uuid::Uuid::new_v4());
    request.callback = Some(callback.clone());
    let asked = Instant::now();
    let answer = state
        .router
        .ask(
            &agent_id,
            &callback,
            AgentMessage::TransmitRequest(request),
            deadline,
            allowed,
        )
        .await?;
    match answer {
        AgentMessage::TransmitResponse(r) if !r.is_error() => {
            let status = r
                .status_code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
            let mut resp = raw(status, &r.content_type, r.body);
            // Where the time went (Outpost headers): the round trip through the agent, and
            // of that what the agent says the device took.
            let h = resp.headers_mut();
            h.insert(
                AGENT_US,
                u64::try_from(asked.elapsed().as_micros())
                    .unwrap_or(u64::MAX)
                    .into(),
            );
            if let Some(us) = r.device_us {
                h.insert(DEVICE_US, us.into());
            }
            Ok(resp)
        }
        AgentMessage::TransmitResponse(r) => Err(PushError::Answered(AnsweredError(r.body))),
        AgentMessage::Error(e) => Err(PushError::Answered(AnsweredError(e.body))),
        other => Err(PushError::Answered(AnsweredError(format!(
            "unexpected answer from agent: {}",
            other.kind()
        )))),
    }
}

/// Marks the "All OK" of a push without `waitForResponse`: written to the agent's socket,
/// nothing more.
#[derive(Debug, Clone, Copy)]
struct SentOnly;

/// The `outcome` label of a push (metrics, the log line).
fn push_outcome(result: &Result<Response, PushError>) -> &'static str {
    match result {
        Ok(r) if r.extensions().get::<SentOnly>().is_some() => "sent",
        Ok(r) if r.status().is_success() => "answered",
        Ok(_) => "device_error",
        Err(PushError::Answered(_)) => "device_error",
        Err(PushError::Agent(AskError::Timeout { .. })) => "timeout",
        Err(PushError::Agent(_)) => "unavailable",
        Err(
            PushError::Parameters(_)
            | PushError::Disabled
            | PushError::NoDevice
            | PushError::NoUrl
            | PushError::OutsideTenant,
        ) => "rejected",
    }
}

/// The `remote` for a push: the destination Device's `url` (or, for a ping, the host itself).
/// A tenant's caller may only name its tenant's Devices.
fn destination_url(
    state: &RelayState,
    caller: &Caller,
    p: &PushRequest,
) -> Result<String, PushError> {
    let dest = p.destination.as_str();
    let device = if let Some(id) = dest.strip_prefix("Device/") {
        if state.registry.cached("Device", id).is_some() && !caller.sees(state, "Device", id) {
            return Err(PushError::OutsideTenant);
        }
        state.registry.cached("Device", id)
    } else if let Some(query) = dest.strip_prefix("Device?") {
        let params = url_params(query);
        state
            .registry
            .all_cached("Device")
            .into_iter()
            .filter(|d| caller.sees(state, "Device", id_of(d)))
            .find(|d| params.iter().all(|(k, v)| crate::store::matches(d, k, v)))
    } else if p.content_type == CONTENT_TYPE_PING && is_host(dest) {
        return Ok(dest.to_owned());
    } else {
        None
    };
    let device = device.ok_or(PushError::NoDevice)?;
    match device["url"].as_str() {
        Some(u) if !u.is_empty() => Ok(u.to_owned()),
        _ => Err(PushError::NoUrl),
    }
}

/// An IPv4 address or a host name.
fn is_host(s: &str) -> bool {
    s.parse::<std::net::Ipv4Addr>().is_ok()
        || (!s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            }))
}

/// What the console shows of a push: the answer, and where the time went.
pub(in crate::http) struct ConsoleAnswer {
    /// The HTTP status the caller would get.
    pub(in crate::http) status: u16,
    /// Its content type.
    pub(in crate::http) content_type: String,
    /// Its body.
    pub(in crate::http) body: String,
    /// The relay → agent → relay round trip, µs.
    pub(in crate::http) agent_us: Option<u64>,
    /// Of that, the agent's push to the device and its answer, µs.
    pub(in crate::http) device_us: Option<u64>,
}

/// For the console: `$push` of `body` (the operation's JSON parameters) through `agent` as
/// operator `client_id`.
pub(in crate::http) async fn console_push(
    state: &RelayState,
    client_id: &str,
    agent: &Value,
    body: &[u8],
) -> ConsoleAnswer {
    let caller = Caller {
        client_id: client_id.to_owned(),
        agents: Vec::new(),
        tenant: Vec::new(),
    };
    let resp = push_counted(state, &caller, agent, body, Instant::now()).await;
    let status = resp.status().as_u16();
    let (content_type, agent_us, device_us) = {
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (
            header(axum::http::header::CONTENT_TYPE.as_str()).unwrap_or_default(),
            header(AGENT_US).and_then(|v| v.parse().ok()),
            header(DEVICE_US).and_then(|v| v.parse().ok()),
        )
    };
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    ConsoleAnswer {
        status,
        content_type,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        agent_us,
        device_us,
    }
}

/// Hands a push to the push log (the console's), and gives back its response unchanged.
#[allow(clippy::too_many_arguments)] // one log record, its parts named at the call
async fn log_push(
    state: &RelayState,
    caller: &Caller,
    agent: &Value,
    (destination, content_type, pushed): (String, String, String),
    outcome: &str,
    took: Duration,
    arrived: Instant,
    resp: Response,
) -> Response {
    use crate::store::{MAX_LOGGED_BODY, MessageKeys, PushRecord, truncated};
    let (parts, body) = resp.into_parts();
    // The bodies answered here are built whole in memory: this reads them back, no wait.
    let answer = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let at_ms = crate::fhir::now_ms() - i64::try_from(arrived.elapsed().as_millis()).unwrap_or(0);
    state.push_log.record(PushRecord {
        at_ms,
        caller: caller.client_id.clone(),
        agent_id: id_of(agent).to_owned(),
        destination,
        content_type,
        outcome: outcome.to_owned(),
        status: parts.status.as_u16(),
        latency_us: i64::try_from(took.as_micros()).unwrap_or(i64::MAX),
        keys: MessageKeys::of(&pushed),
        request_bytes: i64::try_from(pushed.len()).unwrap_or(i64::MAX),
        request: if pushed.len() > MAX_LOGGED_BODY {
            truncated(&pushed, MAX_LOGGED_BODY)
        } else {
            pushed
        },
        answer: truncated(&String::from_utf8_lossy(&answer), MAX_LOGGED_BODY),
    });
    Response::from_parts(parts, Body::from(answer))
}

/// A push as the `$push` route makes it (the console's too): counted in the metrics, logged
/// in one line, and handed to the push log.
pub(super) async fn push_counted(
    state: &RelayState,
    caller: &Caller,
    agent: &Value,
    bytes: &[u8],
    arrived: Instant,
) -> Response {
    let parsed = PushRequest::from_json(bytes, state.config.max_body);
    // What the push log keeps of the request (a copy only when there is a log).
    let logged = match (&parsed, state.push_log.is_on()) {
        (Ok(p), true) => Some((
            p.destination.clone(),
            p.content_type.clone(),
            p.body.clone(),
        )),
        _ => None,
    };
    let result = match parsed {
        Ok(params) => push(state, caller, agent, params, arrived).await,
        Err(e) => Err(PushError::Parameters(e)),
    };
    let outcome = push_outcome(&result);
    let took = arrived.elapsed();
    state.sessions.metrics.push(outcome, took);
    // One line per push: who, to whom, what came of it, how long it took. The reason is
    // the relay's own (not connected, timed out, no such device); what an agent or a
    // device answered may hold patient data and stays out of the log.
    let failure = result.as_ref().err().map(|e| match e {
        PushError::Answered(_) => "the agent or device answered with an error".to_owned(),
        PushError::Parameters(_) => "invalid $push parameters".to_owned(),
        other => other.to_string(),
    });
    tracing::info!(
        client = caller.client_id,
        agent = id_of(agent),
        outcome,
        ms = took.as_millis() as u64,
        error = failure.as_deref().unwrap_or(""),
        "push"
    );
    let resp = result.unwrap_or_else(IntoResponse::into_response);
    match logged {
        Some(request) => {
            log_push(state, caller, agent, request, outcome, took, arrived, resp).await
        }
        None => resp,
    }
}
