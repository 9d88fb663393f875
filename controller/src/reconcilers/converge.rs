//! The steps of a stateful kind's pass that act on the Swarm, shared by every
//! kind: make the contents and render the services against them, then apply
//! one rollout step and prune what no service uses any more.

use std::collections::HashMap;

use haswarm_crds::meta::OwnedObject;

use super::common::DesiredContent;
use super::contents;
use crate::runtime::controller::{owned_services, report_services, Context, ReconcileError};
use crate::store::Record;
use crate::swarm::objects::ContentKind;
use crate::swarm::{DesiredService, Owner, ServicePlan};

/// A resource's services, ready to plan: their configs and secrets exist on
/// the Swarm and the services carry their ids.
#[derive(Debug)]
pub struct Prepared {
    /// Rendered services, with config and secret ids filled in.
    pub services: Vec<DesiredService>,
    /// Names of the configs and secrets the services use (the rest is pruned).
    pub keep: Vec<String>,
    /// Owned-object entries for the network, configs and secrets.
    pub owned: Vec<OwnedObject>,
}

/// Creates the network (`encrypted` or not) and the contents that are
/// missing, renders the services with `render` from the contents' names (by
/// purpose), and fills in the objects' ids.
///
/// # Errors
/// Engine errors; a name taken by a foreign object.
pub async fn prepare(
    ctx: &Context,
    owner: &Owner,
    (network, encrypted): (&str, bool),
    desired: &[DesiredContent],
    render: impl FnOnce(&HashMap<String, String>) -> Vec<DesiredService>,
) -> Result<Prepared, ReconcileError> {
    let names = contents::content_names(&owner.name, desired);
    contents::ensure(ctx, owner, network, encrypted, desired).await?;
    let mut services = render(&names);
    contents::link(ctx, owner, &mut services).await?;
    Ok(Prepared {
        services,
        owned: contents::owned(network, desired, &names),
        keep: names.into_values().collect(),
    })
}

/// Applies the changes of `plan` that a rollout step lets through (`apply`),
/// with an event for each, then prunes the owner's configs and secrets that
/// `prepared` does not keep (Swarm refuses to remove one a service still
/// uses, so the old ones go once no service does). Returns the owned-object
/// entries: services with the versions now known, then `prepared`'s.
///
/// # Errors
/// Engine errors.
pub async fn apply(
    ctx: &Context,
    (obj, owner): (&Record, &Owner),
    plan: &ServicePlan,
    apply: &[String],
    prepared: &Prepared,
) -> Result<Vec<OwnedObject>, ReconcileError> {
    let report = ctx.swarm.apply_changes(plan, apply).await?;
    report_services(ctx, obj, &report);
    for kind in [ContentKind::Config, ContentKind::Secret] {
        ctx.swarm
            .prune_content_objects(kind, owner, &prepared.keep)
            .await?;
    }
    let mut owned = owned_services(&report.versions);
    owned.extend(prepared.owned.iter().cloned());
    Ok(owned)
}
