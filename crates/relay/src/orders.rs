//! Lab orders: a `ServiceRequest` created or updated here (or notified by another FHIR server's
//! rest-hook) is converted for each matching `Subscription` and pushed, with `waitForResponse`,
//! through the named Agent to the named Device. No JavaScript runtime: the conversion is the
//! `lab-orders` crate.
//!
//! A Subscription takes part when its `criteria` is `ServiceRequest[?params]` and it carries
//!
//! ```json
//! {"url": "https://outpost.health/fhir/StructureDefinition/order-push", "extension": [
//!   {"url": "agent",  "valueReference": {"reference": "Agent/<id>"}},
//!   {"url": "device", "valueReference": {"reference": "Device/<id>"}},
//!   {"url": "format", "valueCode": "hl7-orm"}]}
//! ```
//!
//! (`format`: `hl7-orm`, `hl7-oml` or `astm`; optional `astmCodeSystem` (`valueUri`),
//! `receivingApplication`, `receivingFacility` (`valueString`)).
//!
//! Messages are queued in SQLite before anything is sent, so a restart loses none. Each is pushed
//! until the device answers: a failure (agent not connected, device down, no answer) is retried
//! with exponential backoff up to the configured attempts; a device's negative acknowledgement is
//! final. Every outcome is an `AuditEvent` (`GET /fhir/R4/AuditEvent?entity=ServiceRequest/<id>`):
//! outcome `0` with the ACK, or `8` with the reason; an order that cannot be converted is one
//! too, at once.

use std::sync::Arc;
use std::time::Duration;

use agent_protocol::{AgentMessage, TransmitRequest};
use lab_orders::{Event, Format, Options, Order};
use serde_json::{Value, json};

use crate::ops::ask_agent;
use crate::state::RelayState;
use crate::store::{Delivery, id_of};

/// The Subscription extension that makes it an order push.
pub const ORDER_PUSH_EXTENSION: &str = "https://outpost.health/fhir/StructureDefinition/order-push";

/// Search parameters a Subscription's criteria may use.
const CRITERIA_PARAMS: &[&str] = &[
    "_id",
    "status",
    "intent",
    "priority",
    "code",
    "category",
    "subject",
    "patient",
    "identifier",
];

/// Where and how a Subscription pushes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `Subscription/<id>`.
    pub subscription: String,
    /// The Agent id.
    pub agent_id: String,
    /// `Device/<id>`.
    pub device: String,
    /// The message format.
    pub format: Format,
    /// The format's name.
    pub format_name: String,
    /// Criteria parameters.
    pub criteria: Vec<(String, String)>,
    /// ASTM: the instrument's code system.
    pub astm_code_system: Option<String>,
    /// MSH-5 / ASTM H.10.
    pub receiving_application: String,
    /// MSH-6.
    pub receiving_facility: String,
}

fn sub_extension<'a>(ext: &'a Value, url: &str) -> Option<&'a Value> {
    ext["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"].as_str() == Some(url))
}

/// Reads a Subscription's order-push configuration. `Ok(None)`: not an order push.
pub fn target(sub: &Value) -> Result<Option<Target>, String> {
    let Some(ext) = sub["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"].as_str() == Some(ORDER_PUSH_EXTENSION))
    else {
        return Ok(None);
    };
    let criteria = sub["criteria"].as_str().unwrap_or("");
    let (ty, query) = criteria.split_once('?').unwrap_or((criteria, ""));
    if ty != "ServiceRequest" {
        return Err(format!(
            "an order-push Subscription needs criteria ServiceRequest[?params], not {criteria:?}"
        ));
    }
    let params = crate::ops::url_params(query);
    if let Some((k, _)) = params
        .iter()
        .find(|(k, _)| !CRITERIA_PARAMS.contains(&k.as_str()))
    {
        return Err(format!(
            "criteria parameter {k:?} is not supported (use {})",
            CRITERIA_PARAMS.join(", ")
        ));
    }
    let reference = |name: &str, ty: &str| {
        sub_extension(ext, name)
            .and_then(|e| e["valueReference"]["reference"].as_str())
            .and_then(|r| r.strip_prefix(&format!("{ty}/")))
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("order-push extension: {name} must be a reference to a {ty}"))
    };
    let agent_id = reference("agent", "Agent")?;
    let device = format!("Device/{}", reference("device", "Device")?);
    let format_name = sub_extension(ext, "format")
        .and_then(|e| e["valueCode"].as_str())
        .unwrap_or("")
        .to_owned();
    let format: Format = format_name
        .parse()
        .map_err(|e: lab_orders::Error| e.to_string())?;
    let string = |name: &str| {
        sub_extension(ext, name)
            .and_then(|e| e["valueString"].as_str().or(e["valueUri"].as_str()))
            .map(str::to_owned)
    };
    Ok(Some(Target {
        subscription: format!("Subscription/{}", id_of(sub)),
        agent_id,
        device,
        format,
        format_name,
        criteria: params,
        astm_code_system: string("astmCodeSystem"),
        receiving_application: string("receivingApplication").unwrap_or_default(),
        receiving_facility: string("receivingFacility").unwrap_or_default(),
    }))
}

fn token_matches(concept: &Value, value: &str) -> bool {
    let (system, code) = match value.split_once('|') {
        Some((s, c)) => (Some(s), c),
        None => (None, value),
    };
    concept["coding"].as_array().into_iter().flatten().any(|c| {
        c["code"].as_str() == Some(code)
            && system.is_none_or(|s| s.is_empty() || c["system"].as_str() == Some(s))
    })
}

/// Whether a ServiceRequest matches a criteria parameter (values may be comma-separated
/// alternatives).
pub fn criterion(sr: &Value, key: &str, value: &str) -> bool {
    value.split(',').any(|v| match key {
        "intent" | "priority" => sr[key].as_str() == Some(v),
        "code" => token_matches(&sr["code"], v),
        "category" => sr["category"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| token_matches(c, v)),
        _ => crate::store::matches(sr, key, v),
    })
}

/// The active order-push Subscriptions that `sr` matches.
pub fn matching_targets(state: &RelayState, sr: &Value) -> Vec<Target> {
    state
        .store
        .all("Subscription")
        .into_iter()
        .filter(|s| s["status"].as_str() == Some("active"))
        .filter_map(|s| match target(&s) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(
                    subscription = id_of(&s),
                    error = e,
                    "unusable order-push Subscription"
                );
                None
            }
        })
        .filter(|t| t.criteria.iter().all(|(k, v)| criterion(sr, k, v)))
        .collect()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Converts `sr` for each target and queues the messages; an order that cannot be converted is
/// recorded as a failed AuditEvent. `extra` resources (a notification Bundle's entries) resolve
/// references before the registry does. Returns (queued, errors).
pub fn enqueue(
    state: &RelayState,
    sr: &Value,
    event: Event,
    targets: &[Target],
    extra: &[Value],
) -> (usize, Vec<String>) {
    let lookup = |key: &str| -> Option<Value> {
        lab_orders::lookup_in(extra)(key).or_else(|| {
            let (ty, id) = key.split_once('/')?;
            state.store.get(ty, id).map(|r| (*r).clone())
        })
    };
    let version = sr["meta"]["versionId"].as_str().unwrap_or("1");
    let request = format!("ServiceRequest/{}/_history/{version}", id_of(sr));
    let (mut queued, mut errors) = (0, Vec::new());
    for t in targets {
        let converted = Order::from_fhir(sr, &lookup).and_then(|order| {
            let opts = Options {
                sending_application: "OUTPOST".into(),
                receiving_application: t.receiving_application.clone(),
                receiving_facility: t.receiving_facility.clone(),
                control_id: uuid::Uuid::new_v4().simple().to_string()[..20].to_owned(),
                event,
                astm_code_system: t.astm_code_system.clone(),
                ..Options::default()
            };
            lab_orders::convert(&order, t.format, &opts)
        });
        let body = match converted {
            Ok(b) => b,
            Err(e) => {
                let text = e.to_string();
                audit(state, &request, t, None, false, &text, None, 0);
                errors.push(text);
                continue;
            }
        };
        let d = Delivery {
            id: 0,
            subscription: t.subscription.clone(),
            request: request.clone(),
            agent_id: t.agent_id.clone(),
            device: t.device.clone(),
            format: t.format_name.clone(),
            content_type: t.format.content_type().to_owned(),
            body,
            attempts: 0,
        };
        match state.store.enqueue_delivery(&d, now_ms()) {
            Ok(_) => queued += 1,
            Err(e) => errors.push(format!("cannot queue the order: {e}")),
        }
    }
    if queued > 0 {
        state.orders_wakeup.notify_one();
    }
    (queued, errors)
}

/// Records the outcome of an order push as an AuditEvent.
#[allow(clippy::too_many_arguments)]
fn audit(
    state: &RelayState,
    request: &str,
    t: &Target,
    message: Option<&str>,
    ok: bool,
    outcome: &str,
    response: Option<&str>,
    attempts: i64,
) {
    let mut detail = vec![json!({"type": "attempts", "valueString": attempts.to_string()})];
    if let Some(m) = message {
        detail.push(json!({"type": "message", "valueString": m}));
    }
    if let Some(r) = response {
        detail.push(json!({"type": "response", "valueString": r}));
    }
    let event = json!({
        "resourceType": "AuditEvent",
        "type": {"system": "https://outpost.health/fhir/CodeSystem/audit", "code": "order-push",
                 "display": "Lab order pushed to a device"},
        "subtype": [{"system": "https://outpost.health/fhir/CodeSystem/order-format", "code": t.format_name}],
        "action": "E",
        "recorded": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "outcome": if ok { "0" } else { "8" },
        "outcomeDesc": outcome,
        "agent": [{"who": {"reference": format!("Agent/{}", t.agent_id)}, "requestor": false}],
        "source": {"observer": {"display": "Outpost relay"}},
        "entity": [
            {"what": {"reference": request}, "detail": detail},
            {"what": {"reference": t.subscription}},
            {"what": {"reference": t.device}},
        ],
    });
    if let Err(e) = state.store.create(event) {
        tracing::error!(error = %e, "cannot record an order push outcome");
    }
}

/// The delivery loop: pushes queued order messages, oldest first, until the relay stops.
pub async fn run(state: Arc<RelayState>) {
    let mut stopping = state.stopping.clone();
    loop {
        // Each is leased for longer than one push may take; a process that dies with it leased
        // leaves it to be taken again when the lease runs out.
        let lease = state.config.order_timeout.as_millis() as i64 + 30_000;
        let (due, next) = match state.store.claim_deliveries(now_ms(), lease, 16) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "cannot read queued orders");
                (Vec::new(), Some(now_ms() + 1000))
            }
        };
        for d in &due {
            deliver(&state, d).await;
            if *stopping.borrow() {
                return;
            }
        }
        if !due.is_empty() {
            continue;
        }
        let wait = next.map_or(Duration::from_secs(60), |at| {
            Duration::from_millis((at - now_ms()).clamp(1, 60_000) as u64)
        });
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = state.orders_wakeup.notified() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

/// Whether an agent's failure text is the device's own negative acknowledgement (final) rather
/// than a delivery failure (worth retrying).
fn is_device_refusal(text: &str) -> bool {
    text.starts_with("device at ") && text.contains(" did not accept the message")
}

async fn deliver(state: &RelayState, d: &Delivery) {
    let target = Target {
        subscription: d.subscription.clone(),
        agent_id: d.agent_id.clone(),
        device: d.device.clone(),
        format: d.format.parse().unwrap_or(Format::Orm),
        format_name: d.format.clone(),
        criteria: Vec::new(),
        astm_code_system: None,
        receiving_application: String::new(),
        receiving_facility: String::new(),
    };
    let attempts = d.attempts + 1;
    let result = push(state, d).await;
    let cfg = &state.config;
    let record = |state_name: &str, next: i64, error: Option<&str>, response: Option<&str>| {
        if let Err(e) = state
            .store
            .update_delivery(d.id, state_name, attempts, next, error, response)
        {
            tracing::error!(error = %e, "cannot record an order push attempt");
        }
    };
    match result {
        Ok(ack) => {
            record("done", 0, None, Some(&ack));
            audit(
                state,
                &d.request,
                &target,
                Some(&d.body),
                true,
                "delivered; the device acknowledged it",
                Some(&ack),
                attempts,
            );
            tracing::info!(
                request = d.request,
                device = d.device,
                attempts,
                "order delivered"
            );
        }
        Err(text) if is_device_refusal(&text) || attempts >= i64::from(cfg.order_attempts) => {
            record("failed", 0, Some(&text), None);
            let why = if is_device_refusal(&text) {
                text.clone()
            } else {
                format!("not delivered after {attempts} attempts: {text}")
            };
            audit(
                state,
                &d.request,
                &target,
                Some(&d.body),
                false,
                &why,
                None,
                attempts,
            );
            tracing::warn!(
                request = d.request,
                device = d.device,
                attempts,
                "order push failed for good"
            );
        }
        Err(text) => {
            let backoff = cfg
                .order_backoff
                .saturating_mul(1 << (attempts - 1).clamp(0, 16) as u32)
                .min(Duration::from_secs(300));
            record(
                "pending",
                now_ms() + backoff.as_millis() as i64,
                Some(&text),
                None,
            );
            tracing::info!(
                request = d.request,
                attempts,
                retry_in_ms = backoff.as_millis() as u64,
                "order push failed; will retry"
            );
        }
    }
}

/// One push with `waitForResponse`: the device's answer, or why there is none.
async fn push(state: &RelayState, d: &Delivery) -> Result<String, String> {
    let device = d
        .device
        .strip_prefix("Device/")
        .and_then(|id| state.store.get("Device", id))
        .ok_or_else(|| format!("{} not found", d.device))?;
    let remote = device["url"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| format!("{} has no url", d.device))?
        .to_owned();
    let callback = format!("Agent/{}-{}", d.agent_id, uuid::Uuid::new_v4());
    let request = TransmitRequest {
        remote,
        content_type: d.content_type.clone(),
        body: d.body.clone(),
        callback: Some(callback.clone()),
        ..TransmitRequest::default()
    };
    match ask_agent(
        state,
        &d.agent_id,
        &callback,
        AgentMessage::TransmitRequest(request),
        state.config.order_timeout,
    )
    .await
    {
        Ok(AgentMessage::TransmitResponse(r)) if !r.is_error() => Ok(r.body),
        Ok(AgentMessage::TransmitResponse(r)) => Err(r.body),
        Ok(AgentMessage::Error(e)) => Err(e.body),
        Ok(other) => Err(format!(
            "unexpected answer from the agent: {}",
            other.kind()
        )),
        Err(e) => Err(e.text(&d.agent_id)),
    }
}
