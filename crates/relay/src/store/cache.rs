//! The registry proper (agents, devices, endpoints, client applications, subscriptions) held in
//! memory: small, and read on every push, so reads on the push path never touch the disk or the
//! network. The database is written first; the cache follows.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// Resource types kept in memory.
pub(crate) const CACHED_TYPES: &[&str] = &[
    "Agent",
    "Device",
    "Endpoint",
    "ClientApplication",
    "Subscription",
];

/// Whether resources of `ty` are kept in memory.
pub(crate) fn is_cached(ty: &str) -> bool {
    CACHED_TYPES.contains(&ty)
}

type Resources = HashMap<String, HashMap<String, Arc<Value>>>;

/// The in-memory copy of the cached types, by type and id.
#[derive(Debug, Default)]
pub(crate) struct RegistryCache {
    resources: RwLock<Resources>,
}

impl RegistryCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Resources> {
        self.resources.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Resources> {
        self.resources.write().unwrap_or_else(|p| p.into_inner())
    }

    /// A cached resource.
    pub(crate) fn get(&self, ty: &str, id: &str) -> Option<Arc<Value>> {
        self.read().get(ty)?.get(id).cloned()
    }

    /// Every cached resource of a type, by id.
    pub(crate) fn all(&self, ty: &str) -> Vec<Arc<Value>> {
        let mut v: Vec<_> = self
            .read()
            .get(ty)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| crate::fhir::id_of(a).cmp(crate::fhir::id_of(b)));
        v
    }

    /// Keeps `value` as `ty/id`.
    pub(crate) fn insert(&self, ty: &str, id: &str, value: Arc<Value>) {
        self.write()
            .entry(ty.to_owned())
            .or_default()
            .insert(id.to_owned(), value);
    }

    /// Forgets `ty/id`; whether it was there.
    pub(crate) fn remove(&self, ty: &str, id: &str) -> bool {
        self.write()
            .get_mut(ty)
            .and_then(|m| m.remove(id))
            .is_some()
    }

    /// Replaces everything with `rows` (type, id, JSON); rows that are not JSON are errors.
    pub(crate) fn replace(
        &self,
        rows: Vec<(String, String, String)>,
    ) -> Result<(), super::StoreError> {
        let mut fresh = Resources::new();
        for (ty, id, content) in rows {
            let value: Value =
                serde_json::from_str(&content).map_err(|source| super::StoreError::NotJson {
                    ty: ty.clone(),
                    id: id.clone(),
                    source,
                })?;
            fresh.entry(ty).or_default().insert(id, Arc::new(value));
        }
        *self.write() = fresh;
        Ok(())
    }

    /// Number of resources held.
    pub(crate) fn len(&self) -> usize {
        self.read().values().map(HashMap::len).sum()
    }
}
