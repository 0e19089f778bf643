//! Inbound messages: the relay's inbound log, newest first, filtered by agent and channel; one
//! message shown as HL7 segments, ASTM records or text, with the answer the device got.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::auth::{Session, audit};
use super::{hl7_view, view};
use crate::http::RelayState;
use crate::store::InboundRow;

/// Rows per page.
const PAGE: usize = 100;
/// Longest filter value accepted.
const MAX_FILTER: usize = 200;
/// How often the live list looks for new messages.
const LIVE_PERIOD: Duration = Duration::from_secs(1);

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
    let last = rows.last().map_or(after, |r| r.id);
    let live = format!(
        "/console/messages/events?after={last}&agent={}&channel={}",
        encode(agent.as_deref().unwrap_or_default()),
        encode(channel.as_deref().unwrap_or_default())
    );
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
            tbody hx-ext="sse" sse-connect=(live) sse-swap="message" hx-swap="afterbegin" {
                @for r in rows.iter().rev() { (row_html(r)) }
            }
        }
    };
    view::page("Messages", Some(&session.csrf), "Messages", &body).into_response()
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn row_html(r: &InboundRow) -> Markup {
    html! {
        tr id={"message-" (r.id)} {
            td { a href={"/console/messages/" (r.id)} { (r.id) } }
            td { (r.received_at) }
            td { (r.agent_id) }
            td { (r.channel) }
            td { (r.remote) }
            td.type { (summary(&r.body)) }
            td { (r.status_code.map_or_else(|| "pending".to_owned(), |s| s.to_string())) }
        }
    }
}

/// `?after=&agent=&channel=` of the live list.
#[derive(Debug, Default, Deserialize)]
pub(super) struct LiveQuery {
    after: i64,
    agent: Option<String>,
    channel: Option<String>,
}

/// `GET /console/messages/events`: server-sent events, one `message` (its row's HTML) for
/// each message stored after `after`, looked for every second.
pub(super) async fn events(
    State(state): State<Arc<RelayState>>,
    _session: Session,
    Query(q): Query<LiveQuery>,
) -> Response {
    let agent = q.agent.filter(|s| !s.is_empty() && s.len() <= MAX_FILTER);
    let channel = q.channel.filter(|s| !s.is_empty() && s.len() <= MAX_FILTER);
    let stream = futures_util::stream::unfold(
        (state, q.after, Vec::<Event>::new()),
        move |(state, mut after, mut pending)| {
            let (agent, channel) = (agent.clone(), channel.clone());
            async move {
                loop {
                    if let Some(e) = pending.pop() {
                        return Some((Ok::<_, Infallible>(e), (state, after, pending)));
                    }
                    tokio::time::sleep(LIVE_PERIOD).await;
                    let rows = state
                        .registry
                        .inbound(agent.as_deref(), channel.as_deref(), after, PAGE)
                        .await
                        .unwrap_or_default();
                    if let Some(last) = rows.last() {
                        after = last.id;
                    }
                    // Popped from the end, so the oldest goes first and each newer one is
                    // put above it: the newest ends on top.
                    pending.extend(rows.iter().rev().map(|r| {
                        Event::default()
                            .event("message")
                            .data(row_html(r).into_string())
                    }));
                    if pending.is_empty() {
                        return Some((
                            Ok(Event::default().comment("unchanged")),
                            (state, after, pending),
                        ));
                    }
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
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
    let r = match find(&state, &id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let body = html! {
        h1 { "Message " (r.id) }
        p.summary { (r.received_at) " · Agent/" (r.agent_id) " · channel " (r.channel) " · from " (r.remote) " · " (r.content_type) }
        section { h2 { "Message" } div #message { (shown(&r.body)) } }
        section.actions {
            button #resend hx-post={"/console/messages/" (r.id) "/resend"} hx-target="#resend-answer"
                hx-confirm="Send this message to its channel's target again?" { "Resend to its target" }
            div #resend-answer.answer {}
        }
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

/// `POST /console/messages/{id}/resend` (with the CSRF header): the stored message goes to
/// its channel's target again; the new answer is shown, recorded, and audited.
pub(super) async fn resend(
    State(state): State<Arc<RelayState>>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let row = match find(&state, &id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let entity = format!("Agent/{}", row.agent_id);
    let (ok, html) = match state.sessions.inbound.resend(&row).await {
        Ok((status, body)) => (
            true,
            html! { p.ok #resend-status { "Sent again: status " (status) } (shown(&body)) },
        ),
        Err(e) => (false, html! { p.error #resend-status { (e) } }),
    };
    audit(
        &state,
        &session.client_id,
        "resend",
        Some(&entity),
        ok,
        &format!("inbound message {}", row.id),
    )
    .await;
    Html(html.into_string()).into_response()
}

/// The stored message `id`, or the error page.
async fn find(state: &RelayState, id: &str) -> Result<InboundRow, Response> {
    let Ok(id) = id.parse::<i64>() else {
        return Err(view::error_page(
            StatusCode::BAD_REQUEST,
            "A message number is a number.",
        ));
    };
    match state.registry.inbound(None, None, id - 1, 1).await {
        Ok(rows) => rows
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| view::error_page(StatusCode::NOT_FOUND, "There is no such message.")),
        Err(e) => Err(view::error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("The inbound log cannot be read: {e}"),
        )),
    }
}

/// A message body as HL7 segments, ASTM records or text.
fn shown(text: &str) -> Markup {
    if text.starts_with("MSH") {
        hl7_view::message(text)
    } else if text.starts_with('H') && text.contains('|') {
        hl7_view::astm(text)
    } else {
        html! { pre { (text) } }
    }
}
