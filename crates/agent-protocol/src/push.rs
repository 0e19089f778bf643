//! The `$push` operation: its parameters, and the OperationOutcome every FHIR error is.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// Default `waitTimeout`, in milliseconds.
pub const DEFAULT_WAIT_TIMEOUT_MS: u64 = 10_000;
/// Largest `waitTimeout` accepted, in milliseconds.
pub const MAX_WAIT_TIMEOUT_MS: u64 = 55_000;

/// `x-application/hl7-v2+er7`
pub const CONTENT_TYPE_HL7_V2: &str = "x-application/hl7-v2+er7";
/// `x-application/ping`
pub const CONTENT_TYPE_PING: &str = "x-application/ping";
/// `x-application/astm`
pub const CONTENT_TYPE_ASTM: &str = "x-application/astm";
/// `application/dicom`
pub const CONTENT_TYPE_DICOM: &str = "application/dicom";
/// `application/dicom+json`
pub const CONTENT_TYPE_DICOM_JSON: &str = "application/dicom+json";
/// `application/octet-stream`: bytes of a byte-stream channel, hex-encoded in `body`.
pub const CONTENT_TYPE_OCTET_STREAM: &str = "application/octet-stream";
/// `text/plain`
pub const CONTENT_TYPE_TEXT: &str = "text/plain";

/// The parameters of `POST /Agent/{id}/$push`, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRequest {
    /// `Device/{id}`, `Device?{search}`, or (for pings) a host name or IPv4 address.
    pub destination: String,
    /// The body's content type.
    pub content_type: String,
    /// The message.
    pub body: String,
    /// Wait for the device's answer and return it.
    pub wait_for_response: bool,
    /// How long to wait, in milliseconds.
    pub wait_timeout: u64,
    /// `first` or `application` (HL7): which acknowledgement ends the wait.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub return_ack: Option<String>,
}

impl PushRequest {
    /// Reads the request body: plain JSON (`{"destination": ..., "body": ...}`) or a FHIR
    /// `Parameters` resource (`valueString`, `valueBoolean`, `valueInteger`, `valueDecimal`).
    ///
    /// The checks and their messages are Medplum's, in its order: `Missing body parameter`,
    /// `Missing contentType parameter`, `Missing destination parameter`, `Invalid wait timeout`.
    /// A body that is a JSON value other than a string is forwarded as its JSON text.
    pub fn from_json(bytes: &[u8], max: usize) -> Result<PushRequest, Error> {
        if bytes.len() > max {
            return Err(Error::TooLarge {
                size: bytes.len(),
                max,
            });
        }
        let v: Value = serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))?;
        let Value::Object(obj) = v else {
            return Err(Error::Invalid("request body must be a JSON object".into()));
        };
        let params = if obj.get("resourceType").and_then(Value::as_str) == Some("Parameters") {
            parameters(&obj)
        } else {
            obj
        };
        let text = |key: &str| -> Option<String> {
            match params.get(key)? {
                Value::Null => None,
                Value::String(s) if s.is_empty() => None,
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            }
        };
        let body = text("body").ok_or_else(|| Error::Invalid("Missing body parameter".into()))?;
        let content_type = text("contentType")
            .ok_or_else(|| Error::Invalid("Missing contentType parameter".into()))?;
        let destination = text("destination")
            .ok_or_else(|| Error::Invalid("Missing destination parameter".into()))?;
        let wait_for_response = match params.get("waitForResponse") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s == "true" => true,
            Some(Value::String(s)) if s == "false" || s.is_empty() => false,
            Some(_) => return Err(Error::Invalid("Invalid waitForResponse".into())),
        };
        let wait_timeout = match params.get("waitTimeout") {
            None | Some(Value::Null) => DEFAULT_WAIT_TIMEOUT_MS,
            Some(Value::Number(n)) => n
                .as_u64()
                .filter(|t| *t <= MAX_WAIT_TIMEOUT_MS)
                .ok_or_else(|| Error::Invalid("Invalid wait timeout".into()))?,
            Some(Value::String(s)) => s
                .parse::<u64>()
                .ok()
                .filter(|t| *t <= MAX_WAIT_TIMEOUT_MS)
                .ok_or_else(|| Error::Invalid("Invalid wait timeout".into()))?,
            Some(_) => return Err(Error::Invalid("Invalid wait timeout".into())),
        };
        let return_ack = text("returnAck");
        if let Some(r) = &return_ack
            && r != "first"
            && r != "application"
        {
            return Err(Error::Invalid(format!(
                "Invalid returnAck {r:?}: expected \"first\" or \"application\""
            )));
        }
        Ok(PushRequest {
            destination,
            content_type,
            body,
            wait_for_response,
            wait_timeout,
            return_ack,
        })
    }
}

/// A FHIR `Parameters` resource as a flat object of its values.
fn parameters(obj: &serde_json::Map<String, Value>) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    for p in obj
        .get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            continue;
        };
        let value = [
            "valueString",
            "valueBoolean",
            "valueInteger",
            "valueDecimal",
            "valueCode",
        ]
        .iter()
        .find_map(|k| p.get(*k));
        if let Some(v) = value {
            out.insert(name.to_owned(), v.clone());
        }
    }
    out
}

/// A FHIR `OperationOutcome` with one issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationOutcome {
    /// Always `OperationOutcome`.
    pub resource_type: String,
    /// `ok` for the all-OK outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The issues.
    pub issue: Vec<Issue>,
}

/// One issue of an [`OperationOutcome`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// `error`, `information`, ...
    pub severity: String,
    /// `invalid`, `not-found`, `login`, `forbidden`, `too-costly`, `timeout`, `exception`, ...
    pub code: String,
    /// The message.
    pub details: Details,
}

/// `details` of an [`Issue`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Details {
    /// The human-readable text clients show.
    pub text: String,
}

impl OperationOutcome {
    /// Medplum's `allOk`: `{"resourceType":"OperationOutcome","id":"ok","issue":[{"severity":
    /// "information","code":"informational","details":{"text":"All OK"}}]}`.
    pub fn all_ok() -> Self {
        OperationOutcome {
            resource_type: "OperationOutcome".into(),
            id: Some("ok".into()),
            issue: vec![Issue {
                severity: "information".into(),
                code: "informational".into(),
                details: Details {
                    text: "All OK".into(),
                },
            }],
        }
    }

    /// An error outcome with an issue `code` (`invalid`, `not-found`, ...) and text.
    pub fn error(code: &str, text: impl Into<String>) -> Self {
        OperationOutcome {
            resource_type: "OperationOutcome".into(),
            id: None,
            issue: vec![Issue {
                severity: "error".into(),
                code: code.into(),
                details: Details { text: text.into() },
            }],
        }
    }

    /// The first issue's text.
    pub fn text(&self) -> &str {
        self.issue.first().map_or("", |i| i.details.text.as_str())
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<PushRequest, Error> {
        PushRequest::from_json(s.as_bytes(), 1 << 20)
    }

    #[test]
    fn plain_json() {
        let p = parse(r#"{"destination":"Device/1","contentType":"x-application/hl7-v2+er7","body":"MSH|","waitForResponse":true,"waitTimeout":5000}"#).unwrap();
        assert_eq!(p.destination, "Device/1");
        assert!(p.wait_for_response);
        assert_eq!(p.wait_timeout, 5000);
        let p = parse(r#"{"destination":"Device/1","contentType":"c","body":"b"}"#).unwrap();
        assert!(!p.wait_for_response);
        assert_eq!(p.wait_timeout, DEFAULT_WAIT_TIMEOUT_MS);
    }

    #[test]
    fn medplum_messages_in_medplum_order() {
        let msg = |s: &str| parse(s).unwrap_err().to_string();
        assert_eq!(msg(r#"{}"#), "Missing body parameter");
        assert_eq!(msg(r#"{"body":"x"}"#), "Missing contentType parameter");
        assert_eq!(
            msg(r#"{"body":"x","contentType":"c"}"#),
            "Missing destination parameter"
        );
        assert_eq!(
            msg(r#"{"body":"x","contentType":"c","destination":"d","waitTimeout":55001}"#),
            "Invalid wait timeout"
        );
        assert_eq!(
            msg(r#"{"body":"x","contentType":"c","destination":"d","waitTimeout":-1}"#),
            "Invalid wait timeout"
        );
        assert_eq!(
            msg(r#"{"body":"","contentType":"c","destination":"d"}"#),
            "Missing body parameter"
        );
        assert!(msg("[1]").contains("JSON object"));
        assert!(msg("{").starts_with("invalid JSON: "));
    }

    #[test]
    fn parameters_resource_with_typed_values() {
        let p = parse(r#"{"resourceType":"Parameters","parameter":[{"name":"destination","valueString":"Device/9"},{"name":"contentType","valueString":"c"},{"name":"body","valueString":"b"},{"name":"waitForResponse","valueBoolean":true},{"name":"waitTimeout","valueInteger":100}]}"#).unwrap();
        assert_eq!(
            (p.destination.as_str(), p.wait_for_response, p.wait_timeout),
            ("Device/9", true, 100)
        );
    }

    #[test]
    fn object_body_is_forwarded_as_json_text() {
        let p = parse(r#"{"destination":"d","contentType":"application/dicom+json","body":{"00100010":{"vr":"PN"}}}"#).unwrap();
        assert_eq!(p.body, r#"{"00100010":{"vr":"PN"}}"#);
    }

    #[test]
    fn too_large() {
        assert!(matches!(
            PushRequest::from_json(&[b' '; 100], 10),
            Err(Error::TooLarge { size: 100, max: 10 })
        ));
    }

    #[test]
    fn all_ok_is_medplums() {
        assert_eq!(
            OperationOutcome::all_ok().to_json(),
            r#"{"resourceType":"OperationOutcome","id":"ok","issue":[{"severity":"information","code":"informational","details":{"text":"All OK"}}]}"#
        );
    }
}
