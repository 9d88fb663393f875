//! The fault suite's shared fixtures: a PostgresCluster and a
//! RedisSentinelGroup spread one member per node, their pinned members,
//! where a task runs, the check that nothing their writers saw
//! acknowledged was lost, and random points of a flow to crash haswarmd at.

use std::time::Duration;

use crate::dind::Bed;
use crate::docker::eventually;
use crate::pg::{self, At, IMAGE};
use crate::{redis, Daemon};

/// A 3-instance cluster with 3 etcd members, one per node (spread Required),
/// in synchronous mode.
pub fn postgres(name: &str) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: PostgresCluster\nmetadata:\n  name: {name}\nspec:\n  instances: 3\n  postgres:\n    image: {IMAGE}\n  etcd:\n    image: {IMAGE}\n  router:\n    image: {IMAGE}\n  placement:\n    spread: Required\n  patroni:\n    ttl: 20\n    loopWait: 2\n    retryTimeout: 4\n    synchronousMode: On\n  storage:\n    reclaimPolicy: Delete\n"
    )
}

/// A 3-instance group with 3 sentinels, one per node (spread Required by
/// default).
pub fn redis_group(name: &str) -> String {
    format!(
        "apiVersion: haswarm.io/v1alpha1\nkind: RedisSentinelGroup\nmetadata:\n  name: {name}\nspec:\n  image: {}\n  instances: 3\n  sentinels:\n    downAfter: 3s\n    failoverTimeout: 10s\n  storage:\n    reclaimPolicy: Delete\n",
        redis::IMAGE
    )
}

/// Applies the cluster and the group and waits until both are Ready.
pub fn both_ready(d: &Daemon, (pgc, rsg): (&str, &str)) {
    d.apply("pgc.yaml", &postgres(pgc));
    d.apply("rsg.yaml", &redis_group(rsg));
    d.wait_for(&format!("pgc/{pgc}"), "condition=Ready", "480s");
    d.wait_for(&format!("rsg/{rsg}"), "condition=Ready", "300s");
}

/// The pinned members of both (not the routers: Swarm places those).
pub fn members((pgc, rsg): (&str, &str)) -> Vec<String> {
    (0..3)
        .flat_map(|i| {
            [
                format!("{pgc}-pg-{i}"),
                format!("{pgc}-etcd-{i}"),
                format!("{rsg}-redis-{i}"),
                format!("{rsg}-sentinel-{i}"),
            ]
        })
        .collect()
}

/// The nodes where a task of `service` runs and is meant to, as the
/// manager lists them (the node's host name); `None` when the manager lists
/// no task at all (it did not answer).
pub fn running_on(bed: &Bed, service: &str) -> Option<Vec<String>> {
    let out = bed.docker(&[
        "service",
        "ps",
        service,
        "--format",
        "{{.Node}} {{.DesiredState}} {{.CurrentState}}",
    ]);
    if out.trim().is_empty() {
        return None;
    }
    let on = out
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(1) == Some(&"Running") && f.get(2) == Some(&"Running")
        })
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    Some(on)
}

/// Stops both writers and checks that every commit they saw acknowledged
/// is on every instance, and every acknowledged Redis write on the master;
/// returns how many there were.
pub fn nothing_acknowledged_lost(
    d: &Daemon,
    at: At,
    (pgc, rsg): (&str, &str),
    (pg_writer, redis_writer): (&str, &str),
    password: &str,
) -> (usize, usize) {
    at.docker(&["kill", pg_writer]);
    at.docker(&["kill", redis_writer]);
    let commits = pg::acked(at, pg_writer);
    let leader = pg::leader(d, pgc);
    for i in 0..3 {
        let member = format!("{pgc}-pg-{i}");
        // The leader holds every acknowledged commit now. A replica that
        // was cut off, restarted or rebuilt streams what it missed once it
        // follows again (seen in CI: one still 320 rows behind 31 s after
        // its node's return), so it gets two minutes to.
        let limit = Duration::from_secs(if member == leader { 0 } else { 120 });
        let mut lost: Vec<u64> = Vec::new();
        eventually(limit, || {
            let rows = pg::rows_on(d, at, pgc, &member);
            lost = commits.difference(&rows).copied().collect();
            lost.is_empty()
        });
        assert!(
            lost.is_empty(),
            "{member} lacks acknowledged rows {lost:?} (leader {leader})"
        );
    }
    let writes = redis::acked(at, redis_writer);
    let master = d.redis_master(rsg);
    let (present, written) = redis::present(at, rsg, password, &master, &writes);
    if present != written as u64 {
        let gone = redis::missing(at, rsg, password, &master, &writes);
        panic!(
            "{} of {written} acknowledged writes lost, not on {master}: (number, unix time) {gone:?}",
            written as u64 - present
        );
    }
    (commits.len(), writes.len())
}

/// A random point of a flow to kill haswarmd at: one of `phases` (by
/// index) and a delay below `within` into it. Each run may pick another;
/// the choice is printed past the harness's capture, so a failing run
/// says where it struck.
pub fn kill_point(flow: &str, phases: &[&str], within: Duration) -> (usize, Duration) {
    let phase = fastrand::usize(..phases.len().max(1));
    let ms = u64::try_from(within.as_millis()).unwrap_or(u64::MAX);
    let delay = Duration::from_millis(fastrand::u64(..ms.max(1)));
    crate::figure!(
        "[figures] {flow}: haswarmd is killed {:.1} s into {}",
        delay.as_secs_f64(),
        phases.get(phase).copied().unwrap_or("the flow")
    );
    (phase, delay)
}
