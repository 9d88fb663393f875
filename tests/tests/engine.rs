//! The fault suite, engines: under a running PostgresCluster and
//! RedisSentinelGroup on a Docker-in-Docker Swarm, each with a writer
//! counting what was acknowledged, the manager's engine restarts (the
//! outage shows as a condition, and nothing is recreated), and a node's
//! engine alone is cut off past the grace (its data members keep serving,
//! and no second copy of one starts; its etcd member and sentinel may be
//! replaced). Needs `tests/testbed/prepare.sh`.
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
    haswarm_testbed::figure!(
        "[figures] manager's engine restarted (leader {leader} on node {leader_on:?}, master {master} on node {master_on:?}): DockerUnreachable on both after {reported_s:.1} s; both Ready again after {ready_s:.1} s; nothing recreated; {} commits and {} Redis writes acknowledged, none lost (master now {master_now})",
        commits,
        writes
    );
    for c in [&pg_writer, &redis_writer] {
        at.docker(&["rm", "-f", c]);
    }
}

/// What the members on node 1 say of the others: the sentinels' table of
/// their peers (flags, last hello) and etcd's view of its members.
fn seen_from(bed: &Bed, (pgc, rsg): (&str, &str)) -> String {
    let on_node1 = |service: &str| {
        let filter = format!("label=com.docker.swarm.service.name={service}");
        let id = bed.docker_on(1, &["ps", "-q", "--filter", &filter]);
        id.lines().next().unwrap_or_default().trim().to_owned()
    };
    let mut out = String::new();
    for j in 0..3 {
        let id = on_node1(&format!("{rsg}-sentinel-{j}"));
        if id.is_empty() {
            continue;
        }
        let ask = format!("REDISCLI_AUTH=\"$(cat /run/secrets/redis-password)\" timeout 3 redis-cli --no-auth-warning -p 26379 SENTINEL sentinels {rsg} | paste -sd ' '");
        out.push_str(&bed.docker_on(1, &["exec", &id, "sh", "-c", &ask]));
    }
    for j in 0..3 {
        let id = on_node1(&format!("{pgc}-etcd-{j}"));
        if id.is_empty() {
            continue;
        }
        let ask = "timeout 5 etcdctl --endpoints=http://127.0.0.1:2379 endpoint status --cluster -w table 2>&1; timeout 5 etcdctl --endpoints=http://127.0.0.1:2379 endpoint health --cluster 2>&1";
        out.push_str(&bed.docker_on(1, &["exec", &id, "sh", "-c", ask]));
    }
    out
}

/// A node's engine alone is paused past the grace, its containers running.
/// Its data members (the PostgreSQL and Redis instances) never run a second
/// copy elsewhere and keep their slots. Its etcd member and sentinel may be
/// replaced: both were, in every run. The sentinel there is stuck, not
/// serving: Sentinel resolves host names in its event loop, through the
/// embedded DNS of the paused engine, and node 1's sentinel saw its last
/// hello as old as the cut. An etcd member is replaced by a membership
/// change, which removes the old member's id, so it cannot vote again.
/// Prints where the members ran and what node 1's members saw.
#[test]
fn a_node_whose_engine_alone_is_cut_off_past_the_grace_keeps_its_data_members_and_no_second_copy_serves(
) {
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
    // The window stretches until enough rounds looked (a loaded machine
    // lists slowly: CI once managed 5 in the minute), so the check can fail.
    let (mut elsewhere, mut rounds) = (Vec::new(), 0);
    let mut seen_from_node1 = false;
    let window = Duration::from_secs(grace_s + 40);
    let limit = window + Duration::from_secs(120);
    while (cut_at.elapsed() < window || rounds < 10) && cut_at.elapsed() < limit {
        if !seen_from_node1 && cut_at.elapsed() > Duration::from_secs(grace_s - 5) {
            seen_from_node1 = true;
            eprintln!(
                "[partition] as seen from node 1 before the grace ends:\n{}",
                seen_from(&bed, names)
            );
        }
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
    let data = |s: &str| s.contains(&format!("{pgc}-pg-")) || s.contains(&format!("{rsg}-redis-"));
    let replaced: BTreeSet<&String> = elsewhere.iter().map(|(s, _)| s).collect();
    assert!(
        replaced.iter().all(|s| !data(s)),
        "second copies of data members ran: {elsewhere:?}; members by node before the cut: {placed:?}"
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
    // The data members' services are the same objects with the same specs,
    // and their slots stayed where they were.
    let kept = |o: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        o.iter()
            .filter(|(k, _)| k.starts_with("service ") && data(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(
        after.iter().map(kept).collect::<Vec<_>>(),
        before.iter().map(kept).collect::<Vec<_>>(),
        "data members were recreated or changed"
    );
    for m in members(names).into_iter().filter(|m| data(m)) {
        assert_eq!(bed.node_of(&m), placed[&m], "{m} moved");
    }
    for (kind, name) in [("pgc", pgc), ("rsg", rsg)] {
        let o = d.ctl(&["describe", kind, name]);
        assert_eq!(o.status.code(), Some(0), "describe {kind} {name} failed");
        let events = stdout(&o);
        assert!(events.contains("NodeDown"), "{events}");
        let moved: Vec<&str> = events.lines().filter(|l| l.contains("SlotMoved")).collect();
        assert!(
            moved.iter().all(|l| !data(l)),
            "a data member moved: {moved:?}"
        );
    }

    let (commits, writes) =
        nothing_acknowledged_lost(&d, at, names, (&pg_writer, &redis_writer), &password);
    haswarm_testbed::figure!(
        "[figures] engine of node {victim} (holding {held:?}; leader {leader}, master {master}) cut off for {} s (grace {grace_s} s): reported unavailable after {reported_s:.1} s, no data member ran elsewhere or moved (replaced: {replaced:?}); Ready again {healed_s:.1} s after the cut; writers went on through it ({pg_during} commits and {redis_during} Redis writes by the heal, {} and {} in all, none lost)",
        grace_s + 40,
        commits,
        writes
    );
    for c in [&pg_writer, &redis_writer] {
        at.docker(&["rm", "-f", c]);
    }
}
