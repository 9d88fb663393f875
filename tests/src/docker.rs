//! The Docker engine as the end-to-end tests see it, through the docker CLI
//! (the same view an operator has). Everything here only reads, or removes
//! objects carrying labels of resources the test itself created.

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `docker ARGS` and returns its standard output (empty on failure).
pub fn docker(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether the local engine is an active swarm manager.
pub fn swarm_ready() -> bool {
    docker(&[
        "info",
        "--format",
        "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
    ])
    .trim()
        == "active true"
}

/// Panics with the fix when the engine is not ready for end-to-end tests.
pub fn require_swarm() {
    assert!(
        swarm_ready(),
        "the end-to-end tests need a Docker engine in swarm mode and the test images: run tests/testbed/prepare.sh first"
    );
    assert!(
        !docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "haswarm/probe:latest"
        ])
        .trim()
        .is_empty(),
        "the image haswarm/probe:latest is missing: run tests/testbed/prepare.sh first"
    );
}

/// Names of services owned by resource `kind/name`.
pub fn owned_services(kind: &str, name: &str) -> Vec<String> {
    docker(&[
        "service",
        "ls",
        "--filter",
        &format!("label=io.haswarm.owner={kind}/{name}"),
        "--format",
        "{{.Name}}",
    ])
    .lines()
    .map(str::to_owned)
    .filter(|l| !l.is_empty())
    .collect()
}

/// Whether a service exists.
pub fn service_exists(name: &str) -> bool {
    !docker(&["service", "inspect", "--format", "{{.ID}}", name])
        .trim()
        .is_empty()
}

/// Polls `check` until it holds or `limit` passes; says whether it held.
pub fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    check()
}

/// Removes, when dropped, what a test created: services owned by the listed
/// resources, every object carrying one of the listed haswarm instance ids,
/// and objects listed by name. A failed test leaves nothing behind.
#[derive(Debug, Default)]
pub struct Cleanup {
    owners: Vec<(String, String)>,
    instances: Vec<String>,
    named: Vec<(&'static str, String)>,
}

impl Cleanup {
    /// Cleans up after resource `kind/name`.
    pub fn owner(&mut self, kind: &str, name: &str) {
        self.owners.push((kind.to_owned(), name.to_owned()));
    }

    /// Cleans up every object labelled `io.haswarm.instance=<id>`.
    pub fn instance(&mut self, id: &str) {
        self.instances.push(id.to_owned());
    }

    /// Cleans up one object by name: `what` is service, network, secret, config or container.
    pub fn named(&mut self, what: &'static str, name: &str) {
        self.named.push((what, name.to_owned()));
    }
}

fn ls(what: &str, filter: &str) -> Vec<String> {
    docker(&[what, "ls", "-q", "--filter", filter])
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (kind, name) in &self.owners {
            let filter = format!("label=io.haswarm.owner={kind}/{name}");
            for what in ["service", "network", "secret", "config"] {
                for x in ls(what, &filter) {
                    docker(&[what, "rm", &x]);
                }
            }
            // Slot labels the resource put on nodes.
            let prefix = format!("io.haswarm.{}.{name}.", kind.to_ascii_lowercase());
            for node in docker(&["node", "ls", "-q"]).lines() {
                let labels =
                    docker(&["node", "inspect", "--format", "{{json .Spec.Labels}}", node]);
                let labels: std::collections::HashMap<String, String> =
                    serde_json::from_str(labels.trim()).unwrap_or_default();
                for k in labels.keys().filter(|k| k.starts_with(&prefix)) {
                    docker(&["node", "update", "--label-rm", k, node]);
                }
            }
        }
        for id in &self.instances {
            let filter = format!("label=io.haswarm.instance={id}");
            // Services first: networks, secrets and configs in use cannot go.
            for what in ["service", "network", "secret", "config"] {
                for x in ls(what, &filter) {
                    docker(&[what, "rm", &x]);
                }
            }
        }
        for (what, name) in &self.named {
            if *what == "container" {
                docker(&["rm", "-f", name]);
            } else {
                docker(&[what, "rm", name]);
            }
        }
    }
}

/// A Sentinel-aware client (redis-py, from the `haswarm/redis-client` image)
/// run in a container on a group's network; the password goes in on standard
/// input. Returns the child (`docker run`), its container name being `name`.
pub fn redis_client(
    name: &str,
    network: &str,
    sentinels: &str,
    group: &str,
    args: &[&str],
    password: &str,
) -> std::process::Child {
    use std::io::Write;
    let mut cmd = Command::new("docker");
    cmd.args([
        "run",
        "--rm",
        "-i",
        "--name",
        name,
        "--network",
        network,
        "haswarm/redis-client:latest",
    ])
    .args(["python3", "/redis_client.py", sentinels, group])
    .args(args)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("docker run");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = writeln!(stdin, "{password}");
    }
    child
}
