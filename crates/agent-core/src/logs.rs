//! The agent's recent log lines, for `$fetch-logs` (`agent:logs:request`).
//!
//! [`LogLayer`] is a `tracing` layer that keeps the last lines at INFO and above in a
//! [`LogBuffer`]. Message bodies are never logged at INFO, so what the relay can fetch carries no
//! patient data.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use agent_protocol::LogMessage;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Lines kept.
const KEEP: usize = 1000;

/// The last log lines, newest last.
#[derive(Debug, Clone, Default)]
pub struct LogBuffer {
    lines: Arc<Mutex<VecDeque<LogMessage>>>,
}

impl LogBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        LogBuffer::default()
    }

    fn push(&self, line: LogMessage) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The newest `limit` lines, newest first (Medplum's order).
    pub fn recent(&self, limit: usize) -> Vec<LogMessage> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines.iter().rev().take(limit).cloned().collect()
    }
}

/// A `tracing` layer feeding a [`LogBuffer`].
#[derive(Debug, Clone)]
pub struct LogLayer {
    buffer: LogBuffer,
}

impl LogLayer {
    /// A layer writing into `buffer`.
    pub fn new(buffer: LogBuffer) -> Self {
        LogLayer { buffer }
    }
}

#[derive(Default)]
struct Fields {
    msg: String,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.put(field, text);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.msg = value;
        } else {
            self.extra
                .insert(field.name().to_owned(), serde_json::Value::String(value));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > tracing::Level::INFO {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.buffer.push(LogMessage {
            level: level.to_string(),
            msg: fields.msg,
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            extra: fields.extra,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::prelude::*;

    #[test]
    fn keeps_info_and_above_newest_first() {
        let buf = LogBuffer::new();
        let subscriber = tracing_subscriber::registry().with(LogLayer::new(buf.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(channel = "adt", "first");
            tracing::debug!("hidden");
            tracing::warn!("second");
        });
        let lines = buf.recent(10);
        assert_eq!(lines.len(), 2);
        assert_eq!(
            (lines[0].level.as_str(), lines[0].msg.as_str()),
            ("WARN", "second")
        );
        assert_eq!(lines[1].extra["channel"], "adt");
        assert_eq!(buf.recent(1).len(), 1);
    }
}
