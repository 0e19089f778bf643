//! `mllp://host:port[?encoding=LABEL&returnAck=first|application]`: send over a pooled MLLP
//! connection (`mllps://`: over TLS) and wait for the ACK, all within the push's time (waiting for a free connection
//! included; a push that gets none in time is not sent). Whatever the ACK's MSA-1, the device
//! answered: the ACK is the push's answer (200); a transport failure is a [`PushError`] (400).

use agent_protocol::{CONTENT_TYPE_HL7_V2, TransmitRequest};
use hl7v2::Charset;
use mllp::{Pool, ReturnAck, SendOptions, TlsTarget};

use super::{Delivered, PushError, TimeBudget, charset};
use crate::url::DeviceUrl;

pub(crate) async fn push(
    pool: &Pool,
    url: &DeviceUrl,
    tls: Option<&TlsTarget>,
    req: &TransmitRequest,
    budget: TimeBudget,
) -> Result<Delivered, PushError> {
    let charset = charset(url, &req.remote, Charset::Utf8)?;
    // Per message, then per Device URL (Medplum's `defaultReturnAck`), then the first ACK.
    let return_ack = req
        .return_ack
        .as_deref()
        .or(url.get("returnAck"))
        .or(url.get("defaultReturnAck"))
        .map(|r| {
            r.parse::<ReturnAck>()
                .map_err(|_| PushError::ReturnAck(r.to_owned()))
        })
        .transpose()?;
    let wire = charset.encode(&req.body);
    let opts = SendOptions {
        ack_timeout: None,
        return_ack,
    };
    let sent = match tls {
        Some(tls) => {
            pool.send_tls_by(&url.addr, tls, &wire, budget.deadline, opts)
                .await
        }
        None => pool.send_by(&url.addr, &wire, budget.deadline, opts).await,
    };
    match sent {
        Ok(ack) => Ok((
            CONTENT_TYPE_HL7_V2.to_owned(),
            hl7_text(charset, ack.bytes()),
        )),
        // The device answered: its answer is the push's answer whatever MSA-1 says (AE, AR,
        // CE, CR as well as AA, CA), with 200, as Medplum's agent answers a push with the
        // device's ACK (packages/agent/src/app.ts, `pushMessage`: any reply resolves
        // `sendAndWait`). Callers read MSA-1; 400 is kept for transport failures.
        Err(mllp::Error::Negative { code, ack, .. }) => {
            tracing::info!(
                remote = req.remote,
                code = code.as_str(),
                "device answered with a negative acknowledgement"
            );
            Ok((CONTENT_TYPE_HL7_V2.to_owned(), hl7_text(charset, &ack)))
        }
        Err(mllp::Error::NotSent { addr, .. }) => Err(PushError::NotSent {
            addr,
            within: budget.total(),
        }),
        Err(mllp::Error::AckTimeout { control_id, .. }) => {
            budget.log_late(&req.remote);
            Err(PushError::NoAck {
                control_id,
                within: budget.total(),
            })
        }
        Err(e) => Err(PushError::Mllp(e)),
    }
}

/// An HL7 message as text for JSON: decoded with the channel's character set, segments ended by
/// `\r` (the last one without).
fn hl7_text(charset: Charset, bytes: &[u8]) -> String {
    let text = charset.decode(bytes);
    text.trim_end_matches(['\r', '\n']).to_owned()
}
