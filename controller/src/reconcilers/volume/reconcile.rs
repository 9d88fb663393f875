//! SharedVolume, effectful part: apply the rendered probe and report per-node
//! mount results.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use haswarm_crds::{ConditionStatus, EventType};

use super::render;
use crate::runtime::controller::{
    decode, event, hold_if_paused, known_versions, owned_services, owner_of, report_services,
    write_status,
};
use crate::runtime::{Action, Context, ReconcileError, Reconciler};
use crate::store::Record;

/// The SharedVolume reconciler.
#[derive(Debug, Default)]
pub struct SharedVolumes;

impl Reconciler for SharedVolumes {
    const KIND: &'static str = <haswarm_crds::SharedVolumeSpec as haswarm_crds::Kind>::KIND;

    async fn reconcile(&self, obj: Record, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
        let (sv, old) = decode::<haswarm_crds::SharedVolumeSpec>(&obj)?;
        let owner = owner_of(&ctx, &obj);
        let generation = obj.metadata.generation;
        let now = Utc::now();
        let mut status = old.clone();
        let was_unreachable = old
            .common
            .condition("Ready")
            .is_some_and(|c| c.reason == "DockerUnreachable");

        if !hold_if_paused(&obj, &mut status.common) {
            let desired = render::render(&sv, &ctx.settings.probe_image);
            let report = ctx
                .swarm
                .converge_services(&owner, &desired, &known_versions(&old.common))
                .await?;
            report_services(&ctx, &obj, &report);
            status.common.owned_objects = owned_services(&report.versions);
        }
        if was_unreachable {
            event(
                &ctx,
                &obj,
                EventType::Normal,
                "DockerReconnected",
                "the Docker engine answers again",
            );
        }

        let nodes = ctx.swarm.nodes().await?;
        let tasks = ctx.swarm.tasks(&render::probe_name(&sv)).await?;
        status.nodes = render::node_status(&sv.spec, &nodes, &tasks);
        let failing: Vec<String> = status
            .nodes
            .iter()
            .filter(|n| !n.mounted)
            .map(|n| format!("{}: {}", n.node, n.message))
            .collect();
        let all = !status.nodes.is_empty() && failing.is_empty();
        let (st, reason, message) = if status.nodes.is_empty() {
            (
                ConditionStatus::False,
                "NoEligibleNodes",
                "no ready node matches spec.nodes".to_owned(),
            )
        } else if all {
            (
                ConditionStatus::True,
                "Mounted",
                format!("mounted on all {} eligible nodes", status.nodes.len()),
            )
        } else if status
            .nodes
            .iter()
            .all(|n| n.mounted || !n.message.starts_with("mount failed"))
        {
            // Only tasks still starting: not a failure yet.
            (
                ConditionStatus::False,
                "Mounting",
                format!(
                    "not mounted yet on {} of {} nodes: {}",
                    failing.len(),
                    status.nodes.len(),
                    failing.join("; ")
                ),
            )
        } else {
            (
                ConditionStatus::False,
                "MountFailed",
                format!(
                    "not mounted on {} of {} nodes: {}",
                    failing.len(),
                    status.nodes.len(),
                    failing.join("; ")
                ),
            )
        };
        for n in status
            .nodes
            .iter()
            .filter(|n| !n.mounted && n.message.starts_with("mount failed"))
        {
            let before = old.nodes.iter().find(|o| o.node == n.node);
            if before.is_none_or(|b| b.mounted || b.message != n.message) {
                event(
                    &ctx,
                    &obj,
                    EventType::Warning,
                    "MountFailed",
                    &format!("{}: {}", n.node, n.message),
                );
            }
        }
        status.common.set_condition(
            "MountedOnAllNodes",
            st,
            reason,
            message.clone(),
            generation,
            now,
        );
        status
            .common
            .set_condition("Ready", st, reason, message, generation, now);
        status.common.observed_generation = generation;
        if status != old {
            write_status(&ctx, &obj, &status).await?;
        }
        // Probes settle within seconds; until they have, look again soon.
        Ok(if all {
            Action::requeue(Duration::from_secs(60))
        } else {
            Action::requeue(Duration::from_secs(3))
        })
    }

    async fn cleanup(&self, obj: Record, ctx: Arc<Context>) -> Result<(), ReconcileError> {
        let owner = owner_of(&ctx, &obj);
        let report = ctx
            .swarm
            .converge_services(&owner, &[], &Default::default())
            .await?;
        report_services(&ctx, &obj, &report);
        // Data is never touched here: with reclaimPolicy Retain (the default)
        // the volume definitions stay on the nodes, and a host path is the
        // operator's. Removing definitions for Delete happens per node and is
        // not implemented yet; say so rather than pretend.
        if let Ok((sv, _)) = decode::<haswarm_crds::SharedVolumeSpec>(&obj) {
            if sv.spec.reclaim_policy == haswarm_crds::common::ReclaimPolicy::Delete
                && sv.spec.host_path.is_none()
            {
                event(
                    &ctx,
                    &obj,
                    EventType::Warning,
                    "VolumeDefinitionsKept",
                    "reclaimPolicy Delete: per-node volume definitions are not removed yet; remove them with `docker volume rm` on each node",
                );
            }
        }
        Ok(())
    }
}
