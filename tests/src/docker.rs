//! The Docker engine as the end-to-end tests see it, through the docker CLI
//! (the same view an operator has). Everything here only reads, or removes
//! objects carrying labels of resources the test itself created.

use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `docker ARGS` and returns its standard output: empty when the
/// engine answered with an error ("No such service", say). Panics when the
/// CLI does not run or the engine does not answer: a check that something
/// is absent must not pass because nothing looked.
pub fn docker(args: &[&str]) -> String {
    let o = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?} does not run: {e}"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !engine_unreachable(&err),
        "docker {args:?}: the engine does not answer: {err}"
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Whether the docker CLI's error output says the engine did not answer.
pub fn engine_unreachable(stderr: &str) -> bool {
    stderr.contains("Cannot connect to the Docker daemon")
        || stderr.contains("error during connect")
}

/// What every task container of `service` on the local engine wrote, on
/// standard output and error, ended ones that Swarm still keeps included.
/// Not `docker service logs`: on Docker 20.10 it hung for minutes (for ever,
/// as far as a test could tell) on services whose earlier tasks had ended
/// in rolling updates. Each container's read is bounded.
pub fn service_logs(service: &str) -> String {
    let filter = format!("label=com.docker.swarm.service.name={service}");
    let mut out = String::new();
    for id in docker(&["ps", "-aq", "--filter", &filter]).lines() {
        if let Ok(o) = Command::new("timeout")
            .args(["30", "docker", "logs", id])
            .output()
        {
            out.push_str(&String::from_utf8_lossy(&o.stdout));
            out.push_str(&String::from_utf8_lossy(&o.stderr));
        }
    }
    out
}

/// Creates the Swarm secret `name` holding `value` (given on standard input,
/// never on a command line); panics when docker refuses.
pub fn create_secret(name: &str, value: &str) {
    use std::io::Write;
    let mut create = Command::new("docker")
        .args(["secret", "create", name, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("docker secret create");
    if let Some(mut stdin) = create.stdin.take() {
        stdin.write_all(value.as_bytes()).expect("secret value");
    }
    assert!(create.wait().expect("docker secret create").success());
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
    require_image("haswarm/probe:latest");
}

/// Panics with the fix when a test image is missing.
pub fn require_image(image: &str) {
    assert!(
        !docker(&["image", "inspect", "--format", "{{.Id}}", image])
            .trim()
            .is_empty(),
        "the image {image} is missing: run tests/testbed/prepare.sh first"
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

/// `docker ARGS` that must succeed: its standard output. A check built on
/// a listing must fail when the listing did, not pass on an empty answer.
#[track_caller]
pub fn docker_ok(args: &[&str]) -> String {
    let o = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("docker {args:?}: {e}"));
    assert!(
        o.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Secrets and configs owned by `kind/name` that none of its services uses
/// and its status does not name (a secret for applications is named
/// there): what a flow left behind. Empty once the owner is tidy.
pub fn orphans(kind: &str, name: &str, status: &serde_json::Value) -> Vec<String> {
    let owner = format!("label=io.haswarm.owner={kind}/{name}");
    let mut used = String::new();
    for s in owned_services(kind, name) {
        used.push_str(&docker_ok(&[
            "service",
            "inspect",
            "--format",
            "{{json .Spec.TaskTemplate.ContainerSpec}}",
            &s,
        ]));
    }
    let named = status.to_string();
    let mut out = Vec::new();
    for what in ["secret", "config"] {
        let listed = docker_ok(&[what, "ls", "--filter", &owner, "--format", "{{.Name}}"]);
        for n in listed.lines().filter(|l| !l.is_empty()) {
            let quoted = format!("\"{n}\"");
            if !used.contains(&quoted) && !named.contains(&quoted) {
                out.push(format!("{what} {n}"));
            }
        }
    }
    out
}

/// Asserts that `kind/name` owns exactly `services` (no duplicate, no
/// leftover one-shot job) and, within a minute (pruning follows the
/// rollout), no orphan secret or config; `status` reads its status.
#[track_caller]
pub fn assert_tidy(
    kind: &str,
    name: &str,
    services: &[String],
    status: impl Fn() -> serde_json::Value,
) {
    let mut owned = owned_services(kind, name);
    owned.sort();
    let mut expected = services.to_vec();
    expected.sort();
    assert_eq!(owned, expected, "the services {kind}/{name} owns");
    assert!(
        eventually(Duration::from_secs(60), || orphans(kind, name, &status())
            .is_empty()),
        "{kind}/{name} left {:?}",
        orphans(kind, name, &status())
    );
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
#[derive(Debug)]
pub struct Cleanup {
    lists: std::sync::Arc<std::sync::Mutex<Lists>>,
    /// The same removal, should the process end before this is dropped.
    _at_exit: crate::at_exit::Registered,
}

/// What a [`Cleanup`] removes.
#[derive(Debug, Default)]
struct Lists {
    owners: Vec<(String, String)>,
    instances: Vec<String>,
    named: Vec<(&'static str, String)>,
}

impl Default for Cleanup {
    fn default() -> Self {
        let lists = std::sync::Arc::<std::sync::Mutex<Lists>>::default();
        let undo = lists.clone();
        let at_exit = crate::at_exit::register(move || {
            undo.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove();
        });
        Self {
            lists,
            _at_exit: at_exit,
        }
    }
}

impl Cleanup {
    fn lists(&self) -> std::sync::MutexGuard<'_, Lists> {
        self.lists
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Cleans up after resource `kind/name`.
    pub fn owner(&mut self, kind: &str, name: &str) {
        self.lists().owners.push((kind.to_owned(), name.to_owned()));
    }

    /// Cleans up every object labelled `io.haswarm.instance=<id>`.
    pub fn instance(&mut self, id: &str) {
        self.lists().instances.push(id.to_owned());
    }

    /// Cleans up one object by name: `what` is service, network, secret, config or container.
    pub fn named(&mut self, what: &'static str, name: &str) {
        self.lists().named.push((what, name.to_owned()));
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
        let lists = self.lists();
        // A failing test shows what Swarm did with the resource's tasks
        // (the harness prints captured output only when a test fails), so a
        // task that never ran in CI says why, before its service goes.
        if std::thread::panicking() {
            for (kind, name) in &lists.owners {
                let filter = format!("label=io.haswarm.owner={kind}/{name}");
                for s in ls("service", &filter) {
                    eprintln!(
                        "---- docker service ps {s} ----\n{}",
                        docker(&[
                            "service",
                            "ps",
                            "--no-trunc",
                            "--format",
                            "{{.Name}} {{.Node}} desired={{.DesiredState}} {{.CurrentState}} {{.Error}}",
                            &s,
                        ])
                    );
                    let logs = service_logs(&s);
                    let lines: Vec<&str> = logs.lines().collect();
                    eprintln!(
                        "---- last lines its containers wrote ----\n{}",
                        lines[lines.len().saturating_sub(12)..].join("\n")
                    );
                }
            }
        }
        lists.remove();
    }
}

impl Lists {
    /// Removes everything listed (again, harmlessly, if it is gone).
    fn remove(&self) {
        // Every owner's services first, and their containers with them: a
        // job service removed while its task runs (a backup job when the
        // test ends) leaves its container behind on Docker 20.10, and a
        // network removed while a container is on it stays behind on the
        // node for good (listed, "not found" on rm).
        for (kind, name) in &self.owners {
            let filter = format!("label=io.haswarm.owner={kind}/{name}");
            for x in ls("service", &filter) {
                let service = docker(&["service", "inspect", "--format", "{{.Spec.Name}}", &x]);
                docker(&["service", "rm", &x]);
                if service.trim().is_empty() {
                    continue;
                }
                let of = format!("label=com.docker.swarm.service.name={}", service.trim());
                for c in docker(&["ps", "-aq", "--filter", &of]).split_whitespace() {
                    docker(&["rm", "-f", c]);
                }
            }
        }
        for (kind, name) in &self.owners {
            let filter = format!("label=io.haswarm.owner={kind}/{name}");
            for what in ["network", "secret", "config"] {
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
        for (_, name) in &self.owners {
            remove_leftovers(name);
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

/// What a resource leaves once its services are removed: ended task
/// containers (Swarm removes them lazily), then the data volumes
/// `<name>-...-data` they held and its network. Waits up to a minute for
/// tasks that are still stopping.
fn remove_leftovers(name: &str) {
    let prefix = format!("{name}-");
    let gone = eventually(Duration::from_secs(60), || {
        for c in docker(&[
            "ps",
            "-a",
            "--filter",
            "status=exited",
            "--filter",
            "status=created",
            "--filter",
            "status=dead",
            "--filter",
            "label=com.docker.swarm.task.id",
            "--format",
            "{{.ID}} {{.Label \"com.docker.swarm.service.name\"}}",
        ])
        .lines()
        {
            if let Some((id, service)) = c.split_once(' ') {
                if service.starts_with(&prefix) {
                    docker(&["rm", id]);
                }
            }
        }
        let volumes: Vec<String> =
            docker(&["volume", "ls", "-q", "--filter", &format!("name={prefix}")])
                .lines()
                .filter(|v| v.starts_with(&prefix) && v.ends_with("-data"))
                .map(str::to_owned)
                .collect();
        for v in &volumes {
            docker(&["volume", "rm", v]);
        }
        let network = format!("{name}-net");
        if !docker(&["network", "inspect", "--format", "{{.Id}}", &network])
            .trim()
            .is_empty()
        {
            docker(&["network", "rm", &network]);
        }
        docker(&["volume", "ls", "-q", "--filter", &format!("name={prefix}")])
            .lines()
            .all(|v| !(v.starts_with(&prefix) && v.ends_with("-data")))
    });
    if !gone {
        eprintln!("cleanup: some volumes of {name} are still in use");
    }
}

/// The running container of a service's task on this node (empty when none).
pub fn service_container(service: &str) -> String {
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

/// Runs redis-cli commands (one per line, one connection) in a Redis or
/// Sentinel service's container, with the password read there from the
/// secret file (it never reaches the test). `port` is 6379 or 26379.
pub fn redis_cli(service: &str, port: u16, commands: &str) -> String {
    let c = service_container(service);
    let script = format!(
        "printf '{}' | REDISCLI_AUTH=\"$(cat /run/secrets/redis-password)\" redis-cli --no-auth-warning --raw -p {port}",
        commands.replace('\n', "\\n")
    );
    docker(&["exec", &c, "sh", "-c", &script])
}

/// Writes `n` keys on the master and waits until a replica acknowledged them.
pub fn write_keys(master: &str, n: usize) {
    let mut cmds = String::new();
    for i in 0..n {
        cmds.push_str(&format!("SET key{i} value{i}\n"));
    }
    cmds.push_str("WAIT 1 5000\n");
    let out = redis_cli(master, 6379, &cmds);
    let acked: u32 = out
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(acked >= 1, "WAIT should report a replica: {out}");
}

/// Asserts that `service` holds the `n` keys [`write_keys`] wrote.
pub fn assert_keys(service: &str, n: usize) {
    let mut read = String::new();
    for i in 0..n {
        read.push_str(&format!("GET key{i}\n"));
    }
    let values: Vec<String> = redis_cli(service, 6379, &read)
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (0..n).map(|i| format!("value{i}")).collect();
    assert_eq!(values, expected, "every acknowledged write is on {service}");
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

/// The value of Swarm secret `secret`, read by a one-shot service on a
/// manager (`docker` runs the CLI against the engine that will run it: the
/// local one, or a bed's manager node) with `image`, which must be there.
/// A Swarm secret's value can be read only from inside a task. Secrets are
/// immutable and haswarm names its own by content, so values are cached by
/// name for the process.
pub fn secret_value(docker: &dyn Fn(&[&str]) -> String, secret: &str, image: &str) -> String {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    static CACHE: Mutex<BTreeMap<String, String>> = Mutex::new(BTreeMap::new());
    static SEQ: AtomicUsize = AtomicUsize::new(0);
    if let Some(v) = CACHE.lock().ok().and_then(|c| c.get(secret).cloned()) {
        return v;
    }
    let service = format!(
        "haswarm-test-read-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let source = format!("source={secret},target=value");
    docker(&[
        "service",
        "create",
        "-d",
        "--name",
        &service,
        "--restart-condition",
        "none",
        "--constraint",
        "node.role==manager",
        "--secret",
        &source,
        image,
        "cat",
        "/run/secrets/value",
    ]);
    let filter = format!("label=com.docker.swarm.service.name={service}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut value = String::new();
    while std::time::Instant::now() < deadline {
        let ended = docker(&[
            "ps",
            "-aq",
            "--filter",
            &filter,
            "--filter",
            "status=exited",
        ]);
        if let Some(id) = ended.lines().next() {
            value = docker(&["logs", id]).trim().to_owned();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    docker(&["service", "rm", &service]);
    assert!(!value.is_empty(), "secret {secret} could not be read");
    if let Ok(mut c) = CACHE.lock() {
        c.insert(secret.to_owned(), value.clone());
    }
    value
}
