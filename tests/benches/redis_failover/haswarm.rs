//! haswarm's side of the bench: a RedisSentinelGroup of the same shape as
//! the hand-written stack, applied to a haswarmd of the bench's own.

use haswarm_testbed::bench::unix_time;
use haswarm_testbed::docker::{redis_cli, service_container, Cleanup};
use haswarm_testbed::{assert_code, Daemon};
use serde_json::Value;

use crate::{Group, DOWN_AFTER_S, FAILOVER_TIMEOUT_S, INSTANCES, SENTINELS};

/// A RedisSentinelGroup and the daemon that runs it; dropping it deletes
/// the group (and, through the cleanup, whatever a failed delete left).
pub struct Haswarm {
    d: Daemon,
    pub name: String,
    fast: bool,
    _cleanup: Cleanup,
}

fn manifest(name: &str, fast: bool) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {name}\nspec:\n  image: haswarm/redis:bookworm\n  masterGroupName: {name}-master\n  instances: {INSTANCES}\n  placement:\n    spread: None\n  sentinels:\n    count: {SENTINELS}\n    downAfter: {DOWN_AFTER_S}s\n    failoverTimeout: {FAILOVER_TIMEOUT_S}s\n    fastFailover: {fast}\n"
    )
}

/// `INFO sentinel` of a sentinel, with the password read in its container.
fn sentinel_info(service: &str) -> String {
    if service_container(service).is_empty() {
        return String::new();
    }
    redis_cli(service, 26379, "INFO sentinel\n")
}

impl Haswarm {
    /// Applies the group to a new daemon; returns it with the unix time
    /// just before `haswarmctl apply` ran.
    pub fn apply(name: &str, fast: bool) -> (Self, f64) {
        let mut cleanup = Cleanup::default();
        cleanup.owner("RedisSentinelGroup", name);
        let d = Daemon::start_with_controllers(&["--resync", "5s"]);
        // The first haswarmctl call may build it: not part of the start.
        let _ = d.ctl(&["get", "rsg"]);
        let t0 = crate::now();
        d.apply("rsg.yaml", &manifest(name, fast));
        (
            Self {
                d,
                name: name.to_owned(),
                fast,
                _cleanup: cleanup,
            },
            t0,
        )
    }

    fn get(&self) -> Value {
        self.d.get_json("rsg", &self.name)
    }

    /// Waits for `Ready`; its unix time (the condition's transition).
    pub fn wait_ready(&self) -> Option<f64> {
        self.d
            .wait_for(&format!("rsg/{}", self.name), "condition=Ready", "300s");
        self.get()["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready" && c["status"] == "True")?["lastTransitionTime"]
            .as_str()
            .and_then(unix_time)
    }

    pub fn instance_services(&self) -> Vec<String> {
        (0..INSTANCES)
            .map(|i| format!("{}-redis-{i}", self.name))
            .collect()
    }

    /// Deletes the group and waits until it is gone.
    pub fn delete(self) {
        let o = self
            .d
            .ctl(&["delete", "rsg", &self.name, "--wait", "--timeout=180s"]);
        assert_code(&o, 0);
    }
}

impl Group for Haswarm {
    fn label(&self) -> String {
        if self.fast {
            "haswarm, fast failover".to_owned()
        } else {
            "haswarm, sentinels alone".to_owned()
        }
    }

    fn network(&self) -> String {
        format!("{}-net", self.name)
    }

    fn master_group(&self) -> String {
        format!("{}-master", self.name)
    }

    fn password(&self) -> String {
        let c = self
            .instance_services()
            .iter()
            .map(|s| service_container(s))
            .find(|c| !c.is_empty())
            .unwrap_or_default();
        haswarm_testbed::docker::docker(&["exec", &c, "cat", "/run/secrets/redis-password"])
            .trim()
            .to_owned()
    }

    fn instance_hosts(&self) -> Vec<String> {
        self.instance_services()
    }

    fn probe_keys(&self, master: &str) -> String {
        redis_cli(master, 6379, "KEYS probe:*\n")
    }

    fn sentinel_hosts(&self) -> Vec<String> {
        self.sentinel_services()
    }

    fn sentinel_services(&self) -> Vec<String> {
        (0..SENTINELS)
            .map(|j| format!("{}-sentinel-{j}", self.name))
            .collect()
    }

    /// Ready, `previous` (the master killed last) back as a linked replica
    /// (or as the master, when the sentinels did not fail over), and every
    /// sentinel out of TILT and naming that master as up.
    fn settled(&self, previous: Option<&str>) -> Option<String> {
        let v = self.get();
        let status = &v["status"];
        let ready = status["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let master = status["master"].as_str()?.to_owned();
        let rejoined = previous.is_none_or(|p| {
            p == master
                || status["replicas"].as_array().is_some_and(|rs| {
                    rs.iter()
                        .any(|r| r["name"].as_str() == Some(p) && r["linkUp"] == true)
                })
        });
        if !ready || master.is_empty() || !rejoined {
            return None;
        }
        let expected = format!("status=ok,address={master}:6379,");
        self.sentinel_services()
            .iter()
            .all(|s| {
                let info = sentinel_info(s);
                info.contains("sentinel_tilt:0") && info.contains(&expected)
            })
            .then_some(master)
    }

    fn services(&self) -> Vec<String> {
        let mut s = self.instance_services();
        s.extend(self.sentinel_services());
        s
    }

    fn not_asked(&self, t0: f64) -> Option<String> {
        if !self.fast {
            return None;
        }
        let said: Vec<String> = self
            .d
            .log()
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .and_then(unix_time)
                    .is_some_and(|at| at >= t0)
            })
            .filter(|l| {
                // Its verdicts, and any trouble of the pass the container's
                // end should have triggered (a failed pass delays the next).
                [
                    "fast failover",
                    "fail over already",
                    "did not answer",
                    " WARN ",
                    " ERROR ",
                ]
                .iter()
                .any(|w| l.contains(w))
            })
            .map(|l| l.split_once(": ").map_or(l, |(_, rest)| rest).to_owned())
            .collect();
        Some(if said.is_empty() {
            "nothing in its log (the master was not proven dead, or status did not name it)"
                .to_owned()
        } else {
            said.join(" | ")
        })
    }

    fn asked_since(&self, t0: f64) -> Option<f64> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let events = rt
            .block_on(self.d.client().events("redissentinelgroups", &self.name))
            .unwrap_or_default();
        events
            .iter()
            .filter(|e| e.reason == "FastFailover")
            .map(|e| e.last_timestamp.timestamp_micros() as f64 / 1e6)
            .filter(|at| *at >= t0)
            .max_by(f64::total_cmp)
    }
}
