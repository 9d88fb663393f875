//! API benchmark: durable applies per second (1 and 16 clients) and get
//! latency, through the unix socket of an in-process server; then, where the
//! Docker engine is a swarm manager, the engine's `docker config create`
//! rate and the same applies with the store mirrored in Swarm, with ratios.
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

/// What the plain store measured, for the mirrored run's ratios.
struct Baseline {
    one: f64,
    many: f64,
}

fn rate(run: &ApplyRun) -> f64 {
    run.writes as f64 / run.elapsed.as_secs_f64()
}

async fn run(socket: PathBuf) -> Baseline {
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
    Baseline {
        one: rate(&one),
        many: rate(&many),
    }
}

/// Configs created and removed to measure the engine's own limit.
const LIMIT_CONFIGS: usize = 300;

/// The engine's `docker config create` and `rm` rates, with `clients` calls
/// in flight: the ceiling of mirrored applies.
async fn config_limit(docker: &bollard::Docker, clients: usize) -> (f64, f64) {
    use futures::StreamExt;
    let tag = format!("hswb-limit-{}", rand::random::<u32>());
    let t = Instant::now();
    let ids: Vec<String> = futures::stream::iter((0..LIMIT_CONFIGS).map(|i| {
        let spec = bollard::models::ConfigSpec {
            name: Some(format!("{tag}-{i}")),
            data: Some("eyJiZW5jaCI6dHJ1ZX0=".into()),
            ..Default::default()
        };
        async move { docker.create_config(spec).await.expect("config create").id }
    }))
    .buffer_unordered(clients)
    .collect()
    .await;
    let created = LIMIT_CONFIGS as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    futures::stream::iter(ids.iter().map(|id| docker.delete_config(id)))
        .buffer_unordered(clients)
        .for_each(|r| {
            r.expect("config rm");
            async {}
        })
        .await;
    (created, LIMIT_CONFIGS as f64 / t.elapsed().as_secs_f64())
}

/// Removes every mirror config of `store_id`.
async fn remove_mirror(docker: &bollard::Docker, store_id: &str) -> usize {
    use futures::StreamExt;
    let filters = std::collections::HashMap::from([(
        "label".to_owned(),
        vec![format!("io.haswarm.mirror-of={store_id}")],
    )]);
    let listed = docker
        .list_configs(Some(bollard::query_parameters::ListConfigsOptions {
            filters: Some(filters),
        }))
        .await
        .unwrap_or_default();
    let n = listed.len();
    futures::stream::iter(listed.into_iter().filter_map(|c| c.id))
        .map(|id| async move { docker.delete_config(&id).await })
        .buffer_unordered(16)
        .for_each(|_| async {})
        .await;
    n
}

/// The mirrored store beside the plain one: the engine's config limit, then
/// the same apply runs with every write mirrored before it is acknowledged.
async fn run_mirrored(tmp: &Path, base: &Baseline) {
    let docker = match bollard::Docker::connect_with_defaults() {
        Ok(d) => match d.negotiate_version().await {
            Ok(d) => d,
            Err(e) => return println!("mirror: skipped (no Docker engine: {e})"),
        },
        Err(e) => return println!("mirror: skipped (no Docker engine: {e})"),
    };
    if docker.list_configs(None).await.is_err() {
        return println!("mirror: skipped (the Docker engine is not a swarm manager)");
    }
    let (c1, r1) = config_limit(&docker, 1).await;
    let (c16, r16) = config_limit(&docker, 16).await;
    println!(
        "engine limit: docker config create {c1:.0}/s, rm {r1:.0}/s (1 in flight); create {c16:.0}/s, rm {r16:.0}/s (16 in flight)"
    );
    let key_file = tmp.join("mirror.key");
    std::fs::write(&key_file, format!("{:064x}", rand::random::<u128>())).expect("key file");
    let store_id = format!("bench-{}", rand::random::<u32>());
    let settings = Settings {
        data_dir: tmp.join("mirrored"),
        socket: tmp.join("m.sock"),
        tcp: None,
        log_format: LogFormat::Text,
        controllers: None,
        mirror: Some(haswarm_controller::config::MirrorSettings {
            store_id: store_id.clone(),
            key: haswarm_controller::store::seal::SealKey::read(&key_file).expect("key"),
            lease_term: haswarm_controller::lease::DEFAULT_TERM,
        }),
    };
    serve(settings, |socket| async move {
        let one = apply_run(&socket, 1, "m1").await;
        report_apply("1 client, mirrored", &one);
        let many = apply_run(&socket, 16, "m16").await;
        report_apply("16 clients, mirrored", &many);
        println!(
            "mirrored / plain: {:.2} (1 client), {:.2} (16 clients); mirrored / config create limit: {:.2} (1 client), {:.2} (16 clients)",
            rate(&one) / base.one,
            rate(&many) / base.many,
            rate(&one) / c1,
            rate(&many) / c16,
        );
    })
    .await;
    let removed = remove_mirror(&docker, &store_id).await;
    println!("mirror: removed its {removed} configs");
}

/// Serves the API with `settings` while `f` runs against its socket.
async fn serve<F, Fut>(settings: Settings, f: F) -> Option<Fut::Output>
where
    F: FnOnce(PathBuf) -> Fut,
    Fut: std::future::Future,
{
    let socket = settings.socket.clone();
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
        let out = match ready_rx.await {
            Ok(()) => Some(f(socket).await),
            Err(_) => None,
        };
        let _ = stop_tx.send(());
        (out, Instant::now())
    };
    let (served, (out, stop_requested)) = tokio::join!(serving, bench);
    served.expect("the server starts and shuts down cleanly");
    println!(
        "server shut down in {} ms",
        stop_requested.elapsed().as_millis()
    );
    out
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
        mirror: None,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let base = serve(settings, run).await.expect("the plain run ran");
        run_mirrored(tmp.path(), &base).await;
    });
}
