//! Talking to a RedisSentinelGroup's sentinels: what they say (the data
//! plane's facts of a pass) and the commands haswarm sends them, from a
//! container of the group on the engine's node.

use std::collections::BTreeMap;

use haswarm_crds::{EventType, RedisSentinelGroup};

use super::observe::{self, SentinelView};
use super::reconcile::RedisGroups;
use super::render;
use crate::reconcilers::outline::Stateful;
use crate::reconcilers::slots;
use crate::reconcilers::status::Notice;
use crate::reconcilers::wait::{Flow, Wait};
use crate::runtime::{Context, ReconcileError};
use crate::swarm::{NodeInfo, SwarmError};

/// How long one hold of the master's writes lasts during a switchover. The
/// script renews it until the old master follows the promoted replica, so
/// this bounds the hold only if the script dies; the first one also covers
/// the replicas catching up (5 s at most). The whole script must end within
/// the exec limit (20 s).
const SWITCHOVER_PAUSE_MS: u64 = 8_000;

/// Whether `sentinel` can be asked to hand `from`'s role over now: it
/// follows `from`, which answers, and knows every other instance as a
/// replica that is not down. A sentinel just reset (after a member moved)
/// rediscovers the replicas from the master's INFO only every 10 s; asked
/// before, it could promote none, and the hold on the master's writes
/// would make the other sentinels see it down (their PINGs queue behind
/// the held hello PUBLISH) and fail over on their own. Nor is a sentinel
/// in TILT asked: it answers OK but carries the failover out only once
/// TILT ends, after the hold, when the old master has taken writes again
/// that a replica left out of the failover may have acknowledged (seen:
/// 14 s late, 14 acknowledged writes lost). Pure.
pub(super) fn can_hand_over(
    view: &SentinelView,
    from: &str,
    instances: &[String],
) -> Result<(), String> {
    if view.tilt {
        return Err("it is in TILT mode".to_owned());
    }
    if view.master.as_deref() != Some(from) || !view.master_up() {
        return Err(format!(
            "it follows {} ({})",
            view.master.as_deref().unwrap_or("no master"),
            view.master_flags
        ));
    }
    let unknown: Vec<&str> = instances
        .iter()
        .filter(|i| i.as_str() != from)
        .filter(|i| {
            !view.replicas.iter().any(|r| {
                &r.host == *i && !r.flags.contains("down") && !r.flags.contains("disconnected")
            })
        })
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "it does not know {} as a replica yet",
            unknown.join(", ")
        ))
    }
}

/// How long the replicas may take to reach the master's offset while its
/// writes are held: a third of down-after, so that the hold ends well
/// before the sentinels could call the master down (between 0.3 and 5 s).
fn catch_up_ms(rsg: &RedisSentinelGroup) -> u64 {
    (rsg.spec.sentinels.down_after.as_millis() / 3).clamp(300, 5_000)
}

/// Hands the master role to a replica with no acknowledged write lost: the
/// master's writes held until the replicas caught up, then `SENTINEL
/// FAILOVER` (see [`observe::graceful_failover`]), asked of the first
/// sentinel on this engine's node that [`can_hand_over`].
pub(super) async fn switchover(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
    (from, why): (&str, &str),
    views: &[(String, SentinelView)],
    notices: &mut Vec<Notice>,
) -> Result<(), ReconcileError> {
    let group = rsg.spec.master_group(&rsg.metadata);
    let script = observe::graceful_failover(&group, SWITCHOVER_PAUSE_MS, catch_up_ms(rsg));
    let instances: Vec<String> = (0..usize::from(rsg.spec.instances))
        .map(|i| render::instance_name(rsg.metadata.name.as_str(), i))
        .collect();
    for (sentinel, view) in views {
        if let Err(why) = can_hand_over(view, from, &instances) {
            tracing::info!(sentinel, why, "not asking this sentinel to switch over");
            continue;
        }
        if let Some(out) = ctx.swarm.exec_in_service(sentinel, &script).await? {
            let out = out.trim();
            tracing::info!(sentinel, steps = out, "switchover");
            if out.lines().last() == Some("OK") {
                notices.push(Notice::new(
                    EventType::Normal,
                    "Switchover",
                    format!("asked the sentinels to move the master role away from {from} {why}"),
                ));
            } else {
                tracing::info!(sentinel, answer = out, "switchover not started");
            }
            return Ok(());
        }
    }
    Ok(())
}

/// `haswarmctl node drain`: a master on a node haswarm drains hands its
/// role over before its slot may move (the sentinels choose the replica;
/// one on the same node moves too, and is handed over from in turn).
/// Returns what is in progress.
pub(super) async fn drain_master(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
    (views, nodes): (&[(String, SentinelView)], &[NodeInfo]),
    notices: &mut Vec<Notice>,
) -> Result<Option<Wait>, ReconcileError> {
    let Some(master) = views.first().and_then(|(_, v)| v.master.as_deref()) else {
        return Ok(None);
    };
    let name = rsg.metadata.name.as_str();
    let data = &RedisGroups::families(name, (usize::from(rsg.spec.instances), 0))[0];
    let Some(node) = slots::draining(nodes, data).remove(master) else {
        return Ok(None);
    };
    let why = format!("because its node {node} is being drained");
    switchover(ctx, rsg, (master, &why), views, notices).await?;
    Ok(Some(Wait::new(
        Flow::Switchover,
        format!("switching the master over: {node} drains"),
    )))
}

/// Sentinels never forget a sentinel or replica they once saw; after a scale
/// down they would count removed sentinels against the majority a failover
/// needs, and after a member moved node they would list its replaced
/// incarnation beside it. Resets one sentinel per pass, and only while every
/// other sentinel knows the whole group (as Redis's documentation asks: one
/// at a time).
pub(super) async fn forget_departed(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
    views: &[(String, SentinelView)],
) -> Result<(), ReconcileError> {
    let name = rsg.metadata.name.as_str();
    let instances: Vec<String> = (0..usize::from(rsg.spec.instances))
        .map(|i| render::instance_name(name, i))
        .collect();
    let Some(sentinel) =
        observe::stale_sentinel(views, usize::from(rsg.spec.sentinels.count), &instances)
    else {
        return Ok(());
    };
    let group = rsg.spec.master_group(&rsg.metadata);
    tracing::info!(
        sentinel,
        "resetting a sentinel that remembers departed members"
    );
    let probe = probe(ctx, rsg).await?;
    at_sentinel(ctx, &sentinel, probe.as_deref(), |host| {
        observe::sentinel_command(host, &format!("SENTINEL RESET {group}"))
    })
    .await?;
    Ok(())
}

/// Runs a script built for a sentinel's host in that sentinel's container
/// when it runs on this engine's node, else in `probe` (a container of the
/// group here) against the sentinel's service name. `None` when neither
/// runs here.
pub(super) async fn at_sentinel(
    ctx: &Context,
    sentinel: &str,
    probe: Option<&str>,
    script: impl Fn(&str) -> String,
) -> Result<Option<String>, SwarmError> {
    if let Some(out) = ctx
        .swarm
        .exec_in_service(sentinel, &script(observe::OWN_SENTINEL))
        .await?
    {
        return Ok(Some(out));
    }
    match probe {
        Some(probe) if probe != sentinel => {
            ctx.swarm.exec_in_service(probe, &script(sentinel)).await
        }
        _ => Ok(None),
    }
}

/// A service of the group with a running container on this engine's node,
/// sentinels first, to reach the members on other nodes from: each of the
/// group's containers has the password and `redis-cli`.
pub(super) async fn probe(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
) -> Result<Option<String>, SwarmError> {
    let name = rsg.metadata.name.as_str();
    let sentinels =
        (0..usize::from(rsg.spec.sentinels.count)).map(|j| render::sentinel_name(name, j));
    let instances = (0..usize::from(rsg.spec.instances)).map(|i| render::instance_name(name, i));
    for service in sentinels.chain(instances) {
        match ctx.swarm.exec_in_service(&service, "true").await {
            Ok(Some(_)) => return Ok(Some(service)),
            Ok(None) | Err(SwarmError::TimedOut(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Asks every sentinel about the group, those on other nodes from a
/// container of the group on this one (see [`at_sentinel`]); the views of
/// those that know a master, hosts named by member (see
/// [`observe::member_name`]: an incarnation that was replaced is none).
pub(super) async fn observe(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
    nodes: &[NodeInfo],
) -> Result<Vec<(String, SentinelView)>, ReconcileError> {
    let name = rsg.metadata.name.as_str();
    let counts = (
        usize::from(rsg.spec.instances),
        usize::from(rsg.spec.sentinels.count),
    );
    let current: BTreeMap<String, u32> = RedisGroups::families(name, counts)
        .iter()
        .flat_map(|f| f.incarnations(nodes))
        .collect();
    let group = rsg.spec.master_group(&rsg.metadata);
    let probe = probe(ctx, rsg).await?;
    let mut views = Vec::new();
    for j in 0..usize::from(rsg.spec.sentinels.count) {
        let sentinel = render::sentinel_name(name, j);
        let query = |host: &str| observe::sentinel_query(&group, host);
        // A sentinel that does not answer in time is one less view, as an
        // unreachable sentinel is: the others still tell the truth.
        let out = match at_sentinel(ctx, &sentinel, probe.as_deref(), query).await {
            Ok(out) => out,
            Err(SwarmError::TimedOut(why)) => {
                tracing::warn!(sentinel, why, "a sentinel did not answer");
                None
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(out) = out {
            let view = observe::parse(&out).resolve(|s| current.get(s).copied());
            if view.master.is_some() {
                views.push((sentinel, view));
            }
        }
    }
    // Right after a failover some sentinels still follow the old master:
    // the highest configuration epoch is the current truth. Among equals, a
    // sentinel in TILT mode comes last: it flags nothing down while in it,
    // so it calls a master up that stopped answering.
    views.sort_by_key(|(_, v)| (std::cmp::Reverse(v.config_epoch), v.tilt));
    Ok(views)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcilers::redis::observe::ReplicaView;

    fn replica(host: &str, flags: &str) -> ReplicaView {
        ReplicaView {
            host: host.into(),
            link_up: true,
            flags: flags.into(),
            ..ReplicaView::default()
        }
    }

    fn view(master: Option<&str>, flags: &str, replicas: &[(&str, &str)]) -> SentinelView {
        SentinelView {
            master: master.map(Into::into),
            master_flags: flags.into(),
            replicas: replicas.iter().map(|(h, f)| replica(h, f)).collect(),
            ..SentinelView::default()
        }
    }

    #[test]
    fn a_sentinel_is_asked_to_hand_over_only_when_it_could_promote_every_replica() {
        let instances: Vec<String> = (0..3).map(|i| format!("c-redis-{i}")).collect();
        let both = [("c-redis-0", "slave"), ("c-redis-2", "slave")];
        let cases: &[(&str, SentinelView, Result<(), &str>)] = &[
            (
                "knows both",
                view(Some("c-redis-1"), "master", &both),
                Ok(()),
            ),
            (
                "just reset: knows none",
                view(Some("c-redis-1"), "master", &[]),
                Err("it does not know c-redis-0, c-redis-2 as a replica yet"),
            ),
            (
                "one down",
                view(
                    Some("c-redis-1"),
                    "master",
                    &[("c-redis-0", "slave"), ("c-redis-2", "slave,s_down")],
                ),
                Err("it does not know c-redis-2 as a replica yet"),
            ),
            (
                "follows another",
                view(Some("c-redis-0"), "master", &both),
                Err("it follows c-redis-0 (master)"),
            ),
            (
                "master down",
                view(Some("c-redis-1"), "master,s_down", &both),
                Err("it follows c-redis-1 (master,s_down)"),
            ),
            (
                "no master",
                view(None, "", &both),
                Err("it follows no master ()"),
            ),
            (
                "in TILT",
                SentinelView {
                    tilt: true,
                    ..view(Some("c-redis-1"), "master", &both)
                },
                Err("it is in TILT mode"),
            ),
        ];
        for (case, v, want) in cases {
            let got = can_hand_over(v, "c-redis-1", &instances);
            assert_eq!(got, want.map_err(String::from), "{case}");
        }
    }
}
