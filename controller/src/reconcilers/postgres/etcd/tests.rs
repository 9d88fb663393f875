//! Tests of etcd's membership flow: the steps, their scripts, when each
//! may run, and what its outcome records.

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

fn running(names: &[&str]) -> std::collections::BTreeMap<String, ServiceHealth> {
    names
        .iter()
        .map(|n| ((*n).to_owned(), ServiceHealth::Running))
        .collect()
}

#[test]
fn a_step_runs_in_a_settled_cluster_and_a_replacement_with_a_quorum_only() {
    let none = running(&[]);
    let three = EtcdMembership::created(3);
    let learning = after(&EtcdMembership::created(1), Step::Add(1));
    let replaced = after(&three, Step::Replace(1, 1));
    let moved = |j: u8| u32::from(j == 1);
    // (membership, desired, slot moved?, settled, health) -> decision
    let run = |step, what: &str| Decision::Run {
        step,
        what: what.to_owned(),
    };
    let table = [
        (&three, 3, false, true, &none, Decision::Idle),
        (
            &three,
            5,
            false,
            false,
            &none,
            Decision::Wait("adding etcd member db-etcd-3 waits for a settled cluster".into()),
        ),
        (
            &three,
            5,
            false,
            true,
            &none,
            run(Step::Add(3), "adding etcd member db-etcd-3"),
        ),
        (
            &three,
            1,
            false,
            true,
            &none,
            run(Step::Remove(2), "removing etcd member db-etcd-2"),
        ),
        // A replacement does not wait for a settled cluster.
        (
            &three,
            3,
            true,
            false,
            &none,
            run(
                Step::Replace(1, 1),
                "replacing etcd member db-etcd-1 (its slot moved off a lost node: incarnation 1)",
            ),
        ),
        // A learner votes once its service runs ...
        (
            &learning,
            3,
            false,
            true,
            &none,
            Decision::Wait(
                "giving etcd member db-etcd-1 its vote waits for a settled cluster".into(),
            ),
        ),
        (
            &learning,
            3,
            false,
            true,
            &running(&["db-etcd-1"]),
            run(Step::Promote(1), "giving etcd member db-etcd-1 its vote"),
        ),
        // ... and a replaced one in an unsettled cluster too.
        (
            &replaced,
            3,
            true,
            false,
            &running(&["db-etcd-1"]),
            run(Step::Promote(1), "giving etcd member db-etcd-1 its vote"),
        ),
    ];
    for (m, desired, moves, settled, health, want) in table {
        let slot = |j: u8| if moves { moved(j) } else { 0 };
        assert_eq!(
            decide("db", m, (desired, slot), (settled, health)),
            want,
            "{m:?} desired {desired} moved {moves} settled {settled}"
        );
    }
}

#[test]
fn each_outcome_records_the_membership_and_says_so() {
    let three = EtcdMembership::created(3);
    let learning = after(&EtcdMembership::created(1), Step::Add(1));
    let done = JobOutcome::Completed;
    let failed = JobOutcome::Failed("exit status 1".into());
    // (membership, step, job) -> (recorded?, event reason, in progress)
    let table = [
        (&three, Step::Add(3), &done, true, Some("EtcdMemberAdded")),
        (
            &learning,
            Step::Promote(1),
            &done,
            true,
            Some("EtcdMemberPromoted"),
        ),
        (
            &three,
            Step::Remove(2),
            &done,
            true,
            Some("EtcdMemberRemoved"),
        ),
        (
            &three,
            Step::Replace(1, 1),
            &done,
            true,
            Some("EtcdMemberReplaced"),
        ),
        // A learner not caught up is no failure: no event, tried again.
        (&learning, Step::Promote(1), &failed, false, None),
        (
            &three,
            Step::Add(3),
            &failed,
            false,
            Some("EtcdMembershipFailed"),
        ),
        (
            &three,
            Step::Replace(1, 1),
            &failed,
            false,
            Some("EtcdMembershipFailed"),
        ),
    ];
    for (m, step, job, recorded, reason) in table {
        let what = describe("db", step);
        let (next, notice, progress) = outcome(m, (step, &what), job);
        assert_eq!(next.is_some(), recorded, "{step:?} {job:?}");
        if let Some(next) = next {
            assert_eq!(next, after(m, step), "{step:?}: as `after` says");
        }
        assert_eq!(
            notice.as_ref().map(|n| n.reason),
            reason,
            "{step:?} {job:?}"
        );
        assert!(progress.starts_with(&what), "{progress}");
        if let Some(n) = notice.filter(|n| n.reason == "EtcdMembershipFailed") {
            assert_eq!(n.type_, EventType::Warning);
            assert!(n.message.contains("exit status 1"), "{}", n.message);
        }
    }
    // The counts in the events are the voters after the step.
    let (_, n, _) = outcome(&learning, (Step::Promote(1), "p"), &done);
    assert_eq!(
        n.map(|n| n.message).as_deref(),
        Some("p: done, 2 voting members")
    );
}
