//! A multi-node Docker-in-Docker Swarm for a test (`testbed/dind.sh`): up on
//! creation, removed (nodes, volumes, network) when dropped, even when the
//! test fails. Nodes can be restarted, stopped, or lost and restored
//! (frozen, workloads and engine, and thawed).

use std::path::PathBuf;
use std::process::Command;

fn script() -> PathBuf {
    super::repo().join("tests/testbed/dind.sh")
}

fn run(args: &[&str]) -> String {
    run_with(args, &[])
}

fn run_with(args: &[&str], images: &[&str]) -> String {
    run_env(args, images, 1)
}

fn run_env(args: &[&str], images: &[&str], managers: usize) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .env("HASWARM_DIND_IMAGES", images.join(" "))
        .env("HASWARM_DIND_MANAGERS", managers.to_string())
        .output()
        .expect("dind.sh runs");
    assert!(
        out.status.success(),
        "dind.sh {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A running bed.
#[derive(Debug)]
pub struct Bed {
    name: String,
    nodes: usize,
    /// The host folder every node sees at /srv/shared (and all but the last at /srv/partial).
    pub shared: tempfile::TempDir,
    /// The same removal as the drop's, should the process end first.
    _at_exit: crate::at_exit::Registered,
}

impl Bed {
    /// Starts `nodes` nodes: node 1 manages, the others join; the probe and
    /// Redis images are loaded.
    pub fn up(prefix: &str, nodes: usize) -> Self {
        Self::up_with_images(prefix, nodes, &[])
    }

    /// Like [`Bed::up`], loading `images` into every node as well.
    pub fn up_with_images(prefix: &str, nodes: usize, images: &[&str]) -> Self {
        Self::up_managed(prefix, (nodes, 1), images)
    }

    /// Like [`Bed::up_with_images`], with nodes 1 to `managers` managers.
    pub fn up_managed(prefix: &str, (nodes, managers): (usize, usize), images: &[&str]) -> Self {
        let name = format!("{prefix}{}", std::process::id());
        let shared = tempfile::Builder::new()
            .prefix("hsw-shared")
            .tempdir_in("/tmp")
            .expect("tempdir");
        // Remove leftovers of a crashed earlier run with the same name first.
        run(&["down", &name]);
        let down = name.clone();
        let bed = Self {
            name,
            nodes,
            shared,
            _at_exit: crate::at_exit::register(move || run_down(&down)),
        };
        run_env(
            &[
                "up",
                &bed.name,
                &nodes.to_string(),
                &bed.shared.path().display().to_string(),
            ],
            images,
            managers,
        );
        bed
    }

    /// Node `i`'s address on the bed's network (1-based).
    pub fn addr(&self, i: usize) -> String {
        run(&["addr", &self.name, &i.to_string()])
    }

    /// `DOCKER_HOST` for the manager's engine.
    pub fn docker_host(&self) -> String {
        format!("tcp://{}:2375", run(&["addr", &self.name, "1"]))
    }

    /// Host name of node `i` (1-based).
    pub fn node(&self, i: usize) -> String {
        format!("{}-node{i}", self.name)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes
    }

    /// Whether the bed has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes == 0
    }

    /// Restarts node `i`'s container: its engine stops and starts again.
    pub fn restart(&self, i: usize) {
        run(&["restart", &self.name, &i.to_string()]);
    }

    /// Stops node `i` (1-based): to the swarm, the node is lost.
    pub fn stop(&self, i: usize) {
        run(&["stop", &self.name, &i.to_string()]);
    }

    /// Loses node `i` (1-based) the way a machine is lost: nothing on it
    /// runs, nothing on it answers. The containers running on the node now
    /// are frozen first, each through its own cgroup (they sit beside the
    /// node's cgroup on this host, so pausing the node alone would leave
    /// them running), then the node's container is paused: its engine and
    /// Swarm agent. Containers started on the node later are not covered.
    /// The manager marks the node down after its heartbeat timeout.
    pub fn lose(&self, i: usize) {
        run(&["lose", &self.name, &i.to_string()]);
    }

    /// Brings back node `i` after [`Bed::lose`]: its containers are thawed
    /// first, then its engine and agent, so the workloads run a moment
    /// before their node can react, as on a machine coming back. Does
    /// nothing to a node that is not lost.
    pub fn restore(&self, i: usize) {
        run(&["restore", &self.name, &i.to_string()]);
    }

    /// Cuts node `i` (1-based) off the Swarm's control plane only: its
    /// engine and agent are paused, its containers keep running and
    /// serving. To the manager, the node is down.
    pub fn partition(&self, i: usize) {
        run(&["partition", &self.name, &i.to_string()]);
    }

    /// Ends [`Bed::partition`] of node `i`.
    pub fn heal(&self, i: usize) {
        run(&["heal", &self.name, &i.to_string()]);
    }

    /// Node `i`'s labels (1-based), as the manager has them; panics when
    /// they cannot be read, so that a comparison cannot pass on nothing.
    pub fn labels(&self, i: usize) -> std::collections::BTreeMap<String, String> {
        let json = self.inspect_node(i, "{{json .Spec.Labels}}");
        serde_json::from_str(json.trim())
            .unwrap_or_else(|e| panic!("labels of node {i} ({json:?}): {e}"))
    }

    /// Node `i`'s availability (1-based: `active`, `pause` or `drain`) as
    /// the manager has it.
    pub fn availability(&self, i: usize) -> String {
        self.inspect_node(i, "{{.Spec.Availability}}")
            .trim()
            .to_owned()
    }

    /// `docker node inspect -f FORMAT` of node `i` on the manager.
    fn inspect_node(&self, i: usize, format: &str) -> String {
        self.docker(&["node", "inspect", &self.node(i), "-f", format])
    }

    /// Runs `docker ARGS` against the engine of node `i` (1-based), from
    /// inside its container, and returns its standard output: empty when
    /// the engine answered with an error ("No such container", say). Panics
    /// when the node's engine cannot be asked (the node is lost or its
    /// engine does not answer): a check that something is absent there must
    /// not pass because nothing looked.
    pub fn docker_on(&self, i: usize, args: &[&str]) -> String {
        let node = self.node(i);
        let o = Command::new("docker")
            .args(["exec", &node, "docker"])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("docker exec {node} docker {args:?} does not run: {e}"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !crate::docker::engine_unreachable(&err) && !outer_exec_failed(&node, &err),
            "docker {args:?} on {node}: its engine cannot be asked: {err}"
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// The 1-based index of the node running `service`'s task.
    pub fn node_of(&self, service: &str) -> Option<usize> {
        self.node_of_via(1, service)
    }

    /// [`Bed::node_of`], asking node `via`'s engine (a manager): for when
    /// node 1 is lost.
    pub fn node_of_via(&self, via: usize, service: &str) -> Option<usize> {
        let host = self.docker_on(
            via,
            &[
                "service",
                "ps",
                service,
                "--filter",
                "desired-state=running",
                "--format",
                "{{.Node}}",
            ],
        );
        let host = host.lines().next()?.trim().to_owned();
        (1..=self.nodes).find(|i| self.node(*i) == host)
    }

    /// Runs `docker ARGS` against the manager (node 1's engine, over TCP)
    /// and returns its standard output: empty when the engine answered with
    /// an error. Panics when the engine does not answer (see [`Self::docker_on`]).
    pub fn docker(&self, args: &[&str]) -> String {
        let o = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", self.docker_host())
            .output()
            .unwrap_or_else(|e| panic!("docker {args:?} does not run: {e}"));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !crate::docker::engine_unreachable(&err),
            "docker {args:?} on the bed's manager: the engine does not answer: {err}"
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

/// Whether `docker exec NODE ...` itself failed, rather than the command
/// run in the node: the node's container is paused (a lost node) or gone.
/// An inner container that is not running is the inner engine's answer, and
/// no failure to look (a test polls a container until Swarm stops it).
fn outer_exec_failed(node: &str, err: &str) -> bool {
    err.contains(&format!("No such container: {node}"))
        || (err.contains("Error response from daemon") && err.contains("is paused"))
}

/// `dind.sh down NAME`: thaws and removes the bed's nodes, volumes and network.
fn run_down(name: &str) {
    let _ = Command::new("bash")
        .arg(script())
        .args(["down", name])
        .output();
}

impl Drop for Bed {
    /// Removes the nodes, their volumes and the network; lost nodes are
    /// thawed first (`dind.sh down`).
    fn drop(&mut self) {
        run_down(&self.name);
    }
}
