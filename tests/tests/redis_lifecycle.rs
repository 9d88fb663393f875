//! RedisSentinelGroup changes over its life, end to end on the local
//! single-node Swarm with real redis-server and redis-sentinel: a setting
//! change rolls replicas first and switches the master over before changing
//! it, a scale-down removes instances and the sentinels forget them, and a
//! group whose every task dies at once comes back with one master and its
//! data, and a password rotation goes on through a haswarmd killed with
//! SIGKILL in its middle.
//!
//! The tests here run one at a time: two groups failing over at once on a
//! 2-core machine starve the sentinels' timers (TILT mode).

use std::time::Duration;

use haswarm_testbed::docker::{
    assert_keys, assert_tidy, create_secret, docker, eventually, owned_services, redis_cli,
    require_swarm, service_container, service_logs, write_keys, Cleanup,
};
use haswarm_testbed::faults::kill_point;
use haswarm_testbed::{assert_code, one_at_a_time, Daemon};
use serde_json::Value;

fn manifest(name: &str, instances: u8, extra: &str) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {name}\nspec:\n  image: haswarm/redis:bookworm\n  instances: {instances}\n  placement:\n    spread: None\n  sentinels:\n    downAfter: 2s\n    failoverTimeout: 10s\n{extra}"
    )
}

fn get(d: &Daemon, name: &str) -> Value {
    d.get_json("rsg", name)
}

fn master(d: &Daemon, name: &str) -> String {
    d.redis_master(name)
}

/// Events of the group as (reason, message), by when they first happened.
fn events(d: &Daemon, name: &str) -> Vec<(String, String)> {
    d.events("redissentinelgroups", name)
}

#[test]
fn a_setting_change_rolls_replicas_first_then_switches_over_then_scales_down() {
    let _one = one_at_a_time();
    require_swarm();
    let name = format!("e2e-roll-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("RedisSentinelGroup", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    d.apply("rsg.yaml", &manifest(&name, 3, ""));
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "180s");
    let first = master(&d, &name);
    write_keys(&first, 100);

    // A setting every instance gets: the start script and config change.
    d.apply(
        "rsg.yaml",
        &manifest(&name, 3, "  config:\n    maxmemory-policy: allkeys-lru\n"),
    );
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "300s");
    for i in 0..3 {
        let s = format!("{name}-redis-{i}");
        assert_eq!(
            redis_cli(&s, 6379, "CONFIG GET maxmemory-policy\n")
                .lines()
                .nth(1),
            Some("allkeys-lru"),
            "{s} runs the new settings"
        );
    }
    let second = master(&d, &name);
    assert_ne!(second, first, "the master was switched over, not restarted");
    let ev = events(&d, &name);
    let pos = |reason: &str, needle: &str| {
        ev.iter()
            .position(|(r, m)| r == reason && m.contains(needle))
            .unwrap_or_else(|| panic!("no {reason} event about {needle}: {ev:?}"))
    };
    let switch = pos("Switchover", &first);
    assert!(
        pos("Updated", &first) > switch,
        "the old master was updated only after the switchover: {ev:?}"
    );
    for i in 0..3 {
        let s = format!("{name}-redis-{i}");
        if s != first {
            assert!(
                pos("Updated", &s) < switch,
                "replica {s} before the switchover: {ev:?}"
            );
        }
    }
    assert_keys(&second, 100);

    // Scale down to two instances: redis-2 goes (after a switchover if it is
    // the master), and the sentinels stop listing it. With reclaimPolicy
    // Delete its volume goes too.
    d.apply(
        "rsg.yaml",
        &manifest(
            &name,
            2,
            "  config:\n    maxmemory-policy: allkeys-lru\n  storage:\n    reclaimPolicy: Delete\n",
        ),
    );
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "300s");
    let gone = format!("{name}-redis-2");
    assert!(!owned_services("RedisSentinelGroup", &name).contains(&gone));
    let third = master(&d, &name);
    assert_ne!(third, gone);
    let forgot = eventually(Duration::from_secs(90), || {
        (0..3).all(|j| {
            let out = redis_cli(
                &format!("{name}-sentinel-{j}"),
                26379,
                &format!("SENTINEL replicas {name}\n"),
            );
            !out.is_empty() && !out.contains(&gone)
        })
    });
    assert!(forgot, "the sentinels still list {gone}");
    let v = get(&d, &name);
    assert_eq!(
        v["status"]["replicas"].as_array().map(Vec::len),
        Some(1),
        "{v}"
    );
    assert_keys(&third, 100);
    let volume = |i: u8| {
        docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={name}-redis-{i}-data"),
        ])
    };
    assert!(
        eventually(Duration::from_secs(60), || volume(2).trim().is_empty()),
        "the volume of {gone} is still there: {:?}",
        events(&d, &name)
    );
    assert!(
        !volume(1).trim().is_empty(),
        "a remaining member's volume went"
    );
    assert!(
        events(&d, &name)
            .iter()
            .any(|(r, m)| r == "VolumesReclaimed" && m.contains(&format!("{gone}-data"))),
        "{:?}",
        events(&d, &name)
    );
}

#[test]
fn a_group_restarted_all_at_once_comes_back_with_one_master_and_its_data() {
    let _one = one_at_a_time();
    require_swarm();
    let name = format!("e2e-restart-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("RedisSentinelGroup", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    d.apply(
        "rsg.yaml",
        &manifest(&name, 3, "  storage:\n    reclaimPolicy: Delete\n"),
    );
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "180s");
    let before = master(&d, &name);
    write_keys(&before, 100);

    // Every task of the group at once, as a power cut would.
    let containers: Vec<String> = owned_services("RedisSentinelGroup", &name)
        .iter()
        .map(|s| service_container(s))
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(containers.len(), 6);
    let mut args = vec!["kill", "-s", "KILL"];
    args.extend(containers.iter().map(String::as_str));
    docker(&args);

    // Ready again only once new tasks run: wait for the kill to be seen first.
    assert!(eventually(Duration::from_secs(30), || {
        get(&d, &name)["status"]["conditions"]
            .as_array()
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "False")
            })
    }));
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "300s");
    let masters: Vec<String> = (0..3)
        .map(|i| format!("{name}-redis-{i}"))
        .filter(|s| redis_cli(s, 6379, "ROLE\n").lines().next() == Some("master"))
        .collect();
    // Exactly one master. It is the last master, or a replica the sentinels
    // promoted because it had caught up with it (they choose by replication
    // offset): either way every acknowledged write is on every instance.
    assert_eq!(masters.len(), 1, "exactly one master: {masters:?}");
    assert_eq!(master(&d, &name), masters[0]);
    for i in 0..3 {
        assert_keys(&format!("{name}-redis-{i}"), 100);
    }

    // reclaimPolicy Delete: deleting the group removes its data volumes.
    let volumes = || docker(&["volume", "ls", "-q", "--filter", &format!("name={name}-")]);
    assert_eq!(volumes().lines().count(), 6, "{}", volumes());
    assert_code(
        &d.ctl(&["delete", "rsg", &name, "--wait", "--timeout=180s"]),
        0,
    );
    assert_eq!(volumes().trim(), "", "volumes left after delete");
}

#[test]
fn a_rotated_password_reaches_every_member_without_a_wrong_password_through_a_killed_daemon() {
    let _one = one_at_a_time();
    require_swarm();
    let name = format!("e2e-rotate-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("RedisSentinelGroup", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    // Two data instances: every rotation phase restarts each member once,
    // and a master and a replica show everything a third would.
    d.apply("rsg.yaml", &manifest(&name, 2, ""));
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "180s");
    write_keys(&d.redis_master(&name), 100);
    let secret_file = |service: &str| {
        docker(&[
            "exec",
            &service_container(service),
            "cat",
            "/run/secrets/redis-password",
        ])
        .trim()
        .to_owned()
    };
    let old = secret_file(&format!("{name}-redis-0"));
    let old_secret = get(&d, &name)["status"]["passwordSecret"].clone();

    // haswarmd dies with SIGKILL (a crash, an OOM kill) at a random point of
    // the rotation: in one of its three phases, up to 15 s into it. It
    // starts again on the same data: the rotation goes on from its stored
    // phase, and no member is ever given a password another does not accept.
    assert_code(&d.ctl(&["rotate-password", &format!("rsg/{name}")]), 0);
    let phases = [
        ("its first phase (accept)", "first learns to accept"),
        ("its second phase (use)", "switching every member to it"),
        ("its third phase (forget)", "making them forget the old one"),
    ];
    let names: Vec<&str> = phases.iter().map(|p| p.0).collect();
    let (phase, delay) = kill_point("Redis password rotation", &names, Duration::from_secs(15));
    let started = |e: &(String, String)| e.0 == "PasswordRotation" && e.1.contains(phases[phase].1);
    assert!(
        eventually(Duration::from_secs(480), || events(&d, &name)
            .iter()
            .any(started)),
        "{:?}",
        events(&d, &name)
    );
    std::thread::sleep(delay);
    d.kill_and_restart();
    let rotated = || {
        let status = &get(&d, &name)["status"];
        status["passwordSecret"] != old_secret && status["passwordRotation"]["phase"].is_null()
    };
    assert!(
        eventually(Duration::from_secs(480), rotated),
        "{}",
        get(&d, &name)
    );
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "180s");
    let members: Vec<String> = (0..2)
        .map(|i| format!("{name}-redis-{i}"))
        .chain((0..3).map(|j| format!("{name}-sentinel-{j}")))
        .collect();
    assert_tidy("RedisSentinelGroup", &name, &members, || {
        get(&d, &name)["status"].clone()
    });

    let services = owned_services("RedisSentinelGroup", &name);
    let new = secret_file(&format!("{name}-redis-0"));
    assert_eq!(new.len(), 32);
    assert_ne!(new, old, "a new password");
    for s in &services {
        assert_eq!(secret_file(s), new, "{s} uses the new password");
        let c = service_container(s);
        assert!(
            docker(&["exec", &c, "ls", "/run/secrets"])
                .lines()
                .all(|f| f == "redis-password"),
            "{s} no longer has the old password"
        );
    }
    assert_ne!(get(&d, &name)["status"]["passwordSecret"], old_secret);
    // The old password is refused, the new one works (both only inside the
    // test's own containers).
    let master = d.redis_master(&name);
    let c = service_container(&master);
    let with_old = docker(&[
        "exec",
        "-e",
        &format!("REDISCLI_AUTH={old}"),
        &c,
        "redis-cli",
        "--no-auth-warning",
        "PING",
    ]);
    assert!(!with_old.contains("PONG"), "the old password still works");
    assert_keys(&master, 100);
    // Nobody ever presented a wrong password: no refusal in any log.
    for s in &services {
        let logs = service_logs(s);
        for needle in ["WRONGPASS", "NOAUTH", "-AUTH", "invalid password"] {
            assert!(!logs.contains(needle), "{s} logged {needle}");
        }
        assert!(!logs.contains(&old) && !logs.contains(&new));
    }
    let events = events(&d, &name);
    assert!(
        events
            .iter()
            .filter(|(r, _)| r == "PasswordRotation")
            .count()
            >= 3,
        "{events:?}"
    );
    for (_, m) in &events {
        assert!(!m.contains(&old) && !m.contains(&new));
    }
    assert!(!d.log().contains(&old) && !d.log().contains(&new));

    // Then to a secret of the user's: spec.passwordSecret moves the group
    // the same way.
    let user_secret = format!("{name}-users-pw");
    cleanup.named("secret", &user_secret);
    let theirs = "UsersOwnPassword0123456789abcdef";
    create_secret(&user_secret, theirs);
    d.apply(
        "rsg.yaml",
        &manifest(
            &name,
            2,
            &format!("  passwordSecret:\n    name: {user_secret}\n"),
        ),
    );
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "480s");
    for s in &owned_services("RedisSentinelGroup", &name) {
        assert_eq!(secret_file(s), theirs, "{s} uses the user's password");
    }
    assert_eq!(
        get(&d, &name)["status"]["passwordSecret"].as_str(),
        Some(user_secret.as_str())
    );
    let master = d.redis_master(&name);
    assert_keys(&master, 100);
    for s in &owned_services("RedisSentinelGroup", &name) {
        let logs = service_logs(s);
        for needle in ["WRONGPASS", "NOAUTH", "-AUTH", "invalid password"] {
            assert!(!logs.contains(needle), "{s} logged {needle}");
        }
    }
}
