//! PostgresCluster's reconcile: pin instances and etcd members to nodes,
//! create the network, configs and password secrets, roll the services out
//! (replicas first, a switchover before the leader is touched), then report
//! (passwords and status have their own modules).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use haswarm_crds::postgres::{PostgresMember, SWITCHOVER_ANNOTATION};
use haswarm_crds::{EventType, PostgresCluster, PostgresClusterSpec};

use super::etcd;
use super::observe::{self, ClusterView};
use super::passwords::{advance_rotation, passwords, set_logins};
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
use crate::swarm::{ServiceHealth, SwarmError};

pub(super) const KIND: &str = "PostgresCluster";

/// A replica further behind than this is not in sync (and is no candidate
/// for a planned switchover).
pub(super) const MAX_LAG_BYTES: u64 = 16 << 20;

/// The PostgresCluster reconciler.
#[derive(Debug, Default)]
pub struct PostgresClusters;

/// Asks Patroni for the cluster's view, leaving out members that are not
/// the current incarnation of their instance (`incarnations`, by service).
async fn observe(
    ctx: &Context,
    pgc: &PostgresCluster,
    incarnations: &BTreeMap<String, u32>,
) -> Result<Option<ClusterView>, ReconcileError> {
    let script = |host: &str| observe::rest_get(host, "/cluster");
    let view = patroni_until(ctx, pgc, script, |out| {
        observe::parse_cluster(out).is_some()
    })
    .await?
    .and_then(|out| observe::parse_cluster(&out))
    .map(|v| v.current(|s| incarnations.get(s).copied().unwrap_or(0)));
    if let Some(v) = view.as_ref().filter(|v| !v.stale.is_empty()) {
        tracing::info!(stale = ?v.stale, "Patroni lists members of an old incarnation; they are not this cluster's");
    }
    Ok(view)
}

/// Runs a Patroni REST script (`script(host)`) from a container of the
/// cluster on this engine's node: the engine can only exec into its own
/// containers, and Patroni's API is reachable only on the cluster's network.
/// An instance here asks its own Patroni; failing that (no instance on this
/// node, as when instances are spread over more nodes, or the one here is
/// down) an etcd member here asks each instance by its service name. `None`
/// when nothing here got an answer.
pub(super) async fn patroni(
    ctx: &Context,
    pgc: &PostgresCluster,
    script: impl Fn(&str) -> String,
) -> Result<Option<String>, ReconcileError> {
    patroni_until(ctx, pgc, script, observe::answered).await
}

/// [`patroni`], taking the first output `accept` takes (a member in the
/// middle of a promotion may answer something else).
pub(super) async fn patroni_until(
    ctx: &Context,
    pgc: &PostgresCluster,
    script: impl Fn(&str) -> String,
    accept: impl Fn(&str) -> bool,
) -> Result<Option<String>, ReconcileError> {
    let name = pgc.metadata.name.as_str();
    let instances: Vec<String> = (0..usize::from(pgc.spec.instances))
        .map(|i| render::instance_name(name, i))
        .collect();
    let local = script("127.0.0.1");
    for service in &instances {
        match ctx.swarm.exec_in_service(service, &local).await {
            Ok(Some(out)) if accept(&out) => return Ok(Some(out)),
            Ok(_) => {}
            Err(SwarmError::TimedOut(why)) => {
                tracing::warn!(service, why, "Patroni did not answer");
            }
            Err(e) => return Err(e.into()),
        }
    }
    if !pgc.spec.etcd.endpoints.is_empty() {
        return Ok(None);
    }
    for j in 0..usize::from(pgc.spec.etcd.members) {
        let member = render::etcd_name(name, j);
        for service in &instances {
            match ctx.swarm.exec_in_service(&member, &script(service)).await {
                // This member does not run here: the next one might.
                Ok(None) => break,
                Ok(Some(out)) if accept(&out) => return Ok(Some(out)),
                Ok(Some(_)) => {}
                // A member's image of the user's choosing may lack python3
                // or a shell: then it cannot relay.
                Err(e) => {
                    tracing::debug!(member, error = %e, "no relay through etcd");
                    break;
                }
            }
        }
    }
    Ok(None)
}

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

/// Keeps Patroni's dynamic configuration equal to the spec (parameters,
/// timing, synchronous mode), then restarts members whose new settings need
/// it: one per step, replicas first, the leader once it was switched over.
/// Returns what is in progress, if anything.
async fn converge_settings(
    ctx: &Context,
    obj: &Record,
    pgc: &PostgresCluster,
    view: &ClusterView,
    leader: &str,
) -> Result<Option<String>, ReconcileError> {
    // Any member answers for the cluster.
    let json = |out: &str| serde_json::from_str::<serde_json::Value>(out.trim()).ok();
    let script = |host: &str| observe::rest_get(host, "/config");
    let live = patroni_until(ctx, pgc, script, |out| json(out).is_some())
        .await?
        .and_then(|out| json(&out));
    let Some(live) = live else {
        return Ok(Some(
            "waiting for Patroni's dynamic configuration".to_owned(),
        ));
    };
    if let Some(patch) = render::config_patch(&render::dynamic_config(pgc), &live) {
        let script = |host: &str| observe::rest_call(host, "PATCH", "/config", &patch);
        if let Some(answer) = patroni(ctx, pgc, script).await? {
            if answer.trim_start().starts_with("200") {
                event(
                    ctx,
                    obj,
                    EventType::Normal,
                    "SettingsChanged",
                    &format!("Patroni's dynamic configuration now follows the spec: {patch}"),
                );
            } else {
                event(
                    ctx,
                    obj,
                    EventType::Warning,
                    "SettingsRefused",
                    &format!("Patroni refused {patch}: {}", answer.trim()),
                );
            }
        }
        return Ok(Some("applying new settings".to_owned()));
    }
    let pending: Vec<&str> = view
        .members
        .iter()
        .filter(|m| m.pending_restart)
        .map(|m| m.name.as_str())
        .collect();
    let Some(first) = pending
        .iter()
        .find(|m| **m != leader)
        .or_else(|| pending.first())
    else {
        return Ok(None);
    };
    if *first == leader {
        switchover(
            ctx,
            obj,
            pgc,
            view,
            leader,
            None,
            "to restart it with new settings",
        )
        .await?;
        return Ok(Some(format!("switching over to restart {leader}")));
    }
    // The restart goes to the member itself (by name: it may run elsewhere).
    let script = |_: &str| observe::rest_call(first, "POST", "/restart", &serde_json::json!({}));
    if let Some(answer) = patroni(ctx, pgc, script).await? {
        event(
            ctx,
            obj,
            EventType::Normal,
            "Restarted",
            &format!(
                "restarted {first} for settings that need it: {}",
                answer.trim()
            ),
        );
    }
    Ok(Some(format!("restarting {first} for new settings")))
}

/// Releases the leader key of a leader whose container is proven dead (see
/// [`observe::proven_dead`]), so that a replica takes over now rather than
/// when the key's TTL runs out. Returns whether the key was released.
async fn release_dead_leader(
    ctx: &Context,
    obj: &Record,
    pgc: &PostgresCluster,
    (leader, patroni_name): (&str, &str),
) -> Result<bool, ReconcileError> {
    if !pgc.spec.patroni.fast_failover || !pgc.spec.etcd.endpoints.is_empty() {
        return Ok(false);
    }
    let tasks = ctx.swarm.tasks(leader).await?;
    let nodes = ctx.swarm.nodes().await?;
    let ready = |id: &str| nodes.iter().any(|n| n.id == id && n.ready);
    if !observe::proven_dead(&tasks, ready) {
        return Ok(false);
    }
    let name = pgc.metadata.name.as_str();
    let script = observe::release_leader_key(name, patroni_name);
    for j in 0..usize::from(pgc.spec.etcd.members) {
        let member = render::etcd_name(name, j);
        match ctx.swarm.exec_in_service(&member, &script).await {
            Ok(Some(out)) => {
                let released = out.contains("SUCCESS");
                if released {
                    event(
                        ctx,
                        obj,
                        EventType::Warning,
                        "LeaderReleased",
                        &format!("the container of leader {leader} ended on a node that answers: released its leader key so a replica takes over without waiting {}s", pgc.spec.patroni.ttl),
                    );
                } else {
                    tracing::info!(leader, answer = out.trim(), "leader key not released");
                }
                return Ok(released);
            }
            Ok(None) => {}
            Err(SwarmError::TimedOut(why)) => tracing::warn!(member, why, "etcd did not answer"),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(false)
}

/// Members with the host name of the node their running task is on: the
/// task Swarm wants running (a task it replaced on a node that went down
/// still reads running, its node having said nothing since).
async fn with_nodes(
    ctx: &Context,
    members: &[PostgresMember],
) -> Result<Vec<PostgresMember>, ReconcileError> {
    let nodes = ctx.swarm.nodes().await?;
    let mut out = Vec::with_capacity(members.len());
    for m in members {
        let tasks = ctx.swarm.tasks(&m.name).await?;
        let node = tasks
            .iter()
            .find(|t| {
                t.desired_state == Some(bollard::models::TaskState::RUNNING)
                    && t.status.as_ref().and_then(|s| s.state)
                        == Some(bollard::models::TaskState::RUNNING)
            })
            .and_then(|t| t.node_id.as_deref())
            .and_then(|id| nodes.iter().find(|n| n.id == id))
            .map(|n| n.hostname.clone());
        out.push(PostgresMember { node, ..m.clone() });
    }
    Ok(out)
}

impl Reconciler for PostgresClusters {
    const KIND: &'static str = KIND;

    async fn reconcile(&self, obj: Record, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
        let (mut pgc, old) = decode::<PostgresClusterSpec>(&obj)?;
        let owner = owner_of(&ctx, &obj);
        let generation = obj.metadata.generation;
        let mut status = old.clone();
        // The etcd members run now, which move one at a time towards the
        // spec's; Patroni is told only of the voters.
        let etcd_wanted = pgc.spec.etcd.members;
        let membership = etcd::membership(&pgc.spec, &status);
        if let Some(m) = &membership {
            status.etcd_members = None;
            status.etcd_membership = Some(m.clone());
            pgc.spec.etcd.members = m.clients();
        }
        let pgc = pgc;
        let name = pgc.metadata.name.as_str();
        let nodes = ctx.swarm.nodes().await?;
        let current = instance_incarnations(name, usize::from(pgc.spec.instances), &nodes);
        let mut view = observe(&ctx, &pgc, &current).await?;
        if let Some((dead, patroni_name)) = view
            .as_ref()
            .and_then(|v| Some((v.leader()?.to_owned(), v.patroni_name(v.leader()?))))
        {
            if release_dead_leader(&ctx, &obj, &pgc, (&dead, &patroni_name)).await? {
                // The replicas race for the key now: look again.
                tokio::time::sleep(Duration::from_secs(1)).await;
                view = observe(&ctx, &pgc, &current).await?;
            }
        }
        let leader = view.as_ref().and_then(|v| v.leader().map(str::to_owned));
        let mut holding = None;
        let mut group = Err("not rolled out yet".to_owned());
        let mut unassigned = Vec::new();
        if !hold_if_paused(&obj, &mut status.common) {
            let (placed, quorum) = place(
                &ctx,
                (&pgc, membership.as_ref()),
                (&owner, &nodes, &old.common.unavailable_nodes),
                view.as_ref(),
            )
            .await?;
            let incarnations;
            (unassigned, incarnations) = placed.report(&ctx, &obj, &mut status.common);
            if membership.is_some() {
                let (ok, reason, why) = match quorum {
                    Ok(()) => (
                        true,
                        "EtcdQuorum",
                        "the etcd members on nodes that answer keep a quorum".to_owned(),
                    ),
                    Err(why) => (false, "EtcdQuorumLost", why),
                };
                status::set(
                    &mut status.common,
                    "QuorumHealthy",
                    Some(ok),
                    reason,
                    why,
                    generation,
                );
            }
            let rotation = rotate::start(&ctx, &obj, &pgc, &mut status).await?;
            let pw = passwords(&ctx, (&owner, &pgc), rotation.as_ref(), &status).await?;
            let network = render::network_name(name);
            let etcd = membership.clone().unwrap_or_default();
            let prepared = converge::prepare(
                &ctx,
                &owner,
                (&network, pgc.spec.network.encrypted),
                &render::contents(&pgc, &pw.generated),
                |names| {
                    render::render(&Inputs {
                        pgc: &pgc,
                        generated: &pw.generated,
                        secrets: &pw.secrets,
                        config_names: names,
                        etcd: &etcd,
                        incarnations: &incarnations,
                    })
                    .services
                },
            )
            .await?;

            let plan = ctx
                .swarm
                .plan_services(&owner, &prepared.services, &known_versions(&old.common))
                .await?;
            let health = ctx.swarm.service_health(&owner).await?;
            group = cluster_health(&pgc.spec, name, &health, view.as_ref());
            let mut members = rollout::members(
                &plan,
                &health,
                |n| render::is_instance(name, n),
                leader.as_deref(),
            );
            mark_stalled_replicas(&mut members, view.as_ref());
            let step = rollout::next_step(&members, group.clone());
            if !step.apply.is_empty() || step.switchover.is_some() {
                tracing::info!(?step, ?group, "rollout step");
            }
            if let (Some(from), Some(v)) = (&step.switchover, &view) {
                switchover(&ctx, &obj, &pgc, v, from, None, "before changing it").await?;
            }
            let settled = step.switchover.is_none() && step.holding.is_none() && group.is_ok();
            let request = pgc
                .metadata
                .annotations
                .get(SWITCHOVER_ANNOTATION)
                .filter(|r| old.switchover_handled.as_ref() != Some(*r))
                .cloned();
            let mut switched = false;
            let draining = slots::draining(
                &nodes,
                &families(name, usize::from(pgc.spec.instances), 0)[0],
            );
            if let (true, Some(v), Some(l)) = (settled, &view, leader.as_deref()) {
                match switchover::wanted(&pgc, v, l, request, &draining) {
                    switchover::Wanted::Nothing => {}
                    switchover::Wanted::Request(request) => {
                        switched = switchover::handle_request(
                            &ctx,
                            &obj,
                            &pgc,
                            v,
                            l,
                            request,
                            (&old, &mut status),
                        )
                        .await?;
                    }
                    switchover::Wanted::To { to, why } => {
                        switched = switchover(&ctx, &obj, &pgc, v, l, Some(to), &why).await?;
                    }
                    switchover::Wanted::Skipped(why) => {
                        event(&ctx, &obj, EventType::Warning, "SwitchoverSkipped", &why);
                    }
                }
            }
            status.common.owned_objects =
                converge::apply(&ctx, (&obj, &owner), &plan, &step.apply, &prepared).await?;
            status.network = Some(network);
            holding = step.holding;
            if switched {
                holding.get_or_insert_with(|| "switchover in progress".to_owned());
            } else if let (true, Some(v), Some(l)) = (settled, &view, leader.as_deref()) {
                if let Some(why) = converge_settings(&ctx, &obj, &pgc, v, l).await? {
                    holding = Some(why);
                }
            }
            let settled_leader = (settled && holding.is_none())
                .then_some(leader.as_deref())
                .flatten();
            // One job at a time: the logins, the superuser's rotation, then
            // etcd's membership.
            let mut why =
                set_logins(&ctx, &obj, (&owner, &pgc), &mut status, settled_leader, &pw).await?;
            if why.is_none() {
                why =
                    advance_rotation(&ctx, &obj, (&owner, &pgc), &mut status, settled_leader, &pw)
                        .await?;
            }
            if why.is_none() {
                why = etcd::advance(
                    &ctx,
                    &obj,
                    (&owner, &pgc),
                    &mut status,
                    (etcd_wanted, &incarnations),
                    (settled_leader.is_some(), &health),
                )
                .await?;
            }
            if let Some(why) = why {
                holding.get_or_insert(why);
            }
        }
        let members = match &view {
            Some(v) => with_nodes(&ctx, &v.members).await?,
            None => Vec::new(),
        };
        let notices = report::report(
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
        );
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

    use super::observe::test_view as view;

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
