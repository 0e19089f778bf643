//! [`RelayClient`]: the agent's (and `outpost push`'s) HTTP side of the relay: client-credentials
//! login with refresh before expiry, FHIR reads, and `push_to_agent`, the counterpart of
//! `MedplumClient.pushToAgent`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::Error;

/// Time allowed for one Binary upload: a large DICOM instance on a slow link takes a while.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Refresh a token when fewer than this many seconds remain (Medplum's grace period).
const REFRESH_GRACE_SECS: i64 = 300;

/// Options of [`RelayClient::push_to_agent`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOptions {
    /// Wait for the device's answer.
    pub wait_for_response: bool,
    /// How long the relay waits (default 10 s, at most 55 s).
    pub wait_timeout: Option<Duration>,
    /// HL7: `first` or `application`.
    pub return_ack: Option<String>,
}

/// What a push returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushAnswer {
    /// Without waiting: the relay handed the message to the agent ("All OK").
    Delivered,
    /// The device's answer, with its content type.
    Answer {
        /// Content type of the answer (without parameters).
        content_type: String,
        /// The answer.
        body: String,
    },
}

#[derive(Debug, Clone)]
struct Token {
    value: String,
    expires_at: i64,
}

/// An authenticated client of one relay.
#[derive(Debug, Clone)]
pub struct RelayClient {
    base: String,
    client_id: String,
    client_secret: String,
    http: reqwest::Client,
    token: Arc<Mutex<Option<Token>>>,
}

impl RelayClient {
    /// A client for the relay at `base_url`, trusting `tls` for HTTPS.
    pub fn new(
        base_url: &str,
        client_id: &str,
        client_secret: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<RelayClient, Error> {
        crate::config::check_base_url(base_url)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(70))
            .build()
            .map_err(Error::Http)?;
        Ok(RelayClient {
            base: format!("{}/", base_url.trim_end_matches('/')),
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            http,
            token: Arc::default(),
        })
    }

    /// The relay's base URL (with a trailing slash).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A valid access token: the cached one, or a new one when it has less than five minutes
    /// left.
    pub async fn token(&self) -> Result<String, Error> {
        let now = chrono::Utc::now().timestamp();
        if let Some(t) = self
            .token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            && t.expires_at - now > REFRESH_GRACE_SECS
        {
            return Ok(t.value.clone());
        }
        self.login().await
    }

    /// Logs in with client credentials, whatever the cache holds.
    pub async fn login(&self) -> Result<String, Error> {
        let resp = self
            .http
            .post(format!("{}oauth2/token", self.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &self.client_id),
                ("client_secret", &self.client_secret),
            ])
            .send()
            .await
            .map_err(Error::Http)?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(Error::Login {
                status: status.as_u16(),
                description: body["error_description"]
                    .as_str()
                    .unwrap_or("no description")
                    .to_owned(),
            });
        }
        let value = body["access_token"]
            .as_str()
            .ok_or(Error::NoToken)?
            .to_owned();
        let now = chrono::Utc::now().timestamp();
        let expires_at = jwt_exp(&value)
            .or_else(|| body["expires_in"].as_i64().map(|s| now + s))
            .unwrap_or(now + 3600);
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some(Token {
            value: value.clone(),
            expires_at,
        });
        Ok(value)
    }

    /// Forgets the cached token (after a 401).
    pub fn invalidate(&self) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Sends a request with the token; a 401 gets one fresh login and one retry.
    async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Error> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let resp = build(&self.http)
                .bearer_auth(token)
                .send()
                .await
                .map_err(Error::Http)?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                self.invalidate();
                continue;
            }
            return Ok(resp);
        }
        Err(Error::Unauthorized)
    }

    /// `GET fhir/R4/{ty}/{id}`.
    pub async fn read(&self, ty: &str, id: &str) -> Result<Value, Error> {
        let url = format!("{}fhir/R4/{ty}/{id}", self.base);
        let resp = self.send(|h| h.get(&url)).await?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(Error::Status {
                what: format!("read {ty}/{id}"),
                status: status.as_u16(),
                text: outcome_text(&body).to_owned(),
            });
        }
        Ok(body)
    }

    /// `POST fhir/R4/Binary`: uploads the file at `path` as it is (streamed, not read whole)
    /// with `content_type`; the new Binary's id. A 401 gets one fresh login and one retry.
    pub async fn upload_binary(
        &self,
        path: &std::path::Path,
        content_type: &str,
    ) -> Result<String, Error> {
        let url = format!("{}fhir/R4/Binary", self.base);
        for attempt in 0..2 {
            let token = self.token().await?;
            let file = tokio::fs::File::open(path).await.map_err(Error::Io)?;
            let len = file.metadata().await.map_err(Error::Io)?.len();
            let resp = self
                .http
                .post(&url)
                .timeout(UPLOAD_TIMEOUT)
                .bearer_auth(token)
                .header("content-type", content_type)
                .header("content-length", len)
                .body(reqwest::Body::from(file))
                .send()
                .await
                .map_err(Error::Http)?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                self.invalidate();
                continue;
            }
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if !status.is_success() {
                return Err(Error::Status {
                    what: "upload a Binary".to_owned(),
                    status: status.as_u16(),
                    text: outcome_text(&body).to_owned(),
                });
            }
            return body["id"].as_str().map(str::to_owned).ok_or(Error::Status {
                what: "upload a Binary".to_owned(),
                status: status.as_u16(),
                text: "the answer names no id".to_owned(),
            });
        }
        Err(Error::Unauthorized)
    }

    /// `GET fhir/R4/Binary/{id}` for its raw bytes: the answer, its body not yet read, once
    /// the relay said 200 (an upgrade streams it to a file). A 401 gets one fresh login and
    /// one retry.
    pub(crate) async fn open_binary(&self, id: &str) -> Result<reqwest::Response, Error> {
        let url = format!("{}fhir/R4/Binary/{id}", self.base);
        let resp = self
            .send(|h| {
                h.get(&url)
                    .timeout(UPLOAD_TIMEOUT)
                    .header("accept", "application/octet-stream")
            })
            .await?;
        let status = resp.status();
        if !status.is_success() {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(Error::Status {
                what: format!("read Binary/{id}"),
                status: status.as_u16(),
                text: outcome_text(&body).to_owned(),
            });
        }
        Ok(resp)
    }

    /// `POST fhir/R4/Agent/{agent}/$push`: sends `body` to `destination` (`Device/{id}`,
    /// `Device?identifier=...`, or a host for pings) through the agent.
    pub async fn push_to_agent(
        &self,
        agent: &str,
        destination: &str,
        body: &str,
        content_type: &str,
        opts: &PushOptions,
    ) -> Result<PushAnswer, Error> {
        let url = match agent_push_path(agent) {
            Some(path) => format!("{}fhir/R4/{path}", self.base),
            None => return Err(Error::AgentName(agent.to_owned())),
        };
        let mut params = json!({
            "destination": destination,
            "contentType": content_type,
            "body": body,
            "waitForResponse": opts.wait_for_response,
        });
        if let Some(t) = opts.wait_timeout {
            params["waitTimeout"] = json!(t.as_millis() as u64);
        }
        if let Some(r) = &opts.return_ack {
            params["returnAck"] = json!(r);
        }
        let text = params.to_string();
        let resp = self
            .send(|h| {
                h.post(&url)
                    .header("content-type", "application/fhir+json")
                    .body(text.clone())
            })
            .await?;
        let status = resp.status();
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned())
            .unwrap_or_default();
        let text = resp.text().await.map_err(Error::Http)?;
        if !status.is_success() {
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            return Err(Error::Push {
                status: status.as_u16(),
                code: body["issue"][0]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                text: outcome_text(&body).to_owned(),
            });
        }
        if !opts.wait_for_response {
            return Ok(PushAnswer::Delivered);
        }
        Ok(PushAnswer::Answer {
            content_type: ct,
            body: text,
        })
    }
}

/// The `$push` path for an agent named `<id>`, `Agent/<id>` or `Agent?identifier=[system|]value`
/// (the relay's `Agent/$push?identifier=`); `None` for anything else.
fn agent_push_path(agent: &str) -> Option<String> {
    if let Some(query) = agent.strip_prefix("Agent?") {
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        return match params.as_slice() {
            [(k, v)] if k == "identifier" && !v.is_empty() => Some(format!(
                "Agent/$push?{}",
                form_urlencoded::Serializer::new(String::new())
                    .append_pair("identifier", v)
                    .finish()
            )),
            _ => None,
        };
    }
    let id = agent.strip_prefix("Agent/").unwrap_or(agent);
    let valid = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| format!("Agent/{id}/$push"))
}

/// The text of an OperationOutcome (or whatever the body is).
fn outcome_text(body: &Value) -> &str {
    body["issue"][0]["details"]["text"]
        .as_str()
        .or_else(|| body["issue"][0]["diagnostics"].as_str())
        .unwrap_or("no details")
}

/// The `exp` claim of a JWT, if the token is one.
fn jwt_exp(token: &str) -> Option<i64> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?["exp"].as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_names() {
        assert_eq!(agent_push_path("a-1").as_deref(), Some("Agent/a-1/$push"));
        assert_eq!(
            agent_push_path("Agent/a.1").as_deref(),
            Some("Agent/a.1/$push")
        );
        assert_eq!(
            agent_push_path("Agent?identifier=urn:x|site 1").as_deref(),
            Some("Agent/$push?identifier=urn%3Ax%7Csite+1")
        );
        for bad in [
            "",
            "Agent/",
            "Agent?name=x",
            "Agent?identifier=",
            "Agent?identifier=a&name=b",
            "Device/x",
            "a/b",
        ] {
            assert_eq!(agent_push_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn exp_from_jwt() {
        use base64::Engine;
        let b = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        let t = format!("{}.{}.sig", b("{}"), b(r#"{"exp":1234}"#));
        assert_eq!(jwt_exp(&t), Some(1234));
        assert_eq!(jwt_exp("opaque"), None);
    }
}
