//! Inbound messages: a device sent something to an agent, which forwards it here.
//!
//! Each message is stored before it is answered. The agent's `callback` makes redelivery
//! idempotent: a message the relay has already answered gets the stored answer again and is not
//! stored twice. The answer comes from the channel's target ([`route`]: a rest-hook Endpoint
//! in `Agent.channel[].targetReference`), else the `--inbound-webhook` when one is set, when it
//! replies; else (HL7) an AA built by `hl7v2` whose MSA-3 says what the relay did ("stored by
//! the relay, no application configured", or "... accepted by ..., which sent no reply"). A
//! target Outpost cannot run (a `Bot/...`) is answered AE (400 for other content) naming the
//! problem, after the message is stored. Byte-stream messages (`application/octet-stream`, hex on the
//! agent's socket) reach the webhook as the raw bytes, and its reply's bytes go back hex-encoded.
//!
//! A temporary failure is never a final answer. When the relay cannot take responsibility for
//! a message — its store failed (disk full, database locked or down), or the webhook is
//! unreachable, timed out, or answered 5xx or 429 — the answer is `statusCode: 503`,
//! `text/plain`, saying what failed, and it is not recorded as the message's answer: the agent
//! keeps the message and sends it again with the same callback, and that redelivery is
//! processed afresh (stored once: the callback is unique per agent).
//!
//! A channel that names a processor ([`lab_results`]: `Agent.channel[].extension`
//! `https://outpost.health/fhir/StructureDefinition/inbound-processor`, `valueCode`
//! `lab-results`) has its messages converted and stored by the relay instead; the answer is an
//! AA saying what was stored, or an AE with the reason the message could not be converted, and
//! rest-hook Subscriptions on `DiagnosticReport` / `Observation` get the Bundle ([`notify`]).

mod lab_results;
mod notify;
mod route;
mod webhook;

use std::time::Duration;

use agent_protocol::{
    AgentMessage, CONTENT_TYPE_HL7_V2, CONTENT_TYPE_TEXT, TransmitRequest, TransmitResponse,
};
use hl7v2::{AckCode, AckOptions, Message, Precision, Timestamp, build_ack};

use crate::auth::{Tokens, may_act_as};
use crate::fhir::now_secs;
use crate::store::{NewInbound, Recorded, Registry, chain};
pub use lab_results::INBOUND_PROCESSOR_EXTENSION;
pub(crate) use lab_results::processor as channel_processor;
use lab_results::{LabResults, Processor, ResultsError};
pub(crate) use notify::check_subscription as check_results_subscription;
use route::Target;
pub(crate) use route::problems as target_problems;
use webhook::{Webhook, WebhookError};

/// Time allowed for the webhook to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Handles the inbound messages of every agent.
#[derive(Debug)]
pub(crate) struct Inbound {
    registry: Registry,
    tokens: Tokens,
    webhook: Option<String>,
    http: reqwest::Client,
    results: LabResults,
}

/// The answer to a message, before it is sent.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

impl Inbound {
    /// Stores in `registry`, checks tokens with `tokens`, and POSTs with `http` to channel
    /// targets and to `webhook` (for channels without a target) when given.
    pub(crate) fn new(
        registry: Registry,
        tokens: Tokens,
        webhook: Option<String>,
        http: reqwest::Client,
    ) -> Inbound {
        Inbound {
            results: LabResults::new(registry.clone()),
            registry,
            tokens,
            webhook,
            http,
        }
    }

    /// Logs the targets of `agent_id`'s channels that Outpost cannot run (when it connects).
    pub(crate) fn check_targets(&self, agent_id: &str) {
        let Some(agent) = self.registry.cached("Agent", agent_id) else {
            return;
        };
        for problem in route::problems(&self.registry, &agent) {
            tracing::warn!(
                agent = agent_id,
                problem,
                "inbound target not supported; its channel's messages are stored and answered AE"
            );
        }
    }

    /// What to answer an inbound message, after checking it the way Medplum does. Some checks
    /// answer with `agent:error` (Medplum's texts), the rest with a transmit response.
    pub(crate) async fn handle(&self, agent_id: &str, req: TransmitRequest) -> AgentMessage {
        let callback = req.callback.clone();
        let error = |text: &str| AgentMessage::error(text, callback.clone());
        let Some(token) = req.access_token.as_deref() else {
            return error("Missing access token");
        };
        let Some(channel) = req.channel.clone().filter(|c| !c.is_empty()) else {
            return error("Missing channel");
        };
        if req.body.is_empty() {
            return error("Missing body");
        }
        match self.tokens.verify(token, now_secs()) {
            Ok(c)
                if may_act_as(
                    self.registry
                        .cached("ClientApplication", &c.client_id)
                        .as_deref(),
                    agent_id,
                ) => {}
            _ => return error("Invalid access token"),
        }
        let agent = self.registry.cached("Agent", agent_id);
        let known_channel = agent.as_ref().is_some_and(|a| {
            a["channel"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"].as_str() == Some(channel.as_str()))
        });
        let Some(agent) = agent.filter(|_| known_channel) else {
            return error("Channel not found");
        };
        let target = route::target(&self.registry, &agent, &channel);
        let processor = route::processor(&agent, &channel);
        // Without a callback there is nothing to de-duplicate on; make one up.
        let key = req
            .callback
            .clone()
            .unwrap_or_else(|| format!("Agent/{agent_id}-{}", uuid::Uuid::new_v4()));
        let recorded = self
            .registry
            .record_inbound(NewInbound {
                agent_id: agent_id.to_owned(),
                channel: channel.clone(),
                remote: req.remote.clone(),
                content_type: req.content_type.clone(),
                body: req.body.clone(),
                callback: key.clone(),
            })
            .await;
        let row_id = match recorded {
            Ok(Recorded::New(id)) => id,
            Ok(Recorded::Duplicate(row)) => {
                if let (Some(status), Some(body)) = (row.status_code, row.response) {
                    tracing::info!(
                        agent = agent_id,
                        channel,
                        callback = key,
                        "redelivered message answered from store"
                    );
                    return response(&req, u16::try_from(status).unwrap_or(200), None, body);
                }
                row.id
            }
            Err(e) => {
                let e = chain(&e);
                tracing::error!(
                    agent = agent_id,
                    channel,
                    error = e,
                    "cannot store inbound message"
                );
                return response(
                    &req,
                    503,
                    None,
                    format!("relay could not store the message: {e}; retry"),
                );
            }
        };
        let answered = self
            .dispatch(agent_id, &channel, processor, &target, &req)
            .await;
        let answer = match answered {
            Ok(a) => a,
            Err(AnswerError::Rejected(text)) => {
                tracing::warn!(
                    agent = agent_id,
                    channel,
                    error = text,
                    "inbound message stored; it could not be processed"
                );
                refusal(&req, text)
            }
            Err(AnswerError::Temporary(text)) => {
                // Stored, not processed: not final; a redelivery is processed again.
                tracing::warn!(
                    agent = agent_id,
                    channel,
                    error = text,
                    "inbound message not processed"
                );
                return response(&req, 503, None, format!("{text}; retry"));
            }
            Err(AnswerError::Unsupported(problem)) => {
                tracing::warn!(
                    agent = agent_id,
                    channel,
                    problem,
                    "inbound message stored; its target cannot run"
                );
                refusal(&req, problem)
            }
            Err(AnswerError::Webhook(e)) if e.is_temporary() => {
                // Stored, not answered: not final; a redelivery is processed again.
                let text = chain(&e);
                tracing::warn!(
                    agent = agent_id,
                    channel,
                    error = text,
                    "inbound webhook failed"
                );
                return response(
                    &req,
                    503,
                    None,
                    format!("relay could not deliver the message: {text}; retry"),
                );
            }
            Err(AnswerError::Webhook(e)) => {
                // The webhook refused it for good (4xx), or the agent's body is unusable.
                let text = format!("upstream error: {}", chain(&e));
                tracing::warn!(
                    agent = agent_id,
                    channel,
                    error = text,
                    "inbound webhook refused the message"
                );
                refusal(&req, text)
            }
        };
        if let Err(e) = self
            .registry
            .set_inbound_response(row_id, answer.status, &answer.body)
            .await
        {
            // The message is stored: the answer stands. A redelivery gets it computed again.
            tracing::error!(error = %chain(&e), "cannot record the answer to an inbound message");
        }
        response(&req, answer.status, Some(answer.content_type), answer.body)
    }

    /// Runs the lab-results processor on a stored message: AA (or `OK:`) saying what was
    /// stored, and the Bundle to the results Subscriptions when something was new or changed.
    async fn lab_results(
        &self,
        agent_id: &str,
        channel: &str,
        req: &TransmitRequest,
    ) -> Result<Answer, AnswerError> {
        let stored = match self.results.process(&req.body, &req.content_type).await {
            Ok(s) => s,
            Err(e @ ResultsError::Store(_)) => {
                return Err(AnswerError::Temporary(format!(
                    "relay could not store the results: {}",
                    chain(&e)
                )));
            }
            Err(e) => return Err(AnswerError::Rejected(chain(&e))),
        };
        let summary = stored.summary();
        tracing::info!(
            agent = agent_id,
            channel,
            reports = ?stored.reports,
            summary,
            "lab results stored"
        );
        if !stored.created.is_empty() || !stored.updated.is_empty() {
            // Something of the message changed: each Subscription matching any of its reports
            // and results is told (a corrected Observation concerns its unchanged report).
            let message: Vec<_> = stored
                .created
                .iter()
                .chain(&stored.updated)
                .chain(&stored.unchanged)
                .cloned()
                .collect();
            let hooks = notify::hooks(&self.registry, &message);
            notify::send(&self.http, hooks, &stored.bundle);
        }
        let (status, content_type, body) = if req.content_type == CONTENT_TYPE_HL7_V2 {
            match ack(&req.body, AckCode::AA, Some(summary)) {
                Ok(a) => (200, CONTENT_TYPE_HL7_V2, a),
                Err(text) => (400, CONTENT_TYPE_TEXT, text),
            }
        } else {
            (200, CONTENT_TYPE_TEXT, format!("OK: {summary}"))
        };
        Ok(Answer {
            status,
            content_type: content_type.to_owned(),
            body,
        })
    }

    /// The answer for a stored message from its channel's processor, or else its target.
    async fn dispatch(
        &self,
        agent_id: &str,
        channel: &str,
        processor: Result<Option<Processor>, String>,
        target: &Target,
        req: &TransmitRequest,
    ) -> Result<Answer, AnswerError> {
        match processor {
            Ok(Some(Processor::LabResults)) => self.lab_results(agent_id, channel, req).await,
            Ok(None) => self.answer(agent_id, channel, target, req).await,
            Err(problem) => Err(AnswerError::Unsupported(format!(
                "channel {channel}: {problem}"
            ))),
        }
    }

    /// The answer for a stored message, or why its target could not give one.
    async fn answer(
        &self,
        agent_id: &str,
        channel: &str,
        target: &Target,
        req: &TransmitRequest,
    ) -> Result<Answer, AnswerError> {
        let hook = match target {
            Target::RestHook { reference, url } => Some((url.as_str(), reference.as_str())),
            Target::Default => self
                .webhook
                .as_deref()
                .map(|url| (url, "the inbound webhook")),
            Target::Unsupported { .. } => {
                return Err(AnswerError::Unsupported(
                    target.problem(channel).unwrap_or_default(),
                ));
            }
        };
        let done = match hook {
            Some((url, name)) => {
                let hook = Webhook::new(url.to_owned(), self.http.clone(), WEBHOOK_TIMEOUT);
                if let Some((content_type, body)) = hook.post(agent_id, channel, req).await? {
                    return Ok(Answer {
                        status: 200,
                        content_type,
                        body,
                    });
                }
                format!("stored by the relay and accepted by {name}, which sent no reply")
            }
            None => "stored by the relay, no application configured".to_owned(),
        };
        let answer = if req.content_type == CONTENT_TYPE_HL7_V2 {
            match ack(&req.body, AckCode::AA, Some(done)) {
                Ok(a) => (200, CONTENT_TYPE_HL7_V2, a),
                Err(text) => (400, CONTENT_TYPE_TEXT, text),
            }
        } else {
            (200, CONTENT_TYPE_TEXT, format!("OK: {done}"))
        };
        Ok(Answer {
            status: answer.0,
            content_type: answer.1.to_owned(),
            body: answer.2,
        })
    }
}

/// Why a stored message has no answer from its target.
#[derive(Debug)]
enum AnswerError {
    /// The webhook or rest-hook target failed.
    Webhook(WebhookError),
    /// The target cannot run on Outpost (the problem, in words).
    Unsupported(String),
    /// The processor refused the message for good (why, in words): answered AE.
    Rejected(String),
    /// The processor could not finish for now (why): answered 503, the agent sends it again.
    Temporary(String),
}

impl From<WebhookError> for AnswerError {
    fn from(e: WebhookError) -> Self {
        AnswerError::Webhook(e)
    }
}

/// A final refusal the device hears: AE for HL7 (400 when the body is not HL7), else 400.
fn refusal(req: &TransmitRequest, text: String) -> Answer {
    match (req.content_type == CONTENT_TYPE_HL7_V2)
        .then(|| ack(&req.body, AckCode::AE, Some(text.clone())))
    {
        Some(Ok(a)) => Answer {
            status: 200,
            content_type: CONTENT_TYPE_HL7_V2.into(),
            body: a,
        },
        Some(Err(invalid)) => Answer {
            status: 400,
            content_type: CONTENT_TYPE_TEXT.into(),
            body: invalid,
        },
        None => Answer {
            status: 400,
            content_type: CONTENT_TYPE_TEXT.into(),
            body: text,
        },
    }
}

/// A transmit response to `req`; errors (status 400 and up) are `text/plain`.
fn response(
    req: &TransmitRequest,
    status: u16,
    content_type: Option<String>,
    body: String,
) -> AgentMessage {
    let content_type = match content_type {
        Some(ct) => ct,
        None if status < 400 => req.content_type.clone(),
        None => CONTENT_TYPE_TEXT.into(),
    };
    AgentMessage::TransmitResponse(TransmitResponse {
        channel: req.channel.clone(),
        remote: req.remote.clone(),
        callback: req.callback.clone(),
        content_type,
        status_code: Some(status),
        status: None,
        body,
        device_us: None,
    })
}

/// An acknowledgement of an HL7 body, segments ended by `\r`.
fn ack(body: &str, code: AckCode, text: Option<String>) -> Result<String, String> {
    let msg = Message::parse(body.as_bytes()).map_err(|e| format!("invalid HL7 message: {e}"))?;
    let now = chrono::Utc::now();
    let mut opts = AckOptions::new(
        format!("{}", now.timestamp_millis()),
        Timestamp::from_datetime(&now, Precision::Fraction(3)),
    );
    opts.text = text;
    Ok(String::from_utf8_lossy(&build_ack(&msg, code, &opts)).into_owned())
}

impl Inbound {
    /// Sends a stored inbound message to its channel's processor or target again (the
    /// console's resend), as a new message would go now. The device is not told, and the
    /// answer it was given stays recorded: the new answer is returned.
    ///
    /// # Errors
    ///
    /// The Agent or its channel is gone, the target cannot run, or it failed (its words).
    pub(crate) async fn resend(
        &self,
        row: &crate::store::InboundRow,
    ) -> Result<(u16, String), String> {
        let agent = self
            .registry
            .cached("Agent", &row.agent_id)
            .ok_or_else(|| format!("Agent/{} no longer exists", row.agent_id))?;
        let target = route::target(&self.registry, &agent, &row.channel);
        let processor = route::processor(&agent, &row.channel);
        let req = TransmitRequest {
            channel: Some(row.channel.clone()),
            remote: row.remote.clone(),
            content_type: row.content_type.clone(),
            body: row.body.clone(),
            callback: Some(row.callback.clone()),
            ..TransmitRequest::default()
        };
        let answer = match self
            .dispatch(&row.agent_id, &row.channel, processor, &target, &req)
            .await
        {
            Ok(a) => a,
            Err(AnswerError::Unsupported(why))
            | Err(AnswerError::Rejected(why))
            | Err(AnswerError::Temporary(why)) => return Err(why),
            Err(AnswerError::Webhook(e)) => return Err(chain(&e)),
        };
        tracing::info!(
            agent = row.agent_id,
            channel = row.channel,
            id = row.id,
            status = answer.status,
            "inbound message sent again from the console"
        );
        Ok((answer.status, answer.body))
    }
}
