//! Failover benchmark for PostgresCluster: the time from a SIGKILL of the
//! Patroni leader's container to the first write committed through the
//! cluster's read-write endpoint `<name>-rw:5432`, over `HASWARM_BENCH_KILLS`
//! kills (default 5), in two modes, each on a cluster of its own; prints
//! every kill and min/median/max per mode. Target: median under 10 s with
//! help.
//!
//! - With help, `spec.patroni.fastFailover: true` (the default): haswarm sees
//!   the leader's container proven dead and releases Patroni's leader key in
//!   the managed etcd at once, so a replica takes over without waiting for
//!   the key's TTL.
//! - Without help, `spec.patroni.fastFailover: false`: Patroni alone. A
//!   replica only takes over once the leader key's TTL has run out, but
//!   Swarm restarts the killed container after its 5 s restart delay, and a
//!   restarted Patroni that finds its own name on the key carries on as the
//!   leader: the "failover" is then the old leader coming back. Either way
//!   the figure is the time to the first committed write, and every kill
//!   reports which member leads afterwards.
//!
//! Both clusters have 3 instances, 3 etcd members, 2 routers and Patroni's
//! `ttl: 20, loopWait: 2, retryTimeout: 4, synchronousMode: On`.
//!
//! Run with `cargo bench -p haswarm-testbed --bench pg_failover` after
//! `tests/testbed/prepare.sh` (it needs the image `haswarm/postgres:15` and
//! an active swarm). With 5 kills a mode takes about three to four minutes
//! on a 2-core machine, most of it creating and deleting the cluster.
//!
//! How it measures: one writer container (the cluster's image, `psql`) is
//! started on the cluster's network before the first kill and runs until the
//! mode ends, so no container starts on that network during a failover apart
//! from Swarm's restart of the killed instance. Every 100 ms it starts an
//! attempt that opens a new connection to `<name>-rw`
//! (`PGCONNECT_TIMEOUT=2`, `statement_timeout` 3 s) and commits one
//! `INSERT`, and prints the attempt's start and end (unix times, from `date`
//! in the container: containers share the host's kernel clock) and whether
//! it committed. The attempts do not wait for one another (each is ended
//! after 10 s at the latest): a write in flight on the killed leader can get
//! no answer for seconds (up to the connect timeout, or until HAProxy marks
//! the leader down and closes its session, about 4 s in our runs), and a
//! writer waiting for it would measure that rather than the failover (a
//! first version did: 2.5 to 4.9 s with help instead of 0.9 to 2.4 s). Each
//! kill reports how the writes in flight at the kill ended. An `INSERT`
//! whose wait for the synchronous standby was cancelled by the statement
//! timeout ("committed locally") counts as failed: PostgreSQL reports success
//! for it, but it was not acknowledged the way synchronous mode promises.
//! For each kill, the
//! clock starts just before `docker kill -s KILL` runs (so it includes the
//! few tens of milliseconds the CLI takes) and stops at the end of the first
//! committed write that started after `docker kill` returned: a write that
//! started then cannot have been committed by the killed leader.
//!
//! Each kill also reports when haswarm released the leader key (its
//! `LeaderReleased` event) and when a Patroni logged taking the leader lock.
//!
//! Before every kill the cluster is settled: Ready with every member's role
//! other than Unknown; every member's Patroni answering and running (so the
//! leader killed last is back, in its restarted container), one leader and
//! one synchronous standby as Patroni has them in etcd, and the status naming
//! that leader (the status alone can lag a failover by seconds); and the
//! writer committing again. The leader named after each kill is the one the
//! cluster settled with.
//!
//! Everything it creates goes when it ends, also on a panic: the cluster's
//! services, network, configs and secrets, its data volumes and the writer.

use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use haswarm_testbed::bench::{median, secs, unix_time, Client};
use haswarm_testbed::docker::{
    docker, eventually, require_image, require_swarm, service_container, Cleanup,
};
use haswarm_testbed::{assert_code, Daemon};
use serde_json::Value;

const IMAGE: &str = "haswarm/postgres:15";
const INSTANCES: usize = 3;
const ETCD_MEMBERS: usize = 3;
/// Patroni's settings, the same in both modes.
const TTL: u32 = 20;
const LOOP_WAIT: u32 = 2;
const RETRY_TIMEOUT: u32 = 4;
const SYNCHRONOUS_MODE: &str = "On";
/// The writer's connect timeout (seconds) and statement timeout (ms).
const CONNECT_TIMEOUT_S: u32 = 2;
const STATEMENT_TIMEOUT_MS: u32 = 3_000;
/// Seconds after which the writer gives up on an attempt (a connection to
/// the killed leader gets no answer until HAProxy closes it).
const ATTEMPT_LIMIT_S: u32 = 10;
/// How long one kill may take to give a committed write before it counts
/// as a failed failover.
const KILL_LIMIT: Duration = Duration::from_secs(120);
/// How long the cluster may take to settle before a kill.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);

fn manifest(name: &str, fast_failover: bool) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: {name}\nspec:\n  instances: {INSTANCES}\n  postgres:\n    image: {IMAGE}\n  etcd:\n    members: {ETCD_MEMBERS}\n    image: {IMAGE}\n  router:\n    image: {IMAGE}\n  placement:\n    spread: None\n  patroni:\n    ttl: {TTL}\n    loopWait: {LOOP_WAIT}\n    retryTimeout: {RETRY_TIMEOUT}\n    synchronousMode: {SYNCHRONOUS_MODE}\n    fastFailover: {fast_failover}\n  storage:\n    reclaimPolicy: Delete\n"
    )
}

/// Unix time in seconds, the clock the writer's lines use too (containers
/// share the host's kernel clock).
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn get(d: &Daemon, name: &str) -> Value {
    d.get_json("pgc", name)
}

/// What a member's Patroni REST API answers on `path` (`Null` when the
/// member has no running container or its Patroni does not answer).
fn patroni(name: &str, i: usize, path: &str) -> Value {
    let c = service_container(&format!("{name}-pg-{i}"));
    if c.is_empty() {
        return Value::Null;
    }
    let script = format!(
        "import sys, urllib.request; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:8008{path}', timeout=3).read().decode())"
    );
    serde_json::from_str(docker(&["exec", &c, "python3", "-c", &script]).trim())
        .unwrap_or(Value::Null)
}

/// The leader when the cluster is settled for a kill: Ready with every
/// member known (its status), and as Patroni has it (from etcd, so never
/// older than the last kill, unlike the status): every member's Patroni
/// running (so also the leader killed last, restarted), one leader, one
/// synchronous standby, the others running or streaming, and the status
/// naming the same leader.
fn settled(d: &Daemon, name: &str) -> Option<String> {
    let v = get(d, name);
    let status = &v["status"];
    let ready = status["conditions"]
        .as_array()?
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    let known = status["members"].as_array()?.len() == INSTANCES
        && status["members"]
            .as_array()?
            .iter()
            .all(|m| m["role"].as_str().is_some_and(|r| r != "Unknown"));
    if !ready || !known {
        return None;
    }
    // Each member's own Patroni answers, so its container is a live one (a
    // killed member's key in etcd outlives it by up to the TTL).
    if !(0..INSTANCES).all(|i| patroni(name, i, "/patroni")["state"] == "running") {
        return None;
    }
    let cluster = patroni(name, 0, "/cluster");
    let members = cluster["members"].as_array()?;
    let role = |r: &'static str| members.iter().filter(move |m| m["role"] == r);
    let leaders: Vec<&Value> = role("leader").collect();
    let [leader] = leaders.as_slice() else {
        return None;
    };
    let leader = leader["name"].as_str()?.to_owned();
    let healthy = members.len() == INSTANCES
        && members.iter().all(|m| {
            let state = m["state"].as_str().unwrap_or_default();
            if m["role"] == "leader" {
                state == "running"
            } else {
                state == "running" || state == "streaming"
            }
        })
        && role("sync_standby").count() == 1;
    (healthy && status["leader"].as_str() == Some(leader.as_str())).then_some(leader)
}

/// Unix times of the cluster's `LeaderReleased` events (the last time each
/// one happened).
fn releases(d: &Daemon, name: &str) -> Vec<f64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(d.client().events("postgresclusters", name))
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.reason == "LeaderReleased")
        .map(|e| e.last_timestamp.timestamp_micros() as f64 / 1e6)
        .collect()
}

/// The first time since unix time `since` a Patroni logged taking the
/// leader lock, and which member it was.
fn lock_taken(name: &str, since: f64) -> Option<(f64, String)> {
    let mut first: Option<(f64, String)> = None;
    for i in 0..INSTANCES {
        let member = format!("{name}-pg-{i}");
        let c = service_container(&member);
        if c.is_empty() {
            continue;
        }
        // Patroni logs to standard error: read both streams.
        let log = Command::new("docker")
            .args(["logs", "-t", "--since", &format!("{since:.3}"), &c])
            .output()
            .map(|o| {
                let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
                s.push_str(&String::from_utf8_lossy(&o.stderr));
                s
            })
            .unwrap_or_default();
        for line in log.lines() {
            let taken = line.contains("promoted self to leader")
                || line.contains("acquired session lock as a leader");
            let at = line.split_whitespace().next().and_then(unix_time);
            if let (true, Some(at)) = (taken, at) {
                if first.as_ref().is_none_or(|(f, _)| at < *f) {
                    first = Some((at, member.clone()));
                }
            }
        }
    }
    first
}

/// How one write attempt of the writer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Committed (and, in synchronous mode, acknowledged by the standby).
    Ok,
    /// Not committed: no connection, an error or a timeout.
    Fail,
    /// Committed on the primary, but the wait for the synchronous standby was
    /// cancelled by the statement timeout.
    Local,
}

/// One write attempt of the writer.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    outcome: Outcome,
    start: f64,
    end: f64,
}

fn parse(line: &str) -> Option<Attempt> {
    let mut f = line.split_whitespace();
    let outcome = match f.next()? {
        "ok" => Outcome::Ok,
        "fail" => Outcome::Fail,
        "local" => Outcome::Local,
        _ => return None,
    };
    Some(Attempt {
        outcome,
        start: f.next()?.parse().ok()?,
        end: f.next()?.parse().ok()?,
    })
}

/// The writer's loop: the password comes in on standard input; the table is
/// created first; then one attempt every 100 ms, each one connection and one
/// INSERT, each in the background (a double fork, so the container's init
/// reaps it) so that an attempt stuck on the killed leader does not hold up
/// the next ones; `timeout` ends an attempt stuck for [`ATTEMPT_LIMIT_S`].
fn writer_script(rw: &str) -> String {
    format!(
        "read -r PGPASSWORD; export PGPASSWORD
until psql -h {rw} -Atq -c 'CREATE TABLE IF NOT EXISTS bench(at timestamptz not null)' </dev/null >/dev/null 2>&1; do sleep 1; done
attempt() {{
  s=$(date +%s.%N)
  out=$(timeout {ATTEMPT_LIMIT_S} psql -h {rw} -Atq -c 'INSERT INTO bench VALUES (clock_timestamp())' </dev/null 2>&1); rc=$?
  e=$(date +%s.%N)
  if [ $rc -ne 0 ]; then r=fail
  elif printf '%s' \"$out\" | grep -q 'synchronous replication'; then r=local
  else r=ok; fi
  echo \"$r $s $e\"
}}
while :; do
  ( attempt & )
  sleep 0.1
done"
    )
}

/// The writer container and what it printed so far.
struct Writer(Client<Attempt>);

impl Writer {
    fn start(name: &str, network: &str, rw: &str, password: &str) -> Self {
        let mut cmd = Command::new("docker");
        cmd.args(["run", "--rm", "-i", "--init", "--name", name])
            .args(["--network", network])
            .args(["-e", "PGUSER=app", "-e", "PGDATABASE=app"])
            .arg("-e")
            .arg(format!("PGCONNECT_TIMEOUT={CONNECT_TIMEOUT_S}"))
            .arg("-e")
            .arg(format!(
                "PGOPTIONS=-c statement_timeout={STATEMENT_TIMEOUT_MS}"
            ))
            .args([IMAGE, "sh", "-c", &writer_script(rw)]);
        Self(Client::start(name, cmd, password, parse))
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.0.attempts()
    }

    /// The first committed write that started at or after `t`.
    fn first_ok_after(&self, t: f64) -> Option<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|a| a.outcome == Outcome::Ok && a.start >= t)
            .min_by(|a, b| a.end.total_cmp(&b.end))
    }

    /// Whether the writer's last write (the last to end) committed, recently.
    fn writing(&self) -> bool {
        self.attempts()
            .last()
            .is_some_and(|a| a.outcome == Outcome::Ok && now() - a.end < 2.0)
    }
}

/// What one mode measured.
struct Measured {
    /// SIGKILL to the first committed write, per kill that gave one.
    times: Vec<f64>,
    /// Kills that gave no committed write within [`KILL_LIMIT`].
    failed: usize,
}

/// Creates a cluster with `fastFailover` as given, kills its leader `kills`
/// times, and deletes it.
fn run_mode(mode: &str, fast_failover: bool, kills: usize) -> Measured {
    let name = format!(
        "bench-pg{}-{}",
        if fast_failover { "fast" } else { "ttl" },
        std::process::id()
    );
    let mut cleanup = Cleanup::default();
    cleanup.owner("PostgresCluster", &name);
    let writer_name = format!("{name}-writer");
    cleanup.named("container", &writer_name);

    // The daemon goes before the Cleanup guard does its work, so it cannot
    // put back what the guard removes.
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    d.apply("pgc.yaml", &manifest(&name, fast_failover));
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "300s");
    let status = d.get_json("pgc", &name)["status"].clone();
    let password = haswarm_testbed::docker::secret_value(
        &|args: &[&str]| docker(args),
        status["appPasswordSecret"].as_str().unwrap_or_default(),
        IMAGE,
    );
    let writer = Writer::start(
        &writer_name,
        &format!("{name}-net"),
        &format!("{name}-rw"),
        &password,
    );
    drop(password);
    assert!(
        eventually(Duration::from_secs(60), || writer.writing()),
        "the writer does not commit through {name}-rw"
    );

    println!(
        "pg_failover {mode} (fastFailover: {fast_failover}): {kills} kills of the leader of a cluster of \
         {INSTANCES} instances and {ETCD_MEMBERS} etcd members (Patroni ttl: {TTL}, loopWait: {LOOP_WAIT}, \
         retryTimeout: {RETRY_TIMEOUT}, synchronousMode: {SYNCHRONOUS_MODE}); time from SIGKILL to the \
         first committed INSERT of a psql writer starting a connection to {name}-rw:5432 every 100 ms, \
         attempts not waiting for one another \
         (connect timeout {CONNECT_TIMEOUT_S} s, statement timeout {STATEMENT_TIMEOUT_MS} ms)"
    );
    let mut measured = Measured {
        times: Vec::new(),
        failed: 0,
    };
    let settle = || {
        let deadline = Instant::now() + SETTLE_LIMIT;
        while Instant::now() < deadline {
            if writer.writing() {
                if let Some(leader) = settled(&d, &name) {
                    return Some(leader);
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        None
    };
    let Some(mut leader) = settle() else {
        panic!("{name} did not settle: {}", get(&d, &name));
    };
    for k in 1..=kills {
        let victim = service_container(&leader);
        let t0 = now();
        docker(&["kill", "-s", "KILL", &victim]);
        // The signal went out between t0 and now: only a write that started
        // after `docker kill` returned surely reached another primary (or the
        // restarted one).
        let killed = now();
        let deadline = Instant::now() + KILL_LIMIT;
        let mut first_ok = None;
        while Instant::now() < deadline {
            first_ok = writer.first_ok_after(killed);
            if first_ok.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let attempts = writer.attempts();
        let during = attempts
            .iter()
            .filter(|a| a.start >= killed)
            .filter(|a| first_ok.is_none_or(|f| a.end <= f.end));
        let (mut failures, mut local) = (0, 0);
        for a in during {
            match a.outcome {
                Outcome::Fail => failures += 1,
                Outcome::Local => local += 1,
                Outcome::Ok => {}
            }
        }
        let mut notes = Vec::new();
        let released: Vec<f64> = releases(&d, &name)
            .into_iter()
            .filter(|&t| t >= t0 - 0.5)
            .collect();
        match released.iter().copied().reduce(f64::min) {
            Some(at) => notes.push(format!("leader key released at {}", secs(at - t0))),
            None => notes.push("leader key not released".to_owned()),
        }
        match lock_taken(&name, t0) {
            Some((at, member)) => {
                notes.push(format!(
                    "{member} took the leader lock at {}",
                    secs(at - t0)
                ));
            }
            None => notes.push("no Patroni logged taking the leader lock".to_owned()),
        }
        notes.push(format!("{failures} failed writes"));
        if let Some(a) = first_ok {
            notes.push(format!(
                "the first committed one started at {}",
                secs(a.start - t0)
            ));
        }
        if local > 0 {
            notes.push(format!(
                "{local} committed locally only (synchronous standby wait cancelled)"
            ));
        }
        // Settle again: the cluster Ready, the killed leader back as a
        // member, the writer committing; this also tells the new leader.
        let next = settle();
        // The writes in flight when the leader was killed: how long they
        // were stuck (they have ended by now, or were given up on).
        let stuck: Vec<String> = writer
            .attempts()
            .iter()
            .filter(|a| a.start < killed && a.end > t0)
            .map(|a| {
                let outcome = match a.outcome {
                    Outcome::Ok => "committed",
                    Outcome::Fail => "failed",
                    Outcome::Local => "committed locally only",
                };
                format!("{outcome} at {}", secs(a.end - t0))
            })
            .collect();
        if !stuck.is_empty() {
            notes.push(format!("in flight at the kill: {}", stuck.join(", ")));
        }
        let new_leader = next.clone().unwrap_or_else(|| "?".to_owned());
        if new_leader == leader {
            notes.push("the old leader came back as leader".to_owned());
        }
        let notes = notes.join(", ");
        match first_ok {
            Some(a) => {
                let t = a.end - t0;
                measured.times.push(t);
                println!(
                    "  kill {k:>2}: {leader} -> {new_leader}: {} ({notes})",
                    secs(t)
                );
            }
            None => {
                measured.failed += 1;
                println!(
                    "  kill {k:>2}: {leader} -> {new_leader}: no committed write within {KILL_LIMIT:?} ({notes})"
                );
            }
        }
        let Some(next) = next else {
            println!(
                "  {name} did not settle within {SETTLE_LIMIT:?}; stopping this mode: {}",
                get(&d, &name)
            );
            break;
        };
        leader = next;
    }

    drop(writer);
    let o = d.ctl(&["delete", "pgc", &name, "--wait", "--timeout=180s"]);
    assert_code(&o, 0);
    measured
}

fn main() {
    // `cargo test --benches` runs bench targets without `--bench`: this one
    // needs minutes and the Swarm, so it only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("pg_failover: skipped (run it with `cargo bench -p haswarm-testbed --bench pg_failover`)");
        return;
    }
    haswarm_testbed::no_budget();
    let kills: usize = std::env::var("HASWARM_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&k| k > 0)
        .unwrap_or(5);
    require_swarm();
    require_image(IMAGE);

    let mut results = Vec::new();
    for (mode, fast_failover) in [("with help", true), ("without help", false)] {
        results.push((mode, run_mode(mode, fast_failover, kills)));
    }

    println!(
        "pg_failover: SIGKILL of the Patroni leader to the first committed write through <name>-rw:5432 \
         (ttl: {TTL}, loopWait: {LOOP_WAIT}, retryTimeout: {RETRY_TIMEOUT}, synchronousMode: {SYNCHRONOUS_MODE})"
    );
    for (mode, mut m) in results {
        m.times.sort_by(f64::total_cmp);
        match (m.times.first(), m.times.last()) {
            (Some(min), Some(max)) => println!(
                "  {mode} ({} of {kills} kills): min {}, median {}, max {}",
                m.times.len(),
                secs(*min),
                secs(median(&m.times)),
                secs(*max)
            ),
            _ => println!("  {mode}: no kill gave a committed write"),
        }
        if m.failed > 0 {
            println!(
                "  {mode}: {} kill(s) gave no committed write within {KILL_LIMIT:?}",
                m.failed
            );
        }
    }
}
