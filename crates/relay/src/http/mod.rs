//! The HTTP side: routes, the authentication extractors, request bodies and FHIR responses.
//! Routes call the services (`agents`, `orders`, the store); nothing below calls back up.

// Route helpers return `Result<_, Response>`: the error *is* the HTTP answer, built once per
// failed request. Boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

mod binary;
mod body;
mod console;
mod extract;
mod operations;
mod outpost;
mod resources;
mod response;
mod token;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use crate::RelayConfig;
use crate::agents::{AgentRouter, Sessions};
use crate::auth::{Logins, Tokens};
use crate::orders::Orders;
use crate::store::Registry;
pub(crate) use console::AgentCounts;
pub use operations::UPGRADE_TIMEOUT;
use response::not_found;

/// Everything the routes share.
#[derive(Debug)]
pub(crate) struct RelayState {
    pub(crate) config: RelayConfig,
    pub(crate) registry: Registry,
    pub(crate) tokens: Tokens,
    pub(crate) logins: Logins,
    pub(crate) router: Arc<AgentRouter>,
    pub(crate) orders: Arc<Orders>,
    pub(crate) sessions: Arc<Sessions>,
    pub(crate) blobs: Arc<dyn crate::blob::BlobStore>,
    /// Every `$push`, for the console.
    pub(crate) push_log: crate::store::PushLog,
    /// The agents' queue and dead-letter counts, for the console's fleet.
    pub(crate) agent_counts: console::AgentCounts,
}

/// The relay's routes.
pub(crate) fn router(state: Arc<RelayState>) -> Router {
    Router::new()
        .route("/oauth2/token", post(token::token))
        .route("/ws/agent", get(ws_agent))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/outpost/inbound", get(outpost::inbound_list))
        .route("/outpost/notify/{subscription}", post(outpost::notify))
        .route("/fhir/R4/Binary", post(binary::create))
        .route("/fhir/R4/Binary/{id}", get(binary::read))
        .route("/fhir/R4/{ty}", any(resources::route))
        .route("/fhir/R4/{ty}/{id}", any(resources::route))
        .route("/fhir/R4/{ty}/{id}/{op}", any(resources::route))
        .merge(console::router())
        .fallback(|| async { not_found("Not found: no such route") })
        .with_state(state)
}

/// `GET /metrics`: Prometheus text exposition (aggregate counts only; no agent ids).
async fn metrics(State(state): State<Arc<RelayState>>) -> Response {
    let text = state
        .sessions
        .metrics
        .render(state.sessions.local.connected_count());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// `GET /ws/agent`: upgrades to an agent session.
async fn ws_agent(
    State(state): State<Arc<RelayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ws: WebSocketUpgrade,
) -> Response {
    let max = state.config.max_ws_message;
    // Small buffers: a thousand idle agents should not cost 128 KiB each (tungstenite's
    // default read buffer). Unsent data is bounded by the session's outbox; tungstenite's own
    // write buffer may hold one more largest message.
    let sessions = state.sessions.clone();
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(2 * max + 64 * 1024)
        .on_upgrade(move |socket| crate::agents::serve(sessions, socket, peer))
}
