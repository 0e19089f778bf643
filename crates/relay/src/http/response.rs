//! FHIR responses: JSON resources, OperationOutcomes, raw device answers.

use agent_protocol::OperationOutcome;
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::store::{PutError, StoreError, chain};

/// `application/fhir+json; charset=utf-8`
pub(crate) const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A FHIR JSON response.
pub(crate) fn fhir(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        body.to_string(),
    )
        .into_response()
}

/// An OperationOutcome response. `code` is the FHIR issue type (`invalid`, `not-found`,
/// `login`, `forbidden`, `too-costly`, `timeout`, `transient`, `exception`, ...).
pub(crate) fn outcome(status: StatusCode, code: &str, text: impl Into<String>) -> Response {
    let oo = OperationOutcome::error(code, text);
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        oo.to_json(),
    )
        .into_response()
}

/// 400 `invalid`.
pub(crate) fn bad_request(text: impl Into<String>) -> Response {
    outcome(StatusCode::BAD_REQUEST, "invalid", text)
}

/// 404 `not-found`.
pub(crate) fn not_found(text: impl Into<String>) -> Response {
    outcome(StatusCode::NOT_FOUND, "not-found", text)
}

/// 500 `exception`: the relay's own store failed (never the caller's fault, never a 404).
pub(crate) fn store_failed(e: &StoreError) -> Response {
    tracing::error!(error = %chain(e), "store failure");
    outcome(
        StatusCode::INTERNAL_SERVER_ERROR,
        "exception",
        format!("the relay's store failed: {}", chain(e)),
    )
}

/// A failed write: 400 for the caller's mistake, 500 for the store's failure.
pub(crate) fn put_failed(e: &PutError) -> Response {
    match e {
        PutError::Invalid(i) => bad_request(i.to_string()),
        PutError::Store(s) => store_failed(s),
    }
}

/// 200 `All OK`.
pub(crate) fn all_ok() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON))],
        OperationOutcome::all_ok().to_json(),
    )
        .into_response()
}

/// A raw body with a content type (the device's answer to a push).
pub(crate) fn raw(status: StatusCode, content_type: &str, body: String) -> Response {
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
