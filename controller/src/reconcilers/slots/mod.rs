//! Pinning a resource's stateful members to nodes by slot labels: the
//! effectful half of [`plan::plan_slots`], shared by every kind.

pub mod plan;

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use haswarm_crds::common::{Placement, ReclaimPolicy, Storage};
use haswarm_crds::meta::{CommonStatus, LeftVolume, UnavailableNode};
use haswarm_crds::EventType;

use self::plan::{plan_slots, Moves, SlotMove};
use super::reclaim::{self, Reclaimed, SlotVolume};
use super::status::Notice;
use crate::runtime::controller::{Context, ReconcileError};
use crate::swarm::{NodeInfo, Owner};

/// What becomes of the data volume of a slot that leaves its family (its
/// member scaled away) under `reclaimPolicy: Delete`: it is erased, as at
/// deletion, before the slot's label goes (the label says which node holds
/// it; without it the volume would be left behind for good).
#[derive(Clone, Debug)]
pub struct Retire {
    /// The member's image (already on that node) for the erase job.
    pub image: String,
    /// The member's storage.
    pub storage: Storage,
}

impl Retire {
    /// `Some` when the resource's policy says data goes with its member.
    pub fn of(policy: ReclaimPolicy, image: &str, storage: &Storage) -> Option<Self> {
        (policy == ReclaimPolicy::Delete).then(|| Self {
            image: image.to_owned(),
            storage: storage.clone(),
        })
    }
}

/// What [`place`] did besides pinning.
#[derive(Debug, Default)]
pub struct Placed {
    /// Slot labels no node could take.
    pub unassigned: Vec<String>,
    /// Data volumes of slots that left, erased (`reclaimPolicy: Delete`).
    pub reclaimed: Reclaimed,
    /// Slot label -> the incarnation of its member, once placed.
    pub incarnations: BTreeMap<String, u32>,
    /// Slots moved off lost nodes, with their member's service.
    pub moved: Vec<(String, SlotMove)>,
    /// Nodes holding a member that are down or drained.
    pub unavailable: Vec<UnavailableNode>,
}

/// The slots of lost nodes that do not move (yet), and why.
#[derive(Debug, Default)]
pub struct Stay {
    /// Wherever they are: the primary's (moved, it would start empty while
    /// it holds the only current copy), every data slot while no primary is
    /// known, etcd members a quorum needs.
    pub always: Vec<String>,
    /// Members the data plane sees serving although Swarm calls their node
    /// down: an engine that stopped, not a lost node. On a node haswarm
    /// drains they move all the same: it replaces them on purpose.
    pub serving: Vec<String>,
}

/// A render function naming index `i` of resource `name` (a slot label or
/// a service).
pub type Namer = fn(&str, usize) -> String;

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
    pub retire: Option<Retire>,
}

impl std::fmt::Debug for Family<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("prefix", &self.prefix())
            .field("count", &self.count)
            .finish()
    }
}

impl<'a> Family<'a> {
    /// A family of `count` slots of resource `name`, its labels and
    /// services named by the render's functions; its volumes stay when a
    /// slot leaves ([`Family::retiring`] says otherwise).
    pub fn named(count: usize, name: &'a str, (slot, service): (Namer, Namer)) -> Self {
        Self {
            count,
            slot: Box::new(move |i| slot(name, i)),
            service: Box::new(move |i| service(name, i)),
            retire: None,
        }
    }

    /// The family with what `policy` makes of a leaving member's volume,
    /// erased with `image` (see [`Retire`]).
    #[must_use]
    pub fn retiring(mut self, policy: ReclaimPolicy, image: &str, storage: &Storage) -> Self {
        self.retire = Retire::of(policy, image, storage);
        self
    }

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

    /// The current incarnation of each member, by service, as its slot
    /// label on `nodes` says (0 for a slot no node carries yet).
    pub fn incarnations(&self, nodes: &[NodeInfo]) -> BTreeMap<String, u32> {
        let labels = plan::incarnations(&self.prefix(), nodes);
        (0..self.count)
            .map(|i| {
                let n = labels.get(&(self.slot)(i)).copied().unwrap_or(0);
                ((self.service)(i), n)
            })
            .collect()
    }

    /// The index of the member whose service is `service`.
    pub fn index_of_service(&self, service: &str) -> Option<usize> {
        (0..self.count).find(|i| (self.service)(*i) == service)
    }
}

impl Placed {
    /// Says what changed as notices and records the unavailable nodes in
    /// `common`: `VolumesReclaimed` (volumes of members scaled away were
    /// erased), `NodeDown` and `NodeReturned` (a node holding a member went
    /// away or came back: edges against the nodes `common` listed, with
    /// `grace` the node-loss grace), `SlotMoved` (a member replaced on
    /// another node). Returns the labels no node could take and the
    /// incarnations. Pure.
    pub fn report(
        self,
        grace: std::time::Duration,
        common: &mut CommonStatus,
        notices: &mut Vec<Notice>,
    ) -> (Vec<String>, BTreeMap<String, u32>) {
        if !self.reclaimed.erased.is_empty() {
            notices.push(Notice::new(
                EventType::Normal,
                "VolumesReclaimed",
                format!(
                    "members scaled away ({}): {}",
                    self.reclaimed.erased.join(", "),
                    self.reclaimed.summary()
                ),
            ));
        }
        for (type_, reason, text) in
            node_events(&common.unavailable_nodes, &self.unavailable, grace)
        {
            notices.push(Notice::new(type_, reason, text));
        }
        for (service, m) in &self.moved {
            // A node listed without a down time is drained (by Swarm or by
            // haswarmctl node drain): it answers, it is not lost.
            let drained = self
                .unavailable
                .iter()
                .any(|u| u.node == m.from && u.since.is_none());
            let node = if drained { "drained" } else { "lost" };
            notices.push(Notice::new(
                EventType::Warning,
                "SlotMoved",
                format!(
                    "{service} left the {node} node {} for {}: a new member (incarnation {}) replaces it and starts from the others' data; the volume {service}-data stays on {} (not erased)",
                    m.from, m.to, m.incarnation, m.from
                ),
            ));
        }
        common.left_volumes = left_after_moves(&common.left_volumes, &self.moved);
        common.unavailable_nodes = self.unavailable;
        (self.unassigned, self.incarnations)
    }
}

/// The stale volumes after `moved`: each moved member's volume is left on
/// the node it left, and is no longer stale on the node it moved to (the
/// slot came back there: the volume is the member's again). Pure.
pub fn left_after_moves(before: &[LeftVolume], moved: &[(String, SlotMove)]) -> Vec<LeftVolume> {
    let mut out = before.to_vec();
    for (service, m) in moved {
        let volume = format!("{service}-data");
        out.retain(|l| !(l.volume == volume && l.node == m.to));
        let left = LeftVolume {
            volume,
            node: m.from.clone(),
        };
        if !out.contains(&left) {
            out.push(left);
        }
    }
    out
}

/// The events for nodes holding members that went away (`NodeDown`) or
/// came back (`NodeReturned`) since `before` was recorded. Pure.
pub fn node_events(
    before: &[UnavailableNode],
    now: &[UnavailableNode],
    grace: std::time::Duration,
) -> Vec<(EventType, &'static str, String)> {
    let mut out = Vec::new();
    for n in now
        .iter()
        .filter(|n| before.iter().all(|b| b.node != n.node))
    {
        let why = if n.since.is_some() {
            format!(
                "is down; its members ({}) move to other nodes unless it is back within {}s",
                n.members.join(", "),
                grace.as_secs()
            )
        } else {
            format!(
                "is drained; its members ({}) move to other nodes",
                n.members.join(", ")
            )
        };
        out.push((
            EventType::Warning,
            "NodeDown",
            format!("node {} {why}", n.node),
        ));
    }
    for b in before
        .iter()
        .filter(|b| now.iter().all(|n| n.node != b.node))
    {
        let how = if b.since.is_some() {
            "answers again"
        } else {
            "takes members again (uncordoned)"
        };
        out.push((
            EventType::Normal,
            "NodeReturned",
            format!("node {} {how} (it held {})", b.node, b.members.join(", ")),
        ));
    }
    out
}

/// The nodes with their down time as first recorded in status: Swarm's
/// only clock for a down node is its object's `UpdatedAt`, which moves when
/// haswarm edits its labels (a slot moving off it), and would start the
/// grace again for the node's other slots. A node seen answering leaves the
/// status list, so a later loss starts a fresh grace; one that came back
/// and went down again between two looks keeps its first time.
pub fn down_since_first_seen(nodes: &[NodeInfo], before: &[UnavailableNode]) -> Vec<NodeInfo> {
    nodes
        .iter()
        .cloned()
        .map(|mut n| {
            let first = before
                .iter()
                .find(|b| b.node == n.hostname)
                .and_then(|b| b.since);
            if let (Some(now), Some(first)) = (n.down_since, first) {
                n.down_since = Some(now.min(first));
            }
            n
        })
        .collect()
}

/// The nodes that hold a slot of `families` and are down or drained (by
/// Swarm, or marked by `haswarmctl node drain`), and
/// those listed `before` that still are (their slots moved meanwhile: they
/// are listed with what they held until they answer again).
fn unavailable(
    nodes: &[NodeInfo],
    families: &[Family<'_>],
    before: &[UnavailableNode],
) -> Vec<UnavailableNode> {
    let mut out: Vec<UnavailableNode> = nodes
        .iter()
        .filter(|n| !n.ready || n.drained || n.leaving)
        .filter_map(|n| {
            let listed = before.iter().find(|b| b.node == n.hostname);
            let mut members: Vec<String> = n
                .labels
                .keys()
                .filter_map(|k| {
                    families
                        .iter()
                        .find_map(|f| f.index(k).filter(|i| *i < f.count).map(|i| (f.service)(i)))
                })
                .collect();
            members.sort();
            if members.is_empty() {
                return listed.cloned();
            }
            Some(UnavailableNode {
                node: n.hostname.clone(),
                since: n.down_since,
                members,
            })
        })
        .collect();
    out.sort_by(|a, b| a.node.cmp(&b.node));
    out
}

/// Pins every slot of every family to a node and says which labels no node
/// could take. Slots on lost nodes move, to the next incarnation (see
/// [`plan`]), unless `stay` keeps them (see [`Stay`]) or a task of the
/// member still runs on a node that answers (a drained node's task that has
/// not stopped yet): the member is not gone while Docker can see it. On a
/// node haswarm drains (`NodeInfo::draining`) only `stay.always` holds:
/// its running members are moved on purpose. The moved slot's label
/// is set on its new node, then removed from the lost one, so that one node
/// holds each slot. A slot beyond the count is unpinned only once its
/// service is gone: unpinning first would have Swarm stop the task at once,
/// before a rollout could move its role away. Its data volume is erased
/// first when the family says so ([`Retire`]); while that cannot be done
/// (node down, job failed) the label stays, and the next pass tries again.
///
/// # Errors
/// Engine errors.
pub async fn place(
    ctx: &Context,
    (owner, before): (&Owner, &[UnavailableNode]),
    (placement, nodes): (&Placement, &[NodeInfo]),
    families: &[Family<'_>],
    stay: &Stay,
) -> Result<Placed, ReconcileError> {
    let now = Utc::now();
    let nodes = &down_since_first_seen(nodes, before);
    let lost: std::collections::HashSet<String> = nodes
        .iter()
        .filter(|n| n.lost(now, ctx.settings.node_loss_grace))
        .map(|n| n.id.clone())
        .collect();
    let stay = kept(
        nodes,
        stay,
        still_running(ctx, nodes, families, &lost).await?,
    );
    let moves = Moves { lost, stay: &stay };
    let services = ctx.swarm.owned_services(owner).await?;
    let load = load(nodes, families);
    let mut placed = Placed {
        unavailable: unavailable(nodes, families, before),
        ..Placed::default()
    };
    for f in families {
        let mut plan = plan_slots(
            &f.prefix(),
            f.count,
            &f.slot,
            nodes,
            placement,
            &load,
            &moves,
        );
        // A slot scaled away waits for its service to go.
        plan.remove.retain(|(_, l)| {
            f.index(l)
                .is_none_or(|i| i < f.count || !services.contains_key(&(f.service)(i)))
        });
        for (node, label, value) in &plan.set {
            ctx.swarm.set_node_label(node, label, Some(value)).await?;
        }
        for (node, label) in &plan.remove {
            let left = f.index(label).filter(|i| *i >= f.count);
            if let (Some(i), Some(retire)) = (left, f.retire.as_ref()) {
                let volume = f.volume(i);
                match erase(ctx, owner, retire, (nodes, node), (&volume, label)).await {
                    Some(done) => placed.reclaimed.merge(done),
                    None => continue,
                }
            }
            ctx.swarm.set_node_label(node, label, None).await?;
        }
        placed.moved.extend(plan.moved.into_iter().filter_map(|m| {
            let service = (f.service)(f.index(&m.label)?);
            Some((service, m))
        }));
        placed.incarnations.extend(plan.incarnations);
        placed.unassigned.extend(plan.unassigned);
    }
    Ok(placed)
}

/// The slots that stay: `stay.always`, and the members seen serving or
/// running (`running`) unless haswarm drains their node.
fn kept(nodes: &[NodeInfo], stay: &Stay, running: Vec<String>) -> Vec<String> {
    let draining = |label: &String| {
        nodes
            .iter()
            .any(|n| n.draining() && n.labels.contains_key(label))
    };
    let mut out = stay.always.clone();
    out.extend(
        stay.serving
            .iter()
            .cloned()
            .chain(running)
            .filter(|l| !draining(l)),
    );
    out
}

/// Slots on lost nodes whose member still has a running task on a node
/// that answers: they do not move yet.
async fn still_running(
    ctx: &Context,
    nodes: &[NodeInfo],
    families: &[Family<'_>],
    lost: &std::collections::HashSet<String>,
) -> Result<Vec<String>, ReconcileError> {
    let mut out = Vec::new();
    for n in nodes.iter().filter(|n| lost.contains(&n.id)) {
        for k in n.labels.keys() {
            let Some((f, i)) = families
                .iter()
                .find_map(|f| Some((f, f.index(k).filter(|i| *i < f.count)?)))
            else {
                continue;
            };
            let tasks = ctx.swarm.tasks(&(f.service)(i)).await?;
            let running = tasks.iter().any(|t| {
                t.status.as_ref().and_then(|s| s.state) == Some(bollard::models::TaskState::RUNNING)
                    && t.node_id
                        .as_deref()
                        .is_some_and(|id| nodes.iter().any(|n| n.id == id && n.ready))
            });
            if running {
                out.push(k.clone());
            }
        }
    }
    Ok(out)
}

/// Erases the data volume of a slot that left, on its node; `None` when it
/// cannot be done now (said in the log).
async fn erase(
    ctx: &Context,
    owner: &Owner,
    retire: &Retire,
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
    match reclaim::reclaim(ctx, owner, &retire.image, &retire.storage, &target).await {
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

/// The members of `family` on a node haswarm drains, with that node's name:
/// a primary among them is handed over before its slot may move.
pub fn draining(nodes: &[NodeInfo], family: &Family<'_>) -> BTreeMap<String, String> {
    (0..family.count)
        .filter_map(|i| {
            let slot = (family.slot)(i);
            let node = nodes
                .iter()
                .find(|n| n.draining() && n.labels.contains_key(&slot))?;
            Some(((family.service)(i), node.hostname.clone()))
        })
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
    let left: Vec<LeftVolume> = obj
        .status
        .as_ref()
        .and_then(|s| s.get("leftVolumes"))
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let mut done = None;
    for f in families {
        let Some(retire) = &f.retire else { continue };
        let volumes = slot_volumes(&nodes, std::slice::from_ref(f));
        let stale = stale_copies(&left, f, &reclaim::locate(&volumes, &nodes));
        let done = done.get_or_insert_with(Reclaimed::default);
        done.merge(reclaim::reclaim(ctx, owner, &retire.image, &retire.storage, &volumes).await?);
        done.merge(
            reclaim::reclaim_left(ctx, owner, (&retire.image, &retire.storage), &stale).await?,
        );
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

/// The stale copies of `family`'s volumes (from `left`): not on the node
/// that holds the slot now (`current`: each slot volume and its node),
/// which the ordinary reclaim erases. Pure.
pub fn stale_copies(
    left: &[LeftVolume],
    family: &Family<'_>,
    current: &[(&SlotVolume, Option<&NodeInfo>)],
) -> Vec<LeftVolume> {
    left.iter()
        .filter(|l| {
            l.volume
                .strip_suffix("-data")
                .and_then(|service| family.index_of_service(service))
                .is_some()
        })
        .filter(|l| {
            !current
                .iter()
                .any(|(v, n)| v.volume == l.volume && n.is_some_and(|n| n.hostname == l.node))
        })
        .cloned()
        .collect()
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
mod tests;
