//! Table tests of the status one look at a cluster gives, without Docker.

use haswarm_crds::ConditionStatus;

use super::*;
use crate::reconcilers::postgres::observe::test_view as view;

fn spec(instances: u8) -> PostgresClusterSpec {
    serde_json::from_value(serde_json::json!({ "instances": instances })).expect("spec")
}

fn cluster(sync: bool) -> PostgresCluster {
    let mode = if sync { "On" } else { "Off" };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "haswarm.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": "db"},
        "spec": {"instances": 3, "patroni": {"synchronousMode": mode}}
    }))
    .expect("cluster")
}

fn node(hostname: &str, ready: bool) -> NodeInfo {
    NodeInfo {
        id: hostname.to_owned(),
        hostname: hostname.to_owned(),
        labels: Default::default(),
        ready,
        role: "worker".into(),
        down_since: None,
        drained: false,
        leaving: false,
    }
}

/// Leader db-pg-0 on node-a, both replicas streaming on node-b and node-c.
fn healthy() -> ClusterView {
    view(&[
        ("db-pg-0", "leader", "running", None),
        ("db-pg-1", "sync_standby", "streaming", Some(0)),
        ("db-pg-2", "replica", "streaming", Some(100)),
    ])
}

/// What status and events a look gives, from `old`; the members run on
/// node-a, node-b, node-c in order, and `down` lists the nodes that do not
/// answer.
fn look(
    v: Option<&ClusterView>,
    old: &PostgresClusterStatus,
    down: &[&str],
    sync: bool,
) -> (PostgresClusterStatus, Vec<Notice>) {
    let pgc = cluster(sync);
    let hosts = ["node-a", "node-b", "node-c"];
    let nodes: Vec<NodeInfo> = hosts.iter().map(|h| node(h, !down.contains(h))).collect();
    let members = v
        .map(|v| {
            v.members
                .iter()
                .zip(hosts)
                .map(|(m, h)| PostgresMember {
                    node: Some(h.to_owned()),
                    ..m.clone()
                })
                .collect()
        })
        .unwrap_or_default();
    let mut status = old.clone();
    let notices = report(
        &Look {
            pgc: &pgc,
            old,
            view: v,
            members,
            nodes: &nodes,
            outcome: &Outcome {
                unassigned: Vec::new(),
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

fn condition(s: &PostgresClusterStatus, type_: &str) -> (ConditionStatus, String) {
    let c = s.common.condition(type_).expect(type_);
    (c.status, c.reason.clone())
}

#[test]
fn each_look_sets_the_conditions_it_says() {
    use ConditionStatus::{False, True, Unknown};
    let no_standby = view(&[
        ("db-pg-0", "leader", "running", None),
        ("db-pg-1", "replica", "streaming", Some(0)),
        ("db-pg-2", "replica", "streaming", Some(0)),
    ]);
    let behind = view(&[
        ("db-pg-0", "leader", "running", None),
        ("db-pg-1", "sync_standby", "streaming", Some(0)),
        ("db-pg-2", "replica", "streaming", Some(64 << 20)),
    ]);
    let leaderless = view(&[
        ("db-pg-0", "replica", "streaming", Some(0)),
        ("db-pg-1", "replica", "streaming", Some(0)),
    ]);
    let mut forked = healthy();
    forked.members[2].timeline = Some(2);
    let h = healthy();
    // (case, view, nodes down, synchronous mode, PrimaryAvailable, ReplicasInSync)
    let table = [
        (
            "healthy",
            Some(&h),
            &[][..],
            true,
            (True, "LeaderRunning"),
            (True, "InSync"),
        ),
        (
            "no standby, sync",
            Some(&no_standby),
            &[],
            true,
            (True, "LeaderRunning"),
            (False, "ReplicasBehind"),
        ),
        (
            "no standby, async",
            Some(&no_standby),
            &[],
            false,
            (True, "LeaderRunning"),
            (True, "InSync"),
        ),
        (
            "behind",
            Some(&behind),
            &[],
            true,
            (True, "LeaderRunning"),
            (False, "ReplicasBehind"),
        ),
        (
            "a replica on another timeline",
            Some(&forked),
            &[],
            true,
            (True, "LeaderRunning"),
            (False, "ReplicasBehind"),
        ),
        (
            "no leader",
            Some(&leaderless),
            &[],
            true,
            (False, "NoLeader"),
            (False, "ReplicasBehind"),
        ),
        (
            "leader's node down",
            Some(&h),
            &["node-a"],
            true,
            (False, "LeaderUnreachable"),
            (True, "InSync"),
        ),
        (
            "no answer",
            None,
            &[],
            true,
            (Unknown, "NoAnswer"),
            (Unknown, "NoAnswer"),
        ),
    ];
    for (case, v, down, sync, primary, replicas) in table {
        let (s, _) = look(v, &PostgresClusterStatus::default(), down, sync);
        let want = |(st, r): (ConditionStatus, &str)| (st, r.to_owned());
        assert_eq!(condition(&s, "PrimaryAvailable"), want(primary), "{case}");
        assert_eq!(condition(&s, "ReplicasInSync"), want(replicas), "{case}");
        assert_eq!(
            condition(&s, "Ready").0,
            False,
            "{case}: the first look only confirms"
        );
    }
}

#[test]
fn a_leader_on_a_node_that_does_not_answer_is_not_reported() {
    let old = PostgresClusterStatus {
        leader: Some("db-pg-0".into()),
        ..Default::default()
    };
    let (lost, notices) = look(Some(&healthy()), &old, &["node-a"], true);
    assert_eq!(lost.leader, None);
    assert_eq!(lost.unreachable_leader.as_deref(), Some("db-pg-0"));
    let reasons: Vec<&str> = notices.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, ["LeaderUnreachable"]);
    let message = &lost
        .common
        .condition("PrimaryAvailable")
        .expect("cond")
        .message;
    assert!(
        message.contains("runs on node node-a, which does not answer"),
        "{message}"
    );
    // Still lost: no second event.
    let (still, notices) = look(Some(&healthy()), &lost, &["node-a"], true);
    assert!(notices.is_empty(), "{notices:?}");
    // Patroni promoted db-pg-1: one LeaderChanged, from the unreachable one.
    let promoted = view(&[
        ("db-pg-0", "replica", "stopped", None),
        ("db-pg-1", "leader", "running", None),
        ("db-pg-2", "replica", "streaming", Some(0)),
    ]);
    let (after, notices) = look(Some(&promoted), &still, &["node-a"], true);
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(notices[0].reason, "LeaderChanged");
    assert!(notices[0].message.contains("from db-pg-0 to db-pg-1"));
    assert_eq!(after.leader.as_deref(), Some("db-pg-1"));
    assert_eq!(after.unreachable_leader, None);
}

#[test]
fn without_an_answer_the_last_leader_stays_and_members_go() {
    let old = PostgresClusterStatus {
        leader: Some("db-pg-0".into()),
        members: healthy().members,
        ..Default::default()
    };
    let (s, notices) = look(None, &old, &[], true);
    assert_eq!(s.leader.as_deref(), Some("db-pg-0"));
    assert!(s.members.is_empty() && notices.is_empty());
    assert_eq!(
        condition(&s, "Ready"),
        (ConditionStatus::False, "Starting".into())
    );
}

#[test]
fn endpoints_are_the_routers_when_there_are_routers() {
    let (s, _) = look(
        Some(&healthy()),
        &PostgresClusterStatus::default(),
        &[],
        true,
    );
    assert_eq!(s.read_write_endpoint.as_deref(), Some("db-rw:5432"));
    assert_eq!(s.read_only_endpoint.as_deref(), Some("db-ro:5432"));
}

#[test]
fn synchronous_mode_wants_a_synchronous_standby() {
    let mut sync = spec(2);
    sync.patroni.synchronous_mode = SynchronousMode::On;
    let async_only = view(&[
        ("db-pg-0", "leader", "running", None),
        ("db-pg-1", "replica", "streaming", Some(0)),
    ]);
    assert!(synchronous_standby_missing(&sync, &async_only));
    assert!(!synchronous_standby_missing(&spec(2), &async_only));
    let with_standby = view(&[
        ("db-pg-0", "leader", "running", None),
        ("db-pg-1", "sync_standby", "streaming", Some(0)),
    ]);
    assert!(!synchronous_standby_missing(&sync, &with_standby));
}

#[test]
fn a_restored_cluster_says_it_restores_until_a_leader_runs_once() {
    let pgc: PostgresCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "haswarm.io/v1alpha1", "kind": "PostgresCluster",
        "metadata": {"name": "db2"},
        "spec": {"backup": {"repositories": [{"name": "s3", "s3": {"endpoint": "s3",
            "bucket": "backups", "credentialsSecret": {"name": "c"}}}]},
          "bootstrap": {"recovery": {"source": "db", "repository": "s3",
            "targetTime": "2026-12-06T10:15:00Z"}}}
    }))
    .expect("cluster");
    let outcome = Outcome {
        unassigned: Vec::new(),
        holding: None,
        group: Ok(()),
        tasks: None,
        starting: false,
    };
    let pass = |v: Option<&ClusterView>, old: &PostgresClusterStatus| {
        let mut status = old.clone();
        let notices = report(
            &Look {
                pgc: &pgc,
                old,
                view: v,
                members: Vec::new(),
                nodes: &[],
                outcome: &outcome,
                generation: Some(1),
            },
            &mut status,
        );
        let restored: Vec<Notice> = notices
            .into_iter()
            .filter(|n| n.reason == "Restored")
            .collect();
        (status, restored)
    };
    // Before the look into the repository, and when it refuses.
    let (s, _) = pass(None, &PostgresClusterStatus::default());
    assert_eq!(
        condition(&s, RESTORED),
        (ConditionStatus::False, "Verifying".into())
    );
    let check = |verdict| {
        let mut st = PostgresClusterStatus::default();
        st.backup.restore_check = Some(haswarm_crds::postgres::RestoreCheck {
            recovery: crate::reconcilers::postgres::backup::restore::key(
                pgc.spec.bootstrap.recovery.as_ref().expect("recovery"),
            ),
            verdict,
            message: "targetTime is before the first recoverability point".into(),
            checked: chrono::Utc::now(),
        });
        st
    };
    let (s, _) = pass(
        None,
        &check(haswarm_crds::postgres::RestoreVerdict::Impossible),
    );
    assert_eq!(
        condition(&s, RESTORED),
        (ConditionStatus::False, "RestoreRefused".into())
    );
    let message = &s.common.condition(RESTORED).expect("condition").message;
    assert!(
        message.contains("before the first recoverability point"),
        "{message}"
    );
    let (s, n) = pass(
        None,
        &check(haswarm_crds::postgres::RestoreVerdict::Possible),
    );
    assert_eq!(
        condition(&s, RESTORED),
        (ConditionStatus::False, "Restoring".into())
    );
    let message = &s.common.condition(RESTORED).expect("condition").message;
    assert!(
        message.contains("from db's backups in repository s3, to time 2026-12-06T10:15:00+00:00"),
        "{message}"
    );
    assert!(n.is_empty());
    let led = view(&[("db2-pg-0", "leader", "running", None)]);
    let (s, n) = pass(Some(&led), &s);
    assert_eq!(
        condition(&s, RESTORED),
        (ConditionStatus::True, "Restored".into())
    );
    assert_eq!(n.len(), 1, "one event: {n:?}");
    let (s, n) = pass(None, &s);
    assert_eq!(
        condition(&s, RESTORED).0,
        ConditionStatus::True,
        "done once, for good"
    );
    assert!(n.is_empty());
}
