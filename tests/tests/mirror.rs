//! The store mirrored in Swarm's Raft, end to end on the local single-node
//! Swarm with real PostgreSQL+Patroni+etcd and redis-server/sentinel:
//! haswarmd started with `--store-id` and `--mirror-key-file` runs a
//! PostgresCluster, a RedisSentinelGroup and a SharedVolume. Killed with
//! SIGKILL and started again on an empty data folder (as on another
//! manager), it rebuilds its store from the mirror: every resource keeps its
//! uid, generation and passwords, no Swarm service is recreated, no
//! container restarted, and the new daemon acts (a SharedVolume deleted and
//! created again). The generated passwords appear in clear in no Swarm
//! config, no file of the data folder and no log.

use std::collections::BTreeMap;
use std::time::Duration;

use haswarm_testbed::docker::{docker, eventually, require_image, require_swarm, Cleanup};
use haswarm_testbed::pg::{self, At};
use haswarm_testbed::{assert_code, figure, one_at_a_time, Daemon};
use serde_json::Value;

const REDIS_IMAGE: &str = "haswarm/redis:bookworm";

fn manifests(name: &str, volume_path: &str) -> String {
    let pg = pg::IMAGE;
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: {name}-pg\nspec:\n  instances: 2\n  postgres:\n    image: {pg}\n  etcd:\n    image: {pg}\n  router:\n    image: {pg}\n  placement:\n    spread: None\n  storage:\n    reclaimPolicy: Delete\n---\napiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {name}-rd\nspec:\n  image: {REDIS_IMAGE}\n  instances: 2\n  placement:\n    spread: None\n---\n{}",
        volume(name, volume_path)
    )
}

fn volume(name: &str, path: &str) -> String {
    format!("apiVersion: haswarm.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: {name}-sv\nspec:\n  hostPath:\n    path: {path}\n")
}

/// Every service of the store, by name: its id and the ids of its running containers.
fn services(store_id: &str) -> BTreeMap<String, (String, Vec<String>)> {
    let listed = docker(&[
        "service",
        "ls",
        "--filter",
        &format!("label=io.haswarm.instance={store_id}"),
        "--format",
        "{{.ID}} {{.Name}}",
    ]);
    let mut out = BTreeMap::new();
    for line in listed.lines() {
        let Some((id, name)) = line.split_once(' ') else {
            continue;
        };
        let mut containers: Vec<String> = docker(&[
            "ps",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("label=com.docker.swarm.service.name={name}"),
        ])
        .lines()
        .map(str::to_owned)
        .collect();
        containers.sort();
        out.insert(name.to_owned(), (id.to_owned(), containers));
    }
    out
}

/// uid and generation of a resource.
fn identity(d: &Daemon, short: &str, name: &str) -> (Value, Value) {
    let v = d.get_json(short, name);
    (
        v["metadata"]["uid"].clone(),
        v["metadata"]["generation"].clone(),
    )
}

/// The content of every mirror config of the store.
fn mirror_configs(store_id: &str) -> Vec<String> {
    // The mirror replaces an object's config as it changes: one listed may
    // be gone when inspected. A listing counts only when every config in it
    // was read, so none is skipped unseen.
    for _ in 0..20 {
        let ids = docker(&[
            "config",
            "ls",
            "-q",
            "--filter",
            &format!("label=io.haswarm.mirror-of={store_id}"),
        ]);
        let read: Option<Vec<String>> = ids
            .lines()
            .map(|id| {
                let data = docker(&["config", "inspect", "--format", "{{json .Spec.Data}}", id]);
                let b64: String = serde_json::from_str(data.trim()).ok()?;
                Some(String::from_utf8_lossy(&base64_decode(&b64)).into_owned())
            })
            .collect();
        if let Some(read) = read {
            return read;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    panic!("the mirror's configs of {store_id} kept changing under 20 listings");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64")
}

/// Every file under `dir`.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list the data folder") {
        let p = entry.expect("entry").path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Asserts that none of `secrets` is in any mirror config or file of the
/// data folder, and that there were some of both to search.
fn assert_sealed_at_rest(d: &Daemon, store_id: &str, secrets: &[&str]) {
    let configs = mirror_configs(store_id);
    assert!(
        configs.len() >= 3,
        "the mirror holds {} configs",
        configs.len()
    );
    for c in &configs {
        for s in secrets {
            assert!(!c.contains(s), "a password in clear in a mirror config");
        }
    }
    let data = d.dir.path().join("data");
    let found = files(&data);
    assert!(!found.is_empty(), "no file in {}", data.display());
    for f in found {
        let bytes = std::fs::read(&f).expect("read a store file");
        for s in secrets {
            let clear = bytes.windows(s.len()).any(|w| w == s.as_bytes());
            assert!(!clear, "a password in clear in {}", f.display());
        }
    }
    let log = d.log();
    assert!(!log.is_empty(), "haswarmd's log is empty");
    for s in secrets {
        assert!(!log.contains(s), "a password in haswarmd's log");
    }
}

#[test]
fn a_store_rebuilt_from_its_mirror_keeps_every_resource_and_touches_no_workload() {
    let _one = one_at_a_time();
    require_swarm();
    require_image(pg::IMAGE);
    require_image(REDIS_IMAGE);
    let name = format!("e2e-mir-{}", std::process::id());
    let store_id = format!("t-{name}");
    let mut cleanup = Cleanup::default();
    cleanup.owner("PostgresCluster", &format!("{name}-pg"));
    cleanup.owner("RedisSentinelGroup", &format!("{name}-rd"));
    cleanup.owner("SharedVolume", &format!("{name}-sv"));
    // The mirror's configs carry the store's id.
    cleanup.instance(&store_id);
    let keys = tempfile::tempdir().expect("tempdir");
    let key_file = keys.path().join("mirror.key");
    std::fs::write(
        &key_file,
        format!(
            "{:016x}{:016x}{:016x}{:016x}",
            fastrand::u64(..),
            fastrand::u64(..),
            fastrand::u64(..),
            fastrand::u64(..)
        ),
    )
    .expect("key file");
    let volume_dir = tempfile::tempdir().expect("tempdir");
    let volume_path = volume_dir.path().display().to_string();
    let key_path = key_file.display().to_string();
    let d = Daemon::start_with_env(
        // The killed daemon held the store's lease: its successor takes it
        // over once a whole term passed without a renewal.
        &["--resync", "5s", "--lease-term", "5s"],
        &[
            ("HASWARM_STORE_ID", &store_id),
            ("HASWARM_MIRROR_KEY_FILE", &key_path),
        ],
    );
    d.apply("all.yaml", &manifests(&name, &volume_path));
    d.wait_for(&format!("pgc/{name}-pg"), "condition=Ready", "300s");
    d.wait_for(&format!("rsg/{name}-rd"), "condition=Ready", "180s");
    d.wait_for(&format!("sv/{name}-sv"), "condition=Ready", "60s");

    let redis_pw = docker(&[
        "exec",
        &haswarm_testbed::docker::service_container(&format!("{name}-rd-redis-0")),
        "cat",
        "/run/secrets/redis-password",
    ])
    .trim()
    .to_owned();
    let (_, app_pw) = pg::app_login(&d, At::Local, &format!("{name}-pg"));
    assert!(redis_pw.len() >= 16 && app_pw.len() >= 16);
    let before = services(&store_id);
    assert!(before.len() >= 7, "{before:?}");
    assert!(
        before.values().all(|(_, c)| !c.is_empty()),
        "a service without a running container: {before:?}"
    );
    let kinds = [
        ("pgc", format!("{name}-pg")),
        ("rsg", format!("{name}-rd")),
        ("sv", format!("{name}-sv")),
    ];
    let ids: Vec<_> = kinds.iter().map(|(k, n)| identity(&d, k, n)).collect();
    assert_sealed_at_rest(&d, &store_id, &[&redis_pw, &app_pw]);

    // haswarmd dies with its data folder, as with its node.
    let took = d.kill_wipe_and_restart();
    figure!(
        "[figures] store rebuilt from the mirror: serving {:.1} s after the start",
        took.as_secs_f64()
    );
    let after_ids: Vec<_> = kinds.iter().map(|(k, n)| identity(&d, k, n)).collect();
    assert_eq!(after_ids, ids, "uids and generations survive the rebuild");
    // Reconciles run (the resync is 5 s) and find nothing to change.
    std::thread::sleep(Duration::from_secs(15));
    d.wait_for(&format!("pgc/{name}-pg"), "condition=Ready", "60s");
    d.wait_for(&format!("rsg/{name}-rd"), "condition=Ready", "60s");
    assert_eq!(
        services(&store_id),
        before,
        "a service recreated or a container restarted by the rebuilt haswarmd"
    );
    let (_, app_pw_after) = pg::app_login(&d, At::Local, &format!("{name}-pg"));
    assert_eq!(app_pw_after, app_pw, "the generated password survives");
    let log = d.log();
    assert!(
        log.contains("store rebuilt from its mirror")
            && log.contains("took over the store's lease"),
        "the takeover and the rebuild are not in the log"
    );

    // The rebuilt haswarmd acts: a SharedVolume deleted and created again.
    let o = d.ctl(&[
        "delete",
        "sv",
        &format!("{name}-sv"),
        "--wait",
        "--timeout=60s",
    ]);
    assert_code(&o, 0);
    let gone = eventually(Duration::from_secs(30), || {
        // The other resources' configs are there: the listing worked.
        let left = mirror_configs(&store_id);
        !left.is_empty()
            && !left
                .iter()
                .any(|c| c.contains(&format!("\"name\":\"{name}-sv\"")))
    });
    assert!(gone, "the deleted SharedVolume is still mirrored");
    d.apply("sv.yaml", &volume(&name, &volume_path));
    d.wait_for(&format!("sv/{name}-sv"), "condition=Ready", "60s");
    let (uid, _) = identity(&d, "sv", &format!("{name}-sv"));
    assert_ne!(uid, ids[2].0, "created again, with a new uid");
    assert_sealed_at_rest(&d, &store_id, &[&redis_pw, &app_pw]);
    d.assert_secrets_hidden(
        "RedisSentinelGroup",
        "rsg",
        &format!("{name}-rd"),
        &[&redis_pw],
    );

    for (short, n) in &kinds {
        let o = d.ctl(&["delete", short, n, "--wait", "--timeout=180s"]);
        assert_code(&o, 0);
    }
    let left = mirror_configs(&store_id);
    assert!(left.is_empty(), "{} mirror configs left", left.len());
    d.stop();
}
