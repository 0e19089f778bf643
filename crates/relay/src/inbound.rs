//! Inbound messages: a device sent something to an agent, which forwards it here.
//!
//! Each message is stored before it is answered. The agent's `callback` makes redelivery
//! idempotent: a message the relay has already answered gets the stored answer again and is not
//! stored twice. The answer comes from the `--inbound-webhook` when one is set and replies, else
//! (HL7) an AA built by `hl7v2`. Byte-stream messages (`application/octet-stream`, hex on the
//! agent's socket) reach the webhook as the raw bytes, and its reply's bytes go back hex-encoded.

use std::time::Duration;

use agent_protocol::{
    AgentMessage, CONTENT_TYPE_HL7_V2, CONTENT_TYPE_OCTET_STREAM, CONTENT_TYPE_TEXT,
    TransmitRequest, TransmitResponse,
};
use hl7v2::{AckCode, AckOptions, Message, Precision, Timestamp, build_ack};

use crate::auth::may_act_as;
use crate::http::now_secs;
use crate::state::RelayState;
use crate::store::Recorded;

/// Time allowed for the webhook to answer.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// What to answer an inbound message, after checking it the way Medplum does. Some checks
/// answer with `agent:error` (Medplum's texts), the rest with a transmit response.
pub async fn handle(state: &RelayState, agent_id: &str, req: TransmitRequest) -> AgentMessage {
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
    match state.tokens.verify(token, now_secs()) {
        Ok(c) if may_act_as(&state.store, &c.client_id, agent_id) => {}
        _ => return error("Invalid access token"),
    }
    let known_channel = state.store.get("Agent", agent_id).is_some_and(|a| {
        a["channel"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["name"].as_str() == Some(channel.as_str()))
    });
    if !known_channel {
        return error("Channel not found");
    }
    // Without a callback there is nothing to de-duplicate on; make one up.
    let key = req
        .callback
        .clone()
        .unwrap_or_else(|| format!("Agent/{agent_id}-{}", uuid::Uuid::new_v4()));
    let recorded = state.store.record_inbound(
        agent_id,
        &channel,
        &req.remote,
        &req.content_type,
        &req.body,
        &key,
    );
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
                return response(&req, u16::try_from(status).unwrap_or(200), body);
            }
            row.id
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store inbound message");
            return response_text(&req, 400, format!("relay could not store the message: {e}"));
        }
    };
    let (status, content_type, body) = answer(state, agent_id, &channel, &req).await;
    if let Err(e) = state.store.set_inbound_response(row_id, status, &body) {
        tracing::error!(error = %e, "cannot record the answer to an inbound message");
    }
    let mut r = response(&req, status, body);
    if let AgentMessage::TransmitResponse(t) = &mut r {
        t.content_type = content_type;
    }
    r
}

fn response(req: &TransmitRequest, status: u16, body: String) -> AgentMessage {
    AgentMessage::TransmitResponse(TransmitResponse {
        channel: req.channel.clone(),
        remote: req.remote.clone(),
        callback: req.callback.clone(),
        content_type: if status < 400 {
            req.content_type.clone()
        } else {
            CONTENT_TYPE_TEXT.into()
        },
        status_code: Some(status),
        status: None,
        body,
    })
}

fn response_text(req: &TransmitRequest, status: u16, body: String) -> AgentMessage {
    response(req, status, body)
}

/// (status, content type, body) for a stored message.
async fn answer(
    state: &RelayState,
    agent_id: &str,
    channel: &str,
    req: &TransmitRequest,
) -> (u16, String, String) {
    let is_hl7 = req.content_type == CONTENT_TYPE_HL7_V2;
    if let Some(url) = &state.config.inbound_webhook {
        match webhook(state, url, agent_id, channel, req).await {
            Ok(Some((ct, body))) => return (200, ct, body),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(agent = agent_id, channel, error = %e, "inbound webhook failed");
                if is_hl7 {
                    // The device gets an explicit error and will send again.
                    return match ack(&req.body, AckCode::AE, Some(format!("upstream error: {e}"))) {
                        Ok(a) => (200, CONTENT_TYPE_HL7_V2.into(), a),
                        Err(text) => (400, CONTENT_TYPE_TEXT.into(), text),
                    };
                }
                return (
                    400,
                    CONTENT_TYPE_TEXT.into(),
                    format!("upstream error: {e}"),
                );
            }
        }
    }
    if is_hl7 {
        match ack(&req.body, AckCode::AA, None) {
            Ok(a) => (200, CONTENT_TYPE_HL7_V2.into(), a),
            Err(text) => (400, CONTENT_TYPE_TEXT.into(), text),
        }
    } else {
        (200, CONTENT_TYPE_TEXT.into(), "OK".into())
    }
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

/// POSTs the message to the webhook. `Ok(Some)`: the webhook's reply is the answer;
/// `Ok(None)`: it accepted without a reply (the relay answers).
async fn webhook(
    state: &RelayState,
    url: &str,
    agent_id: &str,
    channel: &str,
    req: &TransmitRequest,
) -> Result<Option<(String, String)>, String> {
    let bytes = req.content_type == CONTENT_TYPE_OCTET_STREAM;
    let payload = if bytes {
        hex::decode(req.body.trim()).map_err(|e| format!("the agent's body is not hex: {e}"))?
    } else {
        req.body.clone().into_bytes()
    };
    let resp = state
        .http
        .post(url)
        .timeout(WEBHOOK_TIMEOUT)
        .header("Content-Type", &req.content_type)
        .header("X-Outpost-Agent", agent_id)
        .header("X-Outpost-Channel", channel)
        .header("X-Outpost-Remote", &req.remote)
        .body(payload)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status();
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let reply = resp.bytes().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("webhook answered HTTP {}", status.as_u16()));
    }
    if bytes {
        return Ok((!reply.is_empty())
            .then(|| (CONTENT_TYPE_OCTET_STREAM.to_owned(), hex::encode(&reply))));
    }
    let body = String::from_utf8_lossy(&reply).into_owned();
    if body.trim().is_empty() {
        return Ok(None);
    }
    // An HL7 message answer must be HL7; anything else from the webhook is not a reply.
    if req.content_type == CONTENT_TYPE_HL7_V2 && !body.starts_with("MSH") {
        return Ok(None);
    }
    Ok(Some((ct.unwrap_or_else(|| req.content_type.clone()), body)))
}
