//! API benchmark: durable applies per second (1 and 16 clients) and get
//! latency, through the unix socket of an in-process server.
//!
//! Run with `cargo bench -p haswarm-controller --bench api`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use haswarm_controller::client::{Client, Endpoint};
use haswarm_controller::config::{LogFormat, Settings};
use haswarm_controller::server::{self, Started};
use serde_json::{json, Value};

/// How long each apply measurement runs.
const APPLY_DURATION: Duration = Duration::from_secs(5);
/// Applies before each apply measurement (connections, first flushes).
const APPLY_WARMUP: usize = 20;
/// Gets measured, and gets before measuring.
const GETS: usize = 5_000;
const GET_WARMUP: usize = 200;

fn manifest(name: &str) -> Value {
    json!({
        "apiVersion": "haswarm.io/v1alpha1",
        "kind": "SharedVolume",
        "metadata": {"name": name, "labels": {"bench": "api"}},
        "spec": {"nfs": {"server": "nfs.example", "path": format!("/exports/{name}")}},
    })
}

/// The value at quantile `q` (0..=1) of sorted samples.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn micros(d: Duration) -> u128 {
    d.as_micros()
}

/// What one apply measurement found.
struct ApplyRun {
    writes: usize,
    elapsed: Duration,
    /// Sorted latencies of every apply.
    latencies: Vec<Duration>,
    /// Names written by client 0, for the get measurement.
    names: Vec<String>,
}

/// `clients` clients, each with its own connection, apply new objects
/// (each apply durable before it returns) for `APPLY_DURATION`.
async fn apply_run(socket: &Path, clients: usize, prefix: &str) -> ApplyRun {
    // Connect every client and warm up before the clock starts.
    let mut ready = Vec::with_capacity(clients);
    for c in 0..clients {
        let client = Client::new(Endpoint::Unix(socket.to_path_buf()));
        for n in 0..APPLY_WARMUP.div_ceil(clients) {
            client
                .apply(vec![manifest(&format!("{prefix}w-{c}-{n}"))], false)
                .await
                .expect("warm-up apply succeeds");
        }
        ready.push(client);
    }
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + APPLY_DURATION);
    let tasks: Vec<_> = ready
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut names = Vec::new();
                let mut n = 0u64;
                while tokio::time::Instant::now() < deadline {
                    n += 1;
                    let name = format!("{prefix}-{c}-{n}");
                    let t = Instant::now();
                    client
                        .apply(vec![manifest(&name)], false)
                        .await
                        .expect("apply succeeds");
                    latencies.push(t.elapsed());
                    names.push(name);
                }
                (latencies, names)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut names = Vec::new();
    for (c, t) in tasks.into_iter().enumerate() {
        let (l, n) = t.await.expect("a bench client does not panic");
        latencies.extend(l);
        if c == 0 {
            names = n;
        }
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    ApplyRun {
        writes: latencies.len(),
        elapsed,
        latencies,
        names,
    }
}

fn report_apply(label: &str, run: &ApplyRun) {
    let rate = run.writes as f64 / run.elapsed.as_secs_f64();
    println!(
        "apply ({label}): {rate:.0} writes/s ({} durable applies in {:.2} s; latency p50 {} µs, p99 {} µs)",
        run.writes,
        run.elapsed.as_secs_f64(),
        micros(quantile(&run.latencies, 0.50)),
        micros(quantile(&run.latencies, 0.99)),
    );
}

/// Latencies of `GETS` gets of existing objects with one client, sorted.
async fn get_run(socket: &Path, names: &[String]) -> Vec<Duration> {
    assert!(
        !names.is_empty(),
        "the get measurement needs stored objects"
    );
    let client = Client::new(Endpoint::Unix(socket.to_path_buf()));
    for name in names.iter().cycle().take(GET_WARMUP) {
        client
            .get("sharedvolumes", name)
            .await
            .expect("warm-up get succeeds");
    }
    let mut latencies = Vec::with_capacity(GETS);
    for name in names.iter().cycle().take(GETS) {
        let t = Instant::now();
        let object = client
            .get("sharedvolumes", name)
            .await
            .expect("get succeeds");
        latencies.push(t.elapsed());
        assert_eq!(
            object.pointer("/metadata/name").and_then(Value::as_str),
            Some(name.as_str()),
            "get returns the object asked for"
        );
    }
    latencies.sort_unstable();
    latencies
}

async fn run(socket: PathBuf) {
    let one = apply_run(&socket, 1, "a1").await;
    report_apply("1 client", &one);
    let many = apply_run(&socket, 16, "a16").await;
    report_apply("16 clients", &many);
    let gets = get_run(&socket, &one.names).await;
    println!(
        "get latency: p50 {} µs, p99 {} µs ({} gets, 1 client)",
        micros(quantile(&gets, 0.50)),
        micros(quantile(&gets, 0.99)),
        gets.len()
    );
}

fn main() {
    // A short folder in /tmp: unix socket paths are limited to 107 bytes.
    let tmp = tempfile::Builder::new()
        .prefix("hswb")
        .tempdir_in("/tmp")
        .expect("a temporary folder in /tmp");
    let settings = Settings {
        data_dir: tmp.path().join("data"),
        socket: tmp.path().join("b.sock"),
        tcp: None,
        log_format: LogFormat::Text,
        // The API only: no reconcilers, no Docker connection.
        controllers: None,
    };
    let socket = settings.socket.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serving = server::serve(
            settings,
            async move {
                let _ = stop_rx.await;
            },
            move |_: &Started| {
                let _ = ready_tx.send(());
            },
        );
        let bench = async move {
            // Without a ready signal the server failed; its error is reported below.
            if ready_rx.await.is_ok() {
                run(socket).await;
            }
            let _ = stop_tx.send(());
            Instant::now()
        };
        let (served, stop_requested) = tokio::join!(serving, bench);
        served.expect("the server starts and shuts down cleanly");
        println!(
            "server shut down in {} ms",
            stop_requested.elapsed().as_millis()
        );
    });
}
