//! The README's first command on the one node of a fresh swarm: `up -f
//! examples/one-node/dify.yaml` brings up the Dify data layer, shows each
//! resource's progress, and ends by printing how applications connect.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use haswarm_testbed::docker::{require_image, require_swarm, Cleanup};
use haswarm_testbed::{haswarmctl_bin, repo};

/// The `haswarmctl up` this test started: stopped with Ctrl-C's signal when
/// the test is done, killed if it does not stop, even when the test fails.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_first_command_brings_up_the_dify_data_layer_on_one_node() {
    require_swarm();
    for image in [
        "haswarm/postgres:15",
        "haswarm/redis:bookworm",
        "haswarm/probe:latest",
    ] {
        require_image(image);
    }
    let mut cleanup = Cleanup::default();
    for (kind, name) in [
        ("PostgresCluster", "dify-db"),
        ("RedisSentinelGroup", "dify-redis"),
        ("SharedVolume", "dify-storage"),
        ("SharedVolume", "dify-plugins"),
    ] {
        cleanup.owner(kind, name);
    }
    // The README's command makes these folders first.
    for dir in ["/tmp/haswarm-dify/storage", "/tmp/haswarm-dify/plugins"] {
        std::fs::create_dir_all(dir).expect("the example's folders");
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let (data, socket) = (tmp.path().join("data"), tmp.path().join("haswarm.sock"));
    let started = Instant::now();
    let mut up = Up(Command::new(haswarmctl_bin())
        .args([
            "up",
            "-f",
            "examples/one-node/dify.yaml",
            "--timeout",
            "10m",
        ])
        .arg("--data-dir")
        .arg(&data)
        .arg("--socket")
        .arg(&socket)
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("haswarmctl up runs"));
    let stdout = up.0.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut ready_at = None;
    let done = loop {
        match rx.recv_timeout(Duration::from_secs(700).saturating_sub(started.elapsed())) {
            Ok(line) => {
                if line.starts_with("all ") && line.contains("Ready") {
                    ready_at = Some(started.elapsed());
                }
                let end = line.contains("keeps reconciling");
                seen.push(line);
                if end {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let out = seen.join("\n");
    assert!(
        done,
        "up did not end its wait with the connection settings:\n{out}"
    );
    if let Some(at) = ready_at {
        haswarm_testbed::figure!(
            "[figures] first run: the Dify data layer Ready {:.0} s after up started",
            at.as_secs_f64()
        );
    }
    // Progress: plain lines (no terminal here), each resource Ready at last.
    for key in [
        "postgrescluster/dify-db",
        "redissentinelgroup/dify-redis",
        "sharedvolume/dify-storage",
        "sharedvolume/dify-plugins",
    ] {
        assert!(out.contains(&format!("  {key}: Ready")), "{key}:\n{out}");
    }
    // How an application connects, with no password in it.
    for wanted in [
        "DB_HOST=dify-db-rw",
        "DB_DATABASE=dify",
        "DB_USERNAME=dify",
        "DB_PASSWORD_FILE=/run/secrets/",
        "REDIS_USE_SENTINEL=true",
        "REDIS_SENTINELS=dify-redis-sentinel-0:26379,dify-redis-sentinel-1:26379,dify-redis-sentinel-2:26379",
        "REDIS_SENTINEL_SERVICE_NAME=dify-master-group",
        "REDIS_PASSWORD_FILE=/run/secrets/",
    ] {
        assert!(out.contains(wanted), "{wanted}:\n{out}");
    }
    assert!(!out.lines().any(|l| l.starts_with("REDIS_HOST=")), "{out}");
    drop(up);
    drop(cleanup);
}
