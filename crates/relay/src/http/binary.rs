//! `Binary`: `POST /fhir/R4/Binary` and `GET /fhir/R4/Binary/{id}`, as Medplum serves them.
//!
//! - A POST with any `Content-Type` but FHIR JSON stores the body as it is, with that type
//!   (how the Medplum agent uploads a DICOM instance, `application/dicom`). The body is
//!   streamed to the [`BlobStore`](crate::blob::BlobStore) chunk by chunk, never held whole;
//!   over [`RelayConfig::max_binary`](crate::RelayConfig::max_binary) it is a 413 (a body
//!   announced over the limit is refused before it is stored; one of at most 16 MiB is read
//!   and dropped first so that the client, still sending, reads its answer), and each
//!   chunk must come within the body timeout (else 400).
//! - A POST of `application/fhir+json` is a Binary resource: its `data` (base64) is stored with
//!   its `contentType` (bounded by the JSON body limit).
//! - GET answers the raw bytes with their content type, unless `Accept` asks for FHIR JSON:
//!   then the resource with `data` (only for blobs within the JSON body limit; else 413).
//!
//! Agent credentials may create Binaries (the DICOM channel uploads instances), and read only
//! agent executables ([`AGENT_EXECUTABLE`](crate::AGENT_EXECUTABLE), what `$upgrade` installs).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::RelayState;
use super::body::body_bytes;
use super::extract::Caller;
use super::response::{bad_request, fhir, not_found, outcome};
use crate::blob::{BlobError, BlobMeta, Chunks};
use crate::fhir::now_rfc3339;
use crate::release::is_agent_executable;

/// Largest refused body read (and dropped) before its 413 is sent.
const DRAIN_MAX: u64 = 16 << 20;

/// Reads `body` to its end, dropping it, for at most `limit`.
async fn drain(body: Body, limit: Duration) {
    let mut stream = body.into_data_stream();
    let _ = tokio::time::timeout(limit, async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await;
}

/// `POST /fhir/R4/Binary`.
pub(crate) async fn create(
    State(state): State<Arc<RelayState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A tenant's caller writes nothing (SECURITY.md).
    if caller.is_tenant() {
        return caller.outside_tenant();
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let id = uuid::Uuid::new_v4().to_string();
    let stored = if is_fhir_json(&content_type) {
        let bytes = match body_bytes(&state, body).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        let resource: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => return bad_request(format!("invalid JSON: {e}")),
        };
        if resource["resourceType"] != "Binary" {
            return bad_request("resourceType must be Binary");
        }
        let Some(ct) = resource["contentType"].as_str().map(str::to_owned) else {
            return bad_request("Binary.contentType is required");
        };
        let data = match STANDARD.decode(resource["data"].as_str().unwrap_or_default()) {
            Ok(d) => d,
            Err(e) => return bad_request(format!("Binary.data is not base64: {e}")),
        };
        let chunks: Chunks = Box::pin(futures_util::stream::once(async move {
            Ok(bytes::Bytes::from(data))
        }));
        state
            .blobs
            .put(&id, &ct, chunks, state.config.max_binary)
            .await
    } else {
        let max = state.config.max_binary;
        if let Some(len) = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            && len > max
        {
            // A client that is still sending when the connection closes may never read the
            // answer (the unread bytes reset the connection); a body small enough is read and
            // dropped first, so that it gets its 413.
            if len <= DRAIN_MAX {
                drain(body, state.config.body_timeout).await;
            }
            return too_large(max);
        }
        let chunks = timed(body, state.config.body_timeout);
        state.blobs.put(&id, &content_type, chunks, max).await
    };
    match stored {
        Ok(meta) => {
            tracing::info!(
                client = caller.client_id,
                id,
                size = meta.size,
                content_type = meta.content_type,
                "binary created"
            );
            let mut r = fhir(StatusCode::CREATED, &resource(&id, &meta, None));
            if let Ok(loc) = HeaderValue::from_str(&format!("fhir/R4/Binary/{id}")) {
                r.headers_mut().insert(header::LOCATION, loc);
            }
            r
        }
        Err(e) => failed(&e),
    }
}

/// `GET /fhir/R4/Binary/{id}`.
pub(crate) async fn read(
    State(state): State<Arc<RelayState>>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (meta, mut chunks) = match state.blobs.open(&id).await {
        Ok(Some(found)) => found,
        Ok(None) => return not_found(format!("Binary/{id} not found")),
        Err(e) => return failed(&e),
    };
    // Binaries hold patient data: a tenant's caller reads none (it is limited to its Agents
    // and Devices), an agent's only the agent executables `$upgrade` installs.
    if caller.is_tenant() {
        return caller.outside_tenant();
    }
    if !caller.agents.is_empty() && !is_agent_executable(&meta.content_type) {
        return super::response::outcome(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "Forbidden: {} is an agent's client; of the Binaries it may read only agent executables (content type {})",
                caller.client_id,
                crate::AGENT_EXECUTABLE
            ),
        );
    }
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_fhir_json);
    if wants_json {
        if meta.size > state.config.max_body as u64 {
            return outcome(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-costly",
                format!(
                    "Binary/{id} is {} bytes, more than the {} a JSON answer may carry; ask for its raw bytes",
                    meta.size, state.config.max_body
                ),
            );
        }
        let mut data = Vec::with_capacity(meta.size as usize);
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(c) => data.extend_from_slice(&c),
                Err(e) => return failed(&e),
            }
        }
        return fhir(StatusCode::OK, &resource(&id, &meta, Some(&data)));
    }
    let mut r = Response::new(Body::from_stream(chunks));
    if let Ok(v) = HeaderValue::from_str(&meta.content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    r
}

fn is_fhir_json(media: &str) -> bool {
    media
        .split(',')
        .any(|m| m.split(';').next().unwrap_or_default().trim() == "application/fhir+json")
}

fn resource(id: &str, meta: &BlobMeta, data: Option<&[u8]>) -> Value {
    let mut r = json!({
        "resourceType": "Binary",
        "id": id,
        "meta": {"versionId": "1", "lastUpdated": now_rfc3339()},
        "contentType": meta.content_type,
    });
    if let Some(d) = data {
        r["data"] = json!(STANDARD.encode(d));
    }
    r
}

fn too_large(max: u64) -> Response {
    outcome(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-costly",
        format!("binary larger than {max} bytes"),
    )
}

fn failed(e: &BlobError) -> Response {
    match e {
        BlobError::TooLarge { max } => too_large(*max),
        BlobError::Body(why) => bad_request(why.clone()),
        BlobError::Io(_) | BlobError::Database(_) => {
            tracing::error!(error = %e, "binary storage failure");
            outcome(
                StatusCode::INTERNAL_SERVER_ERROR,
                "exception",
                format!("the relay's store failed: {e}"),
            )
        }
    }
}

/// The request body as chunks, each of which must arrive within `gap`.
fn timed(body: Body, gap: Duration) -> Chunks {
    let stream = body.into_data_stream();
    Box::pin(futures_util::stream::unfold(
        Some(stream),
        move |stream| async move {
            let mut stream = stream?;
            match tokio::time::timeout(gap, stream.next()).await {
                Ok(None) => None,
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(stream))),
                Ok(Some(Err(e))) => Some((Err(BlobError::Body(e.to_string())), None)),
                Err(_) => Some((
                    Err(BlobError::Body(format!(
                        "no part of the body for {} ms",
                        gap.as_millis()
                    ))),
                    None,
                )),
            }
        },
    ))
}
