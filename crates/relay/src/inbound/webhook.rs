//! The `--inbound-webhook`: each inbound message is POSTed there (the raw bytes for
//! byte-stream channels) with `X-Outpost-Agent`/`-Channel`/`-Remote` headers; its reply, if
//! any, is the device's answer.

use std::time::Duration;

use agent_protocol::{CONTENT_TYPE_HL7_V2, CONTENT_TYPE_OCTET_STREAM, TransmitRequest};

/// Why the webhook gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum WebhookError {
    /// The agent's body for a byte stream is not hex (the agent's fault).
    #[error("the agent's body is not hex")]
    NotHex(#[source] hex::FromHexError),
    /// Unreachable, refused, timed out, or the reply broke off.
    #[error("cannot reach the webhook")]
    Unreachable(#[source] reqwest::Error),
    /// The webhook answered with an error status.
    #[error("webhook answered HTTP {0}")]
    Status(u16),
}

impl WebhookError {
    /// Whether the webhook may take the message later (unreachable, timed out, 5xx, 429):
    /// the relay answers 503 and the agent sends it again.
    pub(crate) fn is_temporary(&self) -> bool {
        match self {
            WebhookError::Unreachable(_) => true,
            WebhookError::Status(s) => *s >= 500 || *s == 429,
            WebhookError::NotHex(_) => false,
        }
    }
}

/// Where and how inbound messages are posted.
#[derive(Debug)]
pub(crate) struct Webhook {
    url: String,
    http: reqwest::Client,
    timeout: Duration,
}

impl Webhook {
    pub(crate) fn new(url: String, http: reqwest::Client, timeout: Duration) -> Webhook {
        Webhook { url, http, timeout }
    }

    /// POSTs the message. `Ok(Some((content type, body)))`: the webhook's reply is the answer;
    /// `Ok(None)`: it accepted without a reply (the relay answers).
    pub(crate) async fn post(
        &self,
        agent_id: &str,
        channel: &str,
        req: &TransmitRequest,
    ) -> Result<Option<(String, String)>, WebhookError> {
        let bytes = req.content_type == CONTENT_TYPE_OCTET_STREAM;
        let payload = if bytes {
            hex::decode(req.body.trim()).map_err(WebhookError::NotHex)?
        } else {
            req.body.clone().into_bytes()
        };
        let resp = self
            .http
            .post(&self.url)
            .timeout(self.timeout)
            .header("Content-Type", &req.content_type)
            .header("X-Outpost-Agent", agent_id)
            .header("X-Outpost-Channel", channel)
            .header("X-Outpost-Remote", &req.remote)
            .body(payload)
            .send()
            .await
            .map_err(WebhookError::Unreachable)?;
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
        let reply = resp.bytes().await.map_err(WebhookError::Unreachable)?;
        if !status.is_success() {
            return Err(WebhookError::Status(status.as_u16()));
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
}
