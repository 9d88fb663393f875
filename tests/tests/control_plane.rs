//! haswarmd survives the loss of its node, on a Docker-in-Docker bed of
//! three managers: installed as a stack with `haswarmctl install` (the
//! store mirrored in Swarm's Raft, the API on TCP), it runs a
//! RedisSentinelGroup, a PostgresCluster and a SharedVolume. The node
//! running haswarmd is lost (its engine and workloads frozen); Swarm starts
//! haswarmd on another manager, which takes the store's lease over, rebuilds
//! the store from the mirror and finds everything as it was: no service
//! recreated, no data container restarted. It then acts: a Redis password
//! rotation, a Postgres switchover, a SharedVolume deleted and created
//! again. The lost node comes back: its old haswarmd, thawed, finds the lease
//! taken, acts on nothing and stops, as its log says.
//!
//! haswarmd is kept on nodes 2 and 3 (label cp=yes), the data on node 1
//! (label data=yes): the node lost holds the control plane alone.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use haswarm_testbed::dind::Bed;
use haswarm_testbed::docker::{eventually, require_image, require_swarm};
use haswarm_testbed::{assert_code, figure, haswarmctl_bin, haswarmd_bin, pg, repo, stdout};

const HASWARMD_IMAGE: &str = "haswarm/haswarmd:e2e-cp";
const REDIS_IMAGE: &str = "haswarm/redis:bookworm";
const STACK: &str = "hsw";
const TOKEN: &str = "control-plane-test-token-0123456789";

fn manifests(name: &str) -> String {
    let img = pg::IMAGE;
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {name}-rd\nspec:\n  image: {REDIS_IMAGE}\n  instances: 2\n  placement:\n    spread: None\n    nodeSelector:\n      data: \"yes\"\n  sentinels:\n    downAfter: 2s\n    failoverTimeout: 10s\n---\napiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: {name}-pg\nspec:\n  instances: 2\n  postgres:\n    image: {img}\n  etcd:\n    image: {img}\n  router:\n    image: {img}\n  placement:\n    spread: None\n    nodeSelector:\n      data: \"yes\"\n  patroni:\n    ttl: 20\n    loopWait: 2\n    retryTimeout: 4\n  storage:\n    reclaimPolicy: Delete\n---\n{}",
        volume(name)
    )
}

fn volume(name: &str) -> String {
    format!("apiVersion: haswarm.io/v1alpha1\nkind: SharedVolume\nmetadata:\n  name: {name}-sv\nspec:\n  hostPath:\n    path: /srv/shared\n")
}

/// haswarmctl against the haswarmd of the bed, over TCP with the token.
struct Ctl {
    server: String,
}

impl Ctl {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(haswarmctl_bin())
            .args(["--server", &self.server])
            .args(args)
            .env("HASWARM_TOKEN", TOKEN)
            .output()
            .expect("haswarmctl runs")
    }

    fn apply(&self, dir: &std::path::Path, file: &str, text: &str) {
        let path = dir.join(file);
        std::fs::write(&path, text).expect("manifest");
        assert_code(&self.run(&["apply", "-f", &path.display().to_string()]), 0);
    }

    fn wait(&self, target: &str, timeout: &str) {
        let o = self.run(&[
            "wait",
            target,
            "--for=condition=Ready",
            &format!("--timeout={timeout}"),
        ]);
        assert_code(&o, 0);
    }

    fn json(&self, short: &str, name: &str) -> serde_json::Value {
        let o = self.run(&["get", short, name, "-o", "json"]);
        assert_code(&o, 0);
        serde_json::from_str(&stdout(&o)).expect("json")
    }

    fn healthy(&self) -> bool {
        self.run(&["healthcheck"]).status.success()
    }
}

/// The node haswarmd's task runs on, and the haswarmctl that reaches it.
fn control_plane(bed: &Bed) -> Option<(usize, Ctl)> {
    let i = bed.node_of(&format!("{STACK}_haswarmd"))?;
    let ctl = Ctl {
        server: format!("http://{}:7443", bed.addr(i)),
    };
    ctl.healthy().then_some((i, ctl))
}

/// Every haswarm service by name with its id, and the running containers
/// on node 1 (the data node) by service name.
fn workloads(bed: &Bed) -> (BTreeMap<String, String>, BTreeMap<String, Vec<String>>) {
    let services = bed
        .docker(&[
            "service",
            "ls",
            "--filter",
            "label=io.haswarm.managed-by=haswarm",
            "--format",
            "{{.Name}} {{.ID}}",
        ])
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, id)| (n.to_owned(), id.to_owned()))
        .collect();
    let mut containers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let listed = bed.docker_on(
        1,
        &[
            "ps",
            "--format",
            "{{.Label \"com.docker.swarm.service.name\"}} {{.ID}}",
        ],
    );
    for line in listed.lines() {
        if let Some((service, id)) = line.split_once(' ') {
            containers
                .entry(service.to_owned())
                .or_default()
                .push(id.to_owned());
        }
    }
    for v in containers.values_mut() {
        v.sort();
    }
    (services, containers)
}

/// Everything a container on node `i` wrote (haswarmd logs on stderr).
fn logs(bed: &Bed, i: usize, container: &str) -> String {
    let o = Command::new("docker")
        .args(["exec", &bed.node(i), "docker", "logs", container])
        .output()
        .expect("docker exec runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn install(bed: &Bed) {
    let sets = [
        format!("image={HASWARMD_IMAGE}"),
        "tcp.enabled=true".to_owned(),
        "tcp.tokenSecret=hsw-token".to_owned(),
        // A folder every node has (the socket is not used here).
        "socketDir=/tmp".to_owned(),
        "resync=5s".to_owned(),
        "mirror.leaseTerm=5s".to_owned(),
        "placement.constraints=[node.role == manager, node.labels.cp == yes]".to_owned(),
    ];
    let mut cmd = Command::new(haswarmctl_bin());
    cmd.args(["install", "--name", STACK, "--apply"])
        .env("DOCKER_HOST", bed.docker_host());
    for s in &sets {
        cmd.args(["--set", s]);
    }
    let o = cmd.output().expect("haswarmctl install runs");
    assert_code(&o, 0);
}

#[test]
fn haswarmd_survives_the_loss_of_its_node_and_the_old_one_does_not_act_when_it_returns() {
    require_swarm();
    require_image(pg::IMAGE);
    let (_, _) = (haswarmd_bin(), haswarmctl_bin());
    let built = Command::new("bash")
        .arg(repo().join("helm-like-manifests/build-image.sh"))
        .arg(HASWARMD_IMAGE)
        .status()
        .expect("build-image.sh runs");
    assert!(built.success(), "the haswarmd image builds");
    let bed = Bed::up_managed("cp", (3, 3), &[HASWARMD_IMAGE, pg::IMAGE]);
    bed.docker(&["node", "update", "--label-add", "data=yes", &bed.node(1)]);
    for i in [2, 3] {
        bed.docker(&["node", "update", "--label-add", "cp=yes", &bed.node(i)]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    bed.docker(&[
        "secret",
        "create",
        "hsw-token",
        &token_file.display().to_string(),
    ]);
    install(&bed);
    let mut cp = None;
    assert!(
        eventually(Duration::from_secs(120), || {
            cp = control_plane(&bed);
            cp.is_some()
        }),
        "haswarmd never answered: {}",
        bed.docker(&["service", "ps", "--no-trunc", &format!("{STACK}_haswarmd")])
    );
    let (first, ctl) = cp.expect("found above");

    let name = "cp";
    ctl.apply(dir.path(), "all.yaml", &manifests(name));
    ctl.wait(&format!("rsg/{name}-rd"), "240s");
    ctl.wait(&format!("pgc/{name}-pg"), "300s");
    ctl.wait(&format!("sv/{name}-sv"), "120s");
    let uids: Vec<_> = [("rsg", "rd"), ("pgc", "pg"), ("sv", "sv")]
        .iter()
        .map(|(k, n)| ctl.json(k, &format!("{name}-{n}"))["metadata"]["uid"].clone())
        .collect();
    let before = workloads(&bed);
    assert!(before.0.len() >= 10, "{before:?}");
    let old_task = bed
        .docker_on(
            first,
            &[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={STACK}_haswarmd"),
            ],
        )
        .trim()
        .to_owned();
    assert!(!old_task.is_empty(), "haswarmd's container on node {first}");

    // 1. The node running haswarmd is lost.
    let lost_at = Instant::now();
    bed.lose(first);
    let mut cp = None;
    let back = eventually(Duration::from_secs(240), || {
        cp = control_plane(&bed).filter(|(i, _)| *i != first);
        cp.is_some()
    });
    assert!(
        back,
        "haswarmd did not come back on another manager: {}",
        bed.docker(&["service", "ps", "--no-trunc", &format!("{STACK}_haswarmd")])
    );
    let (second, ctl) = cp.expect("found above");
    figure!(
        "[figures] control plane: node {first} lost; haswarmd serving on node {second} {:.1} s later",
        lost_at.elapsed().as_secs_f64()
    );
    ctl.wait(&format!("rsg/{name}-rd"), "120s");
    ctl.wait(&format!("pgc/{name}-pg"), "120s");
    let after: Vec<_> = [("rsg", "rd"), ("pgc", "pg"), ("sv", "sv")]
        .iter()
        .map(|(k, n)| ctl.json(k, &format!("{name}-{n}"))["metadata"]["uid"].clone())
        .collect();
    assert_eq!(after, uids, "the rebuilt store has every resource");
    // Its reconciles (every 5 s) find nothing to change.
    std::thread::sleep(Duration::from_secs(20));
    ctl.wait(&format!("pgc/{name}-pg"), "60s");
    let now = workloads(&bed);
    assert_eq!(now.1, before.1, "a data container restarted");
    let recreated: Vec<_> = before
        .0
        .iter()
        .filter(|(n, id)| !n.starts_with(STACK) && now.0.get(*n) != Some(id))
        .collect();
    assert!(recreated.is_empty(), "services recreated: {recreated:?}");

    // 2. The new haswarmd acts.
    assert_code(
        &ctl.run(&[
            "rotate-password",
            &format!("rsg/{name}-rd"),
            "--wait",
            "--timeout=300s",
        ]),
        0,
    );
    let leader = |c: &Ctl| {
        c.json("pgc", &format!("{name}-pg"))["status"]["leader"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let old_leader = leader(&ctl);
    assert_code(
        &ctl.run(&[
            "pg",
            "switchover",
            &format!("{name}-pg"),
            "--wait",
            "--timeout=180s",
        ]),
        0,
    );
    let new_leader = leader(&ctl);
    assert!(
        !new_leader.is_empty() && new_leader != old_leader,
        "{old_leader} -> {new_leader}"
    );
    assert_code(
        &ctl.run(&[
            "delete",
            "sv",
            &format!("{name}-sv"),
            "--wait",
            "--timeout=120s",
        ]),
        0,
    );
    ctl.apply(dir.path(), "sv.yaml", &volume(name));
    ctl.wait(&format!("sv/{name}-sv"), "120s");

    // 3. The lost node comes back: its haswarmd finds the lease taken.
    let settled = workloads(&bed);
    bed.restore(first);
    let mut log = String::new();
    let stopped = eventually(Duration::from_secs(60), || {
        log = logs(&bed, first, &old_task);
        log.contains("lost the store's lease")
    });
    assert!(stopped, "the old haswarmd's log:\n{log}");
    let lease_lines: Vec<&str> = log.lines().filter(|l| l.contains("lease")).collect();
    println!(
        "the old haswarmd's lines about the lease:\n{}",
        lease_lines.join("\n")
    );
    std::thread::sleep(Duration::from_secs(10));
    let last = workloads(&bed);
    assert_eq!(
        last.1, settled.1,
        "a data container changed once the old haswarmd thawed"
    );
    assert!(ctl.healthy(), "the new haswarmd still serves");
}
