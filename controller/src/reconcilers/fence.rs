//! The fence in front of every data member (fence.sh): a kernel-kept lease
//! on the member's ports, so that a primary frozen with its node never
//! serves after the thaw. Pure: what the services carry for it.

use super::common::DesiredContent;
use crate::swarm::objects::ContentKind;

/// The fence script, run by `/bin/sh` (it re-executes itself with bash).
pub const SCRIPT: &str = include_str!("fence.sh");

/// The purpose of the config that carries [`SCRIPT`] (part of its name).
pub const PURPOSE: &str = "fence";

/// Where [`SCRIPT`] is mounted in a member's container.
pub const PATH: &str = "/etc/haswarm/fence.sh";

/// The capability the fence needs to set its lease in the task's own
/// network namespace (nftables); it reaches no other namespace.
pub const CAPABILITY: &str = "CAP_NET_ADMIN";

/// The shortest lease: a member frozen for less is never fenced, so that a
/// loop starved for a second on a loaded node does not kill its primary.
const MIN_LEASE_S: u64 = 2;

/// What one data member's fence needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence<'a> {
    /// How fence.sh tells a primary: `postgres` or `redis`.
    pub kind: &'static str,
    /// The ports closed to every TCP client while the lease has run out.
    pub ports: &'a [u16],
    /// The lease, seconds; also how late the loop may wake as primary.
    pub lease_s: u64,
    /// The name of the config holding [`SCRIPT`].
    pub config: &'a str,
}

impl Fence<'_> {
    /// The environment fence.sh reads.
    pub fn env(&self) -> Vec<String> {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        vec![
            format!("HASWARM_FENCE_KIND={}", self.kind),
            format!("HASWARM_FENCE_PORTS={}", ports.join(" ")),
            format!("HASWARM_FENCE_S={}", self.lease_s),
        ]
    }

    /// `command` run behind the fence.
    pub fn wrap(&self, command: Vec<String>) -> Vec<String> {
        let mut out = vec!["/bin/sh".to_owned(), PATH.to_owned()];
        out.extend(command);
        out
    }
}

/// The config that carries the script, for a kind's contents.
pub fn content() -> DesiredContent {
    DesiredContent {
        kind: ContentKind::Config,
        purpose: PURPOSE.to_owned(),
        data: SCRIPT.as_bytes().to_vec(),
    }
}

/// A Patroni member's lease: how long its leader key surely outlives the
/// freeze of a leader that renewed it a loop ago (`ttl - loop_wait`), less
/// `retry_timeout`, the time Patroni itself allows a failing renewal.
/// Frozen longer, another member may hold the key by the thaw.
pub fn patroni_lease_s(ttl: u32, loop_wait: u32, retry_timeout: u32) -> u64 {
    u64::from(ttl.saturating_sub(loop_wait).saturating_sub(retry_timeout)).max(MIN_LEASE_S)
}

/// A Redis instance's lease: the sentinels' down-after, rounded up. Frozen
/// longer, they may have failed it over by the thaw.
pub fn redis_lease_s(down_after_ms: u64) -> u64 {
    down_after_ms.div_ceil(1000).max(MIN_LEASE_S)
}

/// Asserts that the container `name` runs behind the fence with `env`
/// (every entry present), or, for `None`, that it runs unfenced.
#[cfg(test)]
pub fn assert_fenced(c: &bollard::models::TaskSpecContainerSpec, env: Option<&[&str]>, name: &str) {
    let command = c.command.clone().unwrap_or_default();
    let have = c.env.clone().unwrap_or_default();
    let caps = c.capability_add.clone().unwrap_or_default();
    let mounted = c.configs.clone().unwrap_or_default();
    let mounted = mounted
        .iter()
        .any(|m| m.file.as_ref().and_then(|f| f.name.as_deref()) == Some(PATH));
    match env {
        Some(want) => {
            assert_eq!(
                command.get(..2),
                Some(&["/bin/sh".to_owned(), PATH.to_owned()][..]),
                "{name}"
            );
            assert_eq!(caps, [CAPABILITY], "{name}");
            assert!(mounted, "{name}: no {PATH}");
            for w in want {
                assert!(have.iter().any(|e| e == w), "{name}: {w} not in {have:?}");
            }
        }
        None => {
            assert!(
                !command.iter().any(|a| a == PATH) && caps.is_empty() && !mounted,
                "{name}"
            );
            assert!(
                !have.iter().any(|e| e.starts_with("HASWARM_FENCE")),
                "{name}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_end_before_another_member_can_take_over() {
        // (ttl, loop_wait, retry_timeout) -> lease
        for (t, l, r, want) in [
            (30, 10, 10, 10),
            (20, 5, 5, 10),
            (10, 2, 3, 5),
            (10, 5, 5, MIN_LEASE_S),
            (5, 10, 10, MIN_LEASE_S),
        ] {
            assert_eq!(patroni_lease_s(t, l, r), want, "{t} {l} {r}");
        }
        for (ms, want) in [(3_000, 3), (3_001, 4), (100, MIN_LEASE_S), (30_000, 30)] {
            assert_eq!(redis_lease_s(ms), want, "{ms}");
        }
    }

    #[test]
    fn the_script_runs_the_member_behind_the_lease_it_is_told() {
        let f = Fence {
            kind: "postgres",
            ports: &[5432, 8008],
            lease_s: 7,
            config: "c",
        };
        assert_eq!(
            f.env(),
            [
                "HASWARM_FENCE_KIND=postgres",
                "HASWARM_FENCE_PORTS=5432 8008",
                "HASWARM_FENCE_S=7"
            ]
        );
        assert_eq!(
            f.wrap(vec!["/bin/sh".into(), "/x.sh".into()]),
            ["/bin/sh", PATH, "/bin/sh", "/x.sh"]
        );
        for var in [
            "HASWARM_FENCE_KIND",
            "HASWARM_FENCE_PORTS",
            "HASWARM_FENCE_S",
        ] {
            assert!(SCRIPT.contains(var), "{var}");
        }
        // Renewing must not fork: no external command in the loop.
        let lp = SCRIPT
            .split("while kill -0")
            .nth(1)
            .and_then(|s| s.split("\ndone").next())
            .expect("the renewal loop");
        for cmd in ["sleep", "nft ", "date", "$("] {
            assert!(!lp.replace("$(((", "").contains(cmd), "{cmd} in the loop");
        }
    }
}
