//! The registry: FHIR resources and inbound messages in an embedded SQLite file.
//!
//! The registry proper (agents, devices, endpoints, client applications, subscriptions: small,
//! and read on every push) is also kept in memory, so that reads on the push path never touch
//! the disk; every write goes to the database first. Records that grow with use (patients,
//! practitioners, service requests, audit events) are read from the database, so memory does not
//! grow with them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

use crate::Error;

/// Resource types the relay stores.
pub const RESOURCE_TYPES: &[&str] = &[
    "Agent",
    "Device",
    "Endpoint",
    "ClientApplication",
    "Patient",
    "Practitioner",
    "ServiceRequest",
    "Subscription",
    "AuditEvent",
];

/// Resource types kept in memory (see the module docs).
pub const CACHED_TYPES: &[&str] = &[
    "Agent",
    "Device",
    "Endpoint",
    "ClientApplication",
    "Subscription",
];

/// Whether resources of `ty` are kept in memory.
pub fn is_cached(ty: &str) -> bool {
    CACHED_TYPES.contains(&ty)
}

type Resources = HashMap<String, HashMap<String, Arc<Value>>>;

/// A stored inbound message (device → agent → relay).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundRow {
    /// Sequence number, increasing in arrival order.
    pub id: i64,
    /// The agent that relayed it.
    pub agent_id: String,
    /// The agent channel it came in on.
    pub channel: String,
    /// The device's address.
    pub remote: String,
    /// Its content type.
    pub content_type: String,
    /// The message.
    pub body: String,
    /// The agent's callback id (unique per agent: a redelivery carries the same one).
    pub callback: String,
    /// When it arrived (RFC 3339).
    pub received_at: String,
    /// The status code answered.
    pub status_code: Option<i64>,
    /// The answer sent back to the device.
    pub response: Option<String>,
}

/// What [`Store::record_inbound`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// A new message, stored with this sequence number.
    New(i64),
    /// The same agent sent this callback before: the stored row.
    Duplicate(Box<InboundRow>),
}

/// Where the registry lives.
#[derive(Debug, Clone)]
enum Db {
    /// One process: an embedded SQLite file (or memory).
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    /// Several processes: PostgreSQL (see the `pg` module).
    Postgres(crate::pg::Pg),
}

/// The registry.
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
    cache: Arc<RwLock<Resources>>,
}

impl Store {
    /// Opens (creating if needed) the SQLite file at `path`; `None` keeps everything in memory.
    pub fn open(path: Option<&Path>) -> Result<Store, Error> {
        let conn = match path {
            Some(p) => rusqlite::Connection::open(p),
            None => rusqlite::Connection::open_in_memory(),
        }
        .map_err(db)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
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
             CREATE INDEX IF NOT EXISTS order_delivery_due ON order_delivery (state, next_at);",
        )
        .map_err(db)?;
        let mut cache: Resources = HashMap::new();
        {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT resource_type, id, content FROM resource WHERE resource_type IN ({})",
                    CACHED_TYPES
                        .iter()
                        .map(|t| format!("'{t}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .map_err(db)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })
                .map_err(db)?;
            for row in rows {
                let (ty, id, content) = row.map_err(db)?;
                let value: Value = serde_json::from_str(&content)
                    .map_err(|e| Error::Store(format!("stored {ty}/{id} is not JSON: {e}")))?;
                cache.entry(ty).or_default().insert(id, Arc::new(value));
            }
        }
        Ok(Store {
            db: Db::Sqlite(Arc::new(Mutex::new(conn))),
            cache: Arc::new(RwLock::new(cache)),
        })
    }

    /// Opens the registry in PostgreSQL (`postgres://user@host:port/db`), creating the tables.
    /// With `sslmode=require` in the URL the connection is TLS, the server's certificate checked
    /// against `ca_pem` (PEM), or the system's roots without it.
    pub fn open_postgres(url: &str, ca_pem: Option<&[u8]>) -> Result<Store, Error> {
        let cache = Arc::new(RwLock::new(Resources::new()));
        let pg = crate::pg::Pg::open(url, ca_pem, cache.clone())?;
        Ok(Store {
            db: Db::Postgres(pg),
            cache,
        })
    }

    /// Whether the registry is shared with other processes (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// A value every process sharing the registry agrees on: the stored one, or `init` stored
    /// now. `None` with SQLite (nothing to share).
    pub fn shared_setting(&self, name: &str, init: String) -> Result<Option<String>, Error> {
        match &self.db {
            Db::Sqlite(_) => Ok(None),
            Db::Postgres(pg) => pg.setting(name, init).map(Some),
        }
    }

    fn sqlite(
        c: &Arc<Mutex<rusqlite::Connection>>,
    ) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        c.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A resource by type and id (`None` also when the database cannot be read; logged).
    pub fn get(&self, ty: &str, id: &str) -> Option<Arc<Value>> {
        if is_cached(ty) {
            let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
            return cache.get(ty)?.get(id).cloned();
        }
        let content = match &self.db {
            Db::Sqlite(c) => Self::sqlite(c)
                .query_row(
                    "SELECT content FROM resource WHERE resource_type = ?1 AND id = ?2",
                    params![ty, id],
                    |r| r.get::<_, String>(0),
                )
                .optional()
                .map_err(db),
            Db::Postgres(pg) => pg.get(ty, id),
        };
        match content {
            Ok(c) => serde_json::from_str(&c?).ok().map(Arc::new),
            Err(e) => {
                tracing::error!(error = %e, "cannot read {ty}/{id}");
                None
            }
        }
    }

    /// Every resource of a type, by id.
    pub fn all(&self, ty: &str) -> Vec<Arc<Value>> {
        if !is_cached(ty) {
            return self.search(ty, &[], usize::MAX);
        }
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<_> = cache
            .get(ty)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| id_of(a).cmp(id_of(b)));
        v
    }

    /// Creates or replaces a resource (it must have `resourceType` and `id`), setting
    /// `meta.versionId` and `meta.lastUpdated`. Returns the stored resource and whether it is new.
    pub fn put(&self, mut resource: Value) -> Result<(Arc<Value>, bool), Error> {
        let ty = resource["resourceType"].as_str().unwrap_or("").to_owned();
        let id = resource["id"].as_str().unwrap_or("").to_owned();
        if !RESOURCE_TYPES.contains(&ty.as_str()) {
            return Err(Error::Invalid(format!("unsupported resource type {ty:?}")));
        }
        if !valid_id(&id) {
            return Err(Error::Invalid(format!(
                "invalid id {id:?}: 1-64 letters, digits, '-' and '.'"
            )));
        }
        let previous = self.get(&ty, &id);
        let version = previous
            .as_ref()
            .and_then(|p| p["meta"]["versionId"].as_str()?.parse::<i64>().ok())
            .unwrap_or(0)
            + 1;
        // A client application's secret is never sent back; an update without one keeps it. It
        // is stored salted and hashed.
        if ty == "ClientApplication" {
            if resource.get("secret").is_none()
                && let Some(old) = previous.as_ref().and_then(|p| p.get("secret"))
            {
                resource["secret"] = old.clone();
            }
            if let Some(plain) = resource["secret"].as_str()
                && !plain.is_empty()
                && !plain.starts_with(crate::auth::HASHED_PREFIX)
            {
                resource["secret"] = Value::String(crate::auth::hash_secret(plain));
            }
        }
        resource["meta"] = json!({
            "versionId": version.to_string(),
            "lastUpdated": now_rfc3339(),
        });
        let content = resource.to_string();
        match &self.db {
            Db::Sqlite(c) => {
                Self::sqlite(c)
                    .execute(
                        "INSERT INTO resource (resource_type, id, version, content) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (resource_type, id) DO UPDATE SET version = ?3, content = ?4",
                        params![ty, id, version, content],
                    )
                    .map_err(db)?;
            }
            Db::Postgres(pg) => pg.upsert(&ty, &id, version, content)?,
        }
        let stored = Arc::new(resource);
        if is_cached(&ty) {
            self.cache
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(ty)
                .or_default()
                .insert(id, stored.clone());
        }
        Ok((stored, previous.is_none()))
    }

    /// Creates a resource with a fresh id.
    pub fn create(&self, mut resource: Value) -> Result<Arc<Value>, Error> {
        resource["id"] = Value::String(uuid::Uuid::new_v4().to_string());
        Ok(self.put(resource)?.0)
    }

    /// Deletes a resource; whether it existed.
    pub fn delete(&self, ty: &str, id: &str) -> Result<bool, Error> {
        let existed = match &self.db {
            Db::Sqlite(c) => {
                Self::sqlite(c)
                    .execute(
                        "DELETE FROM resource WHERE resource_type = ?1 AND id = ?2",
                        params![ty, id],
                    )
                    .map_err(db)?
                    > 0
            }
            Db::Postgres(pg) => pg.delete(ty, id)?,
        };
        let mut cache = self.cache.write().unwrap_or_else(|p| p.into_inner());
        let cached = cache.get_mut(ty).and_then(|m| m.remove(id)).is_some();
        Ok(existed || cached)
    }

    /// Up to `limit` resources of `ty` matching every search parameter (see [`matches`]), by
    /// id. Types not kept in memory are read from the database row by row, holding only the
    /// matches.
    pub fn search(&self, ty: &str, params: &[(String, String)], limit: usize) -> Vec<Arc<Value>> {
        let keep = |r: &Value| params.iter().all(|(k, v)| matches(r, k, v));
        if is_cached(ty) {
            return self
                .all(ty)
                .into_iter()
                .filter(|r| keep(r))
                .take(limit)
                .collect();
        }
        let found = match &self.db {
            Db::Sqlite(c) => (|| {
                let c = Self::sqlite(c);
                let mut stmt = c
                    .prepare("SELECT content FROM resource WHERE resource_type = ?1 ORDER BY id")
                    .map_err(db)?;
                let mut rows = stmt.query(params![ty]).map_err(db)?;
                let mut found = Vec::new();
                while found.len() < limit
                    && let Some(row) = rows.next().map_err(db)?
                {
                    let content: String = row.get(0).map_err(db)?;
                    if let Ok(v) = serde_json::from_str::<Value>(&content)
                        && keep(&v)
                    {
                        found.push(Arc::new(v));
                    }
                }
                Ok(found)
            })(),
            Db::Postgres(pg) => pg.scan(ty, params.to_vec(), limit),
        };
        found.unwrap_or_else(|e: Error| {
            tracing::error!(error = %e, "cannot search {ty}");
            Vec::new()
        })
    }

    /// Resources held in memory (the registry proper), for tests and stats.
    pub fn cached_resources(&self) -> usize {
        let cache = self.cache.read().unwrap_or_else(|p| p.into_inner());
        cache.values().map(HashMap::len).sum()
    }

    /// Loads a FHIR Bundle of resources, keeping their ids.
    pub fn bootstrap(&self, bundle: &Value) -> Result<usize, Error> {
        let entries = bundle["entry"]
            .as_array()
            .ok_or_else(|| Error::Invalid("bootstrap: not a Bundle with entries".into()))?;
        let mut n = 0;
        for e in entries {
            let resource = e
                .get("resource")
                .cloned()
                .ok_or_else(|| Error::Invalid("bootstrap: entry without resource".into()))?;
            self.put(resource)?;
            n += 1;
        }
        Ok(n)
    }

    /// Stores an inbound message, unless this agent already sent this callback.
    pub fn record_inbound(
        &self,
        agent_id: &str,
        channel: &str,
        remote: &str,
        content_type: &str,
        body: &str,
        callback: &str,
    ) -> Result<Recorded, Error> {
        let c = match &self.db {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => {
                return pg.record_inbound(
                    [agent_id, channel, remote, content_type, body, callback].map(str::to_owned),
                );
            }
        };
        let conn = Self::sqlite(c);
        let inserted = conn
            .execute(
                "INSERT INTO inbound (agent_id, channel, remote, content_type, body, callback, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (agent_id, callback) DO NOTHING",
                params![agent_id, channel, remote, content_type, body, callback, now_rfc3339()],
            )
            .map_err(db)?;
        if inserted == 1 {
            return Ok(Recorded::New(conn.last_insert_rowid()));
        }
        let row = conn
            .query_row(
                &format!("{INBOUND_SELECT} WHERE agent_id = ?1 AND callback = ?2"),
                params![agent_id, callback],
                inbound_row,
            )
            .map_err(db)?;
        Ok(Recorded::Duplicate(Box::new(row)))
    }

    /// Records the answer given for an inbound message.
    pub fn set_inbound_response(&self, id: i64, status: u16, body: &str) -> Result<(), Error> {
        let c = match &self.db {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.set_inbound_response(id, status, body),
        };
        Self::sqlite(c)
            .execute(
                "UPDATE inbound SET status_code = ?1, response = ?2 WHERE id = ?3",
                params![status, body, id],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Inbound messages in arrival order, optionally for one agent and channel, after a
    /// sequence number.
    pub fn inbound(
        &self,
        agent_id: Option<&str>,
        channel: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<InboundRow>, Error> {
        let c = match &self.db {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.inbound(agent_id, channel, after, limit),
        };
        let conn = Self::sqlite(c);
        let mut stmt = conn
            .prepare(&format!(
                "{INBOUND_SELECT} WHERE id > ?1 AND (?2 IS NULL OR agent_id = ?2)
                 AND (?3 IS NULL OR channel = ?3) ORDER BY id LIMIT ?4"
            ))
            .map_err(db)?;
        let rows = stmt
            .query_map(params![after, agent_id, channel, limit as i64], inbound_row)
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }

    /// Number of stored inbound messages.
    pub fn inbound_count(&self) -> Result<i64, Error> {
        let c = match &self.db {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.inbound_count(),
        };
        Self::sqlite(c)
            .query_row("SELECT COUNT(*) FROM inbound", [], |r| r.get(0))
            .optional()
            .map_err(db)
            .map(|c| c.unwrap_or(0))
    }
}

const INBOUND_SELECT: &str = "SELECT id, agent_id, channel, remote, content_type, body, callback, received_at, status_code, response FROM inbound";

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

fn db(e: rusqlite::Error) -> Error {
    Error::Store(e.to_string())
}

/// A resource's `id`.
pub fn id_of(r: &Value) -> &str {
    r["id"].as_str().unwrap_or("")
}

/// FHIR ids: 1-64 of `[A-Za-z0-9\-\.]`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The current time, RFC 3339 in UTC with milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// An order message waiting to be pushed, or pushed (see the `orders` module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Sequence number.
    pub id: i64,
    /// `Subscription/<id>` that asked for it.
    pub subscription: String,
    /// `ServiceRequest/<id>/_history/<version>` it was made from.
    pub request: String,
    /// The Agent to push through.
    pub agent_id: String,
    /// `Device/<id>`.
    pub device: String,
    /// `hl7-orm`, `hl7-oml` or `astm`.
    pub format: String,
    /// The push's content type.
    pub content_type: String,
    /// The message.
    pub body: String,
    /// Attempts so far.
    pub attempts: i64,
}

impl Store {
    /// Queues an order message for pushing now.
    pub fn enqueue_delivery(&self, d: &Delivery, now_ms: i64) -> Result<i64, Error> {
        let c = match &self.db {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.enqueue_delivery(d, now_ms),
        };
        let conn = Self::sqlite(c);
        conn.execute(
            "INSERT INTO order_delivery (subscription, request, agent_id, device, format, content_type, body, next_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![d.subscription, d.request, d.agent_id, d.device, d.format, d.content_type, d.body, now_ms, now_rfc3339()],
        )
        .map_err(db)?;
        Ok(conn.last_insert_rowid())
    }

    /// Claims the deliveries due at `now_ms` (pending, or claimed before by a process that did
    /// not finish them) for `lease_ms`, oldest first; and when the next one falls due. With
    /// PostgreSQL no two processes claim the same one.
    pub fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<i64>), Error> {
        let c = match &self.db {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.claim_deliveries(now_ms, lease_ms, limit),
        };
        let conn = Self::sqlite(c);
        let mut stmt = conn
            .prepare(
                "UPDATE order_delivery SET state = 'sending', next_at = ?2
                 WHERE id IN (SELECT id FROM order_delivery
                              WHERE state IN ('pending', 'sending') AND next_at <= ?1
                              ORDER BY id LIMIT ?3)
                 RETURNING id, subscription, request, agent_id, device, format, content_type, body, attempts",
            )
            .map_err(db)?;
        let mut due = stmt
            .query_map(params![now_ms, now_ms + lease_ms, limit as i64], |r| {
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
            })
            .map_err(db)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(db)?;
        due.sort_by_key(|d| d.id);
        let next: Option<i64> = conn
            .query_row(
                "SELECT MIN(next_at) FROM order_delivery WHERE state IN ('pending', 'sending')",
                [],
                |r| r.get(0),
            )
            .map_err(db)?;
        Ok((due, next))
    }

    /// Records an attempt: `state` stays `pending` (retry at `next_at_ms`), or becomes `done` or
    /// `failed`.
    pub fn update_delivery(
        &self,
        id: i64,
        state: &str,
        attempts: i64,
        next_at_ms: i64,
        error: Option<&str>,
        response: Option<&str>,
    ) -> Result<(), Error> {
        let c = match &self.db {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => {
                return pg.update_delivery(id, state, attempts, next_at_ms, error, response);
            }
        };
        Self::sqlite(c)
            .execute(
                "UPDATE order_delivery SET state = ?2, attempts = ?3, next_at = ?4, last_error = ?5, response = ?6 WHERE id = ?1",
                params![id, state, attempts, next_at_ms, error, response],
            )
            .map_err(db)?;
        Ok(())
    }

    /// Deliveries by state (for tests and statistics).
    pub fn delivery_count(&self, state: &str) -> Result<i64, Error> {
        let c = match &self.db {
            Db::Sqlite(c) => c,
            Db::Postgres(pg) => return pg.delivery_count(state),
        };
        Self::sqlite(c)
            .query_row(
                "SELECT COUNT(*) FROM order_delivery WHERE state = ?1",
                params![state],
                |r| r.get(0),
            )
            .map_err(db)
    }
}

/// Whether a resource matches one search parameter. Supported: `_id` (comma-separated list),
/// `identifier` (`system|value`, `|value` or `value`), `name` (case-insensitive prefix of
/// `name`, a HumanName's family/given/text, or `Device.deviceName.name`), `url`, `address`,
/// `status`, `subject` / `patient` (reference), `entity` (AuditEvent: a reference, any version), and `_count`/`_sort`/`_total`/`_format`, which are
/// not filters. Unknown parameters match nothing, so a typo never widens a search.
pub fn matches(r: &Value, key: &str, value: &str) -> bool {
    match key {
        "_count" | "_sort" | "_total" | "_format" | "_summary" | "_elements" => true,
        "_id" => value.split(',').any(|id| id == id_of(r)),
        "identifier" => {
            let (system, val) = match value.split_once('|') {
                Some((s, v)) => (Some(s), v),
                None => (None, value),
            };
            r["identifier"].as_array().into_iter().flatten().any(|i| {
                i["value"].as_str() == Some(val)
                    && system.is_none_or(|s| s.is_empty() || i["system"].as_str() == Some(s))
            })
        }
        "name" => {
            let needle = value.to_lowercase();
            let hit = |s: Option<&str>| s.is_some_and(|s| s.to_lowercase().starts_with(&needle));
            hit(r["name"].as_str())
                || r["name"].as_array().into_iter().flatten().any(|n| {
                    hit(n["family"].as_str())
                        || hit(n["text"].as_str())
                        || n["given"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|g| hit(g.as_str()))
                })
                || r["deviceName"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| hit(n["name"].as_str()))
        }
        "url" | "address" | "status" => r[key].as_str() == Some(value),
        "entity" => r["entity"].as_array().into_iter().flatten().any(|e| {
            e["what"]["reference"].as_str().is_some_and(|w| {
                w == value
                    || w.strip_prefix(value)
                        .is_some_and(|rest| rest.starts_with("/_history/"))
            })
        }),
        "subject" | "patient" => {
            r["subject"]["reference"].as_str() == Some(value)
                || r["subject"]["reference"]
                    .as_str()
                    .map(|s| s.rsplit('/').next())
                    == Some(Some(value))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_search_delete() {
        let s = Store::open(None).unwrap();
        let (dev, created) = s
            .put(json!({"resourceType":"Device","id":"d1","url":"mllp://h:1","identifier":[{"system":"urn:x","value":"42"}],"deviceName":[{"name":"Lab Analyzer"}]}))
            .unwrap();
        assert!(created);
        assert_eq!(dev["meta"]["versionId"], "1");
        let (dev, created) = s
            .put(json!({"resourceType":"Device","id":"d1","url":"mllp://h:2"}))
            .unwrap();
        assert!(!created);
        assert_eq!(dev["meta"]["versionId"], "2");
        s.put(json!({"resourceType":"Device","id":"d2","url":"mllp://h:1","identifier":[{"system":"urn:x","value":"42"}],"deviceName":[{"name":"Lab Analyzer"}]})).unwrap();
        let q = |k: &str, v: &str| {
            s.search("Device", &[(k.into(), v.into())], usize::MAX)
                .len()
        };
        assert_eq!(q("identifier", "42"), 1);
        assert_eq!(q("identifier", "urn:x|42"), 1);
        assert_eq!(q("identifier", "urn:y|42"), 0);
        assert_eq!(q("name", "lab"), 1);
        assert_eq!(q("url", "mllp://h:2"), 1);
        assert_eq!(q("_id", "d1,d2"), 2);
        assert_eq!(q("bogus", "x"), 0);
        assert!(s.delete("Device", "d1").unwrap());
        assert!(s.get("Device", "d1").is_none());
    }

    #[test]
    fn survives_reopen() {
        let dir = std::env::temp_dir().join(format!("outpost-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.sqlite");
        {
            let s = Store::open(Some(&path)).unwrap();
            s.put(json!({"resourceType":"Agent","id":"a1","name":"Lab"}))
                .unwrap();
            assert_eq!(
                s.record_inbound("a1", "c", "r", "t", "b", "cb1").unwrap(),
                Recorded::New(1)
            );
        }
        let s = Store::open(Some(&path)).unwrap();
        assert_eq!(s.get("Agent", "a1").unwrap()["name"], "Lab");
        assert!(matches!(
            s.record_inbound("a1", "c", "r", "t", "b", "cb1").unwrap(),
            Recorded::Duplicate(_)
        ));
        assert_eq!(s.inbound_count().unwrap(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn records_live_in_the_database_not_in_memory() {
        let dir = std::env::temp_dir().join(format!("outpost-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.sqlite");
        let s = Store::open(Some(&path)).unwrap();
        s.put(json!({"resourceType":"Device","id":"d1","url":"mllp://h:1"}))
            .unwrap();
        for i in 0..300 {
            s.put(
                json!({"resourceType":"AuditEvent","id":format!("ae-{i:03}"),
                "entity":[{"what":{"reference":format!("ServiceRequest/sr-{}", i % 3)}}]}),
            )
            .unwrap();
        }
        // Only the registry proper is held in memory.
        assert_eq!(s.cached_resources(), 1);
        assert_eq!(s.get("AuditEvent", "ae-042").unwrap()["id"], "ae-042");
        assert!(s.get("AuditEvent", "nope").is_none());
        let q = vec![("entity".to_owned(), "ServiceRequest/sr-1".to_owned())];
        let all = s.search("AuditEvent", &q, usize::MAX);
        assert_eq!(all.len(), 100);
        assert_eq!(all[0]["id"], "ae-001", "by id");
        let some = s.search("AuditEvent", &q, 7);
        assert_eq!(some.len(), 7);
        assert_eq!(some[6]["id"], "ae-019");
        // An update is seen at once; a delete too.
        let (_, created) = s
            .put(json!({"resourceType":"AuditEvent","id":"ae-042","outcome":"8"}))
            .unwrap();
        assert!(!created);
        assert_eq!(s.get("AuditEvent", "ae-042").unwrap()["outcome"], "8");
        assert!(s.delete("AuditEvent", "ae-042").unwrap());
        assert!(!s.delete("AuditEvent", "ae-042").unwrap());
        drop(s);
        let s = Store::open(Some(&path)).unwrap();
        assert_eq!(s.cached_resources(), 1);
        assert_eq!(s.all("AuditEvent").len(), 299);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn client_secret_is_kept_on_update_without_one() {
        let s = Store::open(None).unwrap();
        s.put(json!({"resourceType":"ClientApplication","id":"c1","secret":"s3cret"}))
            .unwrap();
        let hashed = s.get("ClientApplication", "c1").unwrap()["secret"].clone();
        assert!(
            hashed
                .as_str()
                .unwrap()
                .starts_with(crate::auth::HASHED_PREFIX)
        );
        s.put(json!({"resourceType":"ClientApplication","id":"c1","name":"renamed"}))
            .unwrap();
        assert_eq!(s.get("ClientApplication", "c1").unwrap()["secret"], hashed);
        let tokens = crate::auth::Tokens::new(b"0123456789abcdef0123456789abcdef");
        assert!(crate::auth::check_client(&s, &tokens, "c1", "s3cret"));
        assert!(!crate::auth::check_client(&s, &tokens, "c1", "s3creT"));
    }

    #[test]
    fn rejects_bad_ids_and_types() {
        let s = Store::open(None).unwrap();
        assert!(
            s.put(json!({"resourceType":"Agent","id":"bad/id"}))
                .is_err()
        );
        assert!(
            s.put(json!({"resourceType":"Observation","id":"x"}))
                .is_err()
        );
    }
}
