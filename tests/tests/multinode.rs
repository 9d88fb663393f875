//! SharedVolume on a 3-node Docker-in-Docker Swarm, and the controller riding
//! out an engine restart; a Redis group and a PostgresCluster spread one
//! member per node fail over to another node. Needs `tests/testbed/prepare.sh`; builds the node
//! image on first use (about a minute).
//!
//! The tests run one at a time: three 3-node beds at once on 2 cores starve
//! the sentinels' timers (TILT) and stall the engines.

use std::time::Duration;

use haswarm_testbed::dind::Bed;
use haswarm_testbed::docker::{eventually, require_image, require_swarm};
use haswarm_testbed::pg::{fail_over, At, IMAGE};
use haswarm_testbed::{assert_code, one_at_a_time, stdout, Daemon};
use serde_json::Value;

fn manifest(name: &str, path: &str) -> String {
    format!("apiVersion: haswarm.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: {name}\nspec:\n  hostPath:\n    path: {path}\n")
}

fn object(d: &Daemon, name: &str) -> Value {
    serde_json::from_str(&stdout(&d.ctl(&["get", "sv", name, "-o", "json"]))).unwrap_or(Value::Null)
}

fn ready(v: &Value) -> Value {
    v["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
        .unwrap_or(Value::Null)
}

fn events(d: &Daemon, name: &str) -> String {
    stdout(&d.ctl(&["describe", "sv", name]))
}

#[test]
fn three_nodes_mount_report_failures_and_survive_an_engine_restart() {
    require_swarm();
    let _one = one_at_a_time();
    let bed = Bed::up("hsw", 3);
    let host = bed.docker_host();
    let d = Daemon::start_with_env(&["--resync", "3s"], &[("DOCKER_HOST", host.as_str())]);

    // Mounted on all three nodes.
    d.apply("all.yaml", &manifest("everywhere", "/srv/shared"));
    d.wait_for("sv/everywhere", "condition=MountedOnAllNodes", "120s");
    let v = object(&d, "everywhere");
    let nodes: Vec<(String, bool)> = v["status"]["nodes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|n| {
                    (
                        n["node"].as_str().unwrap_or_default().to_owned(),
                        n["mounted"] == true,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        nodes,
        (1..=3).map(|i| (bed.node(i), true)).collect::<Vec<_>>(),
        "{v}"
    );

    // A path the last node lacks: that node is named in the status message.
    d.apply("partial.yaml", &manifest("partial", "/srv/partial"));
    let third = bed.node(3);
    let named = eventually(Duration::from_secs(120), || {
        let r = ready(&object(&d, "partial"));
        r["reason"] == "MountFailed"
            && r["message"]
                .as_str()
                .is_some_and(|m| m.contains("not mounted on 1 of 3 nodes") && m.contains(&third))
    });
    assert!(
        named,
        "node {third} should be named: {}",
        object(&d, "partial")
    );

    // The manager's engine restarts: the outage shows as a condition and an
    // event, and the controller reconnects and converges again.
    bed.restart(1);
    let seen_down = eventually(Duration::from_secs(60), || {
        events(&d, "everywhere").contains("DockerUnreachable")
    });
    assert!(
        seen_down,
        "the outage should be reported: {}",
        events(&d, "everywhere")
    );
    d.wait_for("sv/everywhere", "condition=Ready", "180s");
    assert!(
        events(&d, "everywhere").contains("DockerReconnected"),
        "{}",
        events(&d, "everywhere")
    );

    for name in ["everywhere", "partial"] {
        assert_code(
            &d.ctl(&["delete", "sv", name, "--wait", "--timeout=60s"]),
            0,
        );
    }
}

#[test]
fn a_redis_group_spread_over_three_nodes_fails_over() {
    require_swarm();
    let _one = one_at_a_time();
    let bed = Bed::up("hsr", 3);
    let host = bed.docker_host();
    let d = Daemon::start_with_env(&["--resync", "3s"], &[("DOCKER_HOST", host.as_str())]);
    d.apply(
        "rsg.yaml",
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: spread\nspec:\n  image: haswarm/redis:bookworm\n  sentinels:\n    downAfter: 2s\n    failoverTimeout: 10s\n",
    );
    d.wait_for("rsg/spread", "condition=Ready", "240s");

    // Spread Required (the default): every instance on its own node.
    let nodes: Vec<Option<usize>> = (0..3)
        .map(|i| bed.node_of(&format!("spread-redis-{i}")))
        .collect();
    let mut distinct = nodes.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "instances on {nodes:?}");

    let master_of = |d: &Daemon| {
        serde_json::from_str::<Value>(&stdout(&d.ctl(&["get", "rsg", "spread", "-o", "json"])))
            .ok()
            .and_then(|v| v["status"]["master"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let first = master_of(&d);
    let on = bed.node_of(&first).expect("the master runs somewhere");
    let write = "printf 'SET spread-key kept\\nWAIT 1 5000\\n' | REDISCLI_AUTH=\"$(cat /run/secrets/redis-password)\" redis-cli --no-auth-warning --raw";
    let container = bed.docker_on(
        on,
        &[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={first}"),
        ],
    );
    let container = container.trim();
    let out = bed.docker_on(on, &["exec", container, "sh", "-c", write]);
    assert!(
        out.lines().last().is_some_and(|l| l.trim() != "0"),
        "a replica acknowledged: {out}"
    );

    bed.docker_on(on, &["kill", "-s", "KILL", container]);
    let moved = eventually(Duration::from_secs(90), || {
        let m = master_of(&d);
        !m.is_empty() && m != first
    });
    assert!(
        moved,
        "no failover: {}",
        stdout(&d.ctl(&["get", "rsg", "spread", "-o", "json"]))
    );
    d.wait_for("rsg/spread", "condition=Ready", "120s");
    let second = master_of(&d);
    let on2 = bed.node_of(&second).expect("new master placed");
    assert_ne!(on2, on, "the new master is on another node");
    let c2 = bed.docker_on(
        on2,
        &[
            "ps",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={second}"),
        ],
    );
    let read = "REDISCLI_AUTH=\"$(cat /run/secrets/redis-password)\" redis-cli --no-auth-warning --raw GET spread-key";
    assert_eq!(
        bed.docker_on(on2, &["exec", c2.trim(), "sh", "-c", read])
            .trim(),
        "kept"
    );
    let described = stdout(&d.ctl(&["describe", "rsg", "spread"]));
    assert!(described.contains("MasterChanged"), "{described}");

    assert_code(
        &d.ctl(&["delete", "rsg", "spread", "--wait", "--timeout=120s"]),
        0,
    );
}

#[test]
fn instances_on_a_lost_node_move_to_the_others() {
    require_swarm();
    let _one = one_at_a_time();
    let bed = Bed::up("hsl", 3);
    let host = bed.docker_host();
    let d = Daemon::start_with_env(
        &["--resync", "3s", "--node-loss-grace", "10s"],
        &[("DOCKER_HOST", host.as_str())],
    );
    d.apply(
        "rsg.yaml",
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: lost\nspec:\n  image: haswarm/redis:bookworm\n  instances: 2\n  placement:\n    spread: Preferred\n  sentinels:\n    downAfter: 2s\n    failoverTimeout: 10s\n",
    );
    d.wait_for("rsg/lost", "condition=Ready", "240s");
    let status = || -> Value {
        serde_json::from_str(&stdout(&d.ctl(&["get", "rsg", "lost", "-o", "json"])))
            .unwrap_or(Value::Null)
    };
    let master = status()["status"]["master"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let replica = if master == "lost-redis-0" {
        "lost-redis-1"
    } else {
        "lost-redis-0"
    };
    let on = bed.node_of(replica).expect("the replica runs somewhere");
    assert_ne!(on, 1, "node 1 manages the bed and must stay up");
    let master_node = bed.node_of(&master);

    bed.stop(on);
    // Swarm notices the node is down, the grace passes, the slot moves and
    // the replica starts empty on another node and copies the master.
    let back = eventually(Duration::from_secs(180), || {
        bed.node_of(replica).is_some_and(|n| n != on)
            && status()["status"]["conditions"]
                .as_array()
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
    });
    assert!(back, "{}", status());
    assert_eq!(
        status()["status"]["master"].as_str(),
        Some(master.as_str()),
        "the master stayed"
    );
    assert_eq!(bed.node_of(&master), master_node, "the master did not move");
    let sentinels_elsewhere = (0..3).all(|j| {
        bed.node_of(&format!("lost-sentinel-{j}"))
            .is_some_and(|n| n != on)
    });
    assert!(sentinels_elsewhere, "every sentinel runs on a live node");
}

/// The controller reaches Patroni through whichever of the cluster's
/// containers runs on its manager's node.
#[test]
fn a_cluster_spread_over_three_nodes_fails_over_to_another_node() {
    let _one = one_at_a_time();
    require_swarm();
    require_image(IMAGE);
    let bed = Bed::up_with_images("hsp", 3, &[IMAGE]);
    let host = bed.docker_host();
    let d = Daemon::start_with_env(&["--resync", "5s"], &[("DOCKER_HOST", host.as_str())]);
    let name = "spread";
    d.apply("pgc.yaml", &pg_manifest(name));
    d.wait_for(&format!("pgc/{name}"), "condition=Ready", "420s");
    // One instance and one etcd member per node.
    for family in ["pg", "etcd"] {
        let mut nodes: Vec<Option<usize>> = (0..3)
            .map(|i| bed.node_of(&format!("{name}-{family}-{i}")))
            .collect();
        nodes.sort();
        nodes.dedup();
        assert_eq!(nodes.len(), 3, "{family} members on {nodes:?}");
    }
    let (old, new) = fail_over(&d, name, At::Bed(&bed));
    assert_ne!(
        bed.node_of(&old),
        bed.node_of(&new),
        "the new leader runs on another node"
    );
    let described = stdout(&d.ctl(&["describe", "pgc", name]));
    assert!(described.contains(&new), "{described}");
}

/// A cluster spread one instance per node (`spread: Required`).
fn pg_manifest(name: &str) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: {name}\nspec:\n  instances: 3\n  postgres:\n    image: {IMAGE}\n  etcd:\n    image: {IMAGE}\n  router:\n    image: {IMAGE}\n  placement:\n    spread: Required\n  patroni:\n    ttl: 20\n    loopWait: 2\n    retryTimeout: 4\n    synchronousMode: On\n  storage:\n    reclaimPolicy: Delete\n"
    )
}
