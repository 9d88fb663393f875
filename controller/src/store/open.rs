//! Opening the store: the folder made private, the layout checked, and, with
//! a mirror, the store rebuilt from it before anything is served.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::keys::Key;
use super::mirror::{self, Mirror, ObjectKey};
use super::{
    decode, encode, flush, read_u64, Inner, Record, Store, StoreError, Writer, FLUSH_TIMEOUT,
    SCHEMA_VERSION,
};

/// Makes the folder 0700 and everything in it 0600 (folders 0700): the store
/// holds generated passwords. A store made by an older haswarm is fixed too.
fn make_private(path: &Path) -> std::io::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let p = entry.path();
        if entry.file_type()?.is_dir() {
            make_private(&p)?;
        } else {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

fn sled_open(path: &Path) -> Result<sled::Db, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(|e| open_err(sled::Error::Io(e)))?;
    make_private(path).map_err(|e| open_err(sled::Error::Io(e)))?;
    let db = sled::Config::new()
        .path(path)
        // Writes are flushed explicitly before they are acknowledged;
        // sled's own timer would only add flushes.
        .flush_every_ms(None)
        .open()
        .map_err(open_err)?;
    // The files sled just made.
    make_private(path).map_err(|e| open_err(sled::Error::Io(e)))?;
    Ok(db)
}

/// Checks the layout version, and gives a new store its id: `want` when
/// given, else a fresh uuid. An existing store keeps its id, and must have
/// `want` when one is given.
fn identify(db: &sled::Db, path: &Path, want: Option<&str>) -> Result<String, StoreError> {
    let found = db
        .get(Key::SCHEMA)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_ref()).ok())
        .map(u32::from_be_bytes);
    match found {
        None => {
            let id = want.map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned);
            db.insert(Key::SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
            db.insert(Key::ID, id.as_bytes())?;
            db.flush()?;
            return Ok(id);
        }
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StoreError::TooNew {
                path: path.display().to_string(),
                found: v,
                supported: SCHEMA_VERSION,
            })
        }
        // Version 1 is the first layout: nothing to migrate yet.
        Some(_) => {}
    }
    let id = db
        .get(Key::ID)?
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .unwrap_or_default();
    match want {
        Some(w) if w != id => Err(StoreError::IdMismatch {
            path: path.display().to_string(),
            found: id,
            wanted: w.to_owned(),
        }),
        _ => Ok(id),
    }
}

impl Store {
    /// Opens (or creates) the store in `path`, without a mirror. Must run
    /// inside a tokio runtime: it starts the task that flushes writes.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the folder cannot be opened or is locked by
    /// another process, [`StoreError::TooNew`] for a newer layout.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled_open(path)?;
        let id = identify(&db, path, None)?;
        Self::start(path, db, id, None, BTreeSet::new())
    }

    /// Opens (or creates) the store in `path` with the id `id`, rebuilt from
    /// `mirror`: what the mirror holds newer (or the folder lacks) is
    /// written into the folder, what the folder holds newer is pushed to the
    /// mirror, and only then does this return. Every later change is
    /// mirrored before it is acknowledged.
    ///
    /// # Errors
    /// As [`Store::open`]; [`StoreError::IdMismatch`] for a folder of another
    /// store; [`StoreError::Mirror`] when the mirror cannot be read or written.
    pub async fn open_mirrored(path: &Path, mirror: Mirror) -> Result<Self, StoreError> {
        let db = sled_open(path)?;
        let id = identify(&db, path, Some(mirror.store_id()))?;
        let started = std::time::Instant::now();
        let loaded = mirror.load().await?;
        let store_rv = read_u64(&db, Key::RV)?;
        let mut held = BTreeMap::new();
        for item in db.scan_prefix(Key::OBJECT_PREFIX) {
            let (k, v) = item?;
            let r: Record = decode(&k, &v)?;
            held.insert(
                (r.kind.clone(), r.metadata.name.to_string()),
                r.resource_version(),
            );
        }
        let plan = mirror::plan_rebuild(store_rv, &held, loaded);
        let imported = plan.import.len();
        let mut batch = sled::Batch::default();
        for l in &plan.import {
            let (kind, name) = l.key();
            for item in db.scan_prefix(Key::credential_prefix(&kind, &name)) {
                batch.remove(item?.0);
            }
            for (purpose, value) in &l.credentials {
                batch.insert(Key::credential(&kind, &name, purpose), value.as_slice());
            }
            batch.insert(Key::object(&kind, &name), encode(&l.record));
        }
        // Credentials a store without a key kept in clear are sealed now.
        let imported_keys: BTreeSet<ObjectKey> =
            plan.import.iter().map(mirror::Loaded::key).collect();
        for item in db.scan_prefix(Key::CREDENTIAL_PREFIX) {
            let (k, v) = item?;
            let text = String::from_utf8_lossy(&k[Key::CREDENTIAL_PREFIX.len()..]).into_owned();
            let mut parts = text.splitn(3, ':');
            let (Some(kind), Some(name), Some(purpose)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if super::seal::is_sealed(&v)
                || imported_keys.contains(&(kind.to_owned(), name.to_owned()))
            {
                continue;
            }
            let sealed = mirror.key().seal_credential(&id, (kind, name, purpose), &v);
            batch.insert(k, sealed);
        }
        batch.insert(Key::RV, &plan.rv.to_be_bytes());
        db.apply_batch(batch)?;
        db.flush()?;
        flush::sync_to_disk(path).map_err(sled::Error::Io)?;
        mirror.adopt(&plan).await?;
        let pushed = plan.push.len();
        let store = Self::start(path, db, id, Some(Arc::new(mirror)), plan.push)?;
        // The folder's newer objects reach the mirror before anything is served.
        store.inner.flush.request(1);
        store.inner.flush.wait_durable(1, FLUSH_TIMEOUT).await?;
        tracing::info!(
            imported,
            pushed,
            took_ms = started.elapsed().as_millis() as u64,
            "store rebuilt from its mirror in Swarm"
        );
        Ok(store)
    }

    fn start(
        path: &Path,
        db: sled::Db,
        id: String,
        mirror: Option<Arc<Mirror>>,
        dirty: BTreeSet<ObjectKey>,
    ) -> Result<Self, StoreError> {
        let rv = read_u64(&db, Key::RV)?;
        let compacted = read_u64(&db, Key::COMPACTED)?;
        // Change 1 stands for the objects to push: durable once the first
        // flush pushed them.
        let seq = 1;
        let durable = u64::from(dirty.is_empty());
        let (live, _) = broadcast::channel(4096);
        let inner = Arc::new(Inner {
            path: path.to_path_buf(),
            id,
            db,
            writer: Mutex::new(Writer {
                rv,
                compacted,
                pending: Vec::new(),
                seq,
                dirty,
            }),
            published: AtomicU64::new(rv),
            live,
            flush: flush::Flusher::new(durable),
            mirror,
        });
        flush::spawn(Arc::downgrade(&inner), inner.flush.clone());
        Ok(Self { inner })
    }
}
