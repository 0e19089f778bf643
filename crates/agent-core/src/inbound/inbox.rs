//! [`Inbox`]: where device messages enter the agent. A channel commits each message to the
//! durable queue before its device hears anything, then may wait (within a deadline) for the
//! relay's answer, which the channel's forwarder hands over when it comes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::Error;
use crate::event::{Event, Events};
use crate::inbound::queue::Queue;

/// The relay's final answer to a device message.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The relay's status code.
    pub(crate) status: u16,
    /// Content type of `body`.
    pub(crate) content_type: String,
    /// The answer (the application's reply, or the error text).
    pub(crate) body: String,
}

/// A committed message, and the way to its answer.
#[derive(Debug)]
pub(crate) struct Receipt {
    /// Queue sequence number.
    pub(crate) id: i64,
    answer: oneshot::Receiver<Answer>,
}

/// The queue and who waits on it.
#[derive(Debug)]
pub(crate) struct Inbox {
    queue: Queue,
    agent_id: String,
    events: Events,
    /// Device connections waiting for the relay's answer, by queue id.
    waiters: Mutex<HashMap<i64, oneshot::Sender<Answer>>>,
    /// Each channel's forwarder sleeps on its own waker.
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inbox {
    pub(crate) fn new(queue: Queue, agent_id: &str, events: Events) -> Inbox {
        Inbox {
            queue,
            agent_id: agent_id.to_owned(),
            events,
            waiters: Mutex::default(),
            wakers: Mutex::default(),
        }
    }

    /// The durable queue.
    pub(crate) fn queue(&self) -> &Queue {
        &self.queue
    }

    /// Commits a device message and wakes its channel's forwarder. When this returns `Ok`, the
    /// message survives a crash and the device may be told so.
    pub(crate) fn commit(
        &self,
        channel: &str,
        remote: &str,
        content_type: &str,
        body: &str,
    ) -> Result<Receipt, Error> {
        let queued = self
            .queue
            .push(&self.agent_id, channel, remote, content_type, body)?;
        self.events.emit(Event::InboundQueued {
            channel: channel.to_owned(),
            id: queued.id,
        });
        let (tx, answer) = oneshot::channel();
        lock(&self.waiters).insert(queued.id, tx);
        self.waker(channel).notify_one();
        Ok(Receipt {
            id: queued.id,
            answer,
        })
    }

    /// The relay's answer to a committed message, or `None` if it has not come by `deadline`
    /// (the message stays queued and is delivered later all the same).
    pub(crate) async fn answer_by(&self, receipt: Receipt, deadline: Instant) -> Option<Answer> {
        let got = tokio::time::timeout_at(deadline, receipt.answer).await;
        lock(&self.waiters).remove(&receipt.id);
        got.ok().and_then(Result::ok)
    }

    /// Nobody will wait for this message's answer (it is only recorded).
    pub(crate) fn forget(&self, receipt: Receipt) {
        lock(&self.waiters).remove(&receipt.id);
    }

    /// Hands the relay's answer to whoever waits for message `id`.
    pub(crate) fn deliver(&self, id: i64, answer: Answer) {
        if let Some(tx) = lock(&self.waiters).remove(&id) {
            let _ = tx.send(answer);
        }
    }

    /// What wakes `channel`'s forwarder.
    pub(crate) fn waker(&self, channel: &str) -> Arc<Notify> {
        lock(&self.wakers)
            .entry(channel.to_owned())
            .or_default()
            .clone()
    }
}
