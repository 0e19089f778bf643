//! The store's operations, written once against [`Store`]: resource versions and metadata,
//! the registry cache, searches, client secrets kept hashed.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use super::cache::{RegistryCache, is_cached};
use super::{Filter, Store, StoreError, matches};
use crate::auth::{MIN_SECRET_LEN, hash_secret, is_hashed};
use crate::fhir::{RESOURCE_TYPES, check_address, now_rfc3339, valid_id};

/// A resource the relay will not store: the caller's mistake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidResource {
    /// Not one of the types the relay stores.
    #[error("unsupported resource type {0:?}")]
    UnsupportedType(String),
    /// Not a FHIR id.
    #[error("invalid id {0:?}: 1-64 letters, digits, '-' and '.'")]
    InvalidId(String),
    /// A bootstrap file that is not a Bundle with entries.
    #[error("bootstrap: not a Bundle with entries")]
    NotABundle,
    /// A bootstrap entry without a resource.
    #[error("bootstrap: entry without resource")]
    EntryWithoutResource,
    /// A ClientApplication secret shorter than [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN).
    #[error(
        "ClientApplication/{id}: secret too short ({len} characters, at least {MIN_SECRET_LEN}); leave it out to have one generated"
    )]
    ShortSecret {
        /// The ClientApplication id.
        id: String,
        /// The characters given.
        len: usize,
    },
    /// A Device `url` or Endpoint `address` the agent could not use (unknown scheme, no
    /// `host:port`); the text names the resource and the URL.
    #[error("{0}")]
    Address(String),
}

/// Why a resource was not written: the caller's mistake, or the store's failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PutError {
    /// The resource is not acceptable (answer 400).
    #[error(transparent)]
    Invalid(#[from] InvalidResource),
    /// The store failed (answer 5xx).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The relay's registry: FHIR resources, inbound messages and queued lab orders, in SQLite or
/// PostgreSQL. Cheap to clone (a handle).
#[derive(Debug, Clone)]
pub struct Registry {
    pub(super) db: Arc<dyn Store>,
    cache: Arc<RegistryCache>,
    shared: bool,
}

impl Registry {
    /// Opens (creating if needed) the SQLite file at `path`; `None` keeps everything in memory.
    /// The file is checked (`PRAGMA quick_check`) first: a damaged one is refused.
    pub(crate) async fn open_sqlite(path: Option<&Path>) -> Result<Registry, StoreError> {
        let db = super::sqlite::Sqlite::open(path).await?;
        Registry::with(Arc::new(db), Arc::new(RegistryCache::default()), false).await
    }

    /// Opens the registry in PostgreSQL (`postgres://user@host:port/db`), creating the tables.
    /// With `sslmode=require` in the URL the connections are TLS, the server's certificate
    /// checked against `ca_pem` (PEM), or the system's roots without it.
    pub(crate) async fn open_postgres(
        url: &str,
        ca_pem: Option<&[u8]>,
    ) -> Result<Registry, StoreError> {
        let cache = Arc::new(RegistryCache::default());
        let db = super::postgres::Postgres::open(url, ca_pem, cache.clone()).await?;
        Registry::with(Arc::new(db), cache, true).await
    }

    async fn with(
        db: Arc<dyn Store>,
        cache: Arc<RegistryCache>,
        shared: bool,
    ) -> Result<Registry, StoreError> {
        cache.replace(db.registry_rows().await?)?;
        Ok(Registry { db, cache, shared })
    }

    /// Whether the registry is shared with other processes (PostgreSQL).
    pub(crate) fn is_shared(&self) -> bool {
        self.shared
    }

    /// A value every process sharing the registry agrees on (see [`Store::shared_setting`]).
    pub(crate) async fn shared_setting(
        &self,
        name: &str,
        init: String,
    ) -> Result<Option<String>, StoreError> {
        self.db.shared_setting(name, init).await
    }

    /// A resource of the registry proper (Agent, Device, Endpoint, ClientApplication,
    /// Subscription), from memory: never waits, never fails. `None` for other types.
    pub(crate) fn cached(&self, ty: &str, id: &str) -> Option<Arc<Value>> {
        self.cache.get(ty, id)
    }

    /// Every cached resource of a type, by id.
    pub(crate) fn all_cached(&self, ty: &str) -> Vec<Arc<Value>> {
        self.cache.all(ty)
    }

    /// A resource by type and id.
    ///
    /// # Errors
    ///
    /// The database could not be read (never for the registry proper, held in memory).
    pub async fn get(&self, ty: &str, id: &str) -> Result<Option<Arc<Value>>, StoreError> {
        if is_cached(ty) {
            return Ok(self.cache.get(ty, id));
        }
        match self.db.get(ty, id).await? {
            None => Ok(None),
            Some(content) => serde_json::from_str(&content)
                .map(|v| Some(Arc::new(v)))
                .map_err(|source| StoreError::NotJson {
                    ty: ty.to_owned(),
                    id: id.to_owned(),
                    source,
                }),
        }
    }

    /// Creates or replaces a resource (it must have `resourceType` and `id`), setting
    /// `meta.versionId` and `meta.lastUpdated`. A ClientApplication's secret is kept when an
    /// update has none, and stored hashed (PBKDF2); a secret given in the clear must have at
    /// least [`MIN_SECRET_LEN`](crate::MIN_SECRET_LEN) characters, one already hashed is stored
    /// as it is. Returns the stored resource and whether
    /// it is new.
    ///
    /// # Errors
    ///
    /// [`PutError::Invalid`] for a type the relay does not store or a bad id;
    /// [`PutError::Store`] when the database fails.
    pub async fn put(&self, mut resource: Value) -> Result<(Arc<Value>, bool), PutError> {
        let ty = resource["resourceType"].as_str().unwrap_or("").to_owned();
        let id = resource["id"].as_str().unwrap_or("").to_owned();
        if !RESOURCE_TYPES.contains(&ty.as_str()) {
            return Err(InvalidResource::UnsupportedType(ty).into());
        }
        if !valid_id(&id) {
            return Err(InvalidResource::InvalidId(id).into());
        }
        let previous = self.get(&ty, &id).await?;
        let version = previous
            .as_ref()
            .and_then(|p| p["meta"]["versionId"].as_str()?.parse::<i64>().ok())
            .unwrap_or(0)
            + 1;
        if ty == "ClientApplication" {
            if resource.get("secret").is_none()
                && let Some(old) = previous.as_ref().and_then(|p| p.get("secret"))
            {
                resource["secret"] = old.clone();
            }
            if let Some(plain) = resource["secret"].as_str()
                && !is_hashed(plain)
            {
                let len = plain.chars().count();
                if len < MIN_SECRET_LEN {
                    return Err(InvalidResource::ShortSecret { id, len }.into());
                }
                let plain = plain.to_owned();
                // PBKDF2 takes a fraction of a second: not on the async runtime.
                let hashed = tokio::task::spawn_blocking(move || hash_secret(&plain))
                    .await
                    .map_err(|_| StoreError::Hashing)?;
                resource["secret"] = Value::String(hashed);
            }
        }
        resource["meta"] = json!({
            "versionId": version.to_string(),
            "lastUpdated": now_rfc3339(),
        });
        let index = super::index::rows(&resource);
        self.db
            .upsert(&ty, &id, version, resource.to_string(), index)
            .await?;
        let stored = Arc::new(resource);
        if is_cached(&ty) {
            self.cache.insert(&ty, &id, stored.clone());
        }
        Ok((stored, previous.is_none()))
    }

    /// Creates a resource with a fresh id.
    ///
    /// # Errors
    ///
    /// As [`Registry::put`].
    pub async fn create(&self, mut resource: Value) -> Result<Arc<Value>, PutError> {
        resource["id"] = Value::String(uuid::Uuid::new_v4().to_string());
        Ok(self.put(resource).await?.0)
    }

    /// Deletes a resource; whether it existed.
    ///
    /// # Errors
    ///
    /// The database failed.
    pub async fn delete(&self, ty: &str, id: &str) -> Result<bool, StoreError> {
        let existed = self.db.delete(ty, id).await?;
        let cached = self.cache.remove(ty, id);
        Ok(existed || cached)
    }

    /// Up to `limit` resources of `ty` matching every search parameter (see [`matches`], and
    /// those the search index answers: `identifier`, `based-on`, `code`, `date`...), by id.
    /// Types not kept in memory are read from the database: the candidates the indexed
    /// parameters select, else every row of the type, row by row, holding only the matches.
    ///
    /// # Errors
    ///
    /// The database could not be read.
    pub async fn search(
        &self,
        ty: &str,
        params: &[(String, String)],
        limit: usize,
    ) -> Result<Vec<Arc<Value>>, StoreError> {
        if is_cached(ty) {
            return Ok(self
                .cache
                .all(ty)
                .into_iter()
                .filter(|r| params.iter().all(|(k, v)| matches(r, k, v)))
                .take(limit)
                .collect());
        }
        let (conds, rest) = super::index::plan(ty, params);
        let keep: Filter = Arc::new(move |r| rest.iter().all(|(k, v)| matches(r, k, v)));
        self.db.select(ty, conds, limit, keep).await
    }

    /// Resources held in memory (the registry proper).
    pub fn cached_resources(&self) -> usize {
        self.cache.len()
    }

    /// Loads a FHIR Bundle of resources, keeping their ids; how many.
    ///
    /// # Errors
    ///
    /// As [`Registry::put`], and [`InvalidResource::NotABundle`].
    pub async fn bootstrap(&self, bundle: &Value) -> Result<usize, PutError> {
        let entries = bundle["entry"]
            .as_array()
            .ok_or(InvalidResource::NotABundle)?;
        // Every entry is checked before any is stored: a bad file loads nothing.
        let mut resources = Vec::with_capacity(entries.len());
        for e in entries {
            let resource = e
                .get("resource")
                .cloned()
                .ok_or(InvalidResource::EntryWithoutResource)?;
            check_address(&resource).map_err(InvalidResource::Address)?;
            resources.push(resource);
        }
        let n = resources.len();
        for resource in resources {
            self.put(resource).await?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewInbound, Recorded};

    fn inbound(agent: &str, callback: &str) -> NewInbound {
        NewInbound {
            agent_id: agent.into(),
            channel: "c".into(),
            remote: "r".into(),
            content_type: "t".into(),
            body: "b".into(),
            callback: callback.into(),
        }
    }

    #[tokio::test]
    async fn put_get_search_delete() {
        let s = Registry::open_sqlite(None).await.unwrap();
        let (dev, created) = s
            .put(json!({"resourceType":"Device","id":"d1","url":"mllp://h:1","identifier":[{"system":"urn:x","value":"42"}],"deviceName":[{"name":"Lab Analyzer"}]})).await
            .unwrap();
        assert!(created);
        assert_eq!(dev["meta"]["versionId"], "1");
        let (dev, created) = s
            .put(json!({"resourceType":"Device","id":"d1","url":"mllp://h:2"}))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(dev["meta"]["versionId"], "2");
        s.put(json!({"resourceType":"Device","id":"d2","url":"mllp://h:1","identifier":[{"system":"urn:x","value":"42"}],"deviceName":[{"name":"Lab Analyzer"}]})).await.unwrap();
        let q = async |k: &str, v: &str| {
            s.search("Device", &[(k.into(), v.into())], usize::MAX)
                .await
                .unwrap()
                .len()
        };
        assert_eq!(q("identifier", "42").await, 1);
        assert_eq!(q("identifier", "urn:x|42").await, 1);
        assert_eq!(q("identifier", "urn:y|42").await, 0);
        assert_eq!(q("name", "lab").await, 1);
        assert_eq!(q("url", "mllp://h:2").await, 1);
        assert_eq!(q("_id", "d1,d2").await, 2);
        assert_eq!(q("bogus", "x").await, 0);
        assert!(s.delete("Device", "d1").await.unwrap());
        assert!(s.get("Device", "d1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn survives_reopen() {
        let dir = std::env::temp_dir().join(format!("outpost-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.sqlite");
        {
            let s = Registry::open_sqlite(Some(&path)).await.unwrap();
            s.put(json!({"resourceType":"Agent","id":"a1","name":"Lab"}))
                .await
                .unwrap();
            assert_eq!(
                s.record_inbound(inbound("a1", "cb1")).await.unwrap(),
                Recorded::New(1)
            );
        }
        let s = Registry::open_sqlite(Some(&path)).await.unwrap();
        assert_eq!(s.get("Agent", "a1").await.unwrap().unwrap()["name"], "Lab");
        assert!(matches!(
            s.record_inbound(inbound("a1", "cb1")).await.unwrap(),
            Recorded::Duplicate(_)
        ));
        assert_eq!(s.inbound_count().await.unwrap(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn records_live_in_the_database_not_in_memory() {
        let dir = std::env::temp_dir().join(format!("outpost-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.sqlite");
        let s = Registry::open_sqlite(Some(&path)).await.unwrap();
        s.put(json!({"resourceType":"Device","id":"d1","url":"mllp://h:1"}))
            .await
            .unwrap();
        for i in 0..300 {
            s.put(
                json!({"resourceType":"AuditEvent","id":format!("ae-{i:03}"),
                "entity":[{"what":{"reference":format!("ServiceRequest/sr-{}", i % 3)}}]}),
            )
            .await
            .unwrap();
        }
        // Only the registry proper is held in memory.
        assert_eq!(s.cached_resources(), 1);
        assert_eq!(
            s.get("AuditEvent", "ae-042").await.unwrap().unwrap()["id"],
            "ae-042"
        );
        assert!(s.get("AuditEvent", "nope").await.unwrap().is_none());
        let q = vec![("entity".to_owned(), "ServiceRequest/sr-1".to_owned())];
        let all = s.search("AuditEvent", &q, usize::MAX).await.unwrap();
        assert_eq!(all.len(), 100);
        assert_eq!(all[0]["id"], "ae-001", "by id");
        let some = s.search("AuditEvent", &q, 7).await.unwrap();
        assert_eq!(some.len(), 7);
        assert_eq!(some[6]["id"], "ae-019");
        // An update is seen at once; a delete too.
        let (_, created) = s
            .put(json!({"resourceType":"AuditEvent","id":"ae-042","outcome":"8"}))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(
            s.get("AuditEvent", "ae-042").await.unwrap().unwrap()["outcome"],
            "8"
        );
        assert!(s.delete("AuditEvent", "ae-042").await.unwrap());
        assert!(!s.delete("AuditEvent", "ae-042").await.unwrap());
        drop(s);
        let s = Registry::open_sqlite(Some(&path)).await.unwrap();
        assert_eq!(s.cached_resources(), 1);
        assert_eq!(
            s.search("AuditEvent", &[], usize::MAX).await.unwrap().len(),
            299
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn client_secret_is_kept_on_update_without_one() {
        let s = Registry::open_sqlite(None).await.unwrap();
        s.put(
            json!({"resourceType":"ClientApplication","id":"c1","secret":"s3cret-s3cret-s3cret"}),
        )
        .await
        .unwrap();
        let hashed = s.get("ClientApplication", "c1").await.unwrap().unwrap()["secret"].clone();
        assert!(
            hashed
                .as_str()
                .unwrap()
                .starts_with("pbkdf2-sha256:600000:")
        );
        s.put(json!({"resourceType":"ClientApplication","id":"c1","name":"renamed"}))
            .await
            .unwrap();
        assert_eq!(
            s.get("ClientApplication", "c1").await.unwrap().unwrap()["secret"],
            hashed
        );
        let tokens = crate::auth::Tokens::new(b"0123456789abcdef0123456789abcdef");
        let logins = crate::auth::Logins::new(tokens, crate::LoginLimits::default());
        let app = s.cached("ClientApplication", "c1");
        assert_eq!(
            logins
                .check(app.clone(), "c1", "s3cret-s3cret-s3cret", None)
                .await,
            Ok(None)
        );
        assert!(
            logins
                .check(app, "c1", "s3cret-s3cret-s3creT", None)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn short_secrets_are_refused_and_hashed_ones_kept() {
        let s = Registry::open_sqlite(None).await.unwrap();
        for short in ["", "a", "fifteen-chars-x"] {
            let e = s
                .put(json!({"resourceType":"ClientApplication","id":"c1","secret":short}))
                .await
                .unwrap_err();
            assert!(
                e.to_string().contains(&format!(
                    "secret too short ({} characters, at least 16)",
                    short.len()
                )),
                "{e}"
            );
        }
        s.put(json!({"resourceType":"ClientApplication","id":"c1","secret":"sixteen-chars-xx"}))
            .await
            .unwrap();
        let legacy = "sha256:AAAAAAAAAAAAAAAAAAAAAA==:AAAA";
        s.put(json!({"resourceType":"ClientApplication","id":"c2","secret":legacy}))
            .await
            .unwrap();
        assert_eq!(
            s.cached("ClientApplication", "c2").unwrap()["secret"],
            legacy
        );
    }

    #[tokio::test]
    async fn rejects_bad_ids_and_types() {
        let s = Registry::open_sqlite(None).await.unwrap();
        assert!(
            s.put(json!({"resourceType":"Agent","id":"bad/id"}))
                .await
                .is_err()
        );
        assert!(
            s.put(json!({"resourceType":"Encounter","id":"x"}))
                .await
                .is_err()
        );
    }
}
