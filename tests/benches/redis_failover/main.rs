//! Failover benchmark: the time from a SIGKILL of a RedisSentinelGroup's
//! master to the first write a real Sentinel client (redis-py) gets
//! acknowledged, over `HASWARM_BENCH_KILLS` kills (default 5) of one group
//! with fast failover (`spec.sentinels.fastFailover: true`, the default:
//! haswarm asks a sentinel to fail over once the master's container is
//! proven dead) and then of one without (the sentinels alone, after
//! `downAfter`); prints every kill, min/median/max of each, and the ratio of
//! the medians. Target (issue 17): median at most 2.5 s with `downAfter: 3s`.
//!
//! Run with `cargo bench -p haswarm-testbed --bench redis_failover` after
//! `tests/testbed/prepare.sh`. It takes about half a minute per kill.
//!
//! How it measures: one client container (`redis_client.py ... probe`, the
//! repository's copy mounted over the image's) is started on the group's
//! network before the first kill and runs until the end, so no container
//! starts on that network during a failover apart from Swarm's restart of
//! the killed instance. It writes every 50 ms through redis-py's Sentinel
//! client, one attempt per write, and prints each attempt's start and end
//! (unix times, the host's clock). For each kill, the clock starts just
//! before `docker kill -s KILL` runs (so it includes the few tens of
//! milliseconds the CLI takes) and stops at the end of the first
//! acknowledged write that started after `docker kill` returned: a write
//! that started then cannot have been acknowledged by the killed master.
//!
//! The client container's resolver gets `options timeout:1 attempts:2`
//! (`HASWARM_BENCH_CLIENT_DNS_OPTIONS`, space-separated; empty for the
//! image's defaults). While the killed master's name is gone from Swarm's DNS,
//! Docker forwards every lookup of it to the host's resolver, and an answer
//! lost there costs a client glibc's default timeout, 5 s, which has nothing
//! to do with the failover: with the defaults nearly every kill measured
//! 5 s more.
//!
//! Each kill also reports when the first sentinel logged `+switch-master`
//! (the sentinels' side of the failover), and any TILT or aborted failover.
//!
//! Before every kill the group is settled: Ready, the previous master back
//! as a linked replica, every sentinel out of TILT and naming the same
//! master, and at least twice the failover timeout since the previous
//! failover ended (Sentinel does not start a new failover of a master sooner).
//!
//! Everything it creates goes when it ends, also on a panic: the group's
//! services, network, configs and secret, its data volumes and the client.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use haswarm_testbed::bench::{median, secs, unix_time, Client};
use haswarm_testbed::docker::{
    docker, eventually, redis_cli, require_swarm, service_container, Cleanup,
};
use haswarm_testbed::{assert_code, repo, Daemon};
use serde_json::Value;

/// Sentinel's down-after for the group (issue 17 measures with 3 s).
const DOWN_AFTER: &str = "3s";
/// Sentinel's failover timeout for the group, in seconds.
const FAILOVER_TIMEOUT_S: u64 = 10;
/// How long one kill may take to give a successful write before it counts
/// as a failed failover.
const KILL_LIMIT: Duration = Duration::from_secs(120);
/// How long the group may take to settle before a kill.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);
const INSTANCES: usize = 3;
const SENTINELS: usize = 3;

fn manifest(name: &str, fast: bool) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {name}\nspec:\n  image: haswarm/redis:bookworm\n  masterGroupName: {name}-master\n  instances: {INSTANCES}\n  placement:\n    spread: None\n  sentinels:\n    count: {SENTINELS}\n    downAfter: {DOWN_AFTER}\n    failoverTimeout: {FAILOVER_TIMEOUT_S}s\n    fastFailover: {fast}\n"
    )
}

/// Unix time in seconds, the clock the client's lines use too (containers
/// share the host's kernel clock).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn container(service: &str) -> String {
    service_container(service)
}

/// `INFO sentinel` of a sentinel, with the password read in its container.
fn sentinel_info(service: &str) -> String {
    if container(service).is_empty() {
        return String::new();
    }
    redis_cli(service, 26379, "INFO sentinel\n")
}

fn get(d: &Daemon, name: &str) -> Value {
    d.get_json("rsg", name)
}

/// The master when the group is settled for a kill: Ready, `previous` (the
/// master killed last) back as a linked replica (or as the master, when the
/// sentinels did not fail over), and every sentinel out of TILT and naming
/// that master as up.
fn settled(d: &Daemon, name: &str, previous: Option<&str>) -> Option<String> {
    let v = get(d, name);
    let status = &v["status"];
    let ready = status["conditions"]
        .as_array()?
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let master = status["master"].as_str()?.to_owned();
    // The killed master is normally a replica again; when no failover
    // happened it may be the master again.
    let rejoined = previous.is_none_or(|p| {
        p == master
            || status["replicas"].as_array().is_some_and(|rs| {
                rs.iter()
                    .any(|r| r["name"].as_str() == Some(p) && r["linkUp"] == true)
            })
    });
    if !ready || master.is_empty() || !rejoined {
        return None;
    }
    let expected = format!("status=ok,address={master}:6379,");
    (0..SENTINELS)
        .all(|j| {
            let info = sentinel_info(&format!("{name}-sentinel-{j}"));
            info.contains("sentinel_tilt:0") && info.contains(&expected)
        })
        .then_some(master)
}

/// What the sentinels logged about one kill.
#[derive(Debug, Default)]
struct SentinelSide {
    /// Unix time of the first `+switch-master`, and the master it named.
    switched: Option<(f64, String)>,
    /// Sentinels that entered TILT.
    tilted: usize,
    /// Whether a failover was aborted (and so tried again).
    aborted: bool,
}

/// Reads the sentinels' logs since unix time `since`.
fn sentinel_side(name: &str, since: f64) -> SentinelSide {
    let mut side = SentinelSide::default();
    for j in 0..SENTINELS {
        let c = container(&format!("{name}-sentinel-{j}"));
        if c.is_empty() {
            continue;
        }
        let log = docker(&["logs", "-t", "--since", &format!("{since:.3}"), &c]);
        let mut tilted = false;
        for line in log.lines() {
            let at = line.split_whitespace().next().and_then(unix_time);
            // `+switch-master GROUP OLD-HOST OLD-PORT NEW-HOST NEW-PORT`
            let to = line
                .split_once("+switch-master ")
                .and_then(|(_, rest)| rest.split_whitespace().nth(3));
            if let (Some(at), Some(to)) = (at, to) {
                if side.switched.as_ref().is_none_or(|(s, _)| at < *s) {
                    side.switched = Some((at, to.to_owned()));
                }
            }
            tilted |= line.contains("+tilt");
            side.aborted |= line.contains("-failover-abort");
        }
        side.tilted += usize::from(tilted);
    }
    side
}

/// One write attempt of the client.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    ok: bool,
    start: f64,
    end: f64,
}

fn parse(line: &str) -> Option<Attempt> {
    let mut f = line.split_whitespace();
    let ok = match f.next()? {
        "ok" => true,
        "fail" => false,
        _ => return None,
    };
    Some(Attempt {
        ok,
        start: f.next()?.parse().ok()?,
        end: f.next()?.parse().ok()?,
    })
}

/// The client container and what it printed so far.
struct Probe(Client<Attempt>);

impl Probe {
    fn start(
        name: &str,
        network: &str,
        dns_options: &[String],
        sentinels: &str,
        group: &str,
        password: &str,
    ) -> Self {
        let script = repo().join("tests/testbed/redis_client.py");
        let mut cmd = Command::new("docker");
        cmd.args(["run", "--rm", "-i", "--name", name, "--network", network])
            .args(
                dns_options
                    .iter()
                    .flat_map(|o| ["--dns-option", o.as_str()]),
            )
            .arg("-v")
            .arg(format!("{}:/redis_client.py:ro", script.display()))
            .args(["haswarm/redis-client:latest", "python3", "/redis_client.py"])
            .args([sentinels, group, "probe", "0"]);
        Self(Client::start(name, cmd, password, parse))
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.0.attempts()
    }

    /// The first acknowledged write that started at or after `t`.
    fn first_ok_after(&self, t: f64) -> Option<Attempt> {
        self.attempts().into_iter().find(|a| a.ok && a.start >= t)
    }

    /// Whether the client's last write was acknowledged and recent.
    fn writing(&self) -> bool {
        self.attempts()
            .last()
            .is_some_and(|a| a.ok && now() - a.end < 2.0)
    }
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: this one
    // needs minutes and the Swarm, so it only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("redis_failover: skipped (run it with `cargo bench -p haswarm-testbed --bench redis_failover`)");
        return;
    }
    haswarm_testbed::no_budget();
    let kills: usize = std::env::var("HASWARM_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&k| k > 0)
        .unwrap_or(5);
    let dns_options: Vec<String> = std::env::var("HASWARM_BENCH_CLIENT_DNS_OPTIONS")
        .unwrap_or_else(|_| "timeout:1 attempts:2".to_owned())
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    require_swarm();
    let mut results = Vec::new();
    for (mode, fast) in [("fast failover", true), ("sentinels alone", false)] {
        results.push((mode, run_mode((mode, fast), kills, &dns_options)));
    }
    println!(
        "redis_failover: SIGKILL of the master to the first write a redis-py Sentinel client gets acknowledged \
         (downAfter {DOWN_AFTER}, {kills} kills each)"
    );
    let mut medians = Vec::new();
    for (mode, mut m) in results {
        for (what, samples) in [
            ("to first acknowledged write", &mut m.times),
            ("to first +switch-master", &mut m.switches),
            ("to haswarm's request (FastFailover event)", &mut m.asked),
        ] {
            samples.sort_by(f64::total_cmp);
            if let (Some(min), Some(max)) = (samples.first(), samples.last()) {
                println!(
                    "  {mode}, SIGKILL {what} ({} of {kills} kills): min {}, median {}, max {}",
                    samples.len(),
                    secs(*min),
                    secs(median(samples)),
                    secs(*max)
                );
            }
        }
        if m.failed > 0 {
            println!(
                "  {mode}: {} kill(s) gave no acknowledged write within {KILL_LIMIT:?}",
                m.failed
            );
        }
        medians.push((!m.times.is_empty()).then(|| median(&m.times)));
    }
    if let [Some(fast), Some(alone)] = medians[..] {
        println!(
            "  median with fast failover / without: {:.2} ({} / {})",
            fast / alone,
            secs(fast),
            secs(alone)
        );
    }
}

/// What one mode measured.
#[derive(Debug, Default)]
struct Measured {
    /// SIGKILL to the first acknowledged write, per kill that gave one.
    times: Vec<f64>,
    /// SIGKILL to the first `+switch-master`.
    switches: Vec<f64>,
    /// SIGKILL to haswarm's `FastFailover` event.
    asked: Vec<f64>,
    /// Kills that gave no acknowledged write within [`KILL_LIMIT`].
    failed: usize,
}

/// When haswarm last asked for a fast failover (unix time).
fn last_asked(d: &Daemon, name: &str) -> Option<f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let events = rt
        .block_on(d.client().events("redissentinelgroups", name))
        .unwrap_or_default();
    events
        .iter()
        .filter(|e| e.reason == "FastFailover")
        .map(|e| e.last_timestamp.timestamp_micros() as f64 / 1e6)
        .max_by(f64::total_cmp)
}

/// Creates a group with `fastFailover` as given, kills its master `kills`
/// times, and deletes it.
fn run_mode((mode, fast): (&str, bool), kills: usize, dns_options: &[String]) -> Measured {
    let name = format!(
        "bench-rsg{}-{}",
        if fast { "fast" } else { "alone" },
        std::process::id()
    );
    let mut cleanup = Cleanup::default();
    cleanup.owner("RedisSentinelGroup", &name);
    let client = format!("{name}-client");
    cleanup.named("container", &client);

    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    d.apply("rsg.yaml", &manifest(&name, fast));
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "300s");
    assert!(
        eventually(SETTLE_LIMIT, || settled(&d, &name, None).is_some()),
        "the new group did not settle: {}",
        get(&d, &name)
    );

    let first = settled(&d, &name, None).unwrap_or_default();
    let password = docker(&[
        "exec",
        &container(&first),
        "cat",
        "/run/secrets/redis-password",
    ])
    .trim()
    .to_owned();
    assert!(!password.is_empty(), "the password file is readable");
    let sentinels = (0..SENTINELS)
        .map(|j| format!("{name}-sentinel-{j}"))
        .collect::<Vec<_>>()
        .join(",");
    let probe = Probe::start(
        &client,
        &format!("{name}-net"),
        dns_options,
        &sentinels,
        &format!("{name}-master"),
        &password,
    );
    drop(password);
    assert!(
        eventually(Duration::from_secs(60), || probe.writing()),
        "the client does not write through the group"
    );

    println!(
        "redis_failover, {mode}: {kills} kills of the master of a group of {INSTANCES} instances and {SENTINELS} sentinels \
         (downAfter {DOWN_AFTER}, failoverTimeout {FAILOVER_TIMEOUT_S}s); \
         time from SIGKILL to the first acknowledged write of a redis-py Sentinel client writing every 50 ms \
         (client resolver options: {})",
        if dns_options.is_empty() {
            "defaults".to_owned()
        } else {
            dns_options.join(" ")
        }
    );
    let mut m = Measured::default();
    let mut previous: Option<String> = None;
    // When the last failover was over (its first acknowledged write).
    let mut last_failover: Option<Instant> = None;
    let pause = Duration::from_secs(2 * FAILOVER_TIMEOUT_S + 2);
    for k in 1..=kills {
        // Settle: Sentinel's pause between failovers of a master over, the
        // group healthy, the last victim a replica again, no sentinel in TILT.
        let deadline = Instant::now() + SETTLE_LIMIT;
        let mut master = None;
        while Instant::now() < deadline {
            if last_failover.is_none_or(|t| t.elapsed() > pause) && probe.writing() {
                master = settled(&d, &name, previous.as_deref());
                if master.is_some() {
                    break;
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let Some(master) = master else {
            println!(
                "kill {k:>2}: the group did not settle within {SETTLE_LIMIT:?}; stopping: {}",
                get(&d, &name)
            );
            break;
        };
        let victim = container(&master);
        let t0 = now();
        docker(&["kill", "-s", "KILL", &victim]);
        // The signal went out between t0 and now: only a write that started
        // after `docker kill` returned surely reached another master.
        let killed = now();
        let deadline = Instant::now() + KILL_LIMIT;
        let mut first_ok = None;
        while Instant::now() < deadline {
            first_ok = probe.first_ok_after(killed);
            if first_ok.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        last_failover = Some(Instant::now());
        let side = sentinel_side(&name, t0);
        let asked = last_asked(&d, &name).filter(|at| *at >= t0);
        if let Some(at) = asked {
            m.asked.push(at - t0);
        }
        let failures = probe
            .attempts()
            .iter()
            .filter(|a| !a.ok && a.start >= killed)
            .filter(|a| first_ok.is_none_or(|f| a.end <= f.end))
            .count();
        let mut notes = vec![format!("{failures} failed writes")];
        if let Some(at) = asked {
            notes.insert(0, format!("haswarm asked at {}", secs(at - t0)));
        }
        let new_master = match &side.switched {
            Some((at, to)) => {
                m.switches.push(at - t0);
                notes.insert(0, format!("sentinels switched at {}", secs(at - t0)));
                to.clone()
            }
            None => {
                notes.insert(0, "no +switch-master logged".to_owned());
                "?".to_owned()
            }
        };
        if side.tilted > 0 {
            notes.push(format!("{} sentinel(s) entered TILT", side.tilted));
        }
        if side.aborted {
            notes.push("a failover was aborted".to_owned());
        }
        let notes = notes.join(", ");
        match first_ok {
            Some(a) => {
                let t = a.end - t0;
                m.times.push(t);
                println!(
                    "kill {k:>2}: {master} -> {new_master}: {} ({notes})",
                    secs(t)
                );
            }
            None => {
                m.failed += 1;
                println!(
                    "kill {k:>2}: {master}: no acknowledged write within {KILL_LIMIT:?} ({notes})"
                );
            }
        }
        previous = Some(master);
    }

    drop(probe);
    let o = d.ctl(&["delete", "rsg", &name, "--wait", "--timeout=180s"]);
    assert_code(&o, 0);
    m
}
