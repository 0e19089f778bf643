//! The registry in PostgreSQL, for several relay processes sharing one database.
//!
//! The schema is the SQLite one. Each process keeps its in-memory cache of resources (reads on
//! the push path never wait on the network); every write commits to PostgreSQL first and sends
//! `NOTIFY outpost_resource, 'Type/id'` in the same transaction, and a listener thread in every
//! process reloads what changed, so the caches converge within milliseconds. A listener that
//! lost its connection reloads everything when it is back.
//!
//! With `sslmode=require` in the URL, connections are TLS (rustls) and the server's certificate
//! is verified against the configured CA file or the system's roots — as libpq's `verify-full`
//! does; other modes connect without TLS.
//!
//! The synchronous `postgres` client runs on threads of its own (it drives its own runtime, which
//! may not start inside tokio's): one thread serves the store's calls in order, one listens.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use postgres::{Client, NoTls};
use serde_json::Value;

use crate::Error;
use crate::store::{Delivery, InboundRow, Recorded, now_rfc3339};

type Resources = HashMap<String, HashMap<String, Arc<Value>>>;
type Job = Box<dyn FnOnce(&mut Client) + Send>;

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
);";

/// The error with its causes (a TLS failure says why the certificate was refused).
fn pg(e: postgres::Error) -> Error {
    let mut text = format!("PostgreSQL: {e}");
    let mut cause = std::error::Error::source(&e);
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    Error::Store(text)
}

/// A connection to PostgreSQL, served on its own thread.
#[derive(Debug, Clone)]
pub struct Pg {
    jobs: mpsc::Sender<Job>,
}

/// Where the server is and how to reach it.
#[derive(Clone)]
struct Target {
    url: String,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Target {
    fn new(url: &str, ca_pem: Option<&[u8]>) -> Result<Target, Error> {
        let config: postgres::Config = url.parse().map_err(pg)?;
        let tls = match config.get_ssl_mode() {
            postgres::config::SslMode::Require => Some(
                tokio_postgres_rustls::MakeRustlsConnect::new(tls_client_config(ca_pem)?),
            ),
            _ => None,
        };
        Ok(Target {
            url: url.to_owned(),
            tls,
        })
    }

    fn connect(&self) -> Result<Client, Error> {
        match &self.tls {
            Some(tls) => Client::connect(&self.url, tls.clone()),
            None => Client::connect(&self.url, NoTls),
        }
        .map_err(pg)
    }
}

fn connect(target: &Target) -> Result<Client, Error> {
    let mut client = target.connect()?;
    // Schema creation races between processes starting together; a lock makes it one at a time.
    let mut tx = client.transaction().map_err(pg)?;
    tx.execute("SELECT pg_advisory_xact_lock(727001)", &[])
        .map_err(pg)?;
    tx.batch_execute(SCHEMA).map_err(pg)?;
    tx.commit().map_err(pg)?;
    Ok(client)
}

fn load(client: &mut Client) -> Result<Resources, Error> {
    let mut cache: Resources = HashMap::new();
    let cached: Vec<&str> = crate::store::CACHED_TYPES.to_vec();
    for row in client
        .query(
            "SELECT resource_type, id, content FROM resource WHERE resource_type = ANY($1)",
            &[&cached],
        )
        .map_err(pg)?
    {
        let (ty, id, content): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let value: Value = serde_json::from_str(&content)
            .map_err(|e| Error::Store(format!("stored {ty}/{id} is not JSON: {e}")))?;
        cache.entry(ty).or_default().insert(id, Arc::new(value));
    }
    Ok(cache)
}

impl Pg {
    /// Connects (creating the schema), fills `cache`, and starts the change listener.
    pub fn open(
        url: &str,
        ca_pem: Option<&[u8]>,
        cache: Arc<RwLock<Resources>>,
    ) -> Result<Pg, Error> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let target = Target::new(url, ca_pem)?;
        let owned = target.clone();
        let fill = cache.clone();
        std::thread::Builder::new()
            .name("outpost-pg".into())
            .spawn(move || {
                let mut client = match connect(&owned).and_then(|mut c| {
                    let loaded = load(&mut c)?;
                    *fill.write().unwrap_or_else(|p| p.into_inner()) = loaded;
                    Ok(c)
                }) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                for job in rx {
                    if client.is_closed() {
                        match connect(&owned) {
                            Ok(c) => client = c,
                            Err(e) => tracing::error!(error = %e, "PostgreSQL reconnect failed"),
                        }
                    }
                    job(&mut client);
                }
            })
            .map_err(|e| Error::Store(format!("cannot start the PostgreSQL thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| Error::Store("the PostgreSQL thread ended".into()))??;
        std::thread::Builder::new()
            .name("outpost-pg-listen".into())
            .spawn(move || listen(&target, &cache))
            .map_err(|e| Error::Store(format!("cannot start the PostgreSQL listener: {e}")))?;
        Ok(Pg { jobs })
    }

    /// Runs `f` on the connection and waits for its result.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R, postgres::Error> + Send + 'static,
    ) -> Result<R, Error> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.jobs
            .send(Box::new(move |c| {
                let _ = tx.send(f(c));
            }))
            .map_err(|_| Error::Store("the PostgreSQL thread ended".into()))?;
        rx.recv()
            .map_err(|_| Error::Store("the PostgreSQL thread ended".into()))?
            .map_err(pg)
    }

    /// Inserts or replaces a resource, telling every process if they keep it in memory.
    pub fn upsert(&self, ty: &str, id: &str, version: i64, content: String) -> Result<(), Error> {
        let (ty, id) = (ty.to_owned(), id.to_owned());
        self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO resource (resource_type, id, version, content) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (resource_type, id) DO UPDATE SET version = $3, content = $4",
                &[&ty, &id, &version, &content],
            )?;
            if crate::store::is_cached(&ty) {
                tx.execute(
                    "SELECT pg_notify('outpost_resource', $1)",
                    &[&format!("{ty}/{id}")],
                )?;
            }
            tx.commit()
        })
    }

    /// A resource's stored JSON.
    pub fn get(&self, ty: &str, id: &str) -> Result<Option<String>, Error> {
        let (ty, id) = (ty.to_owned(), id.to_owned());
        self.call(move |c| {
            Ok(c.query_opt(
                "SELECT content FROM resource WHERE resource_type = $1 AND id = $2",
                &[&ty, &id],
            )?
            .map(|r| r.get(0)))
        })
    }

    /// Up to `limit` resources of `ty` matching `params`, by id, read row by row.
    pub fn scan(
        &self,
        ty: &str,
        params: Vec<(String, String)>,
        limit: usize,
    ) -> Result<Vec<Arc<Value>>, Error> {
        let ty = ty.to_owned();
        self.call(move |c| {
            use postgres::fallible_iterator::FallibleIterator;
            let mut rows = c.query_raw(
                "SELECT content FROM resource WHERE resource_type = $1 ORDER BY id",
                [&ty],
            )?;
            let mut found = Vec::new();
            while found.len() < limit
                && let Some(row) = rows.next()?
            {
                let content: String = row.get(0);
                if let Ok(v) = serde_json::from_str::<Value>(&content)
                    && params
                        .iter()
                        .all(|(k, v2)| crate::store::matches(&v, k, v2))
                {
                    found.push(Arc::new(v));
                }
            }
            Ok(found)
        })
    }

    /// Deletes a resource, telling every process; whether it existed.
    pub fn delete(&self, ty: &str, id: &str) -> Result<bool, Error> {
        let (ty, id) = (ty.to_owned(), id.to_owned());
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let n = tx.execute(
                "DELETE FROM resource WHERE resource_type = $1 AND id = $2",
                &[&ty, &id],
            )?;
            tx.execute(
                "SELECT pg_notify('outpost_resource', $1)",
                &[&format!("{ty}/{id}")],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    /// Stores an inbound message unless this agent sent this callback before.
    pub fn record_inbound(&self, row: [String; 6]) -> Result<Recorded, Error> {
        self.call(move |c| {
            let [agent_id, channel, remote, content_type, body, callback] = row;
            let inserted = c.query_opt(
                "INSERT INTO inbound (agent_id, channel, remote, content_type, body, callback, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (agent_id, callback) DO NOTHING RETURNING id",
                &[&agent_id, &channel, &remote, &content_type, &body, &callback, &now_rfc3339()],
            )?;
            if let Some(r) = inserted {
                return Ok(Recorded::New(r.get(0)));
            }
            let r = c.query_one(
                &format!("{INBOUND_SELECT} WHERE agent_id = $1 AND callback = $2"),
                &[&agent_id, &callback],
            )?;
            Ok(Recorded::Duplicate(Box::new(inbound_row(&r))))
        })
    }

    /// Records the answer given for an inbound message.
    pub fn set_inbound_response(&self, id: i64, status: u16, body: &str) -> Result<(), Error> {
        let body = body.to_owned();
        self.call(move |c| {
            c.execute(
                "UPDATE inbound SET status_code = $1, response = $2 WHERE id = $3",
                &[&i64::from(status), &body, &id],
            )
            .map(|_| ())
        })
    }

    /// Inbound messages in arrival order.
    pub fn inbound(
        &self,
        agent_id: Option<&str>,
        channel: Option<&str>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<InboundRow>, Error> {
        let (agent_id, channel) = (agent_id.map(str::to_owned), channel.map(str::to_owned));
        self.call(move |c| {
            let rows = c.query(
                &format!(
                    "{INBOUND_SELECT} WHERE id > $1 AND ($2::TEXT IS NULL OR agent_id = $2)
                     AND ($3::TEXT IS NULL OR channel = $3) ORDER BY id LIMIT $4"
                ),
                &[&after, &agent_id, &channel, &(limit as i64)],
            )?;
            Ok(rows.iter().map(inbound_row).collect())
        })
    }

    /// Number of stored inbound messages.
    pub fn inbound_count(&self) -> Result<i64, Error> {
        self.call(|c| Ok(c.query_one("SELECT COUNT(*) FROM inbound", &[])?.get(0)))
    }

    /// Queues an order message.
    pub fn enqueue_delivery(&self, d: &Delivery, now_ms: i64) -> Result<i64, Error> {
        let d = d.clone();
        self.call(move |c| {
            Ok(c.query_one(
                "INSERT INTO order_delivery (subscription, request, agent_id, device, format, content_type, body, next_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                &[&d.subscription, &d.request, &d.agent_id, &d.device, &d.format, &d.content_type, &d.body, &now_ms, &now_rfc3339()],
            )?
            .get(0))
        })
    }

    /// Claims due deliveries for `lease_ms` (no other process takes them meanwhile); and when
    /// the next one falls due.
    pub fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<(Vec<Delivery>, Option<i64>), Error> {
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let rows = tx.query(
                "UPDATE order_delivery SET state = 'sending', next_at = $2
                 WHERE id IN (SELECT id FROM order_delivery
                              WHERE state IN ('pending', 'sending') AND next_at <= $1
                              ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING id, subscription, request, agent_id, device, format, content_type, body, attempts",
                &[&now_ms, &(now_ms + lease_ms), &(limit as i64)],
            )?;
            let next: Option<i64> = tx
                .query_one(
                    "SELECT MIN(next_at) FROM order_delivery WHERE state IN ('pending', 'sending')",
                    &[],
                )?
                .get(0);
            tx.commit()?;
            let mut due: Vec<Delivery> = rows
                .iter()
                .map(|r| Delivery {
                    id: r.get(0),
                    subscription: r.get(1),
                    request: r.get(2),
                    agent_id: r.get(3),
                    device: r.get(4),
                    format: r.get(5),
                    content_type: r.get(6),
                    body: r.get(7),
                    attempts: r.get(8),
                })
                .collect();
            due.sort_by_key(|d| d.id);
            Ok((due, next))
        })
    }

    /// Records an attempt.
    pub fn update_delivery(
        &self,
        id: i64,
        state: &str,
        attempts: i64,
        next_at_ms: i64,
        error: Option<&str>,
        response: Option<&str>,
    ) -> Result<(), Error> {
        let (state, error, response) = (
            state.to_owned(),
            error.map(str::to_owned),
            response.map(str::to_owned),
        );
        self.call(move |c| {
            c.execute(
                "UPDATE order_delivery SET state = $2, attempts = $3, next_at = $4, last_error = $5, response = $6 WHERE id = $1",
                &[&id, &state, &attempts, &next_at_ms, &error, &response],
            )
            .map(|_| ())
        })
    }

    /// Deliveries in a state.
    pub fn delivery_count(&self, state: &str) -> Result<i64, Error> {
        let state = state.to_owned();
        self.call(move |c| {
            Ok(c.query_one(
                "SELECT COUNT(*) FROM order_delivery WHERE state = $1",
                &[&state],
            )?
            .get(0))
        })
    }

    /// A setting shared by every process: the stored value, or `init` stored now.
    pub fn setting(&self, name: &str, init: String) -> Result<String, Error> {
        let name = name.to_owned();
        self.call(move |c| {
            c.execute(
                "INSERT INTO setting (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                &[&name, &init],
            )?;
            Ok(
                c.query_one("SELECT value FROM setting WHERE name = $1", &[&name])?
                    .get(0),
            )
        })
    }
}

const INBOUND_SELECT: &str = "SELECT id, agent_id, channel, remote, content_type, body, callback, received_at, status_code, response FROM inbound";

fn inbound_row(r: &postgres::Row) -> InboundRow {
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

/// Follows `NOTIFY outpost_resource` and keeps `cache` in step, reconnecting forever.
fn listen(target: &Target, cache: &RwLock<Resources>) {
    let mut backoff = Duration::from_millis(200);
    let mut first = true;
    loop {
        let result = (|| -> Result<(), Error> {
            let mut client = target.connect()?;
            client
                .batch_execute("LISTEN outpost_resource")
                .map_err(pg)?;
            if !first {
                // Changes made while we were away: start from the database again.
                let fresh = load(&mut client)?;
                *cache.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            }
            first = false;
            backoff = Duration::from_millis(200);
            loop {
                let payloads: Vec<String> = {
                    use postgres::fallible_iterator::FallibleIterator;
                    let mut n = client.notifications();
                    let mut v = Vec::new();
                    // Wait for one, then take whatever else has arrived.
                    if let Some(note) =
                        n.timeout_iter(Duration::from_secs(30)).next().map_err(pg)?
                    {
                        v.push(note.payload().to_owned());
                    }
                    let mut rest = n.iter();
                    while let Some(note) = rest.next().map_err(pg)? {
                        v.push(note.payload().to_owned());
                    }
                    v
                };
                if payloads.is_empty() {
                    // Quiet for a while: make sure the connection is still there.
                    client.simple_query("SELECT 1").map_err(pg)?;
                }
                for key in payloads {
                    let Some((ty, id)) = key
                        .split_once('/')
                        .filter(|(ty, _)| crate::store::is_cached(ty))
                    else {
                        continue;
                    };
                    let row = client
                        .query_opt(
                            "SELECT content FROM resource WHERE resource_type = $1 AND id = $2",
                            &[&ty, &id],
                        )
                        .map_err(pg)?;
                    let mut c = cache.write().unwrap_or_else(|p| p.into_inner());
                    match row.map(|r| r.get::<_, String>(0)) {
                        Some(content) => {
                            if let Ok(v) = serde_json::from_str::<Value>(&content) {
                                c.entry(ty.to_owned())
                                    .or_default()
                                    .insert(id.to_owned(), Arc::new(v));
                            }
                        }
                        None => {
                            if let Some(m) = c.get_mut(ty) {
                                m.remove(id);
                            }
                        }
                    }
                }
            }
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "PostgreSQL change listener lost its connection; retrying");
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// TLS settings for the connections to PostgreSQL: the CAs in `ca_pem`, or the system's roots.
fn tls_client_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, Error> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| Error::Tls(format!("CA file: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Tls(format!("CA file: {e}")))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(Error::Tls(
            "no CA certificates to verify the database with".into(),
        ));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
