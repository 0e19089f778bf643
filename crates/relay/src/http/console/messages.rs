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
use crate::store::{InboundRow, JournalQuery};

/// Rows per page.
const PAGE: usize = 100;
/// Longest filter value accepted.
const MAX_FILTER: usize = 200;
/// How often the live list looks for new messages.
const LIVE_PERIOD: Duration = Duration::from_secs(1);

/// The search form of both lists: each a field the store indexes.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Filters {
    agent: Option<String>,
    /// The channel (inbound) or the destination (pushes).
    place: Option<String>,
    outcome: Option<String>,
    control_id: Option<String>,
    message_type: Option<String>,
    patient_id: Option<String>,
    /// Inbound: the device's address.
    device: Option<String>,
    /// From this time (`YYYY-MM-DDTHH:MM[:SS]`, UTC, as a `datetime-local` input sends it).
    since: Option<String>,
    /// Until this time, likewise.
    until: Option<String>,
    before: Option<i64>,
}

/// A `datetime-local` value, read as UTC, in ms since the epoch.
fn time_ms(v: &str) -> Option<i64> {
    ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(v, f).ok())
        .map(|t| t.and_utc().timestamp_millis())
}

impl Filters {
    /// The query, or the error page for a value too long to be a key.
    fn query(self) -> Result<(JournalQuery, Filters), Response> {
        let keep = |v: Option<String>| v.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let f = Filters {
            agent: keep(self.agent),
            place: keep(self.place),
            outcome: keep(self.outcome),
            control_id: keep(self.control_id),
            message_type: keep(self.message_type),
            patient_id: keep(self.patient_id),
            device: keep(self.device),
            since: keep(self.since),
            until: keep(self.until),
            before: self.before,
        };
        let values = [
            &f.agent,
            &f.place,
            &f.outcome,
            &f.control_id,
            &f.message_type,
            &f.patient_id,
            &f.device,
            &f.since,
            &f.until,
        ];
        if values
            .iter()
            .any(|v| v.as_ref().is_some_and(|v| v.len() > MAX_FILTER))
        {
            return Err(view::error_page(
                StatusCode::BAD_REQUEST,
                &format!("A filter is longer than {MAX_FILTER} characters."),
            ));
        }
        let time = |v: &Option<String>| match v {
            None => Ok(None),
            Some(v) => time_ms(v).map(Some).ok_or_else(|| {
                view::error_page(StatusCode::BAD_REQUEST, "A time is YYYY-MM-DDTHH:MM (UTC).")
            }),
        };
        let since_ms = time(&f.since)?;
        let until_ms = time(&f.until)?;
        // Keys are stored cut at MAX_KEY characters: so is what is searched for.
        let key = |v: &Option<String>| {
            v.as_ref()
                .map(|v| v.chars().take(crate::store::MAX_KEY).collect::<String>())
        };
        let q = JournalQuery {
            device: f.device.clone(),
            since_ms,
            until_ms,
            agent_id: f.agent.clone(),
            place: f.place.clone(),
            outcome: f.outcome.clone(),
            control_id: key(&f.control_id),
            message_type: key(&f.message_type),
            patient_id: key(&f.patient_id),
            before: f.before,
            limit: PAGE,
        };
        Ok((q, f))
    }

    /// Whether only the agent and place are filtered (what the live list follows).
    fn live(&self) -> bool {
        self.outcome.is_none()
            && self.device.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.control_id.is_none()
            && self.message_type.is_none()
            && self.patient_id.is_none()
            && self.before.is_none()
    }

    /// The form, for `action` (`/console/messages` or `/console/pushes`).
    fn form(&self, action: &str, place: &str, pushes: bool) -> Markup {
        html! {
            form.filters method="get" action=(action) {
                input name="agent" value=[self.agent.as_deref()] placeholder="agent id" maxlength=(MAX_FILTER);
                input name="place" value=[self.place.as_deref()] placeholder=(place) maxlength=(MAX_FILTER);
                @if pushes {
                    select name="outcome" {
                        option value="" { "any outcome" }
                        @for o in ["answered", "sent", "device_error", "timeout", "unavailable", "rejected"] {
                            option value=(o) selected[self.outcome.as_deref() == Some(o)] { (o) }
                        }
                    }
                } @else {
                    input name="device" value=[self.device.as_deref()] placeholder="device address" maxlength=(MAX_FILTER);
                }
                input name="control_id" value=[self.control_id.as_deref()] placeholder="control id (MSH-10)" maxlength=(MAX_FILTER);
                input name="message_type" value=[self.message_type.as_deref()] placeholder="type (ADT or ADT^A01)" maxlength=(MAX_FILTER);
                input name="patient_id" value=[self.patient_id.as_deref()] placeholder="patient id (PID-3)" maxlength=(MAX_FILTER);
                label { "from " input type="datetime-local" name="since" value=[self.since.as_deref()]; }
                label { "until " input type="datetime-local" name="until" value=[self.until.as_deref()]; }
                " UTC"
                button type="submit" { "Search" }
            }
        }
    }

    /// The link to the next (older) page after `last`.
    fn older(&self, action: &str, last: i64) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("agent", &self.agent),
            ("place", &self.place),
            ("outcome", &self.outcome),
            ("control_id", &self.control_id),
            ("message_type", &self.message_type),
            ("patient_id", &self.patient_id),
            ("device", &self.device),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
        q.append_pair("before", &last.to_string());
        format!("{action}?{}", q.finish())
    }
}

/// The store's error as a page.
fn unreadable(e: &crate::store::StoreError) -> Response {
    view::error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("The log cannot be read: {e}"),
    )
}

/// `GET /console/messages`: inbound messages, newest first, searched; live when only the agent
/// and channel are filtered.
pub(super) async fn list(
    State(state): State<Arc<RelayState>>,
    session: Session,
    Query(filters): Query<Filters>,
) -> Response {
    let (q, f) = match filters.query() {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rows = match state.registry.inbound_search(q).await {
        Ok(r) => r,
        Err(e) => return unreadable(&e),
    };
    let newest = rows.first().map_or(0, |r| r.id);
    let live = f.live().then(|| {
        format!(
            "/console/messages/events?after={newest}&agent={}&channel={}",
            encode(f.agent.as_deref().unwrap_or_default()),
            encode(f.place.as_deref().unwrap_or_default())
        )
    });
    let body = html! {
        (tabs("inbound"))
        (f.form("/console/messages", "channel", false))
        p.summary {
            @if live.is_some() { "Newest first; new messages appear as they come." }
            @else { "Newest first." }
        }
        table.messages #messages {
            thead { tr { th { "#" } th { "Received" } th { "Agent" } th { "Channel" } th { "Device" } th { "Type" } th { "Answer" } } }
            tbody hx-ext=[live.as_ref().map(|_| "sse")] sse-connect=[live.as_deref()] sse-swap=[live.as_ref().map(|_| "message")] hx-swap="afterbegin" {
                @for r in &rows { (row_html(r)) }
            }
        }
        @if rows.len() == PAGE {
            @if let Some(last) = rows.last() { p { a href=(f.older("/console/messages", last.id)) { "Older" } } }
        }
    };
    view::page("Messages", Some(&session.csrf), "Messages", &body).into_response()
}

/// The two lists' tabs.
fn tabs(active: &str) -> Markup {
    html! {
        nav.tabs {
            a href="/console/messages" class=[(active == "inbound").then_some("active")] { "Inbound messages" }
            a href="/console/pushes" class=[(active == "pushes").then_some("active")] { "Pushes" }
        }
    }
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

/// `POST /console/messages/{id}/resend` (with the CSRF header): the stored message goes where
/// a new one on its channel would (its processor or target); the new answer is shown and
/// audited, the device's stays recorded.
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
    if id < 1 {
        return Err(view::error_page(
            StatusCode::NOT_FOUND,
            "There is no such message.",
        ));
    }
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
    } else if let Some(table) = hl7_view::dicom_json(text) {
        table
    } else {
        html! { pre { (text) } }
    }
}

/// `GET /console/pushes`: the push log, newest first, searched.
pub(super) async fn pushes(
    State(state): State<Arc<RelayState>>,
    session: Session,
    Query(filters): Query<Filters>,
) -> Response {
    let (q, f) = match filters.query() {
        Ok(x) => x,
        Err(r) => return r,
    };
    let rows = match state.registry.pushes(q).await {
        Ok(r) => r,
        Err(e) => return unreadable(&e),
    };
    let body = html! {
        (tabs("pushes"))
        (f.form("/console/pushes", "destination", true))
        p.summary { "Newest first. Each push is logged after it is answered; the log keeps the newest 100,000 for up to 7 days." }
        table.messages #pushes {
            thead { tr { th { "#" } th { "At" } th { "Caller" } th { "Agent" } th { "Destination" } th { "Type" } th { "Outcome" } th { "ms" } } }
            tbody {
                @for r in &rows {
                    @let p = &r.push;
                    tr id={"push-" (r.id)} data-outcome=(p.outcome) {
                        td { a href={"/console/pushes/" (r.id)} { (r.id) } }
                        td { (at(p.at_ms)) }
                        td { (p.caller) }
                        td { (p.agent_id) }
                        td { (p.destination) }
                        td { (p.keys.message_type.as_deref().unwrap_or(&p.content_type)) }
                        td class=(if p.status == 200 { "ok" } else { "error" }) { (p.outcome) " (" (p.status) ")" }
                        td { (format!("{:.1}", p.latency_us as f64 / 1000.0)) }
                    }
                }
            }
        }
        @if rows.len() == PAGE {
            @if let Some(last) = rows.last() { p { a href=(f.older("/console/pushes", last.id)) { "Older" } } }
        }
    };
    view::page("Pushes", Some(&session.csrf), "Messages", &body).into_response()
}

/// Milliseconds since the epoch as RFC 3339.
fn at(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// The logged push `id`, or the error page.
async fn find_push(state: &RelayState, id: &str) -> Result<crate::store::PushRow, Response> {
    let Ok(id) = id.parse::<i64>() else {
        return Err(view::error_page(
            StatusCode::BAD_REQUEST,
            "A push number is a number.",
        ));
    };
    if id < 1 {
        return Err(view::error_page(
            StatusCode::NOT_FOUND,
            "There is no such push.",
        ));
    }
    let q = JournalQuery {
        before: Some(id.saturating_add(1)),
        limit: 1,
        ..JournalQuery::default()
    };
    match state.registry.pushes(q).await {
        Ok(rows) => rows
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| view::error_page(StatusCode::NOT_FOUND, "There is no such push.")),
        Err(e) => Err(unreadable(&e)),
    }
}

/// `GET /console/pushes/{id}`.
pub(super) async fn push_detail(
    State(state): State<Arc<RelayState>>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let r = match find_push(&state, &id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let p = &r.push;
    let body = html! {
        h1 { "Push " (r.id) }
        p.summary {
            (at(p.at_ms)) " · by " (p.caller) " · Agent/" (p.agent_id) " → " (p.destination) " · "
            (p.content_type) " · " (p.outcome) " (HTTP " (p.status) ") in "
            (format!("{:.1}", p.latency_us as f64 / 1000.0)) " ms"
        }
        section {
            h2 { "Message" }
            @if p.request_bytes > p.request.len() as i64 {
                p.error { "The first " (p.request.len()) " of " (p.request_bytes) " bytes: the log keeps 64 KiB of a message." }
            }
            div #push-message { (shown(&p.request)) }
        }
        section { h2 { "Answer" } div #push-answer-logged { (shown(&p.answer)) } }
        section.actions {
            button #repush hx-post={"/console/pushes/" (r.id) "/repush"} hx-target="#repush-answer"
                hx-confirm="Push this message to the same destination again?" { "Push again" }
            div #repush-answer.answer {}
        }
    };
    view::page(
        &format!("Push {}", r.id),
        Some(&session.csrf),
        "Messages",
        &body,
    )
    .into_response()
}

/// `POST /console/pushes/{id}/repush` (with the CSRF header): the logged message pushed again,
/// with `waitForResponse`, to the same Agent and destination; the answer shown, audited.
pub(super) async fn repush(
    State(state): State<Arc<RelayState>>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let r = match find_push(&state, &id).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let p = &r.push;
    if p.request_bytes > p.request.len() as i64 {
        return Html(
            html! {
                p.error #repush-status {
                    "Not pushed: the log keeps the first 64 KiB of a message and this one had "
                    (p.request_bytes) " bytes. Push it again from where it came from."
                }
            }
            .into_string(),
        )
        .into_response();
    }
    let Some(agent) = state.registry.cached("Agent", &p.agent_id) else {
        return view::error_page(StatusCode::NOT_FOUND, "That push's Agent no longer exists.");
    };
    let params = serde_json::json!({"destination": p.destination, "contentType": p.content_type,
        "body": p.request, "waitForResponse": true});
    let a = super::super::operations::console_push(
        &state,
        &session.client_id,
        &agent,
        params.to_string().as_bytes(),
    )
    .await;
    audit(
        &state,
        &session.client_id,
        "repush",
        Some(&format!("Agent/{}", p.agent_id)),
        a.status == 200,
        &format!("push {} to {}", r.id, p.destination),
    )
    .await;
    Html(
        html! {
            p class=(if a.status == 200 { "ok" } else { "error" }) #repush-status { "Pushed again: HTTP " (a.status) }
            (shown(&a.body))
        }
        .into_string(),
    )
    .into_response()
}
