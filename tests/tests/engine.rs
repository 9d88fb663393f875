//! The fault suite, engines: under a running PostgresCluster and
//! RedisSentinelGroup on a Docker-in-Docker Swarm, each with a writer
//! counting what was acknowledged, the manager's engine restarts (the
//! outage shows as a condition, and nothing is recreated), and a node's
//! engine alone is cut off past the grace (its containers keep serving, and
//! no second copy of a member starts). Needs `tests/testbed/prepare.sh`.
//! Each test prints its figures.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use haswarm_testbed::dind::Bed;
use haswarm_testbed::docker::{eventually, require_image, require_swarm};
use haswarm_testbed::faults::{both_ready, members, nothing_acknowledged_lost, running_on};
use haswarm_testbed::pg::{self, At, IMAGE};
use haswarm_testbed::redis;
use haswarm_testbed::{one_at_a_time, stdout, Daemon};
use serde_json::Value;

/// What haswarm made for the resource `kind/name`, as the manager lists it:
/// each service, secret, config and network with its id (and a service's
/// spec hash), and every node's labels. Panics when the manager does not
/// answer, so that "unchanged" cannot pass on two empty lists.
fn objects(bed: &Bed, kind: &str, name: &str) -> BTreeMap<String, String> {
    let filter = format!("label=io.haswarm.owner={kind}/{name}");
    let mut out = BTreeMap::new();
    for (what, format) in [
        (
            "service",
            "{{.ID}} {{.Name}} {{index .Spec.Labels \"io.haswarm.spec-hash\"}}",
        ),
        ("secret", "{{.ID}} {{.Spec.Name}}"),
        ("config", "{{.ID}} {{.Spec.Name}}"),
        ("network", "{{.Id}} {{.Name}}"),
    ] {
        let ids = bed.docker(&[what, "ls", "-q", "--filter", &filter]);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        assert!(!ids.is_empty(), "no {what} of {kind}/{name} listed");
        let mut args = vec![what, "inspect", "--format", format];
        args.extend(ids);
        for line in bed.docker(&args).lines() {
            if let Some((id, rest)) = line.split_once(' ') {
                out.insert(format!("{what} {rest}"), id.to_owned());
            }
        }
    }
    for i in 1..=bed.len() {
        out.insert(format!("node {i} labels"), format!("{:?}", bed.labels(i)));
    }
    out
}

/// The ids of the Swarm task containers running on node `i`.
fn task_containers(bed: &Bed, i: usize) -> BTreeSet<String> {
    bed.docker_on(
        i,
        &["ps", "-q", "--filter", "label=com.docker.swarm.task.id"],
    )
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

fn ready_reason(d: &Daemon, kind: &str, name: &str) -> (String, String) {
    let v: Value = d.get_json(kind, name);
    v["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .unwrap_or_default()
}

#[test]
fn the_managers_engine_restarting_under_a_cluster_and_a_group_recreates_nothing() {
    let _one = one_at_a_time();
    require_swarm();
    require_image(IMAGE);
    let bed = Bed::up_with_images("hse", 3, &[IMAGE]);
    let host = bed.docker_host();
    // A grace longer than the restart: the manager's node must keep its slots.
    let d = Daemon::start_with_env(
        &["--resync", "3s", "--node-loss-grace", "120s"],
        &[("DOCKER_HOST", host.as_str())],
    );
    let (pgc, rsg) = ("er", "err");
    both_ready(&d, (pgc, rsg));

    // Writers on node 2, whose engine stays up.
    let at = At::Node(&bed, 2);
    let pg_writer = pg::start_writer(&d, at, pgc);
    let password = redis::password(&d, at, rsg);
    let redis_writer = redis::start_writer(at, rsg, &password);
    let leader = pg::leader(&d, pgc);
    let master = d.redis_master(rsg);
    let (leader_on, master_on) = (bed.node_of(&leader), bed.node_of(&master));
    let before = [
        objects(&bed, "PostgresCluster", pgc),
        objects(&bed, "RedisSentinelGroup", rsg),
    ];
    let others: Vec<BTreeSet<String>> = (2..=3).map(|i| task_containers(&bed, i)).collect();
    assert!(others.iter().all(|c| c.len() >= 4), "{others:?}");

    let restarted = Instant::now();
    bed.restart(1);
    let reported = eventually(Duration::from_secs(90), || {
        ready_reason(&d, "pgc", pgc).1 == "DockerUnreachable"
            && ready_reason(&d, "rsg", rsg).1 == "DockerUnreachable"
    });
    let reported_s = restarted.elapsed().as_secs_f64();
    assert!(
        reported,
        "the outage is not a condition: {:?} {:?}",
        ready_reason(&d, "pgc", pgc),
        ready_reason(&d, "rsg", rsg)
    );
    d.wait_for(&format!("pgc/{pgc}"), "condition=Ready", "300s");
    d.wait_for(&format!("rsg/{rsg}"), "condition=Ready", "300s");
    let ready_s = restarted.elapsed().as_secs_f64();

    // Nothing recreated: the same objects with the same ids and specs, the
    // same slot labels, and the members on the other nodes never restarted.
    let after = [
        objects(&bed, "PostgresCluster", pgc),
        objects(&bed, "RedisSentinelGroup", rsg),
    ];
    assert_eq!(after, before, "objects were recreated or changed");
    for (k, i) in (2..=3).enumerate() {
        let now = task_containers(&bed, i);
        let gone: Vec<&String> = others[k].difference(&now).collect();
        assert!(
            gone.is_empty(),
            "containers on node {i} restarted: {gone:?}"
        );
    }

    let master_now = d.redis_master(rsg);
    let (commits, writes) =
        nothing_acknowledged_lost(&d, at, (pgc, rsg), (&pg_writer, &redis_writer), &password);
    let events = stdout(&d.ctl(&["describe", "pgc", pgc]));
    assert!(events.contains("DockerUnreachable"), "{events}");
    eprintln!(
        "[figures] manager's engine restarted (leader {leader} on node {leader_on:?}, master {master} on node {master_on:?}): DockerUnreachable on both after {reported_s:.1} s; both Ready again after {ready_s:.1} s; nothing recreated; {} commits and {} Redis writes acknowledged, none lost (master now {master_now})",
        commits,
        writes
    );
    for c in [&pg_writer, &redis_writer] {
        at.docker(&["rm", "-f", c]);
    }
}

/// Ignored: in both runs, past the grace, the etcd member and the sentinel
/// of the cut-off node started again on the free node (the Redis and
/// PostgreSQL instances there stayed), although every family had a member
/// on the manager's node to read through. Likely cause: the manager takes a
/// down node's tasks out of service discovery, so the other members reach
/// the cut-off ones by name no longer (the sentinels mark theirs `s_down`,
/// the etcd health check fails), while the connections the cut-off members
/// opened themselves go on through their own node's stale load balancer
/// (the replica stays linked, Patroni keeps its key). Judging them by what
/// they send (a sentinel's hello messages, etcd's raft progress) is the
/// likely fix. Run it with `--ignored`; it prints where the members ran.
#[test]
#[ignore = "an etcd member and a sentinel of an engine-only partitioned node are started again elsewhere (issue 13)"]
fn a_node_whose_engine_alone_is_cut_off_past_the_grace_keeps_its_members_and_no_second_copy_starts()
{
    let _one = one_at_a_time();
    require_swarm();
    require_image(IMAGE);
    let bed = Bed::up_with_images("hsp", 4, &[IMAGE]);
    let host = bed.docker_host();
    let grace_s = 20;
    let grace = format!("{grace_s}s");
    let d = Daemon::start_with_env(
        &["--resync", "3s", "--node-loss-grace", &grace],
        &[("DOCKER_HOST", host.as_str())],
    );
    let names = ("ep", "epr");
    let (pgc, rsg) = names;
    both_ready(&d, names);

    // The node to cut off: the PostgreSQL leader's, else the Redis
    // master's, else one with an instance; never the manager's (haswarm
    // talks to its engine). The writers run on the manager.
    let leader = pg::leader(&d, pgc);
    let master = d.redis_master(rsg);
    let victim = [
        leader.clone(),
        master.clone(),
        format!("{pgc}-pg-0"),
        format!("{pgc}-pg-1"),
    ]
    .iter()
    .filter_map(|s| bed.node_of(s))
    .find(|n| *n != 1)
    .expect("a member off the manager's node");
    let held: Vec<String> = members(names)
        .into_iter()
        .filter(|s| bed.node_of(s) == Some(victim))
        .collect();
    assert!(!held.is_empty(), "node {victim} holds no member");
    // haswarm reads the sentinels and Patroni through containers on the
    // manager's node: which ones run there matters.
    let placed: BTreeMap<String, Option<usize>> = members(names)
        .into_iter()
        .map(|s| {
            let n = bed.node_of(&s);
            (s, n)
        })
        .collect();
    let at = At::Bed(&bed);
    let pg_writer = pg::start_writer(&d, at, pgc);
    let password = redis::password(&d, at, rsg);
    let redis_writer = redis::start_writer(at, rsg, &password);
    let before = [
        objects(&bed, "PostgresCluster", pgc),
        objects(&bed, "RedisSentinelGroup", rsg),
    ];

    let cut_at = Instant::now();
    bed.partition(victim);
    let victim_host = bed.node(victim);
    let reported = eventually(Duration::from_secs(60), || {
        d.get_json("pgc", pgc)["status"]["unavailableNodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["node"] == victim_host.as_str()))
    });
    let reported_s = cut_at.elapsed().as_secs_f64();
    assert!(
        reported,
        "node {victim} not reported: {}",
        d.get_json("pgc", pgc)
    );
    // Past the grace, and a while longer: members elsewhere never run.
    // A round counts only when the manager listed every member's tasks.
    let (mut elsewhere, mut rounds) = (Vec::new(), 0);
    while cut_at.elapsed() < Duration::from_secs(grace_s + 40) {
        let listed: Option<Vec<Vec<String>>> = held.iter().map(|s| running_on(&bed, s)).collect();
        if let Some(listed) = listed {
            rounds += 1;
            for (s, on) in held.iter().zip(listed) {
                elsewhere.extend(
                    on.into_iter()
                        .filter(|n| *n != victim_host)
                        .map(|n| (s.clone(), n)),
                );
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        rounds >= 10,
        "the manager listed the tasks in only {rounds} rounds"
    );
    assert!(
        elsewhere.is_empty(),
        "second copies ran: {elsewhere:?}; members by node before the cut: {placed:?}"
    );
    let pg_during = pg::acked(at, &pg_writer).len();
    let redis_during = redis::acked(at, &redis_writer).len();

    bed.heal(victim);
    d.wait_for(&format!("pgc/{pgc}"), "condition=Ready", "300s");
    d.wait_for(&format!("rsg/{rsg}"), "condition=Ready", "300s");
    let healed_s = cut_at.elapsed().as_secs_f64();
    let after = [
        objects(&bed, "PostgresCluster", pgc),
        objects(&bed, "RedisSentinelGroup", rsg),
    ];
    assert_eq!(after, before, "objects or slot labels changed");
    for (kind, name) in [("pgc", pgc), ("rsg", rsg)] {
        let o = d.ctl(&["describe", kind, name]);
        assert_eq!(o.status.code(), Some(0), "describe {kind} {name} failed");
        let events = stdout(&o);
        assert!(
            events.contains("NodeDown") && !events.contains("SlotMoved"),
            "{events}"
        );
    }

    let (commits, writes) =
        nothing_acknowledged_lost(&d, at, names, (&pg_writer, &redis_writer), &password);
    eprintln!(
        "[figures] engine of node {victim} (holding {held:?}; leader {leader}, master {master}) cut off for {} s (grace {grace_s} s): reported unavailable after {reported_s:.1} s, no member ran elsewhere, no slot moved; Ready again {healed_s:.1} s after the cut; writers went on through it ({pg_during} commits and {redis_during} Redis writes by the heal, {} and {} in all, none lost)",
        grace_s + 40,
        commits,
        writes
    );
    for c in [&pg_writer, &redis_writer] {
        at.docker(&["rm", "-f", c]);
    }
}
