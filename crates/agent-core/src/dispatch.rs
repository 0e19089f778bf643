//! A push, delivered by the scheme of its `remote` (the destination Device's `url`):
//!
//! | `remote` | action | answer |
//! |---|---|---|
//! | `mllp://host:port[?encoding=&returnAck=]` | send over MLLP (pooled), wait for the ACK | the ACK, 200 |
//! | `astm://host:port[?encoding=]` | E1381 over TCP as the LIS: ENQ, frames, EOT | `text/plain` summary, 200 |
//! | `dicom://host:port?calledAet=&callingAet=` with `application/dicom` (base64 Part 10) | C-STORE | JSON result, 200 |
//! | same, with `application/dicom+json` (a query identifier) | C-FIND | JSON array of matches, 200 |
//! | a host or IP with `x-application/ping` | the system `ping` | its output, 200 |
//! | anything else | none | 400 "unsupported destination scheme" |
//!
//! Failures are 400 `text/plain` saying what happened: refused, timed out, the device's NAK
//! (with its ACK), a body that is not HL7.

use std::time::Duration;

use agent_protocol::{
    CONTENT_TYPE_DICOM, CONTENT_TYPE_DICOM_JSON, CONTENT_TYPE_HL7_V2, CONTENT_TYPE_PING,
    CONTENT_TYPE_TEXT, TransmitRequest, TransmitResponse,
};
use hl7v2::Charset;
use mllp::{ReturnAck, SendOptions};

use crate::Inner;

/// Delivers one push and builds its answer.
pub(crate) async fn dispatch(inner: &Inner, req: &TransmitRequest) -> TransmitResponse {
    let result = if req.content_type == CONTENT_TYPE_PING {
        ping(&req.remote, &req.body).await
    } else {
        match req.remote.split_once("://").map(|(s, _)| s) {
            Some("mllp") => mllp_push(inner, req).await,
            Some("astm") => astm_push(inner, req).await,
            Some("dicom") => dicom_push(inner, req).await,
            Some(scheme) => Err(format!("unsupported destination scheme {scheme}://")),
            None => Err(format!(
                "unsupported destination {:?}: expected a URL such as mllp://host:port",
                req.remote
            )),
        }
    };
    let (status, content_type, body) = match result {
        Ok((ct, body)) => (200, ct, body),
        Err(text) => (400, CONTENT_TYPE_TEXT.to_owned(), text),
    };
    TransmitResponse {
        channel: req.channel.clone(),
        remote: req.remote.clone(),
        callback: req.callback.clone(),
        content_type,
        status_code: Some(status),
        status: None,
        body,
    }
}

/// The parts of a destination URL: `scheme://host:port/path?query`.
pub(crate) struct Url {
    /// `host:port`
    pub(crate) addr: String,
    /// Query parameters, percent-decoded.
    pub(crate) query: Vec<(String, String)>,
}

impl Url {
    pub(crate) fn parse(url: &str) -> Result<Url, String> {
        let (_, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("not a URL: {url}"))?;
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, q),
            None => (rest, ""),
        };
        let authority = authority.split('/').next().unwrap_or(authority);
        let port_ok = authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(format!("{url}: expected host:port"));
        }
        Ok(Url {
            addr: authority.to_owned(),
            query: form_urlencoded::parse(query.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        })
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

async fn mllp_push(inner: &Inner, req: &TransmitRequest) -> Result<(String, String), String> {
    let url = Url::parse(&req.remote)?;
    let charset = match url.get("encoding") {
        Some(label) => Charset::from_label(label).map_err(|e| format!("{}: {e}", req.remote))?,
        None => Charset::Utf8,
    };
    // Per message, then per Device URL (Medplum's `defaultReturnAck`), then the first ACK.
    let return_ack = req
        .return_ack
        .as_deref()
        .or(url.get("returnAck"))
        .or(url.get("defaultReturnAck"))
        .map(|r| r.parse::<ReturnAck>())
        .transpose()
        .map_err(|e| format!("invalid returnAck: {e}"))?;
    let wire = charset.encode(&req.body);
    let opts = SendOptions {
        ack_timeout: None,
        return_ack,
    };
    match inner.pool.send(&url.addr, &wire, opts).await {
        Ok(ack) => Ok((
            CONTENT_TYPE_HL7_V2.to_owned(),
            hl7_text(charset, ack.bytes()),
        )),
        Err(mllp::Error::Negative {
            description, ack, ..
        }) => Err(format!(
            "device at {} did not accept the message: {description}\n\n{}",
            url.addr,
            hl7_text(charset, &ack)
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// The records of an ASTM body (separated by CR, LF or CRLF), as the wire wants them: each
/// ended by CR, encoded (ISO 8859-1 unless `?encoding=` says otherwise).
pub(crate) fn astm_records(body: &str, charset: Charset) -> Vec<u8> {
    let mut text = String::with_capacity(body.len() + 1);
    for r in body.split(['\r', '\n']).filter(|r| !r.trim().is_empty()) {
        text.push_str(r);
        text.push('\r');
    }
    charset.encode(&text).into_owned()
}

async fn astm_push(inner: &Inner, req: &TransmitRequest) -> Result<(String, String), String> {
    let url = Url::parse(&req.remote)?;
    let charset = match url.get("encoding") {
        Some(label) => Charset::from_label(label).map_err(|e| format!("{}: {e}", req.remote))?,
        None => Charset::Latin1,
    };
    let message = astm_records(&req.body, charset);
    let parsed =
        astm::Message::parse(&message).map_err(|e| format!("invalid ASTM message: {e}"))?;
    let records = parsed.records().len();
    // As the LIS; an analyzer that is busy gets two tries, not six, so a push fails in time.
    let opts = astm::LinkOptions {
        role: astm::Role::Computer,
        max_establish_attempts: 2,
        ..astm::LinkOptions::default()
    };
    let send = async {
        let mut conn = astm::connect(&url.addr, opts)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", url.addr))?;
        conn.send(&message)
            .await
            .map_err(|e| format!("{}: {e}", url.addr))?;
        let s = conn.link().stats();
        Ok::<_, String>(format!(
            "sent {records} records in {} frames to {}, all acknowledged ({} retransmitted)",
            s.frames_sent - s.retransmissions,
            url.addr,
            s.retransmissions
        ))
    };
    let summary = tokio::time::timeout(inner.config.ack_timeout, send)
        .await
        .map_err(|_| {
            format!(
                "{}: not delivered within {} ms",
                url.addr,
                inner.config.ack_timeout.as_millis()
            )
        })??;
    Ok((CONTENT_TYPE_TEXT.to_owned(), summary))
}

/// DICOM: a C-STORE of a base64 Part 10 file, or a C-FIND of a DICOM JSON identifier. The
/// information model of a query: `?model=patient|study|worklist` on the Device URL, else from
/// the identifier (QueryRetrieveLevel PATIENT: Patient Root; another level: Study Root; none:
/// Modality Worklist).
async fn dicom_push(inner: &Inner, req: &TransmitRequest) -> Result<(String, String), String> {
    use base64::Engine;
    use dicom_net::{Association, Options, Proposal, uids};

    let url = Url::parse(&req.remote)?;
    let opts = Options {
        calling_ae: url.get("callingAet").unwrap_or("OUTPOST").to_owned(),
        called_ae: url.get("calledAet").unwrap_or("ANY-SCP").to_owned(),
        connect_timeout: inner.config.ack_timeout,
        acse_timeout: inner.config.ack_timeout,
        dimse_timeout: inner.config.ack_timeout,
        ..Options::default()
    };
    let peer = format!("{} at {}", opts.called_ae, url.addr);
    let work = async {
        if req.content_type == CONTENT_TYPE_DICOM {
            let compact: String = req.body.split_ascii_whitespace().collect();
            let file = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|e| {
                    format!("the body is not base64 ({e}): send the Part 10 file base64-encoded")
                })?;
            let meta = dicom_net::inspect(&file).map_err(|e| e.to_string())?;
            let proposals =
                Proposal::for_storage([(meta.sop_class.as_str(), meta.transfer_syntax.as_str())]);
            let mut a = Association::connect(&url.addr, &opts, &proposals)
                .await
                .map_err(|e| format!("{peer}: {e}"))?;
            let r = a
                .store_bytes(&file)
                .await
                .map_err(|e| format!("{peer}: C-STORE: {e}"))?;
            let _ = a.release().await;
            if !r.status.is_ok() {
                let comment = r
                    .error_comment
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                return Err(format!(
                    "{peer}: C-STORE of {} failed: {}{comment}",
                    r.sop_instance, r.status
                ));
            }
            let body = serde_json::json!({
                "status": format!("0x{:04X}", r.status.0),
                "statusText": r.status.name(),
                "sopClassUid": r.sop_class,
                "sopInstanceUid": r.sop_instance,
                "transferSyntaxUid": r.transfer_syntax,
                "transcoded": r.transcoded,
                "bytes": r.bytes,
            });
            Ok(("application/json".to_owned(), body.to_string()))
        } else if req.content_type == CONTENT_TYPE_DICOM_JSON {
            let json: serde_json::Value = serde_json::from_str(&req.body)
                .map_err(|e| format!("the body is not JSON: {e}"))?;
            let query = dicom_net::from_json(&json).map_err(|e| e.to_string())?;
            let level = query.string(0x0008_0052);
            let model = match (url.get("model"), level.as_deref()) {
                (Some("patient"), _) | (None, Some("PATIENT")) => uids::PATIENT_ROOT_FIND,
                (Some("study"), _) | (None, Some(_)) => uids::STUDY_ROOT_FIND,
                (Some("worklist"), _) | (None, None) => uids::MODALITY_WORKLIST_FIND,
                (Some(other), _) => {
                    return Err(format!(
                        "model={other}: expected patient, study or worklist"
                    ));
                }
            };
            let mut a = Association::connect(&url.addr, &opts, &[Proposal::find(model)])
                .await
                .map_err(|e| format!("{peer}: {e}"))?;
            let (matches, end) = a
                .find(model, &query)
                .await
                .map_err(|e| format!("{peer}: C-FIND: {e}"))?
                .collect()
                .await
                .map_err(|e| format!("{peer}: C-FIND: {e}"))?;
            let _ = a.release().await;
            if !end.status.is_ok() {
                let comment = end
                    .error_comment
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default();
                return Err(format!("{peer}: C-FIND failed: {}{comment}", end.status));
            }
            let array: Vec<serde_json::Value> = matches.iter().map(dicom_net::to_json).collect();
            Ok((
                CONTENT_TYPE_DICOM_JSON.to_owned(),
                serde_json::Value::Array(array).to_string(),
            ))
        } else {
            Err(format!(
                "a dicom:// destination takes {CONTENT_TYPE_DICOM} (base64 Part 10, stored with C-STORE) or {CONTENT_TYPE_DICOM_JSON} (a query, C-FIND), not {}",
                req.content_type
            ))
        }
    };
    // The association's own timeouts bound each step; this bounds the whole push.
    tokio::time::timeout(inner.config.ack_timeout * 2, work)
        .await
        .map_err(|_| {
            format!(
                "{peer}: no answer within {} ms",
                (inner.config.ack_timeout * 2).as_millis()
            )
        })?
}

/// An HL7 message as text for JSON: decoded with the channel's character set, segments ended by
/// `\r` (the last one without).
fn hl7_text(charset: Charset, bytes: &[u8]) -> String {
    let text = charset.decode(bytes);
    text.trim_end_matches(['\r', '\n']).to_owned()
}

/// `PING` or `PING <count>` to a host, with the system's `ping`.
async fn ping(host: &str, body: &str) -> Result<(String, String), String> {
    let count: u32 = body
        .trim()
        .strip_prefix("PING")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map_or(Ok(1), str::parse)
        .map_err(|_| format!("invalid ping body {body:?}: expected PING or PING <count>"))?;
    let count = count.clamp(1, 10);
    if host.starts_with('-') || host.is_empty() {
        return Err(format!("invalid host {host:?}"));
    }
    let out = tokio::time::timeout(
        Duration::from_secs(3 + 2 * u64::from(count)),
        tokio::process::Command::new("ping")
            .args(["-c", &count.to_string(), "-W", "2", host])
            .output(),
    )
    .await
    .map_err(|_| format!("ping {host}: no answer in time"))?
    .map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "ping is not installed on the agent's host".to_owned(),
        _ => format!("ping {host}: {e}"),
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if out.status.success() {
        Ok((CONTENT_TYPE_PING.to_owned(), stdout))
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        Err(format!("ping {host} failed: {stdout}{stderr}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u =
            Url::parse("mllp://10.0.0.5:2575?encoding=windows-1252&returnAck=application").unwrap();
        assert_eq!(u.addr, "10.0.0.5:2575");
        assert_eq!(u.get("encoding"), Some("windows-1252"));
        assert_eq!(u.get("returnAck"), Some("application"));
        assert_eq!(Url::parse("mllp://[::1]:2575").unwrap().addr, "[::1]:2575");
        assert!(Url::parse("mllp://host").is_err());
        assert!(Url::parse("host:1").is_err());
    }
}
