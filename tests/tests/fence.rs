//! The fence in front of a data member (controller/src/reconcilers/fence.sh),
//! end to end on the local single-node Swarm: a Redis master frozen (its
//! container paused, as a lost node freezes it) past `downAfter` while the
//! sentinels promote a replica never answers another host again once it
//! thaws. Its fence wakes late as master and stops the container; Swarm
//! restarts the task, which comes back as a replica.

use std::process::{Command, Stdio};
use std::time::Duration;

use haswarm_testbed::docker::{
    assert_keys, docker, eventually, require_swarm, service_container, write_keys, Cleanup,
};
use haswarm_testbed::Daemon;

fn manifest(name: &str) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {name}\nspec:\n  image: haswarm/redis:bookworm\n  placement:\n    spread: None\n  sentinels:\n    downAfter: 2s\n    failoverTimeout: 10s\n"
    )
}

/// Asks `ROLE` of the instance at `ip` from `from`'s container, over the
/// network, `rounds` times 100 ms apart; one line per ask: the role, or
/// `-` when it did not answer within 300 ms.
fn poll_roles(from: &str, ip: &str, rounds: u32) -> std::process::Child {
    let script = format!(
        "i=0; while [ $i -lt {rounds} ]; do \
           r=$(REDISCLI_AUTH=\"$(cat /run/secrets/redis-password)\" timeout 0.3 redis-cli --no-auth-warning --raw -h {ip} ROLE 2>/dev/null | head -n 1); \
           echo \"${{r:--}}\"; sleep 0.1; i=$((i+1)); done"
    );
    Command::new("docker")
        .args(["exec", from, "sh", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker exec runs")
}

fn answers(child: std::process::Child) -> Vec<String> {
    let out = child.wait_with_output().expect("the poller ends");
    assert!(
        out.status.success(),
        "the poller failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_frozen_master_that_thaws_after_a_failover_never_answers_as_master() {
    require_swarm();
    let name = format!("e2e-fence-{}", std::process::id());
    let mut cleanup = Cleanup::default();
    cleanup.owner("RedisSentinelGroup", &name);
    let d = Daemon::start_with_controllers(&["--resync", "5s"]);
    d.apply("rsg.yaml", &manifest(&name));
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "180s");
    let first = d.redis_master(&name);
    let old = service_container(&first);
    assert!(!old.is_empty(), "no container of {first}");
    let logs = docker(&["logs", &old]);
    assert!(
        logs.contains("haswarm: fence: lease of 2s on ports 6379"),
        "{first} runs unfenced: {logs}"
    );
    write_keys(&first, 100);
    let net = format!("{name}-net");
    let ip = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}"),
        &old,
    ])
    .trim()
    .to_owned();
    assert!(!ip.is_empty(), "no address of {old} on {net}");
    // The asker: a sentinel's container, which has redis-cli and the password.
    let asker = service_container(&format!("{name}-sentinel-0"));
    // The poll sees the master while its lease holds: the check below can fail.
    let before = answers(poll_roles(&asker, &ip, 5));
    assert!(
        before.iter().all(|r| r == "master"),
        "the master does not answer over the network: {before:?}"
    );

    docker(&["pause", &old]);
    let unpause = scopeguard(&old);
    let moved = eventually(Duration::from_secs(150), || {
        let m = d.redis_master(&name);
        !m.is_empty() && m != first
    });
    assert!(moved, "no failover: {}", d.get_json("rsg", &name));
    let second = d.redis_master(&name);
    // Ask from before the thaw until well after it.
    let poll = poll_roles(&asker, &ip, 60);
    std::thread::sleep(Duration::from_millis(500));
    docker(&["unpause", &old]);
    drop(unpause);
    let after = answers(poll);
    let as_master = after.iter().filter(|r| *r == "master").count();
    let gone = eventually(Duration::from_secs(20), || {
        docker(&["inspect", "-f", "{{.State.Running}}", &old]).trim() == "false"
    });
    let logs = docker(&["logs", &old]);
    eprintln!(
        "[figures] frozen master {first} thawed after the failover to {second}: {as_master} of {} answers over the network said master ({after:?}); its container stopped: {gone}",
        after.len()
    );
    assert_eq!(as_master, 0, "the thawed master answered: {after:?}");
    assert!(gone, "the thawed master's container still runs");
    assert!(
        logs.contains("late as the redis primary"),
        "the fence did not say why it stopped: {logs}"
    );
    // Swarm restarts the task; it asks the sentinels and follows.
    d.wait_for(&format!("rsg/{name}"), "condition=Ready", "180s");
    assert_eq!(d.redis_master(&name), second);
    assert_keys(&second, 100);
}

/// Unpauses `id` when dropped, so a failing test leaves no frozen container.
fn scopeguard(id: &str) -> impl Drop + '_ {
    struct Unpause<'a>(&'a str);
    impl Drop for Unpause<'_> {
        fn drop(&mut self) {
            let _ = Command::new("docker")
                .args(["unpause", self.0])
                .stderr(Stdio::null())
                .status();
        }
    }
    Unpause(id)
}
