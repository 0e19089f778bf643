//! Agent operations: `$push`, `$status`, `$bulk-status`, `$reload-config`, `$fetch-logs`,
//! `$stats`, `$upgrade`.
//!
//! A push's `waitTimeout` counts from the request's arrival. With `waitForResponse` the caller
//! gets the device's answer, or a 400 saying why there is none. Without it, "All OK" means the
//! message was written to the agent's live WebSocket (the agent had answered its last heartbeat
//! in time and was draining its socket) within `waitTimeout`: it is not an acknowledgement
//! from the agent or the device. If the agent stops after that, what the operating system's
//! socket buffers still held is lost; the relay itself holds at most the socket's unsent-data
//! bound (see `RelayConfig::max_unsent`).

use std::sync::Arc;
use std::time::Duration;

use agent_protocol::{
    AgentMessage, CONTENT_TYPE_PING, LogsRequest, PushRequest, ReloadConfigRequest, StatsRequest,
    TransmitRequest, UpgradeRequest,
};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::RelayState;
use super::body::body_bytes;
use super::extract::Caller;
use super::response::{all_ok, bad_request, fhir, not_found, outcome, raw, store_failed};
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

/// Default wait for `$reload-config`, `$fetch-logs`, `$stats` (Medplum: 5 s) and `$upgrade`
/// ([`UPGRADE_TIMEOUT`]).
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `$upgrade` waits for the agent's answer by default (45 s): longer than an Outpost
/// agent's default `upgradeWindowMs` (30 s) with time to spare, so that a new version that
/// hangs is rolled back and the old one reconnects and answers why before the caller gives up.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(45);

/// Why a push got no answer from the device. Every case is a 400 OperationOutcome saying what
/// happened (never a 5xx: Medplum's client retries those, and would push twice).
#[derive(Debug, thiserror::Error)]
enum PushError {
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
struct AnsweredError(String);

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

/// Finds the agent a request is about: by path id, or by `?identifier=` among the Agents the
/// caller sees.
fn find_agent(
    state: &RelayState,
    caller: &Caller,
    id: Option<&str>,
    query: &[(String, String)],
) -> Result<Arc<Value>, Response> {
    if let Some(id) = id {
        return state
            .registry
            .cached("Agent", id)
            .ok_or_else(|| not_found(format!("Agent/{id} not found")));
    }
    match query.iter().find(|(k, _)| k == "identifier") {
        Some((k, v)) => state
            .registry
            .all_cached("Agent")
            .into_iter()
            .filter(|a| caller.sees(state, "Agent", id_of(a)))
            .find(|a| crate::store::matches(a, k, v))
            .ok_or_else(|| not_found(format!("no Agent with identifier {v}"))),
        None => Err(bad_request("Must specify agent ID or identifier")),
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

/// `$status` for one agent: `Parameters` with `status`, `version`, `lastUpdated`, and (an
/// Outpost addition) a `channelProblem` for each channel whose target Outpost cannot run.
async fn status_parameters(state: &RelayState, agent_id: &str) -> Value {
    let p = state.router.presence(agent_id).await;
    let mut parameter = vec![
        json!({"name": "status", "valueCode": p.status}),
        json!({"name": "version", "valueString": p.version}),
    ];
    if let Some(t) = p.last_updated {
        parameter.push(json!({"name": "lastUpdated", "valueInstant": t}));
    }
    if let Some(agent) = state.registry.cached("Agent", agent_id) {
        for problem in crate::inbound::target_problems(&state.registry, &agent) {
            parameter.push(json!({"name": "channelProblem", "valueString": problem}));
        }
    }
    json!({"resourceType": "Parameters", "parameter": parameter})
}

/// Agents for a bulk operation: every Agent the caller sees matching the query (`_id=a,b`,
/// `name=`, ...).
async fn bulk_agents(
    state: &RelayState,
    caller: &Caller,
    query: &[(String, String)],
) -> Result<Vec<Arc<Value>>, Response> {
    if let Some((_, c)) = query.iter().find(|(k, _)| k == "_count")
        && c.parse::<usize>().map_or(true, |c| c > 100)
    {
        return Err(bad_request("'_count' must be at most 100"));
    }
    let mut agents = state
        .registry
        .search("Agent", query, usize::MAX)
        .await
        .map_err(|e| store_failed(&e))?;
    agents.retain(|a| caller.sees(state, "Agent", id_of(a)));
    if agents.is_empty() {
        return Err(bad_request("No agent(s) for given query"));
    }
    Ok(agents)
}

fn bulk_bundle(entries: Vec<(Arc<Value>, Value)>) -> Response {
    let entry: Vec<Value> = entries
        .into_iter()
        .map(|(agent, result)| {
            json!({"resource": {"resourceType": "Parameters", "parameter": [
                {"name": "agent", "resource": *agent},
                {"name": "result", "resource": result},
            ]}})
        })
        .collect();
    fhir(
        StatusCode::OK,
        &json!({"resourceType": "Bundle", "type": "collection", "entry": entry}),
    )
}

/// `$bulk-status`.
async fn bulk_status(state: &RelayState, caller: &Caller, query: &[(String, String)]) -> Response {
    match bulk_agents(state, caller, query).await {
        Ok(agents) => {
            let mut entries = Vec::with_capacity(agents.len());
            for a in agents {
                let s = status_parameters(state, id_of(&a)).await;
                entries.push((a, s));
            }
            bulk_bundle(entries)
        }
        Err(r) => r,
    }
}

/// Which agent-side operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentOp {
    /// `$reload-config`
    ReloadConfig,
    /// `$fetch-logs`
    FetchLogs,
    /// `$stats`
    Stats,
    /// `$upgrade`
    Upgrade,
    /// `$dead-letters` (Outpost): the agent's dead letters; `?retry=ID` sends one again.
    DeadLetters,
}

/// Runs an agent-side operation on one agent; the success body, or a 400 response.
async fn agent_op(
    state: &RelayState,
    agent_id: &str,
    op: AgentOp,
    query: &[(String, String)],
    arrived: Instant,
) -> Result<Value, Response> {
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let cb = format!("Agent/{agent_id}-{}", uuid::Uuid::new_v4());
    let callback = Some(cb.clone());
    let timeout = match (q("timeout").and_then(|t| t.parse::<u64>().ok()), op) {
        (Some(t), _) => Duration::from_millis(t.min(56_000)),
        (None, AgentOp::Upgrade) => UPGRADE_TIMEOUT,
        (None, _) => OP_TIMEOUT,
    };
    if op == AgentOp::ReloadConfig {
        // The agent is about to read its configuration: say what of it cannot run here.
        state.sessions.inbound.check_targets(agent_id);
    }
    let msg = match op {
        AgentOp::ReloadConfig => AgentMessage::ReloadConfigRequest(ReloadConfigRequest {
            access_token: None,
            callback,
        }),
        AgentOp::FetchLogs => AgentMessage::LogsRequest(LogsRequest {
            limit: match q("limit").map(|l| l.parse::<u32>()) {
                None => None,
                Some(Ok(l)) => Some(l),
                Some(Err(_)) => {
                    return Err(bad_request("'limit' must be a non-negative integer"));
                }
            },
            callback,
        }),
        AgentOp::Stats => AgentMessage::StatsRequest(StatsRequest { callback }),
        AgentOp::Upgrade => {
            let release = crate::release::resolve(
                &state.registry,
                q("version").as_deref(),
                q("binary").as_deref(),
                q("sha256").as_deref(),
            )
            .await
            .map_err(|e| bad_request(e.to_string()))?;
            AgentMessage::UpgradeRequest(UpgradeRequest {
                access_token: None,
                version: Some(release.version),
                force: q("force").map(|f| f == "true"),
                binary: Some(release.binary),
                sha256: Some(release.sha256),
                callback,
            })
        }
        AgentOp::DeadLetters => {
            let retry = match q("retry").map(|r| r.parse::<i64>()) {
                None => None,
                Some(Ok(id)) => Some(id),
                Some(Err(_)) => return Err(bad_request("'retry' must be a dead letter's id")),
            };
            AgentMessage::DeadLettersRequest(agent_protocol::DeadLettersRequest { retry, callback })
        }
    };
    // An agent that accepts an upgrade disconnects to run its new version, which answers on
    // its next connection (or the old version does, after a rollback).
    let awaited = (op == AgentOp::Upgrade).then(|| state.router.local().await_answer(&cb));
    if let (Some(_), Some(cluster)) = (&awaited, state.router.cluster()) {
        // Its next connection may reach another relay process.
        cluster.await_answer(&cb, timeout).await;
    }
    let asked = state
        .router
        .ask(agent_id, &cb, msg, arrived + timeout, timeout)
        .await;
    let answer = match (asked, awaited) {
        (Ok(m), _) => m,
        (Err(AskError::Disconnected(_)), Some(awaited)) => {
            match awaited.until(arrived + timeout).await {
                Some(m) => m,
                None => {
                    return Err(PushError::Agent(AskError::Timeout {
                        agent: agent_id.to_owned(),
                        ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                    })
                    .into_response());
                }
            }
        }
        (Err(e), _) => return Err(PushError::Agent(e).into_response()),
    };
    match (answer, op) {
        (AgentMessage::Error(e), _) => Err(bad_request(e.body)),
        (AgentMessage::ReloadConfigResponse(r), AgentOp::ReloadConfig)
        | (AgentMessage::UpgradeResponse(r), AgentOp::Upgrade)
            if r.status_code < 400 =>
        {
            Ok(
                serde_json::to_value(agent_protocol::OperationOutcome::all_ok())
                    .unwrap_or_default(),
            )
        }
        (AgentMessage::LogsResponse(r), AgentOp::FetchLogs) if r.status_code < 400 => {
            let lines: Vec<String> = r
                .logs
                .iter()
                .map(|l| serde_json::to_string(l).unwrap_or_default())
                .collect();
            Ok(json!({"resourceType": "Parameters", "parameter": [
                {"name": "logs", "valueString": lines.join("\n")}
            ]}))
        }
        (AgentMessage::StatsResponse(r), AgentOp::Stats) if r.status_code < 400 => {
            Ok(json!({"resourceType": "Parameters", "parameter": [
                {"name": "stats", "valueString": r.stats.to_string()}
            ]}))
        }
        (AgentMessage::DeadLettersResponse(r), AgentOp::DeadLetters) if r.status_code == 404 => {
            Err(not_found(format!(
                "Agent/{agent_id} has no dead letter {}",
                q("retry").unwrap_or_default()
            )))
        }
        (AgentMessage::DeadLettersResponse(r), AgentOp::DeadLetters) if r.status_code < 400 => {
            let mut parameter: Vec<Value> = r
                .dead_letters
                .iter()
                .map(|d| json!({"name": "deadLetter", "valueString": d.to_string()}))
                .collect();
            if let Some(id) = r.retried {
                parameter.push(json!({"name": "retried", "valueInteger": id}));
            }
            Ok(json!({"resourceType": "Parameters", "parameter": parameter}))
        }
        (other, _) => Err(bad_request(format!(
            "Invalid response received from agent: {}",
            other.kind()
        ))),
    }
}

/// An agent-side operation on one agent (path id) or on every agent a query matches.
async fn agent_op_route(
    state: &RelayState,
    caller: &Caller,
    id: Option<&str>,
    op: AgentOp,
    query: &[(String, String)],
    arrived: Instant,
) -> Response {
    if let Some(id) = id {
        if state.registry.cached("Agent", id).is_none() {
            return not_found(format!("Agent/{id} not found"));
        }
        return match agent_op(state, id, op, query, arrived).await {
            Ok(v) => fhir(StatusCode::OK, &v),
            Err(r) => r,
        };
    }
    // The operation's own parameters are not Agent search parameters.
    let filters: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "version" | "force" | "timeout" | "limit" | "retry" | "binary" | "sha256"
            )
        })
        .cloned()
        .collect();
    let agents = match bulk_agents(state, caller, &filters).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let results = futures_util::future::join_all(agents.iter().map(|a| async {
        let result = match agent_op(state, id_of(a), op, query, arrived).await {
            Ok(v) => v,
            Err(resp) => outcome_of(resp).await,
        };
        (a.clone(), result)
    }))
    .await;
    bulk_bundle(results)
}

/// A POST body's `Parameters` as `(name, value)` pairs (integers, strings, booleans, codes);
/// an empty body has none.
async fn body_parameters(
    state: &RelayState,
    body: Body,
) -> Result<Vec<(String, String)>, Response> {
    let bytes = body_bytes(state, body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| bad_request(format!("body is not JSON: {e}")))?;
    if v["resourceType"] != "Parameters" {
        return Err(bad_request("body must be a Parameters resource"));
    }
    Ok(v["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["name"].as_str()?.to_owned();
            let value = ["valueInteger", "valueString", "valueBoolean", "valueCode"]
                .iter()
                .find_map(|k| match &p[*k] {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                })?;
            Some((name, value))
        })
        .collect())
}

/// The OperationOutcome JSON inside an error response.
async fn outcome_of(resp: Response) -> Value {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// One dispatch point for every operation route.
#[allow(clippy::too_many_arguments)] // the parts of one FHIR operation request
pub(crate) async fn operation(
    state: &RelayState,
    caller: &Caller,
    ty: &str,
    id: Option<&str>,
    op: &str,
    query: &[(String, String)],
    method: Method,
    body: Body,
) -> Response {
    let arrived = Instant::now();
    match (ty, op, &method) {
        ("Agent", "push", &Method::POST) => {
            let agent = match find_agent(state, caller, id, query) {
                Ok(a) => a,
                Err(r) => return r,
            };
            let bytes = match body_bytes(state, body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            push_counted(state, caller, &agent, &bytes, arrived).await
        }
        ("Agent", "status", &Method::GET) => match find_agent(state, caller, id, query) {
            Ok(agent) => fhir(
                StatusCode::OK,
                &status_parameters(state, id_of(&agent)).await,
            ),
            Err(r) => r,
        },
        ("Agent", "bulk-status", &Method::GET) if id.is_none() => {
            bulk_status(state, caller, query).await
        }
        ("Agent", "reload-config", &(Method::GET | Method::POST)) => {
            agent_op_route(state, caller, id, AgentOp::ReloadConfig, query, arrived).await
        }
        ("Agent", "fetch-logs", &(Method::GET | Method::POST)) => {
            // `limit` may also come as a POST body's Parameters (`valueInteger`).
            let mut query = query.to_vec();
            if method == Method::POST {
                match body_parameters(state, body).await {
                    Ok(params) => query.extend(params),
                    Err(r) => return r,
                }
            }
            agent_op_route(state, caller, id, AgentOp::FetchLogs, &query, arrived).await
        }
        ("Agent", "stats", &(Method::GET | Method::POST)) => {
            agent_op_route(state, caller, id, AgentOp::Stats, query, arrived).await
        }
        ("Agent", "upgrade", &(Method::GET | Method::POST)) => {
            agent_op_route(state, caller, id, AgentOp::Upgrade, query, arrived).await
        }
        ("Agent", "dead-letters", &(Method::GET | Method::POST)) if id.is_some() => {
            agent_op_route(state, caller, id, AgentOp::DeadLetters, query, arrived).await
        }
        _ => not_found(format!("Unsupported operation {method} {ty}/${op}")),
    }
}

/// For the console: an agent-side operation (`reload-config`, `fetch-logs`, `stats`,
/// `upgrade`, `dead-letters`) on one agent, as `$op` runs it; the answer's JSON, or its error text.
pub(super) async fn console_agent_op(
    state: &RelayState,
    agent_id: &str,
    op: &str,
    query: &[(String, String)],
) -> Result<Value, String> {
    let op = match op {
        "reload-config" => AgentOp::ReloadConfig,
        "fetch-logs" => AgentOp::FetchLogs,
        "stats" => AgentOp::Stats,
        "upgrade" => AgentOp::Upgrade,
        "dead-letters" => AgentOp::DeadLetters,
        other => return Err(format!("no operation {other}")),
    };
    match agent_op(state, agent_id, op, query, Instant::now()).await {
        Ok(v) => Ok(v),
        Err(resp) => {
            let v = outcome_of(resp).await;
            Err(v["issue"][0]["details"]["text"]
                .as_str()
                .unwrap_or("the agent gave no answer")
                .to_owned())
        }
    }
}

/// What the console shows of a push: the answer, and where the time went.
pub(super) struct ConsoleAnswer {
    /// The HTTP status the caller would get.
    pub(super) status: u16,
    /// Its content type.
    pub(super) content_type: String,
    /// Its body.
    pub(super) body: String,
    /// The relay → agent → relay round trip, µs.
    pub(super) agent_us: Option<u64>,
    /// Of that, the agent's push to the device and its answer, µs.
    pub(super) device_us: Option<u64>,
}

/// For the console: `$push` of `body` (the operation's JSON parameters) through `agent` as
/// operator `client_id`.
pub(super) async fn console_push(
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
async fn push_counted(
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
