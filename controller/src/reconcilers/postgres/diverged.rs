//! Replicas stuck on another timeline than the leader's: found in Patroni's
//! view (pure), and rebuilt from the leader through Patroni once they stayed
//! so for two TTLs.
//!
//! A replica that received WAL past the point where the new leader's
//! timeline forked cannot follow it: PostgreSQL keeps "waiting for WAL"
//! while Patroni, which checks for that only when it starts or follows a new
//! leader, may have missed it (seen in CI: an async replica ahead of the
//! promoted sync standby). It runs, reads as streaming, even shows no lag
//! until the leader writes past it; it never catches up.

use std::time::Duration;

use haswarm_crds::postgres::{MemberRole, PostgresClusterStatus};
use haswarm_crds::{EventType, PostgresCluster};

use super::observe::{self, ClusterView};
use super::patroni::patroni;
use crate::reconcilers::status::{self, Notice};
use crate::runtime::{Context, ReconcileError};

/// A replica on another timeline than the running leader's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diverged {
    /// The replica's service.
    pub member: String,
    /// Its timeline.
    pub timeline: u64,
    /// The running leader's service.
    pub leader: String,
    /// The leader's timeline.
    pub leader_timeline: u64,
}

/// The running replicas whose timeline is not the running leader's. A
/// member that is starting, stopped or being rewound is Patroni's to bring
/// back, and a sync standby streams (Patroni picks it among those that do):
/// neither counts. Nothing counts while no leader runs or a timeline is
/// unknown.
pub fn diverged(view: &ClusterView) -> Vec<Diverged> {
    let Some(leader) = view
        .members
        .iter()
        .find(|m| m.role == MemberRole::Leader && m.state == "running")
    else {
        return Vec::new();
    };
    let Some(leader_timeline) = leader.timeline else {
        return Vec::new();
    };
    view.members
        .iter()
        .filter(|m| m.role == MemberRole::Replica)
        .filter(|m| matches!(m.state.as_str(), "running" | "streaming"))
        .filter_map(|m| {
            let timeline = m.timeline.filter(|t| *t != leader_timeline)?;
            Some(Diverged {
                member: m.name.clone(),
                timeline,
                leader: leader.name.clone(),
                leader_timeline,
            })
        })
        .collect()
}

/// How long a replica may stay on another timeline before it is rebuilt:
/// two TTLs, time enough for Patroni to follow or rewind it itself.
pub fn grace(pgc: &PostgresCluster) -> Duration {
    Duration::from_secs(2 * u64::from(pgc.spec.patroni.ttl))
}

/// What [`heal`] decided for one pass: the replica to rebuild, if one is due.
pub fn due(
    view: &ClusterView,
    status: &mut PostgresClusterStatus,
    now: chrono::DateTime<chrono::Utc>,
    grace: Duration,
) -> Option<Diverged> {
    let found = diverged(view);
    let stuck: Vec<String> = found.iter().map(|d| d.member.clone()).collect();
    let due = status::overdue(&stuck, &mut status.diverged_since, now, grace);
    // One at a time: each rebuild copies the leader's data.
    let first = due.first()?;
    found.into_iter().find(|d| &d.member == first)
}

/// Has Patroni rebuild (`POST /reinitialize`: a new data directory cloned
/// from the leader) a replica that stayed on another timeline for
/// [`grace`]. Its clock starts over, so a rebuild still running is not asked
/// again before another grace. The replica's own WAL past the fork was never
/// the cluster's: the leader's timeline left it behind.
pub(super) async fn heal(
    ctx: &Context,
    at: (&PostgresCluster, u8),
    view: &ClusterView,
    status: &mut PostgresClusterStatus,
    notices: &mut Vec<Notice>,
) -> Result<(), ReconcileError> {
    let now = chrono::Utc::now();
    let grace = grace(at.0);
    let Some(d) = due(view, status, now, grace) else {
        return Ok(());
    };
    status.diverged_since.insert(d.member.clone(), now);
    let body = serde_json::json!({ "force": false });
    let script = |_: &str| observe::rest_call(&d.member, "POST", "/reinitialize", &body);
    let answer = patroni(ctx, at, script).await?.unwrap_or_default();
    let stayed = format!(
        "{} stayed on timeline {} for {}s while the leader {} is on timeline {}",
        d.member,
        d.timeline,
        grace.as_secs(),
        d.leader,
        d.leader_timeline
    );
    notices.push(if observe::took(&answer) {
        Notice::new(
            EventType::Warning,
            "ReplicaRebuilt",
            format!("{stayed}: it cannot follow (its WAL went past the fork) and Patroni did not rewind it, so Patroni rebuilds it from the leader"),
        )
    } else {
        Notice::new(
            EventType::Warning,
            "RebuildRefused",
            format!(
                "{stayed}; Patroni did not rebuild it: {}",
                if answer.trim().is_empty() {
                    "no member answered"
                } else {
                    answer.trim()
                }
            ),
        )
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view of (name, role, state, timeline).
    fn view(members: &[(&str, &str, &str, Option<u64>)]) -> ClusterView {
        let json = serde_json::json!({
            "members": members.iter().map(|(n, r, s, t)| serde_json::json!({
                "name": n, "role": r, "state": s, "timeline": t, "lag": 0
            })).collect::<Vec<_>>()
        });
        observe::parse_cluster(&json.to_string()).expect("view")
    }

    fn names(view: &ClusterView) -> Vec<String> {
        diverged(view).into_iter().map(|d| d.member).collect()
    }

    #[test]
    fn only_running_replicas_on_another_timeline_than_a_running_leader_diverged() {
        let leader = ("db-pg-0", "leader", "running", Some(3));
        // (the other members) -> diverged
        type Row<'a> = (
            &'a [(&'a str, &'a str, &'a str, Option<u64>)],
            &'a [&'a str],
        );
        let table: [Row; 8] = [
            (&[("db-pg-1", "replica", "streaming", Some(3))], &[]),
            (&[("db-pg-1", "replica", "running", Some(2))], &["db-pg-1"]),
            (
                &[("db-pg-1", "replica", "streaming", Some(2))],
                &["db-pg-1"],
            ),
            // Promoted apart from the leader: cannot follow either.
            (&[("db-pg-1", "replica", "running", Some(4))], &["db-pg-1"]),
            // Patroni's own: starting, stopped, rewinding.
            (&[("db-pg-1", "replica", "starting", Some(2))], &[]),
            (&[("db-pg-1", "replica", "stopped", Some(2))], &[]),
            // A sync standby streams; an unknown timeline says nothing.
            (&[("db-pg-1", "sync_standby", "streaming", Some(2))], &[]),
            (
                &[
                    ("db-pg-1", "replica", "running", None),
                    ("db-pg-2", "replica", "running", Some(1)),
                ],
                &["db-pg-2"],
            ),
        ];
        for (others, want) in table {
            let mut all = vec![leader];
            all.extend_from_slice(others);
            assert_eq!(names(&view(&all)), want, "{others:?}");
        }
        let found = diverged(&view(&[leader, ("db-pg-2", "replica", "running", Some(2))]));
        assert_eq!(
            found,
            [Diverged {
                member: "db-pg-2".into(),
                timeline: 2,
                leader: "db-pg-0".into(),
                leader_timeline: 3,
            }]
        );
    }

    #[test]
    fn nothing_diverges_from_a_leader_that_does_not_run_or_has_no_timeline() {
        let stale = ("db-pg-1", "replica", "running", Some(2));
        assert!(names(&view(&[("db-pg-0", "leader", "stopped", Some(3)), stale])).is_empty());
        assert!(names(&view(&[("db-pg-0", "leader", "running", None), stale])).is_empty());
        assert!(names(&view(&[stale])).is_empty());
    }

    #[test]
    fn a_diverged_replica_is_due_after_the_grace_one_at_a_time() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z")
            .expect("time")
            .with_timezone(&chrono::Utc);
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let grace = Duration::from_secs(40);
        let two = view(&[
            ("db-pg-0", "leader", "running", Some(3)),
            ("db-pg-1", "replica", "running", Some(2)),
            ("db-pg-2", "replica", "running", Some(2)),
        ]);
        let healed = view(&[
            ("db-pg-0", "leader", "running", Some(3)),
            ("db-pg-1", "replica", "streaming", Some(3)),
            ("db-pg-2", "replica", "running", Some(2)),
        ]);
        let mut status = PostgresClusterStatus::default();
        let due_at = |s: i64, v: &ClusterView, st: &mut PostgresClusterStatus| {
            due(v, st, at(s), grace).map(|d| d.member)
        };
        assert_eq!(due_at(0, &two, &mut status), None);
        assert_eq!(due_at(39, &two, &mut status), None);
        assert_eq!(due_at(40, &two, &mut status).as_deref(), Some("db-pg-1"));
        assert_eq!(status.diverged_since.len(), 2);
        // db-pg-1 follows again: forgotten; db-pg-2 is due on its own clock.
        assert_eq!(due_at(45, &healed, &mut status).as_deref(), Some("db-pg-2"));
        assert_eq!(
            status.diverged_since.keys().collect::<Vec<_>>(),
            ["db-pg-2"]
        );
    }
}
