//! `mllp://HOST:PORT[?encoding=LABEL&enhanced=true|aa&appLevelAck=AL|ER|NE|SU&assignSeqNo=true&messagesPerMin=N]`:
//! an MLLP listener for HL7 v2 devices (`0.0.0.0` for every interface). Each message is
//! committed to the durable queue first; then, by the channel's ACK mode (Medplum's `enhanced`):
//!
//! - `enhanced=aa`: an AA at once; the relay's answer is only recorded;
//! - `enhanced=true`: a CA at once, and the relay's answer later when it comes (the connection
//!   goes on reading meanwhile: the device's next message is committed and CA'd at once);
//! - otherwise (original mode): the relay's answer, or — when it has not come within
//!   [`AgentConfig::inbound_reply_wait`](crate::AgentConfig::inbound_reply_wait), or the relay
//!   said it cannot take the message yet — an AA saying the message is queued at the agent (it
//!   has it durably and will deliver it).
//!
//! A message that cannot be committed (disk full) is answered AE: the device keeps it.
//!
//! The other options are Medplum's (packages/agent/src/hl7.ts and packages/hl7/src/connection.ts):
//!
//! - `appLevelAck` (MSH-16's values): in `enhanced=true` mode, which of the relay's
//!   application answers the device gets after its CA: `AL` all (the default), `NE` none, `ER`
//!   only errors (not AA), `SU` only AA. Original mode always sends the answer; `enhanced=aa`
//!   never does. An unknown value is logged and `AL` used.
//! - `assignSeqNo=true`: MSH-13 of each message the channel forwards is set to a counter kept by
//!   the channel, 0 first (the device's ACK is built from the message as it came).
//! - `messagesPerMin=N`: each connection's messages are taken at most N a minute, evenly
//!   spaced; the others wait their turn (delayed, never dropped), as Medplum's connection
//!   queue does. A value that is not a positive integer is logged and ignored.
//!
//! `mllps://HOST:PORT?cert=FILE&key=FILE[&ca=FILE]`: the same over TLS 1.2/1.3, the agent
//! presenting `cert`; with `ca`, devices must present a client certificate from those CAs.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agent_protocol::CONTENT_TYPE_HL7_V2;
use hl7v2::{AckCode, Charset};
use mllp::{Request, Server, ServerOptions, ack_options};
use tokio::time::Instant;

use crate::ChannelProblem;
use crate::inbound::forward::first_line;
use crate::inbound::inbox::{Answer, Inbox};
use crate::inbound::{ChannelContext, Listener};
use crate::url::DeviceUrl;

/// An MLLP channel serves at most 32 device connections with frames of at most 8 MB: at most
/// 256 MB buffered per channel, whatever the senders do. A frame must be complete within 60 s.
const MAX_CONNECTIONS: usize = 32;
const MAX_FRAME: usize = 8 << 20;

/// How a channel acknowledges (Medplum's `enhanced` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckPolicy {
    /// The relay's answer (or "queued at the agent" after the reply wait).
    Original,
    /// CA at once, the relay's answer later.
    Enhanced,
    /// AA at once.
    AcceptAtOnce,
}

impl AckPolicy {
    fn of(url: &DeviceUrl) -> AckPolicy {
        match url.get("enhanced") {
            Some("aa") => AckPolicy::AcceptAtOnce,
            Some("true") => AckPolicy::Enhanced,
            _ => AckPolicy::Original,
        }
    }
}

/// Which application answers an `enhanced=true` channel sends on (Medplum's `appLevelAck`,
/// the values of MSH-16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AppLevelAck {
    /// Always (the default).
    Al,
    /// Errors only: not AA.
    Er,
    /// Never.
    Ne,
    /// Successes only: AA.
    Su,
}

impl AppLevelAck {
    fn of(url: &DeviceUrl, channel: &str) -> AppLevelAck {
        match url
            .get("appLevelAck")
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("AL") => AppLevelAck::Al,
            Some("ER") => AppLevelAck::Er,
            Some("NE") => AppLevelAck::Ne,
            Some("SU") => AppLevelAck::Su,
            Some(other) => {
                tracing::warn!(
                    channel,
                    value = other,
                    "invalid appLevelAck; expected AL, ER, NE or SU; using AL"
                );
                AppLevelAck::Al
            }
        }
    }

    /// Whether an application answer with MSA-1 `code` goes to the device under `policy`
    /// (Medplum's `shouldSendAppLevelAck`). Codes other than AA, AE and AR always go.
    fn sends(self, policy: AckPolicy, code: AckCode) -> bool {
        if !matches!(code, AckCode::AA | AckCode::AE | AckCode::AR) {
            return true;
        }
        match policy {
            AckPolicy::Original => true,
            AckPolicy::AcceptAtOnce => false,
            AckPolicy::Enhanced => match self {
                AppLevelAck::Al => true,
                AppLevelAck::Ne => false,
                AppLevelAck::Er => code != AckCode::AA,
                AppLevelAck::Su => code == AckCode::AA,
            },
        }
    }
}

/// `messagesPerMin=N` as a quota: one message every minute / N per connection, no burst.
fn throttle(url: &DeviceUrl, channel: &str) -> Option<Throttle> {
    let raw = url.get("messagesPerMin")?;
    let Some(n) = raw.parse::<u32>().ok().and_then(NonZeroU32::new) else {
        tracing::warn!(
            channel,
            value = raw,
            "invalid messagesPerMin; must be a positive integer; the channel is not throttled"
        );
        return None;
    };
    let quota = governor::Quota::per_minute(n).allow_burst(NonZeroU32::MIN);
    Some(governor::RateLimiter::keyed(quota))
}

/// Per connection (keyed by the device's address).
type Throttle = governor::DefaultKeyedRateLimiter<std::net::SocketAddr>;

/// Sets MSH-13 (sequence number) of an HL7 message given as text.
fn set_sequence_number(text: &str, seq: u64) -> String {
    let end = text.find(['\r', '\n']).unwrap_or(text.len());
    let (msh, rest) = text.split_at(end);
    let Some(sep) = msh.chars().nth(3).filter(|_| msh.starts_with("MSH")) else {
        return text.to_owned();
    };
    // MSH-1 is the separator itself: field n is at index n - 1 of the split.
    let mut fields: Vec<String> = msh.split(sep).map(str::to_owned).collect();
    if fields.len() < 13 {
        fields.resize(13, String::new());
    }
    fields[12] = seq.to_string();
    let mut out = fields.join(&sep.to_string());
    out.push_str(rest);
    out
}

/// Starts the listener.
pub(crate) async fn start(
    ctx: &ChannelContext,
    name: &str,
    url: &DeviceUrl,
) -> Result<Listener, ChannelProblem> {
    let charset = super::charset(url, Charset::Utf8)?;
    let channel = Arc::new(Channel {
        inbox: ctx.inbox.clone(),
        name: name.to_owned(),
        charset,
        policy: AckPolicy::of(url),
        app_level_ack: AppLevelAck::of(url, name),
        sequence: (url
            .get("assignSeqNo")
            .map(str::to_ascii_lowercase)
            .as_deref()
            == Some("true"))
        .then(|| AtomicU64::new(0)),
        throttle: throttle(url, name),
        reply_wait: ctx.config.inbound_reply_wait,
    });
    let opts = ServerOptions {
        max_frame: MAX_FRAME,
        max_connections: MAX_CONNECTIONS,
        budget: Some(ctx.budget.clone()),
        ..ServerOptions::default()
    };
    let handler = move |req: Request| {
        let channel = channel.clone();
        async move { channel.on_message(req).await }
    };
    let listen = |source| ChannelProblem::Listen {
        addr: url.addr.clone(),
        source,
    };
    if let Some(tls) = super::tls_config(url)? {
        let listener = tokio::net::TcpListener::bind(&url.addr)
            .await
            .map_err(listen)?;
        return Server::serve_tls(listener, opts, tls, handler)
            .map(Listener::Mllp)
            .map_err(listen);
    }
    Server::bind(&url.addr, opts, handler)
        .await
        .map(Listener::Mllp)
        .map_err(listen)
}

struct Channel {
    inbox: Arc<Inbox>,
    name: String,
    charset: Charset,
    policy: AckPolicy,
    app_level_ack: AppLevelAck,
    /// The next MSH-13 when the channel assigns sequence numbers.
    sequence: Option<AtomicU64>,
    throttle: Option<Throttle>,
    reply_wait: Duration,
}

impl Channel {
    /// One message from a device: commit, maybe acknowledge at once, relay, answer.
    async fn on_message(self: Arc<Self>, req: Request) {
        if let Some(throttle) = &self.throttle {
            // This connection's next message is read only when this one is taken: the rest
            // wait, in order, in the socket.
            throttle.until_key_ready(&req.peer()).await;
            throttle.retain_recent();
        }
        let Ok(msg) = req.message() else { return };
        let mut text = self.charset.decode(req.bytes()).into_owned();
        if let Some(sequence) = &self.sequence {
            text = set_sequence_number(&text, sequence.fetch_add(1, Ordering::Relaxed));
        }
        let remote = req.peer().to_string();
        let receipt = match self
            .inbox
            .commit(&self.name, &remote, CONTENT_TYPE_HL7_V2, &text)
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(channel = self.name, error = %e, "cannot queue a device message");
                let text = format!("agent could not store the message: {e}");
                let ack = hl7v2::build_ack(&msg, AckCode::AE, &ack_options(Some(text)));
                let _ = req.reply(&ack).await;
                return;
            }
        };
        match self.policy {
            AckPolicy::AcceptAtOnce => {
                self.inbox.forget(receipt);
                let ack = hl7v2::build_ack(&msg, AckCode::AA, &ack_options(None));
                let _ = req.reply(&ack).await;
            }
            AckPolicy::Enhanced => {
                let ca = hl7v2::build_ack(&msg, AckCode::CA, &ack_options(None));
                let _ = req.reply(&ca).await;
                // The relay's answer follows when it comes; the connection reads on.
                let deadline = Instant::now() + self.reply_wait;
                tokio::spawn(async move {
                    if let Some(a) = self.inbox.answer_by(receipt, deadline).await {
                        self.reply(&req, Some(a)).await;
                    }
                });
            }
            AckPolicy::Original => {
                let deadline = Instant::now() + self.reply_wait;
                let answer = self.inbox.answer_by(receipt, deadline).await;
                self.reply(&req, answer).await;
            }
        }
    }

    /// The relay's answer as the device gets it: an HL7 answer as it is, an error as AE, no
    /// answer yet as AA "queued at the agent for delivery".
    async fn reply(&self, req: &Request, answer: Option<Answer>) {
        let Ok(msg) = req.message() else { return };
        let reply = match answer {
            Some(a) if a.status < 400 && a.body.starts_with("MSH") => {
                self.charset.encode(&a.body).into_owned()
            }
            Some(a) => hl7v2::build_ack(&msg, AckCode::AE, &ack_options(Some(first_line(&a.body)))),
            None => hl7v2::build_ack(
                &msg,
                AckCode::AA,
                &ack_options(Some("queued at the agent for delivery".into())),
            ),
        };
        let code = hl7v2::Message::parse(&reply)
            .ok()
            .and_then(|m| hl7v2::Acknowledgment::read(&m).map(|a| a.code()));
        if let Some(code) = code
            && !self.app_level_ack.sends(self.policy, code)
        {
            tracing::debug!(
                target: crate::CHANNEL_TARGET,
                channel = self.name,
                code = code.as_str(),
                mode = ?self.app_level_ack,
                "application acknowledgement not sent (appLevelAck)"
            );
            return;
        }
        if let Err(e) = req.reply(&reply).await {
            tracing::warn!(channel = self.name, error = %e, "could not answer the device");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Medplum's `shouldSendAppLevelAck` table (packages/agent/src/hl7.ts).
    #[test]
    fn app_level_ack_follows_medplum() {
        use AckCode::{AA, AE, AR, CA};
        use AckPolicy::{AcceptAtOnce, Enhanced, Original};
        use AppLevelAck::{Al, Er, Ne, Su};
        for mode in [Al, Er, Ne, Su] {
            for code in [AA, AE, AR] {
                assert!(mode.sends(Original, code), "original mode always answers");
                assert!(!mode.sends(AcceptAtOnce, code), "aa mode never does");
            }
            assert!(mode.sends(Enhanced, CA), "not an application code");
        }
        let sends = |m: AppLevelAck| [AA, AE, AR].map(|c| m.sends(Enhanced, c));
        assert_eq!(sends(Al), [true, true, true]);
        assert_eq!(sends(Ne), [false, false, false]);
        assert_eq!(sends(Er), [false, true, true]);
        assert_eq!(sends(Su), [true, false, false]);
        let url = |q: &str| DeviceUrl::parse(&format!("mllp://0.0.0.0:1?{q}")).unwrap();
        assert_eq!(AppLevelAck::of(&url("appLevelAck=er"), "c"), Er);
        assert_eq!(AppLevelAck::of(&url("appLevelAck=XX"), "c"), Al);
        assert_eq!(AppLevelAck::of(&url("x=1"), "c"), Al);
    }

    #[test]
    fn msh_13_is_set_whatever_the_header_holds() {
        assert_eq!(
            set_sequence_number("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X1|P|2.5\rPID|1", 7),
            "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X1|P|2.5|7\rPID|1"
        );
        assert_eq!(
            set_sequence_number("MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X1|P|2.5|99|x|AL\n", 0),
            "MSH|^~\\&|A|B|C|D|20240101||ADT^A01|X1|P|2.5|0|x|AL\n"
        );
        assert_eq!(set_sequence_number("PID|1", 3), "PID|1");
    }

    #[test]
    fn messages_per_min_must_be_a_positive_integer() {
        let url = |q: &str| DeviceUrl::parse(&format!("mllp://0.0.0.0:1?{q}")).unwrap();
        assert!(throttle(&url("messagesPerMin=60"), "c").is_some());
        assert!(throttle(&url("messagesPerMin=0"), "c").is_none());
        assert!(throttle(&url("messagesPerMin=ten"), "c").is_none());
        assert!(throttle(&url("encoding=utf-8"), "c").is_none());
    }
}
