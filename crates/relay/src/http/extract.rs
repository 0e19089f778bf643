//! Who is calling, and may they: the preamble of every authenticated route as axum
//! extractors. [`Caller`] authenticates; [`NotAgent`] also refuses an agent's credentials;
//! [`FhirRoute`] is `/fhir/R4/{type}[/{id}[/{operation}]]` with the type checked and the
//! agent binding applied.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::RelayState;
use super::response::{not_found, outcome};
use crate::auth::{LoginError, TokenError, agent_may, bound_agents, tenant_scope, tenant_sees};
use crate::fhir::{RESOURCE_TYPES, now_secs};

/// Why a request is not authenticated (401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    /// No `Authorization` header.
    #[error("Unauthorized: missing Authorization header")]
    Missing,
    /// A Bearer token we did not issue, tampered with, or expired.
    #[error("Unauthorized: {0}")]
    Token(#[from] TokenError),
    /// Basic credentials that do not log in.
    #[error("Unauthorized: invalid client credentials")]
    Credentials,
    /// Too many failed logins for this client or from this address.
    #[error("Too many requests: {0}")]
    Throttled(LoginError),
    /// Neither Bearer nor Basic.
    #[error("Unauthorized: unsupported Authorization scheme")]
    Scheme,
}

impl From<AuthError> for Response {
    fn from(e: AuthError) -> Response {
        e.into_response()
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        if let AuthError::Throttled(LoginError::Throttled(wait)) = self {
            return too_many(&self.to_string(), wait, |text| {
                outcome(StatusCode::TOO_MANY_REQUESTS, "throttled", text)
            });
        }
        let mut r = outcome(StatusCode::UNAUTHORIZED, "login", self.to_string());
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    }
}

/// `Authorization: Basic base64(id:secret)` → `(id, secret)`.
pub(crate) fn parse_basic(header: &str) -> Option<(String, String)> {
    let b64 = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))?;
    let decoded = STANDARD.decode(b64.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

/// A 429 built by `build` with `Retry-After` set to `wait` in whole seconds (at least 1).
pub(crate) fn too_many(
    text: &str,
    wait: std::time::Duration,
    build: impl FnOnce(String) -> Response,
) -> Response {
    let mut r = build(text.to_owned());
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// Whether `secret` logs in as client `id`, from `addr` (throttled per client id and
/// address). A secret stored in an older form is rewritten with PBKDF2 on success.
pub(crate) async fn check_client(
    state: &RelayState,
    id: &str,
    secret: &str,
    addr: Option<IpAddr>,
) -> Result<(), LoginError> {
    let app = state.registry.cached("ClientApplication", id);
    let upgrade = state.logins.check(app.clone(), id, secret, addr).await?;
    if let (Some(hash), Some(app)) = (upgrade, app) {
        let mut updated = (*app).clone();
        updated["secret"] = serde_json::Value::String(hash);
        match state.registry.put(updated).await {
            Ok(_) => tracing::info!(client = id, "client secret rehashed with PBKDF2"),
            // The old form still logs in; the next login tries again.
            Err(e) => tracing::warn!(client = id, error = %e, "client secret not rehashed"),
        }
    }
    Ok(())
}

/// The peer address of a request, as the server recorded it.
pub(crate) fn peer_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Who made a request: a Bearer token we issued and that has not expired, or Basic client
/// credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The ClientApplication id.
    pub(crate) client_id: String,
    /// The Agents its credentials are bound to (empty for a caller).
    pub(crate) agents: Vec<String>,
    /// The Agents and Devices (`Agent/<id>`, `Device/<id>`) a tenant caller is limited to
    /// (empty: unrestricted).
    pub(crate) tenant: Vec<String>,
}

impl Caller {
    async fn authenticate(state: &RelayState, parts: &Parts) -> Result<Caller, AuthError> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(AuthError::Missing)?;
        let client_id = if let Some(token) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        {
            state.tokens.verify(token.trim(), now_secs())?.client_id
        } else if let Some((id, secret)) = parse_basic(value) {
            match check_client(state, &id, &secret, peer_ip(parts)).await {
                Ok(()) => id,
                Err(e @ LoginError::Throttled(_)) => return Err(AuthError::Throttled(e)),
                Err(LoginError::Invalid) => return Err(AuthError::Credentials),
            }
        } else {
            return Err(AuthError::Scheme);
        };
        let app = state.registry.cached("ClientApplication", &client_id);
        Ok(Caller {
            agents: bound_agents(app.as_deref()),
            tenant: tenant_scope(app.as_deref()),
            client_id,
        })
    }

    /// Whether this is a tenant's caller, limited to some Agents and Devices.
    pub(crate) fn is_tenant(&self) -> bool {
        self.agents.is_empty() && !self.tenant.is_empty()
    }

    /// Whether the caller sees resource `ty/id` (always, unless it is a tenant's).
    pub(crate) fn sees(&self, state: &RelayState, ty: &str, id: &str) -> bool {
        !self.is_tenant()
            || tenant_sees(&self.tenant, ty, id, |a| state.registry.cached("Agent", a))
    }

    /// Whether a tenant's caller may make this request; see [`FhirRoute`]. Always true for
    /// other callers.
    fn tenant_may(&self, state: &RelayState, req: TenantRequest<'_>) -> bool {
        if !self.is_tenant() {
            return true;
        }
        const SEEN: [&str; 3] = ["Agent", "Device", "Endpoint"];
        match req {
            TenantRequest::Search { ty, read } => read && SEEN.contains(&ty),
            TenantRequest::Read { ty, id } => self.sees(state, ty, id),
            TenantRequest::Write => false,
            // Filtered to the tenant's Agents (and Devices) where they are resolved.
            TenantRequest::TypeOperation { ty } => ty == "Agent",
            TenantRequest::InstanceOperation { ty, id } => {
                ty == "Agent" && self.sees(state, "Agent", id)
            }
        }
    }

    /// The 403 for a tenant's caller reaching beyond its Agents and Devices.
    pub(crate) fn outside_tenant(&self) -> Response {
        outcome(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "Forbidden: {} is limited to its tenant's Agents and Devices ({}); it may read them and their Endpoints and run operations on its Agents",
                self.client_id,
                self.tenant.join(", ")
            ),
        )
    }

    /// Whether these credentials may make this REST request (see `auth::agent_may`).
    pub(crate) fn may(&self, state: &RelayState, read: bool, ty: &str, id: Option<&str>) -> bool {
        agent_may(&self.agents, read, ty, id, |a| {
            state.registry.cached("Agent", a)
        })
    }

    /// The 403 for an agent's credentials used beyond what an agent needs.
    pub(crate) fn forbidden(&self) -> Response {
        outcome(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "Forbidden: {} is an agent's client; it may only read its own Agent and that Agent's Endpoints",
                self.client_id
            ),
        )
    }
}

impl FromRequestParts<Arc<RelayState>> for Caller {
    type Rejection = AuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<RelayState>,
    ) -> Result<Self, Self::Rejection> {
        Caller::authenticate(state, parts).await
    }
}

/// What a tenant's caller asks for, for [`Caller::tenant_may`].
#[derive(Debug, Clone, Copy)]
enum TenantRequest<'a> {
    /// `GET` (`read`) or `POST` `/fhir/R4/{ty}`.
    Search { ty: &'a str, read: bool },
    /// `GET /fhir/R4/{ty}/{id}`.
    Read { ty: &'a str, id: &'a str },
    /// `PUT` or `DELETE` of an instance.
    Write,
    /// `/fhir/R4/{ty}/$op`.
    TypeOperation { ty: &'a str },
    /// `/fhir/R4/{ty}/{id}/$op`.
    InstanceOperation { ty: &'a str, id: &'a str },
}

/// An authenticated caller whose credentials are not bound to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotAgent(pub(crate) Caller);

/// An authenticated caller that is neither an agent's nor a tenant's: the operator's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Operator(pub(crate) Caller);

impl FromRequestParts<Arc<RelayState>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<RelayState>,
    ) -> Result<Self, Self::Rejection> {
        let NotAgent(caller) = NotAgent::from_request_parts(parts, state).await?;
        if caller.is_tenant() {
            return Err(caller.outside_tenant());
        }
        Ok(Operator(caller))
    }
}

impl FromRequestParts<Arc<RelayState>> for NotAgent {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<RelayState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::authenticate(state, parts).await?;
        if !caller.agents.is_empty() {
            return Err(caller.forbidden());
        }
        Ok(NotAgent(caller))
    }
}

/// `$push`, `%24push` → `push`.
pub(crate) fn op_name(s: &str) -> Option<&str> {
    s.strip_prefix('$').or_else(|| s.strip_prefix("%24"))
}

/// `/fhir/R4/{ty}`, `/fhir/R4/{ty}/{id}` or `/fhir/R4/{ty}/{id}/{op}`, authenticated, with a
/// stored type, allowed for the caller. A type-level operation (`Agent/$push`) has no id and
/// an `op`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FhirRoute {
    /// Who.
    pub(crate) caller: Caller,
    /// The resource type.
    pub(crate) ty: String,
    /// The resource id.
    pub(crate) id: Option<String>,
    /// The operation, without its `$`.
    pub(crate) op: Option<String>,
}

impl FromRequestParts<Arc<RelayState>> for FhirRoute {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<RelayState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::authenticate(state, parts).await?;
        let Path(mut path) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let ty = path.remove("ty").unwrap_or_default();
        let check_type = || {
            if RESOURCE_TYPES.contains(&ty.as_str()) {
                Ok(())
            } else {
                Err(not_found(format!("Unsupported resource type {ty}")))
            }
        };
        let (id, op) = match (path.remove("id"), path.remove("op")) {
            (None, _) => {
                // `/fhir/R4/{ty}`: an agent's credentials never search or create.
                if !caller.may(state, false, &ty, None) {
                    return Err(caller.forbidden());
                }
                let read = parts.method == Method::GET;
                if op_name(&ty).is_none()
                    && !caller.tenant_may(state, TenantRequest::Search { ty: &ty, read })
                {
                    return Err(caller.outside_tenant());
                }
                if let Some(op) = op_name(&ty) {
                    // `/fhir/R4/$op` has no type; nothing supports that.
                    return Err(not_found(format!("Unsupported operation ${op}")));
                }
                check_type()?;
                (None, None)
            }
            (Some(id), None) => {
                check_type()?;
                let op = op_name(&id).map(str::to_owned);
                let read = parts.method == Method::GET && op.is_none();
                if !caller.may(state, read, &ty, Some(&id)) {
                    return Err(caller.forbidden());
                }
                let req = match (&op, read) {
                    (Some(_), _) => TenantRequest::TypeOperation { ty: &ty },
                    (None, true) => TenantRequest::Read { ty: &ty, id: &id },
                    (None, false) => TenantRequest::Write,
                };
                if !caller.tenant_may(state, req) {
                    return Err(caller.outside_tenant());
                }
                match op {
                    Some(op) => (None, Some(op)),
                    None => (Some(id), None),
                }
            }
            (Some(id), Some(op)) => {
                check_type()?;
                if !caller.may(state, false, &ty, Some(&id)) {
                    return Err(caller.forbidden());
                }
                if !caller.tenant_may(state, TenantRequest::InstanceOperation { ty: &ty, id: &id })
                {
                    return Err(caller.outside_tenant());
                }
                let Some(op) = op_name(&op) else {
                    return Err(not_found("Not found: no such route"));
                };
                (Some(id), Some(op.to_owned()))
            }
        };
        Ok(FhirRoute { caller, ty, id, op })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header() {
        let h = format!("Basic {}", STANDARD.encode("id:se:cret"));
        assert_eq!(parse_basic(&h), Some(("id".into(), "se:cret".into())));
        assert_eq!(parse_basic("Bearer x"), None);
    }
}
