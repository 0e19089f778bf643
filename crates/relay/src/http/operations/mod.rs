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
//!
//! `$push` itself, its metrics, log line and push-log record, is in `push.rs`; this file routes
//! every operation and runs the ones the agent answers.

use std::sync::Arc;
use std::time::Duration;

use agent_protocol::{
    AgentMessage, LogsRequest, ReloadConfigRequest, StatsRequest, UpgradeRequest,
};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::RelayState;
use super::body::body_bytes;
use super::extract::Caller;
use super::response::{bad_request, fhir, not_found, store_failed};
use crate::agents::AskError;
use crate::fhir::id_of;

mod push;

pub(super) use push::console_push;
use push::{PushError, push_counted};

/// Default wait for `$reload-config`, `$fetch-logs`, `$stats` (Medplum: 5 s) and `$upgrade`
/// ([`UPGRADE_TIMEOUT`]).
const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `$upgrade` waits for the agent's answer by default (45 s): longer than an Outpost
/// agent's default `upgradeWindowMs` (30 s) with time to spare, so that a new version that
/// hangs is rolled back and the old one reconnects and answers why before the caller gives up.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(45);

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
