//! Membership changes of the managed etcd cluster, one member at a time.
//!
//! Growing: the next member is added as a learner (`member add --learner`:
//! it gets the data but no vote, so the quorum does not change while it
//! starts), its service is created to join the members before it, and once
//! it runs it is promoted (etcd refuses until it has caught up: the step is
//! retried). Shrinking: the highest member is removed from the cluster
//! (`member remove`), then its service goes. Patroni lists only the voters,
//! so its settings change after a promotion or a removal, and the instances
//! restart for it one at a time as for any change. Each step is an
//! `etcdctl` one-shot job on the cluster's network, with the etcd image on
//! a node that runs a member (the image is there).

use haswarm_crds::postgres::{EtcdMembership, PostgresClusterSpec, PostgresClusterStatus};
use haswarm_crds::{EventType, PostgresCluster};

use super::render::{self, ETCD_CLIENT_PORT, ETCD_PEER_PORT};
use crate::runtime::controller::event;
use crate::runtime::{Context, ReconcileError};
use crate::store::Record;
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
}

/// The next change towards `desired` members: a learner is promoted before
/// anything else, or removed when it is no longer wanted (so one that never
/// starts can be taken back).
pub fn next_step(m: &EtcdMembership, desired: u8) -> Option<Step> {
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
        Step::Promote(_) => m.learner = None,
        Step::Remove(j) => {
            m.joined.remove(&j);
            m.members = j;
            if m.learner == Some(j) {
                m.learner = None;
            }
        }
    }
    m
}

/// The `etcdctl` script of a step, against the voters. Each is idempotent:
/// a member already added, promoted or removed is left as it is.
pub fn script(name: &str, m: &EtcdMembership, step: Step) -> String {
    let endpoints: Vec<String> = (0..usize::from(m.voters()))
        .map(|k| format!("http://{}:{ETCD_CLIENT_PORT}", render::etcd_name(name, k)))
        .collect();
    let j = match step {
        Step::Add(j) | Step::Promote(j) | Step::Remove(j) => usize::from(j),
    };
    let member = render::etcd_name(name, j);
    let url = format!("http://{member}:{ETCD_PEER_PORT}");
    let action = match step {
        Step::Add(_) => format!(
            "line || etcdctl --endpoints=\"$eps\" --command-timeout=10s member add {member} --peer-urls={url} --learner"
        ),
        Step::Promote(_) => "l=$(line); [ -n \"$l\" ]; case \"$l\" in *', true') etcdctl --endpoints=\"$eps\" --command-timeout=10s member promote \"${l%%,*}\";; esac".to_owned(),
        Step::Remove(_) => "l=$(line) || exit 0; etcdctl --endpoints=\"$eps\" --command-timeout=10s member remove \"${l%%,*}\"".to_owned(),
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
        Step::Add(_) | Step::Remove(_) => true,
    }
}

/// Takes the next membership step once the cluster is settled (`settled`),
/// recording it in `status`. Returns what is in progress.
pub async fn advance(
    ctx: &Context,
    obj: &Record,
    (owner, pgc): (&Owner, &PostgresCluster),
    status: &mut PostgresClusterStatus,
    desired: u8,
    (settled, health): (bool, &std::collections::BTreeMap<String, ServiceHealth>),
) -> Result<Option<String>, ReconcileError> {
    let name = pgc.metadata.name.as_str();
    let Some(m) = status.etcd_membership.clone() else {
        return Ok(None);
    };
    let Some(step) = next_step(&m, desired) else {
        return Ok(None);
    };
    let what = match step {
        Step::Add(j) => format!("adding etcd member {}", render::etcd_name(name, j.into())),
        Step::Promote(j) => format!(
            "giving etcd member {} its vote",
            render::etcd_name(name, j.into())
        ),
        Step::Remove(j) => format!("removing etcd member {}", render::etcd_name(name, j.into())),
    };
    if !settled || !ready_for(name, step, health) {
        return Ok(Some(format!("{what} waits for a settled cluster")));
    }
    // Where a member runs: the image is there.
    let mut node = None;
    for k in 0..usize::from(m.voters()) {
        let tasks = ctx.swarm.tasks(&render::etcd_name(name, k)).await?;
        node = tasks
            .iter()
            .find(|t| {
                t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING)
            })
            .and_then(|t| t.node_id.clone());
        if node.is_some() {
            break;
        }
    }
    let Some(node) = node else {
        return Ok(Some(format!("{what} waits for a running etcd member")));
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
    match ctx.swarm.run_job(owner, &job, STEP_LIMIT).await? {
        JobOutcome::Completed => {
            let next = after(&m, step);
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
            };
            event(ctx, obj, EventType::Normal, reason, &text);
            status.etcd_membership = Some(next);
            Ok(Some(what))
        }
        // A learner not caught up yet is refused its vote: try again.
        JobOutcome::Failed(why) if matches!(step, Step::Promote(_)) => {
            tracing::info!(why, "etcd learner not promoted yet");
            Ok(Some(format!("{what}: it is still catching up")))
        }
        JobOutcome::Failed(why) => {
            event(
                ctx,
                obj,
                EventType::Warning,
                "EtcdMembershipFailed",
                &format!("{what} failed ({why}); retrying"),
            );
            Ok(Some(format!("{what} failed; retrying")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_added_as_learners_promoted_then_removed_from_the_top() {
        let one = EtcdMembership::created(1);
        assert_eq!(next_step(&one, 1), None);
        assert_eq!(next_step(&one, 3), Some(Step::Add(1)));
        let learning = after(&one, Step::Add(1));
        assert_eq!(learning.members, 2);
        assert_eq!(learning.voters(), 1);
        assert_eq!(learning.joined.get(&1), Some(&1));
        // A learner is promoted first, or taken back when no longer wanted.
        assert_eq!(next_step(&learning, 3), Some(Step::Promote(1)));
        assert_eq!(next_step(&learning, 1), Some(Step::Remove(1)));
        let taken_back = after(&learning, Step::Remove(1));
        assert_eq!((taken_back.members, taken_back.learner), (1, None));
        assert!(taken_back.joined.is_empty());
        let two = after(&learning, Step::Promote(1));
        assert_eq!(two.voters(), 2);
        assert_eq!(next_step(&two, 3), Some(Step::Add(2)));
        let three = after(&after(&two, Step::Add(2)), Step::Promote(2));
        assert_eq!(next_step(&three, 3), None);
        assert_eq!(next_step(&three, 1), Some(Step::Remove(2)));
        let back = after(&three, Step::Remove(2));
        assert_eq!(back.members, 2);
        assert!(!back.joined.contains_key(&2));
        // Added again, it joins afresh in a new data directory.
        let again = after(&back, Step::Add(2));
        assert_eq!(again.joined.get(&2), Some(&3));
        // Never below one member.
        assert_eq!(next_step(&EtcdMembership::created(1), 0), None);
    }

    #[test]
    fn a_member_of_the_first_cluster_that_leaves_comes_back_joining() {
        let three = EtcdMembership::created(3);
        let one = after(&after(&three, Step::Remove(2)), Step::Remove(1));
        // The members left keep how they started.
        assert_eq!(one.initial, 3);
        let again = after(&one, Step::Add(1));
        assert_eq!(again.joined.get(&1), Some(&1));
    }

    #[test]
    fn steps_are_etcdctl_against_the_voters_and_idempotent() {
        let mut m = EtcdMembership::created(1);
        let add = script("db", &m, Step::Add(1));
        assert!(add.contains("eps=http://db-etcd-0:2379\n"), "{add}");
        assert!(add.contains("grep -F ', http://db-etcd-1:2380,'"), "{add}");
        assert!(add.contains("line || etcdctl"), "{add}");
        assert!(
            add.contains("member add db-etcd-1 --peer-urls=http://db-etcd-1:2380 --learner"),
            "{add}"
        );
        m = after(&m, Step::Add(1));
        // The learner is not asked: it answers no client.
        let promote = script("db", &m, Step::Promote(1));
        assert!(promote.contains("eps=http://db-etcd-0:2379\n"), "{promote}");
        assert!(promote.contains("member promote \"${l%%,*}\""), "{promote}");
        m = after(&m, Step::Promote(1));
        let remove = script("db", &m, Step::Remove(1));
        assert!(
            remove.contains("eps=http://db-etcd-0:2379,http://db-etcd-1:2379\n"),
            "{remove}"
        );
        assert!(remove.contains("l=$(line) || exit 0;"), "{remove}");
        assert!(remove.contains("member remove \"${l%%,*}\""), "{remove}");
    }
}
