//! PostgresCluster's reconcile: pin instances and etcd members to nodes,
//! create the network, configs and password secrets, roll the services out
//! (replicas first, a switchover before the leader is touched), then report
//! (passwords and status have their own modules).

use std::collections::BTreeMap;

use haswarm_crds::postgres::{
    EtcdMembership, PostgresClusterStatus, PostgresMember, SWITCHOVER_ANNOTATION,
};
use haswarm_crds::{EventType, PostgresCluster, PostgresClusterSpec};

use super::backup;
use super::diverged;
use super::etcd;
use super::observe::ClusterView;
use super::passwords::{advance_rotation, passwords, set_logins, Passwords};
use super::patroni::{converge_settings, look, with_nodes};
use super::placement::{instance_incarnations, place};
use super::render::{self, Inputs};
use super::report;
use super::rotate;
use super::switchover::{self, switchover};
use crate::reconcilers::outline::{self, Outcome, Rolled, Stateful};
use crate::reconcilers::slots::{self, Family};
use crate::reconcilers::wait::{Flow, Wait};
use crate::reconcilers::{converge, rollout, status};
use crate::runtime::{Context, ReconcileError};
use crate::store::Record;
use crate::swarm::{NodeInfo, Owner, ServiceHealth, ServicePlan};

pub(super) const KIND: &str = <PostgresClusterSpec as haswarm_crds::Kind>::KIND;

/// A replica further behind than this is not in sync (and is no candidate
/// for a planned switchover).
pub(super) const MAX_LAG_BYTES: u64 = 16 << 20;

/// The PostgresCluster reconciler.
#[derive(Debug, Default)]
pub struct PostgresClusters;

/// Healthy enough for the next rollout step, once every service serves: a
/// leader runs, and every other instance streams from it without much lag.
fn cluster_health(
    spec: &PostgresClusterSpec,
    name: &str,
    view: Option<&ClusterView>,
) -> Result<(), String> {
    let view = view.ok_or("Patroni does not answer yet")?;
    let leader = view.running_leader().ok_or("no running leader")?;
    for i in 0..usize::from(spec.instances) {
        let member = render::instance_name(name, i);
        if member == leader {
            continue;
        }
        replica_in_sync(view, &member, leader)?;
    }
    Ok(())
}

/// Whether Patroni reports `member` replicating from `leader` and close
/// behind it; the reason when not.
fn replica_in_sync(view: &ClusterView, member: &str, leader: &str) -> Result<(), String> {
    let m = view
        .members
        .iter()
        .find(|m| m.name == member)
        .ok_or_else(|| format!("{member} is not a member yet"))?;
    if !matches!(m.state.as_str(), "streaming" | "running") {
        return Err(format!("{member} is {}", m.state));
    }
    // A replica past the fork of the leader's timeline shows no lag until
    // the leader writes past it: the timeline tells first.
    let leader_timeline = view
        .members
        .iter()
        .find(|l| l.name == leader)
        .and_then(|l| l.timeline);
    if let (Some(t), Some(lt)) = (m.timeline, leader_timeline) {
        if t != lt {
            return Err(format!(
                "{member} is on timeline {t}, the leader {leader} on {lt}"
            ));
        }
    }
    if m.lag_bytes.is_none_or(|l| l > MAX_LAG_BYTES) {
        return Err(format!("{member} lags behind {leader}"));
    }
    Ok(())
}

/// The replica a backup copies from: the first instance in sync with
/// the leader (`None`: the leader alone, the event says so).
fn backup_standby<'a>(
    spec: &PostgresClusterSpec,
    name: &str,
    view: Option<&'a ClusterView>,
    leader: &str,
) -> Option<&'a str> {
    let view = view?;
    (0..usize::from(spec.instances))
        .map(|i| render::instance_name(name, i))
        .filter(|m| m != leader)
        .find(|m| replica_in_sync(view, m, leader).is_ok())
        .and_then(|m| {
            view.members
                .iter()
                .find(|v| v.name == m)
                .map(|v| v.name.as_str())
        })
}

/// Whether Patroni knows of any member (instances have run).
fn has_members(f: &Facts) -> bool {
    f.view.as_ref().is_some_and(|v| !v.members.is_empty())
}

/// Replicas that a running leader has but that do not replicate count as
/// not serving, as a crashed service does: a change planned for one goes
/// ahead at once. Otherwise it would wait for the cluster to be healthy,
/// which it can only be once that very change is made (a member started
/// with settings that keep it from replicating).
fn mark_stalled_replicas(
    members: &mut BTreeMap<String, rollout::Member>,
    view: Option<&ClusterView>,
) {
    let Some((view, leader)) = view.and_then(|v| Some((v, v.running_leader()?))) else {
        return;
    };
    for (name, m) in members.iter_mut() {
        if m.role == rollout::Role::Replica && replica_in_sync(view, name, leader).is_err() {
            m.serving = false;
        }
    }
}

/// Pins the instances and etcd members to nodes and reports it (notices,
/// unavailable nodes, etcd's quorum); returns the slot labels no node could
/// take and each slot's incarnation.
async fn pin(
    ctx: &Context,
    (obj, owner, pgc): (&Record, &Owner, &PostgresCluster),
    (membership, nodes, view): (Option<&EtcdMembership>, &[NodeInfo], Option<&ClusterView>),
    (old, status, notices): (
        &PostgresClusterStatus,
        &mut PostgresClusterStatus,
        &mut Vec<status::Notice>,
    ),
) -> Result<(Vec<String>, BTreeMap<String, u32>), ReconcileError> {
    let (placed, quorum) = place(
        ctx,
        (pgc, membership),
        (owner, nodes, &old.common.unavailable_nodes),
        view,
    )
    .await?;
    let placed = placed.report(ctx.settings.node_loss_grace, &mut status.common, notices);
    if membership.is_some() {
        report::etcd_quorum(&mut status.common, quorum, obj.metadata.generation);
    }
    Ok(placed)
}

/// Makes the switchover [`switchover::wanted`] chooses for a settled
/// cluster led by `l`: a request not handled yet, a leader on a node being
/// drained, `spec.targetPrimary`. Whether one started.
async fn carry_out(
    ctx: &Context,
    obj: &Record,
    ((pgc, etcd), v, l): ((&PostgresCluster, u8), &ClusterView, &str),
    nodes: &[NodeInfo],
    (old, status): (&PostgresClusterStatus, &mut PostgresClusterStatus),
    notices: &mut Vec<status::Notice>,
) -> Result<bool, ReconcileError> {
    let request = pgc
        .metadata
        .annotations
        .get(SWITCHOVER_ANNOTATION)
        .filter(|r| old.switchover_handled.as_ref() != Some(*r))
        .cloned();
    let name = pgc.metadata.name.as_str();
    let draining = slots::draining(
        nodes,
        &PostgresClusters::families(name, (usize::from(pgc.spec.instances), 0))[0],
    );
    let wanted = switchover::wanted(pgc, v, l, request, &draining);
    let at = (pgc, etcd);
    match wanted {
        switchover::Wanted::Nothing => Ok(false),
        switchover::Wanted::Request(request) => {
            let seen = (old, status);
            switchover::handle_request(ctx, obj, at, (v, l), request, seen, notices).await
        }
        switchover::Wanted::To { to, why } => {
            switchover(ctx, at, v, (l, Some(to), &why), notices).await
        }
        switchover::Wanted::Skipped(why) => {
            notices.push(status::Notice::new(
                EventType::Warning,
                "SwitchoverSkipped",
                why,
            ));
            Ok(false)
        }
    }
}

/// Runs the next one-shot job, one at a time: the logins, the superuser's
/// rotation, then etcd's membership. Those that need the leader run only
/// once the cluster is settled (`settled_leader`). Returns what it waits for.
async fn next_job(
    ctx: &Context,
    (owner, pgc): (&Owner, &PostgresCluster),
    status: &mut PostgresClusterStatus,
    (settled_leader, pw, health): (Option<&str>, &Passwords, &BTreeMap<String, ServiceHealth>),
    (etcd_wanted, incarnations): (u8, &BTreeMap<String, u32>),
    notices: &mut Vec<status::Notice>,
) -> Result<Option<Wait>, ReconcileError> {
    let at = (owner, pgc);
    if let Some(why) = set_logins(ctx, at, status, (settled_leader, pw), notices).await? {
        return Ok(Some(why));
    }
    if let Some(why) = advance_rotation(ctx, at, status, (settled_leader, pw), notices).await? {
        return Ok(Some(why));
    }
    etcd::advance(
        ctx,
        at,
        status,
        (etcd_wanted, incarnations),
        (settled_leader.is_some(), health),
        notices,
    )
    .await
}

/// What a pass saw of a cluster before it acts.
pub(crate) struct Facts {
    /// The managed etcd cluster's membership (`None` with external etcd).
    membership: Option<EtcdMembership>,
    /// The etcd members that serve clients: Patroni's list, and the
    /// members haswarm relays through.
    etcd_clients: u8,
    /// The Swarm's nodes.
    nodes: Vec<NodeInfo>,
    /// Patroni's view, if a member answered.
    view: Option<ClusterView>,
    /// The leader in that view.
    leader: Option<String>,
    /// The view's members, each with the node its running task is on.
    members: Vec<PostgresMember>,
}

/// A cluster's services ready to plan, and what its flows need.
pub(crate) struct Prepared {
    /// The services, their contents made.
    converge: converge::Prepared,
    /// The password secrets and generated passwords.
    pw: Passwords,
    /// Each slot's incarnation.
    incarnations: BTreeMap<String, u32>,
}

type Pass<'a> = outline::Pass<'a, PostgresClusterSpec>;

impl Stateful for PostgresClusters {
    type Spec = PostgresClusterSpec;
    type Status = PostgresClusterStatus;
    type Facts = Facts;
    type Prepared = Prepared;

    fn unrolled() -> Result<(), String> {
        Err("not rolled out yet".to_owned())
    }

    /// Patroni's view (after releasing a dead leader's key). The etcd
    /// members run now move one at a time towards the spec's; status
    /// records them (a cluster from before that has its count only).
    async fn observe(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        status: &mut PostgresClusterStatus,
    ) -> Result<Facts, ReconcileError> {
        let pgc = pass.res;
        let membership = etcd::membership(&pgc.spec, status);
        if let Some(m) = &membership {
            status.etcd_members = None;
            status.etcd_membership = Some(m.clone());
        }
        let etcd_clients = membership.as_ref().map_or(0, EtcdMembership::clients);
        let name = pgc.metadata.name.as_str();
        let nodes = ctx.swarm.nodes().await?;
        let current = instance_incarnations(name, usize::from(pgc.spec.instances), &nodes);
        let view = look(ctx, (pgc, etcd_clients), (&current, &nodes), pass.obj).await?;
        let leader = view.as_ref().and_then(|v| v.leader().map(str::to_owned));
        let members = match &view {
            Some(v) => with_nodes(ctx, &v.members, &nodes).await?,
            None => Vec::new(),
        };
        Ok(Facts {
            membership,
            etcd_clients,
            nodes,
            view,
            leader,
            members,
        })
    }

    async fn pin(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        f: &Facts,
        (status, notices): (&mut PostgresClusterStatus, &mut Vec<status::Notice>),
    ) -> Result<(Vec<String>, BTreeMap<String, u32>), ReconcileError> {
        pin(
            ctx,
            (pass.obj, pass.owner, pass.res),
            (f.membership.as_ref(), &f.nodes, f.view.as_ref()),
            (pass.old, status, notices),
        )
        .await
    }

    async fn prepare(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        (f, incarnations): (&Facts, &BTreeMap<String, u32>),
        status: &mut PostgresClusterStatus,
        notices: &mut Vec<status::Notice>,
    ) -> Result<Prepared, ReconcileError> {
        let (owner, pgc) = (pass.owner, pass.res);
        let (rotation, started) = rotate::start(ctx, pgc, status).await?;
        notices.extend(started);
        let pw = passwords(ctx, (owner, pgc), rotation.as_ref(), status).await?;
        let network = render::network_name(pgc.metadata.name.as_str());
        let etcd = f.membership.clone().unwrap_or_default();
        // A restore's instances wait until its repository was looked into.
        let hold = backup::restore::holds_instances(pgc, status, has_members(f));
        let converge = converge::prepare(
            ctx,
            owner,
            (&network, pgc.spec.network.encrypted),
            &render::contents(pgc, &pw.generated, f.etcd_clients),
            |names| {
                let mut services = render::render(&Inputs {
                    pgc,
                    generated: &pw.generated,
                    secrets: &pw.secrets,
                    config_names: names,
                    etcd: &etcd,
                    incarnations,
                });
                if hold {
                    let name = pgc.metadata.name.as_str();
                    services.retain(|s| !render::is_instance(name, s.name()));
                }
                services
            },
        )
        .await?;
        Ok(Prepared {
            converge,
            pw,
            incarnations: incarnations.clone(),
        })
    }

    fn services(prepared: &Prepared) -> &converge::Prepared {
        &prepared.converge
    }

    fn group_health(
        pass: &Pass<'_>,
        f: &Facts,
        _health: &BTreeMap<String, ServiceHealth>,
    ) -> Result<(), String> {
        let pgc = pass.res;
        cluster_health(&pgc.spec, pgc.metadata.name.as_str(), f.view.as_ref())
    }

    fn members(
        pass: &Pass<'_>,
        f: &Facts,
        plan: &ServicePlan,
        health: &BTreeMap<String, ServiceHealth>,
    ) -> BTreeMap<String, rollout::Member> {
        let name = pass.res.metadata.name.as_str();
        let is_instance = |n: &str| render::is_instance(name, n);
        let mut members = rollout::members(plan, health, is_instance, f.leader.as_deref());
        mark_stalled_replicas(&mut members, f.view.as_ref());
        members
    }

    async fn switchover(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        f: &Facts,
        from: &str,
        notices: &mut Vec<status::Notice>,
    ) -> Result<(), ReconcileError> {
        if let Some(v) = &f.view {
            let at = (pass.res, f.etcd_clients);
            let why = "before changing it";
            switchover(ctx, at, v, (from, None, why), notices).await?;
        }
        Ok(())
    }

    /// The switchover a settled cluster is asked for ([`carry_out`]).
    async fn before_apply(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        (f, rolled): (&Facts, &Rolled),
        (status, notices): (&mut PostgresClusterStatus, &mut Vec<status::Notice>),
    ) -> Result<Option<Wait>, ReconcileError> {
        let (true, Some(v), Some(l)) = (rolled.settled(), &f.view, f.leader.as_deref()) else {
            return Ok(None);
        };
        let at = (pass.res, f.etcd_clients);
        let seen = (pass.old, status);
        let switched = carry_out(ctx, pass.obj, (at, v, l), &f.nodes, seen, notices).await?;
        Ok(switched.then(|| Wait::new(Flow::Switchover, "switchover in progress")))
    }

    /// Patroni's settings once the cluster is settled, then the one-shot
    /// jobs ([`next_job`]) once nothing else is under way.
    async fn flows(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        (f, prepared, rolled): (&Facts, &Prepared, &Rolled),
        held: Option<Wait>,
        (status, notices): (&mut PostgresClusterStatus, &mut Vec<status::Notice>),
    ) -> Result<Option<Wait>, ReconcileError> {
        let pgc = pass.res;
        status.network = Some(render::network_name(pgc.metadata.name.as_str()));
        if let Some(v) = &f.view {
            diverged::heal(ctx, (pgc, f.etcd_clients), v, status, notices).await?;
        }
        let settled = rolled.settled();
        let mut holding = rolled.step.holding.clone();
        if let Some(why) = held {
            holding.get_or_insert(why);
        } else if let (true, Some(v), Some(l)) = (settled, &f.view, f.leader.as_deref()) {
            let at = (pgc, f.etcd_clients);
            if let Some(why) = converge_settings(ctx, at, (v, l), notices).await? {
                holding = Some(why);
            }
        }
        let settled_leader = (settled && holding.is_none())
            .then_some(f.leader.as_deref())
            .flatten();
        let why = next_job(
            ctx,
            (pass.owner, pgc),
            status,
            (settled_leader, &prepared.pw, &rolled.health),
            (pgc.spec.etcd.members, &prepared.incarnations),
            notices,
        )
        .await?;
        if let Some(why) = why {
            holding.get_or_insert(why);
        }
        // Backups run beside everything else, never holding the cluster:
        // only their jobs need it settled.
        let hosts = settled_leader.map(|leader| backup::run::Hosts {
            leader,
            standby: backup_standby(
                &pgc.spec,
                pgc.metadata.name.as_str(),
                f.view.as_ref(),
                leader,
            ),
        });
        backup::advance(
            ctx,
            (pass.owner, pgc),
            status,
            (
                hosts,
                prepared.pw.secrets.backup.as_ref(),
                &prepared.pw.secrets.superuser,
            ),
            (has_members(f), &f.nodes),
            notices,
        )
        .await?;
        Ok(holding)
    }

    /// Instances, then managed etcd members.
    fn families(name: &str, (instances, etcd): (usize, usize)) -> [Family<'_>; 2] {
        [
            Family::named(
                instances,
                name,
                (render::instance_slot, render::instance_name),
            ),
            Family::named(etcd, name, (render::etcd_slot, render::etcd_name)),
        ]
    }

    /// One policy for every volume of the cluster, etcd's included.
    fn retiring<'a>([instances, etcd]: [Family<'a>; 2], pgc: &PostgresCluster) -> [Family<'a>; 2] {
        let (policy, spec) = (pgc.spec.storage.reclaim_policy, &pgc.spec);
        [
            instances.retiring(policy, &spec.postgres.image, &spec.storage),
            etcd.retiring(policy, &spec.etcd.image, &spec.etcd.storage),
        ]
    }

    fn report(
        pass: &Pass<'_>,
        f: &Facts,
        outcome: &Outcome,
        status: &mut PostgresClusterStatus,
    ) -> Vec<status::Notice> {
        let look = report::Look {
            pgc: pass.res,
            old: pass.old,
            view: f.view.as_ref(),
            members: f.members.clone(),
            nodes: &f.nodes,
            outcome,
            generation: pass.obj.metadata.generation,
        };
        report::report(&look, status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::reconcilers::postgres::observe::test_view as view;

    fn spec(instances: u8) -> PostgresClusterSpec {
        serde_json::from_value(serde_json::json!({ "instances": instances })).expect("spec")
    }

    #[test]
    fn a_replica_that_does_not_replicate_gets_its_change_at_once() {
        use rollout::{Change, Member, Role};
        let member = |role, change| Member {
            role,
            serving: true,
            change,
        };
        let mut members = BTreeMap::from([
            ("db-pg-0".to_owned(), member(Role::Primary, None)),
            (
                "db-pg-1".to_owned(),
                member(Role::Replica, Some(Change::Update)),
            ),
            (
                "db-pg-2".to_owned(),
                member(Role::Replica, Some(Change::Update)),
            ),
        ]);
        // pg-2 runs, but Patroni cannot tell what it replicates.
        let v = view(&[
            ("db-pg-0", "leader", "running", None),
            ("db-pg-1", "replica", "streaming", Some(0)),
            ("db-pg-2", "replica", "running", None),
        ]);
        mark_stalled_replicas(&mut members, Some(&v));
        assert!(members["db-pg-1"].serving);
        assert!(!members["db-pg-2"].serving);
        let step = rollout::next_step(&members, Err("db-pg-2 lags".into()));
        assert_eq!(step.apply, ["db-pg-2"]);
        // Without a running leader nothing is judged.
        let mut again = members.clone();
        again.values_mut().for_each(|m| m.serving = true);
        let leaderless = view(&[("db-pg-1", "replica", "streaming", Some(0))]);
        mark_stalled_replicas(&mut again, Some(&leaderless));
        assert!(again.values().all(|m| m.serving));
    }

    #[test]
    fn a_cluster_is_healthy_when_every_replica_streams_from_a_running_leader() {
        let good = view(&[
            ("db-pg-0", "leader", "running", None),
            ("db-pg-1", "replica", "streaming", Some(0)),
        ]);
        assert_eq!(cluster_health(&spec(2), "db", Some(&good)), Ok(()));
        assert!(cluster_health(&spec(2), "db", None).is_err());
        let starting = view(&[
            ("db-pg-0", "leader", "running", None),
            ("db-pg-1", "replica", "starting", None),
        ]);
        assert!(cluster_health(&spec(2), "db", Some(&starting))
            .is_err_and(|e| e.contains("db-pg-1 is starting")));
        let missing = view(&[("db-pg-0", "leader", "running", None)]);
        assert!(cluster_health(&spec(2), "db", Some(&missing))
            .is_err_and(|e| e.contains("not a member")));
    }

    #[test]
    fn a_replica_on_another_timeline_is_not_in_sync_even_without_lag() {
        let at = |replica: Option<u64>| {
            crate::reconcilers::postgres::observe::parse_cluster(
                &serde_json::json!({"members": [
                    {"name": "db-pg-0", "role": "leader", "state": "running", "timeline": 3},
                    {"name": "db-pg-1", "role": "replica", "state": "streaming", "timeline": replica, "lag": 0},
                ]})
                .to_string(),
            )
            .expect("view")
        };
        assert_eq!(
            cluster_health(&spec(2), "db", Some(&at(Some(2)))),
            Err("db-pg-1 is on timeline 2, the leader db-pg-0 on 3".to_owned())
        );
        assert_eq!(cluster_health(&spec(2), "db", Some(&at(Some(3)))), Ok(()));
        // Patroni did not say: the lag decides.
        assert_eq!(cluster_health(&spec(2), "db", Some(&at(None))), Ok(()));
    }

    /// `db`, 3 instances and 3 etcd members.
    fn db() -> PostgresCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "haswarm.io/v1alpha1", "kind": "PostgresCluster",
            "metadata": {"name": "db"}, "spec": {"instances": 3}
        }))
        .expect("cluster")
    }

    fn facts(view: ClusterView) -> Facts {
        Facts {
            membership: None,
            etcd_clients: 3,
            nodes: Vec::new(),
            leader: view.leader().map(str::to_owned),
            view: Some(view),
            members: Vec::new(),
        }
    }

    #[test]
    fn a_pass_plans_replicas_first_then_etcd_then_a_switchover_and_waits_while_unhealthy() {
        use crate::reconcilers::outline::{check_plans, PlanRow};
        // Named by the render, as the cluster's services are.
        let names: Vec<String> = (0..3)
            .map(|i| render::instance_name("db", i))
            .chain((0..3).map(|j| render::etcd_name("db", j)))
            .collect();
        let services: Vec<&str> = names.iter().map(String::as_str).collect();
        let healthy = view(&[
            ("db-pg-0", "leader", "running", None),
            ("db-pg-1", "sync_standby", "streaming", Some(0)),
            ("db-pg-2", "replica", "streaming", Some(0)),
        ]);
        let lagging = view(&[
            ("db-pg-0", "leader", "running", None),
            ("db-pg-1", "sync_standby", "streaming", Some(0)),
            ("db-pg-2", "replica", "streaming", Some(MAX_LAG_BYTES + 1)),
        ]);
        let rolling = [("db-etcd-0", "update in progress")];
        // (changes planned, services not serving, Patroni's view) →
        // (applied now, switched over from, the wait's start)
        let table: [PlanRow<'_, ClusterView>; 6] = [
            (
                &["db-pg-0", "db-pg-1", "db-pg-2", "db-etcd-0"],
                &[],
                &healthy,
                &["db-pg-2"],
                None,
                "3 more change(s)",
            ),
            (
                &["db-pg-0", "db-pg-1", "db-etcd-0"],
                &[],
                &healthy,
                &["db-pg-1"],
                None,
                "2 more change(s)",
            ),
            (
                &["db-pg-0", "db-etcd-0"],
                &[],
                &healthy,
                &["db-etcd-0"],
                None,
                "1 more change(s)",
            ),
            (
                &["db-pg-0"],
                &[],
                &healthy,
                &[],
                Some("db-pg-0"),
                "db-pg-0 is the primary",
            ),
            // A replica too far behind does not serve: its change goes at
            // once; the leader's waits for a healthy cluster.
            (
                &["db-pg-0", "db-pg-2"],
                &[],
                &lagging,
                &["db-pg-2"],
                None,
                "1 change(s) wait until db-pg-2 settle",
            ),
            // A service that does not serve holds every disruptive change.
            (
                &["db-pg-1"],
                &rolling,
                &healthy,
                &[],
                None,
                "1 change(s) wait: db-etcd-0: update in progress",
            ),
        ];
        check_plans::<PostgresClusters, _>(&db(), &services, &table, |v| facts(v.clone()));
    }
}
