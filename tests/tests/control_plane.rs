//! haswarmd survives the loss of its node, on a Docker-in-Docker bed of
//! three managers: installed as a stack with `haswarmctl install` (the
//! store mirrored in Swarm's Raft, the API on TCP), it runs a
//! RedisSentinelGroup, a PostgresCluster (one member of each per node) and
//! a SharedVolume. The node running haswarmd is lost (its engine and
//! workloads frozen); Swarm starts haswarmd on another manager, which takes
//! the store's lease over, rebuilds the store from the mirror and finds
//! everything as it was: no service recreated or changed, no member's
//! container restarted on the nodes that stayed (Swarm gives the lost
//! node's members new tasks of the same services when it returns). It
//! acts: a SharedVolume deleted and created again while the node is away, a
//! Postgres switchover and a Redis password rotation once it is back (both
//! wait for every member). The
//! lost node comes back: its old haswarmd, thawed, finds the lease taken,
//! acts on nothing and stops, as its log says; its members run again, and
//! both resources are Ready.
//!
//! haswarm reads the data plane through members on the node of the engine
//! it talks to, so haswarmd's node holds members too: the test first moves
//! the Postgres leader and the Redis master off it (a primary frozen past
//! its fence's lease stops when it thaws, which is the fence's job, not
//! this test's). The node lost is node 1, haswarmd's first: everything
//! after the loss asks node 2's engine.

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
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {name}-rd\nspec:\n  image: {REDIS_IMAGE}\n  instances: 3\n  sentinels:\n    downAfter: 2s\n    failoverTimeout: 10s\n---\napiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: {name}-pg\nspec:\n  instances: 3\n  postgres:\n    image: {img}\n  etcd:\n    image: {img}\n  router:\n    image: {img}\n  patroni:\n    ttl: 20\n    loopWait: 2\n    retryTimeout: 4\n    synchronousMode: On\n  storage:\n    reclaimPolicy: Delete\n---\n{}",
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

fn node_of(bed: &Bed, via: usize, service: &str) -> Option<usize> {
    bed.node_of_via(via, service)
}

/// The node haswarmd's task runs on (other than `not`, a lost node whose
/// task Swarm has not moved yet), and the haswarmctl that reaches it.
fn control_plane(bed: &Bed, via: usize, not: Option<usize>) -> Option<(usize, Ctl)> {
    let hosts = bed.docker_on(
        via,
        &[
            "service",
            "ps",
            &format!("{STACK}_haswarmd"),
            "--filter",
            "desired-state=running",
            "--format",
            "{{.Node}}",
        ],
    );
    let i = hosts
        .lines()
        .filter_map(|h| (1..=bed.len()).find(|i| bed.node(*i) == h.trim()))
        .find(|i| Some(*i) != not)?;
    let ctl = Ctl {
        server: format!("http://{}:7443", bed.addr(i)),
    };
    ctl.healthy().then_some((i, ctl))
}

/// What stays the same when nothing is recreated or restarted: every
/// haswarm service's id by name (haswarmd's own and the SharedVolume's
/// probe left out), and the running containers of the members (not the
/// routers' replicas) on `nodes`, keyed `node<i>/<service>`, asking node
/// `via`'s engine for the services.
type Workloads = (BTreeMap<String, String>, BTreeMap<String, Vec<String>>);

fn workloads(bed: &Bed, via: usize, nodes: &[usize]) -> Workloads {
    let kept = |name: &str| !name.starts_with(STACK) && !name.ends_with("-probe");
    let ids = bed.docker_on(
        via,
        &[
            "service",
            "ls",
            "-q",
            "--filter",
            "label=io.haswarm.managed-by=haswarm",
        ],
    );
    let mut args = vec![
        "service",
        "inspect",
        "--format",
        "{{.Spec.Name}} {{.ID}}@{{.Version.Index}}",
    ];
    args.extend(ids.split_whitespace());
    // Its id and its spec's version: haswarm neither recreated nor changed it.
    let services = bed
        .docker_on(via, &args)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(n, _)| kept(n))
        .map(|(n, id)| (n.to_owned(), id.to_owned()))
        .collect();
    let mut containers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for &i in nodes {
        let listed = bed.docker_on(
            i,
            &[
                "ps",
                "--format",
                "{{.Label \"com.docker.swarm.service.name\"}} {{.ID}}",
            ],
        );
        for line in listed.lines() {
            if let Some((service, id)) = line.split_once(' ') {
                // Router replicas are stateless: Swarm moves a lost node's.
                let router = service.ends_with("-rw") || service.ends_with("-ro");
                if kept(service) && !router && !service.is_empty() {
                    containers
                        .entry(format!("node{i}/{service}"))
                        .or_default()
                        .push(id.to_owned());
                }
            }
        }
    }
    for v in containers.values_mut() {
        v.sort();
    }
    (services, containers)
}

/// The members' containers on the nodes other than node 1 (the lost one).
fn elsewhere(w: &Workloads) -> BTreeMap<String, Vec<String>> {
    w.1.iter()
        .filter(|(k, _)| !k.starts_with("node1/"))
        .map(|(k, c)| (k.clone(), c.clone()))
        .collect()
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
        // Nothing moves off the lost node while the test runs.
        "nodeLossGrace=15m".to_owned(),
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

/// The service name of the member `status` names at `pointer` (Patroni
/// names carry an incarnation suffix after a dot).
fn member(ctl: &Ctl, short: &str, name: &str, pointer: &str) -> String {
    ctl.json(short, name)
        .pointer(pointer)
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Moves the Postgres leader and the Redis master off node 1.
fn primaries_off_node_1(bed: &Bed, ctl: &Ctl, name: &str) {
    let pgc = format!("{name}-pg");
    let leader = member(ctl, "pgc", &pgc, "/status/leader");
    if node_of(bed, 1, &leader) == Some(1) {
        let o = ctl.run(&["pg", "switchover", &pgc, "--wait", "--timeout=180s"]);
        assert_code(&o, 0);
    }
    let rsg = format!("{name}-rd");
    let master = member(ctl, "rsg", &rsg, "/status/master");
    if node_of(bed, 1, &master) == Some(1) {
        let c = bed.docker_on(
            1,
            &[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={master}"),
            ],
        );
        bed.docker_on(1, &["kill", c.trim()]);
        let moved = eventually(Duration::from_secs(150), || {
            let m = member(ctl, "rsg", &rsg, "/status/master");
            !m.is_empty() && m != master
        });
        assert!(moved, "the sentinels did not fail over from {master}");
    }
    ctl.wait(&format!("rsg/{rsg}"), "180s");
    ctl.wait(&format!("pgc/{pgc}"), "180s");
    let on_1 = |short, n: &str, p| node_of(bed, 1, &member(ctl, short, n, p)) == Some(1);
    assert!(
        !on_1("pgc", &pgc, "/status/leader") && !on_1("rsg", &rsg, "/status/master"),
        "a primary is still on node 1"
    );
}

fn uids(ctl: &Ctl, name: &str) -> Vec<serde_json::Value> {
    [("rsg", "rd"), ("pgc", "pg"), ("sv", "sv")]
        .iter()
        .map(|(k, n)| ctl.json(k, &format!("{name}-{n}"))["metadata"]["uid"].clone())
        .collect()
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
    // haswarmd starts on node 1, the only node it may run on at first.
    bed.docker(&["node", "update", "--label-add", "cp=yes", &bed.node(1)]);
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
            cp = control_plane(&bed, 1, None);
            cp.is_some()
        }),
        "haswarmd never answered: {}",
        bed.docker(&["service", "ps", "--no-trunc", &format!("{STACK}_haswarmd")])
    );
    let (first, ctl) = cp.expect("found above");
    assert_eq!(first, 1, "haswarmd runs on node 1");

    let name = "cp";
    ctl.apply(dir.path(), "all.yaml", &manifests(name));
    ctl.wait(&format!("rsg/{name}-rd"), "240s");
    ctl.wait(&format!("pgc/{name}-pg"), "300s");
    ctl.wait(&format!("sv/{name}-sv"), "120s");
    primaries_off_node_1(&bed, &ctl, name);
    for i in [2, 3] {
        bed.docker(&["node", "update", "--label-add", "cp=yes", &bed.node(i)]);
    }
    let ids = uids(&ctl, name);
    let before = workloads(&bed, 1, &[1, 2, 3]);
    assert!(before.0.len() >= 10, "{before:?}");
    let old_task = bed
        .docker_on(
            1,
            &[
                "ps",
                "-q",
                "--filter",
                &format!("label=com.docker.swarm.service.name={STACK}_haswarmd"),
            ],
        )
        .trim()
        .to_owned();
    assert!(!old_task.is_empty(), "haswarmd's container on node 1");

    // 1. The node running haswarmd is lost.
    let lost_at = Instant::now();
    bed.lose(1);
    let mut cp = None;
    let back = eventually(Duration::from_secs(240), || {
        cp = control_plane(&bed, 2, Some(1));
        cp.is_some()
    });
    assert!(
        back,
        "haswarmd did not come back on another manager: {}",
        bed.docker_on(
            2,
            &["service", "ps", "--no-trunc", &format!("{STACK}_haswarmd")]
        )
    );
    let (second, ctl) = cp.expect("found above");
    figure!(
        "[figures] control plane: node 1 lost; haswarmd serving on node {second} {:.1} s later",
        lost_at.elapsed().as_secs_f64()
    );
    assert_eq!(
        uids(&ctl, name),
        ids,
        "the rebuilt store has every resource"
    );
    // Its reconciles (every 5 s) recreate and restart nothing.
    std::thread::sleep(Duration::from_secs(20));
    let away = workloads(&bed, 2, &[2, 3]);
    assert_eq!(away.0, before.0, "a service was recreated");
    assert_eq!(away.1, elsewhere(&before), "a container restarted");

    // 2. The new haswarmd acts while the node is away (a switchover and a
    // rotation wait for every member: they come after the node's return).
    let sv = format!("{name}-sv");
    assert_code(
        &ctl.run(&["delete", "sv", &sv, "--wait", "--timeout=120s"]),
        0,
    );
    ctl.apply(dir.path(), "sv.yaml", &volume(name));
    let recreated = ctl.json("sv", &sv)["metadata"]["uid"].clone();
    assert_ne!(recreated, ids[2], "the SharedVolume was created again");

    // 3. The lost node comes back: its haswarmd finds the lease taken.
    bed.restore(1);
    let mut log = String::new();
    let stopped = eventually(Duration::from_secs(60), || {
        log = logs(&bed, 1, &old_task);
        log.contains("lost the store's lease")
    });
    assert!(stopped, "the old haswarmd's log:\n{log}");
    let lease_lines: Vec<&str> = log.lines().filter(|l| l.contains("lease")).collect();
    println!(
        "the old haswarmd's lines about the lease:\n{}",
        lease_lines.join("\n")
    );
    ctl.wait(&format!("rsg/{name}-rd"), "240s");
    ctl.wait(&format!("pgc/{name}-pg"), "240s");
    ctl.wait(&format!("sv/{sv}"), "120s");
    // Swarm replaced the tasks of the node that was down (new containers of
    // the same services, whose specs did not change); everything else is as
    // it was.
    let back = workloads(&bed, 2, &[1, 2, 3]);
    assert_eq!(back.0, before.0, "a service recreated or changed");
    assert_eq!(
        elsewhere(&back),
        elsewhere(&before),
        "a container restarted"
    );
    let on_1 = |w: &Workloads| w.1.keys().filter(|k| k.starts_with("node1/")).count();
    assert_eq!(on_1(&back), on_1(&before), "node 1's members run again");
    let pgc = format!("{name}-pg");
    let old_leader = member(&ctl, "pgc", &pgc, "/status/leader");
    let o = ctl.run(&["pg", "switchover", &pgc, "--wait", "--timeout=180s"]);
    assert_code(&o, 0);
    let new_leader = member(&ctl, "pgc", &pgc, "/status/leader");
    assert!(
        !new_leader.is_empty() && new_leader != old_leader,
        "{old_leader} -> {new_leader}"
    );
    // Three rolling updates of six members: about six minutes on a bed.
    let rotated = ctl.run(&[
        "rotate-password",
        &format!("rsg/{name}-rd"),
        "--wait",
        "--timeout=600s",
    ]);
    if !rotated.status.success() {
        println!(
            "{}",
            stdout(&ctl.run(&["describe", "rsg", &format!("{name}-rd")]))
        );
    }
    assert_code(&rotated, 0);
    assert!(ctl.healthy(), "the new haswarmd still serves");
}
