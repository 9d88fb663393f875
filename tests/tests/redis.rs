//! RedisSentinelGroup end to end on the local single-node Swarm, with real
//! redis-server and redis-sentinel (image built from Debian's packages by
//! `tests/testbed/prepare.sh`): Ready, writes acknowledged by a replica
//! survive a SIGKILL of the master, the sentinels promote a replica, the old
//! master rejoins as a replica, status and events show it, and the password
//! appears nowhere it should not.

use std::time::Duration;

use haswarm_testbed::docker::{docker, eventually, redis_client, require_swarm, Cleanup};
use haswarm_testbed::{assert_code, stderr, stdout, Daemon};
use serde_json::Value;

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {name}\nspec:\n  image: haswarm/redis:bookworm\n  masterGroupName: {name}-master\n  placement:\n    spread: None\n  sentinels:\n    downAfter: 2s\n    failoverTimeout: 10s\n"
    )
}

/// The running container of a service on this node.
fn container(service: &str) -> String {
    docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={service}"),
    ])
    .lines()
    .next()
    .unwrap_or_default()
    .to_owned()
}

/// Runs redis-cli commands (one per line, one connection) in a service's
/// container, with the password read there from the secret file.
fn redis(service: &str, commands: &str) -> String {
    let c = container(service);
    let script = format!(
        "printf '{}' | REDISCLI_AUTH=\"$(cat /run/secrets/redis-password)\" redis-cli --no-auth-warning --raw",
        commands.replace('\n', "\\n")
    );
    docker(&["exec", &c, "sh", "-c", &script])
}

fn get(d: &Daemon, name: &str) -> Value {
    serde_json::from_str(&stdout(&d.ctl(&["get", "rsg", name, "-o", "json"])))
        .unwrap_or(Value::Null)
}

fn master(d: &Daemon, name: &str) -> String {
    get(d, name)["status"]["master"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
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
    let mut cmds = String::new();
    for i in 0..100 {
        cmds.push_str(&format!("SET key{i} value{i}\n"));
    }
    cmds.push_str("WAIT 1 5000\n");
    let out = redis(&first, &cmds);
    let acked: u32 = out
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(acked >= 1, "WAIT should report a replica: {out}");

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
    let moved = eventually(Duration::from_secs(60), || {
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

    let mut read = String::new();
    for i in 0..100 {
        read.push_str(&format!("GET key{i}\n"));
    }
    let values: Vec<String> = redis(&second, &read).lines().map(str::to_owned).collect();
    let expected: Vec<String> = (0..100).map(|i| format!("value{i}")).collect();
    assert_eq!(
        values, expected,
        "every acknowledged write is on the new master"
    );

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
    let mut places = Vec::new();
    for s in docker(&[
        "service",
        "ls",
        "--filter",
        &format!("label=io.haswarm.owner=RedisSentinelGroup/{name}"),
        "--format",
        "{{.Name}}",
    ])
    .lines()
    {
        places.push((format!("service {s}"), docker(&["service", "inspect", s])));
        places.push((
            format!("logs of {s}"),
            docker(&["service", "logs", "--raw", s]),
        ));
        let c = container(s);
        places.push((
            format!("environment of {s}"),
            docker(&["exec", &c, "cat", "/proc/1/environ"]),
        ));
        places.push((
            format!("command line of {s}"),
            docker(&["exec", &c, "cat", "/proc/1/cmdline"]),
        ));
    }
    for args in [
        vec!["get", "rsg", &name, "-o", "yaml"],
        vec!["get", "rsg", &name, "-o", "json"],
        vec!["describe", "rsg", &name],
    ] {
        let o = d.ctl(&args);
        places.push((
            format!("haswarmctl {}", args.join(" ")),
            format!("{}{}", stdout(&o), stderr(&o)),
        ));
    }
    places.push(("haswarmd's log".to_owned(), d.log()));
    for (place, text) in &places {
        assert!(!text.contains(pw), "the password appears in {place}");
    }

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
