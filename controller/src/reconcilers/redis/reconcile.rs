//! RedisSentinelGroup, effectful part: password, slots, network, configs,
//! services, and status from what the sentinels report.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use haswarm_crds::meta::OwnedObject;
use haswarm_crds::redis::{RedisReplicaStatus, RedisSentinelGroupStatus};
use haswarm_crds::{ConditionStatus, EventType, RedisSentinelGroup};
use rand::Rng;

use super::observe::{self, SentinelView};
use super::render::{self, purpose, Inputs};
use crate::reconcilers::common::plan_slots;
use crate::runtime::controller::{
    decode, event, hold_if_paused, known_versions, owned_services, owner_of, report_services,
    write_status,
};
use crate::runtime::{Action, Context, ReconcileError, Reconciler};
use crate::store::Record;
use crate::swarm::objects::ContentKind;
use crate::swarm::{Owner, SwarmError};

/// The RedisSentinelGroup reconciler.
#[derive(Debug, Default)]
pub struct RedisGroups;

const KIND: &str = "RedisSentinelGroup";

/// A replica more than this many bytes behind counts as out of sync.
const MAX_LAG_BYTES: u64 = 1 << 20;

/// 32 characters from [A-Za-z0-9]: about 190 bits, no character that needs
/// quoting in a config file or a URL.
fn generate_password() -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..32)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

fn families(name: &str) -> (String, String) {
    let strip = |l: String| l.trim_end_matches(char::is_numeric).to_owned();
    (
        strip(render::instance_slot(name, 0)),
        strip(render::sentinel_slot(name, 0)),
    )
}

/// Pins every instance and sentinel to a node; returns the labels no node could take.
async fn place(ctx: &Context, rsg: &RedisSentinelGroup) -> Result<Vec<String>, ReconcileError> {
    let name = rsg.metadata.name.as_str();
    let nodes = ctx.swarm.nodes().await?;
    let (inst_family, sent_family) = families(name);
    let mut load: HashMap<String, usize> = HashMap::new();
    for n in &nodes {
        let held = n
            .labels
            .keys()
            .filter(|k| k.starts_with(&inst_family) || k.starts_with(&sent_family))
            .count();
        load.insert(n.id.clone(), held);
    }
    let spec = &rsg.spec;
    let plans = [
        plan_slots(
            &inst_family,
            usize::from(spec.instances),
            |i| render::instance_slot(name, i),
            &nodes,
            &spec.placement,
            &load,
        ),
        plan_slots(
            &sent_family,
            usize::from(spec.sentinels.count),
            |j| render::sentinel_slot(name, j),
            &nodes,
            &spec.placement,
            &load,
        ),
    ];
    let mut unassigned = Vec::new();
    for plan in plans {
        for (node, label) in &plan.set {
            ctx.swarm.set_node_label(node, label, Some("true")).await?;
        }
        for (node, label) in &plan.remove {
            ctx.swarm.set_node_label(node, label, None).await?;
        }
        unassigned.extend(plan.unassigned);
    }
    Ok(unassigned)
}

/// The password secret's name and, when haswarm generates it, the value.
async fn password(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
    owner: &Owner,
) -> Result<(String, Option<Vec<u8>>), ReconcileError> {
    if let Some(r) = &rsg.spec.password_secret {
        if ctx.swarm.secret_id(&r.name).await?.is_none() {
            return Err(ReconcileError::Swarm(SwarmError::NotFound(format!(
                "secret {:?} named by spec.passwordSecret",
                r.name
            ))));
        }
        return Ok((r.name.clone(), None));
    }
    let name = rsg.metadata.name.as_str();
    let pw = match ctx.store.credential(KIND, name, purpose::PASSWORD)? {
        Some(pw) => pw,
        None => {
            let pw = generate_password();
            ctx.store
                .put_credential(KIND, name, purpose::PASSWORD, &pw)
                .await?;
            pw
        }
    };
    Ok((
        crate::swarm::objects::content_name(owner, purpose::PASSWORD, &pw),
        Some(pw),
    ))
}

/// Creates the network, configs and secret, then the services with the
/// objects' ids filled in; removes configs and secrets no longer used.
async fn apply(
    ctx: &Context,
    obj: &Record,
    rsg: &RedisSentinelGroup,
    owner: &Owner,
    old: &RedisSentinelGroupStatus,
    status: &mut RedisSentinelGroupStatus,
) -> Result<(), ReconcileError> {
    let name = rsg.metadata.name.as_str();
    let (secret_name, generated) = password(ctx, rsg, owner).await?;
    let network = render::network_name(name);
    ctx.swarm
        .ensure_network(owner, &network, rsg.spec.network.encrypted)
        .await?;
    let contents = render::contents(&rsg.spec, generated.as_deref());
    let names = render::content_names(name, &contents);
    for c in &contents {
        ctx.swarm
            .ensure_content(c.kind, owner, &c.purpose, &c.data)
            .await?;
    }
    let config_ids: HashMap<String, String> = ctx
        .swarm
        .content_objects(ContentKind::Config, owner)
        .await?
        .into_iter()
        .map(|o| (o.name, o.id))
        .collect();
    let secret_id = match generated {
        Some(_) => ctx
            .swarm
            .content_objects(ContentKind::Secret, owner)
            .await?
            .into_iter()
            .find(|o| o.name == secret_name)
            .map(|o| o.id),
        None => ctx.swarm.secret_id(&secret_name).await?,
    }
    .unwrap_or_default();
    let rendered = render::render(&Inputs {
        rsg,
        password_secret: &secret_name,
        generated_password: generated.as_deref(),
        config_names: &names,
    });
    let mut services = rendered.services;
    for s in &mut services {
        if let Some(c) = s
            .spec
            .task_template
            .as_mut()
            .and_then(|t| t.container_spec.as_mut())
        {
            for r in c.secrets.iter_mut().flatten() {
                r.secret_id = Some(secret_id.clone());
            }
            for r in c.configs.iter_mut().flatten() {
                r.config_id = r
                    .config_name
                    .as_ref()
                    .and_then(|n| config_ids.get(n))
                    .cloned();
            }
        }
    }
    let report = ctx
        .swarm
        .converge_services(owner, &services, &known_versions(&old.common))
        .await?;
    report_services(ctx, obj, &report);
    // Old configs and secrets go once no service uses them (Swarm refuses before).
    let keep: Vec<String> = names.values().cloned().collect();
    for kind in [ContentKind::Config, ContentKind::Secret] {
        ctx.swarm.prune_content_objects(kind, owner, &keep).await?;
    }
    let mut owned = owned_services(&report.versions);
    owned.push(OwnedObject {
        kind: "network".into(),
        name: network.clone(),
        version: None,
    });
    let mut contents_owned: BTreeMap<String, &str> = BTreeMap::new();
    for c in &contents {
        if let Some(n) = names.get(&c.purpose) {
            contents_owned.insert(
                n.clone(),
                if c.kind == ContentKind::Secret {
                    "secret"
                } else {
                    "config"
                },
            );
        }
    }
    owned.extend(contents_owned.into_iter().map(|(name, kind)| OwnedObject {
        kind: kind.into(),
        name,
        version: None,
    }));
    status.common.owned_objects = owned;
    status.password_secret = Some(secret_name);
    status.network = Some(network);
    Ok(())
}

/// Asks the sentinels (those running on this engine's node) about the group.
async fn observe(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
) -> Result<Option<(SentinelView, u8)>, ReconcileError> {
    let name = rsg.metadata.name.as_str();
    let query = observe::sentinel_query(&rsg.spec.master_group(&rsg.metadata));
    let mut best: Option<SentinelView> = None;
    let mut answered = 0u8;
    for j in 0..usize::from(rsg.spec.sentinels.count) {
        if let Some(out) = ctx
            .swarm
            .exec_in_service(&render::sentinel_name(name, j), &query)
            .await?
        {
            let view = observe::parse(&out);
            if view.master.is_some() {
                answered += 1;
                if best.is_none() {
                    best = Some(view);
                }
            }
        }
    }
    Ok(best.map(|v| (v, answered)))
}

fn set(
    status: &mut RedisSentinelGroupStatus,
    type_: &str,
    ok: Option<bool>,
    reason: &str,
    message: String,
    generation: Option<u64>,
) {
    let s = match ok {
        Some(true) => ConditionStatus::True,
        Some(false) => ConditionStatus::False,
        None => ConditionStatus::Unknown,
    };
    status
        .common
        .set_condition(type_, s, reason, message, generation, Utc::now());
}

impl Reconciler for RedisGroups {
    const KIND: &'static str = KIND;

    async fn reconcile(&self, obj: Record, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
        let (rsg, old) = decode::<haswarm_crds::RedisSentinelGroupSpec>(&obj)?;
        let owner = owner_of(&ctx, &obj);
        let generation = obj.metadata.generation;
        let mut status = old.clone();
        let mut unassigned = Vec::new();
        if !hold_if_paused(&obj, &mut status.common) {
            unassigned = place(&ctx, &rsg).await?;
            apply(&ctx, &obj, &rsg, &owner, &old, &mut status).await?;
        }

        let observed = observe(&ctx, &rsg).await?;
        let sentinels = rsg.spec.sentinels.count;
        let quorum = rsg.spec.quorum();
        match &observed {
            None => {
                status.master = None;
                status.replicas.clear();
                status.sentinels_seen = None;
                let why = if unassigned.is_empty() {
                    "no sentinel answers yet (haswarm reads them on the node of the engine it talks to)".to_owned()
                } else {
                    format!(
                        "no node can take {}: check spec.placement and node availability",
                        unassigned.join(", ")
                    )
                };
                for type_ in ["MasterAvailable", "QuorumHealthy", "ReplicasInSync"] {
                    set(
                        &mut status,
                        type_,
                        None,
                        "NoSentinelAnswer",
                        why.clone(),
                        generation,
                    );
                }
                set(
                    &mut status,
                    "Ready",
                    Some(false),
                    "Starting",
                    why,
                    generation,
                );
            }
            Some((view, _)) => {
                let master = view.master.clone();
                if old.master.is_some() && old.master != master {
                    event(
                        &ctx,
                        &obj,
                        EventType::Warning,
                        "MasterChanged",
                        &format!(
                            "master moved from {} to {}",
                            old.master.as_deref().unwrap_or("?"),
                            master.as_deref().unwrap_or("?")
                        ),
                    );
                }
                status.master = master.clone();
                let seen = u8::try_from(view.other_sentinels + 1).unwrap_or(u8::MAX);
                status.sentinels_seen = Some(seen);
                status.replicas = view
                    .replicas
                    .iter()
                    .map(|r| RedisReplicaStatus {
                        name: r.host.clone(),
                        link_up: r.link_up && !r.flags.contains("down"),
                        lag_bytes: match (view.master_offset, r.offset) {
                            (Some(m), Some(o)) => Some(m.saturating_sub(o)),
                            _ => None,
                        },
                    })
                    .collect();
                let master_ok = view.master_up();
                set(
                    &mut status,
                    "MasterAvailable",
                    Some(master_ok),
                    if master_ok { "MasterUp" } else { "MasterDown" },
                    format!(
                        "master {} ({})",
                        master.as_deref().unwrap_or("?"),
                        view.master_flags
                    ),
                    generation,
                );
                let quorum_ok = seen >= quorum && seen * 2 > sentinels;
                set(
                    &mut status,
                    "QuorumHealthy",
                    Some(quorum_ok),
                    if quorum_ok {
                        "QuorumReached"
                    } else {
                        "TooFewSentinels"
                    },
                    format!("{seen} of {sentinels} sentinels known, quorum {quorum}"),
                    generation,
                );
                let expected = usize::from(rsg.spec.instances.saturating_sub(1));
                let in_sync = status
                    .replicas
                    .iter()
                    .filter(|r| r.link_up && r.lag_bytes.is_none_or(|l| l <= MAX_LAG_BYTES))
                    .count();
                let replicas_ok = in_sync >= expected;
                set(
                    &mut status,
                    "ReplicasInSync",
                    Some(replicas_ok),
                    if replicas_ok {
                        "InSync"
                    } else {
                        "ReplicasBehind"
                    },
                    format!("{in_sync} of {expected} replicas linked and in sync"),
                    generation,
                );
                let ready = master_ok && quorum_ok && replicas_ok;
                set(
                    &mut status,
                    "Ready",
                    Some(ready),
                    if ready { "Healthy" } else { "Degraded" },
                    format!(
                        "master {}, {in_sync}/{expected} replicas in sync, {seen}/{sentinels} sentinels",
                        master.as_deref().unwrap_or("unknown")
                    ),
                    generation,
                );
            }
        }
        status.common.observed_generation = generation;
        if status != old {
            write_status(&ctx, &obj, &status).await?;
        }
        // The data plane changes without Swarm events (failovers): poll it.
        let ready = status
            .common
            .condition("Ready")
            .is_some_and(|c| c.status == ConditionStatus::True);
        Ok(Action::requeue(Duration::from_secs(if ready {
            10
        } else {
            3
        })))
    }

    async fn cleanup(&self, obj: Record, ctx: Arc<Context>) -> Result<(), ReconcileError> {
        let owner = owner_of(&ctx, &obj);
        let report = ctx
            .swarm
            .converge_services(&owner, &[], &BTreeMap::new())
            .await?;
        report_services(&ctx, &obj, &report);
        ctx.swarm.remove_networks(&owner).await?;
        for kind in [ContentKind::Config, ContentKind::Secret] {
            ctx.swarm.prune_content_objects(kind, &owner, &[]).await?;
        }
        let (inst_family, sent_family) = families(obj.metadata.name.as_str());
        for n in ctx.swarm.nodes().await? {
            for k in n
                .labels
                .keys()
                .filter(|k| k.starts_with(&inst_family) || k.starts_with(&sent_family))
            {
                ctx.swarm.set_node_label(&n.id, k, None).await?;
            }
        }
        // Data volumes stay: reclaimPolicy Retain is the default, and removing
        // per-node volumes for Delete is not implemented yet.
        if let Ok((rsg, _)) = decode::<haswarm_crds::RedisSentinelGroupSpec>(&obj) {
            if rsg.spec.storage.reclaim_policy == haswarm_crds::common::ReclaimPolicy::Delete {
                event(
                    &ctx,
                    &obj,
                    EventType::Warning,
                    "VolumesKept",
                    "reclaimPolicy Delete: per-node data volumes are not removed yet; remove <name>-redis-<i>-data with `docker volume rm` on each node",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_are_long_and_plain() {
        let a = generate_password();
        assert_eq!(a.len(), 32);
        assert!(a.iter().all(u8::is_ascii_alphanumeric));
        assert_ne!(a, generate_password());
    }

    #[test]
    fn slot_families_are_the_label_prefixes() {
        let (i, s) = families("cache");
        assert_eq!(i, "io.haswarm.redissentinelgroup.cache.redis.slot-");
        assert_eq!(s, "io.haswarm.redissentinelgroup.cache.sentinel.slot-");
        assert!(render::instance_slot("cache", 12).starts_with(&i));
    }
}
