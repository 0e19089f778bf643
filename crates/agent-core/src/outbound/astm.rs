//! `astm://host:port[?encoding=LABEL]`: E1381 over TCP as the LIS (ENQ, frames, EOT), within
//! the push's time. A push cut off at its deadline may have reached the analyzer in part; that
//! is logged as late.

use agent_protocol::{CONTENT_TYPE_TEXT, TransmitRequest};
use hl7v2::Charset;

use super::{Delivered, PushError, TimeBudget, charset};
use crate::url::DeviceUrl;

pub(crate) async fn push(
    url: &DeviceUrl,
    req: &TransmitRequest,
    budget: TimeBudget,
) -> Result<Delivered, PushError> {
    let charset = charset(url, &req.remote, Charset::Latin1)?;
    let message = charset
        .encode(&astm::records_from_text(&req.body))
        .into_owned();
    let parsed = astm::Message::parse(&message).map_err(PushError::AstmBody)?;
    let records = parsed.records().len();
    // As the LIS; an analyzer that is busy gets two tries, not six, so a push fails in time.
    let opts = astm::LinkOptions {
        role: astm::Role::Computer,
        max_establish_attempts: 2,
        ..astm::LinkOptions::default()
    };
    let addr = url.addr.clone();
    let send = async {
        let mut conn =
            astm::connect(&addr, opts)
                .await
                .map_err(|source| PushError::AstmConnect {
                    addr: addr.clone(),
                    source,
                })?;
        conn.send(&message)
            .await
            .map_err(|source| PushError::AstmLink {
                addr: addr.clone(),
                source,
            })?;
        let s = conn.link().stats();
        Ok::<_, PushError>(format!(
            "sent {records} records in {} frames to {addr}, all acknowledged ({} retransmitted)",
            s.frames_sent - s.retransmissions,
            s.retransmissions
        ))
    };
    let summary = tokio::time::timeout_at(budget.deadline, send)
        .await
        .map_err(|_| {
            budget.log_late(&req.remote);
            PushError::Timeout {
                addr: url.addr.clone(),
                within: budget.total(),
            }
        })??;
    Ok((CONTENT_TYPE_TEXT.to_owned(), summary))
}
