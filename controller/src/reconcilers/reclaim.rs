//! `reclaimPolicy: Delete` for per-node data volumes, shared by every kind
//! whose instances are pinned to nodes by slot labels.
//!
//! A manager's API removes volumes on its own node only. So the data of each
//! volume is erased by a one-shot job on the node its slot is pinned to (with
//! the instance's own image, already there), then the definitions on the
//! manager's node are removed. Definitions left (empty) on other nodes are
//! named in the outcome, for the operator to remove there. Stale copies (a
//! member's volume on a node its slot moved away from, recorded in
//! `status.leftVolumes`) are erased the same way where their node answers,
//! and named where it does not.

use std::collections::BTreeSet;
use std::time::Duration;

use haswarm_crds::common::Storage;
use haswarm_crds::meta::LeftVolume;

use crate::runtime::controller::{Context, ReconcileError};
use crate::swarm::jobs::{JobOutcome, NodeJob};
use crate::swarm::{NodeInfo, Owner, SwarmError};

use super::common::data_mount;

/// How long one node's erase job may take.
const ERASE_LIMIT: Duration = Duration::from_secs(90);

/// A data volume and the slot label that pins its instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotVolume {
    /// Volume name.
    pub volume: String,
    /// The slot's node label.
    pub slot: String,
}

/// What reclaiming did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Volumes whose data was erased.
    pub erased: Vec<String>,
    /// Volumes no node is pinned for any more (their data, if any, stays).
    pub unplaced: Vec<String>,
    /// Volume definitions removed on the manager's node.
    pub removed: Vec<String>,
    /// Nodes (host names) that keep empty definitions, with the volumes.
    pub left: Vec<(String, String)>,
    /// Stale copies (a member's volume on a node its slot moved away from)
    /// on nodes that do not answer or take no task (drained): not erased,
    /// with their node.
    pub stale: Vec<(String, String)>,
}

impl Reclaimed {
    /// Adds what another reclaim did.
    pub fn merge(&mut self, other: Self) {
        self.erased.extend(other.erased);
        self.unplaced.extend(other.unplaced);
        self.removed.extend(other.removed);
        self.left.extend(other.left);
        self.stale.extend(other.stale);
    }

    /// One line for an event.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "reclaimPolicy Delete: erased the data of {} volume(s), removed {} definition(s) on this node",
            self.erased.len(),
            self.removed.len()
        );
        // (node, volume) pairs as "volume on node, ...".
        let on = |pairs: &[(String, String)]| {
            let listed: Vec<String> = pairs.iter().map(|(n, v)| format!("{v} on {n}")).collect();
            listed.join(", ")
        };
        if !self.left.is_empty() {
            s.push_str(&format!(
                "; empty definitions remain (on that node, `docker container prune` then `docker volume rm`): {}",
                on(&self.left)
            ));
        }
        if !self.stale.is_empty() {
            s.push_str(&format!(
                "; NOT erased, stale copies on nodes that do not answer or are drained (members moved away from them; on that node, `docker volume rm`): {}",
                on(&self.stale)
            ));
        }
        if !self.unplaced.is_empty() {
            s.push_str(&format!(
                "; no node held {}: left as they are",
                self.unplaced.join(", ")
            ));
        }
        s
    }
}

/// Which node each volume is on: the node its slot label is set on.
pub fn locate<'a>(
    volumes: &'a [SlotVolume],
    nodes: &'a [NodeInfo],
) -> Vec<(&'a SlotVolume, Option<&'a NodeInfo>)> {
    volumes
        .iter()
        .map(|v| (v, nodes.iter().find(|n| n.labels.contains_key(&v.slot))))
        .collect()
}

/// The erase script: everything in the volume, hidden files included.
const ERASE: &str = "find /reclaim -mindepth 1 -delete";

/// Erases every volume's data on its node, then removes the definitions on
/// this (the manager's) node. Call it after the services are gone and before
/// the slot labels are removed.
///
/// # Errors
/// Engine errors; a job that fails (its node down) is an error too, so the
/// caller retries rather than report data gone that is not.
pub async fn reclaim(
    ctx: &Context,
    owner: &Owner,
    image: &str,
    storage: &Storage,
    volumes: &[SlotVolume],
) -> Result<Reclaimed, ReconcileError> {
    let nodes = ctx.swarm.nodes().await?;
    let here = ctx.swarm.info().await?.node_id;
    let mut done = Reclaimed::default();
    for (v, node) in locate(volumes, &nodes) {
        let Some(node) = node else {
            done.unplaced.push(v.volume.clone());
            continue;
        };
        erase(
            ctx,
            owner,
            (image, storage),
            &v.volume,
            (node, &here),
            &mut done,
        )
        .await?;
    }
    let unique: BTreeSet<_> = done.left.iter().cloned().collect();
    done.left = unique.into_iter().collect();
    Ok(done)
}

/// Erases the stale copies `left` (volumes members left on nodes their
/// slots moved away from) on the nodes that answer and take tasks; those
/// on other nodes are named in [`Reclaimed::stale`].
///
/// # Errors
/// As [`reclaim`].
pub async fn reclaim_left(
    ctx: &Context,
    owner: &Owner,
    (image, storage): (&str, &Storage),
    left: &[LeftVolume],
) -> Result<Reclaimed, ReconcileError> {
    let mut done = Reclaimed::default();
    if left.is_empty() {
        return Ok(done);
    }
    let nodes = ctx.swarm.nodes().await?;
    let here = ctx.swarm.info().await?.node_id;
    for l in left {
        // A job runs only where Swarm places tasks: not on a drained node.
        match nodes
            .iter()
            .find(|n| n.hostname == l.node && n.ready && !n.drained)
        {
            Some(node) => {
                erase(
                    ctx,
                    owner,
                    (image, storage),
                    &l.volume,
                    (node, &here),
                    &mut done,
                )
                .await?;
            }
            None => done.stale.push((l.node.clone(), l.volume.clone())),
        }
    }
    let unique: BTreeSet<_> = done.left.iter().cloned().collect();
    done.left = unique.into_iter().collect();
    Ok(done)
}

/// Erases `volume`'s data on `node` by a one-shot job, then removes its
/// definition when `node` is this one (`here`), recording it in `done`.
async fn erase(
    ctx: &Context,
    owner: &Owner,
    (image, storage): (&str, &Storage),
    volume: &str,
    (node, here): (&NodeInfo, &str),
    done: &mut Reclaimed,
) -> Result<(), ReconcileError> {
    let job = NodeJob {
        name: format!("{volume}-reclaim"),
        node: node.id.clone(),
        image: image.to_owned(),
        script: ERASE.to_owned(),
        mounts: vec![data_mount(storage, volume, "/reclaim")],
        secrets: Vec::new(),
        networks: Vec::new(),
    };
    match ctx.swarm.run_job(owner, &job, ERASE_LIMIT).await? {
        JobOutcome::Completed => done.erased.push(volume.to_owned()),
        JobOutcome::Failed(why) => {
            return Err(SwarmError::Api(format!(
                "erasing volume {volume} on node {}: {why}",
                node.hostname
            ))
            .into())
        }
    }
    if node.id == here {
        ctx.swarm.remove_volume_if_present(volume).await?;
        done.removed.push(volume.to_owned());
    } else {
        done.left.push((node.hostname.clone(), volume.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn node(id: &str, labels: &[&str]) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            hostname: format!("host-{id}"),
            labels: labels
                .iter()
                .map(|l| ((*l).to_owned(), "true".to_owned()))
                .collect::<HashMap<_, _>>(),
            ready: true,
            role: "worker".into(),
            down_since: None,
            drained: false,
            leaving: false,
        }
    }

    #[test]
    fn volumes_are_found_on_the_node_their_slot_is_pinned_to() {
        let nodes = vec![node("a", &["s-0"]), node("b", &["s-1", "other"])];
        let volumes = vec![
            SlotVolume {
                volume: "v0".into(),
                slot: "s-0".into(),
            },
            SlotVolume {
                volume: "v1".into(),
                slot: "s-1".into(),
            },
            SlotVolume {
                volume: "v2".into(),
                slot: "s-2".into(),
            },
        ];
        let found: Vec<(&str, Option<&str>)> = locate(&volumes, &nodes)
            .into_iter()
            .map(|(v, n)| (v.volume.as_str(), n.map(|n| n.id.as_str())))
            .collect();
        assert_eq!(
            found,
            vec![("v0", Some("a")), ("v1", Some("b")), ("v2", None)]
        );
    }

    #[test]
    fn the_summary_names_what_is_left_and_where() {
        let r = Reclaimed {
            erased: vec!["v0".into(), "v1".into()],
            unplaced: vec!["v2".into()],
            removed: vec!["v0".into()],
            left: vec![("host-b".into(), "v1".into())],
            stale: vec![("host-c".into(), "v3".into())],
        };
        let s = r.summary();
        assert!(s.contains("erased the data of 2 volume(s)"), "{s}");
        assert!(s.contains("v1 on host-b"), "{s}");
        assert!(s.contains("no node held v2"), "{s}");
        assert!(
            s.contains("NOT erased") && s.contains("v3 on host-c"),
            "{s}"
        );
    }
}
