//! The baseline: the Redis Sentinel stack an operator writes by hand from
//! `../shared/background/dify-redis-sentinel.md`, deployed with
//! `docker stack deploy` on the same engine as haswarm's group.
//!
//! What the document gives: a master started with `--requirepass`, three
//! sentinels with `sentinel monitor dify-master-group redis-master 6379 2`
//! and `sentinel auth-pass`, and the one password typed into each. What it
//! leaves to the operator, and how this stack fills it in the way a careful
//! one would: two replicas (`--replicaof redis-master`) so that there is
//! something to fail over to; hostnames announced and resolved
//! (`replica-announce-ip`, `sentinel resolve-hostnames`/`announce-hostnames`),
//! since Swarm gives a restarted task a new address; `requirepass` and
//! `sentinel sentinel-pass` on the sentinels, since Dify's clients send
//! `REDIS_SENTINEL_PASSWORD` to them; and the same `downAfter` and
//! failover timeout as the haswarm group. Names resolve to the tasks
//! themselves (`endpoint_mode: dnsrr`, as haswarm's services do): Sentinel
//! and replication need each instance's own address, not a virtual IP. A sentinel waits until the name
//! `redis-master` resolves before it starts: Swarm may start it before the
//! master's name is in its DNS, and a sentinel that fails to resolve its
//! monitored master at start never tries again. Nothing persists: a killed master
//! comes back empty and as a master, until the sentinels turn it into a
//! replica (`+convert-to-slave`), as it does in Dify's stack.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use haswarm_testbed::docker::{docker, eventually, service_container};

use crate::{Group, DOWN_AFTER_S, FAILOVER_TIMEOUT_S, INSTANCES, SENTINELS};

/// The master group's name in the document.
const GROUP: &str = "dify-master-group";

/// A deployed hand-written stack; dropping it removes the stack, waits for
/// its containers and removes its network.
pub struct Stack {
    pub name: String,
    password: String,
}

/// The compose file: the document's services, with the password typed
/// into every one of them, as the document has it.
fn compose(password: &str) -> String {
    let mut s = String::from("version: \"3.8\"\nnetworks:\n  default:\n    driver: overlay\n    attachable: true\nservices:\n");
    let redis = |name: &str, replicaof: &str| {
        format!(
            "  {name}:\n    image: haswarm/redis:bookworm\n    deploy:\n      endpoint_mode: dnsrr\n    command: redis-server --port 6379 --protected-mode no --requirepass {password} --masterauth {password} --replica-announce-ip {name}{replicaof}\n"
        )
    };
    s.push_str(&redis("redis-master", ""));
    for i in 1..INSTANCES {
        s.push_str(&redis(
            &format!("redis-replica-{i}"),
            " --replicaof redis-master 6379",
        ));
    }
    for j in 1..=SENTINELS {
        let conf = [
            "port 26379".to_owned(),
            "sentinel resolve-hostnames yes".to_owned(),
            "sentinel announce-hostnames yes".to_owned(),
            format!("sentinel announce-ip redis-sentinel-{j}"),
            format!("requirepass {password}"),
            format!("sentinel sentinel-pass {password}"),
            format!("sentinel monitor {GROUP} redis-master 6379 2"),
            format!("sentinel auth-pass {GROUP} {password}"),
            format!(
                "sentinel down-after-milliseconds {GROUP} {}",
                DOWN_AFTER_S * 1000
            ),
            format!(
                "sentinel failover-timeout {GROUP} {}",
                FAILOVER_TIMEOUT_S * 1000
            ),
            format!("sentinel parallel-syncs {GROUP} 1"),
        ]
        .iter()
        .map(|l| format!("'{l}'"))
        .collect::<Vec<_>>()
        .join(" ");
        s.push_str(&format!(
            "  redis-sentinel-{j}:\n    image: haswarm/redis:bookworm\n    deploy:\n      endpoint_mode: dnsrr\n    command: [\"sh\", \"-c\", \"until getent hosts redis-master >/dev/null; do sleep 0.1; done; printf '%s\\\\n' {} > /tmp/sentinel.conf && exec redis-sentinel /tmp/sentinel.conf\"]\n",
            conf.replace('"', "\\\"")
        ));
    }
    s
}

impl Stack {
    /// Deploys the stack; returns it with the unix time just before
    /// `docker stack deploy` ran.
    pub fn deploy(name: &str) -> (Self, f64) {
        let password = format!("bench{:016x}", fastrand::u64(..));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("stack.yml");
        std::fs::write(&file, compose(&password)).expect("compose file written");
        let stack = Self {
            name: name.to_owned(),
            password,
        };
        let t0 = crate::now();
        let o = Command::new("docker")
            .args(["stack", "deploy", "--resolve-image", "never", "-c"])
            .arg(&file)
            .arg(name)
            .stdout(Stdio::null())
            .output()
            .expect("docker stack deploy runs");
        assert!(
            o.status.success(),
            "docker stack deploy: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        (stack, t0)
    }

    /// Runs redis-cli in a service's container; the password goes through
    /// the environment of `docker exec`, not its command line.
    fn cli(&self, service: &str, port: u16, args: &[&str]) -> String {
        let c = service_container(service);
        if c.is_empty() {
            return String::new();
        }
        let o = Command::new("docker")
            .env("REDISCLI_AUTH", &self.password)
            .args(["exec", "-e", "REDISCLI_AUTH", &c, "redis-cli"])
            .args(["--no-auth-warning", "--raw", "-p", &port.to_string()])
            .args(args)
            .output();
        o.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// The stack's service of a short name (`redis-master`).
    fn service(&self, short: &str) -> String {
        format!("{}_{short}", self.name)
    }

    /// The master every sentinel names, out of TILT and with every replica
    /// and sentinel known, and the master's count of linked replicas, when
    /// all agree; as a short name.
    fn agreed(&self) -> Option<String> {
        let expected = format!("slaves={},sentinels={SENTINELS}", INSTANCES - 1);
        let mut masters = (1..=SENTINELS).map(|j| {
            let info = self.cli(
                &self.service(&format!("redis-sentinel-{j}")),
                26379,
                &["INFO", "sentinel"],
            );
            let line = info.lines().find(|l| l.starts_with("master0:"))?;
            let addr = line.split("address=").nth(1)?.split(':').next()?;
            (info.contains("sentinel_tilt:0")
                && line.contains("status=ok")
                && line.contains(&expected))
            .then(|| addr.to_owned())
        });
        let first = masters.next()??;
        masters
            .all(|m| m.as_deref() == Some(first.as_str()))
            .then_some(first)
    }
}

impl Group for Stack {
    fn label(&self) -> String {
        "hand-written stack".to_owned()
    }

    fn network(&self) -> String {
        format!("{}_default", self.name)
    }

    fn master_group(&self) -> String {
        GROUP.to_owned()
    }

    fn password(&self) -> String {
        self.password.clone()
    }

    fn instance_hosts(&self) -> Vec<String> {
        std::iter::once("redis-master".to_owned())
            .chain((1..INSTANCES).map(|i| format!("redis-replica-{i}")))
            .collect()
    }

    fn probe_keys(&self, master: &str) -> String {
        self.cli(master, 6379, &["KEYS", "probe:*"])
    }

    fn sentinel_hosts(&self) -> Vec<String> {
        (1..=SENTINELS)
            .map(|j| format!("redis-sentinel-{j}"))
            .collect()
    }

    fn sentinel_services(&self) -> Vec<String> {
        (1..=SENTINELS)
            .map(|j| self.service(&format!("redis-sentinel-{j}")))
            .collect()
    }

    fn settled(&self, _previous: Option<&str>) -> Option<String> {
        let master = self.agreed()?;
        let service = self.service(&master);
        let linked = self.cli(&service, 6379, &["INFO", "replication"]);
        let all = format!("connected_slaves:{}", INSTANCES - 1);
        (linked.contains("role:master") && linked.contains(&all)).then_some(service)
    }

    fn services(&self) -> Vec<String> {
        let mut s = vec![self.service("redis-master")];
        s.extend((1..INSTANCES).map(|i| self.service(&format!("redis-replica-{i}"))));
        s.extend(self.sentinel_services());
        s
    }
}

impl Stack {
    /// Waits until the sentinels agree and see every replica and sentinel;
    /// false after `limit`.
    pub fn wait_ready(&self, limit: Duration) -> bool {
        eventually(limit, || self.agreed().is_some())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        docker(&["stack", "rm", &self.name]);
        let of = format!("label=com.docker.stack.namespace={}", self.name);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let left = docker(&["ps", "-aq", "--filter", &of]);
            if left.trim().is_empty() {
                break;
            }
            for c in left.split_whitespace() {
                docker(&["rm", "-f", c]);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let network = self.network();
        eventually(Duration::from_secs(30), || {
            docker(&["network", "inspect", "--format", "{{.Id}}", &network])
                .trim()
                .is_empty()
                || {
                    docker(&["network", "rm", &network]);
                    false
                }
        });
    }
}
