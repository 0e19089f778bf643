//! [`PushError`]: why a push was not delivered, and whose fault that was.

use std::time::Duration;

/// Whose fault a failed push was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The caller's: a body or destination the agent cannot use. Sending it again will fail
    /// again.
    Caller,
    /// The device's (or the network's): refused, unreachable, no answer in time, a negative
    /// answer.
    Device,
    /// Time: the push's deadline passed before it could be sent; it was not delivered.
    Deadline,
}

/// Why a push was not delivered. The agent answers it with `statusCode` 400 and this text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// `remote` is not a URL.
    #[error("unsupported destination {0:?}: expected a URL such as mllp://host:port")]
    NotAUrl(String),
    /// No client for the scheme.
    #[error("unsupported destination scheme {0}://")]
    UnsupportedScheme(String),
    /// `remote` is a URL without a usable `host:port`.
    #[error("{0}")]
    Address(#[from] crate::url::UrlError),
    /// `?encoding=` names no known character set.
    #[error("{remote}: {source}")]
    Encoding {
        /// The destination.
        remote: String,
        /// Why.
        source: hl7v2::Error,
    },
    /// `returnAck` is neither `first` nor `application`.
    #[error("invalid returnAck: expected \"first\" or \"application\", got {0:?}")]
    ReturnAck(String),
    /// The body of an ASTM push is not ASTM records.
    #[error("invalid ASTM message: {0}")]
    AstmBody(#[source] astm::Error),
    /// The body of a C-STORE push is not base64.
    #[error("the body is not base64 ({0}): send the Part 10 file base64-encoded")]
    Base64(#[source] base64::DecodeError),
    /// The body of a C-FIND push is not JSON.
    #[error("the body is not JSON: {0}")]
    Json(#[source] serde_json::Error),
    /// The DICOM body cannot be used (not Part 10, not a DICOM JSON query).
    #[error("{0}")]
    DicomBody(#[source] dicom_net::Error),
    /// `?model=` is not a C-FIND model.
    #[error("{0}")]
    Model(#[from] dicom_net::UnknownModel),
    /// A `dicom://` push with another content type.
    #[error(
        "a dicom:// destination takes {dicom} (base64 Part 10, stored with C-STORE) or {query} (a query, C-FIND), not {0}",
        dicom = agent_protocol::CONTENT_TYPE_DICOM,
        query = agent_protocol::CONTENT_TYPE_DICOM_JSON
    )]
    DicomContentType(String),
    /// A ping body other than `PING` or `PING <count>`.
    #[error("invalid ping body {0:?}: expected PING or PING <count>")]
    PingBody(String),
    /// A ping destination that is not a host.
    #[error("invalid host {0:?}")]
    PingHost(String),

    /// The MLLP device could not be reached or did not answer in time (connection refused,
    /// closed, no ACK).
    #[error("{0}")]
    Mllp(#[source] mllp::Error),
    /// The TLS settings of an `mllps://` destination cannot be used (a CA or certificate file
    /// unreadable or empty, a host that is no server name).
    #[error("TLS to {addr}: {problem}")]
    DeviceTls {
        /// The destination.
        addr: String,
        /// What is wrong.
        problem: String,
    },
    /// No acknowledgement within the push's time.
    #[error("no acknowledgement for message {control_id} within {} ms", .within.as_millis())]
    NoAck {
        /// MSH-10 of the message.
        control_id: String,
        /// The push's time, from its arrival at the agent.
        within: Duration,
    },
    /// The analyzer could not be reached.
    #[error("cannot connect to {addr}: {source}")]
    AstmConnect {
        /// The analyzer.
        addr: String,
        /// Why.
        source: astm::Error,
    },
    /// The E1381 link failed (no ACK, refused frames, busy).
    #[error("{addr}: {source}")]
    AstmLink {
        /// The analyzer.
        addr: String,
        /// Why.
        source: astm::Error,
    },
    /// The DICOM peer refused or failed (association rejected, aborted, timed out).
    #[error("{peer}: {source}")]
    Dicom {
        /// `AE at host:port`.
        peer: String,
        /// Why.
        source: dicom_net::Error,
    },
    /// The DICOM peer answered with a failure status.
    #[error("{peer}: {operation} failed: {status}{}", .comment.as_ref().map(|c| format!(" ({c})")).unwrap_or_default())]
    DicomStatus {
        /// `AE at host:port`.
        peer: String,
        /// `C-STORE of <SOP instance>` or `C-FIND`.
        operation: String,
        /// The status.
        status: dicom_net::Status,
        /// The SCP's error comment.
        comment: Option<String>,
    },
    /// The host did not answer the system's `ping`.
    #[error("ping {host} failed: {output}")]
    PingFailed {
        /// The host.
        host: String,
        /// What `ping` printed.
        output: String,
    },
    /// `ping` did not finish in time.
    #[error("ping {0}: no answer in time")]
    PingTimeout(String),
    /// `ping` could not be run.
    #[error("{}", match .source.kind() {
        std::io::ErrorKind::NotFound => "ping is not installed on the agent's host".to_owned(),
        _ => format!("ping {host}: {source}"),
    })]
    PingRun {
        /// The host.
        host: String,
        /// Why.
        source: std::io::Error,
    },
    /// The destination did not answer within the push's time.
    #[error("{addr}: not delivered within {} ms", .within.as_millis())]
    Timeout {
        /// The destination.
        addr: String,
        /// The push's time.
        within: Duration,
    },
    /// The DICOM peer did not finish within the push's time.
    #[error("{peer}: no answer within {} ms", .within.as_millis())]
    NoAnswer {
        /// `AE at host:port`.
        peer: String,
        /// The push's time.
        within: Duration,
    },

    /// The deadline passed before the push could be sent (its caller had been answered
    /// "timeout"): it was not delivered.
    #[error("not delivered: no connection to {addr} within {} ms of its arrival; not sent", .within.as_millis())]
    NotSent {
        /// The destination.
        addr: String,
        /// The push's time.
        within: Duration,
    },
    /// The push's deadline had passed when it arrived.
    #[error("not delivered: the push arrived after its caller's deadline")]
    ArrivedLate,
}

impl PushError {
    /// The reason, for the agent's log: the same as `Display`, less what a device wrote back
    /// (acknowledgement and error texts, DICOM error comments), which may carry patient data.
    pub fn reason_for_log(&self) -> String {
        match self {
            PushError::Mllp(mllp::Error::Negative {
                code, control_id, ..
            }) => format!("message {control_id} not accepted ({code:?})"),
            PushError::DicomStatus {
                peer,
                operation,
                status,
                ..
            } => format!("{peer}: {operation} failed: {status}"),
            other => other.to_string(),
        }
    }

    /// Whose fault it was.
    pub fn fault(&self) -> Fault {
        match self {
            PushError::NotAUrl(_)
            | PushError::UnsupportedScheme(_)
            | PushError::Address(_)
            | PushError::Encoding { .. }
            | PushError::ReturnAck(_)
            | PushError::AstmBody(_)
            | PushError::Base64(_)
            | PushError::Json(_)
            | PushError::DicomBody(_)
            | PushError::Model(_)
            | PushError::DicomContentType(_)
            | PushError::PingBody(_)
            | PushError::PingHost(_)
            | PushError::DeviceTls { .. } => Fault::Caller,
            PushError::NotSent { .. } | PushError::ArrivedLate => Fault::Deadline,
            // A message with a framing byte or no control ID is the caller's too.
            PushError::Mllp(
                mllp::Error::FramingByteInContent { .. }
                | mllp::Error::MissingControlId
                | mllp::Error::Hl7(_),
            ) => Fault::Caller,
            _ => Fault::Device,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whose_fault() {
        assert_eq!(
            PushError::UnsupportedScheme("gopher".into()).fault(),
            Fault::Caller
        );
        assert_eq!(PushError::ArrivedLate.fault(), Fault::Deadline);
        let refused = mllp::Error::Connect {
            addr: "127.0.0.1:9".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(PushError::Mllp(refused).fault(), Fault::Device);
        assert_eq!(
            PushError::Mllp(mllp::Error::MissingControlId).fault(),
            Fault::Caller
        );
        assert_eq!(
            PushError::ReturnAck("last".into()).to_string(),
            "invalid returnAck: expected \"first\" or \"application\", got \"last\""
        );
    }

    #[test]
    fn the_logged_reason_keeps_the_cause_and_drops_what_the_device_wrote() {
        let refused = PushError::Mllp(mllp::Error::Connect {
            addr: "127.0.0.1:9".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        });
        assert_eq!(refused.reason_for_log(), refused.to_string());
        assert!(
            refused
                .reason_for_log()
                .contains("cannot connect to 127.0.0.1:9")
        );
    }
}
