//! The rebuild's decisions as a table, and the store with its mirror kept in
//! memory (the Swarm side is tested against a real engine in
//! `tests/tests/mirror.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use haswarm_crds::{Name, ObjectMeta, API_VERSION};
use serde_json::json;

use super::*;
use crate::store::tests::desired;
use crate::store::{Store, StoreError, WriteMode};

fn record(kind: &str, name: &str, rv: u64) -> Record {
    let mut meta = ObjectMeta::named(Name::parse(name).expect("name"));
    meta.resource_version = Some(rv);
    Record {
        api_version: API_VERSION.into(),
        kind: kind.into(),
        metadata: meta,
        spec: json!({}),
        status: None,
    }
}

fn loaded(id: &str, name: &str, rv: u64) -> Loaded {
    Loaded {
        id: id.into(),
        record: record("K", name, rv),
        credentials: BTreeMap::new(),
    }
}

fn key(name: &str) -> ObjectKey {
    ("K".into(), name.into())
}

#[test]
fn the_rebuild_takes_the_newer_side_of_each_object() {
    struct Row {
        what: &'static str,
        store_rv: u64,
        store: Vec<(&'static str, u64)>,
        mirror: Vec<(&'static str, &'static str, u64)>,
        import: Vec<&'static str>,
        push: Vec<&'static str>,
        remove: Vec<&'static str>,
        rv: u64,
    }
    let rows = [
        Row {
            what: "an empty folder takes everything from the mirror",
            store_rv: 0,
            store: vec![],
            mirror: vec![("c1", "a", 3), ("c2", "b", 7)],
            import: vec!["c1", "c2"],
            push: vec![],
            remove: vec![],
            rv: 7,
        },
        Row {
            what: "the same versions on both sides: nothing moves",
            store_rv: 7,
            store: vec![("a", 3), ("b", 7)],
            mirror: vec![("c1", "a", 3), ("c2", "b", 7)],
            import: vec![],
            push: vec![],
            remove: vec![],
            rv: 7,
        },
        Row {
            what: "a change on disk that was never mirrored (crash before the push) is pushed",
            store_rv: 9,
            store: vec![("a", 9), ("new", 8)],
            mirror: vec![("c1", "a", 3)],
            import: vec![],
            push: vec!["a", "new"],
            remove: vec![],
            rv: 9,
        },
        Row {
            what: "an object deleted after it was mirrored stays deleted",
            store_rv: 9,
            store: vec![],
            mirror: vec![("c1", "a", 3)],
            import: vec![],
            push: vec![],
            remove: vec!["c1"],
            rv: 9,
        },
        Row {
            what: "an older folder (another node's) takes the mirror's newer objects",
            store_rv: 4,
            store: vec![("a", 3)],
            mirror: vec![("c1", "a", 6), ("c2", "b", 5)],
            import: vec!["c1", "c2"],
            push: vec![],
            remove: vec![],
            rv: 6,
        },
        Row {
            what: "of two configs of one object the newest counts, the other goes",
            store_rv: 0,
            store: vec![],
            mirror: vec![("c1", "a", 3), ("c2", "a", 5), ("c3", "a", 4)],
            import: vec!["c2"],
            push: vec![],
            remove: vec!["c1", "c3"],
            rv: 5,
        },
    ];
    for row in rows {
        let store: BTreeMap<ObjectKey, u64> =
            row.store.iter().map(|(n, rv)| (key(n), *rv)).collect();
        let mirror = row
            .mirror
            .iter()
            .map(|(id, n, rv)| loaded(id, n, *rv))
            .collect();
        let plan = plan_rebuild(row.store_rv, &store, mirror);
        let ids = |v: Vec<String>| {
            let mut v = v;
            v.sort();
            v
        };
        assert_eq!(
            ids(plan.import.iter().map(|l| l.id.clone()).collect()),
            row.import,
            "{}: import",
            row.what
        );
        assert_eq!(
            plan.push.iter().map(|k| k.1.as_str()).collect::<Vec<_>>(),
            row.push,
            "{}: push",
            row.what
        );
        assert_eq!(ids(plan.remove.clone()), row.remove, "{}: remove", row.what);
        assert_eq!(plan.rv, row.rv, "{}: rv", row.what);
        for k in store.keys() {
            let deleted = !plan.mirrored.contains_key(k) && !plan.push.contains(k);
            assert!(
                !deleted,
                "{}: {k:?} is neither mirrored nor pushed",
                row.what
            );
        }
    }
}

/// Swarm configs kept in memory; creates can be made to fail.
#[derive(Default)]
struct MemSink {
    configs: Mutex<BTreeMap<String, Listed>>,
    next: AtomicUsize,
    fail_creates: AtomicUsize,
}

impl MemSink {
    fn all(&self) -> Vec<Listed> {
        self.configs
            .lock()
            .expect("lock")
            .values()
            .cloned()
            .collect()
    }
}

impl MirrorSink for MemSink {
    fn list(&self, store_id: &str) -> BoxFuture<'_, Result<Vec<Listed>, MirrorError>> {
        let found = self
            .all()
            .into_iter()
            .filter(|l| l.labels.get(MIRROR_OF).map(String::as_str) == Some(store_id))
            .collect();
        Box::pin(async move { Ok(found) })
    }

    fn create(
        &self,
        name: String,
        labels: HashMap<String, String>,
        data: Vec<u8>,
    ) -> BoxFuture<'_, Result<String, MirrorError>> {
        Box::pin(async move {
            if self
                .fail_creates
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err(MirrorError::Swarm("injected failure".into()));
            }
            let id = format!("id{}", self.next.fetch_add(1, Ordering::SeqCst));
            let l = Listed {
                id: id.clone(),
                name,
                labels,
                data,
            };
            self.configs.lock().expect("lock").insert(id.clone(), l);
            Ok(id)
        })
    }

    fn remove(&self, id: String) -> BoxFuture<'_, Result<(), MirrorError>> {
        self.configs.lock().expect("lock").remove(&id);
        Box::pin(async { Ok(()) })
    }
}

const SV: &str = "SharedVolume";

async fn open(dir: &std::path::Path, sink: &Arc<MemSink>, key: u8) -> Result<Store, StoreError> {
    let sink: Arc<dyn MirrorSink> = sink.clone();
    let mirror = Mirror::new(sink, SealKey::from_bytes([key; 32]), "store-1");
    Store::open_mirrored(dir, mirror).await
}

async fn settle() {
    // Superseded configs are removed by a task after the acknowledgement.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

#[tokio::test]
async fn an_empty_folder_is_rebuilt_from_the_mirror_with_its_credentials() {
    let sink = Arc::new(MemSink::default());
    let first = tempfile::tempdir().expect("tempdir");
    let store = open(first.path(), &sink, 1).await.expect("opens");
    assert_eq!(store.id(), "store-1");
    store
        .write(
            vec![desired("a", "/x"), desired("b", "/y")],
            WriteMode::Apply,
            false,
        )
        .await
        .expect("written");
    store
        .write(vec![desired("a", "/z")], WriteMode::Apply, false)
        .await
        .expect("updated");
    store
        .put_credential(SV, "a", "password", b"s3cret-pw")
        .await
        .expect("credential");
    store.delete(SV, "b", None).await.expect("deleted");
    store
        .write_status(SV, "a", json!({"phase": "Ready"}), None)
        .await
        .expect("status");
    let before = store.get(SV, "a").expect("a");
    settle().await;
    let configs = sink.all();
    assert_eq!(configs.len(), 1, "one config per object: {configs:?}");
    for c in &configs {
        let text = String::from_utf8_lossy(&c.data);
        assert!(!text.contains("s3cret-pw"), "a credential in clear: {text}");
        assert!(c.name.len() <= 64, "{}", c.name);
    }
    drop(store);

    let second = tempfile::tempdir().expect("tempdir");
    let rebuilt = open(second.path(), &sink, 1).await.expect("rebuilt");
    assert_eq!(rebuilt.get(SV, "a").expect("a"), before);
    assert!(!rebuilt.contains(SV, "b"), "a deleted object came back");
    assert_eq!(
        rebuilt.credential(SV, "a", "password").expect("read"),
        Some(b"s3cret-pw".to_vec())
    );
    let (o, r) = rebuilt
        .write(vec![desired("c", "/c")], WriteMode::Apply, false)
        .await
        .expect("written")
        .remove(0);
    assert_eq!(o, crate::store::Outcome::Created);
    assert!(
        r.resource_version() > before.resource_version(),
        "versions go on from the mirror's"
    );

    drop(rebuilt);
    for dir in [first.path(), second.path()] {
        let mut files = 0;
        for entry in walk(dir) {
            files += 1;
            let bytes = std::fs::read(&entry).expect("read");
            let clear = bytes.windows(9).any(|w| w == b"s3cret-pw");
            assert!(!clear, "{} holds the credential in clear", entry.display());
        }
        assert!(files > 0, "no file was searched in {}", dir.display());
    }

    let wrong = tempfile::tempdir().expect("tempdir");
    let e = open(wrong.path(), &sink, 2).await.expect_err("wrong key");
    assert!(e.to_string().contains("does not open"), "{e}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_folder_of_another_store_is_refused() {
    let sink = Arc::new(MemSink::default());
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path()).expect("a store with its own id"));
    let e = open(dir.path(), &sink, 1).await.expect_err("refused");
    assert!(matches!(e, StoreError::IdMismatch { .. }), "{e}");
}

#[tokio::test]
async fn a_write_waits_until_the_mirror_takes_it() {
    let sink = Arc::new(MemSink::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path(), &sink, 1).await.expect("opens");
    sink.fail_creates.store(3, Ordering::SeqCst);
    store
        .write(vec![desired("a", "/x")], WriteMode::Apply, false)
        .await
        .expect("acknowledged after the retries");
    assert_eq!(sink.fail_creates.load(Ordering::SeqCst), 0);
    assert_eq!(sink.all().len(), 1);
}

#[tokio::test]
async fn a_folder_newer_than_the_mirror_pushes_its_changes_at_open() {
    let sink = Arc::new(MemSink::default());
    let dir = tempfile::tempdir().expect("tempdir");
    // Made without a mirror, as before mirroring was turned on.
    {
        let sink2: Arc<dyn MirrorSink> = Arc::new(MemSink::default());
        let m = Mirror::new(sink2, SealKey::from_bytes([1; 32]), "store-1");
        let store = Store::open_mirrored(dir.path(), m).await.expect("opens");
        store
            .write(vec![desired("a", "/x")], WriteMode::Apply, false)
            .await
            .expect("written");
    }
    let store = open(dir.path(), &sink, 1).await.expect("opens");
    assert!(store.contains(SV, "a"));
    let configs = sink.all();
    assert_eq!(configs.len(), 1, "{configs:?}");
    assert_eq!(configs[0].labels[MIRROR_NAME], "a");
}
