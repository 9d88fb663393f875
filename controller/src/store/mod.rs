//! The object store: every resource, its status and events, and an ordered
//! change log for watchers, in one sled database that only this process opens.
//!
//! # Guarantees
//! - A write returns only after it is on disk (`flush`). Concurrent writers
//!   share flushes: one flush covers every write made before it started.
//! - Every change gets the next value of one global counter, the
//!   `resourceVersion`. A write that names a `resourceVersion` fails with
//!   [`StoreError::Conflict`] when the object has moved on.
//! - Watchers see changes in `resourceVersion` order, only once they are
//!   durable, and can resume from a version as long as the log still holds it
//!   (else [`StoreError::Gone`]: relist).
//! - `generation` changes when, and only when, the spec changes.

mod events;
mod flush;
mod keys;
pub mod mirror;
mod open;
pub mod seal;
mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use haswarm_crds::selector::Selector;
use haswarm_crds::{Name, ObjectMeta, API_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

use keys::Key;

/// Layout version of the database. Bump it, and add a migration in
/// [`Store::open`], whenever keys or value formats change.
pub const SCHEMA_VERSION: u32 = 1;

/// Change-log entries kept for resuming watchers.
pub const LOG_RETAIN: u64 = 10_000;

/// Events kept per object; the oldest go first.
pub const EVENTS_PER_OBJECT: usize = 50;

/// How long a writer waits for its flush before reporting the store unavailable.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// A stored resource: user-owned spec and labels, store-owned metadata,
/// controller-owned status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// The kind, e.g. `PostgresCluster`.
    pub kind: String,
    /// Identity and bookkeeping.
    pub metadata: ObjectMeta,
    /// Desired state (validated and defaulted before it is stored).
    pub spec: Value,
    /// Observed state, as the controller last wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

impl Record {
    /// The record as the API shows it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// `metadata.resourceVersion` (always set on stored records).
    pub fn resource_version(&self) -> u64 {
        self.metadata.resource_version.unwrap_or(0)
    }
}

/// What kind of change a watch event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeType {
    /// The object was created.
    Added,
    /// The object changed (spec, metadata, status or deletion mark).
    Modified,
    /// The object is gone.
    Deleted,
}

/// One change, as watchers receive it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Added, Modified or Deleted.
    #[serde(rename = "type")]
    pub type_: ChangeType,
    /// The object after the change (for Deleted: as it was, with the deleting version).
    pub object: Record,
}

impl WatchEvent {
    /// The change's resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.object.resource_version()
    }
}

/// A write request for one object: what users own.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    /// The kind.
    pub kind: String,
    /// The name.
    pub name: Name,
    /// Labels, replacing the stored ones.
    pub labels: BTreeMap<String, String>,
    /// Annotations, replacing the stored ones.
    pub annotations: BTreeMap<String, String>,
    /// The defaulted, validated spec, replacing the stored one.
    pub spec: Value,
    /// Write only if the stored object is at this version.
    pub resource_version: Option<u64>,
}

/// How a write treats an existing or missing object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// Create or update (server-side apply).
    Apply,
    /// Create only; an existing object is [`StoreError::AlreadyExists`].
    Create,
    /// Update only; a missing object is [`StoreError::NotFound`].
    Replace,
}

/// What a write did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It did not exist and now does.
    Created,
    /// It existed and changed.
    Configured,
    /// It existed and already matched.
    Unchanged,
}

/// What a delete did.
#[derive(Clone, Debug, PartialEq)]
pub enum Deletion {
    /// The record is gone.
    Deleted(Record),
    /// Finalizers remain: the record is marked and stays until they are removed.
    Terminating(Record),
}

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFrom {
    /// Every current object as Added, then live changes.
    Now,
    /// Every change after this resourceVersion, then live changes.
    After(u64),
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No such object.
    #[error("{kind} {name:?} not found")]
    NotFound { kind: String, name: String },
    /// Create of an object that exists.
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: String, name: String },
    /// The object changed since the writer read it.
    #[error("{kind} {name:?} was modified: the write expected resourceVersion {expected}, the stored object is at {actual}; get it again and retry")]
    Conflict {
        kind: String,
        name: String,
        expected: u64,
        actual: u64,
    },
    /// Spec writes to an object being deleted.
    #[error("{kind} {name:?} is being deleted; wait until it is gone, then create it again")]
    Terminating { kind: String, name: String },
    /// The change log no longer holds the requested start.
    #[error("resourceVersion {requested} is too old (the log starts after {compacted}): list again and watch from the list's version")]
    Gone { requested: u64, compacted: u64 },
    /// A watcher fell too far behind the live stream.
    #[error(
        "the watcher fell behind by {0} changes: list again and watch from the list's version"
    )]
    Lagged(u64),
    /// A stored value could not be read back.
    #[error("stored value under {key} is unreadable: {source}")]
    Corrupt {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// The database was written by a newer haswarm.
    #[error("the store at {path} has layout version {found}; this haswarmd understands up to {supported}: upgrade haswarmd")]
    TooNew {
        path: String,
        found: u32,
        supported: u32,
    },
    /// The database could not be opened (often: another haswarmd holds it).
    #[error("cannot open the store at {path}: {source} (is another haswarmd using this data directory?)")]
    Open {
        path: String,
        #[source]
        source: sled::Error,
    },
    /// The folder belongs to another store than the one asked for.
    #[error("the store at {path} has id {found}, but haswarmd was started for store {wanted}: point --data-dir at that store's folder, or start with --store-id {found}")]
    IdMismatch {
        path: String,
        found: String,
        wanted: String,
    },
    /// A stored credential does not open.
    #[error("stored credential: {0}")]
    Seal(#[from] seal::SealError),
    /// The mirror in Swarm could not be read or written.
    #[error(transparent)]
    Mirror(#[from] mirror::MirrorError),
    /// A write could not be made durable in time.
    #[error("the store could not make the write durable within {0:?}; it may or may not have been applied")]
    Unavailable(Duration),
    /// sled failed.
    #[error("store I/O failed: {0}")]
    Sled(#[from] sled::Error),
}

struct Writer {
    /// The last resourceVersion handed out.
    rv: u64,
    /// Log entries with rv <= this are compacted away.
    compacted: u64,
    /// Changes made but not yet flushed, in rv order; published after the flush.
    pending: Vec<Arc<WatchEvent>>,
    /// Counts every change, credentials included: what a writer waits on.
    seq: u64,
    /// Objects changed since the last flush, for the mirror.
    dirty: BTreeSet<mirror::ObjectKey>,
}

struct Inner {
    /// The data folder, for the fsync that follows sled's flush.
    path: std::path::PathBuf,
    /// The store's identity; Swarm objects carry it so that several haswarm
    /// daemons on one swarm never take each other's objects for orphans.
    id: String,
    db: sled::Db,
    writer: Mutex<Writer>,
    /// The highest resourceVersion whose change has been published to watchers.
    published: AtomicU64,
    live: broadcast::Sender<Arc<WatchEvent>>,
    flush: flush::Flusher,
    /// The copy in Swarm's Raft, when mirroring is on.
    mirror: Option<Arc<mirror::Mirror>>,
}

/// Handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

fn read_u64(db: &sled::Db, key: &[u8]) -> Result<u64, StoreError> {
    Ok(db
        .get(key)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

fn decode<T: for<'de> Deserialize<'de>>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our record types hold only JSON-representable data.
    serde_json::to_vec(value).unwrap_or_default()
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Writer> {
        // A panic while holding the lock cannot leave sled half-written (each
        // write is one atomic batch), so the state behind a poisoned lock is sound.
        self.inner
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The store's identity (a uuid made when the store was created).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Whether every change is mirrored in Swarm before it is acknowledged.
    pub fn is_mirrored(&self) -> bool {
        self.inner.mirror.is_some()
    }

    /// The latest resourceVersion handed out.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// One object.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or I/O and decoding errors.
    pub fn get(&self, kind: &str, name: &str) -> Result<Record, StoreError> {
        let key = Key::object(kind, name);
        match self.inner.db.get(&key)? {
            Some(v) => decode(&key, &v),
            None => Err(StoreError::NotFound {
                kind: kind.to_owned(),
                name: name.to_owned(),
            }),
        }
    }

    /// Every object of `kind` whose labels match, sorted by name, and the
    /// store's resourceVersion at the time of the list (to watch from).
    ///
    /// # Errors
    /// I/O and decoding errors.
    pub fn list(&self, kind: &str, selector: &Selector) -> Result<(Vec<Record>, u64), StoreError> {
        let rv = self.inner.published.load(Ordering::SeqCst);
        let mut out = Vec::new();
        for item in self.inner.db.scan_prefix(Key::object_prefix(kind)) {
            let (k, v) = item?;
            let r: Record = decode(&k, &v)?;
            if selector.matches(&r.metadata.labels) {
                out.push(r);
            }
        }
        Ok((out, rv))
    }

    /// Whether an object exists.
    pub fn contains(&self, kind: &str, name: &str) -> bool {
        self.inner
            .db
            .contains_key(Key::object(kind, name))
            .unwrap_or(false)
    }

    /// Writes a batch of objects as one unit: all are written or none.
    /// With `dry_run`, computes the outcomes and writes nothing.
    ///
    /// # Errors
    /// The first object's conflict, existence or termination error; nothing is written then.
    pub async fn write(
        &self,
        batch: Vec<Desired>,
        mode: WriteMode,
        dry_run: bool,
    ) -> Result<Vec<(Outcome, Record)>, StoreError> {
        let last_rv = {
            let mut w = self.lock();
            let mut rv = w.rv;
            let mut results = Vec::with_capacity(batch.len());
            let mut sled_batch = sled::Batch::default();
            let mut events = Vec::new();
            let now = Utc::now();
            for d in batch {
                let key = Key::object(&d.kind, d.name.as_str());
                let existing: Option<Record> = match self.inner.db.get(&key)? {
                    Some(v) => Some(decode(&key, &v)?),
                    None => None,
                };
                let err_name = || (d.kind.clone(), d.name.to_string());
                let (outcome, record) = match existing {
                    None => {
                        if mode == WriteMode::Replace {
                            let (kind, name) = err_name();
                            return Err(StoreError::NotFound { kind, name });
                        }
                        if let Some(expected) = d.resource_version.filter(|v| *v != 0) {
                            let (kind, name) = err_name();
                            return Err(StoreError::Conflict {
                                kind,
                                name,
                                expected,
                                actual: 0,
                            });
                        }
                        rv += 1;
                        let mut meta = ObjectMeta::named(d.name.clone());
                        meta.labels = d.labels;
                        meta.annotations = d.annotations;
                        meta.uid = Some(uuid::Uuid::new_v4().to_string());
                        meta.generation = Some(1);
                        meta.resource_version = Some(rv);
                        meta.creation_timestamp = Some(now);
                        let record = Record {
                            api_version: API_VERSION.into(),
                            kind: d.kind.clone(),
                            metadata: meta,
                            spec: d.spec,
                            status: None,
                        };
                        (Outcome::Created, record)
                    }
                    Some(old) => {
                        if mode == WriteMode::Create {
                            let (kind, name) = err_name();
                            return Err(StoreError::AlreadyExists { kind, name });
                        }
                        if let Some(expected) = d.resource_version {
                            if expected != old.resource_version() {
                                let (kind, name) = err_name();
                                return Err(StoreError::Conflict {
                                    kind,
                                    name,
                                    expected,
                                    actual: old.resource_version(),
                                });
                            }
                        }
                        let spec_changed = old.spec != d.spec;
                        if old.metadata.labels == d.labels
                            && old.metadata.annotations == d.annotations
                            && !spec_changed
                        {
                            (Outcome::Unchanged, old)
                        } else {
                            if old.metadata.deletion_timestamp.is_some() {
                                let (kind, name) = err_name();
                                return Err(StoreError::Terminating { kind, name });
                            }
                            rv += 1;
                            let mut record = old;
                            record.metadata.labels = d.labels;
                            record.metadata.annotations = d.annotations;
                            if spec_changed {
                                record.metadata.generation =
                                    Some(record.metadata.generation.unwrap_or(0) + 1);
                                record.spec = d.spec;
                            }
                            record.metadata.resource_version = Some(rv);
                            (Outcome::Configured, record)
                        }
                    }
                };
                if outcome != Outcome::Unchanged {
                    sled_batch.insert(key, encode(&record));
                    let type_ = if outcome == Outcome::Created {
                        ChangeType::Added
                    } else {
                        ChangeType::Modified
                    };
                    events.push(WatchEvent {
                        type_,
                        object: record.clone(),
                    });
                }
                results.push((outcome, record));
            }
            if dry_run || events.is_empty() {
                return Ok(results);
            }
            let seq = self.commit(&mut w, sled_batch, events, rv)?;
            drop(w);
            (seq, results)
        };
        let (seq, results) = last_rv;
        self.inner.flush.wait_durable(seq, FLUSH_TIMEOUT).await?;
        Ok(results)
    }

    /// Appends the change log entries and the new counter to `batch`, applies
    /// it atomically and queues the changes for publication after the flush.
    /// Returns the change's sequence number, to wait on.
    fn commit(
        &self,
        w: &mut Writer,
        mut batch: sled::Batch,
        events: Vec<WatchEvent>,
        rv: u64,
    ) -> Result<u64, StoreError> {
        for e in &events {
            batch.insert(Key::log(e.resource_version()), encode(e));
        }
        batch.insert(Key::RV, &rv.to_be_bytes());
        // Compact in steps so no single write carries a large deletion.
        let mut compacted = w.compacted;
        let horizon = rv.saturating_sub(LOG_RETAIN);
        if horizon > compacted {
            let until = horizon.min(compacted + 1_000);
            for old in (compacted + 1)..=until {
                batch.remove(Key::log(old));
            }
            compacted = until;
            batch.insert(Key::COMPACTED, &compacted.to_be_bytes());
        }
        self.inner.db.apply_batch(batch)?;
        w.rv = rv;
        w.compacted = compacted;
        if self.inner.mirror.is_some() {
            w.dirty.extend(
                events
                    .iter()
                    .map(|e| (e.object.kind.clone(), e.object.metadata.name.to_string())),
            );
        }
        w.pending.extend(events.into_iter().map(Arc::new));
        w.seq += 1;
        self.inner.flush.request(w.seq);
        Ok(w.seq)
    }

    /// Applies a change to one stored object under the write lock, bumping its
    /// resourceVersion; `change` returns false to leave it untouched.
    async fn modify(
        &self,
        kind: &str,
        name: &str,
        expected_rv: Option<u64>,
        change: impl FnOnce(&mut Record) -> bool,
    ) -> Result<Record, StoreError> {
        self.modify_with(kind, name, expected_rv, change, sled::Batch::default())
            .await
    }

    /// [`Store::modify`], applying `batch` (writes beside the object) in the
    /// same atomic write.
    async fn modify_with(
        &self,
        kind: &str,
        name: &str,
        expected_rv: Option<u64>,
        change: impl FnOnce(&mut Record) -> bool,
        mut batch: sled::Batch,
    ) -> Result<Record, StoreError> {
        let (seq, record) = {
            let mut w = self.lock();
            let mut record = self.get(kind, name)?;
            if let Some(expected) = expected_rv {
                if expected != record.resource_version() {
                    return Err(StoreError::Conflict {
                        kind: kind.to_owned(),
                        name: name.to_owned(),
                        expected,
                        actual: record.resource_version(),
                    });
                }
            }
            if !change(&mut record) {
                return Ok(record);
            }
            let rv = w.rv + 1;
            record.metadata.resource_version = Some(rv);
            let key = Key::object(kind, name);
            let gone = record.metadata.deletion_timestamp.is_some()
                && record.metadata.finalizers.is_empty();
            let event = if gone {
                batch.remove(key);
                batch.remove(Key::events(kind, name));
                for item in self
                    .inner
                    .db
                    .scan_prefix(Key::credential_prefix(kind, name))
                {
                    let (k, _) = item?;
                    batch.remove(k);
                }
                WatchEvent {
                    type_: ChangeType::Deleted,
                    object: record.clone(),
                }
            } else {
                batch.insert(key, encode(&record));
                WatchEvent {
                    type_: ChangeType::Modified,
                    object: record.clone(),
                }
            };
            let seq = self.commit(&mut w, batch, vec![event], rv)?;
            (seq, record)
        };
        self.inner.flush.wait_durable(seq, FLUSH_TIMEOUT).await?;
        Ok(record)
    }

    /// Replaces the status (the controller's subresource); spec and generation stay.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Conflict`] when `expected_rv` is stale.
    pub async fn write_status(
        &self,
        kind: &str,
        name: &str,
        status: Value,
        expected_rv: Option<u64>,
    ) -> Result<Record, StoreError> {
        self.modify(kind, name, expected_rv, |r| {
            if r.status.as_ref() == Some(&status) {
                return false;
            }
            r.status = Some(status);
            true
        })
        .await
    }

    /// Replaces the finalizers (the controller's). Removing the last one from
    /// an object marked for deletion removes the object.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Conflict`].
    pub async fn write_finalizers(
        &self,
        kind: &str,
        name: &str,
        finalizers: Vec<String>,
        expected_rv: Option<u64>,
    ) -> Result<Record, StoreError> {
        self.modify(kind, name, expected_rv, |r| {
            if r.metadata.finalizers == finalizers {
                return false;
            }
            r.metadata.finalizers = finalizers;
            true
        })
        .await
    }

    /// Deletes an object: at once when it has no finalizers, else marks it
    /// (`deletionTimestamp`) for the controller to clean up.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Conflict`].
    pub async fn delete(
        &self,
        kind: &str,
        name: &str,
        expected_rv: Option<u64>,
    ) -> Result<Deletion, StoreError> {
        let now = Utc::now();
        let record = self
            .modify(kind, name, expected_rv, |r| {
                if r.metadata.deletion_timestamp.is_some() {
                    return false;
                }
                r.metadata.deletion_timestamp = Some(now);
                true
            })
            .await?;
        if record.metadata.finalizers.is_empty() {
            Ok(Deletion::Deleted(record))
        } else {
            Ok(Deletion::Terminating(record))
        }
    }
}

#[cfg(test)]
mod tests;
