//! Outpost's own routes: `GET /outpost/inbound` (the inbound log) and
//! `POST /outpost/notify/{subscription}` (another FHIR server's rest-hook delivering lab
//! orders).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::RelayState;
use super::body::json_body;
use super::extract::{NotAgent, Operator};
use super::response::{all_ok, bad_request, fhir, not_found, store_failed};
use crate::fhir::url_params;
use crate::orders;

/// `GET /outpost/inbound?agent=&channel=&after=&limit=`: stored inbound messages in arrival
/// order (JSON array).
pub(crate) async fn inbound_list(
    State(state): State<Arc<RelayState>>,
    NotAgent(caller): NotAgent,
    RawQuery(q): RawQuery,
) -> Response {
    let query = q.as_deref().map(url_params).unwrap_or_default();
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    // A tenant's caller reads the messages of one of its Agents at a time.
    if caller.is_tenant() && !get("agent").is_some_and(|a| caller.sees(&state, "Agent", a)) {
        return caller.outside_tenant();
    }
    let after = get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
    let limit = get("limit")
        .and_then(|l| l.parse().ok())
        .unwrap_or(1000)
        .min(10_000);
    match state
        .registry
        .inbound(get("agent"), get("channel"), after, limit)
        .await
    {
        Ok(rows) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&rows).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => store_failed(&e),
    }
}

/// `POST /outpost/notify/{subscription}`: another FHIR server's rest-hook (Medplum, HAPI)
/// delivers a ServiceRequest, or a Bundle holding ServiceRequests and the resources they refer
/// to; each is converted and pushed as the named order-push Subscription says.
pub(crate) async fn notify(
    State(state): State<Arc<RelayState>>,
    _caller: Operator,
    Path(sub_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let payload = match json_body(&state, body).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let Some(sub) = state.registry.cached("Subscription", &sub_id) else {
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
        let (q, e) = state
            .orders
            .enqueue(sr, event, std::slice::from_ref(&target), &resources)
            .await;
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
