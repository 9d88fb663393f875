//! Talking to Patroni: its view of the cluster (asked from a container on
//! the engine's node), its dynamic configuration kept equal to the spec, and
//! the key of a leader proven dead released.

use std::collections::BTreeMap;
use std::time::Duration;

use haswarm_crds::postgres::PostgresMember;
use haswarm_crds::{EventType, PostgresCluster};

use super::observe::{self, ClusterView};
use super::render;
use super::switchover::switchover;
use crate::reconcilers::status::Notice;
use crate::reconcilers::wait::{Flow, Wait};
use crate::runtime::controller::event;
use crate::runtime::{Context, ReconcileError};
use crate::store::Record;
use crate::swarm::{NodeInfo, SwarmError};

/// Asks Patroni for the cluster's view, leaving out members that are not
/// the current incarnation of their instance (`incarnations`, by service).
pub(super) async fn observe(
    ctx: &Context,
    (pgc, etcd): (&PostgresCluster, u8),
    incarnations: &BTreeMap<String, u32>,
) -> Result<Option<ClusterView>, ReconcileError> {
    let script = |host: &str| observe::rest_get(host, "/cluster");
    let view = patroni_until(ctx, (pgc, etcd), script, |out| {
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
    at: (&PostgresCluster, u8),
    script: impl Fn(&str) -> String,
) -> Result<Option<String>, ReconcileError> {
    patroni_until(ctx, at, script, observe::answered).await
}

/// [`patroni`], taking the first output `accept` takes (a member in the
/// middle of a promotion may answer something else).
pub(super) async fn patroni_until(
    ctx: &Context,
    (pgc, etcd): (&PostgresCluster, u8),
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
    for j in 0..usize::from(etcd) {
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

/// Keeps Patroni's dynamic configuration equal to the spec (parameters,
/// timing, synchronous mode), then restarts members whose new settings need
/// it: one per step, replicas first, the leader once it was switched over.
/// Returns what is in progress, if anything.
pub(super) async fn converge_settings(
    ctx: &Context,
    (pgc, etcd): (&PostgresCluster, u8),
    (view, leader): (&ClusterView, &str),
    notices: &mut Vec<Notice>,
) -> Result<Option<Wait>, ReconcileError> {
    // Any member answers for the cluster.
    let json = |out: &str| serde_json::from_str::<serde_json::Value>(out.trim()).ok();
    let script = |host: &str| observe::rest_get(host, "/config");
    let live = patroni_until(ctx, (pgc, etcd), script, |out| json(out).is_some())
        .await?
        .and_then(|out| json(&out));
    let Some(live) = live else {
        return Ok(Some(settings(
            "waiting for Patroni's dynamic configuration",
        )));
    };
    if let Some(patch) = render::config_patch(&render::dynamic_config(pgc), &live) {
        let script = |host: &str| observe::rest_call(host, "PATCH", "/config", &patch);
        if let Some(answer) = patroni(ctx, (pgc, etcd), script).await? {
            notices.push(if observe::took(&answer) {
                Notice::new(
                    EventType::Normal,
                    "SettingsChanged",
                    format!("Patroni's dynamic configuration now follows the spec: {patch}"),
                )
            } else {
                Notice::new(
                    EventType::Warning,
                    "SettingsRefused",
                    format!("Patroni refused {patch}: {}", answer.trim()),
                )
            });
        }
        return Ok(Some(settings("applying new settings")));
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
        let why = "to restart it with new settings";
        switchover(ctx, (pgc, etcd), view, (leader, None, why), notices).await?;
        return Ok(Some(settings(format!(
            "switching over to restart {leader}"
        ))));
    }
    // The restart goes to the member itself (by name: it may run elsewhere).
    let script = |_: &str| observe::rest_call(first, "POST", "/restart", &serde_json::json!({}));
    if let Some(answer) = patroni(ctx, (pgc, etcd), script).await? {
        notices.push(Notice::new(
            EventType::Normal,
            "Restarted",
            format!(
                "restarted {first} for settings that need it: {}",
                answer.trim()
            ),
        ));
    }
    Ok(Some(settings(format!(
        "restarting {first} for new settings"
    ))))
}

/// A wait of the settings' flow.
fn settings(why: impl Into<String>) -> Wait {
    Wait::new(Flow::Settings, why)
}

/// Releases the leader key of a leader whose container is proven dead (see
/// [`crate::swarm::death::proven_dead`]), so that a replica takes over now rather than
/// when the key's TTL runs out. Returns whether the key was released.
pub(super) async fn release_dead_leader(
    ctx: &Context,
    (pgc, etcd): (&PostgresCluster, u8),
    (leader, patroni_name): (&str, &str),
    (obj, nodes): (&Record, &[NodeInfo]),
) -> Result<bool, ReconcileError> {
    if !pgc.spec.patroni.fast_failover || !pgc.spec.etcd.endpoints.is_empty() {
        return Ok(false);
    }
    if !ctx.swarm.proven_dead(leader, nodes).await? {
        return Ok(false);
    }
    let name = pgc.metadata.name.as_str();
    let script = observe::release_leader_key(name, patroni_name);
    for j in 0..usize::from(etcd) {
        let member = render::etcd_name(name, j);
        match ctx.swarm.exec_in_service(&member, &script).await {
            Ok(Some(out)) => {
                let released = out.contains("SUCCESS");
                if released {
                    // Recorded at once, not with the pass's notices: its
                    // time is when the key went (the failover bench reads it).
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
pub(super) async fn with_nodes(
    ctx: &Context,
    members: &[PostgresMember],
    nodes: &[NodeInfo],
) -> Result<Vec<PostgresMember>, ReconcileError> {
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

/// Patroni's view of the cluster, after releasing the key of a leader that
/// is dead for sure (see [`release_dead_leader`]).
pub(super) async fn look(
    ctx: &Context,
    at: (&PostgresCluster, u8),
    (current, nodes): (&BTreeMap<String, u32>, &[NodeInfo]),
    obj: &Record,
) -> Result<Option<ClusterView>, ReconcileError> {
    let view = observe(ctx, at, current).await?;
    if let Some((dead, patroni_name)) = view
        .as_ref()
        .and_then(|v| Some((v.leader()?.to_owned(), v.patroni_name(v.leader()?))))
    {
        if release_dead_leader(ctx, at, (&dead, &patroni_name), (obj, nodes)).await? {
            // The replicas race for the key now: look again.
            tokio::time::sleep(Duration::from_secs(1)).await;
            return observe(ctx, at, current).await;
        }
    }
    Ok(view)
}
