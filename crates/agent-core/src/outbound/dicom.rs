//! `dicom://host:port?calledAet=X&callingAet=Y`: a C-STORE of a base64 Part 10 file
//! (`application/dicom`), or a C-FIND of a DICOM JSON identifier (`application/dicom+json`) in
//! the information model `?model=patient|study|worklist` names, else the one the identifier
//! implies ([`dicom_net::FindModel::choose`]).
//!
//! With `?tls=true` the association runs over TLS (DICOM's TLS profiles, PS3.15 Annex B), the
//! SCP's certificate verified as for `mllps://` (`?ca=`, `?cert=&key=`; see `device_tls`).
//!
//! Each step (connect, TLS handshake, association, each DIMSE exchange) has `ackTimeoutMs`; the
//! whole push has twice that, or the caller's deadline when it is shorter.

use std::time::Duration;

use agent_protocol::{CONTENT_TYPE_DICOM, CONTENT_TYPE_DICOM_JSON, TransmitRequest};
use base64::Engine;
use dicom_net::{Association, FindModel, Options, Proposal};
use mllp::TlsTarget;

use super::{Delivered, PushError, TimeBudget};
use crate::url::DeviceUrl;

pub(crate) async fn push(
    url: &DeviceUrl,
    tls: Option<TlsTarget>,
    req: &TransmitRequest,
    budget: TimeBudget,
    step: Duration,
) -> Result<Delivered, PushError> {
    let deadline = if budget.callers {
        budget.deadline
    } else {
        budget.arrived + step * 2
    };
    let step = step.min(budget.left());
    let opts = Options {
        calling_ae: url.get("callingAet").unwrap_or("OUTPOST").to_owned(),
        called_ae: url.get("calledAet").unwrap_or("ANY-SCP").to_owned(),
        connect_timeout: step,
        acse_timeout: step,
        dimse_timeout: step,
        ..Options::default()
    };
    let peer = format!("{} at {}", opts.called_ae, url.addr);
    let work = async {
        if req.content_type == CONTENT_TYPE_DICOM {
            store(url, tls.as_ref(), req, &opts, &peer).await
        } else if req.content_type == CONTENT_TYPE_DICOM_JSON {
            find(url, tls.as_ref(), req, &opts, &peer).await
        } else {
            Err(PushError::DicomContentType(req.content_type.clone()))
        }
    };
    tokio::time::timeout_at(deadline, work).await.map_err(|_| {
        budget.log_late(&req.remote);
        PushError::NoAnswer {
            peer: peer.clone(),
            within: deadline - budget.arrived,
        }
    })?
}

fn peer_error(peer: &str) -> impl Fn(dicom_net::Error) -> PushError + '_ {
    move |source| PushError::Dicom {
        peer: peer.to_owned(),
        source,
    }
}

/// An association with the SCP at `url`, over TLS when `tls` is given.
async fn associate(
    url: &DeviceUrl,
    tls: Option<&TlsTarget>,
    opts: &Options,
    proposals: &[Proposal],
    peer: &str,
) -> Result<Association, PushError> {
    let Some(tls) = tls else {
        return Association::connect(&url.addr, opts, proposals)
            .await
            .map_err(peer_error(peer));
    };
    let timed_out = |what| PushError::Dicom {
        peer: peer.to_owned(),
        source: dicom_net::Error::Timeout {
            what,
            ms: opts.connect_timeout.as_millis(),
        },
    };
    let io = |e: std::io::Error| peer_error(peer)(e.into());
    let tcp = tokio::time::timeout(
        opts.connect_timeout,
        tokio::net::TcpStream::connect(&url.addr),
    )
    .await
    .map_err(|_| timed_out("TCP connection"))?
    .map_err(io)?;
    tcp.set_nodelay(true).map_err(io)?;
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = tokio::time::timeout(
        opts.connect_timeout,
        connector.connect(tls.server_name.clone(), tcp),
    )
    .await
    .map_err(|_| timed_out("TLS handshake"))?
    .map_err(|e| PushError::DeviceTls {
        addr: url.addr.clone(),
        problem: format!("handshake failed: {e}"),
    })?;
    Association::connect_over(stream, opts, proposals)
        .await
        .map_err(peer_error(peer))
}

async fn store(
    url: &DeviceUrl,
    tls: Option<&TlsTarget>,
    req: &TransmitRequest,
    opts: &Options,
    peer: &str,
) -> Result<Delivered, PushError> {
    let compact: String = req.body.split_ascii_whitespace().collect();
    let file = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(PushError::Base64)?;
    let meta = dicom_net::inspect(&file).map_err(PushError::DicomBody)?;
    let proposals =
        Proposal::for_storage([(meta.sop_class.as_str(), meta.transfer_syntax.as_str())]);
    let mut a = associate(url, tls, opts, &proposals, peer).await?;
    let r = a
        .store_bytes(&file)
        .await
        .map_err(|source| PushError::Dicom {
            peer: format!("{peer}: C-STORE"),
            source,
        })?;
    let _ = a.release().await;
    if !r.status.is_ok() {
        return Err(PushError::DicomStatus {
            peer: peer.to_owned(),
            operation: format!("C-STORE of {}", r.sop_instance),
            status: r.status,
            comment: r.error_comment,
        });
    }
    Ok((
        "application/json".to_owned(),
        dicom_net::store_json(&r).to_string(),
    ))
}

async fn find(
    url: &DeviceUrl,
    tls: Option<&TlsTarget>,
    req: &TransmitRequest,
    opts: &Options,
    peer: &str,
) -> Result<Delivered, PushError> {
    let json: serde_json::Value = serde_json::from_str(&req.body).map_err(PushError::Json)?;
    let query = dicom_net::from_json(&json).map_err(PushError::DicomBody)?;
    let model = FindModel::choose(url.get("model"), &query)?.sop_class();
    let mut a = associate(url, tls, opts, &[Proposal::find(model)], peer).await?;
    let c_find = |source| PushError::Dicom {
        peer: format!("{peer}: C-FIND"),
        source,
    };
    let (matches, end) = a
        .find(model, &query)
        .await
        .map_err(c_find)?
        .collect()
        .await
        .map_err(c_find)?;
    let _ = a.release().await;
    if !end.status.is_ok() {
        return Err(PushError::DicomStatus {
            peer: peer.to_owned(),
            operation: "C-FIND".to_owned(),
            status: end.status,
            comment: end.error_comment,
        });
    }
    Ok((
        CONTENT_TYPE_DICOM_JSON.to_owned(),
        dicom_net::matches_json(&matches).to_string(),
    ))
}
