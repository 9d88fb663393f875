//! Store behaviour, on a real sled database in a temporary folder.

use std::collections::BTreeMap;

use futures::StreamExt;
use haswarm_crds::selector::Selector;
use haswarm_crds::{EventType, Name};
use serde_json::{json, Value};

use super::*;

const SV: &str = "SharedVolume";

/// A SharedVolume write (shared with the mirror's tests).
pub(crate) fn desired(name: &str, path: &str) -> Desired {
    Desired {
        kind: SV.into(),
        name: Name::parse(name).expect("valid name"),
        labels: BTreeMap::new(),
        annotations: BTreeMap::new(),
        spec: json!({"nfs": {"server": "nfs.example", "path": path}}),
        resource_version: None,
    }
}

async fn put(store: &Store, d: Desired) -> Result<(Outcome, Record), StoreError> {
    store
        .write(vec![d], WriteMode::Apply, false)
        .await
        .map(|mut v| v.remove(0))
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("opens");
    (dir, store)
}

#[tokio::test]
async fn apply_creates_configures_and_reports_unchanged() {
    let (_d, store) = open();
    let (o, r) = put(&store, desired("a", "/x")).await.expect("created");
    assert_eq!(o, Outcome::Created);
    assert_eq!(r.metadata.generation, Some(1));
    assert_eq!(r.metadata.resource_version, Some(1));
    assert!(r.metadata.uid.is_some() && r.metadata.creation_timestamp.is_some());

    let (o, r2) = put(&store, desired("a", "/x")).await.expect("applied");
    assert_eq!(o, Outcome::Unchanged);
    assert_eq!(
        r2.metadata.resource_version,
        Some(1),
        "an unchanged apply writes nothing"
    );

    let (o, r3) = put(&store, desired("a", "/y")).await.expect("applied");
    assert_eq!(o, Outcome::Configured);
    assert_eq!(r3.metadata.generation, Some(2));
    assert_eq!(r3.metadata.uid, r.metadata.uid);
    assert_eq!(
        r3.metadata.creation_timestamp,
        r.metadata.creation_timestamp
    );
}

#[tokio::test]
async fn generation_moves_only_with_the_spec() {
    let (_d, store) = open();
    put(&store, desired("a", "/x")).await.expect("created");
    let mut labelled = desired("a", "/x");
    labelled.labels.insert("app".into(), "dify".into());
    let (o, r) = put(&store, labelled).await.expect("labelled");
    assert_eq!(o, Outcome::Configured);
    assert_eq!(r.metadata.generation, Some(1), "labels are not spec");
    let r = store
        .write_status(SV, "a", json!({"observedGeneration": 1}), None)
        .await
        .expect("status");
    assert_eq!(r.metadata.generation, Some(1), "status is not spec");
    assert_eq!(r.metadata.resource_version, Some(3));
    assert_eq!(r.spec["nfs"]["path"], "/x");
}

#[tokio::test]
async fn apply_keeps_status_and_status_writes_keep_spec() {
    let (_d, store) = open();
    put(&store, desired("a", "/x")).await.expect("created");
    store
        .write_status(SV, "a", json!({"nodes": []}), None)
        .await
        .expect("status");
    let (_, r) = put(&store, desired("a", "/y")).await.expect("applied");
    assert_eq!(r.status, Some(json!({"nodes": []})));
}

#[tokio::test]
async fn a_stale_resource_version_is_a_conflict() {
    let (_d, store) = open();
    let (_, r) = put(&store, desired("a", "/x")).await.expect("created");
    let rv = r.resource_version();
    put(&store, desired("a", "/y"))
        .await
        .expect("someone else writes");
    let mut stale = desired("a", "/z");
    stale.resource_version = Some(rv);
    match put(&store, stale).await {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!((expected, actual), (rv, rv + 1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        store.get(SV, "a").expect("exists").spec["nfs"]["path"],
        "/y"
    );
    let e = store
        .write_status(SV, "a", json!({}), Some(rv))
        .await
        .expect_err("stale status write");
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
}

#[tokio::test]
async fn a_batch_is_all_or_nothing() {
    let (_d, store) = open();
    put(&store, desired("b", "/x")).await.expect("created");
    let mut stale = desired("b", "/y");
    stale.resource_version = Some(99);
    let e = store
        .write(vec![desired("a", "/x"), stale], WriteMode::Apply, false)
        .await
        .expect_err("the second write conflicts");
    assert!(matches!(e, StoreError::Conflict { .. }), "{e}");
    assert!(
        !store.contains(SV, "a"),
        "the first write of the failed batch is not there"
    );
    assert_eq!(store.resource_version(), 1);
}

#[tokio::test]
async fn a_dry_run_writes_nothing() {
    let (_d, store) = open();
    let r = store
        .write(vec![desired("a", "/x")], WriteMode::Apply, true)
        .await
        .expect("dry run");
    assert_eq!(r[0].0, Outcome::Created);
    assert!(!store.contains(SV, "a"));
    assert_eq!(store.resource_version(), 0);
}

#[tokio::test]
async fn create_and_replace_respect_existence() {
    let (_d, store) = open();
    let e = store
        .write(vec![desired("a", "/x")], WriteMode::Replace, false)
        .await
        .expect_err("nothing to replace");
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    store
        .write(vec![desired("a", "/x")], WriteMode::Create, false)
        .await
        .expect("created");
    let e = store
        .write(vec![desired("a", "/x")], WriteMode::Create, false)
        .await
        .expect_err("exists");
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
}

#[tokio::test]
async fn delete_waits_for_finalizers() {
    let (_d, store) = open();
    put(&store, desired("a", "/x")).await.expect("created");
    store
        .write_finalizers(SV, "a", vec!["haswarm.io/cleanup".into()], None)
        .await
        .expect("finalizer");
    match store.delete(SV, "a", None).await.expect("deleting") {
        Deletion::Terminating(r) => assert!(r.metadata.deletion_timestamp.is_some()),
        Deletion::Deleted(_) => panic!("finalizers remain"),
    }
    let e = put(&store, desired("a", "/y"))
        .await
        .expect_err("spec change while terminating");
    assert!(matches!(e, StoreError::Terminating { .. }), "{e}");
    store
        .write_finalizers(SV, "a", Vec::new(), None)
        .await
        .expect("cleanup done");
    assert!(
        !store.contains(SV, "a"),
        "the last finalizer removal deletes the record"
    );
    let e = store.delete(SV, "a", None).await.expect_err("gone");
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
}

#[tokio::test]
async fn events_are_deduplicated_and_capped() {
    let (_d, store) = open();
    put(&store, desired("a", "/x")).await.expect("created");
    for _ in 0..3 {
        store
            .record_event(
                SV,
                "a",
                EventType::Warning,
                "MountFailed",
                "node-2: no such host",
            )
            .expect("event");
    }
    let events = store.events(SV, "a").expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].count, 3);
    assert!(events[0].last_timestamp >= events[0].first_timestamp);
    for i in 0..(EVENTS_PER_OBJECT + 10) {
        store
            .record_event(SV, "a", EventType::Normal, "Progress", &format!("step {i}"))
            .expect("event");
    }
    let events = store.events(SV, "a").expect("events");
    assert_eq!(events.len(), EVENTS_PER_OBJECT);
    assert_eq!(events.last().map(|e| e.message.as_str()), Some("step 59"));
    let e = store
        .record_event(SV, "nope", EventType::Normal, "X", "y")
        .expect_err("no object");
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
}

#[tokio::test]
async fn list_filters_by_label() {
    let (_d, store) = open();
    let mut a = desired("a", "/x");
    a.labels.insert("app".into(), "dify".into());
    put(&store, a).await.expect("a");
    put(&store, desired("b", "/x")).await.expect("b");
    let (all, rv) = store.list(SV, &Selector::default()).expect("list");
    assert_eq!(all.len(), 2);
    assert_eq!(rv, 2);
    let sel = Selector::parse("app=dify").expect("selector");
    let (some, _) = store.list(SV, &sel).expect("list");
    assert_eq!(
        some.iter()
            .map(|r| r.metadata.name.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    let (none, _) = store
        .list("PostgresCluster", &Selector::default())
        .expect("list");
    assert!(none.is_empty());
}

fn summary(e: &WatchEvent) -> (ChangeType, String, u64) {
    (
        e.type_,
        e.object.metadata.name.to_string(),
        e.resource_version(),
    )
}

#[tokio::test]
async fn watch_delivers_changes_in_order_and_resumes() {
    let (_d, store) = open();
    put(&store, desired("a", "/x")).await.expect("a");
    let mut live = Box::pin(store.watch(Some(SV), WatchFrom::Now).expect("watch"));
    let first = live.next().await.expect("snapshot").expect("ok");
    assert_eq!(summary(&first), (ChangeType::Added, "a".into(), 1));

    put(&store, desired("b", "/x")).await.expect("b");
    put(&store, desired("a", "/y")).await.expect("a changed");
    store.delete(SV, "b", None).await.expect("b deleted");
    put(
        &store,
        Desired {
            kind: "PostgresCluster".into(),
            ..desired("p", "/x")
        },
    )
    .await
    .expect("another kind");
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(summary(&live.next().await.expect("event").expect("ok")));
    }
    assert_eq!(
        seen,
        [
            (ChangeType::Added, "b".into(), 2),
            (ChangeType::Modified, "a".into(), 3),
            (ChangeType::Deleted, "b".into(), 4),
        ]
    );

    // A watcher that starts late resumes from a version and sees the same history.
    let resumed = store.watch(Some(SV), WatchFrom::After(1)).expect("resume");
    let got: Vec<_> = resumed
        .take(3)
        .map(|e| summary(&e.expect("ok")))
        .collect()
        .await;
    assert_eq!(got, seen);

    // Every kind, from the start.
    let all = store.watch(None, WatchFrom::After(0)).expect("resume");
    let got: Vec<_> = all
        .take(5)
        .map(|e| e.expect("ok").resource_version())
        .collect()
        .await;
    assert_eq!(got, [1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn concurrent_writers_get_distinct_ordered_versions() {
    let (_d, store) = open();
    let mut watch = Box::pin(store.watch(Some(SV), WatchFrom::After(0)).expect("watch"));
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                for j in 0..10 {
                    put(&store, desired(&format!("w{i}-{j}"), "/x"))
                        .await
                        .expect("write");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    let mut last = 0;
    for _ in 0..160 {
        let rv = watch
            .next()
            .await
            .expect("event")
            .expect("ok")
            .resource_version();
        assert_eq!(rv, last + 1, "versions arrive in order without gaps");
        last = rv;
    }
    assert_eq!(store.resource_version(), 160);
}

#[tokio::test]
async fn a_compacted_start_is_gone() {
    let (_d, store) = open();
    let batch: Vec<Desired> = (0..(LOG_RETAIN + 1_500))
        .map(|i| desired(&format!("v{i}"), "/x"))
        .collect();
    // One batch per thousand keeps each commit small.
    for chunk in batch.chunks(1_000) {
        store
            .write(chunk.to_vec(), WriteMode::Apply, false)
            .await
            .expect("write");
    }
    let e = store
        .watch(Some(SV), WatchFrom::After(1))
        .err()
        .expect("too old");
    assert!(matches!(e, StoreError::Gone { .. }), "{e}");
    assert!(e.to_string().contains("list again"), "{e}");
    let recent = store.resource_version() - 10;
    let got: Vec<_> = store
        .watch(Some(SV), WatchFrom::After(recent))
        .expect("recent start")
        .take(10)
        .map(|e| e.expect("ok").resource_version())
        .collect()
        .await;
    assert_eq!(got.first(), Some(&(recent + 1)));
}

#[tokio::test]
async fn everything_survives_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = Store::open(dir.path()).expect("opens");
        put(&store, desired("a", "/x")).await.expect("a");
        store
            .write_status(SV, "a", json!({"x": 1}), None)
            .await
            .expect("status");
        store
            .record_event(SV, "a", EventType::Normal, "Created", "made")
            .expect("event");
        put(&store, desired("b", "/x")).await.expect("b");
    }
    // Let the flush task notice the store is gone and release the database.
    for _ in 0..100 {
        if let Ok(store) = Store::open(dir.path()) {
            assert_eq!(store.resource_version(), 3);
            assert_eq!(store.get(SV, "a").expect("a").status, Some(json!({"x": 1})));
            assert!(store.contains(SV, "b"));
            let (_, r) = put(&store, desired("c", "/x")).await.expect("c");
            assert_eq!(r.resource_version(), 4, "the counter continues");
            let history: Vec<_> = store
                .watch(Some(SV), WatchFrom::After(0))
                .expect("log survives")
                .take(4)
                .map(|e| e.expect("ok").resource_version())
                .collect()
                .await;
            assert_eq!(history, [1, 2, 3, 4]);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the store could not be reopened");
}

#[tokio::test]
async fn a_newer_layout_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = sled::open(dir.path()).expect("sled");
        db.insert(keys::Key::SCHEMA, &(SCHEMA_VERSION + 1).to_be_bytes())
            .expect("insert");
        db.flush().expect("flush");
    }
    let e = Store::open(dir.path()).expect_err("too new");
    assert!(e.to_string().contains("upgrade haswarmd"), "{e}");
}

#[test]
fn records_render_as_resources() {
    let r = Record {
        api_version: haswarm_crds::API_VERSION.into(),
        kind: SV.into(),
        metadata: haswarm_crds::ObjectMeta::named(Name::parse("a").expect("name")),
        spec: json!({}),
        status: None,
    };
    let v: Value = r.to_json();
    assert_eq!(v["apiVersion"], "haswarm.io/v1alpha1");
    assert!(v.get("status").is_none());
}

#[tokio::test]
async fn credentials_are_private_and_go_with_their_object() {
    let (_d, store) = open();
    put(&store, desired("a", "/x")).await.expect("a");
    assert_eq!(store.credential(SV, "a", "password").expect("read"), None);
    store
        .put_credential(SV, "a", "password", b"s3cret")
        .await
        .expect("stored");
    assert_eq!(
        store
            .credential(SV, "a", "password")
            .expect("read")
            .as_deref(),
        Some(&b"s3cret"[..])
    );
    let r = store.get(SV, "a").expect("a");
    assert!(
        !r.to_json().to_string().contains("s3cret"),
        "never part of the object"
    );
    let e = store
        .put_credential(SV, "nope", "password", b"x")
        .await
        .expect_err("no object");
    assert!(matches!(e, StoreError::NotFound { .. }), "{e}");
    store.delete(SV, "a", None).await.expect("deleted");
    assert_eq!(store.credential(SV, "a", "password").expect("read"), None);
}

#[tokio::test]
async fn the_folder_and_its_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data");
    std::fs::create_dir(&path).expect("mkdir");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let store = Store::open(&path).expect("opens");
    put(&store, desired("a", "/x")).await.expect("written");
    drop(store);
    // A store made by an older haswarm, with open files, is fixed at open.
    std::fs::set_permissions(path.join("db"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    // sled's threads let go of the file lock a moment after the drop.
    let mut again = Store::open(&path);
    for _ in 0..50 {
        if again.is_ok() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        again = Store::open(&path);
    }
    let store = again.expect("opens again");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o700);
    let mut files = 0;
    for entry in std::fs::read_dir(&path).expect("list") {
        let p = entry.expect("entry").path();
        if p.is_file() {
            files += 1;
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
    assert!(files > 0, "the listing found no file to check");
    drop(store);
}
