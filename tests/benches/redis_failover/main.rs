//! Redis bench, haswarm against the hand-written stack on the same engine in
//! the same run (issue 17):
//!
//! - **Deploy to ready.** `HASWARM_BENCH_STARTS` starts (default 3) of each:
//!   the hand-written Sentinel stack of `../shared/background/
//!   dify-redis-sentinel.md` (`stack.rs`) from `docker stack deploy` until
//!   every sentinel sees the master, both replicas and the two other
//!   sentinels; and an equivalent RedisSentinelGroup from `haswarmctl apply`
//!   to `Ready`. Each start prints its timeline (`timeline.rs`): services
//!   created, first container running, master up, replicas linked,
//!   sentinels agree, Ready; read afterwards from Docker's and the Redis
//!   processes' own timestamps.
//! - **Failover.** `HASWARM_BENCH_KILLS` SIGKILLs (default 5) of the master
//!   of each of three systems: the hand-written stack, a group with fast
//!   failover (`spec.sentinels.fastFailover: true`, the default: haswarm asks
//!   a sentinel to fail over once the master's container is proven dead) and
//!   one without (the sentinels alone, after `downAfter`). The time is from
//!   the SIGKILL to the first write a redis-py Sentinel client gets
//!   acknowledged.
//!
//! - **Safety** (`safety.rs`), for each system's kills: the writes a replica
//!   acknowledged (`WAIT 1` after each write) that the master lacks at the
//!   end, and the looks at every instance's `ROLE` (every second, for 40 s
//!   after each kill) that found two masters.
//!
//! It prints min/median/max of each figure per system and the ratio of each
//! haswarm median to the hand-written stack's. Targets (issue 17): failover
//! median at most 2.5 s with `downAfter: 3s`, and apply to Ready at most 1.5
//! times the stack's deploy to ready.
//!
//! Run with `cargo bench -p haswarm-testbed --bench redis_failover` after
//! `tests/testbed/prepare.sh`. It takes about half a minute per kill, and
//! half a minute per start.
//!
//! How a failover is measured: one client container (`redis_client.py ...
//! probe`, the repository's copy mounted over the image's) is started on the
//! system's network before the first kill and runs until the end, so no
//! container starts on that network during a failover apart from Swarm's
//! restart of the killed instance. It writes every 50 ms through redis-py's
//! Sentinel client, one attempt per write, and prints each attempt's start
//! and end (unix times, the host's clock). For each kill, the clock starts
//! just before `docker kill -s KILL` runs (so it includes the few tens of
//! milliseconds the CLI takes) and stops at the end of the first
//! acknowledged write that started after `docker kill` returned: a write
//! that started then cannot have been acknowledged by the killed master.
//! Each kill also reports when the first sentinel logged `+switch-master`,
//! haswarm's request (its `FastFailover` event), any TILT or aborted
//! failover, and the last failed write before the first good one (its error
//! and how long it took): what the client waited on after the switch.
//!
//! The client container's resolver gets `options timeout:1 attempts:2`
//! (`HASWARM_BENCH_CLIENT_DNS_OPTIONS`, space-separated; empty for the
//! image's defaults): on a machine whose upstream resolver does not answer
//! Docker's forwarded lookups, a lookup of a name with no task (the killed
//! master's) would otherwise cost glibc's default timeout, 5 s.
//!
//! Before every kill the system is settled: the sentinels agree on an up
//! master out of TILT, the previous master back as a linked replica, and at
//! least twice the failover timeout since the previous failover ended
//! (Sentinel does not start a new failover of a master sooner).
//!
//! Everything it creates goes when it ends, also on a panic: the group's
//! services, network, configs and secret, its data volumes, the stack and
//! the client.

mod haswarm;
mod safety;
mod stack;
mod timeline;

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use haswarm_testbed::bench::{median, secs, unix_time, Client};
use haswarm_testbed::docker::{docker, require_swarm, service_container};
use timeline::Timeline;

/// Sentinel's down-after, in seconds (issue 17 measures with 3 s).
const DOWN_AFTER_S: u64 = 3;
/// Sentinel's failover timeout, in seconds.
const FAILOVER_TIMEOUT_S: u64 = 10;
/// How long one kill may take to give a successful write before it counts
/// as a failed failover.
const KILL_LIMIT: Duration = Duration::from_secs(120);
/// How long a system may take to settle before a kill, or to be ready.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);
const INSTANCES: usize = 3;
const SENTINELS: usize = 3;

/// What the failover loop needs of a system under test.
pub trait Group {
    /// Its name in the output.
    fn label(&self) -> String;
    /// The overlay network a client joins.
    fn network(&self) -> String;
    /// The master group's name at the sentinels.
    fn master_group(&self) -> String;
    fn password(&self) -> String;
    /// The sentinels' host names on the network.
    fn sentinel_hosts(&self) -> Vec<String>;
    /// The sentinels' Swarm services.
    fn sentinel_services(&self) -> Vec<String>;
    /// The data instances' host names on the network.
    fn instance_hosts(&self) -> Vec<String>;
    /// `KEYS probe:*` as the instance of service `master` answers it.
    fn probe_keys(&self, master: &str) -> String;
    /// The master's service when the system is settled for a kill.
    fn settled(&self, previous: Option<&str>) -> Option<String>;
    /// Every Swarm service of the system.
    fn services(&self) -> Vec<String>;
    /// When haswarm asked for a fast failover at or after unix time `t0`.
    fn asked_since(&self, _t0: f64) -> Option<f64> {
        None
    }
    /// Why haswarm did not ask (its log since `t0`), when it could have.
    fn not_asked(&self, _t0: f64) -> Option<String> {
        None
    }
}

/// Unix time in seconds, the clock the client's lines use too (containers
/// share the host's kernel clock).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn env_count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&k| k > 0)
        .unwrap_or(default)
}

/// Samples of one figure of one system.
#[derive(Debug, Default, Clone)]
struct Samples(Vec<f64>);

impl Samples {
    fn median(&self) -> Option<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| median(&v))
    }

    fn summary(&self) -> String {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match (v.first(), v.last()) {
            (Some(min), Some(max)) => format!(
                "min {}, median {}, max {} ({} samples)",
                secs(*min),
                secs(median(&v)),
                secs(*max),
                v.len()
            ),
            _ => "no samples".to_owned(),
        }
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
    let kills = env_count("HASWARM_BENCH_KILLS", 5);
    let starts = env_count("HASWARM_BENCH_STARTS", 3);
    let dns_options: Vec<String> = std::env::var("HASWARM_BENCH_CLIENT_DNS_OPTIONS")
        .unwrap_or_else(|_| "timeout:1 attempts:2".to_owned())
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    require_swarm();
    let id = std::process::id();

    // The hand-written stack: its starts, then its failovers.
    let mut stack_ready = Samples::default();
    let mut stack_kills = Measured::default();
    for s in 1..=starts {
        let (stack, t0) = stack::Stack::deploy(&format!("benchdify{id}"));
        assert!(
            stack.wait_ready(SETTLE_LIMIT),
            "the hand-written stack did not become ready"
        );
        let t = stack_timeline(&stack, t0);
        println!("start {s} of the hand-written stack: {}", t.line());
        stack_ready.0.extend(t.sentinels_agree);
        if s == starts {
            stack_kills = failovers(&stack, kills, &dns_options);
        }
    }

    let mut ready = Samples::default();
    let mut systems = Vec::new();
    for fast in [true, false] {
        let mode = if fast { "fast" } else { "alone" };
        let rounds = if fast { starts } else { 1 };
        for s in 1..=rounds {
            let (g, t0) = haswarm::Haswarm::apply(&format!("bench-rsg{mode}-{id}"), fast);
            let at = g.wait_ready();
            let t = haswarm_timeline(&g, t0, at);
            println!("start {s} of a RedisSentinelGroup ({mode}): {}", t.line());
            ready.0.extend(t.ready);
            if s == rounds {
                systems.push((g.label(), failovers(&g, kills, &dns_options)));
            }
            g.delete();
        }
    }
    report(&stack_ready, &ready, stack_kills, systems, kills);
}

fn stack_timeline(stack: &stack::Stack, t0: f64) -> Timeline {
    let services = stack.services();
    let master = format!("{}_redis-master", stack.name);
    let replicas: Vec<String> = services
        .iter()
        .filter(|s| s.contains("_redis-replica-"))
        .cloned()
        .collect();
    timeline::read(
        t0,
        &services,
        (&master, &replicas, &stack.sentinel_services()),
        None,
    )
}

fn haswarm_timeline(g: &haswarm::Haswarm, t0: f64, ready: Option<f64>) -> Timeline {
    let master = g.settled(None).unwrap_or_default();
    let replicas: Vec<String> = g
        .instance_services()
        .into_iter()
        .filter(|s| *s != master)
        .collect();
    timeline::read(
        t0,
        &g.services(),
        (&master, &replicas, &g.sentinel_services()),
        ready,
    )
}

fn report(
    stack_ready: &Samples,
    ready: &Samples,
    stack_kills: Measured,
    systems: Vec<(String, Measured)>,
    kills: usize,
) {
    let ratio = |a: &Samples, b: &Samples| match (a.median(), b.median()) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".to_owned(),
    };
    println!(
        "redis_failover (downAfter {DOWN_AFTER_S}s, {INSTANCES} instances, {SENTINELS} sentinels):"
    );
    println!(
        "  deploy to ready, hand-written stack (sentinels agree): {}",
        stack_ready.summary()
    );
    println!(
        "  apply to Ready, haswarm: {}; median / the stack's: {}",
        ready.summary(),
        ratio(ready, stack_ready)
    );
    println!("  SIGKILL of the master to the first acknowledged write ({kills} kills each):");
    println!(
        "    hand-written stack: {}",
        Samples(stack_kills.times.clone()).summary()
    );
    let base = Samples(stack_kills.times.clone());
    for (label, m) in std::iter::once(("hand-written stack".to_owned(), stack_kills)).chain(systems)
    {
        let times = Samples(m.times.clone());
        if label != "hand-written stack" {
            println!(
                "    {label}: {}; median / the stack's: {}",
                times.summary(),
                ratio(&times, &base)
            );
        }
        println!(
            "      {label}, to the first +switch-master: {}",
            Samples(m.switches).summary()
        );
        if !m.asked.is_empty() {
            println!(
                "      {label}, to haswarm's request: {}",
                Samples(m.asked).summary()
            );
        }
        if m.failed > 0 {
            println!(
                "      {label}: {} kill(s) gave no acknowledged write within {KILL_LIMIT:?}",
                m.failed
            );
        }
        println!(
            "      {label}: writes acknowledged with WAIT 1: {}, lost: {}; looks at every instance's ROLE \
             in the {ROLE_WATCH_S} s after each kill that found two masters: {} of {}",
            m.acked,
            m.lost.map_or_else(|| "not read".to_owned(), |l| l.to_string()),
            m.two_masters.0,
            m.two_masters.1
        );
    }
}

/// What the sentinels logged about one kill.
#[derive(Debug, Default)]
struct SentinelSide {
    /// Unix time of the first `+switch-master`, and the master it named.
    switched: Option<(f64, String)>,
    /// When the last sentinel logged its first `+switch-master` (`None`
    /// unless every sentinel did): a client may ask any of them.
    all_switched: Option<f64>,
    /// Sentinels that entered TILT.
    tilted: usize,
    /// Whether a failover was aborted (and so tried again).
    aborted: bool,
}

/// Reads the sentinels' logs since unix time `since`.
fn sentinel_side(g: &dyn Group, since: f64) -> SentinelSide {
    let mut side = SentinelSide::default();
    let mut firsts = Vec::new();
    for s in g.sentinel_services() {
        let c = service_container(&s);
        if c.is_empty() {
            continue;
        }
        let log = docker(&["logs", "-t", "--since", &format!("{since:.3}"), &c]);
        let mut tilted = false;
        let mut first: Option<f64> = None;
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
                first = Some(first.map_or(at, |f| f.min(at)));
            }
            tilted |= line.contains("+tilt");
            side.aborted |= line.contains("-failover-abort");
        }
        side.tilted += usize::from(tilted);
        firsts.push(first);
    }
    side.all_switched = firsts
        .iter()
        .try_fold(None::<f64>, |m, f| {
            f.map(|f| Some(m.map_or(f, |m| m.max(f))))
        })
        .flatten();
    side
}

/// One write attempt of the client.
#[derive(Clone, Debug)]
struct Attempt {
    ok: bool,
    start: f64,
    end: f64,
    /// The exception's name of a failed attempt.
    error: String,
    /// The key's number of a write a replica acknowledged (`WAIT 1`).
    acked: Option<u64>,
}

fn parse(line: &str) -> Option<Attempt> {
    let mut f = line.split_whitespace();
    let ok = match f.next()? {
        "ok" => true,
        "fail" => false,
        _ => return None,
    };
    let (start, end) = (f.next()?.parse().ok()?, f.next()?.parse().ok()?);
    let (error, acked) = if ok {
        let acked = f.next() == Some("1");
        (
            String::new(),
            f.next().and_then(|n| n.parse().ok()).filter(|_| acked),
        )
    } else {
        (f.next().unwrap_or_default().to_owned(), None)
    };
    Some(Attempt {
        ok,
        start,
        end,
        error,
        acked,
    })
}

/// The client container and what it printed so far.
struct Probe(Client<Attempt>);

impl Probe {
    fn start(name: &str, g: &dyn Group, dns_options: &[String]) -> Self {
        let script = haswarm_testbed::repo().join("tests/testbed/redis_client.py");
        let mut cmd = Command::new("docker");
        cmd.args(["run", "--rm", "-i", "--name", name, "--network"])
            .arg(g.network())
            .args(
                dns_options
                    .iter()
                    .flat_map(|o| ["--dns-option", o.as_str()]),
            )
            .arg("-v")
            .arg(format!("{}:/redis_client.py:ro", script.display()))
            .args(["haswarm/redis-client:latest", "python3", "/redis_client.py"])
            .arg(g.sentinel_hosts().join(","))
            .arg(g.master_group())
            .args(["probe", "0"]);
        Self(Client::start(name, cmd, &g.password(), parse))
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

/// What the kills of one system measured.
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
    /// Writes a replica acknowledged (`WAIT 1`), and how many of them the
    /// master lacked at the end (`None`: not read).
    acked: usize,
    lost: Option<usize>,
    /// Looks at every instance's `ROLE` in the 40 s after each kill that
    /// found two masters, and all such looks.
    two_masters: (usize, usize),
}

/// How long after each kill `ROLE` is watched for a second master.
const ROLE_WATCH_S: f64 = 40.0;

/// Waits until `g` is settled for a kill; its master's service.
fn settle(
    g: &dyn Group,
    probe: &Probe,
    previous: Option<&str>,
    since: Option<Instant>,
) -> Option<String> {
    let pause = Duration::from_secs(2 * FAILOVER_TIMEOUT_S + 2);
    let deadline = Instant::now() + SETTLE_LIMIT;
    while Instant::now() < deadline {
        if since.is_none_or(|t| t.elapsed() > pause) && probe.writing() {
            if let Some(m) = g.settled(previous) {
                return Some(m);
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    None
}

/// Kills the master of `g` `kills` times, each once it settled.
fn failovers(g: &dyn Group, kills: usize, dns_options: &[String]) -> Measured {
    let client = format!("bench-client-{}", std::process::id());
    let probe = Probe::start(&client, g, dns_options);
    assert!(
        haswarm_testbed::docker::eventually(Duration::from_secs(60), || probe.writing()),
        "the client does not write through {}",
        g.label()
    );
    println!(
        "{}: {kills} kills of the master; time from SIGKILL to the first acknowledged write \
         of a redis-py Sentinel client writing every 50 ms (client resolver options: {})",
        g.label(),
        if dns_options.is_empty() {
            "defaults".to_owned()
        } else {
            dns_options.join(" ")
        }
    );
    let roles = safety::Roles::start(&format!("bench-roles-{}", std::process::id()), g);
    let mut m = Measured::default();
    let mut previous: Option<String> = None;
    let mut last_failover: Option<Instant> = None;
    let mut killed_at = Vec::new();
    for k in 1..=kills {
        let Some(master) = settle(g, &probe, previous.as_deref(), last_failover) else {
            println!(
                "kill {k:>2}: {} did not settle within {SETTLE_LIMIT:?}; stopping",
                g.label()
            );
            break;
        };
        killed_at.push(now());
        kill_once(g, &probe, (k, &master), &mut m);
        last_failover = Some(Instant::now());
        previous = Some(master);
    }
    // The last kill's watch runs its full 40 s.
    if let Some(last) = killed_at.last() {
        let left = last + ROLE_WATCH_S - now();
        if left > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(left));
        }
    }
    let windows: Vec<(f64, f64)> = killed_at
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let next = killed_at.get(i + 1).copied().unwrap_or(f64::INFINITY);
            (*t, (t + ROLE_WATCH_S).min(next))
        })
        .collect();
    m.two_masters = roles.two_masters(&windows);
    drop(roles);
    // Every write a replica acknowledged must be on the master the group
    // settles on; the client stops first, so none is in flight.
    let acked: Vec<u64> = probe.attempts().iter().filter_map(|a| a.acked).collect();
    drop(probe);
    m.acked = acked.len();
    m.lost = g
        .settled(previous.as_deref())
        .or_else(|| g.settled(None))
        .map(|master| safety::lost(&acked, &safety::probe_keys(&g.probe_keys(&master))));
    m
}

/// One kill of `master`, and what it measured.
fn kill_once(g: &dyn Group, probe: &Probe, (k, master): (usize, &str), m: &mut Measured) {
    let victim = service_container(master);
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
    let side = sentinel_side(g, t0);
    let asked = g.asked_since(t0);
    let failed: Vec<Attempt> = probe
        .attempts()
        .into_iter()
        .filter(|a| !a.ok && a.start >= killed)
        .filter(|a| first_ok.as_ref().is_none_or(|f| a.end <= f.end))
        .collect();
    let mut notes = Vec::new();
    let new_master = match &side.switched {
        Some((at, to)) => {
            m.switches.push(at - t0);
            notes.push(format!("sentinels switched at {}", secs(at - t0)));
            if let Some(all) = side.all_switched {
                notes.push(format!("all at {}", secs(all - t0)));
            }
            to.clone()
        }
        None => {
            notes.push("no +switch-master logged".to_owned());
            "?".to_owned()
        }
    };
    if let Some(at) = asked {
        m.asked.push(at - t0);
        notes.push(format!("haswarm asked at {}", secs(at - t0)));
    } else if let Some(why) = g.not_asked(t0) {
        notes.push(format!("haswarm did not ask: {why}"));
    }
    notes.push(format!("{} failed writes", failed.len()));
    if let Some(last) = failed.last() {
        notes.push(format!(
            "the last failed from {} to {} ({})",
            secs(last.start - t0),
            secs(last.end - t0),
            last.error
        ));
    }
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
}
