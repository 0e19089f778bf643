//! The shared backend: PostgreSQL, for several relay processes on one database.
//!
//! The schema is the SQLite one. Statements run on `tokio-postgres` connections from a
//! `deadpool` pool, concurrently, without blocking a worker thread. Each process keeps its
//! in-memory registry cache; every write to a cached type commits to PostgreSQL and sends
//! `NOTIFY outpost_resource, 'Type/id'` in the same transaction, and a listening connection in
//! every process reloads what changed, so the caches converge within milliseconds. A listener
//! that lost its connection reloads everything when it is back.
//!
//! With `sslmode=require` in the URL, connections are TLS (rustls) and the server's certificate
//! is verified against the configured CA file or the system's roots — as libpq's `verify-full`
//! does; other modes connect without TLS. How connections are made (the pool, TLS) and the
//! change listener are in `conn.rs`.

use std::sync::Arc;

use deadpool_postgres::Pool;
use futures_util::TryStreamExt;
use serde_json::Value;

use super::cache::{CACHED_TYPES, RegistryCache, is_cached};
use super::inbound::INBOUND_SELECT;
use super::index::{self, INDEX_VERSION};
use super::journal::{Log, conditions, inbound_order};
use super::sqlite::{INBOUND_SEARCH, PUSH_SELECT};
use super::{
    ChannelCounts, Cond, Delivery, DeliveryOutcome, Filter, InboundQuery, InboundRow, IndexRow,
    JournalQuery, MessageKeys, NewInbound, PushRecord, PushRow, Recorded, Store, StoreError,
};
use crate::fhir::now_rfc3339;

mod conn;

pub(crate) use conn::pool_for;
use conn::{connect, listen};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resource (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    version BIGINT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (resource_type, id)
);
CREATE TABLE IF NOT EXISTS inbound (
    id BIGSERIAL PRIMARY KEY,
    agent_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    remote TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body TEXT NOT NULL,
    callback TEXT NOT NULL,
    received_at TEXT NOT NULL,
    status_code BIGINT,
    response TEXT,
    UNIQUE (agent_id, callback)
);
CREATE TABLE IF NOT EXISTS order_delivery (
    id BIGSERIAL PRIMARY KEY,
    subscription TEXT NOT NULL,
    request TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    device TEXT NOT NULL,
    format TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    last_error TEXT,
    response TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS order_delivery_due ON order_delivery (state, next_at);
CREATE TABLE IF NOT EXISTS setting (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
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
    inbound_id BIGINT PRIMARY KEY,
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
    id BIGSERIAL PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    caller TEXT NOT NULL,
    agent_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    content_type TEXT NOT NULL,
    outcome TEXT NOT NULL,
    status INTEGER NOT NULL,
    latency_us BIGINT NOT NULL,
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

/// The PostgreSQL backend.
#[derive(Debug, Clone)]
pub(crate) struct Postgres {
    pool: Pool,
}

impl Postgres {
    /// Connects (creating the schema) and starts the change listener, which keeps `cache` in
    /// step with the other processes' writes.
    pub(crate) async fn open(
        url: &str,
        ca_pem: Option<&[u8]>,
        cache: Arc<RegistryCache>,
    ) -> Result<Postgres, StoreError> {
        let (config, tls, pool) = connect(url, ca_pem)?;
        {
            let mut client = pool.get().await?;
            // Schema creation races between processes starting together; a lock makes it one
            // at a time.
            let tx = client.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock(727001)", &[])
                .await?;
            tx.batch_execute(SCHEMA).await?;
            reindex(&tx).await?;
            tx.commit().await?;
        }
        tokio::spawn(listen(config, tls, cache));
        Ok(Postgres { pool })
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// Writes the search index of every indexed resource when the database's index is older than
/// [`INDEX_VERSION`] (the `search_index_version` setting), e.g. one written by an earlier
/// relay. Runs under the schema lock.
async fn reindex(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), StoreError> {
    let version: Option<String> = tx
        .query_opt(
            "SELECT value FROM setting WHERE name = 'search_index_version'",
            &[],
        )
        .await?
        .map(|r| r.get(0));
    if version.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0) >= INDEX_VERSION {
        return Ok(());
    }
    tx.execute("DELETE FROM search_index", &[]).await?;
    let rows = tx
        .query("SELECT resource_type, id, content FROM resource", &[])
        .await?;
    for r in rows {
        let (ty, id, content): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        if let Ok(v) = serde_json::from_str::<Value>(&content) {
            insert_index(tx, &ty, &id, &index::rows(&v)).await?;
        }
    }
    tx.execute(
        "INSERT INTO setting (name, value) VALUES ('search_index_version', $1)
         ON CONFLICT (name) DO UPDATE SET value = $1",
        &[&INDEX_VERSION.to_string()],
    )
    .await?;
    Ok(())
}

async fn insert_index(
    tx: &deadpool_postgres::Transaction<'_>,
    ty: &str,
    id: &str,
    rows: &[IndexRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO search_index (resource_type, id, param, system, value) VALUES ($1, $2, $3, $4, $5)",
        )
        .await?;
    for r in rows {
        tx.execute(&stmt, &[&ty, &id, &r.param, &r.system, &r.value])
            .await?;
    }
    Ok(())
}

fn inbound_row(r: &tokio_postgres::Row) -> InboundRow {
    InboundRow {
        id: r.get(0),
        agent_id: r.get(1),
        channel: r.get(2),
        remote: r.get(3),
        content_type: r.get(4),
        body: r.get(5),
        callback: r.get(6),
        received_at: r.get(7),
        status_code: r.get(8),
        response: r.get(9),
    }
}

fn push_row(r: &tokio_postgres::Row) -> PushRow {
    PushRow {
        id: r.get(0),
        push: PushRecord {
            at_ms: r.get(1),
            caller: r.get(2),
            agent_id: r.get(3),
            destination: r.get(4),
            content_type: r.get(5),
            outcome: r.get(6),
            status: u16::try_from(r.get::<_, i32>(7)).unwrap_or(0),
            latency_us: r.get(8),
            keys: MessageKeys {
                control_id: r.get(9),
                message_code: r.get(10),
                message_type: r.get(11),
                patient_id: r.get(12),
            },
            request: r.get(13),
            answer: r.get(14),
            request_bytes: r.get(15),
        },
    }
}

fn delivery_row(r: &tokio_postgres::Row) -> Delivery {
    Delivery {
        id: r.get(0),
        subscription: r.get(1),
        request: r.get(2),
        agent_id: r.get(3),
        device: r.get(4),
        format: r.get(5),
        content_type: r.get(6),
        body: r.get(7),
        attempts: r.get(8),
    }
}

/// Every cached resource, read through `client`.
async fn registry_rows(
    client: &tokio_postgres::Client,
) -> Result<Vec<(String, String, String)>, StoreError> {
    let cached: Vec<&str> = CACHED_TYPES.to_vec();
    Ok(client
        .query(
            "SELECT resource_type, id, content FROM resource WHERE resource_type = ANY($1)",
            &[&cached],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

#[async_trait::async_trait]
impl Store for Postgres {
    async fn registry_rows(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        let c = self.client().await?;
        registry_rows(&c).await
    }

    async fn get(&self, ty: &str, id: &str) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        let stmt = c
            .prepare_cached("SELECT content FROM resource WHERE resource_type = $1 AND id = $2")
            .await?;
        Ok(c.query_opt(&stmt, &[&ty, &id]).await?.map(|r| r.get(0)))
    }

    async fn upsert(
        &self,
        ty: &str,
        id: &str,
        version: i64,
        content: String,
        index: Vec<IndexRow>,
    ) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO resource (resource_type, id, version, content) VALUES ($1, $2, $3, $4)
             ON CONFLICT (resource_type, id) DO UPDATE SET version = $3, content = $4",
            &[&ty, &id, &version, &content],
        )
        .await?;
        tx.execute(
            "DELETE FROM search_index WHERE resource_type = $1 AND id = $2",
            &[&ty, &id],
        )
        .await?;
        insert_index(&tx, ty, id, &index).await?;
        if is_cached(ty) {
            tx.execute(
                "SELECT pg_notify('outpost_resource', $1)",
                &[&format!("{ty}/{id}")],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delete(&self, ty: &str, id: &str) -> Result<bool, StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let n = tx
            .execute(
                "DELETE FROM resource WHERE resource_type = $1 AND id = $2",
                &[&ty, &id],
            )
            .await?;
        tx.execute(
            "DELETE FROM search_index WHERE resource_type = $1 AND id = $2",
            &[&ty, &id],
        )
        .await?;
        tx.execute(
            "SELECT pg_notify('outpost_resource', $1)",
            &[&format!("{ty}/{id}")],
        )
        .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    async fn select(
        &self,
        ty: &str,
        conds: Vec<Cond>,
        limit: usize,
        keep: Filter,
    ) -> Result<Vec<Arc<Value>>, StoreError> {
        let (sql, args) = index::select(ty, &conds, |n| format!("${n}"));
        let c = self.client().await?;
        let rows = c.query_raw(&sql, args.iter()).await?;
        futures_util::pin_mut!(rows);
        let mut found = Vec::new();
        while found.len() < limit
            && let Some(row) = rows.try_next().await?
        {
            let content: String = row.get(0);
            if let Ok(v) = serde_json::from_str::<Value>(&content)
                && keep(&v)
            {
                found.push(Arc::new(v));
            }
        }
        Ok(found)
    }

    async fn record_inbound(&self, m: NewInbound) -> Result<Recorded, StoreError> {
        let c = self.client().await?;
        let k = MessageKeys::of(&m.body);
        // The message and its search keys in one statement: both or neither.
        let inserted = c
            .query_opt(
                "WITH ins AS (
                    INSERT INTO inbound (agent_id, channel, remote, content_type, body, callback, received_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (agent_id, callback) DO NOTHING RETURNING id
                 ), keys AS (
                    INSERT INTO inbound_key (inbound_id, control_id, message_code, message_type, patient_id)
                    SELECT id, $8, $9, $10, $11 FROM ins
                 )
                 SELECT id FROM ins",
                &[&m.agent_id, &m.channel, &m.remote, &m.content_type, &m.body, &m.callback, &now_rfc3339(),
                  &k.control_id, &k.message_code, &k.message_type, &k.patient_id],
            )
            .await?;
        if let Some(r) = inserted {
            return Ok(Recorded::New(r.get(0)));
        }
        let r = c
            .query_one(
                &format!("{INBOUND_SELECT} WHERE agent_id = $1 AND callback = $2"),
                &[&m.agent_id, &m.callback],
            )
            .await?;
        Ok(Recorded::Duplicate(Box::new(inbound_row(&r))))
    }

    async fn set_inbound_response(
        &self,
        id: i64,
        status: u16,
        body: String,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE inbound SET status_code = $1, response = $2 WHERE id = $3",
                &[&i64::from(status), &body, &id],
            )
            .await?;
        Ok(())
    }

    async fn inbound(&self, q: InboundQuery) -> Result<Vec<InboundRow>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "{INBOUND_SELECT} WHERE id > $1 AND ($2::TEXT IS NULL OR agent_id = $2)
                     AND ($3::TEXT IS NULL OR channel = $3) ORDER BY id LIMIT $4"
                ),
                &[&q.after, &q.agent_id, &q.channel, &(q.limit as i64)],
            )
            .await?;
        Ok(rows.iter().map(inbound_row).collect())
    }

    async fn inbound_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .client()
            .await?
            .query_one("SELECT COUNT(*) FROM inbound", &[])
            .await?
            .get(0))
    }

    async fn enqueue_delivery(&self, d: Delivery, now_ms: i64) -> Result<i64, StoreError> {
        Ok(self
            .client()
            .await?
            .query_one(
                "INSERT INTO order_delivery (subscription, request, agent_id, device, format, content_type, body, next_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                &[&d.subscription, &d.request, &d.agent_id, &d.device, &d.format, &d.content_type, &d.body, &now_ms, &now_rfc3339()],
            )
            .await?
            .get(0))
    }

    async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<i64>), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let rows = tx
            .query(
                "UPDATE order_delivery SET state = 'sending', next_at = $2
                 WHERE id IN (SELECT id FROM order_delivery
                              WHERE state IN ('pending', 'sending') AND next_at <= $1
                              ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING id, subscription, request, agent_id, device, format, content_type, body, attempts",
                &[&now_ms, &(now_ms + lease_ms), &(limit as i64)],
            )
            .await?;
        let next: Option<i64> = tx
            .query_one(
                "SELECT MIN(next_at) FROM order_delivery WHERE state IN ('pending', 'sending')",
                &[],
            )
            .await?
            .get(0);
        tx.commit().await?;
        let mut due: Vec<Delivery> = rows.iter().map(delivery_row).collect();
        due.sort_by_key(|d| d.id);
        Ok((due, next))
    }

    async fn update_delivery(&self, id: i64, o: DeliveryOutcome) -> Result<(), StoreError> {
        self.client()
            .await?
            .execute(
                "UPDATE order_delivery SET state = $2, attempts = $3, next_at = $4, last_error = $5, response = $6 WHERE id = $1",
                &[&id, &o.state, &o.attempts, &o.next_at_ms, &o.error, &o.response],
            )
            .await?;
        Ok(())
    }

    async fn delivery_count(&self, state: &str) -> Result<i64, StoreError> {
        Ok(self
            .client()
            .await?
            .query_one(
                "SELECT COUNT(*) FROM order_delivery WHERE state = $1",
                &[&state],
            )
            .await?
            .get(0))
    }

    async fn shared_setting(&self, name: &str, init: String) -> Result<Option<String>, StoreError> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO setting (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &init],
        )
        .await?;
        Ok(Some(
            c.query_one("SELECT value FROM setting WHERE name = $1", &[&name])
                .await?
                .get(0),
        ))
    }

    async fn record_pushes(&self, pushes: Vec<PushRecord>) -> Result<(), StoreError> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO push_log (at_ms, caller, agent_id, destination, content_type, outcome, status,
                    latency_us, control_id, message_code, message_type, patient_id, request, answer, request_bytes)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
            .await?;
        for p in &pushes {
            tx.execute(
                &stmt,
                &[
                    &p.at_ms,
                    &p.caller,
                    &p.agent_id,
                    &p.destination,
                    &p.content_type,
                    &p.outcome,
                    &i32::from(p.status),
                    &p.latency_us,
                    &p.keys.control_id,
                    &p.keys.message_code,
                    &p.keys.message_type,
                    &p.keys.patient_id,
                    &p.request,
                    &p.answer,
                    &p.request_bytes,
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn pushes(&self, q: JournalQuery) -> Result<Vec<PushRow>, StoreError> {
        let (cond, values) = conditions(&q, Log::Pushes, true);
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            values.iter().map(|v| v as _).collect();
        let rows = self
            .client()
            .await?
            .query(
                &format!("{PUSH_SELECT} {cond} ORDER BY t.id DESC LIMIT {}", q.limit),
                &params,
            )
            .await?;
        Ok(rows.iter().map(push_row).collect())
    }

    async fn inbound_search(&self, q: JournalQuery) -> Result<Vec<InboundRow>, StoreError> {
        let (cond, values) = conditions(&q, Log::Inbound, true);
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            values.iter().map(|v| v as _).collect();
        let rows = self
            .client()
            .await?
            .query(
                &format!(
                    "{INBOUND_SEARCH} {cond} {} LIMIT {}",
                    inbound_order(&q),
                    q.limit
                ),
                &params,
            )
            .await?;
        Ok(rows.iter().map(inbound_row).collect())
    }

    async fn inbound_channel_counts(
        &self,
    ) -> Result<std::collections::HashMap<(String, String), ChannelCounts>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT agent_id, channel, COUNT(*), COUNT(status_code),
                    COUNT(*) FILTER (WHERE status_code >= 400), MAX(received_at)
                 FROM inbound GROUP BY agent_id, channel",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    (r.get(0), r.get(1)),
                    ChannelCounts {
                        received: r.get(2),
                        answered: r.get(3),
                        errored: r.get(4),
                        last: r.get(5),
                    },
                )
            })
            .collect())
    }

    async fn prune_pushes(&self, max_rows: i64, older_than_ms: i64) -> Result<u64, StoreError> {
        Ok(self
            .client()
            .await?
            .execute(
                "DELETE FROM push_log WHERE at_ms < $1
                    OR id <= (SELECT COALESCE(MAX(id), 0) FROM push_log) - $2",
                &[&older_than_ms, &max_rows],
            )
            .await?)
    }
}
