//! HTTP plumbing shared by the routes: FHIR JSON responses, OperationOutcome errors, bounded
//! body reading and authentication.

use std::time::Duration;

use agent_protocol::OperationOutcome;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::auth::{check_client, parse_basic};
use crate::state::RelayState;

/// `application/fhir+json; charset=utf-8`
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A FHIR JSON response.
pub fn fhir(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        body.to_string(),
    )
        .into_response()
}

/// An OperationOutcome response. `code` is the FHIR issue type (`invalid`, `not-found`,
/// `login`, `forbidden`, `too-costly`, `timeout`, `exception`, ...).
pub fn outcome(status: StatusCode, code: &str, text: impl Into<String>) -> Response {
    let oo = OperationOutcome::error(code, text);
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        oo.to_json(),
    )
        .into_response()
}

/// 400 `invalid`.
pub fn bad_request(text: impl Into<String>) -> Response {
    outcome(StatusCode::BAD_REQUEST, "invalid", text)
}

/// 404 `not-found`.
pub fn not_found(text: impl Into<String>) -> Response {
    outcome(StatusCode::NOT_FOUND, "not-found", text)
}

/// 200 `All OK`.
pub fn all_ok() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        OperationOutcome::all_ok().to_json(),
    )
        .into_response()
}

/// Reads a request body of at most `max` bytes within `limit`; over the size, a 413
/// OperationOutcome; too slow, a 408.
pub async fn read_body(body: Body, max: usize, limit: Duration) -> Result<bytes::Bytes, Response> {
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
        // axum reports the limit as a boxed `LengthLimitError`, "length limit exceeded".
        let over =
            format!("{e:?}").contains("LengthLimit") || e.to_string().contains("length limit");
        if over {
            too_big()
        } else {
            bad_request(format!("cannot read request body: {e}"))
        }
    })
}

/// Parses a JSON body; malformed JSON is a 400 carrying the parser's message.
pub fn parse_json(bytes: &[u8]) -> Result<Value, Response> {
    serde_json::from_slice(bytes).map_err(|e| bad_request(format!("invalid JSON: {e}")))
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The ClientApplication id.
    pub client_id: String,
}

/// The 403 for an agent's credentials used beyond what an agent needs.
pub fn forbidden_for_agent(caller: &Caller) -> Response {
    outcome(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!(
            "Forbidden: {} is an agent's client; it may only read its own Agent and that Agent's Endpoints",
            caller.client_id
        ),
    )
}

/// Checks `Authorization`: a Bearer token we issued and that has not expired, or Basic client
/// credentials. Anything else is a 401 OperationOutcome.
pub fn authenticate(state: &RelayState, headers: &HeaderMap) -> Result<Caller, Response> {
    let unauthorized = |text: &str| {
        let mut r = outcome(StatusCode::UNAUTHORIZED, "login", text);
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(unauthorized("Unauthorized: missing Authorization header"));
    };
    if let Some(token) = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
    {
        return match state.tokens.verify(token.trim(), now_secs()) {
            Ok(claims) => Ok(Caller {
                client_id: claims.client_id,
            }),
            Err(e) => Err(unauthorized(&format!("Unauthorized: {e}"))),
        };
    }
    if let Some((id, secret)) = parse_basic(value) {
        if check_client(&state.store, &state.tokens, &id, &secret) {
            return Ok(Caller { client_id: id });
        }
        return Err(unauthorized("Unauthorized: invalid client credentials"));
    }
    Err(unauthorized(
        "Unauthorized: unsupported Authorization scheme",
    ))
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A raw body with a content type (the device's answer to a push).
pub fn raw(status: StatusCode, content_type: &str, body: String) -> Response {
    let ct = if content_type.is_empty() {
        "text/plain; charset=utf-8".to_owned()
    } else if content_type.contains("charset") {
        content_type.to_owned()
    } else {
        format!("{content_type}; charset=utf-8")
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&ct) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}
