//! Lab orders: a `ServiceRequest` created or updated here (or notified by another FHIR server's
//! rest-hook) is converted for each matching order-push `Subscription` ([`subscription`]) and
//! pushed, with `waitForResponse`, through the named Agent to the named Device. No JavaScript
//! runtime: the conversion is the `lab-orders` crate.
//!
//! Messages are queued in the store before anything is sent, so a restart loses none. Each is
//! pushed until the device answers: a temporary failure (agent not connected or not
//! answering, device down, no answer in time, the agent answering 5xx/429) is retried with
//! exponential backoff up to the configured attempts; a device's negative acknowledgement is
//! final. Every outcome is an `AuditEvent` (`GET /fhir/R4/AuditEvent?entity=ServiceRequest/<id>`):
//! outcome `0` with the ACK, or `8` with the reason; an order that cannot be converted is one
//! too, at once.

mod subscription;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_protocol::{AgentMessage, TransmitRequest};
use lab_orders::{Event, Format, Options, Order};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::agents::{AgentRouter, AskError};
use crate::fhir::{id_of, now_ms};
use crate::store::{Delivery, DeliveryOutcome, Registry, chain, is_cached};
pub use subscription::{ORDER_PUSH_EXTENSION, SubscriptionError};
pub(crate) use subscription::{Target, criterion, matching_targets, target};

/// How orders are retried.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OrderConfig {
    /// Attempts before a push is recorded as failed.
    pub(crate) attempts: u32,
    /// The wait after the first failed attempt, doubling after each (at most 5 min).
    pub(crate) backoff: Duration,
    /// How long each push waits for the device's answer.
    pub(crate) timeout: Duration,
}

/// The order queue's service: converts, queues and delivers.
#[derive(Debug)]
pub(crate) struct Orders {
    registry: Registry,
    router: Arc<AgentRouter>,
    config: OrderConfig,
    wakeup: Notify,
}

/// Why an order push got no positive answer.
#[derive(Debug)]
enum PushFailure {
    /// The Device is gone or has no url.
    Device(String),
    /// The message did not reach the agent, or no answer came.
    Agent(AskError),
    /// The agent answered with an error (its text).
    Answered(String),
    /// The device answered with a negative acknowledgement (MSA-1 AE, AR, CE or CR): the
    /// code and the acknowledgement.
    Refused(hl7v2::AckCode, String),
}

impl std::fmt::Display for PushFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushFailure::Device(t) | PushFailure::Answered(t) => f.write_str(t),
            PushFailure::Refused(code, ack) => write!(
                f,
                "the device answered {}: {}",
                code.as_str(),
                ack.replace('\r', "\n").trim_end()
            ),
            PushFailure::Agent(e) => write!(f, "{e}"),
        }
    }
}

impl PushFailure {
    /// A device's own negative acknowledgement: final, not worth retrying.
    fn is_final(&self) -> bool {
        matches!(self, PushFailure::Refused(..))
    }
}

/// MSA-1 of an HL7 answer when it is negative (AE, AR, CE, CR); `None` for a positive one
/// or an answer that is not an acknowledgement.
fn negative_ack(body: &str) -> Option<hl7v2::AckCode> {
    let msg = hl7v2::Message::parse(body.as_bytes()).ok()?;
    let code = hl7v2::Acknowledgment::read(&msg)?.code();
    (!code.is_positive()).then_some(code)
}

impl Orders {
    pub(crate) fn new(registry: Registry, router: Arc<AgentRouter>, config: OrderConfig) -> Orders {
        Orders {
            registry,
            router,
            config,
            wakeup: Notify::new(),
        }
    }

    /// Converts `sr` for each target and queues the messages; an order that cannot be
    /// converted is recorded as a failed AuditEvent. `extra` resources (a notification
    /// Bundle's entries) resolve references before the registry does. Returns (queued,
    /// errors).
    pub(crate) async fn enqueue(
        &self,
        sr: &Value,
        event: Event,
        targets: &[Target],
        extra: &[Value],
    ) -> (usize, Vec<String>) {
        let version = sr["meta"]["versionId"].as_str().unwrap_or("1");
        let request = format!("ServiceRequest/{}/_history/{version}", id_of(sr));
        let (mut queued, mut errors) = (0, Vec::new());
        for t in targets {
            let converted = self.convert(sr, t, event, extra).await;
            let body = match converted {
                Ok(b) => b,
                Err(e) => {
                    let text = e.to_string();
                    self.audit(&request, t, None, false, &text, None, 0).await;
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
            match self.registry.enqueue_delivery(d, now_ms()).await {
                Ok(_) => queued += 1,
                Err(e) => errors.push(format!("cannot queue the order: {}", chain(&e))),
            }
        }
        if queued > 0 {
            self.wakeup.notify_one();
        }
        (queued, errors)
    }

    /// The order message for one target. References are resolved from `extra`, the registry
    /// cache, then the database: the converter asks synchronously, so what it misses is
    /// fetched and it is asked again (references of references: a few rounds at most).
    async fn convert(
        &self,
        sr: &Value,
        t: &Target,
        event: Event,
        extra: &[Value],
    ) -> Result<String, lab_orders::Error> {
        let fetched: Mutex<HashMap<String, Option<Value>>> = Mutex::default();
        let mut rounds = 0;
        loop {
            let missing: Mutex<Vec<String>> = Mutex::default();
            let lookup = |key: &str| -> Option<Value> {
                if let Some(v) = lab_orders::lookup_in(extra)(key) {
                    return Some(v);
                }
                let (ty, id) = key.split_once('/')?;
                if is_cached(ty) {
                    return self.registry.cached(ty, id).map(|r| (*r).clone());
                }
                let known = fetched.lock().unwrap_or_else(|p| p.into_inner());
                match known.get(key) {
                    Some(v) => v.clone(),
                    None => {
                        missing
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(key.to_owned());
                        None
                    }
                }
            };
            let result = Order::from_fhir(sr, &lookup);
            let missing = missing.into_inner().unwrap_or_default();
            rounds += 1;
            if missing.is_empty() || rounds > 4 {
                let order = result?;
                let opts = Options {
                    sending_application: "OUTPOST".into(),
                    receiving_application: t.receiving_application.clone(),
                    receiving_facility: t.receiving_facility.clone(),
                    control_id: uuid::Uuid::new_v4().simple().to_string()[..20].to_owned(),
                    event,
                    astm_code_system: t.astm_code_system.clone(),
                    ..Options::default()
                };
                return lab_orders::convert(&order, t.format, &opts);
            }
            for key in missing {
                let value = match key.split_once('/') {
                    Some((ty, id)) => match self.registry.get(ty, id).await {
                        Ok(v) => v.map(|r| (*r).clone()),
                        Err(e) => {
                            tracing::error!(error = %chain(&e), "cannot read {key}");
                            None
                        }
                    },
                    None => None,
                };
                fetched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, value);
            }
        }
    }

    /// Records the outcome of an order push as an AuditEvent.
    #[allow(clippy::too_many_arguments)] // one record, its fields named at each call
    async fn audit(
        &self,
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
        if let Err(e) = self.registry.create(event).await {
            tracing::error!(error = %chain(&e), "cannot record an order push outcome");
        }
    }

    /// The delivery loop: pushes queued order messages, oldest first, until `stopping`.
    pub(crate) async fn run(self: Arc<Self>, mut stopping: watch::Receiver<bool>) {
        loop {
            // Each is leased for longer than one push may take; a process that dies with it
            // leased leaves it to be taken again when the lease runs out.
            let lease = self.config.timeout.as_millis() as i64 + 30_000;
            let (due, next) = match self.registry.claim_deliveries(now_ms(), lease, 16).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %chain(&e), "cannot read queued orders");
                    (Vec::new(), Some(now_ms() + 1000))
                }
            };
            for d in &due {
                self.deliver(d).await;
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
                () = self.wakeup.notified() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    async fn deliver(&self, d: &Delivery) {
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
        let result = self.push(d).await;
        let record = |state: &'static str, next_at_ms: i64, error: Option<String>, response| {
            self.registry.update_delivery(
                d.id,
                DeliveryOutcome {
                    state,
                    attempts,
                    next_at_ms,
                    error,
                    response,
                },
            )
        };
        let recorded = match result {
            Ok(ack) => {
                let r = record("done", 0, None, Some(ack.clone())).await;
                self.audit(
                    &d.request,
                    &target,
                    Some(&d.body),
                    true,
                    "delivered; the device acknowledged it",
                    Some(&ack),
                    attempts,
                )
                .await;
                tracing::info!(
                    request = d.request,
                    device = d.device,
                    attempts,
                    "order delivered"
                );
                r
            }
            Err(failure) if failure.is_final() || attempts >= i64::from(self.config.attempts) => {
                let text = failure.to_string();
                let r = record("failed", 0, Some(text.clone()), None).await;
                let why = if failure.is_final() {
                    text
                } else {
                    format!("not delivered after {attempts} attempts: {text}")
                };
                self.audit(
                    &d.request,
                    &target,
                    Some(&d.body),
                    false,
                    &why,
                    None,
                    attempts,
                )
                .await;
                tracing::warn!(
                    request = d.request,
                    device = d.device,
                    attempts,
                    "order push failed for good"
                );
                r
            }
            Err(failure) => {
                let backoff = self
                    .config
                    .backoff
                    .saturating_mul(1 << (attempts - 1).clamp(0, 16) as u32)
                    .min(Duration::from_secs(300));
                tracing::info!(
                    request = d.request,
                    attempts,
                    retry_in_ms = backoff.as_millis() as u64,
                    "order push failed; will retry"
                );
                record(
                    "pending",
                    now_ms() + backoff.as_millis() as i64,
                    Some(failure.to_string()),
                    None,
                )
                .await
            }
        };
        if let Err(e) = recorded {
            tracing::error!(error = %chain(&e), "cannot record an order push attempt");
        }
    }

    /// One push with `waitForResponse`: the device's answer, or why there is none.
    async fn push(&self, d: &Delivery) -> Result<String, PushFailure> {
        let device = d
            .device
            .strip_prefix("Device/")
            .and_then(|id| self.registry.cached("Device", id))
            .ok_or_else(|| PushFailure::Device(format!("{} not found", d.device)))?;
        let remote = device["url"]
            .as_str()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| PushFailure::Device(format!("{} has no url", d.device)))?
            .to_owned();
        let callback = format!("Agent/{}-{}", d.agent_id, uuid::Uuid::new_v4());
        let request = TransmitRequest {
            remote,
            content_type: d.content_type.clone(),
            body: d.body.clone(),
            callback: Some(callback.clone()),
            ..TransmitRequest::default()
        };
        let allowed = self.config.timeout;
        match self
            .router
            .ask(
                &d.agent_id,
                &callback,
                AgentMessage::TransmitRequest(request),
                Instant::now() + allowed,
                allowed,
            )
            .await
        {
            // The device's answer comes with 200 whatever its MSA-1 (Medplum's meaning, issue
            // 18): a refusal is read from MSA-1, not from the text.
            Ok(AgentMessage::TransmitResponse(r)) if !r.is_error() => match negative_ack(&r.body) {
                Some(code) => Err(PushFailure::Refused(code, r.body)),
                None => Ok(r.body),
            },
            Ok(AgentMessage::TransmitResponse(r)) => Err(PushFailure::Answered(r.body)),
            Ok(AgentMessage::Error(e)) => Err(PushFailure::Answered(e.body)),
            Ok(other) => Err(PushFailure::Answered(format!(
                "unexpected answer from the agent: {}",
                other.kind()
            ))),
            Err(e) => Err(PushFailure::Agent(e)),
        }
    }
}
