//! A channel's forwarder: sends the channel's queued messages to the relay one at a time,
//! oldest first, and does not move past a message until the relay has answered it for good.
//!
//! Every wait is bounded and every retry backs off with jitter (0.5 s doubling to 30 s), so a
//! forwarder never spins whatever fails:
//!
//! - no live session, no token, no answer within
//!   [`AgentConfig::inbound_answer_wait`](crate::AgentConfig::inbound_answer_wait): sent again
//!   later with the same callback (the relay answers a repeated callback from its store);
//! - a temporary answer (`statusCode` 429 or 500 and above: the relay could not take
//!   responsibility for it): kept and sent again later, same callback;
//! - `agent:error` "Invalid access token" (an expired token): a new token, sent again; counted
//!   as an error only when it comes again right after (the new token refused too);
//! - any other `agent:error` (Outpost's relay or Medplum's server refused it: "Channel not
//!   found", a Bot error — Medplum sends these without a callback, see [`crate::link`]): sent
//!   again with backoff; after
//!   [`AgentConfig::inbound_max_attempts`](crate::AgentConfig::inbound_max_attempts) errors it
//!   is moved to the dead letters with the last error, logged (so `$fetch-logs` shows it), the
//!   device still waiting is answered with the error, and the channel moves on;
//! - a final answer (2xx, 4xx): handed to the device connection that waits for
//!   it, then recorded in the queue. When the record cannot be written (disk full), the answer
//!   is kept in memory and only the local write is retried (0.5 s doubling to 5 s) — the relay
//!   is not asked again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_protocol::{AgentMessage, CONTENT_TYPE_TEXT, ErrorKind, TransmitRequest};
use tokio::sync::watch;

use crate::RelayClient;
use crate::backoff::Backoff;
use crate::event::{Event, Events};
use crate::inbound::inbox::{Answer, Inbox};
use crate::inbound::queue::Queued;
use crate::link::RelayLink;
use crate::stats::Kind;

/// First and longest retry delay.
const MIN_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Longest pause between attempts to record an answer locally (the disk, not the relay).
const MAX_RECORD_RETRY: Duration = Duration::from_secs(5);
/// How long an idle forwarder sleeps before looking at the queue again, in case a wake-up was
/// missed.
const IDLE_LOOK: Duration = Duration::from_secs(5);

/// What a forwarder needs.
#[derive(Debug, Clone)]
pub(crate) struct Forwarder {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) relay: RelayLink,
    pub(crate) client: RelayClient,
    pub(crate) events: Events,
    pub(crate) stop: watch::Receiver<bool>,
    /// Limit on one attempt to hand a queued message to the relay.
    pub(crate) answer_wait: Duration,
    /// Errors before a message is dead-lettered.
    pub(crate) max_attempts: u32,
}

/// What the relay made of one attempt.
enum Outcome {
    /// Final (2xx, 4xx): record it and move on.
    Final { answer: Answer },
    /// Send it again after a pause.
    Retry(String),
    /// Refused (`agent:error`): counts against the message's attempts.
    Refused(String),
    /// Can never be delivered as it is (a DICOM instance whose upload the relay refuses for
    /// good): a dead letter at once, with the reason.
    Undeliverable(String),
}

impl Forwarder {
    /// Runs until the agent stops.
    pub(crate) async fn run(self, channel: String) {
        let waker = self.inbox.waker(&channel);
        let mut retry = Backoff::new(MIN_RETRY, MAX_RETRY);
        let mut stop = self.stop.clone();
        // The message whose last attempt was refused for its token, if any.
        let mut token_refused: Option<i64> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let next = match self.inbox.queue().next(&channel) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(channel, error = %e, "queue read failed");
                    self.pause(&mut retry).await;
                    continue;
                }
            };
            let Some(m) = next else {
                tokio::select! {
                    () = waker.notified() => {}
                    () = tokio::time::sleep(IDLE_LOOK) => {}
                    _ = stop.changed() => return,
                }
                continue;
            };
            if !self.relay.wait_live().await {
                return;
            }
            self.events.rtt.started(Kind::Channel, &channel);
            let sent = Instant::now();
            let outcome = self.attempt(&channel, &m).await;
            // A round trip is an answer from the relay (as Medplum's `channelStats`): a final
            // one or a refusal, not a message that did not get there.
            let answered = matches!(outcome, Outcome::Final { .. } | Outcome::Refused(_));
            self.events
                .rtt
                .finished(Kind::Channel, &channel, answered.then(|| sent.elapsed()));
            // An expired token is not the message's fault: the first refusal in a row costs
            // nothing, the next ones (a new token refused too) count.
            let token_issue = matches!(&outcome, Outcome::Refused(w) if w == TOKEN_REFUSED);
            let forgiven = token_issue && token_refused != Some(m.id);
            token_refused = token_issue.then_some(m.id);
            match outcome {
                Outcome::Refused(_) if forgiven => {
                    tracing::info!(
                        channel,
                        id = m.id,
                        "the relay refused the token; sending again with a new one"
                    );
                    self.pause(&mut retry).await;
                }
                Outcome::Undeliverable(why) => match self.bury(&channel, &m, why).await {
                    None => return,
                    _ => retry.reset(),
                },
                Outcome::Refused(why) => match self.refused(&channel, &m, &why).await {
                    None => return,
                    // The next message is another one: no pause for this one's errors.
                    Some(true) => retry.reset(),
                    Some(false) => self.pause(&mut retry).await,
                },
                Outcome::Retry(why) => {
                    tracing::info!(
                        channel,
                        id = m.id,
                        attempts = m.attempts + 1,
                        why,
                        "message not taken by the relay yet; will retry"
                    );
                    self.pause(&mut retry).await;
                }
                Outcome::Final { answer } => {
                    retry.reset();
                    let status = answer.status;
                    // The device connection that waits gets it first; the queue row after.
                    self.inbox.deliver(m.id, answer.clone());
                    if !self.record(&channel, &m, &answer).await {
                        return;
                    }
                    self.events.emit(Event::InboundAnswered {
                        channel: channel.clone(),
                        id: m.id,
                        status,
                    });
                }
            }
        }
    }

    /// Sends `m` once and classifies the relay's answer.
    async fn attempt(&self, channel: &str, m: &Queued) -> Outcome {
        // Counting attempts is for inspection only; a full disk must not stop delivery.
        let _ = self.inbox.queue().attempted(m.id);
        // A DICOM instance still on disk is uploaded as a Binary first (see `dicom`).
        let m = &match super::dicom::ready(&self.client, self.inbox.queue(), m).await {
            Ok(m) => m,
            Err(super::dicom::NotReady::Retry(why)) => return Outcome::Retry(why),
            Err(super::dicom::NotReady::Lost(why)) => return Outcome::Undeliverable(why),
        };
        let token = match self.client.token().await {
            Ok(t) => t,
            Err(e) => return Outcome::Retry(format!("no token: {e}")),
        };
        let request = AgentMessage::TransmitRequest(TransmitRequest {
            access_token: Some(token),
            channel: Some(channel.to_owned()),
            remote: m.remote.clone(),
            content_type: m.content_type.clone(),
            body: m.body.clone(),
            callback: Some(m.callback.clone()),
            ..TransmitRequest::default()
        });
        let deadline = Instant::now() + self.answer_wait;
        match self.relay.request(request, deadline).await {
            Ok(AgentMessage::TransmitResponse(r)) if r.is_retryable() => Outcome::Retry(format!(
                "the relay answered {}: {}",
                r.status_code.unwrap_or_default(),
                first_line(&r.body)
            )),
            Ok(AgentMessage::TransmitResponse(r)) => Outcome::Final {
                answer: Answer {
                    status: r.status_code.unwrap_or(200),
                    content_type: r.content_type,
                    body: r.body,
                },
            },
            Ok(AgentMessage::Error(e)) if e.kind() == ErrorKind::InvalidAccessToken => {
                self.client.invalidate();
                Outcome::Refused(TOKEN_REFUSED.to_owned())
            }
            // Refused (unknown channel, a Bot error): counted; dead-lettered after enough.
            Ok(AgentMessage::Error(e)) => Outcome::Refused(first_line(&e.body)),
            Ok(other) => Outcome::Retry(format!("unexpected answer {}", other.kind())),
            Err(e) => Outcome::Retry(e.to_string()),
        }
    }

    /// Counts an error for `m`; at the limit, moves it to the dead letters, answers the device
    /// that still waits, and lets the channel move on. Whether it was dead-lettered; `None` if
    /// the agent stops first.
    async fn refused(&self, channel: &str, m: &Queued, why: &str) -> Option<bool> {
        let failures = match self.inbox.queue().fail(m.id, why) {
            Ok(n) => n,
            Err(e) => {
                // Not counted: sent again, like any retry; a full disk must not lose it.
                tracing::error!(channel, id = m.id, error = %e, "cannot count an error");
                return Some(false);
            }
        };
        if failures < self.max_attempts {
            tracing::warn!(
                channel,
                id = m.id,
                failures,
                max = self.max_attempts,
                error = why,
                "the relay refused the message; will send it again"
            );
            return Some(false);
        }
        self.bury(channel, m, format!("refused {failures} times; last: {why}"))
            .await
    }

    /// Moves `m` to the dead letters with `reason`, answers a device still waiting, and lets
    /// the channel move on; `None` if the agent stops first.
    async fn bury(&self, channel: &str, m: &Queued, reason: String) -> Option<bool> {
        let mut backoff = Backoff::new(MIN_RETRY, MAX_RECORD_RETRY);
        loop {
            match self.inbox.queue().dead_letter(m.id, &reason) {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(channel, id = m.id, error = %e, "cannot dead-letter a message; retrying the write");
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        _ = stop.changed() => return None,
                    }
                }
            }
        }
        tracing::error!(
            channel,
            id = m.id,
            callback = m.callback,
            reason,
            "message moved to the dead letters; the channel moves on (send it again: outpost fleet dead-letters AGENT --retry {})",
            m.id
        );
        self.inbox.deliver(
            m.id,
            Answer {
                status: 400,
                content_type: CONTENT_TYPE_TEXT.to_owned(),
                body: format!("not delivered: {reason}"),
            },
        );
        self.events.emit(Event::InboundDeadLettered {
            channel: channel.to_owned(),
            id: m.id,
            reason,
        });
        Some(true)
    }

    /// Records the relay's final answer, retrying the local write (never the relay) until it
    /// succeeds; `false` if the agent stops first (the message is then sent again at the next
    /// start, and the relay answers it from its store).
    async fn record(&self, channel: &str, m: &Queued, answer: &Answer) -> bool {
        let mut retry = Backoff::new(MIN_RETRY, MAX_RECORD_RETRY);
        loop {
            match self
                .inbox
                .queue()
                .finish(m.id, false, answer.status, &answer.body)
            {
                Ok(()) => {
                    if retry.failures() > 0 {
                        tracing::info!(
                            channel,
                            id = m.id,
                            attempts = retry.failures() + 1,
                            "the relay's answer is recorded"
                        );
                    }
                    return true;
                }
                Err(e) => {
                    if retry.failures() == 0 {
                        tracing::error!(channel, id = m.id, error = %e,
                            "cannot record the relay's answer; keeping it and retrying the write, not the relay");
                    } else {
                        tracing::debug!(channel, id = m.id, error = %e, "record still failing");
                    }
                    let delay = retry.next_delay();
                    let mut stop = self.stop.clone();
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return false,
                    }
                }
            }
        }
    }

    async fn pause(&self, retry: &mut Backoff) {
        let delay = retry.next_delay();
        let mut stop = self.stop.clone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => {}
        }
    }
}

/// What an `agent:error` "Invalid access token" is recorded as.
const TOKEN_REFUSED: &str = "Invalid access token";

pub(crate) fn first_line(s: &str) -> String {
    s.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}
