//! PostgresCluster switchovers: the replica that takes the leadership over,
//! the call to Patroni, and `haswarmctl pg switchover` requests carried out
//! once, a haswarmd killed in the middle of one included.

use haswarm_crds::postgres::{MemberRole, PostgresClusterStatus, SwitchoverStarted};
use haswarm_crds::{EventType, PostgresCluster};

use super::observe::{self, ClusterView};
use super::patroni::patroni;
use super::reconcile::MAX_LAG_BYTES;
use super::render;
use crate::reconcilers::status::Notice;
use crate::runtime::controller::write_status;
use crate::runtime::{Context, ReconcileError};
use crate::store::Record;

/// The replica a switchover should hand the leadership to: in sync, least
/// lag, not one of `avoid` (members on a node haswarm drains).
pub fn candidate(view: &ClusterView, leader: &str, avoid: &[&str]) -> Option<String> {
    view.members
        .iter()
        .filter(|m| m.name != leader && m.role != MemberRole::Unknown)
        .filter(|m| !avoid.contains(&m.name.as_str()))
        .filter(|m| m.lag_bytes.is_some_and(|l| l <= MAX_LAG_BYTES))
        .min_by_key(|m| (m.role != MemberRole::SyncStandby, m.lag_bytes))
        .map(|m| m.name.clone())
}

/// The switchover a settled cluster wants, most pressing first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// None.
    Nothing,
    /// A `haswarmctl pg switchover` request not handled yet (its value).
    Request(String),
    /// To `to`, for `why`.
    To {
        /// The replica to take over.
        to: String,
        /// Why, for the event.
        why: String,
    },
    /// One is wanted but no replica can take over; `why`, for the event.
    Skipped(String),
}

/// The switchover wanted from leader `leader`: a request from the CLI
/// (once each), then a leader on a node haswarm drains (to an in-sync
/// replica on a node that stays), then `spec.targetPrimary` (never onto a
/// node being drained). `draining` maps members to their draining node.
/// Pure.
pub fn wanted(
    pgc: &PostgresCluster,
    view: &ClusterView,
    leader: &str,
    request: Option<String>,
    draining: &std::collections::BTreeMap<String, String>,
) -> Wanted {
    if let Some(request) = request {
        return Wanted::Request(request);
    }
    if let Some(node) = draining.get(leader) {
        let avoid: Vec<&str> = draining.keys().map(String::as_str).collect();
        let why = format!("its node {node} is being drained");
        return match candidate(view, leader, &avoid) {
            Some(to) => Wanted::To { to, why },
            None => Wanted::Skipped(format!(
                "no replica on a node that stays is in sync to take over from {leader} ({why}); the drain waits"
            )),
        };
    }
    match pgc.spec.target_primary {
        Some(t) => {
            let target = render::instance_name(pgc.metadata.name.as_str(), usize::from(t));
            if target != leader && !draining.contains_key(&target) {
                Wanted::To {
                    to: target,
                    why: "spec.targetPrimary".into(),
                }
            } else {
                Wanted::Nothing
            }
        }
        None => Wanted::Nothing,
    }
}

/// What Patroni's answer to a switchover from `from` to `to` (for `why`)
/// means: whether it took it, and the event that says so. Pure.
pub fn answered(from: &str, to: &str, why: &str, answer: &str) -> (bool, Notice) {
    if observe::took(answer) {
        let said = format!("switched the leader over from {from} to {to}: {why}");
        (true, Notice::new(EventType::Normal, "Switchover", said))
    } else {
        let said = format!(
            "Patroni refused the switchover from {from} to {to}: {}",
            answer.trim()
        );
        (
            false,
            Notice::new(EventType::Warning, "SwitchoverFailed", said),
        )
    }
}

/// Asks Patroni to hand the leadership over from `from` to `to` (the best
/// [`candidate`] when `None`); whether it did. Each outcome is a notice.
pub async fn switchover(
    ctx: &Context,
    (pgc, etcd): (&PostgresCluster, u8),
    view: &ClusterView,
    (from, to, why): (&str, Option<String>, &str),
    notices: &mut Vec<Notice>,
) -> Result<bool, ReconcileError> {
    let Some(to) = to.or_else(|| candidate(view, from, &[])) else {
        notices.push(Notice::new(
            EventType::Warning,
            "SwitchoverSkipped",
            format!("no replica is in sync to take over from {from} ({why})"),
        ));
        return Ok(false);
    };
    let (leader, candidate) = (view.patroni_name(from), view.patroni_name(&to));
    let script = |host: &str| observe::switchover(host, &leader, Some(&candidate));
    let Some(out) = patroni(ctx, (pgc, etcd), script).await? else {
        return Ok(false);
    };
    let (ok, notice) = answered(from, &to, why, &out);
    notices.push(notice);
    Ok(ok)
}

/// The instance a `haswarm.io/switchover` request names (`... to=<i>`).
pub fn requested_target(request: &str) -> Option<u8> {
    request
        .split_whitespace()
        .find_map(|p| p.strip_prefix("to="))
        .and_then(|i| i.parse().ok())
}

/// What a `haswarm.io/switchover` request not handled yet needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestStep {
    /// haswarm asked Patroni for it before (and was stopped before it could
    /// record the outcome): the leadership moved from `from` since, so the
    /// request is done. Asking again would switch over a second time.
    Moved {
        /// The leader asked to hand over.
        from: String,
    },
    /// The member it names leads already.
    AlreadyLeads,
    /// Ask Patroni, to the named member or the best candidate.
    Ask {
        /// The instance named by `to=`.
        to: Option<String>,
    },
}

/// Decides what `request` needs, given the switchover recorded as started
/// (if any) and the leader now. Pure: the table test below is its contract.
pub fn request_step(
    cluster: &str,
    request: &str,
    started: Option<&SwitchoverStarted>,
    leader: &str,
) -> RequestStep {
    if let Some(s) = started.filter(|s| s.request == request && s.from != leader) {
        return RequestStep::Moved {
            from: s.from.clone(),
        };
    }
    let to = requested_target(request).map(|i| render::instance_name(cluster, usize::from(i)));
    if to.as_deref() == Some(leader) {
        return RequestStep::AlreadyLeads;
    }
    RequestStep::Ask { to }
}

/// Carries out a `haswarmctl pg switchover` request once: the request and
/// the leader are stored before Patroni is asked, so a haswarmd that dies
/// while Patroni hands over sees, when it starts again, that the
/// leadership moved. `status` records the request as handled; whether a
/// switchover is under way.
pub async fn handle_request(
    ctx: &Context,
    obj: &Record,
    (pgc, etcd): (&PostgresCluster, u8),
    (view, leader): (&ClusterView, &str),
    request: String,
    (old, status): (&PostgresClusterStatus, &mut PostgresClusterStatus),
    notices: &mut Vec<Notice>,
) -> Result<bool, ReconcileError> {
    let name = pgc.metadata.name.as_str();
    let step = request_step(name, &request, old.switchover_started.as_ref(), leader);
    let switched = match step {
        RequestStep::Moved { from } => {
            notices.push(Notice::new(
                EventType::Normal,
                "SwitchoverDone",
                format!(
                    "the leader moved from {from} to {leader} as asked; haswarm restarted while Patroni handed over"
                ),
            ));
            false
        }
        RequestStep::AlreadyLeads => {
            notices.push(Notice::new(
                EventType::Normal,
                "SwitchoverSkipped",
                format!("{leader} is the leader already"),
            ));
            false
        }
        RequestStep::Ask { to } => {
            // The last status written plus this record: what a restarted
            // haswarmd must find if it dies while Patroni hands over. The
            // one status write outside the outline's: it must land before
            // Patroni is asked.
            let mut marked = old.clone();
            marked.switchover_started = Some(SwitchoverStarted {
                request: request.clone(),
                from: leader.to_owned(),
            });
            write_status(ctx, obj, &marked).await?;
            let why = "requested with haswarmctl pg switchover";
            switchover(ctx, (pgc, etcd), view, (leader, to, why), notices).await?
        }
    };
    status.switchover_handled = Some(request);
    status.switchover_started = None;
    Ok(switched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcilers::postgres::observe::test_view as view;

    #[test]
    fn patronis_answer_to_a_switchover_is_its_event() {
        // (answer) -> taken, reason, message
        let table = [
            (
                "200 Successfully switched over to \"db-pg-1\"",
                true,
                "Switchover",
                "switched the leader over from db-pg-0 to db-pg-1: a drain",
            ),
            (
                "412 candidate name does not match with sync_standby",
                false,
                "SwitchoverFailed",
                "Patroni refused the switchover from db-pg-0 to db-pg-1: 412 candidate name does not match with sync_standby",
            ),
            (
                "  503 Switchover failed\n",
                false,
                "SwitchoverFailed",
                "Patroni refused the switchover from db-pg-0 to db-pg-1: 503 Switchover failed",
            ),
        ];
        for (answer, taken, reason, message) in table {
            let (ok, n) = answered("db-pg-0", "db-pg-1", "a drain", answer);
            assert_eq!((ok, n.reason, n.message.as_str()), (taken, reason, message));
        }
    }

    #[test]
    fn the_most_pressing_switchover_is_wanted() {
        let pgc = |target: Option<u8>| -> PostgresCluster {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "haswarm.io/v1alpha1", "kind": "PostgresCluster",
                "metadata": {"name": "db"},
                "spec": {"instances": 3, "targetPrimary": target}
            }))
            .expect("cluster")
        };
        let v = view(&[
            ("db-pg-0", "leader", "running", None),
            ("db-pg-1", "sync_standby", "streaming", Some(0)),
            ("db-pg-2", "replica", "streaming", Some(0)),
        ]);
        let drain = |members: &[&str]| -> std::collections::BTreeMap<String, String> {
            members
                .iter()
                .map(|m| ((*m).to_owned(), "node-a".to_owned()))
                .collect()
        };
        let to = |to: &str, why: &str| Wanted::To {
            to: to.into(),
            why: why.into(),
        };
        let drained = "its node node-a is being drained";
        // (case, targetPrimary, request, members on draining nodes, wanted)
        let table = [
            ("settled", None, None, drain(&[]), Wanted::Nothing),
            ("request first", Some(2), Some("t1"), drain(&["db-pg-0"]), Wanted::Request("t1".into())),
            ("drain: the sync standby", None, None, drain(&["db-pg-0"]), to("db-pg-1", drained)),
            ("drain: one that stays", None, None, drain(&["db-pg-0", "db-pg-1"]), to("db-pg-2", drained)),
            (
                "drain: none stays",
                None,
                None,
                drain(&["db-pg-0", "db-pg-1", "db-pg-2"]),
                Wanted::Skipped("no replica on a node that stays is in sync to take over from db-pg-0 (its node node-a is being drained); the drain waits".into()),
            ),
            ("target", Some(2), None, drain(&[]), to("db-pg-2", "spec.targetPrimary")),
            ("target leads", Some(0), None, drain(&[]), Wanted::Nothing),
            ("target drains", Some(2), None, drain(&["db-pg-2"]), Wanted::Nothing),
        ];
        for (case, target, request, draining, want) in table {
            let got = wanted(
                &pgc(target),
                &v,
                "db-pg-0",
                request.map(str::to_owned),
                &draining,
            );
            assert_eq!(got, want, "{case}");
        }
    }

    #[test]
    fn a_switchover_request_may_name_its_target() {
        assert_eq!(requested_target("2026-11-28T04:00:00.000Z to=2"), Some(2));
        assert_eq!(requested_target("2026-11-28T04:00:00.000Z"), None);
        assert_eq!(requested_target("t to=x"), None);
    }

    #[test]
    fn a_request_is_asked_once_and_done_once_the_leadership_moved() {
        let started = |request: &str, from: &str| SwitchoverStarted {
            request: request.into(),
            from: from.into(),
        };
        let ask = |to: Option<&str>| RequestStep::Ask {
            to: to.map(str::to_owned),
        };
        let moved = |from: &str| RequestStep::Moved { from: from.into() };
        // (request, started, leader now, step)
        let table: [(&str, Option<SwitchoverStarted>, &str, RequestStep); 7] = [
            // Never asked: ask, to the named member or the best candidate.
            ("t1", None, "db-pg-0", ask(None)),
            ("t1 to=2", None, "db-pg-0", ask(Some("db-pg-2"))),
            // It names the leader: nothing to do.
            ("t1 to=0", None, "db-pg-0", RequestStep::AlreadyLeads),
            // Asked, and another member leads now: done, not a second time.
            (
                "t1",
                Some(started("t1", "db-pg-0")),
                "db-pg-1",
                moved("db-pg-0"),
            ),
            (
                "t1 to=2",
                Some(started("t1 to=2", "db-pg-0")),
                "db-pg-2",
                moved("db-pg-0"),
            ),
            // Asked, and the same member leads: Patroni did not do it; ask again.
            ("t1", Some(started("t1", "db-pg-0")), "db-pg-0", ask(None)),
            // A record of an earlier request says nothing of this one.
            ("t2", Some(started("t1", "db-pg-0")), "db-pg-1", ask(None)),
        ];
        for (request, started, leader, step) in table {
            assert_eq!(
                request_step("db", request, started.as_ref(), leader),
                step,
                "{request} {started:?} {leader}"
            );
        }
    }

    #[test]
    fn a_switchover_goes_to_the_sync_standby_or_the_replica_with_least_lag() {
        let v = view(&[
            ("db-pg-0", "leader", "running", None),
            ("db-pg-1", "replica", "streaming", Some(100)),
            ("db-pg-2", "replica", "streaming", Some(10)),
        ]);
        assert_eq!(candidate(&v, "db-pg-0", &[]).as_deref(), Some("db-pg-2"));
        let v = view(&[
            ("db-pg-0", "leader", "running", None),
            ("db-pg-1", "sync_standby", "streaming", Some(100)),
            ("db-pg-2", "replica", "streaming", Some(10)),
        ]);
        assert_eq!(candidate(&v, "db-pg-0", &[]).as_deref(), Some("db-pg-1"));
        let lagging = view(&[
            ("db-pg-0", "leader", "running", None),
            ("db-pg-1", "replica", "streaming", Some(1 << 30)),
        ]);
        assert_eq!(candidate(&lagging, "db-pg-0", &[]), None);
        // Draining a node: never onto a member there.
        assert_eq!(
            candidate(&v, "db-pg-0", &["db-pg-1"]).as_deref(),
            Some("db-pg-2")
        );
    }
}
