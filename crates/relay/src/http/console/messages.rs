//! Inbound messages: the relay's inbound log, newest first, filtered by agent and channel; one
//! message shown as HL7 segments, ASTM records or text, with the answer the device got.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::auth::Session;
use super::{hl7_view, view};
use crate::http::RelayState;

/// Rows per page.
const PAGE: usize = 100;
/// Longest filter value accepted.
const MAX_FILTER: usize = 200;

/// `?agent=&channel=`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct MessagesQuery {
    agent: Option<String>,
    channel: Option<String>,
}

/// `GET /console/messages`.
pub(super) async fn list(
    State(state): State<Arc<RelayState>>,
    session: Session,
    Query(q): Query<MessagesQuery>,
) -> Response {
    let agent = q.agent.filter(|s| !s.is_empty());
    let channel = q.channel.filter(|s| !s.is_empty());
    if [&agent, &channel]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| v.len() > MAX_FILTER))
    {
        return view::error_page(
            StatusCode::BAD_REQUEST,
            &format!("A filter is longer than {MAX_FILTER} characters."),
        );
    }
    let total = state.registry.inbound_count().await.unwrap_or(0);
    // The newest page: the log is read in arrival order after a sequence number.
    let after = (total - PAGE as i64).max(0);
    let rows = match state
        .registry
        .inbound(agent.as_deref(), channel.as_deref(), after, PAGE)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return view::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("The inbound log cannot be read: {e}"),
            );
        }
    };
    let body = html! {
        h1 { "Inbound messages" }
        form.filters method="get" action="/console/messages" {
            input name="agent" value=[agent.as_deref()] placeholder="agent id" maxlength=(MAX_FILTER);
            input name="channel" value=[channel.as_deref()] placeholder="channel" maxlength=(MAX_FILTER);
            button type="submit" { "Filter" }
        }
        p.summary { (total) " stored; the newest shown." }
        table.messages #messages {
            thead { tr { th { "#" } th { "Received" } th { "Agent" } th { "Channel" } th { "Device" } th { "Type" } th { "Answer" } } }
            tbody {
                @for r in rows.iter().rev() {
                    tr {
                        td { a href={"/console/messages/" (r.id)} { (r.id) } }
                        td { (r.received_at) }
                        td { (r.agent_id) }
                        td { (r.channel) }
                        td { (r.remote) }
                        td { (summary(&r.body)) }
                        td { (r.status_code.map_or_else(|| "pending".to_owned(), |s| s.to_string())) }
                    }
                }
            }
        }
    };
    view::page("Messages", Some(&session.csrf), "Messages", &body).into_response()
}

/// MSH-9 of an HL7 message, the first record type of ASTM, else the content's first bytes.
fn summary(body: &str) -> String {
    if let Some(msh) = body.strip_prefix("MSH") {
        let sep = msh.chars().next().unwrap_or('|');
        return msh.split(sep).nth(8).unwrap_or_default().to_owned();
    }
    body.chars().take(24).collect()
}

/// `GET /console/messages/{id}`.
pub(super) async fn detail(
    State(state): State<Arc<RelayState>>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return view::error_page(StatusCode::BAD_REQUEST, "A message number is a number.");
    };
    let row = match state.registry.inbound(None, None, id - 1, 1).await {
        Ok(rows) => rows.into_iter().find(|r| r.id == id),
        Err(e) => {
            return view::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("The inbound log cannot be read: {e}"),
            );
        }
    };
    let Some(r) = row else {
        return view::error_page(StatusCode::NOT_FOUND, "There is no such message.");
    };
    let shown = |text: &str| {
        if text.starts_with("MSH") {
            hl7_view::message(text)
        } else if text.starts_with('H') && text.contains('|') {
            hl7_view::astm(text)
        } else {
            html! { pre { (text) } }
        }
    };
    let body = html! {
        h1 { "Message " (r.id) }
        p.summary { (r.received_at) " · Agent/" (r.agent_id) " · channel " (r.channel) " · from " (r.remote) " · " (r.content_type) }
        section { h2 { "Message" } div #message { (shown(&r.body)) } }
        section {
            h2 { "Answer to the device" }
            @match (&r.status_code, &r.response) {
                (Some(s), Some(text)) => { p { "Status " (s) } (shown(text)) }
                _ => { p { "Not answered yet." } }
            }
        }
    };
    view::page(
        &format!("Message {}", r.id),
        Some(&session.csrf),
        "Messages",
        &body,
    )
    .into_response()
}
