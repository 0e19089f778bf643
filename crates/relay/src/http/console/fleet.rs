//! The fleet: every Agent with its live status, an agent's page, and what an operator asks of
//! an agent (reload its configuration, ping a host, upgrade, push a message).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Session, audit};
use super::{hl7_view, view};
use crate::ChannelCounts;
use crate::fhir::id_of;
use crate::http::RelayState;
use crate::http::operations::{console_agent_op, console_push};

/// Longest search text accepted.
const MAX_QUERY: usize = 200;
/// How often the live view looks for status changes.
const LIVE_PERIOD: Duration = Duration::from_secs(1);
/// The live view reads the channels' counts once in this many checks.
const COUNTS_EVERY: usize = 10;
/// Most Devices offered in the push form (any other can be typed).
const MAX_DEVICES: usize = 1000;
/// Most agents listed on one page.
const PAGE: usize = 1000;

/// One agent as the fleet shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    id: String,
    name: String,
    site: String,
    status: String,
    version: String,
    last_heartbeat: String,
    relay: &'static str,
    /// Each channel, with what the relay stored from it and what the agent keeps of it.
    channels: Vec<(String, Option<ChannelCounts>, Option<Kept>)>,
}

/// What an agent keeps of one channel: messages queued for the relay, and dead letters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kept {
    queued: i64,
    dead: i64,
}

/// The agents' own counts per channel (queued, dead letters), from their `$stats`, asked of
/// each connected agent at most every [`AGENT_COUNTS_AGE`] while a fleet page is open; shared
/// by every console of this process.
#[derive(Debug, Default)]
pub(crate) struct AgentCounts {
    /// Per agent: when it was last asked, and its answer by channel.
    by_agent: std::sync::Mutex<HashMap<String, Asked>>,
}

/// When an agent was last asked for its counts, and its answer by channel.
type Asked = (std::time::Instant, HashMap<String, Kept>);

/// How old an agent's counts may be before it is asked again.
const AGENT_COUNTS_AGE: Duration = Duration::from_secs(30);
/// Agents asked at once.
const AGENT_COUNTS_AT_ONCE: usize = 16;

impl AgentCounts {
    fn get(&self, agent: &str, channel: &str) -> Option<Kept> {
        let m = self.by_agent.lock().unwrap_or_else(|p| p.into_inner());
        m.get(agent).and_then(|(_, c)| c.get(channel).copied())
    }

    /// Asks each of `agents` whose counts are older than [`AGENT_COUNTS_AGE`] (or missing)
    /// for its `$stats`, a few at a time.
    async fn refresh(state: &RelayState, agents: Vec<String>) {
        use futures_util::StreamExt;
        let due: Vec<String> = {
            let mut m = state
                .agent_counts
                .by_agent
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let now = std::time::Instant::now();
            agents
                .into_iter()
                .filter(|a| {
                    let stale = m
                        .get(a)
                        .is_none_or(|(at, _)| now.duration_since(*at) >= AGENT_COUNTS_AGE);
                    if stale {
                        // Marked now, so another console does not ask as well.
                        let kept = m.remove(a).map(|(_, c)| c).unwrap_or_default();
                        m.insert(a.clone(), (now, kept));
                    }
                    stale
                })
                .collect()
        };
        futures_util::stream::iter(due)
            .for_each_concurrent(AGENT_COUNTS_AT_ONCE, |agent| async move {
                let Ok(v) = console_agent_op(state, &agent, "stats", &[]).await else {
                    return;
                };
                let stats: Value = v["parameter"][0]["valueString"]
                    .as_str()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(Value::Null);
                let counts: HashMap<String, Kept> = stats["channelStats"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(name, c)| {
                        (
                            name.clone(),
                            Kept {
                                queued: c["queued"].as_i64().unwrap_or(0),
                                dead: c["deadLettered"].as_i64().unwrap_or(0),
                            },
                        )
                    })
                    .collect();
                let mut m = state
                    .agent_counts
                    .by_agent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                m.insert(agent, (std::time::Instant::now(), counts));
            })
            .await;
    }
}

/// What the relay stored per `(agent, channel)`.
type Counts = HashMap<(String, String), ChannelCounts>;

async fn row(state: &RelayState, agent: &Value, counts: &Counts) -> Row {
    let id = id_of(agent).to_owned();
    // Held by this process: its own record; else where the router finds it (the cluster).
    let local = state.router.local().presence(&id);
    let here = local.status == "connected";
    let p = if here {
        local
    } else {
        state.router.presence(&id).await
    };
    Row {
        name: agent["name"].as_str().unwrap_or_default().to_owned(),
        site: agent["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["value"].as_str())
            .collect::<Vec<_>>()
            .join(", "),
        status: p.status.to_owned(),
        version: p.version,
        last_heartbeat: p.last_updated.unwrap_or_default(),
        relay: match (here, p.status) {
            (true, _) => "this process",
            (false, "connected") => "another process",
            _ => "",
        },
        channels: agent["channel"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str())
            .map(|name| {
                let n = counts.get(&(id.clone(), name.to_owned())).cloned();
                let kept = state.agent_counts.get(&id, name);
                (name.to_owned(), n, kept)
            })
            .collect(),
        id,
    }
}

fn row_html(r: &Row) -> Markup {
    html! {
        tr id={"agent-" (r.id)} sse-swap={"agent-" (r.id)} hx-swap="outerHTML" data-status=(r.status) {
            td { a href={"/console/agents/" (r.id)} { (if r.name.is_empty() { &r.id } else { &r.name }) } br; small { (r.id) } }
            td { (r.site) }
            td.status { (view::status_badge(&r.status)) }
            td { (r.version) }
            td { time { (r.last_heartbeat) } }
            td { (r.relay) }
            td.channels {
                @for (name, n, kept) in &r.channels {
                    div {
                        b { (name) }
                        @match n {
                            Some(n) => {
                                " " (n.received) " received · " (n.answered) " answered"
                                @if n.errored > 0 { " · " span.error { (n.errored) " errored" } }
                                " · last " time { (n.last) }
                            }
                            None => { " nothing received" }
                        }
                        @if let Some(k) = kept {
                            " · at the agent: " (k.queued) " queued"
                            @if k.dead > 0 { " · " span.error { (k.dead) " dead letters" } }
                            @else { " · no dead letters" }
                        }
                    }
                }
            }
        }
    }
}

/// `?q=` (name, id or site contains) and `?status=`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct FleetQuery {
    q: Option<String>,
    status: Option<String>,
}

/// The rows a fleet query selects, at most [`PAGE`] of them, and how many matched in all.
async fn select(state: &RelayState, f: &Filter, counts: &Counts) -> (Vec<Row>, usize) {
    let agents = state
        .registry
        .search("Agent", &[], usize::MAX)
        .await
        .unwrap_or_default();
    let mut rows = Vec::new();
    let mut matched = 0;
    for a in agents {
        let r = row(state, &a, counts).await;
        let hit = f.needle.is_empty()
            || [&r.id, &r.name, &r.site]
                .iter()
                .any(|s| s.to_lowercase().contains(&f.needle));
        if hit && (f.status.is_empty() || r.status == f.status) {
            matched += 1;
            if rows.len() < PAGE {
                rows.push(r);
            }
        }
    }
    (rows, matched)
}

/// A fleet query, checked.
#[derive(Debug, Clone, Default)]
struct Filter {
    text: String,
    needle: String,
    status: String,
}

impl FleetQuery {
    fn filter(self) -> Result<Filter, Response> {
        let text = self.q.unwrap_or_default();
        if text.len() > MAX_QUERY {
            return Err(view::error_page(
                StatusCode::BAD_REQUEST,
                &format!("The search text is longer than {MAX_QUERY} characters."),
            ));
        }
        Ok(Filter {
            needle: text.to_lowercase(),
            text,
            status: self.status.unwrap_or_default(),
        })
    }
}

/// `GET /console`: the fleet.
pub(super) async fn page(
    State(state): State<Arc<RelayState>>,
    session: Session,
    Query(q): Query<FleetQuery>,
) -> Response {
    let f = match q.filter() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let counts = state
        .registry
        .inbound_channel_counts()
        .await
        .unwrap_or_default();
    let (rows, matched) = select(&state, &f, &counts).await;
    let (text, status) = (&f.text, &f.status);
    let live = format!(
        "/console/events?q={}&status={}",
        form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>(),
        form_urlencoded::byte_serialize(status.as_bytes()).collect::<String>()
    );
    let body = html! {
        h1 { "Fleet" }
        form.filters method="get" action="/console" {
            input name="q" value=(text) placeholder="name, id or site" maxlength=(MAX_QUERY);
            select name="status" {
                option value="" { "any status" }
                @for s in ["connected", "disconnected", "unknown"] {
                    option value=(s) selected[*status == s] { (if s == "unknown" { "never seen" } else { s }) }
                }
            }
            button type="submit" { "Filter" }
        }
        p.summary #fleet-summary {
            @if matched > rows.len() {
                (matched) " agents match; the first " (rows.len()) " are shown: search to narrow them. "
            } @else {
                (matched) " agents. "
            }
            "Live: each row changes as its agent connects, disconnects or sends a heartbeat."
        }
        table.fleet #fleet hx-ext="sse" sse-connect=(live) {
            thead { tr { th { "Agent" } th { "Site" } th { "Status" } th { "Version" } th { "Last heartbeat" } th { "Relay" } th { "Channels" } } }
            tbody { @for r in &rows { (row_html(r)) } }
        }
    };
    view::page("Fleet", Some(&session.csrf), "Fleet", &body).into_response()
}

/// `GET /console/events`: server-sent events, one per agent whose row changed (named
/// `agent-<id>`, the row's new HTML), checked every second (the channels' counts every
/// [`COUNTS_EVERY`] checks).
pub(super) async fn events(
    State(state): State<Arc<RelayState>>,
    _session: Session,
    Query(q): Query<FleetQuery>,
) -> Response {
    let f = match q.filter() {
        Ok(f) => f,
        Err(r) => return r,
    };
    let seen: HashMap<String, Row> = HashMap::new();
    let stream = futures_util::stream::unfold(
        (state, seen, Vec::<Event>::new(), 0usize, Counts::new()),
        move |(state, mut seen, mut pending, tick, mut counts)| {
            let f = f.clone();
            async move {
                let mut tick = tick;
                loop {
                    if let Some(e) = pending.pop() {
                        return Some((Ok(e), (state, seen, pending, tick, counts)));
                    }
                    if tick > 0 {
                        tokio::time::sleep(LIVE_PERIOD).await;
                    }
                    if tick.is_multiple_of(COUNTS_EVERY) {
                        counts = state
                            .registry
                            .inbound_channel_counts()
                            .await
                            .unwrap_or_default();
                    }
                    tick += 1;
                    for r in select(&state, &f, &counts).await.0 {
                        if seen.get(&r.id) != Some(&r) {
                            pending.push(
                                Event::default()
                                    .event(format!("agent-{}", r.id))
                                    .data(row_html(&r).into_string()),
                            );
                            seen.insert(r.id.clone(), r);
                        }
                    }
                    if tick % COUNTS_EVERY == 1 {
                        // The agents' own counts: asked in the background (those not asked for a
                        // while), seen at a later look.
                        let connected: Vec<String> = seen
                            .values()
                            .filter(|r| r.status == "connected")
                            .map(|r| r.id.clone())
                            .collect();
                        let s = state.clone();
                        tokio::spawn(async move { AgentCounts::refresh(&s, connected).await });
                    }
                    if pending.is_empty() {
                        // Nothing changed: wait for the next look.
                        return Some((
                            Ok::<_, Infallible>(Event::default().comment("unchanged")),
                            (state, seen, pending, tick, counts),
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

/// The Agent `id`, or the console's 404 page.
fn agent_or_404(state: &RelayState, id: &str) -> Result<Arc<Value>, Response> {
    if id.len() > 64 {
        return Err(view::error_page(
            StatusCode::BAD_REQUEST,
            "That is not an Agent id.",
        ));
    }
    state
        .registry
        .cached("Agent", id)
        .ok_or_else(|| view::error_page(StatusCode::NOT_FOUND, "There is no such Agent."))
}

/// `GET /console/agents/{id}`.
pub(super) async fn agent_page(
    State(state): State<Arc<RelayState>>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let agent = match agent_or_404(&state, &id) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let r = row(&state, &agent, &Counts::new()).await;
    let channels: Vec<(String, String)> = agent["channel"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let name = c["name"].as_str().unwrap_or_default().to_owned();
            let address = c["endpoint"]["reference"]
                .as_str()
                .and_then(|r| r.strip_prefix("Endpoint/"))
                .and_then(|e| state.registry.cached("Endpoint", e))
                .and_then(|e| e["address"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "(no Endpoint)".to_owned());
            (name, address)
        })
        .collect();
    let devices = state
        .registry
        .search("Device", &[], MAX_DEVICES + 1)
        .await
        .unwrap_or_default();
    let now = chrono::Utc::now();
    let example = hl7v2::example_adt_a01(now).replace('\r', "\n");
    let astm_example = format!(
        "H|\\^&|||OUTPOST^1.0|||||ANALYZER||P|LIS2-A2|{}\nP|1||PID123||DOE^JANE\nO|1|SPEC-1||^^^GLU\nL|1|N",
        now.format("%Y%m%d%H%M%S")
    );
    let body = html! {
        h1 { (if r.name.is_empty() { &r.id } else { &r.name }) " " (view::status_badge(&r.status)) }
        p.summary { "Agent/" (r.id) " · version " (r.version) " · last heartbeat " (r.last_heartbeat) }
        section {
            h2 { "Channels" }
            table { thead { tr { th { "Channel" } th { "Endpoint address" } } }
                tbody { @for (name, address) in &channels { tr { td { (name) } td { code { (address) } } } } } }
        }
        section.actions {
            h2 { "Actions" }
            div.action {
                button #reload hx-post={"/console/agents/" (r.id) "/action/reload-config"} hx-target="#answer" { "Reload configuration" }
            }
            form.action hx-post={"/console/agents/" (r.id) "/action/ping"} hx-target="#answer" {
                input name="host" placeholder="host to ping" required maxlength="253";
                button #ping { "Ping" }
            }
            form.action hx-post={"/console/agents/" (r.id) "/action/upgrade"} hx-target="#answer"
                hx-confirm="Upgrade this agent? It restarts with the new version." {
                input name="version" placeholder="version (empty: latest)" maxlength="64";
                button #upgrade { "Upgrade" }
            }
            div #answer.answer {}
        }
        section.push {
            h2 { "Push a message" }
            form #push-form hx-post={"/console/agents/" (r.id) "/action/push"} hx-target="#push-answer"
                hx-confirm="Send this message to the device?" {
                label { "Device "
                    select #push-device name="device" {
                        @for d in devices.iter().take(MAX_DEVICES) {
                            option value=(id_of(d)) { (id_of(d)) " — " (d["url"].as_str().unwrap_or("no url")) }
                        }
                    }
                    " or the Device id "
                    input #push-device-id name="device_id" maxlength="64" placeholder=(if devices.len() > MAX_DEVICES { "(more Devices than listed)" } else { "" });
                }
                label { "Content type "
                    select #push-type name="content_type" {
                        option value="x-application/hl7-v2+er7" { "HL7 v2" }
                        option value="application/astm" { "ASTM" }
                        option value="application/dicom" { "DICOM file" }
                        option value="text/plain" { "text" }
                    }
                }
                div.generate {
                    "Generate: "
                    button type="button" data-example=(example) data-type="x-application/hl7-v2+er7" { "HL7 ADT^A01" }
                    " "
                    button type="button" data-example=(astm_example) data-type="application/astm" { "ASTM order" }
                    " or a DICOM file: "
                    input #push-file type="file" accept=".dcm,application/dicom";
                }
                textarea #push-body name="body" rows="8" { (example) }
                input #push-file-body type="hidden" name="file_base64";
                button #push { "Push and wait for the answer" }
            }
            div #push-answer.answer {}
            script { (maud::PreEscaped(PUSH_SCRIPT)) }
        }
        section {
            h2 { "Stats" }
            div hx-get={"/console/agents/" (r.id) "/panel/stats"} hx-trigger="load" { "Asking the agent…" }
        }
        section {
            h2 { "Dead letters" }
            div hx-get={"/console/agents/" (r.id) "/panel/dead-letters"} hx-trigger="load" { "Asking the agent…" }
        }
        section {
            h2 { "Recent logs" }
            div hx-get={"/console/agents/" (r.id) "/panel/logs"} hx-trigger="load" { "Asking the agent…" }
        }
    };
    view::page(&r.id, Some(&session.csrf), "Fleet", &body).into_response()
}

/// The push form's helpers: an example fills the box; a DICOM file is sent base64, as `$push`
/// takes it.
const PUSH_SCRIPT: &str = r#"
document.querySelectorAll('.generate button').forEach(b => b.addEventListener('click', () => {
  document.getElementById('push-body').value = b.dataset.example;
  document.getElementById('push-type').value = b.dataset.type;
  document.getElementById('push-file-body').value = '';
}));
document.getElementById('push-file').addEventListener('change', e => {
  const file = e.target.files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    document.getElementById('push-file-body').value = reader.result.split(',')[1];
    document.getElementById('push-type').value = 'application/dicom';
    document.getElementById('push-body').value = '(' + file.name + ', ' + file.size + ' bytes, sent base64)';
  };
  reader.readAsDataURL(file);
});
"#;

/// `GET /console/agents/{id}/panel/{stats|logs|dead-letters}`: the agent's `$stats`,
/// `$fetch-logs` or `$dead-letters`.
pub(super) async fn panel(
    State(state): State<Arc<RelayState>>,
    _session: Session,
    Path((id, panel)): Path<(String, String)>,
) -> Response {
    if let Err(r) = agent_or_404(&state, &id) {
        return r;
    }
    let html = match panel.as_str() {
        "stats" => match console_agent_op(&state, &id, "stats", &[]).await {
            Ok(v) => {
                let stats: Value = v["parameter"][0]["valueString"]
                    .as_str()
                    .and_then(|s| serde_json::from_str(s).ok())
                    .unwrap_or(Value::Null);
                stats_html(&stats)
            }
            Err(e) => html! { p.error { (e) } },
        },
        "logs" => {
            let q = [("limit".to_owned(), "50".to_owned())];
            match console_agent_op(&state, &id, "fetch-logs", &q).await {
                Ok(v) => {
                    let lines = v["parameter"][0]["valueString"].as_str().unwrap_or("");
                    html! { pre.logs { (lines) } }
                }
                Err(e) => html! { p.error { (e) } },
            }
        }
        "dead-letters" => match console_agent_op(&state, &id, "dead-letters", &[]).await {
            Ok(v) => {
                let letters: Vec<&str> = v["parameter"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["name"] == "deadLetter")
                    .filter_map(|p| p["valueString"].as_str())
                    .collect();
                html! {
                    @if letters.is_empty() { p #dead-letters { "No dead letters." } }
                    @else { pre #dead-letters { (letters.join("\n")) } }
                }
            }
            Err(e) => html! { p.error { (e) } },
        },
        _ => return view::error_page(StatusCode::NOT_FOUND, "No such panel."),
    };
    Html(html.into_string()).into_response()
}

fn stats_html(stats: &Value) -> Markup {
    let channels = stats["channelStats"].as_object();
    html! {
        table.stats {
            thead { tr { th { "Channel" } th { "Received" } th { "Sent" } th { "Errored" } th { "Queued at the agent" } th { "RTT p50 (ms)" } } }
            tbody {
                @for (name, c) in channels.into_iter().flatten() {
                    tr { td { (name) } td { (c["received"]) } td { (c["sent"]) } td { (c["errored"]) } td { (c["queued"]) } td { (c["rtt"]["p50"]) } }
                }
            }
        }
        details { summary { "All stats" } (view::json_block(stats)) }
    }
}

/// The forms of the agent page's actions (an empty body is an empty form).
#[derive(Debug, Default)]
struct ActionForm {
    host: Option<String>,
    version: Option<String>,
    device: Option<String>,
    device_id: Option<String>,
    content_type: Option<String>,
    body: Option<String>,
    file_base64: Option<String>,
}

impl ActionForm {
    fn parse(bytes: &[u8]) -> ActionForm {
        let mut f = ActionForm::default();
        for (k, v) in form_urlencoded::parse(bytes) {
            let slot = match k.as_ref() {
                "host" => &mut f.host,
                "version" => &mut f.version,
                "device" => &mut f.device,
                "device_id" => &mut f.device_id,
                "content_type" => &mut f.content_type,
                "body" => &mut f.body,
                "file_base64" => &mut f.file_base64,
                _ => continue,
            };
            *slot = Some(v.into_owned());
        }
        f
    }
}

/// `POST /console/agents/{id}/action/{reload-config|ping|upgrade|push}` (with the CSRF
/// header): asks the agent, shows its answer, and records an AuditEvent.
pub(super) async fn action(
    State(state): State<Arc<RelayState>>,
    session: Session,
    Path((id, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let form = ActionForm::parse(&body);
    let agent = match agent_or_404(&state, &id) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let entity = format!("Agent/{id}");
    let (ok, html) = match action.as_str() {
        "reload-config" => match console_agent_op(&state, &id, "reload-config", &[]).await {
            Ok(_) => (
                true,
                html! { p.ok { "The agent reloaded its configuration." } },
            ),
            Err(e) => (false, html! { p.error { (e) } }),
        },
        "upgrade" => {
            let q: Vec<(String, String)> = form
                .version
                .filter(|v| !v.trim().is_empty())
                .map(|v| ("version".to_owned(), v.trim().to_owned()))
                .into_iter()
                .collect();
            match console_agent_op(&state, &id, "upgrade", &q).await {
                Ok(_) => (
                    true,
                    html! { p.ok { "Upgraded: the agent's new version connected and answered." } },
                ),
                Err(e) => (false, html! { p.error { (e) } }),
            }
        }
        "ping" => {
            let host = form.host.unwrap_or_default();
            let body = json!({"destination": host.trim(), "contentType": "x-application/ping",
                "body": "PING", "waitForResponse": true});
            let a = console_push(
                &state,
                &session.client_id,
                &agent,
                body.to_string().as_bytes(),
            )
            .await;
            (
                a.status == 200,
                html! { p class=(if a.status == 200 { "ok" } else { "error" }) { "HTTP " (a.status) } pre { (a.body) } },
            )
        }
        "push" => {
            // A typed Device id wins over the list.
            let device = form
                .device_id
                .map(|d| d.trim().to_owned())
                .filter(|d| !d.is_empty())
                .or(form.device)
                .unwrap_or_default();
            let content_type = form
                .content_type
                .unwrap_or_else(|| agent_protocol::CONTENT_TYPE_HL7_V2.to_owned());
            // A DICOM file goes as it came (base64); in text, line breaks typed in the box
            // end segments and records (HL7 and ASTM want CR).
            let body = match form.file_base64.filter(|b| !b.is_empty()) {
                Some(b64) => b64,
                None => form
                    .body
                    .unwrap_or_default()
                    .replace("\r\n", "\r")
                    .replace('\n', "\r"),
            };
            let push = json!({"destination": format!("Device/{device}"), "contentType": content_type,
                "body": body, "waitForResponse": true});
            let started = std::time::Instant::now();
            let a = console_push(
                &state,
                &session.client_id,
                &agent,
                push.to_string().as_bytes(),
            )
            .await;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let answer = if a
                .content_type
                .starts_with(agent_protocol::CONTENT_TYPE_HL7_V2)
            {
                hl7_view::message(&a.body)
            } else {
                html! { pre { (a.body) } }
            };
            (
                a.status == 200,
                html! {
                    p class=(if a.status == 200 { "ok" } else { "error" }) #push-status {
                        "HTTP " (a.status) " in " (format!("{ms:.2}")) " ms"
                    }
                    @if let Some(agent_us) = a.agent_us {
                        table.hops #push-hops {
                            tr { th { "relay" } td { (format!("{:.2}", (ms - agent_us as f64 / 1000.0).max(0.0))) " ms" } td { "the request, the Device lookup, the answer" } }
                            @match a.device_us {
                                Some(device_us) => {
                                    tr { th { "WebSocket and agent" } td { (format!("{:.2}", agent_us.saturating_sub(device_us) as f64 / 1000.0)) " ms" } td { "relay → agent and back" } }
                                    tr { th { "device" } td { (format!("{:.2}", device_us as f64 / 1000.0)) " ms" } td { "the agent's send to the device's answer" } }
                                }
                                None => {
                                    tr { th { "agent and device" } td { (format!("{:.2}", agent_us as f64 / 1000.0)) " ms" } td { "relay → agent → device and back" } }
                                }
                            }
                        }
                    }
                    div #push-reply { (answer) }
                },
            )
        }
        _ => return view::error_page(StatusCode::NOT_FOUND, "No such action."),
    };
    audit(
        &state,
        &session.client_id,
        &action,
        Some(&entity),
        ok,
        if ok { "done" } else { "failed" },
    )
    .await;
    Html(html.into_string()).into_response()
}
