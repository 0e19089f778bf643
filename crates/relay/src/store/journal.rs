//! What the console searches: the push log (every `$push`, bounded by count and age) and the
//! keys of stored messages (HL7 control id, message type, patient id), each in an indexed
//! column so a search reads an index, not the table.

use super::{Registry, StoreError};

/// The keys a message is searched by, read from an HL7 v2 message (MSH-10, MSH-9, PID-3's
/// first ID); all `None` for anything else.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageKeys {
    /// MSH-10, the message control id.
    pub control_id: Option<String>,
    /// MSH-9.1, the message code (`ADT`).
    pub message_code: Option<String>,
    /// MSH-9.1^MSH-9.2 (`ADT^A01`).
    pub message_type: Option<String>,
    /// PID-3.1 of the first repetition, the patient's first identifier.
    pub patient_id: Option<String>,
}

/// Longest key kept (longer values are cut; a key is for finding, not for reading). A
/// search value is cut the same way, so a longer key is still found by its whole value.
pub(crate) const MAX_KEY: usize = 128;

impl MessageKeys {
    /// The keys of `body` when it is HL7 v2 (starts with `MSH`), else none.
    pub fn of(body: &str) -> MessageKeys {
        if !body.starts_with("MSH") {
            return MessageKeys::default();
        }
        let Ok(msg) = hl7v2::Message::parse(body.as_bytes()) else {
            return MessageKeys::default();
        };
        let text = |s: std::borrow::Cow<'_, str>| {
            let s = s.trim();
            (!s.is_empty()).then(|| s.chars().take(MAX_KEY).collect::<String>())
        };
        let value = |path: &str| msg.get(path).ok().and_then(|v| text(v.text()));
        let code = value("MSH-9-1");
        let event = value("MSH-9-2");
        MessageKeys {
            control_id: value("MSH-10"),
            message_type: code.as_ref().map(|c| match &event {
                Some(e) => format!("{c}^{e}"),
                None => c.clone(),
            }),
            message_code: code,
            patient_id: value("PID-3-1"),
        }
    }
}

/// One `$push`, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PushRecord {
    /// When it arrived, ms since the epoch.
    pub at_ms: i64,
    /// The caller's ClientApplication.
    pub caller: String,
    /// The Agent it went through.
    pub agent_id: String,
    /// `destination` as given (`Device/ID`, a host).
    pub destination: String,
    /// The pushed content type.
    pub content_type: String,
    /// How it ended (the metrics' outcome: `answered`, `sent`, `device_error`, `timeout`, ...).
    pub outcome: String,
    /// The HTTP status answered.
    pub status: u16,
    /// From arrival to answer, µs.
    pub latency_us: i64,
    /// The pushed message's keys.
    pub keys: MessageKeys,
    /// The pushed message, at most [`MAX_LOGGED_BODY`] bytes.
    pub request: String,
    /// The pushed message's whole length in bytes (more than `request`'s when it was cut).
    pub request_bytes: i64,
    /// The answer the caller got, at most [`MAX_LOGGED_BODY`] bytes.
    pub answer: String,
}

/// Longest request or answer body the log keeps.
pub(crate) const MAX_LOGGED_BODY: usize = 64 * 1024;

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn truncated(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// A logged push and its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRow {
    /// Increasing in arrival order.
    pub id: i64,
    /// The push.
    pub push: PushRecord,
}

/// Which logged pushes, or stored inbound messages, to list: newest first, each filter an
/// indexed equality.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalQuery {
    /// Only this Agent's.
    pub agent_id: Option<String>,
    /// Only this channel's (inbound) or destination's (pushes).
    pub place: Option<String>,
    /// Only with this outcome (pushes).
    pub outcome: Option<String>,
    /// Only with this MSH-10.
    pub control_id: Option<String>,
    /// Only of this message code (`ADT`) or type (`ADT^A01`).
    pub message_type: Option<String>,
    /// Only for this patient identifier (PID-3.1).
    pub patient_id: Option<String>,
    /// Only from this device address (inbound: the `remote` the agent reported).
    pub device: Option<String>,
    /// Only those at or after this time, ms since the epoch.
    pub since_ms: Option<i64>,
    /// Only those before this time, ms since the epoch.
    pub until_ms: Option<i64>,
    /// Only those numbered below this.
    pub before: Option<i64>,
    /// At most this many.
    pub limit: usize,
}

/// Where a search's columns are: the push log (`t` alone) or the inbound log (`t` joined with
/// its keys as `k`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Log {
    /// `push_log t`.
    Pushes,
    /// `inbound t LEFT JOIN inbound_key k`.
    Inbound,
}

/// The SQL condition and its values for `q` over `log`. Values are bound in order (`$n`
/// placeholders for PostgreSQL, `?n` for SQLite); numbers are written into the statement.
pub(super) fn conditions(q: &JournalQuery, log: Log, postgres: bool) -> (String, Vec<String>) {
    let (place, keys) = match log {
        Log::Pushes => ("t.destination", "t"),
        Log::Inbound => ("t.channel", "k"),
    };
    let mut sql = Vec::new();
    let mut values = Vec::new();
    let mut add = |expr: String, value: String| {
        values.push(value);
        let n = values.len();
        let p = if postgres {
            format!("${n}")
        } else {
            format!("?{n}")
        };
        sql.push(expr.replace('#', &p));
    };
    if let Some(v) = &q.agent_id {
        add("t.agent_id = #".to_owned(), v.clone());
    }
    if let Some(v) = &q.place {
        add(format!("{place} = #"), v.clone());
    }
    if let (Some(v), Log::Inbound) = (&q.device, log) {
        add("t.remote = #".to_owned(), v.clone());
    }
    if let (Some(v), Log::Pushes) = (&q.outcome, log) {
        add("t.outcome = #".to_owned(), v.clone());
    }
    if let Some(v) = &q.control_id {
        add(format!("{keys}.control_id = #"), v.clone());
    }
    if let Some(v) = &q.message_type {
        let column = if v.contains('^') {
            "message_type"
        } else {
            "message_code"
        };
        add(format!("{keys}.{column} = #"), v.clone());
    }
    if let Some(v) = &q.patient_id {
        add(format!("{keys}.patient_id = #"), v.clone());
    }
    // The inbound log keeps its times as RFC 3339 text, which sorts as time does.
    let rfc3339 = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_default()
    };
    // Numbers are written into the statement (no string binding for an integer column).
    let mut numeric = Vec::new();
    for (ms, op) in [(q.since_ms, ">="), (q.until_ms, "<")] {
        let Some(ms) = ms else { continue };
        match log {
            Log::Inbound => add(format!("t.received_at {op} #"), rfc3339(ms)),
            Log::Pushes => numeric.push(format!("t.at_ms {op} {ms}")),
        }
    }
    if let Some(v) = q.before {
        numeric.push(format!("t.id < {v}"));
    }
    sql.extend(numeric);
    let sql = if sql.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", sql.join(" AND "))
    };
    (sql, values)
}

/// What the relay stored from one agent channel: for the fleet page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelCounts {
    /// Messages stored.
    pub received: i64,
    /// Of those, answered (a final answer recorded).
    pub answered: i64,
    /// Of those, answered with an error (status 400 and up).
    pub errored: i64,
    /// When the last one arrived (RFC 3339).
    pub last: String,
}

/// The inbound search's order: by the keys table's id when a key is searched (so the key's
/// index is read in order), else by the message's.
pub(super) fn inbound_order(q: &JournalQuery) -> &'static str {
    if q.control_id.is_some() || q.message_type.is_some() || q.patient_id.is_some() {
        "ORDER BY k.inbound_id DESC"
    } else {
        "ORDER BY t.id DESC"
    }
}

/// How many pushes the log keeps at most, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct PushLogLimits {
    /// Rows kept at most (the oldest go first).
    pub max_rows: i64,
    /// Rows older than this many ms go.
    pub max_age_ms: i64,
}

impl Default for PushLogLimits {
    fn default() -> Self {
        PushLogLimits {
            max_rows: 100_000,
            max_age_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

impl Registry {
    /// Appends pushes to the log.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn record_pushes(&self, pushes: Vec<PushRecord>) -> Result<(), StoreError> {
        self.db.record_pushes(pushes).await
    }

    /// Logged pushes, newest first.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn pushes(&self, q: JournalQuery) -> Result<Vec<PushRow>, StoreError> {
        self.db.pushes(q).await
    }

    /// Stored inbound messages, newest first, searched by their keys.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn inbound_search(
        &self,
        q: JournalQuery,
    ) -> Result<Vec<super::InboundRow>, StoreError> {
        self.db.inbound_search(q).await
    }

    /// Per `(agent, channel)`: what was stored and answered, and the last message's time.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn inbound_channel_counts(
        &self,
    ) -> Result<std::collections::HashMap<(String, String), ChannelCounts>, StoreError> {
        self.db.inbound_channel_counts().await
    }

    /// Drops the pushes beyond `limits`; how many went.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn prune_pushes(
        &self,
        limits: PushLogLimits,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        self.db
            .prune_pushes(limits.max_rows, now_ms - limits.max_age_ms)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_an_hl7_message() {
        let k = MessageKeys::of(
            "MSH|^~\\&|A|B|C|D|20240101||ADT^A01^ADT_A01|CTRL-1|P|2.5\rPID|1||P42^^^H^MR~X9||DOE\r",
        );
        assert_eq!(
            k,
            MessageKeys {
                control_id: Some("CTRL-1".into()),
                message_code: Some("ADT".into()),
                message_type: Some("ADT^A01".into()),
                patient_id: Some("P42".into()),
            }
        );
        assert_eq!(MessageKeys::of("H|\\^&"), MessageKeys::default());
        assert_eq!(MessageKeys::of("MSH"), MessageKeys::default());
    }

    #[test]
    fn conditions_bind_values_in_order() {
        let q = JournalQuery {
            agent_id: Some("a".into()),
            message_type: Some("ORU".into()),
            before: Some(10),
            ..JournalQuery::default()
        };
        let (sql, values) = conditions(&q, Log::Pushes, false);
        assert_eq!(
            sql,
            "WHERE t.agent_id = ?1 AND t.message_code = ?2 AND t.id < 10"
        );
        assert_eq!(values, ["a", "ORU"]);
        let (sql, _) = conditions(&q, Log::Inbound, true);
        assert_eq!(
            sql,
            "WHERE t.agent_id = $1 AND k.message_code = $2 AND t.id < 10"
        );
        let q = JournalQuery {
            since_ms: Some(1_700_000_000_000),
            until_ms: Some(1_700_000_060_000),
            device: Some("10.0.0.9:5000".into()),
            ..JournalQuery::default()
        };
        let (sql, values) = conditions(&q, Log::Inbound, false);
        assert_eq!(
            sql,
            "WHERE t.remote = ?1 AND t.received_at >= ?2 AND t.received_at < ?3"
        );
        assert_eq!(
            values,
            [
                "10.0.0.9:5000",
                "2023-11-14T22:13:20.000Z",
                "2023-11-14T22:14:20.000Z"
            ]
        );
        let (sql, _) = conditions(&q, Log::Pushes, false);
        assert_eq!(
            sql,
            "WHERE t.at_ms >= 1700000000000 AND t.at_ms < 1700000060000"
        );
        assert_eq!(truncated("aé", 2), "a");
    }
}

/// The push log's writer: pushes are handed over without waiting (a bounded queue; when it is
/// full the push is counted as dropped from the log, never delayed), written in batches, and
/// the log pruned to its limits every minute.
#[derive(Debug)]
pub(crate) struct PushLog {
    tx: tokio::sync::mpsc::Sender<PushRecord>,
    dropped: std::sync::atomic::AtomicU64,
    on: bool,
}

/// Pushes waiting to be written, at most.
const QUEUE: usize = 8192;
/// Pushes written in one transaction, at most.
const BATCH: usize = 512;
/// How long the writer gathers pushes before a transaction that is not full.
const GATHER: std::time::Duration = std::time::Duration::from_millis(250);

impl PushLog {
    /// Starts the writer on the current runtime; with `limits.max_rows` 0, no log at all.
    pub(crate) fn start(registry: Registry, limits: PushLogLimits) -> PushLog {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        if limits.max_rows > 0 {
            tokio::spawn(write(registry, rx, limits));
        }
        PushLog {
            tx,
            dropped: std::sync::atomic::AtomicU64::new(0),
            on: limits.max_rows > 0,
        }
    }

    /// Whether pushes are logged.
    pub(crate) fn is_on(&self) -> bool {
        self.on
    }

    /// Hands one push to the writer.
    pub(crate) fn record(&self, push: PushRecord) {
        if !self.on {
            return;
        }
        if self.tx.try_send(push).is_err() {
            let n = self
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if n.is_multiple_of(1000) {
                tracing::warn!(
                    dropped = n + 1,
                    "the push log cannot keep up: pushes left out of it (the pushes themselves are unaffected)"
                );
            }
        }
    }
}

async fn write(
    registry: Registry,
    mut rx: tokio::sync::mpsc::Receiver<PushRecord>,
    limits: PushLogLimits,
) {
    let mut last_prune = std::time::Instant::now();
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        // One transaction per quarter second at most: a row costs far less in a batch.
        if batch.len() < BATCH {
            tokio::time::sleep(GATHER).await;
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
        }
        if let Err(e) = registry.record_pushes(std::mem::take(&mut batch)).await {
            tracing::error!(error = %super::chain(&e), "cannot write the push log");
        }
        if last_prune.elapsed() >= std::time::Duration::from_secs(60) {
            last_prune = std::time::Instant::now();
            match registry.prune_pushes(limits, crate::fhir::now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "push log pruned"),
                Err(e) => tracing::error!(error = %super::chain(&e), "cannot prune the push log"),
            }
        }
    }
}
