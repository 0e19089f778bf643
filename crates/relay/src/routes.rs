//! The HTTP routes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State, WebSocketUpgrade};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::{Value, json};

use crate::auth::{self, check_client, parse_basic};
use crate::http::{
    Caller, all_ok, authenticate, bad_request, fhir, forbidden_for_agent, not_found, now_secs,
    outcome, parse_json, read_body,
};
use crate::ops::{self, AgentOp, url_params};
use crate::orders;
use crate::state::RelayState;
use crate::store::{RESOURCE_TYPES, id_of};

type S = State<Arc<RelayState>>;

/// The relay's routes.
pub fn router(state: Arc<RelayState>) -> Router {
    Router::new()
        .route("/oauth2/token", post(token))
        .route("/ws/agent", get(ws_agent))
        .route("/healthz", get(|| async { "ok" }))
        .route("/outpost/inbound", get(inbound_list))
        .route("/outpost/notify/{subscription}", post(notify))
        .route("/fhir/R4/{ty}", any(type_level))
        .route("/fhir/R4/{ty}/{id}", any(instance_level))
        .route("/fhir/R4/{ty}/{id}/{op}", any(instance_op))
        .fallback(|| async { not_found("Not found: no such route") })
        .with_state(state)
}

/// `$push`, `%24push` → `push`.
fn op_name(s: &str) -> Option<&str> {
    s.strip_prefix('$').or_else(|| s.strip_prefix("%24"))
}

fn query_pairs(q: &Option<String>) -> Vec<(String, String)> {
    q.as_deref().map(url_params).unwrap_or_default()
}

/// `POST /oauth2/token`: client credentials, from the form or HTTP Basic.
async fn token(State(state): S, headers: HeaderMap, body: Body) -> Response {
    let error = |status: StatusCode, error: &str, description: &str| {
        (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"error": error, "error_description": description}).to_string(),
        )
            .into_response()
    };
    let bytes = match read_body(body, 64 * 1024, state.config.body_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let form = url_params(&String::from_utf8_lossy(&bytes));
    let field = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    let grant = field("grant_type").unwrap_or_default();
    if grant != "client_credentials" {
        return error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "Unsupported grant type: only client_credentials is supported",
        );
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_basic);
    let (id, secret) = match (field("client_id"), field("client_secret"), basic) {
        (Some(id), Some(secret), _) => (id, secret),
        (_, _, Some((id, secret))) => (id, secret),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing client_id or client_secret",
            );
        }
    };
    if !check_client(&state.store, &state.tokens, &id, &secret) {
        tracing::warn!(client = id, "token request with invalid client credentials");
        return error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "Invalid client credentials",
        );
    }
    let access_token = state.tokens.issue(&id, now_secs());
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": state.tokens.ttl(),
            "scope": "openid",
        })
        .to_string(),
    )
        .into_response()
}

async fn ws_agent(
    State(state): S,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let max = state.config.max_ws_message;
    // Small buffers: a thousand idle agents should not cost 128 KiB each (tungstenite's
    // default read buffer). A socket whose unsent data passes twice the largest message (an
    // agent that stopped reading) fails its writes instead of growing without bound.
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(2 * max + 64 * 1024)
        .on_upgrade(move |socket| crate::ws::serve(state, socket, peer))
}

/// An order-push Subscription must be usable: its criteria, agent, device and format.
fn check_subscription(ty: &str, resource: &Value) -> Result<(), Response> {
    if ty != "Subscription" {
        return Ok(());
    }
    orders::target(resource)
        .map(|_| ())
        .map_err(|e| bad_request(format!("invalid order-push Subscription: {e}")))
}

/// A ServiceRequest written here goes to the order-push Subscriptions it matches.
fn after_write(state: &RelayState, ty: &str, resource: &Value, created: bool) {
    if ty != "ServiceRequest" {
        return;
    }
    let targets = orders::matching_targets(state, resource);
    if targets.is_empty() {
        return;
    }
    let event = if created {
        lab_orders::Event::New
    } else {
        lab_orders::Event::Update
    };
    let (queued, errors) = orders::enqueue(state, resource, event, &targets, &[]);
    tracing::info!(
        request = id_of(resource),
        queued,
        failed = errors.len(),
        "order queued for push"
    );
}

/// `POST /outpost/notify/{subscription}`: another FHIR server's rest-hook (Medplum, HAPI)
/// delivers a ServiceRequest, or a Bundle holding ServiceRequests and the resources they refer
/// to; each is converted and pushed as the named order-push Subscription says.
async fn notify(
    State(state): S,
    Path(sub_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = match authenticate(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !auth::agent_may(&state.store, &caller.client_id, false, "notify", None) {
        return forbidden_for_agent(&caller);
    }
    let payload = match json_body(&state, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(sub) = state.store.get("Subscription", &sub_id) else {
        return not_found(format!("Subscription/{sub_id} not found"));
    };
    let target = match orders::target(&sub) {
        Ok(Some(t)) if sub["status"].as_str() == Some("active") => t,
        Ok(Some(_)) => return bad_request(format!("Subscription/{sub_id} is not active")),
        Ok(None) => {
            return bad_request(format!(
                "Subscription/{sub_id} has no {} extension",
                orders::ORDER_PUSH_EXTENSION
            ));
        }
        Err(e) => return bad_request(format!("Subscription/{sub_id}: {e}")),
    };
    let resources: Vec<Value> = if payload["resourceType"] == "Bundle" {
        payload["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("resource").cloned())
            .collect()
    } else {
        vec![payload]
    };
    let interaction = headers
        .get("x-medplum-interaction")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if interaction == "delete" {
        return all_ok();
    }
    let (mut queued, mut errors, mut skipped) = (0, Vec::new(), 0);
    for sr in resources
        .iter()
        .filter(|r| r["resourceType"] == "ServiceRequest")
    {
        if !target
            .criteria
            .iter()
            .all(|(k, v)| orders::criterion(sr, k, v))
        {
            skipped += 1;
            continue;
        }
        let first_version = sr["meta"]["versionId"].as_str().is_none_or(|v| v == "1");
        let event = match interaction {
            "create" => lab_orders::Event::New,
            "update" => lab_orders::Event::Update,
            _ if first_version => lab_orders::Event::New,
            _ => lab_orders::Event::Update,
        };
        let (q, e) = orders::enqueue(&state, sr, event, std::slice::from_ref(&target), &resources);
        queued += q;
        errors.extend(e);
    }
    tracing::info!(
        subscription = sub_id,
        queued,
        failed = errors.len(),
        skipped,
        "order notification"
    );
    if queued == 0 && !errors.is_empty() {
        return bad_request(errors.join("; "));
    }
    let mut issue = vec![json!({"severity": "information", "code": "informational",
        "details": {"text": format!("{queued} order message(s) queued for {}; {skipped} not matching the criteria", target.device)}})];
    issue.extend(
        errors
            .iter()
            .map(|e| json!({"severity": "error", "code": "invalid", "details": {"text": e}})),
    );
    fhir(
        StatusCode::OK,
        &json!({"resourceType": "OperationOutcome", "issue": issue}),
    )
}

fn check_type(ty: &str) -> Result<(), Response> {
    if RESOURCE_TYPES.contains(&ty) {
        Ok(())
    } else {
        Err(not_found(format!("Unsupported resource type {ty}")))
    }
}

/// What a client application may see of a resource: never a secret.
fn public(r: &Value) -> Value {
    let mut v = r.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("secret");
    }
    v
}

async fn type_level(
    State(state): S,
    Path(ty): Path<String>,
    RawQuery(q): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = match authenticate(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !auth::agent_may(&state.store, &caller.client_id, false, &ty, None) {
        return forbidden_for_agent(&caller);
    }
    let query = query_pairs(&q);
    if let Some(op) = op_name(&ty) {
        // `/fhir/R4/$op` has no type; nothing supports that.
        return not_found(format!("Unsupported operation ${op}"));
    }
    if let Err(r) = check_type(&ty) {
        return r;
    }
    match method {
        Method::GET => search(&state, &ty, &query),
        Method::POST => {
            let mut resource = match resource_body(&state, body, &ty).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            if let Some(obj) = resource.as_object_mut() {
                obj.remove("id");
            }
            if let Err(r) = check_subscription(&ty, &resource) {
                return r;
            }
            match state.store.create(resource) {
                Ok(created) => {
                    after_write(&state, &ty, &created, true);
                    tracing::info!(
                        client = caller.client_id,
                        ty,
                        id = id_of(&created),
                        "created"
                    );
                    let mut r = fhir(StatusCode::CREATED, &public(&created));
                    if let Ok(loc) = format!("fhir/R4/{ty}/{}", id_of(&created)).parse() {
                        r.headers_mut().insert(header::LOCATION, loc);
                    }
                    r
                }
                Err(e) => bad_request(e.to_string()),
            }
        }
        _ => outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "Method not allowed",
        ),
    }
}

/// The request body, within the relay's size and time limits.
async fn body_bytes(state: &RelayState, body: Body) -> Result<bytes::Bytes, Response> {
    read_body(body, state.config.max_body, state.config.body_timeout).await
}

/// The request body as JSON.
async fn json_body(state: &RelayState, body: Body) -> Result<Value, Response> {
    parse_json(&body_bytes(state, body).await?)
}

/// The request body as a resource of type `ty`.
async fn resource_body(state: &RelayState, body: Body, ty: &str) -> Result<Value, Response> {
    let resource = json_body(state, body).await?;
    if resource["resourceType"].as_str() != Some(ty) {
        return Err(bad_request(format!("resourceType must be {ty}")));
    }
    Ok(resource)
}

/// Most matches one search returns for record types (patients, orders, audit events) unless
/// `_count` says otherwise, and the most it may ask for. The registry types have no default
/// limit.
const DEFAULT_COUNT: usize = 1000;
const MAX_COUNT: usize = 10_000;

fn search(state: &RelayState, ty: &str, query: &[(String, String)]) -> Response {
    let count = query
        .iter()
        .find(|(k, _)| k == "_count")
        .and_then(|(_, c)| c.parse::<usize>().ok());
    let limit = match count {
        Some(c) => c.min(MAX_COUNT),
        None if crate::store::is_cached(ty) => usize::MAX,
        None => DEFAULT_COUNT,
    };
    let found = state.store.search(ty, query, limit);
    let entry: Vec<Value> = found
        .iter()
        .map(|r| json!({"fullUrl": format!("{ty}/{}", id_of(r)), "resource": public(r), "search": {"mode": "match"}}))
        .collect();
    let mut bundle = json!({"resourceType": "Bundle", "type": "searchset", "entry": entry});
    // The total is known only when the search was not cut short.
    if found.len() < limit {
        bundle["total"] = json!(found.len());
    }
    fhir(StatusCode::OK, &bundle)
}

async fn instance_level(
    State(state): S,
    Path((ty, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = match authenticate(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = check_type(&ty) {
        return r;
    }
    let query = query_pairs(&q);
    let read = method == Method::GET && op_name(&id).is_none();
    if !auth::agent_may(&state.store, &caller.client_id, read, &ty, Some(&id)) {
        return forbidden_for_agent(&caller);
    }
    if let Some(op) = op_name(&id) {
        return operation(&state, &caller, &ty, None, op, &query, method, body).await;
    }
    match method {
        Method::GET => match state.store.get(&ty, &id) {
            Some(r) => fhir(StatusCode::OK, &public(&r)),
            None => not_found(format!("{ty}/{id} not found")),
        },
        Method::PUT => {
            let mut resource = match resource_body(&state, body, &ty).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            if resource
                .get("id")
                .is_some_and(|v| v.as_str() != Some(id.as_str()))
            {
                return bad_request("id in the body differs from the id in the URL");
            }
            resource["id"] = Value::String(id.clone());
            if let Err(r) = check_subscription(&ty, &resource) {
                return r;
            }
            match state.store.put(resource) {
                Ok((stored, created)) => {
                    after_write(&state, &ty, &stored, created);
                    tracing::info!(client = caller.client_id, ty, id, "updated");
                    let status = if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    fhir(status, &public(&stored))
                }
                Err(e) => bad_request(e.to_string()),
            }
        }
        Method::DELETE => match state.store.delete(&ty, &id) {
            Ok(true) => {
                tracing::info!(client = caller.client_id, ty, id, "deleted");
                all_ok()
            }
            Ok(false) => not_found(format!("{ty}/{id} not found")),
            Err(e) => bad_request(e.to_string()),
        },
        _ => outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "Method not allowed",
        ),
    }
}

async fn instance_op(
    State(state): S,
    Path((ty, id, op)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let caller = match authenticate(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = check_type(&ty) {
        return r;
    }
    if !auth::agent_may(&state.store, &caller.client_id, false, &ty, Some(&id)) {
        return forbidden_for_agent(&caller);
    }
    let Some(op) = op_name(&op) else {
        return not_found("Not found: no such route");
    };
    operation(
        &state,
        &caller,
        &ty,
        Some(&id),
        op,
        &query_pairs(&q),
        method,
        body,
    )
    .await
}

#[allow(clippy::too_many_arguments)] // one dispatch point for every operation route
async fn operation(
    state: &RelayState,
    caller: &Caller,
    ty: &str,
    id: Option<&str>,
    op: &str,
    query: &[(String, String)],
    method: Method,
    body: Body,
) -> Response {
    match (ty, op, &method) {
        ("Agent", "push", &Method::POST) => {
            let agent = match ops::find_agent(state, id, query) {
                Ok(a) => a,
                Err(r) => return r,
            };
            let bytes = match body_bytes(state, body).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            tracing::debug!(client = caller.client_id, agent = id_of(&agent), "push");
            ops::push(state, &agent, &bytes).await
        }
        ("Agent", "status", &Method::GET) => match ops::find_agent(state, id, query) {
            Ok(agent) => fhir(
                StatusCode::OK,
                &ops::status_parameters(state, id_of(&agent)).await,
            ),
            Err(r) => r,
        },
        ("Agent", "bulk-status", &Method::GET) if id.is_none() => {
            ops::bulk_status(state, query).await
        }
        ("Agent", "reload-config", &(Method::GET | Method::POST)) => {
            ops::agent_op_route(state, id, AgentOp::ReloadConfig, query).await
        }
        ("Agent", "fetch-logs", &(Method::GET | Method::POST)) => {
            ops::agent_op_route(state, id, AgentOp::FetchLogs, query).await
        }
        ("Agent", "upgrade", &(Method::GET | Method::POST)) => {
            ops::agent_op_route(state, id, AgentOp::Upgrade, query).await
        }
        _ => not_found(format!("Unsupported operation {method} {ty}/${op}")),
    }
}

/// `GET /outpost/inbound?agent=&channel=&after=&limit=`: stored inbound messages in arrival
/// order (JSON array).
async fn inbound_list(State(state): S, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    let caller = match authenticate(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !auth::agent_may(&state.store, &caller.client_id, false, "inbound", None) {
        return forbidden_for_agent(&caller);
    }
    let query = query_pairs(&q);
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let after = get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let limit = get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000)
        .min(10_000);
    match state
        .store
        .inbound(get("agent"), get("channel"), after, limit)
    {
        Ok(rows) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&rows).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => outcome(
            StatusCode::INTERNAL_SERVER_ERROR,
            "exception",
            e.to_string(),
        ),
    }
}
