//! The store's mirror in Swarm's Raft: each object's newest state as one
//! Swarm config, written before a change is acknowledged, so that a haswarmd
//! on another manager rebuilds the store when this one's node is gone.
//!
//! # What a mirror config holds
//! The whole record (spec, metadata, finalizers, deletion mark and status:
//! the status carries flow phases, such as a rotation's, that cannot all be
//! observed again) and the object's credentials, each sealed ([`super::seal`]).
//! Events are not mirrored. Configs are immutable, so a change creates a new
//! config and the one it supersedes is removed after the acknowledgement;
//! a rebuild keeps the newest per object and removes the rest.
//!
//! The Swarm side is a [`MirrorSink`], implemented by `swarm::mirror`; this
//! module holds the decisions, which are pure and table-tested.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::keys::Key;
use super::seal::{is_sealed, SealError, SealKey};
use super::Record;
use super::{decode, StoreError};

/// Label on every mirror config: the id of the store it mirrors.
pub const MIRROR_OF: &str = "io.haswarm.mirror-of";
/// Label: the mirrored object's kind.
pub const MIRROR_KIND: &str = "io.haswarm.mirror-kind";
/// Label: the mirrored object's name.
pub const MIRROR_NAME: &str = "io.haswarm.mirror-name";
/// Label: the mirrored record's resourceVersion.
pub const MIRROR_RV: &str = "io.haswarm.mirror-rv";

/// Configs created or removed at once while syncing a group of changes.
const PARALLEL: usize = 16;

/// An object: kind and name.
pub type ObjectKey = (String, String);

/// Why the mirror could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The Swarm refused or did not answer.
    #[error("the store's mirror in Swarm: {0}")]
    Swarm(String),
    /// A mirror config's content is not a mirrored record.
    #[error("mirror config {name} is unreadable: {reason}")]
    Corrupt { name: String, reason: String },
    /// The store could not be read to mirror it.
    #[error("reading the store to mirror it: {0}")]
    Store(String),
    /// A sealed credential does not open: the key is not this store's.
    #[error("mirror config {name}: {source}; is --mirror-key-file this store's key?")]
    Seal {
        name: String,
        #[source]
        source: SealError,
    },
}

/// A mirror config as the Swarm lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    /// The config's id.
    pub id: String,
    /// The config's name.
    pub name: String,
    /// Its labels.
    pub labels: HashMap<String, String>,
    /// Its content.
    pub data: Vec<u8>,
}

/// Where mirror configs are kept: Swarm's config API, in production.
pub trait MirrorSink: Send + Sync {
    /// Every config labelled [`MIRROR_OF`] `store_id`.
    fn list(&self, store_id: &str) -> BoxFuture<'_, Result<Vec<Listed>, MirrorError>>;
    /// Creates a config; returns its id.
    fn create(
        &self,
        name: String,
        labels: HashMap<String, String>,
        data: Vec<u8>,
    ) -> BoxFuture<'_, Result<String, MirrorError>>;
    /// Removes a config; one already gone is not an error.
    fn remove(&self, id: String) -> BoxFuture<'_, Result<(), MirrorError>>;
}

/// The content of one mirror config.
#[derive(Debug, Serialize, Deserialize)]
struct Doc {
    record: Record,
    /// Purpose to sealed value.
    #[serde(default)]
    credentials: BTreeMap<String, String>,
}

/// One mirrored object, read back.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    /// The config's id.
    pub id: String,
    /// The record.
    pub record: Record,
    /// Purpose to credential, sealed as the store keeps it.
    pub credentials: BTreeMap<String, Vec<u8>>,
}

impl Loaded {
    /// Kind and name.
    pub fn key(&self) -> ObjectKey {
        (
            self.record.kind.clone(),
            self.record.metadata.name.to_string(),
        )
    }
}

/// An object as the store holds it now, or `None` when it is gone.
#[derive(Clone, Debug, PartialEq)]
pub struct Current {
    /// The record.
    pub record: Record,
    /// Purpose to credential as the store keeps it (sealed, or in clear in
    /// a folder from before mirroring was on).
    pub credentials: BTreeMap<String, Vec<u8>>,
}

/// What a rebuild does, decided from the store and the mirror.
#[derive(Debug, Default, PartialEq)]
pub struct Rebuild {
    /// Objects the store lacks or holds older: written into it from the mirror.
    pub import: Vec<Loaded>,
    /// Objects newer in the store, or missing from the mirror: pushed to it.
    pub push: BTreeSet<ObjectKey>,
    /// Configs to remove: superseded ones, and those of objects the store
    /// deleted after they were mirrored.
    pub remove: Vec<String>,
    /// The store's next resourceVersion must come after this.
    pub rv: u64,
    /// The newest config of each object that stays mirrored, by id and rv.
    pub mirrored: BTreeMap<ObjectKey, (String, u64)>,
}

/// Decides a rebuild. `store_rv` is the store's last resourceVersion and
/// `store` the version of each object it holds. An object the store lacks
/// but mirrored at or below `store_rv` was deleted after it was mirrored (the
/// crash came before the mirror heard of it); one mirrored above it is newer
/// than this store copy (an empty or older folder) and is imported.
pub fn plan_rebuild(
    store_rv: u64,
    store: &BTreeMap<ObjectKey, u64>,
    mirror: Vec<Loaded>,
) -> Rebuild {
    let mut plan = Rebuild {
        rv: store_rv,
        ..Rebuild::default()
    };
    let mut newest: BTreeMap<ObjectKey, Loaded> = BTreeMap::new();
    for l in mirror {
        plan.rv = plan.rv.max(l.record.resource_version());
        match newest.entry(l.key()) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(l);
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                if l.record.resource_version() > o.get().record.resource_version() {
                    plan.remove.push(o.insert(l).id);
                } else {
                    plan.remove.push(l.id);
                }
            }
        }
    }
    for (key, l) in newest {
        let m = l.record.resource_version();
        match store.get(&key) {
            Some(&r) if r >= m => {
                if r > m {
                    plan.push.insert(key.clone());
                }
                plan.mirrored.insert(key, (l.id, m));
            }
            None if store_rv >= m => plan.remove.push(l.id),
            _ => {
                plan.mirrored.insert(key, (l.id.clone(), m));
                plan.import.push(l);
            }
        }
    }
    for key in store.keys() {
        if !plan.mirrored.contains_key(key) {
            plan.push.insert(key.clone());
        }
    }
    plan
}

/// The mirror of one store.
pub struct Mirror {
    sink: Arc<dyn MirrorSink>,
    key: SealKey,
    store_id: String,
    /// The newest config of each mirrored object: its id and record version.
    mirrored: tokio::sync::Mutex<BTreeMap<ObjectKey, (String, u64)>>,
    /// Superseded configs, removed after the change is acknowledged.
    superseded: std::sync::Mutex<Vec<String>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("store_id", &self.store_id)
            .finish_non_exhaustive()
    }
}

/// The name of a new mirror config: unique, under Swarm's 64 characters.
fn config_name(store_id: &str, rv: u64) -> String {
    let id: String = store_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    let salt: u32 = rand::random();
    format!("haswarm-mirror-{id}-{rv}-{salt:08x}")
}

impl Mirror {
    /// The mirror of store `store_id` in `sink`, sealing with `key`.
    pub fn new(sink: Arc<dyn MirrorSink>, key: SealKey, store_id: &str) -> Self {
        Self {
            sink,
            key,
            store_id: store_id.to_owned(),
            mirrored: tokio::sync::Mutex::new(BTreeMap::new()),
            superseded: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The id of the store this mirrors.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// The key credentials are sealed with, in the store and in the mirror.
    pub fn key(&self) -> &SealKey {
        &self.key
    }

    /// Reads and opens every mirror config of this store.
    ///
    /// # Errors
    /// The sink's errors; [`MirrorError::Corrupt`] or [`MirrorError::Seal`]
    /// for a config that cannot be read.
    pub async fn load(&self) -> Result<Vec<Loaded>, MirrorError> {
        let mut out = Vec::new();
        for l in self.sink.list(&self.store_id).await? {
            let corrupt = |reason: String| MirrorError::Corrupt {
                name: l.name.clone(),
                reason,
            };
            let doc: Doc = serde_json::from_slice(&l.data).map_err(|e| corrupt(e.to_string()))?;
            let (kind, name) = (
                doc.record.kind.clone(),
                doc.record.metadata.name.to_string(),
            );
            let mut credentials = BTreeMap::new();
            for (purpose, sealed) in doc.credentials {
                let sealed = sealed.into_bytes();
                // Checked here, so that a wrong key stops the start, not a reconcile.
                let opened = if is_sealed(&sealed) {
                    self.key
                        .open_credential(&self.store_id, (&kind, &name, &purpose), &sealed)
                        .map(drop)
                } else {
                    Err(SealError::Open)
                };
                opened.map_err(|source| MirrorError::Seal {
                    name: l.name.clone(),
                    source,
                })?;
                credentials.insert(purpose, sealed);
            }
            out.push(Loaded {
                id: l.id,
                record: doc.record,
                credentials,
            });
        }
        Ok(out)
    }

    /// Takes what a rebuild left mirrored as the starting point, and removes
    /// the configs it found superseded.
    pub async fn adopt(&self, plan: &Rebuild) -> Result<(), MirrorError> {
        *self.mirrored.lock().await = plan.mirrored.clone();
        self.remove_all(plan.remove.clone()).await
    }

    async fn remove_all(&self, ids: Vec<String>) -> Result<(), MirrorError> {
        futures::stream::iter(ids.into_iter().map(|id| self.sink.remove(id)))
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    /// Brings the mirror of `objects` up to the store's state: a config for
    /// each whose record changed, the configs of each that is gone removed.
    /// `read` gives an object's current state (`None`: it is gone).
    ///
    /// # Errors
    /// The sink's; what succeeded stays done, and a retry does the rest.
    pub async fn sync(
        &self,
        objects: &BTreeSet<ObjectKey>,
        read: impl Fn(&str, &str) -> Result<Option<Current>, MirrorError>,
    ) -> Result<(), MirrorError> {
        let mut mirrored = self.mirrored.lock().await;
        let mut creates = Vec::new();
        let mut gone = Vec::new();
        for key in objects {
            let mirrored_rv = mirrored.get(key).map(|(_, rv)| *rv);
            match read(&key.0, &key.1)? {
                Some(cur) if Some(cur.record.resource_version()) == mirrored_rv => {}
                Some(cur) => creates.push((key.clone(), cur)),
                None => {
                    if let Some((id, _)) = mirrored.get(key) {
                        gone.push((key.clone(), id.clone()));
                    }
                }
            }
        }
        let made: Vec<(ObjectKey, String, u64)> =
            futures::stream::iter(creates.into_iter().map(|(key, cur)| async move {
                let rv = cur.record.resource_version();
                let (name, labels, data) = self.render(&cur);
                let id = self.sink.create(name, labels, data).await?;
                Ok::<_, MirrorError>((key, id, rv))
            }))
            .buffer_unordered(PARALLEL)
            .try_collect()
            .await?;
        let mut superseded = Vec::new();
        for (key, id, rv) in made {
            if let Some((old, _)) = mirrored.insert(key, (id, rv)) {
                superseded.push(old);
            }
        }
        self.superseded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(superseded);
        // A deletion is acknowledged only once its config is gone: a rebuild
        // from an empty folder would bring the object back otherwise.
        for (key, id) in gone {
            self.sink.remove(id).await?;
            mirrored.remove(&key);
        }
        Ok(())
    }

    /// Removes the configs that newer ones superseded. Best effort: a
    /// leftover is removed by the next rebuild.
    pub async fn prune(&self) {
        let ids = std::mem::take(
            &mut *self
                .superseded
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if let Err(e) = self.remove_all(ids).await {
            tracing::debug!(error = %e, "superseded mirror configs stay until the next start");
        }
    }

    /// A config's name, labels and content for an object's state.
    fn render(&self, cur: &Current) -> (String, HashMap<String, String>, Vec<u8>) {
        let kind = cur.record.kind.clone();
        let name = cur.record.metadata.name.to_string();
        let rv = cur.record.resource_version();
        let credentials = cur
            .credentials
            .iter()
            .map(|(purpose, stored)| {
                let sealed = if is_sealed(stored) {
                    stored.clone()
                } else {
                    self.key
                        .seal_credential(&self.store_id, (&kind, &name, purpose), stored)
                };
                (
                    purpose.clone(),
                    String::from_utf8_lossy(&sealed).into_owned(),
                )
            })
            .collect();
        let doc = Doc {
            record: cur.record.clone(),
            credentials,
        };
        let data = serde_json::to_vec(&doc).unwrap_or_default();
        let labels = HashMap::from([
            (
                crate::swarm::labels::MANAGED_BY.to_owned(),
                crate::swarm::labels::MANAGER.to_owned(),
            ),
            // Also the store's ownership label: whatever cleans up after a
            // store finds its mirror too.
            (
                crate::swarm::labels::INSTANCE.to_owned(),
                self.store_id.clone(),
            ),
            (MIRROR_OF.to_owned(), self.store_id.clone()),
            (MIRROR_KIND.to_owned(), kind),
            (MIRROR_NAME.to_owned(), name),
            (MIRROR_RV.to_owned(), rv.to_string()),
        ]);
        (config_name(&self.store_id, rv), labels, data)
    }
}

impl super::Inner {
    /// An object and its credentials as they are now, for the mirror; read
    /// under the write lock so that the two are of one version.
    pub(super) fn current(&self, kind: &str, name: &str) -> Result<Option<Current>, MirrorError> {
        let failed = |e: StoreError| MirrorError::Store(e.to_string());
        let _w = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = Key::object(kind, name);
        let Some(v) = self.db.get(&key).map_err(|e| failed(e.into()))? else {
            return Ok(None);
        };
        let record: Record = decode(&key, &v).map_err(failed)?;
        let prefix = Key::credential_prefix(kind, name);
        let mut credentials = BTreeMap::new();
        for item in self.db.scan_prefix(&prefix) {
            let (k, v) = item.map_err(|e| failed(e.into()))?;
            let purpose = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            credentials.insert(purpose, v.to_vec());
        }
        Ok(Some(Current {
            record,
            credentials,
        }))
    }
}

#[cfg(test)]
mod tests;
