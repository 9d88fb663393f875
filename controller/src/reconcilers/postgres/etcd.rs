//! Membership changes of the managed etcd cluster, one member at a time.
//!
//! Growing: the next member is added as a learner (`member add --learner`:
//! it gets the data but no vote, so the quorum does not change while it
//! starts), its service is created to join the members before it, and once
//! it runs it is promoted (etcd refuses until it has caught up: the step is
//! retried). Shrinking: the highest member is removed from the cluster
//! (`member remove`), then its service goes. Patroni lists only the voters,
//! so its settings change after a promotion or a removal, and the instances
//! restart for it one at a time as for any change. Replacing: a member
//! whose slot moved off a lost node is a new member there (its data
//! directory is empty): the old one is removed from the cluster and the new
//! one added as a learner (one job), its service starts only then, and it
//! is promoted once it runs; Patroni's list does not change. A slot moves
//! only while the members on nodes that answer keep a quorum, one at a
//! time. Each step is an `etcdctl` one-shot job on the cluster's network,
//! with the etcd image on a node that runs a member (the image is there).

use haswarm_crds::postgres::{EtcdMembership, PostgresClusterSpec, PostgresClusterStatus};
use haswarm_crds::{EventType, PostgresCluster};

use super::render::{self, ETCD_CLIENT_PORT, ETCD_PEER_PORT};
use crate::reconcilers::status::Notice;
use crate::reconcilers::wait::{Flow, Wait};
use crate::runtime::{Context, ReconcileError};
use crate::swarm::jobs::{JobOutcome, NodeJob};
use crate::swarm::{Owner, ServiceHealth};

/// How long one step's job may take.
const STEP_LIMIT: std::time::Duration = std::time::Duration::from_secs(90);

/// The managed etcd cluster's membership as recorded, or as created (a
/// cluster from before membership was recorded has `etcdMembers` members,
/// all from its creation); `None` with external etcd.
pub fn membership(
    spec: &PostgresClusterSpec,
    status: &PostgresClusterStatus,
) -> Option<EtcdMembership> {
    if !spec.etcd.endpoints.is_empty() {
        return None;
    }
    Some(status.etcd_membership.clone().unwrap_or_else(|| {
        EtcdMembership::created(status.etcd_members.unwrap_or(spec.etcd.members))
    }))
}

/// One membership change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Add member `j` as a learner.
    Add(u8),
    /// Give learner `j` its vote.
    Promote(u8),
    /// Remove member `j` (the highest).
    Remove(u8),
    /// Remove member `j`'s old incarnation and add incarnation `n` (on its
    /// slot's new node) as a learner.
    Replace(u8, u32),
}

/// The members whose slot names a newer incarnation than the one in the
/// cluster (`slot(j)`): each must be replaced.
pub fn moved(m: &EtcdMembership, slot: impl Fn(u8) -> u32) -> Vec<(u8, u32)> {
    (0..m.members)
        .filter(|j| slot(*j) > m.incarnation(*j))
        .map(|j| (j, slot(j)))
        .collect()
}

/// The next change towards `desired` members: a member whose slot moved is
/// replaced first (its new incarnation waits for it, and it may be the
/// learner itself), a learner is promoted, or removed when it is no longer
/// wanted (so one that never starts can be taken back).
pub fn next_step(m: &EtcdMembership, desired: u8, slot: impl Fn(u8) -> u32) -> Option<Step> {
    if let Some((j, n)) = moved(m, slot).first() {
        return Some(Step::Replace(*j, *n));
    }
    if let Some(j) = m.learner {
        return Some(if desired > j {
            Step::Promote(j)
        } else {
            Step::Remove(j)
        });
    }
    match desired.cmp(&m.members) {
        std::cmp::Ordering::Greater => Some(Step::Add(m.members)),
        std::cmp::Ordering::Less if m.members > 1 => Some(Step::Remove(m.members - 1)),
        _ => None,
    }
}

/// The membership once `step` is done.
pub fn after(m: &EtcdMembership, step: Step) -> EtcdMembership {
    let mut m = m.clone();
    match step {
        Step::Add(j) => {
            m.joins += 1;
            m.joined.insert(j, m.joins);
            m.learner = Some(j);
            m.members = j + 1;
        }
        Step::Promote(j) => {
            m.learner = None;
            if m.replacing == Some(j) {
                m.replacing = None;
            }
        }
        Step::Remove(j) => {
            m.joined.remove(&j);
            m.listed.remove(&j);
            m.incarnations.remove(&j);
            m.members = j;
            if m.learner == Some(j) {
                m.learner = None;
            }
            if m.replacing == Some(j) {
                m.replacing = None;
            }
        }
        Step::Replace(j, n) => {
            m.joins += 1;
            m.joined.insert(j, m.joins);
            m.listed.insert(j, m.members);
            m.incarnations.insert(j, n);
            m.learner = Some(j);
            m.replacing = Some(j);
        }
    }
    m
}

/// Which etcd slots on lost nodes stay where they are (`on_lost`: the
/// members there), and whether the members elsewhere keep a quorum
/// (`Err` says why not). A slot moves only while they do, since replacing
/// its member is a membership change, which needs one; and one at a time,
/// with no other membership change under way. Pure.
pub fn stays(
    name: &str,
    m: &EtcdMembership,
    on_lost: &[u8],
    busy: bool,
) -> (Vec<u8>, Result<(), String>) {
    let voters: Vec<u8> = (0..m.members).filter(|j| m.learner != Some(*j)).collect();
    let lost_voters = voters.iter().filter(|j| on_lost.contains(j)).count();
    let live = voters.len() - lost_voters;
    let quorum = voters.len() / 2 + 1;
    if live < quorum {
        let names: Vec<String> = on_lost
            .iter()
            .map(|j| render::etcd_name(name, usize::from(*j)))
            .collect();
        return (
            on_lost.to_vec(),
            Err(format!(
                "{lost_voters} of {} etcd members are on lost nodes ({}): the others have no quorum, so none is replaced; bring a node back",
                voters.len(),
                names.join(", ")
            )),
        );
    }
    let stay = if busy {
        on_lost.to_vec()
    } else {
        on_lost.iter().skip(1).copied().collect()
    };
    (stay, Ok(()))
}

/// The `etcdctl` script of a step, against the voters (but a member
/// being replaced, which is gone). Each is idempotent: a member already
/// added, promoted or removed is left as it is; a replacement run again
/// takes back the learner it added, which has not started yet.
pub fn script(name: &str, m: &EtcdMembership, step: Step) -> String {
    let j = match step {
        Step::Add(j) | Step::Promote(j) | Step::Remove(j) | Step::Replace(j, _) => usize::from(j),
    };
    let endpoints: Vec<String> = (0..m.members)
        .filter(|k| m.learner != Some(*k))
        .filter(|k| !matches!(step, Step::Replace(..)) || usize::from(*k) != j)
        .map(|k| {
            format!(
                "http://{}:{ETCD_CLIENT_PORT}",
                render::etcd_name(name, usize::from(k))
            )
        })
        .collect();
    let member = render::etcd_name(name, j);
    let url = format!("http://{member}:{ETCD_PEER_PORT}");
    let action = match step {
        Step::Add(_) => format!(
            "line || etcdctl --endpoints=\"$eps\" --command-timeout=10s member add {member} --peer-urls={url} --learner"
        ),
        Step::Promote(_) => "l=$(line); [ -n \"$l\" ]; case \"$l\" in *', true') etcdctl --endpoints=\"$eps\" --command-timeout=10s member promote \"${l%%,*}\";; esac".to_owned(),
        Step::Remove(_) => "l=$(line) || exit 0; etcdctl --endpoints=\"$eps\" --command-timeout=10s member remove \"${l%%,*}\"".to_owned(),
        Step::Replace(..) => format!(
            "if l=$(line); then etcdctl --endpoints=\"$eps\" --command-timeout=10s member remove \"${{l%%,*}}\"; fi\netcdctl --endpoints=\"$eps\" --command-timeout=10s member add {member} --peer-urls={url} --learner"
        ),
    };
    format!(
        "set -e\nexport ETCDCTL_API=3\neps={eps}\n# The member's line in the member list (its peer URL is unique).\nline() {{ etcdctl --endpoints=\"$eps\" --command-timeout=10s member list | grep -F ', {url},'; }}\n{action}\n",
        eps = endpoints.join(","),
    )
}

/// Whether a step may run now: a learner is promoted once its service runs.
fn ready_for(
    name: &str,
    step: Step,
    health: &std::collections::BTreeMap<String, ServiceHealth>,
) -> bool {
    match step {
        Step::Promote(j) => health
            .get(&render::etcd_name(name, usize::from(j)))
            .is_some_and(ServiceHealth::is_running),
        Step::Add(_) | Step::Remove(_) | Step::Replace(..) => true,
    }
}

/// What a membership step is, for people.
fn describe(name: &str, step: Step) -> String {
    let member = |j: u8| render::etcd_name(name, j.into());
    match step {
        Step::Add(j) => format!("adding etcd member {}", member(j)),
        Step::Promote(j) => format!("giving etcd member {} its vote", member(j)),
        Step::Remove(j) => format!("removing etcd member {}", member(j)),
        Step::Replace(j, n) => format!(
            "replacing etcd member {} (its slot moved off a lost node: incarnation {n})",
            member(j)
        ),
    }
}

/// What a pass does about etcd's membership: the pure choice [`decide`]
/// makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The membership is what the spec asks.
    Idle,
    /// A step is due but waits (why).
    Wait(String),
    /// Run `step` now (`what`: its description).
    Run {
        /// The step.
        step: Step,
        /// What it does, for people.
        what: String,
    },
}

/// The next membership step towards `desired` members ([`next_step`]),
/// and whether it may run: only in a settled cluster, but for a
/// replacement, which restores what a lost node took and so waits for no
/// healthy cluster (the cluster is short of that member), only a quorum;
/// and a learner is promoted once its service runs. Pure.
pub fn decide(
    name: &str,
    m: &EtcdMembership,
    (desired, slot): (u8, impl Fn(u8) -> u32),
    (settled, health): (bool, &std::collections::BTreeMap<String, ServiceHealth>),
) -> Decision {
    let Some(step) = next_step(m, desired, slot) else {
        return Decision::Idle;
    };
    let what = describe(name, step);
    let replacing = matches!(step, Step::Replace(..)) || m.replacing.is_some();
    if !(settled || replacing) || !ready_for(name, step, health) {
        return Decision::Wait(format!("{what} waits for a settled cluster"));
    }
    Decision::Run { step, what }
}

/// What a step's job ended in: the membership to record (`None`: as it
/// was), the event, and what is in progress. A learner not caught up yet
/// is refused its vote, which is no failure: the step runs again. Pure.
pub fn outcome(
    m: &EtcdMembership,
    (step, what): (Step, &str),
    job: &JobOutcome,
) -> (Option<EtcdMembership>, Option<Notice>, String) {
    match job {
        JobOutcome::Completed => {
            let next = after(m, step);
            let (reason, text) = match step {
                Step::Add(_) => (
                    "EtcdMemberAdded",
                    format!("{what}: added as a learner, it votes once it has caught up"),
                ),
                Step::Promote(_) => (
                    "EtcdMemberPromoted",
                    format!("{what}: done, {} voting members", next.voters()),
                ),
                Step::Remove(_) => (
                    "EtcdMemberRemoved",
                    format!("{what}: done, {} voting members", next.voters()),
                ),
                Step::Replace(..) => (
                    "EtcdMemberReplaced",
                    format!("{what}: the old member is out of the cluster and the new one joins as a learner; it votes once it has caught up"),
                ),
            };
            let notice = Notice::new(EventType::Normal, reason, text);
            (Some(next), Some(notice), what.to_owned())
        }
        JobOutcome::Failed(_) if matches!(step, Step::Promote(_)) => {
            (None, None, format!("{what}: it is still catching up"))
        }
        JobOutcome::Failed(why) => (
            None,
            Some(Notice::new(
                EventType::Warning,
                "EtcdMembershipFailed",
                format!("{what} failed ({why}); retrying"),
            )),
            format!("{what} failed; retrying"),
        ),
    }
}

/// A node that answers and runs a member: the step's job runs there, where
/// the image is.
async fn member_node(
    ctx: &Context,
    name: &str,
    m: &EtcdMembership,
) -> Result<Option<String>, ReconcileError> {
    let nodes = ctx.swarm.nodes().await?;
    for k in 0..usize::from(m.members) {
        let tasks = ctx.swarm.tasks(&render::etcd_name(name, k)).await?;
        let node = tasks
            .iter()
            .find(|t| {
                t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING)
                    && t.node_id
                        .as_deref()
                        .is_some_and(|id| nodes.iter().any(|n| n.id == id && n.ready))
            })
            .and_then(|t| t.node_id.clone());
        if node.is_some() {
            return Ok(node);
        }
    }
    Ok(None)
}

/// Takes the step [`decide`] chooses, recording its [`outcome`] in
/// `status` and its event in `notices`. Returns what is in progress.
pub async fn advance(
    ctx: &Context,
    (owner, pgc): (&Owner, &PostgresCluster),
    status: &mut PostgresClusterStatus,
    (desired, incarnations): (u8, &std::collections::BTreeMap<String, u32>),
    (settled, health): (bool, &std::collections::BTreeMap<String, ServiceHealth>),
    notices: &mut Vec<Notice>,
) -> Result<Option<Wait>, ReconcileError> {
    let name = pgc.metadata.name.as_str();
    let Some(m) = status.etcd_membership.clone() else {
        return Ok(None);
    };
    let slot = |j: u8| {
        incarnations
            .get(&render::etcd_slot(name, j.into()))
            .copied()
            .unwrap_or(0)
    };
    let (step, what) = match decide(name, &m, (desired, slot), (settled, health)) {
        Decision::Idle => return Ok(None),
        Decision::Wait(why) => return Ok(Some(changing(why))),
        Decision::Run { step, what } => (step, what),
    };
    let Some(node) = member_node(ctx, name, &m).await? else {
        return Ok(Some(changing(format!(
            "{what} waits for a running etcd member"
        ))));
    };
    let job = NodeJob {
        name: format!("{name}-etcd-membership"),
        node,
        image: pgc.spec.etcd.image.clone(),
        script: script(name, &m, step),
        mounts: Vec::new(),
        secrets: Vec::new(),
        networks: vec![bollard::models::NetworkAttachmentConfig {
            target: Some(render::network_name(name)),
            ..Default::default()
        }],
    };
    let done = ctx.swarm.run_job(owner, &job, STEP_LIMIT).await?;
    if let JobOutcome::Failed(why) = &done {
        tracing::info!(why, ?step, "etcd membership step did not take");
    }
    let (next, notice, in_progress) = outcome(&m, (step, &what), &done);
    if let Some(next) = next {
        status.etcd_membership = Some(next);
    }
    notices.extend(notice);
    Ok(Some(changing(in_progress)))
}

/// A wait of the membership's flow.
fn changing(why: String) -> Wait {
    Wait::new(Flow::EtcdMembership, why)
}

#[cfg(test)]
mod tests;
