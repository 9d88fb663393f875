//! Crash test: writes that `haswarmd` acknowledged survive SIGKILL.
//!
//! Each cycle starts the real daemon binary on one data folder, streams
//! applies at it from several clients (new objects and updates of existing
//! ones), kills it with SIGKILL after a random delay, and checks after the
//! restart that every acknowledged write is in the store.
//!
//! The second test does the same with the store mirrored in Swarm's Raft
//! (it needs a Docker engine that is a swarm manager), and deletes the data
//! folder before some restarts: the daemon rebuilds it from the mirror.
//!
//! `HASWARM_CRASH_CYCLES` changes the number of cycles, `HASWARM_CRASH_SEED`
//! replays a run (the seed is printed at the start).

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use haswarm_controller::client::{Client, ClientError, Endpoint};
use haswarm_controller::store::Outcome;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

/// Kill/restart cycles (at least 50 are required).
const CYCLES: usize = 60;
/// Kill/restart cycles with the mirror: each start reads it from Swarm.
const MIRROR_CYCLES: usize = 30;
/// With the mirror, the data folder is deleted before every this many restarts.
const WIPE_EVERY: usize = 3;
/// Concurrent writers, each with its own client and its own objects.
const WRITERS: usize = 4;
/// The kill comes this many milliseconds (at most) after the writers start.
const MAX_KILL_DELAY_MS: u64 = 150;
/// Share of applies that update an object the writer already created.
const UPDATE_SHARE: f64 = 0.3;
/// How long a started daemon may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for one request to a live daemon.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// The line `haswarmd` prints once it serves.
const READY_PREFIX: &str = "haswarmd ready on unix://";

/// A running `haswarmd`; dropping it kills and reaps the process, so no
/// daemon outlives the test, whatever assertion fails.
struct Daemon {
    child: Option<Child>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
}

impl Daemon {
    /// Starts the daemon and waits for its ready line; panics when it does not start.
    fn start(data_dir: &Path, socket: &Path, mirror: Option<&Mirrored>, what: &str) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_haswarmd"));
        if let Some(m) = mirror {
            cmd.env("HASWARM_STORE_ID", &m.store_id)
                .env("HASWARM_MIRROR_KEY_FILE", &m.key_file)
                // The killed daemon held the lease: its successor waits a
                // whole term before it takes it over.
                .env("HASWARM_LEASE_TERM", "1s");
        } else {
            cmd.env_remove("HASWARM_STORE_ID")
                .env_remove("HASWARM_MIRROR_KEY_FILE")
                .env_remove("HASWARM_LEASE_TERM");
        }
        let child = cmd
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--socket")
            .arg(socket)
            .env("HASWARM_LOG", "warn")
            // The store and the API only: no reconcilers, no Docker connection.
            .env("HASWARM_NO_CONTROLLERS", "true")
            .env_remove("HASWARM_LISTEN")
            .env_remove("HASWARM_TOKEN_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("haswarmd can be spawned");
        let mut daemon = Self {
            child: Some(child),
            stdout: None,
            stderr: None,
        };
        let child = daemon.child.as_mut().expect("the child was just stored");
        let out = child.stdout.take().expect("stdout is piped");
        let mut err = child.stderr.take().expect("stderr is piped");
        daemon.stderr = Some(std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        }));
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        daemon.stdout = Some(std::thread::spawn(move || {
            // Keeps draining stdout until the daemon is gone.
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if line.starts_with(READY_PREFIX) {
                    let _ = ready_tx.send(());
                }
            }
        }));
        match ready_rx.recv_timeout(READY_TIMEOUT) {
            Ok(()) => daemon,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let stderr = daemon.kill_and_reap();
                panic!(
                    "{what}: haswarmd did not print its ready line within {READY_TIMEOUT:?}; stderr:\n{stderr}"
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let child = daemon.child.as_mut().expect("not reaped yet");
                let status = child.wait().expect("the exited daemon can be reaped");
                let stderr = daemon.kill_and_reap();
                panic!("{what}: haswarmd exited before it was ready ({status}); stderr:\n{stderr}");
            }
        }
    }

    /// SIGKILLs the daemon (through its own handle), reaps it and returns what
    /// it wrote on stderr.
    fn kill_and_reap(&mut self) -> String {
        if let Some(mut child) = self.child.take() {
            // An already exited (but unreaped) child is fine to "kill".
            let _ = child.kill();
            child.wait().expect("the killed daemon can be reaped");
        }
        if let Some(h) = self.stdout.take() {
            let _ = h.join();
        }
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One writer's objects and what the daemon acknowledged for them. Only
/// this writer writes these objects, and always with a growing counter, so
/// the stored counter of an object can never be below its last acknowledged one.
#[derive(Debug, Default)]
struct Writer {
    id: usize,
    /// The last counter sent (acknowledged or not); it only grows.
    counter: u64,
    /// Names handed out so far; every apply of a new object takes the next.
    names_used: u64,
    /// Acknowledged objects and the counter of their last acknowledged write.
    acked: BTreeMap<String, u64>,
    /// The keys of `acked`, for picking objects to update.
    acked_names: Vec<String>,
    acked_creates: u64,
    acked_updates: u64,
    /// Requests that were sent but whose answer never came (the daemon died).
    unanswered: u64,
    /// Anything a healthy daemon should not do: API errors, wrong outcomes, timeouts.
    anomalies: Vec<String>,
}

fn manifest(name: &str, counter: u64) -> Value {
    json!({
        "apiVersion": "haswarm.io/v1alpha1",
        "kind": "SharedVolume",
        "metadata": {"name": name, "labels": {"counter": counter.to_string()}},
        "spec": {"nfs": {"server": "nfs.example", "path": format!("/exports/c{counter}")}},
    })
}

/// Applies until told to stop or until the daemon stops answering.
async fn write_until_stopped(
    mut w: Writer,
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Writer {
    let client = Client::new(Endpoint::Unix(socket));
    let mut rng = StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::SeqCst) {
        w.counter += 1;
        let counter = w.counter;
        let update = !w.acked_names.is_empty() && rng.random_bool(UPDATE_SHARE);
        let name = if update {
            w.acked_names[rng.random_range(0..w.acked_names.len())].clone()
        } else {
            w.names_used += 1;
            format!("v-{}-{}", w.id, w.names_used)
        };
        let sent = client.apply(vec![manifest(&name, counter)], false);
        match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
            Ok(Ok(resp)) => {
                let expected = if update {
                    Outcome::Configured
                } else {
                    Outcome::Created
                };
                match resp.results.as_slice() {
                    [r] if r.name == name && r.result == expected => {}
                    other => w.anomalies.push(format!(
                        "apply of {name} (counter {counter}) answered {other:?}, expected one {expected:?} result"
                    )),
                }
                if w.acked.insert(name.clone(), counter).is_none() {
                    w.acked_names.push(name);
                    w.acked_creates += 1;
                } else {
                    w.acked_updates += 1;
                }
            }
            Ok(Err(e @ ClientError::Api { .. })) => {
                w.anomalies
                    .push(format!("apply of {name} (counter {counter}) failed: {e}"));
            }
            // The connection broke or could not be made: the daemon was killed.
            Ok(Err(_)) => {
                w.unanswered += 1;
                break;
            }
            Err(_) => {
                w.anomalies.push(format!(
                    "apply of {name} (counter {counter}) got no answer within {REQUEST_TIMEOUT:?}"
                ));
                break;
            }
        }
    }
    w
}

/// The counter an object carries in its spec and in its label (they must agree:
/// both come from one write).
fn stored_counter(item: &Value) -> Result<u64, String> {
    let path = item
        .pointer("/spec/nfs/path")
        .and_then(Value::as_str)
        .and_then(|p| p.strip_prefix("/exports/c"))
        .and_then(|c| c.parse::<u64>().ok());
    let label = item
        .pointer("/metadata/labels/counter")
        .and_then(Value::as_str)
        .and_then(|c| c.parse::<u64>().ok());
    match (path, label) {
        (Some(p), Some(l)) if p == l => Ok(p),
        _ => Err(format!(
            "spec.nfs.path {:?} and label counter {:?} disagree or are missing",
            item.pointer("/spec/nfs/path"),
            item.pointer("/metadata/labels/counter")
        )),
    }
}

/// Lists every SharedVolume and returns one line per acknowledged write that
/// is missing or rolled back, and the number of stored objects.
async fn lost_writes(socket: &Path, writers: &[Writer]) -> (Vec<String>, usize) {
    let client = Client::new(Endpoint::Unix(socket.to_path_buf()));
    let list = tokio::time::timeout(REQUEST_TIMEOUT, client.list("sharedvolumes", None))
        .await
        .expect("the list answers in time")
        .expect("the restarted daemon lists SharedVolumes");
    let mut stored = BTreeMap::new();
    let mut lost = Vec::new();
    for item in &list.items {
        let name = item
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .expect("listed objects have a name")
            .to_owned();
        match stored_counter(item) {
            Ok(c) => {
                stored.insert(name, c);
            }
            Err(problem) => lost.push(format!("{name}: {problem}")),
        }
    }
    for w in writers {
        for (name, acked) in &w.acked {
            match stored.get(name) {
                None => lost.push(format!(
                    "{name}: acknowledged (counter {acked}) but missing"
                )),
                Some(s) if s < acked => lost.push(format!(
                    "{name}: stored counter {s} is older than the acknowledged {acked}"
                )),
                Some(_) => {}
            }
        }
    }
    (lost, list.items.len())
}

/// The store's mirror: its id and key file. Dropping it removes the lease and
/// every mirror config of the store, whatever assertion failed.
struct Mirrored {
    store_id: String,
    key_file: PathBuf,
}

impl Drop for Mirrored {
    fn drop(&mut self) {
        support::remove_store_configs(&self.store_id);
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    crash_cycles(CYCLES, None);
}

#[test]
fn acknowledged_writes_survive_sigkill_and_the_loss_of_the_folder_with_a_mirror() {
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let key_file = tmp.path().join("key");
    std::fs::write(&key_file, format!("{:064x}", rand::random::<u128>())).expect("key");
    let mirror = Mirrored {
        store_id: format!("crash-{}", rand::random::<u32>()),
        key_file,
    };
    crash_cycles(MIRROR_CYCLES, Some(&mirror));
}

/// Kills and restarts the daemon `default_cycles` times under writers, and
/// checks that nothing acknowledged is lost.
fn crash_cycles(default_cycles: usize, mirror: Option<&Mirrored>) {
    let started = Instant::now();
    let cycles = env_number("HASWARM_CRASH_CYCLES").map_or(default_cycles, |c| c as usize);
    let seed = env_number("HASWARM_CRASH_SEED").unwrap_or_else(rand::random);
    let mirrored = if mirror.is_some() { ", mirrored" } else { "" };
    println!(
        "crash test: {cycles} cycles, {WRITERS} writers{mirrored}, seed {seed} (HASWARM_CRASH_SEED)"
    );
    let mut rng = StdRng::seed_from_u64(seed);

    // A short folder in /tmp: the socket path must stay far below 108 bytes.
    let tmp = tempfile::Builder::new()
        .prefix("hsw")
        .tempdir_in("/tmp")
        .expect("a temporary folder in /tmp");
    let data_dir = tmp.path().join("data");
    let socket = tmp.path().join("d.sock");
    assert!(
        socket.as_os_str().len() < 100,
        "socket path too long: {}",
        socket.display()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");

    let mut writers: Vec<Writer> = (0..WRITERS)
        .map(|id| Writer {
            id,
            ..Writer::default()
        })
        .collect();
    let mut max_start = Duration::ZERO;
    let mut total_lost = 0usize;
    let mut stored_objects = 0usize;

    let mut wiped = 0;
    let mut daemon = Daemon::start(&data_dir, &socket, mirror, "first start");
    for cycle in 1..=cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks: Vec<_> = std::mem::take(&mut writers)
            .into_iter()
            .map(|w| {
                let seed = rng.random();
                runtime.spawn(write_until_stopped(
                    w,
                    socket.clone(),
                    Arc::clone(&stop),
                    seed,
                ))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(
            rng.random_range(0..=MAX_KILL_DELAY_MS),
        ));
        daemon.kill_and_reap();
        stop.store(true, Ordering::SeqCst);
        writers = runtime.block_on(async {
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(t.await.expect("a writer task does not panic"));
            }
            out
        });

        if mirror.is_some() && cycle % WIPE_EVERY == 0 {
            std::fs::remove_dir_all(&data_dir).expect("the data folder is deleted");
            wiped += 1;
        }
        let t0 = Instant::now();
        daemon = Daemon::start(
            &data_dir,
            &socket,
            mirror,
            &format!("restart after kill {cycle} (seed {seed})"),
        );
        max_start = max_start.max(t0.elapsed());
        let (lost, stored) = runtime.block_on(lost_writes(&socket, &writers));
        stored_objects = stored;
        total_lost += lost.len();
        assert!(
            lost.is_empty(),
            "after kill {cycle} (seed {seed}), {} acknowledged writes are lost:\n{}",
            lost.len(),
            lost.join("\n")
        );
    }
    daemon.kill_and_reap();

    let creates: u64 = writers.iter().map(|w| w.acked_creates).sum();
    let updates: u64 = writers.iter().map(|w| w.acked_updates).sum();
    let unanswered: u64 = writers.iter().map(|w| w.unanswered).sum();
    let anomalies: Vec<&String> = writers.iter().flat_map(|w| &w.anomalies).collect();
    println!("crash test: cycles (SIGKILL + restart): {cycles}");
    println!("crash test: restarts with the data folder deleted: {wiped}");
    println!(
        "crash test: acknowledged writes: {} ({creates} creates, {updates} updates)",
        creates + updates
    );
    println!("crash test: writes in flight at a kill (outcome unknown): {unanswered}");
    println!("crash test: objects stored at the end: {stored_objects}");
    println!("crash test: slowest restart to ready: {max_start:?}");
    println!("crash test: writes lost: {total_lost}");
    println!("crash test: took {:?}", started.elapsed());
    assert!(
        creates > 0,
        "no write was acknowledged at all: the test proved nothing"
    );
    assert!(
        anomalies.is_empty(),
        "unexpected answers from a live daemon:\n{}",
        anomalies
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
