//! RedisSentinelGroup's reconcile: places the slots, prepares and rolls the
//! services, then reports (passwords, sentinels and status have their own
//! modules).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use haswarm_crds::redis::{PasswordRotation, RedisSentinelGroupStatus, RotationPhase};
use haswarm_crds::{EventType, RedisSentinelGroup, RedisSentinelGroupSpec};

use super::fast_failover::fast_failover;
use super::observe::{self, SentinelView};
use super::passwords::{advance_rotation, passwords, start_rotation, Extra, Passwords};
use super::render::{self, purpose, Inputs};
use super::report::{self, MAX_LAG_BYTES};
use super::sentinels::{drain_master, forget_departed, observe, switchover};
use crate::reconcilers::outline::{self, Outcome, Rolled, Stateful};
use crate::reconcilers::slots::{self, Family, Placed, Stay};
use crate::reconcilers::wait::{Flow, Wait};
use crate::reconcilers::{converge, rollout, status};
use crate::runtime::{Context, ReconcileError};
use crate::swarm::objects::ContentKind;
use crate::swarm::{NodeInfo, Owner, ServiceHealth, ServicePlan};

/// The RedisSentinelGroup reconciler.
#[derive(Debug, Default)]
pub struct RedisGroups;

/// How long an instance may run detached from the master before it is
/// restarted (its start script then asks the sentinels for the master).
const DETACHED_GRACE: Duration = Duration::from_secs(30);

/// Pins every instance and sentinel to a node; returns the labels no node
/// could take. The master's slot stays even on a lost node: moved, it would
/// start empty. The sentinels fail over first; only then is it a replica
/// that may move. Without a known master nothing data-bearing moves; nor
/// does a replica the master reports connected, or a sentinel the others
/// reach (its node is down to Swarm, but it serves: an engine that
/// stopped, not a lost node), unless haswarm drains its node.
async fn place(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
    (owner, before): (&Owner, &[haswarm_crds::meta::UnavailableNode]),
    (view, nodes): (Option<&observe::SentinelView>, &[NodeInfo]),
) -> Result<Placed, ReconcileError> {
    let name = rsg.metadata.name.as_str();
    let instances = usize::from(rsg.spec.instances);
    let families = RedisGroups::retiring(
        RedisGroups::families(name, (instances, usize::from(rsg.spec.sentinels.count))),
        rsg,
    );
    let master = view.and_then(|v| v.master.as_deref());
    let mut stay = Stay {
        always: slots::stay(&families[0], master),
        serving: Vec::new(),
    };
    stay.serving.extend(
        view.into_iter()
            .flat_map(|v| &v.connected)
            .filter(|r| r.state == "online")
            .filter_map(|r| families[0].index_of_service(&r.host))
            .map(|i| render::instance_slot(name, i)),
    );
    // Nor does a sentinel the others still reach.
    stay.serving.extend(
        view.into_iter()
            .flat_map(|v| &v.peers)
            .filter(|p| p.answers())
            .filter_map(|p| families[1].index_of_service(&p.host))
            .map(|j| render::sentinel_slot(name, j)),
    );
    slots::place(
        ctx,
        (owner, before),
        (&rsg.spec.placement, nodes),
        &families,
        &stay,
    )
    .await
}

/// The group's services ready to plan, and the password secret they use.
struct Prepared {
    /// The services, their contents made.
    converge: converge::Prepared,
    /// The password secret's name.
    secret: String,
}

/// Creates the network, configs and secret, and renders the services with
/// the objects' ids filled in.
async fn prepare(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
    owner: &Owner,
    rotation: Option<&PasswordRotation>,
    incarnations: &std::collections::BTreeMap<String, u32>,
) -> Result<Prepared, ReconcileError> {
    let name = rsg.metadata.name.as_str();
    let Passwords {
        secret: secret_name,
        generated,
        extra,
    } = passwords(ctx, rsg, owner, rotation).await?;
    let network = render::network_name(name);
    let mut contents = render::contents(&rsg.spec, generated.as_deref());
    let mut extra_named = None;
    match extra {
        Some(Extra::Generated(pw)) => contents.push(crate::reconcilers::common::DesiredContent {
            kind: ContentKind::Secret,
            purpose: purpose::PASSWORD_EXTRA.to_owned(),
            data: pw,
        }),
        Some(Extra::Named(n)) => extra_named = Some(n),
        None => {}
    }
    let render = |names: &HashMap<String, String>| {
        let extra_secret = extra_named.or_else(|| names.get(purpose::PASSWORD_EXTRA).cloned());
        render::render(&Inputs {
            rsg,
            password_secret: &secret_name,
            generated_password: generated.as_deref(),
            extra_password_secret: extra_secret.as_deref(),
            config_names: names,
            incarnations,
        })
    };
    let converge = converge::prepare(
        ctx,
        owner,
        (&network, rsg.spec.network.encrypted),
        &contents,
        render,
    )
    .await?;
    Ok(Prepared {
        converge,
        secret: secret_name,
    })
}

/// The group's members as the rollout sees them: data instances are
/// replicas or the primary, sentinels witnesses.
fn members(
    prefix: &str,
    plan: &ServicePlan,
    health: &BTreeMap<String, ServiceHealth>,
    master: Option<&str>,
) -> BTreeMap<String, rollout::Member> {
    rollout::members(plan, health, |n| render::is_instance(prefix, n), master)
}

/// Whether the group is healthy enough for one member to go down, once
/// every service serves: the master up, every data instance linked and in
/// sync.
fn group_health(
    prefix: &str,
    health: &BTreeMap<String, ServiceHealth>,
    view: Option<&SentinelView>,
) -> Result<(), String> {
    let Some(view) = view else {
        return Err("no sentinel answers".into());
    };
    let master = view.master.as_deref().unwrap_or_default();
    if !view.master_up() {
        return Err(format!("master {master} is {}", view.master_flags));
    }
    if !health.contains_key(master) {
        return Err(format!(
            "the sentinels follow {master}, which is no member of the group"
        ));
    }
    for name in health
        .keys()
        .filter(|n| render::is_instance(prefix, n) && n.as_str() != master)
    {
        let Some(r) = view.connected.iter().find(|r| &r.host == name) else {
            return Err(format!("{name} is not connected to {master} yet"));
        };
        if r.state != "online" {
            return Err(format!("{name} is syncing with {master} ({})", r.state));
        }
        // A replica the sentinels have not discovered yet (they read the
        // master's INFO every 10 s) cannot be promoted: a failover would
        // abort with no good replica.
        if !view
            .replicas
            .iter()
            .any(|r| &r.host == name && !r.flags.contains("down"))
        {
            return Err(format!("the sentinels do not know {name} as a replica yet"));
        }
        if let Some(m) = view.master_offset {
            if m.saturating_sub(r.offset) > MAX_LAG_BYTES {
                return Err(format!("{name} is {} bytes behind", m - r.offset));
            }
        }
    }
    Ok(())
}

/// Restarts instances that run but stay out of replication: a replica that
/// followed a master which is gone, and that no sentinel knows (sentinels
/// learn replicas from the master), would wait forever. Restarting it runs
/// its start script, which asks the sentinels. Since when each has been
/// detached is in `status.detachedSince`; the events go to `notices`.
async fn reattach(
    ctx: &Context,
    rsg: &RedisSentinelGroup,
    (health, view): (&BTreeMap<String, ServiceHealth>, &SentinelView),
    status: &mut RedisSentinelGroupStatus,
    notices: &mut Vec<status::Notice>,
) -> Result<(), ReconcileError> {
    let name = rsg.metadata.name.as_str();
    let detached = detached_instances(name, health, view);
    let due = status::overdue(
        &detached,
        &mut status.detached_since,
        chrono::Utc::now(),
        DETACHED_GRACE,
    );
    for service in due {
        let version = ctx.swarm.restart_service(&service).await?;
        if let Some(o) = status
            .common
            .owned_objects
            .iter_mut()
            .find(|o| o.kind == "service" && o.name == service)
        {
            o.version = Some(version);
        }
        status.detached_since.remove(&service);
        notices.push(status::Notice::new(
            EventType::Warning,
            "ReplicaRestarted",
            format!(
                "{service} ran for {}s without replicating from {}: restarted it so that it asks the sentinels for the master",
                DETACHED_GRACE.as_secs(),
                view.master.as_deref().unwrap_or("?")
            ),
        ));
    }
    Ok(())
}

/// Instances that run but are not connected to the master the sentinels follow.
fn detached_instances(
    prefix: &str,
    health: &BTreeMap<String, ServiceHealth>,
    view: &SentinelView,
) -> Vec<String> {
    // Only the master's own list says who is detached: a master that did
    // not answer (restarting, on an engine that restarts; a sentinel in
    // TILT still calls it up) lists nobody, and restarting every replica
    // then would only add churn.
    if !view.master_up() || !view.master_answered {
        return Vec::new();
    }
    health
        .iter()
        .filter(|(n, h)| render::is_instance(prefix, n) && h.is_running())
        .filter(|(n, _)| Some(n.as_str()) != view.master.as_deref())
        .filter(|(n, _)| !view.connected.iter().any(|r| &r.host == *n))
        .map(|(n, _)| n.clone())
        .collect()
}

/// What a pass saw of a group before it acts: each sentinel's view that
/// answered, by sentinel (the first is the one the pass goes by).
pub(crate) struct Facts {
    /// The sentinels' views that know a master, by sentinel.
    views: Vec<(String, SentinelView)>,
    /// The Swarm's nodes.
    nodes: Vec<NodeInfo>,
}

impl Facts {
    fn view(&self) -> Option<&SentinelView> {
        self.views.first().map(|(_, v)| v)
    }
}

/// A group's services ready to plan, and the rotation's phase.
pub(crate) struct Ready {
    /// The services and the password secret.
    prepared: Prepared,
    /// The phase of the rotation under way, if one is.
    phase: Option<RotationPhase>,
}

type Pass<'a> = outline::Pass<'a, RedisSentinelGroupSpec>;

impl Stateful for RedisGroups {
    type Spec = RedisSentinelGroupSpec;
    type Status = RedisSentinelGroupStatus;
    type Facts = Facts;
    type Prepared = Ready;

    fn unrolled() -> Result<(), String> {
        Ok(())
    }

    async fn observe(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        status: &mut RedisSentinelGroupStatus,
    ) -> Result<Facts, ReconcileError> {
        let nodes = ctx.swarm.nodes().await?;
        // First: every pass a dead master's container triggers comes here
        // before the sentinels' views, which take a second or more to read.
        fast_failover(ctx, (pass.res, pass.obj), &nodes, status).await?;
        Ok(Facts {
            views: observe(ctx, pass.res, &nodes).await?,
            nodes,
        })
    }

    async fn pin(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        f: &Facts,
        (status, notices): (&mut RedisSentinelGroupStatus, &mut Vec<status::Notice>),
    ) -> Result<(Vec<String>, BTreeMap<String, u32>), ReconcileError> {
        let before = &pass.old.common.unavailable_nodes;
        let placed = place(ctx, pass.res, (pass.owner, before), (f.view(), &f.nodes)).await?;
        let grace = ctx.settings.node_loss_grace;
        Ok(placed.report(grace, &mut status.common, notices))
    }

    async fn prepare(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        (_, incarnations): (&Facts, &BTreeMap<String, u32>),
        status: &mut RedisSentinelGroupStatus,
        notices: &mut Vec<status::Notice>,
    ) -> Result<Ready, ReconcileError> {
        let (owner, rsg) = (pass.owner, pass.res);
        let phase = start_rotation(ctx, rsg, status, notices).await?;
        let rotation = status.password_rotation.as_ref();
        let prepared = prepare(ctx, rsg, owner, rotation, incarnations).await?;
        Ok(Ready { prepared, phase })
    }

    fn services(ready: &Ready) -> &converge::Prepared {
        &ready.prepared.converge
    }

    fn group_health(
        pass: &Pass<'_>,
        f: &Facts,
        health: &BTreeMap<String, ServiceHealth>,
    ) -> Result<(), String> {
        group_health(pass.res.metadata.name.as_str(), health, f.view())
    }

    fn members(
        pass: &Pass<'_>,
        f: &Facts,
        plan: &ServicePlan,
        health: &BTreeMap<String, ServiceHealth>,
    ) -> BTreeMap<String, rollout::Member> {
        let master = f.view().and_then(|v| v.master.as_deref());
        members(pass.res.metadata.name.as_str(), plan, health, master)
    }

    async fn switchover(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        f: &Facts,
        from: &str,
        notices: &mut Vec<status::Notice>,
    ) -> Result<(), ReconcileError> {
        let why = "before changing it";
        switchover(ctx, pass.res, (from, why), &f.views, notices).await
    }

    async fn before_apply(
        &self,
        _ctx: &Context,
        _pass: &Pass<'_>,
        _seen: (&Facts, &Rolled),
        _out: (&mut RedisSentinelGroupStatus, &mut Vec<status::Notice>),
    ) -> Result<Option<Wait>, ReconcileError> {
        Ok(None)
    }

    /// Forgets departed members once nothing rolls, restarts detached
    /// replicas ([`reattach`]), drains the master off a draining node, and
    /// moves a password rotation on.
    async fn flows(
        &self,
        ctx: &Context,
        pass: &Pass<'_>,
        (f, ready, rolled): (&Facts, &Ready, &Rolled),
        _held: Option<Wait>,
        (status, notices): (&mut RedisSentinelGroupStatus, &mut Vec<status::Notice>),
    ) -> Result<Option<Wait>, ReconcileError> {
        let rsg = pass.res;
        status.password_secret = Some(ready.prepared.secret.clone());
        status.network = Some(render::network_name(rsg.metadata.name.as_str()));
        if !rolled.step.pending() {
            forget_departed(ctx, rsg, &f.views).await?;
        }
        let mut holding = rolled.step.holding.clone();
        if holding.is_none() {
            if let Some(view) = f.view() {
                reattach(ctx, rsg, (&rolled.health, view), status, notices).await?;
            }
        }
        let group = &rolled.group;
        if holding.is_none() && group.is_ok() {
            holding = drain_master(ctx, rsg, (&f.views, &f.nodes), notices).await?;
        }
        if ready.phase.is_some() && holding.is_none() && group.is_ok() {
            advance_rotation(ctx, rsg, status, notices).await?;
        }
        if let Some(phase) = status.password_rotation.as_ref().and_then(|r| r.phase) {
            holding.get_or_insert_with(|| {
                Wait::new(
                    Flow::PasswordRotation,
                    format!("password rotation, phase {phase:?}"),
                )
            });
        }
        Ok(holding)
    }

    /// Data instances, then sentinels.
    fn families(name: &str, (instances, sentinels): (usize, usize)) -> [Family<'_>; 2] {
        [
            Family::named(
                instances,
                name,
                (render::instance_slot, render::instance_name),
            ),
            Family::named(
                sentinels,
                name,
                (render::sentinel_slot, render::sentinel_name),
            ),
        ]
    }

    /// The sentinels' storage is `render::sentinel_storage` of the data's.
    fn retiring<'a>(
        [data, sentinels]: [Family<'a>; 2],
        rsg: &RedisSentinelGroup,
    ) -> [Family<'a>; 2] {
        let (policy, spec) = (rsg.spec.storage.reclaim_policy, &rsg.spec);
        let sentinel_storage = render::sentinel_storage(&spec.storage);
        [
            data.retiring(policy, &spec.image, &spec.storage),
            sentinels.retiring(policy, &spec.image, &sentinel_storage),
        ]
    }

    fn report(
        pass: &Pass<'_>,
        f: &Facts,
        outcome: &Outcome,
        status: &mut RedisSentinelGroupStatus,
    ) -> Vec<status::Notice> {
        let look = report::Look {
            rsg: pass.res,
            old: pass.old,
            views: &f.views,
            outcome,
            generation: pass.obj.metadata.generation,
        };
        report::report(&look, status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::ServiceChange;

    use observe::healthy_test_view as healthy_view;

    fn all_running() -> BTreeMap<String, ServiceHealth> {
        ["c-redis-0", "c-redis-1", "c-redis-2", "c-sentinel-0"]
            .into_iter()
            .map(|n| (n.to_owned(), ServiceHealth::Running))
            .collect()
    }

    #[test]
    fn a_group_is_healthy_when_every_instance_is_an_online_replica_of_the_master() {
        assert_eq!(
            group_health("c", &all_running(), Some(&healthy_view())),
            Ok(())
        );
        assert!(group_health("c", &all_running(), None).is_err());
        let mut syncing = healthy_view();
        syncing.connected[1].state = "wait_bgsave".into();
        assert!(group_health("c", &all_running(), Some(&syncing))
            .is_err_and(|e| e.contains("c-redis-2 is syncing")));
        let mut behind = healthy_view();
        behind.master_offset = Some(10 << 20);
        assert!(
            group_health("c", &all_running(), Some(&behind)).is_err_and(|e| e.contains("behind"))
        );
        let mut undiscovered = healthy_view();
        undiscovered.replicas.pop();
        assert!(group_health("c", &all_running(), Some(&undiscovered))
            .is_err_and(|e| e.contains("do not know c-redis-2")));
        let mut gone = all_running();
        gone.remove("c-redis-0");
        assert!(
            group_health("c", &gone, Some(&healthy_view())).is_err_and(|e| e.contains("no member"))
        );
    }

    #[test]
    fn roles_come_from_the_sentinels_and_changes_from_the_plan() {
        let plan = ServicePlan {
            changes: BTreeMap::from([
                ("c-redis-3".to_owned(), ServiceChange::Remove),
                (
                    "c-redis-4".to_owned(),
                    ServiceChange::Create(Default::default()),
                ),
            ]),
            versions: BTreeMap::new(),
        };
        let m = members("c", &plan, &all_running(), Some("c-redis-0"));
        assert_eq!(m["c-redis-0"].role, rollout::Role::Primary);
        assert_eq!(m["c-redis-1"].role, rollout::Role::Replica);
        assert_eq!(m["c-sentinel-0"].role, rollout::Role::Witness);
        assert_eq!(m["c-redis-3"].change, Some(rollout::Change::Remove));
        assert!(!m["c-redis-3"].serving);
        assert_eq!(m["c-redis-4"].change, Some(rollout::Change::Create));
    }

    #[test]
    fn detached_instances_are_those_the_master_does_not_list() {
        let mut view = healthy_view();
        assert!(detached_instances("c", &all_running(), &view).is_empty());
        view.connected.remove(0);
        assert_eq!(
            detached_instances("c", &all_running(), &view),
            ["c-redis-1"]
        );
        view.master_flags = "master,s_down".into();
        assert!(
            detached_instances("c", &all_running(), &view).is_empty(),
            "nothing is restarted while the master itself is down"
        );
        view.master_flags = "master".into();
        view.master_answered = false;
        view.connected.clear();
        assert!(
            detached_instances("c", &all_running(), &view).is_empty(),
            "nor while the master does not answer (the sentinel calls it up)"
        );
    }

    #[test]
    fn slot_families_are_the_label_prefixes() {
        let [i, s] = RedisGroups::families("cache", (3, 3));
        assert_eq!(
            i.prefix(),
            "io.haswarm.redissentinelgroup.cache.redis.slot-"
        );
        assert_eq!(
            s.prefix(),
            "io.haswarm.redissentinelgroup.cache.sentinel.slot-"
        );
        assert!(render::instance_slot("cache", 12).starts_with(&i.prefix()));
    }

    #[test]
    fn a_pass_plans_replicas_first_then_sentinels_then_a_switchover_and_waits_while_unhealthy() {
        use crate::reconcilers::outline::{check_plans, PlanRow};
        let services = [
            "c-redis-0",
            "c-redis-1",
            "c-redis-2",
            "c-sentinel-0",
            "c-sentinel-1",
            "c-sentinel-2",
        ];
        let healthy = healthy_view();
        let mut syncing = healthy_view();
        syncing.connected[1].state = "wait_bgsave".into();
        let rolling = [("c-sentinel-0", "update in progress")];
        // (changes planned, services not serving, the sentinels' view) →
        // (applied now, switched over from, the wait's start)
        let table: [PlanRow<'_, SentinelView>; 6] = [
            (
                &["c-redis-0", "c-redis-1", "c-redis-2", "c-sentinel-0"],
                &[],
                &healthy,
                &["c-redis-2"],
                None,
                "3 more change(s)",
            ),
            (
                &["c-redis-0", "c-redis-1", "c-sentinel-0"],
                &[],
                &healthy,
                &["c-redis-1"],
                None,
                "2 more change(s)",
            ),
            (
                &["c-redis-0", "c-sentinel-0"],
                &[],
                &healthy,
                &["c-sentinel-0"],
                None,
                "1 more change(s)",
            ),
            (
                &["c-redis-0"],
                &[],
                &healthy,
                &[],
                Some("c-redis-0"),
                "c-redis-0 is the primary",
            ),
            // A replica still syncing holds every disruptive change.
            (
                &["c-redis-0", "c-redis-1"],
                &[],
                &syncing,
                &[],
                None,
                "2 change(s) wait: c-redis-2 is syncing",
            ),
            // So does a service that does not serve.
            (
                &["c-redis-1"],
                &rolling,
                &healthy,
                &[],
                None,
                "1 change(s) wait: c-sentinel-0: update in progress",
            ),
        ];
        let rsg: RedisSentinelGroup = serde_json::from_value(serde_json::json!({
            "apiVersion": "haswarm.io/v1alpha1", "kind": "RedisSentinelGroup",
            "metadata": {"name": "c"}, "spec": {"instances": 3}
        }))
        .expect("group");
        let facts = |v: &SentinelView| Facts {
            views: vec![("c-sentinel-0".to_owned(), v.clone())],
            nodes: Vec::new(),
        };
        check_plans::<RedisGroups, _>(&rsg, &services, &table, facts);
    }
}
