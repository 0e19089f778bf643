//! Read, create, update, delete and search under `/fhir/R4/`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::RelayState;
use super::body::resource_body;
use super::extract::{Caller, FhirRoute};
use super::operations;
use super::response::{all_ok, bad_request, fhir, not_found, outcome, put_failed, store_failed};
use crate::auth::generate_secret;
use crate::fhir::{id_of, url_params};
use crate::orders;
use crate::store::is_cached;

/// Most matches one search returns for record types (patients, orders, audit events) unless
/// `_count` says otherwise, and the most it may ask for. The registry types have no default
/// limit.
const DEFAULT_COUNT: usize = 1000;
const MAX_COUNT: usize = 10_000;

/// What a client application may see of a resource: never a secret.
fn public(r: &Value) -> Value {
    let mut v = r.clone();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("secret");
    }
    v
}

/// A ClientApplication written without a secret gets a generated one (256 bits); the secret
/// is returned once, in the answer to that write. `Ok(None)`: nothing generated.
fn generate_secret_if_missing(ty: &str, resource: &mut Value) -> Result<Option<String>, Response> {
    if ty != "ClientApplication" || resource.get("secret").is_some_and(|s| !s.is_null()) {
        return Ok(None);
    }
    let Some(secret) = generate_secret() else {
        return Err(outcome(
            StatusCode::SERVICE_UNAVAILABLE,
            "transient",
            "no system randomness to generate a client secret",
        ));
    };
    resource["secret"] = Value::String(secret.clone());
    Ok(Some(secret))
}

/// The answer to a write, with the generated secret (the only time it is shown).
fn with_generated(mut public: Value, generated: Option<String>) -> Value {
    if let Some(secret) = generated {
        public["secret"] = Value::String(secret);
    }
    public
}

fn method_not_allowed() -> Response {
    outcome(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "Method not allowed",
    )
}

/// Every `/fhir/R4/...` route: type level, instance level, operations.
pub(crate) async fn route(
    State(state): State<Arc<RelayState>>,
    route: FhirRoute,
    RawQuery(q): RawQuery,
    method: Method,
    body: Body,
) -> Response {
    let query = q.as_deref().map(url_params).unwrap_or_default();
    let FhirRoute { caller, ty, id, op } = route;
    if let Some(op) = op {
        return operations::operation(
            &state,
            &caller,
            &ty,
            id.as_deref(),
            &op,
            &query,
            method,
            body,
        )
        .await;
    }
    match (id, method) {
        (None, Method::GET) => search(&state, &caller, &ty, &query).await,
        (None, Method::POST) => {
            let mut resource = match resource_body(&state, body, &ty).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            if let Some(obj) = resource.as_object_mut() {
                obj.remove("id");
            }
            if let Err(r) = check_written(&state, &ty, &resource) {
                return r;
            }
            if ty == "DocumentReference"
                && let Err(e) = crate::release::check_unique(&state.registry, &resource).await
            {
                return bad_request(e);
            }
            let generated = match generate_secret_if_missing(&ty, &mut resource) {
                Ok(g) => g,
                Err(r) => return r,
            };
            match state.registry.create(resource).await {
                Ok(created) => {
                    after_write(&state, &ty, &created, true).await;
                    tracing::info!(
                        client = caller.client_id,
                        ty,
                        id = id_of(&created),
                        "created"
                    );
                    let mut r = fhir(
                        StatusCode::CREATED,
                        &with_generated(public(&created), generated),
                    );
                    if let Ok(loc) = format!("fhir/R4/{ty}/{}", id_of(&created)).parse() {
                        r.headers_mut().insert(header::LOCATION, loc);
                    }
                    r
                }
                Err(e) => put_failed(&e),
            }
        }
        (None, _) => method_not_allowed(),
        (Some(id), Method::GET) => match state.registry.get(&ty, &id).await {
            Ok(Some(r)) => fhir(StatusCode::OK, &public(&r)),
            Ok(None) => not_found(format!("{ty}/{id} not found")),
            Err(e) => store_failed(&e),
        },
        (Some(id), Method::PUT) => {
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
            if let Err(r) = check_written(&state, &ty, &resource) {
                return r;
            }
            if ty == "DocumentReference"
                && let Err(e) = crate::release::check_unique(&state.registry, &resource).await
            {
                return bad_request(e);
            }
            // An update without a secret keeps the stored one; a new client gets one.
            let generated = if state.registry.cached(&ty, &id).is_none() {
                match generate_secret_if_missing(&ty, &mut resource) {
                    Ok(g) => g,
                    Err(r) => return r,
                }
            } else {
                None
            };
            match state.registry.put(resource).await {
                Ok((stored, created)) => {
                    after_write(&state, &ty, &stored, created).await;
                    tracing::info!(client = caller.client_id, ty, id, "updated");
                    let status = if created {
                        StatusCode::CREATED
                    } else {
                        StatusCode::OK
                    };
                    fhir(status, &with_generated(public(&stored), generated))
                }
                Err(e) => put_failed(&e),
            }
        }
        (Some(id), Method::DELETE) => match state.registry.delete(&ty, &id).await {
            Ok(true) => {
                tracing::info!(client = caller.client_id, ty, id, "deleted");
                all_ok()
            }
            Ok(false) => not_found(format!("{ty}/{id} not found")),
            Err(e) => store_failed(&e),
        },
        (Some(_), _) => method_not_allowed(),
    }
}

async fn search(
    state: &RelayState,
    caller: &Caller,
    ty: &str,
    query: &[(String, String)],
) -> Response {
    let count = query
        .iter()
        .find(|(k, _)| k == "_count")
        .and_then(|(_, c)| c.parse::<usize>().ok());
    let limit = match count {
        Some(c) => c.min(MAX_COUNT),
        None if is_cached(ty) => usize::MAX,
        None => DEFAULT_COUNT,
    };
    // A tenant's caller searches only the registry types, held in memory: all matches are
    // filtered to its own, then cut to the limit.
    let first = if caller.is_tenant() {
        usize::MAX
    } else {
        limit
    };
    let mut found = match state.registry.search(ty, query, first).await {
        Ok(f) => f,
        Err(e) => return store_failed(&e),
    };
    found.retain(|r| caller.sees(state, ty, id_of(r)));
    found.truncate(limit);
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

/// An order-push Subscription must be usable: its criteria, agent, device and format; a
/// rest-hook Subscription on results its endpoint and headers.
/// A Device's `url` and an Endpoint's `address` must be one the agent can use; an Agent's
/// channels must differ in name and in port (the agent could not run them together).
fn check_written(state: &RelayState, ty: &str, resource: &Value) -> Result<(), Response> {
    crate::fhir::check_address(resource).map_err(bad_request)?;
    let clashes = crate::fhir::check_agent_channels(resource, |id| {
        state.registry.cached("Endpoint", id).map(|e| (*e).clone())
    });
    if !clashes.is_empty() {
        return Err(bad_request(clashes.join("; ")));
    }
    if ty != "Subscription" {
        return Ok(());
    }
    let order_push = orders::target(resource)
        .map_err(|e| bad_request(format!("invalid order-push Subscription: {e}")))?;
    if order_push.is_some() {
        return Ok(());
    }
    crate::inbound::check_results_subscription(resource)
        .map_err(|e| bad_request(format!("invalid results Subscription: {e}")))
}

/// A ServiceRequest written here goes to the order-push Subscriptions it matches.
async fn after_write(state: &RelayState, ty: &str, resource: &Value, created: bool) {
    if ty != "ServiceRequest" {
        return;
    }
    let targets = orders::matching_targets(&state.registry, resource);
    if targets.is_empty() {
        return;
    }
    let event = if created {
        lab_orders::Event::New
    } else {
        lab_orders::Event::Update
    };
    let (queued, errors) = state.orders.enqueue(resource, event, &targets, &[]).await;
    tracing::info!(
        request = id_of(resource),
        queued,
        failed = errors.len(),
        "order queued for push"
    );
}
