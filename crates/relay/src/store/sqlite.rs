//! The embedded backend: one SQLite file (or memory), for a relay that runs alone.
//!
//! rusqlite is synchronous; every statement runs on tokio's blocking pool
//! (`spawn_blocking`), so a slow disk never stalls the tasks serving sockets. One connection,
//! behind a mutex: SQLite serialises writers anyway, and WAL keeps readers cheap.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::cache::CACHED_TYPES;
use super::inbound::INBOUND_SELECT;
use super::index::{self, INDEX_VERSION};
use super::journal::{Log, conditions, inbound_order};
use super::{
    ChannelCounts, Cond, Delivery, DeliveryOutcome, Filter, InboundQuery, InboundRow, IndexRow,
    JournalQuery, MessageKeys, NewInbound, PushRecord, PushRow, Recorded, Store, StoreError,
};
use crate::fhir::now_rfc3339;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resource (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (resource_type, id)
);
CREATE TABLE IF NOT EXISTS inbound (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    remote TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body TEXT NOT NULL,
    callback TEXT NOT NULL,
    received_at TEXT NOT NULL,
    status_code INTEGER,
    response TEXT,
    UNIQUE (agent_id, callback)
);
CREATE TABLE IF NOT EXISTS order_delivery (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subscription TEXT NOT NULL,
    request TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    device TEXT NOT NULL,
    format TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL,
    last_error TEXT,
    response TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS order_delivery_due ON order_delivery (state, next_at);
CREATE TABLE IF NOT EXISTS search_index (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    param TEXT NOT NULL,
    system TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS search_index_value ON search_index (resource_type, param, value);
CREATE INDEX IF NOT EXISTS search_index_resource ON search_index (resource_type, id);
CREATE INDEX IF NOT EXISTS inbound_agent ON inbound (agent_id, id);
CREATE INDEX IF NOT EXISTS inbound_received ON inbound (received_at);
CREATE INDEX IF NOT EXISTS inbound_remote ON inbound (remote, id);
CREATE INDEX IF NOT EXISTS inbound_agent_channel ON inbound (agent_id, channel, id);
CREATE TABLE IF NOT EXISTS inbound_key (
    inbound_id INTEGER PRIMARY KEY,
    control_id TEXT,
    message_code TEXT,
    message_type TEXT,
    patient_id TEXT
);
CREATE INDEX IF NOT EXISTS inbound_key_control ON inbound_key (control_id);
CREATE INDEX IF NOT EXISTS inbound_key_code ON inbound_key (message_code, inbound_id);
CREATE INDEX IF NOT EXISTS inbound_key_type ON inbound_key (message_type, inbound_id);
CREATE INDEX IF NOT EXISTS inbound_key_patient ON inbound_key (patient_id);
CREATE TABLE IF NOT EXISTS push_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    caller TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    content_type TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER NOT NULL,
    latency_us INTEGER NOT NULL,
    control_id TEXT,
    message_code TEXT,
    message_type TEXT,
    patient_id TEXT,
    request TEXT NOT NULL,
    request_bytes BIGINT NOT NULL,
    answer TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS push_log_agent ON push_log (agent_id, id);
CREATE INDEX IF NOT EXISTS push_log_control ON push_log (control_id);
CREATE INDEX IF NOT EXISTS push_log_code ON push_log (message_code, id);
CREATE INDEX IF NOT EXISTS push_log_type ON push_log (message_type, id);
CREATE INDEX IF NOT EXISTS push_log_patient ON push_log (patient_id);";

/// The push log's columns, in [`PushRow`]'s order (both backends map rows by position).
pub(super) const PUSH_SELECT: &str = "SELECT t.id, t.at_ms, t.caller, t.agent_id, t.destination, t.content_type, t.outcome, t.status, t.latency_us, t.control_id, t.message_code, t.message_type, t.patient_id, t.request, t.answer, t.request_bytes FROM push_log t";
/// The inbound log's columns for a search joined with its keys (as `INBOUND_SELECT`'s).
pub(super) const INBOUND_SEARCH: &str = "SELECT t.id, t.agent_id, t.channel, t.remote, t.content_type, t.body, t.callback, t.received_at, t.status_code, t.response FROM inbound t LEFT JOIN inbound_key k ON k.inbound_id = t.id";

/// The SQLite backend.
#[derive(Debug, Clone)]
pub(crate) struct Sqlite {
    conn: Arc<Mutex<Connection>>,
}

/// The first lines of `PRAGMA quick_check`, or `None` when it says `ok`.
fn quick_check(conn: &Connection) -> Result<Option<String>, rusqlite::Error> {
    let mut stmt = conn.prepare("PRAGMA quick_check(20)")?;
    let lines: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<_, _>>()?;
    Ok((lines != ["ok"]).then(|| lines.join("; ")))
}

fn open_checked(path: Option<PathBuf>) -> Result<Connection, StoreError> {
    let mut conn = match &path {
        Some(p) => Connection::open(p),
        None => Connection::open_in_memory(),
    }?;
    if let Some(p) = &path {
        // A file that is not a database at all fails here too (SQLITE_NOTADB).
        let damaged = |report: String| StoreError::Damaged {
            path: p.clone(),
            report,
        };
        match quick_check(&conn) {
            Ok(None) => {}
            Ok(Some(report)) => return Err(damaged(report)),
            Err(e) => return Err(damaged(e.to_string())),
        }
    }
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
    conn.execute_batch(SCHEMA)?;
    reindex(&mut conn)?;
    Ok(conn)
}

/// Writes the search index of every indexed resource when the file's index is older than
/// [`INDEX_VERSION`] (`PRAGMA user_version`), e.g. a registry written by an earlier relay.
fn reindex(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version >= INDEX_VERSION {
        return Ok(());
    }
    let tx = conn.transaction()?;
    tx.execute("DELETE FROM search_index", [])?;
    let rows: Vec<(String, String, String)> = {
        let mut stmt = tx.prepare("SELECT resource_type, id, content FROM resource")?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?
    };
    for (ty, id, content) in rows {
        if let Ok(v) = serde_json::from_str::<Value>(&content) {
            insert_index(&tx, &ty, &id, &index::rows(&v))?;
        }
    }
    tx.execute_batch(&format!("PRAGMA user_version = {INDEX_VERSION}"))?;
    tx.commit()?;
    Ok(())
}

fn insert_index(
    c: &Connection,
    ty: &str,
    id: &str,
    rows: &[IndexRow],
) -> Result<(), rusqlite::Error> {
    let mut stmt = c.prepare_cached(
        "INSERT INTO search_index (resource_type, id, param, system, value) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for r in rows {
        stmt.execute(params![ty, id, r.param, r.system, r.value])?;
    }
    Ok(())
}

impl Sqlite {
    /// Opens (creating) the file, checks it, creates the tables.
    pub(crate) async fn open(path: Option<&Path>) -> Result<Sqlite, StoreError> {
        let path = path.map(Path::to_path_buf);
        let conn = tokio::task::spawn_blocking(move || open_checked(path)).await??;
        Ok(Sqlite {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` on the connection, on the blocking pool.
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    ) -> Result<R, StoreError> {
        let conn = self.conn.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut c)
        })
        .await?;
        Ok(result?)
    }
}

fn inbound_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InboundRow> {
    Ok(InboundRow {
        id: r.get(0)?,
        agent_id: r.get(1)?,
        channel: r.get(2)?,
        remote: r.get(3)?,
        content_type: r.get(4)?,
        body: r.get(5)?,
        callback: r.get(6)?,
        received_at: r.get(7)?,
        status_code: r.get(8)?,
        response: r.get(9)?,
    })
}

fn push_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<PushRow> {
    Ok(PushRow {
        id: r.get(0)?,
        push: PushRecord {
            at_ms: r.get(1)?,
            caller: r.get(2)?,
            agent_id: r.get(3)?,
            destination: r.get(4)?,
            content_type: r.get(5)?,
            outcome: r.get(6)?,
            status: r.get(7)?,
            latency_us: r.get(8)?,
            keys: MessageKeys {
                control_id: r.get(9)?,
                message_code: r.get(10)?,
                message_type: r.get(11)?,
                patient_id: r.get(12)?,
            },
            request: r.get(13)?,
            answer: r.get(14)?,
            request_bytes: r.get(15)?,
        },
    })
}

fn delivery_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        subscription: r.get(1)?,
        request: r.get(2)?,
        agent_id: r.get(3)?,
        device: r.get(4)?,
        format: r.get(5)?,
        content_type: r.get(6)?,
        body: r.get(7)?,
        attempts: r.get(8)?,
    })
}

#[async_trait::async_trait]
impl Store for Sqlite {
    async fn registry_rows(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        self.run(|c| {
            let types = CACHED_TYPES
                .iter()
                .map(|t| format!("'{t}'"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut stmt = c.prepare(&format!(
                "SELECT resource_type, id, content FROM resource WHERE resource_type IN ({types})"
            ))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .await
    }

    async fn get(&self, ty: &str, id: &str) -> Result<Option<String>, StoreError> {
        let (ty, id) = (ty.to_owned(), id.to_owned());
        self.run(move |c| {
            c.query_row(
                "SELECT content FROM resource WHERE resource_type = ?1 AND id = ?2",
                params![ty, id],
                |r| r.get(0),
            )
            .optional()
        })
        .await
    }

    async fn upsert(
        &self,
        ty: &str,
        id: &str,
        version: i64,
        content: String,
        index: Vec<IndexRow>,
    ) -> Result<(), StoreError> {
        let (ty, id) = (ty.to_owned(), id.to_owned());
        self.run(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO resource (resource_type, id, version, content) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (resource_type, id) DO UPDATE SET version = ?3, content = ?4",
                params![ty, id, version, content],
            )?;
            tx.execute(
                "DELETE FROM search_index WHERE resource_type = ?1 AND id = ?2",
                params![ty, id],
            )?;
            insert_index(&tx, &ty, &id, &index)?;
            tx.commit()
        })
        .await
    }

    async fn delete(&self, ty: &str, id: &str) -> Result<bool, StoreError> {
        let (ty, id) = (ty.to_owned(), id.to_owned());
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "DELETE FROM resource WHERE resource_type = ?1 AND id = ?2",
                params![ty, id],
            )?;
            tx.execute(
                "DELETE FROM search_index WHERE resource_type = ?1 AND id = ?2",
                params![ty, id],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
        .await
    }

    async fn select(
        &self,
        ty: &str,
        conds: Vec<Cond>,
        limit: usize,
        keep: Filter,
    ) -> Result<Vec<Arc<Value>>, StoreError> {
        let (sql, args) = index::select(ty, &conds, |n| format!("?{n}"));
        self.run(move |c| {
            let mut stmt = c.prepare(&sql)?;
            let mut rows = stmt.query(rusqlite::params_from_iter(args.iter()))?;
            let mut found = Vec::new();
            while found.len() < limit
                && let Some(row) = rows.next()?
            {
                let content: String = row.get(0)?;
                if let Ok(v) = serde_json::from_str::<Value>(&content)
                    && keep(&v)
                {
                    found.push(Arc::new(v));
                }
            }
            Ok(found)
        })
        .await
    }

    async fn record_inbound(&self, m: NewInbound) -> Result<Recorded, StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let inserted = tx.execute(
                "INSERT INTO inbound (agent_id, channel, remote, content_type, body, callback, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (agent_id, callback) DO NOTHING",
                params![m.agent_id, m.channel, m.remote, m.content_type, m.body, m.callback, now_rfc3339()],
            )?;
            if inserted == 1 {
                let id = tx.last_insert_rowid();
                let k = MessageKeys::of(&m.body);
                if k != MessageKeys::default() {
                    tx.execute(
                        "INSERT INTO inbound_key (inbound_id, control_id, message_code, message_type, patient_id)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![id, k.control_id, k.message_code, k.message_type, k.patient_id],
                    )?;
                }
                tx.commit()?;
                return Ok(Recorded::New(id));
            }
            drop(tx);
            let row = c.query_row(
                &format!("{INBOUND_SELECT} WHERE agent_id = ?1 AND callback = ?2"),
                params![m.agent_id, m.callback],
                inbound_row,
            )?;
            Ok(Recorded::Duplicate(Box::new(row)))
        })
        .await
    }

    async fn set_inbound_response(
        &self,
        id: i64,
        status: u16,
        body: String,
    ) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "UPDATE inbound SET status_code = ?1, response = ?2 WHERE id = ?3",
                params![status, body, id],
            )
            .map(drop)
        })
        .await
    }

    async fn inbound(&self, q: InboundQuery) -> Result<Vec<InboundRow>, StoreError> {
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "{INBOUND_SELECT} WHERE id > ?1 AND (?2 IS NULL OR agent_id = ?2)
                 AND (?3 IS NULL OR channel = ?3) ORDER BY id LIMIT ?4"
            ))?;
            stmt.query_map(
                params![q.after, q.agent_id, q.channel, q.limit as i64],
                inbound_row,
            )?
            .collect()
        })
        .await
    }

    async fn inbound_count(&self) -> Result<i64, StoreError> {
        self.run(|c| c.query_row("SELECT COUNT(*) FROM inbound", [], |r| r.get(0)))
            .await
    }

    async fn enqueue_delivery(&self, d: Delivery, now_ms: i64) -> Result<i64, StoreError> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO order_delivery (subscription, request, agent_id, device, format, content_type, body, next_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![d.subscription, d.request, d.agent_id, d.device, d.format, d.content_type, d.body, now_ms, now_rfc3339()],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<i64>), StoreError> {
        self.run(move |c| {
            let mut due = c
                .prepare(
                    "UPDATE order_delivery SET state = 'sending', next_at = ?2
                     WHERE id IN (SELECT id FROM order_delivery
                                  WHERE state IN ('pending', 'sending') AND next_at <= ?1
                                  ORDER BY id LIMIT ?3)
                     RETURNING id, subscription, request, agent_id, device, format, content_type, body, attempts",
                )?
                .query_map(params![now_ms, now_ms + lease_ms, limit as i64], delivery_row)?
                .collect::<Result<Vec<_>, _>>()?;
            due.sort_by_key(|d| d.id);
            let next: Option<i64> = c.query_row(
                "SELECT MIN(next_at) FROM order_delivery WHERE state IN ('pending', 'sending')",
                [],
                |r| r.get(0),
            )?;
            Ok((due, next))
        })
        .await
    }

    async fn update_delivery(&self, id: i64, o: DeliveryOutcome) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "UPDATE order_delivery SET state = ?2, attempts = ?3, next_at = ?4, last_error = ?5, response = ?6 WHERE id = ?1",
                params![id, o.state, o.attempts, o.next_at_ms, o.error, o.response],
            )
            .map(drop)
        })
        .await
    }

    async fn delivery_count(&self, state: &str) -> Result<i64, StoreError> {
        let state = state.to_owned();
        self.run(move |c| {
            c.query_row(
                "SELECT COUNT(*) FROM order_delivery WHERE state = ?1",
                params![state],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn shared_setting(
        &self,
        _name: &str,
        _init: String,
    ) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    async fn record_pushes(&self, pushes: Vec<PushRecord>) -> Result<(), StoreError> {
        self.run(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO push_log (at_ms, caller, agent_id, destination, content_type, outcome, status,
                        latency_us, control_id, message_code, message_type, patient_id, request, answer, request_bytes)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )?;
                for p in &pushes {
                    stmt.execute(params![
                        p.at_ms, p.caller, p.agent_id, p.destination, p.content_type, p.outcome,
                        p.status, p.latency_us, p.keys.control_id, p.keys.message_code,
                        p.keys.message_type, p.keys.patient_id, p.request, p.answer, p.request_bytes
                    ])?;
                }
            }
            tx.commit()
        })
        .await
    }

    async fn pushes(&self, q: JournalQuery) -> Result<Vec<PushRow>, StoreError> {
        self.run(move |c| {
            let (cond, values) = conditions(&q, Log::Pushes, false);
            let mut stmt = c.prepare(&format!(
                "{PUSH_SELECT} {cond} ORDER BY t.id DESC LIMIT {}",
                q.limit
            ))?;
            stmt.query_map(rusqlite::params_from_iter(values.iter()), push_row)?
                .collect()
        })
        .await
    }

    async fn inbound_search(&self, q: JournalQuery) -> Result<Vec<InboundRow>, StoreError> {
        self.run(move |c| {
            let (cond, values) = conditions(&q, Log::Inbound, false);
            let mut stmt = c.prepare(&format!(
                "{INBOUND_SEARCH} {cond} {} LIMIT {}",
                inbound_order(&q),
                q.limit
            ))?;
            stmt.query_map(rusqlite::params_from_iter(values.iter()), inbound_row)?
                .collect()
        })
        .await
    }

    async fn inbound_channel_counts(
        &self,
    ) -> Result<std::collections::HashMap<(String, String), ChannelCounts>, StoreError> {
        self.run(|c| {
            let mut stmt = c.prepare(
                "SELECT agent_id, channel, COUNT(*), COUNT(status_code),
                    SUM(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END), MAX(received_at)
                 FROM inbound GROUP BY agent_id, channel",
            )?;
            stmt.query_map([], |r| {
                Ok((
                    (r.get(0)?, r.get(1)?),
                    ChannelCounts {
                        received: r.get(2)?,
                        answered: r.get(3)?,
                        errored: r.get(4)?,
                        last: r.get(5)?,
                    },
                ))
            })?
            .collect()
        })
        .await
    }

    async fn prune_pushes(&self, max_rows: i64, older_than_ms: i64) -> Result<u64, StoreError> {
        self.run(move |c| {
            c.execute(
                "DELETE FROM push_log WHERE at_ms < ?1
                    OR id <= (SELECT COALESCE(MAX(id), 0) FROM push_log) - ?2",
                params![older_than_ms, max_rows],
            )
            .map(|n| n as u64)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_searches_read_an_index_not_the_table() {
        let conn = open_checked(None).unwrap();
        let plan = |sql: String, values: Vec<String>| {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let rows: Vec<String> = stmt
                .query_map(rusqlite::params_from_iter(values.iter()), |r| r.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            rows.join("\n")
        };
        let q = |f: fn(&mut JournalQuery)| {
            let mut q = JournalQuery {
                limit: 100,
                ..JournalQuery::default()
            };
            f(&mut q);
            q
        };
        type Set = fn(&mut JournalQuery);
        let searches: [(Set, &str); 5] = [
            (|q| q.control_id = Some("C1".into()), "control"),
            (|q| q.patient_id = Some("P1".into()), "patient"),
            (|q| q.message_type = Some("ADT".into()), "code"),
            (|q| q.message_type = Some("ADT^A01".into()), "type"),
            (|q| q.agent_id = Some("a".into()), "agent"),
        ];
        for (set, index) in searches {
            let q = q(set);
            let (cond, values) = conditions(&q, Log::Pushes, false);
            let p = plan(
                format!("{PUSH_SELECT} {cond} ORDER BY t.id DESC LIMIT 100"),
                values,
            );
            assert!(
                p.contains(&format!("INDEX push_log_{index}")),
                "{index}: {p}"
            );
            if ["code", "type", "agent"].contains(&index) {
                assert!(
                    !p.contains("TEMP B-TREE"),
                    "{index}: sorted, not read in order: {p}"
                );
            }
            assert!(
                !p.contains("SCAN t\n") && !p.ends_with("SCAN t"),
                "{index}: {p}"
            );
            let (cond, values) = conditions(&q, Log::Inbound, false);
            let p = plan(
                format!("{INBOUND_SEARCH} {cond} {} LIMIT 100", inbound_order(&q)),
                values,
            );
            let expected = if index == "agent" {
                "INDEX inbound_agent (".to_owned()
            } else {
                format!("INDEX inbound_key_{index}")
            };
            assert!(p.contains(&expected), "{index}: {p}");
            // Keys that select many rows are read in id order; a control or patient id
            // selects a few, sorted.
            if ["code", "type", "agent"].contains(&index) {
                assert!(
                    !p.contains("TEMP B-TREE"),
                    "{index}: sorted, not read in order: {p}"
                );
            }
        }
        // No filter: the newest rows by the primary key, read backwards, no sort.
        let (cond, values) = conditions(&q(|_| {}), Log::Pushes, false);
        let p = plan(
            format!("{PUSH_SELECT} {cond} ORDER BY t.id DESC LIMIT 100"),
            values,
        );
        assert!(!p.contains("TEMP B-TREE"), "{p}");
    }

    #[test]
    fn indexed_searches_read_the_index_not_the_table() {
        let conn = open_checked(None).unwrap();
        let (conds, _) = index::plan(
            "Observation",
            &[
                ("code".into(), "http://loinc.org|2345-7".into()),
                ("date".into(), "ge2024-03-01".into()),
                ("based-on".into(), "ServiceRequest/sr-1".into()),
            ],
        );
        let (sql, args) = index::select("Observation", &conds, |n| format!("?{n}"));
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| r.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let plan = plan.join("\n");
        assert_eq!(
            plan.matches("USING INDEX search_index_value").count()
                + plan
                    .matches("USING COVERING INDEX search_index_value")
                    .count(),
            3,
            "{plan}"
        );
        assert!(!plan.contains("SCAN resource"), "{plan}");
        assert!(!plan.contains("SCAN search_index"), "{plan}");
    }

    #[test]
    fn a_registry_without_an_index_is_indexed_when_it_opens() {
        let mut conn = open_checked(None).unwrap();
        conn.execute(
            "INSERT INTO resource VALUES ('ServiceRequest', 'sr-1', 1, ?1)",
            params![
                r#"{"resourceType":"ServiceRequest","id":"sr-1","identifier":[{"value":"PL-1"}]}"#
            ],
        )
        .unwrap();
        conn.execute_batch("PRAGMA user_version = 0").unwrap();
        reindex(&mut conn).unwrap();
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM search_index WHERE param = 'identifier' AND value = 'PL-1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1);
        // Once: a second open leaves the index alone.
        conn.execute("DELETE FROM search_index", []).unwrap();
        reindex(&mut conn).unwrap();
        let n: i64 = conn
            .query_row("SELECT count(*) FROM search_index", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
    }
}
