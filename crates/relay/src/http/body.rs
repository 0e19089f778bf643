//! Request bodies, read within the relay's size and time limits.

use std::time::Duration;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::RelayState;
use super::response::{bad_request, outcome};

/// Reads a request body of at most `max` bytes within `limit`; over the size, a 413
/// OperationOutcome; too slow, a 408.
pub(crate) async fn read_body(
    body: Body,
    max: usize,
    limit: Duration,
) -> Result<bytes::Bytes, Response> {
    use axum::body::HttpBody;
    let too_big = || {
        outcome(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-costly",
            format!("request body larger than {max} bytes"),
        )
    };
    // A Content-Length over the limit is refused before any of the body is read.
    if body.size_hint().lower() > max as u64 {
        return Err(too_big());
    }
    let read = tokio::time::timeout(limit, axum::body::to_bytes(body, max))
        .await
        .map_err(|_| {
            outcome(
                StatusCode::REQUEST_TIMEOUT,
                "timeout",
                format!("request body not received within {} ms", limit.as_millis()),
            )
        })?;
    read.map_err(|e| {
        // axum's limit error is a `LengthLimitError` somewhere in the chain.
        let over = std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .any(|c| c.is::<http_body_util::LengthLimitError>());
        if over {
            too_big()
        } else {
            bad_request(format!("cannot read request body: {e}"))
        }
    })
}

/// The request body, within the relay's size and time limits.
pub(crate) async fn body_bytes(state: &RelayState, body: Body) -> Result<bytes::Bytes, Response> {
    read_body(body, state.config.max_body, state.config.body_timeout).await
}

/// Parses a JSON body; malformed JSON is a 400 carrying the parser's message.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(bytes).map_err(|e| bad_request(format!("invalid JSON: {e}")))
}

/// The request body as JSON.
pub(crate) async fn json_body(state: &RelayState, body: Body) -> Result<Value, Response> {
    parse_json(&body_bytes(state, body).await?)
}

/// The request body as a resource of type `ty`.
pub(crate) async fn resource_body(
    state: &RelayState,
    body: Body,
    ty: &str,
) -> Result<Value, Response> {
    let resource = json_body(state, body).await?;
    if resource["resourceType"].as_str() != Some(ty) {
        return Err(bad_request(format!("resourceType must be {ty}")));
    }
    Ok(resource)
}
