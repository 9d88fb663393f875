//! One writer per store, with the real daemon on a real swarm manager: two
//! haswarmd processes for one store id, each with its own data folder. The
//! second waits while the first holds the store's lease. The first frozen
//! (SIGSTOP, as when its node is paused) past a term, the second takes the
//! lease over and serves the store rebuilt from the mirror. The first,
//! thawed, acknowledges nothing more, writes nothing to the mirror, logs that
//! it lost the lease and exits.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use haswarm_controller::client::{Client, Endpoint};
use serde_json::json;

const TERM: &str = "3s";
const READY_PREFIX: &str = "haswarmd ready on unix://";

/// A daemon process; dropping it kills it.
struct Proc {
    child: Child,
    ready: mpsc::Receiver<()>,
    log: PathBuf,
    socket: PathBuf,
}

impl Proc {
    fn start(dir: &Path, name: &str, store_id: &str, key_file: &Path) -> Self {
        let log = dir.join(format!("{name}.log"));
        let socket = dir.join(format!("{name}.sock"));
        let child = Command::new(env!("CARGO_BIN_EXE_haswarmd"))
            .arg("--data-dir")
            .arg(dir.join(name))
            .arg("--socket")
            .arg(&socket)
            .env("HASWARM_LOG", "info")
            .env("HASWARM_NO_CONTROLLERS", "true")
            .env("HASWARM_STORE_ID", store_id)
            .env("HASWARM_MIRROR_KEY_FILE", key_file)
            .env("HASWARM_LEASE_TERM", TERM)
            .env_remove("HASWARM_LISTEN")
            .env_remove("HASWARM_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("haswarmd starts");
        let mut child = child;
        let out = child.stdout.take().expect("stdout");
        let (tx, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.starts_with(READY_PREFIX) {
                    let _ = tx.send(());
                }
            }
        });
        Self {
            child,
            ready,
            log,
            socket,
        }
    }

    fn ready_within(&self, limit: Duration) -> bool {
        self.ready.recv_timeout(limit).is_ok()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    fn exited_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn client(&self) -> Client {
        Client::new(Endpoint::Unix(self.socket.clone()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes every Swarm object of the store (mirror and lease) when dropped.
struct StoreObjects(String);

impl Drop for StoreObjects {
    fn drop(&mut self) {
        support::remove_store_configs(&self.0);
    }
}

fn volume(name: &str) -> serde_json::Value {
    json!({
        "apiVersion": "haswarm.io/v1alpha1",
        "kind": "SharedVolume",
        "metadata": {"name": name},
        "spec": {"nfs": {"server": "nfs.example", "path": format!("/exports/{name}")}},
    })
}

/// Names of the objects the store's mirror holds.
fn mirrored(store_id: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["config", "ls", "--format", "{{.Name}}", "--filter"])
        .arg(format!("label=io.haswarm.mirror-of={store_id}"))
        .output()
        .expect("docker config ls runs");
    assert!(out.status.success(), "docker config ls failed");
    let names = String::from_utf8_lossy(&out.stdout).into_owned();
    names
        .lines()
        .filter_map(|config| {
            let o = Command::new("docker")
                .args([
                    "config",
                    "inspect",
                    "--format",
                    "{{index .Spec.Labels \"io.haswarm.mirror-name\"}}",
                    config,
                ])
                .output()
                .ok()?;
            Some(String::from_utf8_lossy(&o.stdout).trim().to_owned())
        })
        .collect()
}

#[test]
fn a_frozen_haswarmd_loses_its_store_to_another_and_acts_no_more() {
    let tmp = tempfile::Builder::new()
        .prefix("hswl")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, format!("{:064x}", rand::random::<u128>())).expect("key");
    let store_id = format!("lease-{}", rand::random::<u32>());
    let _objects = StoreObjects(store_id.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut a = Proc::start(tmp.path(), "a", &store_id, &key_file);
    assert!(a.ready_within(Duration::from_secs(20)), "a: {}", a.log());
    rt.block_on(a.client().apply(vec![volume("before")], false))
        .expect("a acknowledges a write");

    // A second haswarmd for the store (a second install) waits.
    let b = Proc::start(tmp.path(), "b", &store_id, &key_file);
    assert!(
        !b.ready_within(Duration::from_secs(7)),
        "b served while a held the lease"
    );
    assert!(
        b.log().contains("held by another haswarmd"),
        "b: {}",
        b.log()
    );

    // a freezes, as with its node: b takes over after a whole term.
    a.signal("STOP");
    let frozen = Instant::now();
    assert!(b.ready_within(Duration::from_secs(30)), "b: {}", b.log());
    println!(
        "lease: b served {:.1} s after a froze (term {TERM})",
        frozen.elapsed().as_secs_f64()
    );
    let got = rt.block_on(b.client().get("sharedvolumes", "before"));
    assert!(got.is_ok(), "b's rebuilt store lacks a's write: {got:?}");
    rt.block_on(b.client().apply(vec![volume("after")], false))
        .expect("b acknowledges a write");

    // a thaws: a write sent to it at once is not acknowledged, and it stops.
    a.signal("CONT");
    let late = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(40),
            a.client().apply(vec![volume("late")], false),
        )
        .await
    });
    assert!(
        !matches!(late, Ok(Ok(_))),
        "a acknowledged a write after losing the lease: {late:?}"
    );
    assert!(
        a.exited_within(Duration::from_secs(30)),
        "a goes on: {}",
        a.log()
    );
    let log = a.log();
    assert!(log.contains("lost the store's lease"), "a: {log}");
    println!("lease: a's log once thawed:");
    for line in log
        .lines()
        .filter(|l| l.contains("lease") || l.contains("shutting"))
    {
        println!("  {line}");
    }
    println!("lease: the write sent to a once thawed: {late:?}");
    let names = mirrored(&store_id);
    assert!(
        names.contains(&"after".to_owned()) && names.contains(&"before".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"late".to_owned()),
        "a wrote to the mirror after losing the lease: {names:?}"
    );
    let got = rt.block_on(b.client().get("sharedvolumes", "late"));
    assert!(got.is_err(), "a's late write reached b's store");
    drop(b);
}
