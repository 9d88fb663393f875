//! The Redis start scripts against a real redis-sentinel, in a container
//! with no network but its loopback: no Swarm, no group.

use std::process::Command;
use std::time::Duration;

use haswarm_testbed::docker::{docker, eventually, require_image};
use haswarm_testbed::{repo, run_ok};

const IMAGE: &str = haswarm_testbed::redis::IMAGE;

/// What Sentinel's own config rewrite wrote when the replicas' names did
/// not resolve: the master's address for each of them, so the master is
/// listed as its own replica, twice.
const BROKEN: &str = "port 26379
dir /data
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel monitor grp 127.0.0.1 6379 2
sentinel known-replica grp 127.0.0.1 6379
sentinel known-replica grp 127.0.0.1 6380
sentinel known-replica grp 127.0.0.1 6379
";

/// Removes the container when the test ends, failed or not.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn a_sentinel_starts_from_a_config_its_own_rewrite_broke_and_its_master_is_no_replica() {
    require_image(IMAGE);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).expect("data dir");
    std::fs::write(data.join("sentinel.conf"), BROKEN).expect("conf");
    std::fs::write(dir.path().join("password"), "pw").expect("password");
    let mount = |host: &std::path::Path, at: &str, mode: &str| {
        format!("type=bind,source={},target={at}{mode}", host.display())
    };

    // As written, Redis refuses it: the failure the script repairs.
    let refused = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--mount"])
        .arg(mount(&data, "/data", ",readonly"))
        .args([IMAGE, "redis-sentinel", "/data/sentinel.conf"])
        .output()
        .expect("docker runs");
    let said = String::from_utf8_lossy(&refused.stdout).into_owned()
        + &String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("Duplicate hostname and port for replica"),
        "Redis took the broken file: {said}"
    );

    let script = repo().join("controller/src/reconcilers/redis/sentinel-start.sh");
    let name = format!("haswarm-test-sentinel-start-{}", std::process::id());
    let _container = Container(name.clone());
    let mut run = Command::new("docker");
    run.args(["run", "-d", "--name", &name, "--network", "none"])
        .arg("--mount")
        .arg(mount(&data, "/data", ""))
        .arg("--mount")
        .arg(mount(
            &dir.path().join("password"),
            "/run/secrets/redis-password",
            ",readonly",
        ))
        .arg("--mount")
        .arg(mount(&script, "/start.sh", ",readonly"));
    for env in [
        "HASWARM_SELF=grp-sentinel-0",
        "HASWARM_PREFIX=grp",
        "HASWARM_GROUP=grp",
        "HASWARM_QUORUM=2",
        "HASWARM_DOWN_AFTER_MS=5000",
        "HASWARM_FAILOVER_TIMEOUT_MS=10000",
        "HASWARM_PARALLEL_SYNCS=1",
    ] {
        run.args(["-e", env]);
    }
    run.args([IMAGE, "sh", "/start.sh"]);
    run_ok(&mut run, "docker run of sentinel-start.sh");

    let replicas = || {
        docker(&[
            "exec",
            "-e",
            "REDISCLI_AUTH=pw",
            &name,
            "redis-cli",
            "--no-auth-warning",
            "-p",
            "26379",
            "SENTINEL",
            "replicas",
            "grp",
        ])
    };
    assert!(
        eventually(Duration::from_secs(30), || replicas().contains("6380")),
        "the sentinel did not start from the repaired file: {}\n{}",
        replicas(),
        docker(&["logs", &name])
    );
    let listed = replicas();
    assert!(
        !listed.contains("127.0.0.1:6379"),
        "the master is still listed as its own replica: {listed}"
    );
    // Both lines naming the master were dropped, and said so.
    let logs = Command::new("docker")
        .args(["logs", &name])
        .output()
        .expect("docker runs");
    let said = String::from_utf8_lossy(&logs.stderr);
    assert_eq!(
        said.matches(
            "haswarm: dropped a line Sentinel wrote: sentinel known-replica grp 127.0.0.1 6379"
        )
        .count(),
        2,
        "{said}"
    );
}
