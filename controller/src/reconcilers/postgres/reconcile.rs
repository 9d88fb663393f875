//! PostgresCluster's reconcile: pin instances and etcd members to nodes,
//! create the network, configs and password secrets, roll the services out
//! (replicas first, a switchover before the leader is touched), then report
//! (passwords and status have their own modules).

use std::collections::BTreeMap;
use std::sync::Arc;

use haswarm_crds::postgres::{EtcdMembership, PostgresClusterStatus, SWITCHOVER_ANNOTATION};
use haswarm_crds::{EventType, PostgresCluster, PostgresClusterSpec};

use super::etcd;
use super::observe::ClusterView;
use super::passwords::{advance_rotation, passwords, set_logins, Passwords};
use super::patroni::{converge_settings, look, with_nodes};
use super::placement::{families, instance_incarnations, place, retiring};
use super::render::{self, Inputs};
use super::report;
use super::rotate;
use super::switchover::{self, switchover};
use crate::reconcilers::slots;
use crate::reconcilers::{converge, rollout, status};
use crate::runtime::controller::{decode, event, hold_if_paused, known_versions, owner_of};
use crate::runtime::{Action, Context, ReconcileError, Reconciler};
use crate::store::Record;
use crate::swarm::{NodeInfo, Owner, ServiceHealth, ServicePlan};

pub(super) const KIND: &str = <PostgresClusterSpec as haswarm_crds::Kind>::KIND;

/// A replica further behind than this is not in sync (and is no candidate
/// for a planned switchover).
pub(super) const MAX_LAG_BYTES: u64 = 16 << 20;

/// The PostgresCluster reconciler.
#[derive(Debug, Default)]
pub struct PostgresClusters;

/// Healthy enough for the next rollout step: every service runs, a leader
/// runs, and every other instance streams from it without much lag.
fn cluster_health(
    spec: &PostgresClusterSpec,
    name: &str,
    health: &BTreeMap<String, ServiceHealth>,
    view: Option<&ClusterView>,
) -> Result<(), String> {
    for (service, h) in health {
        if let ServiceHealth::NotReady(why) = h {
            return Err(format!("{service}: {why}"));
        }
    }
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
    if m.lag_bytes.is_none_or(|l| l > MAX_LAG_BYTES) {
        return Err(format!("{member} lags behind {leader}"));
    }
    Ok(())
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

/// Pins the instances and etcd members to nodes and reports it (events,
/// unavailable nodes, etcd's quorum); returns the slot labels no node could
/// take and each slot's incarnation.
async fn pin(
    ctx: &Context,
    (obj, owner, pgc): (&Record, &Owner, &PostgresCluster),
    (membership, nodes, view): (Option<&EtcdMembership>, &[NodeInfo], Option<&ClusterView>),
    (old, status): (&PostgresClusterStatus, &mut PostgresClusterStatus),
) -> Result<(Vec<String>, BTreeMap<String, u32>), ReconcileError> {
    let (placed, quorum) = place(
        ctx,
        (pgc, membership),
        (owner, nodes, &old.common.unavailable_nodes),
        view,
    )
    .await?;
    let placed = placed.report(ctx, obj, &mut status.common);
    if membership.is_some() {
        report::etcd_quorum(&mut status.common, quorum, obj.metadata.generation);
    }
    Ok(placed)
}

/// What a pass plans for the services and lets through.
struct Stepped {
    /// The services' changes.
    plan: ServicePlan,
    /// Each service's health before the pass.
    health: BTreeMap<String, ServiceHealth>,
    /// Whether the cluster is healthy, or why not.
    group: Result<(), String>,
    /// What the rollout lets through.
    step: rollout::Step,
}

/// Plans the services and picks the next safe step (see [`rollout`]): a
/// replica that does not replicate gets its change at once; a leader to
/// change is switched over first.
async fn next_step(
    ctx: &Context,
    (obj, owner, (pgc, etcd)): (&Record, &Owner, (&PostgresCluster, u8)),
    old: &PostgresClusterStatus,
    prepared: &converge::Prepared,
    view: Option<&ClusterView>,
) -> Result<Stepped, ReconcileError> {
    let name = pgc.metadata.name.as_str();
    let leader = view.and_then(ClusterView::leader);
    let plan = ctx
        .swarm
        .plan_services(owner, &prepared.services, &known_versions(&old.common))
        .await?;
    let health = ctx.swarm.service_health(owner).await?;
    let group = cluster_health(&pgc.spec, name, &health, view);
    let mut members = rollout::members(&plan, &health, |n| render::is_instance(name, n), leader);
    mark_stalled_replicas(&mut members, view);
    let step = rollout::next_step(&members, group.clone());
    if !step.apply.is_empty() || step.switchover.is_some() {
        tracing::info!(?step, ?group, "rollout step");
    }
    if let (Some(from), Some(v)) = (&step.switchover, view) {
        switchover(ctx, obj, (pgc, etcd), v, from, None, "before changing it").await?;
    }
    Ok(Stepped {
        plan,
        health,
        group,
        step,
    })
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
        &families(name, usize::from(pgc.spec.instances), 0)[0],
    );
    let wanted = switchover::wanted(pgc, v, l, request, &draining);
    match wanted {
        switchover::Wanted::Nothing => Ok(false),
        switchover::Wanted::Request(request) => {
            switchover::handle_request(ctx, obj, (pgc, etcd), v, l, request, (old, status)).await
        }
        switchover::Wanted::To { to, why } => {
            switchover(ctx, obj, (pgc, etcd), v, l, Some(to), &why).await
        }
        switchover::Wanted::Skipped(why) => {
            event(ctx, obj, EventType::Warning, "SwitchoverSkipped", &why);
            Ok(false)
        }
    }
}

/// Runs the next one-shot job, one at a time: the logins, the superuser's
/// rotation, then etcd's membership. Those that need the leader run only
/// once the cluster is settled (`settled_leader`). Returns what it waits for.
async fn next_job(
    ctx: &Context,
    (obj, owner, pgc): (&Record, &Owner, &PostgresCluster),
    status: &mut PostgresClusterStatus,
    (settled_leader, pw, health): (Option<&str>, &Passwords, &BTreeMap<String, ServiceHealth>),
    (etcd_wanted, incarnations): (u8, &BTreeMap<String, u32>),
    notices: &mut Vec<status::Notice>,
) -> Result<Option<String>, ReconcileError> {
    let at = (owner, pgc);
    if let Some(why) = set_logins(ctx, obj, at, status, (settled_leader, pw), notices).await? {
        return Ok(Some(why));
    }
    if let Some(why) = advance_rotation(ctx, obj, at, status, (settled_leader, pw), notices).await?
    {
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

impl Reconciler for PostgresClusters {
    const KIND: &'static str = KIND;

    async fn reconcile(&self, obj: Record, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
        let (pgc, old) = decode::<PostgresClusterSpec>(&obj)?;
        let owner = owner_of(&ctx, &obj);
        let generation = obj.metadata.generation;
        let mut status = old.clone();
        // The etcd members run now, which move one at a time towards the
        // spec's; Patroni is told only of those that serve clients.
        let membership = etcd::membership(&pgc.spec, &status);
        if let Some(m) = &membership {
            status.etcd_members = None;
            status.etcd_membership = Some(m.clone());
        }
        let at = (&pgc, membership.as_ref().map_or(0, EtcdMembership::clients));
        let name = pgc.metadata.name.as_str();
        let nodes = ctx.swarm.nodes().await?;
        let current = instance_incarnations(name, usize::from(pgc.spec.instances), &nodes);
        let view = look(&ctx, &obj, at, &current).await?;
        let leader = view.as_ref().and_then(|v| v.leader().map(str::to_owned));
        let mut holding = None;
        let mut group = Err("not rolled out yet".to_owned());
        let mut unassigned = Vec::new();
        let mut notices = Vec::new();
        if !hold_if_paused(&obj, &mut status.common) {
            let incarnations;
            (unassigned, incarnations) = pin(
                &ctx,
                (&obj, &owner, &pgc),
                (membership.as_ref(), &nodes, view.as_ref()),
                (&old, &mut status),
            )
            .await?;
            let (rotation, started) = rotate::start(&ctx, &pgc, &mut status).await?;
            notices.extend(started);
            let pw = passwords(&ctx, (&owner, &pgc), rotation.as_ref(), &status).await?;
            let network = render::network_name(name);
            let etcd = membership.clone().unwrap_or_default();
            let prepared = converge::prepare(
                &ctx,
                &owner,
                (&network, pgc.spec.network.encrypted),
                &render::contents(&pgc, &pw.generated, at.1),
                |names| {
                    render::render(&Inputs {
                        pgc: &pgc,
                        generated: &pw.generated,
                        secrets: &pw.secrets,
                        config_names: names,
                        etcd: &etcd,
                        incarnations: &incarnations,
                    })
                },
            )
            .await?;

            let stepped =
                next_step(&ctx, (&obj, &owner, at), &old, &prepared, view.as_ref()).await?;
            let Stepped {
                plan, health, step, ..
            } = stepped;
            group = stepped.group;
            let settled = step.switchover.is_none() && step.holding.is_none() && group.is_ok();
            let mut switched = false;
            if let (true, Some(v), Some(l)) = (settled, &view, leader.as_deref()) {
                switched = carry_out(&ctx, &obj, (at, v, l), &nodes, (&old, &mut status)).await?;
            }
            status.common.owned_objects =
                converge::apply(&ctx, (&obj, &owner), &plan, &step.apply, &prepared).await?;
            status.network = Some(network);
            holding = step.holding;
            if switched {
                holding.get_or_insert_with(|| "switchover in progress".to_owned());
            } else if let (true, Some(v), Some(l)) = (settled, &view, leader.as_deref()) {
                if let Some(why) = converge_settings(&ctx, &obj, at, v, l).await? {
                    holding = Some(why);
                }
            }
            let settled_leader = (settled && holding.is_none())
                .then_some(leader.as_deref())
                .flatten();
            let why = next_job(
                &ctx,
                (&obj, &owner, &pgc),
                &mut status,
                (settled_leader, &pw, &health),
                (pgc.spec.etcd.members, &incarnations),
                &mut notices,
            )
            .await?;
            if let Some(why) = why {
                holding.get_or_insert(why);
            }
        }
        let members = match &view {
            Some(v) => with_nodes(&ctx, &v.members).await?,
            None => Vec::new(),
        };
        notices.extend(report::report(
            &report::Look {
                pgc: &pgc,
                old: &old,
                view: view.as_ref(),
                members,
                nodes: &nodes,
                unassigned: &unassigned,
                holding: holding.as_ref(),
                group: &group,
                generation,
            },
            &mut status,
        ));
        status::finish(
            &ctx,
            &obj,
            (&old, &mut status),
            |s| &mut s.common,
            (&notices, holding.is_some()),
        )
        .await
    }

    async fn cleanup(&self, obj: Record, ctx: Arc<Context>) -> Result<(), ReconcileError> {
        let owner = owner_of(&ctx, &obj);
        status::remove_owned(&ctx, &obj, &owner).await?;
        let name = obj.metadata.name.as_str();
        let decoded = decode::<PostgresClusterSpec>(&obj).ok();
        let mut families = families(name, usize::from(u8::MAX), usize::from(u8::MAX));
        if let Some((pgc, _)) = &decoded {
            families = retiring(families, pgc);
        }
        slots::release(&ctx, (&obj, &owner), &families).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::reconcilers::postgres::observe::test_view as view;

    fn spec(instances: u8) -> PostgresClusterSpec {
        serde_json::from_value(serde_json::json!({ "instances": instances })).expect("spec")
    }

    fn running(names: &[&str]) -> BTreeMap<String, ServiceHealth> {
        names
            .iter()
            .map(|n| ((*n).to_owned(), ServiceHealth::Running))
            .collect()
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
        let h = running(&["db-pg-0", "db-pg-1", "db-etcd-0"]);
        let good = view(&[
            ("db-pg-0", "leader", "running", None),
            ("db-pg-1", "replica", "streaming", Some(0)),
        ]);
        assert_eq!(cluster_health(&spec(2), "db", &h, Some(&good)), Ok(()));
        assert!(cluster_health(&spec(2), "db", &h, None).is_err());
        let starting = view(&[
            ("db-pg-0", "leader", "running", None),
            ("db-pg-1", "replica", "starting", None),
        ]);
        assert!(cluster_health(&spec(2), "db", &h, Some(&starting))
            .is_err_and(|e| e.contains("db-pg-1 is starting")));
        let missing = view(&[("db-pg-0", "leader", "running", None)]);
        assert!(cluster_health(&spec(2), "db", &h, Some(&missing))
            .is_err_and(|e| e.contains("not a member")));
        let mut updating = h.clone();
        updating.insert(
            "db-etcd-0".into(),
            ServiceHealth::NotReady("update in progress".into()),
        );
        assert!(cluster_health(&spec(2), "db", &updating, Some(&good)).is_err());
    }
}
