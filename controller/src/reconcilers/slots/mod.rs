//! Pinning a resource's stateful members to nodes by slot labels: the
//! effectful half of [`common::plan_slots`], shared by every kind.

use std::collections::HashMap;

use chrono::Utc;
use haswarm_crds::common::{Placement, ReclaimPolicy, Storage};

use super::common::{plan_slots, Moves};
use super::reclaim::{self, Reclaimed, SlotVolume};
use crate::runtime::controller::{Context, ReconcileError};
use crate::swarm::{NodeInfo, Owner};

/// What becomes of the data volume of a slot that leaves its family (its
/// member scaled away) under `reclaimPolicy: Delete`: it is erased, as at
/// deletion, before the slot's label goes (the label says which node holds
/// it; without it the volume would be left behind for good).
#[derive(Clone, Copy, Debug)]
pub struct Retire<'a> {
    /// The member's image (already on that node) for the erase job.
    pub image: &'a str,
    /// The member's storage.
    pub storage: &'a Storage,
}

impl<'a> Retire<'a> {
    /// `Some` when the resource's policy says data goes with its member.
    pub fn of(policy: ReclaimPolicy, image: &'a str, storage: &'a Storage) -> Option<Self> {
        (policy == ReclaimPolicy::Delete).then_some(Self { image, storage })
    }
}

/// What [`place`] did besides pinning.
#[derive(Debug, Default)]
pub struct Placed {
    /// Slot labels no node could take.
    pub unassigned: Vec<String>,
    /// Data volumes of slots that left, erased (`reclaimPolicy: Delete`).
    pub reclaimed: Reclaimed,
}

/// One family of slots: a role of the resource (data instances, sentinels,
/// etcd members), each slot pinning the service of the same index.
pub struct Family<'a> {
    /// How many slots there should be.
    pub count: usize,
    /// The slot label of index `i`.
    pub slot: Box<dyn Fn(usize) -> String + Send + Sync + 'a>,
    /// The service of index `i`.
    pub service: Box<dyn Fn(usize) -> String + Send + Sync + 'a>,
    /// Whether a slot that leaves takes its data volume with it.
    pub retire: Option<Retire<'a>>,
}

impl std::fmt::Debug for Family<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("prefix", &self.prefix())
            .field("count", &self.count)
            .finish()
    }
}

impl Family<'_> {
    /// The labels' common prefix.
    pub fn prefix(&self) -> String {
        (self.slot)(0).trim_end_matches(char::is_numeric).to_owned()
    }

    /// The data volume of the member of index `i`.
    pub fn volume(&self, i: usize) -> String {
        format!("{}-data", (self.service)(i))
    }

    /// The index of a label of this family.
    pub fn index(&self, label: &str) -> Option<usize> {
        label.strip_prefix(&self.prefix())?.parse().ok()
    }
}

impl Placed {
    /// Says (event `VolumesReclaimed`) which volumes of members scaled away
    /// were erased; returns the labels no node could take.
    pub fn report(self, ctx: &Context, obj: &crate::store::Record) -> Vec<String> {
        if !self.reclaimed.erased.is_empty() {
            crate::runtime::controller::event(
                ctx,
                obj,
                haswarm_crds::EventType::Normal,
                "VolumesReclaimed",
                &format!(
                    "members scaled away ({}): {}",
                    self.reclaimed.erased.join(", "),
                    self.reclaimed.summary()
                ),
            );
        }
        self.unassigned
    }
}

/// Pins every slot of every family to a node and says which labels no node
/// could take. Slots on lost nodes move unless listed in `stay` (a member
/// whose data is the only copy must not restart empty elsewhere). A slot
/// beyond the count is unpinned only once its service is gone: unpinning
/// first would have Swarm stop the task at once, before a rollout could move
/// its role away. Its data volume is erased first when the family says so
/// ([`Retire`]); while that cannot be done (node down, job failed) the label
/// stays, and the next pass tries again.
///
/// # Errors
/// Engine errors.
pub async fn place(
    ctx: &Context,
    owner: &Owner,
    placement: &Placement,
    families: &[Family<'_>],
    stay: &[String],
) -> Result<Placed, ReconcileError> {
    let nodes = ctx.swarm.nodes().await?;
    let now = Utc::now();
    let moves = Moves {
        lost: nodes
            .iter()
            .filter(|n| n.lost(now, ctx.settings.node_loss_grace))
            .map(|n| n.id.clone())
            .collect(),
        stay,
    };
    let services = ctx.swarm.owned_services(owner).await?;
    let load = load(&nodes, families);
    let mut placed = Placed::default();
    for f in families {
        let mut plan = plan_slots(
            &f.prefix(),
            f.count,
            &f.slot,
            &nodes,
            placement,
            &load,
            &moves,
        );
        plan.remove.retain(|(_, l)| {
            f.index(l)
                .is_none_or(|i| !services.contains_key(&(f.service)(i)))
        });
        for (node, label) in &plan.set {
            ctx.swarm.set_node_label(node, label, Some("true")).await?;
        }
        for (node, label) in &plan.remove {
            let left = f.index(label).filter(|i| *i >= f.count);
            if let (Some(i), Some(retire)) = (left, f.retire) {
                let volume = f.volume(i);
                match erase(ctx, owner, retire, (&nodes, node), (&volume, label)).await {
                    Some(done) => placed.reclaimed.merge(done),
                    None => continue,
                }
            }
            ctx.swarm.set_node_label(node, label, None).await?;
        }
        placed.unassigned.extend(plan.unassigned);
    }
    Ok(placed)
}

/// Erases the data volume of a slot that left, on its node; `None` when it
/// cannot be done now (said in the log).
async fn erase(
    ctx: &Context,
    owner: &Owner,
    retire: Retire<'_>,
    (nodes, node): (&[NodeInfo], &str),
    (volume, label): (&str, &str),
) -> Option<Reclaimed> {
    // A job on a node that is down would only wait out its limit.
    if !nodes.iter().any(|n| n.id == node && n.ready) {
        tracing::info!(
            volume,
            node,
            "the volume of a member scaled away waits for its node"
        );
        return None;
    }
    let target = [SlotVolume {
        volume: volume.to_owned(),
        slot: label.to_owned(),
    }];
    match reclaim::reclaim(ctx, owner, retire.image, retire.storage, &target).await {
        Ok(done) => Some(done),
        Err(e) => {
            tracing::warn!(volume, error = %e, "could not erase the volume of a member scaled away; retrying");
            None
        }
    }
}

/// The data slots that must not move off a lost node: the primary's (moved,
/// it would start empty while it holds the only current copy), or every
/// one while no primary is known.
pub fn stay(data: &Family<'_>, primary: Option<&str>) -> Vec<String> {
    (0..data.count)
        .filter(|i| primary.is_none_or(|p| (data.service)(*i) == p))
        .map(|i| (data.slot)(i))
        .collect()
}

/// Slots of the whole resource each node holds (to balance roles too).
fn load(nodes: &[NodeInfo], families: &[Family<'_>]) -> HashMap<String, usize> {
    let prefixes: Vec<String> = families.iter().map(Family::prefix).collect();
    nodes
        .iter()
        .map(|n| {
            let held = n
                .labels
                .keys()
                .filter(|k| prefixes.iter().any(|p| k.starts_with(p)))
                .count();
            (n.id.clone(), held)
        })
        .collect()
}

/// Removes every slot label of `families` from every node.
///
/// # Errors
/// Engine errors.
pub async fn unpin_all(
    ctx: &Context,
    nodes: &[NodeInfo],
    families: &[Family<'_>],
) -> Result<(), ReconcileError> {
    let prefixes: Vec<String> = families.iter().map(Family::prefix).collect();
    for n in nodes {
        for k in n
            .labels
            .keys()
            .filter(|k| prefixes.iter().any(|p| k.starts_with(p)))
        {
            ctx.swarm.set_node_label(&n.id, k, None).await?;
        }
    }
    Ok(())
}

/// A deleted resource's slots: first `reclaimPolicy: Delete` erases the
/// data volume of every slot of the families that take theirs with them
/// ([`Family::retire`]), each with its family's image and storage (event
/// `VolumesReclaimed`), then every slot label goes. Data goes before the
/// labels do: they say where each volume is. Call it once the services are
/// gone.
///
/// # Errors
/// Engine errors, and an erase job that fails (see [`reclaim::reclaim`]).
pub async fn release(
    ctx: &Context,
    (obj, owner): (&crate::store::Record, &Owner),
    families: &[Family<'_>],
) -> Result<(), ReconcileError> {
    let nodes = ctx.swarm.nodes().await?;
    let mut done = None;
    for f in families {
        let Some(retire) = f.retire else { continue };
        let volumes = slot_volumes(&nodes, std::slice::from_ref(f));
        done.get_or_insert_with(Reclaimed::default)
            .merge(reclaim::reclaim(ctx, owner, retire.image, retire.storage, &volumes).await?);
    }
    if let Some(done) = done {
        crate::runtime::controller::event(
            ctx,
            obj,
            haswarm_crds::EventType::Normal,
            "VolumesReclaimed",
            &done.summary(),
        );
    }
    unpin_all(ctx, &nodes, families).await
}

/// The data volume (`<service>-data`) of every slot pinned on some node,
/// with its slot label: what `reclaimPolicy: Delete` erases.
pub fn slot_volumes(nodes: &[NodeInfo], families: &[Family<'_>]) -> Vec<SlotVolume> {
    let mut out = Vec::new();
    for key in nodes.iter().flat_map(|n| n.labels.keys()) {
        for f in families {
            if let Some(i) = f.index(key) {
                out.push(SlotVolume {
                    volume: f.volume(i),
                    slot: key.clone(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.volume.cmp(&b.volume));
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reclaim_policy_delete_takes_a_leaving_members_volume() {
        let storage = Storage::default();
        assert!(Retire::of(ReclaimPolicy::Retain, "img", &storage).is_none());
        assert!(
            Retire::of(ReclaimPolicy::Delete, "img", &storage).is_some_and(|r| r.image == "img")
        );
    }

    #[test]
    fn a_family_knows_its_labels() {
        let f = Family {
            count: 3,
            slot: Box::new(|i| format!("io.haswarm.x.db.pg.slot-{i}")),
            service: Box::new(|i| format!("db-pg-{i}")),
            retire: None,
        };
        assert_eq!(f.prefix(), "io.haswarm.x.db.pg.slot-");
        assert_eq!(f.index("io.haswarm.x.db.pg.slot-12"), Some(12));
        assert_eq!(f.index("io.haswarm.x.db.etcd.slot-1"), None);
        let node = NodeInfo {
            id: "n".into(),
            hostname: "h".into(),
            labels: HashMap::from([
                ("io.haswarm.x.db.pg.slot-1".to_owned(), "true".to_owned()),
                ("other".to_owned(), "true".to_owned()),
            ]),
            ready: true,
            role: "worker".into(),
            down_since: None,
            drained: false,
        };
        assert_eq!(f.volume(4), "db-pg-4-data");
        assert_eq!(stay(&f, Some("db-pg-1")), ["io.haswarm.x.db.pg.slot-1"]);
        assert_eq!(stay(&f, None).len(), 3);
        let v = slot_volumes(&[node], &[f]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].volume, "db-pg-1-data");
    }
}
