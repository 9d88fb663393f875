//! The fault suite: node loss on a 4-node Docker-in-Docker Swarm (a lost
//! node's workloads frozen too, not only its engine), with a real client
//! writing throughout and counting what was acknowledged, and every member
//! polled by its service name for its role (and, for PostgreSQL, a commit)
//! every 200 ms. Needs `tests/testbed/prepare.sh`. Each test prints its
//! figures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use haswarm_testbed::dind::Bed;
use haswarm_testbed::docker::{eventually, require_image, require_swarm};
use haswarm_testbed::pg::{
    acked, app_login, client, leader, rows_on, run_client_as, start_writer, At, IMAGE,
};
use haswarm_testbed::redis::{self, CLI};
use haswarm_testbed::{assert_code, one_at_a_time, stdout, Daemon};
use serde_json::Value;

/// How long a node may be down before its members move (haswarmd's flag).
const GRACE_S: u64 = 30;

/// Patroni's ttl in these tests: a leader on a lost node keeps its key this long.
const TTL_S: u64 = 20;

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: {name}\nspec:\n  instances: 3\n  postgres:\n    image: {IMAGE}\n  etcd:\n    image: {IMAGE}\n  router:\n    image: {IMAGE}\n  placement:\n    spread: Required\n  patroni:\n    ttl: {TTL_S}\n    loopWait: 2\n    retryTimeout: 4\n    synchronousMode: On\n  storage:\n    reclaimPolicy: Delete\n"
    )
}

/// The 1-based node of each of the cluster's `family` (`pg`, `etcd`) members.
fn nodes_of(bed: &Bed, name: &str, family: &str) -> BTreeMap<usize, usize> {
    (0..3)
        .filter_map(|i| Some((i, bed.node_of(&format!("{name}-{family}-{i}"))?)))
        .collect()
}

/// Every slot label of the cluster, with the nodes (1-based) carrying it.
fn slot_labels(bed: &Bed, name: &str) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let prefix = format!("io.haswarm.postgrescluster.{name}.");
    for i in 1..=bed.len() {
        let labels = bed.labels(i);
        for k in labels.keys().filter(|k| k.starts_with(&prefix)) {
            out.entry(k.clone()).or_default().push(i);
        }
    }
    out
}

/// Starts a container on the manager that asks every instance (by its
/// service name, as clients and routers reach it) every 200 ms, one loop
/// per instance, for its role and to commit a row: it prints `<unix time>
/// <instance> <t|f> [w]` lines, `w` when the commit was acknowledged (in
/// synchronous mode a standby has it), within 2 s.
fn start_role_poller(d: &Daemon, bed: &Bed, name: &str, container: &str) {
    let (user, password) = app_login(d, At::Bed(bed), name);
    let out = client(
        d,
        At::Bed(bed),
        name,
        &format!("psql -h {name}-rw -v ON_ERROR_STOP=1 -Atc 'CREATE TABLE fence(i int)' 2>&1"),
    );
    assert!(out.contains("CREATE TABLE"), "{out}");
    let script = format!(
        "for i in 0 1 2; do (while :; do r=$(PGCONNECT_TIMEOUT=1 timeout 2 psql -h {name}-pg-$i -At -c 'SELECT pg_is_in_recovery()' -c \"INSERT INTO fence VALUES ($i) RETURNING 'w'\" 2>/dev/null | tr '\\n' ' '); echo \"$(date +%s.%N) $i $r\"; sleep 0.2; done) & done; wait"
    );
    run_client_as(
        At::Bed(bed),
        name,
        &["-d", "--name", container],
        (&user, &password),
        &script,
    );
}

/// A poller's answers: (unix time, instance, the words it answered), by time.
fn polled(bed: &Bed, container: &str) -> Vec<(f64, u8, Vec<String>)> {
    let mut out: Vec<(f64, u8, Vec<String>)> = bed
        .docker_on(1, &["logs", container])
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let t = f.next()?.parse().ok()?;
            let i = f.next()?.parse().ok()?;
            Some((t, i, f.map(str::to_owned).collect()))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The answers as (unix time, instance, whether `is(words)`).
fn which(
    polled: &[(f64, u8, Vec<String>)],
    is: impl Fn(&[String]) -> bool,
) -> Vec<(f64, u8, bool)> {
    polled.iter().map(|(t, i, w)| (*t, *i, is(w))).collect()
}

/// Moments when two instances answered as primaries within half a second
/// of each other.
fn two_primaries(roles: &[(f64, u8, bool)]) -> Vec<(f64, u8, u8)> {
    let primaries: Vec<&(f64, u8, bool)> = roles.iter().filter(|r| r.2).collect();
    let mut out = Vec::new();
    for (k, a) in primaries.iter().enumerate() {
        for b in primaries[k + 1..].iter().take_while(|b| b.0 - a.0 < 0.5) {
            if a.1 != b.1 {
                out.push((a.0, a.1, b.1));
            }
        }
    }
    out
}

/// What a role poller saw: how many answers, each answer as (time,
/// instance, whether it named itself primary), and the moments when two
/// instances acknowledged writes, or answered as primaries, at once.
struct Moments {
    answers: usize,
    roles: Vec<(f64, u8, bool)>,
    writers: Vec<(f64, u8, u8)>,
    both: Vec<(f64, u8, u8)>,
}

/// Reads the poller `container` (see [`start_role_poller`] and the Redis
/// one): an answer whose first word is `primary` is a primary's, one with a
/// `w` acknowledged a write. Panics when the poller answered too rarely or
/// its writes never went through, so that "never two" cannot hold vacuously.
fn moments(bed: &Bed, container: &str, primary: &str) -> Moments {
    let answers = polled(bed, container);
    assert!(
        answers.len() > 300,
        "the role poller answered only {} times",
        answers.len()
    );
    let roles = which(&answers, |w| w.first().is_some_and(|r| r == primary));
    let acknowledged_by = which(&answers, |w| w.iter().any(|r| r == "w"));
    let taken = acknowledged_by.iter().filter(|a| a.2).count();
    assert!(
        taken > 100,
        "the poller's writes were acknowledged only {taken} times"
    );
    Moments {
        answers: answers.len(),
        writers: two_primaries(&acknowledged_by),
        both: two_primaries(&roles),
        roles,
    }
}

/// The first time after `since` an instance other than `old` answered as primary.
fn first_new_primary(roles: &[(f64, u8, bool)], since: f64, old: u8) -> Option<f64> {
    roles
        .iter()
        .find(|r| r.0 > since && r.2 && r.1 != old)
        .map(|r| r.0)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn status(d: &Daemon, name: &str) -> Value {
    d.get_json("pgc", name)["status"].clone()
}

fn condition(v: &Value, type_: &str) -> (String, String) {
    v["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().to_owned(),
                c["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .unwrap_or_default()
}

/// The events `describe` shows.
fn described(d: &Daemon, name: &str) -> String {
    let out = d.ctl(&["describe", "pgc", name]);
    assert_code(&out, 0);
    stdout(&out)
}

/// The role PostgreSQL itself gives in container `id` on node `i` (`t` for
/// a replica, `f` for a primary, empty when it does not answer).
fn role_in_container(bed: &Bed, i: usize, id: &str) -> String {
    let sql = "SELECT pg_is_in_recovery()";
    bed.docker_on(
        i,
        &[
            "exec", id, "runuser", "-u", "postgres", "--", "psql", "-Atc", sql,
        ],
    )
    .trim()
    .to_owned()
}

/// Asserts that the fence stopped container `id` on node `i` when it
/// thawed as the `kind` primary, and that the container has stopped.
fn fenced(bed: &Bed, i: usize, id: &str, kind: &str) {
    let logs = bed.docker_on(i, &["logs", id]);
    assert!(
        logs.contains(&format!("late as the {kind} primary")),
        "the fence of {id} did not stop it: {logs}"
    );
    let running = bed.docker_on(i, &["inspect", "-f", "{{.State.Running}}", id]);
    assert_eq!(running.trim(), "false", "{id} still runs");
}

/// The container of `service`'s task on node `i`.
fn container_on(bed: &Bed, i: usize, service: &str) -> String {
    let filter = format!("label=com.docker.swarm.service.name={service}");
    let id = bed.docker_on(i, &["ps", "-q", "--filter", &filter]);
    let id = id.lines().next().unwrap_or_default().trim().to_owned();
    assert!(!id.is_empty(), "no container of {service} on node {i}");
    id
}

/// A node that holds a replica comes back within the grace: it keeps its
/// slots (same labels, same incarnations) and nothing is rebuilt.
fn a_node_back_within_the_grace_keeps_its_members(d: &Daemon, bed: &Bed, name: &str, node: usize) {
    let labels = slot_labels(bed, name);
    let lost_at = Instant::now();
    bed.lose(node);
    let host = bed.node(node);
    let seen = eventually(Duration::from_secs(GRACE_S), || {
        status(d, name)["unavailableNodes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["node"] == host.as_str()))
    });
    assert!(
        seen,
        "node {host} not reported unavailable: {}",
        status(d, name)
    );
    let down_s = lost_at.elapsed().as_secs_f64();
    assert!(
        lost_at.elapsed() < Duration::from_secs(GRACE_S),
        "restored too late for the test"
    );
    bed.restore(node);
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "180s");
    let back_s = lost_at.elapsed().as_secs_f64();
    assert_eq!(slot_labels(bed, name), labels, "a slot moved");
    let s = status(d, name);
    let members = s["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 3, "{s}");
    assert!(
        members.iter().all(|m| m["incarnation"].is_null()),
        "a member was replaced: {s}"
    );
    let events = described(d, name);
    assert!(
        events.contains("NodeReturned") && !events.contains("SlotMoved"),
        "{events}"
    );
    haswarm_testbed::figure!(
        "[figures] node {host} back within the grace: reported down after {down_s:.1} s, restored, Ready {back_s:.1} s after the loss; no slot moved"
    );
}

#[test]
fn a_lost_leaders_node_is_replaced_losing_no_commit_never_two_primaries_committing_and_a_short_loss_moves_nothing(
) {
    let _one = one_at_a_time();
    require_swarm();
    require_image(IMAGE);
    let bed = Bed::up_with_images("hsn", 4, &[IMAGE]);
    let at = At::Bed(&bed);
    let host = bed.docker_host();
    let grace = format!("{GRACE_S}s");
    let d = Daemon::start_with_env(
        &["--resync", "5s", "--node-loss-grace", &grace],
        &[("DOCKER_HOST", host.as_str())],
    );
    let name = "nl";
    d.apply("pgc.yaml", &manifest(name));
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "480s");

    // The node to lose: the leader's, not the manager's (haswarm talks to
    // that engine), and holding an etcd member too. A leader elsewhere is
    // switched over to the synchronous standby (the one Patroni accepts).
    let pg = nodes_of(&bed, name, "pg");
    let etcd = nodes_of(&bed, name, "etcd");
    let fits = |n: Option<usize>| n.is_some_and(|n| n != 1 && etcd.values().any(|e| *e == n));
    for _ in 0..3 {
        if fits(bed.node_of(&leader(&d, name))) {
            break;
        }
        let switched = d.ctl(&["pg", "switchover", name, "--wait", "--timeout=120s"]);
        assert_code(&switched, 0);
        d.wait_for(&format!("pgc/{name}"), "condition=Ready", "180s");
    }
    let old = leader(&d, name);
    let victim = bed
        .node_of(&old)
        .filter(|n| fits(Some(*n)))
        .unwrap_or_else(|| panic!("leader {old} is not on a node with an etcd member but the manager: pg {pg:?}, etcd {etcd:?}"));
    let instance: usize = old
        .rsplit('-')
        .next()
        .and_then(|i| i.parse().ok())
        .expect("an instance index");
    let free = (1..=4)
        .find(|n| !pg.values().any(|p| p == n))
        .expect("one node holds no instance");
    let replica_node = pg
        .values()
        .copied()
        .find(|n| *n != 1 && *n != victim)
        .expect("a replica on a node other than the manager");

    // A writer through the rw router; a role poller beside it.
    let writer = start_writer(&d, at, name);
    let poller = format!("{name}-roles");
    start_role_poller(&d, &bed, name, &poller);
    assert!(eventually(Duration::from_secs(60), || acked(at, &writer)
        .len()
        >= 30));

    a_node_back_within_the_grace_keeps_its_members(&d, &bed, name, replica_node);

    // Lost: its instance (the leader) and its etcd member are frozen.
    let old_container = container_on(&bed, victim, &old);
    let lost_unix = unix_now();
    let lost_at = Instant::now();
    bed.lose(victim);
    let reported = eventually(Duration::from_secs(60), || {
        let s = status(&d, name);
        condition(&s, "PrimaryAvailable") == ("False".into(), "LeaderUnreachable".into())
    });
    let unreachable_s = lost_at.elapsed().as_secs_f64();
    assert!(
        reported,
        "the unreachable leader is still reported: {}",
        status(&d, name)
    );
    let moved = eventually(Duration::from_secs(90), || {
        let l = leader(&d, name);
        !l.is_empty() && l != old
    });
    assert!(moved, "no new leader: {}", status(&d, name));
    let status_leader_s = lost_at.elapsed().as_secs_f64();
    let new = leader(&d, name);

    // Past the grace, the instance and the etcd member are rebuilt
    // elsewhere, and the cluster is Ready with three members and voters.
    let rebuilt = eventually(Duration::from_secs(420), || {
        let s = status(&d, name);
        let m = &s["etcdMembership"];
        let voters = m["members"].as_u64() == Some(3) && m["learner"].is_null();
        let back = s["members"].as_array().is_some_and(|ms| {
            ms.iter()
                .any(|m| m["name"] == old.as_str() && m["incarnation"] == 1)
        });
        voters && back && condition(&s, "Ready").0 == "True"
    });
    let rebuilt_s = lost_at.elapsed().as_secs_f64();
    assert!(rebuilt, "not rebuilt: {}", status(&d, name));
    assert_eq!(bed.node_of(&old), Some(free), "{old} runs on the free node");
    let labels = slot_labels(&bed, name);
    assert_eq!(labels.len(), 6, "{labels:?}");
    for (label, holders) in &labels {
        assert_eq!(holders.len(), 1, "{label} on {holders:?}");
        assert!(!holders.contains(&victim), "{label} left on the lost node");
    }

    // The node comes back: its old members never serve beside the new ones.
    // The old leader's own container is asked too, by its id on that node.
    let returned_at = Instant::now();
    bed.restore(victim);
    let mut direct = Vec::new();
    while returned_at.elapsed() < Duration::from_secs(15) {
        direct.push(role_in_container(&bed, victim, &old_container));
        std::thread::sleep(Duration::from_millis(200));
    }
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "180s");
    let back_s = returned_at.elapsed().as_secs_f64();
    assert_eq!(leader(&d, name), new, "the leader stays");

    // The node keeps stale copies of what moved away: named in status, and
    // erased at deletion (reclaimPolicy Delete) now that the node answers.
    let stale = format!("{old}-data");
    let left = status(&d, name)["leftVolumes"].clone();
    assert!(
        left.as_array().is_some_and(|l| l
            .iter()
            .any(|v| v["volume"] == stale.as_str() && v["node"] == bed.node(victim).as_str())),
        "{stale} on node {victim} not in status.leftVolumes: {left}"
    );
    let files_in_stale = || {
        let count = bed.docker_on(
            victim,
            &[
                "run",
                "--rm",
                "-v",
                &format!("{stale}:/v:ro"),
                IMAGE,
                "sh",
                "-c",
                "find /v -mindepth 1 | wc -l",
            ],
        );
        count
            .trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("files in {stale}: {count:?}"))
    };
    assert!(
        files_in_stale() > 0,
        "the stale copy {stale} holds data before the delete"
    );

    bed.docker_on(1, &["kill", &writer]);
    bed.docker_on(1, &["kill", &poller]);
    let Moments {
        answers,
        roles,
        writers,
        both,
    } = moments(&bed, &poller, "f");
    let new_primary_s = first_new_primary(&roles, lost_unix, u8::try_from(instance).unwrap_or(0))
        .map(|t| t - lost_unix);
    let acknowledged = acked(at, &writer);
    for i in 0..3 {
        let member = format!("{name}-pg-{i}");
        let present = rows_on(&d, at, name, &member);
        let lost: Vec<&u64> = acknowledged.difference(&present).collect();
        assert!(lost.is_empty(), "{member} lacks acknowledged rows {lost:?}");
    }
    let events = described(&d, name);
    for reason in [
        "NodeDown",
        "SlotMoved",
        "EtcdMemberReplaced",
        "NodeReturned",
        "LeaderChanged",
    ] {
        assert!(events.contains(reason), "no {reason} event: {events}");
    }
    let direct_primary = direct.iter().filter(|r| *r == "f").count();
    haswarm_testbed::figure!(
        "[figures] leader's node lost: reported unreachable after {unreachable_s:.1} s; a new primary answered after {} (ttl {TTL_S} s; status named {new} after {status_leader_s:.1} s); rebuilt on the free node and Ready after {rebuilt_s:.1} s (grace {GRACE_S} s); node back, Ready {back_s:.1} s later; the old leader's own container answered as primary {direct_primary} of {} times in the 15 s after its return ({direct:?}); {} writes acknowledged, all on 3 members; {} role answers by service name, {} moments with two acknowledging a commit, {} with two answering as primary ({both:?})",
        new_primary_s.map_or_else(|| "?".to_owned(), |s| format!("{s:.1} s")),
        direct.len(),
        acknowledged.len(),
        answers,
        writers.len(),
        both.len()
    );
    assert!(
        writers.is_empty(),
        "two primaries acknowledged commits: {writers:?}"
    );
    // The fence: the thawed old leader never serves, by name or in its
    // own container (it stops itself the moment it thaws).
    assert!(both.is_empty(), "two answered as primary: {both:?}");
    assert_eq!(
        direct_primary, 0,
        "the thawed old leader answered: {direct:?}"
    );
    fenced(&bed, victim, &old_container, "postgres");
    for c in [&writer, &poller] {
        bed.docker_on(1, &["rm", "-f", c]);
    }
    assert_code(
        &d.ctl(&["delete", "pgc", name, "--wait", "--timeout=240s"]),
        0,
    );
    assert_eq!(files_in_stale(), 0, "the stale copy {stale} was not erased");
}

/// What the Redis instance in container `id` on node `i` says to `ROLE`
/// (its first line) and to a write (`OK` when it takes it; empty when it
/// does not answer).
fn redis_in_container(bed: &Bed, i: usize, id: &str, password: &str) -> (String, String) {
    let auth = format!("REDISCLI_AUTH={password}");
    let ask = |command: &[&str]| {
        let mut args = vec!["exec", "-e", &auth, id, "timeout", "1", "redis-cli"];
        args.extend_from_slice(&["--no-auth-warning", "--raw"]);
        args.extend_from_slice(command);
        bed.docker_on(i, &args)
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    (ask(&["ROLE"]), ask(&["SET", "fence-direct", "x"]))
}

/// The group's tables by announced name, each list sorted: `s<j>` each
/// sentinel's replicas, `p<j>` the sentinels it knows, `m` the replicas the
/// master lists connected. A section whose command failed is missing.
fn tables(bed: &Bed, name: &str, password: &str, master: &str) -> BTreeMap<String, Vec<String>> {
    let ips = "awk 'p == \"ip\" { print } { p = $0 }'";
    let script = format!(
        "for j in 0 1 2; do s={name}-sentinel-$j; \
         r=$({CLI} -h $s -p 26379 SENTINEL replicas {name}) && echo \"#s$j\" && echo \"$r\" | {ips}; \
         r=$({CLI} -h $s -p 26379 SENTINEL sentinels {name}) && echo \"#p$j\" && echo \"$r\" | {ips}; done; \
         r=$({CLI} -h {master} INFO replication) && echo '#m' && echo \"$r\" | sed -n 's/^slave[0-9]*:ip=\\([^,]*\\),.*/\\1/p'"
    );
    let out = redis::shell(At::Bed(bed), name, password, &["--rm"], &script);
    let mut t: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = None;
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(s) = line.strip_prefix('#') {
            section = Some(s.to_owned());
            t.entry(s.to_owned()).or_default();
        } else if let Some(s) = &section {
            t.entry(s.clone()).or_default().push(line.to_owned());
        }
    }
    t.values_mut().for_each(|v| v.sort());
    t
}

/// The tables every sentinel and the master should hold: one entry per
/// live member, moved ones (`moved`) by their incarnation's alias.
fn wanted_tables(name: &str, master: &str, moved: &[String]) -> BTreeMap<String, Vec<String>> {
    let announced = |s: String| {
        if moved.contains(&s) {
            format!("{s}-i1")
        } else {
            s
        }
    };
    let replicas: Vec<String> = (0..3)
        .map(|i| format!("{name}-redis-{i}"))
        .filter(|s| s != master)
        .map(announced)
        .collect();
    let mut t = BTreeMap::from([("m".to_owned(), replicas.clone())]);
    for j in 0..3 {
        t.insert(format!("s{j}"), replicas.clone());
        let peers = (0..3)
            .filter(|k| *k != j)
            .map(|k| announced(format!("{name}-sentinel-{k}")))
            .collect();
        t.insert(format!("p{j}"), peers);
    }
    t.values_mut().for_each(|v| v.sort());
    t
}

/// The Redis master's node is lost: the sentinels fail over, the lost
/// instance and sentinel are rebuilt on the fourth node past the grace, and
/// when the node comes back two masters never acknowledge writes.
///
/// The old master was frozen, not restarted, so nothing it runs at start
/// can stop it: for a moment after it thaws it still answers `ROLE` as
/// master. The fence is `minReplicasToWrite` (1 by default with 3
/// instances): its replicas left it while it was frozen, so it refuses
/// writes (`NOREPLICAS`) until Swarm stops it. The test asks its own
/// container as well as every instance by service name, and counts both.
#[test]
fn a_lost_masters_node_fails_over_is_rebuilt_and_never_two_masters_take_writes() {
    let _one = one_at_a_time();
    require_swarm();
    let bed = Bed::up("hsr", 4);
    let host = bed.docker_host();
    let grace = format!("{GRACE_S}s");
    let d = Daemon::start_with_env(
        &["--resync", "3s", "--node-loss-grace", &grace],
        &[("DOCKER_HOST", host.as_str())],
    );
    let name = "nlr";
    d.apply(
        "rsg.yaml",
        &format!("apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {name}\nspec:\n  image: {}\n  instances: 3\n  sentinels:\n    downAfter: 3s\n    failoverTimeout: 10s\n  storage:\n    reclaimPolicy: Delete\n", redis::IMAGE),
    );
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "300s");
    let password = redis::password(&d, At::Bed(&bed), name);

    // The master off the manager's node (haswarm talks to that engine).
    let mut master = d.redis_master(name);
    for _ in 0..3 {
        if bed.node_of(&master) != Some(1) {
            break;
        }
        let sentinel = format!("{name}-sentinel-0");
        redis::shell(
            At::Bed(&bed),
            name,
            &password,
            &["--rm"],
            &format!("{CLI} -h {sentinel} -p 26379 SENTINEL FAILOVER {name}"),
        );
        let first = master.clone();
        assert!(eventually(Duration::from_secs(60), || {
            master = d.redis_master(name);
            !master.is_empty() && master != first
        }));
        d.wait_for(&format!("rsg/{name}"), "condition=Ready", "120s");
    }
    let victim = bed.node_of(&master).expect("the master runs somewhere");
    assert_ne!(victim, 1, "the master stays on the manager's node");
    let free = (1..=4)
        .find(|n| (0..3).all(|i| bed.node_of(&format!("{name}-redis-{i}")) != Some(*n)))
        .expect("a node without an instance");

    // A writer that counts what a replica acknowledged (WAIT 1), and a role
    // poller asking every instance by its service name every 200 ms.
    let writer = redis::start_writer(At::Bed(&bed), name, &password);
    let poller = format!("{name}-roles");
    let roles_script = format!(
        "for i in 0 1 2; do (while :; do h={name}-redis-$i; r=$({CLI} -h $h ROLE 2>/dev/null | head -1); w=$({CLI} -h $h SET fence$i x 2>/dev/null | head -1); [ \"$w\" = OK ] && w=w || w=; echo \"$(date +%s.%N) $i $r $w\"; sleep 0.2; done) & done; wait"
    );
    redis::shell(
        At::Bed(&bed),
        name,
        &password,
        &["-d", "--name", &poller],
        &roles_script,
    );

    // What moves: every member on the lost node.
    let moved: Vec<String> = (0..3)
        .flat_map(|i| [format!("{name}-redis-{i}"), format!("{name}-sentinel-{i}")])
        .filter(|s| bed.node_of(s) == Some(victim))
        .collect();
    let old_container = container_on(&bed, victim, &master);
    let lost_unix = unix_now();
    let lost_at = Instant::now();
    bed.lose(victim);
    let failed_over = eventually(Duration::from_secs(60), || {
        let m = d.redis_master(name);
        !m.is_empty() && m != master
    });
    assert!(failed_over, "no failover: {}", d.get_json("rsg", name));
    let new_master = d.redis_master(name);
    let rebuilt = eventually(Duration::from_secs(300), || {
        bed.node_of(&master) == Some(free)
            && d.get_json("rsg", name)["status"]["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
    });
    let rebuilt_s = lost_at.elapsed().as_secs_f64();
    assert!(
        rebuilt,
        "not rebuilt on node {free}: {}",
        d.get_json("rsg", name)
    );
    // One identity per incarnation: the rebuilt members announce their
    // incarnation's alias, and once the sentinels forgot the ones they
    // replaced, every table names each live member exactly once.
    let wanted = wanted_tables(name, &new_master, &moved);
    let mut seen = BTreeMap::new();
    let forgotten = eventually(Duration::from_secs(90), || {
        seen = tables(&bed, name, &password, &new_master);
        seen == wanted
    });
    let forgotten_s = lost_at.elapsed().as_secs_f64();
    assert!(forgotten, "tables {seen:?}, wanted {wanted:?}");

    // The node comes back: its old master's own container is asked too,
    // by id on that node, for its role and to take a write.
    let returned_at = Instant::now();
    bed.restore(victim);
    let mut direct = Vec::new();
    while returned_at.elapsed() < Duration::from_secs(15) {
        direct.push(redis_in_container(&bed, victim, &old_container, &password));
        std::thread::sleep(Duration::from_millis(200));
    }
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "180s");
    let back_s = returned_at.elapsed().as_secs_f64();
    assert_eq!(d.redis_master(name), new_master, "the master stays");
    // The old incarnations came back and were stopped: none is in a table.
    let settled = eventually(Duration::from_secs(60), || {
        seen = tables(&bed, name, &password, &new_master);
        seen == wanted
    });
    assert!(
        settled,
        "after the return: tables {seen:?}, wanted {wanted:?}"
    );

    bed.docker_on(1, &["kill", &writer]);
    bed.docker_on(1, &["kill", &poller]);
    let Moments {
        answers,
        writers,
        both,
        ..
    } = moments(&bed, &poller, "master");
    let direct_master = direct.iter().filter(|(r, _)| r == "master").count();
    let direct_writes = direct.iter().filter(|(_, w)| w == "OK").count();
    let writes = redis::acked(At::Bed(&bed), &writer);
    // The write outage: the longest gap between two acknowledged writes
    // from the loss on (the writer acknowledges several a second otherwise).
    let outage = writes
        .windows(2)
        .filter(|w| w[1].1 > lost_unix)
        .map(|w| w[1].1 - w[0].1.max(lost_unix))
        .fold(0.0_f64, f64::max);
    let (present, written) = redis::present(At::Bed(&bed), name, &password, &new_master, &writes);
    assert_eq!(present, written as u64, "acknowledged writes lost");
    let described = stdout(&d.ctl(&["describe", "rsg", name]));
    for reason in ["NodeDown", "SlotMoved", "NodeReturned", "MasterChanged"] {
        assert!(described.contains(reason), "no {reason} event: {described}");
    }
    haswarm_testbed::figure!(
        "[figures] Redis master's node lost: no write acknowledged for {outage:.1} s, rebuilt on the free node and Ready after {rebuilt_s:.1} s (grace {GRACE_S} s), every table naming each live member once after {forgotten_s:.1} s ({moved:?} by their incarnation's alias); node back, Ready {back_s:.1} s later; the old master's own container answered as master {direct_master} of {} times in the 15 s after its return and took {direct_writes} writes ({direct:?}); {} writes acknowledged (WAIT 1), all on the master; {} role answers by service name, {} moments with two masters taking writes, {} with two answering as master ({both:?})",
        direct.len(),
        writes.len(),
        answers,
        writers.len(),
        both.len()
    );
    assert!(
        writers.is_empty(),
        "two masters acknowledged writes: {writers:?}"
    );
    assert_eq!(
        direct_writes, 0,
        "the thawed old master took writes: {direct:?}"
    );
    assert!(both.is_empty(), "two answered as master: {both:?}");
    assert_eq!(
        direct_master, 0,
        "the thawed old master answered: {direct:?}"
    );
    fenced(&bed, victim, &old_container, "redis");
    for c in [&writer, &poller] {
        bed.docker_on(1, &["rm", "-f", c]);
    }
    assert_code(
        &d.ctl(&["delete", "rsg", name, "--wait", "--timeout=120s"]),
        0,
    );
}
