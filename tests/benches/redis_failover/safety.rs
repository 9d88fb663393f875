//! The bench's safety figures beside its speed: how often two instances
//! answered `ROLE` as master after a kill, and how many writes a replica
//! acknowledged (`WAIT 1`) are missing from the master at the end.

use std::collections::BTreeSet;
use std::process::Command;

use haswarm_testbed::bench::Client;

use crate::Group;

/// One look at every instance: its unix time and how many said master.
#[derive(Clone, Copy, Debug)]
pub struct Look {
    pub at: f64,
    pub masters: usize,
}

fn parse(line: &str) -> Option<Look> {
    let mut f = line.split_whitespace();
    (f.next()? == "roles").then_some(())?;
    Some(Look {
        at: f.next()?.parse().ok()?,
        masters: f.next()?.parse().ok()?,
    })
}

/// A container on the system's network that asks every instance `ROLE`,
/// all at once, every second (each answer bounded by 1 s), and prints how
/// many answered master. The password comes on standard input.
pub struct Roles(Client<Look>);

impl Roles {
    pub fn start(name: &str, g: &dyn Group) -> Self {
        let script = format!(
            "read -r pw; export REDISCLI_AUTH=\"$pw\"; \
             while :; do t=$(date +%s.%N); \
             n=$(for h in {}; do ( r=$(timeout 1 redis-cli --no-auth-warning --raw -h \"$h\" ROLE 2>/dev/null | head -n 1); \
             [ \"$r\" = master ] && echo m ) & done | grep -c m); \
             echo \"roles $t $n\"; sleep 1; done",
            g.instance_hosts().join(" ")
        );
        let mut cmd = Command::new("docker");
        cmd.args(["run", "--rm", "-i", "--name", name, "--network"])
            .arg(g.network())
            .args(["haswarm/redis:bookworm", "sh", "-c", &script]);
        Self(Client::start(name, cmd, &g.password(), parse))
    }

    /// Of the looks within the windows (unix times, start inclusive), how
    /// many found two or more masters, and how many there were.
    pub fn two_masters(&self, windows: &[(f64, f64)]) -> (usize, usize) {
        let looks: Vec<Look> = self
            .0
            .attempts()
            .into_iter()
            .filter(|l| windows.iter().any(|(a, b)| l.at >= *a && l.at < *b))
            .collect();
        (looks.iter().filter(|l| l.masters >= 2).count(), looks.len())
    }
}

/// The acknowledged writes (`WAIT 1`) missing from `keys`, the probe keys
/// the master holds.
pub fn lost(acked: &[u64], keys: &BTreeSet<u64>) -> usize {
    acked.iter().filter(|n| !keys.contains(n)).count()
}

/// The probe keys in `KEYS probe:*` output.
pub fn probe_keys(output: &str) -> BTreeSet<u64> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("probe:")?.parse().ok())
        .collect()
}
