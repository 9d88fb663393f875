//! Table tests of the status one look at a group gives, without Docker.

use haswarm_crds::ConditionStatus;

use super::*;

fn group(instances: u8) -> RedisSentinelGroup {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "haswarm.io/v1alpha1", "kind": "RedisSentinelGroup",
        "metadata": {"name": "c"}, "spec": {"instances": instances}
    }))
    .expect("group")
}

use observe::healthy_test_view as healthy_view;

/// What status and events a look gives, from `old`.
fn look(
    views: &[(String, SentinelView)],
    old: &RedisSentinelGroupStatus,
    unassigned: &[String],
) -> (RedisSentinelGroupStatus, Vec<Notice>) {
    let rsg = group(3);
    let mut status = old.clone();
    let notices = report(
        &Look {
            rsg: &rsg,
            old,
            views,
            outcome: &Outcome {
                unassigned: unassigned.to_vec(),
                holding: None,
                group: Ok(()),
                tasks: None,
                starting: false,
            },
            generation: Some(1),
        },
        &mut status,
    );
    (status, notices)
}

fn condition(s: &RedisSentinelGroupStatus, type_: &str) -> (ConditionStatus, String) {
    let c = s.common.condition(type_).expect(type_);
    (c.status, c.reason.clone())
}

fn one(view: SentinelView) -> Vec<(String, SentinelView)> {
    vec![("c-sentinel-0".to_owned(), view)]
}

#[test]
fn each_look_sets_the_conditions_it_says() {
    use ConditionStatus::{False, True, Unknown};
    let healthy = healthy_view();
    let mut down = healthy_view();
    down.master_flags = "master,s_down".into();
    let mut lonely = healthy_view();
    lonely.other_sentinels = 0;
    let mut tilted = healthy_view();
    tilted.tilt = true;
    let mut behind = healthy_view();
    behind.master_offset = Some(10 << 20);
    let mut unlinked = healthy_view();
    unlinked.connected.pop();
    // (case, views, MasterAvailable, QuorumHealthy, ReplicasInSync)
    let table: Vec<(&str, Vec<(String, SentinelView)>, _, _, _)> = vec![
        (
            "healthy",
            one(healthy),
            (True, "MasterUp"),
            (True, "QuorumReached"),
            (True, "InSync"),
        ),
        (
            "master down",
            one(down),
            (False, "MasterDown"),
            (True, "QuorumReached"),
            (True, "InSync"),
        ),
        (
            "alone",
            one(lonely),
            (True, "MasterUp"),
            (False, "TooFewSentinels"),
            (True, "InSync"),
        ),
        (
            "tilt",
            one(tilted),
            (True, "MasterUp"),
            (False, "SentinelTilt"),
            (True, "InSync"),
        ),
        (
            "behind",
            one(behind),
            (True, "MasterUp"),
            (True, "QuorumReached"),
            (False, "ReplicasBehind"),
        ),
        (
            "unlinked",
            one(unlinked),
            (True, "MasterUp"),
            (True, "QuorumReached"),
            (False, "ReplicasBehind"),
        ),
        (
            "no view",
            vec![],
            (Unknown, "NoSentinelAnswer"),
            (Unknown, "NoSentinelAnswer"),
            (Unknown, "NoSentinelAnswer"),
        ),
    ];
    for (case, views, master, quorum, replicas) in table {
        let (s, _) = look(&views, &RedisSentinelGroupStatus::default(), &[]);
        let want = |(st, r): (ConditionStatus, &str)| (st, r.to_owned());
        assert_eq!(condition(&s, "MasterAvailable"), want(master), "{case}");
        assert_eq!(condition(&s, "QuorumHealthy"), want(quorum), "{case}");
        assert_eq!(condition(&s, "ReplicasInSync"), want(replicas), "{case}");
        // The first healthy look only confirms; nothing else is Ready.
        let ready = condition(&s, "Ready");
        assert_eq!(ready.0, False, "{case}");
        if case == "healthy" {
            assert_eq!(ready.1, status::CONFIRMING);
        }
    }
}

#[test]
fn a_healthy_look_after_a_confirming_one_is_ready() {
    let views = one(healthy_view());
    let (first, _) = look(&views, &RedisSentinelGroupStatus::default(), &[]);
    let (second, notices) = look(&views, &first, &[]);
    assert_eq!(
        condition(&second, "Ready"),
        (ConditionStatus::True, "Healthy".to_owned())
    );
    assert_eq!(second.master.as_deref(), Some("c-redis-0"));
    assert_eq!(second.sentinels_seen, Some(3));
    assert!(notices.is_empty(), "{notices:?}");
}

#[test]
fn without_a_view_status_names_nothing_and_says_why() {
    let old = RedisSentinelGroupStatus {
        master: Some("c-redis-0".into()),
        sentinels_seen: Some(3),
        ..Default::default()
    };
    let (s, notices) = look(&[], &old, &[]);
    assert_eq!((s.master, s.sentinels_seen), (None, None));
    assert!(notices.is_empty());
    let unassigned = ["io.haswarm.redissentinelgroup.c.redis.slot-2".to_owned()];
    let (s, _) = look(&[], &old, &unassigned);
    let ready = s.common.condition("Ready").expect("Ready");
    assert_eq!(ready.reason, "Starting");
    assert!(
        ready.message.contains("no node can take io.haswarm"),
        "{}",
        ready.message
    );
}

#[test]
fn a_master_that_stops_answering_then_moves_gives_one_event_each() {
    let before = RedisSentinelGroupStatus {
        master: Some("c-redis-0".into()),
        ..Default::default()
    };
    let mut down = healthy_view();
    down.master_flags = "master,s_down".into();
    let (gone, notices) = look(&one(down.clone()), &before, &[]);
    let reasons: Vec<&str> = notices.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, ["MasterUnreachable"]);
    assert_eq!(
        gone.master, None,
        "a master that does not answer is not reported"
    );
    assert_eq!(gone.unreachable_master.as_deref(), Some("c-redis-0"));
    // Still down: no second event.
    let (still, notices) = look(&one(down), &gone, &[]);
    assert!(notices.is_empty(), "{notices:?}");
    // The sentinels promote c-redis-1.
    let mut moved = healthy_view();
    moved.master = Some("c-redis-1".into());
    let (after, notices) = look(&one(moved), &still, &[]);
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].reason, "MasterChanged");
    assert!(notices[0].message.contains("from c-redis-0 to c-redis-1"));
    assert_eq!(after.master.as_deref(), Some("c-redis-1"));
    assert_eq!(after.unreachable_master, None);
}

#[test]
fn replicas_are_reported_from_the_master_including_missing_ones() {
    let s = replica_status(&group(4), &healthy_view());
    let names: Vec<&str> = s.iter().map(|x| x.name.as_str()).collect();
    assert_eq!(names, ["c-redis-1", "c-redis-2", "c-redis-3"]);
    assert_eq!(s[1].lag_bytes, Some(10));
    assert!(s[0].link_up && !s[2].link_up);
}
