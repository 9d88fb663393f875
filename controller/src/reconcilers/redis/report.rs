//! RedisSentinelGroup status from one look at the group: master, replicas,
//! sentinels, conditions, and the events they call for, as values. Pure.

use haswarm_crds::redis::{RedisReplicaStatus, RedisSentinelGroupStatus};
use haswarm_crds::{EventType, RedisSentinelGroup};

use super::observe::{self, SentinelView};
use super::render;
use crate::reconcilers::outline::Outcome;
use crate::reconcilers::status::{self, Notice};

/// A replica more than this many bytes behind counts as out of sync.
pub const MAX_LAG_BYTES: u64 = 1 << 20;

/// What a pass saw and left, as the status reports it.
#[derive(Debug)]
pub struct Look<'a> {
    /// The group.
    pub rsg: &'a RedisSentinelGroup,
    /// The status before the pass.
    pub old: &'a RedisSentinelGroupStatus,
    /// The sentinels' views, the current truth first (see `observe`).
    pub views: &'a [(String, SentinelView)],
    /// What the pass left: slot labels no node could take, why changes
    /// remain, and the rollout's health check.
    pub outcome: &'a Outcome,
    /// The spec's generation this pass acted on.
    pub generation: Option<u64>,
}

/// Writes what `look` says into `status` (conditions, master, replicas,
/// sentinels seen) and returns the events it calls for.
pub fn report(look: &Look<'_>, status: &mut RedisSentinelGroupStatus) -> Vec<Notice> {
    status::progressing(
        &mut status.common,
        look.outcome.holding.as_ref(),
        look.generation,
    );
    match look.views.first() {
        None => {
            no_sentinel_answers(look, status);
            Vec::new()
        }
        Some((_, view)) => from_view(look, view, status),
    }
}

/// No sentinel answers: nothing is known of the data plane.
fn no_sentinel_answers(look: &Look<'_>, status: &mut RedisSentinelGroupStatus) {
    status.master = None;
    status.replicas.clear();
    status.sentinels_seen = None;
    status::no_answer(
        &mut status.common,
        (
            &["MasterAvailable", "QuorumHealthy", "ReplicasInSync"],
            "NoSentinelAnswer",
        ),
        "no sentinel answers yet (haswarm asks them through a member of the group on the node of the engine it talks to)",
        &look.outcome.unassigned,
        look.generation,
    );
}

/// The status from the view that is the current truth.
fn from_view(
    look: &Look<'_>,
    view: &SentinelView,
    status: &mut RedisSentinelGroupStatus,
) -> Vec<Notice> {
    let (rsg, generation) = (look.rsg, look.generation);
    let master = view.master.clone();
    let reported = observe::reported_master(
        (
            look.old.master.as_deref(),
            look.old.unreachable_master.as_deref(),
        ),
        master.as_deref(),
        view.master_up(),
    );
    let mut notices = Vec::new();
    if let Some((from, to)) = &reported.changed {
        notices.push(Notice::new(
            EventType::Warning,
            "MasterChanged",
            format!("master moved from {from} to {to}"),
        ));
    }
    if let Some(m) = &reported.went_unreachable {
        notices.push(Notice::new(
            EventType::Warning,
            "MasterUnreachable",
            format!(
                "master {m} does not answer ({}): the sentinels fail over once it has been down for {} ms",
                view.master_flags,
                rsg.spec.sentinels.down_after.as_millis()
            ),
        ));
    }
    status.master = reported.master;
    status.unreachable_master = reported.unreachable;
    let seen = u8::try_from(view.other_sentinels + 1).unwrap_or(u8::MAX);
    status.sentinels_seen = Some(seen);
    status.replicas = replica_status(rsg, view);
    let master_ok = view.master_up();
    status::set(
        &mut status.common,
        "MasterAvailable",
        Some(master_ok),
        if master_ok { "MasterUp" } else { "MasterDown" },
        format!(
            "master {} ({})",
            master.as_deref().unwrap_or("?"),
            view.master_flags
        ),
        generation,
    );
    let quorum_ok = quorum(look, seen, status);
    let expected = usize::from(rsg.spec.instances.saturating_sub(1));
    let in_sync = status
        .replicas
        .iter()
        .filter(|r| r.link_up && r.lag_bytes.is_none_or(|l| l <= MAX_LAG_BYTES))
        .count();
    let replicas_ok = in_sync >= expected;
    status::replicas_in_sync(
        &mut status.common,
        replicas_ok,
        format!("{in_sync} of {expected} replicas linked and in sync"),
        generation,
    );
    status::ready(
        &mut status.common,
        master_ok && quorum_ok && replicas_ok,
        &look.outcome.group,
        look.outcome.holding.as_ref(),
        format!(
            "master {}, {in_sync}/{expected} replicas in sync, {seen}/{} sentinels",
            master.as_deref().unwrap_or("unknown"),
            rsg.spec.sentinels.count
        ),
        generation,
    );
    notices
}

/// `QuorumHealthy`: enough sentinels know each other to agree on a
/// failover, and none is in TILT mode. Returns whether it holds.
fn quorum(look: &Look<'_>, seen: u8, status: &mut RedisSentinelGroupStatus) -> bool {
    let sentinels = look.rsg.spec.sentinels.count;
    let quorum = look.rsg.spec.quorum();
    let tilted: Vec<&str> = look
        .views
        .iter()
        .filter(|(_, v)| v.tilt)
        .map(|(s, _)| s.as_str())
        .collect();
    let quorum_ok = seen >= quorum && seen * 2 > sentinels && tilted.is_empty();
    let (reason, message) = if !tilted.is_empty() {
        tracing::warn!(?tilted, "sentinels in TILT mode");
        (
            "SentinelTilt",
            format!(
                "{} in TILT mode: its event loop stalled (slow DNS answers for names of stopped tasks, a starved CPU or a clock jump), so for 30 s it neither votes nor fails over",
                tilted.join(", ")
            ),
        )
    } else if quorum_ok {
        (
            "QuorumReached",
            format!("{seen} of {sentinels} sentinels known, quorum {quorum}"),
        )
    } else {
        (
            "TooFewSentinels",
            format!("{seen} of {sentinels} sentinels known, quorum {quorum}"),
        )
    };
    status::set(
        &mut status.common,
        "QuorumHealthy",
        Some(quorum_ok),
        reason,
        message,
        look.generation,
    );
    quorum_ok
}

/// Every data instance but the master, as the master reports it now (a
/// Sentinel's replica table lags by up to 10 s, and is empty for a moment
/// after a reset): an instance the master does not list is not linked.
pub fn replica_status(rsg: &RedisSentinelGroup, view: &SentinelView) -> Vec<RedisReplicaStatus> {
    let name = rsg.metadata.name.as_str();
    (0..usize::from(rsg.spec.instances))
        .map(|i| render::instance_name(name, i))
        .filter(|n| Some(n.as_str()) != view.master.as_deref())
        .map(|n| {
            let connected = view.connected.iter().find(|r| r.host == n);
            RedisReplicaStatus {
                link_up: connected.is_some_and(|r| r.state == "online"),
                lag_bytes: connected
                    .zip(view.master_offset)
                    .map(|(r, m)| m.saturating_sub(r.offset)),
                name: n,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
