//! The one reconcile outline of the stateful kinds (PostgresCluster,
//! RedisSentinelGroup): observe, pin the slots, prepare the contents and
//! services, roll one safe step, move the kind's flows on, report, and
//! write the status once. Each kind fills in its steps ([`Stateful`]); the
//! order of the steps, the rollout and the status write are here, once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use haswarm_crds::meta::HasCommon;
use haswarm_crds::{Kind, Resource};

use super::slots::{self, Family};
use super::status::{self, Notice};
use super::wait::Wait;
use super::{converge, rollout};
use crate::runtime::controller::{decode, hold_if_paused, known_versions, owner_of};
use crate::runtime::{Action, Context, ReconcileError, Reconciler};
use crate::store::Record;
use crate::swarm::{Owner, ServiceHealth, ServicePlan, ServicesHealth, TaskTrouble};

/// What every step of a pass may read: the stored object, its owner
/// identity on the Swarm, the typed resource, and the status the pass
/// started from.
pub(crate) struct Pass<'a, S: Kind> {
    /// The stored object.
    pub obj: &'a Record,
    /// Its owner identity (the labels on what it owns).
    pub owner: &'a Owner,
    /// The typed resource.
    pub res: &'a Resource<S>,
    /// The status as the pass found it.
    pub old: &'a S::Status,
}

/// What the rollout chose in a pass, for the kind's flows.
pub(crate) struct Rolled {
    /// Each service's health before the pass.
    pub health: BTreeMap<String, ServiceHealth>,
    /// Whether the group is healthy enough for a member to go down, or why
    /// not.
    pub group: Result<(), String>,
    /// The step the rollout let through.
    pub step: rollout::Step,
}

impl Rolled {
    /// Nothing under way: no switchover, no change held back, a healthy
    /// group. Only then do the flows that need a quiet group move on.
    pub fn settled(&self) -> bool {
        self.step.switchover.is_none() && self.step.holding.is_none() && self.group.is_ok()
    }
}

/// What a pass leaves for the report.
#[derive(Debug)]
pub struct Outcome {
    /// Slot labels no node could take.
    pub unassigned: Vec<String>,
    /// Why changes remain, if they do.
    pub holding: Option<Wait>,
    /// Whether the group is healthy, or why not.
    pub group: Result<(), String>,
    /// The members whose tasks Swarm rejects or fails; `None` when the
    /// pass did not look (paused).
    pub tasks: Option<Vec<TaskTrouble>>,
    /// Whether Swarm is still bringing up a member's task.
    pub starting: bool,
}

/// The steps a stateful kind fills into the outline. Each reads what the
/// steps before it saw (`Facts`, `Prepared`, [`Rolled`]) rather than the
/// world again, and returns its events as [`Notice`]s.
pub(crate) trait Stateful: Send + Sync + 'static {
    /// The spec (its status type is the kind's status).
    type Spec: Kind<Status = Self::Status>;
    /// The kind's status.
    type Status: HasCommon + Clone + PartialEq + serde::Serialize + Send + Sync;
    /// What a pass saw before it acts: the data plane's view, nodes.
    type Facts: Send + Sync;
    /// The services ready to plan, and what the flows need of their
    /// preparation (passwords, a rotation's phase).
    type Prepared: Send + Sync;

    /// The group's health when the pass rolls nothing out (paused).
    fn unrolled() -> Result<(), String>;

    /// Reads the data plane, and all the report needs. Runs even while
    /// paused.
    fn observe(
        &self,
        ctx: &Context,
        pass: &Pass<'_, Self::Spec>,
        status: &mut Self::Status,
    ) -> impl Future<Output = Result<Self::Facts, ReconcileError>> + Send;

    /// Pins the members to nodes: the slot labels no node could take, and
    /// each slot's incarnation.
    fn pin(
        &self,
        ctx: &Context,
        pass: &Pass<'_, Self::Spec>,
        facts: &Self::Facts,
        out: (&mut Self::Status, &mut Vec<Notice>),
    ) -> impl Future<Output = Result<(Vec<String>, BTreeMap<String, u32>), ReconcileError>> + Send;

    /// Starts what a pass starts (a rotation), makes the passwords and
    /// contents, and renders the services (see [`converge::prepare`]).
    fn prepare(
        &self,
        ctx: &Context,
        pass: &Pass<'_, Self::Spec>,
        seen: (&Self::Facts, &BTreeMap<String, u32>),
        status: &mut Self::Status,
        notices: &mut Vec<Notice>,
    ) -> impl Future<Output = Result<Self::Prepared, ReconcileError>> + Send;

    /// The prepared services.
    fn services(prepared: &Self::Prepared) -> &converge::Prepared;

    /// Whether the group is healthy enough for one member to go down, once
    /// every service serves (the outline checks that first,
    /// [`rollout::serving`]).
    fn group_health(
        pass: &Pass<'_, Self::Spec>,
        facts: &Self::Facts,
        health: &BTreeMap<String, ServiceHealth>,
    ) -> Result<(), String>;

    /// The members as the rollout sees them (role, serving, change).
    fn members(
        pass: &Pass<'_, Self::Spec>,
        facts: &Self::Facts,
        plan: &ServicePlan,
        health: &BTreeMap<String, ServiceHealth>,
    ) -> BTreeMap<String, rollout::Member>;

    /// Moves the primary role away from `from` before it changes.
    fn switchover(
        &self,
        ctx: &Context,
        pass: &Pass<'_, Self::Spec>,
        facts: &Self::Facts,
        from: &str,
        notices: &mut Vec<Notice>,
    ) -> impl Future<Output = Result<(), ReconcileError>> + Send;

    /// What the kind does before the step is applied; `Some` says what it
    /// started that holds further changes.
    fn before_apply(
        &self,
        ctx: &Context,
        pass: &Pass<'_, Self::Spec>,
        seen: (&Self::Facts, &Rolled),
        out: (&mut Self::Status, &mut Vec<Notice>),
    ) -> impl Future<Output = Result<Option<Wait>, ReconcileError>> + Send;

    /// Moves the kind's flows on once the step is applied (`held`: what
    /// [`Stateful::before_apply`] started). Returns why changes remain.
    fn flows(
        &self,
        ctx: &Context,
        pass: &Pass<'_, Self::Spec>,
        seen: (&Self::Facts, &Self::Prepared, &Rolled),
        held: Option<Wait>,
        out: (&mut Self::Status, &mut Vec<Notice>),
    ) -> impl Future<Output = Result<Option<Wait>, ReconcileError>> + Send;

    /// The resource's two slot families (data members, then witnesses)
    /// for `counts` members each, named by the kind's render.
    fn families(name: &str, counts: (usize, usize)) -> [Family<'_>; 2];

    /// The families with what `reclaimPolicy` makes of a leaving member's
    /// volumes.
    fn retiring<'a>(families: [Family<'a>; 2], res: &Resource<Self::Spec>) -> [Family<'a>; 2];

    /// The slot families to release at deletion, once the owned objects
    /// are gone: every index any node may hold a slot of, whatever the spec
    /// says now, each with what `reclaimPolicy` makes of its volumes (see
    /// [`slots::release`]). `res` is `None` when the stored object no longer
    /// decodes: the volumes stay, the labels go.
    fn slot_families<'a>(name: &'a str, res: Option<&Resource<Self::Spec>>) -> Vec<Family<'a>> {
        let every = usize::from(u8::MAX);
        let all = Self::families(name, (every, every));
        match res {
            Some(res) => Self::retiring(all, res).into(),
            None => all.into(),
        }
    }

    /// The status and events of what the pass saw and left. Pure: it reads
    /// only what [`Stateful::observe`] gathered and the pass left.
    fn report(
        pass: &Pass<'_, Self::Spec>,
        facts: &Self::Facts,
        outcome: &Outcome,
        status: &mut Self::Status,
    ) -> Vec<Notice>;
}

/// Every stateful kind is reconciled by the outline.
impl<K: Stateful> Reconciler for K {
    const KIND: &'static str = <K::Spec as Kind>::KIND;

    async fn reconcile(&self, obj: Record, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
        reconcile(self, obj, ctx).await
    }

    async fn cleanup(&self, obj: Record, ctx: Arc<Context>) -> Result<(), ReconcileError> {
        let owner = owner_of(&ctx, &obj);
        status::remove_owned(&ctx, &obj, &owner).await?;
        let res = decode::<K::Spec>(&obj).ok().map(|(r, _)| r);
        let families = K::slot_families(obj.metadata.name.as_str(), res.as_ref());
        slots::release(&ctx, (&obj, &owner), &families).await
    }
}

/// One pass of a stateful kind: observe; unless paused, pin, prepare, roll
/// and move the flows on; report; write the status once.
async fn reconcile<K: Stateful>(
    kind: &K,
    obj: Record,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let (res, old) = decode::<K::Spec>(&obj)?;
    let owner = owner_of(&ctx, &obj);
    let pass = Pass {
        obj: &obj,
        owner: &owner,
        res: &res,
        old: &old,
    };
    let mut status = old.clone();
    let facts = kind.observe(&ctx, &pass, &mut status).await?;
    let mut notices = Vec::new();
    let mut outcome = Outcome {
        unassigned: Vec::new(),
        holding: None,
        group: K::unrolled(),
        tasks: None,
        starting: false,
    };
    if !hold_if_paused(&obj, status.common_mut()) {
        match act(kind, &ctx, &pass, &facts, (&mut status, &mut notices)).await {
            Ok(o) => outcome = o,
            // What the pass did before it failed happened: its events too.
            Err(e) => {
                status::emit(&ctx, &obj, &notices);
                return Err(e);
            }
        }
    }
    notices.extend(K::report(&pass, &facts, &outcome, &mut status));
    if let Some(troubles) = &outcome.tasks {
        notices.extend(status::tasks(
            status.common_mut(),
            troubles,
            obj.metadata.generation,
        ));
    }
    status::finish(
        &ctx,
        &obj,
        (&old, &mut status),
        HasCommon::common_mut,
        (
            &notices,
            status::UnderWay {
                holding: outcome.holding.is_some(),
                starting: outcome.starting,
            },
        ),
    )
    .await
}

/// What a pass chose, before it acts.
#[derive(Debug)]
pub(crate) struct Planned {
    /// The members as the rollout saw them.
    pub members: BTreeMap<String, rollout::Member>,
    /// Whether the group is healthy enough for a member to go down, or why
    /// not.
    pub group: Result<(), String>,
    /// The step the rollout lets through.
    pub step: rollout::Step,
}

/// The pure choice of a pass: from what it saw (`facts`), the services'
/// planned changes and their health, the group's health (every service
/// serving, then the kind's rule), the members, and the one safe step
/// ([`rollout::next_step`]). Each kind's tests run it without Docker.
pub(crate) fn plan<K: Stateful>(
    pass: &Pass<'_, K::Spec>,
    facts: &K::Facts,
    services: &ServicePlan,
    health: &BTreeMap<String, ServiceHealth>,
) -> Planned {
    let group = rollout::serving(health).and_then(|()| K::group_health(pass, facts, health));
    let members = K::members(pass, facts, services, health);
    let step = rollout::next_step(&members, group.clone());
    Planned {
        members,
        group,
        step,
    }
}

/// The acting part of a pass: pin, prepare, roll one safe step (see
/// [`rollout`]), apply it, and move the kind's flows on.
async fn act<K: Stateful>(
    kind: &K,
    ctx: &Context,
    pass: &Pass<'_, K::Spec>,
    facts: &K::Facts,
    (status, notices): (&mut K::Status, &mut Vec<Notice>),
) -> Result<Outcome, ReconcileError> {
    let (unassigned, incarnations) = kind.pin(ctx, pass, facts, (status, notices)).await?;
    let prepared = kind
        .prepare(ctx, pass, (facts, &incarnations), status, notices)
        .await?;
    let services = K::services(&prepared);
    let changes = ctx
        .swarm
        .plan_services(
            pass.owner,
            &services.services,
            &known_versions(pass.old.common()),
        )
        .await?;
    let ServicesHealth {
        services: health,
        troubles,
        starting,
    } = ctx.swarm.service_health(pass.owner).await?;
    let Planned {
        members,
        group,
        step,
    } = plan::<K>(pass, facts, &changes, &health);
    if !step.apply.is_empty() || step.switchover.is_some() {
        tracing::info!(?members, ?step, ?group, "rollout step");
    }
    if let Some(from) = &step.switchover {
        kind.switchover(ctx, pass, facts, from, notices).await?;
    }
    let rolled = Rolled {
        health,
        group,
        step,
    };
    let held = kind
        .before_apply(ctx, pass, (facts, &rolled), (status, notices))
        .await?;
    status.common_mut().owned_objects = converge::apply(
        ctx,
        (pass.obj, pass.owner),
        &changes,
        &rolled.step.apply,
        services,
    )
    .await?;
    let holding = kind
        .flows(
            ctx,
            pass,
            (facts, &prepared, &rolled),
            held,
            (status, notices),
        )
        .await?;
    Ok(Outcome {
        unassigned,
        holding,
        group: rolled.group,
        tasks: Some(troubles),
        starting,
    })
}

/// Runs `f` on a pass over `res` with a default status, as a reconcile of
/// the stored object would see it: for the kinds' tests of [`plan`].
#[cfg(test)]
fn with_pass<S: Kind, T>(res: &Resource<S>, f: impl FnOnce(&Pass<'_, S>) -> T) -> T
where
    S::Status: HasCommon,
{
    let obj = Record {
        api_version: haswarm_crds::API_VERSION.to_owned(),
        kind: S::KIND.to_owned(),
        metadata: res.metadata.clone(),
        spec: serde_json::to_value(&res.spec).expect("spec"),
        status: None,
    };
    let owner = Owner {
        kind: S::KIND.to_owned(),
        name: res.metadata.name.to_string(),
        uid: "uid".to_owned(),
        instance: "test".to_owned(),
    };
    let old = S::Status::default();
    f(&Pass {
        obj: &obj,
        owner: &owner,
        res,
        old: &old,
    })
}

/// A row of a kind's table test of [`plan`]: the services whose change is
/// planned, those not serving (with why), the data plane's view; then the
/// services applied now, the member switched over from, and how the wait
/// begins.
#[cfg(test)]
pub(crate) type PlanRow<'a, V> = (
    &'a [&'a str],
    &'a [(&'a str, &'a str)],
    &'a V,
    &'a [&'a str],
    Option<&'a str>,
    &'a str,
);

/// The health of `services`: running, but those `down` names with why not.
#[cfg(test)]
fn health_of(services: &[&str], down: &[(&str, &str)]) -> BTreeMap<String, ServiceHealth> {
    services
        .iter()
        .map(|n| {
            let h = match down.iter().find(|(d, _)| d == n) {
                Some((_, why)) => ServiceHealth::NotReady((*why).to_owned()),
                None => ServiceHealth::Running,
            };
            ((*n).to_owned(), h)
        })
        .collect()
}

/// A service plan that updates `names`.
#[cfg(test)]
fn updating(names: &[&str]) -> ServicePlan {
    let update = || crate::swarm::ServiceChange::Update {
        spec: Default::default(),
        drifted: false,
    };
    ServicePlan {
        changes: names.iter().map(|n| ((*n).to_owned(), update())).collect(),
        versions: BTreeMap::new(),
    }
}

/// A kind's table test of [`plan`]: each row's services (`services`, all
/// running but the row's down ones) and planned updates, with the facts
/// `facts` makes of the row's view, give the row's step: what is applied,
/// the switchover, and a rollout's wait that begins as the row says.
#[cfg(test)]
pub(crate) fn check_plans<K: Stateful, V>(
    res: &Resource<K::Spec>,
    services: &[&str],
    table: &[PlanRow<'_, V>],
    facts: impl Fn(&V) -> K::Facts,
) where
    K::Status: HasCommon,
{
    for &(names, down, v, applied, from, wait) in table {
        let (health, changes) = (health_of(services, down), updating(names));
        let f = facts(v);
        let planned = with_pass(res, |pass| plan::<K>(pass, &f, &changes, &health));
        let step = &planned.step;
        assert_eq!(step.apply, applied, "{names:?}");
        assert_eq!(step.switchover.as_deref(), from, "{names:?}");
        let w = step.holding.as_ref().expect("changes remain");
        assert_eq!(w.flow, super::wait::Flow::Rollout);
        assert!(w.why.starts_with(wait), "{names:?}: {}", w.why);
    }
}
