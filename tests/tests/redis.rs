//! RedisSentinelGroup end to end on the local single-node Swarm, with real
//! redis-server and redis-sentinel (image built from Debian's packages by
//! `tests/testbed/prepare.sh`): Ready, writes acknowledged by a replica
//! survive a SIGKILL of the master, the sentinels promote a replica, the old
//! master rejoins as a replica, status and events show it, and the password
//! appears nowhere it should not.

use std::time::Duration;

use haswarm_testbed::docker::{
    assert_keys, docker, eventually, redis_cli, redis_client, require_swarm, service_container,
    write_keys, Cleanup,
};
use haswarm_testbed::{assert_code, stdout, Daemon};
use serde_json::Value;

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {name}\nspec:\n  image: haswarm/redis:bookworm\n  masterGroupName: {name}-master\n  placement:\n    spread: None\n  sentinels:\n    downAfter: 2s\n    failoverTimeout: 10s\n"
    )
}

fn container(service: &str) -> String {
    service_container(service)
}

fn redis(service: &str, commands: &str) -> String {
    redis_cli(service, 6379, commands)
}

fn get(d: &Daemon, name: &str) -> Value {
    d.get_json("rsg", name)
}

fn master(d: &Daemon, name: &str) -> String {
    d.redis_master(name)
}

#[test]
fn a_group_fails_over_without_losing_acknowledged_writes() {
    require_swarm();
    let name = format!("e2e-rsg-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("RedisSentinelGroup", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    d.apply("rsg.yaml", &manifest(&name));
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "180s");
    let first = master(&d, &name);
    assert_eq!(
        first,
        format!("{name}-redis-0"),
        "a new group starts with instance 0 as master"
    );

    // Writes acknowledged by at least one replica (WAIT 1) before the kill.
    write_keys(&first, 100);

    // A real Sentinel client (redis-py) writes and reads through the group,
    // then keeps writing across the failover.
    let pw = docker(&[
        "exec",
        &container(&first),
        "cat",
        "/run/secrets/redis-password",
    ])
    .trim()
    .to_owned();
    let net = format!("{name}-net");
    let sentinels = format!("{name}-sentinel-0,{name}-sentinel-1,{name}-sentinel-2");
    let group = format!("{name}-master");
    let client = format!("{name}-client");
    cleanup.named("container", &client);
    let out = redis_client(
        &client,
        &net,
        &sentinels,
        &group,
        &["write-read", "50"],
        &pw,
    )
    .wait_with_output()
    .expect("client runs");
    assert!(
        out.status.success(),
        "redis-py: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    docker(&["kill", "-s", "KILL", &container(&first)]);
    // A bound on liveness, not a speed (the failover bench measures that):
    // the other CI lane's nested engines can starve the sentinels' timers
    // into TILT mode, 30 s in which they do not fail over, and twice over.
    let moved = eventually(Duration::from_secs(150), || {
        let m = master(&d, &name);
        !m.is_empty() && m != first
    });
    assert!(moved, "no failover: {}", get(&d, &name));
    let second = master(&d, &name);
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "120s");
    assert_eq!(
        master(&d, &name),
        second,
        "the old master came back as a replica, not as master"
    );
    let v = get(&d, &name);
    let replicas: Vec<&str> = v["status"]["replicas"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(replicas.contains(&first.as_str()), "{v}");
    assert_eq!(redis(&first, "ROLE\n").lines().next(), Some("slave"));

    assert_keys(&second, 100);

    // A new redis-py client finds the new master through the sentinels and
    // reads every write it had acknowledged before the kill.
    let out = redis_client(&client, &net, &sentinels, &group, &["check", "50"], &pw)
        .wait_with_output()
        .expect("client runs");
    assert!(
        out.status.success(),
        "acknowledged redis-py writes lost: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let env = stdout(&d.ctl(&["get", "rsg", &name, "-o", "env"]));
    assert!(
        env.contains(&format!("REDIS_SENTINEL_SERVICE_NAME={name}-master")),
        "{env}"
    );
    assert!(
        env.contains("REDIS_USE_SENTINEL=true")
            && env.contains("REDIS_PASSWORD_FILE=/run/secrets/"),
        "{env}"
    );

    let described = stdout(&d.ctl(&["describe", "rsg", &name]));
    assert!(described.contains("MasterChanged"), "{described}");

    // The password: the same in every container, and nowhere else.
    let pw = docker(&[
        "exec",
        &container(&second),
        "cat",
        "/run/secrets/redis-password",
    ]);
    let pw = pw.trim();
    assert_eq!(pw.len(), 32);
    for s in [
        format!("{name}-redis-1"),
        format!("{name}-sentinel-0"),
        format!("{name}-sentinel-2"),
    ] {
        assert_eq!(
            docker(&["exec", &container(&s), "cat", "/run/secrets/redis-password"]).trim(),
            pw,
            "{s}"
        );
    }
    d.assert_secrets_hidden("RedisSentinelGroup", "rsg", &name, &[pw]);

    let o = d.ctl(&["delete", "rsg", &name, "--wait", "--timeout=120s"]);
    assert_code(&o, 0);
    assert!(docker(&[
        "service",
        "ls",
        "-q",
        "--filter",
        &format!("label=io.haswarm.owner=RedisSentinelGroup/{name}")
    ])
    .trim()
    .is_empty());
}
