//! The agent's recent log lines, for `$fetch-logs` (`agent:logs:request`), and its log files.
//!
//! [`LogLayer`] is a `tracing` layer that keeps the last lines at INFO and above in a
//! [`LogBuffer`]. Message bodies are never logged at INFO, so what the relay can fetch carries no
//! patient data. With `logger.main.logDir` set, [`LogFiles`] writes the lines to rotating files
//! as well, and the buffer answers from the newest file instead (lines from before a restart
//! included).

mod file;

pub use file::{CHANNEL_FILE, CHANNEL_TARGET, LogFiles, MAIN_FILE};

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use agent_protocol::LogMessage;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

/// Lines kept.
const KEEP: usize = 1000;

/// The most bytes read from the log files for one `$fetch-logs` (1000 lines of a few hundred
/// bytes fit several times over).
const MAX_FILE_READ: u64 = 2 * 1024 * 1024;

/// The last log lines, newest last; or, given a log file, the lines at its end.
#[derive(Debug, Clone, Default)]
pub struct LogBuffer {
    lines: Arc<Mutex<VecDeque<LogMessage>>>,
    file: Option<PathBuf>,
}

impl LogBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        LogBuffer::default()
    }

    /// A buffer whose [`LogBuffer::recent`] reads `file` (the main log file written by
    /// [`LogFiles`]) and the files rotated from it, falling back to the lines in memory when
    /// they cannot be read.
    pub fn with_file(file: PathBuf) -> Self {
        LogBuffer {
            file: Some(file),
            ..LogBuffer::default()
        }
    }

    fn push(&self, line: LogMessage) {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        if lines.len() == KEEP {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The newest `limit` lines, newest first (Medplum's order): from the log files when there
    /// are some (reading at most 2 MiB of them), else from memory.
    pub fn recent(&self, limit: usize) -> Vec<LogMessage> {
        if let Some(path) = &self.file {
            match file::read_recent(path, limit, MAX_FILE_READ) {
                Ok(lines) => return lines,
                Err(e) => tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "cannot read the log file; answering from the lines in memory"
                ),
            }
        }
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

/// `event` as Medplum's agent logs a line: `{level, msg, timestamp, ...fields}`.
fn log_message(event: &tracing::Event<'_>) -> LogMessage {
    let mut fields = Fields::default();
    event.record(&mut fields);
    LogMessage {
        level: event.metadata().level().to_string(),
        msg: fields.msg,
        timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        extra: fields.extra,
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LogLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > tracing::Level::INFO {
            return;
        }
        self.buffer.push(log_message(event));
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
