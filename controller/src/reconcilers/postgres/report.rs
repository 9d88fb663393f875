//! PostgresCluster status from one look at the cluster: endpoints, members,
//! the leader, conditions, and the events they call for, as values. Pure.

use haswarm_crds::postgres::{MemberRole, PostgresClusterStatus, PostgresMember, SynchronousMode};
use haswarm_crds::{EventType, PostgresCluster, PostgresClusterSpec};

use super::observe::ClusterView;
use super::reconcile::MAX_LAG_BYTES;
use super::render;
use crate::reconcilers::outline::Outcome;
use crate::reconcilers::status::{self, Notice};
use crate::swarm::NodeInfo;

/// What a pass saw and left, as the status reports it.
#[derive(Debug)]
pub struct Look<'a> {
    /// The cluster.
    pub pgc: &'a PostgresCluster,
    /// The status before the pass.
    pub old: &'a PostgresClusterStatus,
    /// Patroni's view, when it answered.
    pub view: Option<&'a ClusterView>,
    /// The view's members, each with the node its running task is on.
    pub members: Vec<PostgresMember>,
    /// The swarm's nodes.
    pub nodes: &'a [NodeInfo],
    /// What the pass left: slot labels no node could take, why changes
    /// remain, and the rollout's health check.
    pub outcome: &'a Outcome,
    /// The spec's generation this pass acted on.
    pub generation: Option<u64>,
}

/// Writes what `look` says into `status` and returns the events it calls for.
pub fn report(look: &Look<'_>, status: &mut PostgresClusterStatus) -> Vec<Notice> {
    let name = look.pgc.metadata.name.as_str();
    status::progressing(
        &mut status.common,
        look.outcome.holding.as_ref(),
        look.generation,
    );
    if look.pgc.spec.router.replicas > 0 {
        status.read_write_endpoint = Some(format!("{}:{}", render::rw_name(name), render::PG_PORT));
        status.read_only_endpoint = Some(format!("{}:{}", render::ro_name(name), render::PG_PORT));
    } else {
        status.read_write_endpoint = None;
        status.read_only_endpoint = None;
    }
    let restored = restore_progress(look, status);
    let Some(view) = look.view else {
        // The last leader seen stays (with PrimaryAvailable Unknown): the
        // next answer tells whether it moved.
        status.members.clear();
        status::no_answer(
            &mut status.common,
            (&["PrimaryAvailable", "ReplicasInSync"], "NoAnswer"),
            "Patroni does not answer yet (haswarm asks it on the node of the engine it talks to)",
            &look.outcome.unassigned,
            look.generation,
        );
        return Vec::new();
    };
    status.members.clone_from(&look.members);
    let (now, mut notices) = leader(look, view, status);
    replicas(look, view, now.as_deref(), status);
    notices.extend(restored);
    notices
}

/// The condition a cluster restored from backups (`spec.bootstrap.recovery`)
/// carries: `Restored` False while its first instance bootstraps from them,
/// True once a leader runs (and from then on: the recovery is done once).
fn restore_progress(look: &Look<'_>, status: &mut PostgresClusterStatus) -> Option<Notice> {
    let r = look.pgc.spec.bootstrap.recovery.as_ref()?;
    let done = status
        .common
        .condition(RESTORED)
        .is_some_and(|c| c.status == haswarm_crds::meta::ConditionStatus::True);
    if done {
        return None;
    }
    let target = match (&r.target_time, &r.target_lsn, &r.target_name) {
        (Some(t), _, _) => format!("time {}", t.to_rfc3339()),
        (_, Some(lsn), _) => format!("WAL position {lsn}"),
        (_, _, Some(n)) => format!("restore point {n:?}"),
        _ => "the end of its archived WAL".to_owned(),
    };
    let what = format!(
        "from {}'s backups in repository {}, to {target}",
        r.source, r.repository
    );
    if let Some((reason, message)) = restore_look(look, r, status) {
        status::set(
            &mut status.common,
            RESTORED,
            Some(false),
            reason,
            format!("not restoring {what}: {message}"),
            look.generation,
        );
        return None;
    }
    if look.view.and_then(ClusterView::running_leader).is_some() {
        let message = format!("restored {what}");
        status::set(
            &mut status.common,
            RESTORED,
            Some(true),
            "Restored",
            message.clone(),
            look.generation,
        );
        return Some(Notice::new(EventType::Normal, "Restored", message));
    }
    status::set(
        &mut status.common,
        RESTORED,
        Some(false),
        "Restoring",
        format!("restoring {what}: the first instance bootstraps from them (its log has pgBackRest's progress and errors)"),
        look.generation,
    );
    None
}

/// While a restore's instances wait for the look into its repository
/// (`backup::restore`): the condition's reason and why.
fn restore_look(
    look: &Look<'_>,
    r: &haswarm_crds::postgres::Recovery,
    status: &PostgresClusterStatus,
) -> Option<(&'static str, String)> {
    use haswarm_crds::postgres::RestoreVerdict;
    let members = look.view.is_some_and(|v| !v.members.is_empty());
    if !crate::reconcilers::postgres::backup::restore::holds_instances(look.pgc, status, members) {
        return None;
    }
    let key = crate::reconcilers::postgres::backup::restore::key(r);
    match status.backup.restore_check.as_ref().filter(|c| c.recovery == key) {
        Some(c) if c.verdict == RestoreVerdict::Impossible => Some((
            "RestoreRefused",
            format!("{} (no instance is created until spec.bootstrap.recovery is edited)", c.message),
        )),
        Some(c) if c.verdict == RestoreVerdict::Unknown => Some((
            "RepositoryUnreachable",
            format!("{} (looked at again every 30 s)", c.message),
        )),
        _ => Some((
            "Verifying",
            "looking into the repository first: the instances start once it holds what the target needs".to_owned(),
        )),
    }
}

/// The condition of a restore ([`restore_progress`]).
pub const RESTORED: &str = "Restored";

/// The leader, and `PrimaryAvailable`. Patroni's word is its members' keys
/// in etcd, which outlive a lost node by up to the ttl: a leader whose
/// container does not run on a node that answers is not reported as one.
/// Returns the leader that answers.
fn leader(
    look: &Look<'_>,
    view: &ClusterView,
    status: &mut PostgresClusterStatus,
) -> (Option<String>, Vec<Notice>) {
    let (old, ttl) = (look.old, look.pgc.spec.patroni.ttl);
    let unreachable = view.running_leader().and_then(|l| {
        let m = status.members.iter().find(|m| m.name == l)?;
        let answers = m
            .node
            .as_ref()
            .is_some_and(|h| look.nodes.iter().any(|n| &n.hostname == h && n.ready));
        (!answers).then(|| (l.to_owned(), m.node.clone()))
    });
    let now = view
        .running_leader()
        .filter(|_| unreachable.is_none())
        .map(str::to_owned);
    let mut notices = Vec::new();
    let before = old.leader.as_ref().or(old.unreachable_leader.as_ref());
    if let (Some(before), Some(now)) = (before, &now) {
        if before != now {
            notices.push(Notice::new(
                EventType::Warning,
                "LeaderChanged",
                format!("leader moved from {before} to {now}"),
            ));
        }
    }
    if now.is_some() || old.leader.is_none() || unreachable.is_some() {
        status.leader.clone_from(&now);
    }
    if now.is_some() {
        status.unreachable_leader = None;
    } else if let Some((l, _)) = &unreachable {
        if old.unreachable_leader.as_ref() != Some(l) {
            notices.push(Notice::new(
                EventType::Warning,
                "LeaderUnreachable",
                format!("leader {l} does not answer: its node is down or its container gone; Patroni hands its key over once the ttl ({ttl}s) runs out"),
            ));
        }
        status.unreachable_leader = Some(l.clone());
    }
    let (reason, message) = match (&now, &unreachable) {
        (Some(l), _) => ("LeaderRunning", format!("leader {l}")),
        (None, Some((l, node))) => (
            "LeaderUnreachable",
            format!(
                "leader {l} {}: Patroni hands its key over once the ttl ({ttl}s) runs out",
                node.as_ref().map_or_else(
                    || "has no running container".to_owned(),
                    |n| format!("runs on node {n}, which does not answer")
                ),
            ),
        ),
        (None, None) => (
            "NoLeader",
            "no member holds the leader key and runs".to_owned(),
        ),
    };
    status::set(
        &mut status.common,
        "PrimaryAvailable",
        Some(now.is_some()),
        reason,
        message,
        look.generation,
    );
    (now, notices)
}

/// `ReplicasInSync` and `Ready`, given the leader that answers (`now`).
fn replicas(
    look: &Look<'_>,
    view: &ClusterView,
    now: Option<&str>,
    status: &mut PostgresClusterStatus,
) {
    let spec = &look.pgc.spec;
    let expected = usize::from(spec.instances.saturating_sub(1));
    let leader_timeline = view
        .members
        .iter()
        .find(|m| Some(m.name.as_str()) == now)
        .and_then(|m| m.timeline);
    // A replica on another timeline than the leader's may read as streaming
    // with no lag while it never catches up (see `diverged`): not in sync.
    let in_sync = view
        .members
        .iter()
        .filter(|m| Some(m.name.as_str()) != now)
        .filter(|m| matches!(m.state.as_str(), "streaming" | "running"))
        .filter(|m| m.lag_bytes.is_some_and(|l| l <= MAX_LAG_BYTES))
        .filter(|m| m.timeline.zip(leader_timeline).is_none_or(|(t, l)| t == l))
        .count();
    // Synchronous mode promises that no acknowledged commit is lost: only
    // once a standby confirms commits (Patroni picks one a loop after the
    // mode is switched on).
    let standby_missing = synchronous_standby_missing(spec, view);
    let replicas_ok = in_sync >= expected && !standby_missing;
    status::replicas_in_sync(
        &mut status.common,
        replicas_ok,
        format!(
            "{in_sync} of {expected} replicas streaming and in sync{}",
            if standby_missing {
                ", no synchronous standby yet"
            } else {
                ""
            }
        ),
        look.generation,
    );
    status::ready(
        &mut status.common,
        now.is_some() && replicas_ok,
        &look.outcome.group,
        look.outcome.holding.as_ref(),
        format!(
            "leader {}, {in_sync}/{expected} replicas in sync",
            now.unwrap_or("unknown")
        ),
        look.generation,
    );
}

/// `QuorumHealthy` of the managed etcd: whether the members on nodes that
/// answer keep a quorum, or why not (then no etcd member moves).
pub fn etcd_quorum(
    common: &mut haswarm_crds::meta::CommonStatus,
    quorum: Result<(), String>,
    generation: Option<u64>,
) {
    let (ok, reason, why) = match quorum {
        Ok(()) => (
            true,
            "EtcdQuorum",
            "the etcd members on nodes that answer keep a quorum".to_owned(),
        ),
        Err(why) => (false, "EtcdQuorumLost", why),
    };
    status::set(common, "QuorumHealthy", Some(ok), reason, why, generation);
}

/// Whether synchronous replication is asked for and no standby confirms
/// commits yet.
fn synchronous_standby_missing(spec: &PostgresClusterSpec, view: &ClusterView) -> bool {
    spec.patroni.synchronous_mode != SynchronousMode::Off
        && spec.instances >= 2
        && !view
            .members
            .iter()
            .any(|m| m.role == MemberRole::SyncStandby)
}

#[cfg(test)]
mod tests;
