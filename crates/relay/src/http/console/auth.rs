//! Console login: an operator's ClientApplication id and secret (checked and throttled as the
//! token endpoint checks them) make a session cookie signed with the relay's token key.
//!
//! - The cookie `outpost_console` is `PAYLOAD.TAG`: PAYLOAD the base64url JSON of the client
//!   id, a random session id and the expiry (8 hours); TAG its HMAC-SHA256 under the token key,
//!   domain-separated from access tokens (an access token is not a cookie, nor the reverse).
//!   `HttpOnly`, `SameSite=Strict`, `Path=/console`, and `Secure` when the relay serves TLS.
//! - Every state-changing request carries the session's CSRF token (an HMAC of the session id)
//!   in `X-CSRF-Token`; the login form carries a random token that must equal its cookie's
//!   (double submit), so no other site can log a browser in.
//! - Agent and tenant credentials cannot log in: the console is the operator's.
//! - Each login, logout and action is an `AuditEvent` (`type` console, `subtype` the action).

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, extract::Query};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::view;
use crate::auth::{LoginError, bound_agents, tenant_scope};
use crate::fhir::now_secs;
use crate::http::RelayState;
use crate::http::extract::check_client;

/// The session cookie's name.
const COOKIE: &str = "outpost_console";
/// The login form's CSRF cookie.
const LOGIN_COOKIE: &str = "outpost_console_login";
/// How long a session lasts.
const SESSION_SECS: i64 = 8 * 3600;
/// Longest client id or secret read from the login form.
const MAX_FIELD: usize = 512;

/// What the cookie carries.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    /// The operator's ClientApplication id.
    sub: String,
    /// A random id of this session.
    sid: String,
    /// Issued at, ms since the epoch.
    iat: i64,
    /// Expiry, seconds since the epoch.
    exp: i64,
    /// A tag of the ClientApplication's stored secret: a new secret ends every session.
    sec: String,
}

/// On the operator's ClientApplication: sessions issued before this time (`valueInstant`)
/// are over. Logging out sets it, so a logout ends every copy of
/// the operator's sessions, on every relay process.
pub(crate) const SESSIONS_SINCE_EXTENSION: &str =
    "https://outpost.health/fhir/StructureDefinition/console-sessions-since";

/// The tag of a ClientApplication's stored secret that a session carries.
fn secret_tag(state: &RelayState, app: &serde_json::Value) -> String {
    let stored = app["secret"].as_str().unwrap_or_default();
    tag(state, "console-secret", stored)
        .chars()
        .take(16)
        .collect()
}

/// When the operator's sessions last ended (logout), ms since the epoch.
fn sessions_since(app: &serde_json::Value) -> i64 {
    app["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"].as_str() == Some(SESSIONS_SINCE_EXTENSION))
        .and_then(|e| e["valueInstant"].as_str())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map_or(0, |t| t.timestamp_millis())
}

/// A logged-in operator. As an extractor: a page request without a valid session is
/// redirected to the login form; any other method must also carry the session's CSRF token
/// in `X-CSRF-Token`, or it is refused with 403 and changes nothing.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// The operator's ClientApplication id.
    pub(crate) client_id: String,
    /// The token that state-changing requests must carry.
    pub(crate) csrf: String,
}

impl FromRequestParts<Arc<RelayState>> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<RelayState>,
    ) -> Result<Self, Self::Rejection> {
        let Some(session) = cookie(&parts.headers, COOKIE).and_then(|c| verify(state, c)) else {
            return Err(if parts.method == Method::GET {
                Redirect::to("/console/login").into_response()
            } else {
                view::error_page(
                    StatusCode::UNAUTHORIZED,
                    "Your console session has ended: log in again.",
                )
            });
        };
        if parts.method != Method::GET {
            let given = parts
                .headers
                .get("x-csrf-token")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if !state.tokens.secrets_equal(given, &session.csrf) {
                return Err(view::error_page(
                    StatusCode::FORBIDDEN,
                    "The request did not carry this session's CSRF token: nothing was done.",
                ));
            }
        }
        Ok(session)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn tag(state: &RelayState, domain: &str, value: &str) -> String {
    URL_SAFE_NO_PAD.encode(state.tokens.tag(&format!("{domain}.{value}")))
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
}

/// The session a cookie value stands for, if it is ours, unexpired, and its operator may
/// still log in.
fn verify(state: &RelayState, value: &str) -> Option<Session> {
    let (payload, given) = value.split_once('.')?;
    let given = URL_SAFE_NO_PAD.decode(given).ok()?;
    if !state
        .tokens
        .tag_matches(&format!("console-session.{payload}"), &given)
    {
        return None;
    }
    let p: Payload = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    if p.exp <= now_secs() || operator_refusal(state, &p.sub).is_some() {
        return None;
    }
    // The operator still exists with the same secret, and has not logged out since.
    let app = state.registry.cached("ClientApplication", &p.sub)?;
    if p.sec != secret_tag(state, &app) || p.iat <= sessions_since(&app) {
        return None;
    }
    Some(Session {
        csrf: tag(state, "console-csrf", &p.sid),
        client_id: p.sub,
    })
}

/// Why `client_id` may not use the console, if it may not.
fn operator_refusal(state: &RelayState, client_id: &str) -> Option<&'static str> {
    let Some(app) = state.registry.cached("ClientApplication", client_id) else {
        return Some("No such ClientApplication.");
    };
    if !bound_agents(Some(&app)).is_empty() {
        Some("An agent's credentials cannot log in to the console.")
    } else if !tenant_scope(Some(&app)).is_empty() {
        Some("A tenant's credentials cannot log in to the console.")
    } else {
        None
    }
}

/// Whether the browser reached the relay over TLS: the relay's own, or a proxy's in front of
/// it that says so (`X-Forwarded-Proto: https`; it can only make the cookie stricter).
fn over_tls(state: &RelayState, headers: &HeaderMap) -> bool {
    state.config.tls.is_some()
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

fn set_cookie(secure: bool, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let v = format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `GET /console/login`.
pub(super) async fn login_page(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    let token = random_token();
    let mut resp = view::login(&token, q.error.as_deref()).into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(over_tls(&state, &headers), LOGIN_COOKIE, &token, 3600),
    );
    resp
}

/// `?error=` on the login page: which message to show (a fixed set, never echoed).
#[derive(Debug, Deserialize)]
pub(super) struct LoginQuery {
    error: Option<String>,
}

/// The login form.
#[derive(Debug, Deserialize)]
pub(super) struct LoginForm {
    client_id: String,
    client_secret: String,
    csrf: String,
}

/// `POST /console/login`.
pub(super) async fn login(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !state.tokens.secrets_equal(&form.csrf, expected) {
        return view::error_page(
            StatusCode::FORBIDDEN,
            "The login form has expired or did not come from this console: open the login page again.",
        );
    }
    if form.client_id.len() > MAX_FIELD || form.client_secret.len() > MAX_FIELD {
        return Redirect::to("/console/login?error=credentials").into_response();
    }
    let id = form.client_id.trim();
    match check_client(&state, id, &form.client_secret, Some(peer.ip())).await {
        Ok(()) => {}
        Err(LoginError::Throttled(_)) => {
            return Redirect::to("/console/login?error=throttled").into_response();
        }
        Err(LoginError::Invalid) => {
            audit(&state, id, "login", None, false, "wrong credentials").await;
            return Redirect::to("/console/login?error=credentials").into_response();
        }
    }
    if let Some(why) = operator_refusal(&state, id) {
        audit(&state, id, "login", None, false, why).await;
        return Redirect::to("/console/login?error=not-operator").into_response();
    }
    let Some(app) = state.registry.cached("ClientApplication", id) else {
        return Redirect::to("/console/login?error=credentials").into_response();
    };
    let payload = Payload {
        sub: id.to_owned(),
        sid: random_token(),
        iat: crate::fhir::now_ms(),
        exp: now_secs() + SESSION_SECS,
        sec: secret_tag(&state, &app),
    };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&payload).unwrap_or_default());
    let value = format!("{payload}.{}", tag(&state, "console-session", &payload));
    audit(&state, id, "login", None, true, "logged in").await;
    let mut resp = Redirect::to("/console").into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(over_tls(&state, &headers), COOKIE, &value, SESSION_SECS),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(over_tls(&state, &headers), LOGIN_COOKIE, "", 0),
    );
    resp
}

/// `POST /console/logout` (with the CSRF header): the cookie is cleared, and every session
/// of this operator issued until now ends (on every relay process: the time is kept on its
/// ClientApplication).
pub(super) async fn logout(
    State(state): State<Arc<RelayState>>,
    headers: HeaderMap,
    session: Session,
) -> Response {
    if let Some(app) = state
        .registry
        .cached("ClientApplication", &session.client_id)
    {
        let mut app = (*app).clone();
        let mut ext: Vec<serde_json::Value> = app["extension"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e["url"].as_str() != Some(SESSIONS_SINCE_EXTENSION))
            .collect();
        ext.push(
            json!({"url": SESSIONS_SINCE_EXTENSION, "valueInstant": crate::fhir::now_rfc3339()}),
        );
        app["extension"] = serde_json::Value::Array(ext);
        if let Err(e) = state.registry.put(app).await {
            tracing::error!(error = %e, "cannot record a console logout");
        }
    }
    audit(
        &state,
        &session.client_id,
        "logout",
        None,
        true,
        "logged out",
    )
    .await;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(over_tls(&state, &headers), COOKIE, "", 0),
    );
    h.append("hx-redirect", HeaderValue::from_static("/console/login"));
    resp
}

/// Records a console action as an `AuditEvent`: who (the operator's ClientApplication), what
/// (`action` on `entity`), and how it ended.
pub(super) async fn audit(
    state: &RelayState,
    client_id: &str,
    action: &str,
    entity: Option<&str>,
    ok: bool,
    outcome: &str,
) {
    let mut event = json!({
        "resourceType": "AuditEvent",
        "type": {"system": "https://outpost.health/fhir/CodeSystem/audit", "code": "console",
                 "display": "Operator console action"},
        "subtype": [{"system": "https://outpost.health/fhir/CodeSystem/console-action", "code": action}],
        "action": "E",
        "recorded": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "outcome": if ok { "0" } else { "8" },
        "outcomeDesc": outcome,
        "agent": [{"who": {"reference": format!("ClientApplication/{client_id}")}, "requestor": true}],
        "source": {"observer": {"display": "Outpost relay console"}},
    });
    if let Some(what) = entity {
        event["entity"] = json!([{"what": {"reference": what}}]);
    }
    if let Err(e) = state.registry.create(event).await {
        tracing::error!(error = %crate::store::chain(&e), action, "cannot record a console action");
    }
}
