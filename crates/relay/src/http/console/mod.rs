//! The operator's console, served by the relay at `/console`: the fleet with live status, an
//! agent's page (channels, devices, logs, stats, reload/ping/upgrade), and the inbound
//! messages with an HL7 view.
//!
//! Server-rendered HTML ([`maud`], escaped by construction) with htmx for requests and
//! fragment swaps and its server-sent-events extension for live status; the browser libraries
//! are vendored under `assets/console/vendor` by `scripts/console-assets` and embedded in the
//! binary. No state of its own: a console session is a cookie signed with the relay's token
//! key, so any relay process of a scale-out deployment serves any request.
//!
//! ```text
//!  browser ──GET /console/login── login form (+ a login CSRF cookie)
//!          ──POST /console/login── operator ClientApplication id + secret ──▶ session cookie
//!          ──GET /console, /console/agents/{id}, /console/messages ──▶ pages
//!          ──GET /console/events (SSE) ──▶ a fleet row each time an agent's status changes
//!          ──POST /console/agents/{id}/{action} + X-CSRF-Token ──▶ the agent's answer; AuditEvent
//! ```

mod auth;
mod charts;
mod fleet;
mod hl7_view;
mod messages;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::RelayState;

pub(crate) use fleet::AgentCounts;

/// The console's routes, to merge into the relay's.
pub(crate) fn router() -> Router<Arc<RelayState>> {
    Router::new()
        .route("/console", get(fleet::page))
        .route("/console/", get(fleet::page))
        .route("/console/login", get(auth::login_page).post(auth::login))
        .route("/console/logout", post(auth::logout))
        .route("/console/events", get(fleet::events))
        .route("/console/agents/{id}", get(fleet::agent_page))
        .route("/console/agents/{id}/panel/{panel}", get(fleet::panel))
        .route("/console/agents/{id}/action/{action}", post(fleet::action))
        .route("/console/messages", get(messages::list))
        .route("/console/messages/events", get(messages::events))
        .route("/console/messages/{id}", get(messages::detail))
        .route("/console/messages/{id}/resend", post(messages::resend))
        .route("/console/pushes", get(messages::pushes))
        .route("/console/pushes/{id}", get(messages::push_detail))
        .route("/console/pushes/{id}/repush", post(messages::repush))
        .route("/console/charts", get(charts::page))
        .route("/console/charts/data", get(charts::data))
        .route("/console/assets/{name}", get(asset))
        .layer(axum::middleware::map_response(harden))
}

/// Every console answer: not kept in caches (pages show patient data; the assets say
/// otherwise for themselves), not framed by other sites, scripts and styles from the relay
/// only (the pages' own inline ones included), no content-type sniffing, no referrer beyond
/// the relay.
async fn harden(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    resp
}

/// `GET /console/assets/{name}`: the embedded files, cached for a day.
async fn asset(Path(name): Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match name.as_str() {
        "htmx.min.js" => (
            include_bytes!("../../../assets/console/vendor/htmx.min.js"),
            "text/javascript",
        ),
        "htmx-sse.min.js" => (
            include_bytes!("../../../assets/console/vendor/htmx-sse.min.js"),
            "text/javascript",
        ),
        "uPlot.iife.min.js" => (
            include_bytes!("../../../assets/console/vendor/uPlot.iife.min.js"),
            "text/javascript",
        ),
        "uPlot.min.css" => (
            include_bytes!("../../../assets/console/vendor/uPlot.min.css"),
            "text/css",
        ),
        "console.css" => (
            include_bytes!("../../../assets/console/console.css"),
            "text/css",
        ),
        _ => return view::error_page(StatusCode::NOT_FOUND, "No such file."),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}
