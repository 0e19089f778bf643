//! `POST /oauth2/token`: client credentials, from the form or HTTP Basic → an access token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::RelayState;
use super::body::read_body;
use super::extract::{check_client, parse_basic, too_many};
use crate::auth::LoginError;
use crate::fhir::{now_secs, url_params};

pub(crate) async fn token(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
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
    match check_client(&state, &id, &secret, Some(peer.ip())).await {
        Ok(()) => {}
        Err(LoginError::Throttled(wait)) => {
            let text = format!(
                "Too many failed logins for this client or from this address; retry in {} s",
                wait.as_secs().max(1)
            );
            return too_many(&text, wait, |t| {
                error(StatusCode::TOO_MANY_REQUESTS, "slow_down", &t)
            });
        }
        Err(LoginError::Invalid) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Invalid client credentials",
            );
        }
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
