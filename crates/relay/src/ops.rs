//! Agent operations: `$push`, `$status`, `$bulk-status`, `$reload-config`, `$fetch-logs`,
//! `$upgrade`.

use std::sync::Arc;
use std::time::Duration;

use agent_protocol::{
    AgentMessage, CONTENT_TYPE_PING, LogsRequest, PushRequest, ReloadConfigRequest,
    TransmitRequest, UpgradeRequest,
};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::agents::{NotConnected, Reply};
use crate::http::{all_ok, bad_request, fhir, not_found, outcome, raw};
use crate::state::RelayState;
use crate::store::id_of;

/// Default wait for `$reload-config`, `$fetch-logs` (Medplum: 5 s) and `$upgrade` (45 s).
const OP_TIMEOUT: Duration = Duration::from_secs(5);
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(45);

/// Finds the agent a request is about: by path id, or by `?identifier=`.
pub fn find_agent(
    state: &RelayState,
    id: Option<&str>,
    query: &[(String, String)],
) -> Result<Arc<Value>, Response> {
    if let Some(id) = id {
        return state
            .store
            .get("Agent", id)
            .ok_or_else(|| not_found(format!("Agent/{id} not found")));
    }
    let identifier = query.iter().find(|(k, _)| k == "identifier");
    match identifier {
        Some((k, v)) => state
            .store
            .search("Agent", &[(k.clone(), v.clone())], usize::MAX)
            .into_iter()
            .next()
            .ok_or_else(|| not_found(format!("no Agent with identifier {v}"))),
        None => Err(bad_request("Must specify agent ID or identifier")),
    }
}

/// `POST /Agent/{id}/$push` and `POST /Agent/$push?identifier=`.
pub async fn push(state: &RelayState, agent: &Value, body: &[u8]) -> Response {
    let agent_id = id_of(agent).to_owned();
    let params = match PushRequest::from_json(body, state.config.max_body) {
        Ok(p) => p,
        Err(e) => return bad_request(e.to_string()),
    };
    if agent["status"].as_str() == Some("off") && params.content_type != CONTENT_TYPE_PING {
        return bad_request("Agent is currently disabled. Agent.status is 'off'");
    }
    let url = match destination_url(state, &params) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let mut request = TransmitRequest {
        remote: url,
        content_type: params.content_type.clone(),
        body: params.body,
        return_ack: params.return_ack,
        ..TransmitRequest::default()
    };
    if !params.wait_for_response {
        // Medplum answers "All OK" even when nobody is listening; we say so instead.
        let msg = AgentMessage::TransmitRequest(request);
        let mut sent = state.agents.send(&agent_id, &msg).await;
        if sent.is_err()
            && let Some(cluster) = &state.cluster
        {
            sent = cluster.send(&agent_id, &msg).await;
        }
        return match sent {
            Ok(()) => all_ok(),
            Err(NotConnected) => not_connected(&agent_id),
        };
    }
    let callback = format!("Agent/{agent_id}-{}", uuid::Uuid::new_v4());
    request.callback = Some(callback.clone());
    let timeout = Duration::from_millis(params.wait_timeout);
    match ask(
        state,
        &agent_id,
        &callback,
        AgentMessage::TransmitRequest(request),
        timeout,
    )
    .await
    {
        Ok(AgentMessage::TransmitResponse(r)) if !r.is_error() => {
            let status = r
                .status_code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
            raw(status, &r.content_type, r.body)
        }
        Ok(AgentMessage::TransmitResponse(r)) => bad_request(r.body),
        Ok(AgentMessage::Error(e)) => bad_request(e.body),
        Ok(other) => bad_request(format!("unexpected answer from agent: {}", other.kind())),
        Err(r) => r,
    }
}

fn not_connected(agent_id: &str) -> Response {
    bad_request(format!(
        "Agent/{agent_id} is not connected: the message was not delivered"
    ))
}

/// Why an agent request got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AskError {
    /// No live socket for the agent.
    NotConnected,
    /// The socket closed before the answer.
    Disconnected,
    /// No answer in time.
    Timeout(Duration),
    /// The relay process holding the agent's socket went away before it answered.
    OwnerGone,
}

impl AskError {
    /// What happened, in the words callers see.
    pub(crate) fn text(&self, agent_id: &str) -> String {
        match self {
            AskError::NotConnected => {
                format!("Agent/{agent_id} is not connected: the message was not delivered")
            }
            AskError::Disconnected => format!("Agent/{agent_id} disconnected before answering"),
            AskError::OwnerGone => format!(
                "the relay process holding Agent/{agent_id}'s connection went away before it answered"
            ),
            AskError::Timeout(t) => format!(
                "Timeout: no answer from Agent/{agent_id} within {} ms",
                t.as_millis()
            ),
        }
    }
}

/// Sends a request carrying `callback` and waits for the answer.
pub(crate) async fn ask_agent(
    state: &RelayState,
    agent_id: &str,
    callback: &str,
    msg: AgentMessage,
    timeout: Duration,
) -> Result<AgentMessage, AskError> {
    let (mut rx, remote_owner) = match state.agents.request(agent_id, callback, &msg).await {
        Ok(rx) => (rx, None),
        // Not here: maybe on another relay process.
        Err(NotConnected) => match &state.cluster {
            Some(cluster) => {
                let (rx, owner) = cluster
                    .request(&state.agents, agent_id, callback, &msg, timeout)
                    .await
                    .map_err(|NotConnected| AskError::NotConnected)?;
                (rx, Some(owner))
            }
            None => return Err(AskError::NotConnected),
        },
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        // Waiting on another process: look at it every second, so that its death fails the
        // request at once rather than at the timeout.
        let slice = if remote_owner.is_some() {
            Duration::from_secs(1)
        } else {
            timeout
        };
        let until = (tokio::time::Instant::now() + slice).min(deadline);
        match tokio::time::timeout_at(until, &mut rx).await {
            Ok(Ok(Reply::Message(m))) => return Ok(m),
            Ok(Ok(Reply::Disconnected)) | Ok(Err(_)) => return Err(AskError::Disconnected),
            Err(_) if until >= deadline => {
                state.agents.cancel(callback);
                return Err(AskError::Timeout(timeout));
            }
            Err(_) => {
                if let (Some(cluster), Some(owner)) = (&state.cluster, &remote_owner)
                    && !cluster.alive(owner).await
                {
                    state.agents.cancel(callback);
                    return Err(AskError::OwnerGone);
                }
            }
        }
    }
}

/// [`ask_agent`] for an HTTP caller: every failure is a 400 OperationOutcome saying what
/// happened (never a 5xx: Medplum's client retries those, and would push twice).
async fn ask(
    state: &RelayState,
    agent_id: &str,
    callback: &str,
    msg: AgentMessage,
    timeout: Duration,
) -> Result<AgentMessage, Response> {
    ask_agent(state, agent_id, callback, msg, timeout)
        .await
        .map_err(|e| match e {
            AskError::Timeout(_) => outcome(StatusCode::BAD_REQUEST, "timeout", e.text(agent_id)),
            _ => bad_request(e.text(agent_id)),
        })
}

/// The `remote` for a push: the destination Device's `url` (or, for a ping, the host itself).
fn destination_url(state: &RelayState, p: &PushRequest) -> Result<String, Response> {
    let dest = p.destination.as_str();
    let device = if let Some(id) = dest.strip_prefix("Device/") {
        state.store.get("Device", id)
    } else if let Some(query) = dest.strip_prefix("Device?") {
        let params: Vec<(String, String)> = url_params(query);
        state.store.search("Device", &params, 1).into_iter().next()
    } else if p.content_type == CONTENT_TYPE_PING && is_host(dest) {
        return Ok(dest.to_owned());
    } else {
        None
    };
    let device = device.ok_or_else(|| bad_request("Destination device not found"))?;
    match device["url"].as_str() {
        Some(u) if !u.is_empty() => Ok(u.to_owned()),
        _ => Err(bad_request("Destination device missing url")),
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

/// `a=1&b=2` → pairs, percent-decoded.
pub fn url_params(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// `$status` for one agent: `Parameters` with `status`, `version`, `lastUpdated`.
pub async fn status_parameters(state: &RelayState, agent_id: &str) -> Value {
    let mut p = state.agents.presence(agent_id);
    // Connected to another relay process, or gone from this one: the cluster knows.
    if p.status != "connected"
        && let Some(c) = &state.cluster
        && let Some(shared) = c.presence(agent_id).await
    {
        p = shared;
    }
    let mut parameter = vec![
        json!({"name": "status", "valueCode": p.status}),
        json!({"name": "version", "valueString": p.version}),
    ];
    if let Some(t) = p.last_updated {
        parameter.push(json!({"name": "lastUpdated", "valueInstant": t}));
    }
    json!({"resourceType": "Parameters", "parameter": parameter})
}

/// Agents for a bulk operation: every Agent matching the query (`_id=a,b`, `name=`, ...).
fn bulk_agents(
    state: &RelayState,
    query: &[(String, String)],
) -> Result<Vec<Arc<Value>>, Response> {
    if let Some((_, c)) = query.iter().find(|(k, _)| k == "_count")
        && c.parse::<usize>().map_or(true, |c| c > 100)
    {
        return Err(bad_request("'_count' must be at most 100"));
    }
    let agents = state.store.search("Agent", query, usize::MAX);
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
pub async fn bulk_status(state: &RelayState, query: &[(String, String)]) -> Response {
    match bulk_agents(state, query) {
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
pub enum AgentOp {
    /// `$reload-config`
    ReloadConfig,
    /// `$fetch-logs`
    FetchLogs,
    /// `$upgrade`
    Upgrade,
}

/// Runs an agent-side operation on one agent; the success body, or a 400 response.
async fn agent_op(
    state: &RelayState,
    agent_id: &str,
    op: AgentOp,
    query: &[(String, String)],
) -> Result<Value, Response> {
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let callback = Some(format!("Agent/{agent_id}-{}", uuid::Uuid::new_v4()));
    let cb = callback.clone().unwrap_or_default();
    let timeout = match (q("timeout").and_then(|t| t.parse::<u64>().ok()), op) {
        (Some(t), _) => Duration::from_millis(t.min(56_000)),
        (None, AgentOp::Upgrade) => UPGRADE_TIMEOUT,
        (None, _) => OP_TIMEOUT,
    };
    let msg = match op {
        AgentOp::ReloadConfig => AgentMessage::ReloadConfigRequest(ReloadConfigRequest {
            access_token: None,
            callback,
        }),
        AgentOp::FetchLogs => AgentMessage::LogsRequest(LogsRequest {
            limit: q("limit").and_then(|l| l.parse().ok()),
            callback,
        }),
        AgentOp::Upgrade => AgentMessage::UpgradeRequest(UpgradeRequest {
            access_token: None,
            version: q("version"),
            force: q("force").map(|f| f == "true"),
            callback,
        }),
    };
    match (ask(state, agent_id, &cb, msg, timeout).await?, op) {
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
        (other, _) => Err(bad_request(format!(
            "Invalid response received from agent: {}",
            other.kind()
        ))),
    }
}

/// An agent-side operation on one agent (path id) or on every agent a query matches.
pub async fn agent_op_route(
    state: &RelayState,
    id: Option<&str>,
    op: AgentOp,
    query: &[(String, String)],
) -> Response {
    if let Some(id) = id {
        if state.store.get("Agent", id).is_none() {
            return not_found(format!("Agent/{id} not found"));
        }
        return match agent_op(state, id, op, query).await {
            Ok(v) => fhir(StatusCode::OK, &v),
            Err(r) => r,
        };
    }
    // The operation's own parameters are not Agent search parameters.
    let filters: Vec<(String, String)> = query
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "version" | "force" | "timeout" | "limit"))
        .cloned()
        .collect();
    let agents = match bulk_agents(state, &filters) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let results = futures_util::future::join_all(agents.iter().map(|a| async {
        let result = match agent_op(state, id_of(a), op, query).await {
            Ok(v) => v,
            Err(resp) => outcome_of(resp).await,
        };
        (a.clone(), result)
    }))
    .await;
    bulk_bundle(results)
}

/// The OperationOutcome JSON inside an error response.
async fn outcome_of(resp: Response) -> Value {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}
