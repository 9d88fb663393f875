//! The fault suite, drains: on a 4-node Docker-in-Docker Swarm with a
//! PostgresCluster and a RedisSentinelGroup spread one member per node and
//! a writer for each, `haswarmctl node drain` of the node holding the
//! PostgreSQL leader, then (after `uncordon`) of the node holding the Redis
//! master. Each role is switched over before its member moves, nothing
//! acknowledged is lost, the node ends with no member and availability
//! drain, and both are Ready with every member elsewhere. The node haswarmd
//! talks to is refused. Needs `tests/testbed/prepare.sh`; prints figures.

use std::time::{Duration, Instant};

use haswarm_testbed::dind::Bed;
use haswarm_testbed::docker::{eventually, require_image, require_swarm};
use haswarm_testbed::faults::{both_ready, members, nothing_acknowledged_lost};
use haswarm_testbed::pg::{self, At, IMAGE};
use haswarm_testbed::{assert_code, one_at_a_time, redis, stdout, Daemon};

/// The longest time between two acknowledged Redis writes.
fn longest_gap(writes: &[(u64, f64)]) -> f64 {
    writes
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .fold(0.0, f64::max)
}

/// Drains node `i` with the CLI and checks the node is left empty and
/// drained; returns how long the drain took.
fn drain(d: &Daemon, bed: &Bed, i: usize) -> f64 {
    let started = Instant::now();
    let o = d.ctl(&["node", "drain", &bed.node(i), "--timeout", "8m"]);
    let took = started.elapsed().as_secs_f64();
    assert_code(&o, 0);
    assert!(stdout(&o).contains("drained"), "{}", stdout(&o));
    let labels = bed.labels(i);
    assert!(
        !labels.keys().any(|k| k.contains(".slot-")),
        "node {i} still holds slots: {labels:?}"
    );
    assert_eq!(bed.availability(i), "drain");
    took
}

/// The events of `kind/name` as `describe` prints them.
fn described(d: &Daemon, kind: &str, name: &str) -> String {
    stdout(&d.ctl(&["describe", kind, name]))
}

/// Waits until both are Ready, then checks every pinned member runs on a
/// node other than `gone`.
fn ready_elsewhere(d: &Daemon, bed: &Bed, names: (&str, &str), gone: usize) {
    d.wait_for(&format!("pgc/{}", names.0), "condition=Ready", "420s");
    d.wait_for(&format!("rsg/{}", names.1), "condition=Ready", "300s");
    for m in members(names) {
        let on = bed.node_of(&m);
        assert!(
            on.is_some() && on != Some(gone),
            "{m} runs on {on:?} after node {gone} drained"
        );
    }
}

#[test]
fn draining_a_node_hands_the_leader_and_the_master_over_before_their_members_move() {
    let _one = one_at_a_time();
    require_swarm();
    require_image(IMAGE);
    let bed = Bed::up_with_images("hsd", 4, &[IMAGE]);
    let host = bed.docker_host();
    let d = Daemon::start_with_env(
        &["--resync", "3s", "--node-loss-grace", "30s"],
        &[("DOCKER_HOST", host.as_str())],
    );
    let names = ("dr", "drr");
    let (pgc, rsg) = names;
    both_ready(&d, names);

    // haswarmd reads the data plane through its engine's node: that one is
    // refused, and nothing changes.
    let o = d.ctl(&["node", "drain", &bed.node(1)]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        haswarm_testbed::stderr(&o).contains("haswarmd talks to"),
        "{}",
        haswarm_testbed::stderr(&o)
    );
    assert!(!bed.labels(1).contains_key("io.haswarm.drain"));

    // The writers run on node 1, which is never drained; so must the
    // leader and the master not start there.
    let at = At::Node(&bed, 1);
    let password = redis::password(&d, at, rsg);
    if bed.node_of(&pg::leader(&d, pgc)) == Some(1) {
        assert_code(&d.ctl(&["pg", "switchover", pgc, "--wait"]), 0);
    }
    let first = d.redis_master(rsg);
    if bed.node_of(&first) == Some(1) {
        let failover = format!(
            "{} -h {rsg}-sentinel-0 -p 26379 SENTINEL FAILOVER {rsg}",
            redis::CLI
        );
        redis::shell(at, rsg, &password, &["--rm"], &failover);
        assert!(
            eventually(Duration::from_secs(60), || {
                let m = d.redis_master(rsg);
                m != first && bed.node_of(&m).is_some_and(|n| n != 1)
            }),
            "the sentinels did not fail over from {first}"
        );
        d.wait_for(&format!("rsg/{rsg}"), "condition=Ready", "120s");
    }
    let pg_writer = pg::start_writer(&d, at, pgc);
    let redis_writer = redis::start_writer(at, rsg, &password);

    let leader = pg::leader(&d, pgc);
    let leader_on = bed.node_of(&leader).expect("the leader runs");
    let master = d.redis_master(rsg);
    let master_on = bed.node_of(&master).expect("the master runs");
    assert!(leader_on != 1 && master_on != 1);

    let pg_drain_s = drain(&d, &bed, leader_on);
    ready_elsewhere(&d, &bed, names, leader_on);
    let new_leader = pg::leader(&d, pgc);
    assert_ne!(new_leader, leader);
    let events = described(&d, "pgc", pgc);
    assert!(
        events.contains(&format!("switched the leader over from {leader}"))
            && events.contains("being drained"),
        "the leader was not switched over: {events}"
    );
    assert!(!events.contains("LeaderReleased"), "a failover: {events}");
    // The drained node is named as such: in status and in the events.
    let drained = bed.node(leader_on);
    let unavailable = d.get_json("pgc", pgc)["status"]["unavailableNodes"].clone();
    assert!(
        unavailable
            .as_array()
            .is_some_and(|l| l.iter().any(|n| n["node"] == drained.as_str())),
        "{drained} not in status.unavailableNodes: {unavailable}"
    );
    assert!(
        events.contains(&format!("node {drained} is drained"))
            && events.contains(&format!("left the drained node {drained}")),
        "{events}"
    );
    assert_code(&d.ctl(&["node", "uncordon", &bed.node(leader_on)]), 0);

    // The Redis master's node: drained now, unless it was the same node.
    let redis_drain_s = if master_on == leader_on {
        pg_drain_s
    } else {
        let s = drain(&d, &bed, master_on);
        ready_elsewhere(&d, &bed, names, master_on);
        assert_code(&d.ctl(&["node", "uncordon", &bed.node(master_on)]), 0);
        s
    };
    let new_master = d.redis_master(rsg);
    assert_ne!(new_master, master);
    let events = described(&d, "rsg", rsg);
    assert!(
        events.contains(&format!("away from {master} because its node")),
        "the master was not switched over: {events}"
    );
    assert_eq!(bed.availability(master_on), "active", "uncordon");

    let gap = longest_gap(&redis::acked(at, &redis_writer));
    let (commits, writes) =
        nothing_acknowledged_lost(&d, at, names, (&pg_writer, &redis_writer), &password);
    haswarm_testbed::figure!(
        "[figures] drain of the leader's node {leader_on}: {pg_drain_s:.1} s ({leader} -> {new_leader}); drain of the master's node {master_on}: {redis_drain_s:.1} s ({master} -> {new_master}); longest gap between acknowledged Redis writes {gap:.1} s; {commits} commits and {writes} Redis writes acknowledged, none lost"
    );
    for c in [&pg_writer, &redis_writer] {
        at.docker(&["rm", "-f", c]);
    }
}
