//! Swarm's task errors in a resource's status, end to end on the local
//! single-node Swarm: an image the node does not have, no node with room,
//! a crash loop, a failing health check and a memory limit each show as the `TasksHealthy`
//! condition, naming the member and quoting the task's own error, lead
//! `Ready`'s message, and raise one Warning event. Each test prints how long
//! after the apply (or the fault) the condition said so.

use std::time::{Duration, Instant};

use haswarm_testbed::docker::{eventually, redis_cli, require_swarm, Cleanup};
use haswarm_testbed::Daemon;

/// A group of `instances` with `extra` spec lines (indented by two).
fn group(name: &str, image: &str, instances: u8, extra: &str) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {name}\nspec:\n  image: {image}\n  instances: {instances}\n  placement:\n    spread: None\n  sentinels:\n    downAfter: 2s\n{extra}"
    )
}

/// A kind as `get` names it and as the events API does.
type Kind = (&'static str, &'static str);
const RSG: Kind = ("rsg", "redissentinelgroups");
const PGC: Kind = ("pgc", "postgresclusters");

/// The condition `type_` of resource `name`, as (status, reason, message).
fn condition(
    d: &Daemon,
    (kind, _): Kind,
    name: &str,
    type_: &str,
) -> Option<(String, String, String)> {
    condition_in(&d.get_json(kind, name), type_)
}

/// The condition `type_` in a resource as `get -o json` prints it.
fn condition_in(v: &serde_json::Value, type_: &str) -> Option<(String, String, String)> {
    let c = v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?
        .clone();
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    Some((s("status"), s("reason"), s("message")))
}

/// Waits (up to `limit` seconds) until `TasksHealthy` is False with `reason`
/// and its message names `member` (the troubles of several members show as
/// Swarm rejects each one's task); returns the seconds since `from` and the
/// condition's message. Checks, in the same look, that Ready's message
/// leads with it, and that a Warning event said it.
fn reported(
    d: &Daemon,
    (name, reason, member): (&str, &str, &str),
    from: Instant,
    limit: u64,
) -> (f64, String) {
    reported_of(d, RSG, (name, reason, member), from, limit)
}

/// [`reported`] for a resource of any kind.
fn reported_of(
    d: &Daemon,
    kind: Kind,
    (name, reason, member): (&str, &str, &str),
    from: Instant,
    limit: u64,
) -> (f64, String) {
    let mut seen = None;
    let found = eventually(Duration::from_secs(limit), || {
        let v = d.get_json(kind.0, name);
        let tasks = condition_in(&v, "TasksHealthy");
        let ready = condition_in(&v, "Ready");
        let ok = match (&tasks, &ready) {
            (Some((s, r, m)), Some((rs, _, rm))) => {
                s == "False"
                    && r == reason
                    && m.contains(&format!("{member}: "))
                    && rs == "False"
                    && rm.starts_with(m.as_str())
            }
            _ => false,
        };
        seen = Some((tasks, ready));
        ok
    });
    let took = from.elapsed().as_secs_f64();
    assert!(
        found,
        "TasksHealthy never said {reason} for {member}, led by Ready's message: {seen:?}; status {}",
        d.get_json(kind.0, name)["status"]
    );
    let message = seen.and_then(|(t, _)| t).map(|(_, _, m)| m).expect("seen");
    let events = d.events(kind.1, name);
    assert!(
        events.iter().any(|(r, m)| r == reason && *m == message),
        "no {reason} event saying {message:?}: {events:?}"
    );
    (took, message)
}

#[test]
fn an_image_the_node_does_not_have_is_reported_at_once_and_cleared_by_a_fix() {
    require_swarm();
    let name = format!("te-img-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("RedisSentinelGroup", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    let applied = Instant::now();
    d.apply("rsg.yaml", &group(&name, "haswarm/absent:1", 1, ""));
    let (took, message) = reported(
        &d,
        (&name, "ImageMissing", &format!("{name}-redis-0")),
        applied,
        60,
    );
    assert!(
        message.contains(&format!(
            "{name}-redis-0: task rejected: No such image: haswarm/absent:1"
        )),
        "{message}"
    );
    haswarm_testbed::figure!("[figures] a missing image in status {took:.1} s after the apply");

    // The image fixed: the condition clears and the group becomes Ready.
    d.apply("rsg.yaml", &group(&name, "haswarm/redis:bookworm", 1, ""));
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "180s");
    let (status, reason, _) = condition(&d, RSG, &name, "TasksHealthy").expect("TasksHealthy");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "TasksRunning"));
}

#[test]
fn no_node_with_room_is_reported_naming_the_data_members() {
    require_swarm();
    let name = format!("te-room-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("RedisSentinelGroup", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    let applied = Instant::now();
    let room = "  resources:\n    reservations:\n      memory: 1000Gi\n";
    d.apply("rsg.yaml", &group(&name, "haswarm/redis:bookworm", 1, room));
    let (took, message) = reported(
        &d,
        (&name, "NoSuitableNode", &format!("{name}-redis-0")),
        applied,
        60,
    );
    assert!(
        message.starts_with(&format!("{name}-redis-0: task pending: no suitable node")),
        "{message}"
    );
    assert!(message.contains("insufficient resources"), "{message}");
    assert!(
        !message.contains("sentinel"),
        "the sentinels have room: {message}"
    );
    haswarm_testbed::figure!("[figures] no node with room in status {took:.1} s after the apply");
}

#[test]
fn a_member_that_keeps_exiting_is_a_crash_loop() {
    require_swarm();
    let name = format!("te-loop-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("RedisSentinelGroup", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    let applied = Instant::now();
    // redis-server refuses a directive it does not know, and exits; each
    // start after the first waits a minute for the sentinels (none know a
    // master), so the third failure comes after about two minutes.
    let bad = "  config:\n    no-such-directive: \"1\"\n";
    d.apply("rsg.yaml", &group(&name, "haswarm/redis:bookworm", 1, bad));
    let (took, message) = reported(
        &d,
        (&name, "CrashLoop", &format!("{name}-redis-0")),
        applied,
        360,
    );
    assert!(
        message.starts_with(&format!("{name}-redis-0: crash loop: task: non-zero exit")),
        "{message}"
    );
    haswarm_testbed::figure!(
        "[figures] a crash loop in status {took:.1} s after the apply (3 failed tasks; each start waits a minute for the sentinels)"
    );
}

#[test]
fn a_member_killed_for_its_health_check_is_reported() {
    require_swarm();
    let name = format!("te-health-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("RedisSentinelGroup", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    d.apply("rsg.yaml", &group(&name, "haswarm/redis:bookworm", 2, ""));
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "180s");
    let (status, reason, _) = condition(&d, RSG, &name, "TasksHealthy").expect("TasksHealthy");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "TasksRunning"));
    let master = d.redis_master(&name);
    let replica = (0..2)
        .map(|i| format!("{name}-redis-{i}"))
        .find(|s| *s != master)
        .expect("a replica");
    // Every client's commands wait, the health check's PING too: Swarm
    // kills the container after its retries.
    let paused = redis_cli(&replica, 6379, "CLIENT PAUSE 120000 ALL\n");
    assert!(paused.contains("OK"), "CLIENT PAUSE: {paused}");
    let at = Instant::now();
    let (took, message) = reported(&d, (&name, "HealthCheckFailing", &replica), at, 120);
    // redis-server exits 0 on Swarm's SIGTERM: the task says only
    // "complete", the container's health log says why.
    assert!(
        message.starts_with(&format!(
            "{replica}: health check failing: stopped as unhealthy, the last check said: "
        )),
        "{message}"
    );
    haswarm_testbed::figure!(
        "[figures] a failing health check in status {took:.1} s after the member stopped answering"
    );
}

#[test]
fn a_member_killed_for_its_memory_is_reported() {
    require_swarm();
    let name = format!("te-oom-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("RedisSentinelGroup", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    let limit = "  resources:\n    limits:\n      memory: 48Mi\n";
    d.apply(
        "rsg.yaml",
        &group(&name, "haswarm/redis:bookworm", 1, limit),
    );
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "180s");
    let member = format!("{name}-redis-0");
    // One write that needs 200 MB (SETRANGE pads the string with zeros):
    // the kernel kills redis-server for its limit. The append-only file
    // holds the write, so every restart replays it and is killed again.
    let at = Instant::now();
    let _ = redis_cli(&member, 6379, "SETRANGE big 200000000 x\n");
    let (took, message) = reported(&d, (&name, "OutOfMemory", &member), at, 120);
    assert!(
        message.starts_with(&format!(
            "{member}: out of memory: task: non-zero exit (137)"
        )),
        "{message}"
    );
    assert!(message.contains("OOMKilled"), "{message}");
    haswarm_testbed::figure!("[figures] an OOM kill in status {took:.1} s after the write");
}

#[test]
fn a_postgres_cluster_reports_its_task_errors_the_same_way() {
    require_swarm();
    let name = format!("te-pg-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("PostgresCluster", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    let applied = Instant::now();
    // PostgreSQL's image is missing; etcd's and the router's are not.
    let image = "haswarm/postgres:15";
    d.apply(
        "pgc.yaml",
        &format!(
            "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: {name}\nspec:\n  instances: 1\n  postgres:\n    image: haswarm/absent:15\n  etcd:\n    members: 1\n    image: {image}\n  router:\n    image: {image}\n    replicas: 1\n  placement:\n    spread: None\n  storage:\n    reclaimPolicy: Delete\n"
        ),
    );
    let (took, message) = reported_of(
        &d,
        PGC,
        (&name, "ImageMissing", &format!("{name}-pg-0")),
        applied,
        60,
    );
    assert!(
        message.starts_with(&format!(
            "{name}-pg-0: task rejected: No such image: haswarm/absent:15"
        )),
        "{message}"
    );
    assert!(
        !message.contains("etcd") && !message.contains("router"),
        "etcd's and the router's images are there: {message}"
    );
    haswarm_testbed::figure!(
        "[figures] a PostgresCluster's missing image in status {took:.1} s after the apply"
    );
}
