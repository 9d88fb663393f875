//! PostgresCluster placement: which slots of its families (instances, etcd
//! members) may move off lost nodes, and the incarnation of each instance
//! (an etcd member on a lost node that answers stays).

use std::collections::BTreeMap;

use haswarm_crds::postgres::EtcdMembership;
use haswarm_crds::PostgresCluster;

use super::etcd;
use super::observe::{self, ClusterView};
use super::reconcile::PostgresClusters;
use super::render;
use crate::reconcilers::outline::Stateful;
use crate::reconcilers::slots::{self, Placed, Stay};
use crate::runtime::{Context, ReconcileError};
use crate::swarm::Owner;

/// Pins instances and etcd members. The leader's slot never moves (moved, it
/// would start empty), nor, while no leader is known, any instance's, nor
/// that of an instance Patroni still lists, in any state (its node is down
/// to Swarm, but its Patroni renews its member key, so its container runs:
/// an engine that stopped, not a lost node) unless haswarm drains its node. etcd
/// members move one at a time and only while the others keep a quorum
/// (see [`etcd::stays`]); the `Err` of the second value says why not. An
/// etcd member on a lost node that answers a health check stays too. The
/// volumes of members scaled away follow the reclaim policy.
pub(super) async fn place(
    ctx: &Context,
    (pgc, etcd): (&PostgresCluster, Option<&EtcdMembership>),
    (owner, nodes, before): (
        &Owner,
        &[crate::swarm::NodeInfo],
        &[haswarm_crds::meta::UnavailableNode],
    ),
    view: Option<&ClusterView>,
) -> Result<(Placed, Result<(), String>), ReconcileError> {
    let name = pgc.metadata.name.as_str();
    // Down times as status first recorded them, as `slots::place` counts
    // them: the etcd quorum guard must see the same lost nodes.
    let nodes = &slots::down_since_first_seen(nodes, before);
    let instances = usize::from(pgc.spec.instances);
    let members = etcd.map_or(0, |m| usize::from(m.members));
    let families =
        PostgresClusters::retiring(PostgresClusters::families(name, (instances, members)), pgc);
    let leader = view.and_then(ClusterView::leader);
    let mut stay = Stay {
        always: slots::stay(&families[0], leader),
        serving: Vec::new(),
    };
    // Any state, not only running: a member cut off with its engine may be
    // rewinding or restarting when it is looked at (seen: a former leader,
    // demoted while its DNS was gone, moved while it rewound, its container
    // alive). A lost node's members leave the list when their keys expire.
    stay.serving.extend(
        view.into_iter()
            .flat_map(|v| &v.members)
            .filter_map(|m| families[0].index_of_service(&m.name))
            .map(|i| render::instance_slot(name, i)),
    );
    let mut quorum = Ok(());
    if let Some(m) = etcd {
        let now = chrono::Utc::now();
        let lost: Vec<&str> = nodes
            .iter()
            .filter(|n| n.lost(now, ctx.settings.node_loss_grace))
            .map(|n| n.id.as_str())
            .collect();
        let current = slots::plan::incarnations(&families[1].prefix(), nodes);
        let slot = |j: u8| {
            current
                .get(&render::etcd_slot(name, j.into()))
                .copied()
                .unwrap_or(0)
        };
        let on = |j: &u8, which: &dyn Fn(&crate::swarm::NodeInfo) -> bool| {
            let label = render::etcd_slot(name, usize::from(*j));
            nodes
                .iter()
                .any(|n| which(n) && n.labels.contains_key(&label))
        };
        let mut on_lost: Vec<u8> = (0..m.members)
            .filter(|j| on(j, &|n| lost.contains(&n.id.as_str())))
            .collect();
        // A member on a lost node that still answers serves: its engine
        // stopped, not its node. It stays, and counts for the quorum. On a
        // node haswarm drains it is replaced on purpose.
        let on_down: Vec<u8> = on_lost
            .iter()
            .copied()
            .filter(|j| !on(j, &|n| n.draining()))
            .collect();
        if !on_down.is_empty() {
            let health = observe::etcd_health(name, m.members);
            let out = super::patroni::patroni_until(
                ctx,
                (pgc, m.clients()),
                |_| health.clone(),
                |o| !o.trim().is_empty(),
            )
            .await?;
            let answering = out
                .map(|o| observe::parse_etcd_health(&o))
                .unwrap_or_default();
            let serving: Vec<u8> = on_down
                .into_iter()
                .filter(|j| answering.contains(j))
                .collect();
            stay.always.extend(
                serving
                    .iter()
                    .map(|j| render::etcd_slot(name, usize::from(*j))),
            );
            on_lost.retain(|j| !serving.contains(j));
        }
        let busy =
            !etcd::moved(m, slot).is_empty() || m.learner.is_some_and(|l| !on_lost.contains(&l));
        let (held, q) = etcd::stays(name, m, &on_lost, busy);
        quorum = q;
        stay.always.extend(
            held.iter()
                .map(|j| render::etcd_slot(name, usize::from(*j))),
        );
    }
    let placed = slots::place(
        ctx,
        (owner, before),
        (&pgc.spec.placement, nodes),
        &families,
        &stay,
    )
    .await?;
    Ok((placed, quorum))
}

/// The current incarnation of each instance, by service, as its slot label says.
pub(super) fn instance_incarnations(
    name: &str,
    instances: usize,
    nodes: &[crate::swarm::NodeInfo],
) -> BTreeMap<String, u32> {
    PostgresClusters::families(name, (instances, 0))[0].incarnations(nodes)
}
