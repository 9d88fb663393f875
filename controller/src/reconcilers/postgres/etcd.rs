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

/// Takes the next membership step once the cluster is settled (`settled`),
/// recording it in `status`. Returns what is in progress.
pub async fn advance(
    ctx: &Context,
    obj: &Record,
    (owner, pgc): (&Owner, &PostgresCluster),
    status: &mut PostgresClusterStatus,
    (desired, incarnations): (u8, &std::collections::BTreeMap<String, u32>),
    (settled, health): (bool, &std::collections::BTreeMap<String, ServiceHealth>),
) -> Result<Option<String>, ReconcileError> {
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
    let Some(step) = next_step(&m, desired, slot) else {
        return Ok(None);
    };
    let what = match step {
        Step::Add(j) => format!("adding etcd member {}", render::etcd_name(name, j.into())),
        Step::Promote(j) => format!(
            "giving etcd member {} its vote",
            render::etcd_name(name, j.into())
        ),
        Step::Remove(j) => format!("removing etcd member {}", render::etcd_name(name, j.into())),
        Step::Replace(j, n) => format!(
            "replacing etcd member {} (its slot moved off a lost node: incarnation {n})",
            render::etcd_name(name, j.into())
        ),
    };
    // A replacement restores what a lost node took: it waits for no healthy
    // cluster (the cluster is short of that member), only for a quorum.
    let replacing = matches!(step, Step::Replace(..)) || m.replacing.is_some();
    if !(settled || replacing) || !ready_for(name, step, health) {
        return Ok(Some(format!("{what} waits for a settled cluster")));
    }
    // Where a member runs, on a node that answers: the image is there.
    let nodes = ctx.swarm.nodes().await?;
    let mut node = None;
    for k in 0..usize::from(m.members) {
        let tasks = ctx.swarm.tasks(&render::etcd_name(name, k)).await?;
        node = tasks
            .iter()
            .find(|t| {
                t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING)
                    && t.node_id
                        .as_deref()
                        .is_some_and(|id| nodes.iter().any(|n| n.id == id && n.ready))
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
                Step::Replace(..) => (
                    "EtcdMemberReplaced",
                    format!("{what}: the old member is out of the cluster and the new one joins as a learner; it votes once it has caught up"),
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
        assert_eq!(next_step(&one, 1, |_| 0), None);
        assert_eq!(next_step(&one, 3, |_| 0), Some(Step::Add(1)));
        let learning = after(&one, Step::Add(1));
        assert_eq!(learning.members, 2);
        assert_eq!(learning.voters(), 1);
        assert_eq!(learning.joined.get(&1), Some(&1));
        // A learner is promoted first, or taken back when no longer wanted.
        assert_eq!(next_step(&learning, 3, |_| 0), Some(Step::Promote(1)));
        assert_eq!(next_step(&learning, 1, |_| 0), Some(Step::Remove(1)));
        let taken_back = after(&learning, Step::Remove(1));
        assert_eq!((taken_back.members, taken_back.learner), (1, None));
        assert!(taken_back.joined.is_empty());
        let two = after(&learning, Step::Promote(1));
        assert_eq!(two.voters(), 2);
        assert_eq!(next_step(&two, 3, |_| 0), Some(Step::Add(2)));
        let three = after(&after(&two, Step::Add(2)), Step::Promote(2));
        assert_eq!(next_step(&three, 3, |_| 0), None);
        assert_eq!(next_step(&three, 1, |_| 0), Some(Step::Remove(2)));
        let back = after(&three, Step::Remove(2));
        assert_eq!(back.members, 2);
        assert!(!back.joined.contains_key(&2));
        // Added again, it joins afresh in a new data directory.
        let again = after(&back, Step::Add(2));
        assert_eq!(again.joined.get(&2), Some(&3));
        // Never below one member.
        assert_eq!(next_step(&EtcdMembership::created(1), 0, |_| 0), None);
    }

    #[test]
    fn a_member_whose_slot_moved_is_replaced_then_promoted_and_patroni_keeps_its_list() {
        let three = EtcdMembership::created(3);
        assert!(moved(&three, |_| 0).is_empty());
        // Member 1's slot moved off a lost node: incarnation 1.
        let slot = |j: u8| u32::from(j == 1);
        assert_eq!(moved(&three, slot), [(1, 1)]);
        assert_eq!(next_step(&three, 3, slot), Some(Step::Replace(1, 1)));
        let replaced = after(&three, Step::Replace(1, 1));
        assert_eq!(replaced.members, 3, "a replacement changes no count");
        assert_eq!(replaced.learner, Some(1));
        assert_eq!(replaced.replacing, Some(1));
        assert_eq!(replaced.joined.get(&1), Some(&1));
        assert_eq!(replaced.listed.get(&1), Some(&3), "it lists all three");
        assert_eq!(replaced.incarnation(1), 1);
        assert_eq!(replaced.clients(), 3, "Patroni's list stays the same");
        assert_eq!(replaced.voters(), 2);
        // Done once; then it is promoted like any learner.
        assert_eq!(next_step(&replaced, 3, slot), Some(Step::Promote(1)));
        let done = after(&replaced, Step::Promote(1));
        assert_eq!((done.learner, done.replacing), (None, None));
        assert_eq!(done.voters(), 3);
        assert_eq!(next_step(&done, 3, slot), None);
        // The learner itself lost: replaced again, before any promotion.
        let twice = |j: u8| u32::from(j == 1) * 2;
        assert_eq!(next_step(&replaced, 3, twice), Some(Step::Replace(1, 2)));
        // Shrinking past a replaced member forgets how it joined.
        let shrunk = after(&after(&done, Step::Remove(2)), Step::Remove(1));
        assert!(shrunk.listed.is_empty() && shrunk.incarnations.is_empty());
    }

    #[test]
    fn a_replacement_removes_the_old_member_and_adds_the_new_against_the_others() {
        let three = EtcdMembership::created(3);
        let s = script("db", &three, Step::Replace(1, 1));
        assert!(
            s.contains("eps=http://db-etcd-0:2379,http://db-etcd-2:2379\n"),
            "the lost member is not asked: {s}"
        );
        assert!(s.contains("if l=$(line); then etcdctl"), "{s}");
        assert!(s.contains("member remove \"${l%%,*}\"; fi"), "{s}");
        assert!(
            s.contains("member add db-etcd-1 --peer-urls=http://db-etcd-1:2380 --learner"),
            "{s}"
        );
        // The promotion asks the voters, not the learner in the middle.
        let replaced = after(&three, Step::Replace(1, 1));
        let p = script("db", &replaced, Step::Promote(1));
        assert!(
            p.contains("eps=http://db-etcd-0:2379,http://db-etcd-2:2379\n"),
            "{p}"
        );
    }

    #[test]
    fn etcd_slots_move_one_at_a_time_and_only_with_a_quorum() {
        let three = EtcdMembership::created(3);
        // Nothing lost.
        assert_eq!(stays("db", &three, &[], false), (vec![], Ok(())));
        // One of three lost: it moves.
        assert_eq!(stays("db", &three, &[1], false), (vec![], Ok(())));
        // ... but not while another change is under way.
        assert_eq!(stays("db", &three, &[1], true), (vec![1], Ok(())));
        // Two of three: no quorum, nothing moves, and why.
        let (stay, why) = stays("db", &three, &[0, 2], false);
        assert_eq!(stay, [0, 2]);
        let why = why.expect_err("no quorum");
        assert!(
            why.contains("2 of 3") && why.contains("db-etcd-0, db-etcd-2"),
            "{why}"
        );
        // The only member: it cannot be replaced.
        assert!(stays("db", &EtcdMembership::created(1), &[0], false)
            .1
            .is_err());
        // Five, two lost: one moves at a time.
        assert_eq!(
            stays("db", &EtcdMembership::created(5), &[3, 4], false),
            (vec![4], Ok(()))
        );
        // A learner lost costs no vote.
        let learning = after(&EtcdMembership::created(1), Step::Add(1));
        assert_eq!(stays("db", &learning, &[1], false), (vec![], Ok(())));
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
